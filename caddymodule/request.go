package caddymodule

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/sigra-auth/caddy-sigra/authcore"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/publicsuffix"
)

// Identity headers sent upstream (DESIGN.md section 4).
const (
	hdrUser      = "X-Sigra-User"
	hdrEmail     = "X-Sigra-Email"
	hdrName      = "X-Sigra-Name"
	hdrGroups    = "X-Sigra-Groups"
	hdrOrg       = "X-Sigra-Org"
	hdrAMR       = "X-Sigra-Amr"
	hdrFlags     = "X-Sigra-Flags"
	hdrSession   = "X-Sigra-Session"
	hdrAssertion = "X-Sigra-Assertion"
)

// pathRefusal says why the request's path is refused before any gate
// decides on it, "" when it is not. Caddy chooses a path-scoped gate on
// the path decoded and cleaned, while reverse_proxy sends the app the
// path as written: where an app may resolve the two differently, a gate
// would decide for one path and the app serve another. /admin/../x (or
// /admin/%2e%2e/x, /admin/..%2fx) is decided as /x and served as
// /admin/x by routers that match the raw path; /x/..;/admin/y and
// /admin;p/y are /admin/y to servlet containers, which drop ';'
// parameters, and never /admin/* to Caddy; a backslash is a separator
// to Windows servers, which also read "..." and ".. " as "..".
// Browsers resolve dot segments and never send them, and paths rarely
// carry ';' or '\'; refusing them is the only way to be sure that the
// gate and the app agree. For an app that decodes a path twice, any
// character encoded twice (%252e, %2561: the gate decides on /%61dmin,
// the app serves /admin; and IIS's %u0061 written as %25u0061) is
// refused, and for one that reads overlong UTF-8 (%c0%ae, %e0%80%ae are
// '.' to some old decoders) the lead bytes of overlong forms are. params
// allows ';' (path_params allow), also encoded twice. Cheap: one scan of
// the path for the usual one.
func pathRefusal(path string, params bool) string {
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '%':
			// The path is decoded once: a '%' left before two hex digits
			// was written as %25XX.
			if i+2 < len(path) && isHex(path[i+1]) && isHex(path[i+2]) && !(params && encodedSemicolon(path[i:])) {
				return "a character encoded twice"
			}
			// %uXXXX, which IIS decodes, written as %25uXXXX.
			if i+5 < len(path) && path[i+1]|0x20 == 'u' && isHex(path[i+2]) && isHex(path[i+3]) && isHex(path[i+4]) && isHex(path[i+5]) {
				return "a character encoded twice"
			}
		case 0xc0, 0xc1:
			return "an overlong UTF-8 sequence"
		case 0xe0, 0xf0, 0xf8, 0xfc:
			if i+1 < len(path) && overlongUTF8(path[i], path[i+1]) {
				return "an overlong UTF-8 sequence"
			}
		case '\\':
			return "a backslash"
		case ';':
			if !params {
				return `a ";" parameter`
			}
		case '/':
			if dotSegment(path[i+1:]) {
				return "a dot segment"
			}
		case 0xef:
			// A fullwidth or small solidus: "/" to an app that folds
			// Unicode (NFKC), which makes "..／" a dot segment there.
			if n := foldedSlash(path[i:]); n > 0 && dotSegment(path[i+n:]) {
				return "a dot segment"
			}
		case 0:
			// Where C strings end: /public/..%00/admin is /public/..
			// to an app that stops there.
			return "a NUL character"
		}
	}
	return ""
}

// encodedSlash is the index of the first encoded slash (%2F) in an
// escaped path, -1 when it has none: one segment to many apps, two to
// Caddy's matchers.
func encodedSlash(raw string) int {
	for off := 0; ; {
		i := strings.IndexByte(raw[off:], '%')
		if i < 0 {
			return -1
		}
		i += off
		if i+2 < len(raw) && raw[i+1] == '2' && raw[i+2]|0x20 == 'f' {
			return i
		}
		off = i + 1
	}
}

