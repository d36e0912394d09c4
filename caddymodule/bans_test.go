package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// A client address banned by failures on other accounts keeps out a user
// whose own account has no ban (users unlock cannot help): `bans list`
// shows the address, and `bans lift` lets them in again, with an
// admin.address.unlock row; through the running Caddy, and on the store
// when none runs.
func TestBansListAndLift(t *testing.T) {
	e := startCaddy(t, "regulation {\n max_retries_per_ip 3\n }", "sigra_gate")
	e.addUser("oscar@example.com")
	cfPath := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(e.config), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := cliFlags{config: cfPath, adapter: "caddyfile"}
	ctx := context.Background()
	banAddress := func() {
		t.Helper()
		e.failSignIns(3)
		if r := e.browser().login("oscar@example.com", testPassword, "/"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("oscar from the banned address: status %d; want 401", r.StatusCode)
		}
	}
	banAddress()
	res, err := runBansOp(ctx, flags, bansRequest{Op: "list"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Bans) != 1 || res.Bans[0].Address != "127.0.0.1" || !res.Bans[0].Until.After(e.rt().auth.Now()) {
		t.Fatalf("bans list: %+v; want 127.0.0.1, banned for a while", res.Bans)
	}
	for addr, want := range map[string]string{"not an address": "not an IP address", "198.51.100.1": "no ban or failures recorded for 198.51.100.1"} {
		if _, err := runBansOp(ctx, flags, bansRequest{Op: "lift", Address: addr}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bans lift %q: %v; want an error saying %q", addr, err, want)
		}
	}
	if _, err := runBansOp(ctx, flags, bansRequest{Op: "unban"}); err == nil || !strings.Contains(err.Error(), "want list or lift") {
		t.Errorf("an unknown bans operation: %v", err)
	}
	if rows := e.auditRows("admin.address.unlock"); len(rows) != 0 {
		t.Errorf("refused lifts wrote rows: %+v", rows)
	}
	if res, err = runBansOp(ctx, flags, bansRequest{Op: "lift", Address: " 127.0.0.1 "}); err != nil || res.Bans == nil || len(res.Bans) != 0 || res.Lifted != "127.0.0.1" {
		t.Fatalf("bans lift 127.0.0.1: %+v, %v; want it lifted, an empty list of bans left", res, err)
	}
	rows := e.auditRows("admin.address.unlock")
	if len(rows) != 1 || rows[0].ActorType != "system" || rows[0].Metadata["address"] != "127.0.0.1" || rows[0].Outcome != "success" {
		t.Errorf("admin.address.unlock rows %+v; want one by the system naming the address", rows)
	}
	if r := e.browser().login("oscar@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("oscar after the lift: status %d; want 303", r.StatusCode)
	}

	// With no Caddy running, on the store.
	banAddress()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if res, err = runBansOp(ctx, flags, bansRequest{Op: "lift", Address: "127.0.0.1"}); err != nil || len(res.Bans) != 0 {
		t.Fatalf("bans lift on the store: %+v, %v; want no bans left", res, err)
	}
	if err := e.load(e.config); err != nil {
		t.Fatal(err)
	}
	if r := e.browser().login("oscar@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("oscar after the lift on the store: status %d; want 303", r.StatusCode)
	}
	if rows := e.auditRows("admin.address.unlock"); len(rows) != 2 {
		t.Errorf("%d admin.address.unlock rows; want 2", len(rows))
	}
}

// failSignIns sends n wrong passwords for n different unknown emails from
// the test client's address: with max_retries_per_ip n, the address's
// ban, whoever signs in from it next.
func (e *env) failSignIns(n int) {
	e.t.Helper()
	for i := range n {
		who := fmt.Sprintf("stranger%d@example.com", i)
		if r := e.browser().login(who, "wrong wrong wrong", "/"); r.StatusCode != http.StatusUnauthorized {
			e.t.Fatalf("a wrong password for %s: status %d", who, r.StatusCode)
		}
	}
}

// Sign-ins in flight from one address fill its quota (an office behind
// one NAT address): the next user's right password is answered 429,
// try again, not "Incorrect email or password", and once one ends it
// gets in; nothing is banned or counted against it.
func TestCrowdedAddressSignInIsAskedToRetry(t *testing.T) {
	e := startCaddy(t, "regulation {\n max_retries_per_ip 3\n }", "sigra_gate")
	e.addUser("nell@example.com")
	ctx := context.Background()
	var flying []*authcore.Attempt
	for i := range 3 { // sign-ins under way, from the test client's address
		a, err := e.rt().reg.Begin(ctx, authcore.UserAccountKey(fmt.Sprintf("colleague%d", i)), "127.0.0.1")
		if err != nil || !a.Allowed() {
			t.Fatalf("colleague %d: %v", i, err)
		}
		flying = append(flying, a)
	}
	_, page := e.get("/.sigra/login", nil)
	resp, body := e.postForm("/.sigra/login", url.Values{"email": {"nell@example.com"}, "password": {testPassword}, "csrf_token": {csrfFrom(t, page)}}, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "try again in a few seconds") || strings.Contains(body, "Incorrect") {
		t.Errorf("nell while her network's sign-ins fill its quota: status %d Retry-After %q; want 429, try again", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if rows := e.auditRows("auth.login.failure"); len(rows) != 0 {
		t.Errorf("auth.login.failure rows %+v; want none: nothing failed", rows)
	}
	if err := flying[0].Succeed(ctx, true); err != nil {
		t.Fatal(err)
	}
	if r := e.login("nell@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("nell once a colleague's sign-in ended: status %d; want 303", r.StatusCode)
	}
}

// So is a second-factor code: not checked, not counted, no row, and
// not called a ban of the network.
func TestCrowdedAddressCodeIsAskedToRetry(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "regulation {\n max_retries_per_ip 3\n }", "nell@example.com")
	fake.Advance(30 * time.Second)
	e.client.Jar, _ = newJar()
	e.login("nell@example.com", testPassword, "/")
	ctx := context.Background()
	var flying []*authcore.Attempt
	for i := range 3 {
		a, err := e.rt().reg.Begin(ctx, authcore.UserAccountKey(fmt.Sprintf("colleague%d", i)), "127.0.0.1")
		if err != nil || !a.Allowed() {
			t.Fatalf("colleague %d: %v", i, err)
		}
		flying = append(flying, a)
	}
	_, page := e.get("/.sigra/mfa", nil)
	resp, body := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "try again in a few seconds") || strings.Contains(body, "from your network") {
		t.Errorf("a code while the network's sign-ins fill its quota: status %d; want 429, try again\n%s", resp.StatusCode, body)
	}
	if rows := e.auditRows("mfa.challenge.failure"); len(rows) != 0 {
		t.Errorf("mfa.challenge.failure rows %+v; want none: nothing was checked", rows)
	}
	if err := flying[0].Succeed(ctx, true); err != nil {
		t.Fatal(err)
	}
	if r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("the same code once a colleague's sign-in ended: status %d; want 303 (it was not spent)", r.StatusCode)
	}
}

