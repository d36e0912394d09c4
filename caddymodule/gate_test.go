package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// The site used by most tests: everything signed in, /admin/* for the
// admins group, /public/* optional.
const testSite = `
	sigra_gate
	sigra_gate /admin/* {
		group admins
	}
	sigra_gate /public/* {
		optional
	}`

// forged are headers a client might send to impersonate someone.
var forged = map[string]string{
	"X-Sigra-User":     "forged-user",
	"x-sigra-email":    "forged@example.com",
	"X_Sigra_Groups":   "admins",
	"x_sigra_amr":      "mfa",
	"X-SIGRA-ORG":      "forged-org",
	"X-Sigra-Whatever": "forged",
	// Not identity, but a way round the gates' paths for apps that route
	// on them.
	"X-Original-URL": "/admin/forged",
	"x_rewrite_url":  "/admin/forged",
}

// assertNoForged fails if any header derived from forged reached the app.
func assertNoForged(t *testing.T, h http.Header) {
	t.Helper()
	for k, vals := range h {
		for _, v := range vals {
			if strings.Contains(v, "forged") || (isIdentityHeader(k, true) && v == "admins" && k != hdrGroups) {
				t.Errorf("forged header reached the app: %s: %s", k, v)
			}
		}
		if strings.Contains(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-sigra-") && !strings.HasPrefix(k, "X-Sigra-") {
			t.Errorf("non-canonical identity header reached the app: %s", k)
		}
	}
}

func TestGateAnonymous(t *testing.T) {
	e := startCaddy(t, "", testSite)

	t.Run("browser is redirected to login with rd", func(t *testing.T) {
		resp, _ := e.get("/reports/q1?x=1&y=2", map[string]string{"Accept": "text/html,application/xhtml+xml"})
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("status %d; want 302", resp.StatusCode)
		}
		want := "/.sigra/login?rd=" + url.QueryEscape("/reports/q1?x=1&y=2")
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("Location %q; want %q", got, want)
		}
	})
	t.Run("API client gets 401 problem+json", func(t *testing.T) {
		resp, body := e.get("/api/things", map[string]string{"Accept": "application/json"})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d; want 401", resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Type"); got != "application/problem+json" {
			t.Errorf("Content-Type %q; want application/problem+json", got)
		}
		if resp.Header.Get("WWW-Authenticate") == "" {
			t.Error("no WWW-Authenticate header")
		}
		var p problem
		if err := json.Unmarshal([]byte(body), &p); err != nil || p.Status != 401 || p.Reason != "login_required" {
			t.Errorf("body %s; want a problem with status 401 and reason login_required", body)
		}
	})
	// A script that accepts HTML would get the sign-in page as its
	// fragment if it followed a redirect: it gets the 401.
	for name, h := range map[string]map[string]string{
		"jQuery load":       {"Accept": "text/html, */*; q=0.01", "X-Requested-With": "XMLHttpRequest"},
		"fetch":             {"Accept": "text/html", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"},
		"same-origin fetch": {"Accept": "text/vnd.turbo-stream.html, text/html, application/xhtml+xml", "Sec-Fetch-Mode": "same-origin"},
	} {
		resp, body := e.get("/fragment", h)
		if resp.StatusCode != http.StatusUnauthorized || problemReason(body) != "login_required" || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s, signed out: status %d body %s; want 401 login_required with WWW-Authenticate", name, resp.StatusCode, body)
		}
	}
	for name, h := range map[string]map[string]string{
		"a navigation":         {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
		"an Android WebView's": {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "X-Requested-With": "com.example.app"},
		"an older WebView's":   {"Accept": "text/html", "X-Requested-With": "com.example.app"},
	} {
		if resp, _ := e.get("/page", h); resp.StatusCode != http.StatusFound {
			t.Errorf("%s page load, signed out: status %d; want 302 to sign in", name, resp.StatusCode)
		}
	}
	if _, hits := e.up.last(); hits != 0 {
		t.Errorf("the app saw %d anonymous requests; want 0", hits)
	}
	t.Run("optional route passes without identity, forged headers stripped", func(t *testing.T) {
		resp, body := e.get("/public/page", forged)
		if resp.StatusCode != http.StatusOK || body != "app:/public/page" {
			t.Fatalf("status %d body %q; want 200 from the app", resp.StatusCode, body)
		}
		h, _ := e.up.last()
		assertNoForged(t, h)
		if v := h.Get(hdrUser); v != "" {
			t.Errorf("%s = %q on an anonymous request; want none", hdrUser, v)
		}
	})
}

