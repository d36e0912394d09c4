package store

// A damaged store file must fail OpenBolt with an error that wraps
// ErrDamaged and names the file, never crash the process: bbolt faults
// (SIGBUS) or panics in a goroutine of its own on such a file, and either
// ends the test binary, so a test here that fails may take the others
// with it.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// damageSecrets is how many secrets goodStore writes: enough for branch
// pages in the secrets bucket.
const damageSecrets = 2000

func damageSecretName(i int) string { return fmt.Sprintf("secret-%05d", i) }

func damageSecretValue(i int) []byte {
	return bytes.Repeat([]byte{byte(i)}, 100+i%50)
}

// goodStore writes a store with some data (many small secrets, one
// spanning several pages) and closes it.
func goodStore(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sigra.db")
	st, err := OpenBolt(path, BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.db.Update(func(tx *bolt.Tx) error {
		b := bucket(tx, bktSecrets)
		for i := range damageSecrets {
			if err := b.Put([]byte(damageSecretName(i)), damageSecretValue(i)); err != nil {
				return err
			}
		}
		return b.Put([]byte("big"), bytes.Repeat([]byte("big"), 20000))
	})
	if err != nil {
		t.Fatal(err)
	}
	authCreate(t, st, "ada@example.com")
	return path
}

// checkStoreData fails unless the store at path opens and holds what
// goodStore wrote.
func checkStoreData(t *testing.T, path string) {
	t.Helper()
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt on a good store: %v", err)
	}
	defer st.Close()
	ctx := context.Background()
	for _, i := range []int{0, 1, damageSecrets / 2, damageSecrets - 1} {
		if v, err := st.GetSecret(ctx, damageSecretName(i)); err != nil || !bytes.Equal(v, damageSecretValue(i)) {
			t.Fatalf("secret %d after reopen: %q, %v", i, v, err)
		}
	}
	if v, err := st.GetSecret(ctx, "big"); err != nil || len(v) != 60000 {
		t.Fatalf("big secret after reopen: %d bytes, %v", len(v), err)
	}
	if _, err := st.UserByEmail(ctx, "ada@example.com"); err != nil {
		t.Fatalf("user after reopen: %v", err)
	}
}

