package store

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// The MFA and regulation buckets, under the root bucket:
//
//	sigra/v1/
//	├── totp               user id (16)  → JSON authcore.TOTPRecord (secret sealed by authcore)
//	├── recovery_codes     user id (16)  → unused code hashes, 32 bytes each, concatenated
//	└── regulation         key (text)    → JSON authcore.RegulationState
//
// Regulation keys are "user:<uuid>", "email:<hash>" and "ip:<addr or /64>"
// (see authcore.Regulator).
var (
	bktTOTP          = []byte("totp")
	bktRecoveryCodes = []byte("recovery_codes")
	bktRegulation    = []byte("regulation")
)

// mfaBuckets are created by OpenBolt; the MFA and regulation backend lives
// in this file.
var mfaBuckets = [][]byte{bktTOTP, bktRecoveryCodes, bktRegulation}

// bktTOTPPending held the enrolments begun and not confirmed, in versions
// before 2026-12-07 (each with its secret, sealed): enrolments are carried
// by their page now (authcore.BeginTOTP), and OpenBolt drops the bucket.
var bktTOTPPending = []byte("totp_pending")

// dropOldPendingTOTP deletes bktTOTPPending from root, if it is there.
func dropOldPendingTOTP(root *bolt.Bucket) error {
	if root.Bucket(bktTOTPPending) == nil {
		return nil
	}
	return root.DeleteBucket(bktTOTPPending)
}

var _ authcore.MFAStore = (*Bolt)(nil)

const recoveryHashLen = 32

func mfaUserKey(userID string) ([]byte, error) {
	k, ok := userKey(userID)
	if !ok {
		return nil, fmt.Errorf("%w: user id %q is not a UUID", authcore.ErrInvalidInput, userID)
	}
	return k, nil
}

