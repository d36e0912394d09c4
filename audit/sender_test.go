package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/hmacsig"
)

func hookTo(url string, actions ...string) WebhookConfig {
	if len(actions) == 0 {
		actions = []string{"*"}
	}
	return WebhookConfig{URL: url, Secret: hookSecret, Actions: actions}
}

// blockedFor says how long the webhook at url is backed off for.
func blockedFor(l *Log, ft *fakeTime, url string) time.Duration {
	return l.sender.lanes[hookTo(url).ID()].blockedUntil().Sub(ft.Now())
}

func TestWebhookDeliveryIsSignedOverTheExactBody(t *testing.T) {
	ft := newFakeTime()
	rc := newReceiver(t, hookSecret, ft.Now)
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL, "auth.*")}})

	row := mustRecord(t, l, sampleRow("auth.login.success"))
	mustRecord(t, l, sampleRow("mfa.totp.enrolled")) // not subscribed
	if n, err := l.DeliverDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("DeliverDue = %d, %v; want 1 delivery", n, err)
	}
	got := recv(t, rc.got)
	if got.eventID != row.ID {
		t.Errorf("%s = %q; want the row id %q", EventIDHeader, got.eventID, row.ID)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	want, _ := row.MarshalJSON()
	if !bytes.Equal(got.body, want) {
		t.Errorf("body =\n%s\nwant the row's JSON\n%s", got.body, want)
	}
	sig := got.header.Get(hmacsig.Header)
	if wantSig := hmacsig.Sign(hookSecret, ft.Now(), got.body); sig != wantSig {
		t.Errorf("%s = %q; want %q", hmacsig.Header, sig, wantSig)
	}
	s, _ := l.Stats(context.Background())
	if s.Pending != 0 || s.Delivered != 1 || s.Failures != 0 {
		t.Errorf("Stats = %+v; want nothing pending, 1 delivered", s)
	}
}

func TestWebhookBacksOffThenGivesUp(t *testing.T) {
	ft := newFakeTime()
	rc := newReceiver(t, hookSecret, ft.Now)
	rc.setStatus(func(int) int { return http.StatusServiceUnavailable })
	st := newMemStore()
	opts := DeliveryOptions{MinBackoff: time.Second, MaxBackoff: 4 * time.Second, MaxAttempts: 5}
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}, Delivery: opts})
	row := mustRecord(t, l, sampleRow("auth.logout"))
	ctx := context.Background()

	// Delay after attempt n: min(1s·2^(n-1), 4s), jittered to [half, all].
	ceilings := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	for attempt, ceiling := range ceilings {
		if n, err := l.DeliverDue(ctx); err != nil || n != 1 {
			t.Fatalf("attempt %d: DeliverDue = %d, %v; want 1", attempt+1, n, err)
		}
		delay := blockedFor(l, ft, rc.URL)
		if delay < ceiling/2 || delay > ceiling {
			t.Fatalf("after attempt %d the retry is due in %v; want within [%v, %v]", attempt+1, delay, ceiling/2, ceiling)
		}
		// Not due yet: nothing is attempted.
		ft.Advance(ceiling/2 - time.Nanosecond)
		if delay > ceiling/2-time.Nanosecond {
			if n, _ := l.DeliverDue(ctx); n != 0 {
				t.Fatalf("attempt %d: a delivery was retried before its backoff elapsed", attempt+1)
			}
		}
		ft.Advance(ceiling)
	}
	if n, err := l.DeliverDue(ctx); err != nil || n != 1 {
		t.Fatalf("last attempt: DeliverDue = %d, %v; want 1", n, err)
	}
	s, _ := l.Stats(ctx)
	if s.Pending != 0 || s.Dead != 1 || s.Failures != 5 || s.Delivered != 0 {
		t.Fatalf("Stats = %+v; want 0 pending, 1 dead, 5 failures", s)
	}
	page, err := l.DeadDeliveries(ctx, "", 0)
	dead := page.Deliveries
	if err != nil || len(dead) != 1 || page.NextCursor != "" {
		t.Fatalf("DeadDeliveries = %v, %v; want one", dead, err)
	}
	d := dead[0]
	if d.RowID != row.ID || d.Row.ID != row.ID || d.Attempts != 5 || d.URL != rc.URL || !strings.Contains(d.LastError, "503") {
		t.Fatalf("dead delivery = %+v; want row %s, 5 attempts, url %s, last error mentioning 503", d, row.ID, rc.URL)
	}
	ft.Advance(24 * time.Hour)
	if n, _ := l.DeliverDue(ctx); n != 0 {
		t.Fatal("a dead delivery was attempted again")
	}
}

func TestWebhookBackgroundSenderRetriesOnTheInjectedClock(t *testing.T) {
	ft := newFakeTime()
	rc := newReceiver(t, hookSecret, ft.Now)
	rc.setStatus(func(n int) int {
		if n <= 2 { // down for the first two attempts
			return http.StatusBadGateway
		}
		return 0
	})
	opts := DeliveryOptions{MinBackoff: 10 * time.Second, MaxBackoff: time.Minute}
	l := newTestLog(t, newMemStore(), ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}, Delivery: opts})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.Start(ctx)

	row := mustRecord(t, l, sampleRow("auth.logout"))
	for attempt, ceiling := range []time.Duration{10 * time.Second, 20 * time.Second} {
		if n := recv(t, rc.hits); n != attempt+1 {
			t.Fatalf("request %d; want %d", n, attempt+1)
		}
		// The attempt failed; the sender now sleeps on the fake clock.
		if d := ft.sleeping(t); d <= 0 || d > ceiling {
			t.Fatalf("after attempt %d the sender waits %v; want within (0, %v]", attempt+1, d, ceiling)
		}
		select {
		case n := <-rc.hits:
			t.Fatalf("request %d came before the backoff elapsed", n)
		default:
		}
		ft.Advance(ceiling) // the backoff's upper bound: the retry is due
	}
	if got := recv(t, rc.got); got.eventID != row.ID {
		t.Fatalf("delivered %q; want %q", got.eventID, row.ID)
	}
	cancel()
	l.Close() // returns: the sender stopped
}

func TestWebhookTimeoutIsAFailedAttempt(t *testing.T) {
	ft := newFakeTime()
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hang.Close()
	defer close(release)
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{
		Webhooks: []WebhookConfig{hookTo(hang.URL)},
		Delivery: DeliveryOptions{Timeout: 50 * time.Millisecond},
	})
	mustRecord(t, l, sampleRow("auth.logout"))
	if _, err := l.DeliverDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, _ := l.Stats(context.Background()); s.Failures != 1 || s.Pending != 1 || blockedFor(l, ft, hang.URL) <= 0 {
		t.Fatalf("after a timeout: Stats %+v, backed off for %v; want 1 failure and a retry later", s, blockedFor(l, ft, hang.URL))
	}
}

