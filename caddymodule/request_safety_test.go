package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// sendRaw sends a request whose headers may repeat, and returns its status
// and body.
func (e *env) sendRaw(method, path string, hdr http.Header, body []byte) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header = hdr
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// DESIGN §3's request safety, for bodies ParseForm would not read and for
// headers sent twice: a form in another encoding is 415 (413 when over
// the cap), an admin API body over the cap is 413 though no endpoint
// reads one, and a second Origin or Sec-Fetch-Site is checked like the
// first.
func TestRequestSafetyEdges(t *testing.T) {
	e, target := startAsAdmin(t)
	ctx := context.Background()
	_, page := e.get("/.sigra/account", nil)
	csrf := csrfFrom(t, page)

	multipartBody := func(size int) ([]byte, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("csrf_token", csrf)
		mw.WriteField("pad", strings.Repeat("x", size))
		mw.Close()
		return buf.Bytes(), mw.FormDataContentType()
	}
	same := func(ct string) http.Header {
		return http.Header{"Content-Type": {ct}, "Origin": {e.base}, "Sec-Fetch-Site": {"same-origin"}}
	}
	small, smallCT := multipartBody(10)
	big, bigCT := multipartBody(maxFormBody)
	for _, c := range []struct {
		name, ct string
		body     []byte
		want     int
	}{
		{"small multipart form", smallCT, small, http.StatusUnsupportedMediaType},
		{"multipart form over the cap", bigCT, big, http.StatusRequestEntityTooLarge},
		{"text/plain", "text/plain", []byte("csrf_token=" + csrf), http.StatusUnsupportedMediaType},
		{"JSON over the cap", "application/json", bytes.Repeat([]byte(" "), maxFormBody+1), http.StatusRequestEntityTooLarge},
	} {
		if code, _ := e.sendRaw(http.MethodPost, "/.sigra/logout", same(c.ct), c.body); code != c.want {
			t.Errorf("logout as %s: status %d; want %d", c.name, code, c.want)
		}
	}
	if r, _ := e.get("/x", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("a refused logout form ended the session: status %d", r.StatusCode)
	}

	// The admin API: a body over the cap on a POST that reads none.
	api := "/.sigra/api/admin/users/" + target.ID + "/disable"
	hdr := http.Header{"X-CSRF-Token": {e.adminCSRF()}, "Origin": {e.base}, "Content-Type": {"application/json"}}
	if code, body := e.sendRaw(http.MethodPost, api, hdr, bytes.Repeat([]byte(" "), maxFormBody+1)); code != http.StatusRequestEntityTooLarge || problemReason(body) != "too_large" {
		t.Errorf("admin POST with a body over the cap: status %d body %s; want 413 too_large", code, body)
	}
	if u, _ := e.rt().store.UserByID(ctx, target.ID); u.Disabled {
		t.Fatal("an admin POST refused as too large disabled the user")
	}
	// Every answer of the API carries the portal's CSP.
	resp := e.do(http.MethodGet, "/.sigra/api/admin/users", map[string]string{"Accept": "application/json"}, nil)
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("admin API CSP %q; want the portal's", csp)
	}

	// A second Origin or Sec-Fetch-Site after a same-origin one.
	for name, h := range map[string]http.Header{
		"Origin twice":         {"Origin": {e.base, "https://evil.example"}},
		"Sec-Fetch-Site twice": {"Origin": {e.base}, "Sec-Fetch-Site": {"same-origin", "cross-site"}},
	} {
		h.Set("X-CSRF-Token", e.adminCSRF())
		if code, _ := e.sendRaw(http.MethodPost, api, h, nil); code != http.StatusForbidden {
			t.Errorf("admin POST, %s: status %d; want 403", name, code)
		}
		h.Del("X-CSRF-Token")
		h.Set("Content-Type", "application/x-www-form-urlencoded")
		if code, _ := e.sendRaw(http.MethodPost, "/.sigra/logout", h, []byte(url.Values{"csrf_token": {csrf}}.Encode())); code != http.StatusForbidden {
			t.Errorf("logout form, %s: status %d; want 403", name, code)
		}
	}
	if u, _ := e.rt().store.UserByID(ctx, target.ID); u.Disabled {
		t.Error("a POST with a cross-site second header disabled the user")
	}
	if r, _ := e.get("/x", nil); r.StatusCode != http.StatusOK {
		t.Errorf("a cross-site logout ended the session: status %d", r.StatusCode)
	}
}

