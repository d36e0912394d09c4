package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

var (
	userRowIDs  = regexp.MustCompile(`data-sigra="admin-user-row" data-user-id="([^"]+)"`)
	auditRowIDs = regexp.MustCompile(`data-sigra="admin-audit-row" data-row-id="([^"]+)"`)
	nextLink    = regexp.MustCompile(`<a href="([^"]+)" data-sigra="admin-(?:user|audit)-next"`)
)

// nextPage returns the page's next link ("" for none), unescaped.
func nextPage(page string) string {
	m := nextLink.FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

func htmlGet(e *env, path string) (*http.Response, string) {
	e.t.Helper()
	return e.get(path, map[string]string{"Accept": "text/html"})
}

// The admin pages let only a member of admin_group with a recent second
// factor in, and send everyone else where they can fix that.
func TestAdminPagesAccess(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "admin_mfa_max_age 5m", "sigra_gate")
	e.addUser("root@example.com", "admins")
	e.addUser("plain@example.com")

	for _, path := range []string{"/.sigra/admin", "/.sigra/admin/users", "/.sigra/admin/audit?action=auth.*"} {
		r, _ := htmlGet(e, path)
		if want := "/.sigra/login?rd=" + url.QueryEscape(path); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want {
			t.Errorf("GET %s signed out: status %d Location %q; want 303 to %s", path, r.StatusCode, r.Header.Get("Location"), want)
		}
	}

	e.mustLogin("plain@example.com")
	if r, page := htmlGet(e, "/.sigra/admin/users"); r.StatusCode != http.StatusForbidden || strings.Contains(page, "admin-user-row") {
		t.Errorf("non-admin: status %d; want 403 and no user list", r.StatusCode)
	}
	if page := mustPage(t, e, "/.sigra/account"); strings.Contains(page, `href="/.sigra/admin"`) {
		t.Error("a non-admin's account page links the admin pages")
	}

	e.client.Jar, _ = newJar()
	e.mustLogin("root@example.com")
	if r, _ := htmlGet(e, "/.sigra/admin/users"); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.sigra/mfa?rd="+url.QueryEscape("/.sigra/admin/users") {
		t.Errorf("admin without a second factor: status %d Location %q; want 303 to the challenge", r.StatusCode, r.Header.Get("Location"))
	}
	secret, _ := enrolTOTP(t, e, fake.Now())
	if r, page := htmlGet(e, "/.sigra/admin"); r.StatusCode != http.StatusOK || !strings.Contains(page, "/.sigra/admin/users") {
		t.Fatalf("admin after enrolment: status %d", r.StatusCode)
	}
	if page := mustPage(t, e, "/.sigra/account"); !strings.Contains(page, `href="/.sigra/admin"`) {
		t.Error("an admin's account page does not link the admin pages")
	}
	r, _ := htmlGet(e, "/.sigra/admin/users")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("users page: status %d", r.StatusCode)
	}
	if got := r.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q; want no-store", got)
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q; want the portal's", csp)
	}

	// A second factor older than admin_mfa_max_age (5m here) sends the admin
	// back to the challenge, which then returns to the page.
	target := e.addUser("target@example.com")
	userPage := "/.sigra/admin/users/" + target.ID
	csrf := csrfFrom(t, mustPage(t, e, userPage))
	fake.Advance(6 * time.Minute)
	if r, _ := htmlGet(e, userPage); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.sigra/mfa?rd="+url.QueryEscape(userPage) {
		t.Fatalf("stale second factor: status %d Location %q; want 303 to the challenge", r.StatusCode, r.Header.Get("Location"))
	}
	// A form posted meanwhile changes nothing and returns to its page.
	r, _ = e.postForm(userPage+"/disable", url.Values{"csrf_token": {csrf}}, map[string]string{"Accept": "text/html"})
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.sigra/mfa?rd="+url.QueryEscape(userPage) {
		t.Errorf("POST with a stale second factor: status %d Location %q; want 303 to the challenge, back to the user page", r.StatusCode, r.Header.Get("Location"))
	}
	if u, _ := e.rt().store.UserByID(context.Background(), target.ID); u.Disabled {
		t.Error("a POST with a stale second factor disabled the user")
	}
	_, mfa := e.get("/.sigra/mfa?rd="+url.QueryEscape(userPage), nil)
	r, _ = e.postForm("/.sigra/mfa", url.Values{"csrf_token": {csrfFrom(t, mfa)}, "code": {refTOTP(t, secret, fake.Now())}, "rd": {userPage}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != userPage {
		t.Fatalf("challenge: status %d Location %q; want back to %s", r.StatusCode, r.Header.Get("Location"), userPage)
	}
	if r, _ := htmlGet(e, userPage); r.StatusCode != http.StatusOK {
		t.Errorf("after the challenge: status %d; want 200", r.StatusCode)
	}
	head := e.do(http.MethodHead, userPage+"/disable", nil, nil)
	head.Body.Close()
	if head.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("HEAD on a form action: status %d; want 405", head.StatusCode)
	}

	// A password alone, second factor pending: the admin is sent to the
	// challenge, and a form with that session's own token changes nothing.
	e.client.Jar, _ = newJar()
	e.login("root@example.com", testPassword, "/")
	if r, _ := htmlGet(e, userPage); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.sigra/mfa?rd="+url.QueryEscape(userPage) {
		t.Errorf("pending session: status %d Location %q; want 303 to the challenge", r.StatusCode, r.Header.Get("Location"))
	}
	_, mfa = e.get("/.sigra/mfa", nil)
	if r, _ := e.postForm(userPage+"/disable", url.Values{"csrf_token": {csrfFrom(t, mfa)}}, map[string]string{"Accept": "text/html"}); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/.sigra/mfa?") {
		t.Errorf("pending session's POST: status %d Location %q; want 303 to the challenge", r.StatusCode, r.Header.Get("Location"))
	}
	if u, _ := e.rt().store.UserByID(context.Background(), target.ID); u.Disabled {
		t.Error("a session with its second factor pending disabled a user")
	}
}

