package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/store"
)

func TestLoginAndLogout(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	dora := e.addUser("dora@example.com")

	t.Run("wrong password and unknown user get the same answer", func(t *testing.T) {
		r1 := e.login("dora@example.com", "wrong password!", "/")
		r2 := e.login("nobody@example.com", testPassword, "/")
		if r1.StatusCode != http.StatusUnauthorized || r2.StatusCode != r1.StatusCode {
			t.Errorf("statuses %d and %d; want 401 for both", r1.StatusCode, r2.StatusCode)
		}
		if e.sessionCookie() != "" {
			t.Error("a failed login set a session cookie")
		}
	})
	t.Run("login page has the security headers", func(t *testing.T) {
		resp, body := e.get("/.sigra/login", nil)
		for k, want := range map[string]string{
			"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
			"Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s = %q; want %q", k, got, want)
			}
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("CSP %q; want frame-ancestors 'none' and no unsafe-inline", csp)
		}
		if !strings.Contains(body, `data-sigra="login-form"`) {
			t.Error("login form lacks data-sigra=login-form")
		}
	})
	t.Run("sign in, then a new session id at every login", func(t *testing.T) {
		resp := e.login("dora@example.com", testPassword, "/somewhere?a=b")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/somewhere?a=b" {
			t.Fatalf("status %d Location %q; want 303 to /somewhere?a=b", resp.StatusCode, resp.Header.Get("Location"))
		}
		for _, c := range resp.Cookies() {
			if c.Name == "sigra_session" && (!c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/") {
				t.Errorf("session cookie %+v; want HttpOnly, SameSite=Lax, Path=/", c)
			}
		}
		first := e.sessionCookie()
		e.mustLogin("dora@example.com")
		second := e.sessionCookie()
		if first == second || first == "" {
			t.Fatalf("session cookie %q after second login; want a new one", second)
		}
		// The first session ended with the second login.
		if got := e.statusAs(first, "/x"); got != http.StatusUnauthorized {
			t.Errorf("old session status %d; want 401", got)
		}
	})
	t.Run("fixation: a session cookie planted before login is not adopted", func(t *testing.T) {
		planted, _ := authcore.NewToken()
		u, _ := url.Parse(e.base)
		e.client.Jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: planted, Path: "/"}})
		e.mustLogin("dora@example.com")
		if e.sessionCookie() == planted {
			t.Error("the planted session token was kept")
		}
	})
	t.Run("logout needs its CSRF token, then ends the session", func(t *testing.T) {
		e.mustLogin("dora@example.com")
		tok := e.sessionCookie()
		resp, page := e.get("/.sigra/logout", nil)
		if resp.StatusCode != 200 || !strings.Contains(page, `data-sigra="logout-form"`) {
			t.Fatalf("GET logout: status %d; want the confirm form", resp.StatusCode)
		}
		good := csrfFrom(t, page)
		tampered := []byte(good)
		tampered[len(tampered)/2] ^= 1
		for name, form := range map[string]url.Values{
			"no token":                {},
			"tampered token":          {"csrf_token": {string(tampered)}},
			"another session's token": {"csrf_token": {otherSessionCSRF(t, e, dora)}},
		} {
			if r, _ := e.postForm("/.sigra/logout", form, nil); r.StatusCode != http.StatusForbidden {
				t.Errorf("logout, %s: status %d; want 403", name, r.StatusCode)
			}
		}
		if r, _ := e.postForm("/.sigra/logout", url.Values{"csrf_token": {csrfFrom(t, page)}}, map[string]string{"Origin": "https://evil.example"}); r.StatusCode != http.StatusForbidden {
			t.Errorf("cross-origin logout: status %d; want 403", r.StatusCode)
		}
		if r, _ := e.get("/x", nil); r.StatusCode != 200 {
			t.Fatalf("session ended by a refused logout (status %d)", r.StatusCode)
		}
		r, _ := e.postForm("/.sigra/logout", url.Values{"csrf_token": {csrfFrom(t, page)}}, nil)
		if r.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: status %d; want 303", r.StatusCode)
		}
		r, _ = e.get("/x", map[string]string{"Cookie": "sigra_session=" + tok, "Accept": "application/json"})
		if r.StatusCode != http.StatusUnauthorized {
			t.Errorf("after logout: status %d; want 401", r.StatusCode)
		}
	})
	t.Run("GET never changes state", func(t *testing.T) {
		e.mustLogin("dora@example.com")
		e.get("/.sigra/logout?csrf_token=x", nil)
		if r, _ := e.get("/x", nil); r.StatusCode != 200 {
			t.Errorf("GET /logout ended the session (status %d)", r.StatusCode)
		}
	})
	t.Run("the sign-out page of a browser signed out already says so", func(t *testing.T) {
		e.client.Jar, _ = cookiejar.New(nil)
		resp, page := e.get("/.sigra/logout?rd=/app", map[string]string{"Accept": "text/html"})
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, "You are not signed in.") || !strings.Contains(page, `href="/.sigra/login?rd=%2Fapp"`) {
			t.Errorf("GET /logout signed out: status %d, Location %q; want 200 saying so, linking to sign in\n%s", resp.StatusCode, resp.Header.Get("Location"), page)
		}
		// Two session cookies, one tossed by another site on this host:
		// the real one may still work, so "not signed in" would be false.
		e.client.Jar, _ = cookiejar.New(nil)
		e.mustLogin("dora@example.com")
		tok := e.sessionCookie()
		e.client.Jar = nil
		resp, page = e.get("/.sigra/logout", map[string]string{"Accept": "text/html", "Cookie": "sigra_session=" + tok + "; sigra_session=" + strings.Repeat("A", 43)})
		if resp.StatusCode == http.StatusOK || strings.Contains(page, "You are not signed in.") || !strings.Contains(page, "two different sign-in cookies") {
			t.Errorf("GET /logout with two session cookies: status %d; want the conflict explained, not 'not signed in'\n%s", resp.StatusCode, page)
		}
	})
}