// Portal pages answer a client that does not ask for HTML as the gate
// does: 401 problem+json with WWW-Authenticate, not a redirect to a form.
func TestPortalPagesAnswerAPIClientsWith401(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	for _, path := range []string{"/.sigra/account", "/.sigra/account/totp", "/.sigra/mfa", "/.sigra/logout", "/.sigra/admin/users"} {
		r, body := e.get(path, map[string]string{"Accept": "application/json"})
		if r.StatusCode != http.StatusUnauthorized || problemReason(body) != "login_required" || r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET %s as an API client, signed out: status %d body %s; want 401 login_required with WWW-Authenticate", path, r.StatusCode, body)
		}
		if path == "/.sigra/logout" {
			continue // a browser is told it is signed out (TestLoginAndLogout)
		}
		if r, _ := e.get(path, map[string]string{"Accept": "text/html"}); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/.sigra/login?rd=") {
			t.Errorf("GET %s as a browser, signed out: status %d Location %q; want 303 to sign in", path, r.StatusCode, r.Header.Get("Location"))
		}
	}
}

// A session with its second factor pending is told so as JSON too, in
// the gate's words: 401 mfa_pending, not a redirect, nor mfa_required
// (a recent second factor missing, which it is told at the admin pages
// once signed in with one too old).
func TestPortalPagesAnswerAPIClientsMFAPending(t *testing.T) {
	e, _ := startAsAdmin(t) // root@example.com has TOTP
	e.client.Jar, _ = newJar()
	e.login("root@example.com", testPassword, "/") // password only: pending
	for _, path := range []string{"/x", "/.sigra/account", "/.sigra/account/totp", "/.sigra/account/password", "/.sigra/admin", "/.sigra/admin/users"} {
		r, body := e.get(path, map[string]string{"Accept": "application/json"})
		if r.StatusCode != http.StatusUnauthorized || problemReason(body) != "mfa_pending" || !strings.HasSuffix(r.Header.Get("WWW-Authenticate"), `login="/.sigra/mfa"`) {
			t.Errorf("GET %s as an API client, second factor pending: status %d WWW-Authenticate %q body %s; want 401 mfa_pending, pointing at the MFA page", path, r.StatusCode, r.Header.Get("WWW-Authenticate"), body)
		}
	}
}

// rawGet sends the request line exactly as given: no client cleans the
// path on the way.
func rawGet(t *testing.T, e *env, target string, hdr map[string]string) (int, string) {
	t.Helper()
	addr := strings.TrimPrefix(e.base, "http://")
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", target, addr)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	// A connection closed unanswered just after a config load
	// (closedByReload) is tried once more.
	var resp *http.Response
	for try := 0; ; try++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err = c.Write([]byte(b.String())); err == nil {
			resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		}
		if err != nil && try == 0 && closedByReload(&http.Request{}, err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body)
}

