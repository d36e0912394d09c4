package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// seed records n rows a second apart, oldest first, cycling through three
// actors, two subjects and four actions, and returns them.
func seed(t *testing.T, l *Log, ft *fakeTime, n int) []Row {
	t.Helper()
	actions := []string{"auth.login.success", "auth.logout", "mfa.challenge.success", "billing.seat.assigned"}
	rows := make([]Row, 0, n)
	for i := range n {
		r := sampleRow(actions[i%len(actions)])
		r.ActorID = fmt.Sprintf("actor-%d", i%3)
		r.SubjectID = fmt.Sprintf("subject-%d", i%2)
		rows = append(rows, mustRecord(t, l, r))
		ft.Advance(time.Second)
	}
	return rows
}

// all pages through q and returns the ids, checking order and cursors.
func all(t *testing.T, l *Log, q Query) []string {
	t.Helper()
	var ids []string
	var last *Row
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		p, err := l.Timeline(context.Background(), q)
		if err != nil {
			t.Fatalf("Timeline(%+v): %v", q, err)
		}
		for i := range p.Rows {
			r := p.Rows[i]
			if last != nil {
				lp, _ := PositionOf(*last)
				rp, _ := PositionOf(r)
				if !rp.Less(lp) {
					t.Fatalf("row %s at %v is not older than the one before it", r.ID, r.OccurredAt)
				}
			}
			last = &r
			ids = append(ids, r.ID)
		}
		if p.NextCursor == "" {
			return ids
		}
		q.Cursor = p.NextCursor
	}
}

func newest(rows []Row, keep func(Row) bool) []string {
	var ids []string
	for i := len(rows) - 1; i >= 0; i-- {
		if keep(rows[i]) {
			ids = append(ids, rows[i].ID)
		}
	}
	return ids
}

func TestTimelinePagesNewestFirst(t *testing.T) {
	ft := newFakeTime()
	l := newTestLog(t, newMemStore(), ft, Options{})
	rows := seed(t, l, ft, 120)

	var sizes []int
	q := Query{}
	for {
		p, err := l.Timeline(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(p.Rows))
		if p.NextCursor == "" {
			break
		}
		q.Cursor = p.NextCursor
	}
	if fmt.Sprint(sizes) != "[50 50 20]" {
		t.Errorf("page sizes = %v; want [50 50 20] (default limit 50)", sizes)
	}
	if got, want := all(t, l, Query{Limit: 7}), newest(rows, func(Row) bool { return true }); !slices.Equal(got, want) {
		t.Errorf("paging by 7 returned %d rows; want all %d newest first", len(got), len(want))
	}
}

