package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
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
	oldID, _ := authcore.TokenID(old)
	if len(rows) != 1 || rows[0].ActorID != ann.ID || rows[0].SubjectID != ann.ID || rows[0].Metadata["reason"] != "signed_in_again" || rows[0].Metadata["session"] != oldID.String() {
		t.Fatalf("auth.logout rows %+v; want one for ann, reason signed_in_again, session %s", rows, oldID)
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

// A sign-out does not wait for a second-factor step of the same session
// under way (which would then replace the session, and the new one would
// outlive the sign-out): it ends the session at once, and the step then
// signs nobody in and spends no code.
func TestLogoutDuringASecondFactorStep(t *testing.T) {
	fake, e, u, secret, _ := startEnrolled(t, "", "lou@example.com")
	b := e.browser()
	b.login("lou@example.com", testPassword, "/")
	_, mfaPage := b.get("/.sigra/mfa", nil)
	_, logoutPage := b.get("/.sigra/logout", nil)
	fake.Advance(30 * time.Second)
	code := refTOTP(t, secret, fake.Now())
	unlock := accountChange.lock(u.ID) // the step waits here, its checks done
	done := make(chan *http.Response, 1)
	go func() {
		var r *http.Response // nil: the harness failed the test, saying why
		defer func() { done <- r }()
		r, _ = b.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, mfaPage)}, "code": {code}}, nil)
	}()
	for deadline := time.Now().Add(10 * time.Second); !accountChange.waiting(u.ID); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			unlock()
			t.Fatal("the step never reached the lock")
		}
	}
	r, _ := b.postForm("/.sigra/logout", url.Values{"csrf_token": {csrfFrom(t, logoutPage)}}, nil)
	unlock()
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out while the step waits: status %d; want 303 at once", r.StatusCode)
	}
	if r := <-done; r == nil {
		t.Fatal("the step got no answer (its error is above)")
	} else if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" {
		// Its session gone, it goes where a twin that passed would have
		// sent it; the gate there asks for a sign-in.
		t.Errorf("the step after the sign-out: status %d to %q; want 303 to /", r.StatusCode, r.Header.Get("Location"))
	}
	if n := len(e.auditRows("auth.logout")); n != 1 {
		t.Errorf("%d auth.logout rows; want 1", n)
	}
	if n := len(e.auditRows("mfa.challenge.success")); n != 0 {
		t.Errorf("%d mfa.challenge.success rows; want none", n)
	}
	sessions, err := e.rt().store.UserSessions(context.Background(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 1 { // the enrolling browser's
		t.Errorf("%d sessions after the sign-out; want 1, the other browser's", len(sessions))
	}
	// The code was not spent: the owner can still use it.
	if err := e.rt().auth.VerifyTOTP(context.Background(), u.ID, code); err != nil {
		t.Errorf("the step's code after the sign-out: %v; want it unspent", err)
	}
}

// An authenticator app confirmed by a session that ended meanwhile is
// not set up: nobody saw its recovery codes.
func TestTOTPEnrolmentSessionEndedMeanwhile(t *testing.T) {
	fake, e, u, page, secret := startEnrolling(t, "eli@example.com")
	// Ended in the store behind the session cache's back, which is how
	// a revocation landing between the form's checks and its last step
	// looks to that step.
	p, err := e.rt().auth.Authenticate(context.Background(), e.sessionCookie())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rt().store.DeleteSession(context.Background(), p.Session.ID); err != nil {
		t.Fatal(err)
	}
	r, body := e.postForm("/.sigra/account/totp", enrolForm(t, page, refTOTP(t, secret, fake.Now()), testPassword), nil)
	if r.StatusCode != http.StatusUnauthorized || strings.Contains(body, `data-sigra="recovery-codes"`) {
		t.Fatalf("status %d; want 401 and no recovery codes\n%s", r.StatusCode, body)
	}
	if has, _ := e.rt().auth.HasTOTP(context.Background(), u.ID); has {
		t.Error("the authenticator app is set up, though nobody saw its recovery codes")
	}
	if n := len(e.auditRows("mfa.totp.enrolled")); n != 0 {
		t.Errorf("%d mfa.totp.enrolled rows; want 0", n)
	}
}

// The admin's view of a session says pending as the gate treats it: a
// password-only session of a user who has since set up a second factor
// awaits one.
func TestAdminSessionListShowsPendingAsTheGateDoes(t *testing.T) {
	e, target := startAsAdmin(t)
	_, tok := mustSession(t, e, target) // before the second factor
	enrolTOTPFor(t, e, target)
	if got := e.statusAs(tok, "/x"); got != http.StatusUnauthorized {
		t.Fatalf("the older password-only session at the gate: status %d; want 401 (pending)", got)
	}
	code, body := e.adminCall(http.MethodGet, "/users/"+target.ID+"/sessions", nil)
	if code != 200 {
		t.Fatalf("sessions: status %d body %s", code, body)
	}
	if !strings.Contains(body, `"amr":["pwd"],"pending":true`) {
		t.Errorf("sessions %s; want the password-only one pending", body)
	}
	_, page := e.get("/.sigra/admin/users/"+target.ID, nil)
	if !strings.Contains(page, "pwd (second factor pending)") {
		t.Errorf("the admin user page does not show the password-only session pending")
	}
}

// A session is valid on the host name it was signed in on alone: a
// cookie carried to another site of the same gateway (leaked, or set by
// hand) signs nobody in there, at the gate or in the portal.
func TestSessionsStayOnTheirSite(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	port := alsoOnLocalhost(t, e)
	e.addUser("sol@example.com")
	e.mustLogin("sol@example.com")
	tok := e.sessionCookie()
	as := func(host, path string) *http.Response { return e.hostRequest(tok, host, path, nil) }
	if r := as("127.0.0.1:"+port, "/x"); r.StatusCode != 200 {
		t.Fatalf("on its own site: status %d; want 200", r.StatusCode)
	}
	_, hits := e.up.last()
	if r := as("localhost:"+port, "/x"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the gate of another site: status %d; want 401", r.StatusCode)
	}
	if _, after := e.up.last(); after != hits {
		t.Error("another site's session reached the app")
	}
	if r := as("localhost:"+port, "/.sigra/account"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the portal of another site: status %d; want 401 (not signed in)", r.StatusCode)
	}
	if r := as("127.0.0.1:"+port, "/.sigra/account"); r.StatusCode != 200 {
		t.Errorf("the portal of its own site: status %d; want 200", r.StatusCode)
	}
	// Signed in there, it works there.
	b := e.browser()
	b.base = "http://localhost:" + port
	b.mustLogin("sol@example.com")
	if r, _ := b.get("/x", nil); r.StatusCode != 200 {
		t.Errorf("a session signed in on the other site, there: status %d; want 200", r.StatusCode)
	}
}

// Two different session cookies in one request (on plain HTTP, another
// site on the host can set one for the paths it chooses, and browsers
// send it first there) sign nobody in: neither is taken, and a gate that
// needs a sign-in says why instead of sending the browser round a
// sign-in that cannot help.
func TestConflictingSessionCookiesSignNobodyIn(t *testing.T) {
	e := startCaddy(t, "", `sigra_gate /open* {
		optional
	}
	sigra_gate`)
	vic := e.addUser("vic@example.com")
	mal := e.addUser("mal@example.com")
	_, vicTok := mustSession(t, e, vic)
	_, malTok := mustSession(t, e, mal)
	send := func(path, accept string, cookies ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.base+path, nil)
		req.Header.Set("Accept", accept)
		for _, c := range cookies {
			req.Header.Add("Cookie", "sigra_session="+c)
		}
		c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: e.client.CheckRedirect}
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r, string(b)
	}
	for name, cookies := range map[string][]string{
		"another user's first": {malTok, vicTok},
		"another user's last":  {vicTok, malTok},
		"garbage first":        {"AAAA", vicTok},
	} {
		r, body := send("/x", "application/json", cookies...)
		if r.StatusCode != http.StatusBadRequest || problemReason(body) != "cookie_conflict" {
			t.Errorf("%s: status %d body %s; want 400 cookie_conflict", name, r.StatusCode, body)
		}
		if r, body := send("/.sigra/account", "application/json", cookies...); r.StatusCode != http.StatusBadRequest || problemReason(body) != "cookie_conflict" {
			t.Errorf("%s, the portal: status %d body %s; want 400 cookie_conflict (nobody signed in)", name, r.StatusCode, body)
		}
		if r, _ := send("/open", "application/json", cookies...); r.StatusCode != 200 {
			t.Errorf("%s, an optional route: status %d; want 200", name, r.StatusCode)
		} else if h, _ := e.up.last(); h.Get("X-Sigra-User") != "" {
			t.Errorf("%s, an optional route: the app got user %q; want nobody", name, h.Get("X-Sigra-User"))
		}
	}
	// As browsers send them: one Cookie line.
	if r, body := send("/x", "application/json", malTok+"; theme=dark; sigra_session="+vicTok); r.StatusCode != http.StatusBadRequest || problemReason(body) != "cookie_conflict" {
		t.Errorf("one Cookie line: status %d body %s; want 400 cookie_conflict", r.StatusCode, body)
	}
	r, body := send("/x", "text/html", malTok, vicTok)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "asked to forget both") {
		t.Errorf("a browser: status %d; want 400 with a page saying to clear the cookies\n%s", r.StatusCode, body)
	}
	if r, body := send("/.sigra/login", "text/html", malTok, vicTok); r.StatusCode != 200 || !strings.Contains(body, "asked to forget both") {
		t.Errorf("the sign-in page: status %d; want 200 saying to clear the cookies", r.StatusCode)
	}
	// Two form cookies: the sign-in cannot pass, and says why instead of
	// "the form expired" for ever.
	planted := "sigra_csrf=AAAAAAAAAAAAAAAAAAAAAA; sigra_csrf=BBBBBBBBBBBBBBBBBBBBBB"
	if r, body := send("/.sigra/login", "text/html", "x; "+planted); r.StatusCode != 200 || !strings.Contains(body, "asked to forget both") {
		t.Errorf("the sign-in page with two form cookies: status %d; want 200 saying to clear the cookies", r.StatusCode)
	}
	b := e.browser()
	_, page := b.get("/.sigra/login", map[string]string{"Accept": "text/html"})
	ours, at := "", &url.URL{Scheme: "http", Host: strings.TrimPrefix(b.base, "http://")}
	for _, c := range b.client.Jar.Cookies(at) {
		if c.Name == "sigra_csrf" {
			ours = c.Value
		}
	}
	req, _ := http.NewRequest(http.MethodPost, e.base+"/.sigra/login", strings.NewReader(url.Values{
		"email": {"vic@example.com"}, "password": {testPassword}, "csrf_token": {csrfFrom(t, page)}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.base)
	req.Header.Set("Cookie", "sigra_csrf=AAAAAAAAAAAAAAAAAAAAAA; sigra_csrf="+ours)
	r, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body2, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden || !strings.Contains(string(body2), "asked to forget both") {
		t.Errorf("signing in with a planted form cookie beside ours: status %d; want 403 saying to clear the cookies\n%s", r.StatusCode, body2)
	}
	// In a browser, the sign-in page has it forget both form cookies
	// (the other one at its path) and set a fresh one: the next sign-in
	// passes.
	tb := e.browser()
	tb.get("/.sigra/login", map[string]string{"Accept": "text/html"}) // its own form cookie, at /
	loginURL, _ := url.Parse(e.base + "/.sigra/login")
	tb.client.Jar.SetCookies(loginURL, []*http.Cookie{{Name: "sigra_csrf", Value: "AAAAAAAAAAAAAAAAAAAAAA", Path: "/.sigra/login"}})
	if _, body := tb.get("/.sigra/login", map[string]string{"Accept": "text/html"}); !strings.Contains(body, "asked to forget both") {
		t.Error("the sign-in page with two form cookies does not say so")
	}
	tb.mustLogin("vic@example.com")
	// The same cookie twice is no conflict.
	if r, _ := send("/x", "application/json", vicTok, vicTok); r.StatusCode != 200 {
		t.Errorf("the same session cookie twice: status %d; want 200", r.StatusCode)
	}
	if h, _ := e.up.last(); h.Get("X-Sigra-User") != vic.ID {
		t.Errorf("the same session cookie twice: the app got user %q; want vic", h.Get("X-Sigra-User"))
	}
}

// A second session cookie that another site on the host (over plain
// HTTP) sets for a portal page's path, /.sigra/mfa say, does not send
// the browser round: that page sent it to sign in, and the sign-in page,
// which does not get the cookie, found the session and sent it back.
// The page says why instead, with 400, as the gate does.
func TestConflictingSessionCookiesOnPortalPagesSayWhy(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("vic@example.com", "admins")
	e.mustLogin("vic@example.com")
	html := map[string]string{"Accept": "text/html"}
	tossedAt := func(path string) *env {
		t.Helper()
		b := e.browser()
		site, _ := url.Parse(e.base)
		at, _ := url.Parse(e.base + path)
		b.client.Jar.SetCookies(site, []*http.Cookie{{Name: "sigra_session", Value: e.sessionCookie(), Path: "/"}})
		b.client.Jar.SetCookies(at, []*http.Cookie{{Name: "sigra_session", Value: "tossed", Path: path}})
		return b
	}
	for _, path := range []string{"/.sigra/mfa", "/.sigra/account", "/.sigra/account/password", "/.sigra/account/totp", "/.sigra/admin"} {
		b := tossedAt(path)
		if r, body := b.get(path, html); r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "asked to forget both") {
			t.Errorf("%s: status %d (to %q); want 400 saying to clear the cookies", path, r.StatusCode, r.Header.Get("Location"))
		}
		// Both cookies are forgotten, the other one at its path too: the
		// page asks for a sign-in, which ends the conflict.
		if r, body := b.get("/.sigra/login?rd="+url.QueryEscape(path), html); r.StatusCode != http.StatusOK || strings.Contains(body, "asked to forget both") {
			t.Errorf("the sign-in page after that, with rd %s: status %d; want 200, the form without a conflict", path, r.StatusCode)
		}
		for _, c := range b.client.Jar.Cookies(&url.URL{Scheme: "http", Host: strings.TrimPrefix(e.base, "http://"), Path: path}) {
			if c.Name == "sigra_session" {
				t.Errorf("%s: the browser still holds a session cookie; want none", path)
			}
		}
	}
	// A script is told the same, as problem+json: a 401 would have it
	// send the browser to sign in, and round.
	for _, path := range []string{"/.sigra/account", "/.sigra/admin", "/.sigra/api/admin/users"} {
		r, body := tossedAt(path).get(path, map[string]string{"Accept": "application/json"})
		if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"cookie_conflict"`) {
			t.Errorf("%s, asked for JSON: status %d %s; want 400 cookie_conflict", path, r.StatusCode, body)
		}
	}
	// The admin API answers JSON whatever the client asks for.
	if r, body := tossedAt("/.sigra/api/").get("/.sigra/api/admin/users", html); r.StatusCode != http.StatusBadRequest ||
		r.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, `"cookie_conflict"`) {
		t.Errorf("the admin API, asked for HTML: status %d %s %s; want 400 cookie_conflict as problem+json", r.StatusCode, r.Header.Get("Content-Type"), body)
	}
	// Signing out with a form from a page without the other cookie: the
	// portal cannot tell which session the form is for, and says so
	// rather than clear the cookie and answer "signed out" while the
	// session goes on.
	_, page := e.get("/.sigra/logout", html)
	b := tossedAt("/.sigra/logout")
	r, body := b.postForm("/.sigra/logout", url.Values{"csrf_token": {csrfFrom(t, page)}}, html)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "asked to forget both") || r.Header.Get("Location") != "" {
		t.Errorf("signing out: status %d (to %q); want 400 saying to sign in again", r.StatusCode, r.Header.Get("Location"))
	}
	if r, _ := e.get("/x", nil); r.StatusCode != http.StatusOK {
		t.Errorf("the session after that: status %d; want 200 (not ended, and not said to be)", r.StatusCode)
	}
	// The browser was asked to forget both cookies, the other one at its
	// path too: signing in again works, and the page has no conflict.
	if r, _ := b.get("/.sigra/logout", html); r.StatusCode != http.StatusUnauthorized && r.StatusCode != http.StatusOK {
		t.Errorf("the sign-out page after that: status %d; want no conflict", r.StatusCode)
	}
	b.mustLogin("vic@example.com")
	if r, _ := b.get("/.sigra/logout", html); r.StatusCode != http.StatusOK {
		t.Errorf("the sign-out page after signing in again: status %d; want 200", r.StatusCode)
	}
	// At the gate, on an app path: its answer is the gateway's own, so
	// the portal's guard lets its lines through, and signing in again
	// ends the conflict.
	b = tossedAt("/app")
	r, body = b.get("/app/x", html)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "asked to forget both") || len(r.Cookies()) == 0 {
		t.Errorf("an app path: status %d, %d Set-Cookie lines; want 400 with lines forgetting both cookies", r.StatusCode, len(r.Cookies()))
	}
	b.mustLogin("vic@example.com")
	if r, _ := b.get("/app/x", html); r.StatusCode != http.StatusOK {
		t.Errorf("the app path after signing in again: status %d; want 200", r.StatusCode)
	}
	b = tossedAt("/.sigra/mfa")
	if r, body := b.postForm("/.sigra/mfa", url.Values{"code": {"123456"}}, html); r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "asked to forget both") {
		t.Errorf("a code sent there: status %d (to %q); want 400 saying to clear the cookies", r.StatusCode, r.Header.Get("Location"))
	}
}

// A right code whose session ended while it was checked (here, the
// session's lifetime ran out while the form waited for the user's lock)
// signs nobody in, and says so in a row, instead of a 500. Nor is the
// code spent: a recovery code stays good, and has no row. The attempt
// counts with the Regulator all the same.
func TestMFASessionEndedMeanwhile(t *testing.T) {
	fake, e, u, secret, codes := startEnrolled(t, "", "meg@example.com")
	count := func(result string) float64 {
		var n float64
		for _, method := range []string{"totp", "recovery_code"} {
			n += counterValue(t, e.rt().metrics.logins.WithLabelValues(method, result))
		}
		return n
	}
	failuresBefore, endedBefore := count("failure"), count("session_ended")
	for _, field := range []string{"code", "recovery_code"} {
		b := e.browser()
		b.login("meg@example.com", testPassword, "/")
		_, page := b.get("/.sigra/mfa", nil)
		later := fake.Now().Add(e.rt().auth.Config().Lifetime + time.Hour)
		value := refTOTP(t, secret, later)
		if field == "recovery_code" {
			value = codes[0]
		}
		unlock := accountChange.lock(u.ID)
		done := make(chan *http.Response, 1)
		go func() {
			var r *http.Response // nil: the harness failed the test, saying why
			defer func() { done <- r }()
			r, _ = b.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, field: {value}}, nil)
		}()
		for deadline := time.Now().Add(10 * time.Second); !accountChange.waiting(u.ID); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				unlock()
				t.Fatalf("%s: the form never reached the lock", field)
			}
		}
		fake.Set(later)
		unlock()
		r := <-done
		if r == nil {
			t.Fatalf("%s: the form got no answer (its error is above)", field)
		}
		if r.StatusCode != http.StatusSeeOther || !strings.Contains(r.Header.Get("Location"), "/.sigra/login") {
			t.Fatalf("%s: status %d to %q; want 303 to sign in", field, r.StatusCode, r.Header.Get("Location"))
		}
		// Not spent, but counted against the codes' key: ending the
		// session at the right moment is no free way to test codes.
		st, err := e.rt().store.RegulationState(context.Background(), authcore.UserMFAKey(u.ID))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(st.Attempts); n != 1 {
			t.Errorf("%s: %d attempts counted for the codes; want this one", field, n)
		}
	}
	rows := e.auditRows("mfa.challenge.failure")
	if len(rows) != 2 || rows[0].Metadata["reason"] != "session_ended" || rows[1].Metadata["reason"] != "session_ended" {
		t.Errorf("mfa.challenge.failure rows %+v; want two, reason session_ended", rows)
	}
	if used := e.auditRows("mfa.recovery_code.used"); len(used) != 0 {
		t.Errorf("mfa.recovery_code.used rows %+v; want none", used)
	}
	if n, err := e.rt().auth.RecoveryCodesLeft(context.Background(), u.ID); err != nil || n != authcore.RecoveryCodeCount {
		t.Errorf("%d recovery codes left (%v); want all %d", n, err, authcore.RecoveryCodeCount)
	}
	if n := len(e.auditRows("auth.login.success")); n != 1 { // the enrolment's own sign-in
		t.Errorf("%d auth.login.success rows; want 1", n)
	}
	// A right code is no failed guess: alerts on failures stay quiet.
	if n := count("session_ended") - endedBefore; n != 2 {
		t.Errorf("sigra_logins_total session_ended went up by %v; want 2", n)
	}
	if n := count("failure") - failuresBefore; n != 0 {
		t.Errorf("sigra_logins_total failure went up by %v; want 0", n)
	}
}

// A session record that cannot be read (damaged) keeps nobody out: the
// sign-in page shows, and signing in ends that record and starts anew.
func TestSignInOverADamagedSession(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("dan@example.com")
	e.mustLogin("dan@example.com")
	id, ok := authcore.TokenID(e.sessionCookie())
	if !ok {
		t.Fatal("the session cookie is not a token")
	}
	e.offline(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("sigra/v1")).Bucket([]byte("sessions")).Put(id[:], []byte("{garbage"))
	})
	if r, page := e.get("/.sigra/login", nil); r.StatusCode != 200 || !strings.Contains(page, `data-sigra="login-form"`) {
		t.Fatalf("the sign-in page with a damaged session: status %d; want 200 and the form", r.StatusCode)
	}
	e.mustLogin("dan@example.com")
	if r, _ := e.get("/x", nil); r.StatusCode != 200 {
		t.Errorf("after signing in again: status %d; want 200", r.StatusCode)
	}
	if _, err := e.rt().store.GetSession(context.Background(), id); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("the damaged record after the sign-in: %v; want it gone", err)
	}
}

// alsoOnLocalhost serves e's site at http://localhost:<its port> too, a
// second host name, and returns the port.
func alsoOnLocalhost(t *testing.T, e *env) string {
	t.Helper()
	port := strings.TrimPrefix(e.base, "http://127.0.0.1:")
	cf := strings.Replace(e.config, "\n"+e.base+" {", "\n"+e.base+", http://localhost:"+port+" {", 1)
	if cf == e.config {
		t.Fatal("the test config has no site line to extend")
	}
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
	return port
}

// A session's use on another site does not keep it alive: it idles out
// on its own site as if that use had not happened.
func TestSessionUsedOnAnotherSiteIdlesOut(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "session {\n\t\t\tidle 30m\n\t\t}", "sigra_gate")
	port := alsoOnLocalhost(t, e)
	e.addUser("ida@example.com")
	e.mustLogin("ida@example.com")
	tok := e.sessionCookie()
	fake.Advance(20 * time.Minute)
	if r := e.hostRequest(tok, "localhost:"+port, "/x", nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("on the other site: status %d; want 401", r.StatusCode)
	}
	fake.Advance(10 * time.Minute) // 30 idle on its own site
	if r := e.hostRequest(tok, "127.0.0.1:"+port, "/x", nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("on its own site, 30 minutes after its last use there: status %d; want 401 (idled out)", r.StatusCode)
	}
}

// Behind a trusted proxy the site's host is the X-Forwarded-Host it
// sends; a blank one is no host, and the request's own Host stands.
func TestSessionHostBehindATrustedProxy(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	cf := strings.Replace(e.config, "\tpersist_config off\n", "\tpersist_config off\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n", 1)
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
	u := e.addUser("pat@example.com")
	tok, _, err := e.rt().auth.StartSession(context.Background(), u, []string{"pwd"}, authcore.ClientMeta{Host: "app.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	own := strings.TrimPrefix(e.base, "http://")
	for _, c := range []struct {
		xfh  string
		want int
	}{
		{"app.example.com", 200},
		{"APP.example.com:443, proxy.internal", 200},
		{"other.example.com", http.StatusUnauthorized},
		{"", http.StatusUnauthorized},                   // 127.0.0.1
		{" , app.example.com", http.StatusUnauthorized}, // blank first: 127.0.0.1
	} {
		hdr := map[string]string{}
		if c.xfh != "" {
			hdr["X-Forwarded-Host"] = c.xfh
		}
		if r := e.hostRequest(tok, own, "/x", hdr); r.StatusCode != c.want {
			t.Errorf("X-Forwarded-Host %q: status %d; want %d", c.xfh, r.StatusCode, c.want)
		}
	}
	// Signed in through the proxy with a blank X-Forwarded-Host, the
	// session has the request's host, not none (which would be valid
	// anywhere).
	_, page := e.get("/.sigra/login", nil)
	r, _ := e.postForm("/.sigra/login", url.Values{"email": {"pat@example.com"}, "password": {testPassword}, "csrf_token": {csrfFrom(t, page)}},
		map[string]string{"X-Forwarded-Host": " , evil.example"})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in with a blank X-Forwarded-Host: status %d; want 303", r.StatusCode)
	}
	p, err := e.rt().auth.Authenticate(context.Background(), e.sessionCookie())
	if err != nil {
		t.Fatal(err)
	}
	if p.Session.Host != "127.0.0.1" {
		t.Errorf("the session's host: %q; want 127.0.0.1", p.Session.Host)
	}
	// Nor is a host taken that Go would refuse in a Host header: a proxy
	// passing on what a client wrote would put it in the lists of
	// sessions, with a bidi control to reorder what they show.
	_, page = e.get("/.sigra/login", nil)
	r, _ = e.postForm("/.sigra/login", url.Values{"email": {"pat@example.com"}, "password": {testPassword}, "csrf_token": {csrfFrom(t, page)}},
		map[string]string{"X-Forwarded-Host": "app.example.com\"><b>\u202egnp.exe"})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in with an odd X-Forwarded-Host: status %d; want 303", r.StatusCode)
	}
	if p, err = e.rt().auth.Authenticate(context.Background(), e.sessionCookie()); err != nil {
		t.Fatal(err)
	}
	if p.Session.Host != "127.0.0.1" {
		t.Errorf("the session's host: %q; want 127.0.0.1", p.Session.Host)
	}
}

// trustLoopback has e's server trust its loopback clients as proxies:
// one that says X-Forwarded-Proto: https reached them over HTTPS.
func trustLoopback(t *testing.T, e *env) {
	t.Helper()
	cf := strings.Replace(e.config, "\tpersist_config off\n", "\tpersist_config off\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n", 1)
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
}

// httpsStatus GETs path as an API client holding only the session
// token, as the HTTPS cookie, through a trusted proxy it reached over
// HTTPS (see trustLoopback).
func (e *env) httpsStatus(token, path string) int {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.base+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.AddCookie(&http.Cookie{Name: "__Host-sigra_session", Value: token})
	resp, err := (&http.Client{Timeout: 10 * time.Second, CheckRedirect: e.client.CheckRedirect}).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A session signed in over plain HTTP, whose cookie anyone on the
// network could read, signs nobody in over HTTPS on the same host name:
// not at the gate, in the portal or in the admin API.
func TestPlainSessionsStayOffHTTPS(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	trustLoopback(t, e)
	e.addUser("root@example.com", "admins")
	check := func(paths ...string) {
		t.Helper()
		tok := e.sessionCookie()
		for _, path := range paths {
			if code := e.statusAs(tok, path); code != 200 {
				t.Fatalf("%s over plain HTTP: status %d; want 200", path, code)
			}
			_, hits := e.up.last()
			if code := e.httpsStatus(tok, path); code != http.StatusUnauthorized {
				t.Errorf("%s over HTTPS: status %d; want 401 (nobody signed in)", path, code)
			}
			if _, after := e.up.last(); after != hits {
				t.Errorf("%s over HTTPS: the plain session reached the app", path)
			}
		}
	}
	e.mustLogin("root@example.com")
	check("/x", "/.sigra/account")
	enrolTOTP(t, e, fake.Now()) // the admin API wants a recent second factor
	check("/.sigra/api/admin/users")
}

// A renewal over plain HTTP (a password change, a sign-out of the
// others, an authenticator set up, a step-up with a code or a recovery
// code) sends its new session's cookie in the clear: that session is
// not valid on HTTPS, even when the one it renews was signed in there.
func TestSessionsRenewedOverPlainHTTPStayOffHTTPS(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	trustLoopback(t, e)
	base, _ := url.Parse(e.base)
	overHTTPS := func(u *authcore.User) string {
		t.Helper()
		tok, _, err := e.rt().auth.StartSession(context.Background(), u, []string{authcore.AMRPassword},
			authcore.ClientMeta{Host: base.Host, Secure: true})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// renewed has renew run in a browser holding tok over plain HTTP, and
	// checks the session it renews tok into.
	renewed := func(what, tok string, renew func(b *env)) {
		t.Helper()
		b := e.browser()
		b.client.Jar.SetCookies(base, []*http.Cookie{{Name: "sigra_session", Value: tok, Path: "/"}})
		renew(b)
		next := b.sessionCookie()
		if next == "" || next == tok {
			t.Fatalf("%s: no new session", what)
		}
		if code := e.statusAs(next, "/x"); code != 200 {
			t.Errorf("%s, over plain HTTP: status %d; want 200", what, code)
		}
		if code := e.httpsStatus(next, "/x"); code != http.StatusUnauthorized {
			t.Errorf("%s, over HTTPS: status %d; want 401", what, code)
		}
	}
	const next = "a much longer new passphrase"
	tok := overHTTPS(e.addUser("pam@example.com"))
	if code := e.httpsStatus(tok, "/x"); code != 200 {
		t.Fatalf("signed in over HTTPS, there: status %d; want 200", code)
	}
	renewed("a password change", tok, func(b *env) {
		if r, body := b.changePassword(testPassword, next, next); r.StatusCode != 200 {
			t.Fatalf("password change: status %d\n%s", r.StatusCode, body)
		}
	})
	renewed("a sign-out of the others", overHTTPS(e.addUser("sam@example.com")), func(b *env) {
		_, page := b.get("/.sigra/account", nil)
		if r, body := b.postForm("/.sigra/account/sessions/revoke-others", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil); r.StatusCode != 200 {
			t.Fatalf("sign-out of the others: status %d\n%s", r.StatusCode, body)
		}
	})
	u := e.addUser("tom@example.com")
	var secret string
	var codes []string
	renewed("an authenticator set up", overHTTPS(u), func(b *env) { secret, codes = enrolTOTP(t, b, fake.Now()) })
	u, err := e.rt().auth.LookupUser(context.Background(), u.ID) // with its second factor
	if err != nil {
		t.Fatal(err)
	}
	fake.Advance(30 * time.Second) // the set-up spent its code's step
	renewed("a step-up with a code", overHTTPS(u), func(b *env) {
		if r := b.secondFactor("code", refTOTP(t, secret, fake.Now())); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("second factor: status %d", r.StatusCode)
		}
	})
	renewed("a step-up with a recovery code", overHTTPS(u), func(b *env) {
		if r := b.secondFactor("recovery_code", codes[0]); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("recovery code: status %d", r.StatusCode)
		}
	})
}

// A right password of a user with a second factor opens a window of
// pending_lifetime for the code, however busy the browser keeps it;
// after that the code signs nobody in. A code typed in time gives the
// session its whole lifetime.
func TestPendingSignInEndsAfterPendingLifetime(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "session {\n pending_lifetime 3m\n }", "pam@example.com")
	late := e.browser()
	start := fake.Now()
	late.login("pam@example.com", testPassword, "/")
	_, page := late.get("/.sigra/mfa", nil)
	if !strings.Contains(page, `name="code"`) {
		t.Fatal("no code form for the pending sign-in")
	}
	for range 2 { // busy: never idle
		fake.Advance(time.Minute)
		if r, body := late.get("/x", jsonAPI); r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "mfa_pending") {
			t.Fatalf("pending session, %v in: status %d %s; want 401 mfa_pending", fake.Now().Sub(start), r.StatusCode, body)
		}
	}
	fake.Advance(time.Minute)
	if r, body := late.get("/x", jsonAPI); r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "login_required") {
		t.Fatalf("pending session at pending_lifetime: status %d %s; want 401 login_required", r.StatusCode, body)
	}
	r, _ := late.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, map[string]string{"Accept": "text/html"})
	if r.StatusCode != http.StatusSeeOther || !strings.Contains(r.Header.Get("Location"), "/.sigra/login") {
		t.Fatalf("right code after pending_lifetime: status %d to %q; want 303 to sign in", r.StatusCode, r.Header.Get("Location"))
	}

	// In time: the session then outlives pending_lifetime.
	fake.Advance(time.Minute) // a later TOTP step than the code above
	inTime := e.browser()
	start = fake.Now()
	inTime.login("pam@example.com", testPassword, "/")
	_, page = inTime.get("/.sigra/mfa", nil)
	fake.Advance(2 * time.Minute)
	r, _ = inTime.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
	if r.StatusCode != http.StatusSeeOther || strings.Contains(r.Header.Get("Location"), "/.sigra/login") {
		t.Fatalf("right code in time: status %d to %q; want 303 on to the app", r.StatusCode, r.Header.Get("Location"))
	}
	for range 3 {
		fake.Advance(time.Minute)
		if r, _ := inTime.get("/x", jsonAPI); r.StatusCode != http.StatusOK {
			t.Fatalf("completed session, %v in: status %d; want 200", fake.Now().Sub(start), r.StatusCode)
		}
	}
}

// A sign-in that names no site (HTTP/1.0 without Host, which a catch-all
// site takes) is refused before any password is checked: its session
// would be bound to no site, and so taken for one from before sessions
// were bound, good on every site.
func TestSignInWithoutHostRefused(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("nohost@example.com")
	port := strings.TrimPrefix(e.base, "http://127.0.0.1:")
	if err := e.load(strings.Replace(e.caddyfile("", "sigra_gate"), e.base+" {", "http://:"+port+" {", 1)); err != nil {
		t.Fatal(err)
	}
	checks := e.rt().auth.PasswordChecks()
	body := "email=nohost%40example.com&password=" + url.QueryEscape(testPassword)
	post := func() (*http.Response, []byte, error) {
		conn, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			return nil, nil, err
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /.sigra/login HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		page, err := io.ReadAll(resp.Body)
		return resp, page, err
	}
	// Right after the reload, the replaced server may still accept a
	// connection and close it unanswered (see lastLoad): dial again.
	resp, page, err := post()
	for try := 0; err != nil && try < 20; try++ {
		time.Sleep(50 * time.Millisecond)
		resp, page, err = post()
	}
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(page), "no Host header") {
		t.Errorf("sign-in without Host: status %d; want 400 saying so\n%s", resp.StatusCode, page)
	}
	if n := e.rt().auth.PasswordChecks() - checks; n != 0 {
		t.Errorf("%d passwords checked; want none", n)
	}
	// With a Host, the same catch-all site signs in as ever.
	e.mustLogin("nohost@example.com")
}

// Where a session was signed in shows beside it, and whether its cookie
// went in the clear: in the admin API, on the admin's user page and on
// the user's own account page, so an admin or the user can end a plain
// session they did not expect.
func TestSessionListsShowPlainSessions(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	base, _ := url.Parse(e.base)
	e.addUser("root@example.com", "admins")
	pam := e.addUser("pam@example.com")
	// One that ended, not swept yet, is not listed anywhere.
	now := fake.Now()
	fake.Set(now.Add(-e.rt().auth.Config().Lifetime - time.Minute))
	if _, _, err := e.rt().auth.StartSession(context.Background(), pam, []string{authcore.AMRPassword},
		authcore.ClientMeta{Host: base.Host, Secure: true}); err != nil {
		t.Fatal(err)
	}
	fake.Set(now)
	if _, _, err := e.rt().auth.StartSession(context.Background(), pam, []string{authcore.AMRPassword},
		authcore.ClientMeta{Host: base.Host, Secure: true}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.mustLogin("pam@example.com") // over plain HTTP

	e.mustLogin("root@example.com")
	enrolTOTP(t, e, fake.Now())
	code, body := e.adminCall(http.MethodGet, "/users/"+pam.ID+"/sessions", nil)
	var v struct {
		Sessions []map[string]any `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("GET sessions: status %d body %s", code, body)
	}
	plain := 0
	for _, s := range v.Sessions {
		if s["host"] != base.Hostname() {
			t.Errorf("session %v: host %v; want %s", s["id"], s["host"], base.Hostname())
		}
		if s["plain"] == true {
			plain++
		}
	}
	if len(v.Sessions) != 2 || plain != 1 {
		t.Errorf("pam's sessions %s; want two, one of them plain", body)
	}
	_, adminPage := e.get("/.sigra/admin/users/"+pam.ID, nil)
	_, accountPage := b.get("/.sigra/account", nil)
	for who, page := range map[string]string{"admin's user page": adminPage, "account page": accountPage} {
		if n := strings.Count(page, `data-sigra="session-plain"`); n != 1 {
			t.Errorf("%s marks %d sessions plain; want 1", who, n)
		}
		if n := strings.Count(page, "on "+base.Hostname()); n != 2 {
			t.Errorf("%s names the host of %d sessions; want 2", who, n)
		}
	}
}
