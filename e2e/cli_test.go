package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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

	// No store yet: only add may start one.
	if r := g.cli("", "list"); r.code == 0 || !strings.Contains(r.output(), "no Sigra store at "+g.db) {
		t.Fatalf("user list before any store exists: want a non-zero exit naming %s\n%s", g.db, r)
	}

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
	if !strings.Contains(r.stderr, "created a new Sigra store at "+g.db) {
		t.Errorf("user add on no store: want a notice naming the new store on stderr\n%s", r)
	}
	r = g.cli("", "list")
	row := listRow(r.stdout, "bob@example.com")
	if r.code != 0 || row == "" || !strings.Contains(row, "Bob") || !strings.Contains(row, "dev") || !strings.Contains(row, "active") {
		t.Fatalf("user list does not show bob (Bob, dev, active)\n%s", r)
	}
	r = g.cli("", "disable", "--email", "nobody@example.com")
	if r.code == 0 || !strings.Contains(r.output(), `"nobody@example.com"`) || !strings.Contains(r.output(), "not found") || !strings.Contains(r.output(), g.db) {
		t.Errorf("user disable of an unknown email with Caddy stopped: want a non-zero exit and a not-found message naming it and the store\n%s", r)
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

	// --admin alone adds the admin group to those bob has.
	r = g.cli("", "groups", "--email", "bob@example.com", "--admin")
	if r.code != 0 || !strings.Contains(r.stdout, "groups of bob@example.com: dev,admins\n") {
		t.Errorf("user groups --admin: want bob's dev kept and admins added\n%s", r)
	}

	r = g.cli("", "disable", "--email", "nobody@example.com")
	if r.code == 0 || !strings.Contains(r.output(), `"nobody@example.com"`) || !strings.Contains(r.output(), "not found") {
		t.Errorf("user disable of an unknown email with Caddy running: want a non-zero exit and a not-found message naming it\n%s", r)
	}
	r = g.cli("short\n", "add", "--email", "dave@example.com", "--password-stdin")
	if r.code == 0 || !strings.Contains(r.output(), "password") {
		t.Errorf("user add with a too short password: want a non-zero exit and a message about the password\n%s", r)
	}
	// A second line would be dropped without a word: a password file in
	// two lines is refused.
	r = g.cli("first-password-1\nsecond-line-2\n", "add", "--email", "dave@example.com", "--password-stdin")
	if r.code == 0 || !strings.Contains(r.output(), "more than one line") {
		t.Errorf("user add with two lines on stdin: want a non-zero exit and a message saying so\n%s", r)
	}
	r = g.cli(carolPassword+"\n", "add", "--email", "carol@example.com", "--password-stdin")
	if r.code == 0 {
		t.Errorf("user add of an existing email succeeded\n%s", r)
	}

	// A second-factor reset of a user without one is refused, saying why;
	// a deletion ends the account and its sessions.
	r = g.cli("", "mfa-reset", "--email", "bob@example.com")
	if r.code == 0 || !strings.Contains(r.output(), "no authenticator app") {
		t.Errorf("mfa-reset of a user without an authenticator app: want a non-zero exit saying why\n%s", r)
	}
	carol = g.browser()
	carol.mustLogin("carol@example.com", carolPassword, "/")
	r = g.cli("", "delete", "--email", "carol@example.com")
	if r.code != 0 || !strings.Contains(r.stdout, "deleted carol@example.com") {
		t.Fatalf("user delete with Caddy running failed\n%s\n%s", r, g.logs())
	}
	if resp, _ := carol.get("/x", http.Header{"Accept": {"application/json"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("deleted user's session: status %d; want 401", resp.StatusCode)
	}
	if row := listRow(g.cli("", "list").stdout, "carol@example.com"); row != "" {
		t.Errorf("user list still shows the deleted carol: %q", row)
	}

	// The bans of client addresses: none here, and a lift of one with
	// nothing recorded says so.
	bans := func(args ...string) result {
		return runCaddy(t, g.home, "", append(append([]string{"sigra", "bans"}, args...), "--config", g.caddyfile)...)
	}
	if r := bans("list"); r.code != 0 || strings.TrimSpace(r.stdout) != "ADDRESS  BANNED UNTIL" {
		t.Errorf("bans list with none: want the header alone\n%s", r)
	}
	if r := bans("lift", "--address", "192.0.2.1"); r.code == 0 || !strings.Contains(r.output(), "no ban or failures recorded for 192.0.2.1") {
		t.Errorf("bans lift of an address with nothing recorded: want a non-zero exit saying so\n%s", r)
	}
	if r := bans("lift"); r.code == 0 || !strings.Contains(r.output(), `"address" not set`) {
		t.Errorf("bans lift without --address: want a non-zero exit naming the flag\n%s", r)
	}
}

// TestCLIAdminOff: with the admin endpoint off, a running Caddy's store
// cannot be reached; the CLI says the store is locked and exits non-zero.
func TestCLIAdminOff(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{adminOff: true})
	g.start()

	r := g.cli(eveDummyPassword+"\n", "add", "--email", "eve@example.com", "--password-stdin")
	if r.code == 0 {
		t.Fatalf("user add against a running Caddy with admin off succeeded\n%s", r)
	}
	if out := r.output(); !strings.Contains(out, "locked") || !strings.Contains(out, g.db) {
		t.Errorf("the message does not say that %s is locked\n%s", g.db, r)
	}

	// Caddy's own lookup of the admin address ignores admin.disabled: it
	// returns admin.listen, or the default localhost:2019. A config with
	// the endpoint off but a listen address names a port this test owns,
	// so a CLI that trusted that lookup would send the user operation
	// (with the new user's password) to whatever listens there. It must
	// not send anything.
	t.Run("no request to the configured-but-disabled admin address", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
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

		// The same config as JSON, admin off but with a listen address.
		adapted := runCaddy(t, g.home, "", "adapt", "--config", g.caddyfile, "--adapter", "caddyfile")
		if adapted.code != 0 {
			t.Fatalf("caddy adapt failed\n%s", adapted)
		}
		var cfg map[string]any
		if err := json.Unmarshal([]byte(adapted.stdout), &cfg); err != nil {
			t.Fatalf("adapted config: %v\n%s", err, adapted)
		}
		cfg["admin"] = map[string]any{"disabled": true, "listen": l.Addr().String()}
		js, _ := json.Marshal(cfg)
		jsonPath := filepath.Join(g.home.dir, "config.json")
		if err := os.WriteFile(jsonPath, js, 0o600); err != nil {
			t.Fatal(err)
		}

		r := runCaddy(t, g.home, eveDummyPassword+"\n", "sigra", "user", "add", "--email", "eve@example.com", "--password-stdin", "--config", jsonPath)
		if v := got.Load(); v != nil {
			t.Errorf("with the admin endpoint disabled, the CLI sent the user operation to %s (another process):\n  %s",
				l.Addr(), redactPassword(v.(string)))
		}
		if r.code == 0 || !strings.Contains(r.output(), "admin endpoint is off") {
			t.Errorf("user add: want a non-zero exit saying the admin endpoint is off\n%s", r)
		}
	})
}

