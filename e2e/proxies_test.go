package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestLooseTrustedProxiesWarned: behind a trusted proxy without
// trusted_proxies_strict, Caddy reads the client address from the left
// of X-Forwarded-For, which the client wrote if the proxy appends to it;
// the first sign-in through such a proxy logs a warning naming the fix.
// With trusted_proxies_strict, nothing is logged.
func TestLooseTrustedProxiesWarned(t *testing.T) {
	t.Parallel()
	const warning = "set trusted_proxies_strict"
	for _, c := range []struct {
		name, servers string
		warned        bool
	}{
		{"trusted_proxies alone", "trusted_proxies static 127.0.0.1/32", true},
		{"with trusted_proxies_strict", "trusted_proxies static 127.0.0.1/32\n\t\ttrusted_proxies_strict", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newGateway(t, gatewayOptions{global: "servers {\n\t\t" + c.servers + "\n\t}"})
			p := g.start()
			b := g.browser()
			// The test client is the proxy; the client it speaks for
			// claims an address of its choice, and the proxy appends.
			resp, page := b.get("/.sigra/login", http.Header{"Accept": {"text/html"}})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("login page: status %d\n%s", resp.StatusCode, page)
			}
			m := csrfRe.FindStringSubmatch(page)
			if m == nil {
				t.Fatalf("no csrf_token in the login page:\n%s", page)
			}
			resp, _ = b.do(http.MethodPost, "/.sigra/login", http.Header{
				"Content-Type":    {"application/x-www-form-urlencoded"},
				"Origin":          {g.base},
				"X-Forwarded-For": {"203.0.113.7, 198.51.100.1"},
			}, strings.NewReader("email=nobody%40example.com&password=wrong+password+here&csrf_token="+m[1]))
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("a wrong password: status %d; want 401\n%s", resp.StatusCode, g.logs())
			}
			p.stop()
			if got := strings.Contains(p.out.String(), warning); got != c.warned {
				t.Errorf("warned %v; want %v\n%s", got, c.warned, g.logs())
			}
		})
	}
}
