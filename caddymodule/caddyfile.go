package caddymodule

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"reflect"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/seal"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("sigra", parseGlobal)
	httpcaddyfile.RegisterDirective("sigra_portal", handlerDirective(func(h httpcaddyfile.Helper, _ caddy.ModuleMap) (caddyhttp.MiddlewareHandler, error) {
		return parsePortal(h)
	}, portalMatcher))
	httpcaddyfile.RegisterDirective("sigra_gate", handlerDirective(parseGate, gateMatcher))
	// Both run before redir, the portal before the gate, so users write
	// no `order` line: before anything that changes the path (rewrite,
	// uri, try_files), so that the gates match, and the portal sees, the
	// path the client asked for. After a try_files {path} /index.php,
	// a gate on /admin* would see /index.php and pass the request, while
	// PHP routes on the REQUEST_URI /admin/users; and the portal's own
	// pages would be rewritten away. (Registered in this order on
	// purpose: each lands immediately before redir.)
	httpcaddyfile.RegisterDirectiveOrder("sigra_portal", httpcaddyfile.Before, "redir")
	httpcaddyfile.RegisterDirectiveOrder("sigra_gate", httpcaddyfile.Before, "redir")
}

// handlerDirective is httpcaddyfile.RegisterHandlerDirective's parser,
// with check shown the directive's matcher before setup parses the rest,
// and setup shown it too.
func handlerDirective(setup func(httpcaddyfile.Helper, caddy.ModuleMap) (caddyhttp.MiddlewareHandler, error), check func(httpcaddyfile.Helper, caddy.ModuleMap) error) httpcaddyfile.UnmarshalFunc {
	return func(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
		if !h.Next() {
			return nil, h.ArgErr()
		}
		matcherSet, err := h.ExtractMatcherSet()
		if err != nil {
			return nil, err
		}
		h.Next() // on the directive again, so errors name its line
		if err := check(h, matcherSet); err != nil {
			return nil, err
		}
		h.Reset()
		val, err := setup(h, matcherSet)
		if err != nil {
			return nil, err
		}
		return h.NewRoute(matcherSet, val), nil
	}
}

// portalMatcher refuses a matcher on sigra_portal: besides serving its
// own paths, it strips forged identity headers and the gateway's cookies
// from every request of the site, gated or not.
func portalMatcher(h httpcaddyfile.Helper, matcherSet caddy.ModuleMap) error {
	if err := checkPlacement(h, "sigra_portal"); err != nil {
		return err
	}
	if matcherSet != nil {
		return h.Err("sigra_portal takes no matcher: it must see every request of the site, to serve its own paths and to strip X-Sigra-* headers and the gateway's cookies from all the others")
	}
	return nil
}

type gateMatch struct {
	line    int
	matcher bool     // the gate has a matcher
	pattern string   // its path prefix (gatePrefix), "" without a matcher or when it is not one
	prefix  bool     // no matcher, or one path prefix
	all     bool     // no matcher, or one that matches every request (path * or /*)
	paths   []string // its path patterns when it has nothing but (gatePaths)
}

// disjointPaths reports whether no request path can match a pattern of
// ps and one of qs (prefixes ending in *, or exact paths; Caddy compares
// them without regard to case). Neither may be empty.
func disjointPaths(ps, qs []string) bool {
	if len(ps) == 0 || len(qs) == 0 {
		return false
	}
	meet := func(p, q string) bool {
		p, q = strings.ToLower(p), strings.ToLower(q)
		pp, pstar := strings.CutSuffix(p, "*")
		qp, qstar := strings.CutSuffix(q, "*")
		switch {
		case pstar && qstar:
			return strings.HasPrefix(pp, qp) || strings.HasPrefix(qp, pp)
		case pstar:
			return strings.HasPrefix(q, pp)
		case qstar:
			return strings.HasPrefix(p, qp)
		}
		return p == q
	}
	for _, p := range ps {
		if slices.ContainsFunc(qs, func(q string) bool { return meet(p, q) }) {
			return false
		}
	}
	return true
}

// gateMatcher refuses sibling gates whose order Caddy cannot decide by
// specificity. Caddy sorts a block's sigra_gate directives longest path
// first when each has a single path matcher, and one without a matcher
// last; two gates that both have matchers, one of them another kind
// (method, header, several paths), keep the order they are written in.
// And a path's length means specificity only for prefixes: `*.json` is
// as long as `/api/*` and sorts first, though neither holds the other.
// Of siblings, the first that matches decides, so which gate decides
// would rest on the writing order (or on a length that means nothing)
// while the rule promises the most specific: `@reads method GET` written
// before `/admin/*` would make /admin/* readable by anyone. So siblings
// that both have matchers must each be one path prefix (gatePrefix).
// Nor may two siblings match the same requests (both without a matcher
// or matching every path, or on the same path in any case, as Caddy
// matches paths): they are equally specific, so the one written first
// would decide alone and the other's requirements would never apply.
func gateMatcher(h httpcaddyfile.Helper, matcherSet caddy.ModuleMap) error {
	// An argument first: sigra_gate *.css is a path without its slash,
	// whatever gates stand beside it (the setup reads from the start).
	if err := gateArgument(h); err != nil {
		return err
	}
	pattern, onePrefix := gatePrefix(matcherSet) // "" unless one path prefix
	if err := checkPlacement(h, "sigra_gate", slices.Concat(gatePaths(matcherSet), globPaths(matcherSet), scopePaths(matcherSet))...); err != nil {
		return err
	}
	sib, err := gateBlockOf(h)
	if sib == nil || err != nil {
		return err
	}
	g := gateMatch{line: h.Line(), matcher: matcherSet != nil, prefix: true, all: matcherSet == nil}
	if g.matcher {
		g.pattern, g.prefix = pattern, onePrefix
		g.all = matchesAll(matcherSet)
		g.paths = gatePaths(matcherSet)
	}
	for _, m := range sib.matched {
		// Of two that no request matches both, the order decides nothing.
		if g.matcher && m.matcher && (!g.prefix || !m.prefix) && !disjointPaths(g.paths, m.paths) {
			return h.Errf("sigra_gate: this gate and the one on line %d both have matchers, and sibling gates are ordered by specificity only when each matches one path prefix (/admin*, /api/*, /docs): "+
				"for a request both match, the one Caddy puts first would decide alone. Give each one path prefix, or nest the narrower gate in a handle block (a nested gate adds its requirements)", m.line)
		}
		// Caddy matches paths without regard to case.
		if (g.all && m.all) || (g.prefix && m.prefix && strings.EqualFold(g.pattern, m.pattern)) {
			what := "both match every request"
			switch {
			case !g.matcher && !m.matcher:
				what = "neither has a matcher"
			case !g.all:
				what = "both match " + g.pattern
			}
			return h.Errf("sigra_gate: this gate and the one on line %d match the same requests (%s): of sibling gates only the most specific decides, so the first would decide alone and the other's requirements would never apply. "+
				"Put the requirements in one gate, or nest one gate in a handle block (a nested gate adds its requirements)", m.line, what)
		}
	}
	sib.matched = append(sib.matched, g)
	return nil
}

