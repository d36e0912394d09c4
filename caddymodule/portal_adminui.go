package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// The admin pages (DESIGN §3): server-rendered HTML over the same
// operations as the JSON API under /api/admin, for the same people
// (adminDenial). Forms post back with the session's CSRF token and
// answer with a redirect to the page they came from.

// adminPageSize is how many users or audit rows a page lists.
const adminPageSize = 50

// adminUI serves path, the part after <prefix>/admin.
func (q *preq) adminUI(path string) error {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case path == "" || path == "/":
		return q.route(q.adminGET(q.adminHome), nil)
	case path == "/users":
		return q.route(q.adminGET(q.adminUsers), nil)
	case path == "/audit":
		return q.route(q.adminGET(q.adminAudit), nil)
	case len(parts) == 2 && parts[0] == "users":
		return q.route(q.adminGET(func(p *authcore.Principal) error { return q.adminUser(p, parts[1]) }), nil)
	case len(parts) == 3 && parts[0] == "users" && adminUserOps[parts[2]]:
		back := q.adminUserPath(parts[1])
		return q.route(nil, q.adminPOST(back, func(p *authcore.Principal) error {
			if parts[2] == "delete" && q.r.PostFormValue("confirm") != "yes" {
				return q.message(http.StatusBadRequest, "Not deleted", "Tick the box to confirm the deletion.", back)
			}
			_, err := doUser(q.ctx(), q.rt, q.p.app.AdminGroup, userRequest{Op: parts[2], User: parts[1], Session: p.Session.ID}, q.r, p.User.ID)
			if err == nil && parts[2] == "delete" {
				back = q.p.app.Prefix + "/admin/users" // the user's page is gone
			}
			return q.adminDone(err, back)
		}))
	case len(parts) == 3 && parts[0] == "users" && parts[2] == "groups":
		back := q.adminUserPath(parts[1])
		return q.route(nil, q.adminPOST(back, func(p *authcore.Principal) error {
			groups := []string{}
			if v := strings.TrimSpace(q.r.PostFormValue("groups")); v != "" {
				groups = strings.Split(v, ",")
			}
			res, err := doUser(q.ctx(), q.rt, q.p.app.AdminGroup, userRequest{Op: "groups", User: parts[1], Groups: groups, Session: p.Session.ID}, q.r, p.User.ID)
			if err == nil && res.User.ID == p.User.ID && !slices.Contains(res.User.Groups, q.p.app.AdminGroup) {
				back = q.p.app.Prefix + "/account" // no longer an administrator
			}
			return q.adminDone(err, back)
		}))
	case len(parts) == 3 && parts[0] == "sessions" && parts[2] == "revoke":
		// Back to the page of the session's user once the store has said
		// who that is; to the list before.
		back := q.p.app.Prefix + "/admin/users"
		return q.route(nil, q.adminPOST(back, func(p *authcore.Principal) error {
			_, uid, err := q.adminRevoke(p, parts[1])
			if err == nil {
				back = q.adminUserPath(uid)
			}
			return q.adminDone(err, back)
		}))
	}
	return q.message(http.StatusNotFound, "Not found", "There is no such page.", q.p.app.Prefix+"/admin")
}

func (q *preq) adminUserPath(id string) string {
	return q.p.app.Prefix + "/admin/users/" + url.PathEscape(id)
}

// adminGET wraps a page handler with the admin check; back is the page
// itself.
func (q *preq) adminGET(page func(p *authcore.Principal) error) func() error {
	return func() error {
		p, err := q.adminAccess(originalURI(q.r))
		if p == nil {
			return err
		}
		if name := repeatedParam(q.r.URL.Query()); name != "" {
			return q.message(http.StatusBadRequest, "Bad request", fmt.Sprintf("The address has the parameter %q more than once.", name), q.p.app.Prefix+"/admin")
		}
		return page(p)
	}
}

// adminPOST wraps a form handler with the admin check and the form's CSRF
// token. back is the page to return to, after signing in again too.
func (q *preq) adminPOST(back string, run func(p *authcore.Principal) error) func() error {
	return func() error {
		p, err := q.adminAccess(back)
		if p == nil {
			return err
		}
		if !q.rt.csrf.Valid(sessionBinding(p), q.r.PostFormValue("csrf_token")) {
			return q.message(http.StatusForbidden, "Request refused", "The form expired. Please go back and try again.", back)
		}
		return run(p)
	}
}

