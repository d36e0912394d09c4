package store

// The audit backend: audit.Store on bbolt.
//
//	sigra/v1/
//	├── audit_rows        at(8) ‖ id(16)                    → row JSON (audit.Row wire format)
//	├── audit_by_actor    actor_id ‖ 0x00 ‖ at(8) ‖ id(16)    → nil
//	├── audit_by_subject  subject_id ‖ 0x00 ‖ at(8) ‖ id(16)  → nil
//	├── audit_by_action   action ‖ 0x00 ‖ at(8) ‖ id(16)      → nil
//	├── audit_unindexed   at(8) ‖ id(16)                    → actor ‖ 0x00 ‖ subject ‖ 0x00 ‖ action
//	│                     (its bucket sequence counts the keys)
//	├── audit_pending     hook(8) ‖ due(8) ‖ at(8) ‖ id(16)   → JSON delivery state
//	└── audit_dead        at(8) ‖ id(16) ‖ hook(8)            → JSON delivery state
//
// at is occurred_at in big-endian Unix nanoseconds, id the row's 16 UUID
// bytes: together the row's audit.Position, so every bucket sorts by time
// and the newest entry of an index prefix is found with Seek and Prev. ids
// and action names never hold a NUL byte (audit validates them), so the
// 0x00 after the indexed value ends it unambiguously and every key of
// one actor is contiguous; so are all actions under "auth." for a pattern.
// hook is the webhook's 8-byte id (audit.WebhookConfig.ID, hex-decoded)
// and due is when the next attempt of a delivery is due (same encoding as
// at): each webhook's pending deliveries are contiguous, earliest due
// first, so its sender reads its own due deliveries with one Seek and a
// backlog for one webhook is never in front of another's.
//
// Files written before that layout keep their pending deliveries in
// audit_outbox, keyed due(8) ‖ hook(8) ‖ at(8) ‖ id(16): OpenBolt moves
// them to audit_pending (migrateAuditOutbox) and drops the old bucket.
//
// A row and its pending deliveries are written in the same transaction:
// the outbox never refers to a missing row and never misses a row.
//
// Index entries are written in bulk. A commit of concurrent appends writes
// the rows, their deliveries and one audit_unindexed entry per row, which
// all sort by time and so land on a few pages at the end of their
// buckets. Index keys, by contrast, scatter over one page per actor and
// subject: written per commit, they made a 64-row commit touch some 140
// pages. So once audit_unindexed holds auditIndexBatch entries, the commit
// that crosses the mark also moves them into the three indexes, one page
// write per distinct actor or subject per batch rather than per commit.
// Readers see no lag: a timeline query merges the (bounded) unindexed
// entries with the index it reads. A crash loses nothing: the unindexed
// entries are committed with their rows.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/audit"
)

var (
	bktAuditRows      = []byte("audit_rows")
	bktAuditByActor   = []byte("audit_by_actor")
	bktAuditBySubject = []byte("audit_by_subject")
	bktAuditByAction  = []byte("audit_by_action")
	bktAuditUnindexed = []byte("audit_unindexed")
	bktAuditPending   = []byte("audit_pending")
	bktAuditDead      = []byte("audit_dead")
	// bktAuditOutboxV1 is the outbox of older files, sorted by due time
	// across webhooks; migrateAuditOutbox empties it.
	bktAuditOutboxV1 = []byte("audit_outbox")
)

// auditBuckets are created by OpenBolt; the audit backend lives in this file.
var auditBuckets = [][]byte{bktAuditRows, bktAuditByActor, bktAuditBySubject, bktAuditByAction, bktAuditUnindexed, bktAuditPending, bktAuditDead}

const (
	auditPosLen    = 8 + 16
	auditHookLen   = 8
	auditOutboxLen = 8 + auditHookLen + auditPosLen
	auditDeadLen   = auditPosLen + auditHookLen
	// auditPruneChunk bounds the rows one retention transaction deletes,
	// so recording waits at most a few milliseconds behind it.
	auditPruneChunk = 1000
	// auditScanChunk bounds the outbox and dead entries one retention
	// transaction examines.
	auditScanChunk = 10_000
	// auditAppendFill packs the time-ordered buckets densely: their keys
	// mostly arrive in order.
	auditAppendFill = 0.9
	// auditIndexBatch is how many rows wait in audit_unindexed before a
	// commit moves them into the indexes. Larger batches amortise better;
	// the commit that indexes takes longer, and timeline queries scan up
	// to this many short entries.
	auditIndexBatch = 1024
)

// ErrAuditKey means an audit key or webhook id could not be decoded.
var ErrAuditKey = errors.New("store: malformed audit key")

// auditTime is t as a key prefix, to seek to or compare with.
func auditTime(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), keyNanos(t))
}

// Keys hold nanoseconds since 1970 in a uint64, so only times from 1970
// to 2262 have one (rows and deliveries are always stamped now).
var (
	keyTimeMin = time.Unix(0, 0)
	keyTimeMax = time.Unix(0, math.MaxInt64)
)

