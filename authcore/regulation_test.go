package authcore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
)

// memRegulationStore is an in-memory RegulationStore. One mutex stands in
// for the database transaction.
type memRegulationStore struct {
	mu sync.Mutex
	m  map[string]RegulationState
}

func newMemRegulationStore() *memRegulationStore {
	return &memRegulationStore{m: map[string]RegulationState{}}
}

func (s *memRegulationStore) UpdateRegulation(ctx context.Context, keys []string, fn func([]*RegulationState) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	states := make([]*RegulationState, len(keys))
	for i, k := range keys {
		st := s.m[k]
		st.Attempts, st.InFlight = slices.Clone(st.Attempts), slices.Clone(st.InFlight)
		states[i] = &st
	}
	if err := fn(states); err != nil {
		return err
	}
	for i, k := range keys {
		if states[i].IsZero() {
			delete(s.m, k)
		} else {
			s.m[k] = *states[i]
		}
	}
	return nil
}

func (s *memRegulationStore) RegulationState(ctx context.Context, key string) (*RegulationState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.m[key]
	st.Attempts = slices.Clone(st.Attempts)
	return &st, nil
}

func (s *memRegulationStore) RegulationStates(ctx context.Context, prefix string, fn func(string, *RegulationState) bool) error {
	s.mu.Lock()
	keys := slices.Sorted(maps.Keys(s.m))
	s.mu.Unlock()
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		st, _ := s.RegulationState(ctx, k)
		if !fn(k, st) {
			return nil
		}
	}
	return nil
}

func (s *memRegulationStore) PruneRegulation(ctx context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, st := range s.m {
		if st.Expires.Before(now) {
			delete(s.m, k)
			n++
		}
	}
	return n, nil
}

func (s *memRegulationStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

var regStart = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func newTestRegulator(t *testing.T, cfg RegulationConfig) (*Regulator, *clock.Fake, *memRegulationStore) {
	t.Helper()
	clk := clock.NewFake(regStart)
	st := newMemRegulationStore()
	return NewRegulator(clk, st, cfg), clk, st
}

// try runs one attempt that fails (ok false) or passes, as a caller would.
func try(t *testing.T, r *Regulator, account, ip string, correct bool) (allowed bool, res FailResult) {
	t.Helper()
	ctx := context.Background()
	a, err := r.Begin(ctx, account, ip)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if a.Allowed() && correct {
		if err := a.Succeed(ctx, true); err != nil {
			t.Fatalf("Succeed: %v", err)
		}
		return true, FailResult{}
	}
	res, err = a.Fail(ctx)
	if err != nil {
		t.Fatalf("Fail: %v", err)
	}
	return a.Allowed(), res
}

func TestRegulationDefaults(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{})
	want := RegulationConfig{MaxRetries: 5, MaxRetriesPerIP: 20, FindTime: 10 * time.Minute, BanTime: 15 * time.Minute}
	if got := r.Config(); got != want {
		t.Errorf("Config() = %+v; want %+v", got, want)
	}
}

func TestRegulationBansAfterMaxRetries(t *testing.T) {
	r, clk, _ := newTestRegulator(t, RegulationConfig{})
	acct := UserAccountKey("alice")
	for i := 1; i <= 5; i++ {
		allowed, res := try(t, r, acct, "192.0.2.1", false)
		if !allowed {
			t.Fatalf("attempt %d refused; want allowed before the ban", i)
		}
		if got, want := res.AccountLocked, i == 5; got != want {
			t.Errorf("failure %d: AccountLocked = %v; want %v", i, got, want)
		}
		if res.IPLocked {
			t.Errorf("failure %d: IPLocked; want only the account banned", i)
		}
		clk.Advance(time.Second)
	}
	// The sixth attempt is refused, even with the right password.
	allowed, res := try(t, r, acct, "192.0.2.1", true)
	if allowed {
		t.Fatal("correct password during the ban was allowed")
	}
	if res.Lockout() {
		t.Error("a refused attempt reported a new lockout; want one report per ban")
	}
	if want := r.Delay(6 * 5 / 20); res.Delay != want {
		t.Errorf("refused attempt Delay = %v; want %v, the address's sixth failure's", res.Delay, want)
	}
	// Another address does not help: the account is banned.
	if allowed, _ := try(t, r, acct, "198.51.100.7", true); allowed {
		t.Error("correct password from another address during the ban was allowed")
	}
	// Another account from the first address is fine.
	if allowed, _ := try(t, r, UserAccountKey("bob"), "192.0.2.1", true); !allowed {
		t.Error("another account was refused; want only alice banned")
	}
}

