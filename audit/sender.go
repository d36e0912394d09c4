package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/sigra-auth/caddy-sigra/internal/hmacsig"
)

// DeliveryOptions tune the webhook sender. Zero fields take the defaults
// noted. With the defaults a delivery is tried 15 times over two to four
// hours (2s, 4s, 8s, … doubling up to 1h, each wait jittered to between
// half and all of it: 14 waits of at most 4.1 h in all, about 3.1 h on
// average) before it is given up as dead. While a receiver is unavailable, its webhook follows
// that schedule as a whole: one probe per step, and once 15 probes in a
// row have failed, its deliveries are given up together.
type DeliveryOptions struct {
	// Timeout bounds one attempt (connect, send, response headers and
	// body). Default 10s.
	Timeout time.Duration
	// MinBackoff is the delay after the first failure. Default 2s.
	MinBackoff time.Duration
	// MaxBackoff caps the delay between attempts. Default 1h.
	MaxBackoff time.Duration
	// MaxAttempts is the retry limit: after this many failed attempts a
	// delivery is dead, and so is every delivery waiting for a webhook
	// whose receiver has been unavailable for this many attempts in a
	// row. Default 15.
	MaxAttempts int
	// Concurrency is how many attempts to one webhook run at once; each
	// webhook has its own loop. Default 4.
	Concurrency int
	// Recheck is how often, in real time and without being woken, the
	// sender looks at every webhook's queue: during a config reload the
	// old Log may still queue deliveries that only the new one will send.
	// Default 1m.
	Recheck time.Duration
	// Client sends the requests. Default: a client that does not follow
	// redirects (a redirect is a failed attempt).
	Client *http.Client
	// Failures, when set, is where the sender counts failed attempts
	// (Stats.Failures): one counter shared by the logs that replace each
	// other keeps a count across them. Default: the log's own.
	Failures *atomic.Uint64
}

// EventIDHeader carries the row id on every webhook request (DESIGN's
// idempotency header). It is not signed: receivers drop the duplicates
// that at-least-once delivery allows by the body's id, which is signed,
// and refuse a request whose header differs from it.
const EventIDHeader = "Sigra-Event-Id"

// deliveryBatch is how many due deliveries one pass over a webhook's
// queue takes.
const deliveryBatch = 64

// deadChunk bounds the deliveries one transaction moves to or from the
// dead list (giving up on a webhook, ReplayDead). A variable for the tests
// of what a failure between chunks leaves.
var deadChunk = 1000

var errRowGone = errors.New("row no longer stored")

// sender delivers the outbox: one loop per webhook (a lane), each with
// its own queue in the store, its own wake-up and its own backoff, so
// that a receiver that is slow or down delays only its own deliveries.
type sender struct {
	l         *Log
	opts      DeliveryOptions
	client    *http.Client
	delivered atomic.Uint64
	failures  *atomic.Uint64 // opts.Failures

	// lanes are the configured webhooks', fixed at New.
	lanes map[string]*lane

	mu sync.Mutex
	// others are the lanes of webhooks no longer configured whose
	// deliveries are still pending: they fail ("not configured") on the
	// same schedule and end on the dead list. Bounded by the webhooks
	// that have deliveries in the store.
	others map[string]*lane
	// rescan asks run to look for such webhooks (after ReplayDead).
	rescan chan struct{}
}

// lane is one webhook's share of the sender.
type lane struct {
	hook string
	wake chan struct{} // new deliveries, or a replay
	// running is set while a loop serves the lane (others only; guarded
	// by sender.mu).
	running bool

	// What the lane knows of its receiver, in memory only: a restart or
	// a config reload starts again from a first probe.
	mu sync.Mutex
	// down counts the passes in a row that found the receiver
	// unavailable; 0 while it answers.
	down      int
	downSince time.Time // the first of them
	until     time.Time // no attempt before this while down, or after a failed pass
	lastErr   string    // the last unavailable answer
	// failedRow is the row of the last delivery that found the receiver
	// unavailable: later passes probe another, if another is due. It is
	// kept when the receiver answers again, so that an event it turns
	// away every time, due again after its own backoff, is not the probe
	// then: a failed probe looks like a receiver down, and would have it
	// tried again at the next pass, spending two attempts each time.
	failedRow string
	// failedOwn is when failedRow's own backoff would have it attempted
	// again (zero if it died): till then it sits out the passes that
	// have another delivery to probe with.
	failedOwn time.Time
	// failedPasses counts the passes in a row that failed (the outbox
	// unreadable, the outcome unrecorded); 0 after one that ran and did
	// not (a lane held back runs no pass), and after a replay.
	failedPasses int
}

