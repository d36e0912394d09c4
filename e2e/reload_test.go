package e2e

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// TestReloadAndLogout: `caddy reload` with a changed Caddyfile applies the
// new gates at once and keeps the store, the sessions and the CLI's admin
// API route working; signing out ends the session on the server, not just
// in the browser.
func TestReloadAndLogout(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{bootstrap: "admin@localhost"})
	g.start()
	email, password := firstAdmin(t, g.proc)
	b := g.browser()
	b.mustLogin(email, password, "/")
	api := http.Header{"Accept": {"application/json"}}
	if resp, _ := b.get("/admin/x", api); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin/x as an admin before reload: status %d; want 200\n%s", resp.StatusCode, g.logs())
	}

	data, err := os.ReadFile(g.caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(data), "group admins", "group staff", 1)
	if changed == string(data) {
		t.Fatal("the test Caddyfile has no `group admins` line to change")
	}
	writeFile(t, g.caddyfile, changed)
	r := runCaddy(t, g.home, "", "reload", "--config", g.caddyfile, "--adapter", "caddyfile")
	if r.code != 0 {
		t.Fatalf("caddy reload failed\n%s\n%s", r, g.logs())
	}
	// The old server closes its idle connections as the new one takes
	// over; a request racing that close on a kept-alive connection is
	// reset. Browsers retry such a request on a new connection; so does
	// this client, by not reusing the old ones. A new connection can be
	// lost too: Caddy's old and new listeners share the port, and one
	// the kernel queued on the old listener as it closed ends unanswered.
	b.client.CloseIdleConnections()
	settled := false
	for deadline := time.Now().Add(10 * time.Second); !settled && time.Now().Before(deadline); {
		req, err := http.NewRequest(http.MethodGet, g.base+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = api.Clone()
		if resp, err := b.client.Do(req); err == nil {
			resp.Body.Close()
			settled = true
		} else {
			b.client.CloseIdleConnections()
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !settled {
		t.Fatalf("no answer within 10 s of the reload\n%s", g.logs())
	}

	if resp, body := b.get("/admin/x", api); resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET /admin/x after reload to `group staff`: status %d; want 403\n%s\n%s", resp.StatusCode, body, g.logs())
	}
	if resp, _ := b.get("/x", api); resp.StatusCode != http.StatusOK {
		t.Errorf("the session after reload: status %d; want 200\n%s", resp.StatusCode, g.logs())
	}
	waitHealthy(t, g.proc, g.base+"/.sigra/healthz")
	if r := g.cli("a fine password\n", "add", "--email", "staff@example.com", "--groups", "staff", "--password-stdin"); r.code != 0 {
		t.Fatalf("user add through the admin API after reload failed\n%s\n%s", r, g.logs())
	}
	staff := g.browser()
	staff.mustLogin("staff@example.com", "a fine password", "/admin/x")
	if resp, _ := staff.get("/admin/x", api); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /admin/x as staff after reload: status %d; want 200", resp.StatusCode)
	}
	if strings.Count(g.proc.out.String(), "first admin user created") != 1 {
		t.Errorf("the first admin box was printed again on reload\n%s", g.logs())
	}

	// Sign out: the logout page's form, posted from the same origin.
	cookie := b.session()
	resp, page := b.get("/.sigra/logout", http.Header{"Accept": {"text/html"}})
	m := csrfRe.FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("GET /.sigra/logout: status %d, no csrf_token\n%s", resp.StatusCode, page)
	}
	resp, _ = b.do(http.MethodPost, "/.sigra/logout", http.Header{
		"Content-Type": {"application/x-www-form-urlencoded"},
		"Origin":       {g.base},
	}, strings.NewReader(url.Values{"csrf_token": {m[1]}}.Encode()))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /.sigra/logout: status %d; want 303", resp.StatusCode)
	}
	if b.session() != "" {
		t.Error("the session cookie is still in the browser after sign-out")
	}
	if resp, _ := b.get("/x", http.Header{"Accept": {"application/json"}, "Cookie": {"sigra_session=" + cookie}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the signed-out session's cookie, replayed: status %d; want 401", resp.StatusCode)
	}
}
