package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// patternRef is the grammar of a Pattern, written independently of
// validAction: "" or "*", an action (a lower-case letter, then a-z 0-9 _ -,
// at least two non-empty dot-separated segments), or a stem of one or more
// such segments followed by ".*"; at most MaxActionLen bytes, trimmed.
var (
	actionRef = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$`)
	stemRef   = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*\.\*$`)
)

func patternRef(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return true
	}
	return len(s) <= MaxActionLen && (actionRef.MatchString(s) || stemRef.MatchString(s))
}

// FuzzParsePattern: ParsePattern accepts exactly the pattern grammar
// (patternRef); errors wrap ErrBadPattern and return ""; an accepted
// pattern is the trimmed input, parses to itself again, and matches what
// its doc comment says: an exact action itself only, "x.*" everything
// under "x." but not "x".
func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{
		"", "*", " * ", "auth.logout", "auth.*", "auth.password_reset.*", "a.b", "a-1.b_2.c",
		" auth.logout\t", "auth", "auth.", ".auth", "auth..logout", "Auth.logout", "auth.*.x",
		"*.failure", "auth*", ".*", "*.*", "a.*.*", "auth.**", "auth.lo gout", "1a.b", "a.b\x00",
		"\u00a0auth.logout\u0085", strings.Repeat("a", 62) + "." + strings.Repeat("b", 65),
		strings.Repeat("a", 62) + "." + strings.Repeat("b", 63) + ".*",
		strings.Repeat("a", 62) + "." + strings.Repeat("b", 64) + ".*",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if want := patternRef(s); (err == nil) != want {
			t.Fatalf("ParsePattern(%q) = %q, %v; grammar says valid %v", s, p, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrBadPattern) || p != "" {
				t.Fatalf("ParsePattern(%q) = %q, %v; want \"\" and ErrBadPattern", s, p, err)
			}
			return
		}
		if string(p) != strings.TrimSpace(s) {
			t.Fatalf("ParsePattern(%q) = %q; want the trimmed input", s, p)
		}
		if again, err := ParsePattern(string(p)); err != nil || again != p {
			t.Fatalf("ParsePattern(%q) again = %q, %v", p, again, err)
		}
		prefix, wild := p.Prefix()
		switch {
		case p.All():
			if prefix != "" || !wild || !p.Match("auth.logout") || !p.Match("") {
				t.Fatalf("%q: Prefix %q %v, does not match everything", p, prefix, wild)
			}
		case wild:
			stem := strings.TrimSuffix(string(p), ".*")
			if prefix != stem+"." || !p.Match(stem+".x") || !p.Match(stem+".x.y") || p.Match(stem) || p.Match(stem+"x.y") {
				t.Fatalf("%q: Prefix %q, wrong matches around stem %q", p, prefix, stem)
			}
		default:
			if prefix != string(p) || !p.Match(string(p)) || p.Match(string(p)+".x") || p.Match(string(p)[1:]) {
				t.Fatalf("%q: Prefix %q %v, wrong matches", p, prefix, wild)
			}
			if err := validAction(string(p)); err != nil {
				t.Fatalf("exact pattern %q is not a valid action: %v", p, err)
			}
		}
	})
}

