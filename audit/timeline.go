package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Timeline page sizes.
const (
	// DefaultLimit is the page size when Query.Limit is 0.
	DefaultLimit = 50
	// MaxLimit is the largest page size; more is ErrBadLimit.
	MaxLimit = 500
	// scanBudget bounds the index entries one page may examine when
	// several filters are combined, so a page costs the same however large
	// the log grows (see Page).
	scanBudget = 10_000
	// exportChunk is how many rows Export reads per store call (one short
	// read transaction each).
	exportChunk = 1000
)

// Errors of timeline queries. The admin API answers each with 400.
var (
	// ErrBadCursor means a cursor was not produced by Timeline for the same
	// filters: tampered with, truncated, or reused with other filters.
	ErrBadCursor = errors.New("audit: bad cursor")
	// ErrBadLimit means a page size outside 1 to MaxLimit.
	ErrBadLimit = errors.New("audit: bad limit")
	// ErrBadTime means an unparseable time, or since after until.
	ErrBadTime = errors.New("audit: bad time")
)

// Query selects a timeline page. Filters combine with AND; zero values do
// not filter.
type Query struct {
	// ActorID keeps rows done by this actor.
	ActorID string
	// SubjectID keeps rows done to this subject.
	SubjectID string
	// Action is a Pattern: "auth.*", "auth.logout", "*" or "".
	Action string
	// Since (inclusive) and Until (exclusive) bound occurred_at.
	Since, Until time.Time
	// Cursor is Page.NextCursor of the previous page; "" for the first.
	Cursor string
	// Limit is the page size: 0 means DefaultLimit, at most MaxLimit.
	Limit int

	// sinceAgo and untilAgo are Since and Until as ParseQuery read them
	// when given relative to now ("24h"); "" for an absolute bound. The
	// next page's request resolves "24h" to another instant, so a cursor
	// is checked against the bound as written and carries the instant
	// the first page used.
	sinceAgo, untilAgo string
}

// Page is one timeline page; its JSON is the admin API's answer
// ({"rows": [...], "next_cursor": "..."}).
//
// A page normally holds Limit rows. When filters are combined (an actor and
// an action pattern, say), a page examines at most a fixed number of
// stored entries, so it may hold fewer rows, even none, while NextCursor
// is still set: keep following NextCursor until it is empty.
type Page struct {
	// Rows are newest first.
	Rows []Row `json:"rows"`
	// NextCursor continues the timeline; empty on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ParseQuery reads the admin API's query parameters: actor, subject,
// action, since, until (see ParseTime), cursor and limit. Errors wrap
// ErrBadLimit, ErrBadTime or ErrBadPattern.
//
// A relative since or until ("24h") is resolved against now on the first
// page only: the pages that follow its cursor keep that first window, so
// repeating the same parameters with the cursor a moment later goes on
// where the last page ended.
func ParseQuery(v url.Values, now time.Time) (Query, error) {
	q := Query{
		ActorID:   v.Get("actor"),
		SubjectID: v.Get("subject"),
		Action:    v.Get("action"),
		Cursor:    v.Get("cursor"),
	}
	if _, err := ParsePattern(q.Action); err != nil {
		return Query{}, err
	}
	var err error
	if q.Since, q.sinceAgo, err = parseTime(v.Get("since"), now); err != nil {
		return Query{}, fmt.Errorf("since: %w", err)
	}
	if q.Until, q.untilAgo, err = parseTime(v.Get("until"), now); err != nil {
		return Query{}, fmt.Errorf("until: %w", err)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return Query{}, fmt.Errorf("%w: %q is not a number", ErrBadLimit, s)
		}
		q.Limit = n
	}
	if _, err := q.limit(); err != nil {
		return Query{}, err
	}
	return q, nil
}

// ParseTime reads a time as the API and CLI accept it: RFC 3339
// ("2026-11-22T10:00:00Z", any offset, optional fraction), a date
// ("2026-11-22", midnight UTC), or a duration before now ("90m", "24h",
// "7d"). A time before 1970 reads as 1970-01-01T00:00:00Z, when the
// oldest possible row was recorded. "" is the zero time (unbounded).
// Errors wrap ErrBadTime.
func ParseTime(s string, now time.Time) (time.Time, error) {
	t, _, err := parseTime(s, now)
	return t, err
}

