package caddymodule

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// answering are Caddy's standard directives that serve every request
// they match without passing it on: whatever runs after them never sees
// those requests. Left out: redir, which answers before authentication
// in Caddy's own order with a redirect and nothing of the site; abort
// and error, which serve nothing; copy_response, which only works in
// reverse_proxy's handle_response. Other plugins' handlers cannot be
// known here.
var answering = []string{"respond", "reverse_proxy", "php_fastcgi", "file_server", "acme_server", "metrics"}

// failing are the directives that fail or drop every request they match:
// nothing after them sees it, and an error goes on to handle_errors,
// which may well proxy to the app. Without a matcher, one before a gate
// or the portal leaves it nothing to see (answersAll).
var failing = []string{"error", "abort"}

// subroutes are the blocks that pass a request on when nothing in them
// answers it: they answer what their contents answer.
var subroutes = []string{"handle", "handle_path", "route"}

// caddyOrder is Caddy's default directive order (httpcaddyfile keeps it
// unexported) for the directives the checks compare: where sigra_portal
// and sigra_gate order themselves, the routing blocks, and the
// answering directives. TestCaddyOrder holds it to the Caddy this builds
// with. The global order option, when used, gives the whole order.
var caddyOrder = []string{
	"sigra_portal", "sigra_gate", "redir", "rewrite", "uri", "try_files", "basic_auth", "forward_auth",
	"invoke", "handle", "handle_path", "route",
	"abort", "error", "respond", "metrics", "reverse_proxy", "php_fastcgi", "file_server", "acme_server",
}

// checkPlacement refuses a sigra_portal or sigra_gate (dir, at h) that
// would not see the requests it is written for. A gate that never runs
// serves the app to anyone, and `caddy validate` would pass it. In every
// block on the way to dir (the site's top level, each handle, route or
// handle_path around it), Caddy runs the block's directives in its
// directive order, or the global order option's (a route block: as
// written), and it is refused when, in one of them,
//   - a directive that answers every request (answersAll) runs before
//     dir, or before the block holding it (handle runs before route:
//     route { sigra_gate } beside a bare handle { reverse_proxy … } never
//     runs); one with a matcher, a public /healthz say, may well be
//     meant;
//   - for a portal, a directive that answers any request runs first, or
//     the block has a matcher (handle_path /app/*): the portal would see
//     part of the site only, and its sign-in pages not be served, nor
//     forged identity headers stripped, elsewhere;
//   - for a gate, it (or its block) runs before a portal (or the block
//     holding one), so the gate covers the sign-in pages.
//
// And a site with a gate and no portal is refused, unless it invokes a
// named route that holds one. Named routes are read from their adapted
// JSON; a named route's own top level is checked as a site's.
func checkPlacement(h httpcaddyfile.Helper, dir string, gatePatterns ...string) error {
	site, places := placesOf(h)
	if site == nil {
		return nil
	}
	c := placement{h: h, dir: dir, named: namedRoutesOf(h), site: site, upsFor: map[string][]string{}}
	c.order, c.byOption = h.Option("order").([]string)
	if !c.byOption {
		c.order = caddyOrder
	}
	if dir == "sigra_gate" && slices.Index(c.order, "sigra_portal") > slices.Index(c.order, "sigra_gate") && slices.ContainsFunc(places, func(p place) bool { return len(p) == 1 }) {
		return h.Err("sigra_gate: the global order option runs sigra_gate before sigra_portal, so the gate also covers the sign-in pages. " +
			"Both order themselves (the portal first): remove their order lines, or order sigra_portal before sigra_gate")
	}
	if dir == "sigra_gate" && !inNamedRoute(h) && len(c.holding(site, "sigra_portal")) == 0 {
		if d, ok := c.matchedPortalInvoke(site); ok {
			return h.Errf("sigra_gate: the site's only sigra_portal is in the named route %s, invoked on %s with a matcher: its pages are not served, nor forged X-Sigra-* headers stripped, anywhere else. "+
				"Invoke it without a matcher, first in a route block, or write sigra_portal at the site's top level", d.lastArg(), c.pos(d))
		}
		return h.Err("sigra_gate: this site has no sigra_portal, so nobody can sign in to pass the gate, and forged X-Sigra-* headers reach the app on the paths no gate covers. " +
			"Write sigra_portal at the site's top level")
	}
	if !inNamedRoute(h) {
		if err := c.checkNamedGates(); err != nil {
			return err
		}
	}
	// A named route's tokens read as one directive, its name, whose
	// block holds the route's own top level.
	if nr := namedTop(h, site); nr != nil && len(nr.dirs) > 1 && slices.ContainsFunc(places, func(p place) bool { return len(p) == 2 }) &&
		!slices.ContainsFunc(nr.dirs, func(d placedDirective) bool { return d.matcher }) &&
		len(slices.DeleteFunc(slices.Clone(nr.dirs), func(d placedDirective) bool { return d.name != "handle" && d.name != "handle_path" })) < 2 {
		// Caddy merges directives without matchers into one route, and of
		// a named route that is one such route it keeps the first handler
		// only (httpcaddyfile, named routes): the rest vanish unsaid.
		return h.Errf("%s: Caddy keeps only the first handler of a named route whose directives have no matcher, so %s or what follows it would be dropped. "+
			"Write the named route's directives inside route { … }", dir, dir)
	}
	// The same snippet imported twice puts one directive in two places:
	// each must be right.
	for _, p := range places {
		if err := c.check(p); err != nil {
			return err
		}
		if dir == "sigra_gate" {
			if err := c.checkMethodMatchers(p); err != nil {
				return err
			}
		}
		patterns := gatePatterns
		if last := p[len(p)-1]; len(patterns) == 1 && strings.HasPrefix(last.block.dirs[last.at].path(), "/") && !strings.EqualFold(last.block.dirs[last.at].path(), patterns[0]) {
			// The snippet's gate imported again with another path: that
			// one is checked when it is parsed. (A named matcher, @adm,
			// is the path it names: checked here.)
			continue
		}
		if dir == "sigra_gate" && len(patterns) == 0 {
			// A bare gate in a block for path prefixes guards those; in
			// one whose matcher has more than paths, what its paths are.
			switch paths, kind := c.matchedPaths(p[len(p)-1].block.matched); kind {
			case matchPaths:
				patterns = paths
			case matchOther:
				at := p[len(p)-1].block.matchedAt
				name := at.readBack
				if name == "" && len(at.args) > 0 {
					name = at.args[0]
				}
				if _, lines, ok := c.matcherOn(p, name); ok && strings.HasPrefix(name, "@") {
					patterns = scopeOfLines(lines)
				}
			}
		}
		for _, pattern := range patterns {
			check := c.checkRewriteInto
			if strings.ContainsAny(strings.TrimSuffix(pattern, "*"), "*?[") {
				check = c.checkGlobMoves
			}
			if err := check(p, pattern); err != nil {
				return err
			}
			if warning := c.phpSplit(p, pattern); warning != "" {
				placementWarning(warning)
			}
		}
	}
	return nil
}

// placement is what checkPlacement checks a directive's places with.
type placement struct {
	h        httpcaddyfile.Helper
	dir      string
	order    []string // Caddy's, or the global order option's
	byOption bool
	named    map[string]namedRoute
	site     *placedBlock        // the top level, where named matchers are defined
	upsFor   map[string][]string // namedUpstreamsFor's answers
}

// check checks one place of the directive: each block on the way.
func (c placement) check(p place) error {
	if c.dir == "sigra_portal" {
		for _, s := range p[:len(p)-1] {
			if d := s.block.dirs[s.at]; d.name == "handle_errors" {
				return c.h.Errf("sigra_portal: it is inside handle_errors on %s, which runs only for errors: its pages are not served, "+
					"nor forged X-Sigra-* headers stripped, on any other request. Write sigra_portal at the site's top level", c.pos(d))
			}
		}
		for _, s := range p {
			if s.block.matched != "" {
				return c.h.Errf("sigra_portal: it is inside %s on %s, whose matcher shows it part of the site only: its pages are not served, "+
					"nor forged X-Sigra-* headers stripped, anywhere else. Write sigra_portal at the site's top level", s.block.matched, c.pos(s.block.matchedAt))
			}
		}
	}
	for k, s := range p {
		b, self := s.block, s.block.dirs[s.at]
		// what dir is here: itself, or the block holding it
		what, holder := "it", ""
		if k < len(p)-1 {
			holder = fmt.Sprintf("the %s block on %s that holds it", self.name, c.pos(self))
			what = holder
		}
		for i, d := range b.dirs {
			if i == s.at || !c.runsBefore(b, i, s.at) {
				continue
			}
			why := c.why(b, d, self)
			switch {
			case b.written && c.answersAll(d):
				if holder != "" {
					what = "the block holding " + c.dir
				} else {
					what = c.dir
				}
				return c.h.Errf("%s: %s on %s comes first in this route block (a route keeps the written order) and answers every request, so none reaches %s, and the site is served to anyone. "+
					"Write %s before it", c.dir, d.name, c.pos(d), what, c.dir)
			case c.answersAll(d) && k == 0 && holder == "" && why == orderOption:
				return c.h.Errf("%s: the global order option runs %s (%s) before %s, so the requests it answers never reach %s and are served to anyone. "+
					"%s orders itself (before redir): remove the order line that moves either, or order %s before %s", c.dir, d.name, c.pos(d), c.dir, c.dir, c.dir, c.dir, d.name)
			case c.answersAll(d):
				unread := ""
				if d.unknown {
					unread = " (as far as can be told: its matcher, an import argument, could not be read back, so it counts as matching all; write it in the snippet)"
				}
				return c.h.Errf("%s: %s on %s runs before %s (%s) and answers every request%s, so none reaches it, and the site is served to anyone. "+
					"Write %s at the site's top level, where it runs first, or give %s a matcher%s", c.dir, d.name, c.pos(d), what, why, unread, c.dir, d.name, c.orderAdvice())
			case c.dir == "sigra_portal" && c.mayAnswer(d):
				return c.h.Errf("sigra_portal: %s on %s runs before %s (%s), so the portal never sees the requests %s answers: "+
					"its pages are not served, nor forged X-Sigra-* headers stripped, there. Write sigra_portal at the site's top level, where it runs first%s", d.name, c.pos(d), what, why, d.name, c.orderAdvice())
			}
		}
		if c.dir != "sigra_gate" {
			continue
		}
		for _, i := range c.holding(b, "sigra_portal") {
			d := b.dirs[i]
			if i == s.at || !c.runsBefore(b, s.at, i) {
				continue
			}
			portal := "sigra_portal on " + c.pos(d)
			switch {
			case d.name == "invoke":
				portal = fmt.Sprintf("invoke %s on %s (its named route holds sigra_portal)", d.lastArg(), c.pos(d))
			case d.name != "sigra_portal":
				portal = fmt.Sprintf("the %s block on %s that holds sigra_portal", d.name, c.pos(d))
			}
			if b.written {
				return c.h.Errf("sigra_gate: %s comes after this gate in the route block (a route keeps the written order), so the gate also covers the sign-in pages. Write sigra_portal first", portal)
			}
			return c.h.Errf("sigra_gate: %s runs before %s (%s), so the gate also covers the sign-in pages. "+
				"Write sigra_portal at the site's top level, where it runs first%s", what, portal, c.why(b, self, d), c.orderAdvice())
		}
	}
	return nil
}