func newLane(hook string) *lane { return &lane{hook: hook, wake: make(chan struct{}, 1)} }

func (ln *lane) poke() {
	select {
	case ln.wake <- struct{}{}:
	default:
	}
}

// isDown says whether the receiver was unavailable at the last attempt.
func (ln *lane) isDown() bool {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	return ln.down > 0
}

// downCount counts the configured webhooks whose receiver is down. A
// webhook no longer configured has no receiver to be down: its
// deliveries fail on the same schedule until dead, and show in the
// outbox's depth, but an operator who changed a URL is not told for
// hours that a receiver is down when every configured one is up.
func (s *sender) downCount() int {
	n := 0
	for _, ln := range s.lanes {
		if ln.isDown() {
			n++
		}
	}
	return n
}

// allLanes lists the lanes of the configured webhooks and of those no
// longer configured that have one.
func (s *sender) allLanes() []*lane {
	lanes := make([]*lane, 0, len(s.lanes))
	for _, ln := range s.lanes {
		lanes = append(lanes, ln)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.others {
		lanes = append(lanes, ln)
	}
	return lanes
}

// blockedUntil is when the lane may attempt again; a time in the past or
// zero means now.
func (ln *lane) blockedUntil() time.Time {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	return ln.until
}

// reset forgets the receiver's failures: it answered, or an operator
// replayed its deliveries. The row that last found it unavailable stays
// known (failedRow).
func (ln *lane) reset() {
	ln.mu.Lock()
	ln.down, ln.downSince, ln.until, ln.lastErr = 0, time.Time{}, time.Time{}, ""
	ln.mu.Unlock()
}

// clearFailedPasses starts the count of failed passes again: one went
// through, or an operator replayed the webhook's deliveries.
func (ln *lane) clearFailedPasses() {
	ln.mu.Lock()
	ln.failedPasses = 0
	ln.mu.Unlock()
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
	if o.Recheck <= 0 {
		o.Recheck = time.Minute
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Failures == nil {
		o.Failures = new(atomic.Uint64)
	}
	c := o.Client
	if c == nil {
		c = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	s := &sender{l: l, opts: o, client: c, failures: o.Failures, lanes: map[string]*lane{}, others: map[string]*lane{}, rescan: make(chan struct{}, 1)}
	if l != nil {
		for _, h := range l.hooks {
			s.lanes[h.id] = newLane(h.id)
		}
	}
	return s
}

// poke wakes the lanes of webhooks that were just given deliveries.
func (s *sender) poke(hooks []string) {
	for _, h := range hooks {
		if ln := s.lanes[h]; ln != nil {
			ln.poke()
		}
	}
}

// other returns the lane of a webhook that is not configured, making it
// if needed.
func (s *sender) other(hook string) *lane {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.otherLocked(hook)
}

func (s *sender) otherLocked(hook string) *lane {
	ln := s.others[hook]
	if ln == nil {
		ln = newLane(hook)
		s.others[hook] = ln
	}
	return ln
}

// run serves every lane until ctx ends: a loop per configured webhook,
// and one per webhook no longer configured that has deliveries pending,
// found at start, after a replay and every Recheck, when the configured
// lanes are woken too. It returns once every loop has.
func (s *sender) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	serve := func(ln *lane) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serve(ctx, ln)
		}()
	}
	for _, h := range s.l.hooks {
		serve(s.lanes[h.id])
	}
	recheck := time.NewTicker(s.opts.Recheck)
	defer recheck.Stop()
	for {
		var retry <-chan time.Time
		if err := s.adoptOthers(ctx, serve); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.l.errLog.Error("audit webhook outbox unreadable", "error", err)
			retry = s.l.wakeAt(s.l.clk.Now().Add(s.opts.MinBackoff))
		}
		select {
		case <-ctx.Done():
			return
		case <-s.rescan:
		case <-retry:
		case <-recheck.C:
			for _, ln := range s.lanes {
				ln.poke()
			}
		}
	}
}

