package store

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// authCreateIn creates a user in groups, disabled or not.
func authCreateIn(t *testing.T, st *Bolt, email string, disabled bool, groups ...string) *authcore.User {
	t.Helper()
	u := authNewUser(email)
	u.Groups, u.Disabled = groups, disabled
	if err := st.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("CreateUser(%s): %v", email, err)
	}
	return u
}

func TestDeleteUserKeepsLastAdmin(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	a := authCreateIn(t, st, "a@example.com", false, "admins")
	b := authCreateIn(t, st, "b@example.com", false, "admins", "dev")
	authCreateIn(t, st, "off@example.com", true, "admins") // disabled: does not count
	plain := authCreateIn(t, st, "plain@example.com", false, "dev")

	if err := st.DeleteUser(ctx, a.ID, "admins"); err != nil {
		t.Fatalf("deleting one of two admins: %v", err)
	}
	if err := st.DeleteUser(ctx, b.ID, "admins"); !errors.Is(err, authcore.ErrLastAdmin) {
		t.Fatalf("deleting the last enabled admin = %v; want ErrLastAdmin", err)
	}
	if _, err := st.UserByID(ctx, b.ID); err != nil {
		t.Fatalf("the refused delete removed the user: %v", err)
	}
	if err := st.DeleteUser(ctx, plain.ID, "admins"); err != nil {
		t.Fatalf("deleting a non-admin while one admin is left: %v", err)
	}
	// Without a group to keep, nothing is refused (store-level callers).
	if err := st.DeleteUser(ctx, b.ID, ""); err != nil {
		t.Fatalf("DeleteUser with no group to keep: %v", err)
	}
	authCheckIndexes(t, st)
}

// Two last admins deleting each other (or themselves) at the same moment:
// the check and the delete share one transaction, so one is refused.
func TestDeleteUserLastAdminRace(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	for round := 0; round < 20; round++ {
		a := authCreateIn(t, st, "a@example.com", false, "admins")
		b := authCreateIn(t, st, "b@example.com", false, "admins")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, u := range []*authcore.User{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = st.DeleteUser(ctx, u.ID, "admins")
			}()
		}
		wg.Wait()
		ok, refused := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, authcore.ErrLastAdmin):
				refused++
			default:
				t.Fatalf("DeleteUser: %v", err)
			}
		}
		if ok != 1 || refused != 1 {
			t.Fatalf("round %d: %d deletes succeeded and %d were refused; want 1 and 1", round, ok, refused)
		}
		n, err := st.CountUsers(ctx)
		if err != nil || n != 1 {
			t.Fatalf("round %d: %d users left (%v); want 1", round, n, err)
		}
		for _, u := range []*authcore.User{a, b} {
			st.DeleteUser(ctx, u.ID, "")
		}
	}
}

func TestHasOtherMember(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	a := authCreateIn(t, st, "a@example.com", false, "admins")
	authCreateIn(t, st, "off@example.com", true, "admins")
	authCreateIn(t, st, "dev@example.com", false, "dev")
	if other, err := st.HasOtherMember(ctx, "admins", a.ID); err != nil || other {
		t.Errorf("HasOtherMember with only a disabled other admin = %v, %v; want false", other, err)
	}
	b := authCreateIn(t, st, "b@example.com", false, "admins")
	if other, err := st.HasOtherMember(ctx, "admins", a.ID); err != nil || !other {
		t.Errorf("HasOtherMember with b = %v, %v; want true", other, err)
	}
	if other, err := st.HasOtherMember(ctx, "admins", b.ID); err != nil || !other {
		t.Errorf("HasOtherMember for b = %v, %v; want true (a)", other, err)
	}
	// No id: whether the group has any enabled member.
	for group, want := range map[string]bool{"admins": true, "dev": true, "ops": false} {
		if any, err := st.HasOtherMember(ctx, group, ""); err != nil || any != want {
			t.Errorf("HasOtherMember(%s, no id) = %v, %v; want %v", group, any, err, want)
		}
	}
	if _, err := st.HasOtherMember(ctx, "admins", "not a uuid"); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("HasOtherMember of a malformed id: %v; want ErrNotFound", err)
	}
}