// rawEscapes reports what an escaped path's escapes encode: a slash
// (%2F); or (unsure) a character that needs no escape (a letter, a
// digit, -._), which no browser encodes: /%70ublic is /public to Caddy's
// matchers and not to an app that routes on the path undecoded.
func rawEscapes(raw string) (slash, unsure bool) {
	for i := strings.IndexByte(raw, '%'); i >= 0 && i+2 < len(raw); {
		if isHex(raw[i+1]) && isHex(raw[i+2]) {
			switch c := unhex(raw[i+1])<<4 | unhex(raw[i+2]); {
			case c == '/':
				slash = true
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
				unsure = true
			}
		}
		next := strings.IndexByte(raw[i+1:], '%')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return slash, unsure
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// slashesKept decodes an escaped path but for its encoded slashes,
// which stay %2F: the path as an app that splits segments before it
// decodes them reads it.
func slashesKept(raw string) string {
	var b strings.Builder
	for {
		i := encodedSlash(raw)
		part := raw
		if i >= 0 {
			part = raw[:i]
		}
		s, err := url.PathUnescape(part)
		if err != nil {
			s = part
		}
		b.WriteString(s)
		if i < 0 {
			return b.String()
		}
		b.WriteString("%2F")
		raw = raw[i+3:]
	}
}

// dotSegment reports whether s, the rest of a path after a separator,
// starts with a segment that some server reads as "." or "..": dots,
// then dots and spaces (Windows servers drop trailing ones, so "..." and
// ".. " are ".." to them), up to the segment's end; control characters
// and what Unicode folds to a space count as spaces (space), and may
// come first too (Java's trim() drops them on both sides: "\t..\t" is
// ".."). A ';' ends it too:
// ..;x is .. to servlet containers, even with ';' allowed. Characters
// that Unicode folds (NFKC) to a dot or a slash count as those, for apps
// that fold paths: "．．" and "..／" are dot segments there.
func dotSegment(s string) bool {
	lead := 0
	for lead < len(s) {
		n := space(s[lead:]) // Java's trim() drops them before the dots, as after
		if n == 0 {
			break
		}
		lead += n
	}
	i := foldedDot(s[lead:])
	if i == 0 {
		return false
	}
	for i += lead; i < len(s); {
		if n := foldedDot(s[i:]); n > 0 {
			i += n
		} else if n := space(s[i:]); n > 0 {
			i += n
		} else {
			break
		}
	}
	return i == len(s) || s[i] == '/' || s[i] == ';' || encodedSemicolon(s[i:]) || foldedSlash(s[i:]) > 0
}

// space is the length of the space that s starts with, 0 when none: a
// character Java's trim() drops (but for NUL, which ends a C string and
// is refused as such), one that Unicode folds (NFKC) to a space
// (no-break, the typographic spaces, the ideographic space), or one that
// .NET's String.Trim() drops as well (next line, the line and paragraph
// separators, the Ogham space mark).
func space(s string) int {
	switch {
	case s == "":
		return 0
	case s[0] <= ' ':
		if s[0] == 0 {
			return 0
		}
		return 1
	case s[0] < 0xc2:
		return 0
	}
	switch r, n := utf8.DecodeRuneInString(s); r {
	case '\u00a0', '\u202f', '\u205f', '\u3000', // NFKC spaces
		'\u0085', '\u1680', '\u2028', '\u2029': // and what .NET's Trim drops too
		return n
	default:
		if '\u2000' <= r && r <= '\u200a' {
			return n
		}
	}
	return 0
}

// foldedDot is the length of the dot, or the character NFKC folds to
// dots, that s starts with (0 when it does not): the fullwidth and small
// full stops, the one-, two- and three-dot leaders, and the vertical
// forms of the last two.
func foldedDot(s string) int {
	switch {
	case s == "":
		return 0
	case s[0] == '.':
		return 1
	case s[0] != 0xef && s[0] != 0xe2:
		return 0
	}
	for _, d := range [...]string{"\uff0e", "\ufe52", "\u2024", "\u2025", "\u2026", "\ufe30", "\ufe19"} {
		if strings.HasPrefix(s, d) {
			return len(d)
		}
	}
	return 0
}

// foldedSlash is the length of the character NFKC folds to "/" or "\"
// that s starts with (the fullwidth solidus and reverse solidus, the
// small reverse solidus), 0 when it starts with none.
func foldedSlash(s string) int {
	if s == "" || s[0] != 0xef {
		return 0
	}
	for _, d := range [...]string{"\uff0f", "\uff3c", "\ufe68"} {
		if strings.HasPrefix(s, d) {
			return len(d)
		}
	}
	return 0
}

// overlongUTF8 reports whether lead, followed by next, starts an
// overlong UTF-8 form: one of more bytes than its value needs, which
// decoders that accept it read as the shorter character ('.' or '/'
// among them). 0xc0 and 0xc1 start nothing else; these lead bytes start
// an overlong form only before a low continuation byte, so Latin-1
// paths (0xe0 is 'à') still pass.
func overlongUTF8(lead, next byte) bool {
	var limit byte // the lowest continuation byte of a form that is not overlong
	switch lead {
	case 0xe0:
		limit = 0xa0
	case 0xf0:
		limit = 0x90
	case 0xf8:
		limit = 0x88
	case 0xfc:
		limit = 0x84
	}
	return 0x80 <= next && next < limit
}

// encodedSemicolon reports whether s starts with ';' encoded (%3b), which
// is left in a path decoded once only where it was encoded twice.
func encodedSemicolon(s string) bool {
	return len(s) >= 3 && s[0] == '%' && s[1] == '3' && s[2]|0x20 == 'b'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// refusePath answers a request whose path pathRefusal refused with 400.
func refusePath(w http.ResponseWriter, r *http.Request, prefix, why string) error {
	detail := "the request path has " + why + ", which this site does not accept"
	return writeRefusal(w, r, prefix, http.StatusBadRequest, "bad_path", detail, "This address cannot be served: "+detail+".")
}

// writeRefusal answers a refused request: a small page saying message
// for browsers, problem+json with reason and detail for other clients.
// A refusal is final: it returns no error, even when the page could not
// be written (the client gone), since Caddy would run the site's
// handle_errors routes with the request, and one that proxies to the
// app would hand it what was refused.
func writeRefusal(w http.ResponseWriter, r *http.Request, prefix string, status int, reason, detail, message string) error {
	if wantsHTML(r) {
		nonce := newNonce()
		setPageHeaders(w.Header(), nonce, nil)
		_ = renderPage(w, status, "message", pageData{
			Title: http.StatusText(status), Nonce: nonce, Prefix: prefix, Message: message,
		})
		return nil
	}
	writeProblem(w, status, reason, detail)
	return nil
}

// isIdentityHeader reports whether an incoming header name could be read
// upstream as identity: anything starting with X-Sigra- (any case, and
// with any other punctuation for '-': CGI-style upstreams turn '-' into
// '_', and PHP turns '.' into '_' too, so X.Sigra.User reaches PHP as
// HTTP_X_SIGRA_USER once Caddy's expected_dot_headers lets it in) and,
// with the remote alias family on, Remote-User/-Email/-Groups/-Name.
func isIdentityHeader(name string, remote bool) bool {
	if hasFoldPrefix(name, "x-sigra-") {
		return true
	}
	if remote && hasFoldPrefix(name, "remote-") {
		rest := name[len("remote-"):]
		return foldEq(rest, "user") || foldEq(rest, "email") || foldEq(rest, "groups") || foldEq(rest, "name")
	}
	return false
}

// isPathOverride reports whether a header could make the app serve
// another path than the one the gates matched: X-Original-URL and
// X-Rewrite-URL, which IIS's URL Rewrite sets for the app, and which
// older Symfony and Zend apps take as the request's URL (CVE-2018-14773).
// Only the proxy in front may set them, and the gateway is that proxy.
// Spelt in any case, and with '_' or '.' for '-', as CGI and PHP read
// them.
func isPathOverride(name string) bool {
	return foldEq(name, "x-original-url") || foldEq(name, "x-rewrite-url")
}

// isMethodOverride reports whether name is, in any spelling an app could
// read as one, a header with which frameworks let a request stand for
// another method (Symfony, Laravel, Express's method-override, ASP.NET).
func isMethodOverride(name string) bool {
	return foldEq(name, "x-http-method-override") || foldEq(name, "x-http-method") || foldEq(name, "x-method-override")
}

// stripped reports whether a client's header (or trailer) name goes
// before anything reaches the app: an identity header, or a path
// override.
func stripped(name string, remote bool) bool {
	return isIdentityHeader(name, remote) || isPathOverride(name)
}

// hasFoldPrefix compares ASCII case-insensitively, any byte that is not
// a letter or a digit matching '-'.
func hasFoldPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && foldEq(s[:len(prefix)], prefix)
}

func foldEq(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			c = '-'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// stripIdentity removes everything a client could use to forge identity,
// or to remove ours: identity headers; the same names as trailers (which
// reverse_proxy forwards, and some upstreams merge into headers);
// identity names listed in Connection (which reverse_proxy would drop as
// hop-by-hop after the gate set them); and the headers that would have
// the app serve another path than the gates matched (isPathOverride).
// The identity placeholders become empty until a gate sets them: Caddy
// leaves an unknown placeholder in a header_up as its literal text,
// which an app could take for a user.
func stripIdentity(r *http.Request, remote bool) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(phUserID, "")
		repl.Set(phUserEmail, "")
	}
	h := r.Header
	for k := range h {
		if stripped(k, remote) {
			delete(h, k)
		}
	}
	if conn := h["Connection"]; len(conn) > 0 {
		h["Connection"] = cleanConnection(conn, remote)
	}
	if up := h["Upgrade"]; len(up) > 0 && slices.ContainsFunc(up, mentionsH2C) {
		// An upstream that took the upgrade (reverse_proxy forwards it
		// and tunnels the connection after a 101) would get every later
		// request on it straight from the client, past every gate ("h2c
		// smuggling"). Caddy serves h2c itself where it is wanted. Any
		// value that names h2c at all goes (h2c;x, h2c/1), for a server
		// that reads the header more loosely than a token list.
		delete(h, "Upgrade")
		delete(h, "Http2-Settings")
	}
	if r.Trailer != nil {
		// Declared trailers arrive at the end of the body: strip them now
		// and again when the body has been read.
		stripTrailers(r.Trailer, remote)
		r.Body = &trailerScrubber{ReadCloser: r.Body, r: r, remote: remote}
	}
}

// mentionsH2C reports whether an Upgrade header value names h2c, in any
// case, anywhere.
func mentionsH2C(v string) bool {
	for i := 0; i+3 <= len(v); i++ {
		if v[i]|0x20 == 'h' && v[i+1] == '2' && v[i+2]|0x20 == 'c' {
			return true
		}
	}
	return false
}

// cleanConnection drops identity names from Connection header values,
// allocating only when there is one.
func cleanConnection(vals []string, remote bool) []string {
	found := false
	for _, v := range vals {
		for tok := range strings.SplitSeq(v, ",") {
			if isIdentityHeader(strings.TrimSpace(tok), remote) {
				found = true
			}
		}
	}
	if !found {
		return vals
	}
	var keep []string
	for _, v := range vals {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !isIdentityHeader(tok, remote) {
				keep = append(keep, tok)
			}
		}
	}
	if len(keep) == 0 {
		return nil
	}
	return []string{strings.Join(keep, ", ")}
}

