package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

const (
	bobPassword      = "bob's first password"
	bobNewPassword   = "bob's second password"
	carolPassword    = "carol's password 1"
	eveDummyPassword = "eve's password 123"
)

// listRow finds a user's row in `caddy sigra user list` output.
func listRow(out, email string) string {
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 1 && f[1] == email {
			return line
		}
	}
	return ""
}

// TestCLIUsers: `caddy sigra user …` with Caddy stopped (the CLI opens the
// store) and with Caddy running (the store is locked; the CLI goes through
// the admin API), and the effect of each command on real sign-ins.
func TestCLIUsers(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})

	// Caddy stopped: the CLI opens the store itself.
	r := g.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--name", "Bob", "--groups", "dev", "--password-stdin")
	if r.code != 0 || !strings.Contains(r.stdout, "added bob@example.com (") {
		t.Fatalf("user add with Caddy stopped failed\n%s", r)
	}
	if strings.Contains(r.output(), bobPassword) {
		t.Errorf("user add echoed the password\n%s", r)
	}
	if _, err := os.Stat(g.db); err != nil {
		t.Errorf("user add did not create the store %s: %v", g.db, err)
	}
	r = g.cli("", "list")
	row := listRow(r.stdout, "bob@example.com")
	if r.code != 0 || row == "" || !strings.Contains(row, "Bob") || !strings.Contains(row, "dev") || !strings.Contains(row, "active") {
		t.Fatalf("user list does not show bob (Bob, dev, active)\n%s", r)
	}
	r = g.cli("", "disable", "--email", "nobody@example.com")
	if r.code == 0 || !strings.Contains(r.output(), `"nobody@example.com"`) || !strings.Contains(r.output(), "not found") {
		t.Errorf("user disable of an unknown email with Caddy stopped: want a non-zero exit and a not-found message naming it\n%s", r)
	}

	// Caddy running: the store is locked, the CLI uses the admin API.
	g.start()
	bob := g.browser()
	bob.mustLogin("bob@example.com", bobPassword, "/")
	if resp, _ := bob.get("/x", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("bob (added with Caddy stopped) cannot reach the app: status %d\n%s", resp.StatusCode, g.logs())
	}
	if req, _ := g.up.last(); req.Header.Get("X-Sigra-Email") != "bob@example.com" || req.Header.Get("X-Sigra-Groups") != "dev" ||
		req.Header.Get("X-Sigra-Name") != "Bob" {
		t.Errorf("upstream saw email %q, groups %q, name %q; want bob@example.com, dev, Bob",
			req.Header.Get("X-Sigra-Email"), req.Header.Get("X-Sigra-Groups"), req.Header.Get("X-Sigra-Name"))
	}

	r = g.cli(carolPassword+"\n", "add", "--email", "carol@example.com", "--name", "Carol", "--password-stdin")
	if r.code != 0 || !strings.Contains(r.stdout, "added carol@example.com (") {
		t.Fatalf("user add with Caddy running failed\n%s\n%s", r, g.logs())
	}
	carol := g.browser()
	carol.mustLogin("carol@example.com", carolPassword, "/")

	r = g.cli("", "list")
	if r.code != 0 || listRow(r.stdout, "bob@example.com") == "" || listRow(r.stdout, "carol@example.com") == "" {
		t.Fatalf("user list with Caddy running does not show bob and carol\n%s", r)
	}

	r = g.cli("", "disable", "--email", "carol@example.com")
	if r.code != 0 || !strings.Contains(r.stdout, "disabled carol@example.com") {
		t.Fatalf("user disable with Caddy running failed\n%s\n%s", r, g.logs())
	}
	if resp, _ := carol.login("carol@example.com", carolPassword, "/"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login as a disabled user: status %d; want 401", resp.StatusCode)
	}
	if resp, _ := carol.get("/x", http.Header{"Accept": {"application/json"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("disabled user's old session: status %d; want 401 (disabling ends sessions)", resp.StatusCode)
	}
	r = g.cli("", "list")
	if row := listRow(r.stdout, "carol@example.com"); !strings.Contains(row, "disabled") {
		t.Errorf("user list does not show carol as disabled\n%s", r)
	}
	r = g.cli("", "enable", "--email", "carol@example.com")
	if r.code != 0 || !strings.Contains(r.stdout, "enabled carol@example.com") {
		t.Fatalf("user enable with Caddy running failed\n%s", r)
	}
	g.browser().mustLogin("carol@example.com", carolPassword, "/")

	r = g.cli(bobNewPassword+"\n", "passwd", "--email", "bob@example.com", "--password-stdin")
	if r.code != 0 || !strings.Contains(r.stdout, "password changed for bob@example.com") {
		t.Fatalf("user passwd with Caddy running failed\n%s\n%s", r, g.logs())
	}
	if resp, _ := bob.get("/x", http.Header{"Accept": {"application/json"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bob's session after passwd: status %d; want 401 (passwd ends sessions)", resp.StatusCode)
	}
	if resp, _ := g.browser().login("bob@example.com", bobPassword, "/"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with bob's old password: status %d; want 401", resp.StatusCode)
	}
	g.browser().mustLogin("bob@example.com", bobNewPassword, "/")

	r = g.cli("", "disable", "--email", "nobody@example.com")
	if r.code == 0 || !strings.Contains(r.output(), `"nobody@example.com"`) || !strings.Contains(r.output(), "not found") {
		t.Errorf("user disable of an unknown email with Caddy running: want a non-zero exit and a not-found message naming it\n%s", r)
	}
	r = g.cli("short\n", "add", "--email", "dave@example.com", "--password-stdin")
	if r.code == 0 || !strings.Contains(r.output(), "password") {
		t.Errorf("user add with a too short password: want a non-zero exit and a message about the password\n%s", r)
	}
	r = g.cli(carolPassword+"\n", "add", "--email", "carol@example.com", "--password-stdin")
	if r.code == 0 {
		t.Errorf("user add of an existing email succeeded\n%s", r)
	}
}

// TestCLIAdminOff: with the admin endpoint off, a running Caddy's store
// cannot be reached; the CLI says the store is locked and exits non-zero.
func TestCLIAdminOff(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{adminOff: true})
	g.start()

	// Nothing may listen on Caddy's default admin address for this part:
	// see the subtest below for what happens when something does.
	r := g.cli(eveDummyPassword+"\n", "add", "--email", "eve@example.com", "--password-stdin")
	if r.code == 0 {
		t.Fatalf("user add against a running Caddy with admin off succeeded\n%s", r)
	}
	if out := r.output(); !strings.Contains(out, "locked") || !strings.Contains(out, g.db) {
		t.Errorf("the message does not say that %s is locked\n%s", g.db, r)
	}

	// The CLI falls back to Caddy's default admin address
	// (localhost:2019) when the config turns the admin endpoint off, so
	// the request (with the new user's password) goes to whatever
	// listens there: another Caddy, or anything else. It must not.
	t.Run("no request to the default admin address", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:2019")
		if err != nil {
			t.Skipf("cannot listen on 127.0.0.1:2019 to stand in for another Caddy: %v", err)
		}
		var got atomic.Value
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			got.Store(r.Method + " " + r.URL.Path + " " + string(body))
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"user":{"id":"not-this-caddy","email":"eve@example.com"}}`)
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })

		r := g.cli(eveDummyPassword+"\n", "add", "--email", "eve@example.com", "--password-stdin")
		if v := got.Load(); v != nil {
			t.Errorf("with `admin off`, the CLI sent the user operation to the default admin address 127.0.0.1:2019 "+
				"(another process):\n  %s", redactPassword(v.(string)))
		}
		if r.code == 0 {
			t.Errorf("user add reported success\n%s", r)
			if resp, _ := g.browser().login("eve@example.com", eveDummyPassword, "/"); resp.StatusCode != http.StatusSeeOther {
				t.Errorf("… but eve cannot sign in to the running Caddy (status %d): it was not added", resp.StatusCode)
			}
		}
	})
}

var passwordField = regexp.MustCompile(`"password":"[^"]*"`)

func redactPassword(s string) string {
	return passwordField.ReplaceAllString(s, `"password":"<the new user's password>"`)
}