// FuzzParseTime: errors wrap ErrBadTime and return the zero time; "" is
// the zero time; a result is in UTC and is the RFC 3339 time, the date at
// midnight UTC (either no earlier than 1970), or now less the duration
// or day count (never after now); a non-zero result formatted as RFC
// 3339 reads back the same.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{
		"", " ", "2026-11-22T10:00:00Z", "2026-11-22T10:00:00.123456789+05:30", "2026-11-22", " 2026-11-22 ",
		"90m", "24h", "7d", "0d", "+7d", "-0d", "109500d", "109501d", "-1d", "1.5d", "d", "-5m", "0",
		"2562047h", "2562048h", "9223372036854775807ns", "yesterday", "2026-13-01", "2026-11-22T25:00:00Z",
		"0000-01-01T00:00:00+01:00", "0001-01-01", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59-23:59", "2026-11-22T10:00:00", "1h30m", "1µs",
	} {
		f.Add(s, int64(0))
	}
	f.Fuzz(func(t *testing.T, s string, nowOff int64) {
		// A plausible server clock: t0 give or take up to about 2^31 s.
		now := t0.Add(time.Duration(nowOff%(1<<31)) * time.Second)
		got, err := ParseTime(s, now)
		if err != nil {
			if !errors.Is(err, ErrBadTime) || !got.IsZero() {
				t.Fatalf("ParseTime(%q) = %v, %v; want zero and ErrBadTime", s, got, err)
			}
			return
		}
		trimmed := strings.TrimSpace(s)
		if trimmed == "" {
			if !got.IsZero() {
				t.Fatalf("ParseTime(%q) = %v; want the zero time", s, got)
			}
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("ParseTime(%q) = %v; not UTC", s, got)
		}
		// Whatever the form, a time before 1970 reads as 1970.
		want := func(ref time.Time) time.Time {
			if ref.Before(time.Unix(0, 0)) {
				return time.Unix(0, 0)
			}
			return ref
		}
		if ref, err := time.Parse(time.RFC3339Nano, trimmed); err == nil {
			if !got.Equal(want(ref)) {
				t.Fatalf("ParseTime(%q) = %v; want %v", s, got, want(ref))
			}
		} else if ref, err := time.Parse(time.DateOnly, trimmed); err == nil {
			if !got.Equal(want(ref)) {
				t.Fatalf("ParseTime(%q) = %v; want %v", s, got, want(ref))
			}
		} else {
			var d time.Duration
			if n, ok := strings.CutSuffix(trimmed, "d"); ok {
				days, err := strconv.Atoi(n)
				if err != nil {
					t.Fatalf("ParseTime(%q) = %v; %q is no day count", s, got, n)
				}
				d = time.Duration(days) * 24 * time.Hour
			} else if d, err = time.ParseDuration(trimmed); err != nil {
				t.Fatalf("ParseTime(%q) = %v; it is no duration: %v", s, got, err)
			}
			if d < 0 || !got.Equal(want(now.Add(-d))) {
				t.Fatalf("ParseTime(%q) at %v = %v; want now less %v, %v", s, now, got, d, want(now.Add(-d)))
			}
		}
		if y := got.Year(); y >= 1 && y <= 9999 {
			if back, err := ParseTime(got.Format(time.RFC3339Nano), now); err != nil || !back.Equal(got) {
				t.Fatalf("ParseTime(%q) = %v, which reads back as %v, %v", s, got, back, err)
			}
		}
	})
}