var passwordField = regexp.MustCompile(`"password":"[^"]*"`)

func redactPassword(s string) string {
	return passwordField.ReplaceAllString(s, `"password":"<the new user's password>"`)
}

// caddy sigra audit replay: directly on the store with Caddy stopped, and
// through the admin API while Caddy runs; an unknown webhook is an error;
// each replay is an audit row.
func TestCLIAuditReplay(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	audit := func(args ...string) result {
		return runCaddy(t, g.home, "", append(append([]string{"sigra", "audit"}, args...), "--config", g.caddyfile)...)
	}
	if r := audit("export"); r.code == 0 || !strings.Contains(r.output(), "no Sigra store at") {
		t.Fatalf("audit export before any store exists: want a non-zero exit\n%s", r)
	}
	if r := g.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add\n%s", r)
	}
	r := audit("replay")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "no dead deliveries to replay" {
		t.Fatalf("audit replay with Caddy stopped\n%s", r)
	}
	r = audit("replay", "--hook", "0123456789abcdef")
	if r.code == 0 || !strings.Contains(r.output(), "no such webhook") {
		t.Errorf("audit replay of an unknown webhook with Caddy stopped: want a non-zero exit naming it\n%s", r)
	}

	g.start()
	r = audit("replay")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "no dead deliveries to replay" {
		t.Fatalf("audit replay through the admin API\n%s", r)
	}
	r = audit("replay", "--hook", "0123456789abcdef")
	if r.code == 0 || !strings.Contains(r.output(), "no such webhook") {
		t.Errorf("audit replay of an unknown webhook through the admin API: want a non-zero exit naming it\n%s", r)
	}
	r = audit("export")
	if r.code != 0 || strings.Count(r.stdout, `"action":"admin.webhook.replay"`) != 2 || !strings.Contains(r.stdout, `"actor_type":"system"`) {
		t.Errorf("audit export: want two admin.webhook.replay rows by the system\n%s", r)
	}
}

