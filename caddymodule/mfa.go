package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// freshFactor is how recent a second factor must be to turn TOTP off,
// make new recovery codes, change the password or delete the account.
const freshFactor = 10 * time.Minute

// wait applies a regulation delay; tests substitute a no-op.
var wait = sleepCtx

// sleepCtx sleeps for d unless the request ends first.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// mfaPage shows the second-factor challenge to a pending or signed-in
// session (step-up).
func (q *preq) mfaPage() error {
	p, err := q.anySession()
	if p == nil {
		return err
	}
	has, err := q.rt.auth.HasTOTP(q.ctx(), p.User.ID)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if !has {
		// Step-up for a user with no second factor: enrol one first.
		// The set-up carries rd, so its last page leads back to where the
		// user was going.
		enrol := q.p.app.Prefix + "/account/totp"
		if rd := q.givenRD(); rd != "" {
			enrol += "?rd=" + url.QueryEscape(rd)
		}
		return q.message(http.StatusForbidden, "Two-step verification needed",
			"This page needs a second factor, and your account has none yet. Set up an authenticator app, then try again.", enrol)
	}
	return q.page(http.StatusOK, "mfa", pageData{Title: "Two-step verification", CSRF: q.rt.csrf.Token(sessionBinding(p)), RD: q.rd()})
}

// blanks are what a code may carry beside its digits or letters.
const blanks = " \t-"