// adminAccess returns the principal of an admin page request, or answers
// it and returns nil: a browser not signed in goes to sign in (toLogin),
// one whose second factor is missing or too old to the challenge, each
// with back as the return URL; a signed-in user outside admin_group gets
// 403.
func (q *preq) adminAccess(back string) (*authcore.Principal, error) {
	p, err := q.session()
	if err != nil {
		return nil, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	d := denyMFA
	switch q.adminDenial(p) {
	case "":
		return p, nil
	case adminNeedGroup:
		q.auditAdminDenied(p)
		return nil, q.message(http.StatusForbidden, "Administrators only", "This page is for administrators.", q.p.app.Prefix+"/account")
	case adminNeedLogin:
		if p == nil {
			return nil, q.toLogin(back)
		}
		d = denyPending // a sign-in whose code is still due
	}
	q.toPortal(d, back)
	return nil, nil
}

// adminDone ends a form post: back to the page on success, an error page
// naming what went wrong otherwise (storage errors stay in the log).
func (q *preq) adminDone(err error, back string) error {
	if err == nil {
		redirect(q.w, back, http.StatusSeeOther)
		return nil
	}
	switch status := userErrorStatus(err); status {
	case http.StatusNotFound:
		return q.message(status, "Not found", "No such user or session.", back)
	case http.StatusInternalServerError:
		return caddyhttp.Error(status, err)
	default:
		return q.message(status, "Request refused", err.Error(), back)
	}
}

// adminData is what the admin templates receive in pageData.Admin.
type adminData struct {
	Query    url.Values // the filters of the page, to fill its form
	Users    []userView
	User     *userView
	Sessions []sessionView
	Rows     []audit.Row
	Dead     int    // dead webhook deliveries
	Next     string // URL of the next page, "" on the last
	Error    string // what is wrong with the page's filters
	Self     string // the signed-in admin's user id
}

func (q *preq) adminPage(p *authcore.Principal, status int, name, title string, d adminData) error {
	d.Self = p.User.ID
	return q.page(status, name, pageData{Title: title, Wide: true, CSRF: q.rt.csrf.Token(sessionBinding(p)), Email: p.User.Email, Admin: d})
}

func (q *preq) adminHome(p *authcore.Principal) error {
	st, err := q.rt.audit.Stats(q.ctx())
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return q.adminPage(p, http.StatusOK, "admin", "Administration", adminData{Dead: st.Dead})
}

func (q *preq) adminUsers(p *authcore.Principal) error {
	d := adminData{Query: q.r.URL.Query()}
	res, err := q.adminUserList(adminPageSize)
	if status := userErrorStatus(err); err != nil && status != http.StatusInternalServerError {
		return q.message(status, "Bad request", err.Error(), q.p.app.Prefix+"/admin/users")
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	d.Users, d.Next = res.Users, q.adminNext("/admin/users", res.NextCursor)
	return q.adminPage(p, http.StatusOK, "admin_users", "Users", d)
}

func (q *preq) adminUser(p *authcore.Principal, id string) error {
	u, err := q.rt.auth.LookupUser(q.ctx(), id)
	if errors.Is(err, authcore.ErrNotFound) || errors.Is(err, authcore.ErrInvalidInput) {
		return q.message(http.StatusNotFound, "Not found", "No such user.", q.p.app.Prefix+"/admin/users")
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	sessions, err := q.liveSessions(u.ID, authcore.SessionID{})
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	page, err := q.rt.audit.Timeline(q.ctx(), audit.Query{SubjectID: u.ID, Limit: 20})
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	v := viewUser(u)
	if err := q.rt.addLocks(q.ctx(), &v); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	d := adminData{User: &v, Rows: page.Rows}
	for _, s := range sessions {
		d.Sessions = append(d.Sessions, viewSession(s, u))
	}
	return q.adminPage(p, http.StatusOK, "admin_user", u.Email, d)
}

func (q *preq) adminAudit(p *authcore.Principal) error {
	v := q.r.URL.Query()
	d := adminData{Query: v}
	bad := func(err error) error {
		d.Error = err.Error()
		return q.adminPage(p, http.StatusBadRequest, "admin_audit", "Audit", d)
	}
	query, err := audit.ParseQuery(v, q.rt.auth.Now())
	if err != nil {
		return bad(err)
	}
	if query.Limit == 0 {
		query.Limit = adminPageSize
	}
	page, err := q.rt.audit.Timeline(q.ctx(), query)
	if badTimelineQuery(err) {
		return bad(err)
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	d.Rows, d.Next = page.Rows, q.adminNext("/admin/audit", page.NextCursor)
	return q.adminPage(p, http.StatusOK, "admin_audit", "Audit", d)
}

// adminNext is the URL of the next page: this page's query with cursor;
// "" without a cursor (the last page).
func (q *preq) adminNext(page, cursor string) string {
	if cursor == "" {
		return ""
	}
	v := q.r.URL.Query()
	v.Set("cursor", cursor)
	return q.p.app.Prefix + page + "?" + v.Encode()
}