// checkRewriteInto refuses a gate on the path pattern (gatePrefix; none:
// nothing to check) at place p when a directive that runs after it, in a
// block on the way to it or in a handle, handle_path or route block
// there, sends other paths into the gated one: a rewrite, a uri replace
// or path_regexp, a try_files fallback, a reverse_proxy's own rewrite (of
// the URI it sends the gated upstream). The gates match the path the
// client asked for (they run before all of those), so /x/… rewritten to
// /admin/… reaches the app as /admin/… ungated. One that changes only
// paths the gate covers already is no such way in. A uri strip_prefix
// after the gate needs a gate on both paths: the app sees /admin/… for
// /app/admin/… and for /admin/… itself.
func (c placement) checkRewriteInto(p place, pattern string) error {
	if pattern == "" {
		return nil
	}
	end := p[len(p)-1]
	self := &end.block.dirs[end.at] // by address: a snippet imported twice puts two gates on one line
	if reqs := gateReqs(*self); reqs.optional {
		return nil // it lets anyone in: there is no way round it
	}
	h := c.h
	pre := strings.ToLower(strings.TrimSuffix(pattern, "*"))
	// prefixUnder reports whether a path, or a path pattern, may be under
	// the gate's, as written: a placeholder extends what is written
	// before it.
	prefixUnder := func(path string) bool {
		if u, err := url.PathUnescape(path); err == nil {
			path = u // Caddy unescapes a rewrite's target: /%61dmin is /admin
		}
		if path != "" && !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "{") && !strings.HasPrefix(path, "?") {
			path = "/" + path // admin/index.html is /admin/index.html to Caddy
		}
		lit := strings.ToLower(path)
		if i := strings.IndexAny(lit, "{?$"); i > 0 && lit[i] == '?' {
			lit = lit[:i] // a query after the path: the path is written out
		} else if i >= 0 {
			// A placeholder or a capture may make it anything from
			// there; the request's own path keeps what it was.
			lit = lit[:i]
			if (lit == "" || lit == "/") && !keepsPath(path) {
				return true
			}
			if after := path[strings.IndexByte(path, '}')+1:]; keepsPath(path) && strings.HasSuffix(pre, "/") && strings.HasPrefix(after, "/") &&
				!strings.Contains(strings.TrimPrefix(pre[strings.LastIndex(strings.TrimSuffix(pre, "/"), "/")+1:], "."), ".") {
				// /admin, which /admin/* leaves out, made /admin/…; but not
				// /index.php made /index.php/: a file, which try_files
				// takes as it is
				return true
			}
			if after := strings.ToLower(path[strings.IndexByte(path, '}')+1:]); keepsPath(path) && !strings.HasSuffix(pattern, "*") &&
				after != "" && !strings.ContainsAny(after, "{?$") {
				// {path}.html: the path asked for and a suffix, which
				// makes /report.html of /report
				return len(pre) > len(after) && strings.HasSuffix(pre, after)
			}
			return strings.HasPrefix(lit, pre) || len(lit) > 1 && strings.HasPrefix(pre, lit)
		}
		if !strings.HasSuffix(pattern, "*") {
			return lit == pre
		}
		return strings.HasPrefix(lit, pre)
	}
	// under reports whether a target path may be under the gate's: as
	// written, or anywhere when a placeholder in it may hold ../.
	clientRx := c.clientCaptures()
	under := func(path string) bool {
		return prefixUnder(path) || !fromPathOnly(path, clientRx)
	}
	if err := c.checkBefore(p, pattern, self); err != nil {
		return err
	}
	guarded := c.guarded(p, pre) // the upstreams the gated path may reach
	for _, a := range c.after(p) {
		d := a.d
		// The request meets the gates of the blocks it shares with the
		// gate, down to the one d is written in or beside, and those of
		// the blocks from there to d.
		met := slices.Concat(p[:a.level+1], a.inner)
		last := d.lastArg()
		strip := ""
		switch {
		case d.name == "uri":
			if i := slices.Index(d.args, "strip_prefix"); i >= 0 && i+1 < len(d.args) {
				strip = d.args[i+1]
			}
		case d.name == "handle_path" && c.stripsForApp(d):
			// handle_path /app/* strips /app before what it holds, which
			// sends the request on to an upstream, or before what follows
			// it, when what it holds does not answer every request
			if paths, kind := c.openerPaths(d); kind == matchPaths && len(paths) == 1 {
				strip = strings.TrimSuffix(paths[0], "*")
			}
		}
		if strip != "" {
			if err := c.checkStrip(p, met, a, strip, pattern, self); err != nil {
				return err
			}
			continue
		}
		// Where the directive may send a request, and the matcher of the
		// requests it changes ("" if it has none).
		var into, from, what string
		var sources []string // the paths it may send into the gate's, when known
		sends := false       // whether it may send requests into the gate's path (into: where; "" a path cut to nothing)
		at := c.pos(d)
		rewrite := false // a rewrite to a path written out, which is only a way in when under the gate's
		switch op := slices.IndexFunc(d.args, func(a string) bool { return a == "replace" || a == "path_regexp" }); {
		case d.name == "rewrite" && len(d.args) > 0:
			into, what, rewrite, sends = last, "rewrite", true, true
			if d.args[0] != last {
				from = d.args[0]
			}
		case (d.name == "reverse_proxy" || d.name == "php_fastcgi") && d.block != nil:
			// A proxy's rewrite sets the URI the upstream is sent (the
			// last one written counts), as php_fastcgi's try_files may;
			// for another upstream than the gated one, that app's own
			// business. php_fastcgi first redirects a directory asked for
			// without its slash, unless its index is off: the gates see
			// {path}/index.php asked for again.
			if c.takesAll(d) && !c.sameUpstream(c.upstreams(d), guarded) {
				continue
			}
			index := phpIndex(d)
			redirected := func(f string) bool { // {path}/index.php, which php_fastcgi redirects to {path}/ first
				return d.name == "php_fastcgi" && index != "off" && (f == "{path}/"+index || f == "{http.request.uri.path}/"+index)
			}
			if i := slices.IndexFunc(d.block.dirs, func(e placedDirective) bool { return e.name == "try_files" }); d.name == "php_fastcgi" && i >= 0 {
				if k := slices.IndexFunc(d.block.dirs[i].args, func(f string) bool {
					return under(f) && !redirected(f)
				}); k >= 0 {
					into, what, at, sends = d.block.dirs[i].args[k], "the try_files in "+d.name, c.pos(d.block.dirs[i]), true
				}
			}
			for i := len(d.block.dirs) - 1; !sends && i >= 0; i-- {
				if e := d.block.dirs[i]; e.name == "rewrite" && len(e.args) > 0 {
					into, what, rewrite, at, sends = e.args[0], "the rewrite in "+d.name, true, c.pos(e), true
				}
			}
			if !sends {
				continue
			}
			if d.matcher && len(d.args) > 0 {
				from = d.args[0]
			}
		case d.name == "invoke":
			// What the named route it runs does to the path, read from
			// its JSON (placeholders spelt out). For another upstream
			// than the gated one, that app's own business, if the route
			// answers every request it changes.
			r, ok := c.named[d.lastArg()]
			if !ok || r.keepsAll && !c.sameUpstream(r.upstreams, guarded) {
				continue
			}
			if d.matcher && len(d.args) > 1 {
				from = d.args[0]
			}
			if d.readBack != "" {
				from = d.readBack
			}
			strips := slices.ContainsFunc(r.rewrites, func(rw routeRewrite) bool { return rw.op == "strip" })
			var found *routeRewrite
			for _, rw := range r.rewrites {
				if len(rw.paths) > 0 && rw.answers && !c.sameUpstream(rw.ups, guarded) {
					continue // in a route of it that serves another app
				}
				// the paths it changes: those of the route in it with a
				// path matcher, else the invoke's
				rwFroms := rw.paths
				if len(rwFroms) == 0 {
					rwFroms = []string{from}
				}
				if strips {
					rwFroms = []string{""} // what the strip leaves may be anything
				}
				if rw.op == "strip" {
					sa := a
					sa.in = &placedBlock{dirs: a.in.dirs, matched: a.in.matched, matchedAt: a.in.matchedAt}
					if len(rw.paths) > 0 {
						sa.in.matched = "path " + strings.Join(rw.paths, " ")
					}
					if err := c.checkStrip(p, met, sa, rw.into, pattern, self); err != nil {
						return err
					}
					continue
				}
				rep := strings.ToLower(rw.into)
				if slices.ContainsFunc(rwFroms, func(f string) bool {
					switch rw.op {
					case "rewrite":
						return under(knownPrefix(rw.into, f))
					case "try_files":
						return under(rw.into)
					case "strip_suffix":
						return suffixMayForm(pattern)
					case "path_regexp":
						return strings.Contains(rep, pre) || under(rep) || rep == "" && !strings.HasSuffix(rw.find, "$")
					}
					return replaceMayForm(strings.ToLower(rw.find), rep, pre) || !fromPathOnly(rw.into, clientRx)
				}) && !(len(rw.paths) > 0 && !slices.ContainsFunc(rw.paths, func(f string) bool { return !prefixUnder(f) })) {
					found = &rw
					break
				}
			}
			if found == nil {
				continue
			}
			into, sends, what = found.into, true, fmt.Sprintf("the %s in the named route %s (invoked", found.op, d.lastArg())
			if found.op == "strip_suffix" {
				into = pattern // where it sends; found.into is the suffix
			}
			at += ")"
		case d.name == "try_files":
			// its fallback: a request for no file goes there
			what = "try_files" // which takes no matcher: every argument is a file
			if i := slices.IndexFunc(d.args, under); i >= 0 {
				into, sends = d.args[i], true
				if keepsPath(into) && strings.HasSuffix(pre, "/") && !slices.ContainsFunc(d.args, func(f string) bool { return under(f) && !keepsPath(f) }) {
					// {path}/… only: /admin, which /admin/* leaves out, is
					// the one path it sends in
					sources = []string{strings.TrimSuffix(pre, "/")}
				} else if after := strings.ToLower(into[strings.IndexByte(into, '}')+1:]); keepsPath(into) && !strings.HasSuffix(pattern, "*") && strings.HasSuffix(pre, after) &&
					!slices.ContainsFunc(d.args, func(f string) bool { return under(f) && !keepsPath(f) }) {
					// {path}.html only: /report, for the gate on /report.html
					sources = []string{strings.TrimSuffix(pre, after)}
				}
			}
		case d.name == "uri" && slices.Contains(d.args, "strip_suffix"):
			// /secret/ made /secret: a gate on a path prefix covers both
			// already, one on a path exactly (or a suffix, a glob) may not
			what = "uri strip_suffix"
			if i := slices.Index(d.args, "strip_suffix"); suffixMayForm(pattern) {
				into, sends = pattern, true
				if i+1 < len(d.args) && !strings.HasSuffix(pattern, "*") && strings.HasPrefix(pattern, "/") && !strings.ContainsAny(pattern, "{?[*") {
					sources = []string{pre + strings.ToLower(d.args[i+1])}
				}
				if i > 0 {
					from = d.args[0]
				}
			}
		case d.name == "uri" && op >= 0 && op+2 < len(d.args):
			// uri replace /old /admin may make a gated path of one that
			// was not; path_regexp's replacement, from captures, may be
			// anything, and one that cuts text out (but at the end) may
			// join what was around it into anything too.
			what = "uri " + d.args[op]
			find, rep := strings.ToLower(d.args[op+1]), strings.ToLower(d.args[op+2])
			if d.args[op] == "path_regexp" && (strings.Contains(rep, pre) || under(rep) || rep == "" && !strings.HasSuffix(find, "$")) ||
				d.args[op] == "replace" && (replaceMayForm(find, rep, pre) || !fromPathOnly(d.args[op+2], clientRx)) {
				into, sends = d.args[op+2], true
			}
			if d.args[op] == "replace" && op+3 < len(d.args) && d.args[op+3] == "1" {
				// the paths it may send in, when it replaces one
				// occurrence only (/legacy/legacy/admin loses both)
				sources = replaceSources(find, rep, pre)
			}
			if op > 0 {
				from = d.args[0]
			}
		}
		if d.readBack != "" {
			from = d.readBack
		}
		if !sends || rewrite && !under(knownPrefix(into, from)) {
			continue
		}
		if a.root != nil && a.root.block != nil && isHandle(a.root.name) && c.takesAll(*a.root) {
			// In a handle that answers every request it takes (one that
			// does not hands the request, rewritten, on to what follows):
			// only a proxy there to the gated upstream serves the path
			// rewritten.
			if theirs := c.upstreamsIn(a.root.block); len(theirs) > 0 && !c.sameUpstream(theirs, guarded) {
				continue
			}
		}
		// The paths it changes: its matcher's, or its block's.
		froms := c.fromPaths(from)
		if paths, kind := c.matchedPaths(a.in.matched); kind == matchPaths && !strings.HasPrefix(froms[0], "/") && !strings.HasPrefix(a.in.matched, "handle_path ") {
			froms = paths // (in a handle_path, what it holds sees the path stripped of them)
		}
		if !slices.ContainsFunc(froms, func(f string) bool {
			return !strings.HasPrefix(f, "/") || !prefixUnder(f) || !c.decidesAlone(p, f, self)
		}) {
			continue // from paths this gate covers already
		}
		if !strings.HasPrefix(froms[0], "/") {
			froms = []string{""} // any path
		}
		if rest, ok := uriRest(into, pre); rewrite && ok && froms[0] == "" {
			sources = []string{rest + "*"} // /v1{uri}: only /admin… becomes /v1/admin…
		}
		if len(sources) > 0 && !slices.Contains(sources, "") {
			// of the paths it changes, those it may send there
			froms = slices.DeleteFunc(sources, func(src string) bool {
				return froms[0] != "" && !slices.ContainsFunc(froms, func(f string) bool { return overlap(strings.ToLower(f), strings.TrimSuffix(src, "*")) })
			})
			if len(froms) == 0 {
				continue
			}
		}
		if c.passesAlready(met, froms, self) {
			continue // from paths whose gate asks for as much
		}
		anywhere := ""
		if into != "" && !fromPathOnly(into, clientRx) {
			anywhere = " (a placeholder there takes a value the client sends, not from the path, and ../ in it leads anywhere)"
		}
		return h.Errf("sigra_gate: %s on %s sends requests to %s%s after this gate has looked at the path the client asked for (the gates run before rewrite, uri, try_files and the proxy), so those requests reach the app there without this gate's requirements. "+
			"Gate the paths clients ask for as well, with the same requirements, or put the gate in a handle block for its path, which sees the path rewritten", what, at, cmp.Or(into, `"" (cutting the path)`), anywhere)
	}
	return nil
}

// placementWarning logs what the placement checks warn of (a variable
// for tests).
var placementWarning = func(msg string) { caddy.Log().Named("caddyfile").Warn(msg) }

// phpSplit is a warning for a gate on pattern (at the end of p) in a
// PHP site, unless the same path behind the front controller's name
// (/index.php/admin…) meets a gate that asks for as much, or the site
// refuses such paths (respond, error or abort on /index.php/*):
// php_fastcgi splits the path at .php and hands the app the rest as
// PATH_INFO, and Laravel and Symfony route /index.php/admin/users as
// /admin/users, which no /admin* gate matched. A warning, not a
// refusal: WordPress and other apps that serve their admin pages as
// files of their own route nothing so, and some use such paths for
// their pages. A gate on a script (/admin.php) is no route of the front
// controller's.
func (c placement) phpSplit(p place, pattern string) string {
	end := p[len(p)-1]
	self := &end.block.dirs[end.at]
	if gateReqs(*self).optional || !strings.HasPrefix(pattern, "/") || strings.Contains(strings.ToLower(pattern), ".php") {
		return ""
	}
	index := ""
	var walk func(b *placedBlock)
	walk = func(b *placedBlock) {
		for _, d := range b.dirs {
			if d.name == "php_fastcgi" && index == "" {
				index = phpIndex(d)
			}
			if d.block != nil && d.name != "handle_errors" {
				walk(d.block)
			}
		}
	}
	walk(c.site)
	if index == "" || index == "off" {
		return ""
	}
	split := "/" + strings.ToLower(index)
	if c.passesAlready(p, []string{split + pattern}, self) {
		return ""
	}
	// Refused outright: respond /index.php/* 404, or one in a handle on it.
	refuses := false
	var look func(b *placedBlock, matched []string)
	look = func(b *placedBlock, matched []string) {
		for _, d := range b.dirs {
			paths := matched
			if d.matcher && len(d.args) > 0 {
				paths = c.fromPaths(cmp.Or(d.readBack, d.args[0]))
			} else if d.readBack != "" {
				paths = c.fromPaths(d.readBack)
			}
			if (d.name == "respond" || d.name == "error" || d.name == "abort") && slices.ContainsFunc(paths, func(m string) bool {
				m = strings.ToLower(m)
				return m == split+"/*" || m == split+"*"
			}) {
				refuses = true
			}
			if d.block != nil && (d.name == "handle" || d.name == "route") {
				look(d.block, paths)
			}
		}
	}
	look(c.site, nil)
	if refuses {
		return ""
	}
	shown := strings.TrimSuffix(pattern, "*") + "…"
	return fmt.Sprintf("sigra_gate %s on %s: this is a PHP site (php_fastcgi, front controller %s), which splits the path at .php and hands the app the rest: Laravel and Symfony route %s%s as %s, which this gate does not see. "+
		"If your app routes so, gate %s%s as well, with the same requirements, or refuse such paths (respond %s/* 404)", pattern, c.pos(*self), index, split, shown, shown, split, pattern, split)
}

// unreadablePaths stands, among a gate's path patterns, for paths its
// matcher picks in a way that cannot be read (a path_regexp, a not
// path, an expression): checked as a glob is (checkGlobMoves).
const unreadablePaths = "/?*"