func TestRegulationBanExpires(t *testing.T) {
	r, clk, _ := newTestRegulator(t, RegulationConfig{})
	ctx := context.Background()
	acct := UserAccountKey("alice")
	var until time.Time
	for range 5 {
		_, res := try(t, r, acct, "192.0.2.1", false)
		if res.AccountLocked {
			until = res.Until
		}
	}
	if want := regStart.Add(15 * time.Minute); !until.Equal(want) {
		t.Fatalf("ban until %v; want %v", until, want)
	}
	if got, _ := r.AccountBan(ctx, "alice"); !got.Equal(until) {
		t.Errorf("AccountBan = %v; want %v", got, until)
	}
	clk.Advance(15*time.Minute - time.Nanosecond)
	if allowed, _ := try(t, r, acct, "192.0.2.1", true); allowed {
		t.Fatal("allowed a nanosecond before the ban ends")
	}
	clk.Advance(time.Nanosecond)
	if got, _ := r.AccountBan(ctx, "alice"); !got.IsZero() {
		t.Errorf("AccountBan after the ban = %v; want zero", got)
	}
	// The ban's failures are forgotten with it: four more failures do not ban.
	for i := range 4 {
		if allowed, res := try(t, r, acct, "192.0.2.1", false); !allowed || res.Lockout() {
			t.Fatalf("failure %d after the ban: allowed=%v lockout=%v; want a fresh count", i+1, allowed, res.Lockout())
		}
	}
	if allowed, _ := try(t, r, acct, "192.0.2.1", true); !allowed {
		t.Error("correct password after the ban was refused")
	}
}

func TestRegulationFindTime(t *testing.T) {
	r, clk, _ := newTestRegulator(t, RegulationConfig{})
	acct := UserAccountKey("alice")
	for range 4 {
		try(t, r, acct, "192.0.2.1", false)
	}
	clk.Advance(10 * time.Minute) // those four fall out of the window
	for i := range 4 {
		if _, res := try(t, r, acct, "192.0.2.1", false); res.Lockout() {
			t.Fatalf("failure %d in a new window banned; want old failures forgotten", i+1)
		}
	}
	if _, res := try(t, r, acct, "192.0.2.1", false); !res.AccountLocked {
		t.Error("fifth failure within the window did not ban")
	}
}

func TestRegulationSuccessClearsAccount(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{})
	ctx := context.Background()
	acct := UserAccountKey("alice")
	for range 4 {
		try(t, r, acct, "192.0.2.1", false)
	}
	// A correct password that leaves the session pending does not clear
	// the count, so a stolen password cannot reset second-factor guesses.
	a, _ := r.Begin(ctx, acct, "192.0.2.1")
	if err := a.Succeed(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, res := try(t, r, acct, "192.0.2.1", false); !res.AccountLocked {
		t.Fatal("fifth failure after a pending success did not ban")
	}
	if err := r.Unlock(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		try(t, r, acct, "192.0.2.1", false)
	}
	// A complete sign-in clears it.
	try(t, r, acct, "192.0.2.1", true)
	for i := range 4 {
		if _, res := try(t, r, acct, "192.0.2.1", false); res.Lockout() {
			t.Fatalf("failure %d after a sign-in banned; want the count cleared", i+1)
		}
	}
}