func TestLoginCSRFAndOrigin(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("eve@example.com")
	_, page := e.get("/.sigra/login", nil)
	token := csrfFrom(t, page)
	form := func(csrf string) url.Values {
		return url.Values{"email": {"eve@example.com"}, "password": {testPassword}, "csrf_token": {csrf}}
	}
	cases := []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"missing token", form(""), nil},
		{"wrong token", form("AAAA" + token[4:]), nil},
		{"token of another browser", form(token), map[string]string{"Cookie": "sigra_csrf=" + strings.Repeat("x", 43)}},
		{"cross-site Sec-Fetch-Site", form(token), map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"foreign Origin", form(token), map[string]string{"Origin": "https://evil.example"}},
		{"null Origin from another site", form(token), map[string]string{"Origin": "null", "Sec-Fetch-Site": "cross-site"}},
		{"null Origin from a sibling site", form(token), map[string]string{"Origin": "null", "Sec-Fetch-Site": "same-site"}},
		{"null Origin, same-origin and cross-site", form(token), map[string]string{"Origin": "null", "Sec-Fetch-Site": "same-origin, cross-site"}},
		{"foreign Origin said same-origin", form(token), map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := tc.hdr
			if c, ok := hdr["Cookie"]; ok {
				jar := e.client.Jar
				e.client.Jar = nil
				defer func() { e.client.Jar = jar }()
				hdr = map[string]string{"Cookie": c}
			}
			resp, _ := e.postForm("/.sigra/login", tc.form, hdr)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("status %d; want 403", resp.StatusCode)
			}
			for _, c := range resp.Cookies() {
				if c.Name == "sigra_session" && c.Value != "" {
					t.Error("a session cookie was set")
				}
			}
		})
	}
	if resp, _ := e.postForm("/.sigra/login", form(token), nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("valid login after the refusals: status %d; want 303", resp.StatusCode)
	}
	// The page's own origin, as a browser without the no-referrer policy
	// would send it, passes too; and so, on this plain-HTTP site, does a
	// null Origin without Sec-Fetch-Site, which browsers send to a
	// plain-HTTP host that is not localhost (HTTPS: TestSecureCookie…).
	for name, hdr := range map[string]map[string]string{
		"this site's Origin":                      {"Origin": e.base, "Sec-Fetch-Site": ""},
		"null Origin without Sec-Fetch-Site":      {"Origin": "null", "Sec-Fetch-Site": ""},
		"null Origin with Sec-Fetch-Site as well": {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
	} {
		e.client.Jar, _ = cookiejar.New(nil)
		_, page = e.get("/.sigra/login", nil)
		resp, _ := e.postForm("/.sigra/login", form(csrfFrom(t, page)), hdr)
		if resp.StatusCode != http.StatusSeeOther || !slices.ContainsFunc(resp.Cookies(), func(c *http.Cookie) bool { return c.Name == "sigra_session" && c.Value != "" }) {
			t.Errorf("a login with %s: status %d; want 303 and a session", name, resp.StatusCode)
		}
	}
}

