package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// startedApp starts a sigra App on a temp store without a Caddy server,
// for benchmarks of the handlers themselves.
func startedApp(tb testing.TB) *App {
	tb.Helper()
	a := appOn(tb, filepath.Join(tb.TempDir(), "sigra.db"))
	tb.Cleanup(func() { _ = a.Stop() })
	return a
}

// nopHandler is the next handler: the upstream, minus the network.
type nopHandler struct{}

func (nopHandler) ServeHTTP(http.ResponseWriter, *http.Request) error { return nil }

// signedInGate sets up gate on a started app with a signed-in session,
// and returns a maker of fresh requests carrying it, as Caddy's server
// builds them (header map as net/http parsed it, replacer, vars), so map
// growth from the headers and placeholders the gate adds is counted, and
// the user id the gate must pass on. One request has warmed the session
// cache and the assertion cache.
func signedInGate(tb testing.TB, g *Gate) (fresh func() *http.Request, userID string) {
	tb.Helper()
	a := startedApp(tb)
	rt := a.life.rt.Load()
	ctx := context.Background()
	u, err := rt.auth.CreateUser(ctx, authcore.NewUser{Email: "bench@example.com", Name: "Bench", Groups: []string{"staff", "dev"}})
	if err != nil {
		tb.Fatal(err)
	}
	token, sess, err := rt.auth.StartSession(ctx, u, []string{authcore.AMRPassword, authcore.AMROTP, authcore.AMRMFA}, authcore.ClientMeta{Host: "app.example.com"})
	if err != nil {
		tb.Fatal(err)
	}
	if sess.Host != "app.example.com" {
		tb.Fatalf("session host %q; want the request's, so that the gate checks it", sess.Host)
	}
	g.app, g.logger, g.origins = a, zap.NewNop(), new(originCache)
	template := http.Header{
		"Cookie":     {"theme=dark; sigra_session=" + token + "; other=1"},
		"Accept":     {"application/json"},
		"User-Agent": {"bench"},
	}
	fresh = func() *http.Request {
		req := httptest.NewRequest(http.MethodGet, "http://app.example.com/reports/q1", nil)
		h := make(http.Header, len(template))
		for k, v := range template {
			h[k] = v
		}
		req.Header = h
		vars := map[string]any{caddyhttp.ClientIPVarKey: "127.0.0.1", caddyhttp.TrustedProxyVarKey: false}
		rctx := context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
		rctx = context.WithValue(rctx, caddyhttp.VarsCtxKey, vars)
		return req.WithContext(rctx)
	}
	w := httptest.NewRecorder()
	req := fresh()
	if err := g.ServeHTTP(w, req, nopHandler{}); err != nil {
		tb.Fatal(err)
	}
	if req.Header.Get(hdrUser) != u.ID || w.Code != http.StatusOK {
		tb.Fatalf("warm-up request did not pass: code %d, user %q", w.Code, req.Header.Get(hdrUser))
	}
	return fresh, u.ID
}

// signedInGates are the gates the hot path is measured on.
func signedInGates() []struct {
	name string
	gate *Gate
} {
	return []struct {
		name string
		gate *Gate
	}{
		{"plain", &Gate{}},
		{"mfa+group", &Gate{MFA: &MFARequirement{}, Groups: []string{"staff"}}},
	}
}

// BenchmarkGateSignedIn measures the gate's hot path for a signed-in
// request: strip forged headers, find the session (cached), check the
// requirements, inject the identity headers and the cached assertion.
// Caddy's own per-request setup (header map, replacer, vars map) is done
// outside the timer, in batches, as the server does it before any
// handler runs.
func BenchmarkGateSignedIn(b *testing.B) {
	for _, bc := range signedInGates() {
		b.Run(bc.name, func(b *testing.B) {
			fresh, userID := signedInGate(b, bc.gate)
			w, next := httptest.NewRecorder(), nopHandler{}
			batch := make([]*http.Request, 512)
			var req *http.Request
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := i % len(batch)
				if j == 0 {
					b.StopTimer()
					for k := range batch {
						batch[k] = fresh()
					}
					b.StartTimer()
				}
				req = batch[j]
				if err := bc.gate.ServeHTTP(w, req, next); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if req.Header.Get(hdrAssertion) == "" || req.Header.Get(hdrUser) != userID {
				b.Fatal("the last request got no identity")
			}
		})
	}
}

// The hot path's allocation target (issue: at most 20 per signed-in
// request), held by a test: allocations, unlike time, are the same on
// every machine (and, here, with the race detector too).
func TestGateSignedInAllocs(t *testing.T) {
	const most = 20
	for _, gc := range signedInGates() {
		fresh, userID := signedInGate(t, gc.gate)
		const runs = 200
		batch := make([]*http.Request, runs+1) // AllocsPerRun runs once more to warm up
		for k := range batch {
			batch[k] = fresh()
		}
		w, next, i := httptest.NewRecorder(), nopHandler{}, 0
		allocs := testing.AllocsPerRun(runs, func() {
			if err := gc.gate.ServeHTTP(w, batch[i], next); err != nil {
				t.Fatal(err)
			}
			i++
		})
		if got := batch[runs].Header.Get(hdrUser); got != userID {
			t.Fatalf("%s: the last request passed user %q; want %q", gc.name, got, userID)
		}
		if allocs > most {
			t.Errorf("%s: %.0f allocations per signed-in request; want at most %d", gc.name, allocs, most)
		}
	}
}