// mfaSubmit checks a TOTP or recovery code under regulation and, on
// success, rotates the session into a multi-factor one.
func (q *preq) mfaSubmit() error {
	p, err := q.anySession()
	if p == nil {
		return err
	}
	csrf := q.rt.csrf.Token(sessionBinding(p))
	if !q.rt.csrf.Valid(sessionBinding(p), q.r.PostFormValue("csrf_token")) {
		return q.page(http.StatusForbidden, "mfa", pageData{Title: "Two-step verification", CSRF: csrf, RD: q.rd(), Error: "The form expired. Please try again."})
	}
	// A form sent twice (a double click) waits here for the first. If
	// that one passed, it replaced this session: the second checks no
	// code (a replay would count as a wrong one) and goes where the
	// first went. The lock is let go before any failure's wait.
	unlock, live, err := q.lockAccount(p)
	defer unlock()
	if err != nil {
		return err
	}
	if !live {
		redirect(q.w, q.rd(), http.StatusSeeOther)
		return nil
	}
	code, recovery := q.r.PostFormValue("code"), q.r.PostFormValue("recovery_code")
	if strings.Trim(recovery, blanks) == "" {
		recovery = "" // blank beside a code: the code is what was sent
	}
	if strings.Trim(code, blanks) == "" && recovery == "" {
		// Enter on an empty field (or one of the spaces and dashes codes
		// may be typed with) guesses nothing: it is neither counted
		// towards a ban nor written as a failure.
		return q.page(http.StatusBadRequest, "mfa", pageData{Title: "Two-step verification", CSRF: csrf, RD: q.rd(), Error: "Enter the code from your authenticator app, or a recovery code."})
	}
	method := "totp"
	if recovery != "" {
		method = "recovery_code"
	}
	// Codes have their own account key: a password banned by strangers
	// who know the email must not also keep the signed-in owner from a
	// step-up. A sign-in that passed the second factor already counts
	// its step-ups apart: a thief holding a copy of another must not ban
	// the owner's step-ups, which revoking the thief's session needs.
	key, stepUp := authcore.UserMFAKey(p.User.ID), !p.Session.Pending && p.Session.MFA()
	if stepUp {
		key = authcore.UserStepUpKey(p.User.ID, p.Session.SignInKey())
	}
	att, err := q.rt.reg.Begin(q.ctx(), key, clientIP(q.r))
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if att.Crowded() {
		// The address's sign-ins under way fill its quota, with no ban
		// (an office behind one address): nothing was checked or
		// counted, and the page says to try again, as a sign-in's does.
		_ = att.Abandon(q.ctx())
		q.w.Header().Set("Retry-After", "5")
		return q.page(http.StatusTooManyRequests, "mfa", pageData{Title: "Two-step verification", CSRF: csrf, RD: q.rd(), Error: busyMessage})
	}
	// While banned nothing is checked, so no TOTP step or recovery code
	// is spent on an attempt that cannot succeed.
	var token string
	if att.Allowed() {
		token, err = q.passSecondFactor(p, method, code, recovery)
	}
	// An app locked by wrong codes in a row checked nothing: the
	// attempt is not a guess (it counts towards no ban, which would
	// also hold back the owner's recovery code), and the page says what
	// opens it. Such refusals cost nothing to send, so their row is
	// written once a minute per user, and per session for step-ups (the
	// owner's, refused beside a thief's sign-in, has its own), and the
	// answer waits.
	failed := event{action: "mfa.challenge.failure", actor: p.User.ID, subject: p.User.ID, outcome: "failure",
		meta: map[string]string{"method": method}}
	if stepUp {
		failed.meta["step"], failed.meta["session"] = "step_up", p.SessionID
	}
	appLocked := errors.Is(err, authcore.ErrTOTPLocked) && !errors.Is(err, authcore.ErrInvalidCode)
	if appLocked {
		if err := att.Abandon(q.ctx()); err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
		}
		k := deniedKey{user: p.User.ID, reason: "totp_locked"}
		if stepUp {
			k.reason += " " + p.SessionID
		}
		if undo, due := q.rt.denied.due(k, q.rt.auth.Now()); due {
			failed.meta["reason"] = "totp_locked"
			if err := q.audit(failed); err != nil {
				undo()
				return err
			}
		}
		q.rt.login(method, "locked")
		unlock()
		wait(q.ctx(), authcore.MaxFailureDelay)
		return q.page(http.StatusForbidden, "mfa", pageData{Title: "Two-step verification", CSRF: csrf, RD: q.rd(), Error: totpLockedText})
	}
	if !att.Allowed() || errors.Is(err, authcore.ErrInvalidCode) || errors.Is(err, authcore.ErrNotEnrolled) {
		res, ferr := att.Fail(q.ctx())
		if ferr != nil {
			return caddyhttp.Error(http.StatusInternalServerError, ferr)
		}
		evs := lockoutEvents(p.User.ID, res, "mfa")
		if stepUp {
			for _, ev := range evs {
				ev.meta["step"], ev.meta["session"] = "step_up", p.SessionID
			}
		}
		lockedNow := errors.Is(err, authcore.ErrTOTPLocked) // this wrong code locked the app
		if lockedNow {
			evs = append(evs, event{action: "auth.lockout", actorType: "system", subject: p.User.ID, outcome: "success",
				meta: map[string]string{"scope": "totp", "failures": itoa(q.rt.auth.Config().MaxTOTPFailures)}})
		}
		failed.meta["reason"] = "invalid_code"
		if !att.Allowed() {
			failed.meta["reason"] = "locked" // refused unchecked
		}
		undo, due := q.refusalDue(att, failed.action)
		if due {
			evs = append(evs, failed)
		}
		if err := q.audit(evs...); err != nil {
			undo()
			return err
		}
		q.rt.login(method, map[bool]string{true: "failure", false: "locked"}[att.Allowed()])
		unlock()
		wait(q.ctx(), res.Delay)
		status, msg := http.StatusUnauthorized, "That code did not work."
		switch {
		case lockedNow:
			msg = totpLockedText
		case !att.Allowed():
			// Whoever is here holds a session (signed in with the
			// password, or stepping up): saying that codes are held back
			// tells them nothing a guess could use, and keeps the owner
			// from taking a right code for a wrong one.
			status, msg = http.StatusTooManyRequests, codesBannedText
			if stepUp {
				msg = stepUpBannedText
			}
			if att.AddressRefused() {
				msg = addressBannedText
			}
		}
		return q.page(status, "mfa", pageData{Title: "Two-step verification", CSRF: csrf, RD: q.rd(), Error: msg})
	}
	if errors.Is(err, authcore.ErrNoSession) {
		// Ended meanwhile (revoked, or expired): nobody is signed in by
		// the code, and it is not spent. It still counts as an attempt
		// (not a failed guess, for the metrics): whoever can end the
		// session at the right moment (a sign-out sent with the code)
		// must not be able to test codes without spending or counting
		// them.
		res, ferr := att.Fail(q.ctx())
		if ferr != nil {
			return caddyhttp.Error(http.StatusInternalServerError, ferr)
		}
		failed.meta["reason"] = "session_ended"
		if err := q.audit(append(lockoutEvents(p.User.ID, res, "mfa"), failed)...); err != nil {
			return err
		}
		q.rt.login(method, "session_ended")
		q.clearSessionCookie()
		redirect(q.w, portalURL(q.p.app.Prefix, "/login", q.rd()), http.StatusSeeOther)
		return nil
	}
	if err != nil {
		// The store or the rows failed: nothing was spent, and no guess
		// was refused (a wrong code is ErrInvalidCode, even when
		// counting it failed).
		if aerr := att.Abandon(q.ctx()); aerr != nil {
			q.p.logger.Error("taking back a second-factor attempt", zap.String("user", p.User.ID), zap.Error(aerr))
		}
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	// The sign-in is made and recorded: a failure to count it as passed
	// leaves one attempt counted, and must not cost the user the session.
	if err := att.Succeed(q.ctx(), true); err != nil {
		q.p.logger.Error("counting a passed second factor", zap.String("user", p.User.ID), zap.Error(err))
	}
	q.setSessionCookie(token)
	q.rt.login(method, map[bool]string{true: "success", false: "step_up"}[p.Session.Pending])
	redirect(q.w, q.rd(), http.StatusSeeOther)
	return nil
}

