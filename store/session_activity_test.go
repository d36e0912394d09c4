package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// storedLastSeen is the LastSeen the store has for id.
func (e *authEnv) storedLastSeen(t *testing.T, id authcore.SessionID) time.Time {
	t.Helper()
	s, err := e.st.GetSession(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return s.LastSeen
}

// A restart or a config reload (a new Service over the same store) judges
// idle time from the last request before it, not from the last write-back
// due by TouchInterval: a session used 29m30s ago survives idle 30m.
func TestIdleMeasuredFromLastUseAcrossRestart(t *testing.T) {
	cfg := authcore.Config{Idle: 30 * time.Minute} // TouchInterval 1m
	e := newAuthEnv(t, cfg)
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)
	e.mustAuth(t, token)
	e.clk.Advance(59 * time.Second)
	e.mustAuth(t, token) // the last use: not due for write-back yet

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { e.svc.Run(ctx) })
	cancel() // Caddy stopping the app: Run flushes on its way out
	wg.Wait()
	if got, want := e.storedLastSeen(t, sess.ID), authT0.Add(59*time.Second); !got.Equal(want) {
		t.Errorf("stored LastSeen after shutdown = T0+%v; want T0+%v", got.Sub(authT0), want.Sub(authT0))
	}

	e2 := newAuthEnvOn(t, e.st, e.clk, cfg)
	e2.clk.Advance(29*time.Minute + 30*time.Second)
	e2.mustAuth(t, token)
	e2.clk.Advance(30 * time.Minute)
	e2.refused(t, token)
}

// A session pushed out of a full cache takes its unsaved LastSeen to the
// write-back queue rather than losing it.
func TestEvictedSessionKeepsItsLastUse(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute, CacheSize: 1}) // one per shard
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)
	e.mustAuth(t, token)
	e.clk.Advance(59 * time.Second)
	e.mustAuth(t, token)
	want := authT0.Add(59 * time.Second)
	// Sessions land in one of 32 shards at random: sign in others until
	// one shares alice's shard and evicts her session.
	for i := 0; ; i++ {
		if i == 2000 {
			t.Fatalf("after %d other sessions, stored LastSeen is still T0+%v; want T0+%v", i, e.storedLastSeen(t, sess.ID).Sub(authT0), want.Sub(authT0))
		}
		other, _ := e.login(t, u)
		e.mustAuth(t, other)
		if err := e.svc.FlushTouches(e.ctx); err != nil {
			t.Fatal(err)
		}
		if e.storedLastSeen(t, sess.ID).Equal(want) {
			break
		}
	}
}

// failingTouches fails TouchSessions while fail is set.
type failingTouches struct {
	*Bolt
	fail bool
}

func (s *failingTouches) TouchSessions(ctx context.Context, seen map[authcore.SessionID]time.Time) error {
	if s.fail {
		return errors.New("disk full")
	}
	return s.Bolt.TouchSessions(ctx, seen)
}

// A write-back the store refuses stays queued for the next flush.
func TestFailedTouchFlushIsRetried(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute})
	ft := &failingTouches{Bolt: e.st}
	svc := e.serviceOn(t, ft)
	u := e.user(t, "alice@example.com")
	token, sess, err := svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(61 * time.Second)
	if _, err := svc.Authenticate(e.ctx, token); err != nil {
		t.Fatal(err)
	}
	ft.fail = true
	if err := svc.FlushTouches(e.ctx); err == nil {
		t.Fatal("FlushTouches = nil while the store fails")
	}
	ft.fail = false
	if err := svc.FlushTouches(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := e.storedLastSeen(t, sess.ID), authT0.Add(61*time.Second); !got.Equal(want) {
		t.Errorf("stored LastSeen after a failed then a good flush = T0+%v; want T0+%v", got.Sub(authT0), want.Sub(authT0))
	}
}
