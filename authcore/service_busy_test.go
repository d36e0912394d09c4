package authcore

import (
	"context"
	"errors"
	"testing"
	"time"
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

// TestCheckPasswordForSkipsARefusedAddress: while the client's address is
// banned the password is not hashed (it could only fail), so a banned
// address cannot hold the hashing slots; while only the account is
// banned it is, so the answer takes a wrong password's time.
func TestCheckPasswordForSkipsARefusedAddress(t *testing.T) {
	params := Argon2Params{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}
	svc, st := newSvcForTest(t, params)
	const pw = "correct horse battery"
	u := svcAddUser(t, st, params, "ban@example.com", pw, false)
	reg, _, _ := newTestRegulator(t, RegulationConfig{MaxRetries: 2, MaxRetriesPerIP: 2, FindTime: time.Minute, BanTime: time.Hour})
	// 192.0.2.1 bans itself on another account; 192.0.2.2 bans u's
	// account (and itself).
	for range 2 {
		try(t, reg, UserAccountKey("someone else"), "192.0.2.1", false)
		try(t, reg, UserAccountKey(u.ID), "192.0.2.2", false)
	}
	for range cap(svc.hashSlots) {
		svc.hashSlots <- struct{}{}
	}
	hashless, cancel := context.WithCancel(context.Background())
	cancel() // a check that wants a slot gives up at once: ErrBusy

	for _, c := range []struct {
		name, account, ip string
		addr              bool
		want              error
	}{
		{"banned address, open account", UserAccountKey("new"), "192.0.2.1", true, ErrInvalidCredentials},
		{"banned address and account", UserAccountKey(u.ID), "192.0.2.2", true, ErrInvalidCredentials},
		{"banned account, open address", UserAccountKey(u.ID), "192.0.2.3", false, ErrBusy},
	} {
		att, err := reg.Begin(context.Background(), c.account, c.ip)
		if err != nil {
			t.Fatal(err)
		}
		if att.Allowed() || att.AddressRefused() != c.addr {
			t.Fatalf("%s: allowed %v, address refused %v; want refused, address %v", c.name, att.Allowed(), att.AddressRefused(), c.addr)
		}
		if _, err := svc.CheckPasswordFor(hashless, att, "ban@example.com", pw); !errors.Is(err, c.want) {
			t.Errorf("%s: %v; want %v", c.name, err, c.want)
		}
	}
}
