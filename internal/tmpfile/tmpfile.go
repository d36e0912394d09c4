// Package tmpfile writes a file that gets its name only once it is
// complete: a process killed while writing it, however it dies, leaves
// nothing behind where that can be had (Linux's unnamed files), and a
// reader never sees it half written.
package tmpfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// File is a file being written, mode 0600, until it is kept.
type File struct {
	*os.File
	pattern string                  // of a temporary name
	path    string                  // where it opens: its name, or /proc/self/fd/N for an unnamed one
	link    func(name string) error // gives an unnamed one a name; nil for a named one
}

// New opens a file to write in dir: unnamed where the system allows
// (see new_linux.go), else a temporary file named after pattern (as
// os.CreateTemp takes it; a leading dot keeps it out of listings).
func New(dir, pattern string) (*File, error) {
	return newFile(dir, pattern)
}

func named(dir, pattern string) (*File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &File{File: f, pattern: pattern, path: f.Name()}, nil
}

// Path is where the file opens while it is written (to read it back).
func (t *File) Path() string { return t.path }

// Unnamed reports whether the file has no name in its directory.
func (t *File) Unnamed() bool { return t.link != nil }

// Link gives the written file the name name, which must not exist
// (fs.ErrExist if it does: another process made it first), and makes
// the name durable. The file stays open; Remove closes it.
func (t *File) Link(name string) error {
	var err error
	if t.link != nil {
		err = t.link(name)
	} else {
		err = os.Link(t.path, name)
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(name))
}

// Keep puts the file at out, replacing what is there in one rename, and
// makes that durable. An unnamed one is named out itself when nothing is
// there; else a temporary name, for the moment until the rename. It
// closes the file.
func (t *File) Keep(out string) error {
	name := t.path
	if t.link != nil {
		err := t.link(out)
		if err == nil {
			if err := t.Close(); err != nil {
				return err
			}
			return syncDir(filepath.Dir(out))
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		f, err := os.CreateTemp(filepath.Dir(out), t.pattern)
		if err != nil {
			return err
		}
		name = f.Name()
		f.Close()
		os.Remove(name) // linkat makes names, never replaces one
		if err := t.link(name); err != nil {
			return err
		}
	}
	if err := t.Close(); err != nil {
		os.Remove(name)
		return err
	}
	if err := os.Rename(name, out); err != nil {
		os.Remove(name)
		return err
	}
	return syncDir(filepath.Dir(out))
}

// Remove closes the file and removes its temporary name, if it has one
// (a name given by Link or Keep stays).
func (t *File) Remove() {
	t.Close()
	if t.link == nil {
		os.Remove(t.path)
	}
}
