package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/ids"
)

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("audit: log closed")

// Options configure a Log. The zero value records rows, with no webhooks
// and no retention.
type Options struct {
	// Webhooks receive matching rows (see WebhookConfig). Validated by New.
	Webhooks []WebhookConfig
	// Delivery tunes the webhook sender.
	Delivery DeliveryOptions
	// Retention, when positive, makes Start run a loop that deletes rows
	// older than this (see RunRetention). Zero keeps rows forever.
	Retention time.Duration
	// RetentionEvery is how often that loop runs. Default 1h.
	RetentionEvery time.Duration
	// MaxBatch caps how many requests share one commit: rows, or the
	// rows of one RecordAllWith. Default 1024.
	MaxBatch int
	// ErrorLog receives operational messages: failed deliveries, retention
	// runs, recovered panics. They are kept apart from the row logger so
	// that it carries rows only. Default: slog.Default().
	ErrorLog *slog.Logger
	// WakeAt returns a channel that receives once the clock has reached t,
	// at once if it already has. The default is a real timer for t minus
	// the clock's Now. Tests pair it with a fake clock to drive backoff and
	// retention without sleeping; taking a deadline rather than a duration
	// leaves no race between reading the clock and arming the timer.
	WakeAt func(t time.Time) <-chan time.Time
}

// Log is the auditor: it records rows durably and fans them out. Create it
// with New, start its background work with Start, stop it with Close. All
// methods are safe for concurrent use.
type Log struct {
	rowLog *slog.Logger
	errLog *slog.Logger
	clk    clock.Clock
	st     Store
	opts   Options
	wakeAt func(time.Time) <-chan time.Time
	newID  func() uuid.UUID

	hooks    []*hook
	hookByID map[string]*hook
	sender   *sender

	reqs          chan *request
	fan           chan []Row
	quit          chan struct{}
	committerDone chan struct{}
	fanDone       chan struct{}

	closeMu sync.RWMutex
	closed  bool

	startMu  sync.Mutex
	started  bool
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	subMu sync.RWMutex
	subs  map[*Subscription]struct{}

	dropped atomic.Uint64
}

// request is one Record call: one entry, or for RecordAllWith several,
// the change on the first. A request's entries go into a commit
// together or not at all.
type request struct {
	es   []Entry
	done chan error // the commit's answer: nil once stored
}