func TestRegulationUnlock(t *testing.T) {
	r, _, st := newTestRegulator(t, RegulationConfig{})
	ctx := context.Background()
	acct := UserAccountKey("alice")
	for range 5 {
		try(t, r, acct, "192.0.2.1", false)
	}
	if allowed, _ := try(t, r, acct, "192.0.2.1", true); allowed {
		t.Fatal("not banned after five failures")
	}
	if err := r.Unlock(ctx, "alice"); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if got, _ := r.AccountBan(ctx, "alice"); !got.IsZero() {
		t.Errorf("AccountBan after Unlock = %v; want zero", got)
	}
	if got, _ := st.RegulationState(ctx, acct); !got.IsZero() {
		t.Errorf("state after Unlock = %+v; want none", got)
	}
	if allowed, _ := try(t, r, acct, "192.0.2.1", true); !allowed {
		t.Error("correct password after Unlock was refused")
	}
}

// Password re-checks are counted per session: a thief's wrong guesses in
// a stolen session ban that session's re-checks, not the owner's in
// another, and an unlock lifts every session's ban.
func TestRegulationReauthBansOneSession(t *testing.T) {
	r, _, st := newTestRegulator(t, RegulationConfig{})
	ctx := context.Background()
	stolen, own := UserReauthKey("alice", "s-stolen"), UserReauthKey("alice", "s-own")
	for i := range 5 {
		try(t, r, stolen, fmt.Sprint("198.51.100.", i+1), false)
	}
	if allowed, _ := try(t, r, stolen, "198.51.100.9", true); allowed {
		t.Fatal("the stolen session's re-checks are not banned after five failures")
	}
	if allowed, _ := try(t, r, own, "192.0.2.1", true); !allowed {
		t.Error("the owner's re-check in another session was refused by the thief's failures")
	}
	until, err := r.ReauthBan(ctx, "alice")
	if err != nil || until.IsZero() {
		t.Errorf("ReauthBan = %v, %v; want the stolen session's ban", until, err)
	}
	if until, _ := r.ReauthBan(ctx, "bob"); !until.IsZero() {
		t.Errorf("ReauthBan of another user = %v; want none", until)
	}
	// alice2's keys share alice's prefix but for the separator.
	try(t, r, UserReauthKey("alice2", "s"), "192.0.2.2", false)
	if err := r.Unlock(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if until, _ := r.ReauthBan(ctx, "alice"); !until.IsZero() {
		t.Errorf("ReauthBan after Unlock = %v; want none", until)
	}
	if s, _ := st.RegulationState(ctx, stolen); !s.IsZero() {
		t.Errorf("the stolen session's state after Unlock = %+v; want none", s)
	}
	if s, _ := st.RegulationState(ctx, UserReauthKey("alice2", "s")); s.IsZero() {
		t.Error("alice's unlock cleared alice2's re-check failures")
	}
}

func TestRegulationStopsSprayingFromOneAddress(t *testing.T) {
	r, clk, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 5})
	lockouts := 0
	for i := 1; i <= 20; i++ {
		allowed, res := try(t, r, UserAccountKey(fmt.Sprint("victim", i)), "203.0.113.9", false)
		if !allowed {
			t.Fatalf("attempt %d refused; want 20 tries before the address ban", i)
		}
		if res.AccountLocked {
			t.Errorf("attempt %d banned an account after one failure", i)
		}
		if res.IPLocked {
			lockouts++
			if i != 20 {
				t.Errorf("address banned at attempt %d; want at 20", i)
			}
		}
		clk.Advance(10 * time.Second)
	}
	if lockouts != 1 {
		t.Errorf("address lockout reported %d times; want 1", lockouts)
	}
	// A fresh account, even with its right password, from that address: refused.
	if allowed, _ := try(t, r, UserAccountKey("carol"), "203.0.113.9", true); allowed {
		t.Error("sign-in from a banned address was allowed")
	}
	// The same accounts from elsewhere are fine.
	if allowed, _ := try(t, r, UserAccountKey("victim1"), "198.51.100.1", true); !allowed {
		t.Error("sign-in from another address was refused")
	}
}

func TestRegulationIPv6CountsBySlash64(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 1, MaxRetriesPerIP: 3})
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("2001:db8:1:2::%x", i) // a new address in the same /64 each time
		if _, res := try(t, r, UserAccountKey(fmt.Sprint("u", i)), ip, false); res.IPLocked != (i == 3) {
			t.Errorf("attempt %d from %s: IPLocked = %v", i, ip, res.IPLocked)
		}
	}
	if allowed, _ := try(t, r, UserAccountKey("other"), "2001:db8:1:2:ffff::1", true); allowed {
		t.Error("another address of the banned /64 was allowed")
	}
	if allowed, _ := try(t, r, UserAccountKey("other"), "2001:db8:1:3::1", true); !allowed {
		t.Error("an address of the next /64 was refused")
	}
}

func TestIPKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "ip:192.0.2.1"},
		{" 192.0.2.1 ", "ip:192.0.2.1"},
		{"::ffff:192.0.2.1", "ip:192.0.2.1"},
		{"192.0.2.1:4431", "ip:192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", "ip:2001:db8:1:2::/64"},
		{"[2001:db8:1:2::9]:443", "ip:2001:db8:1:2::/64"},
		{"fe80::1%eth0", "ip:fe80::/64"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := ipKey(tt.in); got != tt.want {
			t.Errorf("ipKey(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	if got := ipKey("not an address"); got == "" || got == ipKey("another") {
		t.Errorf("ipKey of junk = %q; want a stable, distinct key", got)
	}
}

func TestRegulationDelay(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{})
	want := []time.Duration{0, 0, 0, 500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
	for n, w := range want {
		if got := r.Delay(n); got != w {
			t.Errorf("Delay(%d) = %v; want %v", n, got, w)
		}
	}
	if got := r.Delay(1000); got != MaxFailureDelay {
		t.Errorf("Delay(1000) = %v; want %v", got, MaxFailureDelay)
	}
	// Fail reports the delay for the address's failures so far, scaled
	// to the account's threshold (20 to 5), on whichever accounts: the
	// longest from the failure that bans the address on.
	for i := 1; i <= 21; i++ {
		_, res := try(t, r, UserAccountKey(fmt.Sprint("user", i)), "192.0.2.1", false)
		want := r.Delay(i * 5 / 20)
		if i >= 20 {
			want = MaxFailureDelay
		}
		if res.Delay != want {
			t.Errorf("address failure %d: Delay = %v; want %v", i, res.Delay, want)
		}
	}
	// With no address known, the account's failures set it.
	acct := UserAccountKey("alice")
	for i := 1; i <= 4; i++ {
		_, res := try(t, r, acct, "", false)
		if res.Delay != r.Delay(i) {
			t.Errorf("failure %d: Delay = %v; want %v", i, res.Delay, r.Delay(i))
		}
	}
	if _, res := try(t, r, acct, "", false); res.Delay != MaxFailureDelay {
		t.Errorf("banning failure: Delay = %v; want %v", res.Delay, MaxFailureDelay)
	}
}

// TestRegulationDelayTellsNothingOfTheAccount: a failure's delay is the
// same whether the account tried is fresh, carries others' failures, or
// is banned, so a prober cannot time the answer to learn which accounts
// are banned (or how close to it they are).
func TestRegulationDelayTellsNothingOfTheAccount(t *testing.T) {
	r, clk, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 5, MaxRetriesPerIP: 20})
	// Others' failures: banned's five ban it, worn's four do not.
	for i := range 5 {
		try(t, r, UserAccountKey("banned"), fmt.Sprint("198.51.100.", i+1), false)
	}
	for i := range 4 {
		try(t, r, UserAccountKey("worn"), fmt.Sprint("198.51.100.", i+10), false)
	}
	clk.Advance(time.Second)
	delays := func(account, ip string) []time.Duration {
		var ds []time.Duration
		for range 22 {
			_, res := try(t, r, account, ip, false)
			ds = append(ds, res.Delay)
		}
		return ds
	}
	fresh := delays(UserAccountKey("fresh"), "203.0.113.1")
	for _, tc := range []struct{ account, ip string }{
		{UserAccountKey("banned"), "203.0.113.2"},
		{UserAccountKey("worn"), "203.0.113.3"},
	} {
		if got := delays(tc.account, tc.ip); !slices.Equal(got, fresh) {
			t.Errorf("delays at %s = %v; want those at a fresh account %v", tc.account, got, fresh)
		}
	}
	// The delay still grows with the address's failures.
	if fresh[10] != 0 || fresh[11] != 500*time.Millisecond || fresh[19] != MaxFailureDelay || fresh[21] != MaxFailureDelay {
		t.Errorf("delays from one address = %v; want none up to its 11th failure, 0.5 s at its 12th, the longest from its ban", fresh)
	}
}

