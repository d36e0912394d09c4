// Package keyfile reads the small files that hold keys, named in the
// config: a regular file of bounded size, so a path such as /dev/zero
// or a fifo with no writer fails at start with a clear error instead of
// reading without end or blocking.
package keyfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxSize bounds a key file: a PEM private key or a base64 key is a few
// kilobytes at most.
const MaxSize = 64 << 10

// Read returns the contents of the key file at path. The error wraps
// os.ErrNotExist when there is no such file.
func Read(path string) ([]byte, error) {
	// Stat first: opening a fifo with no writer blocks.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	switch t := fi.Mode().Type(); {
	case t == fs.ModeDir:
		return nil, fmt.Errorf("%s is a directory, not a key file", path)
	case t != 0:
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, t)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%s is larger than %d KiB, too large for a key file", path, MaxSize>>10)
	}
	return data, nil
}
