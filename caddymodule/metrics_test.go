package caddymodule

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

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
	e := startCaddy(t, "", `sigra_gate /metrics {
		optional
	}
	sigra_gate
	metrics /metrics`)
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
		"sigra_password_checks_total",
	} {
		if !strings.Contains(body, "# HELP "+name+" ") {
			t.Errorf("%s is not on /metrics", name)
		}
	}

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
		{`sigra_sessions_active`, 1},
		{`sigra_password_checks_total`, 2},
	}
	for _, c := range checks {
		if v := scrape(t, e, c.series); v < c.min {
			t.Errorf("%s = %v; want at least %v", c.series, v, c.min)
		}
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
