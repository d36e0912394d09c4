package caddymodule

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
)

// refTOTP computes an RFC 6238 code (SHA-1, 6 digits, 30 s) with its own
// HOTP, independently of the implementation under test.
func refTOTP(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(secret))
	if err != nil {
		t.Fatalf("decoding TOTP secret %q: %v", secret, err)
	}
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(at.Unix()/30))
	mac := hmac.New(sha1.New, key)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	code := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", code%1_000_000)
}

// useFakeClock makes apps started from now on run on a fake clock, set
// at the middle of a TOTP step so ±1 step arithmetic is unambiguous,
// and turns off regulation delays.
func useFakeClock(t *testing.T) *clock.Fake {
	t.Helper()
	fake := clock.NewFake(time.Now().Truncate(30 * time.Second).Add(15 * time.Second))
	oldClock, oldWait := newClock, wait
	newClock = func() clock.Clock { return fake }
	wait = func(context.Context, time.Duration) {}
	t.Cleanup(func() { newClock, wait = oldClock, oldWait })
	return fake
}

var totpSecret = regexp.MustCompile(`data-sigra="totp-secret">([A-Z2-7]+)<`)
var recoveryCodes = regexp.MustCompile(`(?s)data-sigra="recovery-codes">(.*?)</pre>`)

var codeSetField = regexp.MustCompile(`name="code_set" value="([^"]+)"`)

// enrolmentField is the enrolment form's field that carries the
// enrolment shown.
var enrolmentField = regexp.MustCompile(`name="enrolment" value="([^"]+)"`)

// enrolForm is the form that confirms the enrolment page shows, with
// code and password (none when "").
func enrolForm(t *testing.T, page, code, password string) url.Values {
	t.Helper()
	m := enrolmentField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no enrolment field in page:\n%s", page)
	}
	form := url.Values{"csrf_token": {csrfFrom(t, page)}, "enrolment": {m[1]}, "code": {code}}
	if password != "" {
		form.Set("password", password)
	}
	return form
}

// newCodesForm is the form for new recovery codes on page, the
// authenticator page of an enrolled user, sent with password.
func newCodesForm(t *testing.T, page, password string) url.Values {
	t.Helper()
	m := codeSetField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no code_set field in page:\n%s", page)
	}
	return url.Values{"csrf_token": {csrfFrom(t, page)}, "code_set": {m[1]}, "password": {password}}
}

// startEnrolling starts Caddy with a fake clock and a bare gate, signs
// email in and opens its authenticator-app page: the page and the
// secret it shows, not confirmed yet.
func startEnrolling(t *testing.T, email string) (fake *clock.Fake, e *env, u *authcore.User, page, secret string) {
	t.Helper()
	fake = useFakeClock(t)
	e = startCaddy(t, "", "sigra_gate")
	u = e.addUser(email)
	e.mustLogin(email)
	_, page = e.get("/.sigra/account/totp", nil)
	m := totpSecret.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no secret on the enrol page")
	}
	return fake, e, u, page, m[1]
}

// startEnrolled starts Caddy with a fake clock and a bare gate (global
// sigra options as given), signs email in and enrols its authenticator
// app: the common start of the second-factor tests.
func startEnrolled(t *testing.T, globalSigra, email string) (fake *clock.Fake, e *env, u *authcore.User, secret string, codes []string) {
	t.Helper()
	fake = useFakeClock(t)
	e = startCaddy(t, globalSigra, "sigra_gate")
	u = e.addUser(email)
	e.mustLogin(email)
	secret, codes = enrolTOTP(t, e, fake.Now())
	return fake, e, u, secret, codes
}

// enrolTOTP enrols the signed-in user and returns the secret and the
// recovery codes shown once.
func enrolTOTP(t *testing.T, e *env, now time.Time) (string, []string) {
	t.Helper()
	resp, page := e.get("/.sigra/account/totp", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `data-sigra="totp-enrol-form"`) {
		t.Fatalf("enrol page: status %d, no enrol form", resp.StatusCode)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("enrol page Cache-Control %q; want no-store", got)
	}
	if !strings.Contains(page, `src="data:image/png;base64,`) || !strings.Contains(page, "otpauth://totp/") {
		t.Error("enrol page lacks the QR code or the otpauth URI")
	}
	m := totpSecret.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no secret on the enrol page")
	}
	secret := m[1]
	// Each visit shows a secret of its own: a thief's visit, with a copy
	// of the session cookie, is not shown the one the owner scans.
	_, other := e.get("/.sigra/account/totp", nil)
	if again := totpSecret.FindStringSubmatch(other)[1]; again == secret {
		t.Errorf("a second visit was shown the first's secret %s", secret)
	}
	// A failed confirmation shows the same secret again: the user may
	// already have scanned it.
	bad, page := e.postForm("/.sigra/account/totp", enrolForm(t, page, "000000", testPassword), nil)
	if bad.StatusCode != http.StatusBadRequest {
		t.Errorf("enrol with a wrong code: status %d; want 400", bad.StatusCode)
	}
	if again := totpSecret.FindStringSubmatch(page); again == nil || again[1] != secret {
		t.Errorf("after a wrong code the page shows %v; want the secret %s kept", again, secret)
	}
	resp, done := e.postForm("/.sigra/account/totp", enrolForm(t, page, refTOTP(t, secret, now), testPassword), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("enrol with a right code: status %d", resp.StatusCode)
	}
	rc := recoveryCodes.FindStringSubmatch(done)
	if rc == nil {
		t.Fatal("no recovery codes shown after enrolment")
	}
	codes := strings.Fields(rc[1])
	if len(codes) != 10 {
		t.Fatalf("%d recovery codes; want 10", len(codes))
	}
	return secret, codes
}

func (e *env) amr() string {
	e.t.Helper()
	e.get("/whoami", nil)
	h, _ := e.up.last()
	return h.Get(hdrAMR)
}