func getJSON(b *bolt.Bucket, key []byte, v any) error {
	data := b.Get(key)
	if data == nil {
		return authcore.ErrNotFound
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding %s: %w", key, err)
	}
	return nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// CompleteTOTPEnrolment implements authcore.MFAStore.
func (b *Bolt) CompleteTOTPEnrolment(ctx context.Context, userID string, rec *authcore.TOTPRecord, recoveryHashes [][]byte) error {
	return b.updateWith(b.CompleteTOTPEnrolmentIn(userID, rec, recoveryHashes))
}

// CompleteTOTPEnrolmentIn implements authcore.ChangeStore:
// CompleteTOTPEnrolment in tx.
func (b *Bolt) CompleteTOTPEnrolmentIn(userID string, rec *authcore.TOTPRecord, recoveryHashes [][]byte) func(tx any) error {
	codes, err := joinHashes(recoveryHashes)
	return b.changeIn(userID, func(tx *bolt.Tx, uk []byte) error {
		if err != nil {
			return err
		}
		if bucket(tx, bktTOTP).Get(uk) != nil {
			return authcore.ErrNotFound // set up meanwhile
		}
		u, err := getUser(tx, uk)
		if err != nil {
			return err
		}
		if err := putJSON(bucket(tx, bktTOTP), uk, rec); err != nil {
			return err
		}
		if err := putRecoveryCodes(tx, uk, codes); err != nil {
			return err
		}
		u.SecondFactor = true
		u.UpdatedAt = rec.EnrolledAt
		return putUser(tx, uk, u)
	})
}

// TOTP implements authcore.MFAStore.
func (b *Bolt) TOTP(ctx context.Context, userID string) (*authcore.TOTPRecord, error) {
	uk, ok := userKey(userID)
	if !ok {
		return nil, authcore.ErrNotFound
	}
	var rec authcore.TOTPRecord
	err := b.view(func(tx *bolt.Tx) error { return getJSON(bucket(tx, bktTOTP), uk, &rec) })
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// AcceptTOTPStep implements authcore.MFAStore.
func (b *Bolt) AcceptTOTPStep(ctx context.Context, userID string, step uint64, maxFailures int) error {
	return b.updateWith(b.AcceptTOTPStepIn(userID, step, maxFailures))
}

// AcceptTOTPStepIn implements authcore.ChangeStore: AcceptTOTPStep in tx.
func (b *Bolt) AcceptTOTPStepIn(userID string, step uint64, maxFailures int) func(tx any) error {
	return b.changeIn(userID, func(tx *bolt.Tx, uk []byte) error {
		return updateTOTPIn(tx, uk, func(rec *authcore.TOTPRecord) error {
			switch {
			case rec.Failures >= maxFailures:
				return authcore.ErrTOTPLocked
			case step <= rec.LastStep:
				return authcore.ErrTOTPStepUsed
			}
			rec.LastStep, rec.Failures = step, 0
			return nil
		})
	})
}

// FailTOTP implements authcore.MFAStore.
func (b *Bolt) FailTOTP(ctx context.Context, userID string) (n int, err error) {
	err = b.updateTOTP(userID, func(rec *authcore.TOTPRecord) error {
		rec.Failures++
		n = rec.Failures
		return nil
	})
	return n, err
}

// ClearTOTPFailures implements authcore.MFAStore.
func (b *Bolt) ClearTOTPFailures(ctx context.Context, userID string) error {
	return b.updateWith(b.ClearTOTPFailuresIn(userID))
}

// ClearTOTPFailuresIn implements authcore.ChangeStore: ClearTOTPFailures
// in tx.
func (b *Bolt) ClearTOTPFailuresIn(userID string) func(tx any) error {
	return b.changeIn(userID, func(tx *bolt.Tx, uk []byte) error {
		if _, err := getUser(tx, uk); err != nil {
			return err // gone: nothing to unlock, and no row saying so
		}
		return clearTOTPFailuresIn(tx, uk)
	})
}

// clearTOTPFailuresIn sets the user's TOTP Failures to 0, if they have a
// TOTP and it is not 0 already.
func clearTOTPFailuresIn(tx *bolt.Tx, uk []byte) error {
	err := updateTOTPIn(tx, uk, func(rec *authcore.TOTPRecord) error {
		if rec.Failures == 0 {
			return errUnchanged
		}
		rec.Failures = 0
		return nil
	})
	if errors.Is(err, authcore.ErrNotFound) || errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

// errUnchanged makes updateTOTPIn write nothing.
var errUnchanged = errors.New("unchanged")

// updateTOTP changes the user's TOTP record with fn in one transaction,
// writing nothing when fn returns an error (ErrNotFound: no TOTP).
func (b *Bolt) updateTOTP(userID string, fn func(*authcore.TOTPRecord) error) error {
	uk, ok := userKey(userID)
	if !ok {
		return authcore.ErrNotFound
	}
	return b.update(func(tx *bolt.Tx) error { return updateTOTPIn(tx, uk, fn) })
}

func updateTOTPIn(tx *bolt.Tx, uk []byte, fn func(*authcore.TOTPRecord) error) error {
	bk := bucket(tx, bktTOTP)
	var rec authcore.TOTPRecord
	if err := getJSON(bk, uk, &rec); err != nil {
		return err
	}
	if err := fn(&rec); err != nil {
		return err
	}
	return putJSON(bk, uk, &rec)
}

// DeleteTOTP implements authcore.MFAStore.
func (b *Bolt) DeleteTOTP(ctx context.Context, userID string, lastFactor, endSessions bool, at time.Time) error {
	uk, ok := userKey(userID)
	if !ok {
		return authcore.ErrNotFound
	}
	found := false
	err := b.update(func(tx *bolt.Tx) error {
		var err error
		found, err = deleteTOTP(tx, uk, lastFactor, endSessions, at)
		return err
	})
	if err == nil && !found {
		return authcore.ErrNotFound // the pending delete stands
	}
	return err
}

// DeleteTOTPIn implements authcore.ChangeStore: DeleteTOTP, made in a
// transaction of this store that runs for the audit row telling of it.
// No app to delete refuses it all (ErrNotFound).
func (b *Bolt) DeleteTOTPIn(userID string, lastFactor, endSessions bool, at time.Time) func(tx any) error {
	return b.changeIn(userID, func(tx *bolt.Tx, uk []byte) error {
		found, err := deleteTOTP(tx, uk, lastFactor, endSessions, at)
		if err == nil && !found {
			return authcore.ErrNotFound
		}
		return err
	})
}

// deleteTOTP deletes the user's app, and reports whether there was one.
func deleteTOTP(tx *bolt.Tx, uk []byte, lastFactor, endSessions bool, at time.Time) (found bool, err error) {
	bk := bucket(tx, bktTOTP)
	if bk.Get(uk) == nil {
		return false, nil
	}
	if err := bk.Delete(uk); err != nil {
		return true, err
	}
	if lastFactor {
		if err := putRecoveryCodes(tx, uk, nil); err != nil {
			return true, err
		}
	}
	if endSessions {
		if _, err := deleteUserSessions(tx, uk); err != nil {
			return true, err
		}
	}
	if !lastFactor && !endSessions {
		return true, nil
	}
	u, err := getUser(tx, uk)
	if errors.Is(err, authcore.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return true, err
	}
	if lastFactor {
		u.SecondFactor = false
		u.UpdatedAt = at
	}
	if endSessions {
		u.SessionEpoch++ // as DeleteUserSessions: no session started meanwhile survives
	}
	return true, putUser(tx, uk, u)
}

func joinHashes(hashes [][]byte) ([]byte, error) {
	out := make([]byte, 0, len(hashes)*recoveryHashLen)
	for _, h := range hashes {
		if len(h) != recoveryHashLen {
			return nil, fmt.Errorf("%w: recovery code hash of %d bytes", authcore.ErrInvalidInput, len(h))
		}
		out = append(out, h...)
	}
	return out, nil
}

func putRecoveryCodes(tx *bolt.Tx, uk, codes []byte) error {
	bk := bucket(tx, bktRecoveryCodes)
	if len(codes) == 0 {
		return bk.Delete(uk)
	}
	return bk.Put(uk, codes)
}

// ReplaceRecoveryCodes implements authcore.MFAStore.
func (b *Bolt) ReplaceRecoveryCodes(ctx context.Context, userID string, hashes [][]byte) error {
	return b.updateWith(b.replaceRecoveryCodesIn(userID, nil, hashes))
}

// ReplaceRecoveryCodesIn implements authcore.ChangeStore:
// ReplaceRecoveryCodes in tx, if shown holds for the stored set's digest.
func (b *Bolt) ReplaceRecoveryCodesIn(userID string, shown func(digest string) bool, hashes [][]byte) func(tx any) error {
	if shown == nil {
		shown = func(string) bool { return false }
	}
	return b.replaceRecoveryCodesIn(userID, shown, hashes)
}

// replaceRecoveryCodesIn replaces the set if shown holds for its digest,
// or whatever it is (shown nil).
func (b *Bolt) replaceRecoveryCodesIn(userID string, shown func(digest string) bool, hashes [][]byte) func(tx any) error {
	codes, hashErr := joinHashes(hashes)
	return b.inTx(func(tx *bolt.Tx) error {
		uk, err := mfaUserKey(userID)
		if err != nil {
			return err
		}
		if hashErr != nil {
			return hashErr
		}
		if shown != nil && !shown(authcore.RecoverySetDigest(bucket(tx, bktRecoveryCodes).Get(uk))) {
			return authcore.ErrRecoveryCodesChanged
		}
		return replaceRecoveryCodes(tx, uk, codes)
	})
}

func replaceRecoveryCodes(tx *bolt.Tx, uk, codes []byte) error {
	if len(codes) > 0 {
		// Checked in the transaction that writes them: a second
		// factor removed since the caller looked leaves no codes.
		u, err := getUser(tx, uk)
		if err != nil {
			return err
		}
		if !u.SecondFactor {
			return authcore.ErrNotEnrolled
		}
	}
	return putRecoveryCodes(tx, uk, codes)
}

// ConsumeRecoveryCode implements authcore.MFAStore. Every stored hash is
// compared, in constant time, whatever matched.
func (b *Bolt) ConsumeRecoveryCode(ctx context.Context, userID string, hash []byte) error {
	return b.updateWith(b.ConsumeRecoveryCodeIn(userID, hash))
}

// ConsumeRecoveryCodeIn implements authcore.ChangeStore:
// ConsumeRecoveryCode in tx.
func (b *Bolt) ConsumeRecoveryCodeIn(userID string, hash []byte) func(tx any) error {
	return b.changeIn(userID, func(tx *bolt.Tx, uk []byte) error {
		codes := bucket(tx, bktRecoveryCodes).Get(uk)
		found := findRecoveryCode(codes, hash)
		if found < 0 {
			return authcore.ErrNotFound
		}
		rest := make([]byte, 0, len(codes)-recoveryHashLen)
		rest = append(append(rest, codes[:found]...), codes[found+recoveryHashLen:]...)
		if err := putRecoveryCodes(tx, uk, rest); err != nil {
			return err
		}
		return clearTOTPFailuresIn(tx, uk) // a recovery code opens a locked app
	})
}

// findRecoveryCode returns the offset of hash in codes, the user's
// stored hashes, or -1. Every stored hash is compared, in constant time,
// whatever matched.
func findRecoveryCode(codes, hash []byte) int {
	if len(hash) != recoveryHashLen {
		return -1
	}
	found := -1
	for i := 0; i+recoveryHashLen <= len(codes); i += recoveryHashLen {
		if subtle.ConstantTimeCompare(codes[i:i+recoveryHashLen], hash) == 1 {
			found = i
		}
	}
	return found
}

// HasRecoveryCode implements authcore.MFAStore.
func (b *Bolt) HasRecoveryCode(ctx context.Context, userID string, hash []byte) (found bool, err error) {
	uk, ok := userKey(userID)
	if !ok {
		return false, nil
	}
	err = b.view(func(tx *bolt.Tx) error {
		found = findRecoveryCode(bucket(tx, bktRecoveryCodes).Get(uk), hash) >= 0
		return nil
	})
	return found, err
}

// RecoveryCodeSet implements authcore.MFAStore.
func (b *Bolt) RecoveryCodeSet(ctx context.Context, userID string) (left int, digest string, err error) {
	uk, ok := userKey(userID)
	if !ok {
		return 0, authcore.RecoverySetDigest(nil), nil
	}
	err = b.view(func(tx *bolt.Tx) error {
		codes := bucket(tx, bktRecoveryCodes).Get(uk)
		left, digest = len(codes)/recoveryHashLen, authcore.RecoverySetDigest(codes)
		return nil
	})
	return left, digest, err
}

func getRegulation(bk *bolt.Bucket, key string) (*authcore.RegulationState, error) {
	var st authcore.RegulationState
	if err := getJSON(bk, []byte(key), &st); err != nil && !errors.Is(err, authcore.ErrNotFound) {
		return nil, err
	}
	return &st, nil
}

// UpdateRegulation implements authcore.RegulationStore.
func (b *Bolt) UpdateRegulation(ctx context.Context, keys []string, fn func([]*authcore.RegulationState) error) error {
	return b.updateWith(b.UpdateRegulationIn(keys, fn))
}

// UpdateRegulationIn implements authcore.ChangeStore: UpdateRegulation
// in tx.
func (b *Bolt) UpdateRegulationIn(keys []string, fn func([]*authcore.RegulationState) error) func(tx any) error {
	return b.inTx(func(tx *bolt.Tx) error {
		bk := bucket(tx, bktRegulation)
		states := make([]*authcore.RegulationState, len(keys))
		for i, k := range keys {
			if k == "" {
				return fmt.Errorf("%w: empty regulation key", authcore.ErrInvalidInput)
			}
			st, err := getRegulation(bk, k)
			if err != nil {
				return err
			}
			states[i] = st
		}
		if err := fn(states); err != nil {
			return err
		}
		for i, k := range keys {
			if states[i].IsZero() {
				if err := bk.Delete([]byte(k)); err != nil {
					return err
				}
				continue
			}
			if err := putJSON(bk, []byte(k), states[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// RegulationState implements authcore.RegulationStore.
func (b *Bolt) RegulationState(ctx context.Context, key string) (st *authcore.RegulationState, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		st, err = getRegulation(bucket(tx, bktRegulation), key)
		return err
	})
	return st, err
}

// RegulationStates implements authcore.RegulationStore. fn runs inside
// a read transaction: it must not write to the store.
func (b *Bolt) RegulationStates(ctx context.Context, prefix string, fn func(key string, st *authcore.RegulationState) bool) error {
	return b.view(func(tx *bolt.Tx) error {
		c := bucket(tx, bktRegulation).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			var st authcore.RegulationState
			if json.Unmarshal(v, &st) != nil {
				continue // pruned as stale
			}
			if !fn(string(k), &st) {
				return nil
			}
		}
		return ctx.Err()
	})
}

// pruneRegulationChunk bounds how many regulation states one pruning
// pass reads and one transaction deletes. A variable so tests can lower it.
var pruneRegulationChunk = 10_000

// PruneRegulation implements authcore.RegulationStore. It walks the
// states in key order, pruneRegulationChunk at a time: each chunk is read
// and decoded in a View, and only its stale states are deleted in an
// Update, so logins and audit appends wait for a chunk's deletes at most,
// never for the whole bucket. It checks ctx between chunks and, when ctx
// ends, returns how many it deleted so far with ctx's error.
func (b *Bolt) PruneRegulation(ctx context.Context, now time.Time) (n int, err error) {
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		stale, last, more, err := b.staleRegulation(after, now)
		if err != nil {
			return n, err
		}
		if len(stale) > 0 {
			deleted, err := b.deleteRegulation(stale)
			n += deleted
			if err != nil {
				return n, err
			}
		}
		if !more {
			return n, nil
		}
		after = last
	}
}

// regulationEntry is a stored state as read, to delete only if unchanged.
type regulationEntry struct{ key, value []byte }

// staleRegulation reads up to pruneRegulationChunk states after the key
// after (from the first when nil) and returns those that are stale at
// now (expired, or undecodable), the last key read, and whether more may
// follow.
func (b *Bolt) staleRegulation(after []byte, now time.Time) (stale []regulationEntry, last []byte, more bool, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		c := bucket(tx, bktRegulation).Cursor()
		k, v := seekAfter(c, after)
		seen := 0
		for ; k != nil && seen < pruneRegulationChunk; k, v = c.Next() {
			seen++
			last = k
			var st authcore.RegulationState
			if json.Unmarshal(v, &st) != nil || st.Expires.Before(now) {
				stale = append(stale, regulationEntry{clone(k), clone(v)})
			}
		}
		last, more = clone(last), k != nil
		return nil
	})
	return stale, last, more, err
}

// deleteRegulation deletes the entries that still hold the value read: one
// updated since (a new failure) is live again and stays.
func (b *Bolt) deleteRegulation(entries []regulationEntry) (n int, err error) {
	err = b.update(func(tx *bolt.Tx) error {
		n = 0
		c := bucket(tx, bktRegulation).Cursor()
		for _, e := range entries {
			if k, v := c.Seek(e.key); !bytes.Equal(k, e.key) || !bytes.Equal(v, e.value) {
				continue
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// deleteUserMFA removes everything this file keeps for a user. DeleteUser
// should call it in its transaction.
func deleteUserMFA(tx *bolt.Tx, uk []byte, userID string) error {
	for _, name := range [][]byte{bktTOTP, bktRecoveryCodes} {
		if err := bucket(tx, name).Delete(uk); err != nil {
			return err
		}
	}
	return clearUserRegulation(tx, userID)
}

// ClearUserRegulationIn implements authcore.ChangeStore: it deletes the
// user's regulation keys (authcore.UserRegulationKeys) and the re-check
// and step-up keys of every session (authcore.UserSessionPrefixes),
// found in tx, so a session's ban that starts meanwhile is cleared too.
func (b *Bolt) ClearUserRegulationIn(userID string) func(tx any) error {
	return b.inTx(func(tx *bolt.Tx) error { return clearUserRegulation(tx, userID) })
}

// clearUserRegulation is ClearUserRegulationIn in tx.
func clearUserRegulation(tx *bolt.Tx, userID string) error {
	reg := bucket(tx, bktRegulation)
	for _, k := range authcore.UserRegulationKeys(userID) {
		if err := reg.Delete([]byte(k)); err != nil {
			return err
		}
	}
	for _, p := range authcore.UserSessionPrefixes(userID) {
		prefix := []byte(p)
		c := reg.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
			if err := c.Delete(); err != nil {
				return err
			}
		}
	}
	return nil
}