// scopeOfLines are the path patterns that a named matcher's lines (a
// gate's, or its block's) confine it to: those of its path lines, when
// the rest (a method, a client address) only narrow which requests of
// those paths it takes; unreadablePaths when a path_regexp, a not with
// a path, or an expression that may look at the path picks them; none
// when nothing in it looks at the path (a method alone: every path
// alike, as for a gate without a matcher).
func scopeOfLines(lines [][]string) []string {
	var paths []string
	for _, l := range lines {
		text := strings.ToLower(strings.Join(l, " "))
		switch {
		case l[0] == "path":
			for _, m := range l[1:] {
				if !strings.HasPrefix(m, "/") || strings.Contains(m, "{") {
					return []string{unreadablePaths}
				}
				paths = append(paths, strings.ToLower(m))
			}
		case l[0] == "path_regexp", (l[0] == "not" || !slices.Contains(caddyMatchers, l[0])) && strings.Contains(text, "path"):
			return []string{unreadablePaths}
		}
	}
	return paths
}

// caddyMatchers are Caddy's standard request matchers, as a named
// matcher's lines start; a line that starts otherwise is an expression
// (the backquoted shorthand), as is one that starts with expression.
var caddyMatchers = []string{"client_ip", "file", "header", "header_regexp", "host", "method", "path",
	"path_regexp", "protocol", "query", "remote_ip", "vars", "vars_regexp"}

// checkGlobMoves refuses a gate on a path glob (/reports/*.pdf, at the
// end of p) when anything after it may change the path (movesPath):
// which paths a rewrite or a strip sends into a glob cannot be told as
// for a prefix, and /reports/q.pdf.bak stripped of .bak is
// /reports/q.pdf. A block beside that serves another upstream all it
// takes is that app's own business.
func (c placement) checkGlobMoves(p place, pattern string) error {
	end := p[len(p)-1]
	if gateReqs(end.block.dirs[end.at]).optional {
		return nil // it lets anyone in
	}
	lit := pattern[:strings.IndexAny(pattern, "*?[")]
	guarded := c.guarded(p, strings.ToLower(lit))
	for _, a := range c.after(p) {
		if a.root != nil && a.root.block != nil && isHandle(a.root.name) && c.takesAll(*a.root) && !c.sameUpstream(c.upstreamsIn(a.root.block), guarded) {
			continue
		}
		if !c.movesPath(a.d) {
			continue
		}
		if pattern == unreadablePaths {
			return c.h.Errf("sigra_gate: its matcher picks paths in a way that cannot be read (a path_regexp, a not path, an expression), and %s on %s may change the path after this gate has looked at it: whether that sends requests into this gate's paths cannot be told, so a request may reach the app there without this gate's requirements. "+
				"Pick the gate's paths with path matchers, or put the gate in a handle block for its paths, which sees the path changed", a.d.name, c.pos(a.d))
		}
		return c.h.Errf("sigra_gate: it is on the path pattern %s, and %s on %s may change the path after this gate has looked at it: which paths that sends into a pattern with a wildcard inside cannot be told, so a request may reach the app there without this gate's requirements. "+
			"Gate a path prefix (%s*) instead, or put the gate in a handle block for its paths, which sees the path changed", pattern, a.d.name, c.pos(a.d), lit)
	}
	return nil
}

// after is what may change the path after the directive at p: what runs
// after it in each block on the way, and inside the handle, handle_path
// and route blocks there; the other handle blocks beside one on the way,
// whatever their order, as a request that one of them takes never meets
// the directive; and a block that runs before it and may answer.
func (c placement) after(p place) []placedIn {
	var after []placedIn
	for k, s := range p {
		for i, d := range s.block.dirs {
			switch {
			case i == s.at:
			case !c.runsBefore(s.block, i, s.at), k < len(p)-1 && isHandle(d.name),
				slices.Contains(subroutes, d.name) && c.mayAnswer(d):
				after = appendWithin(after, d, s.block, k, nil)
			}
		}
	}
	return after
}

// stripsForApp reports whether the handle_path d strips its prefix from
// requests that then reach an app: one it holds a server for, or, when
// what it holds may not answer (a request_header alone), the site's
// directives after it.
func (c placement) stripsForApp(d placedDirective) bool {
	return d.block != nil && (slices.ContainsFunc(servers, func(n string) bool { return len(c.holding(d.block, n)) > 0 }) || !c.blockKeeps(d.block))
}

// movesPath reports whether d may change a request's path: a rewrite, a
// uri strip, replace or path_regexp, a try_files, a handle_path that
// proxies, a proxy's own rewrite or try_files, an invoke of a named route
// that does any of those.
func (c placement) movesPath(d placedDirective) bool {
	switch d.name {
	case "rewrite", "try_files":
		return true
	case "uri":
		return slices.ContainsFunc(d.args, func(a string) bool {
			return a == "strip_prefix" || a == "strip_suffix" || a == "replace" || a == "path_regexp"
		})
	case "handle_path":
		return c.stripsForApp(d)
	case "reverse_proxy", "php_fastcgi":
		return d.block != nil && slices.ContainsFunc(d.block.dirs, func(e placedDirective) bool { return e.name == "rewrite" || e.name == "try_files" })
	case "invoke":
		return len(c.named[d.lastArg()].rewrites) > 0
	}
	return false
}

