package caddymodule

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/text/unicode/norm"
)

// Some apps read a path more loosely than Caddy's matchers: Windows
// servers (IIS, .NET) drop the dots and spaces that end a segment and
// an NTFS stream name (/admin./x, /admin%20/x and
// /admin::$INDEX_ALLOCATION/x are /admin/x to them), and apps that fold
// Unicode (NFKC) read a fullwidth ａ as a, ﬁ as fi. Caddy picks the gate
// for the path as written, so such a spelling of a gated path meets the
// gates of another: /docs/internal./x meets an optional /docs/* gate and
// not the /docs/internal/* one, and /ａdmin/x passes a gate picked by
// `not path /admin/*`. The portal, and each gate, refuse a path that
// reads so as another whenever the path patterns of the config's gates,
// or of its sites' handle, handle_path and route blocks, tell the two
// apart (readsApart): which gates the app's reading would meet cannot be
// known.

// appReading is path p (decoded) as such an app reads it, doubled
// slashes merged as Caddy's matchers merge them; other is false when it
// reads no other way, as almost every path does (one scan).
func appReading(p string) (read string, other bool) {
	ascii, loose := true, false
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c >= 0x80:
			ascii = false
		case c == '.':
			loose = loose || i+1 == len(p) || p[i+1] == '/'
		case c == ' ':
			loose = loose || i+1 == len(p) || p[i+1] == '/' || i > 0 && p[i-1] == '/'
		case c < ' ':
			loose = true // a control character, which Java's trim() drops
		case c == ':':
			loose = loose || strings.HasPrefix(p[i:], ":$") || strings.HasPrefix(p[i:], "::$")
		case c == '(':
			loose = loose || i > 0 && p[i-1] == '/' && cookieless(p[i:])
		}
	}
	if ascii && !loose {
		return p, false
	}
	q := p
	if !ascii {
		// ı too: Java's equalsIgnoreCase takes it for i.
		q = strings.ReplaceAll(norm.NFKC.String(q), "ı", "i")
	}
	segs := strings.Split(q, "/")
	for i, s := range segs {
		if cookieless(s) {
			segs[i] = ""
			continue
		}
		if strings.Contains(s, ":$") {
			s = s[:strings.IndexByte(s, ':')] // name::$INDEX_ALLOCATION, name:stream:$DATA
		}
		// Spring before 4.3 trimmed a segment (Java's trim(): every
		// character up to the space) on both sides.
		segs[i] = strings.TrimRightFunc(strings.TrimLeftFunc(s, trimmed), func(r rune) bool { return r == '.' || trimmed(r) })
	}
	read = mergeSlashes(strings.Join(segs, "/"))
	return read, read != mergeSlashes(p)
}

// cookieless reports whether the segment that s starts with is one that
// ASP.NET (on .NET Framework) takes out of the path before it routes it:
// a cookieless session, (S(lit3py55t21z5v55vlm25s55)), or its kin,
// (A(…)F(…)), the shortest (S()). /(S(x))/admin/x is /admin/x to it.
func cookieless(s string) bool {
	if end := strings.IndexByte(s, '/'); end >= 0 {
		s = s[:end]
	}
	return len(s) >= 5 && s[0] == '(' && 'A' <= s[1]&^0x20 && s[1]&^0x20 <= 'Z' && s[2] == '(' && strings.HasSuffix(s, "))")
}

// trimmed reports whether Java's String.trim() drops r.
func trimmed(r rune) bool { return r <= ' ' }

// maxShortNames bounds the segments shaped like a short name that
// shortApart compares with the patterns: a path with more, which nobody
// writes, is refused without comparing.
const maxShortNames = 8

// shortApart reports whether path p has a segment that may be a Windows
// 8.3 short name (ADMIN~1, INTERN~2.HTM, the hashed IN3F2A~1.PDF), which
// IIS serves as the folder or file whose long name it stands for, of a
// name a path pattern spells (mayStandFor): which one cannot be known,
// so neither which gates the app's reading would meet. Others
// (HEAD~1, file~1.txt where no pattern names a FILE…) pass. One scan.
func (s *pathReads) shortApart(p string) bool {
	if strings.IndexByte(p, '~') < 0 {
		return false // almost every path
	}
	seen := 0
	for seg := range strings.SplitSeq(p, "/") {
		// The name before ~ is one to six characters, ~ among them
		// (a~b~cdef may be A~B~CD~1), which may be letters out of
		// ASCII that the volume's code page has (ÜBERSI~1).
		chars := 0
		for i, c := range seg {
			if chars++; chars > 7 {
				break
			}
			if c != '~' || i == 0 || !shortTail(seg[i+1:]) {
				continue
			}
			if seen++; seen > maxShortNames || s.mayStandFor(seg[:i]) {
				return true
			}
		}
	}
	return false
}

