//go:build linux

package caddymodule

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// newBackupTemp opens the file a backup is written to in dir: unnamed
// (O_TMPFILE) until it is kept, so that nothing of it, password hashes
// and all, is left behind if the process dies, however it dies. It is
// reached through /proc/self/fd; on a file system without unnamed files,
// or without /proc, it is a named temporary file.
func newBackupTemp(dir string) (*backupTemp, error) {
	fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return namedBackupTemp(dir)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed backup)"))
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	opened, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if there, err := os.Stat(path); err != nil || !os.SameFile(opened, there) {
		f.Close()
		return namedBackupTemp(dir)
	}
	return &backupTemp{File: f, path: path, link: func(name string) error {
		err := unix.Linkat(unix.AT_FDCWD, path, unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(err, unix.EEXIST) {
			return fs.ErrExist
		}
		return err
	}}, nil
}
