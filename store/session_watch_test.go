package store

import (
	"errors"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
)

// told reports whether w was told of a change, and takes the news.
func told(w *authcore.Watch) bool {
	select {
	case <-w.C:
		return true
	default:
		return false
	}
}

// A watch is told when its session ends or its user changes, and only
// then: not for another session's end, nor another user's change.
func TestWatchIsToldOfItsSessionsChanges(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	alice, bob := e.user(t, "alice@example.com"), e.user(t, "bob@example.com")
	_, a1 := e.login(t, alice)
	_, a2 := e.login(t, alice)
	_, b1 := e.login(t, bob)
	wa1, wa2, wb1 := e.svc.WatchSession(a1.ID, alice.ID), e.svc.WatchSession(a2.ID, alice.ID), e.svc.WatchSession(b1.ID, bob.ID)
	defer wa2.Stop()
	defer wb1.Stop()
	quiet := func(step string, ws ...*authcore.Watch) {
		t.Helper()
		for _, w := range ws {
			if told(w) {
				t.Errorf("after %s, a watch of another session was told", step)
			}
		}
	}

	if ended, err := e.svc.EndSession(e.ctx, a1.ID); err != nil || !ended {
		t.Fatalf("EndSession: %v, %v", ended, err)
	}
	if !told(wa1) {
		t.Error("ending a session did not tell its watch")
	}
	quiet("ending alice's first session", wa2, wb1)

	if _, err := e.svc.UpdateUser(e.ctx, alice.ID, func(u *authcore.User) error { u.Groups = []string{"staff"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if !told(wa2) {
		t.Error("a change to the user did not tell the watch of the user's session")
	}
	quiet("a change to alice", wb1)

	if _, err := e.svc.RevokeUserSessions(e.ctx, bob.ID); err != nil {
		t.Fatal(err)
	}
	if !told(wb1) {
		t.Error("ending all of bob's sessions did not tell the watch of his session")
	}
	quiet("ending bob's sessions", wa2)

	// Many changes unread are one: the channel never blocks a change.
	for range 3 {
		e.svc.DropCached(alice.ID)
	}
	if !told(wa2) || told(wa2) {
		t.Error("three changes unread: want one message, then none")
	}

	// A Service being replaced wakes every watch.
	e.svc.WakeWatches()
	if !told(wa1) || !told(wa2) || !told(wb1) {
		t.Error("WakeWatches did not tell every watch")
	}

	// A stopped watch is told nothing; stopping twice is harmless.
	wa1.Stop()
	wa2.Stop()
	wa2.Stop()
	e.svc.DropCached(alice.ID)
	if told(wa2) {
		t.Error("a stopped watch was told of a change")
	}
}

// Recheck is no use of the session: rechecks alone let it idle out,
// from its last use.
func TestRecheckIsNoUse(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute})
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)
	recheck := func(at time.Duration) error {
		e.clk.Set(authT0.Add(at))
		_, err := e.svc.Recheck(e.ctx, token, "", false, e.clk.Now())
		return err
	}
	for _, at := range []time.Duration{time.Minute, 10 * time.Minute, 29 * time.Minute} {
		if err := recheck(at); err != nil {
			t.Fatalf("recheck at %v: %v", at, err)
		}
	}
	if err := recheck(30 * time.Minute); !errors.Is(err, authcore.ErrNoSession) {
		t.Fatalf("recheck at 30m idle, after rechecks only: %v; want ErrNoSession", err)
	}
	e.goneFromStore(t, sess.ID)

	// A use between rechecks counts from when it came.
	e.clk.Set(authT0.Add(time.Hour))
	token, _ = e.login(t, u)
	e.clk.Set(authT0.Add(time.Hour + 20*time.Minute))
	e.mustAuth(t, token)
	if err := recheck(time.Hour + 49*time.Minute); err != nil {
		t.Fatalf("recheck 29m after a use: %v", err)
	}
	if err := recheck(time.Hour + 50*time.Minute); !errors.Is(err, authcore.ErrNoSession) {
		t.Fatalf("recheck 30m after a use: %v; want ErrNoSession", err)
	}
}

