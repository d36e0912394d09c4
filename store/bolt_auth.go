package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

var (
	_ authcore.Store             = (*Bolt)(nil)
	_ authcore.ChangeStore       = (*Bolt)(nil)
	_ authcore.SecretChangeStore = (*Bolt)(nil)
)

func userKey(id string) ([]byte, bool) {
	u, err := uuid.Parse(id)
	if err != nil {
		return nil, false
	}
	return u[:], true
}

func getUser(tx *bolt.Tx, key []byte) (*authcore.User, error) {
	v := bucket(tx, bktUsers).Get(key)
	if v == nil {
		return nil, authcore.ErrNotFound
	}
	return decodeUser(key, v)
}

// decodeUser decodes the user stored under key. A record that does not
// decode is named, so an operator can tell which one is damaged.
func decodeUser(key, v []byte) (*authcore.User, error) {
	var u authcore.User
	if err := json.Unmarshal(v, &u); err != nil {
		id := fmt.Sprintf("%x", key)
		if k, err := uuid.FromBytes(key); err == nil {
			id = k.String()
		}
		return nil, fmt.Errorf("the stored record of user %s does not decode (damaged; restore the store from a backup): %w", id, err)
	}
	return &u, nil
}

func putUser(tx *bolt.Tx, key []byte, u *authcore.User) error {
	v, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return bucket(tx, bktUsers).Put(key, v)
}

// CreateUser implements authcore.Store.
func (b *Bolt) CreateUser(ctx context.Context, u *authcore.User) error {
	key, ok := userKey(u.ID)
	if !ok {
		return fmt.Errorf("%w: user id %q is not a UUID", authcore.ErrInvalidInput, u.ID)
	}
	return b.update(func(tx *bolt.Tx) error { return createUser(tx, key, u) })
}

// CreateUserIn implements authcore.ChangeStore: CreateUser, made in a
// transaction of this store that runs for the audit row telling of it.
func (b *Bolt) CreateUserIn(u *authcore.User) func(tx any) error {
	return b.changeIn(u.ID, func(tx *bolt.Tx, key []byte) error { return createUser(tx, key, u) })
}

func createUser(tx *bolt.Tx, key []byte, u *authcore.User) error {
	byEmail := bucket(tx, bktUsersByEmail)
	if byEmail.Get([]byte(u.Email)) != nil {
		return authcore.ErrEmailTaken
	}
	if bucket(tx, bktUsers).Get(key) != nil {
		return fmt.Errorf("user id %s exists", u.ID)
	}
	if err := byEmail.Put([]byte(u.Email), key); err != nil {
		return err
	}
	return putUser(tx, key, u)
}