// shortTail reports whether t, what follows a short name's ~, is its
// number and an extension of up to three characters, if any.
func shortTail(t string) bool {
	j := 0
	for j < len(t) && '0' <= t[j] && t[j] <= '9' {
		j++
	}
	return j > 0 && (j == len(t) || t[j] == '.' && len(t)-j <= 4)
}

// mayStandFor reports whether the short name whose part before ~ is
// name may stand for a segment a path pattern spells: one whose long
// name, upper case without its dots and spaces (as Windows makes the
// short one), starts with name, or with its first characters where the
// last four are hex (the hashed form). Where a pattern cannot be read
// so (a regexp, *.pdf, a placeholder, an escape, glob syntax, a name not
// in ASCII: shortAll), any may.
func (s *pathReads) mayStandFor(name string) bool {
	if s.shortAll {
		return true
	}
	name = strings.ToUpper(name)
	heads := []string{name}
	if n := len(name); n >= 5 && isHex(name[n-4]) && isHex(name[n-3]) && isHex(name[n-2]) && isHex(name[n-1]) {
		heads = append(heads, name[:n-4])
	}
	for _, lit := range s.literals {
		for _, h := range heads {
			if shortPrefix(h, lit.name) || lit.open && shortPrefix(lit.name, h) {
				return true
			}
		}
	}
	return false
}

// shortPrefix reports whether a is a prefix of b, an _ in either
// standing for any character (Windows writes _ for + , ; = [ ]).
func shortPrefix(a, b string) bool {
	if len(a) > len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] != b[i] && a[i] != '_' && b[i] != '_' {
			return false
		}
	}
	return true
}

// patternLiteral is a segment of a path pattern as a short name is
// compared with it: upper case, without dots and spaces, up to a *
// (open: more may follow).
type patternLiteral struct {
	name string
	open bool
}

// addLiterals records the segments of pattern (lower case) that a short
// name may stand for, or sets shortAll when one cannot be read so: a
// placeholder or an escape (the name is not known here), or glob syntax
// (? and [a-z], which Caddy's path matcher reads in some patterns).
func (s *pathReads) addLiterals(pattern string) {
	if strings.ContainsAny(pattern, "{%?[\\") {
		s.shortAll = true
		return
	}
	for seg := range strings.SplitSeq(pattern, "/") {
		lit, open := seg, false
		if i := strings.IndexByte(seg, '*'); i >= 0 {
			lit, open = seg[:i], true
		}
		if lit == "" {
			// * alone matches any name, short or long; *.pdf, a suffix,
			// is not compared.
			s.shortAll = s.shortAll || len(seg) > 1
			continue
		}
		var b strings.Builder
		for i := 0; i < len(lit); i++ {
			switch c := lit[i]; {
			case c >= 0x80:
				s.shortAll = true
				return
			case c == '.' || c == ' ':
			case strings.IndexByte("+,;=]", c) >= 0:
				b.WriteByte('_')
			case 'a' <= c && c <= 'z':
				b.WriteByte(c - 'a' + 'A')
			default:
				b.WriteByte(c)
			}
		}
		if l := (patternLiteral{b.String(), open}); !slices.Contains(s.literals, l) {
			s.literals = append(s.literals, l)
		}
	}
}

// mergeSlashes is p cleaned as Caddy's path matchers read it, each run
// of slashes made one (dot segments are refused before any of this).
func mergeSlashes(p string) string { return caddyhttp.CleanPath(p, true) }

// SiteScope is what the Caddyfile adapter reads from the handle,
// handle_path and route blocks around a portal (the whole site) or a
// named route's gates: with the gates' own patterns, it tells which
// loose spellings of a path are refused (looseRefusal).
type SiteScope struct {
	// SitePaths and SiteRegexps are the path patterns and path regexps
	// of the blocks' matchers.
	SitePaths   []string `json:"site_paths,omitempty"`
	SiteRegexps []string `json:"site_regexps,omitempty"`
	// SiteStrips are the prefixes the blocks' handle_path and uri
	// strip_prefix strip before a block inside them matches.
	SiteStrips []string `json:"site_strips,omitempty"`
}

// pathReads are the path patterns (from path, and from a not's path)
// and path regexps of the matchers of the gates, and of the sites'
// handle, handle_path and route blocks (SiteScope).
type pathReads struct {
	paths  []string // lower case, as Caddy matches them
	res    []*regexp.Regexp
	strips []string // the prefixes handle_path and uri strip_prefix strip
	// literals are the paths' segments as a short name is compared with
	// them (mayStandFor); shortAll, that some pattern cannot be.
	literals []patternLiteral
	shortAll bool
}

// any reports whether there are patterns at all: without any, no path
// meets other gates than its reading would.
func (s *pathReads) any() bool { return s != nil && (len(s.paths) > 0 || len(s.res) > 0) }

