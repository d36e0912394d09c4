package seal

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Regression: LoadOrCreateKeyFile creates the key file with O_EXCL and only then
// writes the key into it. A second process (or goroutine) that starts in
// that window either reads the still-empty file directly or loses the
// O_EXCL race, recurses, and reads it: ParseKey("") fails with "encryption
// key decodes to 0 bytes; want 32". So concurrent first starts do not
// "agree on one key" as the "another process won the race" branch
// intends; one of them fails to start. Fix: write the key to a temporary
// file in the same directory (os.CreateTemp, write, Sync, Close), then
// os.Link(tmp, path) — atomic and failing with os.ErrExist if another
// process got there first, in which case read path — and remove tmp.
// Readers then never see a partly written file.
//
// The race is timing dependent, so the test repeats it: on the machine it
// was written on, about 40% of the 200 trials failed.
func TestLoadOrCreateKeyFileConcurrentFirstStartsAgree(t *testing.T) {
	const trials, starters = 200, 16
	for trial := range trials {
		path := filepath.Join(t.TempDir(), "encryption.key")
		keys := make([][]byte, starters)
		errs := make([]error, starters)
		var wg sync.WaitGroup
		for i := range starters {
			wg.Go(func() { keys[i], errs[i] = LoadOrCreateKeyFile(path) })
		}
		wg.Wait()
		for i := range starters {
			if errs[i] != nil {
				t.Fatalf("trial %d: starter %d: LoadOrCreateKeyFile = %v; want every concurrent first start to succeed", trial, i, errs[i])
			}
			if !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("trial %d: starters 0 and %d got different keys; want one key", trial, i)
			}
		}
		// The losers' keys, written but never linked, leave nothing.
		if es, err := os.ReadDir(filepath.Dir(path)); err != nil || len(es) != 1 {
			t.Fatalf("trial %d: the directory holds %v (%v); want the key alone", trial, es, err)
		}
	}
}