// TestPortalStripsOnUngatedPaths: in a site with the portal, a path no
// gate covers still reaches the app without forged identity headers.
func TestPortalStripsOnUngatedPaths(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate /private/*")
	resp, body := e.get("/open/page", forged)
	if resp.StatusCode != http.StatusOK || body != "app:/open/page" {
		t.Fatalf("status %d body %q; want 200 from the app", resp.StatusCode, body)
	}
	h, hits := e.up.last()
	if hits != 1 {
		t.Fatalf("the app saw %d requests; want 1", hits)
	}
	assertNoForged(t, h)
	for k := range h {
		if isIdentityHeader(k, true) {
			t.Errorf("identity header %s reached the app on an ungated path", k)
		}
	}
}

// A handler between the portal and a gate (a route block's
// request_header) that sets an identity header again does not reach the
// app through the gate: the gate strips before it decides, for an
// anonymous request on an optional route and for a header the signed-in
// user has no value for (X-Sigra-Name, for a user without a name).
func TestGateStripsWhatWasSetAfterThePortal(t *testing.T) {
	e := startCaddy(t, "header_aliases remote", "route {\n\t\trequest_header X-Sigra-User forged\n\t\trequest_header X-Sigra-Name forged\n\t\trequest_header Remote-User forged\n\t\tsigra_gate {\n\t\t\toptional\n\t\t}\n\t}")
	check := func(who, wantUser string) {
		t.Helper()
		h, _ := e.up.last()
		if h == nil {
			t.Fatalf("%s: the app saw no request", who)
		}
		if got := h.Get(hdrUser); got != wantUser {
			t.Errorf("%s: %s = %q upstream; want %q", who, hdrUser, got, wantUser)
		}
		if v := h.Values(hdrName); len(v) != 0 {
			t.Errorf("%s: %s = %q upstream, set before the gate; want none", who, hdrName, v)
		}
		if v := h.Values("Remote-User"); !slices.Equal(v, map[bool][]string{true: nil, false: {wantUser}}[wantUser == ""]) {
			t.Errorf("%s: Remote-User = %q upstream; want only the gate's (%q)", who, v, wantUser)
		}
	}
	if resp, _ := e.get("/page", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("anonymous on the optional route: status %d", resp.StatusCode)
	}
	check("anonymous", "")
	u, err := e.rt().auth.CreateUser(context.Background(), authcore.NewUser{Email: "noname@example.com", Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	e.mustLogin("noname@example.com")
	if resp, _ := e.get("/page", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed in: status %d", resp.StatusCode)
	}
	check("signed in without a name", u.ID)
}

func TestGateSignedIn(t *testing.T) {
	e := startCaddy(t, "", testSite)
	u := e.addUser("alice@example.com", "staff")
	e.mustLogin("alice@example.com")

	resp, body := e.get("/docs", forged)
	if resp.StatusCode != http.StatusOK || body != "app:/docs" {
		t.Fatalf("status %d body %q; want 200 from the app", resp.StatusCode, body)
	}
	h, _ := e.up.last()
	assertNoForged(t, h)
	want := map[string]string{
		hdrUser: u.ID, hdrEmail: "alice@example.com", hdrName: "Test alice@example.com",
		hdrGroups: "staff", hdrAMR: "pwd",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q; want %q", k, got, v)
		}
	}
	id, ok := authcore.TokenID(e.sessionCookie())
	if !ok {
		t.Fatal("no valid session cookie")
	}
	if got := h.Get(hdrSession); got != id.String() {
		t.Errorf("%s = %q; want the session id hash %q", hdrSession, got, id.String())
	}
	if got := h.Get(hdrSession); got == e.sessionCookie() {
		t.Error("the session header carries the cookie value")
	}

	// The assertion verifies against the served JWKS with go-jose.
	claims := verifyAssertion(t, e, h.Get(hdrAssertion))
	if claims["sub"] != u.ID || claims["email"] != "alice@example.com" || claims["iss"] != e.base || claims["aud"] != e.base {
		t.Errorf("claims %v; want sub %s, email alice@example.com, iss and aud %s", claims, u.ID, e.base)
	}
	if claims["sid"] != id.String() {
		t.Errorf("sid %v; want %s", claims["sid"], id.String())
	}

	t.Run("assertion is cached across requests", func(t *testing.T) {
		e.get("/a", nil)
		h1, _ := e.up.last()
		// Into the next second (well within the TTL/2 re-sign window): an
		// assertion signed now would carry a new iat, so a byte-identical
		// one (Ed25519 is deterministic) can only be the cached one.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
		e.get("/b", nil)
		h2, _ := e.up.last()
		if h1.Get(hdrAssertion) != h2.Get(hdrAssertion) {
			t.Fatal("assertion re-signed on the next request; want it cached")
		}
		if iat, _ := verifyAssertion(t, e, h2.Get(hdrAssertion))["iat"].(float64); int64(iat) >= time.Now().Unix() {
			t.Errorf("iat %v is this second; want the earlier, cached assertion's", iat)
		}
	})
	t.Run("key rotation re-signs with the new key", func(t *testing.T) {
		e.get("/a", nil)
		before, _ := e.up.last()
		if err := e.rt().keys.Rotate(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
		e.get("/a", nil)
		after, _ := e.up.last()
		if before.Get(hdrAssertion) == after.Get(hdrAssertion) {
			t.Fatal("assertion unchanged after key rotation")
		}
		verifyAssertion(t, e, after.Get(hdrAssertion))
		verifyAssertion(t, e, before.Get(hdrAssertion)) // the old key is still published
	})
	t.Run("group requirement denies non-members", func(t *testing.T) {
		resp, body := e.get("/admin/panel", map[string]string{"Accept": "application/json"})
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"reason":"group"`) {
			t.Errorf("status %d body %s; want 403 with reason group", resp.StatusCode, body)
		}
		resp, body = e.get("/admin/panel", map[string]string{"Accept": "text/html"})
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "<html") {
			t.Errorf("browser: status %d; want a 403 page", resp.StatusCode)
		}
	})
	t.Run("optional route injects identity when present", func(t *testing.T) {
		e.get("/public/x", forged)
		h, _ := e.up.last()
		assertNoForged(t, h)
		if got := h.Get(hdrUser); got != u.ID {
			t.Errorf("%s = %q; want %q", hdrUser, got, u.ID)
		}
	})
}

// verifyAssertion checks a JWT against the portal's JWKS with go-jose
// (independently of the signing code), and its times and 5m lifetime,
// and returns its claims.
func verifyAssertion(t *testing.T, e *env, token string) map[string]any {
	t.Helper()
	_, all := assertionParts(t, e, token)
	var std jwt.Claims
	if b, err := json.Marshal(all); err != nil || json.Unmarshal(b, &std) != nil {
		t.Fatalf("assertion claims %v", all)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, 0); err != nil {
		t.Fatalf("assertion times: %v", err)
	}
	if std.Expiry.Time().Sub(std.IssuedAt.Time()) != 5*time.Minute {
		t.Errorf("assertion lifetime %v; want 5m", std.Expiry.Time().Sub(std.IssuedAt.Time()))
	}
	return all
}

func TestGateES256(t *testing.T) {
	e := startCaddy(t, "keys {\n algorithm ES256\n }", "sigra_gate")
	e.addUser("es@example.com")
	e.mustLogin("es@example.com")
	e.get("/x", nil)
	h, _ := e.up.last()
	tok, err := jwt.ParseSigned(h.Get(hdrAssertion), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("want an ES256 assertion: %v", err)
	}
	_ = tok
	verifyAssertion(t, e, h.Get(hdrAssertion))
}

func TestGateRemoteAliases(t *testing.T) {
	e := startCaddy(t, "header_aliases remote", "sigra_gate")
	u := e.addUser("r@example.com", "g1", "g2")
	e.mustLogin("r@example.com")
	e.get("/x", map[string]string{"Remote-User": "forged", "remote_email": "forged@x"})
	h, _ := e.up.last()
	assertNoForged(t, h)
	if h.Get("Remote-User") != u.ID || h.Get("Remote-Email") != "r@example.com" || h.Get("Remote-Groups") != "g1,g2" {
		t.Errorf("Remote-* headers %v; want the user's", h)
	}
}

func TestGateBadSessions(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("bob@example.com")
	e.mustLogin("bob@example.com")
	good := e.sessionCookie()

	check := func(t *testing.T, cookie string, want int) {
		t.Helper()
		resp, _ := e.get("/x", map[string]string{"Accept": "application/json", "Cookie": "sigra_session=" + cookie})
		if resp.StatusCode != want {
			t.Errorf("cookie %q: status %d; want %d", cookie, resp.StatusCode, want)
		}
	}
	e.client.Jar = nil // send cookies by hand
	t.Run("good cookie passes", func(t *testing.T) { check(t, good, 200) })
	t.Run("tampered cookies fail", func(t *testing.T) {
		flip := []byte(good)
		if flip[5] == 'A' {
			flip[5] = 'B'
		} else {
			flip[5] = 'A'
		}
		for _, c := range []string{string(flip), good[:len(good)-1], good + "A", "", "not-a-token", strings.Repeat("A", 43)} {
			check(t, c, 401)
		}
	})
	t.Run("expired session fails and is deleted", func(t *testing.T) {
		id, _ := authcore.TokenID(good)
		editSession(t, e, id, func(s *authcore.Session) { s.ExpiresAt = time.Now().Add(-time.Second) })
		check(t, good, 401)
		if _, err := e.rt().store.GetSession(context.Background(), id); err != authcore.ErrNotFound {
			t.Errorf("expired session still stored (err %v)", err)
		}
	})
	t.Run("idle session fails", func(t *testing.T) {
		e.client.Jar, _ = newJar()
		e.mustLogin("bob@example.com")
		tok := e.sessionCookie()
		id, _ := authcore.TokenID(tok)
		editSession(t, e, id, func(s *authcore.Session) { s.LastSeen = time.Now().Add(-31 * time.Minute) })
		e.client.Jar = nil
		check(t, tok, 401)
	})
}

// editSession changes a stored session behind the gateway's back and
// drops the user's cached sessions, so the next request reads it.
func editSession(t *testing.T, e *env, id authcore.SessionID, fn func(*authcore.Session)) {
	t.Helper()
	ctx := context.Background()
	s, err := e.rt().store.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	fn(s)
	if err := e.rt().store.PutSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	e.rt().auth.DropCached(s.UserID)
}

// A gate that cannot decide answers itself, also on a site whose
// handle_errors proxies to the app (for the app's own error pages):
// handed to Caddy, the error would run that route with the request.
func TestGateFailsClosed(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	if err := e.load(e.caddyfile("", "sigra_gate\n\thandle_errors {\n\t\treverse_proxy "+e.up.Listener.Addr().String()+"\n\t}")); err != nil {
		t.Fatal(err)
	}
	e.addUser("c@example.com")
	e.mustLogin("c@example.com")
	if resp, _ := e.get("/ok", nil); resp.StatusCode != 200 {
		t.Fatalf("status %d before the failure; want 200", resp.StatusCode)
	}
	_, hitsBefore := e.up.last()
	// Break the store underneath the running gate, and make the next
	// request miss the session cache.
	rt := e.rt()
	rt.auth.DropCached(mustUserID(t, e, "c@example.com"))
	if err := rt.store.Close(); err != nil {
		t.Fatal(err)
	}
	errs := rt.metrics.gateDecisions.WithLabelValues("error", "storage")
	before, sampled := counterValue(t, errs), sampleCount(t, rt.metrics.gateDuration)
	resp, _ := e.get("/secret", map[string]string{"Accept": "application/json"})
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status %d with a broken store; want 500", resp.StatusCode)
	}
	// Counted as an error, with its time: a store slow to fail shows.
	if n := counterValue(t, errs) - before; n != 1 {
		t.Errorf("gate decisions error/storage +%v; want +1", n)
	}
	if n := sampleCount(t, rt.metrics.gateDuration) - sampled; n != 1 {
		t.Errorf("gate latency samples +%d; want +1", n)
	}
	if _, hits := e.up.last(); hits != hitsBefore {
		t.Error("the app was reached while the store was broken")
	}
	if resp, _ := e.get("/.sigra/healthz", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("healthz status %d with a broken store; want 503", resp.StatusCode)
	}
}

// A store file removed under the running Caddy still reads and writes
// (the open file lives on), and nothing will open it again: healthz says
// so, where a read alone said ok.
func TestHealthzStoreFileRemoved(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	if resp, _ := e.get("/.sigra/healthz", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz status %d; want 200", resp.StatusCode)
	}
	if err := os.Rename(e.store(), e.store()+".gone"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.get("/.sigra/healthz", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("healthz status %d with the store file removed; want 503", resp.StatusCode)
	}
	if err := os.Rename(e.store()+".gone", e.store()); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.get("/.sigra/healthz", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz status %d with the file put back; want 200", resp.StatusCode)
	}
}

func mustUserID(t *testing.T, e *env, email string) string {
	t.Helper()
	u, err := e.rt().store.UserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// TestGateHopByHopAndTrailers: a client can neither remove our identity
// headers by naming them in Connection, nor smuggle identity in trailers.
func TestGateHopByHopAndTrailers(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("hop@example.com", "staff")
	e.mustLogin("hop@example.com")

	e.get("/x", map[string]string{"Connection": "keep-alive, X-Sigra-Assertion, x-sigra-groups, X_Sigra_User"})
	h, _ := e.up.last()
	if h.Get(hdrAssertion) == "" || h.Get(hdrGroups) != "staff" || h.Get(hdrUser) != u.ID {
		t.Errorf("identity headers after a Connection trick: user %q groups %q assertion present %v",
			h.Get(hdrUser), h.Get(hdrGroups), h.Get(hdrAssertion) != "")
	}

	// A chunked body with identity trailers, declared and undeclared.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, e.base+"/upload", pr)
	req.Trailer = http.Header{"X-Sigra-User": nil, "X-Sigra-Groups": nil, "X-Original-Url": nil, "X-Checksum": nil}
	go func() {
		pw.Write([]byte("data"))
		req.Trailer.Set("X-Sigra-User", "forged-admin")
		req.Trailer.Set("X-Sigra-Groups", "admins")
		req.Trailer.Set("X-Original-URL", "/admin")
		req.Trailer.Set("X-Checksum", "abc")
		pw.Close()
	}()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d; want 200", resp.StatusCode)
	}
	e.up.mu.Lock()
	tr := e.up.trailer
	e.up.mu.Unlock()
	for k, v := range tr {
		if isIdentityHeader(k, true) || isPathOverride(k) {
			t.Errorf("identity or path trailer reached the app: %s: %v", k, v)
		}
	}
	if tr.Get("X-Checksum") != "abc" {
		t.Errorf("ordinary trailer lost (trailers %v); want X-Checksum passed on", tr)
	}
}

// TestGateReturnURLBehindHandlePath: rd is the URI the client asked for,
// not the one handle_path rewrote.
func TestGateReturnURLBehindHandlePath(t *testing.T) {
	e := startCaddy(t, "", "handle_path /app/* {\n\t\tsigra_gate\n\t}")
	resp, _ := e.get("/app/reports?q=1", map[string]string{"Accept": "text/html"})
	want := "/.sigra/login?rd=" + url.QueryEscape("/app/reports?q=1")
	if got := resp.Header.Get("Location"); got != want {
		t.Errorf("Location %q; want %q", got, want)
	}
}

// The identity values share one backing array; a later handler that
// appends to one header must not change another.
func TestGateInjectValuesAreIndependent(t *testing.T) {
	g := &Gate{app: &App{remoteAliases: true}}
	p := &authcore.Principal{
		User:      &authcore.User{ID: "u1", Email: "a@example.com", Name: "A"},
		SessionID: "s1", GroupsCSV: "g1", AMRCSV: "pwd",
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	g.inject(r, p, "jwt")
	want := r.Header.Clone()
	if len(want) != 11 {
		t.Fatalf("injected %d headers; want 11: %v", len(want), want)
	}
	for k := range want {
		r.Header.Add(k, "appended")
		for k2, v2 := range want {
			if k2 != k && r.Header.Get(k2) != v2[0] {
				t.Fatalf("appending to %s changed %s to %q", k, k2, r.Header.Get(k2))
			}
		}
		r.Header[k] = want[k]
	}
}

// `assertion off` leaves the JWT out on its routes (a forged one is still
// removed) and changes nothing else; other routes keep it.
func TestGateAssertionOff(t *testing.T) {
	e := startCaddy(t, "", `
	sigra_gate
	sigra_gate /assets/* {
		assertion off
	}`)
	u := e.addUser("erin@example.com", "staff")
	e.mustLogin("erin@example.com")

	e.get("/assets/app.css", map[string]string{hdrAssertion: "forged.jwt.value"})
	h, _ := e.up.last()
	if v, ok := h[hdrAssertion]; ok {
		t.Errorf("X-Sigra-Assertion %q reached the app on an assertion-off route", v)
	}
	if h.Get(hdrUser) != u.ID || h.Get(hdrEmail) != "erin@example.com" || h.Get(hdrGroups) != "staff" || h.Get(hdrSession) == "" {
		t.Errorf("identity headers %v; want the user's, without the assertion only", h)
	}

	e.get("/reports", nil)
	h, _ = e.up.last()
	verifyAssertion(t, e, h.Get(hdrAssertion))

	// Still a gate: no session, no entry.
	e.client.Jar, _ = newJar()
	if resp, _ := e.get("/assets/app.css", map[string]string{"Accept": "application/json"}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous request on an assertion-off route: status %d; want 401", resp.StatusCode)
	}
}

// swapPortalAfterGate finds, in an adapted config, a list of handlers
// whose first is the portal and second a gate, and swaps the two.
func swapPortalAfterGate(v any) bool {
	handler := func(h any) string {
		m, _ := h.(map[string]any)
		name, _ := m["handler"].(string)
		return name
	}
	switch v := v.(type) {
	case map[string]any:
		for _, c := range v {
			if swapPortalAfterGate(c) {
				return true
			}
		}
	case []any:
		if len(v) >= 2 && handler(v[0]) == "sigra_portal" && handler(v[1]) == "sigra_gate" {
			v[0], v[1] = v[1], v[0]
			return true
		}
		for _, c := range v {
			if swapPortalAfterGate(c) {
				return true
			}
		}
	}
	return false
}

// dropPortal takes the first sigra_portal handler out of an adapted
// config (decoded JSON); it reports whether there was one.
func dropPortal(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, c := range v {
			if hs, ok := c.([]any); ok && k == "handle" {
				for i, h := range hs {
					if m, _ := h.(map[string]any); m["handler"] == "sigra_portal" {
						v[k] = slices.Delete(hs, i, i+1)
						return true
					}
				}
			}
			if dropPortal(c) {
				return true
			}
		}
	case []any:
		for _, c := range v {
			if dropPortal(c) {
				return true
			}
		}
	}
	return false
}

// A site whose gate covers the portal's pages (no sigra_portal, or one
// after the gate, as a JSON config may have it) answers them with an
// error that says so, not with a redirect to the sign-in page it is on.
// A portal written after the gate in a route block is refused at adapt.
func TestGateOnPortalPageSaysThePortalIsMissing(t *testing.T) {
	e := startCaddy(t, "", "")
	html := map[string]string{"Accept": "text/html"}
	portalAfterGate := strings.Replace(e.caddyfile("", "route {\n\t\tsigra_gate\n\t\tsigra_portal\n\t}"), "\tsigra_portal\n", "", 1)
	if err := adaptCaddyfile(portalAfterGate); err == nil || !strings.Contains(err.Error(), "comes after this gate") {
		t.Fatalf("adapting a route with the portal after the gate: %v; want it refused", err)
	}
	noPortal := strings.Replace(e.caddyfile("", "sigra_gate"), "\tsigra_portal\n", "", 1)
	if err := adaptCaddyfile(noPortal); err == nil || !strings.Contains(err.Error(), "this site has no sigra_portal") {
		t.Fatalf("adapting a site with a gate and no portal: %v; want it refused", err)
	}
	for _, tc := range []struct {
		name, site string
		ownPortal  bool           // site holds the portal, not the top level
		edit       func(any) bool // the JSON, as a config written by hand may have it
	}{
		{"no portal", "sigra_gate", false, dropPortal},
		{"portal after the gate", "route {\n\t\tsigra_portal\n\t\tsigra_gate\n\t}", true, swapPortalAfterGate},
	} {
		// A new port each time: no connection of the old server's.
		e.base = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		src := e.caddyfile("", tc.site)
		if tc.ownPortal {
			src = strings.Replace(src, "\tsigra_portal\n", "", 1)
		}
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		if err != nil {
			t.Fatalf("%s: adapting: %v", tc.name, err)
		}
		var doc any
		if err := json.Unmarshal(cfg, &doc); err != nil {
			t.Fatal(err)
		}
		if !tc.edit(doc) {
			t.Fatalf("%s: nothing to change in\n%s", tc.name, cfg)
		}
		if cfg, err = json.Marshal(doc); err != nil {
			t.Fatal(err)
		}
		if err := caddy.Load(cfg, true); err != nil {
			t.Fatalf("%s: loading config: %v", tc.name, err)
		}
		resp, _ := e.get("/app", html)
		login := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(login, "/.sigra/login?rd=") {
			t.Fatalf("%s: GET /app: status %d, Location %q; want the sign-in page", tc.name, resp.StatusCode, login)
		}
		if resp, _ = e.get(login, html); resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("%s: GET the sign-in page: status %d, Location %q; want 500, not a redirect to itself", tc.name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	// With the portal in place, an app path that only looks like the
	// portal's once handle_path strips it is the app's: the gate sends
	// the browser to sign in as usual.
	e.base = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	if err := e.load(e.caddyfile("", "handle_path /app/* {\n\t\tsigra_gate\n\t}")); err != nil {
		t.Fatal(err)
	}
	resp, _ := e.get("/app/.sigra/login", html)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, "/.sigra/login?rd=") {
		t.Errorf("GET /app/.sigra/login under handle_path: status %d, Location %q; want the sign-in page", resp.StatusCode, loc)
	}
}

// JSON config gets the Caddyfile's checks: optional with a requirement
// would let anonymous requests past it.
func TestGateValidateRefusesOptionalWithRequirements(t *testing.T) {
	for _, g := range []*Gate{
		{Optional: true, Groups: []string{"ops"}},
		{Optional: true, AMR: []string{"otp"}},
		{Optional: true, MFA: &MFARequirement{}},
	} {
		if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "optional cannot be combined") {
			t.Errorf("Validate(%+v) = %v; want it refused", g, err)
		}
	}
	if err := (&Gate{Optional: true}).Validate(); err != nil {
		t.Errorf("optional alone: %v", err)
	}
}

// JSON config gets the Caddyfile's amr checks too: an unknown method, or
// only methods no sign-in in this build gives, which would refuse
// everyone.
func TestGateValidateChecksAMR(t *testing.T) {
	for _, c := range []struct {
		amr  []string
		want string
	}{
		{[]string{"fingerprint"}, `unknown method "fingerprint"`},
		{[]string{"hwk"}, "hwk not available in this build yet"},
		{[]string{"hwk", "oidc"}, "hwk, oidc not available in this build yet"},
		{[]string{"hwk", "otp"}, ""},
		{nil, ""},
	} {
		err := (&Gate{AMR: c.amr}).Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Validate(amr %v) = %v; want %q", c.amr, err, c.want)
		}
	}
}

// sendPlaceholders reloads e's config with reverse_proxy sending the
// identity placeholders upstream as X-Id and X-Mail.
func (e *env) sendPlaceholders() {
	e.t.Helper()
	addr := e.up.Listener.Addr().String()
	cf := strings.Replace(e.config, "reverse_proxy "+addr+"\n",
		"reverse_proxy "+addr+" {\n\t\theader_up X-Id {http.auth.user.id}\n\t\theader_up X-Mail {http.auth.user.email}\n\t}\n", 1)
	if cf == e.config {
		e.t.Fatal("the test config has no reverse_proxy line to extend")
	}
	if err := e.load(cf); err != nil {
		e.t.Fatal(err)
	}
}

// The gate sets Caddy's {http.auth.user.id} and {http.auth.user.email}
// placeholders, as Caddy's own authentication handler does, for
// reverse_proxy's header_up and for logs.
func TestGateSetsAuthPlaceholders(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("pia@example.com")
	e.sendPlaceholders()
	e.mustLogin("pia@example.com")
	if r, _ := e.get("/x", nil); r.StatusCode != 200 {
		t.Fatalf("status %d; want 200", r.StatusCode)
	}
	h, _ := e.up.last()
	if got := h.Get("X-Id"); got != u.ID {
		t.Errorf("{http.auth.user.id} upstream: %q; want %q", got, u.ID)
	}
	if got := h.Get("X-Mail"); got != "pia@example.com" {
		t.Errorf("{http.auth.user.email} upstream: %q; want pia@example.com", got)
	}
}

// Where nobody is signed in (an optional gate passing anonymously, a
// path no gate covers) the placeholders are empty, not unknown: Caddy
// leaves an unknown one in a header_up as its literal text, which an app
// would read as a user id.
func TestAuthPlaceholdersEmptyWhenAnonymous(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate /open* {\n\t\toptional\n\t}\n\tsigra_gate /private*")
	u := e.addUser("pia@example.com")
	e.sendPlaceholders()
	check := func(path, wantID, wantMail string) {
		t.Helper()
		if r, _ := e.get(path, nil); r.StatusCode != 200 {
			t.Fatalf("%s: status %d; want 200", path, r.StatusCode)
		}
		h, _ := e.up.last()
		if got := h.Get("X-Id"); got != wantID {
			t.Errorf("%s: {http.auth.user.id} upstream: %q; want %q", path, got, wantID)
		}
		if got := h.Get("X-Mail"); got != wantMail {
			t.Errorf("%s: {http.auth.user.email} upstream: %q; want %q", path, got, wantMail)
		}
	}
	check("/open/x", "", "")
	check("/free", "", "")
	e.mustLogin("pia@example.com")
	check("/open/x", u.ID, "pia@example.com")
	check("/private/x", u.ID, "pia@example.com")
	check("/free", "", "") // no gate: nobody is resolved, as X-Sigra-User is not set
}

// A gated answer is not for shared caches: every one varies with the
// cookie, and one for a signed-in user is private, beside whatever the
// app says (an app that was public before it was gated says public).
// Refusals say no-store.
func TestGatedAnswersAreNotForSharedCaches(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate /open* {\n\t\toptional\n\t}\n\tsigra_gate")
	e.addUser("cat@example.com")
	e.mustLogin("cat@example.com")
	for _, tc := range []struct {
		name, path string
		cc         []string
	}{
		{"signed in, the app says public", "/page?cc=public,+max-age%3D3600", []string{"private", "public, max-age=3600"}},
		{"signed in, the app says nothing", "/page", []string{"private"}},
		{"signed in, optional route", "/open/x", []string{"private"}},
	} {
		resp, _ := e.get(tc.path, nil)
		if resp.StatusCode != http.StatusOK || !slices.Equal(resp.Header.Values("Cache-Control"), tc.cc) || resp.Header.Get("Vary") != "Cookie" {
			t.Errorf("%s: status %d, Cache-Control %q, Vary %q; want 200, %q, Cookie", tc.name, resp.StatusCode, resp.Header.Values("Cache-Control"), resp.Header.Values("Vary"), tc.cc)
		}
	}
	// CDNs follow their own headers in preference to Cache-Control
	// (RFC 9213; Cloudflare's, Fastly's, Akamai's, nginx's): an app's
	// orders there go from a signed-in user's answer, and only from one.
	cdn := "?cc=public&h=CDN-Cache-Control:+public&h=Cloudflare-CDN-Cache-Control:+max-age%3D60&h=Surrogate-Control:+max-age%3D60&h=Edge-Control:+cache-maxage%3D60s&h=X-Accel-Expires:+60&h=X-Other:+kept"
	resp, _ := e.get("/page"+cdn, nil)
	for _, k := range sharedCacheHeaders {
		if v := resp.Header.Values(k); len(v) != 0 {
			t.Errorf("signed in: the app's %s %q reached the client; want it dropped", k, v)
		}
	}
	if resp.Header.Get("X-Other") != "kept" || resp.Header.Get("Cache-Control") != "private" {
		t.Errorf("signed in: X-Other %q, Cache-Control %q; want the app's other headers, and private", resp.Header.Get("X-Other"), resp.Header.Values("Cache-Control"))
	}
	anon := e.browser()
	if resp, _ := anon.get("/open/x"+cdn, nil); resp.Header.Get("Cdn-Cache-Control") != "public" || resp.Header.Get("X-Accel-Expires") != "60" {
		t.Errorf("anonymous on the optional route: the app's CDN headers %v; want them as the app sent them", resp.Header)
	}
	resp, _ = anon.get("/open/x?cc=public", nil)
	if resp.StatusCode != http.StatusOK || !slices.Equal(resp.Header.Values("Cache-Control"), []string{"public"}) || resp.Header.Get("Vary") != "Cookie" {
		t.Errorf("anonymous on the optional route: status %d, Cache-Control %q, Vary %q; want 200, the app's public, Vary Cookie", resp.StatusCode, resp.Header.Values("Cache-Control"), resp.Header.Values("Vary"))
	}
	resp, _ = anon.get("/page?cc=public", jsonAccept)
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("anonymous, refused: status %d, Cache-Control %q; want 401, no-store", resp.StatusCode, resp.Header.Values("Cache-Control"))
	}
}

// An h2c upgrade never reaches the app: an upstream that took it would
// get every later request on the connection past the gates. Other
// upgrades (WebSocket) pass.
func TestH2CUpgradeIsNotForwarded(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate /open* {\n\t\toptional\n\t}\n\tsigra_gate")
	for _, up := range []string{"h2c", "H2C", "websocket, h2c", "h2c;x", "H2c/1", " websocket,h2c "} {
		status, _ := e.sendRaw(http.MethodGet, "/open/x", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {up}, "Http2-Settings": {"AAMAAABkAARAAAAAAAIAAAAA"}}, nil)
		h, _ := e.up.last()
		if status != http.StatusOK || h.Get("Upgrade") != "" || h.Get("Http2-Settings") != "" {
			t.Errorf("Upgrade %q: status %d, the app got Upgrade %q, HTTP2-Settings %q; want 200 and neither", up, status, h.Get("Upgrade"), h.Get("Http2-Settings"))
		}
	}
	e.sendRaw(http.MethodGet, "/open/x", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, nil)
	if h, _ := e.up.last(); h.Get("Upgrade") != "websocket" {
		t.Errorf("a WebSocket upgrade: the app got Upgrade %q; want websocket", h.Get("Upgrade"))
	}
}

// The gates match, and the portal sees, the path the client asked for:
// they run before Caddy's rewriting directives. A front controller's
// try_files sends /admin/users to /index.php, and the app routes on the
// original URI: a gate on /admin* after the rewrite would pass it.
func TestGatesSeeThePathBeforeRewrites(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.php"), []byte("<?php"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startCaddy(t, "", "sigra_gate /admin* {\n\t\tgroup admins\n\t}\n\troot * "+root+"\n\ttry_files {path} /index.php")
	if resp, body := e.get("/admin/users", jsonAccept); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /admin/users, signed out, behind try_files: status %d %q; want 401", resp.StatusCode, body)
	}
	if resp, body := e.get("/.sigra/login", map[string]string{"Accept": "text/html"}); resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-sigra="login-form"`) {
		t.Errorf("the sign-in page behind try_files: status %d; want the portal's form", resp.StatusCode)
	}
	if resp, body := e.get("/blog/post", nil); resp.StatusCode != http.StatusOK || body != "app:/index.php" {
		t.Errorf("an ungated page: status %d %q; want the app, rewritten to /index.php", resp.StatusCode, body)
	}
}

// With preflight allow, a CORS preflight (which browsers send without
// cookies) reaches the app, with no identity; nothing else passes
// signed out, and a gate without it refuses preflights as any request.
// Method overrides are known in any spelling an app could read as one
// (PHP reads X_HTTP_METHOD_OVERRIDE as X-HTTP-Method-Override).
func TestIsMethodOverride(t *testing.T) {
	for _, name := range []string{"X-HTTP-Method-Override", "x_http_method_override", "X.Http.Method", "X-METHOD-OVERRIDE"} {
		if !isMethodOverride(name) {
			t.Errorf("isMethodOverride(%q) = false; want true", name)
		}
	}
	for _, name := range []string{"X-HTTP-Method-Overrides", "Access-Control-Request-Method", "Method"} {
		if isMethodOverride(name) {
			t.Errorf("isMethodOverride(%q) = true; want false", name)
		}
	}
}

func TestGatePreflight(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate /api/* {\n\t\tgroup staff\n\t\tpreflight allow\n\t}\n\tsigra_gate /other/* {\n\t\tgroup staff\n\t}")
	preflight := map[string]string{"Origin": "https://spa.example", "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type", "X-Sigra-User": "forged",
		"X-HTTP-Method-Override": "DELETE", "X-Http-Method": "DELETE", "X-Method-Override": "DELETE"}
	do := func(method, path string, h map[string]string) (int, string) {
		t.Helper()
		resp := e.do(method, path, h, nil)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do(http.MethodOptions, "/api/items", preflight); code != http.StatusOK || body != "app:/api/items" {
		t.Fatalf("preflight to a gate with preflight allow: status %d body %q; want the app's 200", code, body)
	}
	h, _ := e.up.last()
	assertNoForged(t, h)
	if h.Get(hdrUser) != "" || h.Get(hdrAssertion) != "" {
		t.Errorf("a preflight reached the app with identity: %v", h)
	}
	for name := range h {
		if strings.Contains(strings.ToLower(name), "method") && !strings.HasPrefix(name, "Access-Control") {
			t.Errorf("a preflight reached the app with %s: %s; want no method override", name, h[name])
		}
	}
	// Nor an upgrade, which no browser asks for in one: an app that
	// upgrades without looking at the method would open a connection
	// to anyone.
	upgrade := maps.Clone(preflight)
	upgrade["Upgrade"], upgrade["Connection"] = "websocket", "Upgrade"
	if code, body := do(http.MethodOptions, "/api/items", upgrade); code != http.StatusOK || body != "app:/api/items" {
		t.Fatalf("preflight asking for an upgrade: status %d body %q; want the app's 200", code, body)
	}
	if h, _ := e.up.last(); h.Get("Upgrade") != "" {
		t.Errorf("a preflight reached the app asking for an upgrade: Upgrade %q", h.Get("Upgrade"))
	}
	for _, c := range []struct {
		name, method, path string
		h                  map[string]string
	}{
		{"preflight to a gate without it", http.MethodOptions, "/other/items", preflight},
		{"OPTIONS without Access-Control-Request-Method", http.MethodOptions, "/api/items", map[string]string{"Origin": "https://spa.example"}},
		{"OPTIONS without Origin", http.MethodOptions, "/api/items", map[string]string{"Access-Control-Request-Method": "PUT"}},
		{"the request itself", http.MethodPut, "/api/items", preflight},
	} {
		if code, _ := do(c.method, c.path, c.h); code != http.StatusUnauthorized {
			t.Errorf("%s, signed out: status %d; want 401", c.name, code)
		}
	}
	// Browsers send no body with a preflight: none reaches the app with
	// one, for an app that serves every method alike.
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader("x=1")
		if chunked {
			body = io.MultiReader(body) // no length known: sent chunked
		}
		resp := e.do(http.MethodOptions, "/api/items", preflight, body)
		resp.Body.Close()
		e.up.mu.Lock()
		n := e.up.body
		e.up.mu.Unlock()
		if resp.StatusCode != http.StatusOK || n != 0 {
			t.Errorf("a preflight with a body (chunked %v): status %d, the app read %d bytes; want 200 and none", chunked, resp.StatusCode, n)
		}
	}
	if _, n := e.up.last(); n != 4 {
		t.Errorf("the app saw %d requests; want only the four preflights", n)
	}
}