// pageSizeOf reads the page size of a good bbolt file.
func pageSizeOf(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return db.Info().PageSize
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// overwrite writes b at offset off of the file at path.
func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// wantDamaged opens the file at path and wants ErrDamaged naming it, the
// file left as it was, and what went wrong in the message.
func wantDamaged(t *testing.T, path, why string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range []BoltOptions{{}, {MustExist: true}} {
		st, err := OpenBolt(path, opts)
		if err == nil {
			st.Close()
			t.Fatalf("OpenBolt(%+v) on a damaged file = nil error; want ErrDamaged", opts)
		}
		if !errors.Is(err, ErrDamaged) {
			t.Errorf("OpenBolt(%+v) = %v; want it to wrap ErrDamaged", opts, err)
		}
		if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, why) || !strings.Contains(msg, "backup") {
			t.Errorf("OpenBolt(%+v) = %q; want it to name %s, say %q and say what to do", opts, msg, path, why)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Error("OpenBolt changed the damaged file")
	}
}

// The reproductions: each of these crashed the process.

func TestOpenBoltTruncated(t *testing.T) {
	path := goodStore(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	wantDamaged(t, path, "cut short")
}

func TestOpenBoltGarbagePages(t *testing.T) {
	path := goodStore(t)
	ps := pageSizeOf(t, path)
	garbage := make([]byte, 8*ps)
	fillRandom(rand.New(rand.NewPCG(1, 2)), garbage)
	overwrite(t, path, int64(4*ps), garbage) // pages 4 to 11
	wantDamaged(t, path, "page")
}

func TestOpenBoltBothMetasDamaged(t *testing.T) {
	path := goodStore(t)
	ps := pageSizeOf(t, path)
	for _, page := range []int64{0, 1} {
		overwrite(t, path, page*int64(ps)+pageHeaderSize+20, []byte("scribble")) // inside the root bucket field
	}
	wantDamaged(t, path, "checksum mismatch")
}

// A torn meta page is what a crash in the middle of a commit leaves:
// bbolt falls back to the other one, and the store to the commit before,
// and so does the check.
func TestOpenBoltTornMeta(t *testing.T) {
	path := goodStore(t)
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutSecret(context.Background(), "last", []byte("commit"), false); err != nil {
		t.Fatal(err)
	}
	st.Close()
	ps := pageSizeOf(t, path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var metas [2]boltMeta
	for i := range metas {
		page := make([]byte, pageHeaderSize+metaSize)
		if err := readFull(f, page, int64(i*ps)); err != nil {
			t.Fatal(err)
		}
		metas[i] = parseMeta(page)
	}
	f.Close()
	newest := int64(0)
	if metas[1].txid > metas[0].txid {
		newest = 1
	}
	overwrite(t, path, newest*int64(ps)+pageHeaderSize+20, []byte("scribble"))
	checkStoreData(t, path)
	st, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if v, err := st.GetSecret(context.Background(), "last"); err == nil {
		t.Errorf("the torn commit's secret is there (%q)", v)
	}
}

func TestOpenBoltGoodFileKeepsData(t *testing.T) {
	checkStoreData(t, goodStore(t))
}

// A failed open leaves nothing behind that stops the next: another file
// opens, and so does the damaged one once restored.
func TestOpenBoltAfterDamage(t *testing.T) {
	path := goodStore(t)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.db")
	if err := os.WriteFile(other, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(len(good)/2)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(path, BoltOptions{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("OpenBolt on the damaged file = %v; want ErrDamaged", err)
	}
	checkStoreData(t, other)
	if err := os.WriteFile(path, good, 0o600); err != nil { // the same file, restored
		t.Fatal(err)
	}
	checkStoreData(t, path)
}

// The check must never refuse a file bbolt wrote: after many commits of
// puts and deletes (free pages, merged and split pages, buckets made
// inline and not), with and without a synced freelist.
func TestCheckAcceptsChurnedFile(t *testing.T) {
	for _, noFreelistSync := range []bool{true, false} {
		t.Run(fmt.Sprint("NoFreelistSync=", noFreelistSync), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "churn.db")
			db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: noFreelistSync})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			for round := range 60 {
				err := db.Update(func(tx *bolt.Tx) error {
					for range 50 {
						name := fmt.Appendf(nil, "b%d", rng.IntN(8))
						b, err := tx.CreateBucketIfNotExists(name)
						if err != nil {
							return err
						}
						if rng.IntN(4) == 0 {
							if _, err := b.CreateBucketIfNotExists(fmt.Appendf(nil, "sub%d", rng.IntN(3))); err != nil {
								return err
							}
						}
						k := fmt.Appendf(nil, "k%04d", rng.IntN(3000))
						if rng.IntN(3) == 0 {
							if err := b.Delete(k); err != nil {
								return err
							}
						} else if err := b.Put(k, make([]byte, rng.IntN(600))); err != nil {
							return err
						}
					}
					if round%10 == 9 {
						return tx.DeleteBucket(fmt.Appendf(nil, "b%d", rng.IntN(8)))
					}
					return nil
				})
				if err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
					t.Fatal(err)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if err := checkBoltFile(path, 0); err != nil {
				t.Fatalf("the check refuses a file bbolt wrote: %v", err)
			}
		})
	}
}

// Damage anywhere, of any size, is refused or harmless; it never crashes:
// an accepted file reads, every bucket, key and value of it, without a
// fault or a panic.
func TestOpenBoltRandomDamage(t *testing.T) {
	good, err := os.ReadFile(goodStore(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	kinds := []string{"a few bytes", "a run of garbage", "cut short"}
	refused := make([]int, len(kinds))
	const rounds = 300
	for i := range rounds {
		b := bytes.Clone(good)
		kind := i % len(kinds)
		switch kind {
		case 0:
			for range 1 + rng.IntN(4) {
				b[rng.IntN(len(b))] = byte(rng.Uint32())
			}
		case 1:
			at, n := rng.IntN(len(b)), 1+rng.IntN(3*4096)
			fillRandom(rng, b[at:min(at+n, len(b))])
		case 2:
			b = b[:rng.IntN(len(b))]
		}
		path := filepath.Join(dir, fmt.Sprintf("d%d.db", i))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := OpenBolt(path, BoltOptions{NoSync: true})
		if err != nil {
			refused[kind]++
			if !strings.Contains(err.Error(), path) {
				t.Errorf("round %d: %q does not name the file", i, err)
			}
			continue
		}
		if n, err := readAll(st.db); err != nil || n == 0 {
			t.Errorf("round %d (%s): the accepted file read %d values, %v", i, kinds[kind], n, err)
		}
		st.Close()
	}
	for k, name := range kinds {
		t.Logf("%s: %d of %d damaged files refused", name, refused[k], rounds/len(kinds))
	}
	// Garbage over whole pages and a file cut short are refused at least
	// sometimes (a few bytes may all land where nothing is read).
	if refused[1] == 0 || refused[2] == 0 {
		t.Errorf("refused per kind %v; want garbage runs and cut files refused", refused)
	}
}

// readAll reads every value in db, in nested buckets too, and returns
// how many it read.
func readAll(db *bolt.DB) (n int, err error) {
	var walk func(b *bolt.Bucket) error
	walk = func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return walk(b.Bucket(k))
			}
			n++
			_ = bytes.Count(v, []byte{0}) // touch every byte
			return nil
		})
	}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b) })
	})
	return n, err
}