// FuzzParseQuery: for any query string, ParseQuery either fails with an
// error wrapping exactly one of ErrBadLimit, ErrBadTime, ErrBadPattern
// (and a zero Query), or returns the parameters as given with a valid
// pattern, times as ParseTime reads them and a limit of 0 to MaxLimit; and
// the Query it returns is one Timeline accepts, but for a since after
// until (ErrBadTime) or a cursor it did not make (ErrBadCursor).
func FuzzParseQuery(f *testing.F) {
	l, _ := fuzzTimelineLog(f)
	for _, s := range []string{
		"", "actor=u1&subject=u2&action=auth.*&limit=20&cursor=abc", "since=2026-11-01T00:00:00Z&until=2026-11-02",
		"since=24h", "since=7d&until=1d", "since=1d&until=7d", "limit=501", "limit=-1", "limit=ten", "limit=0", "limit=500",
		"limit=+5", "limit=99999999999999999999", "since=yesterday", "until=-5m", "action=auth*", "action=*",
		"action=%20auth.logout%20", "actor=actor-0&limit=1", "cursor=%0A", "limit=1&limit=600", "%zz=1", "since=%00",
	} {
		f.Add(s, int64(0))
	}
	errs := []error{ErrBadLimit, ErrBadTime, ErrBadPattern}
	f.Fuzz(func(t *testing.T, raw string, nowOff int64) {
		now := t0.Add(time.Duration(nowOff%(1<<31)) * time.Second)
		v, _ := url.ParseQuery(raw)
		q, err := ParseQuery(v, now)
		if err != nil {
			n := 0
			for _, e := range append(errs, ErrBadCursor) {
				if errors.Is(err, e) {
					n++
				}
			}
			if n != 1 || !slices.ContainsFunc(errs, func(e error) bool { return errors.Is(err, e) }) || q != (Query{}) {
				t.Fatalf("ParseQuery(%q) = %+v, %v; want a zero Query and one of %v", raw, q, err, errs)
			}
			return
		}
		if q.ActorID != v.Get("actor") || q.SubjectID != v.Get("subject") || q.Action != v.Get("action") || q.Cursor != v.Get("cursor") {
			t.Fatalf("ParseQuery(%q) = %+v; parameters changed", raw, q)
		}
		if _, err := ParsePattern(q.Action); err != nil {
			t.Fatalf("ParseQuery(%q) kept bad action %q", raw, q.Action)
		}
		for _, tc := range []struct {
			name string
			got  time.Time
		}{{"since", q.Since}, {"until", q.Until}} {
			if want, err := ParseTime(v.Get(tc.name), now); err != nil || !want.Equal(tc.got) {
				t.Fatalf("ParseQuery(%q) %s = %v; ParseTime says %v, %v", raw, tc.name, tc.got, want, err)
			}
		}
		if q.Limit < 0 || q.Limit > MaxLimit {
			t.Fatalf("ParseQuery(%q) limit %d", raw, q.Limit)
		}
		_, err = l.Timeline(context.Background(), q)
		switch {
		case err == nil:
		case errors.Is(err, ErrBadTime):
			if q.Since.IsZero() || q.Until.IsZero() || !q.Since.After(q.Until) {
				t.Fatalf("Timeline(ParseQuery(%q)) = %v, but since %v is not after until %v", raw, err, q.Since, q.Until)
			}
		case errors.Is(err, ErrBadCursor):
			if q.Cursor == "" {
				t.Fatalf("Timeline(ParseQuery(%q)) = %v without a cursor", raw, err)
			}
		default:
			t.Fatalf("Timeline(ParseQuery(%q)) = %v", raw, err)
		}
	})
}

