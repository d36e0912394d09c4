//go:build linux || darwin || freebsd

package store

import "golang.org/x/sys/unix"

// statfsFree is the space free to an unprivileged writer on the file
// system holding dir. Not what root may use: whether root may write into
// a file system's reserve depends on its settings and on user
// namespaces, and ext4 keeps a further reserve that root may not use
// either, so for root too this is the safe figure.
func statfsFree(dir string) (uint64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return availBytes(int64(st.Bavail), uint64(st.Bsize)), true
}

// availBytes is avail blocks of bsize bytes; FreeBSD's count of blocks
// free to all goes below zero once root has used the reserve.
func availBytes(avail int64, bsize uint64) uint64 {
	return uint64(max(avail, 0)) * bsize
}
