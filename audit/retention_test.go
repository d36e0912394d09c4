package audit

import (
	"context"
	"testing"
	"time"
)

// Rows older than the cut go, unless a delivery of theirs is still
// pending (the receiver has been down for longer than the retention):
// those stay until it is settled.
func TestPruneRemovesOldRowsAndTheirDeliveries(t *testing.T) {
	ft := newFakeTime()
	st := newMemStore()
	hook := hookTo("https://hooks.example.com/")
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hook}})
	rows := seed(t, l, ft, 10) // t0 … t0+9s
	ctx := context.Background()

	if n, err := l.Prune(ctx, rows[4].OccurredAt); err != nil || n != 0 {
		t.Fatalf("Prune with every delivery pending = %d, %v; want 0", n, err)
	}
	ds, err := st.AuditDeliveriesDue(ctx, hook.ID(), ft.Now().Add(time.Hour), 100)
	if err != nil || len(ds) != 10 {
		t.Fatalf("deliveries due = %d, %v; want 10", len(ds), err)
	}
	var ss []Settlement
	for _, d := range ds {
		if d.OccurredAt.Before(rows[3].OccurredAt) { // rows 0 to 2 delivered; row 3's still pending
			ss = append(ss, Settlement{Delivery: d, Verdict: Delivered})
		}
	}
	if err := st.AuditSettle(ctx, ss); err != nil {
		t.Fatal(err)
	}
	n, err := l.Prune(ctx, rows[4].OccurredAt)
	if err != nil || n != 3 {
		t.Fatalf("Prune = %d, %v; want 3", n, err)
	}
	p, _ := l.Timeline(ctx, Query{})
	if len(p.Rows) != 7 || p.Rows[6].ID != rows[3].ID {
		t.Fatalf("%d rows left, oldest %s; want 7, oldest %s (its delivery pending)", len(p.Rows), p.Rows[len(p.Rows)-1].ID, rows[3].ID)
	}
	if s, _ := l.Stats(ctx); s.Pending != 7 {
		t.Fatalf("pending deliveries = %d; want 7", s.Pending)
	}
}

func TestRunRetentionPrunesOnScheduleAndStops(t *testing.T) {
	ft := newFakeTime()
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{})
	seed(t, l, ft, 3) // t0, t0+1s, t0+2s; clock now t0+3s

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.RunRetention(ctx, time.Hour, 24*time.Hour)
		close(done)
	}()
	if d := ft.sleeping(t); d != time.Hour { // the first run has finished
		t.Fatalf("retention waits %v; want 1h", d)
	}
	if n := st.rowCount(); n != 3 {
		t.Fatalf("rows after the first run = %d; want 3 (none older than 24h)", n)
	}
	ft.Advance(24 * time.Hour) // the newest row is now 24h+1s old
	ft.sleeping(t)             // the second run has finished
	if n := st.rowCount(); n != 0 {
		t.Fatalf("rows after a day = %d; want 0", n)
	}
	cancel()
	waitClosed(t, done)
}

func TestRunRetentionSurvivesPanics(t *testing.T) {
	ft := newFakeTime()
	st := newMemStore()
	st.panicPrune = true
	l := newTestLog(t, st, ft, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.RunRetention(ctx, time.Minute, time.Hour)
		close(done)
	}()
	ft.sleeping(t) // panicked, recovered, waiting for the next run
	ft.Advance(time.Minute)
	ft.sleeping(t) // and again
	cancel()
	waitClosed(t, done)
}

func TestStartRunsRetentionAndCloseStopsIt(t *testing.T) {
	ft := newFakeTime()
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{Retention: time.Hour, RetentionEvery: time.Minute})
	seed(t, l, ft, 2)
	ft.Advance(2 * time.Hour)
	l.Start(context.Background())
	// The sender and retention both wait on timers; find the retention one.
	for ft.sleeping(t) != time.Minute {
	}
	if n := st.rowCount(); n != 0 {
		t.Fatalf("rows = %d; want 0 after the retention run", n)
	}
	l.Close() // must return: both loops stop
}
