// Package store holds the persistence backends. Each implements the small
// interfaces that the domain packages declare (authcore.Store, audit's
// store, ...); the domain packages never import this package.
//
// The bbolt file has one versioned root bucket:
//
//	sigra/v1/
//	├── users              user id (16-byte UUIDv7)          → JSON authcore.User
//	├── users_by_email     normalised email                  → user id (16 bytes)
//	├── sessions           session id (32-byte SHA-256)      → JSON authcore.Session
//	├── sessions_by_user   user id (16) ‖ session id (32)    → nil
//	├── sessions_by_expiry expires_at (8) ‖ session id (32)  → nil (bolt_session_index.go)
//	├── sessions_by_seen   last_seen (8) ‖ session id (32)   → nil
//	├── secrets            name                              → opaque bytes (sealed by the caller)
//	├── totp               user id (16)                      → JSON TOTPRecord (secret sealed, aad = user id)
//	├── recovery_codes     user id (16)                      → concatenated 32-byte code hashes
//	├── regulation         "user:<id>" | "email:<hash>" | "ip:<addr or /64>" → JSON RegulationState
//	└── …                  the audit buckets (bolt_audit.go)
//
// Keys sort the way they are queried: raw UUIDv7 bytes sort by creation time.
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	rootBucket = []byte("sigra/v1")

	bktUsers          = []byte("users")
	bktUsersByEmail   = []byte("users_by_email")
	bktSessions       = []byte("sessions")
	bktSessionsByUser = []byte("sessions_by_user")
	bktSecrets        = []byte("secrets")
	// bktFormat holds keyFormat: the layout of the store's buckets.
	bktFormat = []byte("format")
	keyFormat = []byte("format")

	authBuckets = [][]byte{bktUsers, bktUsersByEmail, bktSessions, bktSessionsByUser, bktSecrets, bktFormat}
)

// storeFormat is the layout this build writes and reads. A change of
// layout that an older build would misread (a bucket renamed, records it
// would rewrite without their new fields) raises it, so that the older
// build refuses the store instead of running on it. Stores from before
// the number was kept are format 1.
const storeFormat = 1

// ErrNewerStore means the store was written by a newer Sigra, in a
// layout this build does not know.
var ErrNewerStore = errors.New("the store was written by a newer Sigra")

// ErrLocked means another process holds the bbolt file.
var ErrLocked = errors.New("the database file is locked by another process")

// ErrNoStore means OpenBolt was told the file must exist, and it does not.
var ErrNoStore = errors.New("no store at this path")

// ErrNotStore means the file is no Sigra store: a bbolt file of another
// program, with buckets and not Sigra's (OpenBolt), or no bbolt file at
// all (CheckIsBolt).
var ErrNotStore = errors.New("not a Sigra store")

// BoltOptions tune OpenBolt.
type BoltOptions struct {
	// LockTimeout is how long to wait for another process to release the
	// file lock. Default 1s.
	LockTimeout time.Duration
	// NoSync disables fsync, for benchmarks that measure something else.
	// Never set it in production.
	NoSync bool
	// MustExist opens only a file that is already there: no directory or
	// file is created, and a missing one is ErrNoStore. The check is the
	// open itself, so the file cannot vanish between a check and the use.
	MustExist bool

	// openFile, set by tests, opens the file in place of os.OpenFile.
	openFile func(name string, flag int, perm os.FileMode) (*os.File, error)
}

// Bolt is the embedded single-file backend.
type Bolt struct {
	db     *bolt.DB
	path   string
	health writeHealth

	// replays counts the replays of dead deliveries, which put deliveries
	// of old rows back in the outbox: a prune whose scan of the outbox
	// is older than one starts again (PruneAudit). The file is this
	// process's alone, so memory is enough.
	replays atomic.Uint64
	// replayMu is held by a replay across its transaction and by a prune
	// while it reads replays, so the prune reads the count before a
	// replay counted itself or after its commit: never between, when its
	// scan of the outbox would miss the deliveries the count says it
	// saw.
	replayMu sync.Mutex
	// pruneScanned, set by tests, runs between a prune's scan of the
	// outbox and its deletions; replayCounted, within a replay's
	// transaction once it counted itself.
	pruneScanned, replayCounted func()

	// mapped is the size in bytes of the store's file after its last
	// commit, which the file must keep (writable); sizeFile is that
	// file, opened again to read its size. broken, once set, is why the
	// store's file can no longer be read (cut short under it), and
	// refuses every transaction.
	mapped   atomic.Uint64
	sizeFile *os.File
	broken   atomic.Pointer[error]
}