// gateArgument refuses an argument on the sigra_gate line, h at the
// directive: requirements go in its block, and a path without its
// leading slash is no matcher.
func gateArgument(h httpcaddyfile.Helper) error {
	if !h.NextArg() {
		return nil
	}
	if v := h.Val(); strings.ContainsAny(v, "/*") && !strings.HasPrefix(v, "/") {
		return h.Errf("sigra_gate: unexpected argument %q: a path matcher starts with /: write /%s", v, v)
	}
	return h.Errf("sigra_gate: unexpected argument %q (requirements go in a block)", h.Val())
}

// gatePrefix returns the path pattern of a matcher set that is one path
// matching by prefix (/admin*, /admin/*) or exactly (/admin): of two
// such patterns that match one request, the longer is the more specific
// (and an exact path more than a prefix as long), which is what Caddy's
// sort and Gate.Rank rely on.
func gatePrefix(matcherSet caddy.ModuleMap) (string, bool) {
	if paths := gatePaths(matcherSet); len(paths) == 1 {
		return paths[0], true
	}
	return "", false
}

// globPaths are the paths of a matcher set that is path matchers only,
// when one of them has a wildcard inside (/reports/*.pdf), a glob's ?
// or [: gatePaths has none of them; none otherwise.
func globPaths(matcherSet caddy.ModuleMap) []string {
	var paths []string
	if len(matcherSet) != 1 || json.Unmarshal(matcherSet["path"], &paths) != nil || gatePaths(matcherSet) != nil {
		return nil
	}
	if !slices.ContainsFunc(paths, func(p string) bool {
		return strings.HasPrefix(p, "/") && strings.ContainsAny(strings.TrimSuffix(p, "*"), "*?[")
	}) {
		return nil
	}
	return slices.DeleteFunc(paths, func(p string) bool { return !strings.HasPrefix(p, "/") })
}

// scopePaths are, for a gate whose matcher set has more than path
// matchers (a path and a method, not path), the path patterns it
// confines the gate to (scopeOfLines), read from the set's JSON.
func scopePaths(matcherSet caddy.ModuleMap) []string {
	if len(matcherSet) == 0 || gatePaths(matcherSet) != nil || globPaths(matcherSet) != nil {
		return nil
	}
	var lines [][]string
	for name, raw := range matcherSet {
		switch name {
		case "path":
			var paths []string
			if json.Unmarshal(raw, &paths) != nil {
				return []string{unreadablePaths}
			}
			lines = append(lines, append([]string{name}, paths...))
		case "not", "expression":
			lines = append(lines, []string{name, strings.ToLower(string(raw))})
		default:
			lines = append(lines, []string{name})
		}
	}
	return scopeOfLines(lines)
}

// caseSensitivePaths names the matcher of a set that compares the path
// with regard to case (path_regexp without an i flag, an expression
// reading the path's placeholder or calling path_regexp), "" when none
// does.
func caseSensitivePaths(matcherSet caddy.ModuleMap) string {
	if raw, ok := matcherSet["path_regexp"]; ok {
		var re struct {
			Pattern string `json:"pattern"`
		}
		if json.Unmarshal(raw, &re) == nil && !ignoresCase.MatchString(re.Pattern) {
			return "path_regexp"
		}
	}
	if raw, ok := matcherSet["expression"]; ok {
		e := string(raw)
		for _, p := range []string{"{path", "{uri}", "{http.request.uri}", "{http.request.uri.path", "{http.request.orig_uri}", "{http.request.orig_uri.path", "path_regexp("} {
			if strings.Contains(e, p) {
				return "expression"
			}
		}
	}
	return ""
}

// ignoresCase matches a regexp that sets the i flag: (?i), (?is), (?i:…).
var ignoresCase = regexp.MustCompile(`\(\?[a-zA-Z]*i[a-zA-Z]*[:)]`)

// setsFlags matches a regexp that sets flags, (?i) or (?s-m:…), and not
// a group that sets none, (?:…) or (?P<name>…).
var setsFlags = regexp.MustCompile(`\(\?[a-zA-Z-]+[:)]`)

// pathBlind are the matchers that read nothing of the path, unless a
// placeholder in their values does.
var pathBlind = map[string]bool{
	"host": true, "method": true, "protocol": true, "remote_ip": true, "client_ip": true, "tls": true,
	"header": true, "header_regexp": true, "query": true,
}

