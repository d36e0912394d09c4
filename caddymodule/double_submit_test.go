package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// holdFirstRow makes the first success row of action wait until a second
// one is on its way, or 2 s: two submits of one form then both pass their
// checks before either changes anything, unless the second waits for the
// first, as it should. It returns how many such rows were attempted.
func (e *env) holdFirstRow(action string) (attempted func() int) {
	var mu sync.Mutex
	n := 0
	second := make(chan struct{})
	f := func(r audit.Row) error {
		if r.Action != action || r.Outcome != "success" {
			return nil
		}
		mu.Lock()
		n++
		mine := n
		if mine == 2 {
			close(second)
		}
		mu.Unlock()
		if mine == 1 {
			select {
			case <-second:
			case <-time.After(2 * time.Second):
			}
		}
		return nil
	}
	e.rt().failRecord.Store(&f)
	e.t.Cleanup(func() { e.rt().failRecord.Store(nil) })
	return func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// submitTwice posts form to path twice at once, as a double click in a
// browser does, and returns both answers. A twin that comes in after the
// first has ended its session is sent to sign in, as a browser is.
func (e *env) submitTwice(path string, form url.Values) (status [2]int, body [2]string) {
	resps, body := e.postTwice(path, form, map[string]string{"Accept": "text/html"})
	for i, r := range resps {
		status[i] = r.StatusCode
	}
	return status, body
}

// answer is a status and a text its body holds.
type answer struct {
	status int
	text   string
}

// oneDoneOneTwin checks the two answers to a form sent twice that
// replaces the session: one is done's, the other the twin's, which
// sets no cookie (the browser may hold the first answer's new session).
func oneDoneOneTwin(t *testing.T, resps [2]*http.Response, bodies [2]string, done, twin answer) {
	t.Helper()
	var got [2]int
	for i, resp := range resps {
		switch {
		case resp.StatusCode == done.status && strings.Contains(bodies[i], done.text):
			got[0]++
		case resp.StatusCode == twin.status && strings.Contains(bodies[i], twin.text):
			got[1]++
			if c := resp.Header.Get("Set-Cookie"); c != "" {
				t.Errorf("the twin's answer sets a cookie %q; want the first's session left alone", c)
			}
		default:
			t.Errorf("submit %d: status %d\n%s", i, resp.StatusCode, bodies[i])
		}
	}
	if got != [2]int{1, 1} {
		t.Errorf("%d done (%q) and %d twin (%q) answers; want one of each", got[0], done.text, got[1], twin.text)
	}
}

// postTwice posts form to path twice at once, with the headers hdr, and
// returns both responses and their bodies.
func (e *env) postTwice(path string, form url.Values, hdr map[string]string) (resps [2]*http.Response, bodies [2]string) {
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], bodies[i] = e.postForm(path, form, hdr)
		}()
	}
	wg.Wait()
	return resps, bodies
}

// A delete form sent twice deletes once: the second waits for the first
// and then answers as it did, with no second row and no 500.
func TestDeleteAccountSentTwice(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("dee@example.com")
	e.mustLogin("dee@example.com")
	_, page := e.get("/.sigra/account/delete", map[string]string{"Accept": "text/html"})
	rows := e.holdFirstRow("account.deletion_execute")
	status, body := e.submitTwice("/.sigra/account/delete", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}, "confirm": {"yes"}})
	for i := range 2 {
		if status[i] != http.StatusOK || !strings.Contains(body[i], "Account deleted") {
			t.Errorf("submit %d: status %d; want 200, Account deleted\n%s", i, status[i], body[i])
		}
	}
	if n := rows(); n != 1 {
		t.Errorf("%d account.deletion_execute success rows attempted; want 1", n)
	}
	if got := e.auditRows("account.deletion_execute"); len(got) != 1 || got[0].Outcome != "success" {
		t.Errorf("account.deletion_execute rows %+v; want one success", got)
	}
	if _, err := e.rt().store.UserByID(context.Background(), u.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("UserByID: %v; want the user deleted", err)
	}
}

