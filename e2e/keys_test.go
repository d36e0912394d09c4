package e2e

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"testing"
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

	export := runCaddy(t, g.home, "", "sigra", "audit", "export", "--config", g.caddyfile)
	if export.code != 0 || strings.Count(export.stdout, `"action":"admin.keys.rotate"`) != 2 || !strings.Contains(export.stdout, `"previous_kid":"`+rotated[0][0]+`"`) {
		t.Errorf("audit export: want two admin.keys.rotate rows, the second naming %s as previous\n%s", rotated[0][0], export)
	}
}
