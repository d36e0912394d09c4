package store

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// pausingStore holds one store call (DeleteSession or ReplaceSession) at its
// start until released, so a test can run something in the window.
type pausingStore struct {
	*Bolt
	pauseDelete, pauseReplace bool
	entered, release          chan struct{}
}

func newPausingStore(b *Bolt) *pausingStore {
	return &pausingStore{Bolt: b, entered: make(chan struct{}), release: make(chan struct{})}
}

func (s *pausingStore) pause() {
	close(s.entered)
	<-s.release
}

func (s *pausingStore) DeleteSession(ctx context.Context, id authcore.SessionID) error {
	if s.pauseDelete {
		s.pause()
	}
	return s.Bolt.DeleteSession(ctx, id)
}

func (s *pausingStore) ReplaceSession(ctx context.Context, old authcore.SessionID, sess *authcore.Session) error {
	if s.pauseReplace {
		s.pause()
	}
	return s.Bolt.ReplaceSession(ctx, old, sess)
}

// A sign-out of a pending session that lands while its second factor is
// being completed wins: no signed-in session comes out of it.
func TestCompleteSecondFactorLosesToConcurrentLogout(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	ps := newPausingStore(e.st)
	ps.pauseReplace = true
	svc := e.serviceOn(t, ps)
	u := e.user(t, "alice@example.com")
	_, pending, err := svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		token string
		err   error
	}
	done := make(chan result)
	go func() {
		token, _, err := svc.CompleteSecondFactor(e.ctx, pending.ID, authcore.AMROTP, false)
		done <- result{token, err}
	}()
	<-ps.entered // the pending session was read, the new one not yet stored
	if _, err := svc.EndSession(e.ctx, pending.ID); err != nil {
		t.Fatal(err)
	}
	close(ps.release)
	r := <-done
	if !errors.Is(r.err, authcore.ErrNoSession) {
		t.Errorf("CompleteSecondFactor after a concurrent logout = %v; want ErrNoSession", r.err)
	}
	if ss, _ := e.st.UserSessions(e.ctx, u.ID); len(ss) != 0 {
		t.Errorf("user has %d sessions after logging out during completion; want none", len(ss))
	}
}

// serviceOn is the test Service on a wrapped store, sharing e's clock and
// sealing key.
func (e *authEnv) serviceOn(t *testing.T, st authcore.Store) *authcore.Service {
	t.Helper()
	svc, err := authcore.NewService(slog.New(slog.DiscardHandler), e.clk, st, e.box, authcore.Config{Argon2: authCheapArgon2})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// A request that reads a session while its logout is being committed must
// not leave it cached: the session would keep working for the cache TTL.
func TestEndSessionNotRecachedByConcurrentLoad(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	ps := newPausingStore(e.st)
	ps.pauseDelete = true
	svc := e.serviceOn(t, ps)
	u := e.user(t, "alice@example.com")
	token, sess, err := svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := svc.EndSession(e.ctx, sess.ID); done <- err }()
	<-ps.entered // the cached copy is gone, the delete not yet committed
	if _, err := svc.Authenticate(e.ctx, token); err != nil {
		t.Fatalf("Authenticate while the delete is pending: %v", err)
	}
	close(ps.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p, err := svc.Authenticate(e.ctx, token); err == nil {
		t.Errorf("after EndSession the session still works (%s): it was cached again during the delete", p.SessionID)
	}
}

// A sign-in whose password was checked just before the password changed
// must not get a session that outlives the change: SetPassword ends every
// session, including one stored a moment later from the old check.
func TestSessionFromCredentialCheckedBeforePasswordChange(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	checked, err := e.svc.CheckPassword(e.ctx, "alice@example.com", authPassword)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetPassword(e.ctx, u.ID, "a brand new password"); err != nil {
		t.Fatal(err)
	}
	token, _ := e.login(t, checked)
	e.refused(t, token)

	// A sign-in after the change, with the new password, works.
	fresh, err := e.svc.CheckPassword(e.ctx, "alice@example.com", "a brand new password")
	if err != nil {
		t.Fatal(err)
	}
	token, _ = e.login(t, fresh)
	e.mustAuth(t, token)
}

// Completing a second factor replaces the session: if every session of the
// user is revoked after the old one was read and before the new one is
// written, no session survives.
func TestSecondFactorCompletionRacingRevocation(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	u, err := e.svc.UpdateUser(e.ctx, u.ID, func(u *authcore.User) error { u.SecondFactor = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	_, pending := e.login(t, u)
	if !pending.Pending {
		t.Fatal("a password-only session of a user with a second factor is not pending")
	}
	ps := newPausingStore(e.st)
	ps.pauseReplace = true
	svc := e.serviceOn(t, ps)
	done := make(chan error)
	go func() {
		_, _, err := svc.CompleteSecondFactor(e.ctx, pending.ID, authcore.AMROTP, false)
		done <- err
	}()
	<-ps.entered // old session read, new one not yet written
	if _, err := e.svc.RevokeUserSessions(e.ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	close(ps.release)
	if err := <-done; !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("CompleteSecondFactor after the revocation = %v; want ErrNoSession", err)
	}
	if ss, _ := e.st.UserSessions(e.ctx, u.ID); len(ss) != 0 {
		t.Errorf("user has %d sessions after the revocation; want none", len(ss))
	}
}

// The epoch only moves forward: an update whose fn writes back a copy of
// the user read before a revocation does not take the revocation back.
func TestSessionEpochSurvivesStaleUserUpdate(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	before, err := e.st.UserByID(e.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RevokeUserSessions(e.ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.st.UpdateUser(e.ctx, u.ID, false, func(s *authcore.User) error {
		*s = *before.Clone()
		s.Name = "Alice Updated"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.st.UserByID(e.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.SessionEpoch != 1 || got.Name != "Alice Updated" {
		t.Errorf("after a stale update: epoch %d, name %q; want 1 and the new name", got.SessionEpoch, got.Name)
	}
	token, _ := e.login(t, before) // started from a pre-revocation copy
	e.refused(t, token)
}