func TestWebhookRedirectIsNotFollowed(t *testing.T) {
	ft := newFakeTime()
	rc := newReceiver(t, hookSecret, ft.Now)
	redirect := httptest.NewServer(http.RedirectHandler(rc.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	l := newTestLog(t, newMemStore(), ft, Options{Webhooks: []WebhookConfig{hookTo(redirect.URL)}})
	mustRecord(t, l, sampleRow("auth.logout"))
	l.DeliverDue(context.Background())
	if s, _ := l.Stats(context.Background()); s.Failures != 1 || s.Delivered != 0 {
		t.Fatalf("Stats = %+v; want the redirect counted as a failure", s)
	}
	select {
	case <-rc.got:
		t.Fatal("the redirect was followed")
	default:
	}
}

// withoutItsWebhook records a row for a webhook, then returns a Log of
// a new config without that webhook (2 attempts, 1s backoff), on the same
// store: the row's delivery is left behind.
func withoutItsWebhook(t *testing.T) (*fakeTime, *Log) {
	t.Helper()
	ft := newFakeTime()
	st := newMemStore()
	first := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo("https://gone.example.com/")}})
	mustRecord(t, first, sampleRow("auth.logout"))
	first.Close()
	return ft, newTestLog(t, st, ft, Options{Delivery: DeliveryOptions{MaxAttempts: 2, MinBackoff: time.Second}})
}

func TestWebhookNoLongerConfiguredIsRetriedThenDead(t *testing.T) {
	// A new config without that webhook: its deliveries fail without a
	// request and end on the dead list, where an operator can see them.
	ft, l := withoutItsWebhook(t)
	l.DeliverDue(context.Background())
	// No receiver of this config is down: the webhook has none.
	if s, _ := l.Stats(context.Background()); s.Pending != 1 || s.Failures != 1 || s.Down != 0 || l.WebhooksDown() != 0 {
		t.Fatalf("after a failed try: Stats = %+v, WebhooksDown %d; want it pending, one failure, none down", s, l.WebhooksDown())
	}
	ft.Advance(time.Second)
	l.DeliverDue(context.Background())
	page, _ := l.DeadDeliveries(context.Background(), "", 10)
	dead := page.Deliveries
	if len(dead) != 1 || !strings.Contains(dead[0].LastError, "not configured") {
		t.Fatalf("dead = %+v; want one, 'not configured'", dead)
	}
}

// In the background too: deliveries left for a webhook no longer
// configured get a loop of their own, which probes on the schedule,
// gives them up, and ends with its queue; a replay starts it again.
func TestWebhookNoLongerConfiguredInTheBackground(t *testing.T) {
	ft, l := withoutItsWebhook(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.Start(ctx)
	ft.Advance(ft.sleeping(t)) // the first probe failed; the second is due
	ft.Advance(ft.sleeping(t)) // the second failed (dead); the loop looks once more
	others := func() int {
		l.sender.mu.Lock()
		defer l.sender.mu.Unlock()
		return len(l.sender.others)
	}
	for deadline := time.Now().Add(waitLimit); others() != 0; time.Sleep(time.Millisecond) { // polling, not timing
		if time.Now().After(deadline) {
			t.Fatal("the loop of the webhook no longer configured did not end with its queue")
		}
	}
	if s, _ := l.Stats(ctx); s.Dead != 1 || s.Pending != 0 || s.Failures != 2 {
		t.Fatalf("Stats = %+v; want the delivery dead after 2 failures", s)
	}

	if n, err := l.ReplayDead(ctx, ""); err != nil || n != 1 {
		t.Fatalf("ReplayDead = %d, %v; want 1", n, err)
	}
	ft.sleeping(t) // a new loop made its first probe and backs off
	if s, _ := l.Stats(ctx); s.Pending != 1 || s.Failures != 3 {
		t.Fatalf("after the replay: Stats = %+v; want it pending again, probed once more", s)
	}
	cancel()
	l.Close()
}

func TestWebhookRestartResumesPendingDeliveries(t *testing.T) {
	ft := newFakeTime()
	rc := newReceiver(t, hookSecret, ft.Now)
	st := newMemStore()
	cfg := Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}}
	before := newTestLog(t, st, ft, cfg)
	var want []string
	for range 3 {
		want = append(want, mustRecord(t, before, sampleRow("auth.logout")).ID)
	}
	before.Close() // never started: nothing sent

	after := newTestLog(t, st, ft, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	after.Start(ctx)
	got := map[string]bool{}
	for range want {
		got[recv(t, rc.got).eventID] = true
	}
	for _, id := range want {
		if !got[id] {
			t.Errorf("row %s was not delivered after the restart", id)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	s := newSender(nil, DeliveryOptions{MinBackoff: 2 * time.Second, MaxBackoff: time.Hour})
	for n := 1; n <= 40; n++ {
		ceiling := min(2*time.Second<<min(n-1, 30), time.Hour)
		for range 50 {
			if d := s.backoff(n); d < ceiling/2 || d > ceiling {
				t.Fatalf("backoff(%d) = %v; want within [%v, %v]", n, d, ceiling/2, ceiling)
			}
		}
	}
}

// hitLog is a receiver that records the event id of every request and
// answers with status(), after delay().
type hitLog struct {
	*httptest.Server
	mu     sync.Mutex
	ids    []string
	status int
	delay  time.Duration
}

func newHitLog(t *testing.T) *hitLog {
	h := &hitLog{status: http.StatusOK}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.ids = append(h.ids, r.Header.Get(EventIDHeader))
		status, delay := h.status, h.delay
		h.mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hitLog) set(status int, delay time.Duration) {
	h.mu.Lock()
	h.status, h.delay = status, delay
	h.mu.Unlock()
}

func (h *hitLog) hits() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ids)
}

