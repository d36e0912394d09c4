package audit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store is the persistence the audit log needs. The store package
// implements it for bbolt (store/bolt_audit.go); the in-memory fake in this
// package's tests is the reference for its semantics.
//
// Every method that writes must be durable (fsynced, or committed with
// synchronous replication) before it returns.
type Store interface {
	RowStore
	Outbox
}

// RowStore keeps rows and answers timeline queries.
type RowStore interface {
	// AppendAudit stores entries in one transaction: each row, its index
	// entries, and one pending delivery per id in Entry.Hooks, due at
	// Entry.DueAt. A row whose Position is already stored is skipped
	// together with its deliveries (idempotency), as is the second of two
	// entries with the same Position in one call. inserted[i] reports
	// whether entries[i] was new. On error nothing was stored.
	AppendAudit(ctx context.Context, entries []Entry) (inserted []bool, err error)

	// AuditTimeline returns up to q.Limit rows matching every filter of q,
	// newest first (descending Position), strictly before q.Before when it
	// is set. It examines at most q.Budget stored entries (0: no bound).
	// next is where the following page starts (pass it back as Before): nil
	// when no further row matches; set when more rows match, or when the
	// budget ran out before the answer was known (then rows may hold fewer
	// than q.Limit rows, even none).
	AuditTimeline(ctx context.Context, q StoreQuery) (rows []Row, next *Position, err error)

	// AuditRange returns up to limit rows with since <= occurred_at < until
	// (a zero time is unbounded), strictly after `after` when it is set,
	// oldest first. Export pages through the log with it.
	AuditRange(ctx context.Context, after *Position, since, until time.Time, limit int) ([]Row, error)

	// PruneAudit deletes every row with occurred_at < before, its index
	// entries and its dead deliveries, in as many bounded transactions as
	// it needs, and returns how many rows it deleted. It goes no further
	// than the oldest row a pending delivery still needs, so that a
	// receiver down for longer than the retention still gets every
	// event. It stops early, with the count so far, when ctx ends.
	PruneAudit(ctx context.Context, before time.Time) (int, error)
}

// ErrDamagedDelivery is wrapped by the error AuditDeliveriesDue returns
// beside the deliveries it could read when it took unreadable entries out
// of the outbox.
var ErrDamagedDelivery = errors.New("audit: damaged webhook delivery")

// Verdict is what a delivery pass decided for a pending delivery.
type Verdict int

// Verdicts start at 1, so a settlement without one is an error rather
// than a delivery quietly removed.
const (
	// Delivered: the receiver took it (or its row is gone); it leaves the
	// outbox.
	Delivered Verdict = iota + 1
	// Retry: it is due again at the settlement's Next.
	Retry
	// Dead: it is given up and kept on the dead list.
	Dead
)

// Settlement is one delivery's verdict, for Outbox.AuditSettle.
type Settlement struct {
	Delivery Delivery
	Verdict  Verdict
	Next     time.Time // Retry only
}

// ErrBadSettlement is what AuditSettle returns, writing nothing, for a
// settlement with no known verdict or a Retry without a time.
var ErrBadSettlement = errors.New("audit: settlement without a verdict or a retry time")

// Check returns ErrBadSettlement for a settlement no store may apply.
func (s Settlement) Check() error {
	switch {
	case s.Verdict == Retry && s.Next.IsZero():
		return fmt.Errorf("%w: retry of %s for %s has no time", ErrBadSettlement, s.Delivery.RowID, s.Delivery.HookID)
	case s.Verdict != Delivered && s.Verdict != Retry && s.Verdict != Dead:
		return fmt.Errorf("%w: verdict %d for %s of %s", ErrBadSettlement, s.Verdict, s.Delivery.RowID, s.Delivery.HookID)
	}
	return nil
}

