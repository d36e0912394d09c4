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

// trimmed reports whether Java's String.trim() drops r.
func trimmed(r rune) bool { return r <= ' ' }

// shortName reports whether path p has a folder segment that may be a
// Windows 8.3 short name (ADMIN~1, INTERN~2.HTM), which IIS serves as
// the folder whose long name it stands for: which one cannot be known.
// The last segment counts too when last: it may name a file that an
// exact pattern gates (/reports/FINANC~1.PDF); otherwise it passes
// (file~1.txt, HEAD~1), as nothing a path prefix gates is told apart by
// it.
func shortName(p string, last bool) bool {
	for off := 0; ; {
		i := strings.IndexByte(p[off:], '~')
		if i < 0 {
			return false
		}
		i += off
		start := strings.LastIndexByte(p[:i], '/') + 1
		j := i + 1
		for j < len(p) && '0' <= p[j] && p[j] <= '9' {
			j++
		}
		end := strings.IndexByte(p[j:], '/')
		if end < 0 {
			if !last {
				return false
			}
			end = len(p)
		} else {
			end += j
		}
		if n := i - start; n >= 1 && n <= 6 && j > i+1 && (j == end || p[j] == '.' && end-j <= 4) {
			return true
		}
		off = i + 1
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
	files  bool     // a pattern may name a file: exact, a suffix (*.pdf), a regexp
	strips []string // the prefixes handle_path and uri strip_prefix strip
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
				s.files = s.files || !strings.HasSuffix(pattern, "*") || strings.HasPrefix(pattern, "*")
			}
		}
	}
	for _, expr := range regexps {
		if _, loose := appReading(expr); loose {
			continue // as a loose path pattern: ^/ｶﾀﾛｸﾞ/
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("path regexp %q: %v", expr, err)
		}
		s.res = append(s.res, re)
		s.files = true
	}
	return s, nil
}

// looseRefusal is why a request for path p is refused when the config's
// patterns (reads) tell p apart from the path an app that reads paths
// loosely takes it for ("" if not); reading is appReading, or a cache
// of it.
func looseRefusal(reads *pathReads, p string, reading func(string) (string, bool)) string {
	if !reads.any() {
		return ""
	}
	read, other := reading(p)
	if other && reads.readsApart(p, read) || reads.strippedApart(p) {
		return "a spelling that some apps read as another path (a dot or space ending a segment, " +
			"an NTFS stream, a Unicode compatibility character), and the gates here tell the two apart"
	}
	if shortName(p, reads.files) || other && shortName(read, reads.files) {
		return "a folder that Windows servers may read as a short name (ADMIN~1) for another, " +
			"and the gates here tell paths apart"
	}
	return ""
}

// maxStripped bounds the paths strippedApart tries: a handle_path in a
// handle_path is deep, and a hostile long path costs that many readings
// at most.
const maxStripped = 16

// strippedApart reports whether p, with a prefix stripped as the
// config's handle_path and uri strip_prefix strip one before a block
// matches (Caddy compares it without regard to case), reads as another
// path that the patterns tell apart: /app%20admin/x is / admin/x under
// handle_path /app*, which Java's trim() reads as /admin/x. Prefixes
// are stripped in turn, nested ones too.
func (s *pathReads) strippedApart(p string) bool {
	if len(s.strips) == 0 {
		return false
	}
	tried := 0
	var try func(q string, depth int) bool
	try = func(q string, depth int) bool {
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
			if r, o := appReading(rest); o && s.readsApart(rest, r) || depth < 3 && try(rest, depth+1) {
				return true
			}
		}
		return false
	}
	return try(p, 0)
}