// A webhook that is down gets one probe per pass, not the delivery whose
// probe failed last, with a growing backoff; the other webhook's
// deliveries all go out in the same pass; nothing is lost once the
// receiver is back.
func TestWebhookLanesProbeADownReceiver(t *testing.T) {
	ft := newFakeTime()
	down, up := newHitLog(t), newHitLog(t)
	down.set(http.StatusServiceUnavailable, 0)
	st := newMemStore()
	opts := DeliveryOptions{MinBackoff: time.Second, MaxBackoff: time.Minute, Concurrency: 4}
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(down.URL), hookTo(up.URL)}, Delivery: opts})
	ctx := context.Background()
	const rows = 10
	for range rows {
		mustRecord(t, l, sampleRow("auth.logout"))
	}

	if n, err := l.DeliverDue(ctx); err != nil || n != 2*rows {
		t.Fatalf("pass 1: DeliverDue = %d, %v; want %d taken", n, err, 2*rows)
	}
	if got := len(up.hits()); got != rows {
		t.Fatalf("pass 1: the healthy webhook got %d deliveries; want %d", got, rows)
	}
	probes := down.hits()
	if len(probes) != 1 {
		t.Fatalf("pass 1: the down webhook got %d requests; want 1 probe", len(probes))
	}
	s, _ := l.Stats(ctx)
	if s.Pending != rows || s.Failures != 1 || s.Delivered != rows || s.Down != 1 {
		t.Fatalf("after pass 1: Stats = %+v; want %d pending, 1 failure, %d delivered, 1 webhook down", s, rows, rows)
	}
	// Everything of the down webhook waits for the webhook's backoff,
	// untouched in the outbox but for the probe.
	if d := blockedFor(l, ft, down.URL); d < opts.MinBackoff/2 || d > opts.MinBackoff {
		t.Fatalf("after pass 1 the down webhook is backed off for %v; want within [%v, %v]", d, opts.MinBackoff/2, opts.MinBackoff)
	}
	due, _ := st.AuditDeliveriesDue(ctx, hookTo(down.URL).ID(), ft.Now(), 100)
	attempts := 0
	for _, d := range due {
		attempts += d.Attempts
	}
	if len(due) != rows || attempts != 1 {
		t.Fatalf("%d deliveries to the down webhook with %d attempts in all; want %d, 1 attempt (the probe's)", len(due), attempts, rows)
	}
	if n, _ := l.DeliverDue(ctx); n != 0 || len(down.hits()) != 1 {
		t.Fatalf("a pass during the backoff took %d and made %d requests; want none", n, len(down.hits())-1)
	}

	ft.Advance(opts.MinBackoff)
	if n, err := l.DeliverDue(ctx); err != nil || n != rows {
		t.Fatalf("pass 2: DeliverDue = %d, %v; want %d taken", n, err, rows)
	}
	probes = down.hits()
	if len(probes) != 2 || probes[1] == probes[0] {
		t.Fatalf("pass 2: probes %v; want one more, of another delivery", probes)
	}
	if d := blockedFor(l, ft, down.URL); d < opts.MinBackoff || d > 2*opts.MinBackoff {
		t.Fatalf("after the second failure the next try is in %v; want the doubled backoff", d)
	}

	down.set(http.StatusOK, 0)
	ft.Advance(2 * opts.MinBackoff)
	if n, err := l.DeliverDue(ctx); err != nil || n != rows {
		t.Fatalf("pass 3: DeliverDue = %d, %v; want %d", n, err, rows)
	}
	if got := len(down.hits()); got != 2+rows {
		t.Fatalf("the recovered webhook got %d requests in all; want 2 probes + %d", got, rows)
	}
	s, _ = l.Stats(ctx)
	if s.Pending != 0 || s.Failures != 2 || s.Delivered != 2*rows || s.Dead != 0 || s.Down != 0 {
		t.Fatalf("at the end: Stats = %+v; want nothing pending, 2 failures, %d delivered, no webhook down", s, 2*rows)
	}
}

// newPoisonReceiver is a receiver that answers 500 to any event whose
// user agent holds POISON (poisonRow), a word its parser chokes on, and
// counts the others it takes.
func newPoisonReceiver(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var good atomic.Int64
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, _ := io.ReadAll(r.Body); bytes.Contains(b, []byte("POISON")) {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		good.Add(1)
	}))
	t.Cleanup(rc.Close)
	return rc, &good
}

// poisonRow is a failed sign-in whose user agent a client chose to make
// newPoisonReceiver choke.
func poisonRow() Row {
	r := sampleRow("auth.login.failure")
	r.UserAgent = "POISON"
	return r
}

// A receiver that answers 500 to one event alone (here, any event whose
// user agent holds a word its parser chokes on: a client can choose it)
// gets the others between its attempts, and the webhook is never given
// up as a whole: that event dies alone after its own MaxAttempts.
func TestWebhookPoisonedEventDiesAlone(t *testing.T) {
	ft := newFakeTime()
	rc, good := newPoisonReceiver(t)
	opts := DeliveryOptions{MinBackoff: time.Second, MaxBackoff: 10 * time.Minute, MaxAttempts: 6}
	l := newTestLog(t, newMemStore(), ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}, Delivery: opts})
	ctx := context.Background()
	poisoned := mustRecord(t, l, poisonRow())
	recorded := 0
	for range 40 {
		for range 3 {
			mustRecord(t, l, sampleRow("auth.logout"))
			recorded++
		}
		if _, err := l.DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
		ft.Advance(max(blockedFor(l, ft, rc.URL), 0) + opts.MaxBackoff)
	}
	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := l.Stats(ctx)
	if int(good.Load()) != recorded || s.Pending != 0 || s.Dead != 1 || s.Down != 0 {
		t.Fatalf("%d of %d good rows delivered; Stats %+v; want all, nothing pending, only the poisoned one dead, no webhook down", good.Load(), recorded, s)
	}
	page, _ := l.DeadDeliveries(ctx, "", 10)
	if len(page.Deliveries) != 1 || page.Deliveries[0].RowID != poisoned.ID || page.Deliveries[0].Attempts != opts.MaxAttempts {
		t.Fatalf("dead list %+v; want the poisoned row alone, after %d attempts", page.Deliveries, opts.MaxAttempts)
	}
}

// newPoisonTimesReceiver is a receiver that answers 503 to any event
// whose user agent holds POISON (poisonRow), and takes the others; hits
// gives the fake times of the poisoned event's attempts.
func newPoisonTimesReceiver(t *testing.T, ft *fakeTime) (rc *httptest.Server, hits func() []time.Time) {
	var (
		mu  sync.Mutex
		hit []time.Time
	)
	rc = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, _ := io.ReadAll(r.Body); bytes.Contains(b, []byte("POISON")) {
			mu.Lock()
			hit = append(hit, ft.Now())
			mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(rc.Close)
	return rc, func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(hit)
	}
}

// withPoisonedEvent is a Log whose one webhook's receiver turns away the
// poisoned event it holds (newPoisonTimesReceiver), retrying from 2 s up
// to an hour, 15 attempts.
func withPoisonedEvent(t *testing.T) (*fakeTime, *Log, DeliveryOptions, func() []time.Time) {
	t.Helper()
	ft := newFakeTime()
	rc, hits := newPoisonTimesReceiver(t, ft)
	opts := DeliveryOptions{MinBackoff: 2 * time.Second, MaxBackoff: time.Hour, MaxAttempts: 15}
	l := newTestLog(t, newMemStore(), ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}, Delivery: opts})
	mustRecord(t, l, poisonRow())
	return ft, l, opts, hits
}

