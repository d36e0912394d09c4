package store

// Each webhook is served on its own: a receiver that is down, hangs or
// answers slowly delays its own deliveries only, costs one probe per
// backoff step, and its deliveries reach the dead list on the retry
// schedule measured for the webhook. With the bbolt outbox underneath.

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
)

// laneReceiver answers every request with status, once gate is closed
// (at once for a nil gate); a request still waiting when the sender
// gives up on it (its timeout, or shutdown) ends unanswered.
type laneReceiver struct {
	*httptest.Server
	status   atomic.Int64
	arrived  chan string  // the event id of every request, as it comes in
	answered atomic.Int64 // requests answered
	ended    atomic.Int64 // requests over, answered or not
	inFlight atomic.Int64
	maxIn    atomic.Int64 // the most requests in flight at once so far
}

func newLaneReceiver(t *testing.T, status int, gate <-chan struct{}) *laneReceiver {
	t.Helper()
	rc := &laneReceiver{arrived: make(chan string, 10000)}
	rc.status.Store(int64(status))
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer rc.ended.Add(1)
		n := rc.inFlight.Add(1)
		defer rc.inFlight.Add(-1)
		for m := rc.maxIn.Load(); n > m && !rc.maxIn.CompareAndSwap(m, n); m = rc.maxIn.Load() {
		}
		_, _ = io.Copy(io.Discard, r.Body)
		rc.arrived <- r.Header.Get(audit.EventIDHeader)
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		rc.answered.Add(1)
		w.WriteHeader(int(rc.status.Load()))
	}))
	t.Cleanup(rc.Close)
	return rc
}

// next returns the event id of the next request.
func (rc *laneReceiver) next(t *testing.T) string {
	t.Helper()
	select {
	case id := <-rc.arrived:
		return id
	case <-time.After(auditWait):
		t.Fatal("no request came")
		return ""
	}
}

// none fails if a request has come that next did not take.
func (rc *laneReceiver) none(t *testing.T, when string) {
	t.Helper()
	select {
	case id := <-rc.arrived:
		t.Fatalf("%s: a request came for %s; want none", when, id)
	default:
	}
}

func laneHook(url string, actions ...string) audit.WebhookConfig {
	return audit.WebhookConfig{URL: url, Secret: auditSecret, Actions: actions}
}