func TestTimelineLastPageHasNoCursor(t *testing.T) {
	ft := newFakeTime()
	l := newTestLog(t, newMemStore(), ft, Options{})
	seed(t, l, ft, 10)
	p, err := l.Timeline(context.Background(), Query{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rows) != 10 || p.NextCursor != "" {
		t.Fatalf("got %d rows, cursor %q; want 10 rows and no cursor", len(p.Rows), p.NextCursor)
	}
	b, _ := json.Marshal(Page{Rows: []Row{}})
	if string(b) != `{"rows":[]}` {
		t.Fatalf("empty page JSON = %s; want {\"rows\":[]}", b)
	}
	p, _ = l.Timeline(context.Background(), Query{ActorID: "nobody"})
	if p.Rows == nil {
		t.Fatal("no rows is nil; want an empty slice (JSON [])")
	}
}

func TestTimelineFilters(t *testing.T) {
	ft := newFakeTime()
	l := newTestLog(t, newMemStore(), ft, Options{})
	rows := seed(t, l, ft, 60)
	mid := rows[20].OccurredAt
	end := rows[40].OccurredAt
	tests := []struct {
		name string
		q    Query
		keep func(Row) bool
	}{
		{"everything", Query{}, func(Row) bool { return true }},
		{"by actor", Query{ActorID: "actor-1"}, func(r Row) bool { return r.ActorID == "actor-1" }},
		{"by subject", Query{SubjectID: "subject-0"}, func(r Row) bool { return r.SubjectID == "subject-0" }},
		{"exact action", Query{Action: "auth.logout"}, func(r Row) bool { return r.Action == "auth.logout" }},
		{"action prefix", Query{Action: "auth.*"}, func(r Row) bool { return strings.HasPrefix(r.Action, "auth.") }},
		{"star", Query{Action: "*"}, func(Row) bool { return true }},
		{"since (inclusive)", Query{Since: mid}, func(r Row) bool { return !r.OccurredAt.Before(mid) }},
		{"until (exclusive)", Query{Until: mid}, func(r Row) bool { return r.OccurredAt.Before(mid) }},
		{"since and until", Query{Since: mid, Until: end}, func(r Row) bool { return !r.OccurredAt.Before(mid) && r.OccurredAt.Before(end) }},
		{"actor and action", Query{ActorID: "actor-2", Action: "auth.*"}, func(r Row) bool {
			return r.ActorID == "actor-2" && strings.HasPrefix(r.Action, "auth.")
		}},
		{"subject, actor and time", Query{SubjectID: "subject-1", ActorID: "actor-0", Since: mid}, func(r Row) bool {
			return r.SubjectID == "subject-1" && r.ActorID == "actor-0" && !r.OccurredAt.Before(mid)
		}},
		{"nothing matches", Query{ActorID: "actor-9"}, func(Row) bool { return false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, limit := range []int{1, 4, 50} {
				tt.q.Limit = limit
				got, want := all(t, l, tt.q), newest(rows, tt.keep)
				if !slices.Equal(got, want) {
					t.Fatalf("limit %d: got %d ids; want %d\ngot  %v\nwant %v", limit, len(got), len(want), got, want)
				}
			}
		})
	}
}

func TestTimelineLimits(t *testing.T) {
	l := newTestLog(t, newMemStore(), newFakeTime(), Options{})
	tests := []struct {
		limit int
		ok    bool
	}{{0, true}, {1, true}, {MaxLimit, true}, {MaxLimit + 1, false}, {-1, false}, {1 << 30, false}}
	for _, tt := range tests {
		_, err := l.Timeline(context.Background(), Query{Limit: tt.limit})
		if tt.ok != (err == nil) || (!tt.ok && !errors.Is(err, ErrBadLimit)) {
			t.Errorf("Timeline(limit %d) = %v; want ok %v (else ErrBadLimit)", tt.limit, err, tt.ok)
		}
	}
}

func TestTimelineRejectsTamperedCursors(t *testing.T) {
	ft := newFakeTime()
	l := newTestLog(t, newMemStore(), ft, Options{})
	seed(t, l, ft, 10)
	q := Query{ActorID: "actor-0", Limit: 1}
	p, err := l.Timeline(context.Background(), q)
	if err != nil || p.NextCursor == "" {
		t.Fatalf("first page: %v, cursor %q", err, p.NextCursor)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(p.NextCursor)
	flip := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		return base64.RawURLEncoding.EncodeToString(b)
	}
	tests := []struct {
		name   string
		cursor string
		q      Query
	}{
		{"not base64", "!!!", q},
		{"empty payload", "AA", q},
		{"truncated", p.NextCursor[:len(p.NextCursor)-4], q},
		{"extended", p.NextCursor + "AAAA", q},
		{"time moved", flip(3), q},
		{"id changed", flip(12), q},
		{"check changed", flip(len(raw) - 1), q},
		{"unknown version", flip(0), q},
		{"padded base64", p.NextCursor + "=", q},
		{"reused for another actor", p.NextCursor, Query{ActorID: "actor-1", Limit: 1}},
		{"reused with an action filter", p.NextCursor, Query{ActorID: "actor-0", Action: "auth.*", Limit: 1}},
		{"reused with a time range", p.NextCursor, Query{ActorID: "actor-0", Since: t0, Limit: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.Cursor = tt.cursor
			if _, err := l.Timeline(context.Background(), tt.q); !errors.Is(err, ErrBadCursor) {
				t.Fatalf("Timeline(cursor %q) = %v; want ErrBadCursor", tt.cursor, err)
			}
		})
	}
	// The same cursor with a different limit is fine: limit is not a filter.
	if _, err := l.Timeline(context.Background(), Query{ActorID: "actor-0", Limit: 5, Cursor: p.NextCursor}); err != nil {
		t.Fatalf("Timeline(same filters, other limit) = %v; want nil", err)
	}
	// "*" and "" are the same filter.
	p2, _ := l.Timeline(context.Background(), Query{Action: "*", Limit: 1})
	if _, err := l.Timeline(context.Background(), Query{Limit: 1, Cursor: p2.NextCursor}); err != nil {
		t.Fatalf("cursor from action=* used without action = %v; want nil", err)
	}
}

// The admin UI's "Next" link (and a script paging the API) repeats the
// query with the cursor. A relative bound ("since=24h") is resolved again
// on every request, a little later each time; the pages must still go on
// where the last one ended, bounded as the first page was: no 400, no
// row twice, none skipped.
func TestTimelineRelativeTimesPage(t *testing.T) {
	ft := newFakeTime()
	l := newTestLog(t, newMemStore(), ft, Options{})
	rows := seed(t, l, ft, 12) // rows[i] at t0+i s; now t0+12s
	// since 11s ago (rows 1 on), until 2s ago (before row 10).
	v := url.Values{"since": {"11s"}, "until": {"2s"}, "limit": {"3"}}
	want := newest(rows[1:10], func(Row) bool { return true })
	var got []string
	for pages := 0; ; pages++ {
		if pages > len(rows) {
			t.Fatal("pagination does not end")
		}
		q, err := ParseQuery(v, ft.Now())
		if err != nil {
			t.Fatal(err)
		}
		p, err := l.Timeline(context.Background(), q)
		if err != nil {
			t.Fatalf("page %d (cursor %q), %s after the first: %v", pages+1, q.Cursor, time.Duration(pages)*time.Second, err)
		}
		for _, r := range p.Rows {
			got = append(got, r.ID)
		}
		if p.NextCursor == "" {
			break
		}
		v.Set("cursor", p.NextCursor)
		// The next request comes a second later: its "11s ago" is
		// another instant, which would drop the oldest row.
		ft.Advance(time.Second)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages gave %d rows\n%v\nwant the %d of the first page's window\n%v", len(got), got, len(want), want)
	}

	// The cursor still belongs to its filters: another relative or an
	// absolute bound is another query.
	q, _ := ParseQuery(url.Values{"since": {"11s"}, "limit": {"3"}}, ft.Now())
	p, err := l.Timeline(context.Background(), q)
	if err != nil || p.NextCursor == "" {
		t.Fatalf("first page: %v, cursor %q", err, p.NextCursor)
	}
	for _, other := range []url.Values{
		{"since": {"12s"}},
		{"since": {"11s"}, "until": {"1s"}},
		{"since": {q.Since.Format(time.RFC3339Nano)}},
		{},
	} {
		other.Set("cursor", p.NextCursor)
		oq, err := ParseQuery(other, ft.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Timeline(context.Background(), oq); !errors.Is(err, ErrBadCursor) {
			t.Errorf("cursor of since=11s used with %s = %v; want ErrBadCursor", other.Encode(), err)
		}
	}
}

func TestTimelineRejectsBadTimesAndPatterns(t *testing.T) {
	l := newTestLog(t, newMemStore(), newFakeTime(), Options{})
	if _, err := l.Timeline(context.Background(), Query{Since: t0, Until: t0.Add(-time.Second)}); !errors.Is(err, ErrBadTime) {
		t.Errorf("since after until = %v; want ErrBadTime", err)
	}
	if _, err := l.Timeline(context.Background(), Query{Action: "*.failure"}); !errors.Is(err, ErrBadPattern) {
		t.Errorf("bad action pattern = %v; want ErrBadPattern", err)
	}
	if _, err := l.Export(context.Background(), &bytes.Buffer{}, t0, t0.Add(-time.Second)); !errors.Is(err, ErrBadTime) {
		t.Errorf("Export since after until = %v; want ErrBadTime", err)
	}
}

func TestParseQuery(t *testing.T) {
	now := t0
	tests := []struct {
		raw     string
		want    Query
		wantErr error
	}{
		{"", Query{}, nil},
		{"actor=u1&subject=u2&action=auth.*&limit=20&cursor=abc", Query{ActorID: "u1", SubjectID: "u2", Action: "auth.*", Limit: 20, Cursor: "abc"}, nil},
		{"since=2026-11-01T00:00:00Z&until=2026-11-02", Query{Since: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}, nil},
		{"since=24h", Query{Since: now.Add(-24 * time.Hour), sinceAgo: "24h0m0s"}, nil},
		{"since=7d&until=90m", Query{Since: now.Add(-7 * 24 * time.Hour), Until: now.Add(-90 * time.Minute), sinceAgo: "168h0m0s", untilAgo: "1h30m0s"}, nil},
		{"limit=501", Query{}, ErrBadLimit},
		{"limit=-1", Query{}, ErrBadLimit},
		{"limit=ten", Query{}, ErrBadLimit},
		{"since=yesterday", Query{}, ErrBadTime},
		{"until=-5m", Query{}, ErrBadTime},
		{"action=auth*", Query{}, ErrBadPattern},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			v, _ := url.ParseQuery(tt.raw)
			got, err := ParseQuery(v, now)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseQuery(%q) = %v; want %v", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseQuery(%q) = %v", tt.raw, err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("ParseQuery(%q) = %+v; want %+v", tt.raw, got, tt.want)
			}
		})
	}
}