func TestLoginRedirectTargets(t *testing.T) {
	e := startCaddy(t, "allowed_redirect_hosts docs.example.com", "sigra_gate")
	e.addUser("rd@example.com")
	host := strings.TrimPrefix(e.base, "http://")
	cases := []struct {
		name, rd, want string
	}{
		{"local path", "/reports?q=1", "/reports?q=1"},
		// The app's own URL, exactly: http.Redirect would clean it.
		{"double slash kept", "/repo/blob/main//README.md", "/repo/blob/main//README.md"},
		// A dot segment is not: a browser resolves /.//evil.com to the
		// path //evil.com, which an app's redirect may send elsewhere.
		{"dot segment", "/a/./b/../c", "/"},
		{"dot segment before //", "/.//evil.com", "/"},
		{"a dashboard's long link", "/d?" + strings.Repeat("var-host=server0&", 200), "/d?" + strings.Repeat("var-host=server0&", 200)},
		{"non-ASCII escaped", "/caf\u00e9", "/caf%C3%A9"},
		{"same origin absolute", e.base + "/x", e.base + "/x"},
		{"allowed host", "https://docs.example.com/page", "https://docs.example.com/page"},
		{"protocol-relative //evil", "//evil.example/x", "/"},
		{"backslash /\\evil", "/\\evil.example", "/"},
		{"backslash \\\\evil", "\\\\evil.example", "/"},
		{"other origin", "https://evil.example/", "/"},
		{"same host other scheme-less port trick", "http://" + host + "@evil.example/", "/"},
		{"javascript:", "javascript:alert(1)", "/"},
		{"data:", "data:text/html,hi", "/"},
		{"tab smuggling", "/\t/evil.example", "/"},
		{"newline smuggling", "/\n/evil.example", "/"},
		{"relative without slash", "evil.example", "/"},
		{"empty", "", "/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.client.Jar, _ = newJar()
			resp := e.login("rd@example.com", testPassword, tc.rd)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("status %d; want 303", resp.StatusCode)
			}
			if got := resp.Header.Get("Location"); got != tc.want {
				t.Errorf("rd %q: Location %q; want %q", tc.rd, got, tc.want)
			}
		})
	}
}

// An HTTPS page's CSP lets forms post to the allowed redirect hosts over
// HTTPS only; a plain HTTP site's, over either.
func TestFormActionSources(t *testing.T) {
	var p Portal
	p.setFormTargets([]string{"docs.example.com", "[::1]:8443"})
	h := http.Header{}
	setPageHeaders(h, "n", p.formActions(true))
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "form-action 'self' https://docs.example.com https://[::1]:8443;") || strings.Contains(csp, "http://") {
		t.Errorf("HTTPS page CSP %q; want form-action to the hosts over https only", csp)
	}
	h = http.Header{}
	setPageHeaders(h, "n", p.formActions(false))
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://docs.example.com http://docs.example.com https://[::1]:8443 http://[::1]:8443;") {
		t.Errorf("HTTP page CSP %q; want form-action to the hosts over https and http", csp)
	}
}

// A form with a field twice is refused, not read by its first value:
// which of two emails was meant is not for the portal to guess.
func TestPortalRepeatedFields(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("bob@example.com")
	e.addUser("ann@example.com")
	_, page := e.get("/.sigra/login", nil)
	csrf := csrfFrom(t, page)
	for name, form := range map[string]url.Values{
		"email":    {"csrf_token": {csrf}, "email": {"bob@example.com", "ann@example.com"}, "password": {testPassword}},
		"password": {"csrf_token": {csrf}, "email": {"bob@example.com"}, "password": {testPassword, "x"}},
	} {
		resp, body := e.postForm("/.sigra/login", form, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "more than once") {
			t.Errorf("sign-in with %s twice: status %d; want 400 saying so\n%s", name, resp.StatusCode, body)
		}
		if e.sessionCookie() != "" {
			t.Fatalf("sign-in with %s twice made a session", name)
		}
	}
}