// checkNamedGates refuses a site that invokes a named route holding a
// gate for some paths only and changes the path after it (or, in a PHP
// site, before it); a bare gate sees every request alike. The
// gate is checked where it is written, in the route, which cannot know
// the sites that invoke it; a gate shared through a snippet (import) is
// checked in each site.
func (c placement) checkNamedGates() error {
	php := len(c.holding(c.site, "php_fastcgi")) > 0
	var walk func(b *placedBlock, p place) error
	walk = func(b *placedBlock, p place) error {
		for i, d := range b.dirs {
			q := append(slices.Clone(p), step{block: b, at: i})
			// a gate for some paths: one with a matcher in the route, or
			// any gate there when the invoke, or a block around it, has one
			r := c.named[d.lastArg()]
			if d.name == "invoke" && r.gate && d.matcher && len(d.args) > 1 && strings.HasPrefix(d.args[0], "@") {
				// invoke @del route-with-a-gate: the gate is picked by the
				// invoke's matcher, which a POST with _method=DELETE
				// passes by (checkMethodMatchers)
				if def, lines, ok := c.matcherOn(q, d.args[0]); ok {
					if listed, picks, post, _ := methodsOf(lines); picks && !post {
						return c.h.Errf("%s: invoke on %s runs the named route %s, which holds a sigra_gate, only for the matcher %s (%s), which picks requests by method (%s) and leaves out POST, while most web frameworks serve a POST with _method=DELETE in its form or query, or an X-HTTP-Method-Override header, as a DELETE: such a request reaches the app without the gate. "+
							"Add POST to the method matcher, or invoke the route by path", c.dir, c.pos(d), d.lastArg(), d.args[0], c.pos(def), cmp.Or(listed, "an expression"))
					}
				}
			}
			scoped := r.pathGate || r.gate && (d.matcher || d.unknown || slices.ContainsFunc(q, func(s step) bool { return s.block.matched != "" }))
			if d.name == "invoke" && scoped {
				for _, a := range c.after(q) {
					if a.root != nil && a.root.block != nil && c.takesAll(*a.root) && !c.sameUpstream(c.upstreamsIn(a.root.block), r.upstreams) {
						continue // a block beside that serves another app what it takes
					}
					if c.movesPath(a.d) {
						return c.h.Errf("%s: invoke on %s runs the named route %s, which holds a sigra_gate, and %s on %s may change the path after it: the gate saw the path before, so a request may reach a gated path without it. "+
							"A gate in a named route is checked in the route only: share gates with a snippet (import), whose gates are checked in each site, or write them in the site", c.dir, c.pos(d), d.lastArg(), a.d.name, c.pos(a.d))
					}
				}
				for _, s := range q {
					for j, e := range s.block.dirs {
						if php && j != s.at && c.runsBefore(s.block, j, s.at) && c.movesPath(e) {
							return c.h.Errf("%s: %s on %s runs before invoke on %s, whose named route %s holds a sigra_gate, and may change the path the gate sees, while php_fastcgi hands the app the path the client asked for. "+
								"Share gates with a snippet (import), whose gates are checked in each site, or write them in the site", c.dir, e.name, c.pos(e), c.pos(d), d.lastArg())
						}
					}
				}
			}
			if d.block != nil && d.name != "handle_errors" && !strings.HasPrefix(d.name, "@") {
				if err := walk(d.block, q); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(c.site, nil)
}

// decidesAlone reports whether self, at the end of p, decides for every
// path of the pattern f that it covers: no other gate on the way has a
// matcher that may take some of them and is more specific (a longer
// prefix decides first), or cannot be compared.
func (c placement) decidesAlone(p place, f string, self *placedDirective) bool {
	mine := len(strings.TrimSuffix(self.path(), "*"))
	fl := strings.ToLower(strings.TrimSuffix(f, "*"))
	for _, s := range p {
		for i := range s.block.dirs {
			g := &s.block.dirs[i]
			if g.name != "sigra_gate" || g == self || !g.matcher && !g.unknown {
				continue
			}
			gp := strings.ToLower(g.path())
			if gp == "" || !strings.HasPrefix(gp, "/") || strings.ContainsAny(strings.TrimSuffix(gp, "*"), "*{?[") {
				return false // a matcher that cannot be compared
			}
			if len(strings.TrimSuffix(gp, "*")) > mine && overlap(gp, fl) {
				return false
			}
		}
	}
	return true
}

// checkBefore checks what changes the path before the gate on pattern
// (self, at the end of p) sees it: a handle_path on the way strips its
// prefix first, so a request for the stripped path itself, outside it,
// must not reach the same upstream past the gate; and a try_files or a
// rewrite that runs before a block on the way that has a path matcher
// may move the block's paths out of it, so the gate never sees them,
// while php_fastcgi hands the app the original URI.
func (c placement) checkBefore(p place, pattern string, self *placedDirective) error {
	pre := strings.ToLower(strings.TrimSuffix(pattern, "*"))
	gated := strings.TrimSuffix(pattern, "*")
	php := len(c.holding(c.site, "php_fastcgi")) > 0
	for k := range p {
		s := p[k]
		way := s.block.dirs[s.at]
		if k < len(p)-1 && way.name == "handle_path" && way.block != nil && self.matcher { // a bare gate guards the whole mount
			reach := c.guarded(p[:1], pre, way.block)
			if len(reach) > 0 && c.sameUpstream(c.upstreamsIn(way.block), reach) && !c.passesAlready(p[:k+1], []string{pattern}, self) {
				return c.h.Errf("sigra_gate: it is inside handle_path on %s, which strips its prefix first, so it sees %s… while a request for %s… itself goes past the handle_path to the same upstream, where no gate asks for this one's requirements. "+
					"Gate %s at the site's top level as well, with the same requirements, or proxy nothing else to that upstream", c.pos(way), gated, gated, pattern)
			}
		}
		// What moves the path before a block with a path matcher on the
		// way, or before the gate itself when it has one (written after
		// it in a route, or ordered so), hides the path from it.
		if !php || !way.matcher && !self.matcher {
			continue
		}
		for i, d := range s.block.dirs {
			if i == s.at || !c.runsBefore(s.block, i, s.at) {
				continue
			}
			moves := (d.name == "try_files" || d.name == "invoke") && c.movesPath(d)
			if d.name == "rewrite" && len(d.args) > 0 {
				from := d.readBack
				if from == "" && len(d.args) > 1 {
					from = d.args[0]
				}
				target := strings.ToLower(d.lastArg())
				moves = !strings.HasPrefix(target, pre) && slices.ContainsFunc(c.fromPaths(from), func(f string) bool {
					return !strings.HasPrefix(f, "/") || overlap(strings.ToLower(f), pre)
				})
			}
			switch {
			case moves && k < len(p)-1:
				return c.h.Errf("sigra_gate: %s on %s runs before the %s block on %s that holds this gate, and may send its paths elsewhere, so the block and its gate never see them, while php_fastcgi hands the app the path the client asked for. "+
					"Write the gate at the site's top level, where it sees the path asked for, or move %s into the block, after the gate", d.name, c.pos(d), way.name, c.pos(way), d.name)
			case moves:
				return c.h.Errf("sigra_gate: %s on %s runs before this gate (%s) and may send its paths elsewhere, so the gate never sees them, while php_fastcgi hands the app the path the client asked for. "+
					"Write the gate first, at the site's top level, where it sees the path asked for", d.name, c.pos(d), c.why(s.block, d, *self))
			}
		}
	}
	return nil
}

// checkStrip checks a strip of prefix strip (a uri strip_prefix, or a
// handle_path that proxies: a.d) after the gate self on pattern. The app
// behind it sees /admin/x for a request to /app/admin/x, to /admin/x
// itself (which the strip leaves alone), and, when the prefix has no
// trailing slash, to /appadmin/x: a gate must cover them all, unless the
// strip proxies to another upstream than the gate guards.
func (c placement) checkStrip(p, met place, a placedIn, strip, pattern string, self *placedDirective) error {
	d := a.d
	slash := strings.HasSuffix(strip, "/") // handle_path /app/* lets in /app/… only: its strip is /app/
	// as Caddy takes it: a leading /, and the / after it left on the path
	if strip = "/" + strings.Trim(strip, "/"); strip == "/" {
		return nil
	}
	lstrip := strings.ToLower(strip)
	pre := strings.ToLower(strings.TrimSuffix(pattern, "*"))
	if strings.HasSuffix(pattern, "*") && strings.HasPrefix(lstrip, pre) && c.decidesAlone(p, lstrip+"*", self) {
		return nil // handle_path /admin-ui/* under a gate on /admin*: every request it strips met this gate
	}
	star := ""
	if strings.HasSuffix(pattern, "*") {
		star = "*"
	}
	asked, stripped := strip+pattern, pattern // the gate is on the path the app sees
	if rest, ok := strings.CutPrefix(pre, lstrip); ok {
		asked, stripped = pattern, "/"+strings.TrimPrefix(rest, "/")+star
	}
	block := a.in // what the strip's requests go on through
	if d.name == "handle_path" {
		block = d.block
	}
	theirs := c.upstreamsIn(block)
	// A request for the stripped path itself enters the strip's block
	// only if its matcher lets in more than the prefix.
	var confined *placedBlock
	if _, kind := c.matchedPaths(a.in.matched); d.name == "handle_path" || a.in != p[0].block && kind == matchPaths && c.confinedTo(a.in.matched, lstrip) {
		confined = block
	}
	if c.blockKeeps(block) && !c.sameUpstream(theirs, c.guarded(p, pre)) {
		return nil // another app's: what it sees of this app's paths is none of this gate's business
	}
	// The ways in, each to be gated alike: the asked path through the
	// strip; the stripped path asked for directly, when it reaches the
	// same upstream without passing this gate; and, for a prefix without
	// its slash, the prefix glued to the stripped path.
	other := stripped
	if asked != pattern {
		other = asked
	}
	inner := met
	if d.name == "handle_path" {
		// gates in the handle_path see the stripped path
		inner = append(slices.Clone(met), step{block: d.block, at: -1})
	}
	both := fmt.Sprintf("put the gate and what it guards in handle_path %s/* { … }, written for the path the app sees, or gate %s as well as %s, with the same requirements", strip, asked, stripped)
	seen := strings.TrimSuffix(stripped, "*")
	what, at := "uri strip_prefix", c.pos(d)
	switch d.name {
	case "handle_path":
		what = "handle_path"
	case "invoke":
		what, at = "the strip in the named route "+d.lastArg()+" (invoked", at+")"
	}
	switch {
	case asked != pattern && !c.passesAlready(met, []string{other}, self) && !(d.name == "handle_path" && c.passesAlready(inner, []string{stripped}, self)):
		// /app/admin/x, stripped to /admin/x after the gate looked at
		// it: a gate on /admin* never saw it.
		return c.h.Errf("sigra_gate: %s on %s strips %s after this gate, which sees %s… where the app will see %s…, so those requests reach the app without this gate's requirements. "+
			"To gate both ways in, %s", what, at, strip, strip+strings.TrimSuffix(pattern, "*"), strings.TrimSuffix(pattern, "*"), both)
	case asked == pattern && c.directReaches(p, strings.TrimSuffix(stripped, "*"), theirs, confined) && !c.passesAlready(p, []string{stripped}, self):
		// A gate on /app/admin*, where a request for /admin/x reaches
		// the same upstream.
		return c.h.Errf("sigra_gate: %s on %s strips %s after this gate, so the app sees %s… for a request to %s…, which the gate covers, and for a request to %s… itself, which it does not: those reach the app without this gate's requirements. "+
			"To gate both ways in, %s", what, at, strip, seen, strip+seen, seen, both)
	}
	ownPath := strings.ToLower(d.path()) // uri /app/* strip_prefix /app strips /app/… only
	if ownPath != "" && strings.HasPrefix(strings.TrimSuffix(ownPath, "*"), lstrip+"/") {
		slash = true
	}
	if glued := strip + strings.TrimPrefix(stripped, "/"); !slash && !c.confinedTo(a.in.matched, lstrip+"/") && !c.passesAlready(met, []string{glued}, self) {
		return c.h.Errf("sigra_gate: %s on %s strips %s from any path that starts so, so the app also sees %s… for a request to %s…, which no gate with this one's requirements covers. "+
			"Strip %s/ instead, or %s", what, at, strip, seen, strings.TrimSuffix(glued, "*"), strip, both)
	}
	return nil
}

// directReaches reports whether a request for the path prefix pre,
// unstripped, may reach one of the upstreams theirs: through the blocks
// on the way p and the blocks there its path goes into, but for the
// block of the strip itself, which such a request does not enter.
func (c placement) directReaches(p place, pre string, theirs []string, strip *placedBlock) bool {
	reach := c.guarded(p[:1], strings.ToLower(pre), strip)
	return len(reach) > 0 && c.sameUpstream(theirs, reach)
}

// guarded are the upstreams a request for the path prefix pre may reach
// from the blocks of p: those proxied to there, and in the blocks whose
// matchers may let it in (any but path matchers that leave it out), but
// for the blocks except.
func (c placement) guarded(p place, pre string, except ...*placedBlock) []string {
	var out []string
	covers := func(d placedDirective) bool { // a handle whose path prefix holds every path of pre
		paths, kind := c.openerPaths(d)
		return kind == matchPaths && slices.ContainsFunc(paths, func(m string) bool {
			return strings.HasSuffix(m, "*") && strings.HasPrefix(pre, strings.TrimSuffix(m, "*"))
		})
	}
	inside := func(d placedDirective) bool { // a handle for paths under pre, more specific than one that covers it
		paths, kind := c.openerPaths(d)
		return kind == matchPaths && slices.ContainsFunc(paths, func(m string) bool { return strings.HasPrefix(strings.TrimSuffix(m, "*"), pre) })
	}
	var serve func(b *placedBlock)
	serve = func(b *placedBlock) {
		// Caddy runs one handle of a block, the most specific that
		// matches: beside one that takes all of pre, only those for
		// paths under pre see it.
		taken := slices.ContainsFunc(b.dirs, func(d placedDirective) bool { return isHandle(d.name) && covers(d) })
		for _, d := range b.dirs {
			switch m := strings.ToLower(d.path()); {
			case m != "" && !mayOverlap(m, pre): // a proxy only for other paths
			case d.name == "invoke" && len(c.named[d.lastArg()].handlers) > 0:
				out = append(out, c.namedUpstreamsFor(d.lastArg(), pre)...)
			default:
				out = append(out, c.upstreams(d)...)
			}
			if d.block == nil || !slices.Contains(subroutes, d.name) || slices.Contains(except, d.block) || taken && isHandle(d.name) && !covers(d) && !inside(d) {
				continue
			}
			paths, kind := c.openerPaths(d)
			if kind == matchUnread {
				continue // a matcher that could not be read back counts as meant
			}
			if kind != matchPaths || slices.ContainsFunc(paths, func(m string) bool { return overlap(m, pre) }) {
				serve(d.block)
			}
		}
	}
	for _, s := range p {
		serve(s.block)
	}
	return out
}

// replaceMayForm reports whether uri replace find rep may turn a path
// that does not start with pre into one that does: when the replacement,
// put in at some point of pre's start, agrees with pre there, and the
// path found there need not have started with pre already. Merging
// slashes (// to /) forms nothing: Caddy's path matchers merge them too.
func replaceMayForm(find, rep, pre string) bool {
	return len(replaceSources(find, rep, pre)) > 0
}

// replaceSources are the path patterns that uri replace find rep may turn
// into ones starting with pre (replaceMayForm): for each point of pre's
// start where the replacement agrees with pre, the path with find there
// instead; "" when that may be any path (find not a path's start).
func replaceSources(find, rep, pre string) []string {
	if rep == "/" && strings.Trim(find, "/") == "" {
		return nil
	}
	var out []string
	for k := 0; k < len(pre); k++ {
		rest := pre[k:]
		if !strings.HasPrefix(rest, rep) && !strings.HasPrefix(rep, rest) {
			continue
		}
		if strings.HasPrefix(find, rest) || find == rep {
			continue // the path started with pre already, or nothing changes
		}
		src := pre[:k] + find
		if strings.HasPrefix(rest, rep) {
			src += rest[len(rep):]
		}
		if !strings.HasPrefix(src, "/") || strings.ContainsAny(src, "*{") {
			src = ""
		} else {
			src += "*"
		}
		out = append(out, src)
	}
	return out
}

// uriRest is, for a rewrite target that is a literal start and then the
// request's own URI or path (/v1{uri}), the start a request's path must
// have to be sent to a path starting with pre; false if no such start
// can be told.
func uriRest(target, pre string) (string, bool) {
	for _, ph := range []string{"{http.request.uri}", "{http.request.uri.path}", "{uri}", "{path}"} {
		i := strings.Index(target, ph)
		if i < 0 || strings.ContainsAny(target[:i], "{$") {
			continue
		}
		lit := strings.ToLower(target[:i])
		if u, err := url.PathUnescape(lit); err == nil {
			lit = u
		}
		if rest, ok := strings.CutPrefix(pre, lit); ok && strings.HasPrefix(rest, "/") {
			return rest, true
		}
		return "", false
	}
	return "", false
}

// proxies are the directives that send a request on to an upstream.
var proxies = []string{"reverse_proxy", "php_fastcgi", "invoke"}

// servers are the proxies and file_server: what serves a path it is
// handed, so that a strip before it changes what is served.
var servers = []string{"reverse_proxy", "php_fastcgi", "invoke", "file_server"}

// isHandle reports whether name is a handle block, one of a set Caddy
// runs one of.
func isHandle(name string) bool { return name == "handle" || name == "handle_path" }

// suffixMayForm reports whether uri strip_suffix may turn a path the
// gate on pattern leaves out into one it covers: not for a path prefix
// (/admin* covers /admin/x.html as well as /admin/x), but for a path
// exactly (/secret/ becomes /secret) or a suffix or glob (*.php, which
// /x.php.bak is not).
func suffixMayForm(pattern string) bool {
	return !strings.HasPrefix(pattern, "/") || !strings.HasSuffix(pattern, "*") || strings.ContainsAny(strings.TrimSuffix(pattern, "*"), "*?[{")
}

// pathPlaceholders are the placeholders whose values come from the
// request's path, with the prefixes of their families (path.1, a
// segment), and knownPrefix's {…}: the portal has refused a path with a
// dot segment, so none of them holds ../. And the operator's own: the
// environment's.
var pathPlaceholders = []string{"…", "env.", "path", "path.", "uri", "file", "file.", "dir",
	"http.request.uri", "http.request.uri.path", "http.request.uri.path.",
	"http.request.orig_uri", "http.request.orig_uri.path", "http.request.orig_uri.path.", "http.matchers.file."}

// fromPathOnly reports whether every placeholder in the path of target
// (before its query) takes its value from the request's path, a
// regexp's capture included unless its regexp is among client
// (clientCaptures). Any other (a query or form value, a header, a
// cookie, the host, a variable) may hold ../, which a file server, or
// the app, resolves out of what is written before it: /x/{query.file}
// may be /x/../admin.
func fromPathOnly(target string, client map[string]bool) bool {
	for rest := target; ; {
		i := strings.IndexAny(rest, "{?")
		if i < 0 || rest[i] == '?' {
			return true
		}
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return false
		}
		name := rest[i+1 : i+end]
		rest = rest[i+end+1:]
		if re, ok := strings.CutPrefix(name, "re."); ok || strings.HasPrefix(name, "http.regexp.") {
			if !ok {
				re = strings.TrimPrefix(name, "http.regexp.")
			}
			rx := "" // {re.1}: an unnamed regexp's, which any may be
			if i := strings.LastIndexByte(re, '.'); i >= 0 {
				rx = re[:i]
			}
			if client[rx] {
				return false
			}
			continue
		}
		if !slices.ContainsFunc(pathPlaceholders, func(ph string) bool {
			return name == ph || strings.HasSuffix(ph, ".") && strings.HasPrefix(name, ph) && !strings.Contains(name, "query")
		}) {
			return false
		}
	}
}

// clientCaptures are the names of the regexps whose captures hold
// what a client sends other than the path: those of header_regexp and
// vars_regexp matchers, in the site's named matchers (a matcher's own
// name for an unnamed one) and in the named routes it may invoke. Their
// captures ({re.t.1}) may hold anything; a path_regexp's hold part of
// the path.
func (c placement) clientCaptures() map[string]bool {
	client := map[string]bool{}
	var walk func(b *placedBlock)
	walk = func(b *placedBlock) {
		for _, d := range b.dirs {
			if strings.HasPrefix(d.name, "@") {
				for _, l := range matcherLines(d) {
					if len(l) > 0 && (l[0] == "header_regexp" || l[0] == "vars_regexp") {
						name := strings.TrimPrefix(d.name, "@")
						if len(l) > 3 {
							name = l[1]
						}
						client[name], client[""] = true, true
					}
					celCaptures(client, strings.Join(l, " "), strings.TrimPrefix(d.name, "@"))
				}
			}
			if d.block != nil {
				walk(d.block)
			}
		}
	}
	if c.site != nil {
		walk(c.site)
	}
	var walkJSON func(v any, under bool)
	walkJSON = func(v any, under bool) {
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				walkJSON(e, under)
			}
		case map[string]any:
			for k, e := range v {
				if n, ok := e.(string); ok && k == "name" && under {
					client[n], client[""] = true, true
				}
				if x, ok := e.(string); ok && k == "expression" {
					celCaptures(client, x, "")
				}
				walkJSON(e, under || k == "header_regexp" || k == "vars_regexp")
			}
		}
	}
	for _, r := range c.named {
		walkJSON(r.handlers, false)
	}
	return client
}

// celRegexps are the CEL functions of Caddy's expression matcher that
// match client data other than the path with a regexp, and their
// arguments.
var celRegexps = regexp.MustCompile(`(?:header|vars)_regexp\(([^)]*)\)`)

// celCaptures marks in client the regexps that an expression's
// header_regexp() or vars_regexp() calls name: any quoted argument may
// be the name, and an unnamed one takes the matcher's (matcher).
func celCaptures(client map[string]bool, expr, matcher string) {
	for _, m := range celRegexps.FindAllStringSubmatch(expr, -1) {
		client[matcher], client[""] = true, true
		for arg := range strings.SplitSeq(m[1], ",") {
			client[strings.Trim(strings.TrimSpace(arg), `'"`+"`")] = true
		}
	}
}

// keepsPath reports whether a rewrite target starts with the request's
// own path, so that the path's start stays what it was.
func keepsPath(target string) bool {
	return strings.HasPrefix(target, "{http.request.uri.path}") || strings.HasPrefix(target, "{path}") ||
		strings.HasPrefix(target, "?") // a query only: Caddy keeps the path
}

// knownPrefix fills in a rewrite target's leading placeholder for the
// request's URI or path when from, the rewrite's matcher, is a path
// prefix: rewrite /v1/* /api{uri} sends /v1/x to /api/v1/x, whose start
// is known (/api/v1/), and no longer anything after /api.
func knownPrefix(target, from string) string {
	lit := strings.TrimSuffix(from, "*")
	if !strings.HasPrefix(from, "/") || strings.ContainsAny(lit, "{?*[") {
		return target // not one literal prefix
	}
	for _, ph := range []string{"{http.request.uri}", "{http.request.uri.path}", "{uri}", "{path}"} {
		if i := strings.Index(target, ph); i >= 0 && !strings.ContainsAny(target[:i], "{$") {
			return target[:i] + lit + "{…}"
		}
	}
	return target
}

// gateRequirements is what a gate asks for, from its block as written:
// its requirement lines (assertion and preflight, which ask nothing,
// left out), whether it is optional, and whether it lets CORS
// preflights through.
type gateRequirements struct {
	lines     []string
	optional  bool
	preflight bool
}

func gateReqs(d placedDirective) gateRequirements {
	var r gateRequirements
	if d.block == nil {
		return r
	}
	for _, e := range d.block.dirs {
		switch e.name {
		case "assertion":
		case "optional":
			r.optional = true
		case "preflight":
			r.preflight = len(e.args) == 1 && e.args[0] == "allow"
		default:
			r.lines = append(r.lines, strings.Join(append([]string{e.name}, e.args...), " "))
		}
	}
	return r
}

// passesAlready reports whether every request to the paths froms (path
// patterns; "" for any path) meets the requirements of self already: for
// each pattern, at some block of p, the gate that decides for all its
// paths (the most specific of its siblings that covers them all, none
// more specific beside it) asks for at least as much, line by line,
// without optional. Such a request, sent on into self's path, bypasses
// nothing.
func (c placement) passesAlready(p place, froms []string, self *placedDirective) bool {
	want := gateReqs(*self)
	for _, f := range froms {
		if !c.decidedAlike(p, f, self, want) {
			return false
		}
	}
	return len(froms) > 0
}

