package audit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/hmacsig"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)

const waitLimit = 10 * time.Second // generous: a hang fails, a pass is fast

// fakeTime is a clock whose timers fire when the test advances it.
type fakeTime struct {
	*clock.Fake
	mu      sync.Mutex
	waiters []waiter
	// asked receives the deadline of every WakeAt call, so a test knows
	// that a loop is waiting and until when.
	asked chan time.Time
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeTime() *fakeTime {
	return &fakeTime{Fake: clock.NewFake(t0), asked: make(chan time.Time, 1000)}
}

func (f *fakeTime) WakeAt(at time.Time) <-chan time.Time {
	c := make(chan time.Time, 1)
	f.mu.Lock()
	now := f.Now()
	if !at.After(now) {
		c <- now
	} else {
		f.waiters = append(f.waiters, waiter{at, c})
	}
	f.mu.Unlock()
	f.asked <- at
	return c
}

// Advance moves the clock and fires the timers that are due.
func (f *fakeTime) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Fake.Advance(d)
	now := f.Now()
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.at.After(now) {
			w.c <- now
		} else {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}

// sleeping waits until a loop sets a timer for later than the clock's
// present, and returns how far ahead. Deadlines set before the clock last
// moved are skipped.
func (f *fakeTime) sleeping(t *testing.T) time.Duration {
	t.Helper()
	for {
		select {
		case at := <-f.asked:
			if now := f.Now(); at.After(now) {
				return at.Sub(now)
			}
		case <-time.After(waitLimit):
			t.Fatal("no timer was set")
			return 0
		}
	}
}

func newTestLog(t *testing.T, st Store, ft *fakeTime, opts Options) *Log {
	t.Helper()
	if opts.WakeAt == nil {
		opts.WakeAt = ft.WakeAt
	}
	if opts.ErrorLog == nil {
		opts.ErrorLog = slog.New(slog.DiscardHandler)
	}
	l, err := New(nil, ft, st, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustRecord(t *testing.T, l *Log, r Row) Row {
	t.Helper()
	got, err := l.RecordRow(context.Background(), r)
	if err != nil {
		t.Fatalf("Record(%s): %v", r.Action, err)
	}
	return got
}

func recv[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatal("channel closed")
		}
		return v
	case <-time.After(waitLimit):
		t.Fatal("nothing received")
	}
	var zero T
	return zero
}

// receiver is a webhook endpoint that verifies signatures like a real
// receiver would and reports what it accepted.
type receiver struct {
	*httptest.Server
	secret []byte
	now    func() time.Time
	got    chan delivered
	// hits receives the number of every request, accepted or not.
	hits chan int
	// status, when set, answers each request (before verifying).
	mu     sync.Mutex
	status func(n int) int
	n      int
}

type delivered struct {
	eventID string
	row     Row
	body    []byte
	header  http.Header
}

func newReceiver(t *testing.T, secret []byte, now func() time.Time) *receiver {
	t.Helper()
	rc := &receiver{secret: secret, now: now, got: make(chan delivered, 10000), hits: make(chan int, 10000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) setStatus(f func(n int) int) {
	rc.mu.Lock()
	rc.status = f
	rc.mu.Unlock()
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.n++
	n, status := rc.n, rc.status
	rc.mu.Unlock()
	rc.hits <- n
	if status != nil {
		if code := status(n); code != 0 {
			w.WriteHeader(code)
			return
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	if err := hmacsig.Verify(r.Header.Get(hmacsig.Header), body, [][]byte{rc.secret}, rc.now(), 5*time.Minute); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var row Row
	if err := json.Unmarshal(body, &row); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	rc.got <- delivered{eventID: r.Header.Get(EventIDHeader), row: row, body: body, header: r.Header.Clone()}
}

// sampleRow is a valid row; tests change what they need.
func sampleRow(action string) Row {
	return Row{Action: action, ActorType: ActorUser, ActorID: "u1", Outcome: OutcomeSuccess}
}

var errBoom = errors.New("boom")

// waitClosed waits for c to be closed.
func waitClosed(t *testing.T, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(waitLimit):
		t.Fatal("still running")
	}
}
