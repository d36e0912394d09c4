package store

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// TestDeleteExpiredSessionsAcrossChunks prunes more sessions than one
// scan chunk holds, with live and expired ones interleaved.
func TestDeleteExpiredSessionsAcrossChunks(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "many@example.com")
	const total = 2*pruneChunk + 500
	var batch []*authcore.Session
	live := 0
	for i := range total {
		_, id := authcore.NewToken()
		s := &authcore.Session{ID: id, UserID: u.ID, CreatedAt: authT0, LastSeen: authT0, ExpiresAt: authT0.Add(time.Hour)}
		if i%3 == 0 {
			s.ExpiresAt = authT0.Add(-time.Minute) // expired
		} else {
			live++
		}
		batch = append(batch, s)
	}
	if err := st.PutSessions(ctx, batch); err != nil {
		t.Fatal(err)
	}
	n, err := st.DeleteExpiredSessions(ctx, authT0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := total - live; n != want {
		t.Errorf("deleted %d; want %d", n, want)
	}
	left, err := st.CountSessions(ctx)
	if err != nil || left != live {
		t.Errorf("%d sessions left (err %v); want %d", left, err, live)
	}
	byUser, err := st.UserSessions(ctx, u.ID)
	if err != nil || len(byUser) != live {
		t.Errorf("the by-user index lists %d sessions (err %v); want %d", len(byUser), err, live)
	}
}

// TestSessionIndexesRebuiltOnOpen opens a file written by a release that
// kept no time indexes: opening builds them, and pruning finds what is due.
func TestSessionIndexesRebuiltOnOpen(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "old@example.com")
	live := authNewSession(u.ID, authT0)
	gone := authNewSession(u.ID, authT0)
	gone.ExpiresAt = authT0.Add(time.Minute)
	authPutSession(t, st, live)
	authPutSession(t, st, gone)
	// What the older release's file looks like: no index buckets.
	if err := st.db.Update(func(tx *bolt.Tx) error {
		for _, name := range sessionIndexBuckets {
			if err := tx.Bucket(rootBucket).DeleteBucket(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st = reopenBolt(t, st)
	authCheckIndexes(t, st)
	if n, err := st.DeleteExpiredSessions(ctx, authT0.Add(time.Hour), 0); err != nil || n != 1 {
		t.Fatalf("DeleteExpiredSessions = %d, %v; want 1", n, err)
	}
	if _, err := st.GetSession(ctx, gone.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("expired session kept: %v", err)
	}
	if _, err := st.GetSession(ctx, live.ID); err != nil {
		t.Errorf("live session: %v", err)
	}
	authCheckIndexes(t, st)
}

// TestPruneStaleIndexEntry: an entry that no longer matches its session
// (the session was used by a release that kept no index, say) never
// costs the live session; pruning puts the right entry in its place, and
// an entry whose session is gone is dropped.
func TestPruneStaleIndexEntry(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "stale@example.com")
	const idle = 30 * time.Minute
	s := authNewSession(u.ID, authT0)
	authPutSession(t, st, s)
	var ghost authcore.SessionID
	ghost[0] = 0x01
	// Seen again an hour later, written around the index.
	used := withLastSeen(s, authT0.Add(time.Hour))
	if err := st.db.Update(func(tx *bolt.Tx) error {
		v, err := json.Marshal(used)
		if err != nil {
			return err
		}
		if err := bucket(tx, bktSessions).Put(s.ID[:], v); err != nil {
			return err
		}
		return bucket(tx, bktSessionsBySeen).Put(timeKey(authT0, ghost), nil)
	}); err != nil {
		t.Fatal(err)
	}

	// By the stale entry the session has been idle for an hour; by the
	// session itself, for 30 minutes less a second.
	now := authT0.Add(time.Hour + idle - time.Second)
	if n, err := st.DeleteExpiredSessions(ctx, now, idle); err != nil || n != 0 {
		t.Fatalf("DeleteExpiredSessions = %d, %v; want 0", n, err)
	}
	if _, err := st.GetSession(ctx, s.ID); err != nil {
		t.Fatalf("live session deleted: %v", err)
	}
	authCheckIndexes(t, st)
	if n, err := st.DeleteExpiredSessions(ctx, now.Add(time.Second), idle); err != nil || n != 1 {
		t.Errorf("DeleteExpiredSessions when idle = %d, %v; want 1", n, err)
	}
	authCheckIndexes(t, st)
}

// TestPruneSameSecond: entries hold whole seconds, so a session that
// expires later in the second pruning runs in is read and kept, and the
// walk ends.
func TestPruneSameSecond(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "second@example.com")
	s := authNewSession(u.ID, authT0)
	s.ExpiresAt = authT0.Add(12*time.Hour + 900*time.Millisecond)
	authPutSession(t, st, s)
	now := authT0.Add(12*time.Hour + 100*time.Millisecond)
	if n, err := st.DeleteExpiredSessions(ctx, now, 0); err != nil || n != 0 {
		t.Fatalf("DeleteExpiredSessions = %d, %v; want 0", n, err)
	}
	if n, err := st.DeleteExpiredSessions(ctx, now.Add(800*time.Millisecond), 0); err != nil || n != 1 {
		t.Fatalf("DeleteExpiredSessions at the end = %d, %v; want 1", n, err)
	}
	authCheckIndexes(t, st)
}
