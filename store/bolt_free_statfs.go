//go:build linux || darwin || freebsd

package store

import "golang.org/x/sys/unix"

// statfsFree is the space free to an unprivileged writer on the file
// system holding dir.
func statfsFree(dir string) (uint64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true
}
