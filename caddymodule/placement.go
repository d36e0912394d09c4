package caddymodule

import (
	"reflect"
	"slices"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// answering are the standard directives that answer the requests they
// match (or hand them to a block that may) without passing them on:
// whatever runs after them never sees those requests. redir is left out:
// it answers before authentication in Caddy's own order, with a
// redirect and nothing of the site.
var answering = []string{
	"abort", "error", "respond", "reverse_proxy", "php_fastcgi", "file_server", "acme_server",
	"copy_response", "metrics", "invoke", "handle", "handle_path", "route",
}

// checkPlacement refuses a sigra_portal or sigra_gate (dir, at h) that
// would not see the requests it is written for. A gate that never runs
// serves the app to anyone, and `caddy validate` would pass it:
//   - the global `order` option puts an answering directive before it,
//     or the gate before the portal;
//   - in a route block, which keeps the written order, an answering
//     directive is written before it, or the portal after a gate;
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
	b := blockOf(h)
	if b == nil {
		return nil
	}
	if dir == "sigra_portal" && b.matched != "" {
		return h.Errf("sigra_portal: it is inside %s on line %d, whose matcher shows it part of the site only: its pages are not served, "+
			"nor forged X-Sigra-* headers stripped, anywhere else. Write sigra_portal at the site's top level", b.matched, b.matchedLine)
	}
	if !b.written {
		return nil
	}
	for _, d := range b.dirs[:b.self] {
		if slices.Contains(answering, d.name) {
			return h.Errf("%s: %s on line %d comes first in this route block (a route keeps the written order), so the requests it answers never reach %s and are served to anyone. "+
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
	name string
	line int
}

// placedBlock is the block a directive is written in, as blockOf finds it.
type placedBlock struct {
	dirs    []placedDirective // the block's directives, in written order
	self    int               // the index of the directive asked about
	written bool              // the block runs them in written order (route, or a named route's top level)
	// matched is the directive, with its matcher, of the innermost
	// enclosing block that has one ("" if none), and matchedLine its line.
	matched     string
	matchedLine int
}

// blockOf finds the directive h is at among the tokens of its server
// block (a site, or a named route), which Caddy's Helper keeps
// unexported, and returns the block it is written in; nil if this
// Caddy's Helper has no such field, or the directive is not found.
func blockOf(h httpcaddyfile.Helper) *placedBlock {
	segs := reflect.ValueOf(h).FieldByName("parentBlock").FieldByName("Segments")
	if !segs.IsValid() || segs.Kind() != reflect.Slice {
		return nil
	}
	file, line, name := h.File(), h.Line(), h.Val()
	type frame struct {
		block    *placedBlock
		lastLine int  // of the last token in this block
		fresh    bool // the next token starts a directive
	}
	for i := range segs.Len() {
		seg := segs.Index(i)
		if seg.Kind() != reflect.Slice {
			return nil
		}
		// Caddy parses a site's top-level directives from the very
		// tokens kept here, and takes a directive's matcher out of them
		// (Dispenser.Delete, which shifts the rest down and so leaves the
		// last token twice): a route or handle block whose matcher is
		// gone shows as that doubled last token.
		n := seg.Len()
		lost := n >= 2 && sameToken(seg.Index(n-1), seg.Index(n-2))
		if lost {
			n--
		}
		// A named route's top level, like a site's, runs in Caddy's
		// directive order.
		stack := []*frame{{block: &placedBlock{self: -1}, fresh: true}}
		var (
			found      *placedBlock
			foundDepth int
			opener     placedDirective // the directive the last token belongs to
			openerArgs = -1            // its tokens after the name; -1 if none
		)
		for j := range n {
			t := seg.Index(j)
			text, quoted := t.FieldByName("Text").String(), t.FieldByName("wasQuoted")
			tline, tfile := int(t.FieldByName("Line").Int()), t.FieldByName("File").String()
			plain := !quoted.IsValid() || quoted.Int() == 0
			cur := stack[len(stack)-1]
			switch {
			case plain && text == "{" && openerArgs >= 0:
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
			case plain && text == "}" && len(stack) > 1:
				if found != nil && len(stack) == foundDepth {
					return found
				}
				stack = stack[:len(stack)-1]
				stack[len(stack)-1].fresh = true
				openerArgs = -1
				continue
			}
			if cur.fresh || tline > cur.lastLine {
				opener, openerArgs = placedDirective{name: text, line: tline}, 0
				cur.block.dirs = append(cur.block.dirs, opener)
				cur.fresh = false
				if found == nil && text == name && tline == line && tfile == file {
					found, foundDepth = cur.block, len(stack)
					found.self = len(found.dirs) - 1
				}
			} else if openerArgs >= 0 {
				openerArgs++
			}
			cur.lastLine = tline
		}
		if found != nil {
			return found
		}
	}
	return nil
}

// sameToken reports whether two tokens are one: the same text, at the
// same line of the same file.
func sameToken(a, b reflect.Value) bool {
	for _, f := range []string{"Text", "File"} {
		if a.FieldByName(f).String() != b.FieldByName(f).String() {
			return false
		}
	}
	return a.FieldByName("Line").Int() == b.FieldByName("Line").Int()
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
