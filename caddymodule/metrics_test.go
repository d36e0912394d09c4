package caddymodule

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// sampleCount reads how many samples a histogram holds.
func sampleCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// scrape reads Caddy's /metrics and returns the value of one series.
func scrape(t *testing.T, e *env, series string) float64 {
	t.Helper()
	_, body := e.get("/metrics", nil)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("series %s not on /metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMetricsExistAndMove(t *testing.T) {
	defer func(d time.Duration) { storeReadEvery = d }(storeReadEvery)
	storeReadEvery = 0 // counted at every scrape, to see it move
	e := startCaddy(t, "", metricsSite)
	// The counters are the process's: earlier tests counted into them,
	// so what this test does is the difference.
	checks := []struct {
		series string
		min    float64
	}{
		{`sigra_logins_total{method="password",result="failure"}`, 1},
		{`sigra_logins_total{method="password",result="success"}`, 1},
		{`sigra_gate_decisions_total{reason="ok",result="allow"}`, 3},
		{`sigra_gate_decisions_total{reason="login_required",result="deny"}`, 1},
		{`sigra_gate_duration_seconds_count`, 4},
		{`sigra_audit_append_seconds_count`, 2},
		{`sigra_password_checks_total`, 2},
	}
	before := make([]float64, len(checks))
	for i, c := range checks {
		before[i] = scrape(t, e, c.series)
	}
	if v := scrape(t, e, `sigra_sessions_active`); v != 0 {
		t.Errorf("sigra_sessions_active = %v in a new store; want 0", v)
	}
	e.addUser("mo@example.com", "staff")
	e.login("mo@example.com", "wrong wrong wrong", "/")
	e.mustLogin("mo@example.com")
	for range 3 {
		e.get("/app", nil)
	}
	e.client.Jar, _ = newJar()
	e.get("/app", map[string]string{"Accept": "application/json"})

	_, body := e.get("/metrics", nil)
	for _, name := range []string{
		"sigra_logins_total", "sigra_gate_decisions_total", "sigra_gate_duration_seconds",
		"sigra_audit_append_seconds", "sigra_sessions_active", "sigra_webhook_outbox_depth",
		"sigra_webhook_failures_total", "sigra_webhook_dead_deliveries", "sigra_webhooks_down",
		"sigra_password_checks_total", "sigra_audit_append_failures_total",
	} {
		if !strings.Contains(body, "# HELP "+name+" ") {
			t.Errorf("%s is not on /metrics", name)
		}
	}

	for i, c := range checks {
		if v := scrape(t, e, c.series) - before[i]; v < c.min {
			t.Errorf("%s rose by %v; want at least %v", c.series, v, c.min)
		}
	}
	if v := scrape(t, e, `sigra_sessions_active`); v != 1 {
		t.Errorf("sigra_sessions_active = %v; want the one signed in", v)
	}
	// Series an alert may match are there before their first event (at
	// zero in a new process; the counters are the process's).
	for _, series := range []string{
		`sigra_gate_decisions_total{reason="bad_path",result="deny"}`,
		`sigra_gate_decisions_total{reason="not_started",result="error"}`,
		`sigra_gate_decisions_total{reason="storage",result="error"}`,
		`sigra_gate_decisions_total{reason="signing",result="error"}`,
		`sigra_audit_append_failures_total`,
	} {
		scrape(t, e, series)
	}
	// Bounded labels: no user ids, emails or paths anywhere in our series.
	_, body = e.get("/metrics", nil)
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "sigra_") && (strings.Contains(line, "@") || strings.Contains(line, "/app")) {
			t.Errorf("unbounded label value in %q", line)
		}
	}
}