// That event keeps its own retry schedule meanwhile: the others' answers
// end the webhook's backoff, but not its own, so it is not tried at every
// pass (its attempts spent in seconds, a brief outage of one event at
// the receiver enough to kill it).
func TestWebhookPoisonedEventKeepsItsSchedule(t *testing.T) {
	ft, l, _, poisonHits := withPoisonedEvent(t)
	ctx := context.Background()
	// A minute of passes, one good row each, a pass every 2 s.
	for range 30 {
		mustRecord(t, l, sampleRow("auth.logout"))
		if _, err := l.DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
		ft.Advance(2 * time.Second)
	}
	// 2 s, 4 s, 8 s, 16 s, 32 s… (each jittered to between half and all
	// of it): at most 7 attempts fit in a minute, not 30.
	hit := poisonHits()
	if n := len(hit); n < 2 || n > 7 {
		t.Errorf("the poisoned event was tried %d times in a minute; want its own backoff (2 to 7)", n)
	}
	// Only its first failure, a probe, looks like the receiver down and
	// has it tried again at the next pass; later, another delivery is the
	// probe, and each of its retries waits its own backoff (at least 2 s
	// after the second attempt), never a pass.
	for i := 2; i < len(hit); i++ {
		if hit[i].Sub(hit[i-1]) <= 2*time.Second {
			t.Errorf("the poisoned event was tried at %v, one pass after %v: it was the probe again", hit[i].Sub(hit[0]), hit[i-1].Sub(hit[0]))
		}
	}
	if s, _ := l.Stats(ctx); s.Dead != 0 || s.Pending != 1 {
		t.Errorf("Stats %+v; want the poisoned event still pending, the rest delivered", s)
	}
}

// So it does when it comes due alone, as it does when the good events go
// out as they come: alone, it is the probe, and its 503 looks like the
// receiver down. It must not then be tried again beside the next good
// event, before its own backoff is over: that spent two attempts per
// step of its schedule, and gave it up in half the time.
func TestWebhookPoisonedEventAloneKeepsItsSchedule(t *testing.T) {
	ft, l, opts, poisonHits := withPoisonedEvent(t)
	ctx := context.Background()
	// Ten minutes, a second at a time: what is due goes (the poisoned
	// event alone, when its time has come), then a good event, which
	// goes at once.
	taken := 0 // what DeliverDue says it took: what it attempted
	for range 600 {
		n, err := l.DeliverDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustRecord(t, l, sampleRow("auth.logout"))
		m, err := l.DeliverDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		taken += n + m
		ft.Advance(time.Second)
	}
	hit := poisonHits()
	if taken != 600+len(hit) {
		t.Errorf("DeliverDue took %d deliveries in all; want the %d attempts made", taken, 600+len(hit))
	}
	// After its n-th attempt it waits 2 s doubled n-1 times, jittered to
	// between half and all of it: at least 1 s, 2 s, 4 s…, and so at most
	// 10 attempts fit in ten minutes.
	for i := 1; i < len(hit); i++ {
		if gap, least := hit[i].Sub(hit[i-1]), opts.MinBackoff<<(i-1)/2; gap < least {
			t.Errorf("attempt %d came %v after attempt %d; want at least %v, its own backoff", i+1, gap, i, least)
		}
	}
	if len(hit) < 6 || len(hit) > 10 {
		t.Errorf("the poisoned event was tried %d times in ten minutes; want its own schedule (6 to 10)", len(hit))
	}
	if s, _ := l.Stats(ctx); s.Dead != 0 || s.Pending != 1 || s.Delivered != 600 {
		t.Errorf("Stats %+v; want the poisoned event still pending, the 600 others delivered", s)
	}
}

// Events a client shapes, more of them than a delivery's attempts, all
// turned away with a 500, and older than the good ones: the probe is the
// least tried delivery, so a good one goes through at each pass, and
// the webhook is not given up as a whole. The poisoned ones die alone.
// (With two such events the probes used to take turns between them, no
// good delivery was tried, and every delivery was given up.)
func TestWebhookPoisonedEventsDoNotHoldBackTheOthers(t *testing.T) {
	ft := newFakeTime()
	rc, good := newPoisonReceiver(t)
	opts := DeliveryOptions{MinBackoff: time.Second, MaxBackoff: 10 * time.Minute, MaxAttempts: 4, Concurrency: 1}
	l := newTestLog(t, newMemStore(), ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}, Delivery: opts})
	ctx := context.Background()
	const poisoned = 10
	for range poisoned {
		mustRecord(t, l, poisonRow())
	}
	ft.Advance(time.Second)
	const goods = 3
	for range goods {
		mustRecord(t, l, sampleRow("auth.logout"))
	}
	// Each pass's probe is a good row; a poisoned one ends the pass (an
	// unavailable answer starts no more attempts) and waits its own
	// backoff.
	for range goods {
		if _, err := l.DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
		ft.Advance(opts.MinBackoff)
	}
	if good.Load() != goods {
		t.Fatalf("%d passes delivered %d of the %d good rows behind %d poisoned ones; want all", goods, good.Load(), goods, poisoned)
	}
	for range 60 {
		ft.Advance(opts.MaxBackoff)
		if _, err := l.DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
		mustRecord(t, l, sampleRow("auth.logout"))
	}
	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := l.Stats(ctx)
	if good.Load() != goods+60 || s.Pending != 0 || s.Dead != poisoned {
		t.Fatalf("%d of %d good rows delivered; Stats %+v; want all, nothing pending, the %d poisoned ones dead", good.Load(), goods+60, s, poisoned)
	}
}

// A receiver that hangs costs its own lane one timeout and no more; the
// other webhook is served at full speed in the same pass.
func TestWebhookLanesIsolateASlowReceiver(t *testing.T) {
	ft := newFakeTime()
	slow, fast := newHitLog(t), newHitLog(t)
	slow.set(http.StatusOK, 10*time.Second)
	opts := DeliveryOptions{Timeout: 300 * time.Millisecond, MinBackoff: time.Second, Concurrency: 2}
	l := newTestLog(t, newMemStore(), ft, Options{Webhooks: []WebhookConfig{hookTo(slow.URL), hookTo(fast.URL)}, Delivery: opts})
	const rows = 12
	for range rows {
		mustRecord(t, l, sampleRow("auth.logout"))
	}
	if n, err := l.DeliverDue(context.Background()); err != nil || n != 2*rows {
		t.Fatalf("DeliverDue = %d, %v; want %d taken", n, err, 2*rows)
	}
	// The probe timed out and the other eleven were deferred. Without
	// lanes the pass would have waited for 12 timeouts, 2 at a time.
	if got := len(slow.hits()); got != 1 {
		t.Errorf("the hanging webhook got %d requests; want 1 probe", got)
	}
	if got := len(fast.hits()); got != rows {
		t.Errorf("the healthy webhook got %d deliveries; want %d", got, rows)
	}
}

