//go:build unix && !solaris && !aix && !android

package store

import (
	"os"
	"syscall"
)

// unlockFile drops the flock bbolt took on f (bolt_unix.go). The lock
// belongs to the open file, which a mapping of it keeps alive after f is
// closed, so closing alone would not release it.
func unlockFile(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