// New returns a Log that records into st. rows receives every recorded
// row as one structured entry (message "audit", the row's fields as
// attributes, metadata as a group); the Caddy glue passes the
// "sigra.audit" logger. A nil logger discards. clk stamps rows and
// schedules retries. New fails only on invalid options (webhook URLs,
// secrets, patterns).
func New(rows *slog.Logger, clk clock.Clock, st Store, opts Options) (*Log, error) {
	if st == nil {
		return nil, errors.New("audit: nil store")
	}
	if clk == nil {
		clk = clock.Real{}
	}
	if rows == nil {
		rows = slog.New(slog.DiscardHandler)
	}
	hooks, err := newHooks(opts.Webhooks)
	if err != nil {
		return nil, err
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.RetentionEvery <= 0 {
		opts.RetentionEvery = time.Hour
	}
	if opts.Retention < 0 {
		return nil, fmt.Errorf("audit: negative retention %s", opts.Retention)
	}
	l := &Log{
		rowLog:        rows,
		errLog:        opts.ErrorLog,
		clk:           clk,
		st:            st,
		opts:          opts,
		wakeAt:        opts.WakeAt,
		newID:         ids.NewV7,
		hooks:         hooks,
		hookByID:      make(map[string]*hook, len(hooks)),
		reqs:          make(chan *request, opts.MaxBatch),
		fan:           make(chan []Row, 1024),
		quit:          make(chan struct{}),
		committerDone: make(chan struct{}),
		fanDone:       make(chan struct{}),
		subs:          map[*Subscription]struct{}{},
	}
	if l.errLog == nil {
		l.errLog = slog.Default()
	}
	if l.wakeAt == nil {
		l.wakeAt = func(t time.Time) <-chan time.Time { return time.After(t.Sub(l.clk.Now())) }
	}
	for _, h := range hooks {
		l.hookByID[h.id] = h
	}
	l.sender = newSender(l, opts.Delivery)
	go l.commitLoop()
	go l.fanLoop()
	return l, nil
}

// Record validates r, fills its ID (a new UUIDv7) and OccurredAt (the
// clock) when empty, and stores it durably together with a pending
// delivery for every matching webhook. It returns once the row is
// committed (nil), or with the error that prevented it: ErrInvalidRow for
// a bad row, ErrClosed after Close, a wrapped storage error. Recording a
// row whose id and occurred_at are already stored succeeds and changes
// nothing.
//
// ctx only keeps a row out: if it has ended, or ends while the row waits
// for room in the queue, Record returns its error and nothing is stored.
// Once queued, Record waits for the commit and says how it went, so an
// error always means the row is not stored. After the commit, the row
// reaches the logger and subscribers asynchronously, in commit order.
func (l *Log) Record(ctx context.Context, r Row) error {
	_, err := l.record(ctx, []Row{r}, nil)
	return err
}

// RecordAll is Record for rows that go together (a failure and the ban
// it started): one request, stored in one commit, or none of them.
func (l *Log) RecordAll(ctx context.Context, rows []Row) error {
	_, err := l.record(ctx, rows, nil)
	return err
}

// RecordRow is Record that also returns the row as stored (with its id and
// time filled in and its fields normalised).
func (l *Log) RecordRow(ctx context.Context, r Row) (Row, error) {
	rows, err := l.record(ctx, []Row{r}, nil)
	if err != nil {
		return Row{}, err
	}
	return rows[0], nil
}

// RecordWith is Record for a row and the change it tells of, made in
// one transaction of the store (Entry.With): both are stored or neither,
// even if the process dies, where a row written before its change (or
// after it) is left alone by a crash in between. change runs on the
// committer, with the store's write transaction open: nothing slow
// (hashing a password), and nothing that records. It may run more than
// once (a batch that fails is committed again, without the entry to
// blame where the store names it, row by row where it does not), each
// time in a new transaction. Its error keeps the row out too, and is
// returned wrapped.
func (l *Log) RecordWith(ctx context.Context, r Row, change func(tx any) error) error {
	return l.RecordAllWith(ctx, []Row{r}, change)
}

// RecordAllWith is RecordWith for a change that several rows tell of
// (a second factor passed, a recovery code spent on it, and the sign-in
// it completed): the rows and the change are stored in one transaction,
// or none of them.
func (l *Log) RecordAllWith(ctx context.Context, rows []Row, change func(tx any) error) error {
	if change == nil {
		return fmt.Errorf("%w: recording a change without the change", ErrInvalidRow)
	}
	if len(rows) == 0 {
		return fmt.Errorf("%w: recording a change without a row", ErrInvalidRow)
	}
	_, err := l.record(ctx, rows, change)
	return err
}

// record queues rows as one request, with on the first, and waits for
// its commit. It returns the rows as stored.
func (l *Log) record(ctx context.Context, rows []Row, with func(tx any) error) ([]Row, error) {
	rows = slices.Clone(rows)
	req := &request{es: make([]Entry, len(rows)), done: make(chan error, 1)}
	for i := range rows {
		r := &rows[i]
		pos, err := r.normalize(l.newID, l.clk.Now())
		if err != nil {
			return nil, err
		}
		js, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("audit: encoding %s: %w", r.Action, err)
		}
		var hookIDs []string
		for _, h := range l.hooks {
			if matchAny(h.patterns, r.Action) {
				hookIDs = append(hookIDs, h.id)
			}
		}
		req.es[i] = Entry{Row: *r, Pos: pos, JSON: js, Hooks: hookIDs, DueAt: l.clk.Now()}
	}
	if with != nil {
		// The change goes with the first row; the others get one that
		// does nothing, so that a store refuses each of them too if it
		// holds it already (a row stored before cannot say whether the
		// change was made with it).
		for i := range req.es {
			req.es[i].With = noChange
		}
		req.es[0].With = with
	}
	// The answer must say what happened to the rows: an ended ctx keeps
	// them out only before they are queued (checked first, as a select
	// with both ready picks at random); once queued, their fate is the
	// commit's, which always answers, so it is waited for.
	name := func() string {
		if len(rows) == 1 {
			return rows[0].Action + " " + rows[0].ID
		}
		return fmt.Sprintf("%s %s and %d more", rows[0].Action, rows[0].ID, len(rows)-1)
	}
	notRecorded := func() ([]Row, error) {
		return nil, fmt.Errorf("audit: %s not recorded: %w", name(), ctx.Err())
	}
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return nil, ErrClosed
	}
	if ctx.Err() != nil {
		l.closeMu.RUnlock()
		return notRecorded()
	}
	select {
	case l.reqs <- req:
	case <-ctx.Done():
		l.closeMu.RUnlock()
		return notRecorded()
	}
	l.closeMu.RUnlock()
	if err := <-req.done; err != nil {
		return nil, fmt.Errorf("audit: recording %s: %w", name(), err)
	}
	return rows, nil
}