// keyNanos is t in a key: nanoseconds since 1970, and a bound outside
// the keys' years clamped to their first or last instant. Unclamped, a
// time before 1970 would wrap to one after every row (a long retention
// would prune them all; a since before 1970 would find none), and one
// after 2262 would be undefined.
func keyNanos(t time.Time) uint64 {
	switch {
	case t.Before(keyTimeMin):
		return 0
	case t.After(keyTimeMax):
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

func auditPosKey(p audit.Position) []byte {
	k := make([]byte, 0, auditPosLen)
	k = binary.BigEndian.AppendUint64(k, keyNanos(p.At))
	return append(k, p.ID[:]...)
}

func auditPosOf(k []byte) audit.Position {
	id, _ := uuid.FromBytes(k[8:auditPosLen])
	return audit.Position{At: time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC(), ID: id}
}

func auditIndexKey(value string, pk []byte) []byte {
	k := make([]byte, 0, len(value)+1+len(pk))
	k = append(k, value...)
	k = append(k, 0)
	return append(k, pk...)
}

func auditHookBytes(id string) ([]byte, error) {
	b, err := hex.DecodeString(id)
	if err != nil || len(b) != auditHookLen {
		return nil, fmt.Errorf("%w: webhook id %q", ErrAuditKey, id)
	}
	return b, nil
}

func auditOutboxKey(hook []byte, due time.Time, pk []byte) []byte {
	k := make([]byte, 0, auditOutboxLen)
	k = append(k, hook...)
	k = binary.BigEndian.AppendUint64(k, keyNanos(due))
	return append(k, pk...)
}

// auditOutboxDue decodes the due time of an outbox key.
func auditOutboxDue(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[auditHookLen:auditHookLen+8]))).UTC()
}

// auditDeliveryKeys returns the outbox key of a pending delivery and the
// dead-list key it would move to.
func auditDeliveryKeys(d audit.Delivery) (outbox, dead []byte, err error) {
	hook, err := auditHookBytes(d.HookID)
	if err != nil {
		return nil, nil, err
	}
	pos, err := audit.PositionOf(audit.Row{ID: d.RowID, OccurredAt: d.OccurredAt})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrAuditKey, err)
	}
	pk := auditPosKey(pos)
	return auditOutboxKey(hook, d.DueAt, pk), append(pk, hook...), nil
}

// auditIndexedValue is the value of an audit_unindexed entry: the fields
// the indexes are keyed by.
func auditIndexedValue(actor, subject, action string) []byte {
	v := make([]byte, 0, len(actor)+len(subject)+len(action)+2)
	v = append(v, actor...)
	v = append(v, 0)
	v = append(v, subject...)
	v = append(v, 0)
	return append(v, action...)
}

func auditSplitIndexed(v []byte) (actor, subject, action []byte, err error) {
	i := bytes.IndexByte(v, 0)
	if i < 0 {
		return nil, nil, nil, fmt.Errorf("%w: unindexed value %q", ErrAuditKey, v)
	}
	j := bytes.IndexByte(v[i+1:], 0)
	if j < 0 {
		return nil, nil, nil, fmt.Errorf("%w: unindexed value %q", ErrAuditKey, v)
	}
	return v[:i], v[i+1 : i+1+j], v[i+2+j:], nil
}

