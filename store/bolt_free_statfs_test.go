//go:build linux || darwin || freebsd

package store

import "testing"

// Root may use the reserved blocks; others may not, nor less than none.
func TestFreeTo(t *testing.T) {
	for _, tc := range []struct {
		avail int64
		free  uint64
		root  bool
		want  uint64
	}{
		{avail: 10, free: 100, root: false, want: 10 * 4096},
		{avail: 10, free: 100, root: true, want: 100 * 4096},
		{avail: -5, free: 3, root: false, want: 0},
		{avail: -5, free: 3, root: true, want: 3 * 4096},
	} {
		if got := freeTo(tc.avail, tc.free, 4096, tc.root); got != tc.want {
			t.Errorf("freeTo(avail %d, free %d, root %v) = %d; want %d", tc.avail, tc.free, tc.root, got, tc.want)
		}
	}
}