// startAdminUI is startAsAdmin (root@example.com signed in as an admin
// with a fresh second factor; target@example.com to act on) that also
// returns the admin.
func startAdminUI(t *testing.T) (e *env, root, target *authcore.User) {
	t.Helper()
	e, target = startAsAdmin(t)
	root, err := e.rt().store.UserByEmail(context.Background(), "root@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return e, root, target
}

func TestAdminPagesUserList(t *testing.T) {
	e, _, target := startAdminUI(t)
	ctx := context.Background()
	want := map[string]bool{}
	for i := range 60 {
		u, err := e.rt().auth.CreateUser(ctx, authcore.NewUser{Email: fmt.Sprintf("u%02d@list.example", i), Name: "Listed", Password: testPassword})
		if err != nil {
			t.Fatal(err)
		}
		want[u.ID] = true
	}
	// Every user exactly once over the pages, in pages of 50.
	seen := map[string]bool{}
	next, pages := "/.sigra/admin/users", 0
	for next != "" {
		r, page := htmlGet(e, next)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", next, r.StatusCode)
		}
		ids := userRowIDs.FindAllStringSubmatch(page, -1)
		if len(ids) > adminPageSize {
			t.Errorf("page of %d users; want at most %d", len(ids), adminPageSize)
		}
		for _, m := range ids {
			if seen[m[1]] {
				t.Errorf("user %s listed twice", m[1])
			}
			seen[m[1]] = true
		}
		next = nextPage(page)
		if pages++; pages > 5 {
			t.Fatal("the next link never ends")
		}
	}
	if pages != 2 || len(seen) != 62 { // 60, root and target
		t.Errorf("%d pages, %d users; want 2 pages, 62 users", pages, len(seen))
	}

	// Search matches part of the email or name, any case, in NFKC (as
	// addresses are compared at sign-in: ｕ0 is u0), or the id.
	for q, n := range map[string]int{"U0": 10, "list.example": adminPageSize, "TARGET@": 1, "nobody": 0, "ｕ0": 10, "Ｌｉｓｔｅｄ": adminPageSize} {
		_, page := htmlGet(e, "/.sigra/admin/users?q="+url.QueryEscape(q))
		if got := len(userRowIDs.FindAllStringSubmatch(page, -1)); got != n {
			t.Errorf("search %q: %d users; want %d", q, got, n)
		}
		if !strings.Contains(page, `value="`+html.EscapeString(q)+`"`) {
			t.Errorf("search %q: the form does not keep the query", q)
		}
	}
	// Filtered pages go on where the last one stopped, and the last says so.
	_, page := htmlGet(e, "/.sigra/admin/users?q=list.example&limit=40")
	first := userRowIDs.FindAllStringSubmatch(page, -1)
	link := nextPage(page)
	if len(first) != 40 || !strings.Contains(link, "q=list.example") {
		t.Fatalf("first filtered page: %d users, next %q; want 40 and a next link keeping q", len(first), link)
	}
	_, page = htmlGet(e, link)
	if rest := userRowIDs.FindAllStringSubmatch(page, -1); len(rest) != 20 || nextPage(page) != "" {
		t.Errorf("second filtered page: %d users, next %q; want the other 20 and no next link", len(rest), nextPage(page))
	}
	// The same search on the JSON API.
	code, body := e.adminCall(http.MethodGet, "/users?q=target", nil)
	var list struct {
		Users []userView `json:"users"`
	}
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list.Users) != 1 || list.Users[0].Email != "target@example.com" {
		t.Errorf("API search: status %d body %s; want target@example.com alone", code, body)
	}
	// A search that reads searchScanMax users without filling its page
	// returns what it found and a cursor to go on with: every match once.
	defer func(n int) { searchScanMax = n }(searchScanMax)
	searchScanMax = 25
	found, cursor, calls := map[string]bool{}, "", 0
	for {
		code, body := e.adminCall(http.MethodGet, "/users?q=list.example&limit=100&cursor="+cursor, nil)
		var page struct {
			Users []userView `json:"users"`
			Next  string     `json:"next_cursor"`
		}
		if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil {
			t.Fatalf("capped search: status %d body %s", code, body)
		}
		if len(page.Users) > searchScanMax {
			t.Fatalf("capped search returned %d users from at most %d read", len(page.Users), searchScanMax)
		}
		for _, u := range page.Users {
			if found[u.ID] {
				t.Errorf("capped search: %s twice", u.Email)
			}
			found[u.ID] = true
		}
		if cursor = page.Next; cursor == "" {
			break
		}
		if calls++; calls > 10 {
			t.Fatal("capped search never ends")
		}
	}
	if len(found) != 60 || calls < 2 {
		t.Errorf("capped search: %d users over %d calls; want all 60 over several", len(found), calls+1)
	}
	// A cap reached exactly at the last user is the last page: no cursor.
	searchScanMax = len(seen)
	if code, body := e.adminCall(http.MethodGet, "/users?q=list.example&limit=100", nil); code != 200 || strings.Contains(body, "next_cursor") || strings.Count(body, `"email"`) != 60 {
		t.Errorf("search capped at the store's size: status %d body %.300s; want all 60 and no next_cursor", code, body)
	}
	// An id is looked up, whatever the cap.
	searchScanMax = 1
	if code, body := e.adminCall(http.MethodGet, "/users?q="+strings.ToUpper(target.ID), nil); code != 200 || strings.Count(body, `"email"`) != 1 || !strings.Contains(body, target.ID) {
		t.Errorf("search by id: status %d body %s; want target alone", code, body)
	}
	for _, limit := range []string{"ten", "-1", "1001"} {
		if code, body := e.adminCall(http.MethodGet, "/users?limit="+limit, nil); code != http.StatusBadRequest || problemReason(body) != "bad_request" {
			t.Errorf("API limit=%s: status %d body %s; want 400 bad_request", limit, code, body)
		}
	}
	if code, body := e.adminCall(http.MethodGet, "/users?limit=0", nil); code != 200 || strings.Count(body, `"email"`) != 62 {
		t.Errorf("API limit=0 (the default, as in the audit timeline): status %d; want 200 and all 62 users", code)
	}
	for _, q := range []string{"limit=-1", "cursor=bogus", "q=x&cursor=bogus"} {
		if r, _ := htmlGet(e, "/.sigra/admin/users?"+q); r.StatusCode != http.StatusBadRequest {
			t.Errorf("users page %s: status %d; want 400", q, r.StatusCode)
		}
	}
}