// Caddy picks a path-scoped gate on the path decoded and cleaned, and
// reverse_proxy sends the app the path as written. A path the two read
// apart (dot segments, plain or encoded; ';' parameters, which servlet
// containers drop; backslashes) would let a signed-in non-admin, or
// anyone through an optional gate, reach /admin/… on such an app with
// only the bare gate's check. Such paths are refused before any gate
// decides, and never reach the app.
func TestNonCanonicalPathsAreRefused(t *testing.T) {
	e := startCaddy(t, "", testSite)
	e.addUser("mallory@example.com", "staff")
	e.mustLogin("mallory@example.com")
	signedIn := map[string]string{"Cookie": "sigra_session=" + e.sessionCookie(), "Accept": "application/json"}
	anon := map[string]string{"Accept": "application/json"}
	refused := []string{
		"/admin/../panel", "/admin/%2e%2e/panel", "/admin/..%2fpanel", "/admin/%2E%2E%2Fpanel",
		"/admin/x/%2e%2e/%2e%2e/public/x", "/admin/./panel", "/admin/.", "/admin/..",
		"/admin;x/panel", "/x/..;/admin/panel", "/public/..;/admin/panel", "/admin%3bx/panel",
		`/admin\panel`, "/admin%5cpanel", "/.sigra/../admin/panel",
		// For apps that decode twice, or read overlong UTF-8.
		"/public/%252e%252e/admin/panel", "/public/x/..%252fadmin/panel", "/public/%252E%252E%252Fadmin/panel",
		"/public/..%255cadmin/panel", "/admin%253bx/panel", "/public/%c0%ae%c0%ae/admin/panel", "/public/%c0%afadmin",
		// Any character encoded twice: /%61dmin to the gate, /admin to
		// an app that decodes twice.
		"/%2561dmin/panel", "/%2541DMIN/panel", "/docs/%2561",
		// Overlong forms of every length.
		"/public/%e0%80%ae%e0%80%ae/admin/panel", "/public/%e0%80%ae%e0%80%ae%e0%80%afadmin",
		"/public/%f0%80%80%ae%f0%80%80%ae/admin/panel", "/public/%f8%80%80%80%ae/admin", "/public/%fc%80%80%80%80%ae/admin",
		// ".." to Windows servers, which drop trailing dots and spaces.
		"/public/..%20/admin/panel", "/public/.../admin/panel", "/public/.%20./admin/panel",
		// ".." to apps that trim control characters too (Java's trim()).
		"/public/..%09/admin/panel", "/public/%09../admin/panel", "/public/%09%E2%80%A5/admin/panel",
		// The end of the path to apps that stop at NUL, and dot segments
		// to apps that fold Unicode (a fullwidth solidus, full stops).
		"/public/..%00/admin/panel", "/public/..%ef%bc%8fadmin/panel", "/public/%ef%bc%8e%ef%bc%8e/admin/panel",
	}
	for _, target := range refused {
		for who, hdr := range map[string]map[string]string{"signed in": signedIn, "anonymous": anon} {
			_, before := e.up.last()
			code, body := rawGet(t, e, target, hdr)
			if _, after := e.up.last(); after != before {
				t.Errorf("%s %s reached the app", who, target)
			}
			if code != http.StatusBadRequest || !strings.Contains(body, "bad_path") {
				t.Errorf("%s %s: status %d %s; want 400 bad_path", who, target, code, body)
			}
		}
	}
	// Paths that only look alike pass as before.
	for target, want := range map[string]int{
		"/admin/panel": http.StatusForbidden, "/public/x": http.StatusOK, "/.well-known/x": http.StatusOK,
		"/docs/v1.2/..x": http.StatusOK, "/docs/x..": http.StatusOK, "/docs/.x/y.": http.StatusOK,
		"/docs?q=../x;y": http.StatusOK, "/docs/100%25": http.StatusOK, "/docs/50%25off": http.StatusOK, "/docs/%25zz": http.StatusOK,
		"/docs/caf%c3%a9": http.StatusOK, "/docs/caf%e9": http.StatusOK, "/docs/%e0la": http.StatusOK, "/docs/%e0%a4%85": http.StatusOK,
		"/docs/%f0%9f%98%80": http.StatusOK, "/docs/a%ef%bc%8epdf": http.StatusOK, "/docs/2024%ef%bc%8f12": http.StatusOK,
	} {
		if code, body := rawGet(t, e, target, signedIn); code != want {
			t.Errorf("%s: status %d %s; want %d", target, code, body, want)
		}
	}
	if code, body := rawGet(t, e, "/admin/../panel", map[string]string{"Accept": "text/html"}); code != http.StatusBadRequest || !strings.Contains(body, "dot segment") {
		t.Errorf("a browser's refused path: status %d; want 400 and a page saying why\n%s", code, body)
	}

	// With no bare gate, no gate runs for these paths at all: the portal,
	// which sees every request of the site, refuses them.
	only := startCaddy(t, "", "sigra_gate /admin/* {\n\t\tgroup admins\n\t}")
	for _, target := range []string{"/x/..;/admin/panel", "/admin/../panel", `/x\..\admin\panel`} {
		_, before := only.up.last()
		if code, _ := rawGet(t, only, target, anon); code != http.StatusBadRequest {
			t.Errorf("only a scoped gate, %s: status %d; want 400", target, code)
		}
		if _, after := only.up.last(); after != before {
			t.Errorf("only a scoped gate, %s reached the app", target)
		}
	}
	if code, _ := rawGet(t, only, "/panel", anon); code != http.StatusOK {
		t.Errorf("only a scoped gate, /panel: status %d; want 200 (ungated)", code)
	}
}