// adoptOthers starts a loop for every webhook with pending deliveries
// that is not configured and not yet served.
func (s *sender) adoptOthers(ctx context.Context, serve func(*lane)) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	hooks, err := s.unconfigured(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hooks {
		if ln := s.otherLocked(h); !ln.running {
			ln.running = true
			serve(ln)
		}
	}
	return nil
}

// unconfigured lists the webhooks with pending deliveries that are no
// longer configured.
func (s *sender) unconfigured(ctx context.Context) ([]string, error) {
	hooks, err := s.l.st.AuditOutboxHooks(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(hooks, func(h string) bool { return s.lanes[h] != nil }), nil
}

// serve runs one lane: a pass over what is due, then a wait until the
// next delivery is due, the receiver's backoff ends, or Record enqueues
// one. The lane of a webhook no longer configured ends with its queue.
func (s *sender) serve(ctx context.Context, ln *lane) {
	var (
		armed time.Time // the deadline timer is set for
		timer <-chan time.Time
	)
	for {
		next, again, idle := s.step(ctx, ln)
		if ctx.Err() != nil {
			return
		}
		if again {
			continue
		}
		if idle && s.lanes[ln.hook] == nil && s.retire(ctx, ln) {
			return
		}
		switch {
		case next.IsZero():
			armed, timer = time.Time{}, nil
		case !next.Equal(armed): // a wake-up while waiting for the same time keeps its timer
			armed, timer = next, s.l.wakeAt(next)
		}
		select {
		case <-ctx.Done():
			return
		case <-ln.wake:
		case <-timer:
			armed = time.Time{}
		}
	}
}

// retire ends the loop of a webhook that is not configured once it has
// nothing pending. Under sender.mu, so that a rescan after a replay
// either sees the loop still running or starts a new one.
func (s *sender) retire(ctx context.Context, ln *lane) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok, err := s.l.st.AuditNextDelivery(ctx, ln.hook); err != nil || ok {
		return false
	}
	ln.running = false
	delete(s.others, ln.hook)
	return true
}

// step makes one pass over a lane and says when to come back: again
// means at once, a zero next means when woken; idle means nothing is
// pending.
func (s *sender) step(ctx context.Context, ln *lane) (next time.Time, again, idle bool) {
	defer func() {
		if p := recover(); p != nil {
			s.l.errLog.Error("audit webhook sender panicked", "hook_id", ln.hook, "panic", p, "stack", string(debug.Stack()))
			next, again, idle = s.holdAfterFailure(ln), false, false
		}
	}()
	held := s.l.clk.Now().Before(ln.blockedUntil())
	n, err := s.pass(ctx, ln) // nothing while the receiver backs off
	if err != nil {
		if ctx.Err() != nil {
			return s.l.clk.Now().Add(s.opts.MinBackoff), false, false
		}
		until := s.holdAfterFailure(ln)
		s.l.errLog.Error("audit webhook pass failed", "hook_id", ln.hook, "url", s.hookURL(ln.hook), "error", err, "retry_at", until)
		return until, false, false
	}
	if !held { // a pass ran, and went through
		ln.clearFailedPasses()
	}
	now := s.l.clk.Now()
	if until := ln.blockedUntil(); now.Before(until) {
		return until, false, false
	}
	if n == deliveryBatch {
		return time.Time{}, true, false
	}
	at, ok, err := s.l.st.AuditNextDelivery(ctx, ln.hook)
	if err != nil {
		if ctx.Err() == nil {
			s.l.errLog.Error("audit webhook outbox unreadable", "hook_id", ln.hook, "error", err)
		}
		return now.Add(s.opts.MinBackoff), false, false
	}
	if !ok {
		return time.Time{}, false, true
	}
	if !at.After(now) {
		return time.Time{}, true, false
	}
	return at, false, false
}

