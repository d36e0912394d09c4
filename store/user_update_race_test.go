package store

import (
	"context"
	"testing"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// interleavingStore runs between once, as the next UpdateUser reaches the
// store: where a concurrent request lands while another update is in
// flight. An update that read the user before this point and wrote its
// copy back after it would undo what between did.
type interleavingStore struct {
	*Bolt
	between func()
}

func (s *interleavingStore) UpdateUser(ctx context.Context, id string, revoke bool, fn func(*authcore.User) error) (*authcore.User, error) {
	if f := s.between; f != nil {
		s.between = nil
		f()
	}
	return s.Bolt.UpdateUser(ctx, id, revoke, fn)
}

func newInterleavingEnv(t *testing.T) (*mfaEnv, *interleavingStore) {
	t.Helper()
	st := openAuthBolt(t)
	is := &interleavingStore{Bolt: st}
	e := newMFAEnvOn(t, is)
	e.st = st
	return e, is
}

// An admin resets Alice's password while Alice confirms her TOTP
// enrolment: the reset must not switch the second factor back off.
func TestSetPasswordKeepsConcurrentTOTPEnrolment(t *testing.T) {
	e, is := newInterleavingEnv(t)
	u := e.user(t, "alice@example.com")
	en, err := e.svc.BeginTOTP(e.ctx, u, mfaSID, "Example")
	if err != nil {
		t.Fatal(err)
	}
	is.between = func() {
		if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, en.Page, mfaRefTOTP(t, en.Secret, e.clk.Now())); err != nil {
			t.Errorf("ConfirmTOTP: %v", err)
		}
	}
	const pw = "another long password"
	if err := e.svc.SetPassword(e.ctx, u.ID, pw); err != nil {
		t.Fatal(err)
	}
	if has, err := e.svc.HasTOTP(e.ctx, u.ID); err != nil || !has {
		t.Fatalf("HasTOTP = %v, %v; want the enrolment confirmed", has, err)
	}
	got, err := e.st.UserByID(e.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.SecondFactor || got.PasswordHash == u.PasswordHash {
		t.Errorf("stored user: SecondFactor %v, password changed %v; want both", got.SecondFactor, got.PasswordHash != u.PasswordHash)
	}
	checked, err := e.svc.CheckPassword(e.ctx, u.Email, pw)
	if err != nil {
		t.Fatal(err)
	}
	_, sess, err := e.svc.StartSession(e.ctx, checked, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if !sess.Pending {
		t.Error("TOTP is enrolled, yet a password-only sign-in is fully signed in")
	}
}

// An admin disables Bob while his password is being changed: the change
// must not enable him again.
func TestSetPasswordKeepsConcurrentDisable(t *testing.T) {
	e, is := newInterleavingEnv(t)
	u := e.user(t, "bob@example.com")
	is.between = func() {
		if _, err := e.svc.SetDisabled(e.ctx, u.ID, true); err != nil {
			t.Errorf("SetDisabled: %v", err)
		}
	}
	if err := e.svc.SetPassword(e.ctx, u.ID, "another long password"); err != nil {
		t.Fatal(err)
	}
	got, err := e.st.UserByID(e.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Disabled {
		t.Error("SetDisabled(true) succeeded, but the stored user is enabled again")
	}
}

// A change that cannot be stored signs nobody out, and a stored one
// signs everybody out: the two are one transaction.
func TestSetPasswordAndRevocationLandTogether(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "carol@example.com")
	token, _, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	// The email a refused update leaves behind cannot be stored.
	_, err = e.svc.UpdateUser(e.ctx, u.ID, func(u *authcore.User) error { u.Email = "not an address"; return nil })
	if err == nil {
		t.Fatal("UpdateUser stored an invalid email")
	}
	if _, err := e.svc.Authenticate(e.ctx, token); err != nil {
		t.Fatalf("a refused update ended the session: %v", err)
	}
	if _, err := e.svc.SetDisabled(e.ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	got, err := e.st.UserByID(e.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.st.UserSessions(e.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Disabled || got.SessionEpoch != 1 || len(list) != 0 {
		t.Errorf("after SetDisabled: disabled %v, epoch %d, %d sessions; want true, 1, 0", got.Disabled, got.SessionEpoch, len(list))
	}
	if _, err := e.svc.SetDisabled(e.ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.st.UserByID(e.ctx, u.ID); got.Disabled || got.SessionEpoch != 1 {
		t.Errorf("after enabling: disabled %v, epoch %d; want false and the epoch unchanged", got.Disabled, got.SessionEpoch)
	}
}

// fn may not move a user to another id.
func TestUpdateUserKeepsID(t *testing.T) {
	st := openAuthBolt(t)
	alice := authCreate(t, st, "alice@example.com")
	bob := authCreate(t, st, "bob@example.com")
	_, err := st.UpdateUser(context.Background(), alice.ID, false, func(u *authcore.User) error { u.ID = bob.ID; return nil })
	if err == nil {
		t.Fatal("UpdateUser let fn change the id")
	}
	if got, _ := st.UserByID(context.Background(), bob.ID); got.Email != "bob@example.com" {
		t.Errorf("bob's record became %q", got.Email)
	}
	authCheckIndexes(t, st)
}