// fuzzTimelineLog is a Log over a memStore holding 26 rows, a second
// apart but for the last two which share the second of the one before
// (so ids break ties), over three actors, two subjects and four actions.
// It returns them, oldest first.
func fuzzTimelineLog(f *testing.F) (*Log, []Row) {
	ft := newFakeTime()
	l, err := New(nil, ft, newMemStore(), Options{WakeAt: ft.WakeAt, ErrorLog: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { l.Close() })
	actions := []string{"auth.login.success", "auth.logout", "mfa.challenge.success", "billing.seat.assigned"}
	var rows []Row
	for i := range 26 {
		r := sampleRow(actions[i%len(actions)])
		r.ActorID = fmt.Sprintf("actor-%d", i%3)
		r.SubjectID = fmt.Sprintf("subject-%d", i%2)
		got, err := l.RecordRow(context.Background(), r)
		if err != nil {
			f.Fatal(err)
		}
		rows = append(rows, got)
		if i < 23 {
			ft.Advance(time.Second)
		}
	}
	slices.SortFunc(rows, func(a, b Row) int {
		pa, _ := PositionOf(a)
		pb, _ := PositionOf(b)
		switch {
		case pa.Less(pb):
			return -1
		case pb.Less(pa):
			return 1
		}
		return 0
	})
	return l, rows
}

// cursorKeyOf is the key Timeline checks q's cursors against.
func cursorKeyOf(q Query) cursorKey {
	pat := Pattern(strings.TrimSpace(q.Action))
	if pat == "*" {
		pat = ""
	}
	return q.cursorKey(pat)
}

// FuzzTimelineCursor: for any filters, Timeline fails only with
// ErrBadLimit, ErrBadPattern or ErrBadTime, as the query deserves; its
// pages, followed by NextCursor, give exactly the matching rows, newest
// first, once each; each cursor decodes to the last row of its page and
// encodes back to itself; the cursor is refused (ErrBadCursor) with other
// filters or with any one byte changed, and accepted with another limit;
// and an arbitrary cursor is refused with ErrBadCursor unless it is a
// genuine one (give or take the line breaks base64 skips).
func FuzzTimelineCursor(f *testing.F) {
	l, rows := fuzzTimelineLog(f)
	ctx := context.Background()
	type seed struct {
		actor, subject, action string
		limit                  int
		since, until           int64 // seconds after the first row; 0 is unbounded
		cursor                 string
	}
	for _, s := range []seed{
		{limit: 1}, {limit: 5}, {limit: 0}, {limit: 26}, {limit: 500}, {limit: 501}, {limit: -1},
		{actor: "actor-0", limit: 1}, {actor: "actor-1", action: "auth.*", limit: 2},
		{subject: "subject-1", action: "auth.logout", limit: 1}, {action: "*", limit: 3},
		{action: " auth.* ", limit: 3}, {action: "*.failure", limit: 1}, {actor: "actor-9", limit: 1},
		{since: 5, until: 15, limit: 2}, {since: 15, until: 5, limit: 2}, {since: 10, until: 10, limit: 2},
		{since: -1 << 40, until: 1 << 40, limit: 4}, {limit: 2, cursor: "!!!"}, {limit: 2, cursor: "AA"},
		{limit: 2, cursor: strings.Repeat("A", 44)}, {actor: "actor-0\x00", subject: "\xff", limit: 3},
	} {
		f.Add(s.actor, s.subject, s.action, s.limit, s.since, s.until, s.cursor, uint8(0), byte('A'))
		f.Add(s.actor, s.subject, s.action, s.limit, s.since, s.until, s.cursor, uint8(43), byte('_'))
	}
	// Genuine cursors, as arbitrary input: plain, with a line break, and
	// for other filters.
	p, err := l.Timeline(ctx, Query{Limit: 2})
	if err != nil || p.NextCursor == "" {
		f.Fatalf("seed page: %v, cursor %q", err, p.NextCursor)
	}
	f.Add("", "", "", 2, int64(0), int64(0), p.NextCursor, uint8(7), byte('-'))
	f.Add("", "", "", 7, int64(0), int64(0), p.NextCursor[:20]+"\n"+p.NextCursor[20:], uint8(7), byte('-'))
	f.Add("actor-0", "", "", 2, int64(0), int64(0), p.NextCursor, uint8(7), byte('-'))

	first := rows[0].OccurredAt
	at := func(off int64) time.Time {
		if off == 0 {
			return time.Time{}
		}
		return first.Add(time.Duration(off%(1<<33)) * time.Second) // about ±272 years
	}
	f.Fuzz(func(t *testing.T, actor, subject, action string, limit int, since, until int64, cursor string, mpos uint8, b byte) {
		q := Query{ActorID: actor, SubjectID: subject, Action: action, Since: at(since), Until: at(until), Limit: limit}
		_, perr := ParsePattern(action)
		badTime := !q.Since.IsZero() && !q.Until.IsZero() && q.Since.After(q.Until)
		badLimit := limit < 0 || limit > MaxLimit

		page, err := l.Timeline(ctx, q)
		switch {
		case badLimit:
			if !errors.Is(err, ErrBadLimit) {
				t.Fatalf("Timeline(limit %d) = %v; want ErrBadLimit", limit, err)
			}
			return
		case perr != nil:
			if !errors.Is(err, ErrBadPattern) {
				t.Fatalf("Timeline(action %q) = %v; want ErrBadPattern", action, err)
			}
			return
		case badTime:
			if !errors.Is(err, ErrBadTime) {
				t.Fatalf("Timeline(since %v, until %v) = %v; want ErrBadTime", q.Since, q.Until, err)
			}
			return
		case err != nil:
			t.Fatalf("Timeline(%+v) = %v", q, err)
		}
		key := cursorKeyOf(q)

		// An arbitrary cursor: refused, or genuine for these filters.
		if cursor != "" {
			cq := q
			cq.Cursor = cursor
			_, err := l.Timeline(ctx, cq)
			if err != nil && !errors.Is(err, ErrBadCursor) {
				t.Fatalf("Timeline(cursor %q) = %v; want nil or ErrBadCursor", cursor, err)
			}
			if err == nil {
				c, derr := decodeCursor(cursor, key)
				bare := strings.NewReplacer("\r", "", "\n", "").Replace(cursor)
				if derr != nil || encodeCursor(c, key) != bare {
					t.Fatalf("Timeline accepted cursor %q, which is not one it makes for %+v", cursor, key)
				}
			}
		}

		// Walk every page and compare with the rows that match.
		var want []string
		for i := len(rows) - 1; i >= 0; i-- {
			r := rows[i]
			if (actor == "" || r.ActorID == actor) && (subject == "" || r.SubjectID == subject) &&
				Pattern(strings.TrimSpace(action)).Match(r.Action) &&
				(q.Since.IsZero() || !r.OccurredAt.Before(q.Since)) && (q.Until.IsZero() || r.OccurredAt.Before(q.Until)) {
				want = append(want, r.ID)
			}
		}
		size := limit
		if size == 0 {
			size = DefaultLimit
		}
		var got []string
		mutated := false
		for pages := 0; ; pages++ {
			if pages > len(rows)+1 {
				t.Fatalf("pagination of %+v does not end", q)
			}
			if len(page.Rows) > size {
				t.Fatalf("page of %d rows; limit %d", len(page.Rows), size)
			}
			for _, r := range page.Rows {
				got = append(got, r.ID)
			}
			next := page.NextCursor
			if next == "" {
				break
			}
			if len(page.Rows) == 0 {
				t.Fatalf("empty page with cursor %q", next)
			}
			c, err := decodeCursor(next, key)
			if err != nil {
				t.Fatalf("cursor %q does not decode: %v", next, err)
			}
			if last, _ := PositionOf(page.Rows[len(page.Rows)-1]); c.pos.At != last.At || c.pos.ID != last.ID {
				t.Fatalf("cursor %q decodes to %v; the page ended at %v", next, c.pos, last)
			}
			if again := encodeCursor(c, key); again != next {
				t.Fatalf("cursor %q re-encodes as %q", next, again)
			}
			// Another limit is fine, other filters are not.
			other := q
			other.Cursor = next
			other.Limit = size%MaxLimit + 1
			if _, err := l.Timeline(ctx, other); err != nil {
				t.Fatalf("cursor %q with limit %d = %v", next, other.Limit, err)
			}
			for _, change := range []func(*Query){
				func(o *Query) { o.ActorID += "x" },
				func(o *Query) { o.SubjectID += "\x00" },
				func(o *Query) {
					if Pattern(strings.TrimSpace(o.Action)).All() {
						o.Action = "auth.*"
					} else {
						o.Action = "*"
					}
				},
				func(o *Query) {
					if o.Since.IsZero() {
						o.Since = first.Add(-time.Second)
					} else {
						o.Since = o.Since.Add(-time.Nanosecond)
					}
				},
				func(o *Query) {
					if o.Until.IsZero() {
						o.Until = first.Add(time.Hour)
					} else {
						o.Until = o.Until.Add(time.Nanosecond)
					}
				},
			} {
				o := q
				o.Cursor = next
				change(&o)
				if _, err := l.Timeline(ctx, o); !errors.Is(err, ErrBadCursor) {
					t.Fatalf("cursor %q for %+v reused with %+v = %v; want ErrBadCursor", next, q, o, err)
				}
			}
			if !mutated {
				mutated = true
				m := []byte(next)
				i := int(mpos) % len(m)
				if m[i] != b {
					m[i] = b
					o := q
					o.Cursor = string(m)
					if _, err := l.Timeline(ctx, o); !errors.Is(err, ErrBadCursor) {
						t.Fatalf("cursor %q changed to %q = %v; want ErrBadCursor", next, m, err)
					}
				}
			}
			q.Cursor = next
			if page, err = l.Timeline(ctx, q); err != nil {
				t.Fatalf("Timeline(cursor %q) = %v", next, err)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("pages of %+v gave\n%v\nwant\n%v", q, got, want)
		}
	})
}