// TestRegulationParallelGuessing: attempts in flight count, so many
// parallel guesses get no more tries than serial ones, and the ban is
// reported once.
func TestRegulationParallelGuessing(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{})
	ctx := context.Background()
	acct := UserAccountKey("alice")
	const n = 50
	attempts := make([]*Attempt, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := r.Begin(ctx, acct, fmt.Sprintf("198.51.100.%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			attempts[i] = a
		})
	}
	wg.Wait()
	allowed := 0
	for _, a := range attempts {
		if a != nil && a.Allowed() {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("%d of %d parallel attempts allowed; want MaxRetries = 5", allowed, n)
	}
	var lockouts atomic.Int32
	for _, a := range attempts {
		wg.Go(func() {
			res, err := a.Fail(ctx)
			if err != nil {
				t.Error(err)
			}
			if res.Lockout() {
				lockouts.Add(1)
			}
		})
	}
	wg.Wait()
	if got := lockouts.Load(); got != 1 {
		t.Errorf("lockout reported %d times; want 1", got)
	}
}

// Sign-ins in flight from one address (an office behind one NAT
// address) fill its quota: the next, to any account, is crowded out,
// uncounted and without a ban, and gets in once one ends. Crowded is
// the address's alone: a banned account and a free one are answered
// alike from a full address, and an account's own quota, or a ban of
// the address, is never called crowded.
func TestRegulationCrowdedAddress(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 2, MaxRetriesPerIP: 3})
	ctx := context.Background()
	const ip = "192.0.2.7"
	flying := beginFrom(t, r, ip, "user", 3)
	a, err := r.Begin(ctx, UserAccountKey("user9"), ip)
	if err != nil || a.Allowed() || !a.Crowded() || !a.BannedUntil().IsZero() {
		t.Fatalf("a fourth at once: %v, allowed %v, crowded %v; want crowded out, no ban", err, a.Allowed(), a.Crowded())
	}
	if _, err := (&Service{}).CheckPasswordFor(ctx, a, "user9@example.com", "pw"); !errors.Is(err, ErrCrowded) || !errors.Is(err, ErrBusy) {
		t.Errorf("CheckPasswordFor a crowded attempt = %v; want ErrCrowded, an ErrBusy", err)
	}
	if err := a.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	// An account banned by failures from elsewhere looks the same from
	// the full address as one that is not.
	for range 2 {
		try(t, r, UserAccountKey("victim"), "198.51.100.77", false)
	}
	for _, acct := range []string{"victim", "bystander"} {
		if a, _ := r.Begin(ctx, UserAccountKey(acct), ip); a.Allowed() || !a.Crowded() {
			t.Errorf("%s from the full address: allowed %v, crowded %v; want crowded, whatever the account's state", acct, a.Allowed(), a.Crowded())
		}
	}
	if err := flying[0].Succeed(ctx, true); err != nil {
		t.Fatal(err)
	}
	if a, err := r.Begin(ctx, UserAccountKey("user9"), ip); err != nil || !a.Allowed() {
		t.Errorf("after one ended: %v, allowed %v; want allowed (the crowded one was not counted)", err, a.Allowed())
	}

	// The account's quota: refused, not crowded.
	for range 2 {
		if a, _ := r.Begin(ctx, UserAccountKey("bob"), "198.51.100.1"); !a.Allowed() {
			t.Fatal("bob's first attempts refused")
		}
	}
	if a, _ := r.Begin(ctx, UserAccountKey("bob"), "198.51.100.2"); a.Allowed() || a.Crowded() {
		t.Errorf("bob's third in flight: allowed %v, crowded %v; want refused, not crowded", a.Allowed(), a.Crowded())
	}
	// A banned address: refused, not crowded.
	for range 3 {
		try(t, r, UserAccountKey("carol"+fmt.Sprint(time.Now().UnixNano())), "203.0.113.9", false)
	}
	if a, _ := r.Begin(ctx, UserAccountKey("dave"), "203.0.113.9"); a.Allowed() || a.Crowded() || a.BannedUntil().IsZero() {
		t.Errorf("from a banned address: allowed %v, crowded %v, until %v; want refused by the ban", a.Allowed(), a.Crowded(), a.BannedUntil())
	}
}

