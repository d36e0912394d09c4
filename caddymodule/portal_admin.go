package caddymodule

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// adminAPI serves /api/admin/* on the portal: JSON for admins, who must be
// in admin_group and have passed a second factor within
// admin_mfa_max_age. State-changing calls carry X-CSRF-Token (from GET
// /api/admin/csrf) and a same-origin Origin/Sec-Fetch-Site.
func (q *preq) adminAPI(path string) error {
	err := q.adminRoute(path)
	if err == nil {
		return nil
	}
	// Every answer of the API is JSON, errors problem+json (DESIGN §3);
	// the cause goes to Caddy's log, not to the client.
	status := http.StatusInternalServerError
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		status = he.StatusCode
	}
	q.p.logger.Error("admin API", zap.String("method", q.r.Method), zap.String("path", path), zap.Int("status", status), zap.Error(err))
	detail := http.StatusText(status)
	if status >= 500 {
		detail = "the request could not be completed; the server log says why"
	}
	writeProblem(q.w, status, statusReason(status), detail)
	return nil
}

// adminUserOps are the operations on one user that the API and the pages
// offer as POST users/<id>/<op>.
var adminUserOps = map[string]bool{"disable": true, "enable": true, "unlock": true, "signout": true, "mfa-reset": true, "delete": true}

// adminAllow is the Allow header of an admin endpoint, "" for none.
func adminAllow(path string, parts []string) string {
	switch {
	case path == "/csrf" || path == "/audit" || path == "/audit/webhooks/dead" || path == "/users",
		len(parts) == 2 && parts[0] == "users",
		len(parts) == 3 && parts[0] == "users" && parts[2] == "sessions":
		return "GET, HEAD"
	case path == "/audit/webhooks/dead/replay",
		len(parts) == 3 && parts[0] == "users" && (adminUserOps[parts[2]] || parts[2] == "groups"),
		len(parts) == 3 && parts[0] == "sessions" && parts[2] == "revoke":
		return "POST"
	}
	return ""
}

