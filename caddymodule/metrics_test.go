package caddymodule

import (
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
