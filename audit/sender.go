package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/hmacsig"
)

// DeliveryOptions tune the webhook sender. Zero fields take the defaults
// noted. With the defaults a delivery is tried 15 times over about five
// hours (2s, 4s, 8s, … doubling up to 1h, each with jitter) before it is
// given up as dead.
type DeliveryOptions struct {
	// Timeout bounds one attempt (connect, send, response headers and
	// body). Default 10s.
	Timeout time.Duration
	// MinBackoff is the delay after the first failure. Default 2s.
	MinBackoff time.Duration
	// MaxBackoff caps the delay between attempts. Default 1h.
	MaxBackoff time.Duration
	// MaxAttempts is the retry limit: after this many failed attempts the
	// delivery is dead. Default 15.
	MaxAttempts int
	// Concurrency is how many attempts run at once. Default 4.
	Concurrency int
	// Client sends the requests. Default: a client that does not follow
	// redirects (a redirect is a failed attempt).
	Client *http.Client
}

// EventIDHeader carries the row id on every webhook request, so receivers
// can drop the duplicates that at-least-once delivery allows.
const EventIDHeader = "Sigra-Event-Id"

// deliveryBatch is how many due deliveries one pass takes.
const deliveryBatch = 64

var errRowGone = errors.New("row no longer stored")

type sender struct {
	l         *Log
	opts      DeliveryOptions
	client    *http.Client
	delivered atomic.Uint64
	failures  atomic.Uint64
}

func newSender(l *Log, o DeliveryOptions) *sender {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 2 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Hour
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 15
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	c := o.Client
	if c == nil {
		c = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &sender{l: l, opts: o, client: c}
}

// run delivers until ctx ends: a pass over what is due, then a wait until
// the next delivery is due or Record enqueues one.
func (s *sender) run(ctx context.Context) {
	for {
		wait, again := s.step(ctx)
		if ctx.Err() != nil {
			return
		}
		if again {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.l.wake:
		case <-wait:
		}
	}
}

// step makes one pass and says how to wait: again means at once; a nil
// wait means until woken.
func (s *sender) step(ctx context.Context) (wait <-chan time.Time, again bool) {
	defer func() {
		if p := recover(); p != nil {
			s.l.errLog.Error("audit webhook sender panicked", "panic", p, "stack", string(debug.Stack()))
			wait, again = s.l.wakeAt(s.l.clk.Now().Add(s.opts.MinBackoff)), false
		}
	}()
	_, more, err := s.deliverDue(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.l.errLog.Error("audit webhook pass failed", "error", err)
		}
		return s.l.wakeAt(s.l.clk.Now().Add(s.opts.MinBackoff)), false
	}
	if more {
		return nil, true
	}
	next, ok, err := s.nextDue(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.l.errLog.Error("audit webhook outbox unreadable", "error", err)
		}
		return s.l.wakeAt(s.l.clk.Now().Add(s.opts.MinBackoff)), false
	}
	if !ok {
		return nil, false
	}
	if !next.After(s.l.clk.Now()) {
		return nil, true
	}
	return s.l.wakeAt(next), false
}

// DeliverDue makes one delivery pass now: it takes up to 64 deliveries
// per webhook that are due on the Log's clock (each webhook's from its
// own queue, so that one webhook's backlog never crowds out another's),
// attempts them, records their outcomes in one commit, and returns how
// many it took. The background sender
// started by Start calls it in a loop; the CLI and tests may call it
// directly (alongside a running sender, a delivery may then be attempted
// twice: delivery is at least once either way).
//
// Each webhook is a lane of its own: its deliveries are attempted in
// order beside the other webhooks', the first alone as a probe, then up
// to Concurrency at once. A failed attempt is backed off by itself. When
// it says the receiver itself is unavailable (no connection, a timeout,
// or a 5xx, 429 or 408 answer), the webhook's deliveries not yet started
// are also deferred, unattempted, to that failure's retry time: a
// receiver that is down or hangs gets one probe per backoff step instead
// of a pass full of timeouts, and holds the other webhooks up by at most
// one timeout per step. The delivery with the most attempts goes first,
// so the same one keeps probing and its backoff keeps growing. Any other
// answer (another 4xx, or a redirect, which is not followed) fails that
// delivery alone: the receiver is up, and an event it rejects does not
// hold back the others. Outbox entries the store cannot read
// (ErrDamagedDelivery) are logged, and the pass goes on without them.
func (l *Log) DeliverDue(ctx context.Context) (int, error) {
	n, _, err := l.sender.deliverDue(ctx)
	return n, err
}

