package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// Nothing behind the gateway sets its cookies: an app made to send
// Set-Cookie for the session (a header injection, say) would sign its
// users in as someone else. The app's own cookies pass, on gated and
// ungated paths alike.
func TestUpstreamCannotSetOwnCookies(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate /secure/*")
	e.addUser("cy@example.com")
	// The gateway's own answers still set its cookies.
	if resp, _ := e.get("/.sigra/login", nil); len(resp.Header.Values("Set-Cookie")) == 0 {
		t.Error("the sign-in page set no cookie; want its form cookie")
	}
	e.mustLogin("cy@example.com")
	q := url.Values{"sc": {
		"sigra_session=attacker; Path=/; HttpOnly",
		"app=1; Path=/",
		" __Host-sigra_session =x; Path=/; Secure",
		"sigra_csrf=y",
		"=sigra_session=nameless; Path=/",
		" = __Host-sigra_session=nameless",
		"sigra_sessions=kept",
	}}.Encode()
	for _, path := range []string{"/open", "/secure/page"} {
		resp, body := e.get(path+"?"+q, nil)
		if resp.StatusCode != http.StatusOK || body != "app:"+path {
			t.Fatalf("%s: status %d %q; want the app's answer", path, resp.StatusCode, body)
		}
		got := resp.Header.Values("Set-Cookie")
		if want := []string{"app=1; Path=/", "sigra_sessions=kept"}; !slices.Equal(got, want) {
			t.Errorf("%s: Set-Cookie %q; want the app's own cookies alone, %q", path, got, want)
		}
	}
}

// dropOwnSetCookies allocates only when there is something to drop.
func TestDropOwnSetCookies(t *testing.T) {
	h := http.Header{"Set-Cookie": {"a=1", "b=2"}}
	if n := testing.AllocsPerRun(100, func() { dropOwnSetCookies(h) }); n != 0 {
		t.Errorf("%v allocations with none of ours; want 0", n)
	}
	h = http.Header{"Set-Cookie": {"sigra_session=x"}}
	dropOwnSetCookies(h)
	if _, ok := h["Set-Cookie"]; ok {
		t.Errorf("Set-Cookie %q left; want the header gone", h["Set-Cookie"])
	}
}

// A gate with no portal before it (a JSON config; the Caddyfile refuses
// it) guards the answers it passes on itself.
func TestUpstreamCannotSetOwnCookiesBehindAGateAlone(t *testing.T) {
	e := startCaddy(t, "", "")
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(e.caddyfile("", "sigra_gate {\n\t\toptional\n\t}")), nil)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	if !dropPortal(doc) {
		t.Fatal("no portal to drop")
	}
	if cfg, err = json.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	resp, body := e.get("/open?"+url.Values{"sc": {"sigra_session=attacker", "app=1"}}.Encode(), nil)
	if resp.StatusCode != http.StatusOK || body != "app:/open" {
		t.Fatalf("status %d %q; want the app's answer", resp.StatusCode, body)
	}
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app=1"}) {
		t.Errorf("Set-Cookie %q; want the app's own cookie alone", got)
	}
}

// A gate's refusal of a cookie conflict sets the gateway's cookies (to
// forget them), and the portal's guard lets exactly those lines through:
// an app that answers after it, here through intercept's
// handle_response, still cannot set them.
func TestGateForgetLinesPassTheGuardAloneAfterIntercept(t *testing.T) {
	e := startCaddy(t, "", "")
	up := e.up.Listener.Addr().String()
	cf := e.caddyfile("", "")
	site := fmt.Sprintf("\troute {\n\t\tsigra_portal\n\t\tintercept {\n\t\t\t@err status 400\n\t\t\thandle_response @err {\n"+
		"\t\t\t\trewrite * /err?sc=sigra_session%%3Dattacker%%3B%%20Path%%3D%%2F&sc=app%%3D1\n\t\t\t\treverse_proxy %s\n\t\t\t}\n\t\t}\n"+
		"\t\tsigra_gate\n\t\treverse_proxy %s\n\t}\n", up, up)
	old := "\tsigra_portal\n\t\n\treverse_proxy " + up + "\n"
	if !strings.Contains(cf, old) {
		t.Fatalf("the harness's site changed:\n%s", cf)
	}
	if err := e.load(strings.Replace(cf, old, site, 1)); err != nil {
		t.Fatal(err)
	}
	resp := e.do(http.MethodGet, "/x", map[string]string{"Cookie": "sigra_session=aaaa; sigra_session=bbbb"}, nil)
	resp.Body.Close()
	var ours int
	for _, line := range resp.Header.Values("Set-Cookie") {
		switch {
		case strings.Contains(line, "attacker"):
			t.Errorf("the app's line %q passed", line)
		case strings.HasPrefix(line, "sigra_session=;") && strings.Contains(line, "Max-Age=0"):
			ours++
		}
	}
	if ours == 0 || !slices.Contains(resp.Header.Values("Set-Cookie"), "app=1") {
		t.Errorf("Set-Cookie %q; want the gate's lines forgetting the cookies, and the app's own", resp.Header.Values("Set-Cookie"))
	}
}