// TestCLIOtherCaddysStore: two Caddy processes, A with its admin endpoint
// and B with admin off. A config that names B's store but A's admin
// address must not read or change A's store: the CLI exits non-zero
// naming both stores. And without --config, next to A's Caddyfile, the
// CLI takes the admin address from that file (not localhost:2019).
func TestCLIOtherCaddysStore(t *testing.T) {
	t.Parallel()
	a := newGateway(t, gatewayOptions{})
	b := newGateway(t, gatewayOptions{adminOff: true})
	if r := a.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add on A's store\n%s", r)
	}
	a.start()
	b.start()

	// No --config in A's directory: ./Caddyfile names both the store and
	// the admin address.
	if r := runCaddy(t, a.home, "", "sigra", "users", "list"); r.code != 0 || listRow(r.stdout, "bob@example.com") == "" {
		t.Errorf("users list without --config next to A's running Caddyfile: want bob\n%s", r)
	}

	// Config B, but with A's admin address.
	cf, err := os.ReadFile(b.caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cf), "admin off") {
		t.Fatalf("B's Caddyfile has no admin off line:\n%s", cf)
	}
	mixed := filepath.Join(b.home.dir, "Caddyfile.mixed")
	if err := os.WriteFile(mixed, []byte(strings.Replace(string(cf), "admin off", "admin "+a.adminAddr, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	realA, realB := evalSymlinks(t, a.db), evalSymlinks(t, b.db)
	want := "Caddy at " + a.adminAddr + " runs the Sigra store " + realA + ", but " + mixed + " names " + realB
	mixedCLI := func(stdin string, args ...string) result {
		return runCaddy(t, b.home, stdin, append(args, "--config", mixed)...)
	}
	for _, args := range [][]string{
		{"sigra", "users", "list"},
		{"sigra", "users", "add", "--email", "mallory@example.com", "--password-stdin"},
		{"sigra", "users", "disable", "--email", "bob@example.com"},
		{"sigra", "keys", "rotate"},
		{"sigra", "audit", "export"},
		{"sigra", "backup", "--out", filepath.Join(b.home.dir, "a-copy.db")},
	} {
		r := mixedCLI(eveDummyPassword+"\n", args...)
		if r.code == 0 || !strings.Contains(r.output(), want) {
			t.Errorf("%s with B's store and A's admin address: want a non-zero exit saying %q\n%s", strings.Join(args[1:3], " "), want, r)
		}
		if strings.Contains(r.stdout, "bob@example.com") {
			t.Errorf("%s with B's store and A's admin address showed A's user bob\n%s", strings.Join(args[1:3], " "), r)
		}
	}

	if _, err := os.Stat(filepath.Join(b.home.dir, "a-copy.db")); err == nil {
		t.Errorf("backup with B's store and A's admin address wrote a copy")
	}

	// A's store is untouched: bob only, still enabled.
	r := a.cli("", "list")
	if r.code != 0 || listRow(r.stdout, "mallory@example.com") != "" || !strings.Contains(listRow(r.stdout, "bob@example.com"), "active") {
		t.Errorf("A's users after the refused commands: want bob, active, and no mallory\n%s", r)
	}
	a.browser().mustLogin("bob@example.com", bobPassword, "/")
}

// A store file replaced under a running Caddy (a backup restored without
// stopping it) is not locked, but it is not the file Caddy has open: a
// command changing it would report success and change nothing Caddy
// serves. It is refused, and nothing changes.
func TestCLIRefusesAStoreReplacedUnderCaddy(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	if r := g.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add\n%s", r)
	}
	g.start()
	copy := filepath.Join(g.home.dir, "copy.db")
	if r := runCaddy(t, g.home, "", "sigra", "backup", "--out", copy, "--config", g.caddyfile); r.code != 0 {
		t.Fatalf("backup\n%s", r)
	}
	if err := os.Rename(copy, g.db); err != nil {
		t.Fatal(err)
	}
	r := g.cli("", "disable", "--email", "bob@example.com")
	if r.code == 0 || !strings.Contains(r.output(), "not the file that Caddy has open") {
		t.Errorf("users disable on a store replaced under Caddy: want a non-zero exit saying so\n%s", r)
	}
	g.browser().mustLogin("bob@example.com", bobPassword, "/")

	// Nor does a user added where the store was removed make a new one.
	if err := os.Remove(g.db); err != nil {
		t.Fatal(err)
	}
	r = g.cli(bobPassword+"\n", "add", "--email", "dave@example.com", "--password-stdin")
	if r.code == 0 || !strings.Contains(r.output(), "yet there is no file there") {
		t.Errorf("users add where the store was removed under Caddy: want a non-zero exit saying so\n%s", r)
	}
	if _, err := os.Stat(g.db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("users add made a store at %s: %v", g.db, err)
	}
	// A command that needs the store says the same, not "users add makes
	// one", which would not reach the running Caddy.
	r = g.cli("", "list")
	if r.code == 0 || !strings.Contains(r.output(), "yet there is no file there") || strings.Contains(r.output(), "so does users add") {
		t.Errorf("users list where the store was removed under Caddy: want a non-zero exit saying so\n%s", r)
	}
}

// evalSymlinks is path with symbolic links resolved, as the CLI sends it.
func evalSymlinks(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A command that finds the store locked and no Caddy answering waits for
// the lock: another command working offline holds it for as long as it
// runs (opening a large store takes seconds), and the two in a row
// must both work.
func TestCLIWaitsForAnotherCommand(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	if r := g.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add\n%s", r)
	}
	f, err := os.OpenFile(g.db, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil { // as bbolt's writer holds it
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(2 * time.Second)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}()
	start := time.Now()
	r := g.cli("", "list")
	<-released
	if r.code != 0 || listRow(r.stdout, "bob@example.com") == "" {
		t.Fatalf("users list while another process held the store for 2 s: want it to wait and list bob\n%s", r)
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("users list answered in %v, before the lock was released", waited)
	}
}

// Bytes that are not UTF-8 are refused on both of the CLI's ways to the
// store: offline, and through the running Caddy, where the request
// travels as JSON (which would turn them into U+FFFD, a password nobody
// can type). Nothing is added either way.
func TestCLIRefusesBytesThatAreNotText(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	if r := g.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add\n%s", r)
	}
	try := func(how string) {
		t.Helper()
		if r := g.cli("abc\xff\xfedefghijklmn\n", "add", "--email", "eve@example.com", "--password-stdin"); r.code == 0 || !strings.Contains(r.output(), "not text (UTF-8)") {
			t.Errorf("%s, a password that is not UTF-8: want a refusal saying so\n%s", how, r)
		}
		if r := g.cli(eveDummyPassword+"\n", "add", "--email", "e\xffve@example.com", "--password-stdin"); r.code == 0 || !strings.Contains(r.output(), "not text (UTF-8)") {
			t.Errorf("%s, an email that is not UTF-8: want a refusal saying so\n%s", how, r)
		}
		if r := g.cli("", "list"); r.code != 0 || strings.Contains(r.stdout, "eve") || strings.Contains(r.stdout, "\ufffd") {
			t.Errorf("%s: users after the refusals\n%s", how, r)
		}
	}
	try("offline")
	g.start()
	try("through the running Caddy")
}

// Ctrl-C while a change sent to a running Caddy has no answer yet (that
// Caddy stopped with SIGSTOP here) says at once that it may or may not
// have been done, and ends the command as Ctrl-C does; the Caddy, once
// it goes on, does it.
func TestCLIInterruptedWhileCaddyWaitsSaysSo(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	if r := g.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("user add\n%s", r)
	}
	p := g.start()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	cmd := exec.Command(caddyBin, "sigra", "users", "disable", "--email", "bob@example.com", "--config", g.caddyfile)
	cmd.Dir, cmd.Env = g.home.dir, g.home.env()
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the request sent, well within the 15 s before the notice
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("the interrupted command exited 0\n%s", stderr.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the command did not end on Ctrl-C\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "may or may not have been done") {
		t.Errorf("Ctrl-C while Caddy had not answered: stderr %q; want the caution", stderr.String())
	}
	// A command that changes nothing is not cautioned about.
	list := exec.Command(caddyBin, "sigra", "users", "list", "--config", g.caddyfile)
	list.Dir, list.Env = g.home.dir, g.home.env()
	var listErr syncBuffer
	list.Stdout, list.Stderr = io.Discard, &listErr
	if err := list.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	list.Process.Signal(os.Interrupt)
	list.Wait()
	if strings.Contains(listErr.String(), "may or may not") {
		t.Errorf("Ctrl-C during users list: stderr %q; want no caution, nothing was to be done", listErr.String())
	}
	p.cmd.Process.Signal(syscall.SIGCONT)
	stopped = false
	if r := g.cli("", "list"); r.code != 0 || !strings.Contains(listRow(r.stdout, "bob@example.com"), "disabled") {
		t.Errorf("after Caddy went on: want bob disabled, as that Caddy took the request\n%s", r)
	}
}