// decidedAlike reports whether, at some block of p, the gate that
// decides for every path of the pattern f ("" for any path) asks for at
// least want, without optional, and lets no preflight through that want
// would not.
func (c placement) decidedAlike(p place, f string, self *placedDirective, want gateRequirements) bool {
	fl := strings.ToLower(f)
	fpre := strings.TrimSuffix(fl, "*")
	if strings.ContainsAny(fpre, "*?[{") {
		return false // a glob in the middle: which gate decides varies
	}
	for _, s := range p {
		var decider *placedDirective
		best, unsure := -1, false // best: the decider's rank, as gateRank ranks paths
		for i := range s.block.dirs {
			g := &s.block.dirs[i]
			if g.name != "sigra_gate" || g == self {
				continue
			}
			gp := strings.ToLower(g.path())
			switch {
			case !g.matcher && !g.unknown:
				if best < 0 {
					decider = g
				}
				continue
			case gp == "" || strings.ContainsAny(gp, "{?") || !strings.HasPrefix(gp, "/"):
				unsure = true // a matcher that cannot be compared
				continue
			}
			gpre := strings.TrimSuffix(gp, "*")
			switch {
			case f != "" && (gp == fl || strings.HasSuffix(gp, "*") && strings.HasPrefix(fpre, gpre)):
				rank := 2 * len(gpre)
				if !strings.HasSuffix(gp, "*") {
					rank++ // an exact path before a prefix as long
				}
				if rank > best {
					best, decider = rank, g
				}
			case f == "" || strings.HasPrefix(gpre, fpre):
				unsure = true // it decides for some of the paths only
			}
		}
		if unsure || decider == nil {
			continue
		}
		have := gateReqs(*decider)
		if !have.optional && (!have.preflight || want.preflight) && !slices.ContainsFunc(want.lines, func(l string) bool { return !slices.Contains(have.lines, l) }) {
			return true
		}
	}
	return false
}

// placedIn is a directive, the block it is written in, the step of the
// place checked that it sits in or beside (the blocks above it it shares
// with the directive checked), and the blocks from there down to it.
type placedIn struct {
	d     placedDirective
	in    *placedBlock
	level int
	inner place
	root  *placedDirective // the directive at level that holds d (or d)
}

// appendWithin appends d, written in block in, and every directive in
// the handle, handle_path and route blocks it opens, at any depth.
func appendWithin(to []placedIn, d placedDirective, in *placedBlock, level int, inner place) []placedIn {
	return appendUnder(to, d, in, level, inner, &d)
}

func appendUnder(to []placedIn, d placedDirective, in *placedBlock, level int, inner place, root *placedDirective) []placedIn {
	to = append(to, placedIn{d, in, level, inner, root})
	switch d.name {
	case "handle", "handle_path", "route":
		if d.block != nil {
			down := append(slices.Clone(inner), step{block: d.block, at: -1})
			for _, e := range d.block.dirs {
				to = appendUnder(to, e, d.block, level, down, root)
			}
		}
	}
	return to
}

// upstreams are where d sends requests on: a proxy's upstreams (its
// arguments after any matcher, and its to lines), normalised
// (upstreamKey); an invoked route's, read from its JSON; "*" for an
// upstream from a placeholder, which may be any; none for any other
// directive but file_server, which serves "file_server".
func (c placement) upstreams(d placedDirective) []string {
	if d.name == "file_server" {
		switch d.root { // the site's files, under its root
		case "":
			return []string{"file_server"}
		case "*":
			return []string{"*"}
		}
		return []string{"file_server root " + d.root}
	}
	if !slices.Contains(proxies, d.name) {
		return nil
	}
	if d.name == "invoke" {
		if r, ok := c.named[d.lastArg()]; ok && len(r.upstreams) > 0 {
			return r.upstreams
		}
		return []string{"*"}
	}
	args := d.args
	if d.matcher && d.readBack == "" && len(args) > 0 {
		args = args[1:]
	}
	out := slices.Clone(args)
	if d.block != nil {
		for _, e := range d.block.dirs {
			switch e.name {
			case "to":
				out = append(out, e.args...)
			case "dynamic":
				return []string{"*"} // found at run time: any
			}
		}
	}
	for i := range out {
		out[i] = upstreamKey(out[i])
		if d.name == "php_fastcgi" && out[i] != "*" {
			switch d.root {
			case "*":
				out[i] = "*" // a root that varies: any app there
			case "":
			default:
				out[i] += " root " + d.root
			}
		}
	}
	return out
}