// UpdateUser implements authcore.Store.
func (b *Bolt) UpdateUser(ctx context.Context, id string, revoke bool, fn func(u *authcore.User) error) (u *authcore.User, err error) {
	key, ok := userKey(id)
	if !ok {
		return nil, authcore.ErrNotFound
	}
	err = b.update(func(tx *bolt.Tx) error {
		u, err = updateUser(tx, key, revoke, fn)
		return err
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// UpdateUserIn implements authcore.ChangeStore: UpdateUser, made in a
// transaction of this store that runs for the audit row telling of it.
func (b *Bolt) UpdateUserIn(id string, revoke bool, fn func(u *authcore.User) error) func(tx any) error {
	return b.changeIn(id, func(tx *bolt.Tx, key []byte) error {
		_, err := updateUser(tx, key, revoke, fn)
		return err
	})
}

// changeIn is fn, a change to the user id (key, its key), as one for a
// transaction of this store that runs for something else
// (authcore.ChangeStore).
func (b *Bolt) changeIn(id string, fn func(tx *bolt.Tx, key []byte) error) func(tx any) error {
	return b.inTx(func(tx *bolt.Tx) error {
		key, ok := userKey(id)
		if !ok {
			return authcore.ErrNotFound
		}
		return fn(tx, key)
	})
}

// inTx is fn as a change to run in a write transaction of this store that
// another caller opened (ownTx).
func (b *Bolt) inTx(fn func(tx *bolt.Tx) error) func(tx any) error {
	return func(tx any) error {
		btx, err := b.ownTx(tx)
		if err != nil {
			return err
		}
		return fn(btx)
	}
}

// UpdateUserRenewing implements authcore.Store.
func (b *Bolt) UpdateUserRenewing(ctx context.Context, id string, cur authcore.SessionID, next *authcore.Session, fn func(u *authcore.User) error) (u *authcore.User, err error) {
	key, ok := userKey(id)
	if !ok {
		return nil, authcore.ErrNotFound
	}
	err = b.update(func(tx *bolt.Tx) error {
		u, err = updateUserRenewing(tx, key, id, cur, next, fn)
		return err
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// UpdateUserRenewingIn implements authcore.ChangeStore: UpdateUserRenewing,
// made in a transaction of this store that runs for the audit row
// telling of it.
func (b *Bolt) UpdateUserRenewingIn(id string, cur authcore.SessionID, next *authcore.Session, fn func(u *authcore.User) error) func(tx any) error {
	return b.changeIn(id, func(tx *bolt.Tx, key []byte) error {
		_, err := updateUserRenewing(tx, key, id, cur, next, fn)
		return err
	})
}

func updateUserRenewing(tx *bolt.Tx, key []byte, id string, cur authcore.SessionID, next *authcore.Session, fn func(u *authcore.User) error) (*authcore.User, error) {
	old, err := getUser(tx, key)
	if err != nil {
		return nil, err
	}
	// cur must still be live: ended (a logout, a revoke) or of an
	// earlier epoch, it must not come back as next.
	v := bucket(tx, bktSessions).Get(cur[:])
	if v == nil {
		return nil, authcore.ErrNotFound
	}
	s, err := decodeSession(v)
	if err != nil {
		return nil, err
	}
	if s.UserID != id || s.UserEpoch != old.SessionEpoch {
		return nil, authcore.ErrNotFound
	}
	// next is cur as stored now, not as the request read it, with only
	// its new id and times, and Plain if renewed over plain HTTP: a
	// change made meanwhile (pending for a second factor set up since,
	// with its short expiry) carries over.
	renewed := s.Clone()
	renewed.ID, renewed.AuthTime, renewed.LastSeen = next.ID, next.AuthTime, next.LastSeen
	renewed.Plain = renewed.Plain || next.Plain
	// A second factor set up since cur was read (pending or not yet):
	// cur must not go on as a session that passed none.
	if old.SecondFactor && !renewed.MFA() {
		return nil, authcore.ErrFactorsChanged
	}
	u, err := updateUser(tx, key, true, fn)
	if err != nil {
		return nil, err
	}
	renewed.UserEpoch = u.SessionEpoch
	*next = *renewed
	return u, putSession(tx, next)
}

// updateUser is UpdateUser inside a write transaction.
func updateUser(tx *bolt.Tx, key []byte, revoke bool, fn func(u *authcore.User) error) (*authcore.User, error) {
	old, err := getUser(tx, key)
	if err != nil {
		return nil, err
	}
	u := old.Clone()
	if err := fn(u); err != nil {
		return nil, err
	}
	if u.ID != old.ID {
		return nil, fmt.Errorf("%w: a user's id cannot change (%s to %q)", authcore.ErrInvalidInput, old.ID, u.ID)
	}
	// The epoch only moves forward, whatever fn did to it.
	u.SessionEpoch = max(u.SessionEpoch, old.SessionEpoch)
	if revoke {
		if _, err := deleteUserSessions(tx, key); err != nil {
			return nil, err
		}
		u.SessionEpoch++
	}
	if old.Email != u.Email {
		byEmail := bucket(tx, bktUsersByEmail)
		if byEmail.Get([]byte(u.Email)) != nil {
			return nil, authcore.ErrEmailTaken
		}
		if err := byEmail.Delete([]byte(old.Email)); err != nil {
			return nil, err
		}
		if err := byEmail.Put([]byte(u.Email), key); err != nil {
			return nil, err
		}
	}
	return u, putUser(tx, key, u)
}

// DeleteUser implements authcore.Store. It removes everything kept for
// the user: sessions, second factors, recovery codes, regulation state.
func (b *Bolt) DeleteUser(ctx context.Context, id, keepGroup string) error {
	return b.update(func(tx *bolt.Tx) error { return deleteUser(tx, id, keepGroup) })
}

// DeleteUserIn implements authcore.ChangeStore: DeleteUser, made in a
// transaction of this store that runs for the audit row telling of it.
func (b *Bolt) DeleteUserIn(id, keepGroup string) func(tx any) error {
	return b.changeIn(id, func(tx *bolt.Tx, _ []byte) error { return deleteUser(tx, id, keepGroup) })
}

// ownTx is tx as a write transaction of this store's file.
func (b *Bolt) ownTx(tx any) (*bolt.Tx, error) {
	btx, ok := tx.(*bolt.Tx)
	if !ok || btx.DB() != b.db || !btx.Writable() {
		return nil, fmt.Errorf("storage %s: a change given a transaction that is not this store's (%T)", b.path, tx)
	}
	return btx, nil
}

func deleteUser(tx *bolt.Tx, id, keepGroup string) error {
	key, ok := userKey(id)
	if !ok {
		return authcore.ErrNotFound
	}
	u, err := getUser(tx, key)
	if err != nil {
		return err
	}
	if keepGroup != "" && !u.Disabled && u.InGroup(keepGroup) {
		other, err := otherMember(tx, key, keepGroup)
		if err != nil {
			return err
		}
		if !other {
			return authcore.ErrLastAdmin
		}
	}
	if _, err := deleteUserSessions(tx, key); err != nil {
		return err
	}
	// Second-factor secrets, recovery codes and regulation state go
	// with the account, in the same transaction.
	if err := deleteUserMFA(tx, key, id); err != nil {
		return err
	}
	if err := bucket(tx, bktUsersByEmail).Delete([]byte(u.Email)); err != nil {
		return err
	}
	return bucket(tx, bktUsers).Delete(key)
}

// HasOtherMember implements authcore.Store.
func (b *Bolt) HasOtherMember(ctx context.Context, group, id string) (other bool, err error) {
	var key []byte // none for id "": every member is another
	if id != "" {
		var ok bool
		if key, ok = userKey(id); !ok {
			return false, authcore.ErrNotFound
		}
	}
	err = b.view(func(tx *bolt.Tx) error {
		other, err = otherMember(tx, key, group)
		return err
	})
	return other, err
}

// otherMember reports whether a user other than key is an enabled member
// of group. It reads every user in the worst case; deletions are rare.
func otherMember(tx *bolt.Tx, key []byte, group string) (bool, error) {
	c := bucket(tx, bktUsers).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if bytes.Equal(k, key) {
			continue
		}
		u, err := decodeUser(k, v)
		if err != nil {
			return false, err
		}
		if !u.Disabled && u.InGroup(group) {
			return true, nil
		}
	}
	return false, nil
}

// UserByID implements authcore.Store.
func (b *Bolt) UserByID(ctx context.Context, id string) (u *authcore.User, err error) {
	key, ok := userKey(id)
	if !ok {
		return nil, authcore.ErrNotFound
	}
	err = b.view(func(tx *bolt.Tx) error {
		u, err = getUser(tx, key)
		return err
	})
	return u, err
}

// UserByEmail implements authcore.Store.
func (b *Bolt) UserByEmail(ctx context.Context, email string) (u *authcore.User, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		key := bucket(tx, bktUsersByEmail).Get([]byte(email))
		if key == nil {
			return authcore.ErrNotFound
		}
		u, err = getUser(tx, key)
		return err
	})
	return u, err
}

// ListUsers implements authcore.Store.
func (b *Bolt) ListUsers(ctx context.Context, after string, limit int) ([]*authcore.User, error) {
	var out []*authcore.User
	err := b.view(func(tx *bolt.Tx) error {
		c := bucket(tx, bktUsers).Cursor()
		var k, v []byte
		if after == "" {
			k, v = c.First()
		} else {
			start, ok := userKey(after)
			if !ok {
				return fmt.Errorf("%w: cursor", authcore.ErrInvalidInput)
			}
			k, v = c.Seek(start)
			if k != nil && bytes.Equal(k, start) {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			u, err := decodeUser(k, v)
			if err != nil {
				return err
			}
			out = append(out, u)
		}
		return nil
	})
	return out, err
}

// CountUsers implements authcore.Store.
func (b *Bolt) CountUsers(ctx context.Context) (n int, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		n = bucket(tx, bktUsers).Stats().KeyN
		return nil
	})
	return n, err
}

func sessionUserKey(userKey []byte, id authcore.SessionID) []byte {
	k := make([]byte, 0, len(userKey)+len(id))
	return append(append(k, userKey...), id[:]...)
}

func putSession(tx *bolt.Tx, s *authcore.Session) error {
	uk, ok := userKey(s.UserID)
	if !ok {
		return fmt.Errorf("%w: session user id %q", authcore.ErrInvalidInput, s.UserID)
	}
	v, err := json.Marshal(s)
	if err != nil {
		return err
	}
	sessions := bucket(tx, bktSessions)
	cur := sessionTimesOf(s)
	if prev := sessions.Get(s.ID[:]); prev == nil {
		err = indexSession(tx, s.ID, cur)
	} else if old, derr := decodeSessionTimes(prev); derr == nil {
		err = reindexSession(tx, s.ID, old, cur)
	} else {
		err = indexSession(tx, s.ID, cur) // the old entries, if any, are stale now
	}
	if err != nil {
		return err
	}
	if err := sessions.Put(s.ID[:], v); err != nil {
		return err
	}
	return bucket(tx, bktSessionsByUser).Put(sessionUserKey(uk, s.ID), nil)
}

// PutSession implements authcore.Store.
func (b *Bolt) PutSession(ctx context.Context, s *authcore.Session) error {
	return b.update(func(tx *bolt.Tx) error { return putSession(tx, s) })
}

// PutSessionIn implements authcore.ChangeStore: PutSession in tx, if the
// user's second factor agrees with the session's pending state. A user
// gone meanwhile is no matter: their session is refused at its first use.
func (b *Bolt) PutSessionIn(s *authcore.Session) func(tx any) error {
	return b.inTx(func(tx *bolt.Tx) error {
		if uk, ok := userKey(s.UserID); ok {
			u, err := getUser(tx, uk)
			switch {
			case err == nil && s.Pending != (u.SecondFactor && !s.HasAMR(authcore.AMRMFA)):
				return authcore.ErrFactorsChanged
			case err != nil && !errors.Is(err, authcore.ErrNotFound):
				return err
			}
		}
		return putSession(tx, s)
	})
}

// PutSessions implements authcore.Store.
func (b *Bolt) PutSessions(ctx context.Context, ss []*authcore.Session) error {
	return b.update(func(tx *bolt.Tx) error {
		for _, s := range ss {
			if err := putSession(tx, s); err != nil {
				return err
			}
		}
		return nil
	})
}

func decodeSession(v []byte) (*authcore.Session, error) {
	var s authcore.Session
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("decoding session: %w", err)
	}
	return &s, nil
}

// GetSession implements authcore.Store.
func (b *Bolt) GetSession(ctx context.Context, id authcore.SessionID) (s *authcore.Session, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		v := bucket(tx, bktSessions).Get(id[:])
		if v == nil {
			return authcore.ErrNotFound
		}
		s, err = decodeSession(v)
		return err
	})
	return s, err
}

