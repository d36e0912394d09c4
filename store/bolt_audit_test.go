package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/hmacsig"
)

var (
	auditT0     = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	auditSecret = []byte("audit-webhook-secret-0123456789")
)

const auditWait = 20 * time.Second // generous: a hang fails, a pass is fast

func auditOpen(t testing.TB, path string) *Bolt {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "sigra.db")
	}
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func auditNewLog(t testing.TB, st audit.Store, clk clock.Clock, opts audit.Options) *audit.Log {
	t.Helper()
	if opts.ErrorLog == nil {
		opts.ErrorLog = slog.New(slog.DiscardHandler)
	}
	l, err := audit.New(nil, clk, st, opts)
	if err != nil {
		t.Fatalf("audit.New: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// auditEntry builds a normalised entry the way audit.Log would.
func auditEntry(t testing.TB, r audit.Row, due time.Time, hooks ...string) audit.Entry {
	t.Helper()
	if r.ID == "" {
		r.ID = uuid.Must(uuid.NewV7()).String()
	}
	if r.ActorType == "" {
		r.ActorType = audit.ActorUser
	}
	r.OccurredAt = r.OccurredAt.UTC()
	pos, err := audit.PositionOf(r)
	if err != nil {
		t.Fatal(err)
	}
	js, err := r.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return audit.Entry{Row: r, Pos: pos, JSON: js, Hooks: hooks, DueAt: due}
}

// auditKeys counts the keys of an audit bucket.
func auditKeys(t *testing.T, b *Bolt, name []byte) int {
	t.Helper()
	n := 0
	if err := b.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, name).ForEach(func(k, v []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAuditBoltAppendIsIdempotent(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	hook := audit.WebhookConfig{URL: "https://hooks.example.com/"}.ID()
	e1 := auditEntry(t, audit.Row{Action: "auth.logout", ActorID: "u1", SubjectID: "s1", OccurredAt: auditT0}, auditT0, hook)
	e2 := auditEntry(t, audit.Row{Action: "auth.logout", ActorID: "u1", OccurredAt: auditT0}, auditT0, hook)
	sameIDLater := e1
	sameIDLater.Row.OccurredAt = auditT0.Add(time.Second)
	sameIDLater = auditEntry(t, sameIDLater.Row, auditT0, hook)

	got, err := b.AppendAudit(ctx, []audit.Entry{e1, e2, e1})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[true true false]" {
		t.Fatalf("inserted = %v; want [true true false] (a duplicate in one batch is skipped)", got)
	}
	got, err = b.AppendAudit(ctx, []audit.Entry{e2, sameIDLater})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[false true]" {
		t.Fatalf("inserted = %v; want [false true] (id + occurred_at is the identity)", got)
	}
	for _, c := range []struct {
		name []byte
		want int
	}{{bktAuditRows, 3}, {bktAuditUnindexed, 3}, {bktAuditPending, 3}} {
		if n := auditKeys(t, b, c.name); n != c.want {
			t.Errorf("%s holds %d keys; want %d", c.name, n, c.want)
		}
	}
}

func TestAuditBoltAppendRejectsBadHookIDs(t *testing.T) {
	b := auditOpen(t, "")
	e := auditEntry(t, audit.Row{Action: "auth.logout", OccurredAt: auditT0}, auditT0, "not-hex")
	if _, err := b.AppendAudit(context.Background(), []audit.Entry{e}); err == nil {
		t.Fatal("AppendAudit accepted a malformed webhook id")
	}
	if n := auditKeys(t, b, bktAuditRows); n != 0 {
		t.Fatalf("rows = %d; want 0 after a refused batch", n)
	}
}

// auditRandomRows stores n rows with few distinct actors, subjects and
// actions and many equal timestamps (ties are broken by id), and returns
// them newest first. With n above auditIndexBatch, some rows are indexed
// and the newest ones are not yet.
func auditRandomRows(t *testing.T, b *Bolt, n int, seed uint64) []audit.Row {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	actions := []string{"auth.login.success", "auth.login.failure", "auth.logout", "authz.denied",
		"mfa.challenge.success", "mfa.totp.enrolled", "billing.seat.assigned", "admin.user.disable"}
	var es []audit.Entry
	for range n {
		r := audit.Row{
			Action:     actions[rng.IntN(len(actions))],
			OccurredAt: auditT0.Add(time.Duration(rng.IntN(n/3+1)) * time.Second),
		}
		if rng.IntN(10) > 0 {
			r.ActorID = fmt.Sprintf("actor-%d", rng.IntN(5))
		}
		if rng.IntN(3) > 0 {
			r.SubjectID = fmt.Sprintf("subject-%d", rng.IntN(4))
		}
		es = append(es, auditEntry(t, r, auditT0))
	}
	// In several commits. The newest rows (up to half an index batch) are
	// left unindexed, the others are indexed, so queries read both.
	ctx := context.Background()
	tail := max(0, len(es)-auditIndexBatch/2)
	for i := 0; i < tail; i += 500 {
		if _, err := b.AppendAudit(ctx, es[i:min(i+500, tail)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.db.Update(auditIndexPending); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AppendAudit(ctx, es[tail:]); err != nil {
		t.Fatal(err)
	}
	rows := make([]audit.Row, len(es))
	for i, e := range es {
		rows[i] = e.Row
	}
	sort.Slice(rows, func(i, j int) bool {
		pi, _ := audit.PositionOf(rows[i])
		pj, _ := audit.PositionOf(rows[j])
		return pj.Less(pi)
	})
	return rows
}

func auditIDs(rows []audit.Row) []string {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	return ids
}

// auditQueries are the filter combinations every backend must answer like
// a scan would.
func auditQueries(rows []audit.Row) map[string]audit.StoreQuery {
	mid := rows[len(rows)/2].OccurredAt
	late := rows[len(rows)/5].OccurredAt
	return map[string]audit.StoreQuery{
		"all":                      {},
		"actor":                    {ActorID: "actor-1"},
		"unknown actor":            {ActorID: "actor-99"},
		"actor prefix is no match": {ActorID: "actor-"},
		"subject":                  {SubjectID: "subject-2"},
		"exact action":             {Action: "auth.logout"},
		"auth.* (not authz)":       {Action: "auth.*"},
		"auth.login.*":             {Action: "auth.login.*"},
		"pattern matching nothing": {Action: "oidc.*"},
		"since":                    {Since: mid},
		"until":                    {Until: mid},
		"window":                   {Since: mid, Until: late},
		"actor and pattern":        {ActorID: "actor-2", Action: "mfa.*"},
		"subject and actor":        {SubjectID: "subject-0", ActorID: "actor-3"},
		"subject, action, window":  {SubjectID: "subject-1", Action: "auth.*", Since: mid, Until: late},
		"pattern and window":       {Action: "auth.*", Since: mid, Until: late},
		"actor and window":         {ActorID: "actor-4", Until: mid},
	}
}

func TestAuditBoltTimelineMatchesAScan(t *testing.T) {
	b := auditOpen(t, "")
	rows := auditRandomRows(t, b, 2500, 1)
	if p := auditKeys(t, b, bktAuditUnindexed); p == 0 || p == len(rows) {
		t.Fatalf("%d of %d rows unindexed; the test wants both kinds", p, len(rows))
	}
	l := auditNewLog(t, b, clock.NewFake(auditT0), audit.Options{})
	ctx := context.Background()
	for name, sq := range auditQueries(rows) {
		var want []string
		for _, r := range rows {
			if sq.Match(r) {
				want = append(want, r.ID)
			}
		}
		for _, limit := range []int{1, 7, 50, 500} {
			t.Run(fmt.Sprintf("%s/limit=%d", name, limit), func(t *testing.T) {
				q := audit.Query{ActorID: sq.ActorID, SubjectID: sq.SubjectID, Action: string(sq.Action), Since: sq.Since, Until: sq.Until, Limit: limit}
				var got []string
				for pages := 0; ; pages++ {
					if pages > len(rows)+1 {
						t.Fatal("pagination does not end")
					}
					p, err := l.Timeline(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					if len(p.Rows) > limit {
						t.Fatalf("page of %d rows; limit %d", len(p.Rows), limit)
					}
					got = append(got, auditIDs(p.Rows)...)
					if p.NextCursor == "" {
						break
					}
					q.Cursor = p.NextCursor
				}
				if !slices.Equal(got, want) {
					t.Fatalf("got %d rows; want %d newest first", len(got), len(want))
				}
			})
		}
	}
}

// A tiny budget forces short and empty pages; following next must still
// visit exactly the matching rows, in order.
func TestAuditBoltTimelineBudget(t *testing.T) {
	b := auditOpen(t, "")
	rows := auditRandomRows(t, b, 2500, 2)
	ctx := context.Background()
	for name, sq := range auditQueries(rows) {
		t.Run(name, func(t *testing.T) {
			var want []string
			for _, r := range rows {
				if sq.Match(r) {
					want = append(want, r.ID)
				}
			}
			sq.Limit, sq.Budget = 3, 5
			var got []string
			for calls := 0; ; calls++ {
				if calls > len(rows) {
					t.Fatal("does not end")
				}
				page, next, err := b.AuditTimeline(ctx, sq)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, auditIDs(page)...)
				if next == nil {
					break
				}
				sq.Before = next
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got %d rows; want %d", len(got), len(want))
			}
		})
	}
}

func TestAuditBoltExportAcrossChunks(t *testing.T) {
	b := auditOpen(t, "")
	rows := auditRandomRows(t, b, 2600, 3)
	l := auditNewLog(t, b, clock.NewFake(auditT0), audit.Options{})
	var buf bytes.Buffer
	n, err := l.Export(context.Background(), &buf, time.Time{}, time.Time{})
	if err != nil || n != len(rows) {
		t.Fatalf("Export = %d, %v; want %d rows", n, err, len(rows))
	}
	var got []string
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var r audit.Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r.ID)
	}
	want := auditIDs(rows)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatal("export is not every row, oldest first")
	}

	since, until := rows[2000].OccurredAt, rows[100].OccurredAt
	buf.Reset()
	n, err = l.Export(context.Background(), &buf, since, until)
	var wantN int
	for _, r := range rows {
		if !r.OccurredAt.Before(since) && r.OccurredAt.Before(until) {
			wantN++
		}
	}
	if err != nil || n != wantN || strings.Count(buf.String(), "\n") != wantN {
		t.Fatalf("Export(window) = %d, %v; want %d rows", n, err, wantN)
	}
}

func TestAuditBoltPruneRemovesRowsIndexesAndDeliveries(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	hook := audit.WebhookConfig{URL: "https://hooks.example.com/"}.ID()
	var es []audit.Entry
	const n = 2*auditPruneChunk + 300
	for i := range n {
		r := audit.Row{Action: "auth.logout", ActorID: fmt.Sprint("u", i%7), SubjectID: fmt.Sprint("s", i%3),
			OccurredAt: auditT0.Add(time.Duration(i) * time.Second)}
		es = append(es, auditEntry(t, r, auditT0.Add(time.Duration(n-i)*time.Second), hook))
	}
	if _, err := b.AppendAudit(ctx, es); err != nil {
		t.Fatal(err)
	}
	const keep = 500
	cut := es[n-keep].Row.OccurredAt
	settle := func(i int, v audit.Verdict) audit.Settlement {
		d := audit.Delivery{HookID: hook, RowID: es[i].Row.ID, OccurredAt: es[i].Row.OccurredAt, DueAt: es[i].DueAt, Attempts: 15}
		return audit.Settlement{Delivery: d, Verdict: v}
	}
	// The receiver took the old rows' deliveries but two, still pending
	// (it has been down since); some died, for old and new rows alike.
	pending := map[int]bool{7: true, 8: true}
	var ss []audit.Settlement
	for i := range n - keep {
		if !pending[i] && i != 5 && i != 10 {
			ss = append(ss, settle(i, audit.Delivered))
		}
	}
	for _, i := range []int{5, 10, n - 1} {
		ss = append(ss, settle(i, audit.Dead))
	}
	if err := b.AuditSettle(ctx, ss); err != nil {
		t.Fatal(err)
	}
	// Pruning stops at the oldest row still pending (7): rows 0 to 6 go.
	deleted, err := b.PruneAudit(ctx, cut)
	if err != nil || deleted != 7 {
		t.Fatalf("PruneAudit = %d, %v; want 7, up to the oldest row still pending", deleted, err)
	}
	counts := func(want map[string]int) {
		t.Helper()
		for name, w := range want {
			if got := auditKeys(t, b, []byte(name)); got != w {
				t.Errorf("%s holds %d keys after pruning; want %d", name, got, w)
			}
		}
	}
	held := n - 7
	counts(map[string]int{
		string(bktAuditRows): held, string(bktAuditByActor): held, string(bktAuditBySubject): held, string(bktAuditByAction): held,
		string(bktAuditPending): keep - 1 + len(pending), string(bktAuditDead): 2, // rows 10 and n-1; 5's went with it
	})
	for i := range pending {
		if r, err := b.AuditRange(ctx, nil, es[i].Row.OccurredAt, es[i].Row.OccurredAt.Add(time.Nanosecond), 1); err != nil || len(r) != 1 || r[0].ID != es[i].Row.ID {
			t.Errorf("row %d, its delivery pending: %v, %v; want it kept", i, r, err)
		}
	}
	if again, err := b.PruneAudit(ctx, cut); err != nil || again != 0 {
		t.Fatalf("second PruneAudit = %d, %v; want 0", again, err)
	}
	// Once settled, delivered or dead, they go at the next prune.
	if err := b.AuditSettle(ctx, []audit.Settlement{settle(7, audit.Delivered), settle(8, audit.Dead)}); err != nil {
		t.Fatal(err)
	}
	if again, err := b.PruneAudit(ctx, cut); err != nil || again != n-keep-7 {
		t.Fatalf("PruneAudit after they settled = %d, %v; want %d", again, err, n-keep-7)
	}
	counts(map[string]int{string(bktAuditRows): keep, string(bktAuditPending): keep - 1, string(bktAuditDead): 1})
}

// Bounds outside the years a key can hold (1970 to 2262) keep their
// meaning: a retention reaching before 1970 prunes nothing, and a since
// before 1970 or an until after 2262 leaves every row in.
func TestAuditBoltBoundsBeyondKeyYears(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	const n = 3
	var es []audit.Entry
	for i := range n {
		r := audit.Row{Action: "auth.logout", ActorID: "u1", SubjectID: "u1", OccurredAt: auditT0.Add(time.Duration(i) * time.Second)}
		es = append(es, auditEntry(t, r, time.Time{}))
	}
	if _, err := b.AppendAudit(ctx, es); err != nil {
		t.Fatal(err)
	}
	early := []time.Time{time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(1926, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)}
	late := []time.Time{time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}
	for _, since := range early {
		for _, q := range []audit.StoreQuery{{Since: since, Limit: 10}, {ActorID: "u1", Since: since, Limit: 10}, {Action: "auth.*", Since: since, Limit: 10}} {
			if rows, _, err := b.AuditTimeline(ctx, q); err != nil || len(rows) != n {
				t.Errorf("AuditTimeline(%+v) = %d rows, %v; want %d", q, len(rows), err, n)
			}
		}
		if rows, err := b.AuditRange(ctx, nil, since, time.Time{}, 10); err != nil || len(rows) != n {
			t.Errorf("AuditRange since %v = %d rows, %v; want %d", since, len(rows), err, n)
		}
		if rows, err := b.AuditRange(ctx, nil, time.Time{}, since, 10); err != nil || len(rows) != 0 {
			t.Errorf("AuditRange until %v = %d rows, %v; want none", since, len(rows), err)
		}
		if deleted, err := b.PruneAudit(ctx, since); err != nil || deleted != 0 {
			t.Errorf("PruneAudit(%v) = %d, %v; want nothing deleted", since, deleted, err)
		}
	}
	for _, until := range late {
		if rows, _, err := b.AuditTimeline(ctx, audit.StoreQuery{Until: until, Limit: 10}); err != nil || len(rows) != n {
			t.Errorf("AuditTimeline until %v = %d rows, %v; want %d", until, len(rows), err, n)
		}
		if rows, err := b.AuditRange(ctx, nil, time.Time{}, until, 10); err != nil || len(rows) != n {
			t.Errorf("AuditRange until %v = %d rows, %v; want %d", until, len(rows), err, n)
		}
		if rows, err := b.AuditRange(ctx, nil, until, time.Time{}, 10); err != nil || len(rows) != 0 {
			t.Errorf("AuditRange since %v = %d rows, %v; want none", until, len(rows), err)
		}
	}
	if got := auditKeys(t, b, bktAuditRows); got != n {
		t.Errorf("%d rows left; want all %d", got, n)
	}
}

// auditAllDue reads the deliveries due at now to every webhook, earliest
// due first (ties in webhook order).
func auditAllDue(t *testing.T, b *Bolt, now time.Time) []audit.Delivery {
	t.Helper()
	ctx := context.Background()
	hooks, err := b.AuditOutboxHooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var all []audit.Delivery
	for _, h := range hooks {
		ds, err := b.AuditDeliveriesDue(ctx, h, now, 1000)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ds...)
	}
	slices.SortStableFunc(all, func(a, b audit.Delivery) int { return a.DueAt.Compare(b.DueAt) })
	return all
}

// auditNextDue is the earliest due time over every webhook's queue.
func auditNextDue(t *testing.T, b *Bolt) (next time.Time, ok bool) {
	t.Helper()
	ctx := context.Background()
	hooks, err := b.AuditOutboxHooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		at, has, err := b.AuditNextDelivery(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if has && (!ok || at.Before(next)) {
			next, ok = at, true
		}
	}
	return next, ok
}

func TestAuditBoltOutboxLifecycle(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	h1 := audit.WebhookConfig{URL: "https://one.example.com/"}.ID()
	h2 := audit.WebhookConfig{URL: "https://two.example.com/"}.ID()
	old := auditEntry(t, audit.Row{Action: "auth.logout", OccurredAt: auditT0}, auditT0.Add(2*time.Second), h1, h2)
	young := auditEntry(t, audit.Row{Action: "auth.logout", OccurredAt: auditT0.Add(time.Hour)}, auditT0.Add(time.Second), h1)
	if _, err := b.AppendAudit(ctx, []audit.Entry{old, young}); err != nil {
		t.Fatal(err)
	}
	if at, ok, _ := b.AuditNextDelivery(ctx, h1); !ok || !at.Equal(auditT0.Add(time.Second)) {
		t.Fatalf("next delivery at %v, %v; want %v", at, ok, auditT0.Add(time.Second))
	}
	if at, ok, _ := b.AuditNextDelivery(ctx, h2); !ok || !at.Equal(auditT0.Add(2*time.Second)) {
		t.Fatalf("next delivery to %s at %v, %v; want %v: each webhook has its own queue", h2, at, ok, auditT0.Add(2*time.Second))
	}
	if hooks, err := b.AuditOutboxHooks(ctx); err != nil || !slices.Equal(hooks, slices.Sorted(slices.Values([]string{h1, h2}))) {
		t.Fatalf("AuditOutboxHooks = %v, %v; want %s and %s", hooks, err, h1, h2)
	}
	if due, _ := b.AuditDeliveriesDue(ctx, h2, auditT0.Add(time.Second), 10); len(due) != 0 {
		t.Fatalf("due to %s at +1s: %+v; want none (the young row is for %s alone)", h2, due, h1)
	}
	due, err := b.AuditDeliveriesDue(ctx, h1, auditT0.Add(time.Second), 10)
	if err != nil || len(due) != 1 || due[0].RowID != young.Row.ID || due[0].Row.ID != young.Row.ID {
		t.Fatalf("due at +1s = %+v, %v; want the young row's delivery with its row", due, err)
	}
	due = auditAllDue(t, b, auditT0.Add(time.Minute))
	if len(due) != 3 || !due[0].DueAt.Before(due[1].DueAt) {
		t.Fatalf("due at +1m: %d deliveries; want 3, earliest due first", len(due))
	}

	// Retry moves it; a second settle of the stale copy changes nothing.
	d := due[0]
	d.Attempts, d.LastError, d.UpdatedAt = 1, "receiver answered 503", auditT0.Add(time.Minute)
	if err := b.AuditSettle(ctx, []audit.Settlement{{Delivery: d, Verdict: audit.Retry, Next: auditT0.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if err := b.AuditSettle(ctx, []audit.Settlement{{Delivery: due[0], Verdict: audit.Delivered}}); err != nil {
		t.Fatal(err)
	}
	if pending, _, _ := b.AuditOutboxStats(ctx); pending != 3 {
		t.Fatalf("pending = %d; want 3 (the stale Done must not remove the rescheduled one)", pending)
	}
	later := auditAllDue(t, b, auditT0.Add(2*time.Hour))
	var moved audit.Delivery
	for _, x := range later {
		if x.DueAt.Equal(auditT0.Add(time.Hour)) {
			moved = x
		}
	}
	if moved.Attempts != 1 || moved.LastError != "receiver answered 503" || !moved.UpdatedAt.Equal(auditT0.Add(time.Minute)) {
		t.Fatalf("rescheduled delivery = %+v; want its attempts, error and time kept", moved)
	}

	// Several at once, as a pass defers a webhook that is down: each
	// moves, keeping its own state, and a stale copy (d, already moved
	// above) is skipped rather than recreated.
	var batch []audit.Delivery
	for i, x := range later {
		x.Attempts = 2 + i
		batch = append(batch, x)
	}
	var retries []audit.Settlement
	for _, x := range append(batch, d) {
		retries = append(retries, audit.Settlement{Delivery: x, Verdict: audit.Retry, Next: auditT0.Add(90 * time.Minute)})
	}
	if err := b.AuditSettle(ctx, retries); err != nil {
		t.Fatal(err)
	}
	if pending, _, _ := b.AuditOutboxStats(ctx); pending != 3 {
		t.Fatalf("pending = %d after the batch; want 3", pending)
	}
	if early := auditAllDue(t, b, auditT0.Add(89*time.Minute)); len(early) != 0 {
		t.Fatalf("%d deliveries still due before the batch's time", len(early))
	}
	later = auditAllDue(t, b, auditT0.Add(2*time.Hour))
	for _, x := range later {
		want := slices.IndexFunc(batch, func(y audit.Delivery) bool { return y.RowID == x.RowID && y.HookID == x.HookID })
		if !x.DueAt.Equal(auditT0.Add(90*time.Minute)) || want < 0 || x.Attempts != batch[want].Attempts {
			t.Errorf("after the batch: %+v; want due at +90m with %d attempts", x, batch[max(want, 0)].Attempts)
		}
	}

	// One pass's verdicts together (in a second store with the same
	// entries): delivered, retried and dead at once, each as if settled
	// alone.
	probe := auditOpen(t, "")
	if _, err := probe.AppendAudit(ctx, []audit.Entry{old, young}); err != nil {
		t.Fatal(err)
	}
	pdue := auditAllDue(t, probe, auditT0.Add(time.Minute))
	if len(pdue) != 3 {
		t.Fatalf("%d due in the second store; want 3", len(pdue))
	}
	gone := pdue[2]
	gone.Attempts, gone.LastError, gone.UpdatedAt = 15, "receiver answered 410 Gone", auditT0.Add(2*time.Minute)
	mixed := []audit.Settlement{
		{Delivery: pdue[0], Verdict: audit.Delivered},
		{Delivery: pdue[1], Verdict: audit.Retry, Next: auditT0.Add(3 * time.Hour)},
		{Delivery: gone, Verdict: audit.Dead},
	}
	// A batch with one settlement no store may apply writes nothing.
	for _, bad := range []audit.Settlement{{Delivery: pdue[0]}, {Delivery: pdue[1], Verdict: audit.Retry}, {Delivery: pdue[0], Verdict: 9}} {
		if err := probe.AuditSettle(ctx, append(slices.Clone(mixed), bad)); !errors.Is(err, audit.ErrBadSettlement) {
			t.Fatalf("settling with %+v: %v; want ErrBadSettlement", bad, err)
		}
	}
	if pending, dead, _ := probe.AuditOutboxStats(ctx); pending != 3 || dead != 0 {
		t.Fatalf("after refused batches: pending %d, dead %d; want all 3 pending still", pending, dead)
	}
	if err := probe.AuditSettle(ctx, mixed); err != nil {
		t.Fatal(err)
	}
	if pending, dead, _ := probe.AuditOutboxStats(ctx); pending != 1 || dead != 1 {
		t.Fatalf("after a mixed settle: pending %d, dead %d; want 1 and 1", pending, dead)
	}
	if at, ok := auditNextDue(t, probe); !ok || !at.Equal(auditT0.Add(3*time.Hour)) {
		t.Fatalf("after a mixed settle: next delivery at %v; want the retried one at +3h", at)
	}
	if dl, _ := probe.AuditDeadDeliveries(ctx, nil, 10); len(dl) != 1 || dl[0].RowID != gone.RowID || dl[0].HookID != gone.HookID ||
		dl[0].Attempts != 15 || dl[0].LastError != gone.LastError || !dl[0].UpdatedAt.Equal(gone.UpdatedAt) {
		t.Fatalf("dead list after a mixed settle = %+v; want the one settled dead, with its attempts, error and time", dl)
	}
	// Nothing to settle: no write transaction at all.
	txid := func() int {
		tx, err := probe.db.Begin(false)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		return tx.ID()
	}
	before := txid()
	if err := probe.AuditSettle(ctx, nil); err != nil || txid() != before {
		t.Fatalf("empty settle: %v, transaction id %d → %d; want no commit", err, before, txid())
	}

	// Dead: off the outbox, onto the dead list, newest row first.
	for _, x := range later {
		x.Attempts = 15
		if err := b.AuditSettle(ctx, []audit.Settlement{{Delivery: x, Verdict: audit.Dead}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AuditSettle(ctx, []audit.Settlement{{Delivery: later[0], Verdict: audit.Dead}}); err != nil { // stale: no-op
		t.Fatal(err)
	}
	pending, dead, _ := b.AuditOutboxStats(ctx)
	if pending != 0 || dead != 3 {
		t.Fatalf("pending %d, dead %d; want 0 and 3", pending, dead)
	}
	list, _ := b.AuditDeadDeliveries(ctx, nil, 10)
	if len(list) != 3 || list[0].RowID != young.Row.ID || list[0].Row.Action != "auth.logout" || list[1].Attempts != 15 {
		t.Fatalf("dead list = %+v; want 3, the young row first, rows loaded", list)
	}
	if _, ok := auditNextDue(t, b); ok {
		t.Fatal("next delivery reported on an empty outbox")
	}

	// Replay: one webhook's dead deliveries go back, due now, attempts
	// reset, last error kept; the other webhook's stay dead.
	now := auditT0.Add(3 * time.Hour)
	if n, err := b.AuditReplayDead(ctx, h2, "", now, 10); err != nil || n != 1 {
		t.Fatalf("replaying %s: %d, %v; want 1", h2, n, err)
	}
	if pending, dead, _ := b.AuditOutboxStats(ctx); pending != 1 || dead != 2 {
		t.Fatalf("after replaying one webhook: pending %d, dead %d; want 1 and 2", pending, dead)
	}
	back := auditAllDue(t, b, now)
	if len(back) != 1 || back[0].HookID != h2 || back[0].RowID != old.Row.ID || back[0].Attempts != 0 || !back[0].DueAt.Equal(now) || back[0].Row.ID != old.Row.ID {
		t.Fatalf("replayed = %+v; want %s's delivery of the old row, due now, no attempts", back, h2)
	}
	if n, err := b.AuditReplayDead(ctx, "", "", now, 1); err != nil || n != 1 {
		t.Fatalf("replaying with limit 1: %d, %v; want 1", n, err)
	}
	if n, err := b.AuditReplayDead(ctx, "", "", now, 10); err != nil || n != 1 {
		t.Fatalf("replaying the rest: %d, %v; want 1", n, err)
	}
	if pending, dead, _ := b.AuditOutboxStats(ctx); pending != 3 || dead != 0 {
		t.Fatalf("after replaying all: pending %d, dead %d; want 3 and 0", pending, dead)
	}
	if _, err := b.AuditReplayDead(ctx, "not-hex", "", now, 10); !errors.Is(err, ErrAuditKey) {
		t.Fatalf("replaying a malformed webhook id: %v; want ErrAuditKey", err)
	}

	// To another webhook: a dead delivery of the old one goes into the
	// new one's outbox, due now.
	x := auditAllDue(t, b, now)[0]
	x.Attempts = 15
	if err := b.AuditSettle(ctx, []audit.Settlement{{Delivery: x, Verdict: audit.Dead}}); err != nil {
		t.Fatal(err)
	}
	renewed := audit.WebhookConfig{URL: "https://renewed.example.com/"}.ID()
	if _, err := b.AuditReplayDead(ctx, "", renewed, now, 10); !errors.Is(err, ErrAuditKey) {
		t.Fatalf("replaying every webhook's to one: %v; want an error (from which?)", err)
	}
	at := now.Add(time.Minute)
	if n, err := b.AuditReplayDead(ctx, x.HookID, renewed, at, 10); err != nil || n != 1 {
		t.Fatalf("replaying %s to %s: %d, %v; want 1", x.HookID, renewed, n, err)
	}
	inNew, err := b.AuditDeliveriesDue(ctx, renewed, at, 10)
	if err != nil || len(inNew) != 1 || inNew[0].RowID != x.RowID || inNew[0].Attempts != 0 || !inNew[0].DueAt.Equal(at) {
		t.Fatalf("the new webhook's outbox: %+v, %v; want the row %s, due now, no attempts", inNew, err, x.RowID)
	}
	if pending, dead, _ := b.AuditOutboxStats(ctx); pending != 3 || dead != 0 {
		t.Fatalf("after the move: pending %d, dead %d; want 3 and 0", pending, dead)
	}
}

// auditReceiver verifies signatures like a real receiver and keeps every
// request it accepted, duplicates included.
type auditReceiver struct {
	*httptest.Server
	t        *testing.T
	down     atomic.Bool  // answer 503 without looking
	flaky    atomic.Int64 // accept, but answer 500, this many more times
	failures atomic.Int64 // requests refused while down
	mu       sync.Mutex
	bodies   map[string][][]byte // event id → bodies received
	arrived  chan string         // every accepted event id
}

func newAuditReceiver(t *testing.T) *auditReceiver {
	rc := &auditReceiver{t: t, bodies: map[string][][]byte{}, arrived: make(chan string, 100000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if rc.down.Load() {
			rc.failures.Add(1)
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if err := hmacsig.Verify(r.Header.Get(hmacsig.Header), body, [][]byte{auditSecret}, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("receiver: %v", err)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var row audit.Row
		if err := json.Unmarshal(body, &row); err != nil {
			t.Errorf("receiver: body: %v", err)
			return
		}
		id := r.Header.Get(audit.EventIDHeader)
		if id != row.ID {
			t.Errorf("receiver: %s %q but the body's id is %q", audit.EventIDHeader, id, row.ID)
		}
		rc.mu.Lock()
		rc.bodies[id] = append(rc.bodies[id], body)
		rc.mu.Unlock()
		rc.arrived <- id
		if rc.flaky.Add(-1) >= 0 { // processed, but the answer is lost
			http.Error(w, "oops", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

// waitAll waits until every id has arrived at least once.
func (rc *auditReceiver) waitAll(ids []string) {
	rc.t.Helper()
	missing := map[string]bool{}
	for _, id := range ids {
		missing[id] = true
	}
	deadline := time.After(auditWait)
	for len(missing) > 0 {
		select {
		case id := <-rc.arrived:
			delete(missing, id)
		case <-deadline:
			rc.t.Fatalf("%d of %d events never arrived", len(missing), len(ids))
		}
	}
}

func (rc *auditReceiver) checkDuplicatesIdentical() (dups int) {
	rc.t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for id, bs := range rc.bodies {
		for _, b := range bs[1:] {
			dups++
			if !bytes.Equal(b, bs[0]) {
				rc.t.Errorf("event %s was delivered twice with different bodies", id)
			}
		}
	}
	return dups
}

var auditFastRetry = audit.DeliveryOptions{MinBackoff: 2 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxAttempts: 1000, Timeout: 5 * time.Second}

func TestAuditWebhookReceiverDownThenUp(t *testing.T) {
	rc := newAuditReceiver(t)
	rc.down.Store(true)
	b := auditOpen(t, "")
	l := auditNewLog(t, b, clock.Real{}, audit.Options{
		Webhooks: []audit.WebhookConfig{{URL: rc.URL, Secret: auditSecret, Actions: []string{"auth.*", "mfa.*"}}},
		Delivery: auditFastRetry,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.Start(ctx)

	var want []string
	record := func(n int) {
		for i := range n {
			action := []string{"auth.login.success", "mfa.totp.enrolled", "billing.seat.assigned"}[i%3]
			r, err := l.RecordRow(ctx, audit.Row{Action: action, ActorType: audit.ActorUser, ActorID: "u1"})
			if err != nil {
				t.Fatal(err)
			}
			if action != "billing.seat.assigned" {
				want = append(want, r.ID)
			}
		}
	}
	record(150)
	// The receiver refuses for a while: wait for a good number of failures.
	for deadline := time.Now().Add(auditWait); rc.failures.Load() < 300; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d failed attempts while the receiver was down", rc.failures.Load())
		}
		time.Sleep(time.Millisecond) // polling a counter, not timing the test
	}
	record(150)
	rc.flaky.Store(20) // coming back shaky: some answers are lost
	rc.down.Store(false)
	rc.waitAll(want)

	// Everything delivered: the outbox drains.
	for deadline := time.Now().Add(auditWait); ; {
		s, err := l.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Pending == 0 {
			if s.Dead != 0 || s.Failures == 0 {
				t.Fatalf("Stats = %+v; want no dead deliveries and some failures", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d deliveries", s.Pending)
		}
		time.Sleep(time.Millisecond)
	}
	// Each lost answer was retried and arrived again, same id, same bytes.
	if dups := rc.checkDuplicatesIdentical(); dups < 20 {
		t.Errorf("%d duplicates although 20 answers were lost", dups)
	}
	rc.mu.Lock()
	for id := range rc.bodies {
		if !slices.Contains(want, id) {
			t.Errorf("event %s was not subscribed to (billing.*) but arrived", id)
		}
	}
	rc.mu.Unlock()
}

func TestAuditWebhookRestartResumesPending(t *testing.T) {
	rc := newAuditReceiver(t)
	rc.down.Store(true)
	path := filepath.Join(t.TempDir(), "sigra.db")
	hooks := []audit.WebhookConfig{{URL: rc.URL, Secret: auditSecret, Actions: []string{"*"}}}

	b1, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l1, err := audit.New(nil, clock.Real{}, b1, audit.Options{Webhooks: hooks, Delivery: auditFastRetry, ErrorLog: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l1.Start(ctx)
	var want []string
	for range 50 {
		r, err := l1.RecordRow(ctx, audit.Row{Action: "auth.logout", ActorType: audit.ActorUser})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.ID)
	}
	for deadline := time.Now().Add(auditWait); rc.failures.Load() < 50; {
		if time.Now().After(deadline) {
			t.Fatal("the sender made no attempts")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	l1.Close()
	b1.Close()

	rc.down.Store(false)
	b2 := auditOpen(t, path)
	l2 := auditNewLog(t, b2, clock.Real{}, audit.Options{Webhooks: hooks, Delivery: auditFastRetry})
	l2.Start(context.Background())
	rc.waitAll(want)
	rc.checkDuplicatesIdentical()
}

// auditCrashChild is the child process of TestAuditCrashSafety (run from
// TestMain when SIGRA_AUDIT_CRASH_DB is set): it appends rows as fast as
// it can and prints the id of each row once Record has returned, until it
// is killed.
func auditCrashChild(path string) {
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	l, err := audit.New(nil, clock.Real{}, b, audit.Options{Webhooks: auditCrashHooks})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				action := []string{"auth.login.success", "mfa.challenge.failure"}[(w+i)%2]
				r, err := l.RecordRow(context.Background(), audit.Row{
					Action: action, ActorType: audit.ActorUser, ActorID: fmt.Sprint("u", w), SubjectID: fmt.Sprint("s", i%5),
				})
				mu.Lock()
				if err != nil {
					fmt.Fprintln(os.Stdout, "error", err)
				} else {
					fmt.Fprintf(os.Stdout, "id %s %d\n", r.ID, r.OccurredAt.UnixNano())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

var auditCrashHooks = []audit.WebhookConfig{{URL: "http://127.0.0.1:9/never-started", Secret: auditSecret, Actions: []string{"auth.*"}}}

func TestAuditCrashSafety(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SIGRA_AUDIT_CRASH_DB="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	type reported struct {
		id string
		at int64
	}
	var acked []reported
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "id":
			var at int64
			fmt.Sscan(f[2], &at)
			acked = append(acked, reported{f[1], at})
		case len(f) > 0 && f[0] == "error":
			t.Fatalf("child: %s", sc.Text())
		}
		if len(acked) == 3000 && !killed {
			// Mid-stream: writers are blocked in Record, a commit is
			// likely under way.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("the child stopped by itself after %d rows", len(acked))
	}

	b := auditOpen(t, path) // the lock died with the child
	ctx := context.Background()
	stored := map[string]audit.Row{}
	after := (*audit.Position)(nil)
	for {
		rows, err := b.AuditRange(ctx, after, time.Time{}, time.Time{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			stored[r.ID] = r
		}
		if len(rows) < 1000 {
			break
		}
		p, _ := audit.PositionOf(rows[len(rows)-1])
		after = &p
	}
	for _, a := range acked {
		r, ok := stored[a.id]
		if !ok {
			t.Fatalf("row %s was acknowledged by Record but is not stored", a.id)
		}
		if r.OccurredAt.UnixNano() != a.at {
			t.Fatalf("row %s stored at %d; acknowledged at %d", a.id, r.OccurredAt.UnixNano(), a.at)
		}
	}
	t.Logf("%d rows acknowledged, %d stored after SIGKILL", len(acked), len(stored))

	// The outbox matches the rows exactly: a delivery per auth.* row, none
	// for others, none pointing at a missing row.
	hook := auditCrashHooks[0].ID()
	pending, err := b.AuditDeliveriesDue(ctx, hook, time.Now().Add(time.Hour), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, d := range pending {
		if d.Row.ID == "" {
			t.Fatalf("outbox entry for %s refers to a missing row", d.RowID)
		}
		if d.HookID != hook || !strings.HasPrefix(d.Row.Action, "auth.") {
			t.Fatalf("outbox entry %+v is not for an auth.* row and the configured hook", d)
		}
		if has[d.RowID] {
			t.Fatalf("row %s has two deliveries", d.RowID)
		}
		has[d.RowID] = true
	}
	for id, r := range stored {
		if strings.HasPrefix(r.Action, "auth.") != has[id] {
			t.Fatalf("row %s (%s): delivery present %v", id, r.Action, has[id])
		}
	}
	// Every row is indexed or waiting to be, exactly once.
	unindexed := auditKeys(t, b, bktAuditUnindexed)
	for _, name := range [][]byte{bktAuditByActor, bktAuditBySubject, bktAuditByAction} {
		if n := auditKeys(t, b, name); n+unindexed != len(stored) {
			t.Errorf("%s holds %d keys and %d rows wait to be indexed; want %d in all", name, n, unindexed, len(stored))
		}
	}
}

// BenchmarkAuditAppendDurable measures Record with fsync: 64 writers,
// each waiting for its own row to be durable, as request handlers do.
func BenchmarkAuditAppendDurable(b *testing.B) {
	st := auditOpen(b, "")
	l := auditNewLog(b, st, clock.Real{}, audit.Options{Webhooks: []audit.WebhookConfig{
		{URL: "https://hooks.example.com/", Secret: auditSecret, Actions: []string{"auth.*"}},
	}})
	const writers = 64
	lat := make([][]time.Duration, writers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		n := b.N / writers
		if w < b.N%writers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := range n {
				action := []string{"auth.login.success", "mfa.challenge.success", "authz.denied"}[i%3]
				t0 := time.Now()
				err := l.Record(ctx, audit.Row{
					Action: action, ActorType: audit.ActorUser, ActorID: fmt.Sprint("user-", w), SubjectID: fmt.Sprint("user-", w),
					IP: "203.0.113.7", UserAgent: "Mozilla/5.0 (X11; Linux x86_64)", RequestID: "req", Outcome: audit.OutcomeSuccess,
					Metadata: map[string]string{"method": "password"},
				})
				lat[w] = append(lat[w], time.Since(t0))
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	}
}

// BenchmarkAuditWebhookDelivery measures the sender draining an outbox
// of b.N rows to a local receiver that answers 204 at once: deliveries
// per second, each settled durably in the outbox.
func BenchmarkAuditWebhookDelivery(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	st := auditOpen(b, "")
	l := auditNewLog(b, st, clock.Real{}, audit.Options{Webhooks: []audit.WebhookConfig{
		{URL: srv.URL, Secret: auditSecret, Actions: []string{"*"}},
	}})
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 32 { // seeding, not measured
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < b.N; i += 32 {
				if err := l.Record(ctx, audit.Row{Action: "auth.login.success", ActorType: audit.ActorUser, ActorID: "u1"}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ResetTimer()
	start := time.Now()
	l.Start(ctx)
	for {
		s, err := l.Stats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if s.Pending == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}

// BenchmarkAuditTimeline measures one timeline page (50 rows) over a log
// of a thousand and of a million rows, to show that a page costs the same:
// actors of 1,000 rows each, 20 actions. The million rows are bulk-loaded
// with fsync off (seeding, not measured), then the file is reopened
// normally.
func BenchmarkAuditTimeline(b *testing.B) {
	for _, total := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("rows=%s", map[int]string{1_000: "1k", 1_000_000: "1M"}[total]), func(b *testing.B) {
			benchAuditTimeline(b, total)
		})
	}
}

func benchAuditTimeline(b *testing.B, total int) {
	const actions = 20
	actors := max(1, total/1000)
	path := filepath.Join(b.TempDir(), "audit.db")
	seedStart := time.Now()
	st, err := OpenBolt(path, BoltOptions{NoSync: true}) // bulk load only
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, actions)
	for i := range names {
		names[i] = fmt.Sprintf("%s.event%d.done", []string{"auth", "mfa", "billing", "admin"}[i%4], i)
	}
	ctx := context.Background()
	const chunk = 20_000
	for base := 0; base < total; base += chunk {
		es := make([]audit.Entry, 0, chunk)
		for i := base; i < min(base+chunk, total); i++ {
			es = append(es, auditEntry(b, audit.Row{
				Action: names[(i+i/1000)%actions], ActorID: fmt.Sprintf("user-%04d", i%actors), SubjectID: fmt.Sprintf("user-%04d", (i/7)%actors),
				OccurredAt: auditT0.Add(time.Duration(i) * 31 * time.Second), IP: "203.0.113.7", Outcome: "success",
				Metadata: map[string]string{"method": "password"},
			}, auditT0))
		}
		if _, err := st.AppendAudit(ctx, es); err != nil {
			b.Fatal(err)
		}
	}
	st.Close()
	st = auditOpen(b, path) // reopened as in production (fsync on)
	l := auditNewLog(b, st, clock.Real{}, audit.Options{})
	b.Logf("seeded %d rows in %s", total, time.Since(seedStart).Round(time.Millisecond))

	const who = "user-0000"
	mid, err := l.Timeline(ctx, audit.Query{ActorID: who, Limit: 500})
	if err != nil {
		b.Fatal(err)
	}
	queries := []struct {
		name string
		q    audit.Query
	}{
		{"actor", audit.Query{ActorID: who}},
		{"actor-page-2", audit.Query{ActorID: who, Cursor: mustNext(b, l, audit.Query{ActorID: who})}},
		{"subject", audit.Query{SubjectID: who}},
		{"action-exact", audit.Query{Action: names[3]}},
		{"action-pattern", audit.Query{Action: "auth.*"}},
		{"actor+pattern", audit.Query{ActorID: who, Action: "auth.*"}},
		{"all-in-window", audit.Query{Since: mid.Rows[499].OccurredAt, Until: mid.Rows[0].OccurredAt}},
	}
	for _, qq := range queries {
		b.Run(qq.name, func(b *testing.B) {
			for b.Loop() {
				p, err := l.Timeline(ctx, qq.q)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Rows) != audit.DefaultLimit {
					b.Fatalf("page of %d rows; want %d", len(p.Rows), audit.DefaultLimit)
				}
			}
		})
	}
}

func mustNext(b *testing.B, l *audit.Log, q audit.Query) string {
	b.Helper()
	p, err := l.Timeline(context.Background(), q)
	if err != nil || p.NextCursor == "" {
		b.Fatalf("first page: %v, cursor %q", err, p.NextCursor)
	}
	return p.NextCursor
}

// A replay of dead deliveries that lands while a prune runs, after its
// scan of the outbox, puts deliveries of old rows back in the outbox:
// the prune must not then delete those rows (the sender would mark them
// delivered without sending them). A dead delivery whose row retention
// already deleted is dropped by a replay, not sent out empty.
// A prune that starts while a replay is counted but not committed must
// not scan the outbox without the replayed deliveries and then delete
// their rows: it waits for the replay, or its count tells it to scan
// again.
func TestAuditBoltPruneDuringAReplaysCommitKeepsTheReplayedRows(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	hook := audit.WebhookConfig{URL: "https://hooks.example.com/"}.ID()
	var es []audit.Entry
	var ss []audit.Settlement
	for i := range 10 {
		r := audit.Row{Action: "auth.logout", ActorID: "u", OccurredAt: auditT0.Add(time.Duration(i) * time.Second)}
		e := auditEntry(t, r, auditT0, hook)
		es = append(es, e)
		d := audit.Delivery{HookID: hook, RowID: e.Row.ID, OccurredAt: e.Row.OccurredAt, DueAt: e.DueAt, Attempts: 15}
		ss = append(ss, audit.Settlement{Delivery: d, Verdict: audit.Dead})
	}
	if _, err := b.AppendAudit(ctx, es); err != nil {
		t.Fatal(err)
	}
	if err := b.AuditSettle(ctx, ss); err != nil {
		t.Fatal(err)
	}
	type pruned struct {
		n   int
		err error
	}
	done := make(chan pruned, 1)
	scanned := make(chan struct{}, 1)
	b.pruneScanned = func() {
		select {
		case scanned <- struct{}{}:
		default:
		}
	}
	b.replayCounted = func() {
		go func() {
			n, err := b.PruneAudit(ctx, auditT0.Add(time.Hour))
			done <- pruned{n, err}
		}()
		// Give the prune the time to scan before this commit, as it
		// could before the fix; it must wait instead.
		select {
		case <-scanned:
		case <-time.After(300 * time.Millisecond):
		}
	}
	if n, err := b.AuditReplayDead(ctx, "", "", auditT0, 100); err != nil || n != len(es) {
		t.Fatalf("AuditReplayDead = %d, %v; want %d", n, err, len(es))
	}
	p := <-done
	if p.err != nil || p.n != 0 {
		t.Errorf("PruneAudit during the replay's commit = %d, %v; want nothing deleted", p.n, p.err)
	}
	if got := auditKeys(t, b, bktAuditRows); got != len(es) {
		t.Errorf("%d rows kept; want all %d, their deliveries pending again", got, len(es))
	}
}

func TestAuditBoltPruneAfterAReplayKeepsTheReplayedRows(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	hook := audit.WebhookConfig{URL: "https://hooks.example.com/"}.ID()
	var es []audit.Entry
	for i := range 10 {
		r := audit.Row{Action: "auth.logout", ActorID: "u", OccurredAt: auditT0.Add(time.Duration(i) * time.Second)}
		es = append(es, auditEntry(t, r, auditT0, hook))
	}
	if _, err := b.AppendAudit(ctx, es); err != nil {
		t.Fatal(err)
	}
	// Every delivery died: nothing holds the rows back.
	var ss []audit.Settlement
	for _, e := range es {
		d := audit.Delivery{HookID: hook, RowID: e.Row.ID, OccurredAt: e.Row.OccurredAt, DueAt: e.DueAt, Attempts: 15}
		ss = append(ss, audit.Settlement{Delivery: d, Verdict: audit.Dead})
	}
	if err := b.AuditSettle(ctx, ss); err != nil {
		t.Fatal(err)
	}
	replayed := 0
	b.pruneScanned = func() {
		if replayed == 0 {
			n, err := b.AuditReplayDead(ctx, "", "", auditT0, 100)
			if err != nil {
				t.Errorf("AuditReplayDead during the prune: %v", err)
			}
			replayed = n
		}
	}
	deleted, err := b.PruneAudit(ctx, auditT0.Add(time.Hour))
	if err != nil || replayed != len(es) || deleted != 0 {
		t.Fatalf("PruneAudit = %d, %v with %d replayed after its scan; want nothing deleted", deleted, err, replayed)
	}
	if got := auditKeys(t, b, bktAuditRows); got != len(es) {
		t.Fatalf("%d rows kept; want all %d, their deliveries pending again", got, len(es))
	}
	b.pruneScanned = nil

	// A dead delivery whose row is gone (retention took the row first)
	// is dropped by the replay and not counted.
	if err := b.AuditSettle(ctx, ss[:1]); err != nil {
		t.Fatal(err)
	}
	if err := b.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bktAuditRows).Delete(auditPosKey(es[0].Pos))
	}); err != nil {
		t.Fatal(err)
	}
	dead := auditKeys(t, b, bktAuditDead)
	if n, err := b.AuditReplayDead(ctx, "", "", auditT0, 100); err != nil || n != 0 || dead != 1 || auditKeys(t, b, bktAuditDead) != 0 {
		t.Fatalf("AuditReplayDead of a delivery without its row = %d, %v (dead %d, then %d); want 0 and it dropped", n, err, dead, auditKeys(t, b, bktAuditDead))
	}
}
