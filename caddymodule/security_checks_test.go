package caddymodule

// Behaviour tests for security checks that a mutation review found
// unguarded: each test fails when the check it names is removed.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

var jsonAPI = map[string]string{"Accept": "application/json"}

// browser returns a second browser (its own cookie jar) on the same site.
func (e *env) browser() *env {
	b := *e
	jar, _ := newJar()
	b.client = &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: e.client.CheckRedirect}
	return &b
}

// statusAs GETs path as an API client holding only this session token.
func (e *env) statusAs(token, path string) int {
	e.t.Helper()
	return e.hostRequest(token, "", path, nil).StatusCode
}

// hostRequest GETs path from e's listener as an API client holding only
// the session token, asking for host (the Host header; e's own if
// empty), with the headers hdr.
func (e *env) hostRequest(token, host, path string, hdr map[string]string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.base+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Accept", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	req.AddCookie(&http.Cookie{Name: "sigra_session", Value: token})
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: e.client.CheckRedirect}
	resp, err := c.Do(req)
	if err != nil && closedByReload(req, err) {
		resp, err = c.Do(req)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// secondFactor posts the MFA form with a TOTP code (field "code") or a
// recovery code (field "recovery_code").
func (e *env) secondFactor(field, code string) *http.Response {
	e.t.Helper()
	_, page := e.get("/.sigra/mfa", nil)
	r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(e.t, page)}, field: {code}}, nil)
	return r
}