func stripTrailers(t http.Header, remote bool) {
	for k := range t {
		if stripped(k, remote) {
			delete(t, k)
		}
	}
}

// trailerScrubber removes identity trailers once net/http has filled them
// in, at the end of the body, before anything downstream copies them.
type trailerScrubber struct {
	io.ReadCloser
	r      *http.Request
	remote bool
}

func (b *trailerScrubber) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		stripTrailers(b.r.Trailer, b.remote)
	}
	return n, err
}

// varOwnCookies is the Caddy var that holds the gateway's own cookies of a
// request once the first sigra handler has taken them out of its headers.
const varOwnCookies = "sigra.own_cookies"

// ownCookies are the values of the gateway's cookies in one request. The
// first sigra handler to see a request moves them here from the Cookie
// header, so the upstream never receives a session it could replay or
// write to its logs (Pomerium does the same), while a portal or gate later
// in the same request still reads them. They live in Caddy's vars, which
// placeholders and log fields can reach, so they never print themselves.
type ownCookies struct {
	session, csrf string
	// sessionConflict is set when the request carried two different
	// session cookies: on plain HTTP, another site on the host (another
	// port, a sibling subdomain) can set one that the browser sends
	// first on paths it chooses. Neither is taken (see cookieValue).
	sessionConflict bool
	// csrfConflict is the same for the form cookie: sign-in forms then
	// cannot pass, and the page says why.
	csrfConflict bool
}