func TestAdminPagesUserActions(t *testing.T) {
	e, root, _ := startAdminUI(t)
	ctx := context.Background()
	victim, err := e.rt().auth.CreateUser(ctx, authcore.NewUser{Email: "vic@example.com", Name: `<script>alert(1)</script>`, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	sess, _ := mustSession(t, e, victim)
	userPage := "/.sigra/admin/users/" + victim.ID

	r, page := htmlGet(e, userPage)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("user page: status %d", r.StatusCode)
	}
	if strings.Contains(page, "<script>alert") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the user's name is not escaped on the page")
	}
	for _, hook := range []string{`data-sigra="admin-user-disable"`, `data-sigra="admin-user-unlock"`, `data-sigra="admin-session-row" data-session-id="` + sess.ID.String() + `"`, `data-sigra="admin-session-revoke"`} {
		if !strings.Contains(page, hook) {
			t.Errorf("user page lacks %s", hook)
		}
	}
	csrf := csrfFrom(t, page)

	// Refused: no token, another session's token, a cross-site form.
	refusals := []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no CSRF token", url.Values{}, nil},
		{"another session's token", url.Values{"csrf_token": {otherSessionCSRF(t, e, victim)}}, nil},
		{"cross-site", url.Values{"csrf_token": {csrf}}, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}},
	}
	for _, c := range refusals {
		if r, _ := e.postForm(userPage+"/disable", c.form, c.hdr); r.StatusCode != http.StatusForbidden {
			t.Errorf("disable, %s: status %d; want 403", c.name, r.StatusCode)
		}
		if r, _ := e.postForm("/.sigra/admin/sessions/"+sess.ID.String()+"/revoke", c.form, c.hdr); r.StatusCode != http.StatusForbidden {
			t.Errorf("revoke, %s: status %d; want 403", c.name, r.StatusCode)
		}
	}
	if r, _ := e.postForm(userPage+"/disable", url.Values{"csrf_token": {csrf}, "pad": {strings.Repeat("x", maxFormBody)}}, nil); r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("disable, oversized form: status %d; want 413", r.StatusCode)
	}
	if u, _ := e.rt().store.UserByID(ctx, victim.ID); u.Disabled {
		t.Fatal("a refused form disabled the user")
	}
	if _, err := e.rt().store.GetSession(ctx, sess.ID); err != nil {
		t.Fatalf("a refused form ended the session: %v", err)
	}

	// Revoke: back to the user's page, the session gone, an admin row.
	r, _ = e.postForm("/.sigra/admin/sessions/"+sess.ID.String()+"/revoke", url.Values{"csrf_token": {csrf}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != userPage {
		t.Fatalf("revoke: status %d Location %q; want 303 to %s", r.StatusCode, r.Header.Get("Location"), userPage)
	}
	if _, err := e.rt().store.GetSession(ctx, sess.ID); err == nil {
		t.Error("revoked session still exists")
	}
	assertAdminRow(t, e, "session.revoked", root.ID, victim.ID)
	if r, _ := e.postForm("/.sigra/admin/sessions/"+sess.ID.String()+"/revoke", url.Values{"csrf_token": {csrf}}, nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("revoking it again: status %d; want 404", r.StatusCode)
	}

	// Disable, then enable: each takes effect, shows on the page, and is
	// written as the admin's action.
	r, _ = e.postForm(userPage+"/disable", url.Values{"csrf_token": {csrf}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != userPage {
		t.Fatalf("disable: status %d Location %q", r.StatusCode, r.Header.Get("Location"))
	}
	assertAdminRow(t, e, "admin.user.disable", root.ID, victim.ID)
	if _, page := htmlGet(e, userPage); !strings.Contains(page, `data-sigra="admin-user-enable"`) {
		t.Error("disabled user's page has no enable form")
	}
	if u, _ := e.rt().store.UserByID(ctx, victim.ID); !u.Disabled {
		t.Fatal("disable left the user enabled")
	}

	r, _ = e.postForm(userPage+"/enable", url.Values{"csrf_token": {csrfFrom(t, mustPage(t, e, userPage))}}, nil)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("enable: status %d", r.StatusCode)
	}
	assertAdminRow(t, e, "admin.user.enable", root.ID, victim.ID)
	if u, _ := e.rt().store.UserByID(ctx, victim.ID); u.Disabled {
		t.Error("enable left the user disabled")
	}
	r, _ = e.postForm(userPage+"/unlock", url.Values{"csrf_token": {csrfFrom(t, mustPage(t, e, userPage))}}, nil)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("unlock: status %d", r.StatusCode)
	}
	assertAdminRow(t, e, "admin.user.unlock", root.ID, victim.ID)

	if r, _ := htmlGet(e, "/.sigra/admin/users/00000000-0000-7000-8000-000000000000"); r.StatusCode != http.StatusNotFound {
		t.Errorf("unknown user page: status %d; want 404", r.StatusCode)
	}
	if r, _ := e.postForm("/.sigra/admin/users/00000000-0000-7000-8000-000000000000/disable", url.Values{"csrf_token": {csrfFrom(t, mustPage(t, e, userPage))}}, nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("disabling an unknown user: status %d; want 404", r.StatusCode)
	}
	if r, _ := e.get(userPage+"/disable", nil); r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "POST" {
		t.Errorf("GET on a form action: status %d Allow %q; want 405 POST", r.StatusCode, r.Header.Get("Allow"))
	}
}

// An admin cannot disable their own account from a browser: the page
// offers no form for it, and the pages and the JSON API refuse it with
// 409, leaving the account and its sessions as they were and writing no
// admin row. Another admin, or the CLI, still can.
func TestAdminCannotDisableThemselves(t *testing.T) {
	e, root, target := startAdminUI(t)
	if page := refusedOnSelf(t, e, root, target, "disable", "cannot disable your own account"); !strings.Contains(page, "This is your account") {
		t.Errorf("the admin's own page does not say why it cannot be disabled:\n%s", page)
	}
	if u, _ := e.rt().store.UserByID(context.Background(), root.ID); u.Disabled {
		t.Fatal("the admin disabled their own account")
	}
	if r, _ := htmlGet(e, "/.sigra/admin"); r.StatusCode != http.StatusOK {
		t.Errorf("the admin's session after the refusals: status %d; want 200", r.StatusCode)
	}
}

// Nor lift their own bans and locks: whoever held the admin's session
// could otherwise go on guessing the password its re-checks are banned
// from. The page offers the form on other users' pages only.
func TestAdminCannotUnlockThemselves(t *testing.T) {
	e, root, target := startAdminUI(t)
	refusedOnSelf(t, e, root, target, "unlock", "cannot lift your own")
	if code, body := e.apiPost("/users/" + target.ID + "/unlock"); code != http.StatusOK {
		t.Errorf("API: unlocking another user: status %d\n%s", code, body)
	}
}

// refusedOnSelf checks that the admin root's own page offers no form for
// op while target's does, and that op on root is refused from the page
// and the API (409, saying want) with no row; it returns root's page.
func refusedOnSelf(t *testing.T, e *env, root, target *authcore.User, op, want string) string {
	t.Helper()
	own, form := "/.sigra/admin/users/"+root.ID, `data-sigra="admin-user-`+op+`"`
	_, page := htmlGet(e, own)
	if strings.Contains(page, form) {
		t.Errorf("the admin's own page offers to %s it:\n%s", op, page)
	}
	if _, other := htmlGet(e, "/.sigra/admin/users/"+target.ID); !strings.Contains(other, form) {
		t.Errorf("another user's page lost its %s form", op)
	}
	r, body := e.postForm(own+"/"+op, url.Values{"csrf_token": {csrfFrom(t, page)}}, map[string]string{"Accept": "text/html"})
	if r.StatusCode != http.StatusConflict || !strings.Contains(body, want) {
		t.Errorf("page: %s oneself: status %d; want 409 saying why\n%s", op, r.StatusCode, body)
	}
	if code, body := e.apiPost("/users/" + root.ID + "/" + op); code != http.StatusConflict || !strings.Contains(body, want) {
		t.Errorf("API: %s oneself: status %d; want 409 saying why\n%s", op, code, body)
	}
	if rows := e.auditRows(userChangeActions[op]); len(rows) != 0 {
		t.Errorf("a refused self-%s wrote rows %+v", op, rows)
	}
	return page
}

func mustPage(t *testing.T, e *env, path string) string {
	t.Helper()
	r, page := htmlGet(e, path)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, r.StatusCode)
	}
	return page
}