// holdAfterFailure holds a lane whose pass failed for a backoff that
// grows with each failed pass in a row, new deliveries notwithstanding.
// A pass whose outcome the store could not record (a full disk) sends
// the same deliveries again on the next one: at a fixed short interval,
// or at every new row, that would be a steady flood of duplicates for
// the receiver for as long as the disk stays full.
func (s *sender) holdAfterFailure(ln *lane) time.Time {
	now := s.l.clk.Now()
	ln.mu.Lock()
	defer ln.mu.Unlock()
	ln.failedPasses++
	if hold := now.Add(s.backoff(ln.failedPasses)); hold.After(ln.until) {
		ln.until = hold
	}
	return ln.until
}

// DeliverDue makes one delivery pass now over every webhook's queue
// (those configured, and those no longer configured that still have
// deliveries pending), the webhooks side by side, and returns how many
// deliveries the passes took. The background sender started by Start
// runs such passes in a loop per webhook; the CLI and tests may call it
// directly (alongside a running sender, a delivery may then be attempted
// twice: delivery is at least once either way).
//
// A pass over one webhook takes up to 64 of its deliveries that are due
// on the Log's clock, attempts them in order, the first alone as a probe,
// then up to Concurrency at once, and records their outcomes in one
// commit. The delivery with the most attempts goes first. A failed
// attempt is backed off by itself when the receiver answered: another
// 4xx, or a redirect, which is not followed, fails that delivery alone;
// the receiver is up, and an event it rejects does not hold back the
// others. A failure that says the receiver itself is unavailable (no
// connection, a timeout, or a 5xx, 429 or 408 answer) stops the pass:
// the webhook is then backed off as a whole, in memory, for as long as a
// delivery would be after that many failures, and its deliveries not
// attempted are left as they are in the outbox, unwritten. Each backoff
// step costs one probe, always the same delivery, and holds up no other
// webhook. The probes count against the webhook: once MaxAttempts of them
// in a row have failed, every delivery due to it is given up as dead,
// and so are those that come due while it stays down, at each further
// failed probe; an answer ends the backoff. Outbox entries the store
// cannot read (ErrDamagedDelivery) are logged, and the pass goes on
// without them.
func (l *Log) DeliverDue(ctx context.Context) (int, error) { return l.sender.passAll(ctx) }

func (s *sender) passAll(ctx context.Context) (int, error) {
	lanes := make([]*lane, 0, len(s.l.hooks))
	for _, h := range s.l.hooks {
		lanes = append(lanes, s.lanes[h.id])
	}
	hooks, err := s.unconfigured(ctx)
	if err != nil {
		return 0, fmt.Errorf("audit: listing webhooks with pending deliveries: %w", err)
	}
	for _, h := range hooks {
		lanes = append(lanes, s.other(h))
	}
	taken := make([]int, len(lanes))
	errs := make([]error, len(lanes))
	var wg sync.WaitGroup
	for i, ln := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					errs[i] = fmt.Errorf("webhook %s: panic: %v", ln.hook, p)
				}
			}()
			taken[i], errs[i] = s.pass(ctx, ln)
		}()
	}
	wg.Wait()
	n := 0
	for _, t := range taken {
		n += t
	}
	return n, errors.Join(errs...)
}

// unavailableError is a failed attempt that says the receiver, not the
// delivery, is the problem: it could not be reached or did not answer in
// time, answered 5xx, 429 (too many requests) or 408 (request timeout),
// or is no longer configured. The pass starts no more attempts.
type unavailableError struct{ err error }

func (e unavailableError) Error() string { return e.err.Error() }
func (e unavailableError) Unwrap() error { return e.err }

func receiverUnavailable(err error) bool {
	var u unavailableError
	return errors.As(err, &u)
}

// due reads up to limit of ln's deliveries due at now. Entries the store
// cannot read it takes out of the outbox (ErrDamagedDelivery): they are
// logged, and the rest go on.
func (s *sender) due(ctx context.Context, ln *lane, now time.Time, limit int) ([]Delivery, error) {
	ds, err := s.l.st.AuditDeliveriesDue(ctx, ln.hook, now, limit)
	if errors.Is(err, ErrDamagedDelivery) {
		s.l.errLog.Error("audit webhook outbox entries unreadable, taken out of the outbox", "hook_id", ln.hook, "error", err)
		return ds, nil
	}
	return ds, err
}

