package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

func init() {
	caddy.RegisterModule(Gate{})
}

// varGateDecided holds the *gateDecision of the first sigra_gate a
// request met.
const varGateDecided = "sigra.gate_decided"

// gateDecision is what the first gate of a request resolved, for the
// gates after it. Among sibling gates (one scope) the first, most
// specific decides alone and the others step aside; a gate of a scope
// that has not decided yet (nested in a handle or route block) adds its
// own requirements to the same principal, and then its siblings step
// aside for it. A sibling more specific than the one that decided (met
// after it: in a route block, Caddy keeps the written order) adds its
// requirements too, rather than let `/docs/* { optional }` written
// before `/docs/internal/* { group staff }` open the inner one to all.
type gateDecision struct {
	scopes    []scopeRank         // the scopes that have decided
	buf       [4]scopeRank        // backing for scopes: no allocation for a few
	p         *authcore.Principal // nil: anonymous
	pending   bool                // anonymous because the second factor is still due
	asserted  bool                // X-Sigra-Assertion is set
	spent     time.Duration       // the gates' own time so far
	counted   bool                // the request's decision is counted (settle)
	token     string              // p's session cookie
	host      string              // the request's Host, which p's session is on
	secure    bool                // the request came over HTTPS (see isSecure)
	met       []*Gate             // the gates whose requirements p met, in order
	metBuf    [2]*Gate            // backing for met
	sock      *socket             // set when p's request may outlive its handshake
	answer    answerWriter        // the writer of p's answer otherwise
	looseOf   string              // the path looseWhy is of
	looseWhy  string              // looseRefusal(looseOf)
	looseDone bool                // looseOf and looseWhy are set
}

// loose is looseRefusal of path p, worked out once for the request's
// gates (again if a handler between them changed the path): every gate
// of a config reads the same patterns (gateReads).
func (d *gateDecision) loose(reads *pathReads, p string) string {
	if !d.looseDone || d.looseOf != p {
		d.looseWhy = looseRefusal(reads, p)
		d.looseOf, d.looseDone = p, true
	}
	return d.looseWhy
}

// scopeRank is a scope that decided, and the most specific Rank that
// applied in it.
type scopeRank struct{ scope, rank int }

// decided reports whether a gate of scope at least as specific as rank
// has decided already.
func (d *gateDecision) decided(scope, rank int) bool {
	if scope == 0 {
		return false
	}
	for _, s := range d.scopes {
		if s.scope == scope {
			return s.rank >= rank
		}
	}
	return false
}

// record notes that a gate of scope and rank applied.
func (d *gateDecision) record(scope, rank int) {
	if scope == 0 {
		return
	}
	for i := range d.scopes {
		if d.scopes[i].scope == scope {
			d.scopes[i].rank = max(d.scopes[i].rank, rank)
			return
		}
	}
	d.scopes = append(d.scopes, scopeRank{scope, rank})
}

// String keeps the principal out of a {vars.sigra.gate_decided} placeholder.
func (*gateDecision) String() string { return "decided" }