func deleteSession(tx *bolt.Tx, id authcore.SessionID) (bool, error) {
	v := bucket(tx, bktSessions).Get(id[:])
	if v == nil {
		return false, nil
	}
	s, _ := decodeSession(v)
	return true, removeSession(tx, id, v, s)
}

// removeSession deletes session id, whose stored record is v, with its
// index entries. s is v decoded, or nil when v does not decode; then the
// entries its times name still go, if the times can be read.
func removeSession(tx *bolt.Tx, id authcore.SessionID, v []byte, s *authcore.Session) error {
	if s != nil {
		if uk, ok := userKey(s.UserID); ok {
			if err := bucket(tx, bktSessionsByUser).Delete(sessionUserKey(uk, id)); err != nil {
				return err
			}
		}
		if err := unindexSession(tx, id, sessionTimesOf(s)); err != nil {
			return err
		}
	} else if t, err := decodeSessionTimes(v); err == nil {
		if err := unindexSession(tx, id, t); err != nil {
			return err
		}
	}
	return bucket(tx, bktSessions).Delete(id[:])
}

// DeleteSession implements authcore.Store.
func (b *Bolt) DeleteSession(ctx context.Context, id authcore.SessionID) error {
	return b.update(func(tx *bolt.Tx) error { return deleteSessionFound(tx, id) })
}