// upstreamKey is an upstream address as compared: without a scheme, in
// lower case, an IP address in its one form (an IPv4-mapped one as
// IPv4), every loopback and unspecified address (which Linux dials as
// loopback) and localhost as one, a name without its final dot; a unix
// socket by its cleaned path; "*" for a placeholder.
func upstreamKey(u string) string {
	if strings.Contains(u, "{") {
		return "*"
	}
	u = strings.ToLower(u)
	for _, scheme := range []string{"unix//", "unix+h2c//"} {
		if rest, ok := strings.CutPrefix(u, scheme); ok {
			return "unix " + path.Clean("/"+rest)
		}
	}
	port := "80" // as Caddy fills it in
	for _, scheme := range []string{"http://", "https://", "h2c://"} {
		if rest, ok := strings.CutPrefix(u, scheme); ok {
			u = rest
			if scheme == "https://" {
				port = "443"
			}
		}
	}
	host, p, err := net.SplitHostPort(u)
	if err != nil {
		host = strings.TrimSuffix(u, ":")
	} else if p != "" {
		port = p
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		host = ip.String()
		if ip.IsLoopback() || ip.IsUnspecified() {
			host = ""
		}
	}
	if host == "" || host == "localhost" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// upstreamsIn are the upstreams the directives of b, and of the blocks
// in it, proxy to.
func (c placement) upstreamsIn(b *placedBlock) []string {
	var out []string
	for _, d := range b.dirs {
		out = append(out, c.upstreams(d)...)
		if d.block != nil && slices.Contains(subroutes, d.name) {
			out = append(out, c.upstreamsIn(d.block)...)
		}
	}
	return out
}

// sameUpstream reports whether the upstreams theirs may be among
// guarded. When either side names none (a proxy further off), or one
// may be any ("*"), it counts as the same.
func (c placement) sameUpstream(theirs, guarded []string) bool {
	if len(theirs) == 0 || len(guarded) == 0 || slices.Contains(theirs, "*") || slices.Contains(guarded, "*") {
		return true
	}
	return slices.ContainsFunc(theirs, func(u string) bool {
		return slices.ContainsFunc(guarded, func(g string) bool {
			// one whose root is not known (read from JSON, the default)
			// may be either
			return u == g || strings.HasPrefix(g, u+" root ") || strings.HasPrefix(u, g+" root ")
		})
	})
}

// What a block's matcher is, as matchedPaths reads it.
type matchKind int

const (
	matchNone   matchKind = iota // no matcher: every request
	matchPaths                   // path matchers, as listed
	matchOther                   // another kind (method, header, a named matcher of those)
	matchUnread                  // one that could not be read back
)

// matchedPaths reads a block's innermost matcher (placedBlock.matched):
// its path matchers, a named one's read from its definition.
func (c placement) matchedPaths(matched string) ([]string, matchKind) {
	f := strings.Fields(matched)
	switch {
	case matched == "":
		return nil, matchNone
	case len(f) < 2 || strings.Contains(matched, "(its matcher"):
		return nil, matchUnread
	}
	var paths []string
	for _, m := range f[1:] {
		switch {
		case strings.HasPrefix(m, "/"):
			paths = append(paths, strings.ToLower(m))
		case strings.HasPrefix(m, "@"):
			named, ok := c.namedMatcherPaths(m)
			if !ok {
				return nil, matchOther
			}
			paths = append(paths, named...)
		default:
			return nil, matchOther
		}
	}
	return paths, matchPaths
}

// sitePatterns is the SiteScope of the site (or named route) that the
// directive h is at is written in: the path patterns and path regexps
// of the matchers of its handle, handle_path and route blocks, a named
// matcher's whatever else it asks (they are ANDed), and under not. They
// are kept as written, for the path the block sees; the strips are the
// prefixes a handle_path or a uri strip_prefix strips, which
// looseRefusal strips from the request's path in turn.
// unread are the blocks whose matcher could not be read so, each with
// why; caseBlind the blocks around a gate whose path_regexp heeds case.
func sitePatterns(h httpcaddyfile.Helper) (scope SiteScope, unread []unreadBlock, caseBlind []placedDirective) {
	site, _ := placesOf(h)
	if site == nil {
		return SiteScope{}, nil, nil
	}
	var paths, regexps, strips []string
	c := placement{h: h, site: site}
	if nr := namedTop(h, site); nr != nil {
		site = nr // the route's own directives, under its name
	}
	var walk func(b *placedBlock, at place)
	walk = func(b *placedBlock, at place) {
		for k, d := range b.dirs {
			if i := slices.Index(d.args, "strip_prefix"); d.name == "uri" && i >= 0 && i+1 < len(d.args) {
				strips = append(strips, "/"+strings.TrimPrefix(d.args[i+1], "/"))
			}
			if d.block == nil || !slices.Contains(subroutes, d.name) {
				continue
			}
			inner := append(slices.Clone(at), step{block: b, at: k})
			switch m := d.block.matched; {
			case d.unknown || d.readBack == "?" || strings.Contains(m, "(its matcher"):
				unread = append(unread, unreadBlock{d, "could not be read back (a Caddyfile given on stdin, or an import argument)"})
			case m != b.matched && m != "":
				p, re, why := c.matcherPatterns(inner, m)
				if why != "" {
					unread = append(unread, unreadBlock{d, why})
				}
				paths, regexps = append(paths, p...), append(regexps, re...)
				if d.name == "handle_path" && len(p) == 1 {
					strips = append(strips, strings.TrimSuffix(p[0], "*"))
				}
				if holdsGate(d.block) && slices.ContainsFunc(re, heedsCase) {
					caseBlind = append(caseBlind, d)
				}
			}
			walk(d.block, inner)
		}
	}
	walk(site, nil)
	slices.Sort(paths)
	slices.Sort(regexps)
	slices.Sort(strips)
	return SiteScope{SitePaths: slices.Compact(paths), SiteRegexps: slices.Compact(regexps), SiteStrips: slices.Compact(strips)}, unread, caseBlind
}

// heedsCase reports whether a path regexp compares letters with regard
// to case: it names one (not as an escape, \d) without the i flag.
func heedsCase(expr string) bool {
	if ignoresCase.MatchString(expr) {
		return false
	}
	for i := 0; i < len(expr); i++ {
		switch c := expr[i] | 0x20; {
		case expr[i] == '\\':
			i++ // \d, \w, \.: no letter of the path
		case 'a' <= c && c <= 'z':
			return true
		}
	}
	return false
}

// unreadBlock is a block whose matcher sitePatterns could not read, and
// why.
type unreadBlock struct {
	d   placedDirective
	why string
}

// holdsGate reports whether a sigra_gate is written in b, at any depth.
func holdsGate(b *placedBlock) bool {
	return slices.ContainsFunc(b.dirs, func(d placedDirective) bool {
		return d.name == "sigra_gate" || d.block != nil && holdsGate(d.block)
	})
}

// matcherPatterns reads a block's matcher (placedBlock.matched), found
// at place at: its path patterns and path regexps, a named matcher's
// from its definition (in the blocks on the way, or the site's) whatever
// else it asks. why says what could not be read: a named matcher not
// found, or a matcher that may read the path otherwise (an expression,
// vars).
func (c placement) matcherPatterns(at place, matched string) (paths, regexps []string, why string) {
	for _, m := range strings.Fields(matched)[1:] {
		switch {
		case strings.HasPrefix(m, "/"):
			paths = append(paths, m)
		case strings.HasPrefix(m, "@"):
			_, lines, found := c.matcherOn(at, m)
			if !found {
				return paths, regexps, "is a named matcher not found where the adapter looks (the site's top level, or a block on the way)"
			}
			for _, l := range lines {
				if len(l) > 1 && l[0] == "not" {
					l = l[1:]
				}
				switch {
				case len(l) > 1 && l[0] == "path":
					paths = append(paths, l[1:]...)
				case len(l) > 1 && l[0] == "path_regexp":
					regexps = append(regexps, l[len(l)-1])
				case len(l) > 0 && !pathBlind[l[0]]:
					why = "has a matcher (" + l[0] + ") that may pick by path in a way not read here"
				}
			}
		}
	}
	return paths, regexps, why
}

// fromPaths are the paths a directive's matcher from names: a named
// matcher's from its definition, else from itself.
func (c placement) fromPaths(from string) []string {
	if named, ok := c.namedMatcherPaths(from); ok && strings.HasPrefix(from, "@") {
		return named
	}
	return []string{from}
}

// mayOverlap is overlap for any path pattern: one that is not a path
// prefix (*.php, /*/x) may match paths under pre.
func mayOverlap(m, pre string) bool {
	if !strings.HasPrefix(m, "/") || strings.Contains(strings.TrimSuffix(m, "*"), "*") {
		return true
	}
	return overlap(m, pre)
}

// overlap reports whether the path pattern m (a path, or a prefix
// ending in *) and the path prefix pre may match one path.
func overlap(m, pre string) bool {
	mp := strings.TrimSuffix(m, "*")
	return strings.HasPrefix(pre, mp) || strings.HasPrefix(mp, pre)
}

// openerPaths reads the matcher of d, a directive that opens a block: its
// path matchers (a named one's from its definition).
func (c placement) openerPaths(d placedDirective) ([]string, matchKind) {
	switch {
	case !d.matcher && !d.unknown:
		return nil, matchNone
	case d.unknown || d.readBack == "?":
		return nil, matchUnread
	}
	m := d.path()
	if m == "" && d.readBack == "" && len(d.args) > 0 {
		m = d.args[0] // a named matcher
	}
	return c.matchedPaths(d.name + " " + m)
}

// checkMethodMatchers refuses a gate (at the end of p) picked by a
// method matcher, its own or a block's on the way, that may leave out
// POST, unless a POST there meets a gate that asks for as much: most web
// frameworks (Rails, Laravel, Symfony, Express) serve a POST with
// _method=DELETE in its form or query, or an X-HTTP-Method-Override
// header, as a DELETE, so the app would serve such a POST as a method
// the gate is for, without it. The form field cannot be stripped. And
// it refuses Caddy's method directive after such a gate, which changes
// the method the gate saw.
func (c placement) checkMethodMatchers(p place) error {
	end := p[len(p)-1]
	self := &end.block.dirs[end.at]
	if gateReqs(*self).optional {
		return nil // it lets anyone in
	}
	picked := false
	for k, s := range p {
		d := s.block.dirs[s.at]
		name := d.readBack
		if name == "" && d.matcher && len(d.args) > 0 {
			name = d.args[0]
		}
		if !strings.HasPrefix(name, "@") {
			continue
		}
		def, lines, ok := c.matcherOn(p[:k+1], name)
		if !ok {
			continue
		}
		listed, picks, post, known := methodsOf(lines)
		if !picks {
			continue // not picked by method
		}
		picked = true
		// A POST does not enter the block d opens: what decides for it
		// is in the blocks up to d's.
		if post || c.passesAlready(p[:k+1], []string{""}, self) {
			continue
		}
		if !known {
			return c.h.Errf("sigra_gate: the matcher %s (%s) looks at the method in a way that cannot be read (an expression, a header) to tell whether it takes POST, while most web frameworks serve a POST with _method=DELETE in its form or query, or an X-HTTP-Method-Override header, as a DELETE: such a request may reach the app without this gate's requirements. "+
				"Write it as a method matcher that takes POST (method POST PUT PATCH DELETE, or not method GET HEAD), pick the gate's requests by path, or gate every POST there with as much", name, c.pos(def))
		}
		example := "DELETE"
		if f := strings.Fields(listed); len(f) > 0 && !strings.EqualFold(f[0], "not") {
			example = f[0]
		}
		return c.h.Errf("sigra_gate: the matcher %s (%s) picks requests by method (%s) and leaves out POST, while most web frameworks serve a POST with _method=%s in its form or query, or an X-HTTP-Method-Override header, as that method: such a request reaches the app without this gate's requirements. "+
			"Add POST to the method matcher, pick the gate's requests by path, or gate every POST there with as much", name, c.pos(def), listed, example)
	}
	if picked {
		for _, a := range c.after(p) {
			if a.d.name == "method" {
				return c.h.Errf("sigra_gate: it picks requests by method, and the method directive on %s changes the method after it: the app serves the request as a method this gate did not see. "+
					"Change the method before the gates (in a route block, before sigra_gate), or pick the gate's requests by path", c.pos(a.d))
			}
		}
	}
	return nil
}

// methodsOf reads what a named matcher's lines ask of the method:
// picks, whether any line looks at it; post, whether a POST may pass;
// known false when a line looks at it in a way that cannot be read (an
// expression, a header), post then false. Its method lines (and a vars
// {method}) list the methods it takes, one list however many lines; a
// not method line those it does not (listed after "not").
func methodsOf(lines [][]string) (listed string, picks, post, known bool) {
	var in, out []string
	for _, l := range lines {
		switch {
		case l[0] == "method":
			in = append(in, l[1:]...)
		case l[0] == "vars" && len(l) > 2 && (l[1] == "{method}" || l[1] == "{http.request.method}"):
			in = append(in, l[2:]...)
		case l[0] == "not" && len(l) > 2 && l[1] == "method":
			out = append(out, l[2:]...)
		case strings.Contains(strings.ToLower(strings.Join(l, " ")), "method"):
			return "", true, false, false
		}
	}
	isPost := func(m string) bool { return strings.EqualFold(m, "POST") }
	post = (len(in) == 0 || slices.ContainsFunc(in, isPost)) && !slices.ContainsFunc(out, isPost)
	listed = strings.ToUpper(strings.Join(in, " "))
	if len(out) > 0 {
		listed = strings.TrimSpace(listed + " not " + strings.ToUpper(strings.Join(out, " ")))
	}
	return listed, len(in)+len(out) > 0, post, true
}

// matcherOn reads the definition of the named matcher name as the
// directive at the end of p sees it: written in its own block, or in
// one around it, out to the site's top level (or a named route's). It
// returns the directive defining it, and its lines (one, written inline,
// or those of its block; a not block's lines each start with not).
func (c placement) matcherOn(p place, name string) (placedDirective, [][]string, bool) {
	blocks := []*placedBlock{c.site}
	for _, s := range p {
		blocks = append(blocks, s.block)
	}
	for i := len(blocks) - 1; i >= 0; i-- {
		if blocks[i] == nil {
			continue
		}
		for _, d := range blocks[i].dirs {
			if d.name == name { // Caddy's matcher names are case-sensitive
				return d, matcherLines(d), true
			}
		}
	}
	return placedDirective{}, nil, false
}

// matcherLines are the lines of d, a named matcher's definition: one,
// written inline, or those of its block, a not block's lines each
// starting with not.
func matcherLines(d placedDirective) [][]string {
	if d.block == nil {
		if len(d.args) == 0 {
			return nil
		}
		return [][]string{d.args}
	}
	var lines [][]string
	for _, e := range d.block.dirs {
		if e.name == "not" && e.block != nil {
			for _, f := range e.block.dirs {
				lines = append(lines, append([]string{"not", f.name}, f.args...))
			}
			continue
		}
		lines = append(lines, append([]string{e.name}, e.args...))
	}
	return lines
}

// phpIndex is the index (front controller) of the php_fastcgi d:
// index.php unless its block says otherwise ("off": none).
func phpIndex(d placedDirective) string {
	if d.block != nil {
		if i := slices.IndexFunc(d.block.dirs, func(e placedDirective) bool { return e.name == "index" && len(e.args) == 1 }); i >= 0 {
			return d.block.dirs[i].args[0]
		}
	}
	return "index.php"
}

// namedMatcherPaths reads the definition of the named matcher name at
// the site's top level: its paths, if it is path matchers only.
func (c placement) namedMatcherPaths(name string) ([]string, bool) {
	if _, lines, ok := c.matcherOn(nil, name); ok {
		var paths []string
		for _, l := range lines {
			if len(l) < 2 || l[0] != "path" {
				return nil, false
			}
			for _, m := range l[1:] {
				if !strings.HasPrefix(m, "/") || strings.Contains(m, "{") {
					return nil, false
				}
				paths = append(paths, strings.ToLower(m))
			}
		}
		return paths, len(paths) > 0
	}
	return nil, false
}

// confinedTo reports whether a block whose innermost matcher is matched
// (placedBlock.matched) lets in only paths under prefix: then a request
// without the prefix never gets to what the block holds. A matcher that
// could not be read back (an import argument, one Caddy took out of a
// file it cannot read) counts as meant; one of another kind (a method)
// confines nothing.
func (c placement) confinedTo(matched, prefix string) bool {
	paths, kind := c.matchedPaths(matched)
	switch kind {
	case matchUnread:
		return true
	case matchNone, matchOther:
		return false
	}
	return !slices.ContainsFunc(paths, func(m string) bool { return !strings.HasPrefix(strings.TrimSuffix(m, "*"), prefix) })
}

// runsBefore reports whether b's i-th directive runs before its j-th: as
// written in a route block, else in the directive order.
func (c placement) runsBefore(b *placedBlock, i, j int) bool {
	if b.written {
		return i < j
	}
	return runsBefore(c.order, b.dirs[i], i, b.dirs[j], j)
}

// Why one directive runs before another.
const (
	writtenOrder = "a route keeps the written order"
	orderOption  = "the global order option"
	caddysOrder  = "Caddy's directive order"
)

// why says what puts d before o in b.
func (c placement) why(b *placedBlock, d, o placedDirective) string {
	switch {
	case b.written:
		return writtenOrder
	case c.byOption && !runsBefore(caddyOrder, d, 0, o, 1):
		return orderOption
	}
	return caddysOrder
}

// orderAdvice adds, when the global order option is used, that it may
// be what moves them.
func (c placement) orderAdvice() string {
	if c.byOption {
		return " (and check the order lines: sigra_portal and sigra_gate order themselves before redir)"
	}
	return ""
}

// pos is where d is written: its line, with the file when it is not the
// one being adapted (an imported file).
func (c placement) pos(d placedDirective) string {
	if d.file != "" && d.file != c.h.File() {
		return fmt.Sprintf("%s:%d", d.file, d.line)
	}
	return fmt.Sprintf("line %d", d.line)
}

// answersAll reports whether d answers every request that reaches it:
// an answering directive without a matcher, a subroute without one that
// holds such a directive, or an invoke of a named route that answers.
func (c placement) answersAll(d placedDirective) bool {
	switch {
	case d.matcher:
		return false
	case d.name == "invoke":
		return c.named[d.lastArg()].answersAll
	case d.name == "file_server" && d.block != nil && slices.ContainsFunc(d.block.dirs, func(o placedDirective) bool { return o.name == "pass_thru" }):
		return false // a missing file goes on to what follows
	case slices.Contains(answering, d.name), slices.Contains(failing, d.name):
		return true
	case slices.Contains(subroutes, d.name) && d.block != nil:
		return slices.ContainsFunc(d.block.dirs, c.answersAll)
	}
	return false
}

// takesAll reports whether d answers every request it takes, passing
// none on (whatever its own matcher): an answering directive but a proxy
// with a handle_response route that does not answer, or a file_server
// with pass_thru, a block
// holding one without a matcher, an invoke of a named route that keeps
// all. A path changed for such a directive goes to its upstream only.
func (c placement) takesAll(d placedDirective) bool {
	has := func(sub string) bool {
		return d.block != nil && slices.ContainsFunc(d.block.dirs, func(o placedDirective) bool { return o.name == sub })
	}
	switch {
	case d.name == "invoke":
		return c.named[d.lastArg()].keepsAll
	case d.name == "file_server" && has("pass_thru"):
		return false
	case (d.name == "reverse_proxy" || d.name == "php_fastcgi") && d.block != nil && slices.ContainsFunc(d.block.dirs, func(e placedDirective) bool {
		return e.name == "handle_response" && (e.block == nil || !c.blockKeeps(e.block))
	}):
		return false // a response route that does not answer hands the request on
	case slices.Contains(answering, d.name):
		return true
	case slices.Contains(subroutes, d.name) && d.block != nil:
		return c.blockKeeps(d.block)
	}
	return false
}

// blockKeeps reports whether a block answers every request that enters
// it, passing none on.
func (c placement) blockKeeps(b *placedBlock) bool {
	return slices.ContainsFunc(b.dirs, func(e placedDirective) bool { return !e.matcher && c.takesAll(e) })
}

// mayAnswer reports whether d answers some request it may match: an
// answering directive, with or without a matcher, a subroute holding
// one, or an invoke of a named route that may.
func (c placement) mayAnswer(d placedDirective) bool {
	switch {
	case d.name == "invoke":
		return c.named[d.lastArg()].mayAnswer
	case slices.Contains(answering, d.name):
		return true
	case slices.Contains(subroutes, d.name) && d.block != nil:
		return slices.ContainsFunc(d.block.dirs, c.mayAnswer)
	}
	return false
}

// matchedPortalInvoke finds, in b or its blocks, an invoke with a
// matcher of a named route that holds sigra_portal.
func (c placement) matchedPortalInvoke(b *placedBlock) (placedDirective, bool) {
	for _, d := range b.dirs {
		if d.name == "invoke" && d.matcher && c.named[d.lastArg()].portal {
			return d, true
		}
		if d.block != nil {
			if found, ok := c.matchedPortalInvoke(d.block); ok {
				return found, true
			}
		}
	}
	return placedDirective{}, false
}

// holding returns the indexes of b's directives that are name, hold it
// in their blocks at any depth, or invoke (without a matcher) a named
// route that does (sigra_portal only). What handle_errors holds serves
// errors only, and is not counted.
func (c placement) holding(b *placedBlock, name string) []int {
	var out []int
	for i, d := range b.dirs {
		if d.name == name || d.block != nil && d.name != "handle_errors" && len(c.holding(d.block, name)) > 0 ||
			name == "sigra_portal" && d.name == "invoke" && !d.matcher && c.named[d.lastArg()].portal {
			out = append(out, i)
		}
	}
	return out
}

// runsBefore reports whether Caddy runs the directive d (the i-th
// written) before o (the j-th) of a block it sorts (a site's top level, a
// handle), in the given directive order: by the order, or, for the same
// directive, one with a matcher first, else as written. Directives the
// order does not know (other plugins') compare as not before. Both
// matching a path, Caddy puts the longer path first; that is left out,
// as is anything else a matcher decides, since a directive that answers
// every request has none.
func runsBefore(order []string, d placedDirective, i int, o placedDirective, j int) bool {
	// Caddy sorts handle_path as handle (normalizeDirectiveName).
	dn, on := d.name, o.name
	if dn == "handle_path" {
		dn = "handle"
	}
	if on == "handle_path" {
		on = "handle"
	}
	rd, ro := slices.Index(order, dn), slices.Index(order, on)
	switch {
	case rd < 0 || ro < 0:
		return false
	case dn != on:
		return rd < ro
	case d.matcher != o.matcher:
		return d.matcher
	}
	return i < j
}

// namedTop is the block of a named route's top-level directives when h
// is in one, else nil.
func namedTop(h httpcaddyfile.Helper, top *placedBlock) *placedBlock {
	if !inNamedRoute(h) || len(top.dirs) != 1 {
		return nil
	}
	return top.dirs[0].block
}

// inNamedRoute reports whether h is in a named route (&(name) { … }),
// which sites invoke, rather than in a site.
func inNamedRoute(h httpcaddyfile.Helper) bool {
	nr := reflect.ValueOf(h).FieldByName("parentBlock").FieldByName("IsNamedRoute")
	return nr.IsValid() && nr.Kind() == reflect.Bool && nr.Bool()
}

// namedRoute is what a named route does, read from its adapted JSON.
type namedRoute struct {
	portal     bool     // holds sigra_portal
	answersAll bool     // answers every request that invokes it
	keepsAll   bool     // and passes none on (jsonKeepsAll)
	mayAnswer  bool     // answers some
	gate       bool     // holds sigra_gate
	pathGate   bool     // holds one that decides for some requests only (in a route with a matcher)
	upstreams  []string // what its proxies dial (upstreamKey; "*" for any)
	rewrites   []routeRewrite
	handlers   []any // its JSON, decoded
}

// namedUpstreamsFor are the upstreams of the named route name that a
// request for the path prefix pre may reach: those of its routes whose
// path matchers may let it in.
func (c placement) namedUpstreamsFor(name, pre string) []string {
	key := name + "\x00" + pre
	if ups, ok := c.upsFor[key]; ok {
		return ups
	}
	c.upsFor[key] = nil // a loop, which Caddy refuses anyway, adds nothing
	var walk func(v any) []string
	walk = func(v any) []string {
		var out []string
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				out = append(out, walk(e)...)
			}
		case map[string]any:
			if h, _ := v["handler"].(string); h != "" {
				switch h {
				case "invoke":
					route, _ := v["name"].(string)
					out = append(out, c.namedUpstreamsFor(route, pre)...)
				case "subroute":
					out = append(out, walk(v["routes"])...)
				default:
					out = append(out, jsonUpstreams(v, func(string) namedRoute { return namedRoute{} })...)
				}
				return out
			}
			sets, _ := v["match"].([]any)
			if paths := jsonRoutePaths(sets); paths != nil && !slices.ContainsFunc(paths, func(p string) bool { return mayOverlap(strings.ToLower(p), pre) }) {
				return nil // a route for other paths
			}
			out = walk(v["handle"])
		}
		return out
	}
	ups := walk(c.named[name].handlers)
	slices.Sort(ups)
	ups = slices.Compact(ups)
	c.upsFor[key] = ups
	return ups
}