func TestRegulationRefusedAttemptNeverSucceeds(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 1})
	ctx := context.Background()
	try(t, r, UserAccountKey("alice"), "", false)
	a, err := r.Begin(ctx, UserAccountKey("alice"), "")
	if err != nil {
		t.Fatal(err)
	}
	if a.Allowed() {
		t.Fatal("attempt during a ban allowed")
	}
	if err := a.Succeed(ctx, true); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("Succeed on a refused attempt = %v; want ErrInvalidCredentials", err)
	}
	if _, err := r.Begin(ctx, "", "192.0.2.1"); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("Begin without an account = %v; want ErrInvalidInput", err)
	}
}

func TestRegulationPrune(t *testing.T) {
	r, clk, st := newTestRegulator(t, RegulationConfig{})
	ctx := context.Background()
	for range 5 {
		try(t, r, UserAccountKey("alice"), "192.0.2.1", false) // bans alice
	}
	try(t, r, UserAccountKey("bob"), "192.0.2.2", false)
	if got := st.len(); got != 4 {
		t.Fatalf("%d states; want 4 (two accounts, two addresses)", got)
	}
	clk.Advance(10*time.Minute + time.Second) // bob's failure is over, alice's ban is not
	if n, err := r.Prune(ctx); err != nil || n != 3 {
		t.Errorf("Prune = %d, %v; want 3 (bob and both addresses)", n, err)
	}
	if got, _ := r.AccountBan(ctx, "alice"); got.IsZero() {
		t.Error("Prune lifted a running ban")
	}
	clk.Advance(5 * time.Minute)
	if n, err := r.Prune(ctx); err != nil || n != 1 {
		t.Errorf("Prune after the ban = %d, %v; want 1", n, err)
	}
}

// RefusedBy names the key that refused an attempt: the address when it
// is banned, whatever the account; the account otherwise; none when
// allowed.
func TestRegulationRefusedBy(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 2, MaxRetriesPerIP: 3})
	ctx := context.Background()
	refusedBy := func(account, ip string) string {
		t.Helper()
		a, err := r.Begin(ctx, account, ip)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Fail(ctx); err != nil {
			t.Fatal(err)
		}
		return a.RefusedBy()
	}
	alice, bob := UserAccountKey("alice"), UserAccountKey("bob")
	for range 2 {
		if got := refusedBy(alice, "192.0.2.1"); got != "" {
			t.Fatalf("allowed attempt: RefusedBy %q; want none", got)
		}
	}
	if got := refusedBy(alice, "198.51.100.7"); got != alice {
		t.Errorf("banned account from a fresh address: RefusedBy %q; want the account %q", got, alice)
	}
	if got := refusedBy(bob, "192.0.2.1"); got != "" { // the address's third failure bans it
		t.Fatalf("bob's first attempt: RefusedBy %q; want none", got)
	}
	for _, acct := range []string{alice, bob, UserAccountKey("carol")} {
		if got, want := refusedBy(acct, "192.0.2.1"), ipKey("192.0.2.1"); got != want {
			t.Errorf("%s from the banned address: RefusedBy %q; want the address %q", acct, got, want)
		}
	}
	if got := refusedBy(alice, ""); got != alice {
		t.Errorf("banned account, no address: RefusedBy %q; want %q", got, alice)
	}
}

// Only a known user's password keys name a user: a typed string's
// hashed key, or a user id typed as the email, names none.
func TestAccountKeyUser(t *testing.T) {
	for key, want := range map[string]string{
		UserAccountKey("u1"): "u1", UserReauthKey("u1", "s1"): "u1",
		UserMFAKey("u1"): "", "email:abc": "", "u1": "",
	} {
		if got, ok := AccountKeyUser(key); got != want || ok != (want != "") {
			t.Errorf("AccountKeyUser(%q) = %q, %t; want %q", key, got, ok, want)
		}
	}
}