// A password form sent twice changes the password once; the second says
// it is already changed (not "unchanged"), and leaves the cookie alone:
// the browser may hold the first answer's new session.
func TestChangePasswordSentTwice(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("pat@example.com")
	e.mustLogin("pat@example.com")
	_, page := e.get("/.sigra/account/password", map[string]string{"Accept": "text/html"})
	const next = "a brand new passphrase"
	rows := e.holdFirstRow("auth.password_change.success")
	resps, bodies := e.postTwice("/.sigra/account/password", url.Values{"csrf_token": {csrfFrom(t, page)},
		"current_password": {testPassword}, "new_password": {next}, "confirm_password": {next}}, nil)
	oneDoneOneTwin(t, resps, bodies, answer{http.StatusOK, "Your password is changed."}, answer{http.StatusOK, "already changed"})
	if n := rows(); n != 1 {
		t.Errorf("%d auth.password_change.success rows attempted; want 1", n)
	}
	if got := e.auditRows("auth.password_change.failure"); len(got) != 0 {
		t.Errorf("failure rows %+v; want none", got)
	}
	if resp := e.browser().login("pat@example.com", next, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-in with the new password: status %d; want 303", resp.StatusCode)
	}
}

// A session signed out while its password form was on the way changes
// nothing and says so (the password is not the new one).
func TestChangePasswordSessionEndedMeanwhile(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("sue@example.com")
	e.mustLogin("sue@example.com")
	_, page := e.get("/.sigra/account/password", map[string]string{"Accept": "text/html"})
	// The change waits here, after the form's checks and the password's,
	// while the session is signed out elsewhere.
	unlock := accountChange.lock(u.ID)
	done := make(chan struct{})
	var resp *http.Response
	var body string
	const next = "a brand new passphrase"
	go func() {
		defer close(done)
		resp, body = e.postForm("/.sigra/account/password", url.Values{"csrf_token": {csrfFrom(t, page)},
			"current_password": {testPassword}, "new_password": {next}, "confirm_password": {next}}, nil)
	}()
	for deadline := time.Now().Add(10 * time.Second); !accountChange.waiting(u.ID); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			unlock()
			t.Fatal("the change never reached the lock")
		}
	}
	if _, err := e.rt().auth.RevokeUserSessions(context.Background(), u.ID); err != nil {
		t.Fatal(err)
	}
	unlock()
	<-done
	if resp == nil {
		t.Fatal("the password change got no answer (its error is above)")
	}
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "password is unchanged") {
		t.Errorf("status %d; want 401, unchanged\n%s", resp.StatusCode, body)
	}
	// Another tab may have replaced the session: the browser's cookie is
	// left as it is.
	if c := resp.Header.Values("Set-Cookie"); len(c) != 0 {
		t.Errorf("the answer sets cookies %q; want none", c)
	}
	if got := e.auditRows("auth.password_change.*"); len(got) != 1 || got[0].Metadata["reason"] != "session_ended" {
		t.Errorf("rows %+v; want one failure, session_ended", got)
	}
	if resp := e.browser().login("sue@example.com", testPassword, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-in with the old password: status %d; want 303", resp.StatusCode)
	}
}

// waiting reports whether someone waits for id's lock while another
// holds it.
func (l *userLocks) waiting(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.m[id]
	return u != nil && u.refs > 1
}

