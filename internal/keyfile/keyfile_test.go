package keyfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(small, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(small); err != nil || string(got) != "key" {
		t.Errorf("Read(a key file) = %q, %v; want its contents", got, err)
	}
	if _, err := Read(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(a missing file) = %v; want os.ErrNotExist", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(big); err == nil || !strings.Contains(err.Error(), "too large for a key file") {
		t.Errorf("Read(a file over the limit) = %v; want it refused", err)
	}
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "is a directory, not a key file") {
		t.Errorf("Read(a directory) = %v; want it refused", err)
	}
	// A fifo with no writer would block a plain read for ever; a device
	// like /dev/zero would never end.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Read(fifo)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Read(a fifo) = %v; want it refused", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read(a fifo with no writer) blocked")
	}
	if _, err := Read("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Read(/dev/zero) = %v; want it refused", err)
	}
}