func (q *preq) adminRoute(path string) error {
	p, err := q.session()
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	switch q.adminDenial(p) {
	case adminNeedLogin:
		if p == nil && q.own.sessionConflict {
			// JSON, as every answer of the API, whatever Accept says.
			q.forgetConflicts()
			writeProblem(q.w, denyCookieConflict.status, denyCookieConflict.reason, denyCookieConflict.detail)
			return nil
		}
		writeProblem(q.w, http.StatusUnauthorized, "login_required", "sign in required")
		return nil
	case adminNeedGroup:
		q.auditAdminDenied(p)
		writeProblem(q.w, http.StatusForbidden, "admin_required", "this needs an administrator")
		return nil
	case adminNeedMFA:
		writeProblem(q.w, http.StatusUnauthorized, "mfa_required", "a recent second factor is required")
		return nil
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	get, post := q.r.Method == http.MethodGet || q.r.Method == http.MethodHead, q.r.Method == http.MethodPost
	var body []byte // of a POST
	// An unknown endpoint or method says so before the CSRF check, which
	// only a request that could change something needs.
	allow := adminAllow(path, parts)
	if allow == "" {
		writeProblem(q.w, http.StatusNotFound, "not_found", "no such admin endpoint")
		return nil
	}
	if allow == "POST" && !post || allow != "POST" && !get {
		q.w.Header().Set("Allow", allow)
		writeProblem(q.w, http.StatusMethodNotAllowed, "method_not_allowed", "this endpoint takes "+allow)
		return nil
	}
	if name := repeatedParam(q.r.URL.Query()); name != "" {
		// ?limit=1&limit=2 would read as the first; say so instead, as
		// a form with a field twice is refused.
		writeProblem(q.w, http.StatusBadRequest, "bad_query", fmt.Sprintf("the query parameter %q is given more than once", name))
		return nil
	}
	if !get {
		if !sameOrigin(q.r, q.origin, false) || !q.rt.csrf.Valid(sessionBinding(p), q.r.Header.Get("X-CSRF-Token")) {
			writeProblem(q.w, http.StatusForbidden, "csrf", "missing or invalid X-CSRF-Token, or a cross-site request")
			return nil
		}
		// Only users/<id>/groups takes a body, but one over the cap is
		// refused everywhere, as in the rest of the portal, not quietly
		// ignored.
		var err error
		if body, err = io.ReadAll(q.r.Body); isTooLarge(err) {
			writeProblem(q.w, http.StatusRequestEntityTooLarge, "too_large", "the body is larger than allowed")
			return nil
		} else if err != nil {
			writeProblem(q.w, http.StatusBadRequest, "bad_request", "the body could not be read")
			return nil
		}
	}
	switch {
	case get && path == "/csrf":
		return writeJSON(q.w, map[string]string{"csrf_token": q.rt.csrf.Token(sessionBinding(p))})
	case get && path == "/audit":
		query, err := audit.ParseQuery(q.r.URL.Query(), q.rt.auth.Now())
		if err != nil {
			writeProblem(q.w, http.StatusBadRequest, "bad_query", err.Error())
			return nil
		}
		page, err := q.rt.audit.Timeline(q.ctx(), query)
		if badTimelineQuery(err) {
			writeProblem(q.w, http.StatusBadRequest, "bad_query", err.Error())
			return nil
		}
		if err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
		}
		if page.Rows == nil {
			page.Rows = []audit.Row{}
		}
		return writeJSON(q.w, page)
	case get && path == "/audit/webhooks/dead":
		// cursor and limit read as for the timeline, whose filters do not
		// apply here; 500 a page unless limit says less, as the list
		// was before it had pages.
		v := q.r.URL.Query()
		query, err := audit.ParseQuery(url.Values{"cursor": v["cursor"], "limit": v["limit"]}, q.rt.auth.Now())
		if err != nil {
			writeProblem(q.w, http.StatusBadRequest, "bad_query", err.Error())
			return nil
		}
		page, err := q.rt.audit.DeadDeliveries(q.ctx(), query.Cursor, cmp.Or(query.Limit, audit.MaxLimit))
		if badTimelineQuery(err) {
			writeProblem(q.w, http.StatusBadRequest, "bad_query", err.Error())
			return nil
		}
		if err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
		}
		if page.Deliveries == nil {
			page.Deliveries = []audit.Delivery{}
		}
		return writeJSON(q.w, page)
	case post && path == "/audit/webhooks/dead/replay":
		n, err := replayDead(q.ctx(), q.rt, q.r.URL.Query().Get("hook"), q.r.URL.Query().Get("to"), q.r, p.User.ID)
		if errors.Is(err, audit.ErrUnknownWebhook) {
			writeProblem(q.w, http.StatusNotFound, "not_found", err.Error())
			return nil
		}
		if err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
		}
		return writeJSON(q.w, map[string]int{"replayed": n})
	case get && path == "/users":
		res, err := q.adminUserList(0)
		if err != nil {
			return q.adminError(err)
		}
		return writeJSON(q.w, struct {
			Users      []userView `json:"users"`
			NextCursor string     `json:"next_cursor,omitempty"` // none on the last page
		}{res.Users, res.NextCursor})
	case get && len(parts) == 2 && parts[0] == "users":
		// An id or an email, as the POSTs below take.
		u, err := q.rt.auth.LookupUser(q.ctx(), parts[1])
		if err != nil {
			return q.adminError(err)
		}
		v := viewUser(u)
		if err := q.rt.addLocks(q.ctx(), &v); err != nil {
			return q.adminError(err)
		}
		return writeJSON(q.w, v)
	case get && len(parts) == 3 && parts[0] == "users" && parts[2] == "sessions":
		// No such user is 404, as for users/<id>, not an empty list.
		u, err := q.rt.auth.LookupUser(q.ctx(), parts[1])
		if err != nil {
			return q.adminError(err)
		}
		sessions, err := q.liveSessions(u.ID, authcore.SessionID{})
		if err != nil {
			return q.adminError(err)
		}
		out := make([]sessionView, 0, len(sessions))
		for _, s := range sessions {
			out = append(out, viewSession(s, u))
		}
		return writeJSON(q.w, map[string]any{"sessions": out})
	case post && len(parts) == 3 && parts[0] == "users" && adminUserOps[parts[2]]:
		res, err := doUser(q.ctx(), q.rt, q.p.app.AdminGroup, userRequest{Op: parts[2], User: parts[1], Session: p.Session.ID}, q.r, p.User.ID)
		if err != nil {
			return q.adminError(err)
		}
		return writeJSON(q.w, res.User)
	case post && len(parts) == 3 && parts[0] == "users" && parts[2] == "groups":
		var in struct {
			Groups *[]string `json:"groups"`
		}
		if err := decodeStrictJSON(body, &in); err != nil || in.Groups == nil {
			if err == nil {
				err = errors.New(`no "groups"`)
			}
			writeProblem(q.w, http.StatusBadRequest, "bad_request", `the body must be {"groups": [...]}: every group the user is to have, [] for none (`+err.Error()+")")
			return nil
		}
		res, err := doUser(q.ctx(), q.rt, q.p.app.AdminGroup, userRequest{Op: "groups", User: parts[1], Groups: *in.Groups, Session: p.Session.ID}, q.r, p.User.ID)
		if err != nil {
			return q.adminError(err)
		}
		return writeJSON(q.w, res.User)
	case post && len(parts) == 3 && parts[0] == "sessions" && parts[2] == "revoke":
		id, _, err := q.adminRevoke(p, parts[1])
		if err != nil {
			return q.adminError(err)
		}
		return writeJSON(q.w, map[string]string{"revoked": id.String()})
	}
	// adminAllow and the cases above disagree: a bug, not the client's.
	return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("admin API: no handler for %s %s", q.r.Method, path))
}

// Why a request may not use the admin surface (adminDenial).
const (
	adminNeedLogin = "login_required" // not signed in, or a second factor pending
	adminNeedGroup = "admin_required" // not in admin_group
	adminNeedMFA   = "mfa_required"   // no second factor within admin_mfa_max_age
)