// adminCall calls the admin JSON API; state-changing calls go out
// same-origin unless hdr says otherwise.
func (e *env) adminCall(method, path string, hdr map[string]string) (int, string) {
	e.t.Helper()
	h := map[string]string{"Accept": "application/json"}
	if method != http.MethodGet {
		h["Origin"] = e.base
	}
	for k, v := range hdr {
		h[k] = v
	}
	resp := e.do(method, "/.sigra/api/admin"+path, h, nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startAsAdmin runs the bare-gate site with root@example.com signed in as
// an admin who just enrolled TOTP (so the admin API answers), and a second
// user, target@example.com, to act on.
func startAsAdmin(t *testing.T) (e *env, target *authcore.User) {
	t.Helper()
	fake := useFakeClock(t)
	e = startCaddy(t, "", "sigra_gate")
	e.addUser("root@example.com", "admins")
	target = e.addUser("target@example.com")
	e.mustLogin("root@example.com")
	enrolTOTP(t, e, fake.Now())
	return e, target
}

// adminCSRF fetches the admin API's CSRF token.
func (e *env) adminCSRF() string {
	e.t.Helper()
	code, body := e.adminCall(http.MethodGet, "/csrf", nil)
	var tok struct {
		CSRF string `json:"csrf_token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil || code != 200 || tok.CSRF == "" {
		e.t.Fatalf("GET /api/admin/csrf: status %d body %s", code, body)
	}
	return tok.CSRF
}

// problemReason decodes a problem+json body's reason.
func problemReason(body string) string {
	var p problem
	_ = json.Unmarshal([]byte(body), &p)
	return p.Reason
}

// otherSessionCSRF is a well-formed CSRF token that belongs to another
// session: valid, but not for the request's.
func otherSessionCSRF(t *testing.T, e *env, u *authcore.User) string {
	t.Helper()
	s, _ := mustSession(t, e, u)
	return e.rt().csrf.Token("s:" + s.ID.String())
}

// M1: gate.go check() — the amr requirement.
func TestGateAMRRequirementDenies(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", `sigra_gate
	sigra_gate /otp/* {
		amr otp
	}
	sigra_gate /pwd/* {
		amr pwd
	}`)
	e.addUser("amy@example.com")
	e.mustLogin("amy@example.com") // no second factor: a full, password-only session
	if got := e.amr(); got != "pwd" {
		t.Fatalf("amr %q; want pwd", got)
	}
	denied := func(path string) {
		t.Helper()
		_, before := e.up.last()
		r, body := e.get(path, jsonAPI)
		if r.StatusCode != http.StatusForbidden || problemReason(body) != "amr" {
			t.Errorf("%s: status %d body %s; want 403 reason amr", path, r.StatusCode, body)
		}
		r, _ = e.get(path, map[string]string{"Accept": "text/html"})
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("%s (browser): status %d; want 403", path, r.StatusCode)
		}
		if _, after := e.up.last(); after != before {
			t.Errorf("%s: the app was reached by a request the amr requirement refuses", path)
		}
	}
	allowed := func(path string) {
		t.Helper()
		if r, body := e.get(path, jsonAPI); r.StatusCode != 200 || body != "app:"+path {
			t.Errorf("%s: status %d body %q; want 200 from the app", path, r.StatusCode, body)
		}
	}
	denied("/otp/x")
	allowed("/pwd/x")

	enrolTOTP(t, e, fake.Now())
	if got := e.amr(); got != "pwd,otp,mfa" {
		t.Fatalf("amr %q after enrolment; want pwd,otp,mfa", got)
	}
	allowed("/otp/x")
	allowed("/pwd/x")
}

// M2: portal_admin.go — the admin API needs a second factor within
// admin_mfa_max_age.
func TestAdminAPIMFAMaxAge(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "admin_mfa_max_age 5m", "sigra_gate")
	e.addUser("root@example.com", "admins")
	e.mustLogin("root@example.com")
	secret, _ := enrolTOTP(t, e, fake.Now())

	fake.Advance(4 * time.Minute)
	if code, body := e.adminCall(http.MethodGet, "/users", nil); code != 200 {
		t.Fatalf("second factor 4m old (max 5m): status %d body %s; want 200", code, body)
	}
	tok := e.adminCSRF()

	fake.Advance(2 * time.Minute) // 6m: older than admin_mfa_max_age
	for _, path := range []string{"/users", "/audit", "/csrf"} {
		code, body := e.adminCall(http.MethodGet, path, nil)
		if code != http.StatusUnauthorized || problemReason(body) != "mfa_required" {
			t.Errorf("GET %s with a 6m old second factor: status %d body %s; want 401 mfa_required", path, code, body)
		}
	}
	victim := e.addUser("victim@example.com")
	code, body := e.adminCall(http.MethodPost, "/users/"+victim.ID+"/disable", map[string]string{"X-CSRF-Token": tok})
	if code != http.StatusUnauthorized || problemReason(body) != "mfa_required" {
		t.Errorf("POST disable with a 6m old second factor: status %d body %s; want 401 mfa_required", code, body)
	}
	if u, _ := e.rt().store.UserByID(context.Background(), victim.ID); u == nil || u.Disabled {
		t.Error("a stale admin session disabled a user")
	}

	// Step up, and the API answers again.
	fake.Advance(30 * time.Second)
	if r := e.secondFactor("code", refTOTP(t, secret, fake.Now())); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("step-up: status %d; want 303", r.StatusCode)
	}
	if code, body := e.adminCall(http.MethodGet, "/users", nil); code != 200 {
		t.Errorf("after step-up: status %d body %s; want 200", code, body)
	}
}

// M3: portal_admin.go — a cross-origin admin POST is refused even with a
// valid X-CSRF-Token.
func TestAdminAPIRefusesCrossOriginWithValidToken(t *testing.T) {
	e, target := startAsAdmin(t)
	tok := e.adminCSRF()
	path := "/users/" + target.ID + "/disable"

	for name, hdr := range map[string]map[string]string{
		"foreign Origin":         {"Origin": "https://evil.example"},
		"null Origin":            {"Origin": "null"},
		"cross-site fetch":       {"Sec-Fetch-Site": "cross-site"},
		"same-site (not origin)": {"Sec-Fetch-Site": "same-site"},
		"this host over https":   {"Origin": "https://" + strings.TrimPrefix(e.base, "http://")},
	} {
		hdr["X-CSRF-Token"] = tok
		code, body := e.adminCall(http.MethodPost, path, hdr)
		if code != http.StatusForbidden || problemReason(body) != "csrf" {
			t.Errorf("%s: status %d body %s; want 403 reason csrf", name, code, body)
		}
	}
	// Same origin, with a token that is not this session's.
	tampered := []byte(tok)
	tampered[len(tampered)/2] ^= 1
	root, _ := e.rt().store.UserByEmail(context.Background(), "root@example.com")
	for name, bad := range map[string]string{
		"tampered token":          string(tampered),
		"another session's token": otherSessionCSRF(t, e, root),
		"a token for no session":  e.rt().csrf.Token(""),
		"no token":                "",
	} {
		code, body := e.adminCall(http.MethodPost, path, map[string]string{"X-CSRF-Token": bad, "Sec-Fetch-Site": "same-origin"})
		if code != http.StatusForbidden || problemReason(body) != "csrf" {
			t.Errorf("same origin, %s: status %d body %s; want 403 reason csrf", name, code, body)
		}
	}
	if u, _ := e.rt().store.UserByID(context.Background(), target.ID); u == nil || u.Disabled {
		t.Fatal("a cross-origin request disabled the user")
	}
	if rows := e.auditRows("admin.user.disable"); len(rows) != 0 {
		t.Errorf("%d admin.user.disable rows after refused requests; want 0", len(rows))
	}

	code, body := e.adminCall(http.MethodPost, path, map[string]string{"X-CSRF-Token": tok, "Sec-Fetch-Site": "same-origin"})
	if code != 200 {
		t.Fatalf("same-origin POST with the token: status %d body %s; want 200", code, body)
	}
	if u, _ := e.rt().store.UserByID(context.Background(), target.ID); u == nil || !u.Disabled {
		t.Error("the same-origin disable did not disable the user")
	}
}

// M12: portal.go formPrincipal — account forms need the session's CSRF
// token and change nothing without it.
func TestAccountFormsRefuseBadCSRF(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("kim@example.com")
	other, otherTok := mustSession(t, e, u) // a second, full session of kim's
	e.mustLogin("kim@example.com")
	_, codes := enrolTOTP(t, e, fake.Now()) // the second factor is fresh from here
	ctx := context.Background()

	_, page := e.get("/.sigra/account", nil)
	good := csrfFrom(t, page)
	tampered := []byte(good)
	tampered[len(tampered)/2] ^= 1
	bad := map[string]url.Values{
		"no token":                  {},
		"empty token":               {"csrf_token": {""}},
		"tampered token":            {"csrf_token": {string(tampered)}},
		"another session's token":   {"csrf_token": {otherSessionCSRF(t, e, u)}},
		"the other session's token": {"csrf_token": {e.rt().csrf.Token("s:" + other.ID.String())}},
	}
	refused := func(path string, extra url.Values) {
		t.Helper()
		for name, form := range bad {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			for k, v := range extra {
				f[k] = v
			}
			r, body := e.postForm(path, f, nil)
			if r.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s, %s: status %d; want 403", path, name, r.StatusCode)
			}
			if strings.Contains(body, `data-sigra="recovery-codes"`) {
				t.Errorf("POST %s, %s: the answer shows recovery codes", path, name)
			}
		}
	}

	refused("/.sigra/account/sessions/revoke", url.Values{"session": {other.ID.String()}, "password": {testPassword}})
	// (Enrolment left the other session pending, not ended.)
	if _, err := e.rt().store.GetSession(ctx, other.ID); err != nil {
		t.Errorf("the other session after refused revocations: %v; want it still stored", err)
	}
	if n := len(e.auditRows("session.revoked")); n != 0 {
		t.Errorf("%d session.revoked rows after refused revocations; want 0", n)
	}

	refused("/.sigra/account/totp/remove", nil)
	if has, _ := e.rt().auth.HasTOTP(ctx, u.ID); !has {
		t.Fatal("TOTP removed by a request without a valid CSRF token")
	}

	refused("/.sigra/account/recovery-codes", nil)
	if n := len(e.auditRows("mfa.recovery_code.regenerated")); n != 0 {
		t.Errorf("%d mfa.recovery_code.regenerated rows after refused requests; want 0", n)
	}
	// The codes shown at enrolment are still the valid ones.
	if err := e.rt().auth.UseRecoveryCode(ctx, u.ID, codes[9]); err != nil {
		t.Errorf("an enrolment recovery code after refused regenerations: %v; want it still valid", err)
	}

	// With the token, each form works (so the refusals above were the
	// token's doing).
	if r, _ := e.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {good}, "session": {other.ID.String()}, "password": {testPassword}}, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("revoke with the token: status %d; want 303", r.StatusCode)
	}
	if _, err := e.rt().store.GetSession(ctx, other.ID); err != authcore.ErrNotFound {
		t.Errorf("the revoked session: %v; want it gone", err)
	}
	if got := e.statusAs(otherTok, "/x"); got != http.StatusUnauthorized {
		t.Errorf("the revoked session's cookie: status %d; want 401", got)
	}
	_, page = e.get("/.sigra/account/totp", nil)
	form := newCodesForm(t, page, testPassword)
	form.Set("csrf_token", good)
	if r, body := e.postForm("/.sigra/account/recovery-codes", form, nil); r.StatusCode != 200 || !strings.Contains(body, `data-sigra="recovery-codes"`) {
		t.Errorf("regenerate with the token: status %d; want 200 with the new codes", r.StatusCode)
	}
	if r, _ := e.postForm("/.sigra/account/totp/remove", url.Values{"csrf_token": {good}, "password": {testPassword}}, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("remove with the token: status %d; want 303", r.StatusCode)
	}
	if has, _ := e.rt().auth.HasTOTP(ctx, u.ID); has {
		t.Error("TOTP still on after a valid removal")
	}
}

// M14: mfa.go mfaSubmit — the challenge form needs its CSRF token, and a
// refused post spends no code.
func TestMFASubmitRefusesBadCSRF(t *testing.T) {
	fake, e, u, secret, codes := startEnrolled(t, "", "lee@example.com")
	fake.Advance(30 * time.Second)

	page := pendingMFAPage(t, e, "lee@example.com")
	good := csrfFrom(t, page)
	tampered := []byte(good)
	tampered[len(tampered)/2] ^= 1
	code := refTOTP(t, secret, fake.Now())
	for name, tok := range map[string][]string{
		"no token":                nil,
		"empty token":             {""},
		"tampered token":          {string(tampered)},
		"another session's token": {otherSessionCSRF(t, e, u)},
	} {
		for _, f := range []url.Values{{"code": {code}}, {"recovery_code": {codes[0]}}} {
			if tok != nil {
				f.Set("csrf_token", tok[0])
			}
			r, _ := e.postForm("/.sigra/mfa", f, nil)
			if r.StatusCode != http.StatusForbidden {
				t.Errorf("%s, %v: status %d; want 403", name, f, r.StatusCode)
			}
		}
	}
	if r, body := e.get("/x", jsonAPI); r.StatusCode != http.StatusUnauthorized || problemReason(body) != "mfa_pending" {
		t.Errorf("after refused posts: status %d body %s; want the session still pending", r.StatusCode, body)
	}
	if left, _ := e.rt().auth.RecoveryCodesLeft(context.Background(), u.ID); left != 10 {
		t.Errorf("%d recovery codes left after refused posts; want 10", left)
	}
	if n := len(e.auditRows("mfa.challenge.success")); n != 0 {
		t.Errorf("%d mfa.challenge.success rows after refused posts; want 0", n)
	}
	// The TOTP code was not spent by the refused posts.
	r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {good}, "code": {code}}, nil)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("the same code with the token: status %d; want 303", r.StatusCode)
	}
	if got := e.amr(); got != "pwd,otp,mfa" {
		t.Errorf("amr %q; want pwd,otp,mfa", got)
	}
}

// M15: mfa.go totpSubmit — confirming an enrolment needs the CSRF token;
// a refused post enrols nothing.
func TestTOTPSubmitRefusesBadCSRF(t *testing.T) {
	fake, e, u, page, secret := startEnrolling(t, "max@example.com")
	good := csrfFrom(t, page)
	tampered := []byte(good)
	tampered[len(tampered)/2] ^= 1
	code := refTOTP(t, secret, fake.Now())
	for name, form := range map[string]url.Values{
		"no token":                {"code": {code}},
		"empty token":             {"code": {code}, "csrf_token": {""}},
		"tampered token":          {"code": {code}, "csrf_token": {string(tampered)}},
		"another session's token": {"code": {code}, "csrf_token": {otherSessionCSRF(t, e, u)}},
	} {
		r, body := e.postForm("/.sigra/account/totp", form, nil)
		if r.StatusCode != http.StatusForbidden || strings.Contains(body, `data-sigra="recovery-codes"`) {
			t.Errorf("%s: status %d; want 403 without recovery codes", name, r.StatusCode)
		}
	}
	if has, _ := e.rt().auth.HasTOTP(context.Background(), u.ID); has {
		t.Fatal("TOTP enrolled by a request without a valid CSRF token")
	}
	if got := e.amr(); got != "pwd" {
		t.Errorf("amr %q after refused enrolments; want pwd", got)
	}
	if n := len(e.auditRows("mfa.totp.enrolled")); n != 0 {
		t.Errorf("%d mfa.totp.enrolled rows; want 0", n)
	}
	r, body := e.postForm("/.sigra/account/totp", enrolForm(t, page, code, testPassword), nil)
	if r.StatusCode != 200 || !strings.Contains(body, `data-sigra="recovery-codes"`) {
		t.Fatalf("the same code with the token: status %d; want 200 with recovery codes", r.StatusCode)
	}
	if got := e.amr(); got != "pwd,otp,mfa" {
		t.Errorf("amr %q after enrolment; want pwd,otp,mfa", got)
	}
}

// M4: mfa.go recoveryRegenerate — needs a fresh second factor.
func TestRecoveryRegenerateNeedsFreshFactor(t *testing.T) {
	fake, e, _, secret, old := startEnrolled(t, "", "ned@example.com")
	// useOld signs in from another browser with a recovery code.
	useOld := func(code string) int {
		t.Helper()
		b := e.browser()
		b.login("ned@example.com", testPassword, "/")
		return b.secondFactor("recovery_code", code).StatusCode
	}

	fake.Advance(freshFactor + time.Minute) // no longer fresh
	_, page := e.get("/.sigra/account/totp", nil)
	r, body := e.postForm("/.sigra/account/recovery-codes", url.Values{"csrf_token": {csrfFrom(t, page)}}, nil)
	want := "/.sigra/mfa?rd=" + url.QueryEscape("/.sigra/account/totp")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want {
		t.Errorf("stale factor: status %d Location %q; want 303 to %s", r.StatusCode, r.Header.Get("Location"), want)
	}
	if strings.Contains(body, `data-sigra="recovery-codes"`) {
		t.Error("stale factor: new recovery codes shown")
	}
	if n := len(e.auditRows("mfa.recovery_code.regenerated")); n != 0 {
		t.Errorf("%d mfa.recovery_code.regenerated rows; want 0", n)
	}
	if got := useOld(old[0]); got != http.StatusSeeOther {
		t.Errorf("an old recovery code after the refused regeneration: status %d; want 303 (still valid)", got)
	}

	// Step up, then regeneration works and replaces the old codes.
	fake.Advance(30 * time.Second)
	if r := e.secondFactor("code", refTOTP(t, secret, fake.Now())); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("step-up: status %d; want 303", r.StatusCode)
	}
	_, page = e.get("/.sigra/account/totp", nil)
	// A fresh second factor alone (a stolen cookie) makes no codes, each
	// of which would be a step-up of its own: the password too.
	for _, pw := range []string{"", "not the password"} {
		r, body = e.postForm("/.sigra/account/recovery-codes", newCodesForm(t, page, pw), nil)
		if r.StatusCode != http.StatusUnauthorized || recoveryCodes.MatchString(body) || !strings.Contains(body, `data-sigra="recovery-codes-form"`) {
			t.Errorf("fresh factor, password %q: status %d; want 401 and the form again, no codes", pw, r.StatusCode)
		}
	}
	r, body = e.postForm("/.sigra/account/recovery-codes", newCodesForm(t, page, testPassword), nil)
	rc := recoveryCodes.FindStringSubmatch(body)
	if r.StatusCode != 200 || rc == nil {
		t.Fatalf("fresh factor: status %d, codes shown %v; want 200 with new codes", r.StatusCode, rc != nil)
	}
	fresh := strings.Fields(rc[1])
	if len(fresh) != 10 {
		t.Fatalf("%d new codes; want 10", len(fresh))
	}
	if got := useOld(old[1]); got != http.StatusUnauthorized {
		t.Errorf("an old recovery code after regeneration: status %d; want 401", got)
	}
	if got := useOld(fresh[0]); got != http.StatusSeeOther {
		t.Errorf("a new recovery code: status %d; want 303", got)
	}
}

// M5: mfa.go — while the challenge is banned, a right recovery code is
// not checked, so not spent.
func TestMFABanDoesNotSpendRecoveryCode(t *testing.T) {
	fake, e, u, _, codes := startEnrolled(t, "regulation {\n max_retries 3\n ban_time 15m\n }", "ola@example.com")
	fake.Advance(30 * time.Second)

	e.client.Jar, _ = newJar()
	e.login("ola@example.com", testPassword, "/")
	for i := range 3 {
		if r := e.secondFactor("code", "00000"+string(rune('1'+i))); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong code %d: status %d; want 401", i, r.StatusCode)
		}
	}
	if r := e.secondFactor("recovery_code", codes[0]); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right recovery code while banned: status %d; want 429 (not checked)", r.StatusCode)
	}
	if left, _ := e.rt().auth.RecoveryCodesLeft(context.Background(), u.ID); left != 10 {
		t.Errorf("%d recovery codes left after an attempt during the ban; want 10 (none spent)", left)
	}
	if n := len(e.auditRows("mfa.recovery_code.used")); n != 0 {
		t.Errorf("%d mfa.recovery_code.used rows during the ban; want 0", n)
	}

	fake.Advance(16 * time.Minute) // the ban ends
	e.client.Jar, _ = newJar()
	if r := e.login("ola@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("password after the ban: status %d; want 303", r.StatusCode)
	}
	if r := e.secondFactor("recovery_code", codes[0]); r.StatusCode != http.StatusSeeOther {
		t.Errorf("the same recovery code after the ban: status %d; want 303 (it was not spent)", r.StatusCode)
	}
}

// M8: portal_admin.go — users, user, sessions, enable, and session revoke
// that really ends the session.
func TestAdminUsersAndSessionsAPI(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	admin := e.addUser("root@example.com", "admins")
	target := e.addUser("tom@example.com", "staff")

	tom := e.browser()
	tom.mustLogin("tom@example.com")
	tom.get("/x", nil)
	h, _ := e.up.last()
	tomSession := h.Get(hdrSession)
	tomToken := tom.sessionCookie()

	e.mustLogin("root@example.com")
	enrolTOTP(t, e, fake.Now())
	tok := e.adminCSRF()

	t.Log("GET /users")
	code, body := e.adminCall(http.MethodGet, "/users", nil)
	var list map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil {
		t.Fatalf("GET /users: status %d body %s", code, body)
	}
	var users []map[string]any
	if err := json.Unmarshal(list["users"], &users); err != nil || len(users) != 2 {
		t.Fatalf("GET /users: %s; want {\"users\": [2 users]}", body)
	}
	if c, ok := list["next_cursor"]; ok && string(c) != "null" {
		t.Errorf("GET /users on its only page: next_cursor %s; want none on the last page (DESIGN §3)", c)
	}
	byEmail := map[string]map[string]any{}
	for _, u := range users {
		byEmail[u["email"].(string)] = u
		for _, k := range []string{"id", "email", "email_verified", "name", "groups", "disabled", "second_factor", "created_at"} {
			if _, ok := u[k]; !ok {
				t.Errorf("user %v lacks %q", u["email"], k)
			}
		}
	}
	if byEmail["tom@example.com"]["id"] != target.ID || byEmail["root@example.com"]["id"] != admin.ID ||
		byEmail["root@example.com"]["second_factor"] != true || byEmail["tom@example.com"]["second_factor"] != false {
		t.Errorf("GET /users: %s; want tom and root with their ids and second factors", body)
	}
	if strings.Contains(strings.ToLower(body), "argon") || strings.Contains(strings.ToLower(body), "password") {
		t.Errorf("GET /users shows password material: %s", body)
	}

	t.Log("GET /users/<id>")
	code, body = e.adminCall(http.MethodGet, "/users/"+target.ID, nil)
	var one map[string]any
	if err := json.Unmarshal([]byte(body), &one); code != 200 || err != nil {
		t.Fatalf("GET /users/<id>: status %d body %s", code, body)
	}
	if one["id"] != target.ID || one["email"] != "tom@example.com" || one["disabled"] != false {
		t.Errorf("GET /users/<id>: %s; want tom, enabled", body)
	}
	if g, _ := one["groups"].([]any); len(g) != 1 || g[0] != "staff" {
		t.Errorf("GET /users/<id> groups %v; want [staff]", one["groups"])
	}
	if code, body := e.adminCall(http.MethodGet, "/users/no-such-user", nil); code != http.StatusNotFound {
		t.Errorf("GET /users/<unknown>: status %d body %s; want 404", code, body)
	}

	t.Log("GET /users/<id>/sessions")
	sessions := func() []map[string]any {
		t.Helper()
		code, body := e.adminCall(http.MethodGet, "/users/"+target.ID+"/sessions", nil)
		var v struct {
			Sessions []map[string]any `json:"sessions"`
		}
		if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil || v.Sessions == nil {
			t.Fatalf("GET sessions: status %d body %s; want {\"sessions\": [...]}", code, body)
		}
		return v.Sessions
	}
	ss := sessions()
	if len(ss) != 1 || ss[0]["id"] != tomSession || ss[0]["user_id"] != target.ID || ss[0]["pending"] != false {
		t.Fatalf("tom's sessions %v; want one, id %s (the X-Sigra-Session value)", ss, tomSession)
	}
	if amr, _ := ss[0]["amr"].([]any); len(amr) != 1 || amr[0] != "pwd" {
		t.Errorf("session amr %v; want [pwd]", ss[0]["amr"])
	}

	t.Log("POST /sessions/<id>/revoke")
	if got := e.statusAs(tomToken, "/x"); got != 200 {
		t.Fatalf("tom before the revocation: status %d; want 200", got)
	}
	code, body = e.adminCall(http.MethodPost, "/sessions/"+tomSession+"/revoke", map[string]string{"X-CSRF-Token": tok})
	var rev map[string]string
	if err := json.Unmarshal([]byte(body), &rev); code != 200 || err != nil || rev["revoked"] != tomSession {
		t.Fatalf("revoke: status %d body %s; want 200 {\"revoked\": %q}", code, body, tomSession)
	}
	if got := e.statusAs(tomToken, "/x"); got != http.StatusUnauthorized {
		t.Errorf("tom's cookie after the admin revoked the session: status %d; want 401", got)
	}
	if ss := sessions(); len(ss) != 0 {
		t.Errorf("tom's sessions after the revocation: %v; want none", ss)
	}
	rows := e.auditRows("session.revoked")
	if len(rows) != 1 || rows[0].ActorType != audit.ActorAdmin || rows[0].ActorID != admin.ID || rows[0].SubjectID != target.ID || rows[0].Metadata["session"] != tomSession {
		t.Errorf("session.revoked rows %+v; want one by admin %s on %s for %s", rows, admin.ID, target.ID, tomSession)
	}
	if code, _ := e.adminCall(http.MethodPost, "/sessions/"+tomSession+"/revoke", map[string]string{"X-CSRF-Token": tok}); code != http.StatusNotFound {
		t.Errorf("revoking it again: status %d; want 404", code)
	}

	t.Log("disable, then enable")
	if code, body := e.adminCall(http.MethodPost, "/users/"+target.ID+"/disable", map[string]string{"X-CSRF-Token": tok}); code != 200 || !strings.Contains(body, `"disabled":true`) {
		t.Fatalf("disable: status %d body %s", code, body)
	}
	right := tom.login("tom@example.com", testPassword, "/")
	if right.StatusCode == http.StatusSeeOther {
		t.Fatal("a disabled user signed in")
	}
	// The right password of a disabled account is answered as a wrong one;
	// only the row says why.
	if wrong := tom.login("tom@example.com", "not tom's password", "/"); wrong.StatusCode != right.StatusCode {
		t.Errorf("disabled, right password: status %d; a wrong password: %d; want the same", right.StatusCode, wrong.StatusCode)
	}
	if rows := e.auditRows("auth.login.failure"); len(rows) < 2 || rows[1].Metadata["reason"] != "disabled" || rows[0].Metadata["reason"] != "invalid_credentials" {
		t.Errorf("auth.login.failure rows %+v; want reason disabled for the right password, then invalid_credentials", rows)
	}
	code, body = e.adminCall(http.MethodPost, "/users/"+target.ID+"/enable", map[string]string{"X-CSRF-Token": tok})
	var en map[string]any
	if err := json.Unmarshal([]byte(body), &en); code != 200 || err != nil || en["id"] != target.ID || en["disabled"] != false {
		t.Fatalf("enable: status %d body %s; want 200 with the user, disabled false", code, body)
	}
	if u, _ := e.rt().store.UserByID(context.Background(), target.ID); u == nil || u.Disabled {
		t.Error("the user is still disabled after enable")
	}
	if rows := e.auditRows("admin.user.enable"); len(rows) != 1 || rows[0].ActorID != admin.ID || rows[0].SubjectID != target.ID {
		t.Errorf("admin.user.enable rows %+v; want one by %s on %s", rows, admin.ID, target.ID)
	}
	if r := tom.login("tom@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("tom after enable: login status %d; want 303", r.StatusCode)
	}
	if code, body := e.adminCall(http.MethodPost, "/users/"+target.ID+"/enable", nil); code != http.StatusForbidden || problemReason(body) != "csrf" {
		t.Errorf("enable without the token: status %d body %s; want 403 csrf", code, body)
	}
}
