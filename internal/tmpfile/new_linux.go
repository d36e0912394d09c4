//go:build linux

package tmpfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// newFile opens an unnamed file in dir (O_TMPFILE), reached through
// /proc/self/fd; on a file system without unnamed files, or without
// /proc, a named one.
func newFile(dir, pattern string) (*File, error) {
	fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return named(dir, pattern)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed)"))
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	opened, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if there, err := os.Stat(path); err != nil || !os.SameFile(opened, there) {
		f.Close()
		return named(dir, pattern)
	}
	return &File{File: f, pattern: pattern, path: path, link: func(name string) error {
		err := unix.Linkat(unix.AT_FDCWD, path, unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(err, unix.EEXIST) {
			return fs.ErrExist
		}
		return err
	}}, nil
}
