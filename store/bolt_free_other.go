//go:build !(linux || darwin || freebsd)

package store

// statfsFree does not know the free space here.
func statfsFree(string) (uint64, bool) { return 0, false }
