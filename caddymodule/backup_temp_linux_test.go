//go:build linux

package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// A backup being written has no name: a CLI killed mid-copy (kill -9)
// leaves no partial copy of the password hashes in the directory. Kept,
// it is the one file at --out, new or replaced; dropped, nothing. (On a
// file system without unnamed files the named fallback is checked: it
// leaves nothing once dropped or kept.)
func TestBackupTempIsUnnamed(t *testing.T) {
	dir := t.TempDir()
	names := func() []string {
		t.Helper()
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		return out
	}
	// Whether this file system and /proc allow unnamed files: then the
	// backup must use one.
	unnamed := false
	if fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600); err == nil {
		_, err := os.Stat(fmt.Sprintf("/proc/self/fd/%d", fd))
		unnamed = err == nil
		unix.Close(fd)
	}
	out := filepath.Join(dir, "backup.db")
	for _, c := range []struct {
		keep, replace bool
	}{{true, false}, {true, true}, {false, false}} {
		if c.replace {
			if err := os.WriteFile(out, []byte("an earlier copy"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		tmp, err := newBackupTemp(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmp.Write([]byte("a copy of the store")); err != nil {
			t.Fatal(err)
		}
		if tmp.link == nil {
			if unnamed {
				t.Fatal("the backup is a named file where unnamed ones can be made")
			}
			t.Logf("%s has no unnamed files (O_TMPFILE or /proc missing): checking the named fallback", dir)
		} else if n := names(); len(n) != 0 && !(c.replace && len(n) == 1 && n[0] == "backup.db") {
			t.Fatalf("while written, the directory holds %q; want nothing of it", n)
		}
		if b, err := os.ReadFile(tmp.path); err != nil || string(b) != "a copy of the store" {
			t.Fatalf("reading it back through %s: %q, %v", tmp.path, b, err)
		}
		if c.keep {
			if err := tmp.keep(out); err != nil {
				t.Fatal(err)
			}
		}
		tmp.remove()
		var want []string
		if c.keep {
			want = []string{"backup.db"}
		}
		if n := names(); !slices.Equal(n, want) {
			t.Errorf("%+v: the directory holds %q; want %q", c, n, want)
		}
		if c.keep {
			if b, err := os.ReadFile(out); err != nil || string(b) != "a copy of the store" {
				t.Errorf("%+v: the kept copy reads %q, %v", c, b, err)
			}
			if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%+v: the kept copy: %v, %v; want mode 0600", c, fi, err)
			}
			os.Remove(out)
		}
	}
}