// pass makes one pass over a lane (see DeliverDue) and returns how many
// deliveries it took.
func (s *sender) pass(ctx context.Context, ln *lane) (int, error) {
	now := s.l.clk.Now()
	if now.Before(ln.blockedUntil()) {
		return 0, nil
	}
	ds, err := s.due(ctx, ln, now, deliveryBatch)
	if err != nil {
		return 0, fmt.Errorf("reading due deliveries: %w", err)
	}
	if len(ds) == 0 {
		return 0, nil
	}
	// The most attempted first, so that retries are not starved by new
	// deliveries; but the probe, the first, is the least attempted (the
	// newest of those), and never the one that last found the receiver
	// unavailable while another is due. A receiver that is down fails
	// every probe alike; one that answers a 5xx to some events alone
	// (its parser chokes on a user agent a client chose, say) then
	// takes one of the others, and so ends the webhook's backoff,
	// instead of being probed with those events, which have failed
	// before, until the retry schedule ends and every delivery is given
	// up. They keep their own retry schedules, and die alone once their
	// own attempts run out.
	//
	// Nor is that one attempted after the probe, in a pass with others,
	// until its own backoff is over: alone, it was the probe, whose
	// failure is taken for the receiver's, and was kept due; attempted
	// again at once beside the next probe, an event the receiver turns
	// away every time would spend two attempts per step of its schedule
	// and die in half the time. Once the receiver has answered, it waits
	// out its own backoff. Should the receiver have been down after all,
	// it goes that much later than the others held back.
	slices.SortStableFunc(ds, func(a, b Delivery) int { return b.Attempts - a.Attempts })
	ln.mu.Lock()
	failedRow, failedOwn := ln.failedRow, ln.failedOwn
	ln.mu.Unlock()
	var sitOut *Delivery
	if i := slices.IndexFunc(ds, func(d Delivery) bool { return d.RowID == failedRow }); i >= 0 && len(ds) > 1 && now.Before(failedOwn) {
		d := ds[i]
		sitOut = &d
		ds = slices.Delete(ds, i, i+1)
	}
	probe := len(ds) - 1
	if probe > 0 && ds[probe].RowID == failedRow {
		probe--
	}
	ds = append(append([]Delivery{ds[probe]}, ds[:probe]...), ds[probe+1:]...)
	results, started := s.attemptAll(ctx, ds)
	if ctx.Err() != nil {
		// Shutting down: attempts cut short are not the receiver's fault;
		// leave them pending for the next start.
		return 0, ctx.Err()
	}
	var (
		ss          = make([]Settlement, 0, len(ds))
		causes      = make([]error, 0, len(ds))
		unavailable error
		failed      string    // the row of the delivery that said so
		failedNext  time.Time // when its own backoff would have it attempted
		answered    bool
		held        []heldBack
	)
	for i, d := range ds {
		if !started[i] {
			continue // left as it is: the receiver's backoff holds it
		}
		st := s.verdict(d, results[i])
		if receiverUnavailable(results[i]) {
			unavailable, failed, failedNext = results[i], d.RowID, time.Time{}
			if st.Verdict == Retry {
				failedNext = st.Next
				// It keeps its place in the queue: while the receiver is
				// down, the webhook's backoff, not its due time, says
				// when the next probe goes.
				held = append(held, heldBack{len(ss), st.Next})
				st.Next = d.DueAt
			}
		} else {
			answered = true
		}
		ss, causes = append(ss, st), append(causes, results[i])
	}
	if answered {
		// The receiver is up, and turned these away (a 5xx to one event
		// its parser chokes on, say): each waits its own backoff, or,
		// the webhook's backoff starting afresh, it would be tried at
		// every pass and spend its attempts in seconds.
		for _, h := range held {
			ss[h.i].Next = h.own
		}
	}
	// What the pass says of the receiver holds whether or not the commit
	// below succeeds. A receiver that answered is up, even if it then
	// turned some away (429, 5xx) or a later attempt timed out: the
	// webhook starts its backoff afresh rather than count towards giving
	// up, which only a receiver that answers nothing can bring about.
	if answered {
		ln.reset()
	}
	if unavailable != nil {
		s.laneDown(ln, unavailable, failed, failedNext, len(ds)-len(ss))
	}
	settle := ss
	if answered && sitOut != nil {
		// Its own backoff, with the attempt it made as the probe.
		settle = append(ss[:len(ss):len(ss)], Settlement{Delivery: *sitOut, Verdict: Retry, Next: failedOwn})
	}
	// The pass is settled in one commit: one disk sync per pass, not one
	// per delivery. Should the commit fail, the pass's deliveries stay
	// pending as they were and are attempted again: delivery is at least
	// once. Logs and counters follow the commit, so they never report
	// verdicts that were not kept.
	if err := s.l.st.AuditSettle(ctx, settle); err != nil {
		return len(ds), fmt.Errorf("recording the outcome of %d deliveries (attempted again on the next pass): %w", len(ss), err)
	}
	for i, st := range ss {
		s.report(st, causes[i])
	}
	if err := s.giveUpIfDead(ctx, ln, now); err != nil {
		return len(ds), err
	}
	return len(ds), nil
}

