package store

// One damaged entry in an audit bucket (a torn or foreign write, a bug
// elsewhere) must not stop retention or webhook delivery for the rest.

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
)

// auditPut writes raw keys and values into an audit bucket.
func auditPut(t *testing.T, b *Bolt, name []byte, kvs ...[]byte) {
	t.Helper()
	if err := b.db.Update(func(tx *bolt.Tx) error {
		for i := 0; i < len(kvs); i += 2 {
			if err := bucket(tx, name).Put(kvs[i], kvs[i+1]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// auditHas reports whether an audit bucket holds key.
func auditHas(t *testing.T, b *Bolt, name, key []byte) (has bool) {
	t.Helper()
	if err := b.db.View(func(tx *bolt.Tx) error {
		has = bucket(tx, name).Get(key) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return has
}

// auditEntries stores n rows an hour apart from auditT0, each with a
// delivery to hook due at auditT0.
func auditEntries(t *testing.T, b *Bolt, hook string, n int) []audit.Entry {
	t.Helper()
	var es []audit.Entry
	for i := range n {
		es = append(es, auditEntry(t, audit.Row{Action: "auth.logout", ActorID: "u1", OccurredAt: auditT0.Add(time.Duration(i) * time.Hour)}, auditT0, hook))
	}
	if _, err := b.AppendAudit(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	return es
}

// auditGiveUp moves the entries' deliveries to hook to the dead list.
func auditGiveUp(t *testing.T, b *Bolt, hook string, es []audit.Entry) {
	t.Helper()
	for _, e := range es {
		d := audit.Delivery{HookID: hook, RowID: e.Row.ID, OccurredAt: e.Row.OccurredAt, DueAt: e.DueAt, Attempts: 15}
		if err := b.AuditSettle(context.Background(), []audit.Settlement{{Delivery: d, Verdict: audit.Dead}}); err != nil {
			t.Fatal(err)
		}
	}
}

// Retention prunes past a malformed dead or outbox key (the dead-list
// scan once sliced k[:8] and panicked on every run) and past a row that
// does not decode.
func TestAuditBoltPruneGoesOnPastDamagedEntries(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	hook := audit.WebhookConfig{URL: "https://hooks.example.com/"}.ID()
	es := auditEntries(t, b, hook, 3)
	auditGiveUp(t, b, hook, es)
	short, long := []byte{1, 2, 3}, make([]byte, auditDeadLen+1)
	auditPut(t, b, bktAuditDead, short, []byte("{}"), long, []byte("{}"))
	auditPut(t, b, bktAuditPending, short, []byte("{}"))
	auditPut(t, b, bktAuditRows, auditPosKey(es[0].Pos), []byte("not json"))

	cut := es[2].Row.OccurredAt // the last row stays
	if n, err := b.PruneAudit(ctx, cut); err != nil || n != 2 {
		t.Fatalf("PruneAudit = %d, %v; want 2 rows and no error", n, err)
	}
	if auditHas(t, b, bktAuditDead, short) || auditHas(t, b, bktAuditDead, long) || auditHas(t, b, bktAuditPending, short) {
		t.Error("malformed dead or outbox keys were kept; want them deleted")
	}
	if got := auditKeys(t, b, bktAuditRows); got != 1 {
		t.Errorf("%d rows left; want 1 (the undecodable old row pruned too)", got)
	}
	dead, err := b.AuditDeadDeliveries(ctx, nil, 10)
	if err != nil || len(dead) != 1 || dead[0].RowID != es[2].Row.ID {
		t.Fatalf("dead deliveries after pruning = %+v, %v; want the kept row's alone", dead, err)
	}
	if n, err := b.PruneAudit(ctx, cut); err != nil || n != 0 {
		t.Fatalf("second PruneAudit = %d, %v; want 0", n, err)
	}
}

// A dead key of the wrong length that sorts after the retention cut is
// not reached by pruning; listing and replay skip it.
func TestAuditBoltDeadListSkipsMalformedKeys(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	hook := audit.WebhookConfig{URL: "https://hooks.example.com/"}.ID()
	es := auditEntries(t, b, hook, 2)
	auditGiveUp(t, b, hook, es)
	bad := []byte{0xff, 0xff}
	auditPut(t, b, bktAuditDead, bad, []byte("{}"))
	if dead, err := b.AuditDeadDeliveries(ctx, nil, 10); err != nil || len(dead) != 2 {
		t.Fatalf("AuditDeadDeliveries = %d, %v; want the 2 good ones", len(dead), err)
	}
	if n, err := b.AuditReplayDead(ctx, "", "", auditT0, 10); err != nil || n != 2 {
		t.Fatalf("AuditReplayDead = %d, %v; want the 2 good ones", n, err)
	}
	if auditHas(t, b, bktAuditDead, bad) {
		t.Error("replay kept the malformed dead key; want it deleted")
	}
}

// Damaged outbox entries (a short key, a delivery whose row or state does
// not decode) are taken out of the outbox, reported with
// ErrDamagedDelivery, and the good deliveries are returned beside them.
func TestAuditBoltDeliveriesDueSkipsDamagedEntries(t *testing.T) {
	b := auditOpen(t, "")
	ctx := context.Background()
	hook := audit.WebhookConfig{URL: "https://hooks.example.com/"}.ID()
	es := auditEntries(t, b, hook, 4)
	hb, _ := auditHookBytes(hook)
	short := append(clone(hb), 0, 1) // sorts first in the webhook's queue
	auditPut(t, b, bktAuditPending, short, []byte("{}"))
	auditPut(t, b, bktAuditRows, auditPosKey(es[1].Pos), []byte("not json"))
	auditPut(t, b, bktAuditPending, auditOutboxKey(hb, auditT0, auditPosKey(es[2].Pos)), []byte("{torn"))

	if at, ok, err := b.AuditNextDelivery(ctx, hook); err != nil || !ok || !at.Equal(auditT0) {
		t.Fatalf("AuditNextDelivery = %v, %v, %v; want %v past the short key", at, ok, err, auditT0)
	}
	now := auditT0.Add(time.Minute)
	due, err := b.AuditDeliveriesDue(ctx, hook, now, 10)
	if !errors.Is(err, audit.ErrDamagedDelivery) {
		t.Fatalf("AuditDeliveriesDue error = %v; want ErrDamagedDelivery", err)
	}
	for _, want := range []string{hook + "0001", es[1].Row.ID, es[2].Row.ID} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if len(due) != 2 || due[0].RowID != es[0].Row.ID || due[1].RowID != es[3].Row.ID || due[1].Row.ID != es[3].Row.ID {
		t.Fatalf("due = %+v; want the deliveries of rows 0 and 3, rows loaded", due)
	}
	if auditHas(t, b, bktAuditPending, short) {
		t.Error("the short outbox key was kept; want it deleted")
	}
	dead, err := b.AuditDeadDeliveries(ctx, nil, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("dead deliveries = %+v, %v; want the 2 undecodable ones", dead, err)
	}
	for _, d := range dead {
		if (d.RowID != es[1].Row.ID && d.RowID != es[2].Row.ID) || !strings.Contains(d.LastError, "does not decode") {
			t.Errorf("dead delivery %+v; want row 1 or 2, its last error saying what does not decode", d)
		}
	}
	// The next pass is clean.
	if due, err := b.AuditDeliveriesDue(ctx, hook, now, 10); err != nil || len(due) != 2 {
		t.Fatalf("second AuditDeliveriesDue = %d, %v; want the 2 good ones, no error", len(due), err)
	}
}

// Through the audit log: one damaged entry at the front of the outbox no
// longer stops all webhook delivery.
func TestAuditWebhookDeliveryGoesOnPastDamagedOutboxEntries(t *testing.T) {
	var mu sync.Mutex
	got := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.Header.Get(audit.EventIDHeader)] = true
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	b := auditOpen(t, "")
	clk := clock.NewFake(auditT0.Add(time.Minute))
	cfg := audit.WebhookConfig{URL: srv.URL, Secret: auditSecret, Actions: []string{"*"}}
	l := auditNewLog(t, b, clk, audit.Options{Webhooks: []audit.WebhookConfig{cfg}})
	es := auditEntries(t, b, cfg.ID(), 3)
	auditPut(t, b, bktAuditPending, []byte{0}, []byte("{}"))
	auditPut(t, b, bktAuditRows, auditPosKey(es[0].Pos), []byte("not json"))

	if n, err := l.DeliverDue(context.Background()); err != nil || n != 2 {
		t.Fatalf("DeliverDue = %d, %v; want the 2 good deliveries taken", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !got[es[1].Row.ID] || !got[es[2].Row.ID] {
		t.Fatalf("delivered %v; want rows 1 and 2", got)
	}
}
