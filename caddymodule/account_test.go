package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// submitForm opens the page at path, checks that it holds the form with
// data-sigra hook and is not cached, and posts fields with its CSRF token.
func (e *env) submitForm(path, hook string, fields url.Values) (*http.Response, string) {
	e.t.Helper()
	resp, page := e.get(path, map[string]string{"Accept": "text/html"})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-sigra="`+hook+`"`) {
		e.t.Fatalf("%s: status %d, no %s form\n%s", path, resp.StatusCode, hook, page)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		e.t.Errorf("%s: Cache-Control %q; want no-store", path, got)
	}
	fields.Set("csrf_token", csrfFrom(e.t, page))
	return e.postForm(path, fields, nil)
}

// changePassword posts the change-password form.
func (e *env) changePassword(current, next, confirm string) (*http.Response, string) {
	e.t.Helper()
	return e.submitForm("/.sigra/account/password", "password-form",
		url.Values{"current_password": {current}, "new_password": {next}, "confirm_password": {confirm}})
}

// A user changes their password from the account pages: the old one stops
// working, every other session ends (a stolen cookie too), and this
// browser stays signed in, in a new session.
func TestChangePassword(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	other := e.browser()
	other.mustLogin("ann@example.com")
	before := e.sessionCookie()

	const next = "a much longer new passphrase"
	resp, body := e.changePassword(testPassword, next, next)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Password changed") {
		t.Fatalf("change password: status %d\n%s", resp.StatusCode, body)
	}
	if after := e.sessionCookie(); after == "" || after == before {
		t.Errorf("session cookie after the change %q; want a new one", after)
	}
	if code := e.statusAs(e.sessionCookie(), "/x"); code != http.StatusOK {
		t.Errorf("this browser after the change: status %d; want 200", code)
	}
	for name, token := range map[string]string{"the other browser": other.sessionCookie(), "this browser's old cookie": before} {
		if code := e.statusAs(token, "/x"); code != http.StatusUnauthorized {
			t.Errorf("%s after the change: status %d; want 401", name, code)
		}
	}
	if resp := e.browser().login("ann@example.com", testPassword, "/"); resp.StatusCode == http.StatusSeeOther {
		t.Error("the old password still signs in")
	}
	if resp := e.browser().login("ann@example.com", next, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-in with the new password: status %d; want 303", resp.StatusCode)
	}
	rows := e.auditRows("auth.password_change.success")
	if len(rows) != 1 || rows[0].ActorID != u.ID || rows[0].SubjectID != u.ID || rows[0].Outcome != "success" {
		t.Errorf("auth.password_change.success rows %+v; want one, by and about the user", rows)
	}
}

// Each refusal changes nothing; only a wrong current password counts as
// a failed attempt.
func TestChangePasswordRefusals(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("bob@example.com")
	e.mustLogin("bob@example.com")
	const next = "a much longer new passphrase"
	for _, tc := range []struct {
		name                   string
		current, next, confirm string
		status                 int
		says                   string
	}{
		{"confirmation differs", testPassword, next, next + "!", http.StatusBadRequest, "differ"},
		{"too short", testPassword, "short", "short", http.StatusBadRequest, "The new password must be at least 10 characters."},
		{"spaces only", testPassword, "            ", "            ", http.StatusBadRequest, "The new password must not be spaces only."},
		{"a NUL", testPassword, "abcdefghij\x00k", "abcdefghij\x00k", http.StatusBadRequest, "The new password must not contain control characters"},
		{"empty current", "", next, next, http.StatusBadRequest, "current password"},
		{"wrong current", "not the password", next, next, http.StatusUnauthorized, "not right"},
		{"the same as the current", testPassword, testPassword, testPassword, http.StatusBadRequest, "same as the current"},
	} {
		resp, body := e.changePassword(tc.current, tc.next, tc.confirm)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
			t.Errorf("%s: status %d; want %d and a page saying %q\n%s", tc.name, resp.StatusCode, tc.status, tc.says, body)
		}
	}
	if n := len(e.auditRows("auth.login.failure")); n != 1 {
		t.Errorf("%d auth.login.failure rows; want 1 (the wrong current password)", n)
	}
	if code := e.statusAs(e.sessionCookie(), "/x"); code != http.StatusOK {
		t.Errorf("after the refusals: status %d; want the session kept", code)
	}
	if resp := e.browser().login("bob@example.com", testPassword, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the password changed after refusals: sign-in status %d", resp.StatusCode)
	}
	if len(e.auditRows("auth.password_change.success")) != 0 {
		t.Error("a refused change wrote auth.password_change.success")
	}

	// Without the form's token, or signed out, nothing happens either.
	resp, _ := e.postForm("/.sigra/account/password", url.Values{"current_password": {testPassword},
		"new_password": {next}, "confirm_password": {next}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("no CSRF token: status %d; want 403", resp.StatusCode)
	}
	anon := e.browser()
	resp, _ = anon.get("/.sigra/account/password", map[string]string{"Accept": "text/html"})
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/.sigra/login") {
		t.Errorf("signed out: status %d, Location %q; want the sign-in page", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// A stranger who bans the sign-in of an email does not keep its owner,
// signed in, from changing the password; the owner's own wrong re-checks
// ban the re-check alone, and say so. A user id typed as the email is
// nobody's account: its rows name no subject.
func TestReauthHasItsOwnBan(t *testing.T) {
	useFakeClock(t)
	e := startCaddy(t, "regulation {\n max_retries 3\n }", "sigra_gate")
	u := e.addUser("own@example.com")
	e.mustLogin("own@example.com")
	for i := range 3 {
		if r := e.browser().login("own@example.com", fmt.Sprint("a stranger's guess ", i), "/"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("stranger's guess %d: status %d; want 401", i, r.StatusCode)
		}
	}
	if r := e.browser().login("own@example.com", testPassword, "/"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the right password while the sign-in is banned: status %d; want 401", r.StatusCode)
	}
	const next = "a much longer new passphrase"
	if resp, body := e.changePassword(testPassword, next, next); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Password changed") {
		t.Fatalf("the owner changing the password during the stranger's ban: status %d\n%s", resp.StatusCode, body)
	}

	for i := range 3 {
		if resp, body := e.changePassword(fmt.Sprint("the owner's slip ", i), next+"!", next+"!"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not right") {
			t.Fatalf("wrong current password %d: status %d; want 401, not right\n%s", i, resp.StatusCode, body)
		}
	}
	if resp, body := e.changePassword(next, next+"!", next+"!"); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Too many wrong passwords") {
		t.Errorf("the right password after three wrong ones: status %d; want 429, too many\n%s", resp.StatusCode, body)
	}

	for i := range 3 {
		if r := e.browser().login(u.ID, fmt.Sprint("guess ", i), "/"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("the user id as the email, guess %d: status %d; want 401", i, r.StatusCode)
		}
	}
	scopes := map[string]int{}
	for _, r := range e.auditRows("auth.lockout") {
		scopes[r.Metadata["scope"]+" "+r.SubjectID]++
	}
	want := map[string]int{"account " + u.ID: 1, "reauth " + u.ID: 1, "account ": 1}
	if !maps.Equal(scopes, want) {
		t.Errorf("auth.lockout rows by scope and subject %v; want %v", scopes, want)
	}
}

// The row comes first: when it cannot be written, the password stays.
func TestChangePasswordAuditFailsClosed(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("fay@example.com")
	e.mustLogin("fay@example.com")
	e.failAudit("auth.password_change.success")
	const next = "a much longer new passphrase"
	if resp, _ := e.changePassword(testPassword, next, next); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("change with a failing audit row: status %d; want 500", resp.StatusCode)
	}
	if code := e.statusAs(e.sessionCookie(), "/x"); code != http.StatusOK {
		t.Errorf("after the failed row: status %d; want the session kept", code)
	}
	if resp := e.browser().login("fay@example.com", next, "/"); resp.StatusCode == http.StatusSeeOther {
		t.Error("the new password signs in although its row was never written")
	}
}

// Signing the other sessions out with a failing audit row ends none of
// them, and says so with a 500: a user cutting off a thief must not be
// told it worked. The session that sent it goes on as it was.
func TestSignOutOthersAuditFailsClosed(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("gus@example.com")
	other := e.browser()
	other.mustLogin("gus@example.com")
	e.mustLogin("gus@example.com")
	e.failAudit("session.revoked_others")
	_, page := e.get("/.sigra/account", nil)
	resp, body := e.postForm("/.sigra/account/sessions/revoke-others", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil)
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(body, "signed out") {
		t.Errorf("sign-out of the others with a failing audit row: status %d; want 500, not saying they are signed out\n%s", resp.StatusCode, body)
	}
	if code := e.statusAs(other.sessionCookie(), "/x"); code != http.StatusOK {
		t.Errorf("the other session after the failed row: status %d; want it still signed in (nothing ended unrecorded)", code)
	}
	if code := e.statusAs(e.sessionCookie(), "/x"); code != http.StatusOK {
		t.Errorf("the session that sent the form: status %d; want it kept", code)
	}
}

// The session that goes on keeps its second factor, but not a fresher
// one: the change proves the password, not the authenticator.
func TestChangePasswordKeepsSecondFactorTime(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("cy@example.com")
	e.mustLogin("cy@example.com")
	enrolTOTP(t, e, fake.Now())
	mfaAt := e.rt().mustPrincipal(t, e.sessionCookie()).Session.MFAAt
	fake.Advance(10 * time.Minute)
	const next = "a much longer new passphrase"
	if resp, body := e.changePassword(testPassword, next, next); resp.StatusCode != http.StatusOK {
		t.Fatalf("change password: status %d\n%s", resp.StatusCode, body)
	}
	s := e.rt().mustPrincipal(t, e.sessionCookie()).Session
	if s.Pending || !s.MFA() || !s.MFAAt.Equal(mfaAt) || !s.AuthTime.Equal(fake.Now().UTC()) {
		t.Errorf("session after the change: pending %v, mfa %v, MFAAt %v (was %v), AuthTime %v (now %v); want multi-factor, the same MFAAt, a new AuthTime",
			s.Pending, s.MFA(), s.MFAAt, mfaAt, s.AuthTime, fake.Now().UTC())
	}
}

// mustPrincipal resolves a session cookie value.
func (rt *runtime) mustPrincipal(t *testing.T, token string) *authcore.Principal {
	t.Helper()
	p, err := rt.auth.Authenticate(context.Background(), token)
	if err != nil {
		t.Fatalf("resolving the session: %v", err)
	}
	return p
}

// deleteAccount posts the delete-account form.
func (e *env) deleteAccount(password, confirm string) (*http.Response, string) {
	e.t.Helper()
	return e.submitForm("/.sigra/account/delete", "account-delete-form", url.Values{"password": {password}, "confirm": {confirm}})
}

// A user deletes their account: it is gone with every session, the row
// says so, and a refused attempt deletes nothing.
func TestDeleteAccount(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("dee@example.com")
	e.mustLogin("dee@example.com")
	other := e.browser()
	other.mustLogin("dee@example.com")

	for _, tc := range []struct {
		name, password, confirm string
		status                  int
	}{
		{"not confirmed", testPassword, "", http.StatusBadRequest},
		{"wrong password", "not the password", "yes", http.StatusUnauthorized},
	} {
		if resp, body := e.deleteAccount(tc.password, tc.confirm); resp.StatusCode != tc.status {
			t.Errorf("%s: status %d; want %d\n%s", tc.name, resp.StatusCode, tc.status, body)
		}
	}
	if _, err := e.rt().store.UserByID(context.Background(), u.ID); err != nil {
		t.Fatalf("after refused deletions: %v; want the user kept", err)
	}
	// Without the form's token nothing happens either.
	if resp, _ := e.postForm("/.sigra/account/delete", url.Values{"password": {testPassword}, "confirm": {"yes"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("no CSRF token: status %d; want 403", resp.StatusCode)
	}

	token := e.sessionCookie()
	resp, body := e.deleteAccount(testPassword, "yes")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Account deleted") {
		t.Fatalf("delete: status %d\n%s", resp.StatusCode, body)
	}
	if e.sessionCookie() != "" {
		t.Error("the session cookie is still set")
	}
	if _, err := e.rt().store.UserByID(context.Background(), u.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("UserByID after deletion: %v; want ErrNotFound", err)
	}
	for name, tok := range map[string]string{"this browser's cookie": token, "the other browser": other.sessionCookie()} {
		if code := e.statusAs(tok, "/x"); code != http.StatusUnauthorized {
			t.Errorf("%s after deletion: status %d; want 401", name, code)
		}
	}
	if resp := e.browser().login("dee@example.com", testPassword, "/"); resp.StatusCode == http.StatusSeeOther {
		t.Error("the deleted account still signs in")
	}
	rows := e.auditRows("account.deletion_execute")
	if len(rows) != 1 || rows[0].SubjectID != u.ID || rows[0].ActorID != u.ID || rows[0].Outcome != "success" {
		t.Errorf("account.deletion_execute rows %+v; want one, by and about the user", rows)
	}
}

// The row comes first: when it cannot be written, nothing is deleted.
func TestDeleteAccountAuditFailsClosed(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("eve@example.com")
	e.mustLogin("eve@example.com")
	e.failAudit("account.deletion_execute")
	if resp, _ := e.deleteAccount(testPassword, "yes"); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("delete with a failing audit row: status %d; want 500", resp.StatusCode)
	}
	if _, err := e.rt().store.UserByID(context.Background(), u.ID); err != nil {
		t.Errorf("after the failed row: %v; want the user kept", err)
	}
	if code := e.statusAs(e.sessionCookie(), "/x"); code != http.StatusOK {
		t.Errorf("after the failed row: status %d; want the session kept", code)
	}
}

// The only administrator cannot delete themselves; with another one, they
// can. A user with a second factor proves it again first.
func TestDeleteAccountGuards(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	root := e.addUser("root@example.com", "admins")
	e.mustLogin("root@example.com")
	secret, _ := enrolTOTP(t, e, fake.Now())

	fake.Advance(freshFactor + time.Minute)
	resp, _ := e.get("/.sigra/account/delete", map[string]string{"Accept": "text/html"})
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/.sigra/mfa?rd=") {
		t.Fatalf("delete page with an old second factor: status %d, Location %q; want the MFA page", resp.StatusCode, loc)
	}
	if resp := e.secondFactor("code", refTOTP(t, secret, fake.Now())); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("second factor: status %d", resp.StatusCode)
	}

	// The page says so at once, and a post is refused too.
	if resp, body := e.get("/.sigra/account/delete", map[string]string{"Accept": "text/html"}); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "only administrator") {
		t.Fatalf("the last admin's delete page: status %d; want 409\n%s", resp.StatusCode, body)
	}
	_, page := e.get("/.sigra/account", nil)
	resp, body := e.postForm("/.sigra/account/delete", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}, "confirm": {"yes"}}, nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "only administrator") {
		t.Fatalf("the last admin deleting themselves: status %d; want 409\n%s", resp.StatusCode, body)
	}
	if _, err := e.rt().store.UserByID(context.Background(), root.ID); err != nil {
		t.Fatalf("the last admin: %v; want kept", err)
	}
	e.addUser("ops@example.com", "admins")
	if resp, body := e.deleteAccount(testPassword, "yes"); resp.StatusCode != http.StatusOK {
		t.Errorf("an admin with another admin: status %d; want 200\n%s", resp.StatusCode, body)
	}
}

// A user with a second factor proves it again before revoking another
// session or signing out all the others: a stolen cookie and the
// password, without the factor, must not keep signing the owner out of
// each session they sign in with (624 times in 75 s, in a review).
func TestRevokingOthersNeedsFreshSecondFactor(t *testing.T) {
	fake, e, u, secret, _ := startEnrolled(t, "", "fay@example.com")
	// The owner's other session, signed in with both factors.
	_, other := mustSession(t, e, u)
	otherID, _ := authcore.TokenID(other)
	if _, _, err := e.rt().auth.CompleteSecondFactor(context.Background(), otherID, authcore.AMROTP, false); err != nil {
		t.Fatal(err)
	}
	_, page := e.get("/.sigra/account", nil)
	ids := regexp.MustCompile(`data-session-id="([^"]+)"`).FindAllStringSubmatch(page, -1)
	var otherListed string
	for _, m := range ids {
		if m[1] != e.rt().mustPrincipal(t, e.sessionCookie()).SessionID {
			otherListed = m[1]
		}
	}
	if otherListed == "" {
		t.Fatalf("the account page lists no other session:\n%s", page)
	}
	fake.Advance(freshFactor + time.Minute)
	sessionsNow := func() int {
		ss, err := e.rt().store.UserSessions(context.Background(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return len(ss)
	}
	before := sessionsNow()
	for path, form := range map[string]url.Values{
		"/.sigra/account/sessions/revoke":        {"csrf_token": {csrfFrom(t, page)}, "session": {otherListed}, "password": {testPassword}},
		"/.sigra/account/sessions/revoke-others": {"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}},
	} {
		resp, _ := e.postForm(path, form, nil)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/.sigra/mfa?rd=%2F.sigra%2Faccount" {
			t.Errorf("%s with an old second factor: status %d, Location %q; want the MFA page, back to the account", path, resp.StatusCode, loc)
		}
		if n := sessionsNow(); n != before {
			t.Errorf("%s with an old second factor: %d sessions; want %d, none ended", path, n, before)
		}
	}
	if rows := e.auditRows("session.*"); len(rows) != 0 {
		t.Errorf("rows %+v; want none", rows)
	}
	if resp := e.secondFactor("code", refTOTP(t, secret, fake.Now())); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("second factor: status %d", resp.StatusCode)
	}
	_, page = e.get("/.sigra/account", nil)
	resp, body := e.postForm("/.sigra/account/sessions/revoke-others", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Your other sessions are signed out.") {
		t.Fatalf("with a fresh second factor: status %d; want 200\n%s", resp.StatusCode, body)
	}
	if n := sessionsNow(); n != 1 {
		t.Errorf("%d sessions after; want this one alone", n)
	}
}

