package caddymodule

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/store"
)

// appOn starts a sigra App on the bbolt file at path, without Caddy.
func appOn(t testing.TB, path string) *App {
	t.Helper()
	return startApp(t, &App{Storage: &StorageConfig{Path: path}, BootstrapAdmin: "off"})
}

// startApp starts a, configured, as Caddy would, with nop logs and
// metrics of its own.
func startApp(t testing.TB, a *App) *App {
	t.Helper()
	if err := readyApp(t, a, zap.NewNop()).Start(); err != nil {
		t.Fatal(err)
	}
	return a
}

// readyApp configures a as Caddy would before it starts it, logging to
// logger, with metrics of its own.
func readyApp(t testing.TB, a *App, logger *zap.Logger) *App {
	t.Helper()
	a.logger, a.slog = logger, zapSlogNop()
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry(), a)
	if err != nil {
		t.Fatal(err)
	}
	a.metrics = m
	return a
}

// On a reload Caddy starts the new config, then stops the old one, whose
// servers may still be finishing a request: that request must be served
// by the new app, not refused because its own app has stopped. With no
// replacement (Caddy stopping), nothing serves it.
func TestRuntimeAfterReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	ctx := context.Background()
	old := appOn(t, path)
	if old.runtime(ctx) == nil {
		t.Fatal("a started app has no runtime")
	}
	replacing := appOn(t, path)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	if got, want := old.runtime(ctx), replacing.life.rt.Load(); got == nil || got != want {
		t.Fatalf("a request on the stopped config got runtime %p; want the replacing app's %p", got, want)
	}
	if err := replacing.Stop(); err != nil {
		t.Fatal(err)
	}
	if rt := old.runtime(ctx); rt != nil {
		t.Error("with every app stopped, a request still got a runtime")
	}
	if rt := replacing.runtime(ctx); rt != nil {
		t.Error("a stopped app with no replacement still has a runtime")
	}
}

// A reload that writes the store's path another way (through a
// symbolic link, with ./ or //) shares the store the running config has
// open, instead of being refused as locked by another process; and a
// request on the old config is served by the new one.
func TestReloadWithTheStorePathSpeltAnotherWay(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "sigra.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "data"), link); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	current := appOn(t, path)
	for _, spelt := range []string{
		filepath.Join(link, "sigra.db"),
		dir + "/data/./sigra.db",
		dir + "//data//sigra.db",
		path,
	} {
		next := appOn(t, spelt) // fails the test if the store is refused
		if got, want := next.life.rt.Load().store, current.life.rt.Load().store; got != want {
			t.Errorf("%s: the reload opened store %p; want the one open, %p", spelt, got, want)
		}
		if err := current.Stop(); err != nil {
			t.Fatal(err)
		}
		if got, want := current.runtime(ctx), next.life.rt.Load(); got != want {
			t.Errorf("%s: a request on the stopped config got runtime %p; want the new one's %p", spelt, got, want)
		}
		current = next
	}
	// Another file is another store, even where a link once led.
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(link, 0o700); err != nil {
		t.Fatal(err)
	}
	other := appOn(t, filepath.Join(link, "sigra.db"))
	if other.life.rt.Load().store == current.life.rt.Load().store {
		t.Error("a new file at the link's old path shared the store open on the old one")
	}
	if err := other.Stop(); err != nil {
		t.Fatal(err)
	}
	// The very path the store is open under, leading to another file now
	// (the link retargeted): refused, not the old store shared.
	if err := current.Stop(); err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(dir, "again")
	if err := os.Symlink(filepath.Join(dir, "data"), again); err != nil {
		t.Fatal(err)
	}
	first := appOn(t, filepath.Join(again, "sigra.db"))
	if err := os.Remove(again); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(link, again); err != nil { // link is a directory holding another store now
		t.Fatal(err)
	}
	retargeted := readyApp(t, &App{Storage: &StorageConfig{Path: filepath.Join(again, "sigra.db")}, BootstrapAdmin: "off"}, zap.NewNop())
	if err := retargeted.Start(); err == nil || !strings.Contains(err.Error(), "names another file than the store open under it") {
		t.Errorf("a reload through a retargeted link: %v; want refused, naming the change", err)
		if err == nil {
			retargeted.Stop()
		}
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
}

// A start while a command working offline holds the store (a backup at
// boot) waits for it, saying so, rather than failing every site.
func TestStartWaitsForAStoreHeldOffline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	holder, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(1500 * time.Millisecond) // past the first second's wait
		holder.Close()
		close(released)
	}()
	core, logs := observer.New(zap.WarnLevel)
	a := readyApp(t, &App{Storage: &StorageConfig{Path: path}, BootstrapAdmin: "off"}, zap.New(core))
	if err := a.Start(); err != nil {
		t.Fatalf("start while another process held the store for 1.5 s: %v", err)
	}
	defer a.Stop()
	select {
	case <-released:
	default:
		t.Error("started before the holder let go")
	}
	if n := logs.FilterMessage("the store is locked by another process; waiting for it").Len(); n != 1 {
		t.Errorf("%d warnings about the wait; want 1", n)
	}
}

// A request that loaded its runtime before a reload may write its audit
// row after Caddy has stopped the old app (apps of a config stop in no
// set order, so the old servers can still be finishing). The row goes to
// the replacing app on the same store: neither lost nor a 500.
func TestRecordAfterReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	ctx := context.Background()
	old := appOn(t, path)
	rt := old.runtime(ctx) // the request starts on the old config
	replacing := appOn(t, path)
	defer replacing.Stop()
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	row := audit.Row{Action: "auth.login.success", ActorType: audit.ActorUser, ActorID: "u1", Outcome: "success"}
	failures := func() float64 { return counterValue(t, rt.metrics.auditFailures) }
	failed := failures()
	if err := rt.record(ctx, row); err != nil {
		t.Fatalf("record on the stopped config = %v; want the row written through the replacing app", err)
	}
	if n := failures() - failed; n != 0 {
		t.Errorf("sigra_audit_append_failures_total +%v for a row the replacing app wrote; want +0", n)
	}
	page, err := replacing.life.rt.Load().audit.Timeline(ctx, audit.Query{ActorID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Rows) != 1 || page.Rows[0].Action != "auth.login.success" {
		t.Fatalf("rows by u1 after the reload: %+v; want the one login row", page.Rows)
	}

	// With no replacement (Caddy stopping), the row is refused, not
	// dropped silently.
	rt = replacing.runtime(ctx)
	if err := replacing.Stop(); err != nil {
		t.Fatal(err)
	}
	failed = failures()
	if err := rt.record(ctx, row); !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("record with every app stopped = %v; want audit.ErrClosed", err)
	}
	if n := failures() - failed; n != 1 {
		t.Errorf("sigra_audit_append_failures_total +%v for a row nobody wrote; want +1", n)
	}
}
