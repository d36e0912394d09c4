//go:build linux || darwin || freebsd

package store

import "golang.org/x/sys/unix"

// statfsFree is the space free to this process on the file system
// holding dir.
func statfsFree(dir string) (uint64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return freeTo(int64(st.Bavail), uint64(st.Bfree), uint64(st.Bsize), unix.Geteuid() == 0), true
}

// freeTo is the space a writer may still use, from statfs's blocks free
// to anyone (avail; FreeBSD's goes below zero once the reserve is used)
// and free at all (free). Root may also write into the blocks a file
// system keeps in reserve for it (ext4's 5 % by default), so a Caddy
// running as root, as in most containers, is not unhealthy while its
// writes still pass.
func freeTo(avail int64, free, bsize uint64, root bool) uint64 {
	if root {
		return free * bsize
	}
	return uint64(max(avail, 0)) * bsize
}