// A thief holding a copy of the owner's session, past its fresh second
// factor, cannot ban the owner's step-ups by guessing codes: a session
// that passed the factor counts its step-ups apart. So the owner steps
// up and revokes the thief's session, however many wrong codes the thief
// sent (before, five banned the codes of the whole account, recovery
// codes included).
func TestThiefCannotBanTheOwnersStepUp(t *testing.T) {
	fake, thief, u, secret, codes := startEnrolled(t, "", "fay@example.com")
	owner := thief.browser()
	fake.Advance(time.Minute)
	if resp := owner.login("fay@example.com", testPassword, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the owner's sign-in: status %d", resp.StatusCode)
	}
	if resp := owner.secondFactor("code", refTOTP(t, secret, fake.Now())); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the owner's code: status %d", resp.StatusCode)
	}
	thiefID := thief.rt().mustPrincipal(t, thief.sessionCookie()).SessionID
	fake.Advance(freshFactor + time.Minute)

	last := 0
	for range thief.rt().reg.Config().MaxRetries + 1 {
		last = thief.secondFactor("code", "000000").StatusCode
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("the thief's last wrong code: status %d; want 429, its step-ups banned", last)
	}
	if until, err := thief.rt().reg.CodesBan(context.Background(), u.ID); err != nil || until.IsZero() {
		t.Errorf("CodesBan: %v, %v; want the thief's session's ban shown", until, err)
	}
	// The owner's recovery code and app code still pass in their session.
	if resp := owner.secondFactor("recovery_code", codes[0]); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the owner's recovery code after the thief's guesses: status %d; want 303", resp.StatusCode)
	}
	_, page := owner.get("/.sigra/account", nil)
	resp, body := owner.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {thiefID}, "password": {testPassword}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/.sigra/account" {
		t.Fatalf("the owner's revoke of the thief's session: status %d, Location %q; want 303 to the account\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if r, _ := thief.get("/x", map[string]string{"Accept": "application/json"}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the thief after the owner's revoke: status %d; want 401", r.StatusCode)
	}
	// An unlock clears the sessions' step-up bans too.
	if _, err := doUser(context.Background(), thief.rt(), "admins", userRequest{Op: "unlock", User: u.ID}, nil, ""); err != nil {
		t.Fatal(err)
	}
	if until, _ := thief.rt().reg.CodesBan(context.Background(), u.ID); !until.IsZero() {
		t.Errorf("CodesBan after an unlock: %v; want none", until)
	}
}

