package e2e

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

var (
	totpSecretRe = regexp.MustCompile(`data-sigra="totp-secret">([A-Z2-7]+)<`)
	enrolmentRe  = regexp.MustCompile(`name="enrolment" value="([^"]+)"`)
	userLinkRe   = regexp.MustCompile(`data-sigra="admin-user-row" data-user-id="([^"]+)">\s*<td><a href="[^"]+">dora@example.com<`)
)

// TestAdminPages is the first admin's way into the admin pages of the real
// binary: sent to a second factor, enrol one, then find a user added from
// the CLI, disable them from their page, and see that in the audit
// timeline.
func TestAdminPages(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{bootstrap: "admin@localhost"})
	email, password := firstAdmin(t, g.start())
	if r := g.cli("dora-password-1\n", "add", "--email", "dora@example.com", "--name", "Dora", "--password-stdin"); r.code != 0 {
		t.Fatalf("user add: %s\n%s", r, g.logs())
	}
	b := g.browser()
	html := http.Header{"Accept": {"text/html"}}
	form := func(path string, v url.Values) *http.Response {
		t.Helper()
		resp, _ := b.do(http.MethodPost, path, http.Header{
			"Content-Type": {"application/x-www-form-urlencoded"}, "Origin": {g.base}, "Accept": {"text/html"},
		}, strings.NewReader(v.Encode()))
		return resp
	}
	csrf := func(page string) string {
		t.Helper()
		m := csrfRe.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no csrf_token in the page:\n%s", page)
		}
		return m[1]
	}

	b.mustLogin(email, password, "/")
	resp, _ := b.get("/.sigra/admin", html)
	if want := "/.sigra/mfa?rd=" + url.QueryEscape("/.sigra/admin"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
		t.Fatalf("admin without a second factor: status %d Location %q; want 303 to %s\n%s", resp.StatusCode, resp.Header.Get("Location"), want, g.logs())
	}

	_, page := b.get("/.sigra/account/totp", html)
	m := totpSecretRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no TOTP secret on the enrolment page:\n%s", page)
	}
	code, err := totp.GenerateCode(m[1], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	enrolment := enrolmentRe.FindStringSubmatch(page)
	if enrolment == nil {
		t.Fatalf("no enrolment field on the enrolment page:\n%s", page)
	}
	if resp := form("/.sigra/account/totp", url.Values{"csrf_token": {csrf(page)}, "enrolment": {enrolment[1]}, "code": {code}, "password": {password}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("TOTP enrolment: status %d\n%s", resp.StatusCode, g.logs())
	}

	resp, page = b.get("/.sigra/admin/users?q=dora", html)
	u := userLinkRe.FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || u == nil {
		t.Fatalf("user search: status %d, dora not listed\n%s\n%s", resp.StatusCode, page, g.logs())
	}
	userPage := "/.sigra/admin/users/" + u[1]
	_, page = b.get(userPage, html)
	if resp := form(userPage+"/disable", url.Values{"csrf_token": {csrf(page)}}); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != userPage {
		t.Fatalf("disable: status %d Location %q\n%s", resp.StatusCode, resp.Header.Get("Location"), g.logs())
	}
	if resp, _ := g.browser().login("dora@example.com", "dora-password-1", "/"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a user disabled from the admin page signed in: status %d", resp.StatusCode)
	}
	_, page = b.get("/.sigra/admin/audit?action=admin.user.disable", html)
	if n := strings.Count(page, `data-sigra="admin-audit-row"`); n != 1 || !strings.Contains(page, "admin.user.disable") {
		t.Errorf("audit page filtered on admin.user.disable: %d rows; want 1\n%s", n, page)
	}
}