// noChange is the change of a row that comes with another's
// (RecordAllWith).
func noChange(any) error { return nil }

// commitLoop is the group commit: it takes every request waiting, up to
// MaxBatch, commits them in one transaction, answers them, and hands the
// new rows to the fan-out. While a commit runs, the next batch gathers, so
// the batch size follows the load with no added delay.
func (l *Log) commitLoop() {
	defer close(l.committerDone)
	defer close(l.fan)
	batch := make([]*request, 0, l.opts.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-l.quit:
			// Close holds no more senders: drain what is queued, then stop.
			for {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
					if len(batch) == l.opts.MaxBatch {
						l.commit(batch)
						batch = batch[:0]
					}
				default:
					if len(batch) > 0 {
						l.commit(batch)
					}
					return
				}
			}
		}
	gather:
		for len(batch) < l.opts.MaxBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		l.commit(batch)
	}
}

func (l *Log) commit(batch []*request) {
	inserted, err := l.appendBatch(batch)
	if err != nil && len(batch) > 1 {
		if rest, refused, ins, ok := l.narrow(batch, err); ok {
			l.answer(rest, ins, nil)
			for _, r := range refused {
				r.req.done <- r.err
			}
			return
		}
		// One bad entry must not sink the others: retry them one by one.
		for _, r := range batch {
			l.commit([]*request{r})
		}
		return
	}
	l.answer(batch, inserted, err)
}

// maxNarrow is how many entries the store may name (EntryError) in one
// batch before the log gives up narrowing it and commits row by row.
const maxNarrow = 3

type refusal struct {
	req *request
	err error
}

// narrow commits batch again without the requests whose entries the
// store names as keeping it out (a refused change), one at a time, up
// to maxNarrow. It reports ok when what is left committed: the refusals
// stand then, as they were judged beside changes that are now stored.
// Otherwise (the store named nothing, or too many, or what was left
// failed) the caller goes request by request, which judges every one
// again on its own.
func (l *Log) narrow(batch []*request, err error) (rest []*request, refused []refusal, inserted [][]bool, ok bool) {
	rest = batch
	for range maxNarrow {
		var one *EntryError
		k := -1
		if errors.As(err, &one) {
			k = requestOf(rest, one.Index)
		}
		if k < 0 || len(rest) == 1 {
			return nil, nil, nil, false
		}
		refused = append(refused, refusal{rest[k], err})
		rest = slices.Delete(slices.Clone(rest), k, k+1)
		if inserted, err = l.appendBatch(rest); err == nil {
			return rest, refused, inserted, true
		}
	}
	return nil, nil, nil, false
}

// requestOf is the index in batch of the request that holds entry i of
// the batch's entries, or -1 if there is no such entry.
func requestOf(batch []*request, i int) int {
	if i < 0 {
		return -1
	}
	for k, r := range batch {
		if i < len(r.es) {
			return k
		}
		i -= len(r.es)
	}
	return -1
}

// appendBatch stores the entries of batch in one call, and returns for
// each request whether each of its rows is new.
func (l *Log) appendBatch(batch []*request) ([][]bool, error) {
	var entries []Entry
	for _, r := range batch {
		entries = append(entries, r.es...)
	}
	flat, err := l.append(entries)
	if err != nil {
		return nil, err
	}
	inserted := make([][]bool, len(batch))
	for k, r := range batch {
		inserted[k], flat = flat[:len(r.es)], flat[len(r.es):]
	}
	return inserted, nil
}

// answer tells every request of a committed (or, err set, failed) batch
// its fate, and hands the new rows to the fan-out.
func (l *Log) answer(batch []*request, inserted [][]bool, err error) {
	var fresh []Row
	for k, r := range batch {
		r.done <- err
		if err != nil {
			continue
		}
		for i, e := range r.es {
			if inserted[k][i] {
				fresh = append(fresh, e.Row)
				l.sender.poke(e.Hooks)
			}
		}
	}
	if len(fresh) > 0 {
		l.fan <- fresh
	}
}