// Step-up codes count per sign-in, not per session id: a renewal (here
// a sign-out of the others, in the fresh window) keeps the count, so it
// mints no new quota of guesses; and a copy of the session shares it,
// so the page says how to end a copy: sign out there.
func TestStepUpCountsBySignIn(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "", "fay@example.com")
	copied := e.browser()
	base, _ := url.Parse(e.base)
	copied.client.Jar.SetCookies(base, []*http.Cookie{{Name: "sigra_session", Value: e.sessionCookie(), Path: "/"}})
	for range 3 {
		if code := copied.secondFactor("code", "000000").StatusCode; code != http.StatusUnauthorized {
			t.Fatalf("a wrong code: status %d; want 401", code)
		}
	}
	_, page := e.get("/.sigra/account", nil)
	if resp, body := e.postForm("/.sigra/account/sessions/revoke-others", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-out of the others: status %d\n%s", resp.StatusCode, body)
	}
	for range 2 {
		e.secondFactor("code", "000000")
	}
	fake.Advance(30 * time.Second)
	_, page = e.get("/.sigra/mfa", nil)
	resp, body := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "sign out, which ends it") {
		t.Errorf("a right code after five wrong ones across the renewal: status %d; want 429, saying how to end a copy\n%s", resp.StatusCode, body)
	}
	for _, action := range []string{"mfa.challenge.failure", "auth.lockout"} {
		rows := e.auditRows(action)
		if len(rows) == 0 || rows[0].Metadata["step"] != "step_up" || rows[0].Metadata["session"] == "" {
			t.Errorf("%s rows %+v; want step-ups naming their session", action, rows)
		}
	}
}

