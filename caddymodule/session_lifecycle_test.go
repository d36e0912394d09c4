package caddymodule

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The right password of a user with a second factor is an audit row,
// though nobody is signed in yet: a password that works is what an
// operator must learn of. The finished sign-in is auth.login.success.
func TestPasswordStepOfATwoStepSignInIsARow(t *testing.T) {
	fake, e, u, secret, _ := startEnrolled(t, "", "tia@example.com")
	b := e.browser()
	if r := b.login("tia@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther || !strings.Contains(r.Header.Get("Location"), "/.sigra/mfa") {
		t.Fatalf("password step: status %d to %q; want 303 to the second factor", r.StatusCode, r.Header.Get("Location"))
	}
	rows := e.auditRows("auth.login.pending")
	if len(rows) != 1 || rows[0].ActorID != u.ID || rows[0].SubjectID != u.ID || rows[0].Outcome != "success" || rows[0].Metadata["method"] != "password" {
		t.Fatalf("auth.login.pending rows %+v; want one, by and about tia, method password", rows)
	}
	successes := len(e.auditRows("auth.login.success"))
	fake.Advance(30 * time.Second)
	if r := b.secondFactor("code", refTOTP(t, secret, fake.Now())); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("second factor: status %d; want 303", r.StatusCode)
	}
	if got := e.auditRows("auth.login.success"); len(got) != successes+1 || got[0].Metadata["method"] != "totp" {
		t.Errorf("after the second factor, auth.login.success rows %+v; want one more, method totp", got)
	}
	if n := len(e.auditRows("auth.login.pending")); n != 1 {
		t.Errorf("%d auth.login.pending rows; want still 1", n)
	}
}

// Signing in over a session ends that session, with its row: the
// browser's previous user is signed out.
func TestSignInAgainEndsTheOldSessionWithARow(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	ann := e.addUser("ann@example.com")
	e.addUser("ben@example.com")
	e.mustLogin("ann@example.com")
	old := e.sessionCookie()
	e.mustLogin("ben@example.com")
	if got := e.statusAs(old, "/x"); got != http.StatusUnauthorized {
		t.Errorf("ann's session after ben signed in in the same browser: status %d; want 401", got)
	}
	rows := e.auditRows("auth.logout")
	if len(rows) != 1 || rows[0].ActorID != ann.ID || rows[0].SubjectID != ann.ID || rows[0].Metadata["reason"] != "signed_in_again" {
		t.Fatalf("auth.logout rows %+v; want one for ann, reason signed_in_again", rows)
	}
	// A session already over ends nothing, and says nothing.
	e.client.Jar, _ = newJar()
	u, _ := url.Parse(e.base)
	e.client.Jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: old, Path: "/"}})
	e.mustLogin("ann@example.com")
	if n := len(e.auditRows("auth.logout")); n != 1 {
		t.Errorf("%d auth.logout rows after signing in over an ended session; want still 1", n)
	}
}