// Dead deliveries come back on request: due now, a fresh retry schedule,
// and the sender delivers them once the receiver is up.
func TestWebhookReplayDead(t *testing.T) {
	ft := newFakeTime()
	rc := newHitLog(t)
	rc.set(http.StatusServiceUnavailable, 0)
	other := newHitLog(t)
	st := newMemStore()
	opts := DeliveryOptions{MinBackoff: time.Second, MaxAttempts: 1}
	hooks := []WebhookConfig{hookTo(rc.URL), hookTo(other.URL)}
	l := newTestLog(t, st, ft, Options{Webhooks: hooks, Delivery: opts})
	ctx := context.Background()
	row := mustRecord(t, l, sampleRow("auth.logout"))
	other.set(http.StatusServiceUnavailable, 0)
	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := l.Stats(ctx); s.Dead != 2 || s.Pending != 0 {
		t.Fatalf("Stats = %+v; want both deliveries dead", s)
	}

	if _, err := l.ReplayDead(ctx, "0123456789abcdef"); !errors.Is(err, ErrUnknownWebhook) {
		t.Fatalf("replaying an unknown webhook: %v; want ErrUnknownWebhook", err)
	}
	rc.set(http.StatusOK, 0)
	n, err := l.ReplayDead(ctx, hooks[0].ID())
	if err != nil || n != 1 {
		t.Fatalf("ReplayDead = %d, %v; want 1", n, err)
	}
	if s, _ := l.Stats(ctx); s.Dead != 1 || s.Pending != 1 {
		t.Fatalf("after replay: Stats = %+v; want 1 pending, the other webhook's still dead", s)
	}
	if n, err := l.DeliverDue(ctx); err != nil || n != 1 {
		t.Fatalf("DeliverDue after replay = %d, %v; want 1, due at once", n, err)
	}
	if hits := rc.hits(); len(hits) != 2 || hits[1] != row.ID {
		t.Fatalf("receiver hits %v; want the failed attempt and the replayed one of %s", hits, row.ID)
	}
	if s, _ := l.Stats(ctx); s.Dead != 1 || s.Pending != 0 || s.Delivered != 1 {
		t.Fatalf("at the end: Stats = %+v; want 1 delivered, 1 still dead", s)
	}
}

// A replay moves the dead list a chunk per transaction. When a later
// chunk fails, the earlier ones are back in the outbox and will be sent:
// ReplayDead says how many along with the error (the caller's audit row
// needs the count), and they go out at once like any replay's.
func TestWebhookReplayDeadFailsPartWay(t *testing.T) {
	defer func(n int) { deadChunk = n }(deadChunk)
	deadChunk = 2
	ft := newFakeTime()
	rc := newHitLog(t)
	rc.set(http.StatusServiceUnavailable, 0)
	st := newMemStore()
	hooks := []WebhookConfig{hookTo(rc.URL)}
	l := newTestLog(t, st, ft, Options{Webhooks: hooks, Delivery: DeliveryOptions{MinBackoff: time.Second, MaxAttempts: 1}})
	ctx := context.Background()
	for range 5 {
		mustRecord(t, l, sampleRow("auth.logout"))
	}
	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := l.Stats(ctx); s.Dead != 5 {
		t.Fatalf("Stats = %+v; want 5 dead", s)
	}
	broken := errors.New("disk on fire")
	st.locked(func() { st.failReplay, st.replayCalls = broken, 1 })
	rc.set(http.StatusOK, 0)
	n, err := l.ReplayDead(ctx, hooks[0].ID())
	if !errors.Is(err, broken) || n != 2 {
		t.Fatalf("ReplayDead = %d, %v; want 2 moved and the store's error", n, err)
	}
	if s, _ := l.Stats(ctx); s.Dead != 3 || s.Pending != 2 {
		t.Fatalf("after a failed replay: Stats = %+v; want 2 pending, 3 still dead", s)
	}
	if n, err := l.DeliverDue(ctx); err != nil || n != 2 {
		t.Fatalf("DeliverDue = %d, %v; want the 2 replayed, due at once", n, err)
	}
}

// A webhook whose URL changed is a new one: what was queued for the old
// URL dies as "not configured", and a replay sends it to the new one.
func TestWebhookReplayDeadToANewURL(t *testing.T) {
	ft := newFakeTime()
	st := newMemStore()
	old := hookTo("https://old.example.invalid/in?token=a")
	first := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{old}})
	row := mustRecord(t, first, sampleRow("auth.logout"))
	first.Close()
	rc := newHitLog(t)
	renewed, other := hookTo(rc.URL), hookTo("https://other.example.invalid/")
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{renewed, other}, Delivery: DeliveryOptions{MaxAttempts: 1}})
	ctx := context.Background()
	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := l.Stats(ctx); s.Dead != 1 {
		t.Fatalf("Stats = %+v; want the old URL's delivery dead", s)
	}
	if _, err := l.ReplayDead(ctx, old.ID()); !errors.Is(err, ErrUnknownWebhook) {
		t.Errorf("ReplayDead of the old webhook = %v; want ErrUnknownWebhook (it would only die again)", err)
	}
	// The ids a replay takes are shown nowhere else before a delivery
	// to them dies: the error names the configured ones.
	_, err := l.ReplayDeadTo(ctx, old.ID(), "0123456789abcdef")
	if !errors.Is(err, ErrUnknownWebhook) {
		t.Errorf("ReplayDeadTo a webhook not configured = %v; want ErrUnknownWebhook", err)
	}
	for _, want := range []string{renewed.ID() + " (" + RedactURL(rc.URL) + ")", other.ID() + " (https://other.example.invalid/)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReplayDeadTo a webhook not configured = %v; want it to name %s", err, want)
		}
	}
	if _, err := l.ReplayDeadTo(ctx, "", renewed.ID()); !errors.Is(err, ErrUnknownWebhook) {
		t.Errorf("ReplayDeadTo from no webhook = %v; want an error", err)
	}
	n, err := l.ReplayDeadTo(ctx, old.ID(), renewed.ID())
	if err != nil || n != 1 {
		t.Fatalf("ReplayDeadTo = %d, %v; want 1", n, err)
	}
	if n, err := l.DeliverDue(ctx); err != nil || n != 1 {
		t.Fatalf("DeliverDue after the replay = %d, %v; want 1, due at once", n, err)
	}
	if hits := rc.hits(); len(hits) != 1 || hits[0] != row.ID {
		t.Fatalf("the new URL got %v; want the old URL's row %s", hits, row.ID)
	}
	if s, _ := l.Stats(ctx); s.Dead != 0 || s.Pending != 0 || s.Delivered != 1 {
		t.Fatalf("at the end: Stats = %+v; want it delivered, nothing dead or pending", s)
	}
}