// Gate requires a signed-in session plus the listed requirements, then
// injects identity headers and passes the request on. The first gate a
// request meets removes every incoming X-Sigra-* header (and the alias
// family, when on) before anything else, whatever the outcome.
type Gate struct {
	// Optional lets anonymous requests through (with no identity); signed
	// in requests still get identity headers.
	Optional bool `json:"optional,omitempty"`
	// MFA requires a second factor in this session, done within MaxAge.
	MFA *MFARequirement `json:"mfa,omitempty"`
	// AMR requires that the session used at least one of these methods
	// (pwd, otp, hwk, swk, mfa, oidc, saml, email).
	AMR []string `json:"amr,omitempty"`
	// Groups requires membership in at least one of these groups.
	Groups []string `json:"groups,omitempty"`
	// OmitAssertion leaves X-Sigra-Assertion out (incoming ones are still
	// removed) on routes whose upstream does not verify it, such as static
	// assets: about 600 bytes and a signature less per request. The other
	// identity headers are sent as always.
	OmitAssertion bool `json:"omit_assertion,omitempty"`
	// AllowPreflight passes CORS preflights (OPTIONS with Origin and
	// Access-Control-Request-Method) without a session, and without
	// identity, for the app to answer: browsers send them without
	// cookies, so otherwise every cross-origin call to the route that
	// needs one fails. Only what the app answers to OPTIONS is exposed;
	// a body sent with one is not passed on.
	AllowPreflight bool `json:"allow_preflight,omitempty"`
	// Scope is the block the gate is written in, set by the Caddyfile
	// adapter. Gates of one scope are
	// siblings that Caddy sorts most specific first (in a route block:
	// as written): the first that matches decides alone. A gate of
	// another scope (nested in handle, route or handle_path) adds its
	// requirements: nesting can narrow access, never widen it. 0 (JSON
	// written by hand, or adapted before scopes existed) is a scope of
	// its own for every gate, so every gate a request meets applies its
	// requirements; Provision warns about it.
	Scope int `json:"scope,omitempty"`
	// Rank is how specific the gate's matcher is among its siblings, set
	// by the Caddyfile adapter as Caddy sorts them (gateRank): 0 without
	// a matcher, higher for a longer path prefix. A sibling met after one
	// of a lower rank decided applies as well.
	Rank int `json:"rank,omitempty"`
	// Paths are the path patterns of the gate's matcher, whatever else
	// it asks, set by the Caddyfile adapter. Caddy matches them
	// without regard to case, on the path decoded and with doubled
	// slashes merged, but the app gets the path as written and may
	// route /PUBLIC/x, /public%2Fx or //public/x elsewhere than
	// /public/x: a gate decides for its siblings only for a path that
	// matches as written (asWritten).
	Paths []string `json:"paths,omitempty"`
	// AddsOnly, set by the Caddyfile adapter for a gate whose matcher
	// may read the path in a way that cannot be compared with the path
	// as the app gets it (an expression, vars, file, a path_regexp with
	// flags: see pathUnknown), has it only add its requirements to its
	// siblings', never decide alone.
	AddsOnly bool `json:"adds_only,omitempty"`
	// PathsKnown is set on a gate with a matcher by the Caddyfile
	// adapter of this version, which records Paths and AddsOnly: one
	// adapted before never decides alone.
	PathsKnown bool `json:"paths_known,omitempty"`
	// NotPaths are the path patterns under the matcher's not, and
	// PathRegexps its path_regexp patterns (under not or not), set by the
	// Caddyfile adapter. With Paths they join the config's patterns that
	// tell a path apart from its loose reading (looseRefusal).
	NotPaths    []string `json:"not_paths,omitempty"`
	PathRegexps []string `json:"path_regexps,omitempty"`
	// SiteScope is, for a gate in a named route, what it is for a
	// portal: read from the route's blocks by the Caddyfile adapter.
	SiteScope

	app     *App
	reads   *pathReads // the patterns of every gate and portal of the config
	logger  *zap.Logger
	origins *originCache
}

// MFARequirement is the `mfa` requirement.
type MFARequirement struct {
	// MaxAge is how recent the second factor must be; 0 means any time
	// in this session.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Gate) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sigra_gate",
		New: func() caddy.Module { return new(Gate) },
	}
}

// knownAMR are the method names a session can carry.
var knownAMR = []string{
	authcore.AMRPassword, authcore.AMROTP, authcore.AMRHardware, authcore.AMRSoftware,
	authcore.AMRMFA, authcore.AMROIDC, authcore.AMRSAML, authcore.AMREmail,
}

// builtAMR are the methods a sign-in in this build can give; the others
// come with passkeys, federation and email links.
var builtAMR = []string{authcore.AMRPassword, authcore.AMROTP, authcore.AMRMFA}

// Provision finds the sigra app.
func (g *Gate) Provision(ctx caddy.Context) error {
	app, err := sigraApp(ctx)
	if err != nil {
		return err
	}
	g.app = app
	g.logger = app.logger.Named("gate") // under sigra, as DESIGN (11) has it
	g.origins = new(originCache)
	if g.Scope == 0 {
		g.logger.Warn("sigra_gate has no scope (JSON written by hand, or adapted by an older version): " +
			"it applies its requirements even after a more specific sibling gate decided; " +
			"adapt the Caddyfile again to have the most specific sibling decide alone")
	}
	if g.Scope != 0 {
		if g.reads, err = app.gateReads.add([][]string{g.Paths, g.NotPaths, g.SitePaths}, slices.Concat(g.PathRegexps, g.SiteRegexps), g.SiteStrips); err != nil {
			return fmt.Errorf("sigra_gate: %v", err)
		}
	}
	if g.Scope != 0 && g.Rank > 0 && !g.PathsKnown {
		g.logger.Warn("sigra_gate with a matcher was adapted by an older version, which did not record its paths: "+
			"it only adds its requirements to its siblings' and never decides alone, so an optional one opens nothing; "+
			"adapt the Caddyfile again", zap.Int("scope", g.Scope), zap.Int("rank", g.Rank), zap.Bool("optional", g.Optional))
	}
	return nil
}