// heldBack is a settlement (at index i) of a delivery that found the
// receiver unavailable, and the due time its own backoff gives it.
type heldBack struct {
	i   int
	own time.Time
}

// laneDown backs a webhook off after a pass found its receiver
// unavailable: as long as a delivery would be after that many failures,
// from now, when the pass's attempts are over (a probe that timed out
// may have taken longer than the first steps).
func (s *sender) laneDown(ln *lane, cause error, row string, own time.Time, held int) {
	now := s.l.clk.Now()
	ln.mu.Lock()
	if ln.down == 0 {
		ln.downSince = now
	}
	ln.down++
	ln.until = now.Add(s.backoff(ln.down))
	ln.lastErr = Truncate(cause.Error(), 512)
	ln.failedRow, ln.failedOwn = row, own
	down, since, until := ln.down, ln.downSince, ln.until
	ln.mu.Unlock()
	s.l.errLog.Warn("audit webhook receiver unavailable: its deliveries wait", "hook_id", ln.hook,
		"url", s.hookURL(ln.hook), "failed_attempts", down, "down_since", since, "retry_at", until,
		"held_back", held, "error", cause)
}

// giveUpIfDead moves every delivery due to a webhook whose receiver has
// failed MaxAttempts probes in a row to the dead list, deadChunk per
// commit: the probes counted for all of them.
func (s *sender) giveUpIfDead(ctx context.Context, ln *lane, now time.Time) error {
	ln.mu.Lock()
	down, since, lastErr := ln.down, ln.downSince, ln.lastErr
	ln.mu.Unlock()
	if down < s.opts.MaxAttempts {
		return nil
	}
	why := fmt.Sprintf("receiver unavailable since %s, %d attempts in a row failed: %s", since.Format(time.RFC3339), down, lastErr)
	total := 0
	defer func() {
		if total > 0 {
			s.l.errLog.Error("audit webhook deliveries dead: receiver unavailable past the retry schedule", "hook_id", ln.hook,
				"url", s.hookURL(ln.hook), "deliveries", total, "down_since", since, "failed_attempts", down, "error", lastErr)
		}
	}()
	for {
		ds, err := s.due(ctx, ln, now, deadChunk)
		if err != nil {
			return fmt.Errorf("reading deliveries to give up: %w", err)
		}
		ss := make([]Settlement, len(ds))
		for i, d := range ds {
			d.Attempts = max(d.Attempts, s.opts.MaxAttempts)
			d.LastError, d.UpdatedAt = why, now
			ss[i] = Settlement{Delivery: d, Verdict: Dead}
		}
		if err := s.l.st.AuditSettle(ctx, ss); err != nil {
			return fmt.Errorf("giving up %d deliveries (tried again after the next probe): %w", len(ss), err)
		}
		total += len(ds)
		if len(ds) < deadChunk || ctx.Err() != nil {
			return nil
		}
	}
}