// pathUnknown says how a matcher set reads the path in a way a gate
// cannot compare with the path as the app gets it ("" when it does
// not). Only these are known: path patterns without a placeholder (the
// gate's Paths), a path_regexp without flags ((?i) would ignore case, as
// Caddy's path matcher does), a not of such path patterns (which can
// only narrow the gate), and matchers that read nothing of the path
// (pathBlind) with no placeholder. Any other (an expression, vars, file,
// a map's output) may read the path any way.
func pathUnknown(matcherSet caddy.ModuleMap) string {
	for _, name := range slices.Sorted(maps.Keys(matcherSet)) {
		raw := string(matcherSet[name])
		switch {
		case name == "path":
			if strings.Contains(raw, "{") {
				return "its path pattern has a placeholder, whose value is not known then"
			}
			var patterns []string
			_ = json.Unmarshal(matcherSet[name], &patterns)
			for _, p := range patterns {
				if !strings.HasPrefix(p, "/") {
					return fmt.Sprintf("its path pattern %q does not start at the path's start, so it matches within any path (*.css matches /admin/users.css, and /admin/users.php/x.css, which PHP runs as users.php)", p)
				}
			}
		case name == "path_regexp":
			var re struct {
				Pattern string `json:"pattern"`
			}
			if json.Unmarshal(matcherSet[name], &re) != nil || setsFlags.MatchString(re.Pattern) {
				return "its path_regexp sets flags ((?i) ignores case)"
			}
			if !anchoredAtPath(re.Pattern) {
				return "its path_regexp does not start with ^ and a literal path (^/public/), so it may match within any path (\\.css$ matches /admin/users.css)"
			}
		case name == "not":
			// A not of path patterns only narrows a gate whose own path
			// patterns bound it, compared as written; alone, it opens
			// every spelling of the excluded paths that Caddy does not
			// match and an app does (/admin./x to IIS).
			_, bounded := matcherSet["path"]
			var sets []map[string]json.RawMessage
			if json.Unmarshal(matcherSet[name], &sets) != nil || slices.ContainsFunc(sets, func(set map[string]json.RawMessage) bool {
				for k, v := range set {
					if hasPlaceholder(v) || !(pathBlind[k] || k == "path" && bounded) {
						return true
					}
				}
				return false
			}) {
				return "its not matcher reads the path otherwise than to narrow path patterns of its own"
			}
		case pathBlind[name]:
			if hasPlaceholder(matcherSet[name]) {
				return "its " + name + " matcher has a placeholder, which may read the path"
			}
		default:
			return "its " + name + " matcher may read the path"
		}
	}
	return ""
}

// excludesPaths reports whether a matcher set has a not of path or
// path_regexp patterns.
func excludesPaths(matcherSet caddy.ModuleMap) bool {
	var sets []map[string]json.RawMessage
	_ = json.Unmarshal(matcherSet["not"], &sets)
	return slices.ContainsFunc(sets, func(set map[string]json.RawMessage) bool {
		_, p := set["path"]
		_, re := set["path_regexp"]
		return p || re
	})
}

// anchoredAtPath reports whether a regexp is anchored at the path's
// start (^ or \A) with a literal slash and more literal text after it,
// or a choice of literals (^/public/, ^/(?:public|assets)/): every path
// it matches starts so, as every path a /public/* pattern matches does.
func anchoredAtPath(expr string) bool {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return false
	}
	re = re.Simplify()
	if re.Op != syntax.OpConcat || len(re.Sub) < 2 {
		return false
	}
	if op := re.Sub[0].Op; op != syntax.OpBeginText && op != syntax.OpBeginLine {
		return false
	}
	lead := ""
	rest := re.Sub[1:]
	for len(rest) > 0 && rest[0].Op == syntax.OpLiteral && rest[0].Flags&syntax.FoldCase == 0 {
		lead += string(rest[0].Rune)
		rest = rest[1:]
	}
	switch {
	case !strings.HasPrefix(lead, "/"):
		return false
	case len(lead) > 1:
		return true
	}
	return len(rest) > 0 && startsLiteral(rest[0])
}

// startsLiteral reports whether every string re matches starts with
// literal text (not case folded) it names.
func startsLiteral(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpLiteral:
		return re.Flags&syntax.FoldCase == 0
	case syntax.OpCapture, syntax.OpConcat:
		return len(re.Sub) > 0 && startsLiteral(re.Sub[0])
	case syntax.OpAlternate:
		return !slices.ContainsFunc(re.Sub, func(s *syntax.Regexp) bool { return !startsLiteral(s) })
	}
	return false
}

// pathsRead returns the path patterns under a matcher set's not (all of
// them when negated, a set under not) and its path_regexp patterns,
// under not or not.
func pathsRead(matcherSet map[string]json.RawMessage, negated bool) (notPaths, regexps []string) {
	for name, raw := range matcherSet {
		switch name {
		case "path":
			if negated {
				var ps []string
				_ = json.Unmarshal(raw, &ps)
				notPaths = append(notPaths, ps...)
			}
		case "path_regexp":
			var re struct {
				Pattern string `json:"pattern"`
			}
			if json.Unmarshal(raw, &re) == nil && re.Pattern != "" {
				regexps = append(regexps, re.Pattern)
			}
		case "not":
			var sets []map[string]json.RawMessage
			_ = json.Unmarshal(raw, &sets)
			for _, set := range sets {
				n, r := pathsRead(set, true)
				notPaths, regexps = append(notPaths, n...), append(regexps, r...)
			}
		}
	}
	slices.Sort(notPaths)
	slices.Sort(regexps)
	return notPaths, regexps
}

