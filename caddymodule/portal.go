package caddymodule

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

func init() {
	caddy.RegisterModule(Portal{})
}

// maxFormBody caps portal form and JSON bodies.
const maxFormBody = 64 << 10

// Portal serves the sign-in portal under the app's prefix (default
// /.sigra): login, logout, account, JWKS and health. Requests outside the
// prefix pass through, with forged identity headers removed.
type Portal struct {
	// SiteScope is read from the site's blocks by the Caddyfile adapter.
	SiteScope

	app     *App
	reads   *pathReads // the patterns of every gate and portal of the config
	logger  *zap.Logger
	origins *originCache
	// formTargets are extra CSP form-action sources (allowed redirect
	// hosts), each with a leading space: for HTTPS sites, and for plain
	// HTTP ones, which may also redirect over http:// (CleanRedirect).
	formTargets, formTargetsHTTP []string
}

// formActions are the extra CSP form-action sources of a page served
// over HTTPS (secure) or plain HTTP.
func (p *Portal) formActions(secure bool) []string {
	if secure {
		return p.formTargets
	}
	return p.formTargetsHTTP
}

// CaddyModule returns the Caddy module information.
func (Portal) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sigra_portal",
		New: func() caddy.Module { return new(Portal) },
	}
}

// Provision finds the sigra app.
func (p *Portal) Provision(ctx caddy.Context) error {
	app, err := sigraApp(ctx)
	if err != nil {
		return err
	}
	p.app = app
	p.logger = app.logger.Named("portal") // under sigra, as DESIGN (11) has it
	p.origins = new(originCache)
	p.setFormTargets(app.AllowedRedirectHosts)
	if p.reads, err = app.gateReads.add([][]string{p.SitePaths}, p.SiteRegexps, p.SiteStrips); err != nil {
		return fmt.Errorf("sigra_portal: %v", err)
	}
	return nil
}

// setFormTargets makes the allowed redirect hosts form-action sources:
// an HTTPS page may only post to them over HTTPS, as it may only
// redirect there over HTTPS.
func (p *Portal) setFormTargets(hosts []string) {
	for _, h := range hosts {
		p.formTargets = append(p.formTargets, " https://"+h)
		p.formTargetsHTTP = append(p.formTargetsHTTP, " https://"+h, " http://"+h)
	}
}

// sigraApp loads the sigra app (with defaults if the Caddyfile has no
// global sigra block).
func sigraApp(ctx caddy.Context) (*App, error) {
	v, err := ctx.App("sigra")
	if err != nil {
		return nil, fmt.Errorf("loading sigra app: %w", err)
	}
	return v.(*App), nil
}

// preq is one portal request being served.
type preq struct {
	w      http.ResponseWriter
	r      *http.Request
	rt     *runtime
	p      *Portal
	own    *ownCookies // the gateway's cookies, no longer in r.Header
	origin string
	secure bool
	nonce  string
}

// portalPath reports whether path is the portal's (prefix or below it)
// and returns the part after the prefix.
func portalPath(path, prefix string) (sub string, ok bool) {
	sub, ok = strings.CutPrefix(path, prefix)
	return sub, ok && (sub == "" || sub[0] == '/')
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Every request of the site passes here before any gate's matcher
	// runs: a path the gates and the app could read apart stops here.
	if why := pathRefusal(r.URL.Path, p.app.pathParams); why != "" {
		return refusePath(w, r, p.app.Prefix, why)
	}
	if why := looseRefusal(p.reads, r.URL.Path); why != "" {
		return refusePath(w, r, p.app.Prefix, why)
	}
	stripIdentity(r, p.app.remoteAliases)
	secure := isSecure(r)
	own := takeOwnCookies(r, secure)
	sub, ok := portalPath(r.URL.Path, p.app.Prefix)
	if !ok {
		return next.ServeHTTP(guardCookies(w, r, false), r)
	}
	rt := p.app.runtime(r.Context())
	if rt == nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("sigra is not started"))
	}
	tw := &writeTracker{ResponseWriter: w}
	q := &preq{w: tw, r: r, rt: rt, p: p, own: own, origin: p.origins.origin(r), secure: secure, nonce: newNonce()}
	setPageHeaders(w.Header(), q.nonce, p.formActions(secure))
	// Every portal body is capped, whatever the method: nothing here
	// reads more than a form. One declared over the cap is refused
	// before a byte is read, not after waiting for bytes a client may
	// never send; the connection then closes rather than wait for them.
	if r.ContentLength > maxFormBody {
		if r.ProtoMajor == 1 { // HTTP/2 and 3 have no such header: their streams end alone
			w.Header().Set("Connection", "close")
		}
		r.Body = tooLargeBody{}
	} else {
		r.Body = http.MaxBytesReader(tw, r.Body, maxFormBody)
	}
	err := q.serve(sub)
	if status := serverErrorStatus(err); status != 0 && !tw.wrote && !hasErrorRoutes(r, err) {
		// Caddy would answer with an empty body, and log the cause under
		// its own name: log it under Sigra's, where an operator watching
		// sigra looks, and say what happened, a page to a browser and
		// problem+json to a script, as the portal's other answers.
		p.logger.Error("portal request failed", zap.Int("status", status), zap.String("method", r.Method),
			zap.String("uri", r.RequestURI), zap.Error(err))
		if !wantsHTML(r) {
			writeProblem(tw, status, statusReason(status), "the server could not complete this request; the cause is in the server's log")
			return nil
		}
		return q.message(status, "Something went wrong", "The server could not complete this request. Try again in a moment; if it goes on, tell the site's administrator.", "")
	}
	return err
}

