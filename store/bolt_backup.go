package store

import (
	"fmt"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a copy of the whole store file to w, consistent as of one
// read transaction: writes go on meanwhile, and none is half in the copy.
// It returns the bytes written.
//
// The transaction lasts as long as w takes: while it is open, a write
// that must grow the store's memory map waits, and reads wait behind
// that write. w must be fast (a local file), never a network peer.
func (b *Bolt) Backup(w io.Writer) (n int64, err error) {
	err = b.view(func(tx *bolt.Tx) error {
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
	if fi, err := os.Stat(path); err != nil {
		return fmt.Errorf("backup: %w", err)
	} else if fi.Size() == 0 {
		return fmt.Errorf("backup %s: the file is empty", path)
	}
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

// ReadSecret reads the secret name from the store file at path (a copy
// made by Backup), opened read-only.
func ReadSecret(path, name string) ([]byte, error) {
	db, err := openGuarded(path, bolt.Options{ReadOnly: true, Timeout: time.Second}, nil)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	defer db.Close()
	var v []byte
	err = db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(rootBucket)
		if root == nil {
			return fmt.Errorf("store %s: not a Sigra store (no %s bucket)", path, rootBucket)
		}
		if b := root.Bucket(bktSecrets); b != nil {
			v = clone(b.Get([]byte(name)))
		}
		if v == nil {
			return fmt.Errorf("store %s: no secret %s", path, name)
		}
		return nil
	})
	return v, err
}
