package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/store"
)

// refusingApp is a Caddy app whose Start fails, as an app that cannot
// bind its port does: Caddy then refuses the whole config and stops the
// apps it started already. It notes whether a new sigra app had started
// before it (Caddy starts apps in no set order).
type refusingApp struct{}

// refusedAfterSigra is set by refusingApp.Start when a sigra app other
// than the one running before the load had started.
var (
	refusedBefore     *App
	refusedAfterSigra bool
)

func (refusingApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "sigra_test_refusing", New: func() caddy.Module { return refusingApp{} }}
}

func (refusingApp) Start() error {
	if a := running.Load(); a != nil && a != refusedBefore {
		refusedAfterSigra = true
	}
	return errors.New("address already in use (test)")
}

func (refusingApp) Stop() error { return nil }

// loadRefusedAfterSigra loads cfg, which holds a refusingApp, until Caddy
// has started its sigra app before refusing it (it starts apps in no set
// order), so that the sigra app has begun and been stopped.
func loadRefusedAfterSigra(t *testing.T, cfg []byte) {
	t.Helper()
	refusedBefore, refusedAfterSigra = running.Load(), false
	t.Cleanup(func() { refusedBefore = nil })
	tries := 0
	for ; tries < 60 && !refusedAfterSigra; tries++ {
		if err := caddy.Load(cfg, true); err == nil || !strings.Contains(err.Error(), "address already in use (test)") {
			t.Fatalf("loading the refused config: %v; want it refused", err)
		}
	}
	if !refusedAfterSigra {
		t.Fatalf("in %d loads Caddy never started sigra before the failing app", tries)
	}
}

func init() { caddy.RegisterModule(refusingApp{}) }