// checkAMR checks an amr requirement's methods: each known, and one at
// least that a sign-in in this build can give (one listed is enough; a
// gate naming only others would refuse everyone).
func checkAMR(methods []string) error {
	for _, m := range methods {
		if !slices.Contains(knownAMR, m) {
			return fmt.Errorf("amr: unknown method %q (known: %s)", m, strings.Join(knownAMR, ", "))
		}
	}
	if len(methods) > 0 && !slices.ContainsFunc(methods, func(m string) bool { return slices.Contains(builtAMR, m) }) {
		return fmt.Errorf("amr: %s not available in this build yet: no sign-in can give it, so this gate would refuse everyone (available: %s)",
			strings.Join(methods, ", "), strings.Join(builtAMR, ", "))
	}
	return nil
}

// Validate checks the requirements.
func (g *Gate) Validate() error {
	if err := checkAMR(g.AMR); err != nil {
		return err
	}
	if g.MFA != nil && g.MFA.MaxAge < 0 {
		return errors.New("mfa: max_age must not be negative")
	}
	if g.MFA != nil && g.MFA.MaxAge > 0 {
		if err := checkFloor("max_age", time.Duration(g.MFA.MaxAge)); err != nil {
			return err
		}
	}
	for _, name := range g.Groups {
		if err := checkRequiredGroup(name); err != nil {
			return fmt.Errorf("group: %w", err)
		}
	}
	return g.checkOptional()
}

// isPreflight reports whether r is a CORS preflight: what a browser
// sends, without cookies, before a cross-origin request it may not send
// unasked. (Whether a body follows cannot be told from ContentLength:
// over HTTP/3 it is -1 unless the client sent Content-Length.)
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// checkOptional refuses optional with requirements, which would pass
// anonymous requests that the requirements were meant to stop.
func (g *Gate) checkOptional() error {
	if g.Optional && (g.MFA != nil || len(g.AMR) > 0 || len(g.Groups) > 0) {
		return errors.New("optional cannot be combined with other requirements")
	}
	return nil
}

// denial is why a request did not pass.
type denial struct {
	status int
	reason string // stable code, also the metrics label
	detail string // safe for the client
	stepUp bool   // a browser should go to the MFA page
}

var (
	denyLogin   = &denial{status: http.StatusUnauthorized, reason: "login_required", detail: "sign in required"}
	denyPending = &denial{status: http.StatusUnauthorized, reason: "mfa_pending", detail: "finish signing in with your second factor", stepUp: true}
	denyMFA     = &denial{status: http.StatusUnauthorized, reason: "mfa_required", detail: "a recent second factor is required", stepUp: true}
	denyAMR     = &denial{status: http.StatusForbidden, reason: "amr", detail: "this sign-in method is not allowed here"}
	denyGroup   = &denial{status: http.StatusForbidden, reason: "group", detail: "you are not in a group allowed here"}
	// Not a 401: signing in would not help while the other cookie
	// stays, so the answer has the browser forget both (forgetCookies).
	denyCookieConflict = &denial{status: http.StatusBadRequest, reason: "cookie_conflict",
		detail: "the browser sent two different session cookies: another site on this host set one; both are forgotten (Set-Cookie): sign in again"}
)