func TestExportWritesNDJSONOldestFirst(t *testing.T) {
	ft := newFakeTime()
	l := newTestLog(t, newMemStore(), ft, Options{})
	rows := seed(t, l, ft, 2*exportChunk+5) // crosses chunk boundaries

	var buf bytes.Buffer
	n, err := l.Export(context.Background(), &buf, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(rows) {
		t.Fatalf("Export wrote %d rows; want %d", n, len(rows))
	}
	sc := bufio.NewScanner(&buf)
	i := 0
	for sc.Scan() {
		var r Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if r.ID != rows[i].ID {
			t.Fatalf("line %d is %s; want %s (oldest first)", i+1, r.ID, rows[i].ID)
		}
		i++
	}
	if i != len(rows) {
		t.Fatalf("read %d lines; want %d", i, len(rows))
	}

	buf.Reset()
	since, until := rows[10].OccurredAt, rows[20].OccurredAt
	if n, err := l.Export(context.Background(), &buf, since, until); err != nil || n != 10 {
		t.Fatalf("Export(range) = %d, %v; want 10 rows", n, err)
	}
	if first := strings.SplitN(buf.String(), "\n", 2)[0]; !strings.Contains(first, rows[10].ID) {
		t.Fatalf("first exported line %s; want row %s", first, rows[10].ID)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errBoom }

func TestExportReportsWriteErrors(t *testing.T) {
	ft := newFakeTime()
	l := newTestLog(t, newMemStore(), ft, Options{})
	seed(t, l, ft, 3)
	if _, err := l.Export(context.Background(), failWriter{}, time.Time{}, time.Time{}); !errors.Is(err, errBoom) {
		t.Fatalf("Export to a failing writer = %v; want its error", err)
	}
}

// Day counts go as far as a time.Duration holds, and no further: the
// largest is accepted as exactly that many days back, one more is
// ErrBadTime rather than an overflowed product.
func TestParseTimeDayLimit(t *testing.T) {
	now := time.Unix(0, math.MaxInt64).UTC() // late enough that the days back stay after 1970
	maxDays := int(math.MaxInt64 / int64(24*time.Hour))
	got, err := ParseTime(strconv.Itoa(maxDays)+"d", now)
	if want := now.Add(-time.Duration(maxDays) * 24 * time.Hour); err != nil || !got.Equal(want) {
		t.Errorf("ParseTime(%dd) = %v, %v; want %v", maxDays, got, err, want)
	}
	for _, s := range []string{strconv.Itoa(maxDays+1) + "d", "109500d", "-1d"} {
		if _, err := ParseTime(s, now); !errors.Is(err, ErrBadTime) {
			t.Errorf("ParseTime(%q): %v; want ErrBadTime", s, err)
		}
	}
}

// No row is older than 1970, so every time before it reads as 1970: the
// zero time would read as no bound, and until=0001-01-01 would return
// every row instead of none.
func TestParseTimeBefore1970(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	for _, s := range []string{"0001-01-01", "0001-01-01T00:00:00Z", "0000-01-01T00:00:00+01:00", "1969-12-31T23:59:59.999999999Z", "106751d"} {
		if got, err := ParseTime(s, now); err != nil || !got.Equal(time.Unix(0, 0)) {
			t.Errorf("ParseTime(%q) = %v, %v; want 1970-01-01T00:00:00Z", s, got, err)
		}
	}
	ft := newFakeTime()
	l := newTestLog(t, newMemStore(), ft, Options{})
	seed(t, l, ft, 3)
	for _, v := range []string{"until=0001-01-01", "until=0001-01-01T00:00:00Z"} {
		q, err := ParseQuery(mustParseQuery(t, v), now)
		if err != nil {
			t.Fatal(err)
		}
		if got := all(t, l, q); len(got) != 0 {
			t.Errorf("%s: %d rows; want none", v, len(got))
		}
	}
	q, err := ParseQuery(mustParseQuery(t, "since=0001-01-01"), now)
	if err != nil {
		t.Fatal(err)
	}
	if got := all(t, l, q); len(got) != 3 {
		t.Errorf("since=0001-01-01: %d rows; want all 3", len(got))
	}
}

func mustParseQuery(t *testing.T, s string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
