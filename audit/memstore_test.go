package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// memStore is the reference Store: everything in slices and maps, every
// query a scan. Its behaviour is what the bbolt backend must match.
type memStore struct {
	mu      sync.Mutex
	rows    map[Position]Row
	pending map[deliveryKey]Delivery
	dead    map[deliveryKey]Delivery
	appends int // AppendAudit calls, to observe batching

	// failAppend, when set, makes AppendAudit fail with it.
	failAppend error
	// failSettle, when set, makes AuditSettle fail with it.
	failSettle error
	// failStats, when set, makes AuditOutboxStats fail with it.
	failStats error
	// failReplay, when set, makes AuditReplayDead fail with it once it
	// has been called replayCalls times.
	failReplay  error
	replayCalls int
	// settles counts AuditSettle calls, to observe one commit per pass.
	settles int
	// panicPrune makes PruneAudit panic.
	panicPrune bool
	// beforeAppend, when set, runs at the start of every AppendAudit,
	// before the store's lock is taken (a commit held in progress).
	beforeAppend func()
}

type deliveryKey struct {
	hook string
	pos  Position
}

// locked runs f under the store's lock: for a test changing what the
// store does while a Log uses it.
func (m *memStore) locked(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f()
}

func newMemStore() *memStore {
	return &memStore{rows: map[Position]Row{}, pending: map[deliveryKey]Delivery{}, dead: map[deliveryKey]Delivery{}}
}

func keyOf(d Delivery) deliveryKey {
	pos, err := PositionOf(Row{ID: d.RowID, OccurredAt: d.OccurredAt})
	if err != nil {
		panic(err)
	}
	return deliveryKey{d.HookID, pos}
}

func (m *memStore) AppendAudit(ctx context.Context, entries []Entry) ([]bool, error) {
	if m.beforeAppend != nil {
		m.beforeAppend()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.appends++
	if m.failAppend != nil {
		return nil, m.failAppend
	}
	// Changes first: one that fails keeps every row of the call out (the
	// changes made before it are not undone; a test's own changes are).
	for i, e := range entries {
		if _, ok := m.rows[e.Pos]; ok && e.With != nil {
			return nil, &EntryError{Index: i, Err: fmt.Errorf("%w: stored already", ErrInvalidRow)}
		}
	}
	for i, e := range entries {
		if e.With != nil {
			if err := e.With(m); err != nil {
				return nil, &EntryError{Index: i, Err: err}
			}
		}
	}
	inserted := make([]bool, len(entries))
	for i, e := range entries {
		if _, ok := m.rows[e.Pos]; ok {
			continue
		}
		m.rows[e.Pos] = e.Row
		for _, h := range e.Hooks {
			m.pending[deliveryKey{h, e.Pos}] = Delivery{HookID: h, RowID: e.Row.ID, OccurredAt: e.Row.OccurredAt, DueAt: e.DueAt}
		}
		inserted[i] = true
	}
	return inserted, nil
}

// sorted returns the positions of all rows, oldest first.
func (m *memStore) sorted() []Position {
	ps := make([]Position, 0, len(m.rows))
	for p := range m.rows {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b Position) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	return ps
}

func (m *memStore) AuditTimeline(ctx context.Context, q StoreQuery) ([]Row, *Position, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.sorted()
	var out []Row
	for i := len(ps) - 1; i >= 0; i-- {
		p := ps[i]
		if q.Before != nil && !p.Less(*q.Before) {
			continue
		}
		r := m.rows[p]
		if !q.Match(r) {
			continue
		}
		if len(out) == q.Limit {
			last, _ := PositionOf(out[len(out)-1])
			return out, &last, nil
		}
		out = append(out, r)
	}
	return out, nil, nil
}

func (m *memStore) AuditRange(ctx context.Context, after *Position, since, until time.Time, limit int) ([]Row, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Row
	for _, p := range m.sorted() {
		if after != nil && !after.Less(p) {
			continue
		}
		if (!since.IsZero() && p.At.Before(since)) || (!until.IsZero() && !p.At.Before(until)) {
			continue
		}
		if len(out) == limit {
			break
		}
		out = append(out, m.rows[p])
	}
	return out, nil
}

func (m *memStore) PruneAudit(ctx context.Context, before time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.panicPrune {
		panic("prune exploded")
	}
	for k := range m.pending { // no further than the oldest row still pending
		if k.pos.At.Before(before) {
			before = k.pos.At
		}
	}
	n := 0
	for p := range m.rows {
		if p.At.Before(before) {
			delete(m.rows, p)
			n++
		}
	}
	for k := range m.dead {
		if k.pos.At.Before(before) {
			delete(m.dead, k)
		}
	}
	return n, nil
}

func (m *memStore) withRow(d Delivery) Delivery {
	d.Row = m.rows[keyOf(d).pos]
	return d
}

func (m *memStore) AuditDeliveriesDue(ctx context.Context, hookID string, now time.Time, limit int) ([]Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var due []Delivery
	for k, d := range m.pending {
		if k.hook == hookID && !d.DueAt.After(now) {
			due = append(due, m.withRow(d))
		}
	}
	slices.SortFunc(due, func(a, b Delivery) int {
		if c := a.DueAt.Compare(b.DueAt); c != 0 {
			return c
		}
		return a.OccurredAt.Compare(b.OccurredAt)
	})
	if len(due) > limit {
		due = due[:limit]
	}
	return due, nil
}

func (m *memStore) AuditNextDelivery(ctx context.Context, hookID string) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for k, d := range m.pending {
		if k.hook == hookID && (next.IsZero() || d.DueAt.Before(next)) {
			next = d.DueAt
		}
	}
	return next, !next.IsZero(), nil
}

