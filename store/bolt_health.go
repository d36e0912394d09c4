package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A store that can be read may still refuse every write (a full disk, a
// file made immutable) or be gone (its file removed or replaced while
// open, so that every write lands in a file nobody will open again).
// Health tells those apart from a working store; Ping only reads.
const (
	// writeFailHold is how long a failed commit keeps Health failing:
	// on a full disk a small write may pass between larger ones that do
	// not, and the check should not flap.
	writeFailHold = time.Minute
	// probeAfter is how long without a successful commit before Health
	// tries one itself, and probeEvery how often at most, whoever asks.
	probeAfter = 30 * time.Second
	probeEvery = 10 * time.Second
	// minFree is the least free space Health takes for a working store:
	// bbolt grows its file by up to 16 MiB at a time (its AllocSize), and
	// on a full disk a small write can still pass in pages the file has
	// free while every write that needs it to grow fails.
	minFree = 16 << 20
)

// freeSpace is the space free on the file system holding a directory,
// and whether that is known (statfsFree; a variable for tests).
var freeSpace = statfsFree

// writeHealth is what the store's commits have said lately.
type writeHealth struct {
	okAt   atomic.Int64 // unix nanoseconds of the last successful commit
	failAt atomic.Int64 // ... and of the last failed one
	failed atomic.Pointer[error]

	mu      sync.Mutex
	running *healthCheck // the check under way, if any
	// probedAt and probeErr are when the last test write ended and what
	// it said; only the one running check touches them.
	probedAt time.Time
	probeErr error

	opened os.FileInfo // the file as opened, to notice it removed or replaced
	// committed and begun bound the id of the store's last commit, as
	// its file's meta pages say it unless something else wrote them
	// (writtenOver): at least the last commit that returned (only ever
	// raised: commits return in no set order), at most the last one that
	// began (noted under bbolt's writer lock). Only this process commits:
	// bbolt's file lock keeps every other out.
	committed, begun atomic.Uint64
	// foreign is set for good when a commit began from an id that no
	// commit of this store's left (the file written over with another
	// store's, which bbolt then goes on from).
	foreign atomic.Bool
	// pageSize is the store's, noted at the start: the store's own
	// record of it lies in the memory map, which a file written over may
	// no longer back (a read there ends the process).
	pageSize int
}

// view is db.View, refused once the store is known broken (its file
// cut short under it), and with a fault in bbolt's memory map as an
// error. bbolt reads the file through a shared mapping: when the file is
// cut short while Caddy has it open (a smaller copy put in its place
// against README's advice), a read past its new end faults, which would
// end the process and every site with it. In a read transaction the
// fault is a panic that ends the transaction only (its rollback reads
// nothing), and the store is marked broken.
func (b *Bolt) view(fn func(*bolt.Tx) error) (err error) {
	if p := b.broken.Load(); p != nil {
		return *p
	}
	defer b.fault(&err, debug.SetPanicOnFault(true))
	return b.db.View(fn)
}

// fault, deferred by view, puts the goroutine's panic-on-fault setting
// back, and turns a fault in the memory map into *err, marking the store
// broken. Any other panic goes on: it is a bug, not the file.
func (b *Bolt) fault(err *error, was bool) {
	debug.SetPanicOnFault(was)
	r := recover()
	if r == nil {
		return
	}
	// A fault under panic-on-fault is a runtime.Error that gives the
	// address (a nil pointer's has none).
	if _, ok := r.(interface {
		runtime.Error
		Addr() uintptr
	}); !ok {
		panic(r)
	}
	e := fmt.Errorf("storage %s: reading the store's file failed (%v): it was cut short or written over while in use; restore it and restart Caddy", b.path, r)
	b.broken.CompareAndSwap(nil, &e)
	*err = e
}

// writable refuses a write on a store whose file was cut short: the
// file opened (not whatever its path names now) must be as long as it
// was after the store's last commit. A write on a file cut short cannot
// be made safe once begun: it reads pages past the end in the caller's
// goroutine, and bbolt's rollback reads every page in a goroutine of its
// own, where a fault ends the process. (A file cut short between this
// check and the transaction still can.) Reads need no such check: a
// fault in one is caught (view).
func (b *Bolt) writable() error {
	if p := b.broken.Load(); p != nil {
		return *p
	}
	need := b.mapped.Load()
	if need == 0 || b.sizeFile == nil {
		return nil
	}
	fi, err := b.sizeFile.Stat()
	if err != nil || uint64(fi.Size()) >= need {
		return nil
	}
	e := fmt.Errorf("storage %s: the file is %d bytes, shorter than the %d bytes the store holds: it was cut short while in use (a copy put in its place?); restore it and restart Caddy", b.path, fi.Size(), need)
	b.broken.CompareAndSwap(nil, &e)
	return *b.broken.Load()
}

// update is db.Update, noting whether the commit itself failed: an error
// from fn is the caller's (a conflict, not found), one after fn returned
// nil is the storage's. It is refused on a file cut short (writable).
func (b *Bolt) update(fn func(*bolt.Tx) error) error {
	if err := b.writable(); err != nil {
		return err
	}
	ran, id := false, uint64(0)
	err := b.db.Update(func(tx *bolt.Tx) error {
		err := fn(tx)
		ran, id = err == nil, uint64(tx.ID())
		if ran {
			// The last commit that began either landed (this one is the
			// next) or failed (this one has its id again).
			if prev := b.health.begun.Load(); id != prev+1 && id != prev {
				b.health.foreign.Store(true)
			}
			b.health.begun.Store(id)
		}
		return err
	})
	if ran {
		if err == nil {
			raise(&b.health.committed, id)
			b.noteSize()
		}
		b.noteCommit(err)
	}
	return err
}

// noteSize raises mapped to the size of the store's file, which bbolt
// grows before it writes a commit's pages and never shrinks: a later
// size below it is a file cut short.
func (b *Bolt) noteSize() {
	if b.sizeFile == nil {
		return
	}
	if fi, err := b.sizeFile.Stat(); err == nil && fi.Size() > 0 {
		raise(&b.mapped, uint64(fi.Size()))
	}
}

// updateWith runs change, one of this store's …In changes, in a write
// transaction of its own.
func (b *Bolt) updateWith(change func(tx any) error) error {
	return b.update(func(tx *bolt.Tx) error { return change(tx) })
}

// raise sets a to v unless it holds more already.
func raise(a *atomic.Uint64, v uint64) {
	for c := a.Load(); c < v; c = a.Load() {
		if a.CompareAndSwap(c, v) {
			return
		}
	}
}

func (b *Bolt) noteCommit(err error) {
	now := time.Now().UnixNano()
	if err == nil {
		b.health.okAt.Store(now)
		return
	}
	b.health.failed.Store(&err)
	b.health.failAt.Store(now)
}

// Health reports whether the store works: it can be read, its file is
// still the one opened, and it can be written (no commit failed in the
// last minute, 16 MiB free at least on its file system where that is
// known; without a successful commit in the last 30 s, it tries a small
// one itself, at most every 10 s).
//
// It waits for the answer no longer than ctx allows: a stalled disk
// holds a read, a stat or bbolt's commit for as long as it stalls, and a
// health check that hangs with it tells nobody anything. One check runs
// at a time; it goes on after a caller gives up, and later callers wait
// for it rather than start another.
func (b *Bolt) Health(ctx context.Context) error {
	h := &b.health
	h.mu.Lock()
	c := h.running
	if c == nil {
		c = &healthCheck{done: make(chan struct{}), start: time.Now()}
		h.running = c
		go func() {
			// A read of the memory map where a file written over no longer
			// backs it faults: a panic (checkSafely), not the end of Caddy.
			debug.SetPanicOnFault(true)
			c.err = b.checkSafely()
			h.mu.Lock()
			h.running = nil
			h.mu.Unlock()
			close(c.done)
		}()
	}
	h.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("storage %s: the health check has not finished after %s (a stalled disk, or a long write holding the store): %w", b.path, time.Since(c.start).Round(time.Millisecond), ctx.Err())
	}
}