// A second factor set up between a renewal's checks and its transaction
// (another device finishing a TOTP set-up) refuses the renewal: the
// session, which passed none, must not go on or change the password as
// if it had. The answer says so (409); nothing changes, and the
// password change leaves its failure row.
func TestRenewalRefusedWhenAFactorCameMeanwhile(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("ned@example.com")
	e.mustLogin("ned@example.com")
	e.browser().mustLogin("ned@example.com")
	ctx := context.Background()
	setFactor := func(on bool) {
		t.Helper()
		if _, err := e.rt().store.UpdateUser(ctx, u.ID, false, func(x *authcore.User) error { x.SecondFactor = on; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	// Just before the row and the change are written, the factor lands.
	hook := func(r audit.Row) error {
		if r.Outcome == "success" && (r.Action == "session.revoked_others" || r.Action == "auth.password_change.success") {
			setFactor(true)
		}
		return nil
	}
	e.rt().failRecord.Store(&hook)
	t.Cleanup(func() { e.rt().failRecord.Store(nil) })
	sessions := func() int {
		ss, err := e.rt().store.UserSessions(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return len(ss)
	}

	_, page := e.get("/.sigra/account", nil)
	resp, body := e.postForm("/.sigra/account/sessions/revoke-others", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "An authenticator app was set up for your account meanwhile") {
		t.Errorf("sign-out of the others: status %d; want 409 saying why\n%s", resp.StatusCode, body)
	}
	if n := sessions(); n != 2 {
		t.Errorf("%d sessions after the refusal; want 2", n)
	}
	if rows := e.auditRows("session.revoked_others"); len(rows) != 0 {
		t.Errorf("session.revoked_others rows %+v; want none", rows)
	}

	setFactor(false)
	const next = "a much longer new passphrase"
	resp, body = e.changePassword(testPassword, next, next)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "An authenticator app was set up for your account meanwhile") {
		t.Errorf("password change: status %d; want 409 saying why\n%s", resp.StatusCode, body)
	}
	if _, err := e.rt().auth.CheckPassword(ctx, u.Email, testPassword); err != nil {
		t.Errorf("the password after the refusal: %v; want unchanged", err)
	}
	if rows := e.auditRows("auth.password_change.*"); len(rows) != 1 || rows[0].Outcome != "failure" || rows[0].Metadata["reason"] != "factors_changed" {
		t.Errorf("password change rows %+v; want one failure, factors_changed", rows)
	}
}

// A user with a second factor proves it again before changing the
// password, as before turning it off: a stolen session and the password
// alone must not sign the owner out everywhere and keep the account.
func TestChangePasswordNeedsFreshSecondFactor(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "", "fay@example.com")
	_, page := e.get("/.sigra/account", nil) // a form token, taken while the factor is fresh
	fake.Advance(freshFactor + time.Minute)

	const next = "a much longer new passphrase"
	resp, _ := e.postForm("/.sigra/account/password", url.Values{"csrf_token": {csrfFrom(t, page)},
		"current_password": {testPassword}, "new_password": {next}, "confirm_password": {next}}, nil)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/.sigra/mfa?rd=") {
		t.Fatalf("change with an old second factor: status %d, Location %q; want the MFA page", resp.StatusCode, loc)
	}
	if resp := e.browser().login("fay@example.com", testPassword, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatal("the password changed without a fresh second factor")
	}
	if resp, _ := e.get("/.sigra/account/password", map[string]string{"Accept": "text/html"}); !strings.HasPrefix(resp.Header.Get("Location"), "/.sigra/mfa?rd=") {
		t.Errorf("the form with an old second factor: status %d; want the MFA page first", resp.StatusCode)
	}
	if resp := e.secondFactor("code", refTOTP(t, secret, fake.Now())); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("second factor: status %d", resp.StatusCode)
	}
	if resp, body := e.changePassword(testPassword, next, next); resp.StatusCode != http.StatusOK {
		t.Fatalf("change after the second factor: status %d\n%s", resp.StatusCode, body)
	}
}