// attemptAll attempts ds in order, the first alone as a probe, then up
// to Concurrency at once, and starts no more once one says the receiver
// is unavailable. started[i] reports whether ds[i] was attempted.
func (s *sender) attemptAll(ctx context.Context, ds []Delivery) (results []error, started []bool) {
	results, started = make([]error, len(ds)), make([]bool, len(ds))
	var down atomic.Bool
	try := func(i int) {
		defer func() {
			if p := recover(); p != nil {
				results[i] = fmt.Errorf("panic: %v", p)
			}
			if receiverUnavailable(results[i]) {
				down.Store(true)
			}
		}()
		results[i] = s.attempt(ctx, ds[i])
	}
	started[0] = true
	try(0)
	sem := make(chan struct{}, s.opts.Concurrency)
	var wg sync.WaitGroup
	for i := 1; i < len(ds); i++ {
		sem <- struct{}{}
		if down.Load() || ctx.Err() != nil {
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
	return results, started
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
	d.LastError = Truncate(res.Error(), 512)
	d.UpdatedAt = now
	if d.Attempts >= s.opts.MaxAttempts {
		return Settlement{Delivery: d, Verdict: Dead}
	}
	return Settlement{Delivery: d, Verdict: Retry, Next: now.Add(s.backoff(d.Attempts))}
}

// report logs and counts a settlement the store has kept; cause is the
// attempt's error.
func (s *sender) report(st Settlement, cause error) {
	d := st.Delivery
	switch {
	case st.Verdict == Delivered && cause == nil:
		s.delivered.Add(1)
	case st.Verdict == Delivered:
		s.l.errLog.Warn("audit webhook delivery dropped: row pruned", "row_id", d.RowID, "hook_id", d.HookID)
	case st.Verdict == Dead:
		s.failures.Add(1)
		s.l.errLog.Error("audit webhook delivery dead", "row_id", d.RowID, "hook_id", d.HookID,
			"url", s.hookURL(d.HookID), "attempts", d.Attempts, "error", d.LastError)
	case receiverUnavailable(cause):
		s.failures.Add(1) // logged once for its webhook (laneDown)
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

// DeadPage is one page of dead deliveries (the admin API's
// {"deliveries": [...], "next_cursor": "..."}).
type DeadPage struct {
	Deliveries []Delivery `json:"deliveries"`
	// NextCursor continues the list; empty on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// DeadDeliveries lists up to limit deliveries given up after the retry
// limit, newest row first, with their rows and last errors, from cursor
// (DeadPage.NextCursor of the page before; "" for the first). limit 0
// means DefaultLimit; at most MaxLimit. A cursor not made here is
// ErrBadCursor.
func (l *Log) DeadDeliveries(ctx context.Context, cursor string, limit int) (DeadPage, error) {
	limit, err := Query{Limit: limit}.limit()
	if err != nil {
		return DeadPage{}, err
	}
	var before *Delivery
	if cursor != "" {
		d, err := decodeDeadCursor(cursor)
		if err != nil {
			return DeadPage{}, err
		}
		before = &d
	}
	// One more than asked says whether there is a next page.
	ds, err := l.st.AuditDeadDeliveries(ctx, before, limit+1)
	if err != nil {
		return DeadPage{}, fmt.Errorf("audit: dead deliveries: %w", err)
	}
	page := DeadPage{Deliveries: ds}
	if len(ds) > limit {
		page.Deliveries = ds[:limit]
		page.NextCursor = encodeDeadCursor(ds[limit-1])
	}
	for i := range page.Deliveries {
		page.Deliveries[i].URL = l.sender.hookURL(page.Deliveries[i].HookID)
	}
	return page, nil
}

// A dead-list cursor is base64url(version ‖ unix nanos ‖ row uuid ‖ hook
// id): the last delivery of its page. It grants nothing (the caller may
// list them all anyway). The hook id is kept as the 8 bytes its hex
// spells (WebhookConfig.ID), so every cursor that decodes names a key
// the store can seek to.
const (
	deadCursorVersion = 1
	deadCursorLen     = 1 + 8 + 16 + 8
)

func encodeDeadCursor(d Delivery) string {
	b := make([]byte, 0, deadCursorLen)
	b = append(b, deadCursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(d.OccurredAt.UnixNano()))
	id, _ := uuid.Parse(d.RowID)          // read from the store's key: valid
	hook, _ := hex.DecodeString(d.HookID) // likewise
	b = append(b, id[:]...)
	b = append(b, hook...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeDeadCursor(s string) (Delivery, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != deadCursorLen || b[0] != deadCursorVersion {
		return Delivery{}, ErrBadCursor
	}
	id, _ := uuid.FromBytes(b[9:25])
	return Delivery{
		OccurredAt: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))).UTC(),
		RowID:      id.String(),
		HookID:     hex.EncodeToString(b[25:]),
	}, nil
}

// ReplayDead puts dead deliveries back in the outbox, due now with a
// fresh retry schedule: every webhook's, or only those of the webhook
// hookID (a WebhookConfig.ID, as listed by DeadDeliveries). It returns
// how many it put back; the webhooks concerned forget their failures and
// are tried at once. For operators, once a receiver that was down for
// longer than the retry schedule is back.
func (l *Log) ReplayDead(ctx context.Context, hookID string) (int, error) {
	return l.replayDead(ctx, hookID, "")
}

// ReplayDeadTo is ReplayDead for the dead deliveries of the webhook from,
// which need not be configured any more, sent to the configured webhook
// to instead: a webhook whose URL changed (a new token in its query, say)
// is a new webhook, and what was queued for the old URL dies there. All
// of them go, whatever to's actions select.
func (l *Log) ReplayDeadTo(ctx context.Context, from, to string) (int, error) {
	if from == "" {
		return 0, fmt.Errorf("%w: name the webhook the deliveries are from", ErrUnknownWebhook)
	}
	if from == to {
		return l.replayDead(ctx, from, "")
	}
	if l.hookByID[to] == nil {
		return 0, fmt.Errorf("%w: %q (to); %s", ErrUnknownWebhook, to, l.configuredHooks())
	}
	return l.replayDead(ctx, from, to)
}

func (l *Log) replayDead(ctx context.Context, hookID, to string) (int, error) {
	if hookID != "" && to == "" && l.hookByID[hookID] == nil {
		return 0, fmt.Errorf("%w: %q; %s", ErrUnknownWebhook, hookID, l.configuredHooks())
	}
	total := 0
	var err error
	for {
		var n int
		n, err = l.st.AuditReplayDead(ctx, hookID, to, l.clk.Now(), deadChunk)
		total += n
		if err != nil {
			err = fmt.Errorf("audit: replaying dead deliveries (%d moved before the error): %w", total, err)
			break
		}
		if n < deadChunk {
			break
		}
	}
	// Each chunk is its own transaction: what moved before an error is
	// back in the outbox, and goes now.
	if total > 0 {
		if to != "" {
			hookID = to
		}
		l.sender.replayed(hookID)
	}
	return total, err
}

// replayed gives the webhook hookID (every webhook when it is empty) a
// fresh start after a replay, and looks for replayed deliveries to
// webhooks no longer configured.
func (s *sender) replayed(hookID string) {
	var lanes []*lane
	if hookID == "" {
		lanes = s.allLanes()
		select {
		case s.rescan <- struct{}{}:
		default:
		}
	} else if ln := s.lanes[hookID]; ln != nil {
		lanes = []*lane{ln}
	}
	for _, ln := range lanes {
		ln.reset()
		ln.clearFailedPasses()
		ln.mu.Lock()
		ln.failedOwn = time.Time{} // what was replayed goes now
		ln.mu.Unlock()
		ln.poke()
	}
}

// ErrUnknownWebhook is returned for a webhook id this Log does not have.
var ErrUnknownWebhook = errors.New("no such webhook")

// configuredHooks names the configured webhooks, id and redacted URL, for
// an error about an id that is not one of them: an id is drawn from its
// URL and shown nowhere else until a delivery to it dies.
func (l *Log) configuredHooks() string {
	if len(l.hooks) == 0 {
		return "no webhook is configured"
	}
	var b strings.Builder
	b.WriteString("configured: ")
	for i, h := range l.hooks {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", h.id, RedactURL(h.url))
	}
	return b.String()
}
