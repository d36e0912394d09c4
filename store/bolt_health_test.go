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
// a write transaction left open stands for it): Health gives up on its
// test write when its context ends instead of hanging with it, a second
// caller does not start another, and once the store moves again the write
// ends and Health passes.
func TestHealthDoesNotHangOnAStalledWrite(t *testing.T) {
	b := openTemp(t)
	held, release := make(chan struct{}), make(chan struct{})
	writer := make(chan error, 1)
	go func() {
		writer <- b.db.Update(func(*bolt.Tx) error {
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

	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		start := time.Now()
		err := b.Health(ctx)
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "has not finished") {
			t.Fatalf("Health %d with the store's writes stalled: %v; want the test write reported unfinished", i+1, err)
		}
		if waited := time.Since(start); waited > 5*time.Second {
			t.Fatalf("Health %d took %s; want it to end with its context", i+1, waited)
		}
	}
	b.health.probeMu.Lock()
	running := b.health.probing != nil
	b.health.probeMu.Unlock()
	if !running {
		t.Fatal("no test write running after the stalled checks; want the first one still waiting for the store")
	}

	close(release)
	released = true
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health once the store moves again: %v", err)
	}
	if v, err := b.GetSecret(ctx, secretHealthProbe); err != nil || len(v) == 0 {
		t.Errorf("the test write, once the store moved: %q, %v", v, err)
	}
}