// DeleteSessionIn implements authcore.ChangeStore: DeleteSession in tx.
func (b *Bolt) DeleteSessionIn(id authcore.SessionID) func(tx any) error {
	return b.inTx(func(tx *bolt.Tx) error { return deleteSessionFound(tx, id) })
}

// deleteSessionFound deletes the session id, ErrNotFound if there is
// none.
func deleteSessionFound(tx *bolt.Tx, id authcore.SessionID) error {
	found, err := deleteSession(tx, id)
	if err == nil && !found {
		return authcore.ErrNotFound
	}
	return err
}

// ReplaceSession implements authcore.Store.
func (b *Bolt) ReplaceSession(ctx context.Context, old authcore.SessionID, s *authcore.Session) error {
	return b.updateWith(b.ReplaceSessionIn(old, s))
}

// ReplaceSessionIn implements authcore.ChangeStore: ReplaceSession in tx.
func (b *Bolt) ReplaceSessionIn(old authcore.SessionID, s *authcore.Session) func(tx any) error {
	return b.inTx(func(tx *bolt.Tx) error {
		if err := deleteSessionFound(tx, old); err != nil {
			return err
		}
		return putSession(tx, s)
	})
}

func userSessionIDs(tx *bolt.Tx, uk []byte) []authcore.SessionID {
	var ids []authcore.SessionID
	c := bucket(tx, bktSessionsByUser).Cursor()
	for k, _ := c.Seek(uk); k != nil && bytes.HasPrefix(k, uk); k, _ = c.Next() {
		var id authcore.SessionID
		copy(id[:], k[len(uk):])
		ids = append(ids, id)
	}
	return ids
}

