package caddymodule

import (
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// The lines that answer a cookie conflict reach the other cookie
// wherever another site on the host could have set it for the request:
// for the host or a parent domain, at a path the request's path matches.
// The app's own cookies stay.
func TestForgetCookiesReachesTheOtherCookie(t *testing.T) {
	u, _ := url.Parse("http://app.example.com/a/b/c")
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(u, []*http.Cookie{
		{Name: "sigra_session", Value: "own", Path: "/"},
		{Name: "theme", Value: "dark", Path: "/"},
	})
	jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: "tossed", Domain: "example.com", Path: "/a/b"}})
	jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: "tossed2", Domain: "app.example.com", Path: "/a/"}})
	if n := len(jar.Cookies(u)); n != 4 {
		t.Fatalf("the jar holds %d cookies for %s; want 4", n, u)
	}
	w := httptest.NewRecorder()
	forgetCookies(w, httptest.NewRequest(http.MethodGet, u.String(), nil), "sigra_session", false)
	jar.SetCookies(u, w.Result().Cookies())
	if got := jar.Cookies(u); len(got) != 1 || got[0].Name != "theme" {
		t.Errorf("after the lines, the jar holds %v; want theme only", got)
	}

	// Script on a deep page sets the cookie at the page's own folder;
	// a sibling site at the registrable domain's root.
	const uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
	deepPage, _ := url.Parse("http://app.example.com/app/projects/" + uuid + "/documents/" + uuid + "/edit")
	jar, _ = cookiejar.New(nil)
	jar.SetCookies(deepPage, []*http.Cookie{{Name: "sigra_session", Value: "own", Path: "/"}})
	jar.SetCookies(deepPage, []*http.Cookie{{Name: "sigra_session", Value: "script", Path: "/app/projects/" + uuid + "/documents/" + uuid}})
	jar.SetCookies(deepPage, []*http.Cookie{{Name: "sigra_session", Value: "sibling", Domain: "example.com", Path: "/"}})
	w = httptest.NewRecorder()
	forgetCookies(w, httptest.NewRequest(http.MethodGet, deepPage.String(), nil), "sigra_session", false)
	jar.SetCookies(deepPage, w.Result().Cookies())
	if got := jar.Cookies(deepPage); len(got) != 0 {
		t.Errorf("after the lines for a deep page, the jar holds %v; want none", got)
	}

	// Long and odd paths, public suffixes of two labels: the budget
	// cuts what matters least, not the parent domain's / or first
	// folder, nor the page's own folder, where script sets a cookie
	// (a cookie set with no Path lands there).
	for _, page := range []string{
		"http://app.example.com/s/" + strings.Repeat("a", 150) + "/p/q/r/s/t/edit",
		"http://app.example.com/s/" + strings.Repeat("a", 250) + "/p/q/r/s/t/edit",
		"http://app.example.com/s/" + strings.Repeat("a", 600) + "/p/q/r/s/t/edit",
		"http://app.team.example.co.uk/s/abcdefg/abcdefg/abcdefg/abcdefg/edit",
		"http://app.example.co.uk/s/" + strings.Repeat("abcdefg/", 12) + "edit",
		"http://app.example.com/s;jsessionid=1/x/edit",
	} {
		u, _ := url.Parse(page)
		reg := strings.TrimPrefix(strings.TrimPrefix(u.Hostname(), "app."), "team.")
		jar, _ = cookiejar.New(nil)
		jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: "own", Path: "/"}})
		jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: "script"}})
		jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: "sibling", Domain: reg, Path: "/"}})
		jar.SetCookies(u, []*http.Cookie{{Name: "sigra_session", Value: "sibling-folder", Domain: reg, Path: "/s"}})
		w = httptest.NewRecorder()
		forgetCookies(w, httptest.NewRequest(http.MethodGet, u.String(), nil), "sigra_session", false)
		jar.SetCookies(u, w.Result().Cookies())
		if got := jar.Cookies(u); len(got) != 0 {
			t.Errorf("after the lines for %s, the jar holds %v; want none", page, got)
		}
	}

	// Bounded, for a deep path and a long host name.
	deep := "http://a.b.c.d.e.f.example.com/" + strings.Repeat("x/", 200)
	w = httptest.NewRecorder()
	forgetCookies(w, httptest.NewRequest(http.MethodGet, deep, nil), "sigra_session", false)
	if n := len(w.Result().Cookies()); n > maxForgetPaths*(maxForgetDomains+1) {
		t.Errorf("%d lines for %s; want at most %d", n, deep, maxForgetPaths*(maxForgetDomains+1))
	}
	if n := len(strings.Join(w.Result().Header["Set-Cookie"], "\r\nSet-Cookie: ")); n > maxForgetBytes {
		t.Errorf("%d bytes of lines for %s; want at most %d", n, deep, maxForgetBytes)
	}
	long := "http://app.example.com/" + strings.Repeat("y", 3000) + "/z"
	w = httptest.NewRecorder()
	forgetCookies(w, httptest.NewRequest(http.MethodGet, long, nil), "sigra_session", false)
	if n := len(strings.Join(w.Result().Header["Set-Cookie"], "\r\nSet-Cookie: ")); n > maxForgetBytes || n == 0 {
		t.Errorf("%d bytes of lines for a path of 3 KB; want some, at most %d", n, maxForgetBytes)
	}
	// An address has no parent domains, nor has a host that is no DNS
	// name (a catch-all site takes any Host): net/http would log each
	// such Domain and drop it.
	for _, host := range []string{"127.0.0.1:8080", "[::1]:8080", "x!y.example.com", "a..b.example.com"} {
		w = httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "http://example.com/a", nil)
		req.Host = host
		forgetCookies(w, req, "sigra_session", false)
		for _, c := range w.Result().Cookies() {
			if c.Domain != "" {
				t.Errorf("Host %s: a line for %s; want host-only ones", host, c.Domain)
			}
		}
	}
	// On HTTPS the __Host- name lives at / on the host only, and in a
	// partition of its own if script set it so (CHIPS).
	w = httptest.NewRecorder()
	forgetCookies(w, httptest.NewRequest(http.MethodGet, "https://app.example.com/a/b", nil), "__Host-sigra_session", true)
	cs := w.Result().Cookies()
	if len(cs) != 2 || cs[0].Partitioned || !cs[1].Partitioned {
		t.Errorf("HTTPS lines %v; want two, the second partitioned", cs)
	}
	for _, c := range cs {
		if c.Path != "/" || c.Domain != "" || !c.Secure || c.MaxAge >= 0 {
			t.Errorf("HTTPS line %v; want it Secure, at /, host-only, expired", c)
		}
	}

	// A deep host name: the parents nearest the registrable domain,
	// where a sibling site sets cookies, come first.
	w = httptest.NewRecorder()
	forgetCookies(w, httptest.NewRequest(http.MethodGet, "http://app.w.x.y.lan.test/", nil), "sigra_session", false)
	var domains []string
	for _, c := range w.Result().Cookies() {
		if c.Path == "/" {
			domains = append(domains, c.Domain)
		}
	}
	if got, want := strings.Join(domains, " "), " lan.test y.lan.test x.y.lan.test app.w.x.y.lan.test"; got != want {
		t.Errorf("domains of the lines for app.w.x.y.lan.test: %q; want %q", got, want)
	}
}