// tooLargeBody stands for a body declared over maxFormBody: every read
// fails as http.MaxBytesReader's would at the cap.
type tooLargeBody struct{}

func (tooLargeBody) Read([]byte) (int, error) { return 0, &http.MaxBytesError{Limit: maxFormBody} }
func (tooLargeBody) Close() error             { return nil }

// serverErrorStatus is the 5xx status of a handler's error, 0 for none
// or for another status.
func serverErrorStatus(err error) int {
	if err == nil {
		return 0
	}
	status := http.StatusInternalServerError
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		status = he.StatusCode
	}
	if status < 500 {
		return 0
	}
	return status
}

// hasErrorRoutes reports whether an error route of the request's server
// takes the request with err (the site's handle_errors: the Caddyfile
// puts every site's into its server, matched by host, and maybe by the
// error's status), which answers err as the operator wrote it.
func hasErrorRoutes(r *http.Request, err error) bool {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil || srv.Errors == nil || len(srv.Errors.Routes) == 0 {
		return false
	}
	if !errors.As(err, new(caddyhttp.HandlerError)) {
		err = caddyhttp.Error(http.StatusInternalServerError, err)
	}
	// The error's placeholders, as Caddy sets them before its error
	// routes run (it sets them again then).
	r = srv.Errors.WithError(r, err)
	for _, route := range srv.Errors.Routes {
		if ok, merr := route.MatcherSets.AnyMatchWithError(r); ok && merr == nil {
			return true
		}
	}
	return false
}

// writeTracker remembers whether anything of the answer was written.
type writeTracker struct {
	http.ResponseWriter
	wrote bool
}

func (t *writeTracker) WriteHeader(status int) {
	if status >= 200 {
		t.wrote = true
	}
	t.ResponseWriter.WriteHeader(status)
}