func TestPortalOversizedBody(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	_, page := e.get("/.sigra/login", nil)
	big := url.Values{"csrf_token": {csrfFrom(t, page)}, "email": {"a@example.com"}, "password": {strings.Repeat("x", 70<<10)}}
	resp, _ := e.postForm("/.sigra/login", big, nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d for a 70 KiB form; want 413", resp.StatusCode)
	}
	resp, _ = e.postForm("/.sigra/login", url.Values{"x": {"%zz"}}, map[string]string{"Content-Type": "multipart/form-data; boundary=nope"})
	if resp.StatusCode >= 500 {
		t.Errorf("malformed form: status %d; want a 4xx", resp.StatusCode)
	}
	// A body declared over the cap is refused at once, though its bytes
	// never come: a client cannot hold the handler waiting for them.
	for _, path := range []string{"/.sigra/login", "/.sigra/account/password"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nOrigin: %s\r\nContent-Length: %d\r\n\r\nx", path, strings.TrimPrefix(e.base, "http://"), e.base, maxFormBody+1)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s, a body declared over the cap and never sent: %v; want a 413 at once", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
			t.Errorf("%s, a body declared over the cap: status %d, close %v; want 413 and the connection closed", path, resp.StatusCode, resp.Close)
		}
	}
	// A body of no declared length (chunked) is cut at the cap as it is
	// read, not at Go's own 10 MB for forms.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	chunk := "password=" + strings.Repeat("x", maxFormBody)
	fmt.Fprintf(conn, "POST /.sigra/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nOrigin: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
		strings.TrimPrefix(e.base, "http://"), e.base, len(chunk), chunk)
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("a chunked body over the cap: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a chunked body over the cap: status %d; want 413", resp.StatusCode)
	}
}

func TestAccountSessions(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("fay@example.com")
	other := e.addUser("gus@example.com")
	e.mustLogin("fay@example.com")
	mine := e.sessionCookie()

	// A second session of fay's, from another browser.
	second := *e
	second.client = &http.Client{CheckRedirect: e.client.CheckRedirect}
	second.client.Jar, _ = newJar()
	second.mustLogin("fay@example.com")
	secondID, _ := authcore.TokenID(second.sessionCookie())

	resp, page := e.get("/.sigra/account", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, secondID.String()) || !strings.Contains(page, `data-sigra="session-list"`) {
		t.Fatalf("account page (status %d) does not list the second session", resp.StatusCode)
	}
	if n := strings.Count(page, `name="password"`); n != 2 {
		t.Errorf("%d password fields on the account page; want two, in the other session's revoke form and in signing out all others", n)
	}
	// Someone else's session cannot be revoked from here.
	_, gusTok := mustSession(t, e, other)
	gusID, _ := authcore.TokenID(gusTok)
	r, _ := e.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {gusID.String()}}, nil)
	if r.StatusCode != http.StatusNotFound {
		t.Errorf("revoking another user's session: status %d; want 404", r.StatusCode)
	}
	// Another session of one's own takes the password: none is asked
	// for, a wrong one is a failed re-check.
	for pw, want := range map[string]string{"": "Enter your password", "not the password": "That password is not right."} {
		r, body := e.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {secondID.String()}, "password": {pw}}, nil)
		if r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, want) {
			t.Errorf("revoke with password %q: status %d; want 401, %s", pw, r.StatusCode, want)
		}
		if r, _ := second.get("/x", nil); r.StatusCode != 200 {
			t.Fatalf("the session after a revoke with password %q: status %d; want it kept", pw, r.StatusCode)
		}
	}
	if rows := e.auditRows("auth.login.failure"); len(rows) != 1 || rows[0].Metadata["step"] != "reauth" || rows[0].Metadata["session"] != e.rt().mustPrincipal(t, mine).SessionID {
		t.Errorf("auth.login.failure rows %+v; want one re-check of this session, the wrong password's", rows)
	}
	r, _ = e.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {secondID.String()}, "password": {testPassword}}, nil)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: status %d; want 303", r.StatusCode)
	}
	if r, _ := second.get("/x", map[string]string{"Accept": "application/json"}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("revoked session: status %d; want 401", r.StatusCode)
	}
	if e.sessionCookie() != mine {
		t.Error("own session changed")
	}
	if r, _ := e.get("/x", nil); r.StatusCode != 200 {
		t.Errorf("own session after revoking the other: status %d; want 200", r.StatusCode)
	}
	// This session itself needs no password: it is a sign-out.
	_, page = e.get("/.sigra/account", nil)
	myID, _ := authcore.TokenID(mine)
	if r, _ := e.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {myID.String()}}, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("revoking this session: status %d; want 303", r.StatusCode)
	}
	if r, _ := e.get("/x", map[string]string{"Accept": "application/json"}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("after revoking this session: status %d; want 401", r.StatusCode)
	}
}

