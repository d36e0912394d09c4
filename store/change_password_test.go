package store

import (
	"errors"
	"testing"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// A session ended while its owner's password change is on its way (a
// logout in another tab, an admin's revoke, all sessions revoked) does
// not come back through the change, and the password stays as it was.
func TestChangePasswordNeedsALiveSession(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := authCreate(t, e.st, "ann@example.com")
	const next = "a much longer new passphrase"
	for _, how := range []string{"EndSession", "RevokeUserSessions"} {
		_, cur, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
		if err != nil {
			t.Fatal(err)
		}
		if how == "EndSession" {
			_, err = e.svc.EndSession(e.ctx, cur.ID)
		} else {
			_, err = e.svc.RevokeUserSessions(e.ctx, u.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.svc.ChangePassword(e.ctx, cur, next); !errors.Is(err, authcore.ErrNoSession) {
			t.Errorf("%s, then ChangePassword: %v; want ErrNoSession", how, err)
		}
		if ss, _ := e.st.UserSessions(e.ctx, u.ID); len(ss) != 0 {
			t.Errorf("%s: %d sessions after the refused change; want none", how, len(ss))
		}
		if _, err := e.svc.CheckPassword(e.ctx, u.Email, next); err == nil {
			t.Errorf("%s: the refused change set the new password", how)
		}
	}

	// A live session goes on as a new one; every other session ends.
	u, err := e.st.UserByID(e.ctx, u.ID) // its epoch moved on
	if err != nil {
		t.Fatal(err)
	}
	_, cur, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	otherToken, _, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	token, sess, err := e.svc.ChangePassword(e.ctx, cur, next)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := e.svc.Authenticate(e.ctx, token); err != nil || p.Session.ID != sess.ID || sess.ID == cur.ID {
		t.Errorf("the new session: %v, %v; want a live session with a new id", p, err)
	}
	if _, err := e.svc.Authenticate(e.ctx, otherToken); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("another session after the change: %v; want ErrNoSession", err)
	}
	if _, err := e.svc.CheckPassword(e.ctx, u.Email, next); err != nil {
		t.Errorf("the new password: %v", err)
	}
}

// Signing out one's other sessions ends each but cur, which goes on as a
// new session, in the transaction of its row: a failed commit ends none,
// and a cur ended meanwhile comes back as ErrNoSession with no row.
func TestEndOtherSessionsWith(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u := e.user(t, "eve@example.com")
	start := func() (string, *authcore.Session) {
		t.Helper()
		tok, s, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
		if err != nil {
			t.Fatal(err)
		}
		return tok, s
	}
	live := func(tok string) bool {
		_, err := e.svc.Authenticate(e.ctx, tok)
		return err == nil
	}
	curTok, cur := start()
	otherTok, _ := start()

	if _, _, err := e.svc.EndOtherSessionsWith(cur, w.failing("session.revoked_others")); !errors.Is(err, errCommitFailed) {
		t.Fatalf("a failing commit: %v; want it returned", err)
	}
	if !live(curTok) || !live(otherTok) || w.rows() != 0 {
		t.Fatalf("after a failed commit: this session live %t, the other %t, %d rows; want both live, no row", live(curTok), live(otherTok), w.rows())
	}

	token, sess, err := e.svc.EndOtherSessionsWith(cur, w.commit("session.revoked_others"))
	if err != nil {
		t.Fatal(err)
	}
	if sess.ID == cur.ID || !live(token) || live(curTok) || live(otherTok) {
		t.Errorf("after: new id %t, new token live %t, old token live %t, other live %t; want a new live session alone",
			sess.ID != cur.ID, live(token), live(curTok), live(otherTok))
	}
	if w.rows() != 1 {
		t.Errorf("%d rows; want 1", w.rows())
	}
	if _, err := e.svc.CheckPassword(e.ctx, u.Email, "correct horse battery"); err != nil {
		t.Errorf("the password after: %v; want unchanged", err)
	}

	// cur, replaced now, cannot do it again.
	if _, _, err := e.svc.EndOtherSessionsWith(cur, w.commit("session.revoked_others")); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("again with the replaced session: %v; want ErrNoSession", err)
	}
	if !live(token) || w.rows() != 1 {
		t.Errorf("after the refusal: the session live %t, %d rows; want live, 1 row", live(token), w.rows())
	}
}