func (t *writeTracker) Write(p []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (t *writeTracker) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// serve answers a portal path (sub, below the prefix).
func (q *preq) serve(sub string) error {
	switch sub {
	case "/login":
		return q.route(q.loginPage, q.loginSubmit)
	case "/logout":
		return q.route(q.logoutPage, q.logoutSubmit)
	case "", "/", "/account":
		return q.route(q.accountPage, nil)
	case "/account/sessions/revoke":
		return q.route(nil, q.revokeSession)
	case "/account/sessions/revoke-others":
		return q.route(nil, q.revokeOtherSessions)
	case "/mfa":
		return q.route(q.mfaPage, q.mfaSubmit)
	case "/account/delete":
		return q.route(q.deletePage, q.deleteSubmit)
	case "/account/password":
		return q.route(q.passwordPage, q.passwordSubmit)
	case "/account/totp":
		return q.route(q.totpPage, q.totpSubmit)
	case "/account/totp/remove":
		return q.route(nil, q.totpRemove)
	case "/account/recovery-codes":
		return q.route(nil, q.recoveryRegenerate)
	case "/jwks.json":
		return q.route(q.jwks, nil)
	case "/healthz":
		return q.route(q.healthz, nil)
	}
	// Elsewhere than admin_hosts, the admin surface is not there at all.
	if q.p.app.adminHost(requestHost(q.r)) {
		if rest, ok := strings.CutPrefix(sub, "/api/admin"); ok && (rest == "" || rest[0] == '/') {
			return q.adminAPI(rest)
		}
		if rest, ok := strings.CutPrefix(sub, "/admin"); ok && (rest == "" || rest[0] == '/') {
			return q.adminUI(rest)
		}
	}
	if sub == "/api" || strings.HasPrefix(sub, "/api/") {
		// An API client reads problem+json, here as on admin_hosts.
		writeProblem(q.w, http.StatusNotFound, "not_found", "no such endpoint")
		return nil
	}
	return q.message(http.StatusNotFound, "Not found", "There is no such page.", "")
}

// route dispatches by method: GET and HEAD never change state; POST is
// checked for origin and body size before its handler runs.
func (q *preq) route(get, post func() error) error {
	switch q.r.Method {
	case http.MethodGet, http.MethodHead:
		if get != nil {
			return get()
		}
	case http.MethodPost:
		if post != nil {
			if !sameOrigin(q.r, q.origin, true) {
				return q.message(http.StatusForbidden, "Request refused", "This form was sent from another site.", "")
			}
			// Every portal form is urlencoded. ParseForm would skip any
			// other body unread (and so unmeasured): read it to the cap
			// for a 413, else say what the form must be.
			if mt, _, _ := mime.ParseMediaType(q.r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
				if _, err := io.Copy(io.Discard, q.r.Body); isTooLarge(err) {
					return q.message(http.StatusRequestEntityTooLarge, "Request too large", "The form is larger than allowed.", "")
				}
				return q.message(http.StatusUnsupportedMediaType, "Unsupported form", "This form must be sent as application/x-www-form-urlencoded.", "")
			}
			if err := q.r.ParseForm(); err != nil {
				if isTooLarge(err) {
					return q.message(http.StatusRequestEntityTooLarge, "Request too large", "The form is larger than allowed.", "")
				}
				return q.message(http.StatusBadRequest, "Bad request", "The form could not be read.", "")
			}
			// No portal form has a field twice: which of two emails, or
			// of two passwords, was meant is not for the portal to guess.
			if name := repeatedParam(q.r.PostForm); name != "" {
				return q.message(http.StatusBadRequest, "Bad request", fmt.Sprintf("The form has the field %q more than once.", name), "")
			}
			return post()
		}
	}
	allow := []string{}
	if get != nil {
		allow = append(allow, "GET", "HEAD")
	}
	if post != nil {
		allow = append(allow, "POST")
	}
	q.w.Header().Set("Allow", strings.Join(allow, ", "))
	return q.message(http.StatusMethodNotAllowed, "Method not allowed", "This page does not take that method.", "")
}

func (q *preq) page(status int, name string, d pageData) error {
	d.Nonce, d.Prefix = q.nonce, q.p.app.Prefix
	if d.Title == "" {
		d.Title = "Sign in"
	}
	return renderPage(q.w, status, name, d)
}

func (q *preq) message(status int, title, msg, link string) error {
	return q.page(status, "message", pageData{Title: title, Message: msg, Link: link})
}

func (q *preq) ctx() context.Context { return q.r.Context() }

// rd returns the safe return URL from the request (query or form).
func (q *preq) rd() string {
	return authcore.CleanRedirect(q.param("rd"), requestHost(q.r), q.secure, q.p.app.AllowedRedirectHosts)
}

// givenRD is rd() when the request names one, else "": for pages that
// go back to the account, not to "/", when nobody asked for a place.
func (q *preq) givenRD() string {
	if q.param("rd") == "" {
		return ""
	}
	return q.rd()
}

// param returns a request parameter from the query string or, on a POST,
// also from the urlencoded body that route has parsed. Never FormValue:
// it parses a multipart body on any method, GET included, and behind
// Caddy the temporary files of large parts outlive the request (net/http
// removes them only from its own copy of it).
func (q *preq) param(name string) string {
	if q.r.Form == nil {
		_ = q.r.ParseForm() // GET and HEAD: the query string only
	}
	return q.r.Form.Get(name)
}

// session returns the signed-in (or pending) principal of the request, or
// nil. Storage errors are returned.
func (q *preq) session() (*authcore.Principal, error) {
	token := q.own.session
	if token == "" {
		return nil, nil
	}
	p, err := q.rt.auth.AuthenticateOn(q.ctx(), token, requestHost(q.r), q.secure, q.rt.auth.Now())
	if errors.Is(err, authcore.ErrNoSession) {
		return nil, nil
	}
	return p, err
}

// anonBinding returns the pre-session CSRF binding, setting the cookie
// that carries it when absent.
func (q *preq) anonBinding() string {
	v := q.own.csrf
	if len(v) < 16 || len(v) > 64 {
		_, id := authcore.NewToken()
		v = id.String()
		http.SetCookie(q.w, &http.Cookie{
			Name: csrfCookieName(q.secure), Value: v, Path: "/", HttpOnly: true,
			Secure: q.secure, SameSite: http.SameSiteLaxMode,
		})
	}
	return "a:" + v
}

func sessionBinding(p *authcore.Principal) string { return "s:" + p.SessionID }

func (q *preq) loginPage() error {
	p, err := q.session()
	if err != nil {
		// The form is the way out of a session that cannot be read (a
		// damaged record): show it, as to nobody signed in.
		q.p.logger.Error("reading the session of a sign-in page", zap.Error(err))
		p = nil
	}
	// Already signed in and on the way somewhere: go there. Without a
	// return URL the form shows, to sign in as someone else.
	if p != nil && !p.Session.Pending && q.param("rd") != "" {
		redirect(q.w, q.rd(), http.StatusSeeOther)
		return nil
	}
	q.forgetConflicts() // before anonBinding sets a form cookie, which the browser keeps
	d := pageData{CSRF: q.rt.csrf.Token(q.anonBinding()), RD: q.rd()}
	if q.own.sessionConflict || q.own.csrfConflict {
		d.Error = cookieConflictText
	}
	return q.page(http.StatusOK, "login", d)
}

// signInChecked runs when a sign-in's password has passed, before its
// session is made: tests set up a second factor there, as an owner may
// while an attacker's password is checked.
var signInChecked = func(userID string) {}

// cookieConflictText explains a request with two session (or form)
// cookies.
const cookieConflictText = "Your browser sent two different sign-in cookies for this page: another site on this host set one. " +
	"It has been asked to forget both: sign in again. If this page comes back, clear this site's cookies."

func (q *preq) loginSubmit() error {
	binding := "a:" + q.own.csrf
	email := q.r.PostFormValue("email")
	rerender := func(status int, msg string) error {
		return q.page(status, "login", pageData{CSRF: q.rt.csrf.Token(q.anonBinding()), RD: q.rd(), Error: msg, Email: email})
	}
	if authcore.NormalizeHost(requestHost(q.r)) == "" {
		// A session is bound to the site it was made on; one made for
		// no site (HTTP/1.0 without Host, on a catch-all site) would be
		// taken for one from before sessions were bound: good on every
		// site.
		return rerender(http.StatusBadRequest, "This request names no site (it has no Host header), so nobody can be signed in by it.")
	}
	// anonBinding never binds a token to a missing or odd cookie.
	if n := len(q.own.csrf); n < 16 || n > 64 || !q.rt.csrf.Valid(binding, q.r.PostFormValue("csrf_token")) {
		if q.own.csrfConflict {
			// Another site's form cookie comes with ours every time:
			// "try again" would fail for ever, unless both are forgotten.
			q.forgetConflicts()
			return rerender(http.StatusForbidden, cookieConflictText)
		}
		return rerender(http.StatusForbidden, "The form expired. Please try again.")
	}
	u, att, err := q.checkPassword(email, q.r.PostFormValue("password"), nil)
	if errors.Is(err, authcore.ErrBusy) {
		q.w.Header().Set("Retry-After", "5")
		return rerender(busyStatus(err), busyMessage)
	}
	if err != nil {
		return err
	}
	if u == nil {
		return rerender(http.StatusUnauthorized, "Incorrect email or password.")
	}
	signInChecked(u.ID)
	// The password's count resets; the codes' has a key of its own.
	if err := att.Succeed(q.ctx(), true); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	// A new session at every sign-in; the old one, if any, ends: signed
	// out, as a sign-out does it (its row once, by whichever of two
	// twin forms ended it), before anyone is signed in anew. One that
	// cannot be read (a damaged record) is no session anyone can use,
	// and must not keep its owner from signing in again.
	old, err := q.session()
	if err != nil {
		// Ended all the same, by its id, without a row: whose it was
		// cannot be read.
		q.p.logger.Error("reading the session a sign-in replaces; ending it", zap.Error(err))
		if id, ok := authcore.TokenID(q.own.session); ok {
			if _, err := q.rt.auth.EndSession(q.ctx(), id); err != nil {
				return caddyhttp.Error(http.StatusInternalServerError, err)
			}
		}
	}
	if old != nil {
		if _, err := q.endSession(old.Session.ID, event{action: "auth.logout", actor: old.User.ID, subject: old.User.ID, outcome: "success",
			meta: map[string]string{"reason": "signed_in_again", "session": old.Session.ID.String()}}); err != nil {
			return err
		}
	}
	// The right password is a row even when a second factor is still
	// due: a password that works is what an operator must learn of. The
	// session and its row are one commit: nobody is signed in without
	// the row that says so, even if Caddy dies. A second factor set up
	// while the password was checked makes the session anew, waiting for
	// it (and its row auth.login.pending), from the user as stored now.
	var token, target string
	var sess *authcore.Session
	for tries := 0; ; tries++ {
		token, sess = q.rt.auth.NewSessionRecord(u, []string{authcore.AMRPassword},
			authcore.ClientMeta{IP: clientIP(q.r), UserAgent: q.r.UserAgent(), Host: requestHost(q.r), Secure: q.secure})
		target = q.rd()
		row := event{action: "auth.login.success", actor: u.ID, subject: u.ID, outcome: "success",
			meta: map[string]string{"method": "password"}}
		if sess.Pending {
			target = portalURL(q.p.app.Prefix, "/mfa", target)
			row.action = "auth.login.pending"
		}
		err := q.auditWith(row, func(commit authcore.Commit) error { return q.rt.auth.StartSessionWith(sess, commit) })
		if err == nil {
			break
		}
		if !errors.Is(err, authcore.ErrFactorsChanged) || tries == 2 {
			return err
		}
		now, err := q.rt.auth.LookupUser(q.ctx(), u.ID)
		if err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
		}
		if now.SessionEpoch != u.SessionEpoch || now.PasswordHash != u.PasswordHash || now.Disabled {
			// The password was checked against what changed meanwhile (a
			// new password, a reset that ended every session): a session
			// made now would carry the new epoch and outlive that. The
			// password worked, which the operator must learn of.
			if err := q.audit(event{action: "auth.login.failure", actor: u.ID, subject: u.ID, outcome: "failure",
				meta: map[string]string{"method": "password", "reason": "account_changed"}}); err != nil {
				return err
			}
			q.rt.login("password", "failure")
			return rerender(http.StatusConflict, "Your account changed while you were signing in. Please sign in again.")
		}
		u = now
	}
	q.setSessionCookie(token)
	q.rt.login("password", map[bool]string{true: "pending", false: "success"}[sess.Pending])
	redirect(q.w, target, http.StatusSeeOther)
	return nil
}

