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

// A session signed in with a password before the user turned TOTP on (a
// stolen one, say) is pending from then on, like a password-only sign-in
// after it: every gate treats it as not signed in.
func TestSessionFromBeforeEnrolmentIsPending(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("vic@example.com", "staff")
	e.mustLogin("vic@example.com")
	stolen := e.sessionCookie()
	if resp, _ := e.get("/app", jsonAccept); resp.StatusCode != http.StatusOK {
		t.Fatalf("before enrolment the old session: status %d; want 200", resp.StatusCode)
	}

	e.client.Jar, _ = newJar()
	e.mustLogin("vic@example.com")
	enrolTOTP(t, e, fake.Now())
	if resp, _ := e.get("/app", jsonAccept); resp.StatusCode != http.StatusOK {
		t.Fatalf("the enrolling session: status %d; want 200", resp.StatusCode)
	}

	enrolling := e.client.Jar
	e.client.Jar, _ = newJar()
	u, _ := url.Parse(e.base)
	e.client.Jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: stolen, Path: "/"}})
	fake.Advance(time.Second)
	resp, body := e.get("/app", jsonAccept)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "mfa_pending") {
		t.Errorf("the session from before enrolment: status %d, body %q; want 401 mfa_pending", resp.StatusCode, body)
	}
	if resp, _ := e.get("/app", map[string]string{"Accept": "text/html"}); resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/.sigra/mfa") {
		t.Errorf("a browser with that session: status %d to %q; want the MFA page", resp.StatusCode, resp.Header.Get("Location"))
	}

	// It has what a password-only sign-in has from now on to find the
	// code, not the rest of its 12 hours.
	fake.Advance(authcore.DefaultPendingLifetime)
	resp, body = e.get("/app", jsonAccept)
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "mfa_pending") {
		t.Errorf("the session from before enrolment, pending_lifetime later: status %d, body %q; want 401, signed out", resp.StatusCode, body)
	}
	e.client.Jar = enrolling
	if resp, _ := e.get("/app", jsonAccept); resp.StatusCode != http.StatusOK {
		t.Errorf("the enrolling session, pending_lifetime later: status %d; want 200", resp.StatusCode)
	}
}

// Turning the last factor off ends the sessions still waiting for it
// (one from before the enrolment, a password sign-in): the MFA page has
// nothing to ask them, and they would wait in a loop until they expired.
func TestRemovingTOTPEndsSessionsWaitingForIt(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("vic@example.com")
	e.mustLogin("vic@example.com")
	before := e.sessionCookie()
	e.client.Jar, _ = newJar()
	e.mustLogin("vic@example.com")
	enrolTOTP(t, e, fake.Now())
	if code := e.statusAs(before, "/app"); code != http.StatusUnauthorized {
		t.Fatalf("the session from before enrolment: status %d; want 401 (pending)", code)
	}
	_, page := e.get("/.sigra/account/totp", nil)
	if r, _ := e.postForm("/.sigra/account/totp/remove", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("removing TOTP: status %d; want 303", r.StatusCode)
	}
	sessions, err := e.rt().store.UserSessions(context.Background(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		if s.Pending {
			t.Errorf("session %v still pending after the last factor went", s.ID)
		}
	}
	if len(sessions) != 1 {
		t.Errorf("%d sessions after the removal; want 1 (the one that removed it)", len(sessions))
	}
	if code := e.statusAs(e.sessionCookie(), "/app"); code != http.StatusOK {
		t.Errorf("the session that removed it: status %d; want 200", code)
	}
}

// A stolen session never sees the secret another session of the user is
// enrolling: it is shown one of its own, which the user never scans, and
// opening the page does not disturb the user's enrolment. Once the user
// enrols, the stolen session, pending, cannot pass the second factor with
// its secret.
func TestStolenSessionCannotLearnTheEnrolment(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("vic@example.com", "staff")
	e.mustLogin("vic@example.com")
	stolen := e.client.Jar
	fake.Advance(freshFactor + time.Minute) // the stolen sign-in is stale

	victim, _ := newJar()
	e.client.Jar = victim
	e.mustLogin("vic@example.com")
	_, victimPage := e.get("/.sigra/account/totp", nil)
	shown := totpSecret.FindStringSubmatch(victimPage)

	e.client.Jar = stolen
	_, page := e.get("/.sigra/account/totp", nil)
	leaked := totpSecret.FindStringSubmatch(page)
	if shown == nil || leaked == nil {
		t.Fatal("an enrolment page without a secret")
	}
	if leaked[1] == shown[1] {
		t.Fatal("another session of the user was shown the secret being enrolled")
	}

	// The victim confirms the secret they were shown, undisturbed.
	e.client.Jar = victim
	resp, _ := e.postForm("/.sigra/account/totp", enrolForm(t, victimPage, refTOTP(t, shown[1], fake.Now()), testPassword), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the user confirming after a stolen session opened the page: status %d; want 200", resp.StatusCode)
	}

	e.client.Jar = stolen
	fake.Advance(31 * time.Second)
	if resp, _ := e.get("/app", jsonAccept); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the stolen session after enrolment: status %d; want 401 (pending)", resp.StatusCode)
	}
	_, mfa := e.get("/.sigra/mfa", nil)
	resp, _ = e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, mfa)}, "code": {refTOTP(t, leaked[1], fake.Now())}}, nil)
	if resp.StatusCode == http.StatusSeeOther {
		t.Error("the stolen session passed the second factor with the secret it was shown")
	}
	if resp, _ := e.get("/app", jsonAccept); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the stolen session after trying its secret: status %d; want 401", resp.StatusCode)
	}
}

