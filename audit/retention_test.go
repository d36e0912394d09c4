package audit

import (
	"context"
	"testing"
	"time"
)

func TestPruneRemovesOldRowsAndTheirDeliveries(t *testing.T) {
	ft := newFakeTime()
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{Webhooks: []WebhookConfig{hookTo("https://hooks.example.com/")}})
	rows := seed(t, l, ft, 10) // t0 … t0+9s

	n, err := l.Prune(context.Background(), rows[4].OccurredAt)
	if err != nil || n != 4 {
		t.Fatalf("Prune = %d, %v; want 4", n, err)
	}
	p, _ := l.Timeline(context.Background(), Query{})
	if len(p.Rows) != 6 || p.Rows[5].ID != rows[4].ID {
		t.Fatalf("%d rows left, oldest %s; want 6, oldest %s", len(p.Rows), p.Rows[len(p.Rows)-1].ID, rows[4].ID)
	}
	if s, _ := l.Stats(context.Background()); s.Pending != 6 {
		t.Fatalf("pending deliveries = %d; want 6", s.Pending)
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