func (*ownCookies) String() string { return "[redacted]" }

// MarshalText keeps encoders (JSON, zap) from printing the values.
func (*ownCookies) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// takeOwnCookies returns the request's own cookies, taking them out of its
// Cookie header on the first call.
func takeOwnCookies(r *http.Request, secure bool) *ownCookies {
	ctx := r.Context()
	if c, ok := caddyhttp.GetVar(ctx, varOwnCookies).(*ownCookies); ok {
		return c
	}
	c := new(ownCookies)
	c.session, c.sessionConflict = cookieValue(r, sessionCookieName(secure))
	c.csrf, c.csrfConflict = cookieValue(r, csrfCookieName(secure)) // none either, on a conflict
	stripOwnCookies(r.Header)
	caddyhttp.SetVar(ctx, varOwnCookies, c)
	return c
}

// isOwnCookie reports whether a cookie name is one of the gateway's, in
// either form (with __Host- on HTTPS, without on plain HTTP).
func isOwnCookie(name string) bool {
	name = strings.TrimPrefix(strings.TrimSpace(name), "__Host-")
	return name == "sigra_session" || name == "sigra_csrf"
}

// stripOwnCookies removes the gateway's cookies from every Cookie header
// line and keeps the others as the client sent them; a line left empty
// goes, and so does the header when no line is left. It allocates only
// when a line mixes ours with the application's.
func stripOwnCookies(h http.Header) { editHeaderLines(h, "Cookie", withoutOwnCookies) }

