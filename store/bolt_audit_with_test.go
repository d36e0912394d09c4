package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

func openTemp(t *testing.T) *Bolt {
	t.Helper()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "sigra.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// A row and the deletion it tells of are one transaction: both are
// stored, or, when the deletion is refused, neither, with the other rows
// of the call kept out too (the audit log commits them again without
// it).
func TestAuditRowWithItsChange(t *testing.T) {
	ctx := context.Background()
	b := openTemp(t)
	now := time.Now()
	gone := authCreate(t, b, "gone@example.com")
	row := func(action, subject string) audit.Row {
		return audit.Row{Action: action, SubjectID: subject, Outcome: "success", OccurredAt: now}
	}

	e := auditEntry(t, row("account.deletion_execute", gone.ID), now, "0123456789abcdef")
	e.With = b.DeleteUserIn(gone.ID, "")
	if ins, err := b.AppendAudit(ctx, []audit.Entry{e}); err != nil || !ins[0] {
		t.Fatalf("AppendAudit with the deletion: %v, %v", ins, err)
	}
	if _, err := b.UserByID(ctx, gone.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("the row is stored and the user is not deleted: %v", err)
	}
	if n := auditKeys(t, b, bktAuditRows); n != 1 {
		t.Errorf("%d rows; want the deletion's", n)
	}

	// Refused inside the transaction: the only admin.
	last := authCreate(t, b, "last@example.com")
	if _, err := b.UpdateUser(ctx, last.ID, false, func(u *authcore.User) error { u.Groups = []string{"admins"}; return nil }); err != nil {
		t.Fatal(err)
	}
	other := auditEntry(t, row("auth.logout", last.ID), now, "0123456789abcdef")
	refused := auditEntry(t, row("account.deletion_execute", last.ID), now, "0123456789abcdef")
	refused.With = b.DeleteUserIn(last.ID, "admins")
	_, err := b.AppendAudit(ctx, []audit.Entry{other, refused})
	if !errors.Is(err, authcore.ErrLastAdmin) {
		t.Fatalf("AppendAudit with a refused deletion: %v; want ErrLastAdmin", err)
	}
	// It names the entry to blame, so that the log commits the other
	// again at once.
	var one *audit.EntryError
	if !errors.As(err, &one) || one.Index != 1 {
		t.Errorf("the refusal %v (%+v) does not name entry 1", err, one)
	}
	if _, err := b.UserByID(ctx, last.ID); err != nil {
		t.Errorf("the last admin was deleted: %v", err)
	}
	if n := auditKeys(t, b, bktAuditRows); n != 1 {
		t.Errorf("%d rows after the refusal; want none added", n)
	}
	if n := auditKeys(t, b, bktAuditPending); n != 1 {
		t.Errorf("%d deliveries queued after the refusal; want none added", n)
	}

	// An update, and a reset of an app the user does not have (refused:
	// no row for it).
	upd := auditEntry(t, row("admin.user.disable", last.ID), now)
	upd.With = b.UpdateUserIn(last.ID, true, func(u *authcore.User) error { u.Disabled = true; return nil })
	reset := auditEntry(t, row("mfa.totp.removed", last.ID), now)
	reset.With = b.DeleteTOTPIn(last.ID, true, true, now)
	if _, err := b.AppendAudit(ctx, []audit.Entry{upd}); err != nil {
		t.Fatalf("AppendAudit with the update: %v", err)
	}
	if u, err := b.UserByID(ctx, last.ID); err != nil || !u.Disabled {
		t.Errorf("the row is stored and the user is not disabled: %+v, %v", u, err)
	}
	if _, err := b.AppendAudit(ctx, []audit.Entry{reset}); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("AppendAudit with a reset of no app: %v; want ErrNotFound", err)
	}
	if n := auditKeys(t, b, bktAuditRows); n != 2 {
		t.Errorf("%d rows; want the deletion's and the update's", n)
	}

	// A row stored already cannot say whether its change was made with
	// it: refused, not answered as stored with the change left unmade.
	again := auditEntry(t, row("admin.user.enable", last.ID), now)
	if _, err := b.AppendAudit(ctx, []audit.Entry{again}); err != nil {
		t.Fatal(err)
	}
	again.With = b.UpdateUserIn(last.ID, false, func(u *authcore.User) error { u.Disabled = false; return nil })
	if _, err := b.AppendAudit(ctx, []audit.Entry{again}); !errors.Is(err, audit.ErrInvalidRow) {
		t.Errorf("AppendAudit of a stored row with a change: %v; want ErrInvalidRow", err)
	}
	if u, err := b.UserByID(ctx, last.ID); err != nil || !u.Disabled {
		t.Errorf("the change of a row stored already was made: %+v, %v", u, err)
	}

	// A change made for another store's transaction is refused, not
	// made in the wrong file.
	elsewhere := openTemp(t)
	stray := auditEntry(t, row("account.deletion_execute", last.ID), now)
	stray.With = elsewhere.DeleteUserIn(last.ID, "")
	if _, err := b.AppendAudit(ctx, []audit.Entry{stray}); err == nil {
		t.Error("AppendAudit ran another store's change")
	}
	if _, err := b.UserByID(ctx, last.ID); err != nil {
		t.Errorf("the user was deleted by another store's change: %v", err)
	}
}
