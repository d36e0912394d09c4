package store

import (
	"errors"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
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

// Recheck counts the client's traffic on a connection as a use of its
// session, at the time it came, if the session was alive then; a recheck
// without traffic does not keep it alive.
func TestRecheckCountsTrafficWhileAlive(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute})
	u := e.user(t, "alice@example.com")
	at := func(d time.Duration) time.Time { return authT0.Add(d) }
	recheck := func(token string, used time.Time, now time.Duration) error {
		e.clk.Set(at(now))
		_, err := e.svc.Recheck(e.ctx, token, "", used, at(now))
		return err
	}

	token, _ := e.login(t, u)
	if err := recheck(token, at(19*time.Minute), 20*time.Minute); err != nil {
		t.Fatalf("traffic at 19m, recheck at 20m: %v", err)
	}
	if err := recheck(token, time.Time{}, 48*time.Minute); err != nil {
		t.Fatalf("no traffic since 19m, recheck at 48m: %v; want alive (29m idle)", err)
	}
	if err := recheck(token, time.Time{}, 49*time.Minute); !errors.Is(err, authcore.ErrNoSession) {
		t.Fatalf("no traffic since 19m, recheck at 49m: %v; want ErrNoSession (30m idle)", err)
	}

	// Rechecks alone are no use of the session.
	e.clk.Set(at(time.Hour))
	token, _ = e.login(t, u)
	if err := recheck(token, time.Time{}, time.Hour+29*time.Minute); err != nil {
		t.Fatalf("recheck at 29m idle: %v", err)
	}
	if err := recheck(token, time.Time{}, time.Hour+30*time.Minute); !errors.Is(err, authcore.ErrNoSession) {
		t.Fatalf("recheck at 30m idle, after rechecks only: %v; want ErrNoSession", err)
	}

	// Traffic after the session idled out does not bring it back.
	e.clk.Set(at(2 * time.Hour))
	token, _ = e.login(t, u)
	if err := recheck(token, at(2*time.Hour+31*time.Minute), 2*time.Hour+32*time.Minute); !errors.Is(err, authcore.ErrNoSession) {
		t.Fatalf("traffic at 31m idle: %v; want ErrNoSession", err)
	}

	// Traffic dated later than now counts for nothing.
	e.clk.Set(at(3 * time.Hour))
	token, _ = e.login(t, u)
	if err := recheck(token, at(4*time.Hour), 3*time.Hour+time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := recheck(token, time.Time{}, 3*time.Hour+30*time.Minute); !errors.Is(err, authcore.ErrNoSession) {
		t.Fatalf("after traffic dated in the future: %v; want ErrNoSession at 30m idle", err)
	}
}

// Traffic counted by Recheck reaches the store like a request's use, so
// that a restart measures idle time from it.
func TestRecheckTrafficIsWrittenBack(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute, TouchInterval: time.Minute})
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)
	used := authT0.Add(10 * time.Minute)
	e.clk.Set(authT0.Add(11 * time.Minute))
	if _, err := e.svc.Recheck(e.ctx, token, "", used, e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.FlushTouches(e.ctx); err != nil {
		t.Fatal(err)
	}
	got, err := e.st.GetSession(e.ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.LastSeen.Equal(used) {
		t.Errorf("stored LastSeen T0+%v; want T0+10m, the traffic's time", got.LastSeen.Sub(authT0))
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
	if _, err := e.svc.Recheck(e.ctx, token, "app.example.com:443", time.Time{}, now); err != nil {
		t.Errorf("on its host: %v", err)
	}
	if _, err := e.svc.Recheck(e.ctx, token, "admin.example.com", now, now); !errors.Is(err, authcore.ErrOtherHost) {
		t.Errorf("on another host: %v; want ErrOtherHost", err)
	}
}