// OpenBolt opens (creating if needed) the bbolt file at path and makes
// sure every bucket exists. A file held by another process fails fast
// with an error that wraps ErrLocked and names the file; a damaged one
// fails with an error that wraps ErrDamaged and names it (checkBoltFile).
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	bopts := bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync, NoFreelistSync: true, OpenFile: opts.openFile}
	fresh := false // this open makes the file
	if opts.MustExist {
		openFile := opts.openFile
		if openFile == nil {
			openFile = os.OpenFile
		}
		bopts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
			return openFile(name, flag&^os.O_CREATE, perm)
		}
	} else if err := os.MkdirAll(writtenDir(path), 0o700); err != nil {
		return nil, fmt.Errorf("storage %s: creating directory: %w", path, err)
	} else if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		fresh = true
	}
	if err := checkBoltFile(path, opts.LockTimeout); err != nil {
		return nil, err
	}
	db, err := openGuarded(path, bopts, initBolt)
	if err != nil && fresh && !errors.Is(err, bolt.ErrTimeout) {
		removeUnmade(path)
	}
	if errors.Is(err, ErrDamaged) {
		return nil, err
	}
	if errors.Is(err, ErrNotStore) {
		return nil, fmt.Errorf("storage %s: %w", path, err)
	}
	if opts.MustExist && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("storage %s: %w", path, ErrNoStore)
	}
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, lockedError(path)
	}
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", path, err)
	}
	b := &Bolt{db: db, path: path}
	b.health.opened, _ = os.Stat(path) // under bbolt's lock: the file just opened
	b.health.pageSize = db.Info().PageSize
	if f, err := os.Open(path); err == nil {
		if fi, err := f.Stat(); err == nil && b.health.opened != nil && os.SameFile(fi, b.health.opened) {
			b.sizeFile = f
		} else {
			f.Close()
		}
	}
	if err := db.View(func(tx *bolt.Tx) error {
		b.health.committed.Store(uint64(tx.ID()))
		b.health.begun.Store(uint64(tx.ID()))
		return nil
	}); err != nil {
		b.closeSizeFile()
		_ = db.Close()
		return nil, fmt.Errorf("storage %s: %w", path, err)
	}
	b.noteSize()
	return b, nil
}

func (b *Bolt) closeSizeFile() {
	if b.sizeFile != nil {
		_ = b.sizeFile.Close()
	}
}

func lockedError(path string) error {
	return fmt.Errorf("storage %s: %w (another Caddy, or a caddy sigra command working on the store offline: a store serves one Caddy at a time)", path, ErrLocked)
}

// initBolt makes sure every bucket exists and moves old layouts on. It
// refuses a bbolt file of another program (ErrNotStore), writing
// nothing to it: a store path mistyped as another program's database
// must not get Sigra's buckets beside that program's.
func initBolt(db *bolt.DB) error {
	if err := db.View(checkIsStore); err != nil {
		return err
	}
	err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(rootBucket)
		if err != nil {
			return err
		}
		for _, group := range [][][]byte{authBuckets, sessionIndexBuckets, auditBuckets, mfaBuckets} {
			for _, name := range group {
				if _, err := root.CreateBucketIfNotExists(name); err != nil {
					return fmt.Errorf("bucket %s: %w", name, err)
				}
			}
		}
		if err := dropOldPendingTOTP(root); err != nil {
			return fmt.Errorf("bucket %s: %w", bktTOTPPending, err)
		}
		return ensureSessionIndexes(tx)
	})
	if err != nil {
		return fmt.Errorf("initialising buckets: %w", err)
	}
	if err := migrateAuditOutbox(db); err != nil {
		return err
	}
	// The format is written once the layout is this build's: a store
	// left half migrated keeps the older number, and is migrated again.
	return db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(rootBucket).Bucket(bktFormat).Put(keyFormat, []byte(strconv.Itoa(storeFormat)))
	})
}

