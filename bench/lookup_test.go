package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/store"
)

// seededStores keeps one seeded store per size for the whole run, in a
// directory TestMain removes: a benchmark function runs several times as
// b.N grows (and b.TempDir goes after each), and seeding a million
// sessions takes a minute.
var seededStores = struct {
	sync.Mutex
	dir   string
	paths map[int]string
	ids   map[int][]authcore.SessionID
}{paths: map[int]string{}, ids: map[int][]authcore.SessionID{}}

func TestMain(m *testing.M) {
	code := m.Run()
	if d := seededStores.dir; d != "" {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// seededStore returns the path of a store holding n sessions, and the
// ids of the active ones (the first thousand seeded: random ids, so
// spread over the whole key space).
func seededStore(b *testing.B, n int) (string, []authcore.SessionID) {
	b.Helper()
	s := &seededStores
	s.Lock()
	defer s.Unlock()
	if p, ok := s.paths[n]; ok {
		return p, s.ids[n]
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "sigra-lookup-")
		if err != nil {
			b.Fatal(err)
		}
		s.dir = d
	}
	path := filepath.Join(s.dir, fmt.Sprintf("sessions-%d.db", n))
	seed, err := seedStore(context.Background(), path, n, false)
	if err != nil {
		b.Fatal(err)
	}
	active := seed.Tokens.Head(1000)
	ids := make([]authcore.SessionID, active.Len())
	for i := range ids {
		id, ok := authcore.TokenID(string(active.At(i)))
		if !ok {
			b.Fatalf("seeded token %d has no id", i)
		}
		ids[i] = id
	}
	s.paths[n], s.ids[n] = path, ids
	return path, ids
}

// BenchmarkSessionLookup measures what a request costs the store when
// its session is not fresh in the gate's cache (each active session once
// per CacheTTL, and every request of a session the cache does not hold):
// reading the session and its user, with 1k, 100k and 1M sessions
// stored. The harness's -sessions mode measures whole requests, where
// the cache answers most of them; this is the part of a request that
// could grow with the store. Run one size with -bench
// 'SessionLookup/sessions=1000000$'.
func BenchmarkSessionLookup(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			path, ids := seededStore(b, n)
			st, err := store.OpenBolt(path, store.BoltOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				sess, err := st.GetSession(ctx, ids[i%len(ids)])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := st.UserByID(ctx, sess.UserID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
