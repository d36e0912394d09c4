package caddymodule

import (
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// varCookieGuard marks a request whose answer a cookieGuard already
// watches (the portal's, so that a gate after it does not wrap again).
const varCookieGuard = "sigra.cookie_guard"

// guardCookies returns w wrapped so that nothing behind the gateway sets
// its cookies (cookieGuard), unless an earlier sigra handler wrapped it.
// For a signed-in user's answer (signedIn) the guard also drops the
// app's instructions to shared caches.
func guardCookies(w http.ResponseWriter, r *http.Request, signedIn bool) http.ResponseWriter {
	ctx := r.Context()
	if g, ok := caddyhttp.GetVar(ctx, varCookieGuard).(*cookieGuard); ok {
		g.signedIn = g.signedIn || signedIn
		return w
	}
	g := &cookieGuard{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, signedIn: signedIn}
	caddyhttp.SetVar(ctx, varCookieGuard, g)
	return g
}

// sharedCacheHeaders are the headers by which CDNs and caching proxies
// take their orders in preference to Cache-Control (RFC 9213's
// CDN-Cache-Control, Cloudflare's, Fastly's Surrogate-Control, Akamai's
// Edge-Control, nginx's X-Accel-Expires): an app from before it was
// gated may send "public, max-age=600" there, and the cache would keep
// a signed-in user's page for anyone, whatever Cache-Control says. Gone,
// those caches follow Cache-Control, which is private.
var sharedCacheHeaders = []string{"Cdn-Cache-Control", "Cloudflare-Cdn-Cache-Control", "Surrogate-Control", "Edge-Control", "X-Accel-Expires"}

// passOwnLines lets the Set-Cookie lines a gate's refusal sets (of the
// gateway's cookies: forgetCookies) through the cookie guard that
// watches r, and nothing else: whatever writes after it (an intercept's
// handle_response proxying to the app, say) is scrubbed as ever.
func passOwnLines(r *http.Request, lines []string) {
	if g, ok := caddyhttp.GetVar(r.Context(), varCookieGuard).(*cookieGuard); ok {
		g.own = append(g.own, lines...)
	}
}

// cookieGuard drops the gateway's cookies (sigra_session, sigra_csrf, in
// either form) from the Set-Cookie lines of an answer from behind it,
// the app's or any handler's after the portal. An app that could be made
// to set them (a header injection, a "remember this cookie" feature)
// would otherwise sign its users in as someone else, or break their
// sign-in with two session cookies; over HTTPS the __Host- prefix stops
// every other site from doing that, but not the site itself. The
// portal's own answers do not pass here; a gate's refusal does, and the
// lines it sets to forget a conflict's cookies are let through alone.
type cookieGuard struct {
	caddyhttp.ResponseWriterWrapper
	sent     bool     // the final header is out
	signedIn bool     // a signed-in user's answer: sharedCacheHeaders go
	own      []string // lines of the gateway's own that pass (passOwnLines)
}

func (g *cookieGuard) scrub() {
	if g.sent {
		return
	}
	if g.signedIn {
		h := g.ResponseWriter.Header()
		for _, k := range sharedCacheHeaders {
			delete(h, k)
		}
	}
	if len(g.own) == 0 {
		dropOwnSetCookies(g.ResponseWriter.Header())
		return
	}
	left := slices.Clone(g.own) // each passes once
	editHeaderLines(g.ResponseWriter.Header(), "Set-Cookie", func(line string) string {
		if i := slices.Index(left, line); i >= 0 {
			left = slices.Delete(left, i, i+1)
			return line
		}
		return withoutOwnSetCookie(line)
	})
}

// WriteHeader scrubs every header written, informational ones too.
func (g *cookieGuard) WriteHeader(code int) {
	g.scrub()
	if code >= 200 || code == http.StatusSwitchingProtocols {
		g.sent = true
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *cookieGuard) Write(b []byte) (int, error) {
	g.scrub()
	g.sent = true
	return g.ResponseWriter.Write(b)
}

// ReadFrom and FlushError write the header too when it is not out yet:
// scrub first. (http.ResponseController uses FlushError before it
// unwraps.)
func (g *cookieGuard) ReadFrom(r io.Reader) (int64, error) {
	g.scrub()
	g.sent = true
	return g.ResponseWriterWrapper.ReadFrom(r)
}

func (g *cookieGuard) FlushError() error {
	g.scrub()
	g.sent = true
	return http.NewResponseController(g.ResponseWriter).Flush()
}

// dropOwnSetCookies removes the Set-Cookie lines that set one of the
// gateway's cookies, allocating only when there is one.
func dropOwnSetCookies(h http.Header) { editHeaderLines(h, "Set-Cookie", withoutOwnSetCookie) }

// withoutOwnSetCookie is line, or "" when it sets one of ours.
func withoutOwnSetCookie(line string) string {
	if setsOwnCookie(line) {
		return ""
	}
	return line
}

// setsOwnCookie reports whether a Set-Cookie line sets one of the
// gateway's cookies. Browsers take the name as everything before the
// first '=' of the line, trimmed, and compare it exactly. A nameless
// cookie ("=sigra_session=x") is sent back as "sigra_session=x", which
// reads as ours: its value is checked as a name too.
func setsOwnCookie(line string) bool {
	pair, _, _ := strings.Cut(line, ";")
	name, value, _ := strings.Cut(pair, "=")
	if strings.TrimSpace(name) == "" {
		name, _, _ = strings.Cut(value, "=")
	}
	return isOwnCookie(name)
}