// hasPlaceholder reports whether a matcher's JSON has a placeholder (a {
// before a letter) in a string, key or value; a regexp's {3} is none.
func hasPlaceholder(raw json.RawMessage) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return true
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return placeholderIn(v)
		case []any:
			return slices.ContainsFunc(v, walk)
		case map[string]any:
			for k, x := range v {
				if placeholderIn(k) || walk(x) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

// placeholderIn reports whether s has a { before a letter.
func placeholderIn(s string) bool {
	for i := strings.IndexByte(s, '{'); i >= 0 && i+1 < len(s); {
		if c := s[i+1] | 0x20; 'a' <= c && c <= 'z' {
			return true
		}
		next := strings.IndexByte(s[i+1:], '{')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return false
}

// gatePaths are the paths of a matcher set that is path matchers only,
// each a literal path or prefix (/admin, /admin*: no other wildcard, nor
// a glob's ? or [, nor a placeholder); none otherwise.
func gatePaths(matcherSet caddy.ModuleMap) []string {
	var paths []string
	if len(matcherSet) != 1 || json.Unmarshal(matcherSet["path"], &paths) != nil {
		return nil
	}
	for _, p := range paths {
		prefix := strings.TrimSuffix(p, "*")
		if !strings.HasPrefix(prefix, "/") || strings.ContainsAny(prefix, "*{[?") {
			return nil
		}
	}
	return paths
}

// matchesAll reports whether a matcher set is one path matcher that
// matches every request: "*", or "/*" (every path starts with /).
func matchesAll(matcherSet caddy.ModuleMap) bool {
	var paths []string
	if len(matcherSet) != 1 || json.Unmarshal(matcherSet["path"], &paths) != nil {
		return false
	}
	return slices.ContainsFunc(paths, func(p string) bool { return p == "*" || p == "/*" })
}

// gateRank is Gate.Rank for a gate with this matcher set: 0 without
// one, 1 for one that is not a path prefix (which gateMatcher lets have
// only siblings without a matcher), and for a path prefix more the
// longer it is, and one more for an exact path than for the prefix of
// the same length (/docs is more specific than /docs*, as Caddy sorts
// them).
func gateRank(matcherSet caddy.ModuleMap) int {
	if matcherSet == nil {
		return 0
	}
	pattern, ok := gatePrefix(matcherSet)
	if !ok {
		return 1
	}
	prefix, wild := strings.CutSuffix(pattern, "*")
	rank := 2 + 2*len(prefix)
	if !wild {
		rank++
	}
	return rank
}

// later names global sub-options that belong to capabilities not in this
// build yet: they fail validation instead of being silently ignored.
var later = map[string]bool{
	"registration": true, "webauthn": true,
	"oidc": true, "saml": true, "mail": true, "billing": true, "flag": true, "policy": true,
	"oidc_provider": true,
}

// parseGlobal parses the global `sigra` block:
//
//	sigra {
//		storage bbolt <path>
//		session {
//			idle     <duration>
//			lifetime <duration>
//		}
//		keys {
//			algorithm      EdDSA|ES256
//			signing_key    <pem file>
//			encryption_key <base64 of 32 bytes>
//			assertion_ttl  <duration>
//		}
//		prefix                 <path>
//		admin_group            <group>
//		admin_mfa_max_age      <duration>
//		admin_hosts <host...>
//		allowed_redirect_hosts <host...>
//		header_aliases         remote
//		assertion_audience     <aud>
//		path_params            allow|refuse
//		bootstrap_admin        <email>|off
//		regulation {
//			max_retries        <n>
//			max_retries_per_ip <n>
//			find_time          <duration>
//			ban_time           <duration>
//			max_totp_failures  <n>
//		}
//		audit {
//			retention <duration>
//			webhook <url> {
//				secret  <secret>
//				actions <pattern...>
//			}
//		}
//	}
func parseGlobal(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	d.Next() // option name
	if existing != nil {
		return nil, d.Err("sigra: the global sigra block may appear only once")
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	seen := onceEach{}
	for d.NextBlock(0) {
		opt := d.Val()
		if opt != "allowed_redirect_hosts" && opt != "header_aliases" && opt != "admin_hosts" { // these add up
			if err := seen.check(d); err != nil {
				return nil, err
			}
		}
		switch opt {
		case "storage":
			var backend, path string
			if !d.Args(&backend) {
				return nil, d.Err("storage: missing value: storage bbolt <path>")
			}
			if backend != "bbolt" {
				return nil, d.Errf("storage: unknown backend %q (this build supports bbolt)", backend)
			}
			// A missing or empty path (an unset {$VAR} drops its token)
			// would quietly open another, empty store: the default one.
			if !d.Args(&path) || strings.TrimSpace(path) == "" {
				return nil, d.Err("storage: missing path: storage bbolt <path> (leave the storage line out for the default, sigra/sigra.db in Caddy's data directory)")
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			if strings.HasPrefix(path, "~") {
				return nil, d.Errf("storage: %s starts with ~, which Caddy does not expand (it would make a directory named ~ here): write the whole path ({env.HOME}/… works)", path)
			}
			app.Storage = &StorageConfig{Backend: backend, Path: path}
		case "session":
			if err := blockOnly(d); err != nil {
				return nil, err
			}
			app.Session = new(SessionConfig)
			seen := onceEach{}
			for d.NextBlock(1) {
				if err := seen.check(d); err != nil {
					return nil, err
				}
				switch d.Val() {
				case "idle":
					if err := parseDuration(d, &app.Session.Idle); err != nil {
						return nil, err
					}
				case "lifetime":
					if err := parseDuration(d, &app.Session.Lifetime); err != nil {
						return nil, err
					}
				case "pending_lifetime":
					if err := parseDuration(d, &app.Session.PendingLifetime); err != nil {
						return nil, err
					}
				default:
					return nil, unknownOption(d, "session: unknown option %q (known: idle, lifetime, pending_lifetime)", d.Val())
				}
			}
			if name, err := app.Session.check(); err != nil {
				return nil, errAt(seen[name], err)
			}
		case "keys":
			if err := blockOnly(d); err != nil {
				return nil, err
			}
			app.Keys = new(KeysConfig)
			seen := onceEach{}
			for d.NextBlock(1) {
				if err := seen.check(d); err != nil {
					return nil, err
				}
				switch d.Val() {
				case "algorithm":
					if err := oneArg(d, &app.Keys.Algorithm); err != nil {
						return nil, err
					}
					if a := app.Keys.Algorithm; a != "EdDSA" && a != "ES256" {
						return nil, d.Errf("keys: algorithm %q (want EdDSA or ES256)", a)
					}
				case "signing_key":
					if err := oneArg(d, &app.Keys.SigningKey); err != nil {
						return nil, err
					}
				case "encryption_key":
					if err := oneArg(d, &app.Keys.EncryptionKey); err != nil {
						return nil, err
					}
					// A literal key is checked here, where the line is
					// known; a placeholder when the config loads.
					if k := app.Keys.EncryptionKey; !strings.Contains(k, "{") {
						if _, err := seal.ParseKey(k); err != nil {
							return nil, d.Errf("encryption_key: %v", err)
						}
					}
				case "assertion_ttl":
					if err := parseDuration(d, &app.Keys.AssertionTTL); err != nil {
						return nil, err
					}
				default:
					return nil, unknownOption(d, "keys: unknown option %q (known: algorithm, signing_key, encryption_key, assertion_ttl)", d.Val())
				}
			}
		case "prefix":
			if err := oneArg(d, &app.Prefix); err != nil {
				return nil, err
			}
			if err := checkPrefix(app.Prefix); err != nil {
				return nil, d.Err(err.Error())
			}
		case "admin_group":
			if err := oneArg(d, &app.AdminGroup); err != nil {
				return nil, err
			}
			if err := checkGroup(d, "admin_group", app.AdminGroup); err != nil {
				return nil, err
			}
		case "admin_mfa_max_age":
			if err := parseDuration(d, &app.AdminMFAMaxAge); err != nil {
				return nil, err
			}
		case "admin_hosts":
			if err := hostArgs(d, checkAdminHost, &app.AdminHosts); err != nil {
				return nil, err
			}
		case "allowed_redirect_hosts":
			if err := hostArgs(d, checkRedirectHost, &app.AllowedRedirectHosts); err != nil {
				return nil, err
			}
		case "header_aliases":
			for d.NextArg() {
				if d.Val() != "remote" {
					return nil, d.Errf("header_aliases: unknown alias family %q (known: remote)", d.Val())
				}
				app.HeaderAliases = append(app.HeaderAliases, d.Val())
			}
			if len(app.HeaderAliases) == 0 {
				return nil, d.ArgErr()
			}
		case "assertion_audience":
			if err := oneArg(d, &app.AssertionAudience); err != nil {
				return nil, err
			}
			if err := checkAudience(app.AssertionAudience); err != nil {
				return nil, d.Err(err.Error())
			}
		case "path_params":
			allow, err := switchArg(d, "allow", "refuse")
			if err != nil {
				return nil, err
			}
			app.PathParams = map[bool]string{true: "allow", false: "refuse"}[allow]
		case "bootstrap_admin":
			if err := oneArg(d, &app.BootstrapAdmin); err != nil {
				return nil, err
			}
			if app.BootstrapAdmin != "off" {
				if _, err := authcore.NormalizeEmail(app.BootstrapAdmin); err != nil {
					return nil, d.Errf("bootstrap_admin: want an email or off: %v", err)
				}
			}
		case "regulation":
			if err := blockOnly(d); err != nil {
				return nil, err
			}
			app.Regulation = new(RegulationConfig)
			seen := onceEach{}
			for d.NextBlock(1) {
				if err := seen.check(d); err != nil {
					return nil, err
				}
				var err error
				switch d.Val() {
				case "max_retries":
					err = parseCount(d, &app.Regulation.MaxRetries)
				case "max_retries_per_ip":
					err = parseCount(d, &app.Regulation.MaxRetriesPerIP)
				case "find_time":
					err = parseDuration(d, &app.Regulation.FindTime)
				case "ban_time":
					err = parseDuration(d, &app.Regulation.BanTime)
				case "max_totp_failures":
					err = parseCount(d, &app.Regulation.MaxTOTPFailures)
				default:
					err = unknownOption(d, "regulation: unknown option %q (known: max_retries, max_retries_per_ip, find_time, ban_time, max_totp_failures)", d.Val())
				}
				if err != nil {
					return nil, err
				}
			}
		case "audit":
			if err := blockOnly(d); err != nil {
				return nil, err
			}
			cfg, err := parseAudit(d)
			if err != nil {
				return nil, err
			}
			app.Audit = cfg
		default:
			if later[opt] {
				return nil, d.Errf("sigra: %q is not available in this build yet", opt)
			}
			return nil, unknownOption(d, "sigra: unknown option %q (known: storage, session, keys, regulation, audit, prefix, bootstrap_admin, "+
				"admin_group, admin_mfa_max_age, admin_hosts, allowed_redirect_hosts, header_aliases, assertion_audience, path_params)", opt)
		}
	}
	return httpcaddyfile.App{Name: "sigra", Value: caddyconfig.JSON(app, nil)}, nil
}

// switchArg reads an option's one value, yes or no (on or off, say),
// as true or false.
func switchArg(d *caddyfile.Dispenser, yes, no string) (bool, error) {
	name, v := d.Val(), ""
	if err := oneArg(d, &v); err != nil {
		return false, err
	}
	if v != yes && v != no {
		return false, d.Errf("%s: want %s or %s, not %q", name, yes, no, v)
	}
	return v == yes, nil
}

// oneArg reads exactly one argument.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.Args(dst) {
		return d.Errf("%s: missing value", name)
	}
	if d.NextArg() {
		return d.Errf("%s takes one value; %q is one too many (quote a value with spaces)", name, d.Val())
	}
	// A literal "" would quietly mean the default: a generated key
	// instead of the one named, say. (An unset {$VAR} drops its token,
	// which is already the argument count's error.)
	if strings.TrimSpace(*dst) == "" {
		return d.Errf("%s: empty value", name)
	}
	return nil
}

// blockOnly refuses arguments after an option that takes a block
// (session, keys, regulation, audit).
func blockOnly(d *caddyfile.Dispenser) error {
	name := d.Val()
	if d.NextArg() {
		return d.Errf("%s takes a block, not a value: %s { … }", name, name)
	}
	return nil
}

// unknownOption is the error for an option a block does not know. A "{"
// there opened a block after an option that takes none.
func unknownOption(d *caddyfile.Dispenser, format string, args ...any) error {
	if d.Val() == "{" {
		return d.Err(`unexpected "{": the option on this line takes no block`)
	}
	return d.Errf(format, args...)
}

// checkGroup is the parse-time check of a group name, so that caddy
// validate names the line.
func checkGroup(d *caddyfile.Dispenser, option, g string) error {
	if err := checkRequiredGroup(g); err != nil {
		return d.Errf("%s: %v", option, err)
	}
	return nil
}

// checkRequiredGroup accepts a group name a route or the admin pages
// require: a valid name (authcore.CheckGroupName) that is not a
// placeholder, which would be taken as it is written.
func checkRequiredGroup(g string) error {
	if err := authcore.CheckGroupName(g); err != nil {
		return err
	}
	if i := strings.IndexByte(g, '{'); i >= 0 && strings.IndexByte(g[i:], '}') > 0 {
		return fmt.Errorf("group name %q looks like a placeholder: group names are not expanded, so no user would be in it; name the group itself", g)
	}
	return nil
}

// parseCount reads one positive integer.
func parseCount(d *caddyfile.Dispenser, dst *int) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > maxCount {
		return d.Errf("%s: want a whole number from 1 to %d, got %q", name, maxCount, s)
	}
	*dst = n
	return nil
}

// maxCount bounds the regulation counts: a limit above it is none, and
// far above it the per-address default (four times max_retries) wraps.
const maxCount = 1_000_000

// parseAudit parses the audit block:
//
//	audit {
//		retention <duration>
//		webhook <url> {
//			secret  <secret>
//			actions <pattern...>
//		}
//	}
func parseAudit(d *caddyfile.Dispenser) (*AuditConfig, error) {
	cfg := new(AuditConfig)
	seen := onceEach{}
	for d.NextBlock(1) {
		if d.Val() != "webhook" { // one block per receiver
			if err := seen.check(d); err != nil {
				return nil, err
			}
		}
		switch d.Val() {
		case "retention":
			if err := parseDuration(d, &cfg.Retention); err != nil {
				return nil, err
			}
			if err := checkRetention(cfg.Retention); err != nil {
				return nil, d.Err(err.Error())
			}
		case "webhook":
			at := *d // the webhook's line, for what is checked after its block
			w := new(AuditWebhook)
			if err := oneArg(d, &w.URL); err != nil {
				return nil, err
			}
			hookSeen := onceEach{}
			for d.NextBlock(2) {
				if err := hookSeen.check(d); err != nil {
					return nil, err
				}
				switch d.Val() {
				case "secret":
					if err := oneArg(d, &w.Secret); err != nil {
						return nil, err
					}
				case "actions":
					w.Actions = d.RemainingArgs()
					if len(w.Actions) == 0 {
						return nil, d.ArgErr()
					}
					ps, err := audit.ParsePatterns(w.Actions)
					if err != nil {
						return nil, d.Errf("webhook actions: %v", err)
					}
					if err := audit.CheckKnown(ps); err != nil {
						return nil, d.Errf("webhook actions: %v", err)
					}
				default:
					return nil, unknownOption(d, "webhook: unknown option %q (known: secret, actions)", d.Val())
				}
			}
			if w.Secret == "" {
				return nil, at.Errf("webhook %s: secret is required", audit.RedactURL(w.URL))
			}
			cfg.Webhooks = append(cfg.Webhooks, w)
			if err := checkWebhooksAsWritten(cfg.Webhooks); err != nil {
				return nil, at.Errf("%v", err)
			}
		default:
			return nil, unknownOption(d, "audit: unknown option %q (known: retention, webhook)", d.Val())
		}
	}
	return cfg, nil
}

// onceEach refuses an option written twice in one block, by its line:
// the second would quietly replace the first (a whole audit block with
// its webhooks, a ban limit).
// It keeps where each option is written, for checks that run after the
// block (errAt).
type onceEach map[string]caddyfile.Token

func (o onceEach) check(d *caddyfile.Dispenser) error {
	if tok, ok := o[d.Val()]; ok {
		return d.Errf("%s is already set on line %d: write it once", d.Val(), tok.Line)
	}
	o[d.Val()] = d.Token()
	return nil
}

// hostArgs appends an option's one or more host arguments to dst, each
// passing check.
func hostArgs(d *caddyfile.Dispenser, check func(string) error, dst *[]string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	for ok := true; ok; ok = d.NextArg() {
		if err := check(d.Val()); err != nil {
			return d.Err(err.Error())
		}
		*dst = append(*dst, d.Val())
	}
	return nil
}

// errAt words err as the Dispenser does for the line of tok (with its
// import chain), for a check that can only run after later lines.
func errAt(tok caddyfile.Token, err error) error {
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.WrapErr(err)
}

func parseDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	switch {
	case err != nil:
		return d.Errf("%s: invalid duration %q (write it as 30s, 15m, 12h or 7d)", name, s)
	case dur <= 0:
		return d.Errf("%s: %q must be longer than zero", name, s)
	}
	if err := checkFloor(name, dur); err != nil {
		return d.Err(err.Error())
	}
	*dst = caddy.Duration(dur)
	return nil
}