// Attempts at a banned account are still checked (a wrong password's
// time), so they count for their address: one address cannot go on
// hashing at an account its own first failures banned. Its quota
// reached, the address is banned, says so once, and refuses (checking
// nothing) from then on, while other addresses are untouched.
func TestRegulationRefusedByAccountCountsForAddress(t *testing.T) {
	r, clk, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 5, MaxRetriesPerIP: 20})
	ctx := context.Background()
	acct := UserAccountKey("ghost")
	const ip = "203.0.113.40"
	for range 5 {
		try(t, r, acct, ip, false)
	}
	lockouts := 0
	for i := 6; i <= 20; i++ {
		a, err := r.Begin(ctx, acct, ip)
		if err != nil {
			t.Fatal(err)
		}
		if a.Allowed() || a.AddressRefused() {
			t.Fatalf("attempt %d: allowed %v, refused by the address %v; want refused by the account alone", i, a.Allowed(), a.AddressRefused())
		}
		res, err := a.Fail(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.IPLocked {
			lockouts++
			if i != 20 {
				t.Errorf("address banned at attempt %d; want at 20", i)
			}
		}
		want := r.Delay(i * 5 / 20)
		if i == 20 {
			want = MaxFailureDelay
		}
		if res.AccountLocked || res.Delay != want {
			t.Errorf("attempt %d: %+v; want the address's delay %v and no new account ban", i, res, want)
		}
		clk.Advance(time.Second)
	}
	if lockouts != 1 {
		t.Fatalf("address lockout reported %d times; want once", lockouts)
	}
	a, err := r.Begin(ctx, UserAccountKey("someone-else"), ip)
	if err != nil {
		t.Fatal(err)
	}
	if a.Allowed() || !a.AddressRefused() {
		t.Errorf("after its quota of attempts at a banned account, the address is not banned (allowed %v)", a.Allowed())
	}
	if allowed, _ := try(t, r, UserAccountKey("someone-else"), "198.51.100.40", true); !allowed {
		t.Error("another address was refused")
	}
}

// Only attempts that are still checked while their account is banned
// count for the address: a banned second factor checks no code, so its
// retries cost nothing and do not ban the address (nor, through it, the
// sign-ins of everyone behind the same NAT). And an attempt abandoned
// before its check (every hashing slot busy) takes its count back.
func TestRegulationAddressCountsOnlyCheckedRefusals(t *testing.T) {
	r, _, st := newTestRegulator(t, RegulationConfig{MaxRetries: 5, MaxRetriesPerIP: 20})
	ctx := context.Background()
	const ip = "203.0.113.41"
	mfa := UserMFAKey("u1")
	for range 5 {
		try(t, r, mfa, ip, false)
	}
	for range 30 {
		if allowed, res := try(t, r, mfa, ip, false); allowed || res.IPLocked {
			t.Fatalf("a refused code: allowed %v, address banned %v; want refused, the address untouched", allowed, res.IPLocked)
		}
	}
	addrCount := func() int {
		t.Helper()
		s, err := st.RegulationState(ctx, ipKey(ip))
		if err != nil {
			t.Fatal(err)
		}
		return len(s.Attempts)
	}
	if n := addrCount(); n != 5 {
		t.Errorf("the address counts %d attempts; want the 5 codes that were checked", n)
	}

	acct := UserAccountKey("u1")
	for range 5 {
		try(t, r, acct, ip, false)
	}
	before := addrCount()
	a, err := r.Begin(ctx, acct, ip)
	if err != nil {
		t.Fatal(err)
	}
	if a.Allowed() || a.AddressRefused() {
		t.Fatalf("want the attempt refused by the account alone")
	}
	if n := addrCount(); n != before+1 {
		t.Fatalf("the address counts %d; want %d with the refused password attempt", n, before+1)
	}
	if err := a.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if n := addrCount(); n != before {
		t.Errorf("the address counts %d after the attempt was abandoned; want %d again", n, before)
	}
}

