package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// openFD finds the descriptor this process holds on path. Linux has
// /proc: without it the test fails rather than pass unrun.
func openFD(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("no /proc/self/fd: %v", err)
	}
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				return fd
			}
		}
	}
	t.Fatalf("no descriptor on %s", path)
	return -1
}

// failWrites makes this process's writes to the store file at path fail,
// as a full disk or an immutable file would: bbolt's descriptor is
// swapped for a read-only one until restore.
func failWrites(t *testing.T, path string) (restore func()) {
	t.Helper()
	fd := openFD(t, path)
	saved, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ro)
	if err := unix.Dup3(ro, fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		defer unix.Close(saved)
		if err := unix.Dup3(saved, fd, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
	}
}

// A store whose writes fail (here its descriptor made read-only under
// bbolt, as a full disk or an immutable file would refuse them) still
// reads, and Health says it does not work: Ping alone said it did.
func TestHealthSeesFailingWrites(t *testing.T) {
	ctx := context.Background()
	b := openTemp(t)
	path := b.path
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health of a new store: %v", err)
	}
	if v, err := b.GetSecret(ctx, secretHealthProbe); err != nil || len(v) == 0 {
		t.Errorf("no commit yet, so Health wrote its probe: %q, %v", v, err)
	}

	restore := failWrites(t, path)
	_, werr := b.PutSecret(ctx, "x", []byte("y"), false)
	if werr == nil {
		t.Fatal("a write on a read-only descriptor passed; the test cannot see a failed commit")
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v; want the store still readable", err)
	}
	err := b.Health(ctx)
	if err == nil || !strings.Contains(err.Error(), "a write failed") {
		t.Errorf("Health after a failed commit: %v; want the failure", err)
	}
	restore()
	// A caller's own error (nothing to write, a conflict) is not the
	// storage failing: only the commit's is noted.
	b.health.failAt.Store(0)
	if _, err := b.UpdateUser(ctx, "nobody", false, func(*authcore.User) error { return nil }); !errors.Is(err, authcore.ErrNotFound) {
		t.Fatalf("updating a user who is not there: %v; want ErrNotFound", err)
	}
	if err := b.Health(ctx); err != nil {
		t.Errorf("Health with writes working again: %v", err)
	}
}

