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

// dataPages returns how many of the first pages of f, of ps bytes each,
// begin with data, as the file system tells (SEEK_DATA, SEEK_HOLE), or
// pages when it cannot tell. A page's start holds its header, never
// zero (checkNotHollow); the rest may be zeros that a sparse copy (cp
// --sparse=always) has turned into holes.
func dataPages(f *os.File, ps, pages uint64) uint64 {
	end := int64(ps * pages)
	var n uint64
	for off := int64(0); off < end; {
		data, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return pages
		}
		if data >= end {
			break
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil || hole <= data {
			return pages // no answer, or one that does not move on
		}
		hole = min(hole, end)
		// The pages whose start lies in [data, hole).
		n += (uint64(hole)+ps-1)/ps - (uint64(data)+ps-1)/ps
		off = hole
	}
	return n
}