// asWritten reports whether the gate may decide for its less specific
// siblings on r: it has no matcher, or r's path, as the app gets it,
// matches what the matcher names. Caddy's path matcher ignores case and
// reads the path decoded, with doubled slashes merged, and so does
// path_regexp but for case; an app may not. Where `/public/* { optional
// }` matched /PUBLIC/x, /public%2Fx, /%70ublic/x or //public/x, an app
// that is case-sensitive, keeps %2F in its segment, routes on the path
// undecoded or leaves // alone routes it to its private pages, so the
// gate only adds its requirements (none, for optional) to its
// siblings', and the bare gate still asks for a session. The path's
// patterns (Paths) must match as written; a gate whose matcher has none
// (a path_regexp without flags, a header) is taken as written but for an
// encoded slash, a doubled one. Neither decides for a path with a
// character encoded that no browser encodes, or one an app may take for
// the end of the path (?, #). One that cannot be compared so (AddsOnly,
// or one adapted by an older version) never decides alone.
func (g *Gate) asWritten(r *http.Request) bool {
	switch {
	case g.Rank == 0:
		return true
	case g.AddsOnly || g.Scope != 0 && !g.PathsKnown:
		return false
	}
	u := r.URL
	slash, unsure := rawEscapes(u.RawPath)
	if unsure || strings.ContainsAny(u.Path, "?#") {
		// A ? or # in the path came encoded: an app that decodes the
		// URL before it splits it ends the path there, and
		// /admin/x%3F.css ends in .css to Caddy only.
		return false
	}
	if len(g.Paths) == 0 {
		return !slash && !strings.Contains(u.Path, "//")
	}
	p := u.Path
	if slash {
		p = slashesKept(u.RawPath)
	}
	for _, pattern := range g.Paths {
		if strings.Contains(pattern, "%") {
			// Caddy compares such a pattern with the path as written.
			if matchesAsWritten(pattern, u.EscapedPath()) {
				return true
			}
		} else if matchesAsWritten(pattern, p) {
			return true
		}
	}
	return false
}

// matchesAsWritten reports whether path p matches a path matcher's
// pattern as Caddy would match it if it heeded case and did not clean
// the path: a substring (*x*), a suffix (*.css), a prefix (/public/*),
// otherwise a glob, exact without wildcards. A pattern with a
// placeholder matches nothing here: its value is not known.
func matchesAsWritten(pattern, p string) bool {
	if strings.Contains(pattern, "{") {
		return false
	}
	switch stars := strings.Count(pattern, "*"); {
	case stars == 2 && len(pattern) >= 2 && pattern[0] == '*' && pattern[len(pattern)-1] == '*':
		return strings.Contains(p, pattern[1:len(pattern)-1])
	case stars == 1 && pattern[0] == '*':
		return strings.HasSuffix(p, pattern[1:])
	case stars == 1 && pattern[len(pattern)-1] == '*':
		return strings.HasPrefix(p, pattern[:len(pattern)-1])
	}
	ok, _ := path.Match(pattern, p)
	return ok
}

// refusePath answers a request whose path is refused (why: see
// pathRefusal) before the gate decides, and counts it.
func (g *Gate) refusePath(w http.ResponseWriter, r *http.Request, d *gateDecision, start time.Time, why string) error {
	m := g.app.metrics
	d.settle(m, m.gateDecisions.WithLabelValues("deny", "bad_path"), d.spent+time.Since(start), true)
	return refusePath(w, r, g.app.Prefix, why)
}