// parsePortal parses `sigra_portal` (no arguments, no block).
func parsePortal(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // directive name
	line := h.Line()
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	if h.NextBlock(0) {
		return nil, unknownOption(h.Dispenser, "sigra_portal: unknown option %q (portal options live in the global sigra block)", h.Val())
	}
	p := new(Portal)
	p.SiteScope = blockPatterns(h, "sigra_portal", line)
	return p, nil
}

// blockPatterns are sitePatterns for the directive dir on line, with
// what could not be read warned of.
func blockPatterns(h httpcaddyfile.Helper, dir string, line int) SiteScope {
	scope, unread, caseBlind := sitePatterns(h)
	for _, u := range unread {
		placementWarning(fmt.Sprintf("%s on line %d: the matcher of the %s on line %d %s: a spelling of its paths that some apps read as another (/admin./x to IIS) is not refused; give the gates in it path patterns of their own", dir, line, u.d.name, u.d.line, u.why))
	}
	for _, d := range caseBlind {
		placementWarning(fmt.Sprintf("%s on line %d: the path_regexp of the %s on line %d compares the path with regard to case, unlike Caddy's path matcher and many apps (ASP.NET, and apps on Windows or macOS files): /ADMIN/x would miss the gates in it. Start the pattern with (?i)", dir, line, d.name, d.line))
	}
	warnLoosePatterns(dir, line, scope.SitePaths, scope.SiteRegexps)
	return scope
}