// An event the receiver rejects for itself (a 4xx other than 408 and 429,
// or a redirect, which is not followed) fails alone: it is backed off by
// itself and the webhook's other deliveries go out in the same pass,
// though the rejected one has the most attempts and so goes first.
func TestWebhookRejectedEventDoesNotHoldBackItsWebhook(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusTemporaryRedirect} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			ft := newFakeTime()
			var (
				mu      sync.Mutex
				poison  string
				healthy int
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				mu.Lock()
				defer mu.Unlock()
				if r.Header.Get(EventIDHeader) == poison {
					w.Header().Set("Location", "/elsewhere")
					w.WriteHeader(status)
					return
				}
				healthy++
			}))
			t.Cleanup(srv.Close)
			st := newMemStore()
			l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(srv.URL)}}) // default retry schedule
			ctx := context.Background()
			p := mustRecord(t, l, sampleRow("auth.login.failure"))
			mu.Lock()
			poison = p.ID
			mu.Unlock()
			if _, err := l.DeliverDue(ctx); err != nil {
				t.Fatal(err)
			}
			// Its retry is due; ten ordinary events arrive meanwhile.
			next, _, _ := st.AuditNextDelivery(ctx, hookTo(srv.URL).ID())
			ft.Advance(next.Sub(ft.Now()))
			const rows = 10
			for range rows {
				mustRecord(t, l, sampleRow("auth.login.success"))
			}

			if n, err := l.DeliverDue(ctx); err != nil || n != rows+1 {
				t.Fatalf("DeliverDue = %d, %v; want %d taken", n, err, rows+1)
			}
			mu.Lock()
			got := healthy
			mu.Unlock()
			if got != rows {
				t.Fatalf("the webhook got %d of the %d healthy events in the pass after the rejection; want all", got, rows)
			}
			s, _ := l.Stats(ctx)
			if s.Pending != 1 || s.Delivered != rows || s.Failures != 2 {
				t.Fatalf("Stats = %+v; want the rejected event alone pending, %d delivered, 2 failures", s, rows)
			}
			left, _ := st.AuditDeliveriesDue(ctx, hookTo(srv.URL).ID(), ft.Now().Add(24*time.Hour), 100)
			if len(left) != 1 || left[0].RowID != poison || left[0].Attempts != 2 || !strings.Contains(left[0].LastError, strconv.Itoa(status)) {
				t.Fatalf("pending = %+v; want the rejected event, 2 attempts, its status as last error", left)
			}
		})
	}
}

// Answers that say the receiver itself cannot take deliveries now (no
// connection, 5xx, 429, 408) hold back the rest of the webhook's
// deliveries, unwritten, for the webhook's backoff: one request per pass,
// none until the backoff ends.
func TestWebhookUnavailableReceiverHoldsBackItsWebhook(t *testing.T) {
	const rows = 5
	check := func(t *testing.T, l *Log, st *memStore, requests func() int) {
		t.Helper()
		ctx := context.Background()
		hook := l.hooks[0].id
		for range rows {
			mustRecord(t, l, sampleRow("auth.logout"))
		}
		if n, err := l.DeliverDue(ctx); err != nil || n != rows {
			t.Fatalf("DeliverDue = %d, %v; want %d taken", n, err, rows)
		}
		if got := requests(); got != 1 {
			t.Fatalf("the receiver got %d requests; want 1 probe", got)
		}
		s, _ := l.Stats(ctx)
		due, _ := st.AuditDeliveriesDue(ctx, hook, l.clk.Now(), 100)
		if s.Failures != 1 || s.Pending != rows || len(due) != rows {
			t.Fatalf("Stats = %+v, %d still due; want 1 failure and all %d pending where they were", s, len(due), rows)
		}
		if n, _ := l.DeliverDue(ctx); n != 0 || requests() != 1 {
			t.Fatalf("a pass during the backoff took %d, %d requests in all; want nothing taken, still 1", n, requests())
		}
		// Only the probe counts an attempt; the deferred ones were not tried.
		attempts := 0
		for _, d := range due {
			attempts += d.Attempts
			if d.Attempts == 0 && d.LastError != "" {
				t.Errorf("deferred delivery %s has last error %q; want none (never attempted)", d.RowID, d.LastError)
			}
		}
		if attempts != 1 {
			t.Errorf("%d attempts recorded over the deferred batch; want 1 (the probe's)", attempts)
		}
	}
	for _, status := range []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusTooManyRequests, http.StatusRequestTimeout} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			rc := newHitLog(t)
			rc.set(status, 0)
			st := newMemStore()
			l := newTestLog(t, st, newFakeTime(), Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}})
			check(t, l, st, func() int { return len(rc.hits()) })
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		st := newMemStore()
		l := newTestLog(t, st, newFakeTime(), Options{Webhooks: []WebhookConfig{hookTo(gone.URL)}})
		check(t, l, st, func() int { s, _ := l.Stats(context.Background()); return int(s.Failures) })
	})
}

// damagedOutbox reports, beside every due batch, entries it took out of
// the outbox because they would not decode, as a store does.
type damagedOutbox struct{ *memStore }

func (d damagedOutbox) AuditDeliveriesDue(ctx context.Context, hookID string, now time.Time, limit int) ([]Delivery, error) {
	ds, err := d.memStore.AuditDeliveriesDue(ctx, hookID, now, limit)
	if err != nil {
		return nil, err
	}
	return ds, fmt.Errorf("%w: outbox key 010203: malformed, deleted", ErrDamagedDelivery)
}

// Unreadable outbox entries are logged; the pass delivers the rest.
func TestWebhookDamagedOutboxEntriesDoNotStopThePass(t *testing.T) {
	ft := newFakeTime()
	rc := newHitLog(t)
	var logs bytes.Buffer // written by DeliverDue, on this goroutine
	errLog := slog.New(slog.NewTextHandler(&logs, nil))
	l := newTestLog(t, damagedOutbox{newMemStore()}, ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}, ErrorLog: errLog})
	const rows = 3
	for range rows {
		mustRecord(t, l, sampleRow("auth.logout"))
	}
	if n, err := l.DeliverDue(context.Background()); err != nil || n != rows {
		t.Fatalf("DeliverDue = %d, %v; want %d taken, no error", n, err, rows)
	}
	if got := len(rc.hits()); got != rows {
		t.Fatalf("the receiver got %d deliveries; want %d", got, rows)
	}
	if !strings.Contains(logs.String(), "010203") {
		t.Fatalf("error log %q does not report the damaged entry", logs.String())
	}
}