// check applies the requirements to a signed-in principal.
func (g *Gate) check(p *authcore.Principal, now time.Time) *denial {
	// Groups first: no second factor makes a non-member one, so a
	// browser is not sent to set one up only to be refused after it.
	if len(g.Groups) > 0 && !slices.ContainsFunc(g.Groups, p.User.InGroup) {
		return denyGroup
	}
	if g.MFA != nil {
		s := p.Session
		if !s.MFA() || (g.MFA.MaxAge > 0 && now.Sub(s.MFAAt) > time.Duration(g.MFA.MaxAge)) {
			return denyMFA
		}
	}
	if len(g.AMR) > 0 && !slices.ContainsFunc(g.AMR, p.Session.HasAMR) {
		return denyAMR
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ctx := r.Context()
	d, _ := caddyhttp.GetVar(ctx, varGateDecided).(*gateDecision)
	if d != nil && d.decided(g.Scope, g.Rank) {
		// A more specific sibling decided; stripping again would also
		// remove the identity it set.
		return next.ServeHTTP(w, r)
	}
	start := time.Now() // the latency sample includes stripping forged headers
	first := d == nil
	if first {
		d = new(gateDecision)
		d.scopes = d.buf[:0]
		caddyhttp.SetVar(ctx, varGateDecided, d)
		// The portal refused these already (no gate saw them); a gate
		// that runs first (in a route block, say) refuses them as well.
		if why := pathRefusal(r.URL.Path, g.app.pathParams); why != "" {
			return g.refusePath(w, r, d, start, why)
		}
		// The portal stripped already, but handlers between it and here
		// (a route block's request_header, say) may have set one again;
		// the gate strips right before it decides what goes upstream.
		stripIdentity(r, g.app.remoteAliases)
	}
	if why := d.loose(g.reads, r.URL.Path); why != "" {
		return g.refusePath(w, r, d, start, why)
	}
	if g.asWritten(r) {
		d.record(g.Scope, g.Rank)
	}

	rt := g.app.runtime(ctx)
	if rt == nil {
		return g.failDecision(w, r, d, start, "not_started", http.StatusServiceUnavailable, errors.New("sigra is not started"))
	}
	now := rt.auth.Now()
	secure, host := isSecure(r), requestHost(r)
	own := takeOwnCookies(r, secure)
	if token := own.session; first && token != "" {
		// Later gates reuse what the first resolved.
		p, err := rt.auth.AuthenticateOn(ctx, token, host, secure, now)
		if errors.Is(err, authcore.ErrOtherHost) {
			// A cookie carried from another site, or a proxy that sends
			// another X-Forwarded-Host than at sign-in: nobody here.
			g.logger.Debug("a session of another site", zap.String("host", host))
		}
		if err != nil && !errors.Is(err, authcore.ErrNoSession) {
			// Fail closed: a storage error passes nothing upstream.
			return g.failDecision(w, r, d, start, "storage", http.StatusInternalServerError, err)
		}
		if p != nil && p.Session.Pending {
			d.pending = true
		} else {
			d.p, d.token, d.host, d.secure = p, token, host, secure
		}
	}
	p := d.p
	if p == nil {
		if g.AllowPreflight && isPreflight(r) {
			// A browser's preflight has no body, nor a method of its
			// own to stand in for, nor an upgrade: none goes to the
			// app, for an app that serves every method alike, takes a
			// method override from any request or upgrades any.
			r.Body, r.ContentLength, r.TransferEncoding, r.Trailer = http.NoBody, 0, nil, nil
			r.Header.Del("Content-Length")
			r.Header.Del("Upgrade")
			r.Header.Del("Connection")
			for name := range r.Header {
				if isMethodOverride(name) {
					delete(r.Header, name)
				}
			}
			return g.pass(w, r, next, d, first, start)
		}
		if g.Optional {
			return g.pass(w, r, next, d, first, start)
		}
		dn := denyLogin
		switch {
		case own.sessionConflict:
			dn = denyCookieConflict
		case d.pending:
			dn = denyPending
		}
		return g.deny(w, r, d, dn, start)
	}
	if dn := g.check(p, now); dn != nil {
		if dn.status == http.StatusForbidden {
			writeDenied(rt, r, p, deniedKey{user: p.User.ID, gate: g, reason: dn.reason}, now, g.logger)
		}
		return g.deny(w, r, d, dn, start)
	}
	var assertion string
	if g.OmitAssertion && d.asserted {
		// Nested under a gate that signed one: this route goes without.
		delete(r.Header, hdrAssertion)
		d.asserted = false
	}
	if !g.OmitAssertion && !d.asserted {
		origin := g.origins.originFor(secure, host)
		aud := g.app.assertionAudience
		if aud == "" {
			aud = origin
		}
		var err error
		assertion, err = rt.keys.Assertion(p, origin, aud, now)
		if err != nil {
			return g.failDecision(w, r, d, start, "signing", http.StatusInternalServerError, err)
		}
		d.asserted = true
	}
	g.inject(r, p, assertion)
	return g.pass(w, r, next, d, first, start)
}

// pass hands an allowed request on. A request is one decision in the
// metrics however many gates it meets: the first gate counts it once the
// rest of the route has run (as Caddy counts requests; also when a
// handler aborts it with a panic), an allow unless a nested gate refused
// it or failed and counted that, with the time all its gates spent.
func (g *Gate) pass(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, d *gateDecision, first bool, start time.Time) error {
	d.spent += time.Since(start)
	if d.p != nil && (len(d.met) == 0 || d.met[len(d.met)-1] != g) {
		if d.met == nil {
			d.met = d.metBuf[:0]
		}
		d.met = append(d.met, g)
	}
	if !first {
		return next.ServeHTTP(w, r)
	}
	// A shared cache in front (a CDN) must not serve a gated answer to
	// anyone else: it depends on the cookie, and one for a signed-in
	// user is theirs alone. Set before the app answers, so an app's own
	// Cache-Control (public, from before it was gated) comes beside
	// private, and caches keep to the stricter; the guard drops the
	// headers CDNs would follow instead (sharedCacheHeaders).
	h := w.Header()
	h.Add("Vary", "Cookie")
	if d.p != nil {
		h.Add("Cache-Control", "private")
	}
	defer func() {
		m := g.app.metrics
		c := m.gateAllow
		if d.p == nil {
			c = m.gateAnonymous
		}
		d.settle(m, c, d.spent, true)
	}()
	if d.p != nil {
		// Any answer is cut off at its next write once its session
		// ends: a download, a stream read with fetch, and what the app
		// answers to an upgrade it does not take (Upgrade: foo).
		w = d.answer.wrap(w, r, g, d)
		if longLived(r) {
			// A WebSocket or an event stream outlives its handshake,
			// and may not write: it is closed when its session ends.
			var cancel context.CancelFunc
			w, r, cancel = g.watchSocket(w, r, d)
			defer cancel()
		}
	}
	return next.ServeHTTP(guardCookies(w, r, d.p != nil), r)
}

// settle counts the request's one decision in c, with a latency sample
// of spent when sample is set, unless it is counted already: by a nested
// gate that refused it, or, for a gate in handle_errors meeting the
// request again, by the first gate.
func (d *gateDecision) settle(m *metrics, c prometheus.Counter, spent time.Duration, sample bool) {
	if d.counted {
		return
	}
	d.counted = true
	c.Inc()
	if sample {
		m.gateDuration.Observe(spent.Seconds())
	}
}

// inject sets the identity headers and placeholders; an empty assertion
// is left out.
func (g *Gate) inject(r *http.Request, p *authcore.Principal, assertion string) {
	// One backing array for every value, each slice capped at its one
	// element so an append by a later handler copies instead of writing
	// into its neighbour: one allocation instead of one per header.
	n := 7
	if g.app.remoteAliases {
		n += 4
	}
	v := make([]string, 0, n)
	one := func(s string) []string {
		v = append(v, s)
		return v[len(v)-1 : len(v) : len(v)]
	}
	h := r.Header
	h[hdrUser] = one(p.User.ID)
	h[hdrEmail] = one(p.User.Email)
	if p.User.Name != "" {
		h[hdrName] = one(p.User.Name)
	}
	h[hdrGroups] = one(p.GroupsCSV)
	h[hdrAMR] = one(p.AMRCSV)
	h[hdrSession] = one(p.SessionID)
	if assertion != "" {
		h[hdrAssertion] = one(assertion)
	}
	if g.app.remoteAliases {
		h["Remote-User"] = one(p.User.ID)
		h["Remote-Email"] = one(p.User.Email)
		h["Remote-Groups"] = one(p.GroupsCSV)
		if p.User.Name != "" {
			h["Remote-Name"] = one(p.User.Name)
		}
	}
	// Placeholders, like Caddy's own authentication handler, so header_up
	// and log directives can use them.
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(phUserID, p.User.ID)
		repl.Set(phUserEmail, p.User.Email)
	}
}