// warnLoosePatterns warns of the path patterns and path regexps, of the
// directive dir on line or the blocks around it, that spell a path some
// apps read as another: the gates cannot refuse the paths they match
// (they are the config's own), and a request for the other spelling
// misses them while such an app serves it the same page.
func warnLoosePatterns(dir string, line int, patterns, regexps []string) {
	const why = "(Windows servers drop a segment's trailing dots and spaces; apps that fold Unicode read ｶ as カ): a request spelled so misses the gates it picks, though such an app serves it the same page. Add that spelling"
	for _, pattern := range patterns {
		if read, loose := appReading(pattern); loose {
			placementWarning(fmt.Sprintf("%s on line %d: the path pattern %s is a spelling that some apps read as %s %s to the patterns too", dir, line, pattern, read, why))
		}
	}
	for _, expr := range regexps {
		if read, loose := appReading(expr); loose {
			placementWarning(fmt.Sprintf("%s on line %d: the path_regexp %s spells paths that some apps read as %s %s to the regexp too", dir, line, expr, read, why))
		}
	}
}

// laterGate names gate requirements of capabilities not in this build yet.
var laterGate = map[string]bool{"rule": true, "flag": true, "seat": true, "policy": true, "hook": true}

// parseGate parses:
//
//	sigra_gate [<matcher>] {
//		optional
//		mfa [max_age <duration>]
//		amr <method...>
//		group <name...>
//		assertion on|off
//		preflight allow|refuse
//	}
func parseGate(h httpcaddyfile.Helper, matcherSet caddy.ModuleMap) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // directive name
	line := h.Line()
	g := new(Gate)
	if h.IsNamedRoute() {
		// No portal reads a named route's blocks: its gates do, once
		// for the route (while h is at the name).
		key := fmt.Sprintf("sigra.route_patterns@%d", namedRouteBase(h))
		if known, ok := h.State[key].(SiteScope); ok {
			g.SiteScope = known
		} else {
			g.SiteScope = blockPatterns(h, "sigra_gate", line)
			if h.State != nil {
				h.State[key] = g.SiteScope
			}
		}
	}
	if err := gateArgument(h); err != nil {
		return nil, err
	}
	seen := map[string]int{}
	for h.NextBlock(0) {
		req := h.Val()
		if line, ok := seen[req]; ok {
			// A second line would silently widen the first (a bare mfa
			// after mfa max_age 5m, more groups): say it once.
			return nil, h.Errf("sigra_gate: %s is already given on line %d; put it on one line", req, line)
		}
		seen[req] = h.Line()
		switch req {
		case "optional":
			if h.NextArg() {
				return nil, h.ArgErr()
			}
			g.Optional = true
		case "mfa":
			g.MFA = new(MFARequirement)
			if h.NextArg() {
				if v := h.Val(); v != "max_age" {
					if _, err := caddy.ParseDuration(v); err == nil {
						return nil, h.Errf("mfa: unknown option %q: write mfa max_age %s", v, v)
					}
					return nil, unknownOption(h.Dispenser, "mfa: unknown option %q (known: max_age)", v)
				}
				if err := parseDuration(h.Dispenser, &g.MFA.MaxAge); err != nil {
					return nil, err
				}
			}
		case "amr":
			methods := h.RemainingArgs()
			if len(methods) == 0 {
				return nil, h.Err("amr: missing value: amr <method…> (pwd, otp, mfa)")
			}
			if err := checkAMR(methods); err != nil {
				return nil, h.Err(err.Error())
			}
			g.AMR = append(g.AMR, methods...)
		case "group":
			groups := h.RemainingArgs()
			if len(groups) == 0 {
				return nil, h.Err("group: missing value: group <name…> (any one of the names is enough)")
			}
			for _, name := range groups {
				if err := checkGroup(h.Dispenser, "group", name); err != nil {
					return nil, err
				}
			}
			g.Groups = append(g.Groups, groups...)
		case "assertion":
			// Not a requirement: what passing requests carry upstream.
			on, err := switchArg(h.Dispenser, "on", "off")
			if err != nil {
				return nil, err
			}
			g.OmitAssertion = !on
		case "preflight":
			// Not a requirement either: CORS preflights, which carry no
			// cookie, pass without one.
			allow, err := switchArg(h.Dispenser, "allow", "refuse")
			if err != nil {
				return nil, err
			}
			g.AllowPreflight = allow
		default:
			if laterGate[req] {
				return nil, h.Errf("sigra_gate: %q is not available in this build yet", req)
			}
			hint := ""
			if strings.HasPrefix(req, "group") || req == "role" || req == "roles" {
				hint = "; did you mean group?"
			}
			return nil, unknownOption(h.Dispenser, "sigra_gate: unknown requirement %q (known: optional, mfa, amr, group, assertion, preflight)%s", req, hint)
		}
	}
	if err := g.checkOptional(); err != nil {
		// Found at the block's end: say where optional is.
		return nil, h.Errf("sigra_gate: %v (optional is on line %d)", err, seen["optional"])
	}
	var err error
	if g.Scope, err = gateScope(h); err != nil {
		return nil, err
	}
	g.Rank = gateRank(matcherSet)
	if m := caseSensitivePaths(matcherSet); m != "" && !g.Optional {
		placementWarning(fmt.Sprintf("sigra_gate on line %d: its %s matcher compares the path with regard to case, unlike Caddy's path matcher and many apps (Express, ASP.NET, and apps on Windows or macOS files): /ADMIN/x would miss this gate and meet only the requirements of the gates beside it. Use a path matcher, or start the pattern with (?i)", line, m))
	}
	_, bounded := matcherSet["path"]
	picksByNot := !bounded && !g.Optional && excludesPaths(matcherSet)
	if picksByNot {
		placementWarning(fmt.Sprintf("sigra_gate on line %d: it is picked by a not of path patterns, which Caddy compares with the path decoded and doubled slashes merged (and a path pattern without regard to case): /public%%2Fx, //public/x (and /PUBLIC/x) skip this gate as /public/x does, though many apps serve them as other pages. Gate the whole site with a bare sigra_gate, and make those paths optional beside it", line))
	}
	if g.Rank > 0 {
		// Its path patterns, whatever else the set asks (they are
		// ANDed): asWritten compares them with the path as written.
		g.PathsKnown = true
		_ = json.Unmarshal(matcherSet["path"], &g.Paths)
		g.NotPaths, g.PathRegexps = pathsRead(matcherSet, false)
		warnLoosePatterns("sigra_gate", line, slices.Concat(g.Paths, g.NotPaths), g.PathRegexps)
		why := pathUnknown(matcherSet)
		g.AddsOnly = why != ""
		// One picked by a not alone is warned of above, with what to
		// write instead.
		if g.AddsOnly && !picksByNot {
			placementWarning(fmt.Sprintf("sigra_gate on line %d: %s, which cannot be compared with the path as the app gets it (/public/x and /PUBLIC/x, say): this gate only adds its requirements to those of the gates beside it and never decides alone, so an optional one opens nothing a bare gate closes. Pick it by path patterns for it to decide", line, why))
		}
	}
	return g, nil
}