// adminDenial says why p may not use the admin pages and API, "" when it
// may: both need a full sign-in by a member of admin_group whose second
// factor is at most admin_mfa_max_age old.
func (q *preq) adminDenial(p *authcore.Principal) string {
	switch {
	case p == nil || p.Session.Pending:
		return adminNeedLogin
	case !p.User.InGroup(q.p.app.AdminGroup):
		return adminNeedGroup
	case !p.Session.MFA() || q.rt.auth.Now().Sub(p.Session.MFAAt) > q.p.app.adminMFAMaxAge():
		return adminNeedMFA
	}
	return ""
}

// auditAdminDenied writes the authz.denied row of a signed-in user
// outside admin_group refused by the admin pages or API (reason
// admin_required), as a gate's refusal is written.
func (q *preq) auditAdminDenied(p *authcore.Principal) {
	writeDenied(q.rt, q.r, p, deniedKey{user: p.User.ID, reason: adminNeedGroup}, q.rt.auth.Now(), q.p.logger)
}

// badTimelineQuery reports whether a Timeline error is the caller's (a
// cursor, limit or time it cannot use) rather than storage's.
func badTimelineQuery(err error) bool {
	return errors.Is(err, audit.ErrBadCursor) || errors.Is(err, audit.ErrBadLimit) || errors.Is(err, audit.ErrBadTime)
}

// adminUserList is the users list of the API and the admin page, from the
// query parameters q (search), cursor and limit. As in the audit
// timeline, limit is 1 to maxUserPage, and 0 or none means the default:
// defaultLimit, or maxUserPage when that is 0 (the API's).
func (q *preq) adminUserList(defaultLimit int) (*userResult, error) {
	v := q.r.URL.Query()
	limit := defaultLimit
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxUserPage {
			return nil, fmt.Errorf("%w: limit %q is not between 1 and %d", errUsage, s, maxUserPage)
		}
		if n > 0 {
			limit = n
		}
	}
	return doUser(q.ctx(), q.rt, q.p.app.AdminGroup, userRequest{Op: "list", After: v.Get("cursor"), Query: v.Get("q"), Limit: limit}, q.r, "")
}

// adminRevoke ends a session as the admin p and writes session.revoked
// (actor_type admin). It returns the session id and its user's id; an
// id that names no session, or one ended or replaced meanwhile, is
// ErrNotFound.
func (q *preq) adminRevoke(p *authcore.Principal, sid string) (authcore.SessionID, string, error) {
	id, err := authcore.ParseSessionID(sid)
	if err != nil {
		return id, "", authcore.ErrNotFound
	}
	unlock, err := stillAdmin(q.ctx(), q.rt, q.p.app.AdminGroup, p.User.ID, p.Session.ID)
	defer unlock()
	if err != nil {
		return id, "", err
	}
	s, err := q.rt.store.GetSession(q.ctx(), id)
	if err != nil {
		return id, "", err
	}
	// One transaction with its row. Ended meanwhile by another request,
	// it has that one's row; replaced meanwhile (a second factor passed
	// in it), the session that stands is another: neither is revoked
	// here.
	ev := event{action: "session.revoked", actor: p.User.ID, actorType: audit.ActorAdmin, subject: s.UserID, outcome: "success",
		meta: map[string]string{"session": id.String()}}
	ended, err := q.endSession(id, ev)
	if err != nil {
		return id, "", err
	}
	if !ended {
		return id, "", fmt.Errorf("%w: %s", authcore.ErrNotFound, sessionGone)
	}
	return id, s.UserID, nil
}

func (q *preq) adminError(err error) error {
	status := userErrorStatus(err)
	if status == http.StatusInternalServerError {
		return caddyhttp.Error(status, err)
	}
	reason := statusReason(status)
	if errors.Is(err, errNoLongerAdmin) {
		reason = "admin_required" // as when the request came in so
	}
	writeProblem(q.w, status, reason, err.Error())
	return nil
}

// statusReason is the problem reason of a plain status: "not_found".
func statusReason(status int) string {
	return strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_")
}

// sessionView is a session as shown to admins.
type sessionView struct {
	ID        string    `json:"id"`
	UserID    string    `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
	LastSeen  time.Time `json:"last_seen"`
	ExpiresAt time.Time `json:"expires_at"`
	AMR       []string  `json:"amr"`
	Pending   bool      `json:"pending"`
	IP        string    `json:"ip"`
	UserAgent string    `json:"user_agent"`
	Host      string    `json:"host,omitempty"`
	// Plain is a session signed in or renewed over plain HTTP, whose
	// cookie anyone on the network could read; it is not valid on HTTPS.
	Plain bool `json:"plain,omitempty"`
}

// viewSession shows s, a session of u, pending as the gate treats it.
func viewSession(s *authcore.Session, u *authcore.User) sessionView {
	return sessionView{ID: s.ID.String(), UserID: s.UserID, CreatedAt: s.CreatedAt, LastSeen: s.LastSeen,
		ExpiresAt: s.ExpiresAt, AMR: s.AMR, Pending: s.PendingFor(u), IP: s.IP, UserAgent: s.UserAgent, Host: s.Host, Plain: s.Plain}
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}
