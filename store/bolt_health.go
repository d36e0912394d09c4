package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

	probeMu  sync.Mutex
	probedAt time.Time     // when the last test write ended
	probeErr error         // ... and what it said
	probing  chan struct{} // closed when the running one ends; nil when none runs

	opened os.FileInfo // the file as opened, to notice it removed or replaced
}

// update is db.Update, noting whether the commit itself failed: an error
// from fn is the caller's (a conflict, not found), one after fn returned
// nil is the storage's.
func (b *Bolt) update(fn func(*bolt.Tx) error) error {
	ran := false
	err := b.db.Update(func(tx *bolt.Tx) error {
		err := fn(tx)
		ran = err == nil
		return err
	})
	if ran {
		b.noteCommit(err)
	}
	return err
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
// one itself, at most every 10 s, and waits for it no longer than ctx).
func (b *Bolt) Health(ctx context.Context) error {
	if err := b.Ping(ctx); err != nil {
		return err
	}
	if err := b.FileGone(); err != nil {
		return err
	}
	if free, ok := freeSpace(filepath.Dir(b.path)); ok && free < minFree {
		return fmt.Errorf("storage %s: %d KiB free on its file system, less than the %d MiB the store may need to grow: writes fail or soon will", b.path, free>>10, minFree>>20)
	}
	now := time.Now()
	if at := b.health.failAt.Load(); at != 0 && now.Sub(time.Unix(0, at)) < writeFailHold {
		if p := b.health.failed.Load(); p != nil {
			return fmt.Errorf("storage %s: a write failed %s ago: %w", b.path, now.Sub(time.Unix(0, at)).Round(time.Second), *p)
		}
	}
	if at := b.health.okAt.Load(); at != 0 && now.Sub(time.Unix(0, at)) < probeAfter {
		return nil
	}
	return b.probe(ctx, now)
}

// probe runs Health's test write, or waits for the one running, for no
// longer than ctx allows: a stalled disk holds bbolt's commit for as long
// as it stalls, and a health check that hangs with it tells nobody
// anything. The write goes on after a caller gives up, and the next
// caller waits for it rather than start another.
func (b *Bolt) probe(ctx context.Context, now time.Time) error {
	h := &b.health
	h.probeMu.Lock()
	done := h.probing
	switch {
	case done != nil:
	case !h.probedAt.IsZero() && now.Sub(h.probedAt) < probeEvery:
		err := h.probeErr
		h.probeMu.Unlock()
		return err
	default:
		done = make(chan struct{})
		h.probing = done
		go func() {
			err := b.update(func(tx *bolt.Tx) error {
				return bucket(tx, bktSecrets).Put([]byte(secretHealthProbe), []byte(now.UTC().Format(time.RFC3339Nano)))
			})
			if err != nil {
				err = fmt.Errorf("storage %s: a test write failed: %w", b.path, err)
			}
			h.probeMu.Lock()
			h.probedAt, h.probeErr, h.probing = time.Now(), err, nil
			h.probeMu.Unlock()
			close(done)
		}()
	}
	h.probeMu.Unlock()
	select {
	case <-done:
		h.probeMu.Lock()
		defer h.probeMu.Unlock()
		return h.probeErr
	case <-ctx.Done():
		return fmt.Errorf("storage %s: a test write has not finished after %s (a stalled disk, or a long write holding the store): %w", b.path, time.Since(now).Round(time.Millisecond), ctx.Err())
	}
}

// secretHealthProbe is the key Health's test write goes to: the time of
// the last one, nothing secret.
const secretHealthProbe = "health_probe"

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
	return nil
}