// editHeaderLines replaces every line of header name in h with edit's
// result, dropping lines edited to "" and the header when none is left.
// It allocates only when edit changes a line.
func editHeaderLines(h http.Header, name string, edit func(line string) string) {
	lines := h[name]
	for i, line := range lines {
		clean := edit(line)
		if clean == line {
			continue
		}
		keep := append(make([]string, 0, len(lines)), lines[:i]...)
		if clean != "" {
			keep = append(keep, clean)
		}
		for _, l := range lines[i+1:] {
			if l = edit(l); l != "" {
				keep = append(keep, l)
			}
		}
		if len(keep) == 0 {
			delete(h, name)
		} else {
			h[name] = keep
		}
		return
	}
}

// withoutOwnCookies returns a Cookie header line without the gateway's
// cookies: the line itself when it has none of them. Pairs end at ';',
// and also at ',', RFC 2965's separator: browsers never send it, but a
// client or a proxy that joins Cookie lines may, and some apps' cookie
// parsers split there, so a session after a comma would reach them.
func withoutOwnCookies(line string) string {
	if !hasOwnCookie(line, ";,") {
		return line
	}
	return dropOwnCookies(line, ";", "; ")
}

// hasOwnCookie reports whether any pair of line, split at any byte of
// seps, is one of the gateway's cookies. It does not allocate.
func hasOwnCookie(line, seps string) bool {
	for rest := line; rest != ""; {
		part := rest
		if i := strings.IndexAny(rest, seps); i >= 0 {
			part, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		if name, _, _ := strings.Cut(part, "="); isOwnCookie(name) {
			return true
		}
	}
	return false
}

// dropOwnCookies joins the pairs of s, split at sep, with join, without
// the gateway's cookies; a pair holding a comma is split there too when
// one of its own pairs is a gateway cookie.
func dropOwnCookies(s, sep, join string) string {
	var b strings.Builder
	for rest := s; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, sep)
		part = strings.TrimSpace(part)
		if sep == ";" && strings.IndexByte(part, ',') >= 0 && hasOwnCookie(part, ",") {
			part = dropOwnCookies(part, ",", ", ")
		}
		name, _, _ := strings.Cut(part, "=")
		if part == "" || isOwnCookie(name) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(join)
		}
		b.WriteString(part)
	}
	return b.String()
}

// cookieValue finds a cookie without parsing all cookies (no
// allocation). A name sent twice with different values is a conflict,
// and neither value is returned: the browser orders same-named cookies
// by path, so a cookie set by another site on the host would otherwise
// pick the session for the paths it names.
func cookieValue(r *http.Request, name string) (v string, conflict bool) {
	found := false
	for _, line := range r.Header["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			if len(part) > len(name) && part[len(name)] == '=' && part[:len(name)] == name {
				val := part[len(name)+1:]
				if len(val) > 1 && val[0] == '"' && val[len(val)-1] == '"' {
					val = val[1 : len(val)-1]
				}
				if found && val != v {
					return "", true
				}
				v, found = val, true
			}
		}
	}
	return v, false
}

// isSecure reports whether the client reached Caddy (or a trusted proxy in
// front of it) over HTTPS.
func isSecure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return trusted(r) && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func trusted(r *http.Request) bool {
	t, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return t
}

// requestHost is the host (and port) the client asked for; from a trusted
// proxy, X-Forwarded-Host, when it is one that Go would take in a Host
// header (a proxy passing on what a client wrote must not put quotes,
// markup or bidi controls in an origin, a realm or a session's host).
func requestHost(r *http.Request) string {
	if trusted(r) {
		h, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Host"), ",")
		if h = strings.TrimSpace(h); h != "" && httpguts.ValidHostHeader(h) {
			return h
		}
	}
	return r.Host
}