// path_params allow lets ';' through, for apps that treat it as an
// ordinary character; everything else is still refused.
func TestPathParamsAllow(t *testing.T) {
	e := startCaddy(t, "path_params allow", testSite)
	e.addUser("mallory@example.com", "staff")
	e.mustLogin("mallory@example.com")
	hdr := map[string]string{"Cookie": "sigra_session=" + e.sessionCookie(), "Accept": "application/json"}
	if code, body := rawGet(t, e, "/docs;v=2/x", hdr); code != http.StatusOK {
		t.Errorf("';' with path_params allow: status %d %s; want 200", code, body)
	}
	for _, target := range []string{"/admin/../x", "/public/..;/admin/panel", "/public/.;x/y"} {
		if code, _ := rawGet(t, e, target, hdr); code != http.StatusBadRequest {
			t.Errorf("%s with path_params allow: status %d; want 400", target, code)
		}
	}
}

func TestPathRefusal(t *testing.T) {
	for path, want := range map[string]string{
		"/": "", "/a/b": "", "/.well-known/x": "", "/a/..b": "", "/a/b..": "", "/a/.b.": "", "/a.b/c": "",
		"/..": "a dot segment", "/.": "a dot segment", "/a/./b": "a dot segment", "/a/../b": "a dot segment",
		"/a/..": "a dot segment", "/a/.": "a dot segment", "/a;b": `a ";" parameter`, `/a\b`: "a backslash",
		"/a/%2e%2e/b": "a character encoded twice", "/a%2Fb": "a character encoded twice",
		"/a%5Cb": "a character encoded twice", "/a%3bb": "a character encoded twice", "/a%61": "a character encoded twice",
		"/a%6A": "a character encoded twice", "/a%Zb": "", "/a%6": "", "/a%%61": "a character encoded twice",
		"/%u0061dmin": "a character encoded twice", "/%U0061": "a character encoded twice", "/%u006": "", "/%uzzzz": "",
		"/a/\xc0\xae\xc0\xae/b": "an overlong UTF-8 sequence", "/100%": "", "/100%2": "", "/caf\xc3\xa9": "",
		"/a/\xe0\x80\xae": "an overlong UTF-8 sequence", "/a/\xe0\x9f\xbf": "an overlong UTF-8 sequence",
		"/a/\xf0\x80\x80\xae": "an overlong UTF-8 sequence", "/a/\xf0\x8f\xbf\xbf": "an overlong UTF-8 sequence",
		"/a/\xf8\x80\x80\x80\xae": "an overlong UTF-8 sequence", "/a/\xfc\x80\x80\x80\x80\xae": "an overlong UTF-8 sequence",
		"/a/\xe0\xa0\x80": "", "/a/\xf0\x90\x80\x80": "", "/caf\xe9": "", "/\xe0la": "", "/\xe0": "", "/\xf8\xf8": "",
		// Windows servers drop trailing dots and spaces: all these are "..".
		"/a/.../b": "a dot segment", "/a/.. /b": "a dot segment", "/a/. ": "a dot segment", "/a/. . ;x": "a dot segment",
		"/a/.. x/b": "", "/a/...x": "",
		// Java's trim() drops control characters and spaces on both
		// sides of a segment.
		"/a/ ../b": "a dot segment", "/a/\t../b": "a dot segment", "/a/..\t/b": "a dot segment",
		"/a/\t\u2025/b": "a dot segment", "/a/\x1f.\x0b": "a dot segment", "/a/\t..x/b": "",
		// So do spaces that Unicode folds from others, for apps that fold.
		"/a/..\u00a0/b": "a dot segment", "/a/\u3000../b": "a dot segment", "/a/.\u00a0./b": "a dot segment",
		"/a/\uff0e\u00a0\uff0e/b": "a dot segment", "/a/\u2025\u202f/b": "a dot segment", "/a/\u2000..\u205f": "a dot segment",
		"/a/\u00a0x/b": "", "/a/..\u00a0x/b": "", "/a/\u00a0/b": "", "/a/\u00e9../b": "",
		"/a/..\u2028/b": "a dot segment", "/a/\u0085../b": "a dot segment", "/a/.\u1680": "a dot segment",
		// NUL ends the path for apps that stop at it.
		"/public/..\x00/admin": "a NUL character", "/a\x00": "a NUL character",
		// Dots and slashes that Unicode folds (NFKC) to them, for apps
		// that fold paths; the same characters inside a name pass.
		"/public/..\uff0fadmin": "a dot segment", "/public/\uff0e\uff0e/admin": "a dot segment",
		"/public\uff0f..\uff0fadmin": "a dot segment", "/a/\u2025/b": "a dot segment", "/a/.\ufe52": "a dot segment",
		"/a/\u2026 /b": "a dot segment", "/a/\ufe30/b": "a dot segment", "/a/\ufe19": "a dot segment", "/a\uff3c..": "a dot segment", "/a\ufe68..\ufe68b": "a dot segment",
		"/files/\u30ec\u30dd\u30fc\u30c8\uff0epdf": "", "/blog/2024\uff0f12": "", "/a/\u2024x": "", "/a\uff0fb": "",
	} {
		if got := pathRefusal(path, false); got != want {
			t.Errorf("pathRefusal(%q) = %q; want %q", path, got, want)
		}
	}
	if got := pathRefusal("/a;b/c", true); got != "" {
		t.Errorf("pathRefusal with params allowed = %q; want none", got)
	}
	// With ';' allowed, ';' encoded twice is allowed too, and nothing else.
	for path, want := range map[string]string{
		"/a%3bb/c": "", "/a%3Bb/c": "", "/a%61b/c": "a character encoded twice", "/a/..;b/c": "a dot segment",
		"/a/..%3bb/c": "a dot segment", "/a/.%3B/c": "a dot segment", "/a/..x%3b/c": "",
	} {
		if got := pathRefusal(path, true); got != want {
			t.Errorf("pathRefusal(%q) with params allowed = %q; want %q", path, got, want)
		}
	}
}