// A store file removed or replaced while open: the store goes on
// working in a file nobody will open again, and Health says so.
func TestHealthSeesTheFileGone(t *testing.T) {
	ctx := context.Background()
	b := openTemp(t)
	path := b.path
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := b.Health(ctx); err == nil || !strings.Contains(err.Error(), "was removed while in use") {
		t.Errorf("Health with the file removed: %v", err)
	}
	if err := os.WriteFile(path, []byte("another"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Health(ctx); err == nil || !strings.Contains(err.Error(), "was replaced while in use") {
		t.Errorf("Health with the file replaced: %v", err)
	}
	if err := os.Rename(path+".moved", path); err != nil {
		t.Fatal(err)
	}
	if err := b.Health(ctx); err != nil {
		t.Errorf("Health with the file put back: %v", err)
	}
}

// A store file written over in place (cp of a backup onto it): the same
// file, but another store's pages under the open one. Health says so,
// before it reads anything through them; the store's own commits, made
// before the check or while it runs, pass (TestWrittenOverNotFooledByCommits).
func TestHealthSeesTheFileWrittenOver(t *testing.T) {
	ctx := context.Background()
	b := openTemp(t)
	authCreate(t, b, "mine@example.com")
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health of a working store: %v", err)
	}
	mine, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	// A backup from a moment ago: the same store, a commit behind.
	authCreate(t, b, "later@example.com")
	if err := b.FileGone(); err != nil {
		t.Fatalf("FileGone after a commit of its own: %v", err)
	}
	// A store further on than this one: bbolt goes on from its pages,
	// and the next commit's id follows the foreign file's, not ours.
	ahead := openTemp(t)
	for i := range 5 {
		authCreate(t, ahead, fmt.Sprintf("other%d@example.com", i))
	}
	ahead.Close()
	theirs, err := os.ReadFile(ahead.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.path, theirs, 0o600); err != nil {
		t.Fatal(err)
	}
	// A commit that changes nothing (a write there could panic: the
	// freelist is another store's).
	if err := b.update(func(*bolt.Tx) error { return nil }); err != nil {
		t.Fatalf("a commit on the foreign pages: %v", err)
	}
	if err := b.FileGone(); err == nil || !strings.Contains(err.Error(), "was written over while in use") {
		t.Errorf("after a commit on a file written over by a store further on: %v; want it still seen", err)
	}
	for name, bytes := range map[string][]byte{
		"an older copy of itself": mine,
		"nothing":                 {},
		"not a store":             []byte("not a bbolt file at all"),
	} {
		if err := os.WriteFile(b.path, bytes, 0o600); err != nil { // in place: the same inode
			t.Fatal(err)
		}
		if err := b.Health(ctx); err == nil || !strings.Contains(err.Error(), "was written over while in use") {
			t.Errorf("Health with the file written over by %s: %v", name, err)
		}
	}
}

// Commits running while the check reads the file, returning in any
// order, are the store's own: never "written over".
func TestWrittenOverNotFooledByCommits(t *testing.T) {
	b := openTemp(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				err := b.update(func(tx *bolt.Tx) error {
					return bucket(tx, bktSecrets).Put([]byte(fmt.Sprintf("w%d", w)), []byte(fmt.Sprint(i)))
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	deadline := time.Now().Add(time.Second)
	checks := 0
	for ; time.Now().Before(deadline); checks++ {
		if err := b.writtenOver(); err != nil {
			t.Errorf("check %d, with commits running: %v", checks, err)
			break
		}
	}
	close(stop)
	wg.Wait()
	if checks < 100 {
		t.Errorf("%d checks in a second; want many, for the test to mean something", checks)
	}
}

// A commit that fails (the disk refuses it) keeps out the row and its
// change alike.
func TestAuditRowWithItsChangeFailingCommit(t *testing.T) {
	ctx := context.Background()
	b := openTemp(t)
	path := b.path
	u := authCreate(t, b, "kept@example.com")
	now := time.Now()
	e := auditEntry(t, audit.Row{Action: "account.deletion_execute", SubjectID: u.ID, Outcome: "success", OccurredAt: now}, now)
	e.With = b.DeleteUserIn(u.ID, "")

	restore := failWrites(t, path)
	_, aerr := b.AppendAudit(ctx, []audit.Entry{e})
	restore()
	if aerr == nil {
		t.Fatal("the commit passed on a read-only descriptor")
	}
	if _, err := b.UserByID(ctx, u.ID); err != nil {
		t.Errorf("the failed commit deleted the user: %v", err)
	}
	if n := auditKeys(t, b, bktAuditRows); n != 0 {
		t.Errorf("the failed commit stored %d rows", n)
	}
}

// A nearly full disk is unhealthy before writes fail, and after: a small
// write can still pass in pages the file has free, so the probe alone
// would say the store works while every sign-in that grows it fails.
func TestHealthSeesADiskNearlyFull(t *testing.T) {
	ctx := context.Background()
	b := openTemp(t)
	if free, ok := statfsFree(filepath.Dir(b.path)); !ok || free == 0 {
		t.Fatalf("statfs of the temporary directory: %d, %v", free, ok)
	}
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	freeSpace = func(string) (uint64, bool) { return 1 << 20, true }
	t.Cleanup(func() { freeSpace = statfsFree })
	if err := b.Health(ctx); err == nil || !strings.Contains(err.Error(), "1024 KiB free") {
		t.Errorf("Health with 1 MiB free: %v; want it to say so", err)
	}
}