func (m *memStore) AuditOutboxHooks(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var hooks []string
	for k := range m.pending {
		if !slices.Contains(hooks, k.hook) {
			hooks = append(hooks, k.hook)
		}
	}
	slices.Sort(hooks)
	return hooks, nil
}

// take removes the pending delivery d if it is still due at d.DueAt.
func (m *memStore) take(d Delivery) bool {
	k := keyOf(d)
	cur, ok := m.pending[k]
	if !ok || !cur.DueAt.Equal(d.DueAt) {
		return false
	}
	delete(m.pending, k)
	return true
}

func (m *memStore) AuditSettle(ctx context.Context, ss []Settlement) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settles++
	if m.failSettle != nil {
		return m.failSettle
	}
	for _, s := range ss {
		if err := s.Check(); err != nil {
			return err
		}
	}
	for _, s := range ss {
		d := s.Delivery
		if !m.take(d) {
			continue
		}
		d.Row = Row{}
		switch s.Verdict {
		case Retry:
			d.DueAt = s.Next
			m.pending[keyOf(d)] = d
		case Dead:
			m.dead[keyOf(d)] = d
		}
	}
	return nil
}

func (m *memStore) AuditDeadDeliveries(ctx context.Context, before *Delivery, limit int) ([]Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Newest row first, as the bbolt store keys them: time, row id, hook.
	order := func(a, b Delivery) int {
		if c := b.OccurredAt.Compare(a.OccurredAt); c != 0 {
			return c
		}
		if c := strings.Compare(b.RowID, a.RowID); c != 0 {
			return c
		}
		return strings.Compare(b.HookID, a.HookID)
	}
	var out []Delivery
	for _, d := range m.dead {
		if before == nil || order(*before, d) < 0 {
			out = append(out, m.withRow(d))
		}
	}
	slices.SortFunc(out, order)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memStore) AuditReplayDead(ctx context.Context, hookID, to string, now time.Time, limit int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failReplay != nil && m.replayCalls == 0 {
		return 0, m.failReplay
	}
	m.replayCalls--
	n := 0
	for k, d := range m.dead {
		if n == limit {
			break
		}
		if hookID != "" && d.HookID != hookID {
			continue
		}
		delete(m.dead, k)
		d.DueAt, d.Attempts = now, 0
		if to != "" {
			d.HookID = to
		}
		m.pending[keyOf(d)] = d
		n++
	}
	return n, nil
}

func (m *memStore) AuditOutboxStats(ctx context.Context) (int, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failStats != nil {
		return 0, 0, m.failStats
	}
	return len(m.pending), len(m.dead), nil
}

func (m *memStore) rowCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rows)
}

var _ Store = (*memStore)(nil)