// The assertion's iss and aud, and the origin forms are checked against,
// carry the host in lower case, as browsers write an origin and as Caddy
// matched the site: a client's "Host: App.Example.COM" is no other origin.
func TestOriginIsLowerCase(t *testing.T) {
	var c originCache
	for _, tc := range []struct {
		secure     bool
		host, want string
	}{
		{false, "App.Example.COM:8443", "http://app.example.com:8443"},
		{true, "app.example.com", "https://app.example.com"},
		{false, "App.Example.COM:8443", "http://app.example.com:8443"}, // from the cache
	} {
		if got := c.originFor(tc.secure, tc.host); got != tc.want {
			t.Errorf("originFor(%t, %q) = %q; want %q", tc.secure, tc.host, got, tc.want)
		}
	}
}

// An IPv4 address carried in IPv6 is named as the IPv4 address it is, as
// bans count it, in the audit rows and session lists too.
func TestClientIPUnmapsIPv4InIPv6(t *testing.T) {
	for in, want := range map[string]string{
		"::ffff:10.9.9.9": "10.9.9.9", "::FFFF:10.9.9.9": "10.9.9.9", "10.9.9.9": "10.9.9.9",
		"2001:db8::1": "2001:db8::1", "::ffff:zz": "::ffff:zz", "": "",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: in}))
		if got := clientIP(r); got != want {
			t.Errorf("clientIP(%q) = %q; want %q", in, got, want)
		}
	}
}

// A sign-in with no client address (a Unix-socket listener) is warned of,
// once: failures are then counted per account only.
func TestNoClientAddressIsWarnedOfOnce(t *testing.T) {
	noAddressWarned.Store(false)
	t.Cleanup(func() { noAddressWarned.Store(false) })
	core, logs := observer.New(zap.WarnLevel)
	logger := zap.New(core)
	for _, ip := range []string{"127.0.0.1", "", "@", ""} {
		r := httptest.NewRequest(http.MethodPost, "/.sigra/login", nil)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip}))
		warnNoClientAddress(r, logger)
	}
	if n := logs.FilterMessageSnippet("trusted_proxies_unix").Len(); n != 1 {
		t.Errorf("%d warnings for sign-ins without a client address; want 1", n)
	}
}
