package caddymodule

import (
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// answering are Caddy's standard directives that serve every request
// they match without passing it on: whatever runs after them never sees
// those requests. Left out: redir, which answers before authentication
// in Caddy's own order with a redirect and nothing of the site; abort
// and error, which serve nothing; copy_response, which only works in
// reverse_proxy's handle_response. Other plugins' handlers cannot be
// known here.
var answering = []string{"respond", "reverse_proxy", "php_fastcgi", "file_server", "acme_server", "metrics"}

// subroutes are the blocks that pass a request on when nothing in them
// answers it: they answer what their contents answer.
var subroutes = []string{"handle", "handle_path", "route"}

// caddyOrder is Caddy's default directive order (httpcaddyfile keeps it
// unexported) for the directives the checks compare: where sigra_portal
// and sigra_gate order themselves, the routing blocks, and the
// answering directives. TestCaddyOrder holds it to the Caddy this builds
// with. The global order option, when used, gives the whole order.
var caddyOrder = []string{
	"sigra_portal", "sigra_gate", "basic_auth", "forward_auth",
	"invoke", "handle", "handle_path", "route",
	"abort", "error", "respond", "metrics", "reverse_proxy", "php_fastcgi", "file_server", "acme_server",
}

// checkPlacement refuses a sigra_portal or sigra_gate (dir, at h) that
// would not see the requests it is written for. A gate that never runs
// serves the app to anyone, and `caddy validate` would pass it:
//   - at the site's top level, a directive of the site that answers
//     every request (answersAll) runs first, in Caddy's directive order
//     or the global order option's, before dir or the block holding it
//     (handle runs before route: route { sigra_gate } beside a bare
//     handle { reverse_proxy … } never runs), or the gate runs before
//     the portal;
//   - in a route block, which keeps the written order (the block it is
//     in, or one around it), such a directive is written before it, or
//     the portal after a gate in the same block; one with a matcher, a
//     public /healthz say, may well be meant;
//   - a portal sits in a block with a matcher (handle_path /app/*), or
//     in a block that something able to answer runs before, where it
//     sees part of the site only: its sign-in pages are not served, and
//     forged identity headers not stripped, elsewhere;
//   - a site has a gate and no portal (unless it invokes a named route,
//     which may hold it).
func checkPlacement(h httpcaddyfile.Helper, dir string) error {
	site, places := placesOf(h)
	if site == nil {
		return nil
	}
	order, byOption := h.Option("order").([]string)
	if !byOption {
		order = caddyOrder
	}
	if dir == "sigra_gate" && slices.Index(order, "sigra_portal") > slices.Index(order, "sigra_gate") && slices.ContainsFunc(places, func(p place) bool { return len(p) == 1 }) {
		return h.Err("sigra_gate: the global order option runs sigra_gate before sigra_portal, so the gate also covers the sign-in pages. " +
			"Both order themselves (the portal first): remove their order lines, or order sigra_portal before sigra_gate")
	}
	portals := site.holding("sigra_portal")
	if dir == "sigra_gate" && len(portals) == 0 && !namedRoute(h) && len(site.holding("invoke")) == 0 {
		return h.Err("sigra_gate: this site has no sigra_portal, so nobody can sign in to pass the gate, and forged X-Sigra-* headers reach the app on the paths no gate covers. " +
			"Write sigra_portal at the site's top level")
	}
	for _, p := range places {
		// The same snippet imported twice puts one directive in two
		// places: each must be right.
		if err := p.check(h, dir); err != nil {
			return err
		}
		a := p[0].at // the top-level directive: dir, or the block holding it
		outer := site.dirs[a]
		for i, d := range site.dirs {
			if i == a || !runsBefore(order, d, i, outer, a) {
				continue
			}
			why := "Caddy's directive order"
			if byOption {
				why = "the global order option"
			}
			switch {
			case len(p) == 1 && d.answersAll():
				return h.Errf("%s: the global order option runs %s (line %d) before %s, so the requests it answers never reach %s and are served to anyone. "+
					"%s orders itself (before basic_auth): remove its order line, or order it before %s", dir, d.name, d.line, dir, dir, dir, d.name)
			case d.answersAll():
				return h.Errf("%s: %s on line %d runs before the %s block on line %d that holds %s (%s) and answers every request, so none reaches %s, and the site is served to anyone. "+
					"Write %s at the site's top level, where it runs first, or give %s a matcher", dir, d.name, d.line, outer.name, outer.line, dir, why, dir, dir, d.name)
			case dir == "sigra_portal" && len(p) > 1 && d.mayAnswer():
				return h.Errf("sigra_portal: %s on line %d runs before the %s block on line %d that holds it (%s), so the portal never sees the requests %s answers: "+
					"its pages are not served, nor forged X-Sigra-* headers stripped, there. Write sigra_portal at the site's top level, where it runs first", d.name, d.line, outer.name, outer.line, why, d.name)
			}
		}
		for _, i := range portals {
			if d := site.dirs[i]; dir == "sigra_gate" && i != a && runsBefore(order, outer, a, d, i) {
				return h.Errf("sigra_gate: it runs before the sigra_portal on line %d (Caddy's directive order, or the global order option), so the gate also covers the sign-in pages. "+
					"Write sigra_portal at the site's top level, where it runs first", d.line)
			}
		}
	}
	return nil
}

// runsBefore reports whether Caddy runs the top-level directive d (the
// i-th written) before o (the j-th), in the given directive order: by
// the order, or, for the same directive, one with a matcher first, else
// as written. Directives the order does not know (other plugins')
// compare as not before. Both matching a path, Caddy puts the longer
// path first; that is left out, as is anything else a matcher decides,
// since a directive that answers every request has none.
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

// namedRoute reports whether h is in a named route (&(name) { … }),
// which sites invoke, rather than in a site.
func namedRoute(h httpcaddyfile.Helper) bool {
	nr := reflect.ValueOf(h).FieldByName("parentBlock").FieldByName("IsNamedRoute")
	return nr.IsValid() && nr.Kind() == reflect.Bool && nr.Bool()
}

// check is checkPlacement for one place the directive dir is written.
func (p place) check(h httpcaddyfile.Helper, dir string) error {
	for _, s := range p {
		if dir == "sigra_portal" && s.block.matched != "" {
			return h.Errf("sigra_portal: it is inside %s on line %d, whose matcher shows it part of the site only: its pages are not served, "+
				"nor forged X-Sigra-* headers stripped, anywhere else. Write sigra_portal at the site's top level", s.block.matched, s.block.matchedLine)
		}
	}
	for k, s := range p {
		if !s.block.written {
			continue
		}
		for _, d := range s.block.dirs[:s.at] {
			if d.answersAll() {
				what := dir
				if k < len(p)-1 {
					what = "the block holding " + dir
				}
				return h.Errf("%s: %s on line %d comes first in this route block (a route keeps the written order) and answers every request, so none reaches %s, and the site is served to anyone. "+
					"Write %s before it", dir, d.name, d.line, what, dir)
			}
		}
	}
	if s := p[len(p)-1]; dir == "sigra_gate" && s.block.written {
		for _, d := range s.block.dirs[s.at+1:] {
			if d.name == "sigra_portal" {
				return h.Errf("sigra_gate: sigra_portal on line %d comes after this gate in the route block (a route keeps the written order), so the gate also covers the sign-in pages. Write sigra_portal first", d.line)
			}
		}
	}
	return nil
}

// placedDirective is a directive written in a block.
type placedDirective struct {
	name    string
	line    int
	matcher bool         // an inline matcher follows its name (/path or @name; not * or /*, which match all)
	block   *placedBlock // the block it opens, if any
	// readBack is the matcher Caddy took out of a top-level directive,
	// read back from the file ("?" if it could not be).
	readBack string
}

// answersAll reports whether d answers every request that reaches it:
// an answering directive without a matcher, or a subroute without one
// that holds such a directive.
func (d placedDirective) answersAll() bool {
	switch {
	case d.matcher:
		return false
	case d.name == "file_server" && d.block != nil && slices.ContainsFunc(d.block.dirs, func(o placedDirective) bool { return o.name == "pass_thru" }):
		return false // a missing file goes on to what follows
	case slices.Contains(answering, d.name):
		return true
	case slices.Contains(subroutes, d.name) && d.block != nil:
		return slices.ContainsFunc(d.block.dirs, placedDirective.answersAll)
	}
	return false
}

// mayAnswer reports whether d answers some request it may match: an
// answering directive, with or without a matcher, or a subroute holding
// one.
func (d placedDirective) mayAnswer() bool {
	switch {
	case slices.Contains(answering, d.name):
		return true
	case slices.Contains(subroutes, d.name) && d.block != nil:
		return slices.ContainsFunc(d.block.dirs, placedDirective.mayAnswer)
	}
	return false
}

// holding returns the indexes of b's directives that are name or hold it
// in their blocks, at any depth.
func (b *placedBlock) holding(name string) []int {
	var out []int
	for i, d := range b.dirs {
		if d.name == name || d.block != nil && len(d.block.holding(name)) > 0 {
			out = append(out, i)
		}
	}
	return out
}

// placedBlock is a block of directives, as placesOf reads it.
type placedBlock struct {
	dirs    []placedDirective // in written order
	written bool              // a route block, which runs them in written order
	// matched is the directive, with its matcher, of the innermost
	// enclosing block that has one ("" if none), and matchedLine its line.
	matched     string
	matchedLine int
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
				nb := &placedBlock{written: opener.name == "route", matched: cur.block.matched, matchedLine: cur.block.matchedLine}
				matcher := tokenText(seg, j-openerArgs, j)
				if lost && len(stack) == 1 {
					matcher = opener.readBack
				}
				switch {
				case opener.name[0] == '@' || opener.name == "handle_errors": // a matcher's definition; status codes
				case matcher != "" && matcher != "*" && matcher != "/*":
					nb.matched, nb.matchedLine = strings.TrimSpace(opener.name+" "+strings.TrimPrefix(matcher, "?")), opener.line
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
				d := placedDirective{name: text, line: int(t.FieldByName("Line").Int())}
				if lost && len(stack) == 1 {
					// The top-level directive, its matcher taken out: there
					// was one, and only * or /* would match all.
					var rest []string
					for k := j + 1; k < n && !isNextOnNewLine(seg.Index(k-1), seg.Index(k)); k++ {
						rest = append(rest, seg.Index(k).FieldByName("Text").String())
					}
					d.readBack = lostMatcher(t.FieldByName("File").String(), d.line, text, rest)
					d.matcher = d.readBack != "*" && d.readBack != "/*"
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
	return top, places
}

// isBrace reports whether t is the brace b as Caddy reads one: not quoted.
func isBrace(t reflect.Value, b string) bool {
	q := t.FieldByName("wasQuoted")
	return t.FieldByName("Text").String() == b && (!q.IsValid() || q.Int() == 0)
}

// lostMatcher reads back from the Caddyfile the matcher Caddy took out
// of the top-level directive name on line, whose other tokens on the
// line are rest: the word after its name, if the line is that directive
// as written (not a snippet's, a file's that changed since, or a
// placeholder's); "?" otherwise, as when the file cannot be read (an
// adapted stdin, say).
func lostMatcher(file string, line int, name string, rest []string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "?"
	}
	lines := strings.Split(string(b), "\n")
	if line < 1 || line > len(lines) {
		return "?"
	}
	f := strings.Fields(lines[line-1])
	if len(f) < 2+len(rest) || f[0] != name || !slices.Equal(f[2:2+len(rest)], rest) {
		return "?"
	}
	return f[1]
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