// "Sign out all other sessions" ends every other session of the user,
// after the password, in one step; this one goes on under a new id, so
// that a copy of its cookie ends too. Other users' sessions stay.
func TestAccountSignsOutOtherSessions(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	fay := e.addUser("fay@example.com")
	gus := e.addUser("gus@example.com")
	e.mustLogin("fay@example.com")
	mine := e.sessionCookie()
	_, page := e.get("/.sigra/account", nil)
	if strings.Contains(page, `data-sigra="session-revoke-others"`) {
		t.Error("the account page of a user with one session offers to sign out the others")
	}
	second := e.browser()
	second.mustLogin("fay@example.com")
	_, third := mustSession(t, e, fay)
	_, gusTok := mustSession(t, e, gus)
	_, page = e.get("/.sigra/account", nil)
	if !strings.Contains(page, `data-sigra="session-revoke-others"`) {
		t.Fatalf("the account page with three sessions has no form to sign out the others:\n%s", page)
	}
	const path = "/.sigra/account/sessions/revoke-others"
	if r, _ := e.postForm(path, url.Values{"password": {testPassword}}, nil); r.StatusCode != http.StatusForbidden {
		t.Errorf("without the CSRF token: status %d; want 403", r.StatusCode)
	}
	for pw, want := range map[string]string{"": "Enter your password", "not the password": "That password is not right."} {
		r, body := e.postForm(path, url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {pw}}, nil)
		if r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, want) {
			t.Errorf("with password %q: status %d; want 401, %s\n%s", pw, r.StatusCode, want, body)
		}
	}
	if r, _ := second.get("/x", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("the other session after refused forms: status %d; want it kept", r.StatusCode)
	}
	if rows := e.auditRows("auth.login.failure"); len(rows) != 1 || rows[0].Metadata["step"] != "reauth" {
		t.Errorf("auth.login.failure rows %+v; want one re-check, the wrong password's", rows)
	}
	if rows := e.auditRows("session.revoked_others"); len(rows) != 0 {
		t.Errorf("session.revoked_others rows %+v after refusals; want none", rows)
	}

	r, body := e.postForm(path, url.Values{"csrf_token": {csrfFrom(t, page)}, "password": {testPassword}}, nil)
	if r.StatusCode != http.StatusOK || !strings.Contains(body, "Your other sessions are signed out.") {
		t.Fatalf("sign out the others: status %d; want 200 saying so\n%s", r.StatusCode, body)
	}
	now := e.sessionCookie()
	if now == mine || now == "" {
		t.Fatal("this session kept its cookie; want a new one")
	}
	if code := e.statusAs(now, "/x"); code != http.StatusOK {
		t.Errorf("this session under its new cookie: status %d; want 200", code)
	}
	for name, tok := range map[string]string{"the old cookie of this session": mine, "the second browser": second.sessionCookie(), "the third session": third} {
		if code := e.statusAs(tok, "/x"); code != http.StatusUnauthorized {
			t.Errorf("%s: status %d; want 401", name, code)
		}
	}
	if code := e.statusAs(gusTok, "/x"); code != http.StatusOK {
		t.Errorf("another user's session: status %d; want it kept", code)
	}
	rows := e.auditRows("session.revoked_others")
	if len(rows) != 1 || rows[0].ActorID != fay.ID || rows[0].SubjectID != fay.ID || rows[0].Outcome != "success" || rows[0].Metadata["session"] != "" {
		t.Errorf("session.revoked_others rows %+v; want one success by fay about fay, naming no session", rows)
	}
	_, page = e.get("/.sigra/account", nil)
	if n := strings.Count(page, "data-session-id="); n != 1 || strings.Contains(page, `data-sigra="session-revoke-others"`) {
		t.Errorf("the account page after: %d sessions listed, form shown %t; want this one alone, no form", n, strings.Contains(page, "session-revoke-others"))
	}
}

