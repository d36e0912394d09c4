package store

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// Two indexes let pruning read only the sessions that may have expired,
// not the whole store:
//
//	sessions_by_expiry   expires_at ‖ session id   → nil
//	sessions_by_seen     last_seen  ‖ session id   → nil
//
// The time is Unix seconds, big-endian with the sign bit flipped, so keys
// sort by time (a zero time included). Every session has exactly one entry
// in each; putSession, TouchSessions and the deletes keep them so in the
// same transaction. Pruning re-reads each session before deleting it, so
// a stale entry (a file written by a release without the indexes) costs
// a lookup, never a live session, and OpenBolt rebuilds both when their
// keys do not name the same sessions as the sessions bucket. A session
// no entry points at would still end on time (every read checks it); it
// would only stay on disk.
var (
	bktSessionsByExpiry = []byte("sessions_by_expiry")
	bktSessionsBySeen   = []byte("sessions_by_seen")

	sessionIndexBuckets = [][]byte{bktSessionsByExpiry, bktSessionsBySeen}
)

const timeKeyLen = 8

// sessionTimes is the part of a stored session the indexes need; decoding
// only it skips the rest of the record.
type sessionTimes struct {
	LastSeen  time.Time `json:"last_seen"`
	ExpiresAt time.Time `json:"expires_at"`
}

func sessionTimesOf(s *authcore.Session) sessionTimes {
	return sessionTimes{LastSeen: s.LastSeen, ExpiresAt: s.ExpiresAt}
}

func decodeSessionTimes(v []byte) (sessionTimes, error) {
	var t sessionTimes
	err := json.Unmarshal(v, &t)
	return t, err
}

func timePrefix(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, timeKeyLen+len(authcore.SessionID{})), uint64(t.Unix())^(1<<63))
}

func timeKey(t time.Time, id authcore.SessionID) []byte {
	return append(timePrefix(t), id[:]...)
}

// sessionIndex is one of the two indexes: its bucket and the time it
// sorts by.
type sessionIndex struct {
	name []byte
	at   func(sessionTimes) time.Time
}

var (
	byExpiry       = sessionIndex{bktSessionsByExpiry, func(t sessionTimes) time.Time { return t.ExpiresAt }}
	bySeen         = sessionIndex{bktSessionsBySeen, func(t sessionTimes) time.Time { return t.LastSeen }}
	sessionIndexes = []sessionIndex{byExpiry, bySeen}
)

// indexSession adds the session's entries.
func indexSession(tx *bolt.Tx, id authcore.SessionID, t sessionTimes) error {
	for _, ix := range sessionIndexes {
		if err := bucket(tx, ix.name).Put(timeKey(ix.at(t), id), nil); err != nil {
			return err
		}
	}
	return nil
}

// unindexSession removes the session's entries.
func unindexSession(tx *bolt.Tx, id authcore.SessionID, t sessionTimes) error {
	for _, ix := range sessionIndexes {
		if err := bucket(tx, ix.name).Delete(timeKey(ix.at(t), id)); err != nil {
			return err
		}
	}
	return nil
}

// reindexSession moves the session's entries from old to cur, touching
// only an index whose time changed.
func reindexSession(tx *bolt.Tx, id authcore.SessionID, old, cur sessionTimes) error {
	for _, ix := range sessionIndexes {
		from, to := timeKey(ix.at(old), id), timeKey(ix.at(cur), id)
		if bytes.Equal(from, to) {
			continue
		}
		b := bucket(tx, ix.name)
		if err := b.Delete(from); err != nil {
			return err
		}
		if err := b.Put(to, nil); err != nil {
			return err
		}
	}
	return nil
}

// ensureSessionIndexes rebuilds both indexes unless each names exactly
// the stored sessions: a new bucket in an older file, or a file an older
// release wrote to, fails that check. A session that cannot be decoded is
// deleted, as pruning always has.
func ensureSessionIndexes(tx *bolt.Tx) error {
	want := sumIDs(bucket(tx, bktSessions), 0)
	if !slices.ContainsFunc(sessionIndexes, func(ix sessionIndex) bool { return sumIDs(bucket(tx, ix.name), timeKeyLen) != want }) {
		return nil
	}
	root := tx.Bucket(rootBucket)
	for _, ix := range sessionIndexes {
		if err := root.DeleteBucket(ix.name); err != nil {
			return err
		}
		if _, err := root.CreateBucket(ix.name); err != nil {
			return err
		}
	}
	var corrupt []authcore.SessionID
	err := bucket(tx, bktSessions).ForEach(func(k, v []byte) error {
		var id authcore.SessionID
		copy(id[:], k)
		sess, err := decodeSession(v)
		if err != nil {
			corrupt = append(corrupt, id)
			return nil
		}
		return indexSession(tx, id, sessionTimesOf(sess))
	})
	if err != nil {
		return err
	}
	for _, id := range corrupt {
		if _, err := deleteSession(tx, id); err != nil {
			return err
		}
	}
	return nil
}

