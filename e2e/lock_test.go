package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestLockedStoreAtStart: a second Caddy on a store that another one
// holds does not start: after waiting for the lock, which it says, it
// exits non-zero and names the file and why.
func TestLockedStoreAtStart(t *testing.T) {
	t.Parallel()
	first := newGateway(t, gatewayOptions{})
	first.start()

	// Its own home, admin and site ports; the same bbolt file.
	second := newGateway(t, gatewayOptions{dbPath: first.db})
	p := startProc(t, second.home, second.caddyfile)
	// It waits for the lock (an offline command may hold it), saying so,
	// then gives up: 1 s, then 30 s more.
	code := p.wait(45 * time.Second)
	if code == -1 {
		t.Fatalf("the second Caddy still runs after 45s on a locked store\n%s", p.logs())
	}
	if out := readable(p.out.String()); !strings.Contains(out, "the store is locked by another process; waiting for it") {
		t.Errorf("the second Caddy did not say it waits for the lock\n%s", p.logs())
	}
	if code == 0 {
		t.Errorf("the second Caddy exited 0 on a locked store; want non-zero\n%s", p.logs())
	}
	out := readable(p.out.String())
	if !strings.Contains(out, first.db) || !strings.Contains(out, "locked") {
		t.Errorf("the output does not name %s and say it is locked\n%s", first.db, p.logs())
	}

	// The first one is unharmed.
	waitHealthy(t, first.proc, first.base+"/.sigra/healthz")
}