// users add prints a generated password once and keeps it nowhere: when
// it cannot be written out (stdout on a full disk), the command fails,
// saying the user was added and how to set a password.
func TestCLIAddFailsWhenItsPasswordCannotBeWritten(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("no /dev/full to write to: %v", err)
	}
	defer full.Close()
	cmd := exec.Command(caddyBin, "sigra", "users", "add", "--email", "dan@example.com", "--config", g.caddyfile)
	cmd.Dir, cmd.Env = g.home.dir, g.home.env()
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = full, &stderr
	if err := cmd.Run(); err == nil {
		t.Errorf("users add with its password unwritable exited 0\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "password could not be written out") || !strings.Contains(stderr.String(), "users passwd --email dan@example.com") {
		t.Errorf("stderr %q; want it to say the password could not be written out, and how to set one", stderr.String())
	}
	if r := g.cli("", "list"); r.code != 0 || listRow(r.stdout, "dan@example.com") == "" {
		t.Errorf("want dan added all the same\n%s", r)
	}
	// A pipe its reader closed (| head -0): not a silent SIGPIPE.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pr.Close()
	cmd = exec.Command(caddyBin, "sigra", "users", "add", "--email", "eva@example.com", "--config", g.caddyfile)
	cmd.Dir, cmd.Env = g.home.dir, g.home.env()
	var pipeErr syncBuffer
	cmd.Stdout, cmd.Stderr = pw, &pipeErr
	err = cmd.Run()
	pw.Close()
	if err == nil || !strings.Contains(pipeErr.String(), "password could not be written out") {
		t.Errorf("users add into a closed pipe: %v, stderr %q; want it to fail saying so", err, pipeErr.String())
	}
}

