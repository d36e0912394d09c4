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
		if _, _, err := e.svc.ChangePassword(e.ctx, cur, next, false); !errors.Is(err, authcore.ErrNoSession) {
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
	token, sess, err := e.svc.ChangePassword(e.ctx, cur, next, false)
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

	if _, _, err := e.svc.EndOtherSessionsWith(cur, false, w.failing("session.revoked_others")); !errors.Is(err, errCommitFailed) {
		t.Fatalf("a failing commit: %v; want it returned", err)
	}
	if !live(curTok) || !live(otherTok) || w.rows() != 0 {
		t.Fatalf("after a failed commit: this session live %t, the other %t, %d rows; want both live, no row", live(curTok), live(otherTok), w.rows())
	}

	token, sess, err := e.svc.EndOtherSessionsWith(cur, false, w.commit("session.revoked_others"))
	if err != nil {
		t.Fatal(err)
	}
	if sess.SignIn == "" || sess.SignIn != cur.SignIn || sess.SignInKey() != cur.SignInKey() {
		t.Errorf("renewed sign-in %q (key %q); want the first's %q: step-ups are counted per sign-in", sess.SignIn, sess.SignInKey(), cur.SignIn)
	}
	// Two sign-ins at the same instant are two sign-ins.
	_, same := start()
	if same.CreatedAt.Equal(sess.CreatedAt) && same.SignInKey() == sess.SignInKey() {
		t.Errorf("two sign-ins at one instant share the sign-in key %q", same.SignInKey())
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
	if _, _, err := e.svc.EndOtherSessionsWith(cur, false, w.commit("session.revoked_others")); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("again with the replaced session: %v; want ErrNoSession", err)
	}
	if !live(token) || w.rows() != 1 {
		t.Errorf("after the refusal: the session live %t, %d rows; want live, 1 row", live(token), w.rows())
	}
}

// A renewal (a password change, a sign-out of the others) carries cur
// over as stored in its transaction, not as the request read it; and a
// cur that passed no second factor (pending, or not yet marked so) of a
// user who has one now is refused (ErrFactorsChanged), changing nothing:
// it must not go on, or change the password, as a session that passed
// none.
func TestRenewalCarriesTheStoredSession(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u := e.user(t, "ivy@example.com")
	_, read, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	read = read.Clone() // the request's copy
	e.enrol(t, u)       // the owner sets up an app meanwhile
	refused := func(what string) {
		t.Helper()
		rows := w.rows()
		if _, _, err := e.svc.EndOtherSessionsWith(read, false, w.commit("session.revoked_others")); !errors.Is(err, authcore.ErrFactorsChanged) {
			t.Errorf("%s: sign-out of the others: %v; want ErrFactorsChanged", what, err)
		}
		if _, _, err := e.svc.ChangePasswordWith(read, "a much longer new passphrase", false, w.commit("auth.password_change.success")); !errors.Is(err, authcore.ErrFactorsChanged) {
			t.Errorf("%s: password change: %v; want ErrFactorsChanged", what, err)
		}
		if _, err := e.st.GetSession(e.ctx, read.ID); err != nil || w.rows() != rows {
			t.Errorf("%s: after the refusals: the session %v, %d new rows; want it kept, no row", what, err, w.rows()-rows)
		}
	}
	refused("not yet pending")
	if n, err := e.svc.PendUnprovenSessions(e.ctx, u.ID); err != nil || n != 1 {
		t.Fatalf("PendUnprovenSessions: %d, %v; want 1", n, err)
	}
	refused("pending")
	if stored, err := e.st.GetSession(e.ctx, read.ID); err != nil || !stored.Pending {
		t.Errorf("the stored session: %+v, %v; want still pending", stored, err)
	}
	if _, err := e.svc.CheckPassword(e.ctx, u.Email, "correct horse battery"); err != nil {
		t.Errorf("the password: %v; want unchanged", err)
	}

	// Passed meanwhile (a step-up in another tab kept the id): the
	// renewal carries the second factor over.
	v := e.user(t, "jay@example.com")
	_, cur, err := e.svc.StartSession(e.ctx, v, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	stored := cur.Clone()
	stored.AMR, stored.MFAAt = []string{authcore.AMRPassword, authcore.AMROTP, authcore.AMRMFA}, e.clk.Now()
	if err := e.st.PutSessions(e.ctx, []*authcore.Session{stored}); err != nil {
		t.Fatal(err)
	}
	_, sess, err := e.svc.EndOtherSessionsWith(cur, false, w.commit("session.revoked_others"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.st.GetSession(e.ctx, sess.ID); err != nil || !got.MFA() || !sess.MFA() {
		t.Errorf("renewed: %+v, %v; want the second factor carried over as stored", got, err)
	}
}