// checkIsStore refuses a bbolt file of another program (ErrNotStore)
// and a store in a layout newer than this build's. A file without
// buckets passes: a new store is made of it.
func checkIsStore(tx *bolt.Tx) error {
	if root := tx.Bucket(rootBucket); root != nil {
		return checkFormat(root)
	}
	var names []string
	c := tx.Cursor() // the top-level buckets
	for k, _ := c.First(); k != nil && len(names) < 3; k, _ = c.Next() {
		name := strconv.Quote(string(k[:min(len(k), 64)]))
		if len(k) > 64 {
			name += "…"
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil // a new file
	}
	return fmt.Errorf("%w: a bbolt file of another program (its buckets include %s), left as it is; name a file of Sigra's own", ErrNotStore, strings.Join(names, ", "))
}

// checkFormat refuses a store in a layout newer than this build's.
func checkFormat(root *bolt.Bucket) error {
	b := root.Bucket(bktFormat)
	if b == nil {
		return nil // from before the format was kept: format 1
	}
	v := b.Get(keyFormat)
	if v == nil {
		return nil
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 1 {
		return fmt.Errorf("its store format number %q does not read: the file is damaged; restore it from a backup", v)
	}
	if n > storeFormat {
		return fmt.Errorf("%w (store format %d; this build reads up to %d): run that version or a newer one, or restore a backup that this version made", ErrNewerStore, n, storeFormat)
	}
	return nil
}

// checkBoltFile refuses a file that bbolt's open would crash on (see
// bolt_check.go), and an empty one: bbolt would make a new store of it,
// but an empty file where a store should be is one cut short (a copy
// onto a full disk), whose users a new one would quietly replace. A
// missing file passes (bbolt makes a new one, or OpenBolt reports
// ErrNoStore); so does one it cannot open, for bbolt to report.
//
// The check holds a shared lock: a commit under way in another process
// rewrites the tree, and a file being made is empty or half written. A
// read-only bbolt handle is that lock, and bbolt knows each platform's
// locking. Its open reads the two meta pages only, after checking that
// the file is long enough for them: no freelist, no walk, nothing that a
// damaged file makes it fault on. Between its Close and the writable open
// another process may take the file; then that open fails with ErrLocked.
func checkBoltFile(path string, lockTimeout time.Duration) error {
	// Looked at before it is opened: opening a FIFO waits for a writer,
	// and a start would hang there.
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() && !fi.Mode().IsRegular() {
		return notRegular(path, fi)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() == 0 && !fi.Mode().IsRegular() {
		return nil
	} else if fi.Size() == 0 {
		// A file another process is making is empty until it has written
		// its first pages.
		empty, held := settledEmpty(f, lockTimeout)
		if held {
			return lockedError(path)
		}
		if empty {
			return emptyStore(path)
		}
		return nil // made meanwhile
	}
	header := func() (boltHeader, error) {
		fi, err := f.Stat()
		if err != nil {
			return boltHeader{}, err
		}
		return readBoltHeader(f, fi.Size())
	}
	ro, err := openGuarded(path, bolt.Options{ReadOnly: true, Timeout: lockTimeout}, nil)
	if errors.Is(err, bolt.ErrTimeout) {
		return lockedError(path)
	}
	if err != nil {
		// Not locked, so not being written: say what is wrong with it.
		if _, herr := header(); herr != nil {
			return damaged(path, herr)
		}
		if errors.Is(err, ErrDamaged) {
			return err
		}
		return fmt.Errorf("storage %s: %w", path, err)
	}
	defer ro.Close()
	h, err := header()
	if err == nil {
		err = checkBoltTree(f, h)
	}
	if err != nil {
		return damaged(path, err)
	}
	return nil
}

func emptyStore(path string) error {
	return fmt.Errorf("storage %s: %w: the file is empty; restore the store from a backup, or remove the file to start a new one", path, ErrDamaged)
}

// removeUnmade removes the file at path that OpenBolt created when
// making the store failed before bbolt had written its first pages (a
// full disk, say): left behind, it would be taken for a damaged store at
// the next start. Not while another process holds the file, nor once it
// is long enough to hold a store's first pages.
func removeUnmade(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	unlock, err := lockShared(f, 0)
	if err != nil {
		return
	}
	defer unlock()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() >= 4*int64(os.Getpagesize()) {
		return
	}
	_ = os.Remove(path)
}

// openGuarded runs bolt.Open and then init (if not nil) on the new DB in a
// goroutine of its own that turns a fault on the mapped file (SIGBUS past
// its end, SIGSEGV past the mapping) into a panic, and turns any panic
// there into an error that wraps ErrDamaged and names the file.
// checkBoltFile has refused what it can see; this is for the rest, for
// the part of the work done in this goroutine. bbolt's open-time page
// walk runs in a goroutine bbolt starts (DB.freepages), where nothing
// here can catch a fault or a panic: that is what checkBoltFile is for.
//
// A panic inside init leaves a DB, which is closed: file, lock and
// mapping released. A panic inside bolt.Open leaves its DB unreachable,
// with the file open, locked and mapped. The file is caught as bbolt
// opens it, unlocked and closed, so the path can be opened again once
// the file is mended. What remains until the process exits: the mapping
// (address space as large as the file rounded up to a power of two, at
// least 32 KiB, which also keeps the open file itself alive in the
// kernel), and, when the panic came from an error of bbolt's page walk,
// that walk's goroutine, blocked for good on its error channel.
func openGuarded(path string, bopts bolt.Options, init func(*bolt.DB) error) (*bolt.DB, error) {
	type result struct {
		db  *bolt.DB
		err error
	}
	done := make(chan result, 1)
	go func() {
		debug.SetPanicOnFault(true) // for this goroutine, which ends here
		var file *os.File
		var db *bolt.DB
		defer func() {
			if r := recover(); r != nil {
				releaseAfterPanic(db, file)
				done <- result{err: damaged(path, fmt.Errorf("reading it failed: %v", r))}
			}
		}()
		openFile := bopts.OpenFile
		if openFile == nil {
			openFile = os.OpenFile
		}
		bopts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := openFile(name, flag, perm)
			file = f
			return f, err
		}
		d, err := bolt.Open(path, 0o600, &bopts)
		if err != nil {
			done <- result{err: err}
			return
		}
		db = d
		if init != nil {
			if err := init(db); err != nil {
				db.Close()
				done <- result{err: err}
				return
			}
		}
		done <- result{db: db}
	}()
	r := <-done
	return r.db, r.err
}

// releaseAfterPanic frees what a panic in openGuarded left: the DB if
// bolt.Open returned one, else the file it opened. A second panic here
// (closing a DB whose mapping faults) is swallowed: the first one is the
// error to report.
func releaseAfterPanic(db *bolt.DB, file *os.File) {
	defer func() { _ = recover() }()
	if db != nil {
		_ = db.Close()
		return
	}
	if file != nil {
		// The mapping holds the open file, and with it the lock, past
		// Close: unlock first.
		unlockFile(file)
		_ = file.Close()
	}
}

// Path is the file this store was opened from.
func (b *Bolt) Path() string { return b.path }

// Close releases the file and its lock.
func (b *Bolt) Close() error {
	b.closeSizeFile()
	return b.db.Close()
}

// Ping checks that the file can still be read.
func (b *Bolt) Ping(ctx context.Context) error {
	return b.view(func(tx *bolt.Tx) error {
		if tx.Bucket(rootBucket) == nil {
			return errors.New("root bucket missing")
		}
		return nil
	})
}

// bucket returns a bucket under the root. It exists: OpenBolt created it.
func bucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	return tx.Bucket(rootBucket).Bucket(name)
}

// clone copies a byte slice out of a transaction.
// seekAfter moves c to the first key after after, or to the first key
// when after is nil: where a walk in chunks resumes.
func seekAfter(c *bolt.Cursor, after []byte) (k, v []byte) {
	if after == nil {
		return c.First()
	}
	if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
		return c.Next()
	}
	return k, v
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
