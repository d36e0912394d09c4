package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/audit"
)

// auditV1OutboxKey is an outbox key as files written before per-webhook
// queues have them: due(8) ‖ hook(8) ‖ at(8) ‖ id(16).
func auditV1OutboxKey(due time.Time, hook, pk []byte) []byte {
	k := binary.BigEndian.AppendUint64(nil, uint64(due.UnixNano()))
	return append(append(k, hook...), pk...)
}

// A file written with the old outbox layout keeps every pending delivery:
// OpenBolt moves each to its webhook's queue with its due time and state
// (over more than one transaction), drops the old bucket and a key that
// names no delivery, and finishes a move a crash cut short.
func TestAuditBoltMigratesTheOldOutboxLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	h1 := audit.WebhookConfig{URL: "https://one.example.com/"}.ID()
	h2 := audit.WebhookConfig{URL: "https://two.example.com/"}.ID()
	hb1, _ := auditHookBytes(h1)
	hb2, _ := auditHookBytes(h2)

	type want struct {
		due      time.Time
		attempts int
		lastErr  string
	}
	wants := map[string]want{} // hook + row id → what must be pending
	const rows = auditScanChunk + 500
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucket(rootBucket)
		if err != nil {
			return err
		}
		// The rows, the old outbox and, as after a crash mid-migration, a
		// few deliveries already moved.
		var bks [3]*bolt.Bucket
		for i, name := range [][]byte{bktAuditRows, bktAuditOutboxV1, bktAuditPending} {
			if bks[i], err = root.CreateBucket(name); err != nil {
				return err
			}
		}
		rowsB, old, moved := bks[0], bks[1], bks[2]
		for i := range rows {
			e := auditEntry(t, audit.Row{Action: "auth.logout", ActorID: "u1", OccurredAt: auditT0.Add(time.Duration(i) * time.Millisecond)}, auditT0)
			pk := auditPosKey(e.Pos)
			if err := rowsB.Put(pk, e.JSON); err != nil {
				return err
			}
			put := func(hook string, hb []byte, due time.Time, attempts int) error {
				d := audit.Delivery{Attempts: attempts}
				if attempts > 0 {
					d.LastError, d.UpdatedAt = "receiver answered 503 Service Unavailable", auditT0
				}
				state, err := auditEncodeState(d)
				if err != nil {
					return err
				}
				wants[hook+e.Row.ID] = want{due, d.Attempts, d.LastError}
				if i < 7 {
					return moved.Put(auditOutboxKey(hb, due, pk), state)
				}
				return old.Put(auditV1OutboxKey(due, hb, pk), state)
			}
			if err := put(h1, hb1, auditT0.Add(time.Duration(rows-i)*time.Second), i%4); err != nil {
				return err
			}
			if i%3 == 0 {
				if err := put(h2, hb2, auditT0.Add(time.Hour), 0); err != nil {
					return err
				}
			}
		}
		return old.Put([]byte{1, 2, 3}, []byte("{}")) // names no delivery
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	b := auditOpen(t, path)
	ctx := context.Background()
	if err := b.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(rootBucket).Bucket(bktAuditOutboxV1) != nil {
			return fmt.Errorf("the old outbox bucket is still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pending, dead, err := b.AuditOutboxStats(ctx); err != nil || pending != len(wants) || dead != 0 {
		t.Fatalf("after opening: %d pending, %d dead, %v; want %d pending", pending, dead, err, len(wants))
	}
	seen := 0
	for _, hook := range []string{h1, h2} {
		ds, err := b.AuditDeliveriesDue(ctx, hook, auditT0.Add(24*time.Hour), 2*rows)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range ds {
			w, ok := wants[hook+d.RowID]
			if !ok || !d.DueAt.Equal(w.due) || d.Attempts != w.attempts || d.LastError != w.lastErr || d.Row.ID != d.RowID {
				t.Fatalf("migrated delivery %+v; want due %v, %d attempts, last error %q, its row", d, w.due, w.attempts, w.lastErr)
			}
			if i > 0 && d.DueAt.Before(ds[i-1].DueAt) {
				t.Fatalf("%s's queue is out of order at %d: %v after %v", hook, i, d.DueAt, ds[i-1].DueAt)
			}
			seen++
		}
	}
	if seen != len(wants) {
		t.Fatalf("%d deliveries in the webhooks' queues; want all %d", seen, len(wants))
	}

	// Opening again changes nothing.
	b.Close()
	b = auditOpen(t, path)
	if pending, _, _ := b.AuditOutboxStats(ctx); pending != len(wants) {
		t.Fatalf("after reopening: %d pending; want %d", pending, len(wants))
	}
}