// parseTime is ParseTime that also returns, for a duration before now,
// the duration in a canonical form ("24h0m0s"); "" otherwise.
func parseTime(s string, now time.Time) (t time.Time, ago string, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, "", nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return notBeforeRows(t), "", nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return notBeforeRows(t), "", nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		// At most what a Duration holds (about 292 years), so the product
		// below cannot overflow.
		const maxDays = int(math.MaxInt64 / int64(24*time.Hour))
		if n, err = strconv.Atoi(days); err == nil && n >= 0 && n <= maxDays {
			d = time.Duration(n) * 24 * time.Hour
		} else {
			err = errors.New("bad day count")
		}
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d < 0 {
		return time.Time{}, "", fmt.Errorf("%w: %q is not RFC 3339, a date (2006-01-02) or a duration (24h, 7d)", ErrBadTime, s)
	}
	return notBeforeRows(now.Add(-d)), d.String(), nil
}

// notBeforeRows is t in UTC, or 1970-01-01 if t is earlier: no row is
// older (rows are stamped when recorded, and stored as nanoseconds since
// 1970), and the zero time, 0001-01-01, would read as no bound at all:
// until=0001-01-01 would return every row rather than none.
func notBeforeRows(t time.Time) time.Time {
	if t.Before(unixEpoch) {
		return unixEpoch
	}
	return t.UTC()
}

var unixEpoch = time.Unix(0, 0).UTC()

func (q Query) limit() (int, error) {
	switch {
	case q.Limit == 0:
		return DefaultLimit, nil
	case q.Limit < 0 || q.Limit > MaxLimit:
		return 0, fmt.Errorf("%w: %d is not between 1 and %d", ErrBadLimit, q.Limit, MaxLimit)
	}
	return q.Limit, nil
}

// Timeline returns one page of rows matching q, newest first.
func (l *Log) Timeline(ctx context.Context, q Query) (Page, error) {
	limit, err := q.limit()
	if err != nil {
		return Page{}, err
	}
	pat, err := ParsePattern(q.Action)
	if err != nil {
		return Page{}, err
	}
	if pat == "*" {
		pat = ""
	}
	sq := StoreQuery{
		ActorID: q.ActorID, SubjectID: q.SubjectID, Action: pat,
		Since: q.Since.UTC(), Until: q.Until.UTC(), Limit: limit, Budget: scanBudget,
	}
	if err := CheckRange(sq.Since, sq.Until); err != nil {
		return Page{}, err
	}
	key := q.cursorKey(pat)
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor, key)
		if err != nil {
			return Page{}, err
		}
		sq.Before = &c.pos
		// A relative bound keeps the instant the first page resolved it
		// to; an absolute one is the same instant either way.
		if q.sinceAgo != "" {
			sq.Since = c.since
		}
		if q.untilAgo != "" {
			sq.Until = c.until
		}
	}
	rows, next, err := l.st.AuditTimeline(ctx, sq)
	if err != nil {
		return Page{}, fmt.Errorf("audit: timeline: %w", err)
	}
	p := Page{Rows: rows}
	if p.Rows == nil {
		p.Rows = []Row{}
	}
	if next != nil {
		p.NextCursor = encodeCursor(cursor{pos: *next, since: sq.Since, until: sq.Until}, key)
	}
	return p, nil
}

// A cursor is base64url(version ‖ unix nanos ‖ uuid ‖ since ‖ until ‖
// check): the position of the last row of its page, the time bounds the
// first page used (each as unix seconds and nanoseconds, so that any time
// survives), and a truncated SHA-256 over the filters and all of that. It
// is not a secret and grants nothing (the caller may read the whole log
// anyway); the check catches a mangled cursor or one reused with other
// filters.
const (
	cursorVersion = 2
	cursorLen     = 1 + 8 + 16 + 12 + 12 + 8
)

// cursor is what a cursor carries.
type cursor struct {
	pos          Position
	since, until time.Time
}