// auditIndexPending moves every audit_unindexed entry into the indexes.
func auditIndexPending(tx *bolt.Tx) error {
	pending := bucket(tx, bktAuditUnindexed)
	if pending.Sequence() == 0 {
		return nil
	}
	byActor, bySubject, byAction := bucket(tx, bktAuditByActor), bucket(tx, bktAuditBySubject), bucket(tx, bktAuditByAction)
	put := func(bk *bolt.Bucket, value, pk []byte) error {
		k := make([]byte, 0, len(value)+1+len(pk))
		k = append(append(append(k, value...), 0), pk...)
		return bk.Put(k, nil)
	}
	err := pending.ForEach(func(pk, v []byte) error {
		actor, subject, action, err := auditSplitIndexed(v)
		if err != nil {
			return err
		}
		if len(actor) > 0 {
			if err := put(byActor, actor, pk); err != nil {
				return fmt.Errorf("actor index: %w", err)
			}
		}
		if len(subject) > 0 {
			if err := put(bySubject, subject, pk); err != nil {
				return fmt.Errorf("subject index: %w", err)
			}
		}
		if err := put(byAction, action, pk); err != nil {
			return fmt.Errorf("action index: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("indexing: %w", err)
	}
	// Dropping the bucket frees its pages at once; recreate it empty.
	root := tx.Bucket(rootBucket)
	if err := root.DeleteBucket(bktAuditUnindexed); err != nil {
		return fmt.Errorf("indexing: %w", err)
	}
	if _, err := root.CreateBucket(bktAuditUnindexed); err != nil {
		return fmt.Errorf("indexing: %w", err)
	}
	return nil
}

// migrateAuditOutbox moves the pending deliveries of a file written with
// the old outbox layout (audit_outbox, keyed due ‖ hook ‖ at ‖ id) to
// audit_pending (hook ‖ due ‖ at ‖ id), state unchanged, at most
// auditScanChunk per transaction, then drops the old bucket. Each chunk
// moves its entries atomically, so a crash between chunks leaves every
// delivery in one bucket or the other and the next open goes on. A key of
// the wrong length names no delivery (the sender deleted such keys as it
// met them) and is dropped. OpenBolt runs it before anyone else uses the
// file.
func migrateAuditOutbox(db *bolt.DB) error {
	for {
		done := false
		err := db.Update(func(tx *bolt.Tx) error {
			root := tx.Bucket(rootBucket)
			old := root.Bucket(bktAuditOutboxV1)
			if old == nil {
				done = true
				return nil
			}
			// Collect first: deleting under a cursor skips keys.
			var keys, vals [][]byte
			c := old.Cursor()
			for k, v := c.First(); k != nil && len(keys) < auditScanChunk; k, v = c.Next() {
				keys, vals = append(keys, clone(k)), append(vals, clone(v))
			}
			if len(keys) == 0 {
				done = true
				return root.DeleteBucket(bktAuditOutboxV1)
			}
			outbox := bucket(tx, bktAuditPending)
			for i, k := range keys {
				if len(k) == auditOutboxLen {
					// due(8) ‖ hook(8) ‖ pk  →  hook(8) ‖ due(8) ‖ pk
					nk := make([]byte, 0, auditOutboxLen)
					nk = append(append(append(nk, k[8:8+auditHookLen]...), k[:8]...), k[8+auditHookLen:]...)
					if err := outbox.Put(nk, vals[i]); err != nil {
						return err
					}
				}
				if err := old.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("moving pending webhook deliveries to the per-webhook outbox: %w", err)
		}
		if done {
			return nil
		}
	}
}

// auditState is the stored part of a delivery that its key does not hold.
type auditState struct {
	Attempts  int       `json:"attempts,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

var auditNewState = []byte("{}")

// AppendAudit stores entries in one fsynced transaction with their index
// entries and pending deliveries, skipping rows already stored. It
// implements audit.RowStore.
func (b *Bolt) AppendAudit(ctx context.Context, entries []audit.Entry) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Encode outside the write lock.
	type prepared struct {
		pk, js []byte
		hooks  [][]byte
	}
	prep := make([]prepared, len(entries))
	for i, e := range entries {
		p := prepared{pk: auditPosKey(e.Pos), js: e.JSON}
		if p.js == nil {
			js, err := e.Row.MarshalJSON()
			if err != nil {
				return nil, fmt.Errorf("audit append: encoding row %s: %w", e.Row.ID, err)
			}
			p.js = js
		}
		for _, h := range e.Hooks {
			hb, err := auditHookBytes(h)
			if err != nil {
				return nil, fmt.Errorf("audit append: %w", err)
			}
			p.hooks = append(p.hooks, hb)
		}
		prep[i] = p
	}
	inserted := make([]bool, len(entries))
	err := b.update(func(tx *bolt.Tx) error {
		rows := bucket(tx, bktAuditRows)
		outbox := bucket(tx, bktAuditPending)
		pending := bucket(tx, bktAuditUnindexed)
		rows.FillPercent, outbox.FillPercent, pending.FillPercent = auditAppendFill, auditAppendFill, auditAppendFill
		added := uint64(0)
		for i, e := range entries {
			inserted[i] = false
			p := prep[i]
			if rows.Get(p.pk) != nil {
				if e.With != nil {
					// Its change cannot be told made: refused, not
					// answered as stored.
					return &audit.EntryError{Index: i, Err: fmt.Errorf("row %s: %w: stored already, so the change it comes with is not made", e.Row.ID, audit.ErrInvalidRow)}
				}
				continue // idempotent: this row (id + occurred_at) is stored
			}
			if err := rows.Put(p.pk, p.js); err != nil {
				return fmt.Errorf("row %s: %w", e.Row.ID, err)
			}
			if err := pending.Put(p.pk, auditIndexedValue(e.Row.ActorID, e.Row.SubjectID, e.Row.Action)); err != nil {
				return fmt.Errorf("row %s: unindexed: %w", e.Row.ID, err)
			}
			if e.With != nil {
				if err := e.With(tx); err != nil {
					return &audit.EntryError{Index: i, Err: fmt.Errorf("row %s: its change: %w", e.Row.ID, err)}
				}
			}
			added++
			for _, h := range p.hooks {
				if err := outbox.Put(auditOutboxKey(h, e.DueAt, p.pk), auditNewState); err != nil {
					return fmt.Errorf("row %s: outbox: %w", e.Row.ID, err)
				}
			}
			inserted[i] = true
		}
		if added == 0 {
			return nil
		}
		n := pending.Sequence() + added
		if err := pending.SetSequence(n); err != nil {
			return err
		}
		if n >= auditIndexBatch {
			return auditIndexPending(tx)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit append to %s: %w", b.path, err)
	}
	return inserted, nil
}

// auditIter walks one key prefix of a bucket backwards (newest first),
// between an inclusive lower bound and an exclusive upper bound on the
// position suffix.
type auditIter struct {
	c      *bolt.Cursor
	prefix []byte // indexed value ‖ 0x00; empty for audit_rows
	lo     []byte // prefix ‖ lower bound, inclusive
	key    []byte // current key; nil when done
}

// newAuditIter positions an iterator on the newest key of prefix below
// upper (a position suffix, exclusive; nil for none) and not below lower
// (a suffix, inclusive; nil for none).
func newAuditIter(bk *bolt.Bucket, prefix, lower, upper []byte) *auditIter {
	it := &auditIter{c: bk.Cursor(), prefix: prefix, lo: append(append([]byte(nil), prefix...), lower...)}
	var hi []byte
	switch {
	case upper != nil:
		hi = append(append([]byte(nil), prefix...), upper...)
	case len(prefix) > 0:
		// Just past every key of the prefix: its 0x00 separator raised.
		hi = append([]byte(nil), prefix...)
		hi[len(hi)-1]++
	}
	var k []byte
	if hi == nil {
		k, _ = it.c.Last()
	} else if k, _ = it.c.Seek(hi); k == nil {
		k, _ = it.c.Last()
	} else {
		k, _ = it.c.Prev()
	}
	it.set(k)
	return it
}

func (it *auditIter) set(k []byte) {
	if k == nil || len(k) != len(it.prefix)+auditPosLen || !bytes.HasPrefix(k, it.prefix) || bytes.Compare(k, it.lo) < 0 {
		it.key = nil
		return
	}
	it.key = k
}

func (it *auditIter) next() {
	k, _ := it.c.Prev()
	it.set(k)
}

// pk is the current row key, nil when done.
func (it *auditIter) pk() []byte {
	if it.key == nil {
		return nil
	}
	return it.key[len(it.prefix):]
}

// auditCursor yields row keys newest first.
type auditCursor interface {
	pk() []byte // nil when done
	next()
}

// auditKeyList is an auditCursor over keys already sorted newest first.
type auditKeyList [][]byte

func (l *auditKeyList) pk() []byte {
	if len(*l) == 0 {
		return nil
	}
	return (*l)[0]
}

func (l *auditKeyList) next() { *l = (*l)[1:] }

// auditMerge yields the newest key of several cursors: the actions under a
// pattern's prefix, and the rows not yet indexed.
type auditMerge []auditCursor

// top returns the cursor holding the newest key, or nil when all are done.
func (m auditMerge) top() auditCursor {
	var best auditCursor
	var bestKey []byte
	for _, c := range m {
		if k := c.pk(); k != nil && (best == nil || bytes.Compare(k, bestKey) > 0) {
			best, bestKey = c, k
		}
	}
	return best
}

// auditUnindexed returns the keys of not yet indexed rows whose field
// (0 actor, 1 subject, 2 action) equals value, or starts with it when
// prefix is set, within [lower, upper), newest first.
func auditUnindexed(tx *bolt.Tx, field int, value []byte, prefix bool, lower, upper []byte) (*auditKeyList, error) {
	var keys auditKeyList
	err := bucket(tx, bktAuditUnindexed).ForEach(func(pk, v []byte) error {
		if bytes.Compare(pk, lower) < 0 || (upper != nil && bytes.Compare(pk, upper) >= 0) {
			return nil
		}
		actor, subject, action, err := auditSplitIndexed(v)
		if err != nil {
			return err
		}
		f := [3][]byte{actor, subject, action}[field]
		if bytes.Equal(f, value) || (prefix && bytes.HasPrefix(f, value)) {
			keys = append(keys, clone(pk))
		}
		return nil
	})
	slices.Reverse(keys)
	return &keys, err
}

// auditActions lists the distinct actions starting with prefix, one Seek
// per action.
func auditActions(byAction *bolt.Bucket, prefix []byte) [][]byte {
	var actions [][]byte
	c := byAction.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); {
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			break
		}
		a := append([]byte(nil), k[:i+1]...) // with its separator
		actions = append(actions, a)
		after := append([]byte(nil), a...)
		after[len(after)-1] = 1
		k, _ = c.Seek(after)
	}
	return actions
}

// AuditTimeline answers a timeline page from the most selective index:
// subject, else actor, else action, else the rows themselves; filters the
// index does not cover are checked on the row, within q.Budget. It
// implements audit.RowStore.
func (b *Bolt) AuditTimeline(ctx context.Context, q audit.StoreQuery) ([]audit.Row, *audit.Position, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if q.Limit < 1 {
		return nil, nil, fmt.Errorf("audit timeline: limit %d", q.Limit)
	}
	var lower, upper []byte
	if !q.Since.IsZero() {
		lower = auditTime(q.Since)
	}
	if !q.Until.IsZero() {
		upper = append(auditTime(q.Until), make([]byte, 16)...)
	}
	if q.Before != nil {
		if bk := auditPosKey(*q.Before); upper == nil || bytes.Compare(bk, upper) < 0 {
			upper = bk
		}
	}
	var (
		rows []audit.Row
		next *audit.Position
	)
	err := b.view(func(tx *bolt.Tx) error {
		rowsB := bucket(tx, bktAuditRows)
		var src auditMerge
		covered := false // does the index alone decide every filter?
		prefix, wild := q.Action.Prefix()
		var (
			field int // of the unindexed rows to merge in; -1 for none
			value []byte
		)
		switch {
		case q.SubjectID != "":
			src = auditMerge{newAuditIter(bucket(tx, bktAuditBySubject), auditIndexKey(q.SubjectID, nil), lower, upper)}
			field, value = 1, []byte(q.SubjectID)
			covered = q.ActorID == "" && q.Action.All()
		case q.ActorID != "":
			src = auditMerge{newAuditIter(bucket(tx, bktAuditByActor), auditIndexKey(q.ActorID, nil), lower, upper)}
			field, value = 0, []byte(q.ActorID)
			covered = q.Action.All()
		case !q.Action.All():
			byAction := bucket(tx, bktAuditByAction)
			if wild {
				for _, a := range auditActions(byAction, []byte(prefix)) {
					src = append(src, newAuditIter(byAction, a, lower, upper))
				}
			} else {
				src = auditMerge{newAuditIter(byAction, auditIndexKey(prefix, nil), lower, upper)}
			}
			field, value = 2, []byte(prefix)
			covered = true
		default:
			src = auditMerge{newAuditIter(rowsB, nil, lower, upper)}
			field = -1 // the rows bucket has every row
			covered = true
		}
		if field >= 0 {
			extra, err := auditUnindexed(tx, field, value, wild && field == 2, lower, upper)
			if err != nil {
				return err
			}
			src = append(src, extra)
		}
		examined := 0
		var last []byte // the last key examined
		for it := src.top(); it != nil; it = src.top() {
			if q.Budget > 0 && examined >= q.Budget {
				p := auditPosOf(last)
				next = &p
				return nil
			}
			examined++
			pk := it.pk()
			last = append(last[:0], pk...)
			if covered && len(rows) == q.Limit {
				// Another row matches: there is a next page.
				p, _ := audit.PositionOf(rows[len(rows)-1])
				next = &p
				return nil
			}
			v := rowsB.Get(pk)
			it.next()
			if v == nil {
				continue // an index entry without its row: never written so, skip it
			}
			var r audit.Row
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("row %x: %w", pk, err)
			}
			if !covered && !q.Match(r) {
				continue
			}
			if len(rows) == q.Limit {
				p, _ := audit.PositionOf(rows[len(rows)-1])
				next = &p
				return nil
			}
			rows = append(rows, r)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("audit timeline in %s: %w", b.path, err)
	}
	return rows, next, nil
}

// AuditRange reads rows oldest first for export. It implements
// audit.RowStore.
func (b *Bolt) AuditRange(ctx context.Context, after *audit.Position, since, until time.Time, limit int) ([]audit.Row, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rows []audit.Row
	err := b.view(func(tx *bolt.Tx) error {
		c := bucket(tx, bktAuditRows).Cursor()
		var k, v []byte
		if after != nil {
			ak := auditPosKey(*after)
			if k, v = c.Seek(ak); bytes.Equal(k, ak) {
				k, v = c.Next()
			}
		} else {
			k, v = c.First()
		}
		if !since.IsZero() && k != nil {
			if sk := auditTime(since); bytes.Compare(k, sk) < 0 {
				k, v = c.Seek(sk)
			}
		}
		var end []byte
		if !until.IsZero() {
			end = auditTime(until)
		}
		for ; k != nil && len(rows) < limit; k, v = c.Next() {
			if end != nil && bytes.Compare(k, end) >= 0 {
				break
			}
			var r audit.Row
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("row %x: %w", k, err)
			}
			rows = append(rows, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit range in %s: %w", b.path, err)
	}
	return rows, nil
}

// auditIndexed is the part of a row that its index keys hold.
type auditIndexed struct {
	Action    string `json:"action"`
	ActorID   string `json:"actor_id"`
	SubjectID string `json:"subject_id"`
}

// PruneAudit deletes rows older than before with their index entries
// and dead deliveries, in transactions of at most auditPruneChunk rows.
// It stops at the oldest row a pending delivery still needs: a
// retention shorter than a receiver's outage must not drop events the
// receiver never had, and that row, with those after it, is pruned once
// the delivery is settled (delivered, or dead after its retries). It
// implements audit.RowStore.
func (b *Bolt) PruneAudit(ctx context.Context, before time.Time) (int, error) {
	var cut []byte
	total := 0
	for scans := 1; ; scans++ {
		b.replayMu.Lock()
		replays := b.replays.Load()
		b.replayMu.Unlock()
		cut = auditTime(before)
		if held, err := b.auditOldestPending(ctx); err != nil {
			return total, err
		} else if held != nil && bytes.Compare(held, cut) < 0 {
			cut = held
		}
		if b.pruneScanned != nil {
			b.pruneScanned()
		}
		n, err := b.pruneAuditRows(ctx, cut, replays)
		total += n
		if errors.Is(err, errAuditReplayed) {
			// A replay put deliveries of old rows back in the outbox
			// since the scan: read it again, a few times at most, then
			// leave the rest to the next prune.
			if scans < auditPruneScans {
				continue
			}
			return total, nil
		}
		if err != nil {
			return total, err
		}
		break
	}
	// Dead deliveries of pruned rows (they sort by row). A key of the
	// wrong length was never written so and cannot be decoded: it goes,
	// from the outbox too. No pending delivery is of a pruned row.
	if err := b.auditDeleteWhere(ctx, bktAuditDead, func(k []byte) (del, stop bool) {
		if len(k) != auditDeadLen {
			return true, false
		}
		old := bytes.Compare(k[:auditPosLen], cut) < 0
		return old, !old
	}); err != nil {
		return total, err
	}
	if err := b.auditDeleteWhere(ctx, bktAuditPending, func(k []byte) (del, stop bool) {
		return len(k) != auditOutboxLen, false
	}); err != nil {
		return total, err
	}
	return total, nil
}

// auditPruneScans bounds the scans of the outbox in one PruneAudit that
// replays made stale.
const auditPruneScans = 3

// errAuditReplayed stops pruneAuditRows when a replay of dead deliveries
// came after the scan of the outbox that its cut came from.
var errAuditReplayed = errors.New("audit: dead deliveries were replayed during the prune")

// pruneAuditRows deletes the rows before cut with their index entries,
// in transactions of at most auditPruneChunk rows, as long as no replay
// has come since the count replays was read.
func (b *Bolt) pruneAuditRows(ctx context.Context, cut []byte, replays uint64) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n := 0
		err := b.update(func(tx *bolt.Tx) error {
			n = 0
			// Replays run in write transactions too, so one that
			// committed before this one began has counted.
			if b.replays.Load() != replays {
				return errAuditReplayed
			}
			if err := auditIndexPending(tx); err != nil {
				return err
			}
			rows := bucket(tx, bktAuditRows)
			type victim struct {
				pk  []byte
				idx auditIndexed
			}
			var vs []victim
			c := rows.Cursor()
			for k, v := c.First(); k != nil && bytes.Compare(k, cut) < 0 && len(vs) < auditPruneChunk; k, v = c.Next() {
				var idx auditIndexed
				if json.Unmarshal(v, &idx) != nil {
					// A row that does not decode goes too. Its index
					// entries cannot be found; left without their row,
					// timelines skip them.
					idx = auditIndexed{}
				}
				vs = append(vs, victim{clone(k), idx})
			}
			byActor, bySubject, byAction := bucket(tx, bktAuditByActor), bucket(tx, bktAuditBySubject), bucket(tx, bktAuditByAction)
			for _, vi := range vs {
				if err := rows.Delete(vi.pk); err != nil {
					return err
				}
				if vi.idx.ActorID != "" {
					if err := byActor.Delete(auditIndexKey(vi.idx.ActorID, vi.pk)); err != nil {
						return err
					}
				}
				if vi.idx.SubjectID != "" {
					if err := bySubject.Delete(auditIndexKey(vi.idx.SubjectID, vi.pk)); err != nil {
						return err
					}
				}
				if vi.idx.Action != "" {
					if err := byAction.Delete(auditIndexKey(vi.idx.Action, vi.pk)); err != nil {
						return err
					}
				}
			}
			n = len(vs)
			return nil
		})
		if errors.Is(err, errAuditReplayed) {
			return total, err
		}
		if err != nil {
			return total, fmt.Errorf("audit prune in %s: %w", b.path, err)
		}
		total += n
		if n < auditPruneChunk {
			return total, nil
		}
	}
}

// auditOldestPending returns the oldest row (its key) that a pending
// delivery needs, or nil when none is pending. Each webhook's queue
// sorts by due time, not by row, so the outbox is read through, in
// bounded transactions: it is short unless a receiver has been down for
// long.
func (b *Bolt) auditOldestPending(ctx context.Context) ([]byte, error) {
	var oldest, from []byte
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		done := false
		err := b.view(func(tx *bolt.Tx) error {
			c := bucket(tx, bktAuditPending).Cursor()
			k, _ := c.First()
			if from != nil {
				k, _ = c.Seek(from)
			}
			for seen := 0; k != nil && seen < auditScanChunk; k, _ = c.Next() {
				seen++
				if len(k) != auditOutboxLen {
					continue // malformed: PruneAudit deletes it
				}
				if pk := k[auditHookLen+8:]; oldest == nil || bytes.Compare(pk, oldest) < 0 {
					oldest = clone(pk)
				}
			}
			from, done = clone(k), k == nil
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("audit prune in %s: %w", b.path, err)
		}
		if done {
			return oldest, nil
		}
	}
}

// auditDeleteWhere walks a bucket from the start, deleting the keys that
// match, until stop or the end, auditScanChunk keys per transaction.
func (b *Bolt) auditDeleteWhere(ctx context.Context, name []byte, match func(k []byte) (del, stop bool)) error {
	var from []byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		done := false
		err := b.update(func(tx *bolt.Tx) error {
			bk := bucket(tx, name)
			c := bk.Cursor()
			var k []byte
			if from == nil {
				k, _ = c.First()
			} else {
				k, _ = c.Seek(from)
			}
			var dels [][]byte
			seen := 0
			for ; k != nil; k, _ = c.Next() {
				if seen == auditScanChunk {
					from = clone(k)
					break
				}
				seen++
				del, stop := match(k)
				if stop {
					k = nil
					break
				}
				if del {
					dels = append(dels, clone(k))
				}
			}
			done = k == nil
			for _, d := range dels {
				if err := bk.Delete(d); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("audit prune %s in %s: %w", name, b.path, err)
		}
		if done {
			return nil
		}
	}
}

// auditDelivery rebuilds a delivery from its parts and loads its row.
// When its state or its row does not decode, it returns the delivery as
// far as it could decode it (always its key's part, never a Row) and an
// error that says which.
func auditDelivery(rows *bolt.Bucket, hook, pk []byte, due time.Time, state []byte) (audit.Delivery, error) {
	pos := auditPosOf(pk)
	d := audit.Delivery{HookID: hex.EncodeToString(hook), RowID: pos.ID.String(), OccurredAt: pos.At, DueAt: due}
	var st auditState
	if err := json.Unmarshal(state, &st); err != nil {
		return d, fmt.Errorf("delivery state does not decode: %w", err)
	}
	d.Attempts, d.LastError, d.UpdatedAt = st.Attempts, st.LastError, st.UpdatedAt
	if v := rows.Get(pk); v != nil {
		if err := json.Unmarshal(v, &d.Row); err != nil {
			d.Row = audit.Row{}
			return d, fmt.Errorf("stored row does not decode: %w", err)
		}
	}
	return d, nil
}

// auditDamaged is a due outbox entry that could not be read.
type auditDamaged struct {
	key   []byte // its outbox key
	dead  []byte // the dead-list key it moves to; nil to delete it
	state []byte // its state on the dead list
	what  string // for the error: what it was and what became of it
}

// AuditDeliveriesDue reads the front of one webhook's queue. An entry
// it cannot read does not stop the others: it takes it out of the outbox
// (see auditTakeOut) and reports it in an error wrapping
// audit.ErrDamagedDelivery, returned beside the deliveries it read. It
// implements audit.Outbox.
func (b *Bolt) AuditDeliveriesDue(ctx context.Context, hookID string, now time.Time, limit int) ([]audit.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	hook, err := auditHookBytes(hookID)
	if err != nil {
		return nil, err
	}
	end := append(clone(hook), auditTime(now)...)
	var (
		ds      []audit.Delivery
		damaged []auditDamaged
	)
	err = b.view(func(tx *bolt.Tx) error {
		rows := bucket(tx, bktAuditRows)
		c := bucket(tx, bktAuditPending).Cursor()
		for k, v := c.Seek(hook); k != nil && bytes.HasPrefix(k, hook) && len(ds)+len(damaged) < limit; k, v = c.Next() {
			if bytes.Compare(k[:min(len(k), len(end))], end) > 0 {
				break
			}
			if len(k) != auditOutboxLen {
				damaged = append(damaged, auditDamaged{key: clone(k), what: fmt.Sprintf("malformed outbox key %x deleted", k)})
				continue
			}
			pk := k[auditHookLen+8:]
			d, err := auditDelivery(rows, hook, pk, auditOutboxDue(k), v)
			if err != nil {
				d.LastError, d.UpdatedAt = "undeliverable: "+err.Error(), now
				state, serr := auditEncodeState(d)
				if serr != nil {
					return serr
				}
				damaged = append(damaged, auditDamaged{
					key: clone(k), dead: append(clone(pk), hook...), state: state,
					what: fmt.Sprintf("delivery of row %s to webhook %s moved to the dead list: %v", d.RowID, d.HookID, err),
				})
				continue
			}
			ds = append(ds, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit outbox in %s: %w", b.path, err)
	}
	if len(damaged) > 0 {
		return ds, b.auditTakeOut(damaged)
	}
	return ds, nil
}

// auditTakeOut takes damaged entries out of the outbox in one
// transaction, so that the sender does not meet them again: a malformed
// key is deleted (it names no delivery), a delivery whose state or row
// does not decode moves to the dead list, where operators see why. The
// error it returns wraps audit.ErrDamagedDelivery and lists them.
func (b *Bolt) auditTakeOut(damaged []auditDamaged) error {
	err := b.update(func(tx *bolt.Tx) error {
		c, dead := bucket(tx, bktAuditPending).Cursor(), bucket(tx, bktAuditDead)
		for _, d := range damaged {
			if k, _ := c.Seek(d.key); !bytes.Equal(k, d.key) {
				continue // taken out by someone else
			}
			if err := c.Delete(); err != nil {
				return err
			}
			if d.dead != nil {
				if err := dead.Put(d.dead, d.state); err != nil {
					return err
				}
			}
		}
		return nil
	})
	what := make([]string, len(damaged))
	for i, d := range damaged {
		what[i] = d.what
	}
	if err != nil {
		return fmt.Errorf("%w in %s, left in the outbox: %s: %w", audit.ErrDamagedDelivery, b.path, strings.Join(what, "; "), err)
	}
	return fmt.Errorf("%w in %s: %s", audit.ErrDamagedDelivery, b.path, strings.Join(what, "; "))
}

// AuditNextDelivery returns the due time at the front of one webhook's
// queue. It implements audit.Outbox.
func (b *Bolt) AuditNextDelivery(ctx context.Context, hookID string) (time.Time, bool, error) {
	hook, err := auditHookBytes(hookID)
	if err != nil {
		return time.Time{}, false, err
	}
	var at time.Time
	var ok bool
	err = b.view(func(tx *bolt.Tx) error {
		// Malformed keys are skipped: AuditDeliveriesDue takes them out.
		c := bucket(tx, bktAuditPending).Cursor()
		for k, _ := c.Seek(hook); k != nil && bytes.HasPrefix(k, hook); k, _ = c.Next() {
			if len(k) == auditOutboxLen {
				at, ok = auditOutboxDue(k), true
				break
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("audit outbox in %s: %w", b.path, err)
	}
	return at, ok, nil
}

// AuditOutboxHooks lists the webhooks with pending deliveries, one Seek
// per webhook. It implements audit.Outbox.
func (b *Bolt) AuditOutboxHooks(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var hooks []string
	err := b.view(func(tx *bolt.Tx) error {
		c := bucket(tx, bktAuditPending).Cursor()
		for k, _ := c.First(); k != nil; {
			if len(k) < auditHookLen {
				// Too short to name a webhook; retention deletes it.
				k, _ = c.Next()
				continue
			}
			hooks = append(hooks, hex.EncodeToString(k[:auditHookLen]))
			after, carry := auditPrefixAfter(k[:auditHookLen])
			if carry {
				break // the last possible webhook id
			}
			k, _ = c.Seek(after)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit outbox in %s: %w", b.path, err)
	}
	return hooks, nil
}

// auditPrefixAfter returns the smallest key after every key that starts
// with p (p plus one, as a big-endian number); carry reports that p was
// all 0xff and no such key exists.
func auditPrefixAfter(p []byte) (after []byte, carry bool) {
	after = clone(p)
	for i := len(after) - 1; i >= 0; i-- {
		after[i]++
		if after[i] != 0 {
			return after, false
		}
	}
	return nil, true
}

func auditEncodeState(d audit.Delivery) ([]byte, error) {
	return json.Marshal(auditState{Attempts: d.Attempts, LastError: d.LastError, UpdatedAt: d.UpdatedAt.UTC()})
}

// AuditSettle records a delivery pass's verdicts in one commit, so that
// a pass costs one disk sync however many deliveries it settles. It
// implements audit.Outbox.
func (b *Bolt) AuditSettle(ctx context.Context, ss []audit.Settlement) error {
	if len(ss) == 0 {
		return nil // no write transaction: bbolt would commit and sync an empty one
	}
	type change struct {
		key, dest, state []byte // dest: the new outbox or dead key; nil removes
		dead             bool
	}
	changes := make([]change, len(ss))
	for i, st := range ss {
		if err := st.Check(); err != nil {
			return err
		}
		key, deadKey, err := auditDeliveryKeys(st.Delivery)
		if err != nil {
			return err
		}
		c := change{key: key}
		switch st.Verdict {
		case audit.Retry:
			c.dest = auditOutboxKey(key[:auditHookLen], st.Next, key[auditHookLen+8:])
		case audit.Dead:
			c.dest, c.dead = deadKey, true
		}
		if c.dest != nil {
			if c.state, err = auditEncodeState(st.Delivery); err != nil {
				return err
			}
		}
		changes[i] = c
	}
	err := b.update(func(tx *bolt.Tx) error {
		outbox, dead := bucket(tx, bktAuditPending), bucket(tx, bktAuditDead)
		for _, c := range changes {
			if outbox.Get(c.key) == nil {
				continue // settled by someone else
			}
			if err := outbox.Delete(c.key); err != nil {
				return err
			}
			switch {
			case c.dead:
				if err := dead.Put(c.dest, c.state); err != nil {
					return err
				}
			case c.dest != nil:
				if err := outbox.Put(c.dest, c.state); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit outbox in %s: %w", b.path, err)
	}
	return nil
}

// AuditDeadDeliveries lists dead deliveries, newest row first, skipping
// malformed keys; a delivery whose row does not decode is listed without
// it. It implements audit.Outbox.
func (b *Bolt) AuditDeadDeliveries(ctx context.Context, before *audit.Delivery, limit int) ([]audit.Delivery, error) {
	var from []byte // the key to list from, backwards, itself excluded
	if before != nil {
		id, err := uuid.Parse(before.RowID)
		if err != nil {
			return nil, fmt.Errorf("%w: row id %q", ErrAuditKey, before.RowID)
		}
		hook, err := auditHookBytes(before.HookID)
		if err != nil {
			return nil, err
		}
		from = append(auditPosKey(audit.Position{At: before.OccurredAt, ID: id}), hook...)
	}
	var ds []audit.Delivery
	err := b.view(func(tx *bolt.Tx) error {
		rows := bucket(tx, bktAuditRows)
		c := bucket(tx, bktAuditDead).Cursor()
		k, v := c.Last()
		if from != nil {
			// Seek lands on from or the first key after it (nil past the
			// end): either way, the one before is the next to list.
			if k, _ = c.Seek(from); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil && len(ds) < limit; k, v = c.Prev() {
			if len(k) != auditDeadLen {
				continue // never written so; retention or replay drops it
			}
			d, err := auditDelivery(rows, k[auditPosLen:], k[:auditPosLen], time.Time{}, v)
			if err != nil && d.LastError == "" {
				d.LastError = "unreadable: " + err.Error()
			}
			ds = append(ds, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit dead deliveries in %s: %w", b.path, err)
	}
	return ds, nil
}

// AuditReplayDead moves dead deliveries back to the outbox, deleting
// malformed keys it meets and the deliveries of rows retention has
// deleted (there is nothing left to send). It implements audit.Outbox.
func (b *Bolt) AuditReplayDead(ctx context.Context, hookID, to string, now time.Time, limit int) (int, error) {
	var hook, target []byte
	if hookID != "" {
		var err error
		if hook, err = auditHookBytes(hookID); err != nil {
			return 0, err
		}
	}
	if to != "" {
		if hook == nil {
			return 0, fmt.Errorf("%w: a replay to another webhook needs the webhook it is from", ErrAuditKey)
		}
		var err error
		if target, err = auditHookBytes(to); err != nil {
			return 0, err
		}
	}
	n := 0
	b.replayMu.Lock()
	defer b.replayMu.Unlock()
	err := b.update(func(tx *bolt.Tx) error {
		dead, outbox, rows := bucket(tx, bktAuditDead), bucket(tx, bktAuditPending), bucket(tx, bktAuditRows)
		// Collect first: deleting under a cursor skips keys.
		var keys, states, malformed [][]byte
		c := dead.Cursor()
		for k, v := c.First(); k != nil && len(keys) < limit && len(malformed) < limit; k, v = c.Next() {
			if len(k) != auditDeadLen {
				malformed = append(malformed, slices.Clone(k))
				continue
			}
			if hook != nil && !bytes.Equal(k[auditPosLen:], hook) {
				continue
			}
			if rows.Get(k[:auditPosLen]) == nil {
				malformed = append(malformed, slices.Clone(k)) // pruned with its row
				continue
			}
			var st auditState
			if err := json.Unmarshal(v, &st); err != nil {
				st = auditState{LastError: "delivery state did not decode: " + err.Error()}
			}
			st.Attempts = 0
			state, err := json.Marshal(st)
			if err != nil {
				return err
			}
			keys = append(keys, slices.Clone(k))
			states = append(states, state)
		}
		for _, k := range malformed {
			if err := dead.Delete(k); err != nil {
				return err
			}
		}
		for i, k := range keys {
			if err := dead.Delete(k); err != nil {
				return err
			}
			dest := k[auditPosLen:]
			if target != nil {
				dest = target
			}
			if err := outbox.Put(auditOutboxKey(dest, now, k[:auditPosLen]), states[i]); err != nil {
				return err
			}
		}
		n = len(keys)
		if n > 0 {
			b.replays.Add(1) // before the commit: see pruneAuditRows
			if b.replayCounted != nil {
				b.replayCounted()
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("audit dead deliveries in %s: %w", b.path, err)
	}
	return n, nil
}

// AuditOutboxStats counts pending and dead deliveries. It implements
// audit.Outbox.
func (b *Bolt) AuditOutboxStats(ctx context.Context) (pending, dead int, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		pending = bucket(tx, bktAuditPending).Stats().KeyN
		dead = bucket(tx, bktAuditDead).Stats().KeyN
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("audit outbox stats in %s: %w", b.path, err)
	}
	return pending, dead, nil
}

// Interface guard.
var _ audit.Store = (*Bolt)(nil)