// An enrolment confirmed twice at once (on a sign-in old enough that the
// password is asked again, so both submits pass the early checks) sets
// the app up once. The second answer must not show a new secret and ask
// the user to remove the entry that is now their authenticator.
func TestTOTPEnrolmentSentTwice(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("tim@example.com")
	for try := range 2 {
		b := e.browser()
		b.mustLogin("tim@example.com")
		fake.Advance(freshFactor + time.Minute)
		_, page := b.get("/.sigra/account/totp", nil)
		m := totpSecret.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no secret on the enrolment page\n%s", page)
		}
		// Both submits reach their commits before either is made: the
		// second's session is replaced by the first's commit, and its
		// own commit refused.
		attempted := e.holdFirstRow("mfa.totp.enrolled")
		status, body := b.submitTwice("/.sigra/account/totp", enrolForm(t, page, refTOTP(t, m[1], fake.Now()), testPassword))
		e.rt().failRecord.Store(nil)
		if n := attempted(); n != 2 {
			t.Fatalf("try %d: %d submits reached the commit; want both (the race was not tested)", try, n)
		}
		codes, twice := 0, 0
		for i := range 2 {
			if strings.Contains(body[i], `data-sigra="recovery-codes"`) {
				codes++
			}
			if strings.Contains(body[i], "Remove the old entry") || totpSecret.MatchString(body[i]) {
				t.Errorf("submit %d: status %d, a new secret to scan\n%s", i, status[i], body[i])
			}
			if strings.Contains(body[i], "nothing was set up") {
				t.Errorf("submit %d: status %d, told that nothing was set up\n%s", i, status[i], body[i])
			}
			if status[i] == http.StatusConflict && strings.Contains(body[i], "sent twice") {
				twice++
			}
		}
		if codes != 1 || twice != 1 {
			t.Fatalf("try %d: %d answers show recovery codes, %d say the form was sent twice; want 1 and 1 (statuses %v)", try, codes, twice, status)
		}
		// Off again for the next try.
		if err := e.rt().auth.RemoveTOTP(context.Background(), u.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// A code form sent twice signs in once: the second waits for the first,
// finds its session replaced, and goes where the first went, with no
// failure row and no failure counted (a replayed code would count as a
// wrong one).
func TestMFASentTwice(t *testing.T) {
	fake, e, u, secret, codes := startEnrolled(t, "", "m@example.com")
	for i, field := range []string{"code", "recovery_code", "code"} {
		fake.Advance(time.Minute)
		b := e.browser()
		if r := b.login("m@example.com", testPassword, "/x"); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in: status %d", r.StatusCode)
		}
		_, page := b.get("/.sigra/mfa?rd=%2Fx", nil)
		v := refTOTP(t, secret, fake.Now())
		if field == "recovery_code" {
			v = codes[i]
		}
		status, body := b.submitTwice("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, field: {v}, "rd": {"/x"}})
		for j := range 2 {
			if status[j] != http.StatusSeeOther {
				t.Errorf("%s, submit %d: status %d; want 303\n%s", field, j, status[j], body[j])
			}
		}
	}
	if rows := e.auditRows("mfa.challenge.failure"); len(rows) != 0 {
		t.Errorf("mfa.challenge.failure rows %+v; want none", rows)
	}
	if n := len(e.auditRows("mfa.challenge.success")); n != 3 {
		t.Errorf("%d mfa.challenge.success rows; want 3 (one per pair)", n)
	}
	if st, err := e.rt().store.RegulationState(context.Background(), authcore.UserMFAKey(u.ID)); err != nil || len(st.Attempts) != 0 {
		t.Errorf("the codes' regulation state %+v, %v; want no failure counted", st, err)
	}
}

// A revocation or a sign-out sent twice ends the session once and is
// audited once; the second answer is the first's (no error).
func TestRevokeAndLogoutSentTwice(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("rae@example.com")
	for round := range 5 {
		e.mustLogin("rae@example.com")
		other := e.browser()
		other.mustLogin("rae@example.com")
		sid := e.rt().mustPrincipal(t, other.sessionCookie()).Session.ID.String()
		_, page := e.get("/.sigra/account", nil)
		status, body := e.submitTwice("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {sid}, "password": {testPassword}})
		for i := range 2 {
			if status[i] != http.StatusSeeOther && status[i] != http.StatusNotFound {
				t.Errorf("round %d, revoke %d: status %d; want 303 (or 404 once it is gone)\n%s", round, i, status[i], body[i])
			}
		}
		_, page = e.get("/.sigra/account", nil)
		status, body = e.submitTwice("/.sigra/logout", url.Values{"csrf_token": {csrfFrom(t, page)}})
		for i := range 2 {
			if status[i] != http.StatusSeeOther {
				t.Errorf("round %d, logout %d: status %d; want 303\n%s", round, i, status[i], body[i])
			}
		}
	}
	if n := len(e.auditRows("session.revoked")); n != 5 {
		t.Errorf("%d session.revoked rows; want 5, one per revoked session", n)
	}
	if n := len(e.auditRows("auth.logout")); n != 5 {
		t.Errorf("%d auth.logout rows; want 5, one per session signed out", n)
	}
}

// "Sign out all other sessions" sent twice signs them out once. The
// twin, waiting for the first, finds its session replaced: it says the
// first may have done it, writes no row, and leaves the cookie alone
// (the browser holds the first answer's).
func TestRevokeOthersSentTwice(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("rex@example.com")
	e.mustLogin("rex@example.com")
	other := e.browser()
	other.mustLogin("rex@example.com")
	_, page := e.get("/.sigra/account", nil)
	rows := e.holdFirstRow("session.revoked_others")
	resps, bodies := e.postTwice("/.sigra/account/sessions/revoke-others", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil)
	oneDoneOneTwin(t, resps, bodies, answer{http.StatusOK, "Your other sessions are signed out."}, answer{http.StatusConflict, "If you sent the form twice"})
	if n := rows(); n != 1 {
		t.Errorf("%d session.revoked_others success rows attempted; want 1", n)
	}
	if r, _ := e.get("/x", nil); r.StatusCode != http.StatusOK {
		t.Errorf("this browser after: status %d; want signed in, under the first answer's cookie", r.StatusCode)
	}
	if r, _ := other.get("/x", map[string]string{"Accept": "application/json"}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the other session after: status %d; want 401", r.StatusCode)
	}
}

// The same for an admin's revocation from the user's page.
func TestAdminRevokeSentTwice(t *testing.T) {
	e, _, target := startAdminUI(t)
	for round := range 5 {
		sess, _ := mustSession(t, e, target)
		_, page := htmlGet(e, "/.sigra/admin/users/"+target.ID)
		status, body := e.submitTwice("/.sigra/admin/sessions/"+sess.ID.String()+"/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}})
		for i := range 2 {
			if status[i] != http.StatusSeeOther && status[i] != http.StatusNotFound {
				t.Errorf("round %d, revoke %d: status %d; want 303 (or 404 once it is gone)\n%s", round, i, status[i], body[i])
			}
		}
	}
	if n := len(e.auditRows("session.revoked")); n != 5 {
		t.Errorf("%d session.revoked rows; want 5, one per revoked session", n)
	}
}

// A wrong code's wait happens outside the user's lock: the owner's right
// code does not queue behind someone else's failure delay.
func TestMFAFailureWaitsOutsideTheLock(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "", "w@example.com")
	fake.Advance(time.Minute)
	release := make(chan struct{})
	waiting := make(chan struct{}, 1)
	wait = func(ctx context.Context, d time.Duration) { // useFakeClock puts the old one back
		select {
		case waiting <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	bad := e.browser()
	bad.login("w@example.com", testPassword, "/")
	badDone := make(chan struct{})
	go func() { defer close(badDone); bad.secondFactor("code", "000000") }()
	defer func() { close(release); <-badDone }()
	<-waiting // the wrong code is in its failure delay
	good := e.browser()
	good.login("w@example.com", testPassword, "/")
	done := make(chan int, 1)
	go func() {
		status := 0 // no answer: the harness failed the test, saying why
		defer func() { done <- status }()
		status = good.secondFactor("code", refTOTP(t, secret, fake.Now())).StatusCode
	}()
	select {
	case status := <-done:
		if status == 0 {
			t.Fatal("the owner's code got no answer (its error is above)")
		}
		if status != http.StatusSeeOther {
			t.Errorf("the owner's right code: status %d; want 303", status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the owner's code waited for another submit's failure delay")
	}
}

// A form for new recovery codes without the set it was shown with (a
// script's, a custom page's) is answered as incomplete, before the
// password is checked, and changes nothing; it is not told that the
// codes changed.
func TestRecoveryCodesFormWithoutItsSet(t *testing.T) {
	_, e, u, _, codes := startEnrolled(t, "", "ivo@example.com")
	_, page := e.get("/.sigra/account/totp", nil)
	checks := processCounts.passwordChecks.Load()
	r, body := e.postForm("/.sigra/account/recovery-codes", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Incomplete form") || recoveryCodes.MatchString(body) {
		t.Errorf("new codes without code_set: status %d; want 400, incomplete, no codes\n%s", r.StatusCode, body)
	}
	if n := processCounts.passwordChecks.Load() - checks; n != 0 {
		t.Errorf("the password was checked %d times; want none", n)
	}
	if err := e.rt().auth.UseRecoveryCode(context.Background(), u.ID, codes[0]); err != nil {
		t.Errorf("an old code after the refused form: %v; want it good", err)
	}
}

// New recovery codes sent twice make one set. A reload of the page that
// lists them (or Back and send again) is refused, and the codes shown
// are the ones that work; sent at once, the second waits for the first
// and is refused the same way. The refusal shows the form again, for a
// set made on purpose.
func TestRecoveryCodesSentTwice(t *testing.T) {
	_, e, u, _, _ := startEnrolled(t, "", "rue@example.com")
	ctx := context.Background()
	const path = "/.sigra/account/recovery-codes"
	const changed = "Your recovery codes changed after this page was shown"
	_, page := e.get("/.sigra/account/totp", nil)
	form := newCodesForm(t, page, testPassword)
	// The field names the set by a MAC under the server's key: a hash of
	// the stored hashes alone would, with one code left, confirm guesses
	// of it offline.
	if _, digest, err := e.rt().auth.RecoveryCodeSet(ctx, u.ID); err != nil || strings.Contains(digest, form.Get("code_set")[:16]) {
		t.Errorf("code_set %q is a part of the set's unkeyed digest %q (%v)", form.Get("code_set"), digest, err)
	}
	r, body := e.postForm(path, form, nil)
	rc := recoveryCodes.FindStringSubmatch(body)
	if r.StatusCode != http.StatusOK || rc == nil {
		t.Fatalf("new codes: status %d, codes shown %v; want 200 with codes\n%s", r.StatusCode, rc != nil, body)
	}
	shown := strings.Fields(rc[1])
	r, body = e.postForm(path, form, nil)
	if r.StatusCode != http.StatusConflict || recoveryCodes.MatchString(body) || !strings.Contains(body, changed) || !strings.Contains(body, `data-sigra="recovery-codes-form"`) {
		t.Errorf("the form sent again: status %d; want 409, the form with why, no codes\n%s", r.StatusCode, body)
	}
	if err := e.rt().auth.UseRecoveryCode(ctx, u.ID, shown[0]); err != nil {
		t.Errorf("a code shown, after the form was sent again: %v; want it good", err)
	}
	// The refusal's page, a code spent since it was shown, is refused
	// too; a page shown now makes a set.
	if r, body := e.postForm(path, newCodesForm(t, body, testPassword), nil); r.StatusCode != http.StatusConflict || !strings.Contains(body, changed) {
		t.Errorf("the refusal's page, a code spent since: status %d; want 409\n%s", r.StatusCode, body)
	}
	if n := len(e.auditRows("mfa.recovery_code.regenerated")); n != 1 {
		t.Errorf("%d mfa.recovery_code.regenerated rows; want 1", n)
	}

	// At once: the first is held in its commit until the second is in,
	// or 2 s (the second waits for the first).
	_, page = e.get("/.sigra/account/totp", nil)
	e.holdFirstRow("mfa.recovery_code.regenerated")
	resps, bodies := e.postTwice(path, newCodesForm(t, page, testPassword), nil)
	e.rt().failRecord.Store(nil)
	oneDoneOneTwin(t, resps, bodies, answer{http.StatusOK, `data-sigra="recovery-codes"`}, answer{http.StatusConflict, changed})
	if n := len(e.auditRows("mfa.recovery_code.regenerated")); n != 2 {
		t.Errorf("%d mfa.recovery_code.regenerated rows; want 2", n)
	}
	for i, b := range bodies {
		if rc := recoveryCodes.FindStringSubmatch(b); rc != nil {
			if err := e.rt().auth.UseRecoveryCode(ctx, u.ID, strings.Fields(rc[1])[0]); err != nil {
				t.Errorf("a code of answer %d: %v; want it good", i, err)
			}
		}
	}
}