// A session ended between the checks and the change (here, just before
// the transaction that writes the row and the new password) changes
// nothing: the password stays, and the trail has the failure row alone,
// not a success row for a change that was not made.
func TestPasswordChangeRefusedInItsTransaction(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	raceBeforeCommit(e, "auth.password_change.success", func() {
		if _, err := e.rt().auth.RevokeUserSessions(context.Background(), u.ID); err != nil {
			t.Error(err)
		}
	})
	const next = "a much longer new passphrase"
	resp, body := e.changePassword(testPassword, next, next)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "password is unchanged") {
		t.Errorf("status %d; want 401, unchanged\n%s", resp.StatusCode, body)
	}
	if got := e.auditRows("auth.password_change.*"); len(got) != 1 || got[0].Outcome != "failure" || got[0].Metadata["reason"] != "session_ended" {
		t.Errorf("rows %+v; want the failure row alone, session_ended", got)
	}
	if resp := e.browser().login("ann@example.com", testPassword, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-in with the old password: status %d; want 303", resp.StatusCode)
	}
}

// A form sent without its password (a script's; browsers require the
// field) is asked for it, 401, as the authenticator forms are: it is no
// guess, so no failure is written or counted and nothing is checked.
func TestAccountFormsAskForAMissingPassword(t *testing.T) {
	useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("ned@example.com")
	other := e.browser()
	other.mustLogin("ned@example.com")
	e.mustLogin("ned@example.com")
	_, page := e.get("/.sigra/account", nil)
	var otherID string
	for _, m := range regexp.MustCompile(`data-session-id="([^"]+)"`).FindAllStringSubmatch(page, -1) {
		if m[1] != e.rt().mustPrincipal(t, e.sessionCookie()).SessionID {
			otherID = m[1]
		}
	}
	if otherID == "" {
		t.Fatalf("the account page lists no other session:\n%s", page)
	}
	checks := processCounts.passwordChecks.Load()
	for path, form := range map[string]url.Values{
		"/.sigra/account/sessions/revoke":        {"session": {otherID}},
		"/.sigra/account/sessions/revoke-others": {},
		"/.sigra/account/delete":                 {"confirm": {"yes"}},
	} {
		form.Set("csrf_token", csrfFrom(t, page))
		if r, body := e.postForm(path, form, nil); r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Enter your password") {
			t.Errorf("%s without a password: status %d; want 401 asking for it\n%s", path, r.StatusCode, body)
		}
	}
	if rows := e.auditRows("auth.login.failure"); len(rows) != 0 {
		t.Errorf("forms without a password wrote %d failure rows; want none", len(rows))
	}
	if n := processCounts.passwordChecks.Load() - checks; n != 0 {
		t.Errorf("forms without a password checked %d passwords; want none", n)
	}
	if r, _ := other.get("/x", jsonAPI); r.StatusCode != http.StatusOK {
		t.Errorf("the other session after the refused forms: status %d; want 200", r.StatusCode)
	}
}