// What the check cannot see, the guard around bbolt's open catches, for
// the part of it that runs in the guarded goroutine; and the lock is
// released, so the file opens once mended. A file with a synced freelist
// cut short after its two meta pages passes bbolt's own checks, and
// faults (SIGBUS) when DB.loadFreelist reads the freelist page past the
// end of the file.
func TestOpenGuardedFaultInOpen(t *testing.T) {
	path := goodStore(t)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: false}) // writes the freelist
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(2*pageSizeOf(t, path))); err != nil {
		t.Fatal(err)
	}
	// Mapped past the end of the file, as after a file shrinks under it.
	db, err = openGuarded(path, bolt.Options{Timeout: time.Second, NoFreelistSync: true, InitialMmapSize: len(good)}, nil)
	if err == nil {
		db.Close()
		t.Fatal("bbolt opened a file cut short")
	}
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) {
		t.Fatalf("openGuarded = %v; want ErrDamaged naming %s", err, path)
	}
	t.Log(err)
	if err := os.WriteFile(path, good, 0o600); err != nil { // the same file, restored
		t.Fatal(err)
	}
	checkStoreData(t, path)
}

// A fault while initialising the buckets, on a file cut short under the
// open DB, is an error too, and the DB is closed.
func TestOpenGuardedFaultInInit(t *testing.T) {
	path := goodStore(t)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := pageSizeOf(t, path)
	db, err := openGuarded(path, bolt.Options{Timeout: time.Second, NoFreelistSync: true}, func(db *bolt.DB) error {
		if err := os.Truncate(path, int64(2*ps)); err != nil {
			return err
		}
		return db.View(func(tx *bolt.Tx) error {
			tx.Bucket(rootBucket).Bucket(bktSecrets).ForEach(func(k, v []byte) error { return nil })
			return nil
		})
	})
	if err == nil {
		db.Close()
		t.Fatal("reading past the end of the file succeeded")
	}
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) {
		t.Fatalf("openGuarded = %v; want ErrDamaged naming %s", err, path)
	}
	t.Log(err)
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	checkStoreData(t, path)
}

// plainBolt makes a bbolt file (not a store) with opts, fill run in a
// transaction (when not nil), and returns its path.
func plainBolt(t *testing.T, opts *bolt.Options, fill func(tx *bolt.Tx) error) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plain.db")
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		t.Fatal(err)
	}
	if fill != nil {
		if err := db.Update(fill); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// A bbolt file of another program (a store path mistyped as its
// database) is refused, naming the file and a bucket of it, and left
// byte for byte as it was; a bbolt file with no buckets yet is a new
// store.
func TestOpenBoltRefusesAnotherProgramsFile(t *testing.T) {
	path := plainBolt(t, nil, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("otherapp"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("precious"))
	})
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckIsBolt(path); !errors.Is(err, ErrNotStore) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"otherapp"`) {
		t.Errorf("CheckIsBolt (caddy validate) = %v; want ErrNotStore naming the file and its bucket", err)
	}
	st, err := OpenBolt(path, BoltOptions{})
	if err == nil {
		st.Close()
		t.Fatal("OpenBolt took another program's bbolt file as a store")
	}
	if !errors.Is(err, ErrNotStore) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"otherapp"`) {
		t.Errorf("OpenBolt = %v; want ErrNotStore naming the file and its bucket", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the refused file was written to")
	}

	st, err = OpenBolt(plainBolt(t, nil, nil), BoltOptions{})
	if err != nil {
		t.Fatalf("a bbolt file with no buckets: %v; want a new store", err)
	}
	st.Close()
}

