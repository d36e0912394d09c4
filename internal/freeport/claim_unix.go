//go:build unix

package freeport

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// held keeps the claimed ports' lock files open (and so locked) until the
// process exits; the kernel releases the locks then, however it ends.
var held []*os.File

// claim takes port p for this process: an exclusive flock on a file named
// after the port, in a directory of this user's under the temporary
// directory. It reports false when the port is claimed already, by this
// process or by another one still running. The files stay behind, empty
// and unlocked; there is at most one per port.
func claim(p int) (bool, error) {
	dir := filepath.Join(os.TempDir(), "caddy-sigra-ports-"+strconv.Itoa(os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("port claims: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("port claims: %w", err)
	}
	// flock locks belong to the open file, so a second open of the same
	// file conflicts even within this process.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("port claims: locking %s: %w", f.Name(), err)
	}
	held = append(held, f)
	return true, nil
}