// A transport error names the webhook URL redacted wherever it is kept:
// the delivery's last error (the outbox, the dead list, the admin API)
// and the log. net/url hides only a password, not a query token.
func TestWebhookTransportErrorHidesURLSecrets(t *testing.T) {
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	u, _ := url.Parse(gone.URL)
	u.User = url.UserPassword("hooks", "pa55word")
	u.RawQuery = "token=s3cret"
	var logs bytes.Buffer
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{Webhooks: []WebhookConfig{hookTo(u.String())},
		ErrorLog: slog.New(slog.NewTextHandler(&logs, nil))})
	mustRecord(t, l, sampleRow("auth.logout"))
	if _, err := l.DeliverDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	due, _ := st.AuditDeliveriesDue(context.Background(), l.hooks[0].id, t0.Add(24*time.Hour), 10)
	if len(due) != 1 || due[0].LastError == "" {
		t.Fatalf("due %+v; want the failed delivery with its error", due)
	}
	for where, text := range map[string]string{"last error": due[0].LastError, "log": logs.String()} {
		if strings.Contains(text, "s3cret") || strings.Contains(text, "pa55word") {
			t.Errorf("the %s shows the URL's secrets: %s", where, text)
		}
	}
	if !strings.Contains(due[0].LastError, "xxxxx@127.0.0.1") || !strings.Contains(due[0].LastError, "?xxxxx") {
		t.Errorf("last error %q; want the redacted URL", due[0].LastError)
	}
}

// A pass settles everything it decided in one store commit; if that
// commit fails, nothing is lost: the deliveries stay pending and the next
// pass sends them again (at least once).
func TestWebhookPassSettlesInOneCommit(t *testing.T) {
	ft := newFakeTime()
	rc := newReceiver(t, hookSecret, ft.Now)
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}})
	ctx := context.Background()
	for range 10 {
		mustRecord(t, l, sampleRow("auth.logout"))
	}

	st.locked(func() { st.failSettle = errors.New("disk full") })
	if _, err := l.DeliverDue(ctx); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("DeliverDue with a failing commit: %v; want the store's error", err)
	}
	for range 10 {
		recv(t, rc.got)
	}
	if s, _ := l.Stats(ctx); s.Pending != 10 || s.Delivered != 0 {
		t.Fatalf("after a failed commit: Stats %+v; want all 10 still pending and none counted delivered", s)
	}

	st.locked(func() { st.failSettle, st.settles = nil, 0 })
	if n, err := l.DeliverDue(ctx); err != nil || n != 10 {
		t.Fatalf("DeliverDue = %d, %v; want 10", n, err)
	}
	for range 10 {
		recv(t, rc.got) // sent again: at least once
	}
	st.mu.Lock()
	settles := st.settles
	st.mu.Unlock()
	if s, _ := l.Stats(ctx); s.Pending != 0 || s.Delivered != 10 || settles != 1 {
		t.Errorf("after the pass: Stats %+v, %d commits; want 0 pending, 10 delivered, in 1 commit", s, settles)
	}
}

// While the store cannot record a pass's outcome (a full disk), every
// pass sends the same deliveries again; the webhook is held after each
// such pass for longer each time, new rows notwithstanding, so the
// receiver gets a few duplicates, not a flood. A pass that goes through
// ends the hold.
func TestWebhookFailedPassesBackOff(t *testing.T) {
	ft := newFakeTime()
	rc := newReceiver(t, hookSecret, ft.Now)
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}})
	ctx := context.Background()
	ln := l.sender.lanes[l.hooks[0].id]
	for range 10 {
		mustRecord(t, l, sampleRow("auth.logout"))
	}
	st.locked(func() { st.failSettle = errors.New("no space left on device") })
	sent := func() int {
		n := 0
		for {
			select {
			case <-rc.got:
				n++
			default:
				return n
			}
		}
	}
	// Hold windows: MinBackoff (2s) doubled per failed pass, jittered
	// to between half and all of it.
	for i, want := range []struct{ lo, hi time.Duration }{{time.Second, 2 * time.Second}, {2 * time.Second, 4 * time.Second}, {4 * time.Second, 8 * time.Second}} {
		next, again, _ := l.sender.step(ctx, ln)
		if n := sent(); n != 10+i || again {
			t.Fatalf("failed pass %d: sent %d, again %v; want all %d pending sent again, and a wait", i+1, n, again, 10+i)
		}
		if d := next.Sub(ft.Now()); d < want.lo || d > want.hi {
			t.Errorf("failed pass %d: held for %v; want %v to %v", i+1, d, want.lo, want.hi)
		}
		// A new row wakes the lane (as every recorded row does): the
		// hold stands.
		mustRecord(t, l, sampleRow("auth.login.success"))
		if again, _, _ := l.sender.step(ctx, ln); sent() != 0 || !again.Equal(next) {
			t.Errorf("failed pass %d: a wake-up during the hold sent deliveries or moved it (%v, want %v)", i+1, again, next)
		}
		ft.Advance(next.Sub(ft.Now()))
	}
	st.locked(func() { st.failSettle = nil })
	if _, again, idle := l.sender.step(ctx, ln); again || !idle {
		t.Errorf("a pass that goes through: again %v, idle %v; want everything delivered", again, idle)
	}
	if s, _ := l.Stats(ctx); s.Pending != 0 || s.Delivered != 13 {
		t.Errorf("after the disk came back: %+v; want 13 delivered, none pending", s)
	}
	if until := ln.blockedUntil(); until.After(ft.Now()) {
		t.Errorf("the lane is still held until %v after a pass went through", until)
	}
	// and the next failure starts from the shortest hold again.
	st.locked(func() { st.failSettle = errors.New("no space left on device") })
	mustRecord(t, l, sampleRow("auth.logout"))
	if next, _, _ := l.sender.step(ctx, ln); next.Sub(ft.Now()) > 2*time.Second {
		t.Errorf("the first failed pass after one that went through: held for %v; want at most 2s", next.Sub(ft.Now()))
	}
}

// flakyDue is a store whose reads of due deliveries fail while fail is set.
type flakyDue struct {
	*memStore
	fail atomic.Bool
}

func (f *flakyDue) AuditDeliveriesDue(ctx context.Context, hookID string, now time.Time, limit int) ([]Delivery, error) {
	if f.fail.Load() {
		return nil, errors.New("transient read error")
	}
	return f.memStore.AuditDeliveriesDue(ctx, hookID, now, limit)
}

// Failed passes count in a row only: a pass that goes through, even with
// nothing due, and a replay each start the count again, so failures days
// apart never add up to a long hold.
func TestWebhookFailedPassesCountInARow(t *testing.T) {
	ft := newFakeTime()
	rc := newReceiver(t, hookSecret, ft.Now)
	st := &flakyDue{memStore: newMemStore()}
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(rc.URL)}})
	ctx := context.Background()
	ln := l.sender.lanes[l.hooks[0].id]
	failOnce := func() time.Duration {
		t.Helper()
		st.fail.Store(true)
		defer st.fail.Store(false)
		next, _, _ := l.sender.step(ctx, ln)
		return next.Sub(ft.Now())
	}
	for range 6 { // each failure followed by a pass with nothing due
		ft.Advance(failOnce() + time.Second)
		if _, again, idle := l.sender.step(ctx, ln); again || !idle {
			t.Fatalf("a pass with nothing due: again %v, idle %v", again, idle)
		}
	}
	if d := failOnce(); d > 2*time.Second {
		t.Errorf("a failure after passes that went through: held for %v; want at most 2s", d)
	}
	ft.Advance(time.Hour)
	for range 4 { // four in a row: a long hold
		ft.Advance(failOnce())
	}
	// A dead delivery, replayed by an operator.
	mustRecord(t, l, sampleRow("auth.logout"))
	st.mu.Lock()
	for k, d := range st.pending {
		delete(st.pending, k)
		st.dead[k] = d
	}
	st.mu.Unlock()
	if n, err := l.ReplayDead(ctx, ""); err != nil || n != 1 {
		t.Fatalf("ReplayDead = %d, %v; want 1", n, err)
	}
	if d := failOnce(); d > 2*time.Second {
		t.Errorf("a failure after a replay: held for %v; want at most 2s", d)
	}
}

