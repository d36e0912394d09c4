package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// passwordPage shows the form that changes the signed-in user's
// password. A user with a second factor proves it first, as for turning
// it off: with the password alone, a stolen session could otherwise sign
// the owner out everywhere and keep the account.
func (q *preq) passwordPage() error {
	p, err := q.signedIn()
	if p == nil || err != nil {
		return err
	}
	if p.User.SecondFactor && !q.requireFresh(p, q.p.app.Prefix+"/account/password") {
		return nil
	}
	return q.formPage(p, "password", "Change password")(http.StatusOK, "")
}

// passwordSubmit changes the password: a recent second factor for a user
// with one, the current password under the same regulation as a
// sign-in, then the new one twice. Every session of the user ends; this
// browser goes on in a new one.
func (q *preq) passwordSubmit() error {
	back := q.p.app.Prefix + "/account/password"
	p, err := q.formPrincipal(back)
	if p == nil || err != nil {
		return err
	}
	if p.User.SecondFactor && !q.requireFresh(p, back) {
		return nil
	}
	again := q.formPage(p, "password", "Change password")
	current, next := q.r.PostFormValue("current_password"), q.r.PostFormValue("new_password")
	if current == "" || next == "" {
		return again(http.StatusBadRequest, "Enter your current password and the new one.")
	}
	if next != q.r.PostFormValue("confirm_password") {
		return again(http.StatusBadRequest, "The two new passwords differ.")
	}
	// Checked before the current password, so a too-short new one costs
	// no attempt.
	if err := authcore.CheckNewPassword(next); err != nil {
		why := strings.TrimPrefix(err.Error(), authcore.ErrInvalidInput.Error()+": ") // "password must be …"
		return again(http.StatusBadRequest, "The new "+why+".")
	}
	// The change is often made because the password leaked: keeping it
	// would leave the account as open as before. This compares the two
	// fields, not the stored hash, so it tells nothing about the real one.
	if next == current {
		return again(http.StatusBadRequest, "The new password is the same as the current one. Choose another.")
	}
	if ok, err := q.reauth(p, current, "Your current password is not right.", again); !ok {
		return err
	}
	// A form sent twice (a double click) waits here for the first, which
	// replaces this session: the second then says what the first did
	// instead of writing a success row for a change it cannot make.
	unlock, live, err := q.lockAccount(p)
	defer unlock()
	if err != nil {
		return err
	}
	if !live {
		return q.passwordSessionEnded(p, next)
	}
	// The row and the change in one transaction: a password never changes
	// without its row, nor has one without changing. Refused there, a
	// failure row says why.
	ev := event{action: "auth.password_change.success", actor: p.User.ID, subject: p.User.ID, outcome: "success"}
	var token string
	err, aerr := q.rt.changeWithRow(q.ctx(), rowFor(q.r, ev), func(commit authcore.Commit) error {
		var err error
		token, _, err = q.rt.auth.ChangePasswordWith(p.Session, next, q.secure, commit)
		return err
	})
	if aerr != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s (the password is unchanged): %w", ev.action, aerr))
	}
	if errors.Is(err, authcore.ErrNoSession) {
		return q.passwordSessionEnded(p, next)
	}
	if errors.Is(err, authcore.ErrFactorsChanged) {
		q.passwordChangeFailed(p, "factors_changed")
		return again(http.StatusConflict, factorsChanged)
	}
	if err != nil {
		q.passwordChangeFailed(p, "storage")
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	q.setSessionCookie(token)
	return q.message(http.StatusOK, "Password changed", "Your password is changed. Your other sessions were signed out.", q.p.app.Prefix+"/account")
}

