package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// TestDeleteExpiredSessionsAcrossChunks prunes more sessions than one
// chunk of due entries holds, with live and expired ones interleaved.
func TestDeleteExpiredSessionsAcrossChunks(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "many@example.com")
	smallPruneChunks(t)
	total := 4*pruneChunk + 50 // a third expire: more than one chunk
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
	pruneWant(t, st, authT0.Add(time.Hour), 0, 1)
	pruneWantStored(t, st, gone.ID, false)
	pruneWantStored(t, st, live.ID, true)
	authCheckIndexes(t, st)
}

// TestPruneStaleIndexEntry: an entry that no longer matches its session
// (the session was used by a release that kept no index, say) never
// costs the live session; pruning puts the right entry in its place, and
// an entry whose session is gone is dropped.
func TestPruneStaleIndexEntry(t *testing.T) {
	st := openAuthBolt(t)
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
	pruneWant(t, st, now, idle, 0)
	pruneWantStored(t, st, s.ID, true)
	authCheckIndexes(t, st)
	pruneWant(t, st, now.Add(time.Second), idle, 1)
	authCheckIndexes(t, st)
}

// TestPruneSameSecond: entries hold whole seconds, so a session that
// idles out later in the second pruning runs in is read and kept, and
// the walk ends. A session's absolute end is its ExpiresAt's second
// (Session.End), so one expiring later in that second is already over.
func TestPruneSameSecond(t *testing.T) {
	st := openAuthBolt(t)
	u := authCreate(t, st, "second@example.com")
	const idle = 12 * time.Hour
	s := authNewSession(u.ID, authT0)
	s.LastSeen = authT0.Add(900 * time.Millisecond)
	s.ExpiresAt = authT0.Add(48 * time.Hour)
	authPutSession(t, st, s)
	now := authT0.Add(idle + 100*time.Millisecond)
	pruneWant(t, st, now, idle, 0)
	pruneWant(t, st, now.Add(800*time.Millisecond), idle, 1)
	authCheckIndexes(t, st)

	abs := authNewSession(u.ID, authT0)
	abs.ExpiresAt = authT0.Add(12*time.Hour + 900*time.Millisecond)
	authPutSession(t, st, abs)
	pruneWant(t, st, authT0.Add(12*time.Hour-time.Nanosecond), 0, 0)
	pruneWant(t, st, authT0.Add(12*time.Hour), 0, 1)
	authCheckIndexes(t, st)
}

// TestPruneManyChunks makes more entries due in each index than one chunk
// holds, with sessions in the cutoff's own second: every due one goes,
// across chunk boundaries (an absolute end in that second is due: a
// session ends on its second), and the rest stay.
func TestPruneManyChunks(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "chunks@example.com")
	const idle = time.Hour
	now := authT0.Add(100 * time.Millisecond)
	smallPruneChunks(t)
	perIndex := pruneChunk + 77
	var batch []*authcore.Session
	mk := func(seen, exp time.Time) {
		_, id := authcore.NewToken()
		batch = append(batch, &authcore.Session{ID: id, UserID: u.ID, CreatedAt: authT0.Add(-24 * time.Hour), LastSeen: seen, ExpiresAt: exp})
	}
	for i := range perIndex {
		off := time.Duration(i%500) * time.Second
		mk(now.Add(-time.Minute), now.Add(-time.Second-off))   // past its absolute end
		mk(now.Add(-idle-time.Second-off), now.Add(time.Hour)) // idle
	}
	live := 0
	for range 300 {
		mk(now, authT0.Add(900*time.Millisecond))                           // over: it ends on its second
		mk(authT0.Add(-idle).Add(900*time.Millisecond), now.Add(time.Hour)) // due by the second, live by the nanosecond
		live++
	}
	if err := st.PutSessions(ctx, batch); err != nil {
		t.Fatal(err)
	}
	n, err := st.DeleteExpiredSessions(ctx, now, idle)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2*perIndex+300 {
		t.Errorf("deleted %d; want %d", n, 2*perIndex+300)
	}
	if left, _ := st.CountSessions(ctx); left != live {
		t.Errorf("%d sessions left; want %d", left, live)
	}
	authCheckIndexes(t, st)
}

// TestPruneZeroAndPre1970Times: keys sort by time across the sign.
func TestPruneZeroAndPre1970Times(t *testing.T) {
	st := openAuthBolt(t)
	u := authCreate(t, st, "zero@example.com")
	zero := authNewSession(u.ID, authT0)
	zero.ExpiresAt = time.Time{}
	old := authNewSession(u.ID, authT0)
	old.LastSeen = time.Date(1969, 12, 31, 23, 59, 59, 500e6, time.UTC)
	live := authNewSession(u.ID, authT0)
	authPutSession(t, st, zero)
	authPutSession(t, st, old)
	authPutSession(t, st, live)
	pruneWant(t, st, authT0, time.Hour, 2)
	pruneWantStored(t, st, live.ID, true)
	authCheckIndexes(t, st)
}