// A reload that Caddy refuses leaves everything as it was: the audit
// rows the refused config's retention would prune, the assertion keys
// its algorithm would rotate, and the app the admin API and the CLI
// talk to.
func TestRefusedReloadChangesNothing(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("ref@example.com")
	e.mustLogin("ref@example.com")
	fake.Advance(2 * time.Hour)
	e.mustLogin("ref@example.com") // rows from now too, which retention 1h keeps
	rows := len(e.auditRows(""))
	if rows == 0 {
		t.Fatal("no audit rows to keep")
	}
	ctx := context.Background()
	keysBefore, err := e.rt().store.GetSecret(ctx, "assertion_keys")
	if err != nil {
		t.Fatal(err)
	}

	// Retention 1h would prune every row so far; ES256 would retire the
	// EdDSA key.
	cf := e.caddyfile("audit {\n\t\t\tretention 1h\n\t\t}\n\t\tkeys {\n\t\t\talgorithm ES256\n\t\t}", "sigra_gate")
	before := running.Load()
	loadRefusedAfterSigra(t, e.configWith(t, cf, withApps("sigra_test_refusing")))
	// Refused after every app started: Caddy cancels the config without
	// stopping its apps.
	lateRefused := e.configWith(t, cf, withBadRemoteAdmin(t))
	for range 3 {
		if err := caddy.Load(lateRefused, true); err == nil || !strings.Contains(err.Error(), "remote admin") {
			t.Fatalf("loading a config with a bad remote admin key: %v; want it refused", err)
		}
	}
	// Give a wrongly started retention its moment.
	time.Sleep(100 * time.Millisecond)

	if a := running.Load(); a != before {
		t.Errorf("the running app changed to %p; want the one before the refused loads, %p", a, before)
	}
	if _, _, err := runningRuntime(); err != nil {
		t.Errorf("admin API after a refused reload: %v", err)
	}
	// Read through the app that ran before, whatever running says.
	old := before.life.rt.Load()
	if old == nil {
		t.Fatal("the app that ran before the refused loads was stopped")
	}
	page, err := old.audit.Timeline(ctx, audit.Query{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(page.Rows); n != rows {
		t.Errorf("%d audit rows after the refused reloads; want the %d before", n, rows)
	}
	keysAfter, err := old.store.GetSecret(ctx, "assertion_keys")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(keysBefore, keysAfter) {
		t.Error("the refused config's algorithm changed the stored assertion keys")
	}
	if r, _ := e.get("/x", nil); r.StatusCode != 200 {
		t.Errorf("a signed-in request after the refused reloads: status %d", r.StatusCode)
	}

	// The same config without the failing app is in force: its retention
	// prunes, and its key is stored.
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
	// Its key change is a row of its own (admin.keys.rotate), not counted.
	logins := func() int { return len(e.auditRows("auth.login.success")) }
	deadline := time.Now().Add(5 * time.Second)
	for logins() >= 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := logins(); n != 1 {
		t.Errorf("%d sign-in rows after loading retention 1h; want the 2h old one pruned", n)
	}
	if rows := e.auditRows("admin.keys.rotate"); len(rows) != 1 || rows[0].Metadata["reason"] != "config" || rows[0].Metadata["alg"] != "ES256" {
		t.Errorf("admin.keys.rotate rows once the ES256 config is in force: %+v; want one, reason config", rows)
	}
	for {
		keysNow, err := e.rt().store.GetSecret(ctx, "assertion_keys")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(keysNow, keysBefore) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ES256 key in force was never stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Caddy serves the admin endpoint's /metrics from the newest config's
// registry, also when it then refuses that config (Caddy 2.11). Sigra's
// series there go on from where they were, and its gauges read the app
// still running.
func TestMetricsAfterRefusedReload(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("met@example.com")
	e.mustLogin("met@example.com")
	for range 3 {
		if r, _ := e.get("/x", nil); r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
	}
	const allow = `sigra_gate_decisions_total{reason="ok",result="allow"}`
	adminScrape := func(series string) float64 {
		t.Helper()
		resp, err := http.Get("http://" + e.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(string(body))
		if m == nil {
			t.Fatalf("series %s not on the admin endpoint's /metrics", series)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	allowed, sessions := adminScrape(allow), adminScrape("sigra_sessions_active")
	if allowed < 3 || sessions != 1 {
		t.Fatalf("before: allow %v, sessions %v; want at least 3 and 1", allowed, sessions)
	}

	refused := e.configWith(t, e.config, withApps("sigra_test_refusing"))
	before := running.Load()
	refusedBefore, refusedAfterSigra = before, false
	t.Cleanup(func() { refusedBefore = nil })
	for tries := 0; tries < 60 && !refusedAfterSigra; tries++ {
		if err := caddy.Load(refused, true); err == nil {
			t.Fatal("the config with a failing app loaded")
		}
	}
	if !refusedAfterSigra {
		t.Fatal("Caddy never started sigra before the failing app")
	}
	if r, _ := e.get("/x", nil); r.StatusCode != 200 {
		t.Fatalf("status %d after the refused reloads", r.StatusCode)
	}
	if got := adminScrape(allow); got < allowed+1 {
		t.Errorf("%s = %v after a refused reload and one more allowed request; want at least %v", allow, got, allowed+1)
	}
	if got := adminScrape("sigra_sessions_active"); got != 1 {
		t.Errorf("sigra_sessions_active = %v after a refused reload; want 1, the running app's", got)
	}
}

// withApps adds the Caddy apps named (empty) to a JSON config.
func withApps(apps ...string) func(map[string]any) {
	return func(cfg map[string]any) {
		for _, name := range apps {
			cfg["apps"].(map[string]any)[name] = map[string]any{}
		}
	}
}

// withBadRemoteAdmin gives a JSON config a remote admin endpoint whose
// key does not decode: Caddy refuses it after starting every app.
func withBadRemoteAdmin(t *testing.T) func(map[string]any) {
	return func(cfg map[string]any) {
		admin := cfg["admin"].(map[string]any)
		admin["remote"] = map[string]any{
			"listen":         fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			"access_control": []any{map[string]any{"public_keys": []any{"!!notbase64"}}},
		}
	}
}

// configWith is the Caddyfile cf adapted to JSON, then changed by each
// of edits.
func (e *env) configWith(t *testing.T, cf string, edits ...func(map[string]any)) []byte {
	t.Helper()
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, edit := range edits {
		edit(cfg)
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A start that Caddy refuses makes no first admin: its only password
// would be printed by the run that failed, and the start that works
// would print none. The config in force makes it.
func TestRefusedStartMakesNoFirstAdmin(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	cf := e.caddyfile("", "sigra_gate")
	cf = strings.Replace(cf, "bootstrap_admin off", "bootstrap_admin first@example.com", 1)
	cf = strings.Replace(cf, filepath.Join(e.dir, "sigra.db"), fresh, 1)
	loadRefusedAfterSigra(t, e.configWith(t, cf, withApps("sigra_test_refusing")))
	st, err := store.OpenBolt(fresh, store.BoltOptions{MustExist: true})
	if err != nil {
		t.Fatalf("the refused config's store: %v", err)
	}
	n, err := st.CountUsers(context.Background())
	st.Close()
	if err != nil || n != 0 {
		t.Fatalf("%d users (%v) in the store of a config Caddy refused; want none", n, err)
	}

	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := e.rt().auth.LookupUser(context.Background(), "first@example.com"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the config in force made no first admin")
		}
	}
}
