package store

import (
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a copy of the whole store file to w, consistent as of one
// read transaction: writes go on meanwhile, and none is half in the copy.
// size, if not nil, is told the copy's length before anything is written
// (an HTTP answer can then say how long it is). It returns the bytes
// written.
func (b *Bolt) Backup(w io.Writer, size func(int64)) (n int64, err error) {
	err = b.db.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("storage %s: backup: %w", b.path, err)
	}
	return n, nil
}

// CheckBackup opens a copy made by Backup read-only, as a start would
// (refusing a damaged file with ErrDamaged), and checks that it is a
// Sigra store.
func CheckBackup(path string) error {
	if err := checkBoltFile(path, time.Second); err != nil {
		return err
	}
	db, err := openGuarded(path, bolt.Options{ReadOnly: true, Timeout: time.Second}, nil)
	if err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(rootBucket) == nil {
			return fmt.Errorf("backup %s: not a Sigra store (no %s bucket)", path, rootBucket)
		}
		return nil
	})
}
