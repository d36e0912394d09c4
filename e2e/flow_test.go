package e2e

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestLoginFlowAndRestart is what a user does on day one: start Caddy on
// an empty store, read the first admin's password from the output, sign
// in through the portal, reach the app with identity headers and a
// verifiable assertion; then restart Caddy and find the session and the
// signing key still there.
func TestLoginFlowAndRestart(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{bootstrap: "admin@localhost"})
	first := g.start()
	email, password := firstAdmin(t, first)
	if email != "admin@localhost" {
		t.Errorf("first admin email = %q; want admin@localhost", email)
	}
	if n := strings.Count(first.out.String(), password); n != 1 {
		t.Errorf("the first admin's password appears %d times in the output; want once (the box), never in logs", n)
	}
	// The box's command to change it names this binary and the config
	// Caddy runs on.
	if want := caddyBin + " sigra users passwd --config " + g.caddyfile + " --adapter caddyfile --email admin@localhost"; !strings.Contains(first.out.String(), want) {
		t.Errorf("the first admin box does not say %q\n%s", want, first.logs())
	}

	b := g.browser()
	forged := http.Header{
		"X-Sigra-User":   {"forged-user"},
		"X-Sigra-Email":  {"forged@example.com"},
		"X-Sigra-Groups": {"admins,forged"},
		"x_sigra_user":   {"forged-underscore"}, // CGI-style upstreams read it as X-Sigra-User
		"X-SIGRA-EMAIL":  {"forged-upper@example.com"},
	}

	t.Run("anonymous API request gets 401 problem+json", func(t *testing.T) {
		resp, body := b.get("/api/things", withHeaders(forged, "Accept", "application/json"))
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d; want 401\n%s\n%s", resp.StatusCode, body, g.logs())
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("Content-Type %q; want application/problem+json", ct)
		}
		if resp.Header.Get("WWW-Authenticate") == "" {
			t.Error("no WWW-Authenticate header")
		}
		var prob struct {
			Status int    `json:"status"`
			Title  string `json:"title"`
		}
		if err := json.Unmarshal([]byte(body), &prob); err != nil || prob.Status != 401 || prob.Title == "" {
			t.Errorf("body %q is not a 401 problem (%v)", body, err)
		}
		if _, hits := g.up.last(); hits != 0 {
			t.Errorf("the app saw %d requests; want none", hits)
		}
	})

	t.Run("anonymous browser is sent to the login page", func(t *testing.T) {
		resp, _ := b.get("/dashboard?tab=1", http.Header{"Accept": {"text/html"}})
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "/.sigra/login?rd=%2Fdashboard%3Ftab%3D1" {
			t.Errorf("status %d, Location %q; want 302 to /.sigra/login?rd=%%2Fdashboard%%3Ftab%%3D1", resp.StatusCode, loc)
		}
	})

	t.Run("optional path passes anonymous requests without identity", func(t *testing.T) {
		resp, body := b.get("/public/page", forged)
		if resp.StatusCode != http.StatusOK || body != "app:/public/page" {
			t.Fatalf("status %d, body %q; want 200 from the app\n%s", resp.StatusCode, body, g.logs())
		}
		r, _ := g.up.last()
		assertNoForgedHeaders(t, r.Header)
		if v := r.Header.Get("X-Sigra-User"); v != "" {
			t.Errorf("anonymous request reached the app with X-Sigra-User %q", v)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		resp, _ := g.browser().login(email, password+"x", "/")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("login with a wrong password: status %d; want 401", resp.StatusCode)
		}
	})

	b.mustLogin(email, password, "/dashboard")
	resp, body := b.get("/dashboard", forged)
	if resp.StatusCode != http.StatusOK || body != "app:/dashboard" {
		t.Fatalf("GET /dashboard signed in: status %d, body %q; want 200 from the app\n%s", resp.StatusCode, body, g.logs())
	}
	r, _ := g.up.last()
	user := r.Header.Get("X-Sigra-User")
	if !uuidRe.MatchString(user) {
		t.Errorf("X-Sigra-User = %q; want the user's UUID", user)
	}
	if got := r.Header.Get("X-Sigra-Email"); got != "admin@localhost" {
		t.Errorf("X-Sigra-Email = %q; want admin@localhost", got)
	}
	if groups := strings.Split(r.Header.Get("X-Sigra-Groups"), ","); !slices.Contains(groups, "admins") {
		t.Errorf("X-Sigra-Groups = %q; want it to contain admins", r.Header.Get("X-Sigra-Groups"))
	}
	assertNoForgedHeaders(t, r.Header)
	kid, claims := g.verifyAssertion(r.Header.Get("X-Sigra-Assertion"))
	if claims.Subject != user || claims.Email != "admin@localhost" || !slices.Contains(claims.Groups, "admins") {
		t.Errorf("assertion sub %q, email %q, groups %v; want %q, admin@localhost, admins", claims.Subject, claims.Email, claims.Groups, user)
	}
	if !slices.Contains(claims.AMR, "pwd") {
		t.Errorf("assertion amr %v; want pwd", claims.AMR)
	}
	if sid := r.Header.Get("X-Sigra-Session"); sid == "" || sid != claims.SID || strings.Contains(b.session(), sid) {
		t.Errorf("X-Sigra-Session %q, assertion sid %q: want equal, non-empty, and not the cookie", sid, claims.SID)
	}
	if resp, _ := b.get("/admin/users", http.Header{"Accept": {"application/json"}}); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /admin/users as an admin: status %d; want 200", resp.StatusCode)
	}

	// Restart on the same store.
	b.client.CloseIdleConnections()
	first.stop()
	if code := first.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("caddy exited %d on SIGTERM; want 0\n%s", code, first.logs())
	}
	if !strings.Contains(first.out.String(), `"msg":"sigra stopped"`) {
		t.Errorf("no sigra stopped line as Caddy stopped\n%s", first.logs())
	}
	second := g.start()
	if out := second.out.String(); strings.Contains(out, "created the first admin") || strings.Contains(out, "password:") {
		t.Errorf("restart on the same store printed a new first admin\n%s", second.logs())
	}
	if out := second.out.String(); !strings.Contains(out, "no first admin is made: its password was printed at the first start") {
		t.Errorf("restart on the same store did not say why no first admin is printed\n%s", second.logs())
	}

	resp, body = b.get("/dashboard", nil)
	if resp.StatusCode != http.StatusOK || body != "app:/dashboard" {
		t.Fatalf("after restart, the old session cookie: status %d, body %q; want 200 from the app\n%s", resp.StatusCode, body, second.logs())
	}
	r, _ = g.up.last()
	if got := r.Header.Get("X-Sigra-User"); got != user {
		t.Errorf("after restart X-Sigra-User = %q; want %q", got, user)
	}
	kid2, _ := g.verifyAssertion(r.Header.Get("X-Sigra-Assertion"))
	if kid2 != kid {
		t.Errorf("after restart the assertion kid is %q; want %q (the key is kept in storage)", kid2, kid)
	}

	// The first admin's password still works (it was not regenerated).
	g.browser().mustLogin(email, password, "/")
}

// withHeaders returns a copy of h with more headers.
func withHeaders(h http.Header, kv ...string) http.Header {
	c := h.Clone()
	for i := 0; i+1 < len(kv); i += 2 {
		c.Set(kv[i], kv[i+1])
	}
	return c
}

// assertNoForgedHeaders fails if any header the app received carries a
// forged value or has a name that folds to X-Sigra-* without being one of
// the gateway's own (canonical) headers.
func assertNoForgedHeaders(t *testing.T, h http.Header) {
	t.Helper()
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, "forged") {
				t.Errorf("the app received %s: %s (forged by the client)", k, v)
			}
		}
		norm := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		if strings.HasPrefix(norm, "x-sigra-") && k != http.CanonicalHeaderKey(k) {
			t.Errorf("the app received a non-canonical identity header %q", k)
		}
	}
}