// TestSessionIndexesRebuiltAfterSwap: a release without the indexes ended
// one session and started another, so the counts still agree; opening
// sees that the entries name other sessions and rebuilds them.
func TestSessionIndexesRebuiltAfterSwap(t *testing.T) {
	st := openAuthBolt(t)
	u := authCreate(t, st, "downgrade@example.com")
	a := authNewSession(u.ID, authT0)
	authPutSession(t, st, a)
	b := authNewSession(u.ID, authT0.Add(time.Minute))
	uk, _ := userKey(u.ID)
	if err := st.db.Update(func(tx *bolt.Tx) error {
		if err := bucket(tx, bktSessions).Delete(a.ID[:]); err != nil {
			return err
		}
		if err := bucket(tx, bktSessionsByUser).Delete(sessionUserKey(uk, a.ID)); err != nil {
			return err
		}
		v, err := json.Marshal(b)
		if err != nil {
			return err
		}
		if err := bucket(tx, bktSessions).Put(b.ID[:], v); err != nil {
			return err
		}
		return bucket(tx, bktSessionsByUser).Put(sessionUserKey(uk, b.ID), nil)
	}); err != nil {
		t.Fatal(err)
	}
	st = reopenBolt(t, st)
	authCheckIndexes(t, st)
	pruneWant(t, st, authT0.Add(48*time.Hour), 0, 1)
	pruneWantStored(t, st, b.ID, false)
}

// TestHalfDecodableRecord: a record whose times decode but the rest does
// not is undecodable. Deleting it removes the entries its times name;
// opening a file that holds one deletes it.
func TestHalfDecodableRecord(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "half@example.com")
	s := authNewSession(u.ID, authT0)
	authPutSession(t, st, s)
	rec := fmt.Sprintf(`{"id":"not-an-id","user_id":"x","last_seen":%q,"expires_at":%q}`,
		s.LastSeen.Format(time.RFC3339Nano), s.ExpiresAt.Format(time.RFC3339Nano))
	if err := st.db.Update(func(tx *bolt.Tx) error { return bucket(tx, bktSessions).Put(s.ID[:], []byte(rec)) }); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	_ = st.db.View(func(tx *bolt.Tx) error {
		for _, ix := range sessionIndexes {
			if m := bucket(tx, ix.name).Stats().KeyN; m != 0 {
				t.Errorf("%s keeps %d entries of a deleted session", ix.name, m)
			}
		}
		return nil
	})

	var id authcore.SessionID
	id[0] = 0x42
	if err := st.db.Update(func(tx *bolt.Tx) error { return bucket(tx, bktSessions).Put(id[:], []byte(rec)) }); err != nil {
		t.Fatal(err)
	}
	st = reopenBolt(t, st)
	pruneWantStored(t, st, id, false)
	if n, err := st.CountSessions(ctx); err != nil || n != 0 {
		t.Errorf("%d sessions left (%v); want 0", n, err)
	}
}

// TestPruneMalformedIndexKey: a key too short to hold a time is dropped,
// not a panic that would stop the pruning loop for good.
func TestPruneMalformedIndexKey(t *testing.T) {
	st := openAuthBolt(t)
	if err := st.db.Update(func(tx *bolt.Tx) error { return bucket(tx, bktSessionsByExpiry).Put([]byte{0}, nil) }); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DeleteExpiredSessions(context.Background(), authT0, 0); err != nil {
		t.Fatal(err)
	}
	authCheckIndexes(t, st)
}

// pruneWantStored checks whether the session is still in the store.
func pruneWantStored(t *testing.T, st *Bolt, id authcore.SessionID, want bool) {
	t.Helper()
	_, err := st.GetSession(context.Background(), id)
	switch {
	case want && err != nil:
		t.Errorf("session %s: %v; want it stored", id, err)
	case !want && !errors.Is(err, authcore.ErrNotFound):
		t.Errorf("session %s kept (GetSession = %v); want it deleted", id, err)
	}
}

// pruneWant prunes at now with idle and checks how many sessions went.
func pruneWant(t *testing.T, st *Bolt, now time.Time, idle time.Duration, want int) {
	t.Helper()
	if n, err := st.DeleteExpiredSessions(context.Background(), now, idle); err != nil || n != want {
		t.Fatalf("DeleteExpiredSessions(%v, idle %v) = %d, %v; want %d", now, idle, n, err, want)
	}
}

// smallPruneChunks makes pruning work in chunks of 200 for this test.
func smallPruneChunks(t *testing.T) {
	old := pruneChunk
	pruneChunk = 200
	t.Cleanup(func() { pruneChunk = old })
}