// AddressBans lists the banned client addresses, as AddressKey reads
// them back; an address with failures but no ban, an ended ban and the
// accounts' bans are not listed.
func TestAddressBans(t *testing.T) {
	r, clk, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 2, MaxRetriesPerIP: 3})
	for i := range 3 { // three accounts from one address: the address's ban
		try(t, r, fmt.Sprint("acct:", i), "192.0.2.7", false)
	}
	for i := range 3 {
		try(t, r, fmt.Sprint("other:", i), "2001:db8:1:2:3::9", false)
	}
	try(t, r, "acct:x", "198.51.100.1", false) // failures, no ban
	bans, err := r.AddressBans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []AddressBan{
		{Address: "192.0.2.7", Until: clk.Now().Add(15 * time.Minute)},
		{Address: "2001:db8:1:2::/64", Until: clk.Now().Add(15 * time.Minute)},
	}
	if !slices.EqualFunc(bans, want, func(a, b AddressBan) bool { return a.Address == b.Address && a.Until.Equal(b.Until) }) {
		t.Errorf("AddressBans = %+v; want %+v", bans, want)
	}
	for _, b := range want {
		if key, err := AddressKey(b.Address); err != nil || key != "ip:"+b.Address {
			t.Errorf("AddressKey(%q) = %q, %v; want the listed address's key", b.Address, key, err)
		}
	}
	for in, want := range map[string]string{
		" 192.0.2.7 ": "ip:192.0.2.7", "::ffff:192.0.2.7": "ip:192.0.2.7", "2001:db8:1:2:ffff::1": "ip:2001:db8:1:2::/64",
		"?abc": "ip:?abc",
	} {
		if key, err := AddressKey(in); err != nil || key != want {
			t.Errorf("AddressKey(%q) = %q, %v; want %q", in, key, err, want)
		}
	}
	for _, bad := range []string{"", "?", "example.com", "192.0.2.0/24", "2001:db8::/48", "fe80::1%eth0", "192.0.2.7:80"} {
		if key, err := AddressKey(bad); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("AddressKey(%q) = %q, %v; want ErrInvalidInput", bad, key, err)
		}
	}
	clk.Advance(16 * time.Minute)
	if bans, err := r.AddressBans(context.Background()); err != nil || len(bans) != 0 {
		t.Errorf("AddressBans after the bans ended = %+v, %v; want none", bans, err)
	}
}

// Sign-ins under way from one address (an office at nine, a retry
// storm) that then pass are no failures: one typo among them does not
// ban the address, whose failures alone must reach the limit; they do,
// as those under way fail, exactly once.
func TestRegulationInFlightIsNoFailure(t *testing.T) {
	r, _, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 5, MaxRetriesPerIP: 20})
	ctx := context.Background()
	const ip = "192.0.2.50"
	flying := beginFrom(t, r, ip, "staff", 19)
	if allowed, res := try(t, r, UserAccountKey("typo"), ip, false); !allowed || res.IPLocked {
		t.Fatalf("a typo with 19 sign-ins under way: allowed %v, address banned %v; want allowed, no ban", allowed, res.IPLocked)
	}
	bans := 0
	for i, a := range flying {
		res, err := a.Fail(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.IPLocked {
			bans++
			if i != len(flying)-1 {
				t.Errorf("address banned at failure %d of those under way; want at the last, the 20th failure", i+1)
			}
		}
	}
	if bans != 1 {
		t.Errorf("address banned %d times; want once", bans)
	}
}

// beginFrom begins n sign-ins from ip, to the accounts <name>0, <name>1,
// …, each of which must be allowed and not crowded out, and returns them
// under way.
func beginFrom(t *testing.T, r *Regulator, ip, name string, n int) []*Attempt {
	t.Helper()
	var flying []*Attempt
	for i := range n {
		a, err := r.Begin(context.Background(), UserAccountKey(fmt.Sprintf("%s%d", name, i)), ip)
		if err != nil || !a.Allowed() || a.Crowded() {
			t.Fatalf("attempt %d: %v, allowed %v, crowded %v; want allowed", i, err, a != nil && a.Allowed(), a != nil && a.Crowded())
		}
		flying = append(flying, a)
	}
	return flying
}