// The account page lists the current session and the most recently used
// others, up to accountSessionsListed, and says how many it left out.
// Sessions ended by idling, not swept yet, are neither listed nor counted.
func TestAccountListsRecentSessions(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("many@example.com")
	ctx := context.Background()
	now := e.rt().auth.Now()
	var newest authcore.SessionID
	for i := range accountSessionsListed + 3 {
		started, _ := mustSession(t, e, u)
		s := started.Clone()
		s.LastSeen = now.Add(time.Duration(i-100) * time.Second) // later ones used more recently
		if err := e.rt().store.PutSessions(ctx, []*authcore.Session{s}); err != nil {
			t.Fatal(err)
		}
		newest = s.ID
	}
	idled, _ := mustSession(t, e, u)
	idled = idled.Clone()
	idled.LastSeen = now.Add(-24 * time.Hour)
	// A sign-in waiting for a second factor, the last used of all: listed
	// after those signed in (anyone with the password can start them).
	pending, _ := mustSession(t, e, u)
	pending = pending.Clone()
	pending.Pending = true
	if err := e.rt().store.PutSessions(ctx, []*authcore.Session{idled, pending}); err != nil {
		t.Fatal(err)
	}
	e.mustLogin("many@example.com")
	me := e.rt().mustPrincipal(t, e.sessionCookie()).Session.Clone()
	me.LastSeen = now.Add(-10 * time.Minute) // the least recently used: listed all the same
	if err := e.rt().store.PutSessions(ctx, []*authcore.Session{me}); err != nil {
		t.Fatal(err)
	}
	_, page := e.get("/.sigra/account", nil)
	ids := regexp.MustCompile(`data-session-id="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(ids) != accountSessionsListed {
		t.Fatalf("%d sessions listed; want %d", len(ids), accountSessionsListed)
	}
	if ids[0][1] != me.ID.String() || ids[1][1] != newest.String() {
		t.Errorf("listed first %s, %s; want this session %s, then the last used %s", ids[0][1], ids[1][1], me.ID, newest)
	}
	if !strings.Contains(page, `data-sigra="session-list-more">5 more sessions are not listed.`) {
		t.Errorf("the page does not say 5 sessions are left out:\n%s", page)
	}
	if strings.Contains(page, idled.ID.String()) {
		t.Error("a session ended by idling is listed")
	}
	if strings.Contains(page, pending.ID.String()) {
		t.Error("a pending sign-in is listed before sessions signed in")
	}
	if !strings.Contains(page, `data-sigra="session-revoke-others"`) {
		t.Error("no form to sign out the others")
	}
}

// A stolen session cookie, without the password, can neither sign the
// owner out of the sessions they sign in with nor, by guessing, keep the
// owner from the password re-check that revokes the thief's session.
func TestStolenSessionCannotLockTheOwnerOut(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("ona@example.com")
	thief := e.browser()
	thief.mustLogin("ona@example.com") // the cookie it stole, in effect
	owner := e.browser()
	owner.mustLogin("ona@example.com")
	ownerID := e.rt().mustPrincipal(t, owner.sessionCookie()).SessionID
	thiefID := e.rt().mustPrincipal(t, thief.sessionCookie()).SessionID

	_, page := thief.get("/.sigra/account", nil)
	if r, _ := thief.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {ownerID}}, nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the thief's revoke of the owner's session: status %d; want 401", r.StatusCode)
	}
	for i := range 6 { // past max_retries: the thief's re-checks are banned
		_, page := thief.get("/.sigra/account/password", nil)
		thief.postForm("/.sigra/account/password", url.Values{"csrf_token": {csrfFrom(t, page)}, "current_password": {fmt.Sprint("guess ", i)},
			"new_password": {"a new password 1"}, "confirm_password": {"a new password 1"}}, nil)
	}
	_, page = thief.get("/.sigra/account", nil)
	if r, _ := thief.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {ownerID}, "password": {testPassword}}, nil); r.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the thief's re-checks after its guesses: status %d; want 429, banned", r.StatusCode)
	}
	if r, _ := owner.get("/x", nil); r.StatusCode != 200 {
		t.Fatalf("the owner's session: status %d; want kept", r.StatusCode)
	}
	_, page = owner.get("/.sigra/account", nil)
	if r, _ := owner.postForm("/.sigra/account/sessions/revoke", url.Values{"csrf_token": {csrfFrom(t, page)}, "session": {thiefID}, "password": {testPassword}}, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("the owner's revoke of the thief's session: status %d; want 303", r.StatusCode)
	}
	if r, _ := thief.get("/x", map[string]string{"Accept": "application/json"}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the thief after the owner's revoke: status %d; want 401", r.StatusCode)
	}
}

// mustSession starts a session for u directly and returns it with its token.
func mustSession(t *testing.T, e *env, u *authcore.User) (*authcore.Session, string) {
	t.Helper()
	tok, s, err := e.rt().auth.StartSession(context.Background(), u, []string{"pwd"}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

func TestLockedStore(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), up: newUpstream(t), base: "http://127.0.0.1:1"}
	path := filepath.Join(e.dir, "sigra.db")
	held, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	err = e.load(e.caddyfile("", "sigra_gate"))
	if err == nil {
		t.Fatal("Caddy started on a locked store")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("error %q; want it to name %s and say it is locked", err, path)
	}
}

// damagedStore writes a store with some data at path and cuts the file
// to half of what it holds, as a full disk or an interrupted copy leaves
// it. (The file is longer than its pages: bbolt grows it ahead.)
func damagedStore(t *testing.T, path string) {
	t.Helper()
	st, err := store.OpenBolt(path, store.BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if _, err := st.PutSecret(context.Background(), fmt.Sprintf("s%04d", i), bytes.Repeat([]byte{'x'}, 200), false); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	db.Close()
	if err := os.Truncate(path, size/2); err != nil {
		t.Fatal(err)
	}
}

// A damaged store file is an error naming it, at start and on a reload,
// and a reload to it keeps the running config serving (DESIGN §9). It
// used to crash the process (SIGBUS in bbolt), taking every site down.
func TestDamagedStore(t *testing.T) {
	damaged := filepath.Join(t.TempDir(), "damaged.db")
	damagedStore(t, damaged)
	wantErr := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s on a damaged store succeeded", what)
		}
		if msg := err.Error(); !strings.Contains(msg, damaged) || !strings.Contains(msg, store.ErrDamaged.Error()) || !strings.Contains(msg, "backup") {
			t.Errorf("%s: %q; want it to name %s, say it is damaged and what to do", what, msg, damaged)
		}
	}

	e := &env{t: t, dir: t.TempDir(), up: newUpstream(t), base: "http://127.0.0.1:1"}
	cf := strings.Replace(e.caddyfile("", "sigra_gate"), filepath.Join(e.dir, "sigra.db"), damaged, 1)
	wantErr("start", e.load(cf))

	// The CLI opens the store itself when no Caddy holds it.
	cfPath := filepath.Join(e.dir, "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	wantErr("the CLI", onStore(cliFlags{config: cfPath, adapter: "caddyfile"}, nil,
		func(*cliConfig) error { return errors.New("went to the admin API") },
		func(*runtime, *App) error { return errors.New("opened the store") }))

	e = startCaddy(t, "", "sigra_gate")
	e.addUser("hal@example.com")
	e.mustLogin("hal@example.com")
	e.client.Transport = &http.Transport{DisableKeepAlives: true}
	running := e.rt()
	wantErr("reload", e.load(strings.Replace(e.caddyfile("", "sigra_gate"), filepath.Join(e.dir, "sigra.db"), damaged, 1)))
	if code := getRetryingTransport(t, e, "/x"); code != 200 {
		t.Fatalf("after the failed reload: status %d; want 200 from the running config", code)
	}
	if e.rt() != running {
		t.Error("the failed reload replaced the running sigra app")
	}
	e.addUser("ida@example.com") // the running store still takes writes
}

// TestReloadLeaksNothing loads the config, reloads it many times and
// checks that our goroutines and the store handle do not pile up.
func TestReloadLeaksNothing(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("hal@example.com")
	e.mustLogin("hal@example.com")
	// A kept-alive connection can be closed by the old server mid-reload;
	// that is Caddy's business, not what this test is about.
	e.client.Transport = &http.Transport{DisableKeepAlives: true}
	cf := e.caddyfile("", "sigra_gate")
	one := settledSigraGoroutines(-1) // what one running app uses
	if one == 0 {
		t.Fatal("no sigra goroutines found for the running app")
	}
	for i := range 12 {
		// Vary the config so Caddy really reloads.
		if err := e.load(strings.Replace(cf, "bootstrap_admin off", "bootstrap_admin off\n\t\tadmin_group g"+string(rune('a'+i)), 1)); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if code := getRetryingTransport(t, e, "/x"); code != 200 {
			t.Fatalf("after reload %d: status %d; want 200 (sessions survive reloads)", i, code)
		}
	}
	// Exactly one app's worth of background work remains.
	if n := settledSigraGoroutines(one); n != one {
		t.Errorf("%d goroutines run sigra code after 12 reloads; want %d (one app's)", n, one)
	}
	if _, err := store.OpenBolt(filepath.Join(e.dir, "sigra.db"), store.BoltOptions{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, store.ErrLocked) {
		t.Errorf("the store should still be held by the running config (err %v)", err)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := settledSigraGoroutines(0); n != 0 {
		t.Errorf("%d goroutines run sigra code after stop; want 0", n)
	}
	st, err := store.OpenBolt(filepath.Join(e.dir, "sigra.db"), store.BoltOptions{LockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("the store is still held after stop: %v", err)
	}
	st.Close()
	// Leave a running config for the cleanup's Stop.
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
}

// settledSigraGoroutines waits briefly for exiting goroutines and returns
// how many have a frame in this module's packages (not counting tests).
func settledSigraGoroutines(target int) int {
	count := func() int {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
		n := 0
		for _, g := range strings.Split(buf.String(), "\n\n") {
			if strings.Contains(g, "sigra-auth/caddy-sigra/") && !strings.Contains(g, "_test.go") && !strings.Contains(g, "testing.tRunner") {
				n++
			}
		}
		return n
	}
	n := count()
	for i := 0; i < 250 && n != target; i++ { // up to 5 s on a busy machine
		time.Sleep(20 * time.Millisecond)
		n = count()
	}
	return n
}

// getRetryingTransport GETs path, retrying (a bounded number of times)
// only when the connection itself fails: during a reload Caddy may accept
// a connection on the retiring server and close it unanswered.
func getRetryingTransport(t *testing.T, e *env, path string) int {
	t.Helper()
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, e.base+path, nil)
		resp, err := e.client.Do(req)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Fatalf("GET %s: the connection failed 5 times", path)
	return 0
}

// The key set is revalidated by caches every time (a new key signs at
// once, so a cached set from before it would fail every new assertion),
// cheaply: an unchanged set is a 304 against its ETag, a rotated one a
// new body.
func TestJWKSRevalidates(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	resp, body := e.get("/.sigra/jwks.json", nil)
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-cache" || etag == "" || !strings.Contains(body, `"keys"`) {
		t.Fatalf("jwks: status %d, Cache-Control %q, ETag %q\n%s", resp.StatusCode, resp.Header.Get("Cache-Control"), etag, body)
	}
	if resp, _ := e.get("/.sigra/jwks.json", map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
		t.Errorf("jwks with its ETag: status %d; want 304", resp.StatusCode)
	}
	if err := e.rt().keys.Rotate(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	resp, after := e.get("/.sigra/jwks.json", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag || after == body {
		t.Errorf("jwks after a rotation with the old ETag: status %d, ETag %q; want 200 and the new set", resp.StatusCode, resp.Header.Get("ETag"))
	}
}

// The code fields' pattern lets a browser send what the server takes (six
// digits, with spaces and hyphens anywhere: "123 456", "123-456"), and
// holds back what it would refuse.
func TestCodeFieldPatternMatchesTheServer(t *testing.T) {
	attr := regexp.MustCompile(`name="code"[^>]*pattern="([^"]+)"`)
	for _, page := range []string{"mfa.html", "totp.html"} {
		src, err := templateFS.ReadFile("templates/" + page)
		if err != nil {
			t.Fatal(err)
		}
		m := attr.FindSubmatch(src)
		if m == nil {
			t.Errorf("%s: no pattern on the code field", page)
			continue
		}
		re := regexp.MustCompile(`^(?:` + string(m[1]) + `)$`)
		for code, takes := range map[string]bool{
			"123456": true, "123 456": true, "123-456": true, " 123456 ": true, "1 2 3 4 5 6": true,
			"12345": false, "1234567": false, "12a456": false, "123_456": false, "": false,
		} {
			if got := re.MatchString(code); got != takes {
				t.Errorf("%s: pattern %s on %q: %t; the server takes it: %t", page, m[1], code, got, takes)
			}
		}
	}
}