// Recheck is of the session on its own site: a connection to another
// host is ErrOtherHost.
func TestRecheckKeepsToTheSessionsHost(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	token, _, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{Host: "app.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	now := e.clk.Now()
	if _, err := e.svc.Recheck(e.ctx, token, "app.example.com:443", false, now); err != nil {
		t.Errorf("on its host: %v", err)
	}
	if _, err := e.svc.Recheck(e.ctx, token, "admin.example.com", false, now); !errors.Is(err, authcore.ErrOtherHost) {
		t.Errorf("on another host: %v; want ErrOtherHost", err)
	}
}

// Two Services on one store (the runtimes of two configs, side by side
// at a reload): a session one ends, or a user it changes, is dropped
// from the other's cache at once and told to its watches; without the
// peers, the other goes on trusting its cached copy.
func TestPeersDropEachOthersCopies(t *testing.T) {
	st := openAuthBolt(t)
	clk := clock.NewFake(authT0)
	oldSvc := newAuthEnvOn(t, st, clk, authcore.Config{})
	newSvc := newAuthEnvOn(t, st, clk, authcore.Config{})
	u := oldSvc.user(t, "alice@example.com")
	token, sess := oldSvc.login(t, u)
	newSvc.mustAuth(t, token) // cached by the new one

	// Apart, the new Service trusts its copy after the old ended it.
	if ended, err := oldSvc.svc.EndSession(oldSvc.ctx, sess.ID); err != nil || !ended {
		t.Fatalf("EndSession: %v %v", ended, err)
	}
	if _, err := newSvc.svc.Authenticate(newSvc.ctx, token); err != nil {
		t.Fatalf("control: without peers the cached copy should still pass (CacheTTL); got %v", err)
	}

	var peers authcore.Peers
	oldSvc.svc.Join(&peers)
	newSvc.svc.Join(&peers)
	token, sess = oldSvc.login(t, u)
	newSvc.mustAuth(t, token)
	w := newSvc.svc.WatchSession(sess.ID, u.ID)
	defer w.Stop()
	if ended, err := oldSvc.svc.EndSession(oldSvc.ctx, sess.ID); err != nil || !ended {
		t.Fatalf("EndSession: %v %v", ended, err)
	}
	if !told(w) {
		t.Error("a session ended by a peer was not told to this Service's watch")
	}
	newSvc.refused(t, token)

	token, sess = oldSvc.login(t, u)
	newSvc.mustAuth(t, token)
	w2 := newSvc.svc.WatchSession(sess.ID, u.ID)
	defer w2.Stop()
	if _, err := oldSvc.svc.SetDisabled(oldSvc.ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	if !told(w2) {
		t.Error("a user changed by a peer was not told to this Service's watch")
	}
	newSvc.refused(t, token)

	// One that left is told nothing more.
	if _, err := oldSvc.svc.SetDisabled(oldSvc.ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}
	told(w2)
	newSvc.svc.Leave()
	newSvc.svc.Leave() // twice is harmless
	oldSvc.svc.DropCached(u.ID)
	if told(w2) {
		t.Error("a Service that left its peers was told of a peer's change")
	}

	// One that left still tells the others: a request that began before
	// its app stopped may end a session through it.
	newSvc.svc.Join(&peers)
	oldSvc.svc.Leave()
	token, sess = newSvc.login(t, newSvc.user(t, "bob@example.com"))
	newSvc.mustAuth(t, token)
	if ended, err := oldSvc.svc.EndSession(oldSvc.ctx, sess.ID); err != nil || !ended {
		t.Fatalf("EndSession through the one that left: %v %v", ended, err)
	}
	newSvc.refused(t, token)
}