// healthCheck is one run of Health's checks; err is set before done is
// closed.
type healthCheck struct {
	done  chan struct{}
	start time.Time
	err   error
}

// checkSafely is check, with a panic for its error: bbolt panics on
// pages that are not its own (a file written over while open), and a
// health check must say so rather than end Caddy.
func (b *Bolt) checkSafely() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("storage %s: reading the store failed (%v): was its file written over while in use?", b.path, r)
		}
	}()
	return b.check()
}

// check is Health's work, one run at a time.
func (b *Bolt) check() error {
	// The file first: reading a store written over can crash.
	if err := b.FileGone(); err != nil {
		return err
	}
	if p := b.broken.Load(); p != nil {
		return *p
	}
	if err := b.Ping(context.Background()); err != nil {
		return err
	}
	if free, ok := freeSpace(filepath.Dir(b.path)); ok && free < minFree {
		return fmt.Errorf("storage %s: %d KiB free on its file system, less than the %d MiB the store may need to grow: writes fail or soon will", b.path, free>>10, minFree>>20)
	}
	h := &b.health
	now := time.Now()
	if at := h.failAt.Load(); at != 0 && now.Sub(time.Unix(0, at)) < writeFailHold {
		if p := h.failed.Load(); p != nil {
			return fmt.Errorf("storage %s: a write failed %s ago: %w", b.path, now.Sub(time.Unix(0, at)).Round(time.Second), *p)
		}
	}
	if at := h.okAt.Load(); at != 0 && now.Sub(time.Unix(0, at)) < probeAfter {
		return nil
	}
	if !h.probedAt.IsZero() && now.Sub(h.probedAt) < probeEvery {
		return h.probeErr
	}
	err := b.update(func(tx *bolt.Tx) error {
		return bucket(tx, bktSecrets).Put([]byte(secretHealthProbe), []byte(now.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		err = fmt.Errorf("storage %s: a test write failed: %w", b.path, err)
	}
	h.probedAt, h.probeErr = time.Now(), err
	return err
}

// secretHealthProbe is the key Health's test write goes to: the time of
// the last one, nothing secret.
const secretHealthProbe = "health_probe"

// IsFile reports whether path names the file this store opened (the
// same file, however the path is written).
func (b *Bolt) IsFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && b.health.opened != nil && os.SameFile(fi, b.health.opened)
}

// FileGone reports the store's file removed, or replaced by another,
// since it was opened: the store goes on working in the file it has
// open, which nothing will open again (a start makes a new, empty one).
func (b *Bolt) FileGone() error {
	if b.health.opened == nil {
		return nil
	}
	fi, err := os.Stat(b.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("storage %s: the file was removed while in use: changes since go to a file nobody will open again; restore it from a backup and restart", b.path)
	case err != nil:
		return fmt.Errorf("storage %s: %w", b.path, err)
	case !os.SameFile(fi, b.health.opened):
		return fmt.Errorf("storage %s: the file was replaced while in use: changes since go to the old one; restart to open the new one, or put the old one back", b.path)
	}
	return b.writtenOver()
}

// writtenOver reports the file written over in place (a backup copied
// onto it with cp, say): the same file, but its last commit is no longer
// the open store's. bbolt reads the file through its memory map, so the
// store then reads another store's pages, and a read can crash Caddy.
func (b *Bolt) writtenOver() error {
	over := fmt.Errorf("storage %s: the file was written over while in use (a copy put onto it?): the store now reads pages that are not its own; stop Caddy, put back the file you want, and start it", b.path)
	if b.health.foreign.Load() {
		return over
	}
	before := b.health.committed.Load()
	f, err := os.Open(b.path)
	if err != nil {
		return fmt.Errorf("storage %s: %w", b.path, err)
	}
	defer f.Close()
	metas := readMetas(f, uint64(b.health.pageSize))
	for _, m := range metas {
		var pe *fs.PathError
		if errors.As(m.valid, &pe) {
			return fmt.Errorf("storage %s: %w", b.path, m.valid) // the read failed, not the page
		}
	}
	// Neither page valid (shorter than a store's meta pages, or no store
	// at all) is another file.
	m := currentMeta(metas)
	// Commits go on meanwhile: the file's last may be any from the one
	// returned before the read to the one begun after it.
	if m.valid != nil || m.txid < before || m.txid > b.health.begun.Load() {
		return over
	}
	return nil
}