// readsApart reports whether a pattern of the gates matches one
// of p and read, and not the other: a gate that one meets and the other
// does not.
func (s *pathReads) readsApart(p, read string) bool {
	p = mergeSlashes(p)
	lp, lr := strings.ToLower(p), strings.ToLower(read)
	for _, pattern := range s.paths {
		if matchesAsWritten(pattern, lp) != matchesAsWritten(pattern, lr) {
			return true
		}
	}
	for _, re := range s.res {
		if re.MatchString(p) != re.MatchString(read) {
			return true
		}
	}
	return false
}

// gateReads keeps the pathReads of all the App's gates and portals:
// filled as they are provisioned, read once the config serves. One set
// for every scope and site: a stricter gate nested in a block of its
// own counts as a sibling's would, and refusing a loose spelling where
// another site's gates tell it apart costs nothing a browser sends.
type gateReads struct {
	mu  sync.Mutex
	all pathReads
}

// add records the patterns of a gate or a portal's site and returns
// the reads, which it keeps. Patterns with a placeholder or an escape (compared with
// the path as written) are left out: they are not known, or not
// compared with the decoded path.
func (g *gateReads) add(lists [][]string, regexps, strips []string) (*pathReads, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := &g.all
	for _, x := range strips {
		if x != "" && x != "/" && !strings.ContainsAny(x, "{%") && !slices.Contains(s.strips, x) {
			s.strips = append(s.strips, x)
		}
	}
	for _, list := range lists {
		for _, pattern := range list {
			// A pattern that names a loose spelling itself (/ｶﾀﾛｸﾞ/*,
			// /wiki/Washington,_D.C.) would have every path it matches
			// told apart from its reading, and refused.
			if _, loose := appReading(pattern); !loose && !strings.ContainsAny(pattern, "{%") {
				s.paths = append(s.paths, strings.ToLower(pattern))
			}
			// Its short names are compared all the same: IIS serves
			// WASHIN~1.C as /wiki/Washington,_D.C.
			s.addLiterals(strings.ToLower(pattern))
		}
	}
	for _, expr := range regexps {
		s.shortAll = true // a regexp is not read for the names it spells
		if _, loose := appReading(expr); loose {
			continue // as a loose path pattern: ^/ｶﾀﾛｸﾞ/
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("path regexp %q: %v", expr, err)
		}
		s.res = append(s.res, re)
	}
	return s, nil
}

// looseRefusal is why a request for path p is refused when the config's
// patterns (reads) tell p apart from the path an app that reads paths
// loosely takes it for ("" if not). The path as it is after a prefix
// that the config strips is checked too (strippedLoose).
func looseRefusal(reads *pathReads, p string) string {
	if !reads.any() {
		return ""
	}
	read, other := appReading(p)
	if why := reads.loose(p, read, other); why != "" {
		return why
	}
	return reads.strippedLoose(p)
}

const (
	looseSpelling = "a spelling that some apps read as another path (a dot or space ending a segment, " +
		"an NTFS stream, a Unicode compatibility character), and the gates here tell the two apart"
	looseShortName = "a folder or file that Windows servers may read as a short name (ADMIN~1) for another, " +
		"and the gates here tell paths apart"
)

// loose is why path p, which the app reads as read (other when that is
// not p), is refused ("" if not).
func (s *pathReads) loose(p, read string, other bool) string {
	switch {
	case other && s.readsApart(p, read):
		return looseSpelling
	case s.shortApart(p) || other && s.shortApart(read):
		return looseShortName
	}
	return ""
}

// maxStripped bounds the paths strippedLoose tries: a handle_path in a
// handle_path is deep, and a hostile long path costs that many readings
// at most.
const maxStripped = 16

// strippedLoose is why p is refused ("" if not) as the path it is with
// a prefix stripped as the config's handle_path and uri strip_prefix
// strip one before a block matches (Caddy compares it without regard to
// case): /app%20admin/x is / admin/x under handle_path /app*, which
// Java's trim() reads as /admin/x, and /appADMIN~1/x is /ADMIN~1/x.
// Prefixes are stripped in turn, nested ones too.
func (s *pathReads) strippedLoose(p string) string {
	if len(s.strips) == 0 {
		return ""
	}
	tried := 0
	var try func(q string, depth int) string
	try = func(q string, depth int) string {
		q = mergeSlashes(q) // as Caddy cleans the path before it strips: //app/x loses /app
		for _, x := range s.strips {
			if tried >= maxStripped || len(q) < len(x) || !strings.EqualFold(q[:len(x)], x) {
				continue
			}
			tried++
			rest := q[len(x):]
			if !strings.HasPrefix(rest, "/") {
				rest = "/" + rest
			}
			r, o := appReading(rest)
			if why := s.loose(rest, r, o); why != "" {
				return why
			}
			if depth < 3 {
				if why := try(rest, depth+1); why != "" {
					return why
				}
			}
		}
		return ""
	}
	return try(p, 0)
}