func TestCookiePaths(t *testing.T) {
	for p, want := range map[string]string{
		"/":           "/",
		"/a":          "/ /a",
		"/a/":         "/ /a /a/",
		"/a/b/c":      "/ /a /a/ /a/b /a/b/ /a/b/c",
		"//a":         "/ // //a",
		"/a%2Fb/":     "/ /a%2Fb /a%2Fb/",
		"a":           "/",
		"/m;x=1/page": "/", // no cookie Path holds a ;
		// Deeper than maxForgetPaths: the first folder's and the deepest.
		"/1/2/3/4/5/6/7/8": "/ /1 /1/ /1/2/3/4 /1/2/3/4/ /1/2/3/4/5 /1/2/3/4/5/ /1/2/3/4/5/6 /1/2/3/4/5/6/ /1/2/3/4/5/6/7 /1/2/3/4/5/6/7/ /1/2/3/4/5/6/7/8",
		// Each once, however the path ends.
		"/1/2/3/4/5/6/7/8/":  "/ /1 /1/ /1/2/3/4/ /1/2/3/4/5 /1/2/3/4/5/ /1/2/3/4/5/6 /1/2/3/4/5/6/ /1/2/3/4/5/6/7 /1/2/3/4/5/6/7/ /1/2/3/4/5/6/7/8 /1/2/3/4/5/6/7/8/",
		"/1/2/3/4/5/6/7/8//": "/ /1 /1/ /1/2/3/4/5 /1/2/3/4/5/ /1/2/3/4/5/6 /1/2/3/4/5/6/ /1/2/3/4/5/6/7 /1/2/3/4/5/6/7/ /1/2/3/4/5/6/7/8 /1/2/3/4/5/6/7/8/ /1/2/3/4/5/6/7/8//",
	} {
		if got := strings.Join(cookiePaths(p), " "); got != want {
			t.Errorf("cookiePaths(%q) = %q; want %q", p, got, want)
		}
	}
}
