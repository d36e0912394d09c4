package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// withRows gives the …With methods of e's Service a real audit log on the
// same file: commit(rows...) stores the rows with the change, and
// failing(rows...) runs the change in the rows' transaction, then fails
// that transaction, as a full disk or a crash before the commit would.
// What the change did must be gone with it.
type withRows struct {
	t   *testing.T
	log *audit.Log
	b   *Bolt
}

var errCommitFailed = errors.New("commit failed")

func newWithRows(t *testing.T, e *mfaEnv) *withRows {
	t.Helper()
	l, err := audit.New(nil, e.clk, e.st, audit.Options{ErrorLog: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &withRows{t: t, log: l, b: e.st}
}

func rowsOf(actions []string) []audit.Row {
	rows := make([]audit.Row, len(actions))
	for i, a := range actions {
		rows[i] = audit.Row{Action: a, ActorType: audit.ActorUser, Outcome: audit.OutcomeSuccess}
	}
	return rows
}

func (w *withRows) commit(actions ...string) authcore.Commit {
	return func(change func(tx any) error) error {
		return w.log.RecordAllWith(context.Background(), rowsOf(actions), change)
	}
}

func (w *withRows) failing(actions ...string) authcore.Commit {
	return func(change func(tx any) error) error {
		return w.log.RecordAllWith(context.Background(), rowsOf(actions), func(tx any) error {
			if err := change(tx); err != nil {
				return err
			}
			return errCommitFailed
		})
	}
}

func (w *withRows) rows() int {
	w.t.Helper()
	return auditKeys(w.t, w.b, bktAuditRows)
}

// enrolled makes a user with an authenticator app, and returns it as
// stored now, the app's secret and the recovery codes.
func (e *mfaEnv) enrolled(t *testing.T, email string) (*authcore.User, string, []string) {
	t.Helper()
	u := e.user(t, email)
	secret, codes := e.enrol(t, u)
	u, err := e.st.UserByID(e.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	return u, secret, codes
}

// passwordSession signs u in with the password alone (pending when u has
// a second factor).
func (e *mfaEnv) passwordSession(t *testing.T, u *authcore.User) *authcore.Session {
	t.Helper()
	_, s, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *mfaEnv) sessionExists(t *testing.T, id authcore.SessionID) bool {
	t.Helper()
	_, err := e.st.GetSession(e.ctx, id)
	if err != nil && !errors.Is(err, authcore.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// A code from the app, the session it makes multi-factor, and their rows
// are one transaction.
func TestVerifyTOTPWithItsRows(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	_, s, secret := e.pendingSession(t, "alice@example.com")
	e.clk.Advance(30 * time.Second)
	code := mfaRefTOTP(t, secret, e.clk.Now())

	if _, _, err := e.svc.VerifyTOTPWith(e.ctx, s.UserID, s.ID, code, false, w.failing("mfa.challenge.success", "auth.login.success")); !errors.Is(err, errCommitFailed) {
		t.Fatalf("VerifyTOTPWith, the commit failing: %v; want its error", err)
	}
	if !e.sessionExists(t, s.ID) || w.rows() != 0 {
		t.Fatalf("the commit failed, and the session was replaced or a row stored (%d rows)", w.rows())
	}
	// The code was not spent: it passes now.
	token, next, err := e.svc.VerifyTOTPWith(e.ctx, s.UserID, s.ID, code, false, w.commit("mfa.challenge.success", "auth.login.success"))
	if err != nil {
		t.Fatalf("VerifyTOTPWith after a failed commit: %v; want the unspent code to pass", err)
	}
	if token == "" || next.Pending || !next.MFA() || e.sessionExists(t, s.ID) || !e.sessionExists(t, next.ID) {
		t.Errorf("after the commit: pending %v, mfa %v, old session kept %v, new one stored %v", next.Pending, next.MFA(), e.sessionExists(t, s.ID), e.sessionExists(t, next.ID))
	}
	if n := w.rows(); n != 2 {
		t.Errorf("%d rows; want both", n)
	}
	// Spent with it: the same code again is a replay.
	if _, _, err := e.svc.VerifyTOTPWith(e.ctx, s.UserID, next.ID, code, false, w.commit("mfa.challenge.success")); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("the code again: %v; want ErrInvalidCode", err)
	}

	// A session ended meanwhile: nobody is signed in, and the next
	// step's code is not spent on it.
	if _, err := e.svc.EndSession(e.ctx, next.ID); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(30 * time.Second)
	code = mfaRefTOTP(t, secret, e.clk.Now())
	if _, _, err := e.svc.VerifyTOTPWith(e.ctx, s.UserID, next.ID, code, false, w.commit("mfa.challenge.success")); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("VerifyTOTPWith on an ended session: %v; want ErrNoSession", err)
	}
	if err := e.svc.VerifyTOTP(e.ctx, s.UserID, code); err != nil {
		t.Errorf("the code refused for an ended session was spent: %v", err)
	}
	if n := w.rows(); n != 2 {
		t.Errorf("%d rows; want none for the ended session", n)
	}
}

// A recovery code, the session, and their rows are one transaction.
func TestUseRecoveryCodeWithItsRows(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u, _, codes := e.enrolled(t, "bob@example.com")
	s := e.passwordSession(t, u)
	used := []string{"mfa.challenge.success", "mfa.recovery_code.used", "auth.login.success"}
	if _, _, err := e.svc.UseRecoveryCodeWith(e.ctx, u.ID, s.ID, codes[0], false, w.failing(used...)); !errors.Is(err, errCommitFailed) {
		t.Fatalf("UseRecoveryCodeWith, the commit failing: %v; want its error", err)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != authcore.RecoveryCodeCount || !e.sessionExists(t, s.ID) || w.rows() != 0 {
		t.Fatalf("the commit failed: %d codes left, session kept %v, %d rows; want all codes, the session, no rows", n, e.sessionExists(t, s.ID), w.rows())
	}
	// An unknown code is refused before the commit: its refusal would
	// have the audit log commit the rows it shared a batch with again.
	committed := false
	if _, _, err := e.svc.UseRecoveryCodeWith(e.ctx, u.ID, s.ID, "0000-0000-0000", false, func(change func(tx any) error) error {
		committed = true
		return w.commit(used...)(change)
	}); !errors.Is(err, authcore.ErrInvalidCode) || committed {
		t.Errorf("an unknown code: %v, committed %v; want ErrInvalidCode before any commit", err, committed)
	}
	_, next, err := e.svc.UseRecoveryCodeWith(e.ctx, u.ID, s.ID, codes[0], false, w.commit(used...))
	if err != nil {
		t.Fatalf("UseRecoveryCodeWith: %v", err)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != authcore.RecoveryCodeCount-1 || e.sessionExists(t, s.ID) || !next.MFA() || w.rows() != 3 {
		t.Errorf("after the commit: %d codes left, old session kept %v, mfa %v, %d rows", n, e.sessionExists(t, s.ID), next.MFA(), w.rows())
	}
	// An ended session spends no code.
	if _, err := e.svc.EndSession(e.ctx, next.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.UseRecoveryCodeWith(e.ctx, u.ID, next.ID, codes[1], false, w.commit(used...)); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("UseRecoveryCodeWith on an ended session: %v; want ErrNoSession", err)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != authcore.RecoveryCodeCount-1 {
		t.Errorf("%d codes left; want none spent on an ended session", n)
	}
}

// An enrolment, the session it makes multi-factor, and its row are one
// transaction.
func TestConfirmTOTPWithItsRow(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u := e.user(t, "carol@example.com")
	s := e.passwordSession(t, u)
	en, err := e.svc.BeginTOTP(e.ctx, u, s.ID, "Example")
	if err != nil {
		t.Fatal(err)
	}
	code := mfaRefTOTP(t, en.Secret, e.clk.Now())
	if _, _, _, err := e.svc.ConfirmTOTPWith(e.ctx, u.ID, s.ID, en.Page, code, false, w.failing("mfa.totp.enrolled")); !errors.Is(err, errCommitFailed) {
		t.Fatalf("ConfirmTOTPWith, the commit failing: %v; want its error", err)
	}
	if has, _ := e.svc.HasTOTP(e.ctx, u.ID); has {
		t.Fatal("the commit failed, and the app is set up")
	}
	if got, _ := e.st.UserByID(e.ctx, u.ID); got.SecondFactor || !e.sessionExists(t, s.ID) || w.rows() != 0 {
		t.Fatalf("the commit failed: second factor %v, session kept %v, %d rows", got.SecondFactor, e.sessionExists(t, s.ID), w.rows())
	}
	codes, token, next, err := e.svc.ConfirmTOTPWith(e.ctx, u.ID, s.ID, en.Page, code, false, w.commit("mfa.totp.enrolled"))
	if err != nil {
		t.Fatalf("ConfirmTOTPWith after a failed commit: %v; want the pending enrolment kept", err)
	}
	if len(codes) != authcore.RecoveryCodeCount || token == "" || !next.MFA() || e.sessionExists(t, s.ID) || w.rows() != 1 {
		t.Errorf("after the commit: %d codes, mfa %v, old session kept %v, %d rows", len(codes), next.MFA(), e.sessionExists(t, s.ID), w.rows())
	}
	if has, _ := e.svc.HasTOTP(e.ctx, u.ID); !has {
		t.Error("the app is not set up")
	}

	// A session ended before the confirmation sets nothing up.
	v := e.user(t, "dave@example.com")
	s = e.passwordSession(t, v)
	if en, err = e.svc.BeginTOTP(e.ctx, v, s.ID, "Example"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.EndSession(e.ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := e.svc.ConfirmTOTPWith(e.ctx, v.ID, s.ID, en.Page, mfaRefTOTP(t, en.Secret, e.clk.Now()), false, w.commit("mfa.totp.enrolled")); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("ConfirmTOTPWith for an ended session: %v; want ErrNoSession", err)
	}
	if has, _ := e.svc.HasTOTP(e.ctx, v.ID); has {
		t.Error("an app was set up for an ended session")
	}
}

// New recovery codes replace the old ones with their row, and an unlock
// lifts both locks with its row, or nothing changes.
func TestRegenerateAndUnlockWithTheirRows(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u, secret, old := e.enrolled(t, "erin@example.com")
	shown := func() func(string) bool {
		t.Helper()
		_, digest, err := e.svc.RecoveryCodeSet(e.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return func(stored string) bool { return stored == digest }
	}
	set := shown()
	if _, err := e.svc.RegenerateRecoveryCodesWith(e.ctx, u.ID, set, w.failing("mfa.recovery_code.regenerated")); !errors.Is(err, errCommitFailed) {
		t.Fatalf("RegenerateRecoveryCodesWith, the commit failing: %v; want its error", err)
	}
	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, old[0]); err != nil {
		t.Errorf("an old code after a failed regeneration: %v; want it still good", err)
	}
	rows := w.rows()
	// The set shown had old[0], spent since.
	if _, err := e.svc.RegenerateRecoveryCodesWith(e.ctx, u.ID, set, w.commit("mfa.recovery_code.regenerated")); !errors.Is(err, authcore.ErrRecoveryCodesChanged) {
		t.Errorf("RegenerateRecoveryCodesWith for a set with a code spent since: %v; want ErrRecoveryCodesChanged", err)
	}
	set = shown()
	fresh, err := e.svc.RegenerateRecoveryCodesWith(e.ctx, u.ID, set, w.commit("mfa.recovery_code.regenerated"))
	if err != nil {
		t.Fatal(err)
	}
	// The same form sent again makes no set behind the one shown.
	if again, err := e.svc.RegenerateRecoveryCodesWith(e.ctx, u.ID, set, w.commit("mfa.recovery_code.regenerated")); !errors.Is(err, authcore.ErrRecoveryCodesChanged) || again != nil {
		t.Errorf("RegenerateRecoveryCodesWith sent twice: %v, %d codes; want ErrRecoveryCodesChanged", err, len(again))
	}
	// No check given refuses, never replaces.
	if _, err := e.svc.RegenerateRecoveryCodesWith(e.ctx, u.ID, nil, w.commit("mfa.recovery_code.regenerated")); !errors.Is(err, authcore.ErrRecoveryCodesChanged) {
		t.Errorf("RegenerateRecoveryCodesWith without a check: %v; want ErrRecoveryCodesChanged", err)
	}
	if got := w.rows(); got != rows+1 {
		t.Errorf("%d rows after a regeneration and three refused; want %d", got, rows+1)
	}
	if left, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); left != authcore.RecoveryCodeCount {
		t.Errorf("%d codes left after the regeneration; want %d", left, authcore.RecoveryCodeCount)
	}
	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, old[1]); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("an old code after the regeneration: %v; want ErrInvalidCode", err)
	}
	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, fresh[0]); err != nil {
		t.Errorf("a new code: %v", err)
	}

	// Lock the app with wrong codes and the sign-in with a ban.
	for range e.svc.Config().MaxTOTPFailures {
		_ = e.svc.VerifyTOTP(e.ctx, u.ID, wrongTOTP(t, secret, e.clk.Now()))
	}
	if locked, _ := e.svc.TOTPLocked(e.ctx, u.ID); !locked {
		t.Fatal("the app did not lock")
	}
	reg := authcore.NewRegulator(e.clk, e.st, authcore.RegulationConfig{})
	for range reg.Config().MaxRetries {
		a, err := reg.Begin(e.ctx, authcore.UserAccountKey(u.ID), "198.51.100.7")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Fail(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	banned := func() bool {
		until, err := reg.AccountBan(e.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return !until.IsZero()
	}
	if !banned() {
		t.Fatal("the sign-in was not banned")
	}
	rows = w.rows()
	if err := e.svc.UnlockWith(e.ctx, u.ID, w.failing("admin.user.unlock")); !errors.Is(err, errCommitFailed) {
		t.Fatalf("UnlockWith, the commit failing: %v; want its error", err)
	}
	if locked, _ := e.svc.TOTPLocked(e.ctx, u.ID); !locked || !banned() || w.rows() != rows {
		t.Errorf("the commit failed: app locked %v, banned %v, %d new rows; want both locks, no row", locked, banned(), w.rows()-rows)
	}
	if err := e.svc.UnlockWith(e.ctx, u.ID, w.commit("admin.user.unlock")); err != nil {
		t.Fatal(err)
	}
	// A user deleted meanwhile: nothing to unlock, and no row saying so.
	if err := e.svc.UnlockWith(e.ctx, "0190a3c4-0000-7000-8000-000000000000", w.commit("admin.user.unlock")); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("UnlockWith of no user: %v; want ErrNotFound", err)
	}
	if locked, _ := e.svc.TOTPLocked(e.ctx, u.ID); locked || banned() || w.rows() != rows+1 {
		t.Errorf("after the unlock: app locked %v, banned %v, %d new rows; want neither lock, its row", locked, banned(), w.rows()-rows)
	}
}

// An address's ban is lifted with its row, or not at all; one with no
// ban or failures is ErrNotFound, and writes nothing. The bans are read
// from the store by prefix (RegulationStates), in key order.
func TestUnlockAddressWithItsRow(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	reg := authcore.NewRegulator(e.clk, e.st, authcore.RegulationConfig{MaxRetries: 2, MaxRetriesPerIP: 3})
	for _, ip := range []string{"203.0.113.9", "192.0.2.7"} {
		for i := range 3 {
			a, err := reg.Begin(e.ctx, fmt.Sprint("user:", ip, i), ip)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Fail(e.ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	listed := func() []string {
		t.Helper()
		bans, err := reg.AddressBans(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, b := range bans {
			out = append(out, b.Address)
		}
		return out
	}
	if got := listed(); !slices.Equal(got, []string{"192.0.2.7", "203.0.113.9"}) {
		t.Fatalf("address bans %q; want both, in key order", got)
	}
	var seen []string
	if err := e.st.RegulationStates(e.ctx, "ip:", func(k string, _ *authcore.RegulationState) bool {
		seen = append(seen, k)
		return false
	}); err != nil || !slices.Equal(seen, []string{"ip:192.0.2.7"}) {
		t.Errorf("RegulationStates stopped by fn: %q, %v; want the first address only", seen, err)
	}
	key, err := authcore.AddressKey("192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	rows := w.rows()
	if err := e.svc.UnlockAddressWith(e.ctx, reg, key, w.failing("admin.address.unlock")); !errors.Is(err, errCommitFailed) {
		t.Fatalf("UnlockAddressWith, the commit failing: %v; want its error", err)
	}
	if got := listed(); len(got) != 2 || w.rows() != rows {
		t.Errorf("the commit failed: bans %q, %d new rows; want both bans, no row", got, w.rows()-rows)
	}
	if err := e.svc.UnlockAddressWith(e.ctx, reg, key, w.commit("admin.address.unlock")); err != nil {
		t.Fatal(err)
	}
	if got := listed(); !slices.Equal(got, []string{"203.0.113.9"}) || w.rows() != rows+1 {
		t.Errorf("after the unlock: bans %q, %d new rows; want the other ban, its row", got, w.rows()-rows)
	}
	if a, err := reg.Begin(e.ctx, "user:fresh", "192.0.2.7"); err != nil || !a.Allowed() {
		t.Errorf("an attempt from the unlocked address: allowed %v, %v; want allowed", a != nil && a.Allowed(), err)
	}
	none, _ := authcore.AddressKey("198.51.100.1")
	if err := e.svc.UnlockAddressWith(e.ctx, reg, none, w.commit("admin.address.unlock")); !errors.Is(err, authcore.ErrNotFound) || w.rows() != rows+1 {
		t.Errorf("unlocking an address with nothing recorded: %v, %d new rows; want ErrNotFound and no row", err, w.rows()-rows-1)
	}
}

// A session that ends between the check of a code and the commit (here,
// just before the commit) signs nobody in, and spends no code: the
// session is replaced in the commit, before the code is spent.
func TestSecondFactorSessionEndedBeforeTheCommit(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u, secret, codes := e.enrolled(t, "fay@example.com")
	ending := func(id authcore.SessionID) authcore.Commit {
		return func(change func(tx any) error) error {
			if _, err := e.svc.EndSession(e.ctx, id); err != nil {
				t.Fatal(err)
			}
			return w.commit("mfa.challenge.success")(change)
		}
	}
	e.clk.Advance(30 * time.Second)
	code := mfaRefTOTP(t, secret, e.clk.Now())
	s := e.passwordSession(t, u)
	if _, _, err := e.svc.VerifyTOTPWith(e.ctx, u.ID, s.ID, code, false, ending(s.ID)); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("VerifyTOTPWith, the session ended before the commit: %v; want ErrNoSession", err)
	}
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, code); err != nil {
		t.Errorf("the code refused for an ended session was spent: %v", err)
	}
	s = e.passwordSession(t, u)
	if _, _, err := e.svc.UseRecoveryCodeWith(e.ctx, u.ID, s.ID, codes[0], false, ending(s.ID)); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("UseRecoveryCodeWith, the session ended before the commit: %v; want ErrNoSession", err)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != authcore.RecoveryCodeCount {
		t.Errorf("%d recovery codes left; want none spent on an ended session", n)
	}
	if n := w.rows(); n != 0 {
		t.Errorf("%d rows; want none", n)
	}
}

// failTOTPStore fails to count wrong codes.
type failTOTPStore struct{ *Bolt }

func (failTOTPStore) FailTOTP(context.Context, string) (int, error) {
	return 0, errors.New("disk full")
}

// A wrong code whose count fails is still a wrong code: callers count
// the attempt with the Regulator instead of taking it back as one that
// checked nothing.
func TestWrongTOTPCodeWhoseCountFails(t *testing.T) {
	e := newMFAEnvOn(t, failTOTPStore{openAuthBolt(t)})
	u := e.user(t, "gus@example.com")
	secret, _ := e.enrol(t, u)
	s := e.passwordSession(t, u)
	wrong := wrongTOTP(t, secret, e.clk.Now())
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, wrong); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("VerifyTOTP of a wrong code, its count failing: %v; want ErrInvalidCode", err)
	}
	if _, _, err := e.svc.VerifyTOTPWith(e.ctx, u.ID, s.ID, wrong, false, func(func(tx any) error) error {
		t.Error("a wrong code reached the commit")
		return nil
	}); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("VerifyTOTPWith of a wrong code, its count failing: %v; want ErrInvalidCode", err)
	}
}

// A change whose second row is stored already is not made: that row
// cannot say whether the change went with it. On bbolt the change runs
// with the first row, then the second is found, and the transaction
// takes both back.
func TestChangeWithAStoredSecondRow(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u := e.user(t, "hal@example.com")
	stored, err := w.log.RecordRow(e.ctx, rowsOf([]string{"auth.logout"})[0])
	if err != nil {
		t.Fatal(err)
	}
	rows := []audit.Row{rowsOf([]string{"admin.user.disable"})[0], stored}
	err = w.log.RecordAllWith(e.ctx, rows, e.st.UpdateUserIn(u.ID, true, func(u *authcore.User) error { u.Disabled = true; return nil }))
	if !errors.Is(err, audit.ErrInvalidRow) {
		t.Errorf("RecordAllWith with a stored second row: %v; want ErrInvalidRow", err)
	}
	if got, err := e.st.UserByID(e.ctx, u.ID); err != nil || got.Disabled {
		t.Errorf("the change of a request with a stored row was made: %+v, %v", got, err)
	}
	if n := w.rows(); n != 1 {
		t.Errorf("%d rows; want the stored one alone", n)
	}
}

// A session's re-check ban that starts while an unlock is on its way to
// its transaction is lifted with the others: the unlock finds the
// sessions' keys in its transaction, not before it.
func TestUnlockWithClearsABanStartedBeforeItsCommit(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u := e.user(t, "fay@example.com")
	reg := authcore.NewRegulator(e.clk, e.st, authcore.RegulationConfig{})
	key := authcore.UserReauthKey(u.ID, "thief-session")
	banned := func() bool {
		t.Helper()
		until, err := reg.ReauthBan(e.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return !until.IsZero()
	}
	commit := func(change func(tx any) error) error {
		for range reg.Config().MaxRetries {
			a, err := reg.Begin(e.ctx, key, "198.51.100.9")
			if err != nil {
				return err
			}
			if _, err := a.Fail(e.ctx); err != nil {
				return err
			}
		}
		if !banned() {
			t.Fatal("the session's re-checks were not banned")
		}
		return w.commit("admin.user.unlock")(change)
	}
	if err := e.svc.UnlockWith(e.ctx, u.ID, commit); err != nil {
		t.Fatal(err)
	}
	if banned() {
		t.Error("after the unlock, the session's re-check ban that started before its commit is still there")
	}
}

// A sign-in reads the user, checks the password (slowly), and then
// stores its session: an authenticator app set up in between must not
// give the session a password-only sign-in's lifetime, passing no gate
// and yet waiting twelve hours for a code, with a row saying signed in.
// The commit refuses it, row and all; made again from the user as
// stored now, it waits for the code, for PendingLifetime.
func TestSignInThatMissedAnEnrolment(t *testing.T) {
	e := newMFAEnv(t)
	w := newWithRows(t, e)
	u := e.user(t, "race@example.com") // read by the sign-in: no second factor yet
	_, stale := e.svc.NewSessionRecord(u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if stale.Pending {
		t.Fatal("a session of a user without a second factor is pending")
	}
	e.enrol(t, u) // meanwhile, the owner sets up the app
	before := w.rows()
	if err := e.svc.StartSessionWith(stale, w.commit("auth.login.success")); !errors.Is(err, authcore.ErrFactorsChanged) {
		t.Fatalf("StartSessionWith = %v; want ErrFactorsChanged", err)
	}
	if _, err := e.st.GetSession(e.ctx, stale.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("the refused session was stored (%v)", err)
	}
	if n := w.rows() - before; n != 0 {
		t.Errorf("%d rows written with the refused session; want none", n)
	}
	now, err := e.st.UserByID(e.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, fresh := e.svc.NewSessionRecord(now, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err := e.svc.StartSessionWith(fresh, w.commit("auth.login.pending")); err != nil {
		t.Fatal(err)
	}
	got, err := e.st.GetSession(e.ctx, fresh.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Pending || got.ExpiresAt.Sub(got.CreatedAt) >= time.Hour {
		t.Errorf("stored session pending %t, lasting %v; want pending, for the pending lifetime", got.Pending, got.ExpiresAt.Sub(got.CreatedAt))
	}

	// The other way round: a factor removed meanwhile leaves a pending
	// session nothing could complete.
	if err := e.svc.RemoveTOTP(e.ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.StartSessionWith(fresh.Clone(), w.commit("auth.login.pending")); !errors.Is(err, authcore.ErrFactorsChanged) {
		t.Errorf("a pending session for a user with no factor left: %v; want ErrFactorsChanged", err)
	}
}