// The identity placeholders, named as Caddy's authentication handler
// names them.
const (
	phUserID    = "http.auth.user.id"
	phUserEmail = "http.auth.user.email"
)

// writeDenied writes the authz.denied row of p, a signed-in user refused
// at r for k.reason (by a gate's requirement, or by the admin pages), at
// most once per user, gate and reason a minute (k). The request is
// refused either way: a row that cannot be written is logged.
func writeDenied(rt *runtime, r *http.Request, p *authcore.Principal, k deniedKey, now time.Time, log *zap.Logger) {
	undo, due := rt.denied.due(k, now)
	if !due {
		return
	}
	path := audit.Truncate(originalURL(r).Path, 256) // before handle_path or uri strip_prefix
	ev := event{action: "authz.denied", actor: p.User.ID, subject: p.User.ID, outcome: "failure",
		meta: map[string]string{"reason": k.reason, "method": r.Method, "path": path, "session": p.SessionID}}
	if err := rt.record(r.Context(), rowFor(r, ev)); err != nil {
		undo()
		log.Error("writing the authz.denied audit row", zap.String("user", p.User.ID), zap.Error(err))
	}
}

// deniedLogMax bounds the users, gates and reasons deniedLog remembers.
const deniedLogMax = 10000

// deniedLog keeps authz.denied rows to one per user, gate and reason a
// minute, so a client retrying a refused request cannot flood the log
// (and the rows of codes refused by a locked authenticator app, with no
// gate, to one per user a minute, and those of sign-ins and codes
// refused unchecked to one per refusing account or address a minute).
type deniedLog struct {
	mu   sync.Mutex
	last map[deniedKey]time.Time
}