// A copy of the session cookie is the same session: it must not be
// shown the secret the owner is enrolling either. Each visit to the page
// gets a secret of its own, carried by its form, so the thief's visit
// shows another, and the thief's form (or no form) confirms nothing with
// the owner's code. The owner's enrolment goes through undisturbed.
func TestCopiedCookieCannotLearnTheEnrolment(t *testing.T) {
	fake, e, u, page, secret := startEnrolling(t, "kim@example.com")
	thief := e.browser()
	base, _ := url.Parse(e.base)
	thief.client.Jar.SetCookies(base, []*http.Cookie{{Name: "sigra_session", Value: e.sessionCookie(), Path: "/"}})
	for range 2 {
		_, theirs := thief.get("/.sigra/account/totp", nil)
		m := totpSecret.FindStringSubmatch(theirs)
		if m == nil {
			t.Fatalf("the copy's enrolment page shows no secret\n%s", theirs)
		}
		if m[1] == secret {
			t.Fatal("a copy of the session cookie was shown the secret the owner is enrolling")
		}
		code := refTOTP(t, secret, fake.Now())
		for name, form := range map[string]url.Values{
			"its own page's form":   enrolForm(t, theirs, code, testPassword),
			"a form with no page":   {"csrf_token": {csrfFrom(t, theirs)}, "code": {code}, "password": {testPassword}},
			"a tampered page token": {"csrf_token": {csrfFrom(t, theirs)}, "enrolment": {"AAAA" + enrolmentField.FindStringSubmatch(page)[1][4:]}, "code": {code}, "password": {testPassword}},
		} {
			if r, body := thief.postForm("/.sigra/account/totp", form, nil); r.StatusCode == http.StatusOK || strings.Contains(body, `data-sigra="recovery-codes"`) {
				t.Errorf("the copy sending %s with the owner's code: status %d; want it refused", name, r.StatusCode)
			}
		}
	}
	if has, _ := e.rt().auth.HasTOTP(context.Background(), u.ID); has {
		t.Fatal("the copy enrolled the owner's secret")
	}
	fake.Advance(30 * time.Second)
	if r, _ := e.postForm("/.sigra/account/totp", enrolForm(t, page, refTOTP(t, secret, fake.Now()), testPassword), nil); r.StatusCode != http.StatusOK {
		t.Fatalf("the owner enrolling after the copy's visits: status %d; want 200", r.StatusCode)
	}
}

// Enrolling TOTP binds the account to an authenticator and counts as a
// fresh second factor, so it needs the password, however fresh the
// sign-in: a session cookie alone (stolen a minute after sign-in, say)
// must not bind the account to a thief's app and lock the owner out.
func TestEnrolmentNeedsThePassword(t *testing.T) {
	for name, age := range map[string]time.Duration{"fresh sign-in": time.Minute, "old sign-in": freshFactor + time.Minute} {
		t.Run(name, func(t *testing.T) { testEnrolmentNeedsThePassword(t, age) })
	}
}