// passwordSessionEnded answers a password change whose session ended
// before it ran. If the password is already next, the same form changed
// it first (sent twice): say so, and leave the cookie alone, since the
// browser may hold the first answer's new session. Otherwise the session
// was signed out or revoked meanwhile, and nothing changed.
func (q *preq) passwordSessionEnded(p *authcore.Principal, next string) error {
	_, err := q.rt.auth.CheckPassword(q.ctx(), p.User.Email, next)
	switch {
	case err == nil:
		return q.message(http.StatusOK, "Password changed", "Your password is already changed: the form was sent twice. If you are asked to sign in, use the new password.", q.p.app.Prefix+"/account")
	case errors.Is(err, authcore.ErrBusy):
		q.w.Header().Set("Retry-After", "5")
		return q.message(http.StatusServiceUnavailable, "Busy", busyMessage, q.p.app.Prefix+"/account")
	case !errors.Is(err, authcore.ErrInvalidCredentials):
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	q.passwordChangeFailed(p, "session_ended")
	// The cookie is left alone: another tab's sign-out of the other
	// sessions may have replaced this session, and the browser holds the
	// one that went on. A cookie of an ended session only leads to
	// signing in.
	return q.message(http.StatusUnauthorized, "Session ended", "This session ended before the change (signed out, or replaced in another tab), so your password is unchanged. Sign in again if you are asked to.", q.p.app.Prefix+"/account")
}

// passwordChangeFailed writes the failure row of a password change.
func (q *preq) passwordChangeFailed(p *authcore.Principal, reason string) {
	fail := event{action: "auth.password_change.failure", actor: p.User.ID, subject: p.User.ID, outcome: "failure", meta: map[string]string{"reason": reason}}
	if err := q.audit(fail); err != nil {
		q.p.logger.Error("a password change failed, and so did its failure row", zap.String("user", p.User.ID), zap.Error(err))
	}
}

// lockAccount takes p's user's accountChange lock and reports whether
// p's session is still stored: the twin of a form sent twice finds the
// session the first replaced gone. unlock is never nil and may be
// called more than once.
func (q *preq) lockAccount(p *authcore.Principal) (unlock func(), live bool, err error) {
	unlock = accountChange.lock(p.User.ID)
	_, err = q.rt.store.GetSession(q.ctx(), p.Session.ID)
	if errors.Is(err, authcore.ErrNotFound) {
		return unlock, false, nil
	}
	if err != nil {
		return unlock, false, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return unlock, true, nil
}

// accountChange serializes a user's own password changes and
// second-factor steps, so that a form sent twice runs once and the
// second sees what the first did.
var accountChange userLocks

// userLocks is a mutex per user id, kept only while someone holds or
// waits for it.
type userLocks struct {
	mu sync.Mutex
	m  map[string]*userLock
}

type userLock struct {
	sync.Mutex
	refs int
}

// lock locks id's mutex and returns its unlock, which may be called
// more than once (only the first call unlocks).
func (l *userLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*userLock{}
	}
	u := l.m[id]
	if u == nil {
		u = &userLock{}
		l.m[id] = u
	}
	u.refs++
	l.mu.Unlock()
	u.Lock()
	return sync.OnceFunc(func() {
		u.Unlock()
		l.mu.Lock()
		if u.refs--; u.refs == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	})
}

// deletePage explains what deleting the account does and asks for the
// password. A user with a second factor proves it first, as for turning
// it off.
func (q *preq) deletePage() error {
	p, err := q.signedIn()
	if p == nil || err != nil {
		return err
	}
	if p.User.SecondFactor && !q.requireFresh(p, q.p.app.Prefix+"/account/delete") {
		return nil
	}
	if last, err := q.refuseLastAdmin(p); last || err != nil {
		return err
	}
	return q.formPage(p, "delete", "Delete account")(http.StatusOK, "")
}

// refuseLastAdmin answers 409 when p is the only enabled administrator,
// whose deletion would leave nobody to manage the site; it reports
// whether it answered.
func (q *preq) refuseLastAdmin(p *authcore.Principal) (bool, error) {
	if !p.User.InGroup(q.p.app.AdminGroup) {
		return false, nil
	}
	// Early, for a clear page; the change itself checks again under
	// adminChange, and DeleteUser in its own transaction.
	other, err := q.rt.store.HasOtherMember(q.ctx(), q.p.app.AdminGroup, p.User.ID)
	if err != nil {
		return true, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if other {
		return false, nil
	}
	return true, q.lastAdminPage()
}

func (q *preq) lastAdminPage() error {
	return q.message(http.StatusConflict, "Last administrator",
		"You are the only administrator. Make another one first (caddy sigra users groups --admin, or users add --admin), or nobody could manage this site.", q.p.app.Prefix+"/account")
}

// deleteSubmit deletes the signed-in user's account and everything kept
// for it (sessions, second factors, recovery codes); the audit rows about
// it stay. The account.deletion_execute row is written in the
// deletion's own transaction: neither is stored without the other.
func (q *preq) deleteSubmit() error {
	back := q.p.app.Prefix + "/account/delete"
	p, err := q.formPrincipal(back)
	if p == nil || err != nil {
		return err
	}
	if p.User.SecondFactor && !q.requireFresh(p, back) {
		return nil
	}
	again := q.formPage(p, "delete", "Delete account")
	if q.r.PostFormValue("confirm") != "yes" {
		return again(http.StatusBadRequest, "Tick the box to confirm.")
	}
	if ok, err := q.reauth(p, q.r.PostFormValue("password"), "That password is not right.", again); !ok {
		return err
	}
	// Under adminChange from here, as for an admin's deletion. A form
	// sent twice (a double click) waits here for the first, and then
	// finds the account gone: it answers as the first did, with no row.
	adminChange.Lock()
	defer adminChange.Unlock()
	if _, err := q.rt.auth.LookupUser(q.ctx(), p.User.ID); err != nil {
		if errors.Is(err, authcore.ErrNotFound) {
			return q.accountDeleted()
		}
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if last, err := q.refuseLastAdmin(p); last || err != nil {
		return err
	}
	// The row and the deletion in one transaction (runtime.deleteUser).
	ev := event{action: "account.deletion_execute", actor: p.User.ID, subject: p.User.ID, outcome: "success"}
	err, aerr := q.rt.deleteUser(q.ctx(), p.User.ID, q.p.app.AdminGroup, rowFor(q.r, ev))
	if aerr != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s (nothing was deleted): %w", ev.action, aerr))
	}
	if err != nil {
		last := errors.Is(err, authcore.ErrLastAdmin) // the other admin went meanwhile
		ev.outcome, ev.meta = "failure", map[string]string{"reason": "storage"}
		if last {
			ev.meta["reason"] = "last_admin"
		}
		if aerr := q.audit(ev); aerr != nil {
			q.p.logger.Error("an account deletion failed, and so did its failure row", zap.String("user", p.User.ID), zap.Error(aerr))
		}
		if last {
			return q.lastAdminPage()
		}
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return q.accountDeleted()
}

func (q *preq) accountDeleted() error {
	q.clearSessionCookie()
	return q.message(http.StatusOK, "Account deleted", "Your account is deleted, and you are signed out everywhere.", q.p.app.Prefix+"/login")
}

// busyMessage answers a password check refused for load (ErrBusy).
const busyMessage = "Too many sign-ins at the moment. Please try again in a few seconds."

// busyStatus is the status of an ErrBusy answer: 429 when the client's
// own address has too many sign-ins in flight (ErrCrowded), 503 when the
// server's password checks are all taken.
func busyStatus(err error) int {
	if errors.Is(err, authcore.ErrCrowded) {
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable
}

// formPage returns the answer of a signed-in form page, the form again
// with a message (none: "") and a status.
func (q *preq) formPage(p *authcore.Principal, page, title string) func(status int, msg string) error {
	d := pageData{Title: title, CSRF: q.rt.csrf.Token(sessionBinding(p)), MinPassword: authcore.MinPasswordLen, Email: p.User.Email}
	return func(status int, msg string) error {
		d.Error = msg
		return q.page(status, page, d)
	}
}

// reauth checks a signed-in user's password again, under regulation like
// a sign-in (a failure is an auth.login.failure row with step reauth). It
// reports whether password is p's user's; when not, it has answered with
// again: 401 and wrong, 429 while the user's re-checks (or the address)
// are banned, or 503 when too many password checks run at once. An empty
// password (a form sent without it) is asked for, 401, and counts for
// nothing: it is no guess.
func (q *preq) reauth(p *authcore.Principal, password, wrong string, again func(int, string) error) (bool, error) {
	if password == "" {
		return false, again(http.StatusUnauthorized, "Enter your password to do this.")
	}
	u, att, err := q.checkPassword(p.User.Email, password, p)
	if errors.Is(err, authcore.ErrBusy) {
		q.w.Header().Set("Retry-After", "5")
		return false, again(busyStatus(err), busyMessage)
	}
	if err != nil {
		return false, err
	}
	if u != nil && u.ID != p.User.ID {
		// The address moved to another account meanwhile: not this
		// user's password. Nothing to count against either.
		_ = att.Succeed(q.ctx(), false)
		u = nil
	}
	if u == nil && !att.Allowed() {
		// The user's own re-checks (or a thief's of the session), or
		// this address's sign-ins: not "not right", which it may be.
		return false, again(http.StatusTooManyRequests, "Too many wrong passwords: the password cannot be checked for a few minutes. Try again later.")
	}
	if u == nil {
		return false, again(http.StatusUnauthorized, wrong)
	}
	if err := att.Succeed(q.ctx(), true); err != nil {
		return false, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	q.rt.login("reauth", "success")
	return true, nil
}