// addOnATerminal runs users add --password-stdin for tty@example.com on
// a pseudo-terminal (script, from util-linux), within the shell line
// shell (%s is the command), and waits for its password prompt.
func addOnATerminal(t *testing.T, g *gateway, shell string) (*exec.Cmd, io.WriteCloser, *syncBuffer) {
	t.Helper()
	scriptBin, err := exec.LookPath("script")
	if err != nil {
		t.Fatalf("script (util-linux, Debian's bsdutils) is needed to run a command on a terminal: %v", err)
	}
	add := strings.Join([]string{caddyBin, "sigra", "users", "add", "--config", g.caddyfile, "--email", "tty@example.com", "--password-stdin"}, " ")
	cmd := exec.Command(scriptBin, "-q", "-e", "-c", fmt.Sprintf(shell, add), "/dev/null")
	cmd.Dir, cmd.Env = g.home.dir, g.home.env()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "Password (not shown"); time.Sleep(20 * time.Millisecond) { // polling, not timing
		if time.Now().After(deadline) {
			t.Fatalf("no password prompt on the terminal\n%s", out.String())
		}
	}
	return cmd, in, out
}

// --password-stdin on a terminal prompts, and the password typed is not
// echoed: on the screen and in its scrollback it stays unseen. script
// (util-linux) runs the command on a pseudo-terminal.
func TestCLIPasswordTypedOnATerminalIsNotShown(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	const typed = "typed on a terminal 123"
	cmd, in, out := addOnATerminal(t, g, "%s")
	io.WriteString(in, typed+"\r")
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("users add on a terminal: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), typed) || !strings.Contains(out.String(), "added tty@example.com") {
		t.Errorf("the terminal shows %q; want the user added and the password never shown", out.String())
	}
	if r := runCaddy(t, g.home, "", "sigra", "users", "list", "--config", g.caddyfile); r.code != 0 || listRow(r.stdout, "tty@example.com") == "" {
		t.Fatalf("users list\n%s", r)
	}
	// And it is the password: tty@ signs in with it.
	g.start()
	if resp, _ := g.browser().login("tty@example.com", typed, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-in with the password typed on the terminal: status %d; want 303", resp.StatusCode)
	}
}

// Ctrl-C at the --password-stdin prompt leaves the terminal echoing, as
// it was: the command ends as Ctrl-C ends it, and stty then shows echo
// on.
func TestCLIPasswordPromptInterruptedLeavesEcho(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	// The shell catches INT (its children get it back as default), runs
	// the command, then prints the terminal's settings.
	cmd, in, out := addOnATerminal(t, g, "sh -c 'trap : INT; %s; echo rc=$?; stty -a'")
	// Ctrl-C.
	io.WriteString(in, "\x03")
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "speed"); time.Sleep(20 * time.Millisecond) { // polling, not timing
		if time.Now().After(deadline) {
			t.Fatalf("no stty output after Ctrl-C\n%s", out.String())
		}
	}
	in.Close()
	cmd.Wait()
	if strings.Contains(out.String(), "rc=0") || !regexp.MustCompile(`(^|\s)echo(\s|$)`).MatchString(out.String()) {
		t.Errorf("after Ctrl-C at the prompt: %q; want the command ended and the terminal echoing (echo, not -echo)", out.String())
	}
}
