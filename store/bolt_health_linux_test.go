package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// openFD finds the descriptor this process holds on path.
func openFD(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
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

// A store whose writes fail (here its descriptor made read-only under
// bbolt, as a full disk or an immutable file would refuse them) still
// reads, and Health says it does not work: Ping alone said it did.
func TestHealthSeesFailingWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sigra.db")
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Health(ctx); err != nil {
		t.Fatalf("Health of a new store: %v", err)
	}
	if v, err := b.GetSecret(ctx, secretHealthProbe); err != nil || len(v) == 0 {
		t.Errorf("no commit yet, so Health wrote its probe: %q, %v", v, err)
	}

	fd := openFD(t, path)
	saved, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(saved)
	ro, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup3(ro, fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(ro)
	_, werr := b.PutSecret(ctx, "x", []byte("y"), false)
	if werr == nil {
		t.Fatal("a write on a read-only descriptor passed; the test cannot see a failed commit")
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v; want the store still readable", err)
	}
	err = b.Health(ctx)
	if err == nil || !strings.Contains(err.Error(), "a write failed") {
		t.Errorf("Health after a failed commit: %v; want the failure", err)
	}
	if err := unix.Dup3(saved, fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
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
	dir := t.TempDir()
	path := filepath.Join(dir, "sigra.db")
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
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