func laneRecord(t *testing.T, l *audit.Log, action string) audit.Row {
	t.Helper()
	r, err := l.RecordRow(context.Background(), audit.Row{Action: action, ActorType: audit.ActorUser, ActorID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A receiver that hangs past the timeout, with hundreds of deliveries
// waiting for it, does not hold up a fresh row to a healthy webhook: it
// is the healthy webhook's first request, sent while the hanging
// receiver still holds its first (and only) one.
func TestAuditWebhookHangingReceiverDoesNotHoldUpOthers(t *testing.T) {
	hang := newLaneReceiver(t, http.StatusOK, make(chan struct{})) // never answers in time
	healthy := newLaneReceiver(t, http.StatusNoContent, nil)
	b := auditOpen(t, "")
	l := auditNewLog(t, b, clock.NewFake(auditT0), audit.Options{
		Webhooks: []audit.WebhookConfig{laneHook(hang.URL, "*"), laneHook(healthy.URL, "mfa.*")},
		// Far longer than the test: the hanging attempt stays open.
		Delivery: audit.DeliveryOptions{Timeout: time.Minute},
	})
	for range 300 { // a backlog for the hanging receiver alone
		laneRecord(t, l, "auth.logout")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.Start(ctx)
	hang.next(t) // its probe, which hangs

	fresh := laneRecord(t, l, "mfa.challenge.success")
	if got := healthy.next(t); got != fresh.ID {
		t.Fatalf("the healthy webhook's first request is for %s; want the fresh row %s", got, fresh.ID)
	}
	if n := hang.ended.Load(); n != 0 {
		t.Fatalf("%d of the hanging receiver's requests are over; want its probe still open", n)
	}
	hang.none(t, "while its probe hangs")
}

// A receiver that is down (it answers 503 at once), with a backlog of
// hundreds, does not hold up a fresh row to another webhook: the first
// pass delivers it. The down webhook costs one probe per backoff step,
// not the delivery whose probe failed last, and its other deliveries are
// not rewritten.
func TestAuditWebhookDownReceiverBacklogDoesNotHoldUpOthers(t *testing.T) {
	down := newLaneReceiver(t, http.StatusServiceUnavailable, nil)
	healthy := newLaneReceiver(t, http.StatusNoContent, nil)
	b := auditOpen(t, "")
	clk := clock.NewFake(auditT0)
	opts := audit.DeliveryOptions{MinBackoff: time.Second, MaxBackoff: time.Minute}
	hooks := []audit.WebhookConfig{laneHook(down.URL, "*"), laneHook(healthy.URL, "mfa.*")}
	l := auditNewLog(t, b, clk, audit.Options{Webhooks: hooks, Delivery: opts})
	ctx := context.Background()
	const backlog = 300
	for range backlog {
		laneRecord(t, l, "auth.logout")
	}
	clk.Advance(time.Second) // the backlog is older than the fresh row
	fresh := laneRecord(t, l, "mfa.challenge.success")

	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	if got := healthy.next(t); got != fresh.ID {
		t.Fatalf("pass 1: the healthy webhook got %s; want the fresh row %s", got, fresh.ID)
	}
	probe := down.next(t)
	down.none(t, "pass 1, after the probe")
	queue, err := b.AuditDeliveriesDue(ctx, hooks[0].ID(), clk.Now(), 1000)
	if err != nil || len(queue) != backlog+1 {
		t.Fatalf("the down webhook's queue holds %d, %v; want %d", len(queue), err, backlog+1)
	}
	for _, d := range queue {
		tried := d.RowID == probe
		if (tried && d.Attempts != 1) || (!tried && (d.Attempts != 0 || d.LastError != "")) || !d.DueAt.Equal(d.OccurredAt) {
			t.Fatalf("after pass 1: %+v; want only the probe (%s) to show an attempt, every delivery still due when its row was recorded", d, probe)
		}
	}

	// Within the backoff: no request at all.
	if n, err := l.DeliverDue(ctx); err != nil || n != 0 {
		t.Fatalf("pass 2, within the backoff: DeliverDue = %d, %v; want nothing taken", n, err)
	}
	down.none(t, "pass 2, within the backoff")
	// After it: one more probe, of another delivery.
	clk.Advance(opts.MinBackoff)
	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	if got := down.next(t); got == probe {
		t.Fatalf("pass 3 probed %s again; want another delivery than the one whose probe failed", got)
	}
	down.none(t, "pass 3, after the probe")
	if s, _ := l.Stats(ctx); s.Failures != 2 || s.Delivered != 1 || s.Pending != backlog+1 {
		t.Fatalf("Stats = %+v; want 2 failures, 1 delivered, %d pending", s, backlog+1)
	}
}

// A receiver that answers 2xx, but slowly (as one taking just under the
// timeout), sets only its own pace: a fast webhook gets every row while
// the slow one still holds its first request, then the slow one catches
// up.
func TestAuditWebhookSlowReceiverDoesNotSetOthersLatency(t *testing.T) {
	slowGate := make(chan struct{})
	slow := newLaneReceiver(t, http.StatusOK, slowGate)
	fast := newLaneReceiver(t, http.StatusNoContent, nil)
	b := auditOpen(t, "")
	l := auditNewLog(t, b, clock.NewFake(auditT0), audit.Options{
		Webhooks: []audit.WebhookConfig{laneHook(slow.URL, "*"), laneHook(fast.URL, "*")},
		Delivery: audit.DeliveryOptions{Timeout: time.Minute},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.Start(ctx)

	want := map[string]bool{}
	for round := range 2 {
		ids := map[string]bool{}
		for range 10 {
			r := laneRecord(t, l, "auth.logout")
			ids[r.ID], want[r.ID] = true, true
		}
		for range ids {
			if id := fast.next(t); !ids[id] {
				t.Fatalf("round %d: the fast webhook got %s; want this round's rows", round+1, id)
			}
		}
		if n := slow.answered.Load(); n != 0 {
			t.Fatalf("round %d: the slow receiver answered %d requests; want none yet", round+1, n)
		}
	}
	first := slow.next(t) // its first request, still waiting
	slow.none(t, "while its first request waits")
	// A pass probes with one request before it sends more at once: none
	// came beside the probe while the fast webhook's rounds went by.
	if m := slow.maxIn.Load(); m != 1 {
		t.Errorf("the slow receiver had %d requests in flight beside its probe; want 1", m)
	}

	close(slowGate) // the slow receiver answers now: it catches up
	got := map[string]bool{first: true}
	for len(got) < len(want) {
		id := slow.next(t)
		if !want[id] {
			t.Fatalf("the slow receiver got %s; want one of the recorded rows", id)
		}
		got[id] = true
	}
	// Counted once the pass that made them has committed.
	for deadline := time.Now().Add(auditWait); ; time.Sleep(time.Millisecond) { // polling a counter, not timing the test
		s, err := l.Stats(ctx)
		if err == nil && s.Delivered == 2*uint64(len(want)) {
			if s.Pending != 0 || s.Failures != 0 {
				t.Fatalf("Stats = %+v; want every delivery made, no failure", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats = %+v, %v; the outbox did not drain", s, err)
		}
	}
}

// A receiver that stays down: its webhook is probed once per step of the
// retry schedule, nothing is given up before the schedule ends, and then
// every delivery waiting for it is, at once; those that come later die at
// the next failed probe. Once it answers again, replayed deliveries go
// out.
func TestAuditWebhookDeadReceiverFollowsTheRetrySchedule(t *testing.T) {
	down := newLaneReceiver(t, http.StatusServiceUnavailable, nil)
	b := auditOpen(t, "")
	clk := clock.NewFake(auditT0)
	opts := audit.DeliveryOptions{MinBackoff: time.Second, MaxBackoff: 4 * time.Second, MaxAttempts: 5}
	hook := laneHook(down.URL, "*")
	l := auditNewLog(t, b, clk, audit.Options{Webhooks: []audit.WebhookConfig{hook}, Delivery: opts})
	ctx := context.Background()
	const backlog = 200
	for range backlog {
		laneRecord(t, l, "auth.logout")
	}

	// The delay after failure n is at most min(1s·2^(n-1), 4s): advancing
	// by that much always reaches the next probe.
	ceilings := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	for attempt := 1; attempt <= opts.MaxAttempts; attempt++ {
		if _, err := l.DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
		down.next(t)
		down.none(t, "one probe per step")
		s, _ := l.Stats(ctx)
		if attempt < opts.MaxAttempts {
			if s.Dead != 0 || s.Pending != backlog {
				t.Fatalf("after probe %d: Stats = %+v; want all %d pending, none dead before the schedule ends", attempt, s, backlog)
			}
			clk.Advance(ceilings[attempt-1])
		}
	}
	s, _ := l.Stats(ctx)
	if s.Dead != backlog || s.Pending != 0 || s.Failures != uint64(opts.MaxAttempts) {
		t.Fatalf("after %d failed probes: Stats = %+v; want all %d dead, %d failures", opts.MaxAttempts, s, backlog, opts.MaxAttempts)
	}
	page, err := l.DeadDeliveries(ctx, "", 500)
	dead := page.Deliveries
	if err != nil || len(dead) != backlog {
		t.Fatalf("DeadDeliveries = %d, %v; want %d", len(dead), err, backlog)
	}
	for _, d := range dead {
		if d.Attempts < opts.MaxAttempts || !strings.Contains(d.LastError, "503") || d.Row.ID == "" {
			t.Fatalf("dead delivery %+v; want %d attempts counted, the receiver's 503 as last error, its row", d, opts.MaxAttempts)
		}
	}
	if page.NextCursor != "" {
		t.Errorf("the whole list in one page has a next cursor %q", page.NextCursor)
	}
	// Pages of 7, cursor to cursor: the same list, in the same order,
	// each delivery once, the last page without a cursor.
	var paged []string
	for cursor, pages := "", 0; ; pages++ {
		p, err := l.DeadDeliveries(ctx, cursor, 7)
		if err != nil || pages > backlog {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, d := range p.Deliveries {
			paged = append(paged, d.RowID)
		}
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if want := func() (ids []string) {
		for _, d := range dead {
			ids = append(ids, d.RowID)
		}
		return ids
	}(); !slices.Equal(paged, want) {
		t.Errorf("paging by 7 gave %d deliveries; want the %d of the whole list, in its order", len(paged), len(want))
	}
	// A cursor a client made: refused unless it has a cursor's shape;
	// any of that shape names a place in the list (no 500).
	cursor := func(hook []byte) string {
		return base64.RawURLEncoding.EncodeToString(append(append([]byte{1}, make([]byte, 8+16)...), hook...))
	}
	for _, bad := range []string{"x", "AQ", strings.Repeat("A", 200), cursor([]byte("zz")), cursor([]byte("\x00\xff\n"))} {
		if _, err := l.DeadDeliveries(ctx, bad, 7); !errors.Is(err, audit.ErrBadCursor) {
			t.Errorf("cursor %q: %v; want ErrBadCursor", bad, err)
		}
	}
	if p, err := l.DeadDeliveries(ctx, cursor([]byte("\xff\x00\n\x01\x02\x03\x04\x05")), 7); err != nil || len(p.Deliveries) != 0 {
		t.Errorf("a well-formed cursor before every delivery: %d deliveries, %v; want none, no error", len(p.Deliveries), err)
	}

	// Still down: a new row waits for one more probe, then joins them.
	later := laneRecord(t, l, "auth.logout")
	if n, _ := l.DeliverDue(ctx); n != 0 {
		t.Fatalf("within the backoff a pass took %d; want none", n)
	}
	clk.Advance(opts.MaxBackoff)
	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	if got := down.next(t); got != later.ID {
		t.Fatalf("probed %s; want the new row %s", got, later.ID)
	}
	if s, _ := l.Stats(ctx); s.Dead != backlog+1 || s.Pending != 0 {
		t.Fatalf("after the next failed probe: Stats = %+v; want %d dead, none pending", s, backlog+1)
	}

	// Back up: an operator replays the dead deliveries, and they all
	// arrive, the webhook's failures forgotten.
	down.status.Store(http.StatusNoContent)
	if n, err := l.ReplayDead(ctx, hook.ID()); err != nil || n != backlog+1 {
		t.Fatalf("ReplayDead = %d, %v; want %d", n, err, backlog+1)
	}
	got := map[string]bool{}
	for pass := 0; len(got) < backlog+1; pass++ {
		if pass > backlog { // 64 a pass: far fewer are needed
			t.Fatalf("%d of %d replayed deliveries arrived", len(got), backlog+1)
		}
		n, err := l.DeliverDue(ctx)
		if err != nil || n == 0 {
			t.Fatalf("replay pass %d: DeliverDue = %d, %v; want deliveries taken", pass+1, n, err)
		}
		for range n {
			got[down.next(t)] = true
		}
	}
	if s, _ := l.Stats(ctx); s.Dead != 0 || s.Pending != 0 || s.Delivered != backlog+1 {
		t.Fatalf("after the replay: Stats = %+v; want all %d delivered", s, backlog+1)
	}
}