// A request is one decision however many gates it meets: passing a gate
// and one nested under it is one allow and one latency sample; refused
// by the nested gate, it is one denial and no allow.
func TestMetricsCountARequestOnce(t *testing.T) {
	e := startCaddy(t, "", `sigra_gate /metrics {
		optional
	}
	sigra_gate
	metrics /metrics
	handle /n/* {
		sigra_gate {
			group staff
		}
		respond "nested ok"
	}`)
	e.addUser("nest@example.com", "staff")
	e.addUser("other@example.com")
	e.mustLogin("nest@example.com")
	const allow, deny, samples = `sigra_gate_decisions_total{reason="ok",result="allow"}`, `sigra_gate_decisions_total{reason="group",result="deny"}`, `sigra_gate_duration_seconds_count`
	// Each scrape is a signed-in request through the /metrics gate,
	// counted once it is answered: it shows in the next scrape. So
	// between two readings of a series come every scrape from the first
	// up to (not including) the second.
	a0, s0 := scrape(t, e, allow), scrape(t, e, samples)
	const n = 5
	for range n {
		if r, body := e.get("/n/x", nil); r.StatusCode != 200 {
			t.Fatalf("status %d %s", r.StatusCode, body)
		}
	}
	if a, s := scrape(t, e, allow), scrape(t, e, samples); a-a0 != n+2 || s-s0 != n+2 {
		t.Errorf("%d requests through two gates, and 2 scrapes: allow +%v, latency samples +%v; want +%d for both", n, a-a0, s-s0, n+2)
	}

	e.client.Jar, _ = newJar()
	e.mustLogin("other@example.com")
	a0, s0 = scrape(t, e, allow), scrape(t, e, samples)
	d0 := scrape(t, e, deny)
	for range n {
		if r, _ := e.get("/n/x", nil); r.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d; want 403 from the nested gate", r.StatusCode)
		}
	}
	// Since a0: the scrapes a0, s0 and d0, and the denials.
	if a, d := scrape(t, e, allow), scrape(t, e, deny); a-a0 != 3 || d-d0 != n {
		t.Errorf("%d requests refused by the nested gate: allow +%v (want +3, the scrapes), deny +%v (want +%d)", n, a-a0, d-d0, n)
	}
	if s := scrape(t, e, samples); s-s0 != n+4 {
		t.Errorf("latency samples +%v; want +%d (the denials and four scrapes)", s-s0, n+4)
	}
}

// An allowed request that a handler aborts (abort, or reverse_proxy
// cutting a stream short, both a panic) is still one decision; a gate in
// handle_errors, meeting a request the first gate has counted, counts
// nothing more.
func TestMetricsCountAbortedAndErrorRoutes(t *testing.T) {
	e := startCaddy(t, "", `sigra_gate /metrics {
		optional
	}
	sigra_gate {
		optional
	}
	metrics /metrics
	abort /ab/*
	error /boom/* 500
	handle_errors {
		sigra_gate {
			group staff
		}
		respond "e"
	}`)
	const anon, deny, samples = `sigra_gate_decisions_total{reason="anonymous",result="allow"}`, `sigra_gate_decisions_total{reason="login_required",result="deny"}`, `sigra_gate_duration_seconds_count`
	a0, d0, s0 := scrape(t, e, anon), scrape(t, e, deny), scrape(t, e, samples)
	// A new connection each: Go's client sends a GET again when a
	// kept-alive connection closes without an answer.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range 3 {
		if resp, err := fresh.Get(e.base + "/ab/x"); err == nil {
			resp.Body.Close()
			t.Fatalf("/ab/x answered %d; want the connection aborted", resp.StatusCode)
		}
	}
	for range 2 {
		if r, _ := e.get("/boom/x", jsonAPI); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/boom/x: status %d; want 401 from the gate in handle_errors", r.StatusCode)
		}
	}
	// Between two readings of a series: every scrape from the first up
	// to (not including) the second, and the five requests.
	a, d, s := scrape(t, e, anon), scrape(t, e, deny), scrape(t, e, samples)
	if a-a0 != 3+5 || d-d0 != 0 || s-s0 != 3+5 {
		t.Errorf("3 aborted and 2 failed requests, each one anonymous allow: allow +%v (want +8), deny +%v (want 0), latency samples +%v (want +8)", a-a0, d-d0, s-s0)
	}
}

// sigra_logins_total counts a sign-in once: a right password with a
// second factor due is pending, the code that completes it the success,
// and a second factor for a signed-in session a step-up. A signed-in
// user's password checked again (before a password change) is a
// re-check, not a sign-in, whichever way it goes.
func TestMetricsLoginResults(t *testing.T) {
	fake, e, _, secret, codes := startEnrolled(t, "", "lea@example.com")
	logins := func() map[string]float64 {
		got := map[string]float64{}
		for _, method := range []string{"password", "reauth", "totp", "recovery_code"} {
			for _, result := range []string{"success", "pending", "step_up", "failure", "locked"} {
				got[method+"/"+result] = counterValue(t, e.rt().metrics.logins.WithLabelValues(method, result))
			}
		}
		return got
	}
	step := func(what string, want map[string]float64, do func()) {
		t.Helper()
		before := logins()
		do()
		for k, after := range logins() {
			if d := after - before[k]; d != want[k] {
				t.Errorf("%s: %s went up by %v; want %v", what, k, d, want[k])
			}
		}
	}
	fake.Advance(time.Minute) // past the step the enrolment spent
	step("a right password, a code due", map[string]float64{"password/pending": 1}, func() {
		e.client.Jar, _ = newJar()
		if r := e.login("lea@example.com", testPassword, "/"); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in: status %d", r.StatusCode)
		}
	})
	step("the code", map[string]float64{"totp/success": 1}, func() {
		if r := e.secondFactor("code", refTOTP(t, secret, fake.Now())); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("code: status %d", r.StatusCode)
		}
	})
	step("a recovery code", map[string]float64{"password/pending": 1, "recovery_code/success": 1}, func() {
		b := e.browser()
		b.login("lea@example.com", testPassword, "/")
		if r := b.secondFactor("recovery_code", codes[0]); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("recovery code: status %d", r.StatusCode)
		}
	})
	fake.Advance(time.Minute)
	step("a step-up", map[string]float64{"totp/step_up": 1}, func() {
		if r := e.secondFactor("code", refTOTP(t, secret, fake.Now())); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("step-up: status %d", r.StatusCode)
		}
	})
	step("a wrong current password", map[string]float64{"reauth/failure": 1}, func() {
		if r, _ := e.changePassword("not the password", "a much longer new passphrase", "a much longer new passphrase"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong current password: status %d; want 401", r.StatusCode)
		}
	})
	step("the right current password", map[string]float64{"reauth/success": 1}, func() {
		if r, body := e.changePassword(testPassword, "a much longer new passphrase", "a much longer new passphrase"); r.StatusCode != http.StatusOK {
			t.Fatalf("password change: status %d\n%s", r.StatusCode, body)
		}
	})
}