// passSecondFactor checks a code from p's authenticator app, or a
// recovery code, and when it passes spends it, rotates p's session into
// a multi-factor one, and writes the rows telling of them, all in one
// store transaction: a crash or a failing row leaves the code unspent
// and the session as it was. It returns the new session's token, or the
// check's error (ErrInvalidCode, ErrTOTPLocked, ErrNotEnrolled), or
// ErrNoSession, or the store's or the rows' failure.
func (q *preq) passSecondFactor(p *authcore.Principal, method, code, recovery string) (string, error) {
	evs := []event{{action: "mfa.challenge.success", actor: p.User.ID, subject: p.User.ID, outcome: "success",
		meta: map[string]string{"method": method}}}
	if !p.Session.Pending {
		// As the failures say: a step-up, and the session it was for.
		evs[0].meta["step"], evs[0].meta["session"] = "step_up", p.SessionID
	}
	if recovery != "" {
		// The count before the code is spent, less that one. Another
		// form that changes the codes meanwhile (new codes, the app
		// turned off) makes this code fail, and the row is not written.
		left, err := q.rt.auth.RecoveryCodesLeft(q.ctx(), p.User.ID)
		if err != nil {
			return "", err
		}
		evs = append(evs, event{action: "mfa.recovery_code.used", actor: p.User.ID, subject: p.User.ID, outcome: "success",
			meta: map[string]string{"remaining": itoa(max(left-1, 0))}})
	}
	if p.Session.Pending {
		evs = append(evs, event{action: "auth.login.success", actor: p.User.ID, subject: p.User.ID, outcome: "success",
			meta: map[string]string{"method": method}})
	}
	rows := make([]audit.Row, len(evs))
	for i, ev := range evs {
		rows[i] = rowFor(q.r, ev)
	}
	var token string
	refused, err := q.rt.changeWithRows(q.ctx(), rows, func(commit authcore.Commit) error {
		var err error
		if recovery != "" {
			token, _, err = q.rt.auth.UseRecoveryCodeWith(q.ctx(), p.User.ID, p.Session.ID, recovery, q.secure, commit)
		} else {
			token, _, err = q.rt.auth.VerifyTOTPWith(q.ctx(), p.User.ID, p.Session.ID, code, q.secure, commit)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("writing audit rows %s (the code is not spent): %w", evs[0].action, err)
	}
	return token, refused
}

// codesBannedText and addressBannedText answer a code refused unchecked
// while the user's codes, or the client's address, are banned.
const (
	codesBannedText   = "Too many wrong codes: codes cannot be checked for a few minutes, and this one was not. Try again later."
	addressBannedText = "Too many failed attempts from your network: codes cannot be checked for a few minutes, and this one was not. Try again later."
	stepUpBannedText  = codesBannedText + " If you did not type wrong codes here, someone may hold a copy of this session: sign out, which ends it, then sign in again."
)

// totpLockedText tells the owner of an app locked by wrong codes what
// opens it. Whoever made the wrong guesses had the password or a session.
const totpLockedText = "Too many wrong codes in a row: codes from your authenticator app are refused until you use a recovery code, or an administrator unlocks your account. If you did not enter those codes, someone else knows your password: change it once you are in."

// totpPage shows TOTP status, or starts an enrolment.
func (q *preq) totpPage() error {
	p, err := q.signedIn()
	if p == nil || err != nil {
		return err
	}
	d := pageData{Title: "Authenticator app", CSRF: q.rt.csrf.Token(sessionBinding(p)), RD: q.givenRD()}
	has, err := q.rt.auth.HasTOTP(q.ctx(), p.User.ID)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if has {
		return q.enrolledPage(p, d, http.StatusOK)
	}
	return q.enrolPage(p, d, http.StatusOK)
}

// enrolledPage is the authenticator page of a user who has one: codes
// left, and the forms to make new ones or turn it off.
func (q *preq) enrolledPage(p *authcore.Principal, d pageData, status int) error {
	d.Enrolled, d.Email = true, p.User.Email // Email: for password managers
	left, digest, err := q.rt.auth.RecoveryCodeSet(q.ctx(), p.User.ID)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	d.CodesLeft, d.CodeSet = left, q.rt.csrf.Token(codeSetBinding(digest))
	return q.page(status, "totp", d)
}

// codeSetBinding binds the form for new recovery codes to the set it
// was shown with: the form carries a MAC of the set's digest under the
// server's key (as a CSRF token is of a session), so that it tells
// nothing of the codes.
func codeSetBinding(digest string) string { return "r:" + digest }

// totpReauth asks for the password again before new recovery codes or
// turning the authenticator off, as for setting one up: a stolen cookie
// of a session whose second factor is fresh must not mint second
// factors that outlast it (each code is a step-up), nor lock the owner
// out. It reports whether to go on.
func (q *preq) totpReauth(p *authcore.Principal) (bool, error) {
	again := func(status int, msg string) error {
		return q.enrolledPage(p, pageData{Title: "Authenticator app", CSRF: q.rt.csrf.Token(sessionBinding(p)), Error: msg}, status)
	}
	password := q.r.PostFormValue("password")
	if password == "" {
		// Asked without counting a failure.
		return false, again(http.StatusUnauthorized, "Enter your password to do this.")
	}
	return q.reauth(p, password, "That password is not right.", again)
}

// enrolPage shows the enrolment that the form sent back names (its
// "enrolment" field), or a new one on a visit: each visit has its own
// secret, so that a thief's visit with a copy of the session cookie does
// not show the one the owner is scanning (authcore.BeginTOTP).
func (q *preq) enrolPage(p *authcore.Principal, d pageData, status int) error {
	enr, err := q.rt.auth.TOTPEnrolmentFor(q.ctx(), p.User, p.Session.ID, q.r.PostFormValue("enrolment"), requestHost(q.r))
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	// The QR code is our own data: URI; html/template would blank it.
	d.QR, d.Secret, d.URI, d.Enrolment = template.URL(enr.QRCode), enr.Secret, enr.URL, enr.Page
	d.Email = p.User.Email // for password managers
	return q.page(status, "totp", d)
}

// totpSubmit confirms an enrolment with a code and shows the recovery
// codes once. The session that proved the code counts as multi-factor.
func (q *preq) totpSubmit() error {
	p, err := q.signedIn()
	if p == nil || err != nil {
		return err
	}
	d := pageData{Title: "Authenticator app", CSRF: q.rt.csrf.Token(sessionBinding(p)), RD: q.givenRD()}
	if !q.rt.csrf.Valid(sessionBinding(p), q.r.PostFormValue("csrf_token")) {
		return q.message(http.StatusForbidden, "Request refused", "The form expired. Please go back and try again.", q.p.app.Prefix+"/account/totp")
	}
	// Enrolling over an existing authenticator would replace it and mark
	// this session multi-factor: a stale or stolen session could take the
	// account over. Turning it off first needs a fresh second factor.
	has, err := q.rt.auth.HasTOTP(q.ctx(), p.User.ID)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if has {
		return q.message(http.StatusConflict, "Already on", "An authenticator app is already set up. Turn it off first to set up another.", q.p.app.Prefix+"/account/totp")
	}
	// The finished enrolment counts as a fresh second factor and binds the
	// account to this authenticator: a session cookie alone, stolen or
	// left signed in, must not be enough, however fresh (the thief's app
	// would lock the owner out, and the rotated session sign them out).
	// So the password, every time (checked before the code, so a wrong
	// password spends no code), as Authelia asks for an emailed code.
	if q.r.PostFormValue("password") == "" {
		// Asked without counting a failure.
		d.Error = "Enter your password to turn this on."
		return q.enrolPage(p, d, http.StatusUnauthorized)
	}
	again := func(status int, msg string) error {
		d.Error = msg
		return q.enrolPage(p, d, status)
	}
	if ok, err := q.reauth(p, q.r.PostFormValue("password"), "That password is not right.", again); !ok {
		return err
	}
	// The app, the session rotated into a multi-factor one, and the row
	// are one transaction: no app is set up whose recovery codes nobody
	// saw.
	var codes []string
	var token string
	// The session it was set up in, which goes on under a new id (as a
	// step-up's row names its session).
	ev := event{action: "mfa.totp.enrolled", actor: p.User.ID, subject: p.User.ID, outcome: "success",
		meta: map[string]string{"session": p.SessionID}}
	err, aerr := q.rt.changeWithRow(q.ctx(), rowFor(q.r, ev), func(commit authcore.Commit) error {
		var err error
		codes, token, _, err = q.rt.auth.ConfirmTOTPWith(q.ctx(), p.User.ID, p.Session.ID, q.r.PostFormValue("enrolment"), q.r.PostFormValue("code"), q.secure, commit)
		return err
	})
	if aerr != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s (nothing was set up): %w", ev.action, aerr))
	}
	if errors.Is(err, authcore.ErrInvalidCode) {
		d.Error = "That code did not work. Check the time on your device and try again."
		return q.enrolPage(p, d, http.StatusBadRequest)
	}
	if errors.Is(err, authcore.ErrNoPendingEnrolment) || errors.Is(err, authcore.ErrNoSession) {
		// Finished meanwhile: the same form sent twice, or another tab
		// (whose commit replaced this session, too), or another device's
		// session with its own secret. The app the user just added may
		// be the one set up; a new secret, or being told that nothing
		// was set up, would have them remove it.
		has, herr := q.rt.auth.HasTOTP(q.ctx(), p.User.ID)
		if herr != nil {
			return caddyhttp.Error(http.StatusInternalServerError, herr)
		}
		if has {
			return q.message(http.StatusConflict, "Already on",
				"Your authenticator app is set up: this form was sent twice, or another of your devices set one up first. Check that the entry you just added shows codes that work; if they do not, it is not the one set up: remove it, and keep the other. If you did not see your recovery codes, make new ones here.",
				q.p.app.Prefix+"/account/totp")
		}
		if errors.Is(err, authcore.ErrNoSession) {
			// Signed out or revoked meanwhile: nothing was set up.
			q.clearSessionCookie()
			return q.message(http.StatusUnauthorized, "Signed out",
				"Your session ended before the set-up finished, so nothing was set up: remove the entry from your app, sign in, and set it up again.", q.p.app.Prefix+"/login")
		}
		// Expired: the secret this page showed is void.
		d.Error = "This set-up expired. Remove the old entry from your app and scan the new code below."
		return q.enrolPage(p, d, http.StatusBadRequest)
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	// The enrolment stands whatever happens here: the user's other
	// password-only sessions merely keep their longer end if it fails.
	if _, err := q.rt.auth.PendUnprovenSessions(q.ctx(), p.User.ID); err != nil {
		q.p.logger.Error("limiting the user's sessions from before the second factor", zap.String("user", p.User.ID), zap.Error(err))
	}
	q.setSessionCookie(token)
	d.Codes = codes
	return q.page(http.StatusOK, "totp", d)
}

// requireFresh sends the browser to the MFA page unless the session
// passed a second factor within freshFactor; it reports whether to go on.
func (q *preq) requireFresh(p *authcore.Principal, back string) bool {
	s := p.Session
	if s.MFA() && q.rt.auth.Now().Sub(s.MFAAt) <= freshFactor {
		return true
	}
	redirect(q.w, portalURL(q.p.app.Prefix, "/mfa", back), http.StatusSeeOther)
	return false
}

// totpChange is the signed-in user of a form that changes the second
// factor (turning it off, new recovery codes): with a fresh second
// factor, the fields the form must have (answered 400 without them,
// before the password is checked), and the password typed again. When
// nil, it has answered.
func (q *preq) totpChange(required ...string) (*authcore.Principal, error) {
	back := q.p.app.Prefix + "/account/totp"
	p, err := q.formPrincipal(back)
	if p == nil {
		return nil, err
	}
	if !q.requireFresh(p, back) {
		return nil, nil
	}
	for _, name := range required {
		if q.r.PostFormValue(name) == "" {
			return nil, q.message(http.StatusBadRequest, "Incomplete form", "This form was sent without all its fields, so nothing was changed. Reload the page and try again.", back)
		}
	}
	if ok, err := q.totpReauth(p); !ok {
		return nil, err
	}
	return p, nil
}

// totpRemove turns TOTP off (fresh second factor and the password
// required).
func (q *preq) totpRemove() error {
	p, err := q.totpChange()
	if p == nil {
		return err
	}
	// The row and the removal in one transaction; an app removed already
	// (the form sent twice) is neither removed nor recorded again.
	ev := event{action: "mfa.totp.removed", actor: p.User.ID, subject: p.User.ID, outcome: "success"}
	err, aerr := q.rt.changeWithRow(q.ctx(), rowFor(q.r, ev), func(commit authcore.Commit) error {
		return q.rt.auth.RemoveTOTPWith(q.ctx(), p.User.ID, commit)
	})
	if aerr != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s (the app is not removed): %w", ev.action, aerr))
	}
	if err != nil && !errors.Is(err, authcore.ErrNotEnrolled) {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	redirect(q.w, q.p.app.Prefix+"/account", http.StatusSeeOther)
	return nil
}

// recoveryCodesChangedText answers a form for new recovery codes whose
// set is no longer the one stored.
const recoveryCodesChangedText = "Your recovery codes changed after this page was shown: new ones were made (perhaps this form was sent twice) or one was used. The codes that work are the last ones you were shown; nothing was changed now. To make a new set anyway, enter your password again."

// recoveryRegenerate replaces the recovery codes (fresh second factor
// and the password required) and shows the new ones once.
func (q *preq) recoveryRegenerate() error {
	p, err := q.totpChange("code_set")
	if p == nil {
		return err
	}
	unlock := accountChange.lock(p.User.ID)
	defer unlock()
	// The new codes and their row in one transaction: the old codes
	// stop working only when the row is stored. Only the set the form
	// was shown with is replaced: a form sent again (a reload of the
	// page listing the new codes, Back and send) must not put a set
	// nobody saw behind the one the user saved.
	var codes []string
	ev := event{action: "mfa.recovery_code.regenerated", actor: p.User.ID, subject: p.User.ID, outcome: "success"}
	err, aerr := q.rt.changeWithRow(q.ctx(), rowFor(q.r, ev), func(commit authcore.Commit) error {
		var err error
		shown := func(digest string) bool {
			return q.rt.csrf.Valid(codeSetBinding(digest), q.r.PostFormValue("code_set"))
		}
		codes, err = q.rt.auth.RegenerateRecoveryCodesWith(q.ctx(), p.User.ID, shown, commit)
		return err
	})
	if aerr != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s (the codes are as they were): %w", ev.action, aerr))
	}
	if errors.Is(err, authcore.ErrNotEnrolled) {
		return q.message(http.StatusBadRequest, "No authenticator app", "Recovery codes come with an authenticator app.", q.p.app.Prefix+"/account/totp")
	}
	if errors.Is(err, authcore.ErrRecoveryCodesChanged) {
		return q.enrolledPage(p, pageData{Title: "Authenticator app", CSRF: q.rt.csrf.Token(sessionBinding(p)), Error: recoveryCodesChangedText}, http.StatusConflict)
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return q.page(http.StatusOK, "totp", pageData{Title: "Recovery codes", Codes: codes})
}

// refusalDue reports whether the failure row of att is due: always for a
// checked credential (a password at a banned account too: it counts for
// the address as a wrong one does, so its rows are as bounded, and it
// must take a wrong password's time, commit included); for one refused
// unchecked (a ban of the address or of codes, or a quota in flight),
// once a minute per refusing account or address, action and ban (a
// refused sign-in's row does not stand for a refused code's, nor one
// ban's for the next after an unlock). Those cost the
// sender nothing (it need not even wait for the answer), so a row for
// each would let anyone grow the store as fast as they can send;
// sigra_logins_total{result="locked"} still counts every one. undo is
// deniedLog.due's, to call when the row could not be written.
func (q *preq) refusalDue(att *authcore.Attempt, action string) (undo func(), due bool) {
	if att.Checked() {
		return noUndo, true
	}
	ban := att.BannedUntil().UTC().Format(time.RFC3339Nano) // zero for a quota in flight
	return q.rt.denied.due(deniedKey{user: att.RefusedBy(), reason: "refused " + action + " until " + ban}, q.rt.auth.Now())
}

// lockoutEvents is the auth.lockout row of a failure that started a ban
// (none for one that did not), to be written in one commit with the
// failure's own row: a commit more for the failure that bans would tell
// a prober, by its time, which of their tries banned the account. Its
// scope names the ban: account (the password's key) or mfa (the
// codes'), ip, or both.
func lockoutEvents(subject string, res authcore.FailResult, account string) []event {
	if !res.Lockout() {
		return nil
	}
	meta := map[string]string{"until": res.Until.UTC().Format(time.RFC3339)}
	switch {
	case res.AccountLocked && res.IPLocked:
		meta["scope"] = account + ",ip"
	case res.AccountLocked:
		meta["scope"] = account
	default:
		meta["scope"] = "ip"
	}
	return []event{{action: "auth.lockout", actorType: "system", subject: subject, outcome: "success", meta: meta}}
}