// checkPassword checks a password under regulation, as sign-in does: one
// counter per account whatever was typed, one per client IP. The
// password is checked even while the account is banned, so the answer
// and its timing are the same as for a wrong password (not while the
// client's address is: CheckPasswordFor). A failure is counted, written
// as auth.login.failure (and auth.lockout when it starts a ban), waited
// out, and returned as a nil user. ErrBusy and ErrCrowded (the password
// was never checked, nothing counted) and storage errors come back as
// errors. reauthOf, when not nil, is the signed-in user whose password
// this re-checks: it is counted under the re-check key of that session,
// not the sign-in's, and the failure row's metadata says step "reauth"
// (and names the session).
func (q *preq) checkPassword(email, password string, reauthOf *authcore.Principal) (*authcore.User, *authcore.Attempt, error) {
	var key string
	if reauthOf != nil {
		key = authcore.UserReauthKey(reauthOf.User.ID, reauthOf.SessionID)
	} else {
		var err error
		if key, err = q.rt.auth.AccountKey(q.ctx(), email); err != nil {
			return nil, nil, caddyhttp.Error(http.StatusInternalServerError, err)
		}
	}
	warnLooseProxies(q.r, q.p.logger)
	warnNoClientAddress(q.r, q.p.logger)
	att, err := q.rt.reg.Begin(q.ctx(), key, clientIP(q.r))
	if err != nil {
		return nil, nil, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	u, err := q.rt.auth.CheckPasswordFor(q.ctx(), att, email, password)
	if errors.Is(err, authcore.ErrBusy) {
		_ = att.Abandon(q.ctx())
		return nil, nil, err
	}
	if !att.Allowed() || errors.Is(err, authcore.ErrInvalidCredentials) {
		res, ferr := att.Fail(q.ctx())
		if ferr != nil {
			return nil, nil, caddyhttp.Error(http.StatusInternalServerError, ferr)
		}
		// The account the key counts for, if any: a user id typed as the
		// email is no account's (LookupUser would find it by id).
		subject, _ := authcore.AccountKeyUser(key)
		// A re-check is no sign-in: its own lockout scope and metric.
		scope, counted := "account", "password"
		if reauthOf != nil {
			scope, counted = "reauth", "reauth"
		}
		evs := lockoutEvents(subject, res, scope)
		reason := "invalid_credentials"
		switch {
		case !att.Allowed():
			reason = "locked"
		case errors.Is(err, authcore.ErrAccountDisabled):
			reason = "disabled"
		}
		meta := map[string]string{"method": "password", "reason": reason}
		if reauthOf != nil {
			meta["step"], meta["session"] = "reauth", reauthOf.SessionID
		}
		undo, due := q.refusalDue(att, "auth.login.failure")
		if due {
			evs = append(evs, event{action: "auth.login.failure", subject: subject, outcome: "failure", meta: meta})
		}
		if err := q.audit(evs...); err != nil {
			undo()
			return nil, nil, err
		}
		q.rt.login(counted, map[bool]string{true: "failure", false: "locked"}[att.Allowed()])
		wait(q.ctx(), res.Delay)
		return nil, att, nil
	}
	if err != nil {
		return nil, nil, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return u, att, nil
}

// endSession ends the session id and writes ev, its auth.logout or
// session.revoked row, in one commit, and reports whether this call
// ended it. A session ended already (the same form sent twice, a twin
// tab), or replaced by a new one (a second factor passed), is not
// ended here, and writes no row. When the row cannot be written the
// session ends all the same, without it: a sign-out or the revocation
// of a stolen session must not wait for the audit log; the answer is
// then the error.
func (q *preq) endSession(id authcore.SessionID, ev event) (ended bool, _ error) {
	refused, err := q.rt.changeWithRow(q.ctx(), rowFor(q.r, ev), func(commit authcore.Commit) error {
		return q.rt.auth.EndSessionWith(id, commit)
	})
	switch {
	case err != nil:
		q.p.logger.Error("writing the audit row of a session's end failed; ending the session without it", zap.String("action", ev.action), zap.Error(err))
		if _, eerr := q.rt.auth.EndSession(q.ctx(), id); eerr != nil {
			return false, caddyhttp.Error(http.StatusInternalServerError, eerr)
		}
		return true, caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s: %w", ev.action, err))
	case errors.Is(refused, authcore.ErrNotFound):
		return false, nil
	case refused != nil:
		return false, caddyhttp.Error(http.StatusInternalServerError, refused)
	}
	return true, nil
}

// sessionGone is what a revocation says of a session that ended, or was
// replaced, before it: its user may have passed a second factor since
// the list was shown, and the session that stands has another id.
const sessionGone = "That session has ended, or it changed (a second factor passed in it gives it a new entry): check the list again."

func (q *preq) setSessionCookie(token string) {
	http.SetCookie(q.w, &http.Cookie{
		Name: sessionCookieName(q.secure), Value: token, Path: "/", HttpOnly: true, Secure: q.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: int(q.rt.auth.Config().Lifetime / time.Second),
	})
}

func (q *preq) clearSessionCookie() {
	http.SetCookie(q.w, &http.Cookie{
		Name: sessionCookieName(q.secure), Value: "", Path: "/", HttpOnly: true, Secure: q.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: -1,
	})
}

func (q *preq) logoutPage() error {
	p, err := q.session()
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if p == nil && q.own.sessionConflict {
		// Two session cookies (one set by another site on this host):
		// the real session may well go on; "not signed in" would be
		// untrue.
		return q.cookieConflict()
	}
	if p == nil && wantsHTML(q.r) {
		// Signed out already (an app's "Sign out" link after the session
		// ended, say): asking for the password first, to then offer to
		// sign out, would make no sense.
		return q.message(http.StatusOK, "Signed out", "You are not signed in.", portalURL(q.p.app.Prefix, "/login", q.rd()))
	}
	if p == nil {
		q.toPortal(denyLogin, originalURI(q.r)) // 401, as every page to an API client
		return nil
	}
	return q.page(http.StatusOK, "logout", pageData{Title: "Sign out", CSRF: q.rt.csrf.Token(sessionBinding(p)), RD: q.rd(), Email: p.User.Email})
}

func (q *preq) logoutSubmit() error {
	p, err := q.session()
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if p == nil && q.own.sessionConflict {
		// As on the page: which of the two sessions the form was for is
		// not for the portal to guess, and answering "signed out" while
		// it goes on would be untrue. Clearing only our cookie would
		// leave the other one, another site's, in its place: both go.
		return q.cookieConflict()
	}
	if p == nil {
		q.clearSessionCookie()
		redirect(q.w, q.p.app.Prefix+"/login", http.StatusSeeOther)
		return nil
	}
	if !q.rt.csrf.Valid(sessionBinding(p), q.r.PostFormValue("csrf_token")) {
		return q.message(http.StatusForbidden, "Request refused", "The form expired. Please go back and try again.", q.p.app.Prefix+"/logout")
	}
	// The session, as X-Sigra-Session named it: an app holding a socket
	// open for it can close it on this row.
	if _, err := q.endSession(p.Session.ID, event{action: "auth.logout", actor: p.User.ID, subject: p.User.ID, outcome: "success",
		meta: map[string]string{"session": p.Session.ID.String()}}); err != nil {
		return err
	}
	q.clearSessionCookie()
	// The app's pages the browser keeps (Cache-Control: private) would
	// show again on the back button, on a shared computer too: the
	// browser drops them (on HTTPS and localhost; others ignore it).
	q.w.Header().Set("Clear-Site-Data", `"cache"`)
	redirect(q.w, portalURL(q.p.app.Prefix, "/login", q.rd()), http.StatusSeeOther)
	return nil
}

// signedIn returns the fully signed-in principal, or sends the browser
// to sign in (toLogin) or to its second factor, to come back to this
// page, and returns nil.
func (q *preq) signedIn() (*authcore.Principal, error) {
	return q.signedInBack(originalURI(q.r))
}

// signedInBack is signedIn for a form, whose address may take no GET:
// the browser comes back to back, the form's page, once signed in.
func (q *preq) signedInBack(back string) (*authcore.Principal, error) {
	p, err := q.session()
	if err != nil {
		return nil, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if p == nil {
		return nil, q.toLogin(back)
	}
	if p.Session.Pending {
		q.toPortal(denyPending, back)
		return nil, nil
	}
	return p, nil
}

// repeatedParam names a parameter of v given more than once ("" if
// none): which of two values was meant is not for the portal to guess.
func repeatedParam(v url.Values) string {
	for name, vs := range v {
		if len(vs) > 1 {
			return name
		}
	}
	return ""
}

// toLogin answers a page that needs a session when the request has
// none: toPortal(denyLogin), unless it carried two different session
// cookies (another site on this host set one for this path). The
// sign-in page, on a path the other cookie is not sent to, would find
// the session and send the browser back here, round and round with
// nothing said; a script told 401 would send it there too. It is told
// why instead, as at the gate and the sign-in and sign-out pages.
func (q *preq) toLogin(back string) error {
	if q.own.sessionConflict {
		return q.cookieConflict()
	}
	q.toPortal(denyLogin, back)
	return nil
}

// cookieConflict answers a request with two different session cookies
// that is signed in as nobody for it: 400, with both cookies forgotten
// (forgetCookies), saying to sign in again; as problem+json
// (cookie_conflict) to a client that does not ask for HTML, as the gate
// answers it.
func (q *preq) cookieConflict() error {
	q.forgetConflicts()
	if !wantsHTML(q.r) {
		writeProblem(q.w, denyCookieConflict.status, denyCookieConflict.reason, denyCookieConflict.detail)
		return nil
	}
	return q.message(http.StatusBadRequest, "Sign-in cookies in conflict", cookieConflictText, "")
}

// forgetConflicts has the browser forget the session cookies, and the
// form cookies, of which the request carried two different ones
// (forgetCookies). A form cookie set after this in the same answer is
// kept: the browser takes the lines in turn.
func (q *preq) forgetConflicts() {
	if q.own.sessionConflict {
		forgetCookies(q.w, q.r, sessionCookieName(q.secure), q.secure)
	}
	if q.own.csrfConflict {
		forgetCookies(q.w, q.r, csrfCookieName(q.secure), q.secure)
	}
}

// toPortal answers a request that needs a sign-in (denyLogin) or a
// second factor (denyPending: a sign-in's code still due; denyMFA: a
// recent one) first: a browser goes to that page, back to back after; a
// client that does not ask for HTML gets 401 problem+json with the
// reason a gate gives (DESIGN §3).
func (q *preq) toPortal(d *denial, back string) {
	toSignIn(q.w, q.r, q.p.app.Prefix, d, back, http.StatusSeeOther)
}

// anySession returns the request's session, pending or signed in, or
// sends the browser to sign in (toLogin) and returns nil: then back to
// where the request was going (its rd: a code sent after the sign-in
// waiting for it ended goes on to the page the sign-in was for), or else
// to itself.
func (q *preq) anySession() (*authcore.Principal, error) {
	p, err := q.session()
	if err != nil {
		return nil, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if p == nil {
		return nil, q.toLogin(cmp.Or(q.givenRD(), originalURI(q.r)))
	}
	return p, nil
}

// formPrincipal returns the signed-in principal of a form post whose
// CSRF token is valid. Otherwise it has answered (a redirect to sign in,
// or a refusal linking back) and returns nil.
func (q *preq) formPrincipal(back string) (*authcore.Principal, error) {
	p, err := q.signedInBack(back)
	if p == nil || err != nil {
		return nil, err
	}
	if !q.rt.csrf.Valid(sessionBinding(p), q.r.PostFormValue("csrf_token")) {
		return nil, q.message(http.StatusForbidden, "Request refused", "The form expired. Please go back and try again.", back)
	}
	return p, nil
}

func (q *preq) accountPage() error {
	p, err := q.signedIn()
	if p == nil || err != nil {
		return err
	}
	sessions, err := q.liveSessions(p.User.ID, p.Session.ID)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	shown, more := listedSessions(sessions, p.Session.ID, p.User)
	return q.page(http.StatusOK, "account", pageData{
		Title: "Your account", Wide: true, CSRF: q.rt.csrf.Token(sessionBinding(p)),
		User: p.User, Sessions: shown, MoreSessions: more, CurrentSession: p.SessionID, IsAdmin: p.User.InGroup(q.p.app.AdminGroup) && q.p.app.adminHost(requestHost(q.r)),
	})
}

// liveSessions lists the sessions of the user with id user, leaving out
// those that have ended and are not swept yet; keep (the request's own)
// stays whatever its times say.
func (q *preq) liveSessions(user string, keep authcore.SessionID) ([]*authcore.Session, error) {
	sessions, err := q.rt.store.UserSessions(q.ctx(), user)
	if err != nil {
		return nil, err
	}
	cfg, now := q.rt.auth.Config(), q.rt.auth.Now()
	return slices.DeleteFunc(sessions, func(s *authcore.Session) bool {
		cfg.Bound(s)
		return s.ID != keep && s.Expired(now, cfg.Idle+cfg.TouchInterval)
	}), nil
}

// accountSessionsListed is how many sessions the account page lists. A
// user may hold any number (each sign-in makes one), and a page listing
// thousands helps nobody: "Sign out all other sessions" ends the rest.
const accountSessionsListed = 50

// listedSessions orders ss of user u for the account page: current
// first, then those signed in before those still waiting for a second
// factor (sign-ins anyone with the password can start, which must not
// push a stolen session out of the list), each the most recently used
// first; and cuts the list at accountSessionsListed. more is how many
// were left out.
func listedSessions(ss []*authcore.Session, current authcore.SessionID, u *authcore.User) (shown []*authcore.Session, more int) {
	slices.SortStableFunc(ss, func(a, b *authcore.Session) int {
		switch {
		case a.ID == current:
			return -1
		case b.ID == current:
			return 1
		}
		if pa, pb := a.PendingFor(u), b.PendingFor(u); pa != pb {
			if pa {
				return 1
			}
			return -1
		}
		return b.LastSeen.Compare(a.LastSeen)
	})
	if len(ss) <= accountSessionsListed {
		return ss, 0
	}
	return ss[:accountSessionsListed], len(ss) - accountSessionsListed
}

func (q *preq) revokeSession() error {
	p, err := q.formPrincipal(q.p.app.Prefix + "/account")
	if p == nil {
		return err
	}
	id, err := authcore.ParseSessionID(q.r.PostFormValue("session"))
	if err != nil {
		return q.message(http.StatusBadRequest, "Bad request", "No such session.", q.p.app.Prefix+"/account")
	}
	s, err := q.rt.store.GetSession(q.ctx(), id)
	if errors.Is(err, authcore.ErrNotFound) || (err == nil && s.UserID != p.User.ID) {
		return q.message(http.StatusNotFound, "Not found", "No such session.", q.p.app.Prefix+"/account")
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if id != p.Session.ID {
		// And a recent second factor, for a user with one (as a password
		// change does): a stolen cookie and the password, without the
		// factor, must not keep signing the owner out.
		if p.User.SecondFactor && !q.requireFresh(p, q.p.app.Prefix+"/account") {
			return nil
		}
		// Another session takes the password: a stolen cookie alone must
		// not sign the owner out of each session they sign in with, and
		// so keep them from changing the password (which ends the
		// thief's) or revoking the thief's. The re-check is counted for
		// this session alone (UserReauthKey), so the thief's guesses do
		// not ban the owner's.
		again := func(status int, msg string) error {
			return q.message(status, "Session not revoked", msg, q.p.app.Prefix+"/account")
		}
		if ok, err := q.reauth(p, q.r.PostFormValue("password"), "That password is not right.", again); !ok {
			return err
		}
	}
	// The end and its row in one transaction; a session ended already
	// (the same form sent twice) is neither ended nor recorded again.
	ev := event{action: "session.revoked", actor: p.User.ID, subject: p.User.ID, outcome: "success",
		meta: map[string]string{"session": id.String()}}
	ended, err := q.endSession(id, ev)
	if err != nil {
		return err
	}
	if !ended {
		return q.message(http.StatusNotFound, "Not found", sessionGone, q.p.app.Prefix+"/account")
	}
	redirect(q.w, q.p.app.Prefix+"/account", http.StatusSeeOther)
	return nil
}

// factorsChanged answers a change refused because an authenticator app
// was set up for the account while it was on its way: this session now
// needs the app's code first.
const factorsChanged = "An authenticator app was set up for your account meanwhile, so this session needs its code first. Nothing was changed: give the code, then try again."

// revokeOtherSessions ends every session of the user but this one: the
// one click after seeing a session they do not know. It takes the
// password, and a recent second factor from a user who has one, as
// revoking one other session does. This session goes on under a new id,
// so that a stolen copy of its cookie ends too.
func (q *preq) revokeOtherSessions() error {
	back := q.p.app.Prefix + "/account"
	p, err := q.formPrincipal(back)
	if p == nil {
		return err
	}
	// A recent second factor too, for a user with one: a stolen cookie
	// and the password, without the factor, must not sign the owner out
	// of each session they sign in with, as fast as they do.
	if p.User.SecondFactor && !q.requireFresh(p, back) {
		return nil
	}
	again := func(status int, msg string) error {
		return q.message(status, "Sessions not signed out", msg, back)
	}
	if ok, err := q.reauth(p, q.r.PostFormValue("password"), "That password is not right.", again); !ok {
		return err
	}
	// A form sent twice waits here for the first, which replaces this
	// session.
	unlock, live, err := q.lockAccount(p)
	defer unlock()
	if err != nil {
		return err
	}
	ev := event{action: "session.revoked_others", actor: p.User.ID, subject: p.User.ID, outcome: "success"}
	var token string
	if live {
		var aerr error
		err, aerr = q.rt.changeWithRow(q.ctx(), rowFor(q.r, ev), func(commit authcore.Commit) error {
			var err error
			token, _, err = q.rt.auth.EndOtherSessionsWith(p.Session, q.secure, commit)
			return err
		})
		if aerr != nil {
			return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s (no session ended): %w", ev.action, aerr))
		}
	}
	if !live || errors.Is(err, authcore.ErrNoSession) {
		// The cookie is left alone: the browser may hold the first
		// answer's, of the session that went on.
		return q.message(http.StatusConflict, "Session ended", "This session ended before the form was handled. If you sent the form twice, the first one signed your other sessions out, and this browser is still signed in. Otherwise, sign in again.", back)
	}
	if errors.Is(err, authcore.ErrFactorsChanged) {
		return q.message(http.StatusConflict, "Sessions not signed out", factorsChanged, back)
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	q.setSessionCookie(token)
	return q.message(http.StatusOK, "Signed out elsewhere", "Your other sessions are signed out. This one goes on.", back)
}

// jwks serves the key set. A new key signs as soon as it is made (keys
// rotate, a reload with another key), so a cache in front of verifiers
// must not answer with the set from before it: caches revalidate every
// time (no-cache), cheaply, against the set's ETag.
func (q *preq) jwks() error {
	set := q.rt.keys.JWKS()
	sum := sha256.Sum256(set)
	h := q.w.Header()
	h.Del("Content-Security-Policy")
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", `"`+base64.RawURLEncoding.EncodeToString(sum[:16])+`"`)
	h.Set("Access-Control-Allow-Origin", "*")
	http.ServeContent(q.w, q.r, "", time.Time{}, bytes.NewReader(set))
	return nil
}

func (q *preq) healthz() error {
	ctx, cancel := context.WithTimeout(q.ctx(), 2*time.Second)
	defer cancel()
	q.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// Not only readable: a full disk or an immutable file refuses every
	// sign-in while reads pass, and a removed file loses every change.
	if err := q.rt.store.Health(ctx); err != nil {
		if q.r.Context().Err() != nil {
			return nil // the client hung up: nobody to answer, nothing wrong
		}
		q.p.logger.Error("health check: storage", zap.Error(err))
		q.w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = q.w.Write([]byte("storage unavailable\n"))
		return nil
	}
	_, err := q.w.Write([]byte("ok\n"))
	return err
}

// Cookie names: on HTTPS the __Host- prefix pins the cookie to this exact
// host, path / and Secure; plain HTTP (the localhost demo) cannot use it.
func sessionCookieName(secure bool) string {
	if secure {
		return "__Host-sigra_session"
	}
	return "sigra_session"
}

func csrfCookieName(secure bool) string {
	if secure {
		return "__Host-sigra_csrf"
	}
	return "sigra_csrf"
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Portal)(nil)
	_ caddyhttp.MiddlewareHandler = (*Portal)(nil)
)
