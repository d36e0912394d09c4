package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestDebugLogFilterDropsAssertion checks the README's advice: with
// Caddy's debug logging, reverse_proxy logs the assertion it sends
// upstream, and the README's log filter keeps it out.
func TestDebugLogFilterDropsAssertion(t *testing.T) {
	t.Parallel()
	const filter = `log default {
		format filter {
			request>headers>X-Sigra-Assertion delete
		}
	}`
	for _, c := range []struct {
		name, global string
		logged       bool
	}{
		{"debug alone", "debug", true},
		{"debug with the README's filter", "debug\n\t" + filter, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newGateway(t, gatewayOptions{bootstrap: "admin@localhost", global: c.global})
			p := g.start()
			email, password := firstAdmin(t, p)
			b := g.browser()
			b.mustLogin(email, password, "/")
			if resp, _ := b.get("/x", http.Header{"Accept": {"application/json"}}); resp.StatusCode != http.StatusOK {
				t.Fatalf("signed-in request: status %d\n%s", resp.StatusCode, g.logs())
			}
			req, _ := g.up.last()
			assertion := req.Header.Get("X-Sigra-Assertion")
			if assertion == "" {
				t.Fatal("no assertion upstream")
			}
			p.stop()
			out := p.out.String()
			if !strings.Contains(out, "upstream roundtrip") {
				t.Fatalf("no reverse_proxy debug line in the output\n%s", g.logs())
			}
			if got := strings.Contains(out, assertion); got != c.logged {
				t.Errorf("assertion in the log: %v; want %v", got, c.logged)
			}
		})
	}
}