// Stats keeps the counters held in memory when the store's outbox
// counts cannot be read: the failures counter must not drop to zero
// (a counter reset to Prometheus) because of a read error.
func TestStatsKeepsCountersWhenTheStoreFails(t *testing.T) {
	ft := newFakeTime()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest) // turned away: a failure, the receiver up
	}))
	defer srv.Close()
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(srv.URL)}})
	ctx := context.Background()
	mustRecord(t, l, sampleRow("auth.logout"))
	if _, err := l.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	st.locked(func() { st.failStats = errBoom })
	s, err := l.Stats(ctx)
	if !errors.Is(err, errBoom) {
		t.Errorf("Stats with the outbox unreadable: %v; want the store's error", err)
	}
	if s.Failures != 1 || s.Pending != 0 {
		t.Errorf("Stats with the outbox unreadable: %+v; want the failure counted, no outbox counts", s)
	}
}

// A receiver that answers is up, even when it turns some requests away
// (429) in every pass: its webhook backs off afresh each time and never
// counts towards giving its deliveries up, which only a receiver that
// answers nothing can bring about.
func TestWebhookAnsweringReceiverIsNeverGivenUp(t *testing.T) {
	ft := newFakeTime()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		if k%3 == 0 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	opts := DeliveryOptions{MinBackoff: time.Second, MaxBackoff: time.Minute, Concurrency: 1, MaxAttempts: 3}
	l := newTestLog(t, newMemStore(), ft, Options{Webhooks: []WebhookConfig{hookTo(srv.URL)}, Delivery: opts})
	ctx := context.Background()
	const rows = 20
	for range rows {
		mustRecord(t, l, sampleRow("auth.logout"))
	}
	for pass := 1; pass <= 3*opts.MaxAttempts; pass++ {
		if _, err := l.DeliverDue(ctx); err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		if s, _ := l.Stats(ctx); s.Dead != 0 {
			t.Fatalf("after pass %d: %d deliveries dead although the receiver answered in every pass", pass, s.Dead)
		}
		if d := blockedFor(l, ft, srv.URL); d > opts.MinBackoff {
			t.Fatalf("after pass %d the webhook is backed off for %v; want a fresh backoff, at most %v", pass, d, opts.MinBackoff)
		}
		ft.Advance(opts.MinBackoff)
	}
	// The ones turned away are retried on their own schedules.
	for range 20 {
		ft.Advance(opts.MaxBackoff)
		if _, err := l.DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if s, _ := l.Stats(ctx); s.Pending != 0 || s.Dead != 0 || s.Delivered != rows {
		t.Errorf("in the end: %+v; want all %d delivered", s, rows)
	}
}

// timeoutTransport fails every request as a timeout that took the
// attempt's whole 10 s on the fake clock.
type timeoutTransport struct {
	ft    *fakeTime
	mu    sync.Mutex
	tries int
}

func (rt *timeoutTransport) RoundTrip(*http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.tries++
	rt.mu.Unlock()
	rt.ft.Advance(10 * time.Second)
	return nil, context.DeadlineExceeded
}

// A webhook's backoff runs from when its probe failed, not from when the
// pass began: a probe that took its whole timeout is not followed by
// another at once.
func TestWebhookBackoffStartsWhenTheProbeFails(t *testing.T) {
	ft := newFakeTime()
	rt := &timeoutTransport{ft: ft}
	opts := DeliveryOptions{Client: &http.Client{Transport: rt}} // 10 s timeout, 2 s first backoff
	const url = "https://hook.example/x"
	l := newTestLog(t, newMemStore(), ft, Options{Webhooks: []WebhookConfig{hookTo(url)}, Delivery: opts})
	mustRecord(t, l, sampleRow("auth.logout"))
	for pass := 1; pass <= 4; pass++ {
		if _, err := l.DeliverDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := blockedFor(l, ft, url); d <= 0 {
			t.Fatalf("after pass %d the webhook is backed off for %v; want a backoff still to come", pass, d)
		}
	}
	if rt.tries != 1 {
		t.Errorf("%d probes with no clock advance between the passes; want 1", rt.tries)
	}
}

// During a config reload the old Log may queue a delivery after the new
// one's lanes looked at the store, and without waking them: the new Log
// still sends it, or, for a webhook it no longer has, gives it up on the
// schedule. Nothing stays pending for ever.
func TestWebhookDeliveryQueuedByTheOldLogIsSent(t *testing.T) {
	for _, kept := range []bool{true, false} {
		t.Run(fmt.Sprintf("webhook kept %t", kept), func(t *testing.T) {
			ft := newFakeTime()
			hits := newHitLog(t)
			st := newMemStore()
			opts := DeliveryOptions{MinBackoff: time.Second, MaxBackoff: time.Minute, MaxAttempts: 3, Recheck: 20 * time.Millisecond}
			old := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo(hits.URL, "auth.*")}, Delivery: opts})
			var hooks []WebhookConfig
			if kept {
				hooks = []WebhookConfig{hookTo(hits.URL, "auth.*")}
			}
			replacing := newTestLog(t, st, ft, Options{Webhooks: hooks, Delivery: opts})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			replacing.Start(ctx)
			time.Sleep(100 * time.Millisecond) // its lanes have looked at the empty store (not required)
			mustRecord(t, old, sampleRow("auth.logout"))
			old.Close()
			mustRecord(t, replacing, sampleRow("mfa.totp.enrolled"))                         // matches no webhook
			for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) { // polling, not timing
				if s, _ := replacing.Stats(ctx); s.Pending == 0 {
					if kept && len(hits.hits()) != 1 {
						t.Errorf("the kept webhook got %d requests; want the old Log's delivery", len(hits.hits()))
					}
					if !kept && s.Dead != 1 {
						t.Errorf("the removed webhook's delivery: %+v; want it dead", s)
					}
					return
				}
				if time.Now().After(deadline) {
					s, _ := replacing.Stats(ctx)
					t.Fatalf("the old Log's delivery still pending after %v: %+v", waitLimit, s)
				}
				ft.Advance(time.Minute) // the removed webhook's backoff
			}
		})
	}
}
