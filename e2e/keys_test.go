package e2e

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// keyRows parses `caddy sigra keys list`: kid, alg and status per key,
// active first.
func keyRows(t *testing.T, r result) [][3]string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("keys list failed\n%s", r)
	}
	var rows [][3]string
	for line := range strings.Lines(r.stdout) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] == "KID" {
			continue
		}
		rows = append(rows, [3]string{f[0], f[1], f[2]})
	}
	return rows
}

// caddy sigra keys: list and rotate with Caddy stopped (on the store) and
// running (through the admin API). A rotation changes the kid of new
// assertions at once, keeps the old key in jwks.json so assertions it
// signed still verify, and is an audit row.
func TestCLIKeys(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	keys := func(args ...string) result {
		return runCaddy(t, g.home, "", append(append([]string{"sigra", "keys"}, args...), "--config", g.caddyfile)...)
	}
	// No store yet: an error naming where it looked, and nothing created
	// (a config that differs from Caddy's must not start a second store).
	if r := keys("list"); r.code == 0 || !strings.Contains(r.output(), "no Sigra store at "+g.db) {
		t.Fatalf("keys list before any store exists: want a non-zero exit naming %s\n%s", g.db, r)
	}
	if _, err := os.Stat(g.db); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("keys list created %s (%v)", g.db, err)
	}
	if r := g.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add\n%s", r)
	}
	first := keyRows(t, keys("list"))
	if len(first) != 1 || first[0][1] != "EdDSA" || first[0][2] != "active" {
		t.Fatalf("keys list on a new store: %v; want one active EdDSA key", first)
	}
	if r := keys("rotate"); r.code != 0 {
		t.Fatalf("keys rotate with Caddy stopped\n%s", r)
	}
	rotated := keyRows(t, keys("list"))
	if len(rotated) != 2 || rotated[1][0] != first[0][0] || rotated[1][2] != "retired" || rotated[0][2] != "active" || rotated[0][0] == first[0][0] {
		t.Fatalf("after a rotation: %v; want a new active key and %s retired", rotated, first[0][0])
	}

	g.start()
	bob := g.browser()
	bob.mustLogin("bob@example.com", bobPassword, "/")
	assertion := func() string {
		t.Helper()
		if resp, _ := bob.get("/x", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("bob: status %d\n%s", resp.StatusCode, g.logs())
		}
		req, _ := g.up.last()
		return req.Header.Get("X-Sigra-Assertion")
	}
	old := assertion()
	if kid, _ := g.verifyAssertion(old); kid != rotated[0][0] {
		t.Fatalf("assertion kid %s; want the active %s", kid, rotated[0][0])
	}

	r := keys("rotate")
	if r.code != 0 {
		t.Fatalf("keys rotate through the admin API\n%s\n%s", r, g.logs())
	}
	now := keyRows(t, r)
	if len(now) != 3 || now[1][0] != rotated[0][0] || now[0][2] != "active" {
		t.Fatalf("after rotating the running gateway: %v; want a new active key and two retired", now)
	}
	if kid, _ := g.verifyAssertion(assertion()); kid != now[0][0] {
		t.Errorf("after rotation the assertion's kid is %s; want the new %s", kid, now[0][0])
	}
	// An assertion signed before the rotation still verifies.
	if kid, _ := g.verifyAssertion(old); kid != rotated[0][0] {
		t.Errorf("the old assertion's kid %s", kid)
	}

	// A reload with another algorithm retires the key once the config
	// is in force, and the log names the key that signs from then on
	// ("sigra started" named the one that signed until then).
	data, err := os.ReadFile(g.caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	es := strings.Replace(string(data), "\tsigra {\n", "\tsigra {\n\t\tkeys {\n\t\t\talgorithm ES256\n\t\t}\n", 1)
	if es == string(data) {
		t.Fatal("the test Caddyfile has no global sigra block")
	}
	writeFile(t, g.caddyfile, es)
	if r := runCaddy(t, g.home, "", "reload", "--config", g.caddyfile, "--adapter", "caddyfile"); r.code != 0 {
		t.Fatalf("caddy reload to ES256\n%s\n%s", r, g.logs())
	}
	bob.client.CloseIdleConnections() // the old server closes them
	var esKID string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if rows := keyRows(t, keys("list")); rows[0][1] == "ES256" && rows[0][2] == "active" {
			esKID = rows[0][0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no active ES256 key after the reload\n%s", g.logs())
		}
	}
	if kid, _ := g.verifyAssertion(assertion()); kid != esKID {
		t.Errorf("after the reload to ES256 the assertion's kid is %s; want %s", kid, esKID)
	}
	changed := func() string {
		for line := range strings.Lines(g.logs()) {
			if strings.Contains(line, "the assertion key changed with the config") {
				return line
			}
		}
		return ""
	}
	for deadline := time.Now().Add(5 * time.Second); changed() == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line naming the new key after the reload\n%s", g.logs())
		}
	}
	if line := changed(); !strings.Contains(line, "assertion_kid="+esKID) || !strings.Contains(line, "retired_kid="+now[0][0]) {
		t.Errorf("the key change's log line should name %s (signing) and %s (retired)\n%s", esKID, now[0][0], line)
	}

	export := runCaddy(t, g.home, "", "sigra", "audit", "export", "--config", g.caddyfile)
	if export.code != 0 || strings.Count(export.stdout, `"action":"admin.keys.rotate"`) != 3 || !strings.Contains(export.stdout, `"previous_kid":"`+rotated[0][0]+`"`) {
		t.Errorf("audit export: want three admin.keys.rotate rows, the second naming %s as previous\n%s", rotated[0][0], export)
	}
	// The reload's change of algorithm has its row too.
	var byConfig int
	for line := range strings.Lines(export.stdout) {
		if strings.Contains(line, `"action":"admin.keys.rotate"`) && strings.Contains(line, `"reason":"config"`) {
			byConfig++
			if !strings.Contains(line, `"kid":"`+esKID+`"`) || !strings.Contains(line, `"previous_kid":"`+now[0][0]+`"`) || !strings.Contains(line, `"alg":"ES256"`) {
				t.Errorf("the reload's admin.keys.rotate row: want kid %s, alg ES256, previous %s\n%s", esKID, now[0][0], line)
			}
		}
	}
	if byConfig != 1 {
		t.Errorf("%d admin.keys.rotate rows with reason config; want 1 (the reload to ES256)\n%s", byConfig, export)
	}
}
