package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// smallRegulationChunks makes PruneRegulation work in chunks of n.
func smallRegulationChunks(t *testing.T, n int) {
	old := pruneRegulationChunk
	pruneRegulationChunk = n
	t.Cleanup(func() { pruneRegulationChunk = old })
}

// regulationFixture stores total regulation states: every third live at
// now, one in five of the others undecodable, the rest expired. It
// returns how many are stale.
func regulationFixture(t *testing.T, st *Bolt, total int, now time.Time) (stale int) {
	t.Helper()
	if err := st.db.Update(func(tx *bolt.Tx) error {
		bk := bucket(tx, bktRegulation)
		for i := range total {
			k := []byte(fmt.Sprintf("ip:10.0.%d.%d", i/256, i%256))
			var v []byte
			switch {
			case i%3 == 0:
				v, _ = json.Marshal(authcore.RegulationState{Attempts: []time.Time{now}, Expires: now.Add(time.Minute)})
			case i%5 == 0:
				v = []byte("not json")
				stale++
			default:
				v, _ = json.Marshal(authcore.RegulationState{Attempts: []time.Time{now.Add(-time.Hour)}, Expires: now.Add(-time.Minute)})
				stale++
			}
			if err := bk.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return stale
}

func regulationCount(t *testing.T, st *Bolt) (n int) {
	t.Helper()
	if err := st.db.View(func(tx *bolt.Tx) error {
		n = bucket(tx, bktRegulation).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// PruneRegulation works in chunks of separate transactions, so a large
// backlog of expired states never holds the write lock for long; every
// chunk is visited and the live states stay.
func TestPruneRegulationAcrossChunks(t *testing.T) {
	smallRegulationChunks(t, 7)
	st := openAuthBolt(t)
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	const total = 100 // 15 chunks, the last partial
	stale := regulationFixture(t, st, total, now)
	ctx := context.Background()

	if n, err := st.PruneRegulation(ctx, now); err != nil || n != stale {
		t.Fatalf("PruneRegulation = %d, %v; want %d (every stale state, over many chunks)", n, err, stale)
	}
	if got := regulationCount(t, st); got != total-stale {
		t.Fatalf("%d states left; want the %d live ones", got, total-stale)
	}
	for i := 0; i < total; i += 3 {
		k := fmt.Sprintf("ip:10.0.%d.%d", i/256, i%256)
		if s, err := st.RegulationState(ctx, k); err != nil || len(s.Attempts) != 1 {
			t.Fatalf("live state %s = %+v, %v; want it kept", k, s, err)
		}
	}
	if n, err := st.PruneRegulation(ctx, now); err != nil || n != 0 {
		t.Fatalf("second PruneRegulation = %d, %v; want 0", n, err)
	}
}

// cancelAfter is a context whose Err reports cancellation from its n-th
// call on.
type cancelAfter struct {
	context.Context
	calls atomic.Int32
	n     int32
}

func (c *cancelAfter) Err() error {
	if c.calls.Add(1) >= c.n {
		return context.Canceled
	}
	return nil
}

// PruneRegulation checks its context between chunks: cancelled, it stops
// with what it has pruned so far, committed.
func TestPruneRegulationStopsBetweenChunksWhenCancelled(t *testing.T) {
	smallRegulationChunks(t, 7)
	st := openAuthBolt(t)
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	const total = 100
	stale := regulationFixture(t, st, total, now)

	n, err := st.PruneRegulation(&cancelAfter{Context: context.Background(), n: 2}, now)
	if err != context.Canceled || n <= 0 || n >= stale {
		t.Fatalf("PruneRegulation cancelled after one chunk = %d, %v; want some of the %d stale states, context.Canceled", n, err, stale)
	}
	if got := regulationCount(t, st); got != total-n {
		t.Fatalf("%d states left after pruning %d of %d; want %d", got, n, total, total-n)
	}
	if _, err := st.PruneRegulation(&cancelAfter{Context: context.Background(), n: 1}, now); err != context.Canceled {
		t.Fatalf("PruneRegulation with a cancelled context = %v; want context.Canceled", err)
	}
}