// assertAdminRow checks the newest row of action: done by the admin, as
// an admin, to subject.
func assertAdminRow(t *testing.T, e *env, action, admin, subject string) {
	t.Helper()
	rows := e.auditRows(action)
	if len(rows) == 0 {
		t.Fatalf("no %s row", action)
	}
	if r := rows[0]; r.ActorID != admin || r.ActorType != audit.ActorAdmin || r.SubjectID != subject {
		t.Errorf("%s row: actor %s (%s) subject %s; want admin %s acting on %s", action, r.ActorID, r.ActorType, r.SubjectID, admin, subject)
	}
}

// The audit timeline pages on with a relative since ("last 24 hours"):
// the UI's Next link and a script repeating the API query with the
// cursor, each a second later, get the next rows, not a 400.
func TestAdminAuditRelativeSincePages(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("root@example.com", "admins")
	e.mustLogin("root@example.com")
	enrolTOTP(t, e, fake.Now())
	all, err := e.rt().audit.Timeline(context.Background(), audit.Query{Limit: audit.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range all.Rows {
		want = append(want, r.ID)
	}
	if len(want) < 2 {
		t.Fatalf("%d audit rows; want at least two to page through", len(want))
	}

	t.Run("admin UI", func(t *testing.T) {
		var got []string
		for next := "/.sigra/admin/audit?since=24h&limit=1"; next != "" && len(got) <= len(want); {
			fake.Advance(time.Second)
			page := mustPage(t, e, next)
			for _, m := range auditRowIDs.FindAllStringSubmatch(page, -1) {
				got = append(got, m[1])
			}
			next = nextPage(page)
		}
		if !slices.Equal(got, want) {
			t.Errorf("rows over the pages %v; want %v", got, want)
		}
	})
	t.Run("API", func(t *testing.T) {
		api := map[string]string{"Accept": "application/json"}
		var got []string
		for cursor, first := "", true; (first || cursor != "") && len(got) <= len(want); first = false {
			fake.Advance(time.Second)
			r, body := e.get("/.sigra/api/admin/audit?since=24h&limit=1&cursor="+url.QueryEscape(cursor), api)
			var page audit.Page
			if err := json.Unmarshal([]byte(body), &page); err != nil || r.StatusCode != http.StatusOK {
				t.Fatalf("page after %d rows: status %d body %s", len(got), r.StatusCode, body)
			}
			for _, row := range page.Rows {
				got = append(got, row.ID)
			}
			cursor = page.NextCursor
		}
		if !slices.Equal(got, want) {
			t.Errorf("rows over the pages %v; want %v", got, want)
		}
	})
}

func TestAdminPagesAudit(t *testing.T) {
	e, root, _ := startAdminUI(t)
	r, page := htmlGet(e, "/.sigra/admin/audit")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("audit page: status %d", r.StatusCode)
	}
	stamped := regexp.MustCompile(`data-sigra="admin-audit-row" data-row-id="([^"]+)">\s*<td><time datetime="([^"]+)">`).FindAllStringSubmatch(page, -1)
	if len(stamped) == 0 {
		t.Fatal("audit rows lack data-sigra=admin-audit-row with a <time datetime>")
	}
	// The datetime is the row's occurred_at, to the character, as the API
	// and the webhooks give it: a script can match the two.
	_, body := e.get("/.sigra/api/admin/audit?limit=500", map[string]string{"Accept": "application/json"})
	var api struct {
		Rows []struct {
			ID         string `json:"id"`
			OccurredAt string `json:"occurred_at"`
		} `json:"rows"`
	}
	if err := json.Unmarshal([]byte(body), &api); err != nil {
		t.Fatalf("audit API: %v: %s", err, body)
	}
	occurred := map[string]string{}
	for _, r := range api.Rows {
		occurred[r.ID] = r.OccurredAt
	}
	for _, m := range stamped {
		if occurred[m[1]] != m[2] {
			t.Errorf("row %s: <time datetime=%q>; want its occurred_at %q", m[1], m[2], occurred[m[1]])
		}
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`).MatchString(stamped[0][2]) {
		t.Errorf("datetime %q; want nine fractional digits, as occurred_at has", stamped[0][2])
	}
	// A row's metadata shows, so that an admin can tell why (a sign-in's
	// method, a failure's reason).
	if !strings.Contains(page, `<code>method=password</code>`) {
		t.Errorf("the audit page shows no metadata of the sign-in rows:\n%s", page)
	}

	// The filter narrows to the action; pages go on from the cursor.
	if _, err := e.rt().auth.CreateUser(context.Background(), authcore.NewUser{Email: "x@example.com", Password: testPassword}); err != nil {
		t.Fatal(err)
	}
	adminJar := e.client.Jar
	for range 2 {
		e.client.Jar, _ = newJar()
		e.mustLogin("x@example.com")
	}
	e.client.Jar = adminJar
	rows := e.auditRows("auth.login.success")
	var got []string
	next := "/.sigra/admin/audit?action=auth.login.success&limit=2"
	for next != "" && len(got) < 20 {
		page := mustPage(t, e, next)
		for _, m := range auditRowIDs.FindAllStringSubmatch(page, -1) {
			got = append(got, m[1])
		}
		if link := nextPage(page); link != "" && !strings.Contains(link, "action=auth.login.success") {
			t.Fatalf("next link %q drops the filter", link)
		} else {
			next = link
		}
	}
	if len(got) != len(rows) {
		t.Fatalf("%d rows over the pages; want %d", len(got), len(rows))
	}
	for i, row := range rows {
		if got[i] != row.ID {
			t.Errorf("row %d: %s; want %s (newest first)", i, got[i], row.ID)
		}
	}
	// The actor filter: root's rows only, and not everyone's.
	mine, err := e.rt().audit.Timeline(context.Background(), audit.Query{ActorID: root.ID, Limit: adminPageSize})
	if err != nil {
		t.Fatal(err)
	}
	all, err := e.rt().audit.Timeline(context.Background(), audit.Query{Limit: adminPageSize})
	if err != nil {
		t.Fatal(err)
	}
	page = mustPage(t, e, "/.sigra/admin/audit?actor="+root.ID)
	shown := auditRowIDs.FindAllStringSubmatch(page, -1)
	if len(shown) != len(mine.Rows) || len(shown) == len(all.Rows) {
		t.Fatalf("actor filter: %d rows shown; want root's %d of %d", len(shown), len(mine.Rows), len(all.Rows))
	}
	for i, m := range shown {
		if m[1] != mine.Rows[i].ID {
			t.Errorf("actor filter row %d: %s; want %s", i, m[1], mine.Rows[i].ID)
		}
	}

	for _, q := range []string{"since=yesterday", "action=" + url.QueryEscape("a..b"), "cursor=bogus", "limit=100000"} {
		r, page := htmlGet(e, "/.sigra/admin/audit?"+q)
		if r.StatusCode != http.StatusBadRequest || !strings.Contains(page, `class="err"`) {
			t.Errorf("audit?%s: status %d; want 400 with the error on the page", q, r.StatusCode)
		}
	}
}

// With admin_hosts, the admin pages and API exist on those host names
// only: elsewhere even a fresh admin finds nothing, and the account
// page links nowhere. A script in the app, which shares its origin,
// has no admin surface to call.
func TestAdminHostsKeepTheAdminSurfaceOffOtherHosts(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "admin_hosts admin.localhost", "sigra_gate")
	port := e.base[strings.LastIndexByte(e.base, ':')+1:]
	cf := e.caddyfile("admin_hosts admin.localhost", "sigra_gate")
	if err := e.load(strings.Replace(cf, e.base+" {", e.base+", http://admin.localhost:"+port+" {", 1)); err != nil {
		t.Fatal(err)
	}
	e.addUser("root@example.com", "admins")
	e.mustLogin("root@example.com")
	enrolTOTP(t, e, fake.Now())
	for _, path := range []string{"/users", "/csrf"} {
		// Not there, and said as an API client reads it.
		if code, body := e.adminCall(http.MethodGet, path, nil); code != http.StatusNotFound || !strings.Contains(body, `"reason":"not_found"`) {
			t.Errorf("API %s on 127.0.0.1: status %d %s; want a problem+json 404", path, code, body)
		}
	}
	if r, _ := e.get("/.sigra/admin/users", map[string]string{"Accept": "text/html"}); r.StatusCode != http.StatusNotFound {
		t.Errorf("admin page on 127.0.0.1: status %d; want 404", r.StatusCode)
	}
	if _, body := e.get("/.sigra/account", map[string]string{"Accept": "text/html"}); strings.Contains(body, "/.sigra/admin") {
		t.Error("the account page links the admin pages on a host without them")
	}
	if r := e.hostRequest("", "admin.localhost:"+port, "/.sigra/api/admin/users", nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("API on admin.localhost, signed out: status %d; want 401 (it is there)", r.StatusCode)
	}
}