// After a failed sign-in the form keeps the address and puts the cursor
// in the password; the change-password form names the account for a
// password manager (a hidden username field).
func TestFormsHelpPasswordManagers(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("ann@example.com")
	_, page := e.get("/.sigra/login", nil)
	r, body := e.postForm("/.sigra/login", url.Values{"csrf_token": {csrfFrom(t, page)}, "email": {"ann@example.com"}, "password": {"wrong password!"}}, nil)
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: status %d", r.StatusCode)
	}
	if !regexp.MustCompile(`name="email"[^>]*value="ann@example.com"`).MatchString(body) || regexp.MustCompile(`name="email"[^>]* autofocus`).MatchString(body) ||
		!regexp.MustCompile(`name="password"[^>]* autofocus`).MatchString(body) {
		t.Errorf("the sign-in page after a wrong password: want the address kept and the password field focused\n%s", body)
	}
	e.mustLogin("ann@example.com")
	for _, path := range []string{"/.sigra/account/password", "/.sigra/account/delete", "/.sigra/account/totp"} {
		_, page = e.get(path, nil)
		if !strings.Contains(page, `name="username" autocomplete="username" value="ann@example.com" hidden`) {
			t.Errorf("%s has no hidden username field for ann:\n%s", path, page)
		}
	}
}