// auditRows returns the rows with this action, newest first.
func (e *env) auditRows(action string) []audit.Row {
	e.t.Helper()
	page, err := e.rt().audit.Timeline(context.Background(), audit.Query{Action: action, Limit: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	return page.Rows
}

func TestTOTPEnrolChallengeAndStepUp(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", `sigra_gate
	sigra_gate /secure/* {
		mfa max_age 1m
	}
	sigra_gate /keys/* {
		amr otp hwk
	}`)
	u := e.addUser("tess@example.com")
	e.mustLogin("tess@example.com")
	if got := e.amr(); got != "pwd" {
		t.Fatalf("amr %q before enrolment; want pwd", got)
	}
	before := e.sessionCookie()
	h, _ := e.up.last()
	sid := h.Get(hdrSession)
	secret, recovery := enrolTOTP(t, e, fake.Now())
	if e.sessionCookie() == before {
		t.Error("session id unchanged after the second factor passed")
	}
	if got := e.amr(); got != "pwd,otp,mfa" {
		t.Errorf("amr %q after enrolment; want pwd,otp,mfa", got)
	}
	// The row names the session it was set up in, which went on under a
	// new id.
	if rows := e.auditRows("mfa.totp.enrolled"); len(rows) != 1 || sid == "" || rows[0].Metadata["session"] != sid {
		t.Errorf("mfa.totp.enrolled rows %+v; want 1 naming the session %q", rows, sid)
	}
	// Enrolment spent the current step; move two steps on (S+2), so the
	// step before (S+1) is unspent and one step back.
	fake.Advance(60 * time.Second)

	t.Run("enrolling again over an existing authenticator is refused", func(t *testing.T) {
		// Any session, fresh or old, must not be able to swap the
		// authenticator and come out multi-factor.
		_, page := e.get("/.sigra/account", nil)
		r, _ := e.postForm("/.sigra/account/totp", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {"000000"}}, nil)
		if r.StatusCode != http.StatusConflict {
			t.Errorf("re-enrolment: status %d; want 409", r.StatusCode)
		}
	})
	t.Run("password alone leaves the session pending", func(t *testing.T) {
		e.client.Jar, _ = newJar()
		resp := e.login("tess@example.com", testPassword, "/docs?x=1")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/.sigra/mfa?rd="+url.QueryEscape("/docs?x=1") {
			t.Fatalf("login: status %d Location %q; want 303 to the MFA page", resp.StatusCode, resp.Header.Get("Location"))
		}
		r, body := e.get("/docs", map[string]string{"Accept": "application/json"})
		if r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "mfa_pending") {
			t.Errorf("pending session at the gate: status %d body %s; want 401 mfa_pending", r.StatusCode, body)
		}
		r, _ = e.get("/docs", map[string]string{"Accept": "text/html"})
		if loc := r.Header.Get("Location"); !strings.HasPrefix(loc, "/.sigra/mfa?rd=") {
			t.Errorf("pending browser sent to %q; want the MFA page", loc)
		}
	})
	var mfaPage string
	t.Run("codes two steps off are refused, one step off accepted", func(t *testing.T) {
		_, mfaPage = e.get("/.sigra/mfa?rd=/docs", nil)
		if !strings.Contains(mfaPage, `data-sigra="mfa-form"`) {
			t.Fatal("no MFA form")
		}
		for _, off := range []time.Duration{-60 * time.Second, 60 * time.Second} {
			r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, mfaPage)}, "code": {refTOTP(t, secret, fake.Now().Add(off))}, "rd": {"/docs"}}, nil)
			if r.StatusCode != http.StatusUnauthorized {
				t.Errorf("code at %v: status %d; want 401", off, r.StatusCode)
			}
		}
		r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, mfaPage)}, "code": {refTOTP(t, secret, fake.Now().Add(-30*time.Second))}, "rd": {"/docs"}}, nil)
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/docs" {
			t.Fatalf("code one step back: status %d Location %q; want 303 to /docs", r.StatusCode, r.Header.Get("Location"))
		}
		if got := e.amr(); got != "pwd,otp,mfa" {
			t.Errorf("amr %q; want pwd,otp,mfa", got)
		}
	})
	t.Run("a used code cannot be replayed", func(t *testing.T) {
		e.client.Jar, _ = newJar()
		e.login("tess@example.com", testPassword, "/")
		_, page := e.get("/.sigra/mfa", nil)
		// The step just used (S+1), and the one before it (S), are spent.
		for _, off := range []time.Duration{-30 * time.Second, -60 * time.Second} {
			r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now().Add(off))}}, nil)
			if r.StatusCode != http.StatusUnauthorized {
				t.Errorf("replayed/older code (%v): status %d; want 401", off, r.StatusCode)
			}
		}
		r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
		if r.StatusCode != http.StatusSeeOther {
			t.Fatalf("fresh code: status %d; want 303", r.StatusCode)
		}
	})
	t.Run("step-up: mfa max_age 1m re-challenges once the age passes", func(t *testing.T) {
		if r, _ := e.get("/secure/report", nil); r.StatusCode != 200 {
			t.Fatalf("fresh second factor: status %d; want 200", r.StatusCode)
		}
		fake.Advance(61 * time.Second)
		r, _ := e.get("/secure/report?q=1", map[string]string{"Accept": "text/html"})
		want := "/.sigra/mfa?rd=" + url.QueryEscape("/secure/report?q=1")
		if r.StatusCode != http.StatusFound || r.Header.Get("Location") != want {
			t.Fatalf("stale second factor: status %d Location %q; want 302 to %s", r.StatusCode, r.Header.Get("Location"), want)
		}
		r, body := e.get("/secure/report", map[string]string{"Accept": "application/json"})
		if r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "mfa_required") || !strings.HasSuffix(r.Header.Get("WWW-Authenticate"), `login="/.sigra/mfa"`) {
			t.Errorf("API client: status %d WWW-Authenticate %q body %s; want 401 mfa_required, pointing at the MFA page", r.StatusCode, r.Header.Get("WWW-Authenticate"), body)
		}
		fake.Advance(30 * time.Second) // a new TOTP step
		stepping := e.rt().mustPrincipal(t, e.sessionCookie()).SessionID
		_, page := e.get(want, nil)
		r, _ = e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}, "rd": {"/secure/report?q=1"}}, nil)
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/secure/report?q=1" {
			t.Fatalf("challenge: status %d Location %q; want back to /secure/report?q=1", r.StatusCode, r.Header.Get("Location"))
		}
		if r, _ := e.get("/secure/report?q=1", nil); r.StatusCode != 200 {
			t.Errorf("after step-up: status %d; want 200", r.StatusCode)
		}
		rows := e.auditRows("mfa.challenge.success")
		if len(rows) < 2 || rows[0].Metadata["step"] != "step_up" || rows[0].Metadata["session"] != stepping || rows[1].Metadata["step"] != "" {
			t.Errorf("mfa.challenge.success rows %+v; want the step-up's naming the session it was for, the sign-ins' not", rows)
		}
	})
	t.Run("amr requirement", func(t *testing.T) {
		if r, _ := e.get("/keys/x", nil); r.StatusCode != 200 {
			t.Errorf("session with otp at an amr otp|hwk route: status %d; want 200", r.StatusCode)
		}
	})
	t.Run("a recovery code works once", func(t *testing.T) {
		for i, wantStatus := range []int{http.StatusSeeOther, http.StatusUnauthorized} {
			e.client.Jar, _ = newJar()
			e.login("tess@example.com", testPassword, "/")
			_, page := e.get("/.sigra/mfa", nil)
			r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "recovery_code": {recovery[0]}}, nil)
			if r.StatusCode != wantStatus {
				t.Errorf("use %d of a recovery code: status %d; want %d", i+1, r.StatusCode, wantStatus)
			}
		}
		rows := e.auditRows("mfa.recovery_code.used")
		if len(rows) != 1 || rows[0].ActorID != u.ID || rows[0].Metadata["remaining"] != "9" {
			t.Errorf("mfa.recovery_code.used rows %+v; want one by %s with 9 remaining", rows, u.ID)
		}
	})
	t.Run("turning TOTP off needs a fresh second factor", func(t *testing.T) {
		// Sign in fully (the last recovery attempt left a pending session).
		fake.Advance(30 * time.Second)
		e.client.Jar, _ = newJar()
		e.login("tess@example.com", testPassword, "/")
		_, mp := e.get("/.sigra/mfa", nil)
		if r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, mp)}, "code": {refTOTP(t, secret, fake.Now())}}, nil); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in: status %d", r.StatusCode)
		}
		fake.Advance(11 * time.Minute) // the second factor is no longer fresh
		_, page := e.get("/.sigra/account/totp", nil)
		r, _ := e.postForm("/.sigra/account/totp/remove", url.Values{"csrf_token": {csrfFrom(t, page)}}, nil)
		if loc := r.Header.Get("Location"); !strings.HasPrefix(loc, "/.sigra/mfa?rd=") {
			t.Fatalf("stale factor: Location %q; want the MFA page", loc)
		}
		_, mp = e.get(r.Header.Get("Location"), nil)
		e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, mp)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
		_, page = e.get("/.sigra/account/totp", nil)
		// A fresh second factor is not enough: a stolen cookie would lock
		// the owner out. The password too.
		for _, pw := range []string{"", "not the password"} {
			if r, body := e.postForm("/.sigra/account/totp/remove", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {pw}}, nil); r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `data-sigra="totp-remove-form"`) {
				t.Fatalf("remove with password %q: status %d; want 401 and the page again", pw, r.StatusCode)
			}
		}
		if has, _ := e.rt().auth.HasTOTP(context.Background(), u.ID); !has {
			t.Fatal("TOTP turned off without the password")
		}
		// Its row and the removal are one transaction: the row refused,
		// the app stays.
		e.failAudit("mfa.totp.removed")
		if r, _ := e.postForm("/.sigra/account/totp/remove", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil); r.StatusCode != http.StatusInternalServerError {
			t.Errorf("remove with its row failing: status %d; want 500", r.StatusCode)
		}
		e.failAudit("")
		if has, _ := e.rt().auth.HasTOTP(context.Background(), u.ID); !has {
			t.Fatal("TOTP turned off without its row")
		}
		r, _ = e.postForm("/.sigra/account/totp/remove", url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil)
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.sigra/account" {
			t.Fatalf("remove: status %d Location %q", r.StatusCode, r.Header.Get("Location"))
		}
		e.client.Jar, _ = newJar()
		if resp := e.login("tess@example.com", testPassword, "/"); resp.Header.Get("Location") != "/" {
			t.Errorf("login after removal went to %q; want / (no second factor any more)", resp.Header.Get("Location"))
		}
	})
}

func TestBruteForceRegulation(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "regulation {\n max_retries 3\n max_retries_per_ip 8\n find_time 10m\n ban_time 15m\n }", "sigra_gate")
	u := e.addUser("vic@example.com")

	t.Run("N wrong passwords ban; a right one then fails the same way", func(t *testing.T) {
		for i := range 3 {
			if r := e.login("VIC@example.com ", "wrong password "+fmt.Sprint(i), "/"); r.StatusCode != http.StatusUnauthorized {
				t.Fatalf("wrong password %d: status %d; want 401", i, r.StatusCode)
			}
		}
		r := e.login("vic@example.com", testPassword, "/")
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("right password while banned: status %d; want 401", r.StatusCode)
		}
		if rows := e.auditRows("auth.lockout"); len(rows) != 1 || rows[0].SubjectID != u.ID {
			t.Errorf("auth.lockout rows %+v; want exactly one for %s", rows, u.ID)
		}
		fails := e.auditRows("auth.login.failure")
		if len(fails) != 4 || fails[0].Metadata["reason"] != "locked" || fails[0].Metadata["method"] != "password" {
			t.Errorf("auth.login.failure rows %+v; want 4, the last with reason locked", fails)
		}
	})
	t.Run("unlock lifts the ban", func(t *testing.T) {
		if _, err := doUser(context.Background(), e.rt(), "admins", userRequest{Op: "unlock", User: "vic@example.com"}, nil, ""); err != nil {
			t.Fatal(err)
		}
		if r := e.login("vic@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("after unlock: status %d; want 303", r.StatusCode)
		}
		rows := e.auditRows("admin.user.unlock")
		if len(rows) != 1 || rows[0].ActorType != audit.ActorSystem || rows[0].SubjectID != u.ID {
			t.Errorf("admin.user.unlock rows %+v; want one by the system for %s", rows, u.ID)
		}
	})
	t.Run("the ban ends after ban_time", func(t *testing.T) {
		for range 3 {
			e.login("vic@example.com", "nope nope nope", "/")
		}
		if r := e.login("vic@example.com", testPassword, "/"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("banned again: status %d; want 401", r.StatusCode)
		}
		fake.Advance(16 * time.Minute)
		if r := e.login("vic@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("after ban_time: status %d; want 303", r.StatusCode)
		}
	})
	t.Run("the IP counter stops spraying across accounts", func(t *testing.T) {
		fake.Advance(time.Hour)
		for i := range 8 {
			e.addUser(fmt.Sprintf("spray%d@example.com", i))
		}
		// Each attempt claims another client address: Caddy ignores
		// X-Forwarded-For from a client that is not a trusted proxy.
		for i := range 8 {
			_, page := e.get("/.sigra/login", nil)
			e.postForm("/.sigra/login", url.Values{"email": {fmt.Sprintf("spray%d@example.com", i)}, "password": {"Winter2026!"},
				"csrf_token": {csrfFrom(t, page)}}, map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i)})
		}
		other := e.addUser("untouched@example.com")
		if r := e.login(other.Email, testPassword, "/"); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("right password from a banned IP: status %d; want 401", r.StatusCode)
		}
	})
	// Refusals cost the sender no hashing and need no waiting for the
	// answer: a row each would let one address grow the store as fast as
	// it can send. One row a minute per refusing address; the metric
	// counts them all.
	t.Run("refusals while banned write one row a minute", func(t *testing.T) {
		locked := func() float64 { return counterValue(t, e.rt().metrics.logins.WithLabelValues("password", "locked")) }
		fake.Advance(time.Minute) // past the row of the refusal above
		rowsBefore, lockedBefore := len(e.auditRows("auth.login.failure")), locked()
		for i := range 6 {
			if r := e.login(fmt.Sprintf("spray%d@example.com", i%3), "guess "+fmt.Sprint(i), "/"); r.StatusCode != http.StatusUnauthorized {
				t.Fatalf("refused sign-in %d: status %d; want 401", i, r.StatusCode)
			}
		}
		if n := len(e.auditRows("auth.login.failure")) - rowsBefore; n != 1 {
			t.Errorf("%d auth.login.failure rows for 6 refusals within a minute; want 1", n)
		}
		if n := locked() - lockedBefore; n != 6 {
			t.Errorf("sigra_logins_total{password,locked} went up by %v; want 6", n)
		}
		fake.Advance(time.Minute)
		e.login("spray0@example.com", "guess again", "/")
		if n := len(e.auditRows("auth.login.failure")) - rowsBefore; n != 2 {
			t.Errorf("%d auth.login.failure rows a minute later; want 2", n)
		}
	})
}

// pendingMFAPage signs email in afresh (a new cookie jar) with the
// password, to the second-factor page, and returns that page.
func pendingMFAPage(t *testing.T, e *env, email string) string {
	t.Helper()
	e.client.Jar, _ = newJar()
	e.login(email, testPassword, "/")
	_, page := e.get("/.sigra/mfa", nil)
	return page
}

// pendingCodeForm signs email in afresh (password only, a second factor
// due) and returns a sender of codes to its second-factor form, which
// answers with its status.
func pendingCodeForm(t *testing.T, e *env, email string) func(code string) int {
	t.Helper()
	page := pendingMFAPage(t, e, email)
	return func(code string) int {
		r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {code}}, nil)
		return r.StatusCode
	}
}

// A form sent by a session still waiting for its code, or by none,
// sends the browser to the code (or sign-in) page to come back to the
// form's page, not to the form's address: that takes no GET, and the
// browser would be told 405 once the code was in.
func TestFormOfAPendingSessionComesBackToItsPage(t *testing.T) {
	fake, e, _, _, _ := startEnrolled(t, "", "pia@example.com")
	fake.Advance(30 * time.Second)
	page := pendingMFAPage(t, e, "pia@example.com")
	anon := e.browser()
	for path, back := range map[string]string{
		"/.sigra/account/sessions/revoke":        "/.sigra/account",
		"/.sigra/account/sessions/revoke-others": "/.sigra/account",
		"/.sigra/account/totp/remove":            "/.sigra/account/totp",
		"/.sigra/account/recovery-codes":         "/.sigra/account/totp",
		"/.sigra/account/password":               "/.sigra/account/password",
		"/.sigra/account/delete":                 "/.sigra/account/delete",
	} {
		form := url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}
		for who, c := range map[string]*env{"pending": e, "anonymous": anon} {
			r, _ := c.postForm(path, form, map[string]string{"Accept": "text/html"})
			want := "/.sigra/mfa?rd=" + url.QueryEscape(back)
			if who == "anonymous" {
				want = "/.sigra/login?rd=" + url.QueryEscape(back)
			}
			if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want {
				t.Errorf("%s POST %s: status %d, Location %q; want 303 to %s", who, path, r.StatusCode, r.Header.Get("Location"), want)
			}
		}
	}
}

// An empty code (Enter on an empty field) is no guess: it is not
// counted towards a ban nor written as a failure, and the page asks for
// a code. The fields say so to the browser first.
func TestEmptyCodeIsNoGuess(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "regulation {\n max_retries 2\n }", "eva@example.com")
	fake.Advance(30 * time.Second)
	page := pendingMFAPage(t, e, "eva@example.com")
	for _, id := range []string{"code", "recovery_code"} {
		if !regexp.MustCompile(`<input id="` + id + `"[^>]* required[ >]`).MatchString(page) {
			t.Errorf("the %s field is not required:\n%s", id, page)
		}
	}
	for _, form := range []url.Values{{"code": {""}}, {"code": {" - "}}, {"recovery_code": {"  "}}, {"code": {""}, "recovery_code": {""}}} {
		form.Set("csrf_token", csrfFrom(t, page))
		r, body := e.postForm("/.sigra/mfa", form, nil)
		if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Enter the code") {
			t.Fatalf("empty code %v: status %d; want 400 asking for a code\n%s", form, r.StatusCode, body)
		}
	}
	if rows := e.auditRows("mfa.challenge.failure"); len(rows) != 0 {
		t.Errorf("mfa.challenge.failure rows after empty codes: %+v; want none", rows)
	}
	// A blank recovery field beside a code leaves the code to be checked.
	r, _ := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}, "recovery_code": {" "}}, nil)
	if r.StatusCode != http.StatusSeeOther {
		t.Errorf("the right code after empty ones, a blank recovery field beside it: status %d; want 303 (no ban, the code checked)", r.StatusCode)
	}
}

// codesBanned enrols wes@example.com (max_retries 3), signs in with the
// password and sends three wrong codes: the sign-in's codes are banned.
// post sends the code form again.
func codesBanned(t *testing.T) (fake *clock.Fake, e *env, secret string, post func(code string) int) {
	t.Helper()
	fake, e, _, secret, _ = startEnrolled(t, "regulation {\n max_retries 3\n }", "wes@example.com")
	fake.Advance(30 * time.Second)
	post = pendingCodeForm(t, e, "wes@example.com")
	for i := range 3 {
		if got := post(fmt.Sprintf("%06d", 111111*(i+1))); got != http.StatusUnauthorized {
			t.Fatalf("wrong code %d: status %d; want 401", i, got)
		}
	}
	return fake, e, secret, post
}

func TestMFABruteForce(t *testing.T) {
	fake, e, secret, post := codesBanned(t)
	// The right code during the ban is not checked, and the page says
	// so rather than calling it wrong.
	_, page := e.get("/.sigra/mfa", nil)
	r, body := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "codes cannot be checked for a few minutes") {
		t.Fatalf("right code during the ban: status %d; want 429 and a page saying codes are held back\n%s", r.StatusCode, body)
	}
	fails := e.auditRows("mfa.challenge.failure")
	if len(fails) != 4 || fails[0].Metadata["method"] != "totp" {
		t.Errorf("mfa.challenge.failure rows: %d; want 4 with method totp", len(fails))
	}
	for i, row := range fails { // newest first
		want := map[bool]string{true: "locked", false: "invalid_code"}[i == 0]
		if row.Metadata["reason"] != want {
			t.Errorf("mfa.challenge.failure row %d: reason %q; want %q", i, row.Metadata["reason"], want)
		}
	}
	if rows := e.auditRows("auth.lockout"); len(rows) != 1 || rows[0].Metadata["scope"] != "mfa" {
		t.Errorf("auth.lockout rows %+v; want one, scope mfa", rows)
	}
	// Codes have their own ban: the password still signs in (to the
	// MFA page), so wrong codes do not lock the owner's password too.
	if r := e.browser().login("wes@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/.sigra/mfa") {
		t.Errorf("password while the codes are banned: status %d, Location %q; want the MFA page", r.StatusCode, r.Header.Get("Location"))
	}
	if _, err := doUser(context.Background(), e.rt(), "admins", userRequest{Op: "unlock", User: "wes@example.com"}, nil, ""); err != nil {
		t.Fatal(err)
	}
	// The code was not spent while banned: it works after the unlock.
	if got := post(refTOTP(t, secret, fake.Now())); got != http.StatusSeeOther {
		t.Errorf("right code after unlock: status %d; want 303", got)
	}
}

// The rows of refusals while banned are written once a minute, but
// once per ban: an unlock and a new ban within the minute have theirs.
func TestEveryBanHasItsRefusedRow(t *testing.T) {
	fake, e, _, _, _ := startEnrolled(t, "regulation {\n max_retries 3\n }", "wes@example.com")
	fake.Advance(30 * time.Second)
	post := pendingCodeForm(t, e, "wes@example.com")
	refused := func() int {
		n := 0
		for _, row := range e.auditRows("mfa.challenge.failure") {
			if row.Metadata["reason"] == "locked" {
				n++
			}
		}
		return n
	}
	for ban := 1; ban <= 2; ban++ {
		for i := range 3 {
			if got := post(fmt.Sprintf("%06d", 111111*(i+1))); got != http.StatusUnauthorized {
				t.Fatalf("ban %d, wrong code %d: status %d; want 401", ban, i, got)
			}
		}
		for range 2 {
			if got := post("999999"); got != http.StatusTooManyRequests {
				t.Fatalf("ban %d, a code while banned: status %d; want 429", ban, got)
			}
		}
		if n := refused(); n != ban {
			t.Errorf("after ban %d: %d rows of refusals; want %d (one per ban)", ban, n, ban)
		}
		if _, err := doUser(context.Background(), e.rt(), "admins", userRequest{Op: "unlock", User: "wes@example.com"}, nil, ""); err != nil {
			t.Fatal(err)
		}
		fake.Advance(time.Second)
	}
}

// A refusal while banned whose row could not be written is answered
// with the error, and the next refusal writes the row, rather than none
// being written for the rest of the minute.
func TestRefusedRowAfterAFailedWrite(t *testing.T) {
	_, e, _, post := codesBanned(t)
	e.failAudit("mfa.challenge.failure")
	if got := post("999999"); got != http.StatusInternalServerError {
		t.Fatalf("a code while banned, its row failing: status %d; want 500", got)
	}
	e.failAudit("")
	if got := post("999999"); got != http.StatusTooManyRequests {
		t.Fatalf("a code while banned: status %d; want 429", got)
	}
	n := 0
	for _, row := range e.auditRows("mfa.challenge.failure") {
		if row.Metadata["reason"] == "locked" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d rows of refusals while banned; want 1, the second refusal's", n)
	}
}

// A right password clears the earlier wrong ones, for a user with a
// second factor too (the codes are counted apart): the owner's typos
// before a sign-in do not add up with one typo after it.
func TestRightPasswordClearsTyposWithSecondFactor(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "regulation {\n max_retries 3\n }", "ann@example.com")
	fake.Advance(time.Minute)
	b := e.browser()
	for i := range 2 {
		if r := b.login("ann@example.com", fmt.Sprint("typo ", i), "/"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("typo %d: status %d; want 401", i, r.StatusCode)
		}
	}
	if r := b.login("ann@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/.sigra/mfa") {
		t.Fatalf("password: status %d, Location %q; want the MFA page", r.StatusCode, r.Header.Get("Location"))
	}
	if r := b.secondFactor("code", refTOTP(t, secret, fake.Now())); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("code: status %d; want 303", r.StatusCode)
	}
	fake.Advance(time.Minute)
	c := e.browser()
	if r := c.login("ann@example.com", "one more typo", "/"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("typo: status %d; want 401", r.StatusCode)
	}
	if r := c.login("ann@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("right password after a sign-in and one typo: status %d; want 303", r.StatusCode)
	}
	if rows := e.auditRows("auth.lockout"); len(rows) != 0 {
		t.Errorf("auth.lockout rows %+v; want none", rows)
	}
}

// Strangers who know an email can ban its password for a while; that
// must not also keep the owner, signed in already, from a step-up (the
// admin pages, an mfa max_age gate), which has its own ban.
func TestPasswordBanLeavesStepUpOpen(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "regulation {\n max_retries 3\n }", "own@example.com")
	fake.Advance(time.Minute)
	for i := range 3 {
		if r := e.browser().login("own@example.com", fmt.Sprint("a stranger's guess ", i), "/"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: status %d; want 401", i, r.StatusCode)
		}
	}
	if r := e.browser().login("own@example.com", testPassword, "/"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("right password while banned: status %d; want 401 (the password ban holds)", r.StatusCode)
	}
	if r := e.secondFactor("code", refTOTP(t, secret, fake.Now())); r.StatusCode != http.StatusSeeOther {
		t.Errorf("the signed-in owner's step-up during the password ban: status %d; want 303", r.StatusCode)
	}
}

func TestAdminAPI(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	admin := e.addUser("root@example.com", "admins")
	e.addUser("plain@example.com")
	api := map[string]string{"Accept": "application/json"}

	e.mustLogin("plain@example.com")
	if r, _ := e.get("/.sigra/api/admin/audit", api); r.StatusCode != http.StatusForbidden {
		t.Errorf("non-admin: status %d; want 403", r.StatusCode)
	}
	e.client.Jar, _ = newJar()
	e.mustLogin("root@example.com")
	if r, body := e.get("/.sigra/api/admin/audit", api); r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "mfa_required") {
		t.Errorf("admin without a second factor: status %d body %s; want 401 mfa_required", r.StatusCode, body)
	}
	enrolTOTP(t, e, fake.Now())

	t.Run("timeline", func(t *testing.T) {
		r, body := e.get("/.sigra/api/admin/audit?actor="+admin.ID+"&limit=1", api)
		if r.StatusCode != 200 {
			t.Fatalf("status %d body %s", r.StatusCode, body)
		}
		var page struct {
			Rows       []audit.Row `json:"rows"`
			NextCursor string      `json:"next_cursor"`
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		// The admin signed in, then enrolled: two rows, newest first.
		if len(page.Rows) != 1 || page.NextCursor == "" || page.Rows[0].Action != "mfa.totp.enrolled" || page.Rows[0].ActorID != admin.ID {
			t.Fatalf("page %+v; want the enrolment row by the admin and a cursor", page)
		}
		r, body = e.get("/.sigra/api/admin/audit?actor="+admin.ID+"&limit=1&cursor="+url.QueryEscape(page.NextCursor), api)
		var second struct {
			Rows       []audit.Row `json:"rows"`
			NextCursor *string     `json:"next_cursor"`
		}
		if err := json.Unmarshal([]byte(body), &second); err != nil || r.StatusCode != 200 {
			t.Fatalf("second page: status %d, %v", r.StatusCode, err)
		}
		if len(second.Rows) != 1 || second.Rows[0].Action != "auth.login.success" || second.NextCursor != nil {
			t.Errorf("second page %s; want the login row and no cursor (last page)", body)
		}
	})
	t.Run("bad queries are 400 with a clear message", func(t *testing.T) {
		for _, q := range []string{"cursor=%21%21garbage", "limit=100000", "limit=-1", "since=yesterday-ish", "until=2026-13-45T00:00:00Z", "action=auth..x"} {
			r, body := e.get("/.sigra/api/admin/audit?"+q, api)
			if r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Header.Get("Content-Type"), "problem+json") {
				t.Errorf("%s: status %d (%s); want 400 problem+json", q, r.StatusCode, body)
			}
		}
	})
	t.Run("state changes need the CSRF header", func(t *testing.T) {
		target := e.addUser("target@example.com")
		path := "/.sigra/api/admin/users/" + target.ID + "/disable"
		if r := e.do(http.MethodPost, path, map[string]string{"Accept": "application/json", "Origin": e.base}, nil); r.StatusCode != http.StatusForbidden {
			t.Errorf("POST without X-CSRF-Token: status %d; want 403", r.StatusCode)
		}
		_, body := e.get("/.sigra/api/admin/csrf", api)
		var tok struct {
			CSRF string `json:"csrf_token"`
		}
		_ = json.Unmarshal([]byte(body), &tok)
		r := e.do(http.MethodPost, path, map[string]string{"Accept": "application/json", "Origin": e.base, "X-CSRF-Token": tok.CSRF}, nil)
		if r.StatusCode != 200 {
			t.Fatalf("disable with CSRF: status %d; want 200", r.StatusCode)
		}
		rows := e.auditRows("admin.user.disable")
		if len(rows) != 1 || rows[0].ActorType != audit.ActorAdmin || rows[0].ActorID != admin.ID || rows[0].SubjectID != target.ID {
			t.Errorf("admin.user.disable rows %+v; want one by admin %s on %s", rows, admin.ID, target.ID)
		}
		r = e.do(http.MethodPost, "/.sigra/api/admin/users/"+target.ID+"/unlock", map[string]string{"Accept": "application/json", "Origin": e.base, "X-CSRF-Token": tok.CSRF}, nil)
		if r.StatusCode != 200 {
			t.Errorf("unlock: status %d; want 200", r.StatusCode)
		}
	})
}

// A banned account's sign-in still runs the password check, so a banned
// answer takes as long as a wrong password and the timing does not tell
// an attacker that the ban is on (or that a guess was right): one
// argon2id check per attempt either way, as sigra_password_checks_total
// counts them.
func TestBannedSignInStillChecksThePassword(t *testing.T) {
	useFakeClock(t) // and no regulation delays
	e := startCaddy(t, "regulation {\n max_retries 3\n max_retries_per_ip 1000\n find_time 10m\n ban_time 1h\n }", "sigra_gate")
	e.addUser("vic@example.com")
	for i := range 3 {
		e.login("vic@example.com", fmt.Sprint("wrong password ", i), "/")
	}
	attempt := func(name, email, password string) {
		t.Helper()
		_, page := e.get("/.sigra/login", nil)
		form := url.Values{"email": {email}, "password": {password}, "csrf_token": {csrfFrom(t, page)}}
		before := e.rt().auth.PasswordChecks()
		r, _ := e.postForm("/.sigra/login", form, nil)
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: status %d; want 401", name, r.StatusCode)
		}
		if n := e.rt().auth.PasswordChecks() - before; n != 1 {
			t.Errorf("%s: %d password checks; want 1", name, n)
		}
	}
	attempt("the banned account, right password", "vic@example.com", testPassword)
	attempt("the banned account, wrong password", "vic@example.com", "wrong password!")
	attempt("an open account that does not exist", "nobody@example.com", "wrong password!")
}

// Wrong codes in a row lock the authenticator app, however slowly they
// come (the regulation window alone lets a patient guesser through): one
// auth.lockout row, a page that says what opens it, and the right code
// refused until a recovery code passes or an admin unlocks the account.
func TestTOTPLockedAfterWrongCodesInARow(t *testing.T) {
	// One pending sign-in lasts the whole test, which spaces its codes
	// past the regulation window.
	fake, e, u, secret, recovery := startEnrolled(t, "regulation {\n max_totp_failures 3\n }\n session {\n pending_lifetime 12h\n idle 12h\n lifetime 12h\n }", "pat@example.com")
	owner := e.client.Jar // the sign-in that set the app up
	e.client.Jar, _ = newJar()
	if r := e.login("pat@example.com", testPassword, "/"); !strings.HasPrefix(r.Header.Get("Location"), "/.sigra/mfa") {
		t.Fatalf("sign-in went to %q; want the MFA page", r.Header.Get("Location"))
	}
	post := func(field, code string) (int, string) {
		t.Helper()
		_, page := e.get("/.sigra/mfa", nil)
		r, body := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, field: {code}}, nil)
		return r.StatusCode, body
	}
	wrong := func() string {
		near := map[string]bool{}
		for _, off := range []time.Duration{-30, 0, 30} {
			near[refTOTP(t, secret, fake.Now().Add(off*time.Second))] = true
		}
		for i := 0; ; i++ {
			if c := fmt.Sprintf("%06d", i); !near[c] {
				return c
			}
		}
	}
	// Each wrong code comes after the regulation window has passed, so
	// only the run of wrong codes can stop them.
	for i := range 2 {
		fake.Advance(11 * time.Minute)
		if code, body := post("code", wrong()); code != http.StatusUnauthorized || !strings.Contains(body, "did not work") {
			t.Fatalf("wrong code %d: status %d; want 401", i+1, code)
		}
	}
	fake.Advance(11 * time.Minute)
	if code, body := post("code", wrong()); code != http.StatusUnauthorized || !strings.Contains(body, "recovery code") {
		t.Fatalf("the third wrong code: status %d; want 401 saying what opens the app\n%s", code, body)
	}
	rows := e.auditRows("auth.lockout")
	if len(rows) != 1 || rows[0].SubjectID != u.ID || rows[0].Metadata["scope"] != "totp" {
		t.Fatalf("auth.lockout rows %+v; want one, scope totp, for the user", rows)
	}
	fake.Advance(11 * time.Minute)
	if code, body := post("code", refTOTP(t, secret, fake.Now())); code != http.StatusForbidden || !strings.Contains(body, "recovery code") {
		t.Fatalf("the right code on a locked app: status %d; want 403\n%s", code, body)
	}
	fails := e.auditRows("mfa.challenge.failure")
	if len(fails) != 4 || fails[0].Metadata["reason"] != "totp_locked" {
		t.Errorf("mfa.challenge.failure rows %+v; want 4, the last with reason totp_locked", fails)
	}
	if len(e.auditRows("auth.lockout")) != 1 {
		t.Error("a refused code on a locked app wrote another auth.lockout row")
	}
	// Refusals cost the sender nothing: one row a minute per user.
	for range 5 {
		if code, _ := post("code", refTOTP(t, secret, fake.Now())); code != http.StatusForbidden {
			t.Fatalf("a code on a locked app: status %d; want 403", code)
		}
	}
	if n := len(e.auditRows("mfa.challenge.failure")); n != 4 {
		t.Errorf("%d mfa.challenge.failure rows after more refusals within the minute; want still 4", n)
	}
	// The owner's step-up in their own sign-in is refused too, and is a
	// row of its own, which a refusal of the other sign-in does not
	// stand for.
	pending := e.client.Jar
	e.client.Jar = owner
	if code, _ := post("code", refTOTP(t, secret, fake.Now())); code != http.StatusForbidden {
		t.Fatalf("a step-up on a locked app: status %d; want 403", code)
	}
	e.client.Jar = pending
	if fails := e.auditRows("mfa.challenge.failure"); len(fails) != 5 || fails[0].Metadata["step"] != "step_up" || fails[0].Metadata["reason"] != "totp_locked" {
		t.Errorf("mfa.challenge.failure rows %+v; want a fifth, the step-up's, reason totp_locked", fails)
	}
	fake.Advance(time.Minute)
	post("code", refTOTP(t, secret, fake.Now()))
	if n := len(e.auditRows("mfa.challenge.failure")); n != 6 {
		t.Errorf("%d mfa.challenge.failure rows a minute later; want 6", n)
	}
	// The refused right code was not a guess: it did not count towards a
	// sign-in ban, so the recovery code below is let through at once.
	if until, _ := e.rt().reg.Ban(context.Background(), authcore.UserMFAKey(u.ID)); !until.IsZero() {
		t.Errorf("codes banned until %v by the locked app's refusals", until)
	}

	// An admin's unlock opens it.
	if _, err := doUser(context.Background(), e.rt(), "admins", userRequest{Op: "unlock", User: u.ID}, nil, ""); err != nil {
		t.Fatal(err)
	}
	if locked, _ := e.rt().auth.TOTPLocked(context.Background(), u.ID); locked {
		t.Fatal("still locked after the unlock")
	}
	// Lock it again; then a recovery code opens it and signs in.
	for range 3 {
		fake.Advance(11 * time.Minute)
		post("code", wrong())
	}
	if locked, _ := e.rt().auth.TOTPLocked(context.Background(), u.ID); !locked {
		t.Fatal("not locked again")
	}
	if code, _ := post("recovery_code", recovery[0]); code != http.StatusSeeOther {
		t.Fatalf("recovery code on a locked app: status %d; want 303", code)
	}
	if locked, _ := e.rt().auth.TOTPLocked(context.Background(), u.ID); locked {
		t.Error("still locked after a recovery code")
	}
}

// The admin user page shows a locked app and a sign-in ban.
func TestAdminUserPageShowsLocks(t *testing.T) {
	e, _, target := startAdminUI(t)
	ctx := context.Background()
	enrolTOTPFor(t, e, target)
	page := "/.sigra/admin/users/" + target.ID
	if body := mustPage(t, e, page); strings.Contains(body, `data-sigra="admin-user-totp-locked"`) || strings.Contains(body, `data-sigra="admin-user-banned"`) {
		t.Fatal("the page shows locks that are not there")
	}
	for range authcore.DefaultMaxTOTPFailures {
		e.rt().store.FailTOTP(ctx, target.ID)
	}
	ban := func(key string) {
		for range 5 {
			att, err := e.rt().reg.Begin(ctx, key, "")
			if err != nil {
				t.Fatal(err)
			}
			att.Fail(ctx)
		}
	}
	ban(authcore.UserMFAKey(target.ID))
	body := mustPage(t, e, page)
	if !strings.Contains(body, `data-sigra="admin-user-totp-locked"`) || !strings.Contains(body, `data-sigra="admin-user-codes-banned"`) {
		t.Error("the page does not show the locked app and the codes' ban")
	}
	if strings.Contains(body, `data-sigra="admin-user-banned"`) {
		t.Error("a ban of the codes shows as a ban of the password's sign-in")
	}
	ban(authcore.UserAccountKey(target.ID))
	if body := mustPage(t, e, page); !strings.Contains(body, `data-sigra="admin-user-banned"`) {
		t.Error("the page does not show the password's ban")
	}
	ban(authcore.UserReauthKey(target.ID, "a-session"))
	if body := mustPage(t, e, page); !strings.Contains(body, `data-sigra="admin-user-reauth-banned"`) {
		t.Error("the page does not show the re-checks' ban")
	}

	// users list (the CLI, the admin API) shows them too.
	res, err := doUser(ctx, e.rt(), "admins", userRequest{Op: "list"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range res.Users {
		if u.ID != target.ID {
			if u.TOTPLocked || !u.SignInBannedUntil.IsZero() || statusText(u) != "active" {
				t.Errorf("user %s listed with locks %+v", u.Email, u)
			}
			continue
		}
		if !u.TOTPLocked || u.SignInBannedUntil.IsZero() || u.CodesBannedUntil.IsZero() || u.ReauthBannedUntil.IsZero() {
			t.Errorf("listed %+v; want the app locked and the three bans", u)
		}
		if got := statusText(u); !strings.Contains(got, "sign-in banned until") || !strings.Contains(got, "codes banned until") || !strings.Contains(got, "re-checks banned until") {
			t.Errorf("STATUS %q; want the three bans", got)
		}
		if got := secondFactorText(u); !strings.Contains(got, "locked") {
			t.Errorf("SECOND FACTOR %q; want the app locked", got)
		}
	}
	// The API's one user carries them as its list does.
	if code, body := e.adminCall(http.MethodGet, "/users/"+target.ID, nil); code != 200 || !strings.Contains(body, `"sign_in_banned_until"`) ||
		!strings.Contains(body, `"codes_banned_until"`) || !strings.Contains(body, `"reauth_banned_until"`) || !strings.Contains(body, `"totp_locked":true`) {
		t.Errorf("GET users/<id>: status %d, %s; want both bans and the locked app", code, body)
	}
	if _, err := doUser(ctx, e.rt(), "admins", userRequest{Op: "unlock", User: target.ID}, nil, ""); err != nil {
		t.Fatal(err)
	}
	res, _ = doUser(ctx, e.rt(), "admins", userRequest{Op: "list"}, nil, "")
	for _, u := range res.Users {
		if u.ID == target.ID && (statusText(u) != "active" || secondFactorText(u) != "app") {
			t.Errorf("after unlock: STATUS %q, SECOND FACTOR %q; want active, app", statusText(u), secondFactorText(u))
		}
	}
}

// A code refused because the client's address is banned (failures on
// other accounts from there) says so, not that the owner's codes were
// wrong.
func TestMFARefusedByTheAddressSaysSo(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "regulation {\n max_retries_per_ip 3\n }", "ned@example.com")
	fake.Advance(30 * time.Second)
	page := pendingMFAPage(t, e, "ned@example.com")
	e.failSignIns(3)
	// A sign-in refused by the ban has its row (one a minute): the code
	// refused in the same minute has its own.
	other := *e
	other.client = &http.Client{CheckRedirect: e.client.CheckRedirect}
	other.client.Jar, _ = newJar()
	if r := other.login("ned@example.com", "guess", "/"); r.StatusCode != http.StatusUnauthorized && r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a sign-in from the banned address: status %d", r.StatusCode)
	}
	r, body := e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, page)}, "code": {refTOTP(t, secret, fake.Now())}}, nil)
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed attempts from your network") {
		t.Errorf("a code from a banned address: status %d; want 429 saying the network is held back\n%s", r.StatusCode, body)
	}
	if rows := e.auditRows("mfa.challenge.failure"); len(rows) != 1 || rows[0].Metadata["reason"] != "locked" {
		t.Errorf("mfa.challenge.failure rows %+v; want one, reason locked, beside the sign-in's refusal row", rows)
	}
}

// A sign-in whose password is checked while the owner sets up an
// authenticator app (a reviewer's race, with the password stolen) waits
// for a code like any sign-in after the enrolment: for the pending
// lifetime, not twelve hours, with auth.login.pending and no
// auth.login.success.
func TestSignInDuringEnrolmentWaitsForTheCode(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("owner@example.com")
	e.mustLogin("owner@example.com") // the owner, in this browser
	owner := *e
	attacker := *e
	jar, _ := newJar()
	attacker.client = &http.Client{Jar: jar, CheckRedirect: e.client.CheckRedirect}
	enrolled := false
	signInChecked = func(id string) {
		if id == u.ID && !enrolled {
			enrolled = true
			enrolTOTP(t, &owner, fake.Now())
		}
	}
	t.Cleanup(func() { signInChecked = func(string) {} })

	successes := len(e.auditRows("auth.login.success"))
	resp := attacker.login("owner@example.com", testPassword, "/")
	if !enrolled {
		t.Fatal("the owner's enrolment did not run during the sign-in")
	}
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/.sigra/mfa") {
		t.Fatalf("sign-in: status %d to %q; want 303 to the code page", resp.StatusCode, loc)
	}
	if n := len(e.auditRows("auth.login.success")) - successes; n != 0 {
		t.Errorf("%d auth.login.success rows for a sign-in still waiting for its code; want 0", n)
	}
	if rows := e.auditRows("auth.login.pending"); len(rows) != 1 || rows[0].SubjectID != u.ID {
		t.Errorf("auth.login.pending rows %+v; want one, the owner's", rows)
	}
	id, ok := authcore.TokenID(attacker.sessionCookie())
	if !ok {
		t.Fatal("the sign-in set no session cookie")
	}
	sess, err := e.rt().store.GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !sess.Pending || sess.ExpiresAt.Sub(sess.CreatedAt) > authcore.DefaultPendingLifetime {
		t.Errorf("session pending %t, lasting %v; want pending, for at most %v", sess.Pending, sess.ExpiresAt.Sub(sess.CreatedAt), authcore.DefaultPendingLifetime)
	}
}

// A code sent after the sign-in waiting for it ended (pending_lifetime
// passed) signs nobody in, and the sign-in it is sent to goes on to the
// page the first one was for, not to the code page.
func TestCodeAfterThePendingSignInEndedKeepsTheReturnURL(t *testing.T) {
	fake, e, _, secret, _ := startEnrolled(t, "", "pat@example.com")
	e.client.Jar, _ = newJar()
	resp := e.login("pat@example.com", testPassword, "/reports/q3")
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "/.sigra/mfa") {
		t.Fatalf("sign-in went to %q; want the code page", loc)
	}
	_, page := e.get("/.sigra/mfa?rd=%2Freports%2Fq3", nil)
	csrf := csrfFrom(t, page)
	fake.Advance(authcore.DefaultPendingLifetime + time.Minute)
	resp, _ = e.postForm("/.sigra/mfa", url.Values{"code": {refTOTP(t, secret, fake.Now())}, "csrf_token": {csrf}, "rd": {"/reports/q3"}}, map[string]string{"Accept": "text/html"})
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/.sigra/login") {
		t.Fatalf("code after the sign-in ended: status %d to %q; want 303 to sign in", resp.StatusCode, loc)
	}
	if u, err := url.Parse(loc); err != nil || u.Query().Get("rd") != "/reports/q3" {
		t.Errorf("sign-in link %q; want rd=/reports/q3, where the first sign-in was going", loc)
	}
}

// A sign-in whose password was checked before an admin changed the
// password and reset the second factor (a reviewer's race) signs nobody
// in: the session it would make anew after the reset would carry the
// new epoch and outlive the change meant to end it.
func TestSignInDuringAPasswordResetSignsNobodyIn(t *testing.T) {
	_, e, u, _, _ := startEnrolled(t, "", "kim@example.com")
	attacker := e.browser()
	reset := false
	signInChecked = func(id string) {
		if id == u.ID && !reset {
			reset = true
			ctx := context.Background()
			if err := e.rt().auth.SetPassword(ctx, u.ID, "a brand new passphrase"); err != nil {
				t.Error(err)
			}
			if err := e.rt().auth.ResetTOTP(ctx, u.ID); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { signInChecked = func(string) {} })
	successes, pendings := len(e.auditRows("auth.login.success")), len(e.auditRows("auth.login.pending"))
	resp := attacker.login("kim@example.com", testPassword, "/")
	if !reset {
		t.Fatal("the reset did not run during the sign-in")
	}
	if resp.StatusCode != http.StatusConflict || attacker.sessionCookie() != "" {
		t.Fatalf("sign-in with the old password across a reset: status %d, cookie %t; want 409 and no session", resp.StatusCode, attacker.sessionCookie() != "")
	}
	if s, p := len(e.auditRows("auth.login.success"))-successes, len(e.auditRows("auth.login.pending"))-pendings; s != 0 || p != 0 {
		t.Errorf("%d success and %d pending rows for it; want none", s, p)
	}
	if rows := e.auditRows("auth.login.failure"); len(rows) != 1 || rows[0].Metadata["reason"] != "account_changed" || rows[0].SubjectID != u.ID {
		t.Errorf("auth.login.failure rows %+v; want one, reason account_changed: the old password worked", rows)
	}
}
