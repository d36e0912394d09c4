package authcore

import (
	"context"
	"errors"
	"testing"
)

// TestCheckPasswordBoundsConcurrentHashing: with every argon2id slot taken,
// a sign-in waits for one and gives up with ErrBusy instead of adding one
// more hash's worth of memory.
func TestCheckPasswordBoundsConcurrentHashing(t *testing.T) {
	params := Argon2Params{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}
	svc, st := newSvcForTest(t, params)
	svcAddUser(t, st, params, "busy@example.com", "correct horse battery", false)
	for range cap(svc.hashSlots) {
		svc.hashSlots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller stops waiting at once
	if _, err := svc.CheckPassword(ctx, "busy@example.com", "correct horse battery"); !errors.Is(err, ErrBusy) {
		t.Fatalf("CheckPassword with no free slot: %v; want ErrBusy", err)
	}
	<-svc.hashSlots
	if _, err := svc.CheckPassword(context.Background(), "busy@example.com", "correct horse battery"); err != nil {
		t.Fatalf("CheckPassword with a free slot: %v; want success", err)
	}
	if len(svc.hashSlots) != cap(svc.hashSlots)-1 {
		t.Errorf("slot not released: %d of %d taken; want %d", len(svc.hashSlots), cap(svc.hashSlots), cap(svc.hashSlots)-1)
	}
}
