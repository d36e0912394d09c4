package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A backup taken while users are being added is a store of its own: it
// passes the checks a start makes, and holds every user committed before
// it began, each whole.
func TestBackupWhileWriting(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	for i := range 50 {
		authCreate(t, st, fmt.Sprintf("before%d@example.com", i))
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // writes go on during the backup
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := st.CreateUser(ctx, authNewUser(fmt.Sprintf("during%d@example.com", i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var buf bytes.Buffer
	n, err := st.Backup(&buf)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("backup wrote %d bytes, buffer %d; want them equal", n, buf.Len())
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckBackup(path); err != nil {
		t.Fatalf("CheckBackup of a fresh backup: %v", err)
	}
	restored, err := OpenBolt(path, BoltOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	for i := range 50 {
		if _, err := restored.UserByEmail(ctx, fmt.Sprintf("before%d@example.com", i)); err != nil {
			t.Errorf("user %d, added before the backup: %v", i, err)
		}
	}
}

// CheckBackup refuses what is not a usable Sigra store: a truncated
// copy, a file of something else, another bbolt database.
func TestCheckBackupRefuses(t *testing.T) {
	st := openAuthBolt(t)
	var buf bytes.Buffer
	if _, err := st.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, path := range map[string]string{
		"truncated":          write("truncated.db", buf.Bytes()[:buf.Len()/2]),
		"empty":              write("empty.db", nil),
		"not a database":     write("text.db", bytes.Repeat([]byte("not a database\n"), 1000)),
		"another bbolt file": other,
	} {
		if err := CheckBackup(path); err == nil {
			t.Errorf("%s: CheckBackup passed it", name)
		} else if name != "another bbolt file" && name != "empty" && !errors.Is(err, ErrDamaged) {
			t.Errorf("%s: %v; want ErrDamaged", name, err)
		}
	}
}
