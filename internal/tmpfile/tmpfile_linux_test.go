//go:build linux

package tmpfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// unnamedHere reports whether dir's file system and /proc allow unnamed
// files: then New must make one.
func unnamedHere(dir string) bool {
	fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	_, err = os.Stat(fmt.Sprintf("/proc/self/fd/%d", fd))
	return err == nil
}

func names(t *testing.T, dir string) []string {
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

// A file being written has no name: a process killed while writing it
// (kill -9) leaves nothing in the directory. Kept, it is the one file at
// out, new or replaced; dropped, nothing. (On a file system without
// unnamed files the named fallback is checked: it leaves nothing once
// dropped or kept.)
func TestKeepIsUnnamedUntilKept(t *testing.T) {
	dir := t.TempDir()
	unnamed := unnamedHere(dir)
	out := filepath.Join(dir, "backup.db")
	for _, c := range []struct {
		keep, replace bool
	}{{true, false}, {true, true}, {false, false}} {
		if c.replace {
			if err := os.WriteFile(out, []byte("an earlier copy"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		tmp, err := New(dir, ".test-*")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmp.Write([]byte("a copy of the store")); err != nil {
			t.Fatal(err)
		}
		if !tmp.Unnamed() {
			if unnamed {
				t.Fatal("a named file where unnamed ones can be made")
			}
			t.Logf("%s has no unnamed files (O_TMPFILE or /proc missing): checking the named fallback", dir)
		} else if n := names(t, dir); len(n) != 0 && !(c.replace && len(n) == 1 && n[0] == "backup.db") {
			t.Fatalf("while written, the directory holds %q; want nothing of it", n)
		}
		if b, err := os.ReadFile(tmp.Path()); err != nil || string(b) != "a copy of the store" {
			t.Fatalf("reading it back through %s: %q, %v", tmp.Path(), b, err)
		}
		if c.keep {
			if err := tmp.Keep(out); err != nil {
				t.Fatal(err)
			}
		}
		tmp.Remove()
		var want []string
		if c.keep {
			want = []string{"backup.db"}
		}
		if n := names(t, dir); !slices.Equal(n, want) {
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

// Link names the file only where nothing is: a second writer finds the
// first one's file and keeps it, and no second name is left.
func TestLinkNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "encryption.key")
	for i, content := range []string{"first", "second"} {
		tmp, err := New(dir, ".key-*")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmp.WriteString(content); err != nil {
			t.Fatal(err)
		}
		err = tmp.Link(key)
		tmp.Remove()
		if i == 0 && err != nil {
			t.Fatalf("linking the first: %v", err)
		}
		if i == 1 && !errors.Is(err, fs.ErrExist) {
			t.Fatalf("linking the second over the first: %v; want fs.ErrExist", err)
		}
	}
	if b, err := os.ReadFile(key); err != nil || string(b) != "first" {
		t.Errorf("the key reads %q, %v; want the first", b, err)
	}
	if n := names(t, dir); !slices.Equal(n, []string{"encryption.key"}) {
		t.Errorf("the directory holds %q; want the key alone", n)
	}
}