// clientIP is the client address as resolved by Caddy (trusted_proxies
// and all); never a raw X-Forwarded-For.
func clientIP(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if len(ip) > 7 && strings.EqualFold(ip[:7], "::ffff:") {
		// An IPv4 address carried in IPv6 (a dual-stack listener, a
		// proxy's header) is that IPv4 address, as bans count it: the
		// audit rows and session lists name it so too.
		if a, err := netip.ParseAddr(ip); err == nil && a.Is4In6() {
			return a.Unmap().String()
		}
	}
	return ip
}

// looseProxiesWarned is set once warnLooseProxies has warned.
var looseProxiesWarned atomic.Bool

// warnLooseProxies warns, once per process, when a request comes from a
// trusted proxy on a server without trusted_proxies_strict. Caddy then
// takes the client address from the left of X-Forwarded-For, which the
// client wrote if the proxy appends to it (nginx's
// $proxy_add_x_forwarded_for, cloud load balancers): a client could then
// choose the address its failed sign-ins are counted under, escape the
// per-address limit, or get another address banned. (The server's
// trusted ranges are not readable after provisioning, so this is checked
// on the first proxied request rather than at start.)
func warnLooseProxies(r *http.Request, logger *zap.Logger) {
	if looseProxiesWarned.Load() || !trusted(r) {
		return
	}
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil || srv.TrustedProxiesStrict > 0 || !looseProxiesWarned.CompareAndSwap(false, true) {
		return
	}
	logger.Warn("this server trusts proxies without trusted_proxies_strict: behind a proxy that appends to "+
		"X-Forwarded-For, clients choose the address their failed sign-ins are counted and audited under; "+
		"set trusted_proxies_strict in the servers global options",
		zap.Strings("listen", srv.Listen))
}

// noAddressWarned is set once warnNoClientAddress has warned.
var noAddressWarned atomic.Bool

// warnNoClientAddress warns, once per process, when a sign-in comes with
// no client address: a Unix-socket listener gives none (Caddy's "@"),
// unless trusted_proxies_unix takes it from the proxy's
// X-Forwarded-For. Failures are then counted per account only: no
// address is banned, and one client may try a few passwords at every
// account.
func warnNoClientAddress(r *http.Request, logger *zap.Logger) {
	if ip := clientIP(r); ip != "" && ip != "@" || noAddressWarned.Load() || !noAddressWarned.CompareAndSwap(false, true) {
		return
	}
	logger.Warn("a sign-in came with no client address (a Unix-socket listener: set trusted_proxies_unix in the servers "+
		"global options, with trusted_proxies_strict, behind a proxy that sets X-Forwarded-For): failed sign-ins are "+
		"counted per account only, and no address is banned", zap.String("remote_addr", r.RemoteAddr))
}

// originCache remembers the last origin string built, so the hot path
// does not concatenate one per request.
type originCache struct {
	last atomic.Pointer[originEntry]
}

type originEntry struct {
	secure bool
	host   string
	origin string
}

// origin returns scheme://host for the request.
func (c *originCache) origin(r *http.Request) string {
	return c.originFor(isSecure(r), requestHost(r))
}

// originFor returns scheme://host, the host in lower case (as browsers
// write an origin, and as the site matched it), reusing the last string
// built.
func (c *originCache) originFor(secure bool, host string) string {
	if e := c.last.Load(); e != nil && e.secure == secure && e.host == host {
		return e.origin
	}
	scheme := "http://"
	if secure {
		scheme = "https://"
	}
	e := &originEntry{secure: secure, host: host, origin: scheme + strings.ToLower(host)}
	c.last.Store(e)
	return e.origin
}

// wantsHTML reports whether the client is a browser navigating.
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// navigates reports whether a request that is to sign in should be sent
// to the sign-in page: a browser loading a page. A script's request that
// accepts HTML (jQuery's load, a Turbo frame, a fetch) gets the 401
// instead, which it can act on: followed, the redirect would hand it
// the sign-in page as the fragment it asked for. Browsers say which it
// is with Sec-Fetch-Mode; without it, X-Requested-With: XMLHttpRequest
// (jQuery's) marks a script. (Android's WebView sends its app's name in
// X-Requested-With on every request, page loads included.)
func navigates(r *http.Request) bool {
	if !wantsHTML(r) {
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate"
	}
	return !strings.EqualFold(r.Header.Get("X-Requested-With"), "XMLHttpRequest")
}

// problem is an RFC 9457 problem detail.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Reason is a stable machine-readable code (e.g. "login_required").
	Reason string `json:"reason,omitempty"`
}