// routeRewrite is a change of the path a named route makes: op rewrite
// (to the URI into: a rewrite, a proxy's own rewrite), try_files (into
// one of its files), path_regexp or replace (find, by into), strip (the
// prefix into); paths are the path patterns of the innermost route in it
// that has a path matcher (none: every path that invokes it, and the
// named route's own upstreams count).
type routeRewrite struct {
	op, find, into string
	paths          []string
	// what that route sends on (upstreamKey), and whether it answers
	// every request it takes: a change there for another upstream is that
	// app's own
	ups     []string
	answers bool
}

// jsonRewrites are the changes of the path a rewrite handler (or a
// reverse_proxy's rewrite) of decoded JSON makes. try_files's rewrite is
// to the file its matcher found: jsonRouteRewrites reads the candidates.
func jsonRewrites(h map[string]any) []routeRewrite {
	var out []routeRewrite
	if uri, _ := h["uri"].(string); uri != "" && !strings.HasPrefix(uri, "{http.matchers.file.relative}") {
		out = append(out, routeRewrite{op: "rewrite", into: uri})
	}
	if strip, _ := h["strip_path_prefix"].(string); strip != "" {
		out = append(out, routeRewrite{op: "strip", into: strip})
	}
	if strip, _ := h["strip_path_suffix"].(string); strip != "" {
		out = append(out, routeRewrite{op: "strip_suffix", into: strip})
	}
	for _, op := range [][2]string{{"path_regexp", "path_regexp"}, {"uri_substring", "replace"}} {
		list, _ := h[op[0]].([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			find, _ := m["find"].(string)
			rep, _ := m["replace"].(string)
			out = append(out, routeRewrite{op: op[1], find: find, into: rep})
		}
	}
	return out
}

// jsonRouteRewrites are the changes of the path that decoded JSON v, a
// named route's handlers or routes, makes (invoked gives those of a route
// it invokes), each with the paths of the innermost route around it that
// has a path matcher (paths, outside v). A try_files candidate
// {http.request.uri.path}/… is left out where a route beside it
// redirects such a request to the path with a slash first, as
// php_fastcgi does: the gates see the request again.
func jsonRouteRewrites(v any, scope routeRewrite, facts func(name string) namedRoute) []routeRewrite {
	var out []routeRewrite
	add := func(rws []routeRewrite, scope routeRewrite) {
		for _, rw := range rws {
			if len(rw.paths) == 0 {
				rw.paths, rw.ups, rw.answers = scope.paths, scope.ups, scope.answers
			}
			out = append(out, rw)
		}
	}
	switch v := v.(type) {
	case []any:
		redirected := map[string]bool{}
		for _, r := range v {
			rm, _ := r.(map[string]any)
			if jsonHandler(rm["handle"], func(h map[string]any) bool {
				code := fmt.Sprint(h["status_code"])
				return h["handler"] == "static_response" && (code == "308" || code == "301")
			}) {
				for _, f := range jsonFiles(rm["match"]) {
					redirected[f] = true
				}
			}
		}
		for _, c := range v {
			for _, rw := range jsonRouteRewrites(c, scope, facts) {
				if rw.op == "try_files" && redirected[rw.into] {
					continue
				}
				out = append(out, rw)
			}
		}
	case map[string]any:
		if name, _ := v["handler"].(string); name != "" {
			switch name {
			case "rewrite":
				add(jsonRewrites(v), scope)
			case "reverse_proxy":
				if rw, ok := v["rewrite"].(map[string]any); ok {
					add(jsonRewrites(rw), scope)
				}
			case "invoke":
				route, _ := v["name"].(string)
				add(facts(route).rewrites, scope)
			}
			if routes, ok := v["routes"]; ok {
				add(jsonRouteRewrites(routes, routeRewrite{}, facts), scope)
			}
			return out
		}
		// a route: its matcher sets narrow the paths when each has a
		// path matcher; its file matchers are try_files
		if sets, ok := v["match"].([]any); ok && len(sets) > 0 {
			if narrowed := jsonRoutePaths(sets); narrowed != nil {
				handle, _ := v["handle"].([]any)
				scope = routeRewrite{paths: narrowed, ups: jsonUpstreams(handle, facts),
					answers: jsonKeepsAll(handle, func(route string) bool { return facts(route).keepsAll })}
			}
			for _, f := range jsonFiles(sets) {
				add([]routeRewrite{{op: "try_files", into: f}}, scope)
			}
		}
		add(jsonRouteRewrites(v["handle"], routeRewrite{}, facts), scope)
	}
	return out
}

// jsonScopedGate reports whether decoded JSON v holds a sigra_gate in a
// route with a matcher (scoped: v is in one already), itself or in a
// route it invokes.
func jsonScopedGate(v any, scoped bool, facts func(name string) namedRoute) bool {
	switch v := v.(type) {
	case []any:
		return slices.ContainsFunc(v, func(e any) bool { return jsonScopedGate(e, scoped, facts) })
	case map[string]any:
		switch h, _ := v["handler"].(string); h {
		case "":
			sets, _ := v["match"].([]any)
			return jsonScopedGate(v["handle"], scoped || len(sets) > 0, facts)
		case "sigra_gate":
			return scoped
		case "invoke":
			route, _ := v["name"].(string)
			r := facts(route)
			return r.pathGate || scoped && r.gate
		case "subroute":
			return jsonScopedGate(v["routes"], scoped, facts)
		}
	}
	return false
}

// jsonUpstreams are where the handlers of decoded JSON v send requests
// on, as upstreams does for directives (facts gives an invoked route's).
func jsonUpstreams(v any, facts func(name string) namedRoute) []string {
	var out []string
	jsonHandler(v, func(h map[string]any) bool {
		switch h["handler"] {
		case "invoke":
			route, _ := h["name"].(string)
			out = append(out, facts(route).upstreams...)
		case "file_server":
			out = append(out, "file_server")
		case "reverse_proxy":
			ups, _ := h["upstreams"].([]any)
			if len(ups) == 0 {
				out = append(out, "*") // dynamic upstreams: any
			}
			for _, u := range ups {
				m, _ := u.(map[string]any)
				dial, _ := m["dial"].(string)
				out = append(out, upstreamKey(dial))
			}
		}
		return false
	})
	return out
}

// jsonRoutePaths are the path patterns of a route's decoded matcher
// sets when each set has a path matcher (a request must match one of
// them); nil when one has none, or there are no sets.
func jsonRoutePaths(sets []any) []string {
	var out []string
	for _, set := range sets {
		m, _ := set.(map[string]any)
		ps, _ := m["path"].([]any)
		if len(ps) == 0 {
			return nil
		}
		for _, p := range ps {
			if p, _ := p.(string); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// jsonFiles are the try_files candidates of the file matchers in decoded
// matcher sets v.
func jsonFiles(v any) []string {
	var out []string
	sets, _ := v.([]any)
	for _, set := range sets {
		m, _ := set.(map[string]any)
		file, _ := m["file"].(map[string]any)
		list, _ := file["try_files"].([]any)
		for _, f := range list {
			if f, _ := f.(string); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

// answeringHandlers are the JSON handlers of the answering directives
// (php_fastcgi is a reverse_proxy; respond and abort a static_response).
var answeringHandlers = []string{"reverse_proxy", "static_response", "file_server", "acme_server", "metrics"}

// namedRoutesOf reads the named routes Caddy adapted before the sites
// (the named_routes option).
func namedRoutesOf(h httpcaddyfile.Helper) map[string]namedRoute {
	routes, _ := h.Option("named_routes").(map[string]*caddyhttp.Route)
	raw := make(map[string][]any, len(routes))
	matchers := make(map[string][]any, len(routes)) // their own matcher sets
	for name, r := range routes {
		name = strings.TrimSuffix(strings.TrimPrefix(name, "&("), ")")
		var handlers, sets []any
		for _, msg := range r.HandlersRaw {
			var v any
			if json.Unmarshal(msg, &v) == nil {
				handlers = append(handlers, v)
			}
		}
		for _, set := range r.MatcherSetsRaw {
			m := map[string]any{}
			for key, msg := range set {
				var v any
				if json.Unmarshal(msg, &v) == nil {
					m[key] = v
				}
			}
			sets = append(sets, m)
		}
		raw[name], matchers[name] = handlers, sets
	}
	// An invoke runs the route it names in its place: what a route does
	// takes in what the routes it invokes do, each worked out once (a
	// chain of routes each invoking the next twice must not be walked
	// path by path). A loop, which Caddy refuses anyway, counts nothing.
	out := make(map[string]namedRoute, len(raw))
	busy := map[string]bool{}
	var facts func(name string) namedRoute
	facts = func(name string) namedRoute {
		if f, ok := out[name]; ok || busy[name] {
			return f
		}
		busy[name] = true
		handlers := raw[name]
		has := func(pick func(namedRoute) bool, names ...string) bool {
			return jsonHandler(handlers, func(h map[string]any) bool {
				n, _ := h["handler"].(string)
				if route, _ := h["name"].(string); n == "invoke" {
					return pick(facts(route))
				}
				return slices.Contains(names, n)
			})
		}
		f := namedRoute{
			portal:     has(func(r namedRoute) bool { return r.portal }, "sigra_portal"),
			answersAll: jsonAnswersAll(handlers, func(route string) bool { return facts(route).answersAll }),
			keepsAll:   jsonKeepsAll(handlers, func(route string) bool { return facts(route).keepsAll }),
			mayAnswer:  has(func(r namedRoute) bool { return r.mayAnswer }, answeringHandlers...),
			gate:       has(func(r namedRoute) bool { return r.gate }, "sigra_gate"),
		}
		f.pathGate = jsonScopedGate(handlers, len(matchers[name]) > 0, facts)
		f.upstreams, f.handlers = jsonUpstreams(handlers, facts), handlers
		self := map[string]any{"handle": handlers}
		if len(matchers[name]) > 0 {
			self["match"] = matchers[name]
		}
		f.rewrites = jsonRouteRewrites(self, routeRewrite{}, facts)
		// once each: a route invoking another twice would double them at
		// every step of a chain
		slices.Sort(f.upstreams)
		f.upstreams = slices.Compact(f.upstreams)
		seen := map[string]bool{}
		f.rewrites = slices.DeleteFunc(f.rewrites, func(rw routeRewrite) bool {
			k := fmt.Sprint(rw.op, "\x00", rw.find, "\x00", rw.into, "\x00", rw.paths, rw.ups, rw.answers)
			dup := seen[k]
			seen[k] = true
			return dup
		})
		out[name] = f
		return f
	}
	for name := range raw {
		facts(name)
	}
	return out
}

// jsonHandler reports whether v (decoded JSON) holds, at any depth, a
// handler (an object with a "handler" field) that match accepts.
func jsonHandler(v any, match func(h map[string]any) bool) bool {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["handler"].(string); ok && match(v) {
			return true
		}
		for _, c := range v {
			if jsonHandler(c, match) {
				return true
			}
		}
	case []any:
		for _, c := range v {
			if jsonHandler(c, match) {
				return true
			}
		}
	}
	return false
}

// jsonAnswersAll reports whether a list of handlers (decoded JSON)
// answers every request: one answers, invokes a route that does
// (invoked), or is a subroute with a route without matchers whose
// handlers do.
func jsonAnswersAll(handlers []any, invoked func(route string) bool) bool {
	return jsonAnswers(handlers, invoked, false)
}

// jsonKeepsAll is jsonAnswersAll where a handler that may pass a request
// on does not answer it: a reverse_proxy with handle_response routes
// (forward_auth is one), a file_server with pass_thru.
func jsonKeepsAll(handlers []any, invoked func(route string) bool) bool {
	return jsonAnswers(handlers, invoked, true)
}

func jsonAnswers(handlers []any, invoked func(route string) bool, strict bool) bool {
	for _, h := range handlers {
		m, _ := h.(map[string]any)
		n, _ := m["handler"].(string)
		if _, hr := m["handle_response"]; strict && (hr || m["pass_thru"] == true) {
			continue
		}
		if slices.Contains(answeringHandlers, n) || !strict && n == "error" { // failing
			return true
		}
		if route, _ := m["name"].(string); n == "invoke" && invoked(route) {
			return true
		}
		if n != "subroute" {
			continue
		}
		routes, _ := m["routes"].([]any)
		for _, r := range routes {
			rm, _ := r.(map[string]any)
			inner, _ := rm["handle"].([]any)
			if _, matched := rm["match"]; !matched && jsonAnswers(inner, invoked, strict) {
				return true
			}
		}
	}
	return false
}

// placedDirective is a directive written in a block.
type placedDirective struct {
	name    string
	file    string
	line    int
	args    []string     // the other words on its line, up to a block's "{"
	matcher bool         // an inline matcher follows its name (/path or @name; not * or /*, which match all)
	unknown bool         // it has a matcher that could not be read back (unknownMatcher)
	block   *placedBlock // the block it opens, if any
	// readBack is the matcher Caddy took out of a top-level directive,
	// read back from the file ("?" if it could not be).
	readBack string
	// root is, for a php_fastcgi or a file_server, the site root in
	// effect where it is written ("" for the default, "*" when a matcher
	// makes it vary): one FastCGI server runs a different app for each
	// root, and a file server serves other files.
	root string
}

// setRoots sets root on the php_fastcgi directives in b and the blocks
// in it, root being the one in effect around b.
func setRoots(b *placedBlock, root string) {
	// rootOf is the root a directive sets: root [<matcher>] <path> (a
	// top-level one's matcher read back), or vars root <path>; "*" when
	// a matcher or a placeholder may make it vary; "" if it sets none.
	rootOf := func(d placedDirective) string {
		switch {
		case d.name == "root" && len(d.args) > 0:
			matcher := d.readBack
			if matcher == "" && len(d.args) > 1 {
				matcher = d.args[0]
			}
			if matcher != "" && matcher != "*" && matcher != "/*" {
				return "*"
			}
			return cleanRoot(d.lastArg())
		case d.name == "vars" && (slices.Contains(d.args, "root") || d.block != nil && slices.ContainsFunc(d.block.dirs, func(e placedDirective) bool { return e.name == "root" })):
			return "*"
		}
		return ""
	}
	set := func(i int, root string) {
		d := &b.dirs[i]
		if d.name == "php_fastcgi" || d.name == "file_server" {
			d.root = root
			// its own root subdirective decides where the app is
			if d.block != nil {
				for _, e := range d.block.dirs {
					if e.name == "root" && len(e.args) == 1 {
						d.root = cleanRoot(e.args[0])
					}
				}
			}
		}
		if d.block != nil {
			setRoots(d.block, root)
		}
	}
	if b.written {
		// a route block runs as written: a root counts from where it is
		for i, d := range b.dirs {
			if r := rootOf(d); r != "" {
				root = r
			}
			set(i, root)
		}
		return
	}
	for _, d := range b.dirs { // Caddy's order runs root and vars first
		if r := rootOf(d); r != "" {
			root = r
		}
	}
	for i := range b.dirs {
		set(i, root)
	}
}

// cleanRoot is a root as compared: cleaned, so that /srv/app/ and
// /srv//app are /srv/app; "*" for a placeholder, which may be any.
func cleanRoot(r string) string {
	if strings.Contains(r, "{") {
		return "*"
	}
	return path.Clean(r)
}

// path is d's path matcher as written ("" if it has none, or another
// kind): read back at a site's top level, else its first argument.
func (d placedDirective) path() string {
	switch {
	case d.readBack != "":
		return d.readBack
	case d.matcher && len(d.args) > 0 && strings.HasPrefix(d.args[0], "/"):
		return d.args[0]
	}
	return ""
}

// lastArg is the last argument on d's line: invoke's route name,
// rewrite's target, strip_prefix's prefix; "" if none.
func (d placedDirective) lastArg() string {
	if len(d.args) == 0 {
		return ""
	}
	return d.args[len(d.args)-1]
}

// placedBlock is a block of directives, as placesOf reads it.
type placedBlock struct {
	dirs    []placedDirective // in written order
	written bool              // a route block, which runs them in written order
	// matched is the directive, with its matcher, of the innermost
	// enclosing block that has one ("" if none), and matchedAt where it
	// is written.
	matched   string
	matchedAt placedDirective
}

// step is a block on the way to a directive, and the index there of the
// directive on the way (the one asked about, in the last block).
type step struct {
	block *placedBlock
	at    int
}

// place is the way from the site's top level to one place the directive
// is written.
type place []step

// placesOf reads the tokens of h's server block (a site, or a named
// route), which Caddy's Helper keeps unexported, into blocks of
// directives, and returns its top level and each place the directive h
// is at is written (more than one if a snippet holding it is imported
// more than once); none if this Caddy's Helper has no such field. A
// directive starts where Caddy starts one: at the first token of a
// block, or a token on a new line (another file or import counts as a
// new line).
func placesOf(h httpcaddyfile.Helper) (*placedBlock, []place) {
	segs := reflect.ValueOf(h).FieldByName("parentBlock").FieldByName("Segments")
	if !segs.IsValid() || segs.Kind() != reflect.Slice {
		return nil, nil
	}
	file, line, name := h.File(), h.Line(), h.Val()
	files := filesOf(h)
	// A named route's top level, like a site's, runs in Caddy's
	// directive order.
	top := &placedBlock{}
	var places []place
	for i := range segs.Len() {
		seg := segs.Index(i)
		if seg.Kind() != reflect.Slice {
			return nil, nil
		}
		// Caddy parses a site's top-level directives from the very
		// tokens kept here, and takes a directive's matcher out of them
		// (Dispenser.Delete, which shifts the rest down and so leaves the
		// last token twice): a segment with one "}" too many, or without
		// braces whose last two tokens are one, is a top-level directive
		// whose matcher is gone. Which matcher it was (/app/* or *,
		// which matches all) is read back from its line in the file, if
		// the file can be read; if not, it counts as a matcher.
		n := seg.Len()
		lost := n >= 2 && (isBrace(seg.Index(n-1), "}") && braceBalance(seg) == -1 ||
			!isBrace(seg.Index(n-1), "}") && sameToken(seg.Index(n-1), seg.Index(n-2)))
		if lost {
			n--
		}
		if lost && !isBrace(seg.Index(n), "}") {
			// A last argument written twice looks the same: the file
			// tells which it is.
			var rest []string
			for k := 1; k < n; k++ {
				rest = append(rest, seg.Index(k).FieldByName("Text").String())
			}
			if lostMatcher(files, seg.Index(0), seg.Index(0).FieldByName("Text").String(), rest) == "" {
				lost, n = false, n+1
			}
		}
		stack := place{{block: top, at: -1}}
		fresh := true    // the next token starts a directive
		openerArgs := -1 // tokens after the last directive's name; -1 if none
		var opener *placedDirective
		for j := range n {
			t := seg.Index(j)
			text := t.FieldByName("Text").String()
			cur := &stack[len(stack)-1]
			switch {
			case isBrace(t, "{") && openerArgs >= 0:
				nb := &placedBlock{written: opener.name == "route", matched: cur.block.matched, matchedAt: cur.block.matchedAt}
				matcher := tokenText(seg, j-openerArgs, j)
				if lost && len(stack) == 1 {
					matcher = opener.readBack
				}
				switch {
				case strings.HasPrefix(opener.name, "@") || opener.name == "handle_errors": // a matcher's definition; status codes
				case matcher == unknownMatcher:
					nb.matched, nb.matchedAt = opener.name+" (its matcher an import argument that could not be read back)", *opener
				case matcher != "" && matcher != "*" && matcher != "/*":
					nb.matched, nb.matchedAt = strings.TrimSpace(opener.name+" "+strings.TrimPrefix(matcher, "?")), *opener
				}
				opener.block = nb
				stack = append(stack, step{block: nb, at: -1})
				fresh, openerArgs = true, -1
				continue
			case isBrace(t, "}") && len(stack) > 1:
				stack = stack[:len(stack)-1]
				fresh, openerArgs = true, -1
				continue
			}
			if fresh || isNextOnNewLine(seg.Index(j-1), t) {
				d := placedDirective{name: text, file: t.FieldByName("File").String(), line: int(t.FieldByName("Line").Int())}
				var rest []string // the other tokens on its line
				for k := j + 1; k < n && !isNextOnNewLine(seg.Index(k-1), seg.Index(k)); k++ {
					rest = append(rest, seg.Index(k).FieldByName("Text").String())
				}
				if args := slices.DeleteFunc(slices.Clone(rest), func(a string) bool { return a == "{" }); len(args) > 0 {
					d.args = args
				}
				if lost && len(stack) == 1 {
					// The top-level directive, its matcher taken out: there
					// was one, and only * or /* would match all.
					d.readBack = lostMatcher(files, t, text, rest)
					d.matcher = d.readBack != "*" && d.readBack != "/*" && d.readBack != unknownMatcher
					d.unknown = d.readBack == unknownMatcher
				} else if j+1 < n && !isNextOnNewLine(t, seg.Index(j+1)) {
					next := seg.Index(j + 1).FieldByName("Text").String()
					d.matcher = next != "/*" && (strings.HasPrefix(next, "/") || strings.HasPrefix(next, "@"))
				}
				cur.block.dirs = append(cur.block.dirs, d)
				cur.at = len(cur.block.dirs) - 1
				opener, openerArgs, fresh = &cur.block.dirs[cur.at], 0, false
				if text == name && d.line == line && t.FieldByName("File").String() == file {
					places = append(places, slices.Clone(stack))
				}
			} else if openerArgs >= 0 {
				openerArgs++
			}
		}
	}
	setRoots(top, "")
	return top, places
}

// isBrace reports whether t is the brace b as Caddy reads one: not quoted.
func isBrace(t reflect.Value, b string) bool {
	q := t.FieldByName("wasQuoted")
	return t.FieldByName("Text").String() == b && (!q.IsValid() || q.Int() == 0)
}

// lostMatcher reads back from the Caddyfile the matcher Caddy took out
// of the top-level directive name (token t), whose other tokens on the
// line are rest: the word after its name, if the line is that directive
// as written (not a file's that changed since), with the {args[N]} of
// the import that brought a snippet in and {$ENV} placeholders filled
// in as Caddy does; "?" otherwise, as when the file cannot be read (an
// adapted stdin, say).
func lostMatcher(files fileCache, t reflect.Value, name string, rest []string) string {
	f := files.line(t.FieldByName("File").String(), int(t.FieldByName("Line").Int()))
	if len(f) < 2+len(rest) || f[0] != name || !slices.EqualFunc(f[2:2+len(rest)], rest, func(w, tok string) bool {
		return w == tok || w != "{" && strings.Contains(w, "{") // a placeholder, filled in
	}) {
		return "?"
	}
	if w := f[1]; w != "*" && !strings.HasPrefix(w, "/") && !strings.HasPrefix(w, "@") && !strings.Contains(w, "{") {
		// Caddy takes only such a word for a matcher: none was lost
		// (the last argument is written twice).
		return ""
	}
	m := expandEnv(f[1])
	// The imports that brought the snippet in, innermost first
	// ("file:line (import name)"): each fills in the {args[N]} of the
	// one inside it.
	imports := t.FieldByName("imports")
	for k := 0; strings.Contains(m, "{args") && imports.IsValid() && k < imports.Len(); k++ {
		args := importArgs(files, imports.Index(k).String())
		if args == nil {
			return "?"
		}
		m = argPlaceholder.ReplaceAllStringFunc(m, func(p string) string {
			n, _ := strconv.Atoi(argPlaceholder.FindStringSubmatch(p)[1])
			if n < len(args) {
				return expandEnv(args[n])
			}
			return p
		})
	}
	if strings.Contains(m, "{args") || strings.Contains(m, "{$") {
		return unknownMatcher
	}
	return m
}

// unknownMatcher is lostMatcher's answer for a matcher written as an
// import's argument that it cannot follow (through a snippet imported by
// another): the checks take it at its worst, as matching all where that
// would let a request past, and as matching part elsewhere.
const unknownMatcher = "??"

// importArgs reads the arguments of the import an import chain entry
// ("file:line (import name)") records; nil if it cannot be read. Caddy
// records an import with a block at the line of its closing brace, so
// the import is looked for from there back.
func importArgs(files fileCache, entry string) []string {
	at, rest, _ := strings.Cut(entry, " ")
	name := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(rest), "(import"), ")")
	name = strings.TrimSpace(name)
	k := strings.LastIndexByte(at, ':')
	if k < 0 {
		return nil
	}
	line, err := strconv.Atoi(at[k+1:])
	if err != nil {
		return nil
	}
	lines := files.lines(at[:k])
	if line < 1 || line > len(lines) {
		return nil
	}
	for n := line; n >= 1 && n > line-200; n-- {
		f := strings.Fields(lines[n-1])
		if len(f) >= 2 && f[0] == "import" && (name == "" || f[1] == name) {
			args := f[2:]
			if i := slices.Index(args, "{"); i >= 0 {
				args = args[:i]
			}
			return append([]string{}, args...)
		}
	}
	return nil
}

// argPlaceholder is an import argument in a snippet: {args[N]}.
var argPlaceholder = regexp.MustCompile(`\{args\[(\d+)\]\}`)

// envPlaceholder is Caddy's {$NAME} or {$NAME:default}, filled in from
// the environment when the Caddyfile is read.
var envPlaceholder = regexp.MustCompile(`\{\$([^}:]+)(?::([^}]*))?\}`)

func expandEnv(s string) string {
	return envPlaceholder.ReplaceAllStringFunc(s, func(p string) string {
		m := envPlaceholder.FindStringSubmatch(p)
		if v, ok := os.LookupEnv(m[1]); ok {
			return v
		}
		return m[2]
	})
}

// fileCache keeps the lines of the Caddyfiles read back during one
// adaptation, in the Helper's State, so that each is read once however
// many directives are checked.
type fileCache map[string][]string

func filesOf(h httpcaddyfile.Helper) fileCache {
	const key = "sigra.placement.files"
	if fc, ok := h.State[key].(fileCache); ok {
		return fc
	}
	fc := fileCache{}
	if h.State != nil {
		h.State[key] = fc
	}
	return fc
}

// lines is the lines of file (fileLines), read once.
func (fc fileCache) lines(file string) []string {
	l, ok := fc[file]
	if !ok {
		l = fileLines(file)
		fc[file] = l
	}
	return l
}

// line is the words of line n (from 1) of file; nil if it cannot be
// read.
func (fc fileCache) line(file string, n int) []string {
	lines := fc.lines(file)
	if n < 1 || n > len(lines) {
		return nil
	}
	return strings.Fields(lines[n-1])
}

// fileLines is the lines of file; nil if it cannot be read. A regular
// file only: reading a named pipe or a device again would block, or read
// something else.
func fileLines(file string) []string {
	if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	return strings.Split(string(b), "\n")
}

// sameToken reports whether two tokens are one: the same text, at the
// same line of the same file.
func sameToken(a, b reflect.Value) bool {
	return a.FieldByName("Text").String() == b.FieldByName("Text").String() &&
		a.FieldByName("File").String() == b.FieldByName("File").String() &&
		a.FieldByName("Line").Int() == b.FieldByName("Line").Int()
}

// braceBalance counts seg's opening braces less its closing ones.
func braceBalance(seg reflect.Value) int {
	n := 0
	for j := range seg.Len() {
		switch t := seg.Index(j); {
		case isBrace(t, "{"):
			n++
		case isBrace(t, "}"):
			n--
		}
	}
	return n
}

// isNextOnNewLine is Caddy's test of whether t2 starts a new line after
// t1 (caddyfile.isNextOnNewLine, unexported): another file or import
// chain, or a later line than where t1, a heredoc or a quoted value
// with line breaks perhaps, ends.
func isNextOnNewLine(t1, t2 reflect.Value) bool {
	if t1.FieldByName("File").String() != t2.FieldByName("File").String() {
		return true
	}
	i1, i2 := t1.FieldByName("imports"), t2.FieldByName("imports")
	if i1.IsValid() && i2.IsValid() {
		if i1.Len() != i2.Len() {
			return true
		}
		for k := range i1.Len() {
			if i1.Index(k).String() != i2.Index(k).String() {
				return true
			}
		}
	}
	breaks := strings.Count(t1.FieldByName("Text").String(), "\n")
	if q := t1.FieldByName("wasQuoted"); q.IsValid() && q.Int() == '<' {
		breaks += 2 // a heredoc's opening and closing lines
	}
	return int(t1.FieldByName("Line").Int())+breaks < int(t2.FieldByName("Line").Int())
}

// tokenText joins the texts of seg's tokens from i up to j.
func tokenText(seg reflect.Value, i, j int) string {
	s := ""
	for k := i; k < j; k++ {
		if s != "" {
			s += " "
		}
		s += seg.Index(k).FieldByName("Text").String()
	}
	return s
}
