//go:build linux

package store

import (
	"errors"
	"os"
	"syscall"
)

// Linux's lseek whence values for finding data and holes.
const (
	seekData = 3
	seekHole = 4
)

// dataBytes returns how many bytes of f before end hold data, as the
// file system tells (SEEK_DATA, SEEK_HOLE), or end when it cannot tell.
func dataBytes(f *os.File, end int64) int64 {
	var n int64
	for off := int64(0); off < end; {
		data, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return end
		}
		if data >= end {
			break
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			return end
		}
		n += min(hole, end) - data
		off = hole
	}
	return n
}