// gateBlock is what a block's state remembers of the gates written in
// it: their scope, and their matchers (see gateMatcher).
type gateBlock struct {
	block   uintptr // the BlockState map it was set in
	id      int
	matched []gateMatch
}

// gateBlockOf returns the state of the block a gate is written in. Caddy
// parses sibling directives with one shared BlockState map and gives a
// nested block (handle, route, handle_path) a copy of it: a mark found in
// the very map is a sibling's, one copied from the parent is not. The top
// level of every site gets the same map, though (the adaptation's State),
// so there the mark is kept per site (siteOf). Scope ids count from 1 in
// each adaptation, so `caddy adapt` prints the same config every time;
// routes adapted apart must not be joined by hand. Named routes are
// adapted apart, each with a State of its own: their ids are negative
// and drawn from the route's name (namedRouteBase), so that a gate in
// an invoked route never counts as a sibling of the site's gates.
// Without the adapter's state (a Helper made by hand) it is nil.
func gateBlockOf(h httpcaddyfile.Helper) (*gateBlock, error) {
	if h.State == nil || h.BlockState == nil {
		return nil, nil
	}
	block := reflect.ValueOf(h.BlockState).Pointer()
	key := "sigra.gate_block"
	if block == reflect.ValueOf(h.State).Pointer() {
		key = fmt.Sprintf("sigra.gate_block@%x", siteOf(h))
	}
	if b, ok := h.BlockState[key].(*gateBlock); ok && b.block == block {
		return b, nil
	}
	n, _ := h.State["sigra.gate_scopes"].(int)
	n++
	h.State["sigra.gate_scopes"] = n
	id := n
	if h.IsNamedRoute() {
		if n > 0xff {
			return nil, h.Err("sigra_gate: more than 255 blocks with gates in one named route")
		}
		id = -(namedRouteBase(h)<<8 | n)
	}
	b := &gateBlock{block: block, id: id}
	h.BlockState[key] = b
	return b, nil
}