// Outbox keeps pending webhook deliveries and dead ones. Pending
// deliveries are kept per webhook, in order of due time, so that each
// webhook's sender reads its own queue: a webhook with a long backlog
// never sits in front of another's deliveries.
type Outbox interface {
	// AuditDeliveriesDue returns up to limit pending deliveries to the
	// webhook hookID with DueAt <= now, earliest due first, each with its
	// Row loaded (a zero Row if the row is gone). A due entry that cannot
	// be read (a malformed key, a state or row that does not decode) must
	// not stop the others: the store takes it out of the outbox (deleting
	// it, or moving it to the dead list with a LastError that says why)
	// and returns the deliveries it could read together with an error
	// that wraps ErrDamagedDelivery and describes each, for the caller to
	// log. Damaged entries count towards limit.
	AuditDeliveriesDue(ctx context.Context, hookID string, now time.Time, limit int) ([]Delivery, error)
	// AuditNextDelivery returns the earliest DueAt among the pending
	// deliveries to the webhook hookID; ok is false when none is pending.
	AuditNextDelivery(ctx context.Context, hookID string) (at time.Time, ok bool, err error)
	// AuditOutboxHooks returns the ids of the webhooks that have pending
	// deliveries, configured or not (a webhook removed from the config
	// leaves its deliveries behind).
	AuditOutboxHooks(ctx context.Context) ([]string, error)
	// AuditSettle records what a delivery pass decided, in one commit.
	// Each settlement's delivery is the pending one identified by HookID,
	// RowID, OccurredAt and DueAt; one no longer there (settled by someone
	// else) is skipped and not recreated. Delivered removes it; Retry
	// makes it due at Next, and Dead moves it to the dead list, both
	// storing its Attempts, LastError and UpdatedAt. A settlement whose
	// Check fails makes it write nothing and return that error.
	AuditSettle(ctx context.Context, ss []Settlement) error
	// AuditDeadDeliveries returns up to limit dead deliveries, newest row
	// first, each with its Row loaded; with before, only those that come
	// after it in that order (before is identified by its RowID,
	// OccurredAt and HookID, and need not be there any more).
	AuditDeadDeliveries(ctx context.Context, before *Delivery, limit int) ([]Delivery, error)
	// AuditOutboxStats counts pending and dead deliveries.
	AuditOutboxStats(ctx context.Context) (pending, dead int, err error)
	// AuditReplayDead moves up to limit dead deliveries (all webhooks'
	// when hookID is empty, else only that webhook's) back to pending, due
	// at now with their attempts reset and their last error kept, and
	// returns how many it moved. With to set (and hookID), they go to the
	// webhook to instead, as a webhook whose URL changed is a new one.
	AuditReplayDead(ctx context.Context, hookID, to string, now time.Time, limit int) (int, error)
}

// Entry is one row handed to AppendAudit.
type Entry struct {
	// Row is valid and normalised.
	Row Row
	// Pos is the row's position (its key).
	Pos Position
	// JSON is the row's wire encoding (Row.MarshalJSON); a store may keep
	// it verbatim.
	JSON []byte
	// Hooks are the ids of the webhooks to deliver the row to.
	Hooks []string
	// DueAt is when those deliveries are first due.
	DueAt time.Time
	// With, when set, is a change the row tells of, made in the same
	// transaction as a new row (Log.RecordWith), so that a crash between
	// two commits cannot keep one without the other. The store passes it
	// its transaction; its error keeps everything of the call out. A
	// store that cannot run it must refuse the entry, and so must one
	// that holds the row already (idempotency cannot tell whether its
	// change was made).
	With func(tx any) error
}

// EntryError is a store's answer when one entry of an AppendAudit call
// kept the whole call out: its change was refused (With's error), or it
// came with a change for a row stored already. Nothing of the call is
// stored; the log commits the others again without it, and answers it
// with the error once they are stored (Log.commit), instead of going one
// by one.
type EntryError struct {
	Index int // the entry's index in the call
	Err   error
}

func (e *EntryError) Error() string { return e.Err.Error() }
func (e *EntryError) Unwrap() error { return e.Err }

// StoreQuery is a timeline query as a Store sees it: validated, the cursor
// decoded.
type StoreQuery struct {
	ActorID   string  // "" for any
	SubjectID string  // "" for any
	Action    Pattern // "" or "*" for any
	// Since (inclusive) and Until (exclusive) bound OccurredAt; zero is
	// unbounded.
	Since, Until time.Time
	// Before, when set, only admits rows strictly before it.
	Before *Position
	// Limit is the most rows to return, at least 1.
	Limit int
	// Budget bounds the stored entries examined; 0 means no bound.
	Budget int
}

// Match reports whether r passes q's filters (not Before or Limit).
func (q StoreQuery) Match(r Row) bool {
	return (q.ActorID == "" || r.ActorID == q.ActorID) &&
		(q.SubjectID == "" || r.SubjectID == q.SubjectID) &&
		q.Action.Match(r.Action) &&
		(q.Since.IsZero() || !r.OccurredAt.Before(q.Since)) &&
		(q.Until.IsZero() || r.OccurredAt.Before(q.Until))
}

// Delivery is one row on its way to one webhook.
type Delivery struct {
	// HookID identifies the webhook (WebhookConfig.ID).
	HookID string `json:"hook_id"`
	// URL is the webhook's address, filled in by the Log when it still
	// knows the webhook.
	URL string `json:"url,omitempty"`
	// RowID and OccurredAt identify the row.
	RowID      string    `json:"row_id"`
	OccurredAt time.Time `json:"occurred_at"`
	// DueAt is when the next attempt is due (pending deliveries only).
	DueAt time.Time `json:"due_at,omitzero"`
	// Attempts counts the attempts made so far.
	Attempts int `json:"attempts"`
	// LastError says why the last attempt failed.
	LastError string `json:"last_error,omitempty"`
	// UpdatedAt is when the last attempt ended (for dead deliveries: when
	// the delivery was given up).
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Row is the row itself.
	Row Row `json:"row"`
}