// cursorKey is what a cursor is checked against: the filters as the
// caller gave them, a relative bound as written ("ago 24h0m0s") rather
// than the instant it comes to on this request.
type cursorKey struct {
	actor, subject, action, since, until string
}

func (q Query) cursorKey(action Pattern) cursorKey {
	bound := func(ago string, t time.Time) string {
		if ago != "" {
			return "ago " + ago
		}
		return fmt.Sprintf("at %d.%09d", t.Unix(), t.Nanosecond())
	}
	return cursorKey{q.ActorID, q.SubjectID, string(action), bound(q.sinceAgo, q.Since), bound(q.untilAgo, q.Until)}
}

func cursorCheck(payload []byte, k cursorKey) []byte {
	h := sha256.New()
	h.Write([]byte("sigra.audit.cursor.v2"))
	for _, s := range []string{k.actor, k.subject, k.action, k.since, k.until} {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	h.Write(payload)
	return h.Sum(nil)[:8]
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func readTime(b []byte) (time.Time, bool) {
	nsec := binary.BigEndian.Uint32(b[8:12])
	if nsec >= 1e9 {
		return time.Time{}, false
	}
	return time.Unix(int64(binary.BigEndian.Uint64(b[:8])), int64(nsec)).UTC(), true
}

func encodeCursor(c cursor, k cursorKey) string {
	b := make([]byte, 0, cursorLen)
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(c.pos.At.UnixNano()))
	b = append(b, c.pos.ID[:]...)
	b = appendTime(b, c.since)
	b = appendTime(b, c.until)
	b = append(b, cursorCheck(b, k)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string, k cursorKey) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != cursorLen || b[0] != cursorVersion {
		return cursor{}, ErrBadCursor
	}
	const checkAt = cursorLen - 8
	if !bytes.Equal(b[checkAt:], cursorCheck(b[:checkAt], k)) {
		return cursor{}, ErrBadCursor
	}
	nanos := int64(binary.BigEndian.Uint64(b[1:9]))
	if nanos < 0 {
		return cursor{}, ErrBadCursor
	}
	id, _ := uuid.FromBytes(b[9:25])
	since, ok1 := readTime(b[25:37])
	until, ok2 := readTime(b[37:49])
	if !ok1 || !ok2 {
		return cursor{}, ErrBadCursor
	}
	return cursor{pos: Position{At: time.Unix(0, nanos).UTC(), ID: id}, since: since, until: until}, nil
}

// CheckRange refuses (ErrBadTime) a time range whose since is after its
// until; a zero bound is open.
func CheckRange(since, until time.Time) error {
	if !since.IsZero() && !until.IsZero() && since.After(until) {
		return fmt.Errorf("%w: since %s is after until %s", ErrBadTime, since.UTC().Format(time.RFC3339Nano), until.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// Export writes the rows with since <= occurred_at < until (zero times are
// unbounded) to w as NDJSON, one row per line in its wire format, oldest
// first, and returns how many it wrote. It reads the store in short chunks,
// so a slow reader never holds a long transaction open; rows recorded
// during the export appear if they fall in the range ahead of it.
func (l *Log) Export(ctx context.Context, w io.Writer, since, until time.Time) (int, error) {
	since, until = since.UTC(), until.UTC()
	if err := CheckRange(since, until); err != nil {
		return 0, err
	}
	var after *Position
	var buf bytes.Buffer
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("audit: export: %w", err)
		}
		rows, err := l.st.AuditRange(ctx, after, since, until, exportChunk)
		if err != nil {
			return n, fmt.Errorf("audit: export: %w", err)
		}
		buf.Reset()
		for _, r := range rows {
			js, err := r.MarshalJSON()
			if err != nil {
				return n, fmt.Errorf("audit: export: encoding %s: %w", r.ID, err)
			}
			buf.Write(js)
			buf.WriteByte('\n')
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return n, fmt.Errorf("audit: export: writing: %w", err)
		}
		n += len(rows)
		if len(rows) < exportChunk {
			return n, nil
		}
		pos, err := PositionOf(rows[len(rows)-1])
		if err != nil {
			return n, fmt.Errorf("audit: export: %w", err)
		}
		after = &pos
	}
}
