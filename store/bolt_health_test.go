package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A disk that stalls holds bbolt's commit for as long as it stalls (here
// a write transaction left open stands for it): Health gives up when its
// context ends instead of hanging with it, a second caller waits for the
// check running rather than start another, and once the store moves
// again the check ends and Health passes.
func TestHealthDoesNotHangOnAStalledWrite(t *testing.T) {
	b := openTemp(t)
	held, release := make(chan struct{}), make(chan struct{})
	writer := make(chan error, 1)
	go func() {
		// Through the store's own update, as every write goes: one
		// straight to bbolt would look like another program's commit,
		// and a later check would take the file for written over.
		writer <- b.update(func(*bolt.Tx) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	b.health.okAt.Store(0) // no recent commit: Health must write to know

	running := func() *healthCheck {
		b.health.mu.Lock()
		defer b.health.mu.Unlock()
		return b.health.running
	}
	var first *healthCheck
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		got := make(chan error, 1)
		go func() { got <- b.Health(ctx) }()
		var err error
		select {
		case err = <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("Health %d still waiting 5 s after its context ended; want it to give up with it", i+1)
		}
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "has not finished") {
			t.Fatalf("Health %d with the store's writes stalled: %v; want the check reported unfinished", i+1, err)
		}
		c := running()
		if c == nil {
			t.Fatalf("no check running after Health %d gave up; want it still waiting for the store", i+1)
		}
		if first == nil {
			first = c
		} else if c != first {
			t.Fatal("the second Health started a check of its own; want it to wait for the one running")
		}
	}

	close(release)
	released = true
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
	// The stalled check ends; the next Health makes a check of its own,
	// which reads the file as it is now.
	for deadline := time.Now().Add(5 * time.Second); running() != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled check did not end once the store moved")
		}
	}
	b.health.probedAt = time.Time{} // the check's own write again, not its last answer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health once the store moves again: %v", err)
	}
	if v, err := b.GetSecret(ctx, secretHealthProbe); err != nil || len(v) == 0 {
		t.Errorf("the test write, once the store moved: %q, %v", v, err)
	}
}

// A check can stall before any write: statfs on a hung network mount, a
// read from a disk that stopped answering. Health gives up with its
// context there too, and the next check after the stall ends passes.
func TestHealthDoesNotHangOnAStalledStat(t *testing.T) {
	b := openTemp(t)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	old := freeSpace
	freeSpace = func(dir string) (uint64, bool) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return old(dir)
	}
	t.Cleanup(func() { freeSpace = old })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got := make(chan error, 1)
	go func() { got <- b.Health(ctx) }()
	select {
	case err := <-got:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "has not finished") {
			t.Fatalf("Health with statfs stalled: %v; want the check reported unfinished", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Health still waiting 5 s after its context ended; want it to give up with it")
	}
	select { // the check did reach the stalled call
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the check never called freeSpace; this test no longer stalls it")
	}

	close(release)
	released = true
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := b.Health(ctx2); err != nil {
		t.Fatalf("Health once statfs answers again: %v", err)
	}
}