// A sign-in refused by a banned account is answered as a wrong password
// for a fresh account from the same address is: after the same delay,
// and with its own row (its commit takes time too), so a prober cannot
// time it to learn that an account is banned.
func TestBannedAccountFailsInAWrongPasswordsTime(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("vic@example.com")
	var waits []time.Duration
	old := wait
	wait = func(_ context.Context, d time.Duration) { waits = append(waits, d) }
	t.Cleanup(func() { wait = old })
	// Vic's password guessed at from elsewhere until it is banned.
	key, err := e.rt().auth.AccountKey(context.Background(), "vic@example.com")
	if err != nil {
		t.Fatal(err)
	}
	fail := func(key, ip string) {
		t.Helper()
		a, err := e.rt().reg.Begin(context.Background(), key, ip)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Fail(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		fail(key, fmt.Sprint("198.51.100.", i+1))
	}
	// Ten failures from the client's address already, so its delays
	// have begun to grow.
	for i := range 10 {
		fail(authcore.UserAccountKey(fmt.Sprint("earlier", i)), "127.0.0.1")
	}
	// Then from there, alternately: a stranger's wrong password, and
	// vic's right one, refused.
	for i := range 6 {
		who, pw := fmt.Sprintf("stranger%d@example.com", i), "wrong wrong wrong"
		if i%2 == 1 {
			who, pw = "vic@example.com", testPassword
		}
		if r := e.browser().login(who, pw, "/"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("sign-in %d as %s: status %d; want 401", i, who, r.StatusCode)
		}
	}
	rt := e.rt().reg
	want := make([]time.Duration, 6)
	for i := range want {
		want[i] = rt.Delay((i + 11) * rt.Config().MaxRetries / rt.Config().MaxRetriesPerIP)
	}
	if !slices.Equal(waits, want) {
		t.Errorf("failure delays %v; want %v, the address's alone, banned account or not", waits, want)
	}
	var reasons []string
	for _, r := range e.auditRows("auth.login.failure") {
		reasons = append(reasons, r.Metadata["reason"])
	}
	if want := []string{"locked", "invalid_credentials", "locked", "invalid_credentials", "locked", "invalid_credentials"}; !slices.Equal(reasons, want) {
		t.Errorf("auth.login.failure reasons, newest first: %q; want %q, a row for each", reasons, want)
	}
}

// The failure that bans an account writes its auth.lockout row in the
// one commit of its auth.login.failure row, as another failure writes
// its row alone: no commit more tells a prober, by the time it takes,
// which try banned the account. Both are stored, or neither.
func TestBanningFailureIsOneCommit(t *testing.T) {
	e := startCaddy(t, "regulation {\n max_retries 2\n }", "sigra_gate")
	e.addUser("bea@example.com")
	if r := e.browser().login("bea@example.com", "wrong wrong wrong", "/"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a first wrong password: status %d", r.StatusCode)
	}
	e.failAudit("auth.login.failure")
	if r := e.browser().login("bea@example.com", "wrong wrong wrong", "/"); r.StatusCode != http.StatusInternalServerError {
		t.Errorf("the banning failure with its failure row failing: status %d; want 500", r.StatusCode)
	}
	e.failAudit("")
	if rows := e.auditRows("auth.lockout"); len(rows) != 0 {
		t.Errorf("auth.lockout rows %+v; want none stored without the failure's row", rows)
	}
}