// siteOf tells apart the server blocks whose top-level directives Caddy
// parses with one BlockState: by the block's own keys (the site
// addresses), which Caddy's Helper keeps unexported. 0 if this Caddy's
// Helper has no such field: every site's top level then shares one set
// of siblings, which can only refuse more configs, never scope fewer
// gates.
func siteOf(h httpcaddyfile.Helper) uintptr {
	keys := reflect.ValueOf(h).FieldByName("parentBlock").FieldByName("Keys")
	if !keys.IsValid() || keys.Kind() != reflect.Slice {
		return 0
	}
	return keys.Pointer()
}

// namedRouteBase is a number drawn from the name of the named route a
// gate is written in (23 bits of its FNV-1a hash, never 0), the same in
// every adaptation.
func namedRouteBase(h httpcaddyfile.Helper) int {
	name := ""
	if keys := reflect.ValueOf(h).FieldByName("parentBlock").FieldByName("Keys"); keys.IsValid() && keys.Kind() == reflect.Slice && keys.Len() > 0 {
		if t := keys.Index(0).FieldByName("Text"); t.IsValid() && t.Kind() == reflect.String {
			name = t.String()
		}
	}
	f := fnv.New32a()
	f.Write([]byte(name))
	return int(f.Sum32()&0x7fffff) | 1
}

// gateScope numbers the block a gate is written in; 0, which sets none,
// without the adapter's state.
func gateScope(h httpcaddyfile.Helper) (int, error) {
	b, err := gateBlockOf(h)
	if b == nil || err != nil {
		return 0, err
	}
	return b.id, nil
}
