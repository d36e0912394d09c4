package authcore

import (
	"context"
	"time"
)

// Store is the persistence authcore needs. Implementations return
// ErrNotFound for missing records and ErrEmailTaken for a duplicate email;
// any other error is a storage failure and makes callers fail closed.
type Store interface {
	// CreateUser inserts u; the email must be unused.
	CreateUser(ctx context.Context, u *User) error
	// UpdateUser reads the user, applies fn to it and stores the result
	// in one transaction, so that two concurrent updates never undo each
	// other; when fn fails nothing is stored and its error is returned as
	// is. With revoke, the same transaction deletes all the user's
	// sessions and increments SessionEpoch, so a password change or a
	// disable and the sign-out everywhere land together or not at all.
	// fn must not change the id, and SessionEpoch never moves back.
	// fn runs inside the write: it must be quick and must not call the
	// store.
	UpdateUser(ctx context.Context, id string, revoke bool, fn func(u *User) error) (*User, error)
	// UpdateUserRenewing is UpdateUser with revoke that carries one
	// session over, in the same transaction: session cur must exist,
	// belong to the user and be of the user's current SessionEpoch, else
	// the answer is ErrNotFound and nothing changes. Then every session
	// of the user ends, cur included, and next is stored with the new
	// epoch. next is cur as stored in that transaction, with next's ID,
	// AuthTime and LastSeen: the store sets the rest of next so. A cur
	// that has not passed the second factor of a user who has one (set
	// up since cur was read; pending or not) is refused with
	// ErrFactorsChanged.
	UpdateUserRenewing(ctx context.Context, id string, cur SessionID, next *Session, fn func(u *User) error) (*User, error)
	// DeleteUser removes the user, its email index entry and its sessions.
	// With keepGroup not empty, a user who is an enabled member of it is
	// deleted only if another enabled member remains, checked in the same
	// transaction; otherwise the answer is ErrLastAdmin.
	DeleteUser(ctx context.Context, id, keepGroup string) error
	// HasOtherMember reports whether a user other than id is an enabled
	// member of group: the check DeleteUser's keepGroup makes. With id
	// "", whether any user is.
	HasOtherMember(ctx context.Context, group, id string) (bool, error)
	UserByID(ctx context.Context, id string) (*User, error)
	// UserByEmail looks up a normalised email.
	UserByEmail(ctx context.Context, email string) (*User, error)
	// ListUsers returns up to limit users whose id sorts after the given
	// id ("" for the first page), in id (creation) order.
	ListUsers(ctx context.Context, after string, limit int) ([]*User, error)
	CountUsers(ctx context.Context) (int, error)

	PutSession(ctx context.Context, s *Session) error
	// PutSessions stores many sessions in one transaction.
	PutSessions(ctx context.Context, ss []*Session) error
	GetSession(ctx context.Context, id SessionID) (*Session, error)
	// DeleteSession returns ErrNotFound when there is no such session:
	// EndSession tells from it which of two ends of one session was
	// first, and only that one is audited.
	DeleteSession(ctx context.Context, id SessionID) error
	// ReplaceSession deletes session old and stores s in its place in one
	// transaction. When old is gone (ended meanwhile) it stores nothing
	// and returns ErrNotFound.
	ReplaceSession(ctx context.Context, old SessionID, s *Session) error
	// UserSessions lists a user's sessions, expired ones included.
	UserSessions(ctx context.Context, userID string) ([]*Session, error)
	// DeleteUserSessions removes all of a user's sessions and says which,
	// and in the same transaction increments the user's SessionEpoch (when
	// the user exists).
	DeleteUserSessions(ctx context.Context, userID string) ([]SessionID, error)
	// TouchSessions raises LastSeen of existing sessions; missing ones
	// are ignored.
	TouchSessions(ctx context.Context, seen map[SessionID]time.Time) error
	// DeleteExpiredSessions removes sessions past ExpiresAt or idle for
	// longer than idle at now, and returns how many.
	DeleteExpiredSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error)

	// GetSecret returns a named opaque value (callers seal what is secret).
	GetSecret(ctx context.Context, name string) ([]byte, error)
	// PutSecret stores a named value. With ifAbsent it keeps an existing
	// value and returns it, so concurrent first starts agree on one value.
	PutSecret(ctx context.Context, name string, value []byte, ifAbsent bool) ([]byte, error)

	// Ping checks that the store is readable.
	Ping(ctx context.Context) error

	// MFAStore keeps TOTP, recovery codes and regulation state.
	MFAStore
}
