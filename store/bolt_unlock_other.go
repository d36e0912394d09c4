//go:build !unix || solaris || aix || android

package store

import "os"

// unlockFile does nothing here: bbolt locks with fcntl (solaris, aix,
// android), which any close by the process releases, or with LockFileEx
// (windows), which closing the handle releases.
func unlockFile(*os.File) {}