// metricsSite serves /metrics to anyone and gates the rest.
const metricsSite = `sigra_gate /metrics {
		optional
	}
	sigra_gate
	metrics /metrics`

// downReceiver is a webhook receiver that answers 503 until up is set,
// and the global sigra options sending it the sign-in rows.
func downReceiver(t *testing.T) (up *atomic.Bool, global string) {
	up = new(atomic.Bool)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(recv.Close)
	return up, "audit {\n\t\t\twebhook " + recv.URL + " {\n\t\t\t\tsecret \"0123456789abcdef0123456789abcdef\"\n\t\t\t\tactions auth.login.*\n\t\t\t}\n\t\t}"
}

// The webhook figures move: a receiver that fails leaves rows in the
// outbox, counts failures and is down; once it answers, the outbox
// drains and it is up again. The failures counter keeps its count.
func TestMetricsWebhookOutboxMoves(t *testing.T) {
	defer func(d time.Duration) { storeReadEvery = d }(storeReadEvery)
	storeReadEvery = 0 // counted at every scrape, to see it move
	up, global := downReceiver(t)
	e := startCaddy(t, global, metricsSite)
	const depth, failures, down = "sigra_webhook_outbox_depth", "sigra_webhook_failures_total", "sigra_webhooks_down"
	start := scrape(t, e, failures) // the process's count: earlier tests' failures are in it
	e.addUser("wes@example.com")
	e.mustLogin("wes@example.com")
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: depth %v, failures %v, down %v", what, scrape(t, e, depth), scrape(t, e, failures), scrape(t, e, down))
			}
		}
	}
	waitFor("a failing receiver", func() bool {
		return scrape(t, e, depth) >= 1 && scrape(t, e, failures) > start && scrape(t, e, down) == 1
	})
	failed := scrape(t, e, failures)
	up.Store(true)
	waitFor("the receiver back", func() bool {
		return scrape(t, e, depth) == 0 && scrape(t, e, down) == 0
	})
	if got := scrape(t, e, failures); got < failed {
		t.Errorf("failures went from %v back to %v; a counter only grows", failed, got)
	}
	if got := scrape(t, e, "sigra_webhook_dead_deliveries"); got != 0 {
		t.Errorf("dead deliveries %v; want 0", got)
	}
}

// A reload replaces the runtime, its password checker and its webhook
// sender; the counters they feed go on from where they were rather than
// start again from zero, which Prometheus would take for a restart and
// a rate() would read as a drop.
func TestMetricsCountersGoOnAcrossReload(t *testing.T) {
	up, global := downReceiver(t)
	site := metricsSite
	e := startCaddy(t, global, site)
	const checks, failures = "sigra_password_checks_total", "sigra_webhook_failures_total"
	start := scrape(t, e, failures) // the process's: earlier tests' failures are in it
	e.addUser("rel@example.com")
	e.login("rel@example.com", "wrong wrong wrong", "/")
	for deadline := time.Now().Add(15 * time.Second); scrape(t, e, failures) <= start; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no failed webhook delivery counted")
		}
	}
	c0, f0 := scrape(t, e, checks), scrape(t, e, failures)
	if c0 == 0 {
		t.Fatal("no password check counted")
	}
	// The receiver answers from now on: no failure after the reload can
	// bring a count that started again from zero back up to f0.
	up.Store(true)
	old := e.rt()
	if err := e.load(e.caddyfile(global, site+"\n\theader X-Reloaded 1")); err != nil {
		t.Fatal(err)
	}
	if e.rt() == old {
		t.Fatal("the reload kept the runtime; want a new one, as a changed config makes")
	}
	if c, f := scrape(t, e, checks), scrape(t, e, failures); c < c0 || f < f0 {
		t.Errorf("after a reload: %s %v (was %v), %s %v (was %v); want neither to go back", checks, c, c0, failures, f, f0)
	}
	e.login("rel@example.com", "wrong wrong wrong", "/")
	if c := scrape(t, e, checks); c != c0+1 {
		t.Errorf("%s = %v after one more password; want %v", checks, c, c0+1)
	}
}

