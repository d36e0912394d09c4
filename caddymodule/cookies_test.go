package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestStripOwnCookies(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no Cookie header left
	}{
		{"none of ours", []string{"theme=dark; other=1"}, []string{"theme=dark; other=1"}},
		{"only ours", []string{"sigra_session=tok"}, nil},
		{"both forms and csrf", []string{"__Host-sigra_session=a; sigra_csrf=b; __Host-sigra_csrf=c; sigra_session=d"}, nil},
		{"mixed", []string{"theme=dark; sigra_session=tok; other=1"}, []string{"theme=dark; other=1"}},
		{"ours last, no spaces", []string{"a=1;b=2;sigra_session=tok"}, []string{"a=1; b=2"}},
		{"space before =", []string{"a=1; sigra_session =tok"}, []string{"a=1"}},
		{"several lines", []string{"a=1", "sigra_session=tok", "b=2; sigra_csrf=x"}, []string{"a=1", "b=2"}},
		{"look-alike names stay", []string{"sigra_sessions=1; my_sigra_session=2; Sigra_Session=3"}, []string{"sigra_sessions=1; my_sigra_session=2; Sigra_Session=3"}},
		{"empty parts", []string{";; sigra_session=tok;; a=1;"}, []string{"a=1"}},
		// RFC 2965's comma, from a client or a proxy that joins lines.
		{"after a comma", []string{"a=1, sigra_session=tok"}, []string{"a=1"}},
		{"commas and semicolons", []string{"a=1,sigra_csrf=x; b=2, __Host-sigra_session=tok, c=3"}, []string{"a=1; b=2, c=3"}},
		{"only ours, by commas", []string{"sigra_session=tok, sigra_csrf=x"}, nil},
		{"an app's value with commas stays", []string{"list=a,b,c; sigra_session=tok"}, []string{"list=a,b,c"}},
		{"commas, none of ours", []string{"list=a, b=c"}, []string{"list=a, b=c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Cookie": append([]string(nil), tc.in...), "Accept": {"*/*"}}
			stripOwnCookies(h)
			if got := h["Cookie"]; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Cookie %q; want %q", got, tc.want)
			}
			if _, ok := h["Cookie"]; ok && tc.want == nil {
				t.Error("an empty Cookie header was left behind")
			}
			if h.Get("Accept") != "*/*" {
				t.Error("another header was touched")
			}
		})
	}
}

// The first sigra handler takes the cookies out of the headers; a later
// one in the same request reads them from the var. Without a portal in
// front, the gate takes them itself.
func TestTakeOwnCookies(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", "theme=dark; sigra_session=tok; sigra_csrf=anon0123456789abcdef")
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
	first := takeOwnCookies(r, false)
	if first.session != "tok" || first.csrf != "anon0123456789abcdef" {
		t.Fatalf("took %+v; want the session and csrf values", *first)
	}
	if got := r.Header.Get("Cookie"); got != "theme=dark" {
		t.Fatalf("Cookie after taking %q; want only the app's", got)
	}
	if again := takeOwnCookies(r, false); again != first {
		t.Fatalf("a second handler got %+v; want the values the first took", *again)
	}

	// On HTTPS only the __Host- names count; the plain ones are stripped
	// all the same.
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", "sigra_session=plain; __Host-sigra_session=hosted")
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
	if c := takeOwnCookies(r, true); c.session != "hosted" {
		t.Errorf("secure session %q; want the __Host- cookie", c.session)
	}
	if _, ok := r.Header["Cookie"]; ok {
		t.Errorf("Cookie %q left; want none", r.Header["Cookie"])
	}
}

// The var is reachable through placeholders and log fields: it must not
// print the session.
func TestOwnCookiesNeverPrint(t *testing.T) {
	c := &ownCookies{session: "secret-session", csrf: "secret-csrf"}
	b, err := json.Marshal(map[string]any{"v": c})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{caddy.ToString(c), string(b)} {
		if strings.Contains(s, "secret") || !strings.Contains(s, "[redacted]") {
			t.Errorf("printed as %q", s)
		}
	}
}

// Through Caddy: the app never receives the gateway's cookies, on a gated
// path, an optional one, or a path no gate covers, and gets its own
// cookies unchanged; a placeholder naming the var shows nothing secret.
func TestOwnCookiesNeverReachTheApp(t *testing.T) {
	e := startCaddy(t, "", testSite+`
	request_header X-Debug-Vars {http.vars.sigra.own_cookies}`)
	u := e.addUser("carol@example.com")
	e.mustLogin("carol@example.com")
	tok := e.sessionCookie()
	if tok == "" {
		t.Fatal("no session cookie after login")
	}
	for _, path := range []string{"/reports", "/public/page"} {
		// The jar adds sigra_session (and sigra_csrf) after these.
		e.get(path, map[string]string{"Cookie": "theme=dark; other=1"})
		h, _ := e.up.last()
		if h.Get(hdrUser) != u.ID {
			t.Errorf("%s: X-Sigra-User %q; want the signed-in user", path, h.Get(hdrUser))
		}
		if got := h.Values("Cookie"); !reflect.DeepEqual(got, []string{"theme=dark; other=1"}) {
			t.Errorf("%s: the app got Cookie %q; want only its own cookies", path, got)
		}
		if got := h.Get("X-Debug-Vars"); got != "[redacted]" {
			t.Errorf("%s: the var's placeholder printed %q; want [redacted]", path, got)
		}
		for k, vals := range h {
			for _, v := range vals {
				if strings.Contains(v, tok) {
					t.Errorf("%s: the session token reached the app in %s", path, k)
				}
			}
		}
	}
	// Only the gateway's cookies: no Cookie header at all.
	e.get("/reports", nil)
	if h, _ := e.up.last(); len(h.Values("Cookie")) != 0 {
		t.Errorf("the app got Cookie %q; want none", h.Values("Cookie"))
	}
}

func TestOwnCookiesStrippedOnUngatedPaths(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate /private/*")
	e.addUser("dave@example.com")
	e.mustLogin("dave@example.com")
	e.get("/open/page", map[string]string{"Cookie": "theme=dark"})
	h, hits := e.up.last()
	if hits != 1 {
		t.Fatalf("the app saw %d requests; want 1", hits)
	}
	if got := h.Values("Cookie"); !reflect.DeepEqual(got, []string{"theme=dark"}) {
		t.Errorf("the app got Cookie %q on an ungated path; want only its own", got)
	}
}
