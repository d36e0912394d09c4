//go:build windows

package tmpfile

// syncDir does nothing on Windows: a directory opened there cannot be
// flushed (FlushFileBuffers on it is refused), and NTFS journals the
// name itself.
func syncDir(string) error { return nil }
