package caddymodule

import (
	"context"
	"errors"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// failAudit makes the running app's audit writes fail for action (none
// when action is empty), as a broken audit store would.
func (e *env) failAudit(action string) {
	if action == "" {
		e.rt().failRecord.Store(nil)
		return
	}
	f := func(r audit.Row) error {
		if r.Action == action {
			return errors.New("audit store unavailable")
		}
		return nil
	}
	e.rt().failRecord.Store(&f)
}

// sessionsOf counts the user's sessions in the store.
func (e *env) sessionsOf(userID string) int {
	e.t.Helper()
	ss, err := e.rt().store.UserSessions(context.Background(), userID)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ss)
}

// TestSignInAuditFailsClosed: when the row saying that a browser signed
// in (or passed or enrolled a second factor) cannot be written, the
// browser is not signed in: an error, no session cookie, no new session
// in the store, and no half-done enrolment whose recovery codes nobody
// saw. A second factor's rows fail with nothing changed: the session
// stays as it was, and the code unspent.
func TestSignInAuditFailsClosed(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("una@example.com")

	failures := func() float64 { return counterValue(t, e.rt().metrics.auditFailures) }
	failed := failures()
	e.failAudit("auth.login.success")
	resp := e.login("una@example.com", testPassword, "/")
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("password sign-in with a failing audit row: status %d; want 500", resp.StatusCode)
	}
	if n := failures() - failed; n != 1 {
		t.Errorf("sigra_audit_append_failures_total +%v; want +1", n)
	}
	if c := e.sessionCookie(); c != "" {
		t.Errorf("password sign-in with a failing audit row set a session cookie")
	}
	if n := e.sessionsOf(u.ID); n != 0 {
		t.Errorf("password sign-in with a failing audit row left %d sessions; want 0", n)
	}
	// A browser is told what happened, not given an empty page; an API
	// client gets problem+json.
	_, loginPage := e.get("/.sigra/login", map[string]string{"Accept": "text/html"})
	form := url.Values{"email": {"una@example.com"}, "password": {testPassword}, "csrf_token": {csrfFrom(t, loginPage)}, "rd": {"/"}}
	if resp, body := e.postForm("/.sigra/login", form, map[string]string{"Accept": "text/html"}); resp.StatusCode != http.StatusInternalServerError ||
		!strings.Contains(body, "Something went wrong") || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("a browser's sign-in with a failing audit row: status %d; want 500 and a page saying so\n%s", resp.StatusCode, body)
	}
	for _, accept := range []string{"application/json", "*/*"} {
		if resp, body := e.postForm("/.sigra/login", form, map[string]string{"Accept": accept}); resp.StatusCode != http.StatusInternalServerError ||
			resp.Header.Get("Content-Type") != "application/problem+json" || problemReason(body) != "internal_server_error" || strings.Contains(body, "audit") {
			t.Errorf("an API client's (Accept %s) sign-in with a failing audit row: status %d, %s %q; want 500, problem+json without the cause", accept, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}

	e.failAudit("")
	e.mustLogin("una@example.com")
	_, page := e.get("/.sigra/account/totp", nil)
	m := totpSecret.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no TOTP secret on the enrol page")
	}
	e.failAudit("mfa.totp.enrolled")
	cookie := e.sessionCookie()
	enrol := enrolForm(t, page, refTOTP(t, m[1], fake.Now()), testPassword)
	resp, _ = e.postForm("/.sigra/account/totp", enrol, nil)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("TOTP enrolment with a failing audit row: status %d; want 500", resp.StatusCode)
	}
	if has, err := e.rt().auth.HasTOTP(context.Background(), u.ID); err != nil || has {
		t.Errorf("TOTP enrolment with a failing audit row: enrolled %v (%v); want not enrolled", has, err)
	}
	if n := e.sessionsOf(u.ID); n != 1 || e.sessionCookie() != cookie {
		t.Errorf("TOTP enrolment with a failing audit row: %d sessions, cookie changed %v; want the one, as it was", n, e.sessionCookie() != cookie)
	}
	// Nothing was spent: the same form goes through once rows are written.
	e.failAudit("")
	if resp, body := e.postForm("/.sigra/account/totp", enrol, nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-sigra="recovery-codes"`) {
		t.Fatalf("the same enrolment with rows written: status %d; want 200 with the recovery codes", resp.StatusCode)
	}
	if has, _ := e.rt().auth.HasTOTP(context.Background(), u.ID); !has {
		t.Fatal("the same enrolment with rows written: not enrolled")
	}

	// Sign in again: the challenge's row fails.
	secret := m[1]
	fake.Advance(60 * time.Second)
	e.client.Jar, _ = newJar()
	e.login("una@example.com", testPassword, "/")
	_, page = e.get("/.sigra/mfa", nil)
	before := e.sessionsOf(u.ID) // the enrolment's session and this pending one
	e.failAudit("mfa.challenge.success")
	resp, _ = e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("MFA challenge with a failing audit row: status %d; want 500", resp.StatusCode)
	}
	if n := e.sessionsOf(u.ID); n != before {
		t.Errorf("MFA challenge with a failing audit row: %d sessions, %d before; want the pending one kept and no new one", n, before)
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) > 0 {
		t.Errorf("MFA challenge with a failing audit row set cookies %q", got)
	}
	if n := len(e.auditRows("mfa.challenge.success")); n != 0 {
		t.Errorf("%d mfa.challenge.success rows; want none", n)
	}
	// The code was not spent: it passes once rows are written.
	e.failAudit("")
	resp, _ = e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
	if resp.StatusCode != http.StatusSeeOther || e.sessionsOf(u.ID) != before {
		t.Errorf("the same code with rows written: status %d, %d sessions; want 303, the pending one replaced", resp.StatusCode, e.sessionsOf(u.ID))
	}
}

// TestPortalGETIgnoresBody: a GET's body is never parsed. FormValue would
// parse a multipart body on any method and write large parts to temporary
// files that net/http cannot remove behind Caddy: an anonymous way to
// fill the disk. The return URL comes from the query only.
func TestPortalGETIgnoresBody(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("gil@example.com")
	e.mustLogin("gil@example.com")

	var body strings.Builder
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("rd", "/from-the-body")
	fw, _ := mw.CreateFormFile("f", "big.bin")
	_, _ = fw.Write([]byte(strings.Repeat("x", 40<<20))) // above net/http's 32 MiB in memory
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodGet, e.base+"/.sigra/login?rd=/from-the-query", strings.NewReader(body.String()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := e.client.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/from-the-query" {
			t.Errorf("signed-in GET /login?rd=: status %d Location %q; want 303 to /from-the-query", resp.StatusCode, resp.Header.Get("Location"))
		}
	} // else: the server answered and closed without reading the body, which is fine
	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "multipart-") {
			t.Errorf("a GET left the temporary file %s", en.Name())
		}
	}
}

// A password sign-in's session and its auth.login.success row are one
// commit: when the row goes to be written, the session is not stored
// yet (a Caddy killed then leaves neither), and afterwards both are.
func TestSignInSessionWithItsRow(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("sal@example.com")
	before := -1
	raceBeforeCommit(e, "auth.login.success", func() { before = e.sessionsOf(u.ID) })
	e.mustLogin("sal@example.com")
	if before != 0 {
		t.Errorf("%d sessions stored before the sign-in's row was; want the session stored with it", before)
	}
	if n := e.sessionsOf(u.ID); n != 1 {
		t.Errorf("%d sessions after the sign-in; want 1", n)
	}
	if got := e.auditRows("auth.login.success"); len(got) != 1 {
		t.Errorf("%d auth.login.success rows; want 1", len(got))
	}
}

// A sign-out ends its session in the commit of its auth.logout row: when
// the row goes to be written the session still stands, and afterwards
// neither does. When the row cannot be written, the browser is signed
// out all the same (a sign-out does not wait for the audit log), and the
// answer is the error.
func TestSignOutWithItsRow(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("sol@example.com")
	logout := func() *http.Response {
		t.Helper()
		_, page := e.get("/.sigra/logout", nil)
		resp, _ := e.postForm("/.sigra/logout", url.Values{"csrf_token": {csrfFrom(t, page)}}, nil)
		return resp
	}

	e.mustLogin("sol@example.com")
	e.get("/x", nil)
	h, _ := e.up.last()
	sid := h.Get(hdrSession)
	during := -1
	raceBeforeCommit(e, "auth.logout", func() { during = e.sessionsOf(u.ID) })
	if resp := logout(); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: status %d; want 303", resp.StatusCode)
	}
	if during != 1 {
		t.Errorf("%d sessions when the sign-out's row went to be written; want the session still there, ended with the row", during)
	}
	if n := e.sessionsOf(u.ID); n != 0 {
		t.Errorf("%d sessions after the sign-out; want 0", n)
	}
	// The row names the session as X-Sigra-Session did, for an app that
	// holds a socket open for it.
	if rows := e.auditRows("auth.logout"); len(rows) != 1 || sid == "" || rows[0].Metadata["session"] != sid {
		t.Errorf("auth.logout rows %+v; want 1, session %q", rows, sid)
	}

	e.failAudit("")
	e.mustLogin("sol@example.com")
	e.failAudit("auth.logout")
	if resp := logout(); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("sign-out with a failing audit row: status %d; want 500", resp.StatusCode)
	}
	if n := e.sessionsOf(u.ID); n != 0 {
		t.Errorf("sign-out with a failing audit row left %d sessions; want it signed out all the same", n)
	}
	if n := len(e.auditRows("auth.logout")); n != 1 {
		t.Errorf("%d auth.logout rows; want still 1", n)
	}
}

// A session ended from the account or admin pages ends with its
// session.revoked row, in one transaction; when the row cannot be
// written the session ends all the same (a stolen session must not
// outlive a broken audit store), and the answer is an error.
func TestRevokeWithAFailingRow(t *testing.T) {
	e, _, target := startAdminUI(t)
	ctx := context.Background()
	ended := func(id authcore.SessionID) bool {
		_, err := e.rt().store.GetSession(ctx, id)
		if err != nil && !errors.Is(err, authcore.ErrNotFound) {
			t.Fatal(err)
		}
		return err != nil
	}
	sess, _ := mustSession(t, e, target)
	_, page := htmlGet(e, "/.sigra/admin/users/"+target.ID)
	e.failAudit("session.revoked")
	resp, _ := e.postForm("/.sigra/admin/sessions/"+sess.ID.String()+"/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}}, nil)
	if resp.StatusCode != http.StatusInternalServerError || !ended(sess.ID) {
		t.Errorf("an admin's revocation with a failing row: status %d, ended %v; want 500, ended", resp.StatusCode, ended(sess.ID))
	}

	e.failAudit("")
	other := e.browser()
	other.mustLogin(target.Email)
	sid := e.rt().mustPrincipal(t, other.sessionCookie()).Session.ID
	own := e.browser()
	own.mustLogin(target.Email)
	_, page = own.get("/.sigra/account", nil)
	e.failAudit("session.revoked")
	resp, _ = own.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {sid.String()}, "password": {testPassword}}, nil)
	if resp.StatusCode != http.StatusInternalServerError || !ended(sid) {
		t.Errorf("a user's revocation with a failing row: status %d, ended %v; want 500, ended", resp.StatusCode, ended(sid))
	}
	e.failAudit("")
	if n := len(e.auditRows("session.revoked")); n != 0 {
		t.Errorf("%d session.revoked rows; want none", n)
	}
}

// A recovery code's rows fail, any of them: the code stays unspent and
// the session pending; new recovery codes' row fails: the old codes stay
// good. Each change is undone with its rows' transaction.
func TestRecoveryCodesAuditFailsClosed(t *testing.T) {
	_, e, u, _, codes := startEnrolled(t, "", "rhea@example.com")
	ctx := context.Background()
	left := func() int {
		n, err := e.rt().auth.RecoveryCodesLeft(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// New codes, their row failing: the old ones stay.
	_, page := e.get("/.sigra/account/totp", nil)
	e.failAudit("mfa.recovery_code.regenerated")
	if r, body := e.postForm("/.sigra/account/recovery-codes", newCodesForm(t, page, testPassword), nil); r.StatusCode != http.StatusInternalServerError || strings.Contains(body, `data-sigra="recovery-codes"`) {
		t.Errorf("new recovery codes with a failing row: status %d; want 500 without codes", r.StatusCode)
	}
	e.failAudit("")

	// A sign-in with a recovery code, each of its rows failing in turn.
	b := e.browser()
	b.login(u.Email, testPassword, "/")
	pending := b.sessionCookie()
	for _, action := range []string{"mfa.challenge.success", "mfa.recovery_code.used", "auth.login.success"} {
		_, page = b.get("/.sigra/mfa", nil)
		e.failAudit(action)
		r, _ := b.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "recovery_code": {codes[0]}}, nil)
		e.failAudit("")
		if r.StatusCode != http.StatusInternalServerError || len(r.Header.Values("Set-Cookie")) > 0 {
			t.Errorf("%s failing: status %d, cookies %q; want 500, none", action, r.StatusCode, r.Header.Values("Set-Cookie"))
		}
		if n := left(); n != authcore.RecoveryCodeCount {
			t.Errorf("%s failing: %d codes left; want all %d (none spent, the old ones kept)", action, n, authcore.RecoveryCodeCount)
		}
		if p := e.rt().mustPrincipal(t, pending); !p.Session.Pending {
			t.Errorf("%s failing: the session is no longer pending", action)
		}
	}
	if n := len(e.auditRows("mfa.*")) - len(e.auditRows("mfa.totp.enrolled")); n != 0 {
		t.Errorf("%d mfa rows besides the enrolment; want none", n)
	}
	// The old first code, neither replaced nor spent, signs in.
	_, page = b.get("/.sigra/mfa", nil)
	if r, _ := b.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "recovery_code": {codes[0]}}, nil); r.StatusCode != http.StatusSeeOther || left() != authcore.RecoveryCodeCount-1 {
		t.Errorf("the code once rows are written: status %d, %d left; want 303, one spent", r.StatusCode, left())
	}
}

// A session replaced between the admin's page and the revocation (its
// user passed a second factor in it, which gives it a new id) is not
// revoked by the old id's form, and the answer says so: a success would
// leave the session that stands alive behind it.
func TestRevokeOfAReplacedSession(t *testing.T) {
	e, _, target := startAdminUI(t)
	ctx := context.Background()
	sess, _ := mustSession(t, e, target)
	var next *authcore.Session
	replace := func(r audit.Row) error {
		if r.Action == "session.revoked" && next == nil {
			var err error
			if _, next, err = e.rt().auth.CompleteSecondFactor(ctx, sess.ID, authcore.AMROTP, false); err != nil {
				t.Error(err)
			}
		}
		return nil
	}
	e.rt().failRecord.Store(&replace)
	t.Cleanup(func() { e.rt().failRecord.Store(nil) })
	code, body := e.apiPost("/sessions/" + sess.ID.String() + "/revoke")
	if code != http.StatusNotFound {
		t.Errorf("revoking a session replaced meanwhile: status %d; want 404\n%s", code, body)
	}
	if next == nil {
		t.Fatal("the session was not replaced")
	}
	if _, err := e.rt().store.GetSession(ctx, next.ID); err != nil {
		t.Errorf("the session that replaced it: %v; want it alive", err)
	}
	if n := len(e.auditRows("session.revoked")); n != 0 {
		t.Errorf("%d session.revoked rows; want none", n)
	}
}

// A site with handle_errors answers a portal's server error as the
// operator wrote it, browsers included; another site's (the Caddyfile
// puts both in one server, matched by host) leaves it to the portal's
// page.
func TestPortalServerErrorGoesToHandleErrors(t *testing.T) {
	for _, c := range []struct{ errors, want string }{
		{"handle_errors", "custom 500"},
		{"handle_errors 5xx", "custom 500"},
	} {
		e := startCaddy(t, "", "sigra_gate\n\t"+c.errors+" {\n\t\trespond \"custom {err.status_code}\" {err.status_code}\n\t}")
		e.addUser("una@example.com")
		e.failAudit("auth.login.success")
		_, page := e.get("/.sigra/login", map[string]string{"Accept": "text/html"})
		form := url.Values{"email": {"una@example.com"}, "password": {testPassword}, "csrf_token": {csrfFrom(t, page)}, "rd": {"/"}}
		if resp, body := e.postForm("/.sigra/login", form, map[string]string{"Accept": "text/html"}); resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, c.want) {
			t.Errorf("%s: a browser's sign-in with a failing audit row: status %d, %q; want 500 and %q", c.errors, resp.StatusCode, body, c.want)
		}
	}
}

func TestHasErrorRoutesIsPerSite(t *testing.T) {
	srv := &caddyhttp.Server{Errors: &caddyhttp.HTTPErrorConfig{Routes: caddyhttp.RouteList{
		{MatcherSets: caddyhttp.MatcherSets{{caddyhttp.MatchHost{"other.example"}}}},
	}}}
	for host, want := range map[string]bool{"app.example": false, "other.example": true} {
		r := httptest.NewRequest(http.MethodPost, "http://"+host+"/.sigra/login", nil)
		ctx := context.WithValue(r.Context(), caddyhttp.ServerCtxKey, srv)
		ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer())
		if got := hasErrorRoutes(r.WithContext(ctx), errors.New("store unavailable")); got != want {
			t.Errorf("an error on %s with handle_errors on other.example: taken %v; want %v", host, got, want)
		}
	}
}