// append calls the store, turning a panic into an error.
func (l *Log) append(entries []Entry) (inserted []bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store panicked: %v", p)
			l.errLog.Error("audit store panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	inserted, err = l.st.AppendAudit(context.Background(), entries)
	if err == nil && len(inserted) != len(entries) {
		err = fmt.Errorf("store answered %d results for %d rows", len(inserted), len(entries))
	}
	return inserted, err
}

// fanLoop hands committed rows to the logger and the subscribers, in
// commit order, off the commit path.
func (l *Log) fanLoop() {
	defer close(l.fanDone)
	for rows := range l.fan {
		for _, r := range rows {
			l.logRow(r)
			l.publish(r)
		}
	}
}

func (l *Log) logRow(r Row) {
	defer func() {
		if p := recover(); p != nil {
			l.errLog.Error("audit logger panicked", "panic", p)
		}
	}()
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("id", r.ID),
		slog.String("occurred_at", r.OccurredAt.Format(TimeLayout)),
		slog.String("action", r.Action),
		slog.String("actor_id", r.ActorID),
		slog.String("actor_type", r.ActorType),
		slog.String("subject_id", r.SubjectID),
		slog.String("org_id", r.OrgID),
		slog.String("ip", r.IP),
		slog.String("user_agent", r.UserAgent),
		slog.String("request_id", r.RequestID),
		slog.String("outcome", r.Outcome),
	)
	if len(r.Metadata) > 0 {
		keys := make([]string, 0, len(r.Metadata))
		for k := range r.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		meta := make([]any, 0, len(keys))
		for _, k := range keys {
			meta = append(meta, slog.String(k, r.Metadata[k]))
		}
		attrs = append(attrs, slog.Group("metadata", meta...))
	}
	l.rowLog.LogAttrs(context.Background(), slog.LevelInfo, "audit", attrs...)
}

// Start launches the background work: the webhook sender (always, so that
// deliveries left pending by an earlier run resume) and, when
// Options.Retention is set, the retention loop. Both stop when ctx ends or
// Close is called, and survive panics. Calling Start again does nothing.
//
// During a config reload the old and the new Log may run side by side on
// one store; both send, and a delivery may reach a receiver twice, as at
// least once delivery allows (receivers dedupe on the body's signed id).
func (l *Log) Start(ctx context.Context) {
	l.startMu.Lock()
	defer l.startMu.Unlock()
	if l.started || l.isClosed() {
		return
	}
	l.started = true
	ctx, l.bgCancel = context.WithCancel(ctx)
	l.bg.Add(1)
	go func() {
		defer l.bg.Done()
		l.sender.run(ctx)
	}()
	if l.opts.Retention > 0 {
		l.bg.Add(1)
		go func() {
			defer l.bg.Done()
			l.RunRetention(ctx, l.opts.RetentionEvery, l.opts.Retention)
		}()
	}
}

func (l *Log) isClosed() bool {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	return l.closed
}

// Close stops the background work, commits the rows already handed to
// Record, delivers them to the logger and subscribers, and closes every
// subscription. It does not close the Store. Later Records fail with
// ErrClosed. Close is idempotent.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return nil
	}
	l.closed = true
	l.closeMu.Unlock()

	l.startMu.Lock()
	if l.bgCancel != nil {
		l.bgCancel()
	}
	l.startMu.Unlock()
	l.bg.Wait()

	close(l.quit)
	<-l.committerDone
	<-l.fanDone

	l.subMu.Lock()
	for s := range l.subs {
		delete(l.subs, s)
		close(s.c)
	}
	l.subMu.Unlock()
	return nil
}

// Stats are counters for metrics (sigra_audit_*).
type Stats struct {
	// Pending is the outbox depth: deliveries not yet made.
	Pending int
	// Dead counts deliveries given up after the retry limit.
	Dead int
	// Delivered counts successful deliveries since New.
	Delivered uint64
	// Failures counts failed delivery attempts since New (in
	// DeliveryOptions.Failures, when set).
	Failures uint64
	// Dropped counts rows a subscriber missed because its buffer was full.
	Dropped uint64
	// Down counts the configured webhooks whose receiver was
	// unavailable at their last attempt and that are backing off.
	Down int
}

// WebhooksDown counts the configured webhooks whose receiver was
// unavailable at their last attempt and that are backing off
// (Stats.Down), without reading the store.
func (l *Log) WebhooksDown() int { return l.sender.downCount() }

// Stats reads the outbox counts from the store and the counters of this
// Log. If the store cannot be read, the error says so and Pending and
// Dead are zero; the counters, kept in memory, are filled in all the
// same.
func (l *Log) Stats(ctx context.Context) (Stats, error) {
	s := Stats{
		Delivered: l.sender.delivered.Load(),
		Failures:  l.sender.failures.Load(),
		Dropped:   l.dropped.Load(),
		Down:      l.sender.downCount(),
	}
	var err error
	if s.Pending, s.Dead, err = l.st.AuditOutboxStats(ctx); err != nil {
		return s, fmt.Errorf("audit: outbox stats: %w", err)
	}
	return s, nil
}