// CheckIsBolt, for caddy validate, refuses a file with no bbolt header
// at all, a store cut short and an empty file, and passes a store (while
// it is open, too), a missing file, and an empty one that another
// process holds (it is making a store).
func TestCheckIsBolt(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "passwd")
	if err := os.WriteFile(text, []byte(strings.Repeat("root:x:0:0:root:/root:/bin/bash\n", 300)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckIsBolt(text); !errors.Is(err, ErrNotStore) || !strings.Contains(err.Error(), text) {
		t.Errorf("CheckIsBolt(a text file) = %v; want ErrNotStore naming it", err)
	}
	good := goodStore(t)
	if err := CheckIsBolt(good); err != nil {
		t.Errorf("CheckIsBolt(a store) = %v", err)
	}
	st, err := OpenBolt(good, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := CheckIsBolt(good); err != nil {
		t.Errorf("CheckIsBolt(an open store) = %v", err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckIsBolt(empty); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "empty") || !strings.Contains(err.Error(), empty) {
		t.Errorf("CheckIsBolt(an empty file) = %v; want ErrDamaged naming it, empty", err)
	}
	maker, err := os.Open(empty)
	if err != nil {
		t.Fatal(err)
	}
	defer maker.Close()
	if err := syscall.Flock(int(maker.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if err := CheckIsBolt(empty); err != nil {
		t.Errorf("CheckIsBolt(an empty file being made) = %v; want it passed", err)
	}
	if err := CheckIsBolt(filepath.Join(dir, "missing.db")); err != nil {
		t.Errorf("CheckIsBolt(a missing file) = %v; want it left to the start", err)
	}
	if err := CheckIsBolt(filepath.Join(dir, "new", "dirs", "sigra.db")); err != nil {
		t.Errorf("CheckIsBolt(a missing file in missing directories) = %v; want it left to the start, which makes them", err)
	}
	// Paths where the start could make no store are refused, saying why.
	dangling := filepath.Join(dir, "dangling.db")
	if err := os.Symlink(filepath.Join(dir, "gone", "sigra.db"), dangling); err != nil {
		t.Fatal(err)
	}
	// One to a file still to be made, in a directory that is there, is
	// where the start makes the store.
	ahead := filepath.Join(dir, "ahead.db")
	if err := os.Symlink("made-at-start.db", ahead); err != nil {
		t.Fatal(err)
	}
	if err := CheckIsBolt(ahead); err != nil {
		t.Errorf("CheckIsBolt(a link to a store still to be made) = %v; want it left to the start", err)
	}
	// A FIFO is refused, not opened (which would wait for a writer); a
	// chain of links is followed to its end; a directory on the path
	// that is a link to nothing cannot be made.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	chain, link2 := filepath.Join(dir, "chain.db"), filepath.Join(dir, "link2.db")
	if err := os.Symlink(link2, chain); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("missing-dir", "x.db"), link2); err != nil {
		t.Fatal(err)
	}
	dlink := filepath.Join(dir, "dlink")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dlink); err != nil {
		t.Fatal(err)
	}
	goodChain := filepath.Join(dir, "good-chain.db")
	if err := os.Symlink(ahead, goodChain); err != nil {
		t.Fatal(err)
	}
	// The start refuses a FIFO too, rather than wait for a writer.
	if st, err := OpenBolt(fifo, BoltOptions{}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		if st != nil {
			st.Close()
		}
		t.Errorf("OpenBolt(a FIFO) = %v; want it refused, not a regular file", err)
	}
	// A link's "../" is read from the directory it is really in: here
	// p/L/s.db is p/real/x/s.db, a link to ../z/s.db, that is
	// p/real/z/s.db, which can be made (p/z does not exist).
	p := filepath.Join(dir, "p")
	for _, d := range []string{"real/x", "real/z"} {
		if err := os.MkdirAll(filepath.Join(p, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("real/x", filepath.Join(p, "L")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../z/s.db", filepath.Join(p, "real", "x", "s.db")); err != nil {
		t.Fatal(err)
	}
	if err := CheckIsBolt(filepath.Join(p, "L", "s.db")); err != nil {
		t.Errorf("CheckIsBolt(a link whose ../ is read from a linked directory) = %v; want it left to the start", err)
	}
	if err := CheckIsBolt(goodChain); err != nil {
		t.Errorf("CheckIsBolt(a chain of links to a store still to be made) = %v; want it left to the start", err)
	}
	for _, tc := range []struct{ path, want string }{
		{dangling, "a symbolic link to " + filepath.Join(dir, "gone", "sigra.db") + ", whose directory does not exist"},
		{filepath.Join(text, "sigra.db"), text + " is not a directory"},
		{filepath.Join(text, "a", "b", "sigra.db"), text + " is not a directory"},
		{"/dev/null", "not a regular file"},
		{fifo, "not a regular file"},
		{chain, "a symbolic link to " + filepath.Join(dir, "missing-dir", "x.db") + ", whose directory does not exist"},
		{filepath.Join(dlink, "new.db"), dlink + " is a symbolic link to " + filepath.Join(dir, "nowhere") + ", which does not exist"},
	} {
		if err := CheckIsBolt(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("CheckIsBolt(%s) = %v; want an error naming it: %s", tc.path, err, tc.want)
		}
	}
	// A store cut short is a bbolt file, and refused as damaged.
	data, err := os.ReadFile(goodStore(t))
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.db")
	if err := os.WriteFile(cut, data[:len(data)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckIsBolt(cut); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "cut short") || !strings.Contains(err.Error(), cut) {
		t.Errorf("CheckIsBolt(a store cut short) = %v; want ErrDamaged naming it, cut short", err)
	}
}

// A store whose top tree loops back on itself is refused as damaged by
// CheckIsBolt (caddy validate, and every config load, reloads of a
// running Caddy included): bbolt's own search would recurse until the
// stack overflows, which no recover stops.
func TestCheckIsBoltRefusesALoopingTree(t *testing.T) {
	path := goodStore(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	h, err := readBoltHeader(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	// The root page, as a branch page whose one child is itself.
	root := h.meta.root
	p := make([]byte, h.pageSize)
	ne.PutUint64(p[0:], root)
	ne.PutUint16(p[8:], branchPageFlag)
	ne.PutUint16(p[10:], 1)
	ne.PutUint32(p[pageHeaderSize:], elemSize) // the key, after the element
	ne.PutUint32(p[pageHeaderSize+4:], 1)
	ne.PutUint64(p[pageHeaderSize+8:], root)
	p[pageHeaderSize+elemSize] = 'a'
	if _, err := f.WriteAt(p, int64(root*h.pageSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := CheckIsBolt(path); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "used twice") || !strings.Contains(err.Error(), path) {
		t.Errorf("CheckIsBolt(a tree looping back on itself) = %v; want ErrDamaged naming the file, a page used twice", err)
	}
}

// craftBolt writes a bbolt file of page size ps whose header counts pgid
// pages, with its root at page 2, and pages (from page 2 on) as given;
// the file is made as long as pgid pages (sparse).
func craftBolt(t *testing.T, ps, pgid uint64, pages ...[]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "crafted.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range uint64(2) {
		p := make([]byte, ps)
		ne.PutUint64(p[0:], i)
		ne.PutUint16(p[8:], 0x04) // a meta page
		m := p[pageHeaderSize:]
		ne.PutUint32(m[0:], boltMagic)
		ne.PutUint32(m[4:], boltVersion)
		ne.PutUint32(m[8:], uint32(ps))
		ne.PutUint64(m[16:], 2) // the root
		ne.PutUint64(m[32:], noFreelist)
		ne.PutUint64(m[40:], pgid)
		ne.PutUint64(m[48:], i) // txid
		h := fnv.New64a()
		h.Write(m[:metaChecksumAt])
		ne.PutUint64(m[metaChecksumAt:], h.Sum64())
		if _, err := f.WriteAt(p, int64(i*ps)); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range pages {
		if _, err := f.WriteAt(p, int64((uint64(i)+2)*ps)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(pgid * ps)); err != nil {
		t.Fatal(err)
	}
	return path
}

// craftPage is page id of page size ps, with flags, count elements and
// overflow pages after it; elements are to be written in.
func craftPage(ps, id uint64, flags, count uint16, overflow uint32) []byte {
	p := make([]byte, ps)
	ne.PutUint64(p[0:], id)
	ne.PutUint16(p[8:], flags)
	ne.PutUint16(p[10:], count)
	ne.PutUint32(p[12:], overflow)
	return p
}

// Files shaped to exhaust the checks' stack or memory are refused as
// damaged, by caddy validate (CheckIsBolt) and the start alike: a tree
// deeper than any store's (a chain of branch pages, each the one child
// of the one before), and a page whose overflow count would have the
// check read the whole (sparse) file into memory.
func TestCheckRefusesFilesShapedToExhaustIt(t *testing.T) {
	const ps = 4096
	var chain [][]byte
	for id := uint64(2); id < 2+2*maxWalkDepth; id++ {
		p := craftPage(ps, id, branchPageFlag, 1, 0)
		ne.PutUint32(p[pageHeaderSize:], elemSize)
		ne.PutUint32(p[pageHeaderSize+4:], 1)
		ne.PutUint64(p[pageHeaderSize+8:], id+1)
		p[pageHeaderSize+elemSize] = 'a'
		chain = append(chain, p)
	}
	chain = append(chain, craftPage(ps, 2+2*maxWalkDepth, leafPageFlag, 0, 0))
	deep := craftBolt(t, ps, uint64(len(chain))+2, chain...)

	// A sparse 1 GiB file counting its every page, one run of them.
	const pgid = 1 << 18
	hollow := craftBolt(t, ps, pgid, craftPage(ps, 2, leafPageFlag, 0, pgid-3))

	// A run of pages over maxPageRun, written out.
	const run = maxPageRun/ps + 1
	big := craftBolt(t, ps, run+2, append(craftPage(ps, 2, leafPageFlag, 0, run-1), make([]byte, (run-1)*ps)...))

	// Keys that share their bytes: each compared with the next costs a
	// page's worth, so a page of them costs its size squared.
	shared := craftPage(ps, 2, leafPageFlag, 2, 0)
	for i := range 2 {
		at := pageHeaderSize + i*elemSize
		ne.PutUint32(shared[at+4:], uint32(pageHeaderSize+2*elemSize-at)) // both at the array's end
		ne.PutUint32(shared[at+8:], 1000)
	}
	overlap := craftBolt(t, ps, 3, shared)

	// Pages larger than bbolt makes: with holes after each page's start,
	// the file's size would stand to its data as they do to a block.
	const huge = maxPageSize * 2
	largePages := craftBolt(t, huge, 3, craftPage(huge, 2, leafPageFlag, 0, 0))

	for _, tt := range []struct{ path, want string }{
		{deep, "pages below the root"},
		{largePages, "a page size of 131072 bytes"},
		{hollow, "begin with data"},
		{big, "no store has such a page"},
		{overlap, "element 1 overlaps"},
	} {
		if err := CheckIsBolt(tt.path); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckIsBolt = %v; want ErrDamaged, %q", err, tt.want)
		}
		if st, err := OpenBolt(tt.path, BoltOptions{MustExist: true}); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tt.want) {
			if err == nil {
				st.Close()
			}
			t.Errorf("OpenBolt = %v; want ErrDamaged, %q", err, tt.want)
		}
	}
}

// A sparse copy of a store (cp --sparse=always, rsync --sparse) turns
// the zero tails of its pages into holes; with pages larger than the
// file system's blocks (bbolt makes 64 KiB pages on a 64 KiB-page
// kernel), most of the file. Such a copy is a good store.
func TestSparseCopyOfAStoreIsAStore(t *testing.T) {
	path := plainBolt(t, &bolt.Options{PageSize: 65536, NoFreelistSync: true}, nil)
	st, err := OpenBolt(path, BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	authCreate(t, st, "ada@example.com")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(t.TempDir(), "copy.db")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	zero, written := make([]byte, 4096), 0
	for off := 0; off < len(data); off += len(zero) {
		block := data[off:min(off+len(zero), len(data))]
		if bytes.Equal(block, zero[:len(block)]) {
			continue
		}
		if _, err := f.WriteAt(block, int64(off)); err != nil {
			t.Fatal(err)
		}
		written += len(block)
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if written*2 >= len(data) {
		t.Fatalf("the copy holds %d of %d bytes as data: the test needs it mostly holes", written, len(data))
	}
	if err := CheckIsBolt(sparse); err != nil {
		t.Errorf("CheckIsBolt(a sparse copy of a store) = %v", err)
	}
	st, err = OpenBolt(sparse, BoltOptions{MustExist: true})
	if err != nil {
		t.Fatalf("OpenBolt(a sparse copy of a store) = %v", err)
	}
	st.Close()
}

// Another program's bbolt file is named by its first buckets, each cut
// to 64 bytes: a name has no bound but the page's (bbolt limits keys
// put, not bucket names), and quoted whole in a log line (escaped, 4
// bytes to 1) it would flood the log.
func TestAnotherProgramsLongBucketNamesAreCut(t *testing.T) {
	path := plainBolt(t, nil, func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(bytes.Repeat([]byte{0}, 40000))
		return err
	})
	err := CheckIsBolt(path)
	if !errors.Is(err, ErrNotStore) || len(err.Error()) > 1000 || !strings.Contains(err.Error(), `\x00"…`) {
		t.Errorf("CheckIsBolt = %d bytes: %.300v; want ErrNotStore, the bucket's name cut", len(err.Error()), err)
	}
}

// An empty file that bbolt is making (it creates the file, then locks
// it, then writes its first pages) is not refused as an empty store
// between the first two steps, by caddy validate or by a start.
func TestEmptyFileBeingMadeIsNoEmptyStore(t *testing.T) {
	for _, check := range []struct {
		name string
		f    func(path string) error
	}{
		{"CheckIsBolt", CheckIsBolt},
		{"checkBoltFile", func(path string) error { return checkBoltFile(path, time.Second) }},
	} {
		path := filepath.Join(t.TempDir(), "sigra.db")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		made := make(chan error, 1)
		go func() {
			time.Sleep(300 * time.Millisecond)
			db, err := bolt.Open(path, 0o600, nil)
			if err == nil {
				err = db.Close()
			}
			made <- err
		}()
		if err := check.f(path); err != nil {
			t.Errorf("%s of an empty file being made: %v; want it passed", check.name, err)
		}
		if err := <-made; err != nil {
			t.Fatal(err)
		}
	}
}

// CheckIsBolt takes no lock: it must pass a store that another handle
// commits to all the while, growing it.
func TestCheckIsBoltDuringCommits(t *testing.T) {
	path := goodStore(t)
	st, err := OpenBolt(path, BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 300 {
			_ = st.db.Update(func(tx *bolt.Tx) error {
				return bucket(tx, bktSecrets).Put([]byte(fmt.Sprint("grow", i)), bytes.Repeat([]byte{byte(i)}, 4000))
			})
		}
	}()
	for checks := 0; ; checks++ {
		select {
		case <-done:
			if checks == 0 {
				t.Fatal("no check ran during the commits")
			}
			return
		default:
		}
		if err := CheckIsBolt(path); err != nil {
			t.Fatalf("CheckIsBolt during commits, check %d: %v", checks, err)
		}
	}
}

// A store file cut short while open (a smaller copy put in its place
// with cp, say) is refused, reads and writes alike, with an error, not
// the end of the process and every site in it. A write must never
// begin: bbolt's rollback of it reads every page in a goroutine of its
// own. So a write is refused by the file's size, against the size the
// last commit left; a read that faults marks the store broken too.
func TestStoreCutShortWhileOpenIsAnError(t *testing.T) {
	ctx := context.Background()
	newUser := func(i int) *authcore.User {
		return &authcore.User{ID: uuid.Must(uuid.NewV7()).String(), Email: fmt.Sprintf("u%d@example.com", i), Name: strings.Repeat("n", 500), CreatedAt: time.Now()}
	}
	open := func(t *testing.T) (*Bolt, string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "sigra.db")
		st, err := OpenBolt(path, BoltOptions{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		for i := range 400 {
			if err := st.CreateUser(ctx, newUser(i)); err != nil {
				t.Fatal(err)
			}
		}
		return st, path
	}
	refused := func(t *testing.T, st *Bolt, want string) {
		t.Helper()
		if err := st.CreateUser(ctx, newUser(-1)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a write to the store cut short: %v; want it refused: %q", err, want)
		}
		if _, err := st.ListUsers(ctx, "", 1000); err == nil || !strings.Contains(err.Error(), "restore it and restart Caddy") {
			t.Errorf("a read of the store cut short: %v; want it refused", err)
		}
		if err := st.Health(ctx); err == nil {
			t.Error("Health of a store cut short under it: nil; want it to say so")
		}
	}
	t.Run("a write, by the file's size", func(t *testing.T) {
		st, path := open(t)
		if err := os.Truncate(path, 16<<10); err != nil {
			t.Fatal(err)
		}
		refused(t, st, "cut short while in use")
	})
	t.Run("cut to the size before the last write grew it", func(t *testing.T) {
		st, path := open(t)
		size := func() int64 {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			return fi.Size()
		}
		before := size()
		for i := 400; size() == before; i++ {
			if err := st.CreateUser(ctx, newUser(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Truncate(path, before); err != nil {
			t.Fatal(err)
		}
		refused(t, st, "cut short while in use")
	})
	t.Run("a read, by its fault", func(t *testing.T) {
		st, path := open(t)
		if err := os.Truncate(path, 16<<10); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ListUsers(ctx, "", 1000); err == nil || !strings.Contains(err.Error(), "reading the store's file failed") {
			t.Fatalf("listing users of a store cut short under it: %v; want the fault as an error", err)
		}
		refused(t, st, "reading the store's file failed")
	})
}

// Only a fault of the memory map is the file's: any other panic in a
// read is a bug, and goes on as one, leaving the store usable.
func TestStoreReadPanicIsNotTakenForTheFile(t *testing.T) {
	st := auditOpen(t, "")
	func() {
		defer func() {
			if r := recover(); r != "a bug" {
				t.Errorf("recovered %v; want the read's own panic", r)
			}
		}()
		_ = st.view(func(*bolt.Tx) error { panic("a bug") })
	}()
	if err := st.Ping(context.Background()); err != nil {
		t.Errorf("after a read's panic: %v; want the store usable", err)
	}
	if _, err := st.ListUsers(context.Background(), "", 1); err != nil {
		t.Errorf("after a read's panic: %v; want the store usable", err)
	}
}

// A store path that goes up out of a directory ("x/../data/sigra.db") is
// read as the system reads it: through x. The start makes x, then data,
// and opens the store there; caddy validate passes it. Through a file
// rather than a directory, both refuse it. The start had made data
// alone, then failed to open the path.
func TestStorePathUpOutOfADirectory(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/x/../data/sigra.db"
	if err := CheckIsBolt(path); err != nil {
		t.Errorf("CheckIsBolt(%s) = %v; want it left to the start", path, err)
	}
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt(%s) = %v; want the store made", path, err)
	}
	st.Close()
	if fi, err := os.Stat(filepath.Join(dir, "data", "sigra.db")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("after OpenBolt(%s): data/sigra.db: %v; want the store there", path, err)
	}
	if err := CheckIsBolt(path); err != nil {
		t.Errorf("CheckIsBolt(%s), made = %v; want it passed", path, err)
	}

	text := filepath.Join(dir, "passwd")
	if err := os.WriteFile(text, []byte("root:x:0:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	through := text + "/../other/sigra.db"
	if err := CheckIsBolt(through); err == nil || !strings.Contains(err.Error(), text+" is not a directory") {
		t.Errorf("CheckIsBolt(%s) = %v; want it refused, %s is not a directory", through, err, text)
	}
	if st, err := OpenBolt(through, BoltOptions{}); err == nil {
		st.Close()
		t.Errorf("OpenBolt(%s) made a store; want it refused", through)
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after a refused OpenBolt(%s): other/: %v; want nothing made", through, err)
	}
}

func TestWrittenDir(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"sigra.db", "."},
		{"/sigra.db", "/"},
		{"//sigra.db", "/"},
		{"/", "/"},
		{".", "."},
		{"a/b", "a"},
		{"a//b//", "a"},
		{"./x/../data/sigra.db", "./x/../data"},
		{"./x/..", "./x"},
		{"../data/sigra.db", "../data"},
		{"/var/lib/sigra/sigra.db", "/var/lib/sigra"},
	} {
		if got := writtenDir(tc.path); got != tc.want {
			t.Errorf("writtenDir(%q) = %q; want %q", tc.path, got, tc.want)
		}
	}
}