// nextDue is the earliest due time over every webhook's queue.
func (s *sender) nextDue(ctx context.Context) (next time.Time, ok bool, err error) {
	hooks, err := s.l.st.AuditOutboxHooks(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	for _, h := range hooks {
		at, has, err := s.l.st.AuditNextDelivery(ctx, h)
		if err != nil {
			return time.Time{}, false, err
		}
		if has && (!ok || at.Before(next)) {
			next, ok = at, true
		}
	}
	return next, ok, nil
}

// lane is one webhook's share of a pass.
type lane struct {
	items []int // indexes into the pass's deliveries, in attempt order
	// down is set once an attempt says the receiver is unavailable.
	down atomic.Bool
}

// unavailableError is a failed attempt that says the receiver, not the
// delivery, is the problem: it could not be reached or did not answer in
// time, answered 5xx, 429 (too many requests) or 408 (request timeout),
// or is no longer configured. Its lane starts no more attempts.
type unavailableError struct{ err error }

func (e unavailableError) Error() string { return e.err.Error() }
func (e unavailableError) Unwrap() error { return e.err }

func receiverUnavailable(err error) bool {
	var u unavailableError
	return errors.As(err, &u)
}

// deliverDue makes a pass; more reports that some webhook had a full
// batch due, so another pass should follow at once.
func (s *sender) deliverDue(ctx context.Context) (n int, more bool, err error) {
	now := s.l.clk.Now()
	hooks, err := s.l.st.AuditOutboxHooks(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("listing webhooks with pending deliveries: %w", err)
	}
	var ds []Delivery
	for _, h := range hooks {
		got, err := s.l.st.AuditDeliveriesDue(ctx, h, now, deliveryBatch)
		if errors.Is(err, ErrDamagedDelivery) {
			// The store took them out of the outbox; the rest go on.
			s.l.errLog.Error("audit webhook outbox entries unreadable, taken out of the outbox", "error", err)
		} else if err != nil {
			return 0, false, fmt.Errorf("reading due deliveries: %w", err)
		}
		ds = append(ds, got...)
		more = more || len(got) == deliveryBatch
	}
	var lanes []*lane
	byHook := map[string]*lane{}
	for i, d := range ds {
		ln := byHook[d.HookID]
		if ln == nil {
			ln = new(lane)
			byHook[d.HookID] = ln
			lanes = append(lanes, ln)
		}
		ln.items = append(ln.items, i)
	}
	results := make([]error, len(ds))
	started := make([]bool, len(ds))
	var wg sync.WaitGroup
	for _, ln := range lanes {
		slices.SortStableFunc(ln.items, func(a, b int) int { return ds[b].Attempts - ds[a].Attempts })
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.runLane(ctx, ds, ln, results, started)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		// Shutting down: attempts cut short are not the receiver's fault;
		// leave them pending for the next start.
		return 0, false, ctx.Err()
	}
	// The whole pass is settled in one commit: one disk sync per pass,
	// not one per delivery (a receiver that is down would otherwise cost
	// a sync per pending delivery at every backoff step). Should the
	// commit fail, the pass's deliveries stay pending as they were and
	// are attempted again: delivery is at least once. Logs and counters
	// follow the commit, so they never report verdicts that were not
	// kept.
	ss := make([]Settlement, 0, len(ds))
	causes := make([]error, 0, len(ds)) // the attempt's error; nil for deferred ones
	type deferral struct {
		hook    string
		n       int
		retryAt time.Time
	}
	var deferrals []deferral
	for _, ln := range lanes {
		// Deferred deliveries follow the failure that said the receiver
		// is unavailable; if that one was given up, they come back after
		// the shortest backoff.
		retryAt := now.Add(s.opts.MinBackoff)
		for _, i := range ln.items {
			if started[i] {
				st := s.verdict(ds[i], results[i])
				if st.Verdict == Retry && receiverUnavailable(results[i]) {
					retryAt = st.Next
				}
				ss, causes = append(ss, st), append(causes, results[i])
			}
		}
		n := 0
		for _, i := range ln.items {
			if !started[i] {
				ss, causes = append(ss, Settlement{Delivery: ds[i], Verdict: Retry, Next: retryAt}), append(causes, nil)
				n++
			}
		}
		if n > 0 {
			deferrals = append(deferrals, deferral{ds[ln.items[0]].HookID, n, retryAt})
		}
	}
	if len(ss) == 0 {
		return len(ds), more, nil // nothing to write (every due entry was damaged)
	}
	if err := s.l.st.AuditSettle(ctx, ss); err != nil {
		return len(ds), more, fmt.Errorf("recording the outcome of %d deliveries (attempted again on the next pass): %w", len(ss), err)
	}
	for i, st := range ss {
		s.report(st, causes[i])
	}
	for _, d := range deferrals {
		s.l.errLog.Warn("audit webhook deliveries deferred: receiver unavailable", "hook_id", d.hook,
			"url", s.hookURL(d.hook), "deferred", d.n, "retry_at", d.retryAt)
	}
	return len(ds), more, nil
}

// runLane attempts a webhook's deliveries in order and starts no more
// once one says the receiver is unavailable. The first goes alone, as a
// probe; once it has an answer, up to Concurrency run at once.
func (s *sender) runLane(ctx context.Context, ds []Delivery, ln *lane, results []error, started []bool) {
	try := func(i int) {
		defer func() {
			if p := recover(); p != nil {
				results[i] = fmt.Errorf("panic: %v", p)
			}
			if receiverUnavailable(results[i]) {
				ln.down.Store(true)
			}
		}()
		results[i] = s.attempt(ctx, ds[i])
	}
	started[ln.items[0]] = true
	try(ln.items[0])
	sem := make(chan struct{}, s.opts.Concurrency)
	var wg sync.WaitGroup
	for _, i := range ln.items[1:] {
		sem <- struct{}{}
		if ln.down.Load() || ctx.Err() != nil {
			<-sem
			break
		}
		started[i] = true
		wg.Add(1)
		go func() {
			defer func() {
				<-sem
				wg.Done()
			}()
			try(i)
		}()
	}
	wg.Wait()
}

// attempt POSTs the row to the webhook once. Failures that say the
// receiver is unavailable are unavailableErrors.
func (s *sender) attempt(ctx context.Context, d Delivery) error {
	h := s.l.hookByID[d.HookID]
	if h == nil {
		// Every delivery to it fails alike: one per backoff step is enough.
		return unavailableError{fmt.Errorf("webhook %s is not configured in this instance", d.HookID)}
	}
	if d.Row.ID == "" {
		return errRowGone
	}
	body, err := d.Row.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encoding row: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Sigra-Webhook/1")
	req.Header.Set(EventIDHeader, d.Row.ID)
	req.Header.Set(hmacsig.Header, hmacsig.Sign(h.secret, s.l.clk.Now(), body))
	resp, err := s.client.Do(req)
	if err != nil {
		// The error goes to logs, the outbox and the admin API: it names
		// the URL as RedactURL shows it (net/url hides only a password).
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = RedactURL(h.url)
		}
		return unavailableError{err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c <= 299:
		return nil
	case c >= 500 || c == http.StatusTooManyRequests || c == http.StatusRequestTimeout:
		return unavailableError{fmt.Errorf("receiver answered %s", resp.Status)}
	default:
		// The receiver is up and turned this delivery down.
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
}

// verdict turns the outcome of an attempt into its settlement.
func (s *sender) verdict(d Delivery, res error) Settlement {
	if res == nil || errors.Is(res, errRowGone) {
		return Settlement{Delivery: d, Verdict: Delivered}
	}
	now := s.l.clk.Now()
	d.Attempts++
	d.LastError = truncate(res.Error(), 512)
	d.UpdatedAt = now
	if d.Attempts >= s.opts.MaxAttempts {
		return Settlement{Delivery: d, Verdict: Dead}
	}
	return Settlement{Delivery: d, Verdict: Retry, Next: now.Add(s.backoff(d.Attempts))}
}

// report logs and counts a settlement the store has kept; cause is the
// attempt's error, nil for a delivered or deferred one.
func (s *sender) report(st Settlement, cause error) {
	d := st.Delivery
	switch {
	case st.Verdict == Delivered && cause == nil:
		s.delivered.Add(1)
	case st.Verdict == Delivered:
		s.l.errLog.Warn("audit webhook delivery dropped: row pruned", "row_id", d.RowID, "hook_id", d.HookID)
	case cause == nil:
		// Deferred, unattempted: logged once for its webhook.
	case st.Verdict == Dead:
		s.failures.Add(1)
		s.l.errLog.Error("audit webhook delivery dead", "row_id", d.RowID, "hook_id", d.HookID,
			"url", s.hookURL(d.HookID), "attempts", d.Attempts, "error", d.LastError)
	default:
		s.failures.Add(1)
		s.l.errLog.Warn("audit webhook delivery failed", "row_id", d.RowID, "hook_id", d.HookID,
			"url", s.hookURL(d.HookID), "attempts", d.Attempts, "error", d.LastError, "retry_at", st.Next)
	}
}

// backoff is the delay after the n-th failed attempt: MinBackoff doubled
// n-1 times, capped at MaxBackoff, then jittered to between half and all
// of it so that receivers coming back are not hit by every sender at once.
func (s *sender) backoff(n int) time.Duration {
	d := s.opts.MinBackoff
	for i := 1; i < n && d < s.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.opts.MaxBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}

func (s *sender) hookURL(id string) string {
	if h := s.l.hookByID[id]; h != nil {
		return RedactURL(h.url)
	}
	return ""
}

// DeadDeliveries lists up to limit deliveries given up after the retry
// limit, newest row first, with their rows and last errors. limit 0 means
// DefaultLimit; at most MaxLimit.
func (l *Log) DeadDeliveries(ctx context.Context, limit int) ([]Delivery, error) {
	limit, err := Query{Limit: limit}.limit()
	if err != nil {
		return nil, err
	}
	ds, err := l.st.AuditDeadDeliveries(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("audit: dead deliveries: %w", err)
	}
	for i := range ds {
		ds[i].URL = l.sender.hookURL(ds[i].HookID)
	}
	return ds, nil
}

// replayChunk bounds one transaction of ReplayDead.
const replayChunk = 1000

// ReplayDead puts dead deliveries back in the outbox, due now with a
// fresh retry schedule: every webhook's, or only those of the webhook
// hookID (a WebhookConfig.ID, as listed by DeadDeliveries). It returns
// how many it put back and wakes the sender. For operators, once a
// receiver that was down for longer than the retry schedule is back.
func (l *Log) ReplayDead(ctx context.Context, hookID string) (int, error) {
	if hookID != "" && l.hookByID[hookID] == nil {
		return 0, fmt.Errorf("%w: %q", ErrUnknownWebhook, hookID)
	}
	total := 0
	for {
		n, err := l.st.AuditReplayDead(ctx, hookID, l.clk.Now(), replayChunk)
		total += n
		if err != nil {
			return total, fmt.Errorf("audit: replaying dead deliveries: %w", err)
		}
		if n < replayChunk {
			break
		}
	}
	if total > 0 {
		l.poke()
	}
	return total, nil
}

// ErrUnknownWebhook is returned for a webhook id this Log does not have.
var ErrUnknownWebhook = errors.New("no such webhook")