type deniedKey struct {
	user   string // a user id, or a regulation key (refused sign-ins)
	gate   *Gate  // the route
	reason string
}

// due reports whether a row for k is due at now, and if so notes it;
// undo takes the note back, for a row that could not be written, so that
// the next refusal writes it rather than none being written for a
// minute.
func (l *deniedLog) due(k deniedKey, now time.Time) (undo func(), due bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[k]; ok && now.Sub(t) < time.Minute && !now.Before(t) {
		return noUndo, false
	}
	if l.last == nil {
		l.last = make(map[deniedKey]time.Time)
	}
	if len(l.last) >= deniedLogMax {
		for old, t := range l.last {
			if now.Sub(t) >= time.Minute {
				delete(l.last, old)
			}
		}
		if len(l.last) >= deniedLogMax {
			clear(l.last) // many users refused at once: a few rows too many
		}
	}
	l.last[k] = now
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.last[k] == now {
			delete(l.last, k)
		}
	}, true
}

// noUndo is the undo of a row that was not due.
func noUndo() {}

// deny answers a request that did not pass: browsers get a redirect (to
// sign in or step up) or a small page; other clients problem+json.
func (g *Gate) deny(w http.ResponseWriter, r *http.Request, gd *gateDecision, d *denial, start time.Time) error {
	m := g.app.metrics
	gd.settle(m, m.gateDecisions.WithLabelValues("deny", d.reason), gd.spent+time.Since(start), true)
	prefix := g.app.Prefix
	if _, ok := portalPath(originalURL(r).Path, prefix); ok {
		// The portal runs before the gates, so a portal page reaching one
		// means this site has no portal, or one after the gate: sending
		// the browser to the sign-in page would send it here again. (The
		// path as the client sent it: under handle_path /app/*, the app's
		// own /app/.sigra/… is not the portal's.)
		return g.fail(w, r, http.StatusInternalServerError, fmt.Errorf(
			"sigra_gate: %s is a portal page, but no sigra_portal answered it: a site with sigra_gate needs sigra_portal, before the gates (in a route block, written first)", prefix))
	}
	if d.status == http.StatusUnauthorized {
		// Back to the URI the client asked for, before any handle_path
		// or uri strip_prefix rewrote it.
		w.Header().Set("Cache-Control", "no-store")
		toSignIn(w, r, prefix, d, originalURI(r), http.StatusFound)
		return nil
	}
	msg := "You do not have access to this page: " + d.detail + "."
	if d == denyCookieConflict {
		msg = cookieConflictText
		before := len(w.Header()["Set-Cookie"])
		forgetCookies(w, r, sessionCookieName(isSecure(r)), isSecure(r))
		passOwnLines(r, w.Header()["Set-Cookie"][before:])
	}
	return writeRefusal(w, r, prefix, d.status, d.reason, d.detail, msg)
}

// fail answers a request the gate could not decide (not started, a
// storage or signing failure, a site without a portal) with an error of
// its own, logged here, rather than returning it to Caddy: Caddy would
// run the site's handle_errors routes with the request, and one that
// proxies to the app (for its own error pages) would serve it what the
// gate was to keep, ungated.
// failDecision counts the request's decision as an error for reason,
// with the time its gates spent, and answers it (fail).
func (g *Gate) failDecision(w http.ResponseWriter, r *http.Request, d *gateDecision, start time.Time, reason string, status int, err error) error {
	m := g.app.metrics
	d.settle(m, m.gateDecisions.WithLabelValues("error", reason), d.spent+time.Since(start), true)
	return g.fail(w, r, status, err)
}

func (g *Gate) fail(w http.ResponseWriter, r *http.Request, status int, err error) error {
	g.logger.Error("sigra_gate could not decide", zap.Int("status", status), zap.String("path", r.URL.Path), zap.Error(err))
	return writeRefusal(w, r, g.app.Prefix, status, "gateway_error", http.StatusText(status),
		"Signing in is not available right now. Try again in a moment.")
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Gate)(nil)
	_ caddy.Validator             = (*Gate)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gate)(nil)
)
