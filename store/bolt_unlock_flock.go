//go:build unix && !solaris && !aix && !android

package store

import (
	"os"
	"syscall"
	"time"
)

// unlockFile drops the flock bbolt took on f (bolt_unix.go). The lock
// belongs to the open file, which a mapping of it keeps alive after f is
// closed, so closing alone would not release it.
func unlockFile(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// lockShared takes a shared flock on f, as bbolt's readers do, trying
// until timeout (then an error); unlock releases it. Where the file
// system takes no locks, it takes none.
func lockShared(f *os.File, timeout time.Duration) (unlock func(), err error) {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		switch {
		case err == nil:
			return func() { unlockFile(f) }, nil
		case err != syscall.EWOULDBLOCK:
			return func() {}, nil
		case time.Now().After(deadline):
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
