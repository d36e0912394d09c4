package caddymodule

import (
	"reflect"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// answering are Caddy's standard directives that serve the requests they
// match (or hand them to a block that may) without passing them on:
// whatever runs after them never sees those requests. Left out: redir,
// which answers before authentication in Caddy's own order with a
// redirect and nothing of the site, abort and error, which serve nothing,
// and copy_response, which only works in reverse_proxy's handle_response.
// Other plugins' handlers cannot be known here.
var answering = []string{
	"respond", "reverse_proxy", "php_fastcgi", "file_server", "acme_server",
	"metrics", "invoke", "handle", "handle_path", "route",
}

// checkPlacement refuses a sigra_portal or sigra_gate (dir, at h) that
// would not see the requests it is written for. A gate that never runs
// serves the app to anyone, and `caddy validate` would pass it:
//   - the global `order` option puts an answering directive before it,
//     or the gate before the portal;
//   - in a route block, which keeps the written order, an answering
//     directive without a matcher (so for every request) is written
//     before it, or the portal after a gate; one with a matcher, a
//     public /healthz say, may well be meant;
//   - a portal sits in a block with a matcher (handle_path /app/*),
//     where it sees part of the site only: its sign-in pages are not
//     served, and forged identity headers not stripped, elsewhere.
func checkPlacement(h httpcaddyfile.Helper, dir string) error {
	if order, ok := h.Option("order").([]string); ok {
		self := slices.Index(order, dir)
		before := order[:max(self, 0)]
		for k := len(before) - 1; k >= 0; k-- { // the nearest, likely the one its line names
			if d := before[k]; slices.Contains(answering, d) {
				return h.Errf("%s: the global order option runs %s before %s, so the requests %s answers never reach %s and are served to anyone. "+
					"%s orders itself (before basic_auth): remove its order line, or order it before %s", dir, d, dir, d, dir, dir, d)
			}
		}
		if dir == "sigra_gate" && slices.Index(order, "sigra_portal") > self {
			return h.Err("sigra_gate: the global order option runs sigra_gate before sigra_portal, so the gate also covers the sign-in pages. " +
				"Both order themselves (the portal first): remove their order lines, or order sigra_portal before sigra_gate")
		}
	}
	// The same snippet imported twice puts one directive in two places:
	// each must be right.
	for _, b := range blocksOf(h) {
		if err := b.check(h, dir); err != nil {
			return err
		}
	}
	return nil
}

// check is checkPlacement for one place the directive dir is written.
func (b *placedBlock) check(h httpcaddyfile.Helper, dir string) error {
	if dir == "sigra_portal" && b.matched != "" {
		return h.Errf("sigra_portal: it is inside %s on line %d, whose matcher shows it part of the site only: its pages are not served, "+
			"nor forged X-Sigra-* headers stripped, anywhere else. Write sigra_portal at the site's top level", b.matched, b.matchedLine)
	}
	if !b.written {
		return nil
	}
	for _, d := range b.dirs[:b.self] {
		if slices.Contains(answering, d.name) && !d.matcher {
			return h.Errf("%s: %s on line %d comes first in this route block (a route keeps the written order) and has no matcher, so no request reaches %s, and the site is served to anyone. "+
				"Write %s before it", dir, d.name, d.line, dir, dir)
		}
	}
	if dir == "sigra_gate" {
		for _, d := range b.dirs[b.self+1:] {
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
	matcher bool // an inline matcher follows its name (/path, *, @name)
}

// placedBlock is a block a directive is written in, as blocksOf finds it.
type placedBlock struct {
	dirs    []placedDirective // the block's directives, in written order
	self    int               // the index of the directive asked about
	written bool              // a route block, which runs them in written order
	// matched is the directive, with its matcher, of the innermost
	// enclosing block that has one ("" if none), and matchedLine its line.
	matched     string
	matchedLine int
}

// blocksOf finds the directive h is at among the tokens of its server
// block (a site, or a named route), which Caddy's Helper keeps
// unexported, and returns each block it is written in (more than one if
// a snippet holding it is imported more than once); none if this Caddy's
// Helper has no such field. A directive starts where Caddy starts one:
// at the first token of a block, or a token on a new line (another file
// or import counts as a new line).
func blocksOf(h httpcaddyfile.Helper) []*placedBlock {
	segs := reflect.ValueOf(h).FieldByName("parentBlock").FieldByName("Segments")
	if !segs.IsValid() || segs.Kind() != reflect.Slice {
		return nil
	}
	file, line, name := h.File(), h.Line(), h.Val()
	type frame struct {
		block *placedBlock
		fresh bool // the next token starts a directive
	}
	var found []*placedBlock
	for i := range segs.Len() {
		seg := segs.Index(i)
		if seg.Kind() != reflect.Slice {
			return nil
		}
		// Caddy parses a site's top-level directives from the very
		// tokens kept here, and takes a directive's matcher out of them
		// (Dispenser.Delete, which shifts the rest down and so leaves the
		// last token twice): a segment with one "}" too many is a
		// top-level block whose matcher is gone.
		n := seg.Len()
		lost := n >= 2 && isBrace(seg.Index(n-1), "}") && braceBalance(seg) == -1
		if lost {
			n--
		}
		// A named route's top level, like a site's, runs in Caddy's
		// directive order.
		stack := []*frame{{block: &placedBlock{self: -1}, fresh: true}}
		var (
			opener     placedDirective // the directive the last token belongs to
			openerArgs = -1            // its tokens after the name; -1 if none
		)
		for j := range n {
			t := seg.Index(j)
			text := t.FieldByName("Text").String()
			cur := stack[len(stack)-1]
			switch {
			case isBrace(t, "{") && openerArgs >= 0:
				nb := &placedBlock{self: -1, written: opener.name == "route", matched: cur.block.matched, matchedLine: cur.block.matchedLine}
				switch {
				case openerArgs > 0 && opener.name[0] != '@':
					nb.matched, nb.matchedLine = opener.name+" "+tokenText(seg, j-openerArgs, j), opener.line
				case lost && len(stack) == 1:
					nb.matched, nb.matchedLine = opener.name, opener.line
				}
				stack = append(stack, &frame{block: nb, fresh: true})
				openerArgs = -1
				continue
			case isBrace(t, "}") && len(stack) > 1:
				stack = stack[:len(stack)-1]
				stack[len(stack)-1].fresh = true
				openerArgs = -1
				continue
			}
			if cur.fresh || isNextOnNewLine(seg.Index(j-1), t) {
				opener, openerArgs = placedDirective{name: text, line: int(t.FieldByName("Line").Int())}, 0
				if j+1 < n && !isNextOnNewLine(t, seg.Index(j+1)) {
					next := seg.Index(j + 1).FieldByName("Text").String()
					opener.matcher = next == "*" || strings.HasPrefix(next, "/") || strings.HasPrefix(next, "@")
				}
				cur.block.dirs = append(cur.block.dirs, opener)
				cur.fresh = false
				if text == name && opener.line == line && t.FieldByName("File").String() == file {
					cur.block.self = len(cur.block.dirs) - 1
					found = append(found, cur.block)
				}
			} else if openerArgs >= 0 {
				openerArgs++
			}
		}
	}
	// A block found holds its directives after this one too, now that
	// its segment has been read to the end.
	return found
}

// isBrace reports whether t is the brace b as Caddy reads one: not quoted.
func isBrace(t reflect.Value, b string) bool {
	q := t.FieldByName("wasQuoted")
	return t.FieldByName("Text").String() == b && (!q.IsValid() || q.Int() == 0)
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