// UserSessions implements authcore.Store.
func (b *Bolt) UserSessions(ctx context.Context, userID string) ([]*authcore.Session, error) {
	uk, ok := userKey(userID)
	if !ok {
		return nil, nil
	}
	var out []*authcore.Session
	err := b.view(func(tx *bolt.Tx) error {
		sessions := bucket(tx, bktSessions)
		for _, id := range userSessionIDs(tx, uk) {
			if v := sessions.Get(id[:]); v != nil {
				s, err := decodeSession(v)
				if err != nil {
					return err
				}
				out = append(out, s)
			}
		}
		return nil
	})
	return out, err
}

func deleteUserSessions(tx *bolt.Tx, uk []byte) ([]authcore.SessionID, error) {
	ids := userSessionIDs(tx, uk)
	for _, id := range ids {
		if _, err := deleteSession(tx, id); err != nil {
			return nil, err
		}
		// deleteSession drops this when it can read the session.
		if err := bucket(tx, bktSessionsByUser).Delete(sessionUserKey(uk, id)); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// DeleteUserSessions implements authcore.Store: the sessions go, and the
// user's SessionEpoch moves on, in one transaction.
func (b *Bolt) DeleteUserSessions(ctx context.Context, userID string) (ids []authcore.SessionID, err error) {
	uk, ok := userKey(userID)
	if !ok {
		return nil, nil
	}
	err = b.update(func(tx *bolt.Tx) error {
		deleted, derr := deleteUserSessions(tx, uk)
		if derr != nil {
			return derr
		}
		ids = deleted
		u, gerr := getUser(tx, uk)
		if errors.Is(gerr, authcore.ErrNotFound) {
			return nil
		}
		if gerr != nil {
			return gerr
		}
		u.SessionEpoch++
		return putUser(tx, uk, u)
	})
	return ids, err
}

// TouchSessions implements authcore.Store.
func (b *Bolt) TouchSessions(ctx context.Context, seen map[authcore.SessionID]time.Time) error {
	return b.update(func(tx *bolt.Tx) error {
		sessions := bucket(tx, bktSessions)
		for id, t := range seen {
			v := sessions.Get(id[:])
			if v == nil {
				continue
			}
			s, err := decodeSession(v)
			if err != nil {
				return err
			}
			if !t.After(s.LastSeen) {
				continue
			}
			old := sessionTimesOf(s)
			s.LastSeen = t.UTC()
			if err := reindexSession(tx, id, old, sessionTimesOf(s)); err != nil {
				return err
			}
			nv, err := json.Marshal(s)
			if err != nil {
				return err
			}
			if err := sessions.Put(id[:], nv); err != nil {
				return err
			}
		}
		return nil
	})
}

// GetSecret implements authcore.Store.
func (b *Bolt) GetSecret(ctx context.Context, name string) (v []byte, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		v = clone(bucket(tx, bktSecrets).Get([]byte(name)))
		if v == nil {
			return authcore.ErrNotFound
		}
		return nil
	})
	return v, err
}

// PutSecret implements authcore.Store.
func (b *Bolt) PutSecret(ctx context.Context, name string, value []byte, ifAbsent bool) (out []byte, err error) {
	err = b.update(func(tx *bolt.Tx) error {
		bk := bucket(tx, bktSecrets)
		if ifAbsent {
			if old := bk.Get([]byte(name)); old != nil {
				out = clone(old)
				return nil
			}
		}
		out = clone(value)
		return bk.Put([]byte(name), value)
	})
	return out, err
}

// PutSecretIn implements authcore.SecretChangeStore: PutSecret (not
// ifAbsent) in tx.
func (b *Bolt) PutSecretIn(name string, value []byte) func(tx any) error {
	return b.inTx(func(tx *bolt.Tx) error { return bucket(tx, bktSecrets).Put([]byte(name), value) })
}

// CountSessions returns the number of stored sessions (expired ones not
// yet pruned included).
func (b *Bolt) CountSessions(ctx context.Context) (n int, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		n = bucket(tx, bktSessions).Stats().KeyN
		return nil
	})
	return n, err
}