func writeProblem(w http.ResponseWriter, status int, reason, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{
		Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Reason: reason,
	})
}

// wwwAuthenticate is the challenge of a 401 to a client that is not a
// browser: where to sign in, or to pass the second factor (page).
func wwwAuthenticate(r *http.Request, prefix, page string) string {
	return `Sigra realm="` + requestHost(r) + `", login="` + prefix + page + `"`
}

// sameOrigin checks the browser's own statement of where a state-changing
// request came from: when Sec-Fetch-Site or Origin is present it must say
// same-origin. It comes on top of the CSRF token, which every form and
// API call must carry in any case.
//
// Origin "null" is what browsers send with the forms of a page served
// with Referrer-Policy no-referrer, as every portal page is (DESIGN §3;
// Fetch, "append a request Origin header"); a script's fetch sends its
// page's origin. For a form (form set) null passes:
//   - with Sec-Fetch-Site same-origin, which browsers send to HTTPS
//     sites and to localhost, and which pages cannot forge;
//   - on a plain-HTTP site (origin http://…) when Sec-Fetch-Site is
//     absent: browsers send none to a plain-HTTP host that is not
//     localhost, so there the token alone decides, as it does for a
//     request without Origin. Over HTTPS, a null Origin without
//     Sec-Fetch-Site (a browser from before 2023, or a sandboxed frame
//     of another site) stays refused.
func sameOrigin(r *http.Request, origin string, form bool) bool {
	// Every copy counts: a second header must not slip past the first.
	site, fetchSite := false, false
	for _, s := range r.Header.Values("Sec-Fetch-Site") {
		if s != "" && s != "same-origin" {
			return false
		}
		site = site || s == "same-origin"
		fetchSite = fetchSite || s != ""
	}
	nullOK := form && (site || !fetchSite && strings.HasPrefix(origin, "http://"))
	for _, o := range r.Header.Values("Origin") {
		if o != "" && o != origin && (o != "null" || !nullOK) {
			return false
		}
	}
	return true
}

