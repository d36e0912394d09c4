package caddymodule

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// changePassword posts the change-password form.
func (e *env) changePassword(current, next, confirm string) (*http.Response, string) {
	e.t.Helper()
	resp, page := e.get("/.sigra/account/password", map[string]string{"Accept": "text/html"})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-sigra="password-form"`) {
		e.t.Fatalf("change-password page: status %d, no form\n%s", resp.StatusCode, page)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		e.t.Errorf("change-password page Cache-Control %q; want no-store", got)
	}
	return e.postForm("/.sigra/account/password", url.Values{"csrf_token": {csrfFrom(e.t, page)},
		"current_password": {current}, "new_password": {next}, "confirm_password": {confirm}}, nil)
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
		{"too short", testPassword, "short", "short", http.StatusBadRequest, "characters or more"},
		{"empty current", "", next, next, http.StatusBadRequest, "current password"},
		{"wrong current", "not the password", next, next, http.StatusUnauthorized, "not right"},
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