func testEnrolmentNeedsThePassword(t *testing.T, age time.Duration) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("boss@example.com", "admins")
	e.mustLogin("boss@example.com")
	fake.Advance(age)

	_, page := e.get("/.sigra/account/totp", nil)
	if !strings.Contains(page, `name="password"`) {
		t.Fatal("the enrol page asks for no password")
	}
	secret := totpSecret.FindStringSubmatch(page)[1]
	enrol := func(password string) (*http.Response, string) {
		return e.postForm("/.sigra/account/totp", enrolForm(t, page, refTOTP(t, secret, fake.Now()), password), nil)
	}
	enrolled := func() bool {
		has, err := e.rt().auth.HasTOTP(context.Background(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return has
	}

	// The code only (a form from before the password was asked): asked
	// for the password, and no failure is counted.
	if resp, body := enrol(""); resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, `data-sigra="recovery-codes"`) ||
		!strings.Contains(body, `name="password"`) {
		t.Errorf("enrol with the code only: status %d; want 401, a password field and no recovery codes", resp.StatusCode)
	}
	if rows := e.auditRows("auth.login.failure"); len(rows) != 0 {
		t.Errorf("a form without a password wrote %d failure rows; want none", len(rows))
	}
	if resp, _ := enrol("not the password"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("enrol with a wrong password: status %d; want 401", resp.StatusCode)
	}
	if enrolled() {
		t.Fatal("enrolled without the password")
	}
	rows := e.auditRows("auth.login.failure")
	if len(rows) != 1 || rows[0].SubjectID != u.ID || rows[0].Metadata["step"] != "reauth" {
		t.Errorf("failure rows %+v; want one for the user with step reauth", rows)
	}
	if got := e.amr(); got != "pwd" {
		t.Errorf("after refused enrolments the session's amr is %q; want pwd", got)
	}

	// The code the refused attempts carried was not spent: it still works
	// with the password.
	resp, body := enrol(testPassword)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-sigra="recovery-codes"`) {
		t.Fatalf("enrol with the password: status %d; want 200 and the recovery codes", resp.StatusCode)
	}
	if !enrolled() {
		t.Error("not enrolled after the password and a right code")
	}
	if got := e.amr(); !strings.Contains(got, "otp") {
		t.Errorf("after enrolment amr %q; want otp", got)
	}
}

// A page that needs a second factor sends a user who has none to set one
// up, and the set-up leads back to that page (only to a place rd may
// name, as everywhere).
func TestStepUpEnrolmentReturnsToThePage(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate /reports* {\n\tmfa\n}")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	html := map[string]string{"Accept": "text/html"}

	resp, _ := e.get("/reports/q3", html)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, "/.sigra/mfa?rd=") {
		t.Fatalf("GET /reports/q3 without a second factor: status %d, Location %q; want the MFA page", resp.StatusCode, loc)
	}
	resp, page := e.get(loc, html)
	enrol := "/.sigra/account/totp?rd=" + url.QueryEscape("/reports/q3")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, `href="`+enrol+`"`) {
		t.Fatalf("MFA page of a user with no second factor: status %d; want 403 linking to %s\n%s", resp.StatusCode, enrol, page)
	}
	// A foreign rd does not become a link or a form field.
	_, page = e.get("/.sigra/account/totp?rd="+url.QueryEscape("https://evil.example/x"), html)
	if !strings.Contains(page, `data-sigra="totp-enrol-form"`) || strings.Contains(page, "evil.example") {
		t.Errorf("enrol page with a foreign rd: want the form without it\n%s", page)
	}
	_, page = e.get(enrol, html)
	if !strings.Contains(page, `name="rd" value="/reports/q3"`) {
		t.Fatalf("the enrol form does not carry rd\n%s", page)
	}
	secret := totpSecret.FindStringSubmatch(page)[1]
	form := enrolForm(t, page, refTOTP(t, secret, fake.Now()), testPassword)
	form.Set("rd", "/reports/q3")
	resp, done := e.postForm("/.sigra/account/totp", form, html)
	if resp.StatusCode != http.StatusOK || !strings.Contains(done, `href="/reports/q3" data-sigra="totp-done"`) {
		t.Fatalf("after enrolment: status %d; want the recovery codes and Done leading to /reports/q3\n%s", resp.StatusCode, done)
	}
	if resp, _ := e.get("/reports/q3", html); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /reports/q3 after enrolment: status %d; want 200", resp.StatusCode)
	}
}