// Refusals count under their reason: a second factor missing or too
// old, a sign-in method the route does not take.
func TestMetricsDenyReasons(t *testing.T) {
	e := startCaddy(t, "", `sigra_gate
	sigra_gate /secure/* {
		mfa
	}
	sigra_gate /keys/* {
		amr otp
	}`)
	e.addUser("dee@example.com")
	e.mustLogin("dee@example.com")
	denied := func(reason string) float64 {
		return counterValue(t, e.rt().metrics.gateDecisions.WithLabelValues("deny", reason))
	}
	json := map[string]string{"Accept": "application/json"}
	for _, c := range []struct {
		path, reason string
		status       int
	}{
		{"/secure/x", "mfa_required", http.StatusUnauthorized},
		{"/keys/x", "amr", http.StatusForbidden},
	} {
		before := denied(c.reason)
		if r, body := e.get(c.path, json); r.StatusCode != c.status || !strings.Contains(body, c.reason) {
			t.Errorf("%s: status %d %s; want %d %s", c.path, r.StatusCode, body, c.status, c.reason)
		}
		if d := denied(c.reason) - before; d != 1 {
			t.Errorf("%s: deny/%s went up by %v; want 1", c.path, c.reason, d)
		}
	}
}

// A gate that meets a path the portal would have refused (it runs
// first, in a JSON config, say) counts one bad_path denial, with its
// time, and the request goes no further.
func TestMetricsGateBadPath(t *testing.T) {
	g := &Gate{}
	fresh, _ := signedInGate(t, g)
	m := g.app.metrics
	denied := m.gateDecisions.WithLabelValues("deny", "bad_path")
	before, sampled := counterValue(t, denied), sampleCount(t, m.gateDuration)
	req := fresh()
	req.URL.Path = "/reports/../admin"
	w := httptest.NewRecorder()
	reached := false
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { reached = true; return nil })
	if err := g.ServeHTTP(w, req, next); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusBadRequest || reached {
		t.Fatalf("status %d, reached the next handler %t; want 400 and not", w.Code, reached)
	}
	if n := counterValue(t, denied) - before; n != 1 {
		t.Errorf("deny/bad_path +%v; want +1", n)
	}
	if n := sampleCount(t, m.gateDuration) - sampled; n != 1 {
		t.Errorf("latency samples +%d; want +1", n)
	}
}

// Before Sigra has started (the admin endpoint serves /metrics while a
// large store opens), what the store holds is unknown: NaN, not a zero
// an alert would take for an empty outbox.
func TestMetricsUnknownBeforeStart(t *testing.T) {
	was := running.Swap(nil) // no other app's state to report either
	t.Cleanup(func() { running.Store(was) })
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg, &App{life: &lifecycle{ready: make(chan struct{})}}); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"sigra_sessions_active": true, "sigra_webhook_outbox_depth": true, "sigra_webhook_dead_deliveries": true}
	for _, f := range families {
		if !want[f.GetName()] {
			continue
		}
		delete(want, f.GetName())
		if v := f.GetMetric()[0].GetGauge().GetValue(); !math.IsNaN(v) {
			t.Errorf("%s = %v before start; want NaN", f.GetName(), v)
		}
	}
	for name := range want {
		t.Errorf("%s not gathered", name)
	}
}

// The gauges that count the store's keys read it at most once per ttl,
// however often /metrics is scraped; a failed read is unknown, and is
// not kept.
func TestCachedReadsAtMostOncePerTTL(t *testing.T) {
	reads, fail := 0, false
	c := &cached[int]{ttl: time.Hour, read: func(context.Context) (int, error) {
		reads++
		if fail {
			return 0, errors.New("store locked")
		}
		return reads, nil
	}}
	for range 3 {
		if v, ok := c.get(); !ok || v != 1 {
			t.Fatalf("get = %v, %t; want the first read's 1", v, ok)
		}
	}
	if reads != 1 {
		t.Fatalf("%d reads for 3 gets within the ttl; want 1", reads)
	}
	c.at, fail = c.at.Add(-time.Hour), true // the ttl is over; the store fails
	if v, ok := c.get(); ok {
		t.Fatalf("get = %v, true after a failed read; want unknown", v)
	}
	fail = false
	if v, ok := c.get(); !ok || v != 3 || reads != 3 {
		t.Fatalf("get = %v, %t after %d reads; want a new read (3) once the store answers", v, ok, reads)
	}
}
