//go:build !linux

package tmpfile

// newFile is a named temporary file: unnamed ones are Linux's.
func newFile(dir, pattern string) (*File, error) { return named(dir, pattern) }