// redirect sends the client to target as it is. http.Redirect cleans a
// local path, which would take a user back to another URL than the one
// they asked for (the app's /a//b as /a/b). target is the portal's own,
// or one CleanRedirect kept. Bytes outside ASCII are escaped, as
// http.Redirect does.
func redirect(w http.ResponseWriter, target string, code int) {
	var b strings.Builder
	for i := 0; i < len(target); i++ {
		if c := target[i]; c >= 0x80 {
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	w.Header().Set("Location", b.String())
	w.WriteHeader(code)
}

// portalURL is a portal page with a return URL, back.
func portalURL(prefix, page, back string) string {
	return prefix + page + "?rd=" + url.QueryEscape(back)
}

// toSignIn answers a request that needs what d denies first (a 401: a
// sign-in, or a second factor when d.stepUp): a browser loading a page
// goes to the portal page for it, back to back after (code: 302 from the
// gate, 303 from a portal page); any other client gets 401
// problem+json, with a challenge naming that page (DESIGN §3).
func toSignIn(w http.ResponseWriter, r *http.Request, prefix string, d *denial, back string, code int) {
	page := "/login"
	if d.stepUp {
		page = "/mfa"
	}
	if navigates(r) {
		redirect(w, portalURL(prefix, page, back), code)
		return
	}
	w.Header().Set("WWW-Authenticate", wwwAuthenticate(r, prefix, page))
	writeProblem(w, d.status, d.reason, d.detail)
}

// originalURI is the request's URI as the client sent it, before
// handle_path or a uri rewrite changed it.
func originalURI(r *http.Request) string { return originalURL(r).RequestURI() }

// originalURL is the request's URL before handle_path or a uri rewrite
// changed it.
func originalURL(r *http.Request) *url.URL {
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		return orig.URL
	}
	return r.URL
}

// isTooLarge reports whether err came from a body over its limit.
func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// Bounds on the Set-Cookie lines of forgetCookies: a deep path or a
// long host name costs that many at most, and their bytes stay within
// what a proxy in front takes for a whole header (nginx: 4 KB).
const (
	maxForgetPaths   = 12
	maxForgetDomains = 4
	maxForgetBytes   = 2048
)

// forgetCookies has the browser forget every cookie called name that it
// may have sent with r, which carried two different ones (cookieValue):
// which is the user's own cannot be told, so both go, and the page says
// to sign in again. On plain HTTP the other may have been set for this
// host or a parent domain, at any path that r's path matches (RFC 6265
// 5.1.4), and a cookie is forgotten only by a line naming the same
// domain and path: one line for each. (A line for a public suffix,
// Domain=co.uk, is ignored by the browser.) On HTTPS a __Host- name can
// only be set for the host, at /: one line does, and one more for a
// partitioned cookie of that name.
func forgetCookies(w http.ResponseWriter, r *http.Request, name string, secure bool) {
	// Lines as short as they can be (a browser matches name, domain and
	// path): a proxy in front may take a few KB of header only.
	forget := func(domain, path string, partitioned bool) {
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Domain: domain, Path: path, MaxAge: -1,
			Secure: secure, Partitioned: partitioned})
	}
	if secure {
		// A partitioned cookie (CHIPS), which script on the site can
		// set, is kept apart and sent too: it takes a line of its own.
		forget("", "/", false)
		forget("", "/", true)
		return
	}
	domains := []string{""} // host-only
	if host := authcore.NormalizeHost(requestHost(r)); net.ParseIP(host) == nil && cookieDomainName(host) {
		// The registrable domain (not a public suffix: a browser takes
		// no cookie for co.uk) and those under it, where a sibling site
		// sets a cookie for the whole family, then the host itself
		// (Domain=host is not host-only to every browser).
		if top, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
			var names []string
			for d := host; ; _, d, _ = strings.Cut(d, ".") {
				names = append(names, d)
				if d == top {
					break
				}
			}
			slices.Reverse(names)
			if len(names) > maxForgetDomains {
				names = append(names[:maxForgetDomains-1], host)
			}
			domains = append(domains, names...)
		}
	}
	// In turn, each line skipped if it does not fit:
	//  1. / for every domain;
	//  2. one line with no Path, which the browser gives the page's own
	//     folder (as it does a cookie script sets, whatever its bytes);
	//  3. the first folder's (/app, /app/) for every domain;
	//  4. the deeper paths host-only, from the deepest up;
	//  5. the parents' deeper paths, from the shallowest down.
	// A Path longer than a browser keeps (1024 bytes) is left out.
	paths := cookiePaths(originalURL(r).EscapedPath())
	first := min(len(paths), 3)
	budget := maxForgetBytes
	line := func(d, path string) {
		// Set-Cookie: name=[; Path=path][; Domain=d]; Max-Age=0 CRLF
		n := 26 + len(name)
		if path != "" {
			n += 7 + len(path)
		}
		if d != "" {
			n += 9 + len(d)
		}
		if n <= budget && len(path) <= 1024 {
			budget -= n
			forget(d, path, false)
		}
	}
	for _, d := range domains {
		line(d, "/")
	}
	line("", "")
	for _, d := range domains {
		for _, path := range paths[1:first] {
			line(d, path)
		}
	}
	for i := len(paths) - 1; i >= first; i-- {
		line("", paths[i])
	}
	for _, d := range domains[1:] {
		for _, path := range paths[first:] {
			line(d, path)
		}
	}
}

// cookieDomainName reports whether h is a DNS name that a cookie's
// Domain may be: net/http drops (and logs) any other, and a Host header
// may hold more than names do.
func cookieDomainName(h string) bool {
	if h == "" || h[0] == '.' || h[len(h)-1] == '.' || strings.Contains(h, "..") {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// cookiePaths are the cookie paths that a browser sends with a request
// for path p, shallow first: "/", each prefix of p that ends before or at
// a "/", and p itself; of a deeper path, the first folder's and the
// deepest ones, maxForgetPaths in all. A path with a ';', which no
// cookie's Path can hold, is left out.
func cookiePaths(p string) []string {
	paths := []string{"/"}
	if !strings.HasPrefix(p, "/") {
		return paths
	}
	add := func(s string) {
		if s != paths[len(paths)-1] && !strings.Contains(s, ";") {
			paths = append(paths, s)
		}
	}
	first := strings.IndexByte(p[1:], '/') + 1 // the first folder's end; 0 if none
	if first > 0 {
		add(p[:first])
		add(p[:first+1])
	}
	room := maxForgetPaths - len(paths)
	deep := []string{p} // from the deepest up, each once
	for k := len(p) - 1; k > first && len(deep) < room; k-- {
		if p[k] != '/' {
			continue
		}
		for _, s := range [...]string{p[:k+1], p[:k]} {
			if s != deep[len(deep)-1] && len(deep) < room {
				deep = append(deep, s)
			}
		}
	}
	for i := len(deep) - 1; i >= 0; i-- {
		add(deep[i])
	}
	return paths
}
