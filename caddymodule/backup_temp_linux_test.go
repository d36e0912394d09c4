//go:build linux

package caddymodule

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A backup being written has no name: a CLI killed mid-copy (kill -9)
// leaves no partial copy of the password hashes in the directory. Kept,
// it is the one file at --out; dropped, nothing.
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
	for _, keep := range []bool{true, false} {
		tmp, err := newBackupTemp(dir)
		if err != nil {
			t.Fatal(err)
		}
		if tmp.link == nil {
			t.Fatalf("the temp dir's file system (%s) has no unnamed files; want O_TMPFILE (ext4, xfs, btrfs, tmpfs have it)", dir)
		}
		if _, err := tmp.Write([]byte("a copy of the store")); err != nil {
			t.Fatal(err)
		}
		if n := names(); len(n) != 0 {
			t.Fatalf("while written, the directory holds %q; want nothing", n)
		}
		if b, err := os.ReadFile(tmp.path); err != nil || string(b) != "a copy of the store" {
			t.Fatalf("reading it back through %s: %q, %v", tmp.path, b, err)
		}
		out := filepath.Join(dir, "backup.db")
		if keep {
			if err := tmp.keep(out); err != nil {
				t.Fatal(err)
			}
		}
		tmp.remove()
		var want []string
		if keep {
			want = []string{"backup.db"}
		}
		if n := names(); !slices.Equal(n, want) {
			t.Errorf("kept %t: the directory holds %q; want %q", keep, n, want)
		}
		if keep {
			if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("the kept copy: %v, %v; want mode 0600", fi, err)
			}
			os.Remove(out)
		}
	}
}
