package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/audit"
)

// A client that asks Caddy's admin API for a backup and never reads it
// must not hold up the gateway. The copy's read transaction makes any
// write that must grow the store's memory map wait (and reads queue
// behind that write): held for as long as a client took to read, it
// froze every sign-in and session check. The copy is now made to a
// local file first; the client reads that at its own pace.
func TestBackupStalledClientHoldsNothingUp(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	// Pad the store to just under 16 MiB, where its map grows next.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(e.store(), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	pad := make([]byte, 64<<10)
	for i := 0; ; i++ {
		var size int64
		_ = db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
		if size > 16<<20-400<<10 {
			break
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("test_padding"))
			if err != nil {
				return err
			}
			return b.Put(fmt.Appendf(nil, "%08d", i), pad)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.load(e.config); err != nil {
		t.Fatal(err)
	}

	// The stalled client: asks, reads nothing.
	conn, err := net.Dial("tcp", e.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /sigra/backup?store=%s HTTP/1.1\r\nHost: %s\r\n\r\n", url.QueryEscape(e.rt().owner.storeFile()), e.admin)
	// Its answer has begun: the copy is made, or in the making.
	head := make([]byte, 12)
	if _, err := conn.Read(head); err != nil || !strings.HasPrefix(string(head), "HTTP/1.1 200") {
		t.Fatalf("the backup's answer: %q, %v", head, err)
	}
	// The copy being read out has no name beside the store: a Caddy that
	// died now would leave no copy of the password hashes there.
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(e.store()), ".sigra-backup-*")); len(left) > 0 {
		t.Errorf("while the copy is read out, it has a name beside the store: %v", left)
	}

	// Writes past the map's end: audit rows, as sign-ins write.
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 80 {
					row := audit.Row{Action: "session.revoked", ActorType: audit.ActorSystem, SubjectID: fmt.Sprintf("s%d-%d", w, i),
						Outcome: "success", Metadata: map[string]string{"pad": strings.Repeat("x", 1000)}}
					if err := e.rt().audit.Record(ctx, row); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		done <- <-errs
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second): // a hang, not a speed limit
		t.Fatal("writes past the store's map end did not finish while a backup client read nothing")
	}
	size, err := e.rt().store.Backup(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if size < 16<<20 {
		t.Fatalf("the store is %d bytes; the writes were to take it past 16 MiB, where its map grows", size)
	}
}

// A backup is recorded before it is made: on a full disk its row
// cannot be written, and the refusal says what to do.
func TestBackupOnAFullDiskSaysSo(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	rt := e.rt()
	fail := func(r audit.Row) error {
		if r.Action == "admin.store.backup" {
			return &os.PathError{Op: "write", Path: e.store(), Err: syscall.ENOSPC}
		}
		return nil
	}
	rt.failRecord.Store(&fail)
	defer rt.failRecord.Store(nil)
	n, err := backupStore(context.Background(), rt, io.Discard, nil)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "full, free space there first") {
		t.Fatalf("a backup whose row hits a full disk: %d bytes, %v; want nothing copied and the error saying to free space", n, err)
	}
}