// idSum is what a walk of a bucket's keys finds: how many, and the XOR
// of the session ids they end with. Session ids are random, so two
// buckets that name different sessions practically never agree on it.
type idSum struct {
	n int
	x [len(authcore.SessionID{})]byte
}

func sumIDs(b *bolt.Bucket, skip int) idSum {
	var sum idSum
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		sum.n++
		if len(k) > skip {
			subtle.XORBytes(sum.x[:], sum.x[:], k[skip:])
		}
	}
	return sum
}

// pruneChunk bounds how many index entries one pruning transaction
// handles, so neither a reader nor a writer is held up for long. Tests
// lower it to cross chunk boundaries cheaply.
var pruneChunk = 10_000

// DeleteExpiredSessions implements authcore.Store. It reads the index
// entries up to now (expiry) and up to now−idle (last seen), never the
// sessions that cannot have expired.
func (b *Bolt) DeleteExpiredSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error) {
	total, err := b.pruneIndex(ctx, byExpiry, now, now, idle)
	if err != nil || idle <= 0 {
		return total, err
	}
	n, err := b.pruneIndex(ctx, bySeen, now.Add(-idle), now, idle)
	return total + n, err
}

// pruneIndex walks one index from its oldest entry to cutoff's second in
// chunks, deleting each session that has expired by now (checked on the
// session itself, inside the write) and each entry whose session is gone.
// An entry of a live session is left, or moved if it was stale; the walk
// goes on after it either way, so every entry is visited at most once.
func (b *Bolt) pruneIndex(ctx context.Context, ix sessionIndex, cutoff, now time.Time, idle time.Duration) (int, error) {
	limit := timePrefix(cutoff)
	total := 0
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var keys [][]byte
		err := b.view(func(tx *bolt.Tx) error {
			c := bucket(tx, ix.name).Cursor()
			k, _ := seekAfter(c, after)
			// A key too short for a time is malformed: pruneEntry drops it.
			for ; k != nil && len(keys) < pruneChunk && (len(k) < timeKeyLen || bytes.Compare(k[:timeKeyLen], limit) <= 0); k, _ = c.Next() {
				keys = append(keys, clone(k))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return total, err
		}
		deleted := 0
		err = b.update(func(tx *bolt.Tx) error {
			for _, k := range keys {
				n, err := pruneEntry(tx, ix, k, now, idle)
				if err != nil {
					return err
				}
				deleted += n
			}
			return nil
		})
		if err == nil {
			total += deleted
		}
		if err != nil || len(keys) < pruneChunk {
			return total, err
		}
		after = keys[len(keys)-1]
	}
}

// pruneEntry handles one entry of ix; it returns 1 when it deleted a
// session.
func pruneEntry(tx *bolt.Tx, ix sessionIndex, key []byte, now time.Time, idle time.Duration) (int, error) {
	entries := bucket(tx, ix.name)
	var id authcore.SessionID
	if len(key) != timeKeyLen+len(id) {
		return 0, entries.Delete(key)
	}
	copy(id[:], key[timeKeyLen:])
	v := bucket(tx, bktSessions).Get(id[:])
	if v == nil { // stale: deleted by a release that kept no index
		return 0, entries.Delete(key)
	}
	sess, err := decodeSession(v)
	if err != nil || sess.Expired(now, idle) {
		if err := removeSession(tx, id, v, sess); err != nil {
			return 0, err
		}
		// removeSession removed the entries of the times it read; this
		// one goes too, in case it was stale.
		return 1, entries.Delete(key)
	}
	// Live. A stale entry makes way for the session's own.
	want := timeKey(ix.at(sessionTimesOf(sess)), id)
	if bytes.Equal(key, want) {
		return 0, nil
	}
	if err := entries.Delete(key); err != nil {
		return 0, err
	}
	return 0, entries.Put(want, nil)
}
