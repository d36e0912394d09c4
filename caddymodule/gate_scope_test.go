package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

var jsonAccept = map[string]string{"Accept": "application/json"}

// A gate nested in a handle block adds its requirements to the bare gate
// that Caddy runs first: the bare gate letting a user in does not let
// them past the nested one.
func TestNestedGateAddsItsRequirements(t *testing.T) {
	e := startCaddy(t, "", `
	sigra_gate
	handle /admin/* {
		sigra_gate {
			group admins
		}
	}
	route /public/* {
		sigra_gate {
			optional
		}
	}`)
	u := e.addUser("mallory@example.com", "staff")
	e.addUser("ada@example.com", "admins")

	// Anonymous: the outer gate decides first; the nested optional gate
	// cannot widen what it refused.
	if resp, _ := e.get("/public/page", jsonAccept); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous on /public/page under a bare gate: status %d; want 401", resp.StatusCode)
	}

	e.mustLogin("mallory@example.com")
	if resp, body := e.get("/admin/secret", jsonAccept); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "group") {
		t.Errorf("non-admin on /admin/secret: status %d, body %q; want 403 for the group", resp.StatusCode, body)
	}
	_, hits := e.up.last()
	if hits != 0 {
		t.Errorf("the app saw %d requests; want none", hits)
	}
	if resp, body := e.get("/elsewhere", nil); resp.StatusCode != http.StatusOK || body != "app:/elsewhere" {
		t.Errorf("signed-in user elsewhere: status %d, body %q; want the app", resp.StatusCode, body)
	}
	if resp, _ := e.get("/public/page", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("signed-in user on /public/page: status %d; want 200", resp.StatusCode)
	}
	h, _ := e.up.last()
	if h.Get(hdrUser) != u.ID || len(h.Values(hdrUser)) != 1 || len(h.Values(hdrAssertion)) != 1 {
		t.Errorf("identity through two gates: user %q (%d values), %d assertions; want one of each", h.Get(hdrUser), len(h.Values(hdrUser)), len(h.Values(hdrAssertion)))
	}
	verifyAssertion(t, e, h.Get(hdrAssertion))

	e.client.Jar, _ = newJar()
	e.mustLogin("ada@example.com")
	if resp, body := e.get("/admin/secret", nil); resp.StatusCode != http.StatusOK || body != "app:/admin/secret" {
		t.Errorf("admin on /admin/secret: status %d, body %q; want the app", resp.StatusCode, body)
	}
	h, _ = e.up.last()
	if h.Get(hdrGroups) != "admins" {
		t.Errorf("X-Sigra-Groups %q; want admins", h.Get(hdrGroups))
	}
}

// Sibling gates still follow the design: the most specific decides alone,
// so an optional path under a bare gate is optional.
func TestSiblingGatesMostSpecificDecides(t *testing.T) {
	e := startCaddy(t, "", testSite)
	if resp, body := e.get("/public/page", jsonAccept); resp.StatusCode != http.StatusOK || body != "app:/public/page" {
		t.Errorf("anonymous on the optional sibling: status %d, body %q; want the app", resp.StatusCode, body)
	}
	if resp, _ := e.get("/other", jsonAccept); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous elsewhere: status %d; want 401", resp.StatusCode)
	}
}

// A sibling decides alone only for the path it names as the app reads
// it. Caddy's path matcher ignores case and merges slashes, and reads
// %2F as a slash; a case-sensitive app, or one that keeps %2F in its
// segment or leaves // alone, routes /PUBLIC/x, /public%2Fx and
// //public/x to its private pages, so there the optional sibling adds
// nothing and the bare gate still asks for a session (and its group).
func TestSiblingDecidesOnlyForThePathAsWritten(t *testing.T) {
	e := startCaddy(t, "", `
	sigra_gate {
		group staff
	}
	sigra_gate /admin/* {
		group admins
	}
	sigra_gate /public/* {
		optional
	}`)
	e.addUser("sam@example.com", "staff")
	e.addUser("olga@example.com", "others")
	for target, want := range map[string]int{
		"/public/page": 200, "/public/a%2Fb": 200, "/public/a//b": 200, "/public/caf%C3%A9": 200,
		"/PUBLIC/page": 401, "/Public/page": 401, "//public/page": 401, "/public%2Fpage": 401, "/public%2fpage": 401,
		"/%70ublic/page": 401, // /public/page decoded, but no browser writes it so: an app routing undecoded does not read it so
		"/other":         401,
	} {
		if code, body := rawGet(t, e, target, jsonAccept); code != want {
			t.Errorf("anonymous GET %s: status %d %s; want %d", target, code, body, want)
		}
	}
	// Signed in, but not in the bare gate's group: the optional sibling
	// lets them in only where it is the path the app reads.
	e.mustLogin("olga@example.com")
	for target, want := range map[string]int{"/public/page": 200, "/PUBLIC/page": 403, "/public%2Fpage": 403, "//public/page": 403} {
		if resp, body := e.get(target, jsonAccept); resp.StatusCode != want {
			t.Errorf("olga (others) GET %s: status %d %s; want %d", target, resp.StatusCode, body, want)
		}
	}
	// A stricter sibling matched in another case still applies, and the
	// bare gate's requirements with it.
	e.client.Jar, _ = newJar()
	e.mustLogin("sam@example.com")
	for target, want := range map[string]int{"/ADMIN/x": 403, "/admin/x": 403, "/PUBLIC/page": 200, "/other": 200} {
		if resp, body := e.get(target, jsonAccept); resp.StatusCode != want {
			t.Errorf("sam (staff) GET %s: status %d %s; want %d", target, resp.StatusCode, body, want)
		}
	}
}

// A sibling whose matcher is not a path pattern is taken as written but
// for the slashes: path_regexp matches the path decoded and cleaned.
func TestRegexpSiblingDecidesOnlyForThePathAsWritten(t *testing.T) {
	e := startCaddy(t, "", `
	sigra_gate
	@feed path_regexp ^/feed/
	sigra_gate @feed {
		optional
	}`)
	for target, want := range map[string]int{"/feed/x": 200, "/feed/a%2Fb": 401, "/feed%2Fx": 401, "//feed/x": 401, "/other": 401} {
		if code, body := rawGet(t, e, target, jsonAccept); code != want {
			t.Errorf("anonymous GET %s: status %d %s; want %d", target, code, body, want)
		}
	}
}

// A gate picked by a path and something more (a method) compares the
// path as written too; one picked by path() in an expression, whose
// patterns are not known, never decides alone.
func TestCombinedSiblingDecidesOnlyForThePathAsWritten(t *testing.T) {
	e := startCaddy(t, "", `
	sigra_gate
	@pub {
		path /public/* /assets/*
		method GET HEAD
	}
	sigra_gate @pub {
		optional
	}`)
	for target, want := range map[string]int{
		"/public/x": 200, "/assets/site.css": 200, "/PUBLIC/x": 401, "/public%2Fx": 401, "//public/x": 401, "/ASSETS/x.css": 401,
	} {
		if code, body := rawGet(t, e, target, jsonAccept); code != want {
			t.Errorf("anonymous GET %s: status %d %s; want %d", target, code, body, want)
		}
	}
	// Matchers that read the path in ways not compared as written: the
	// gate never decides alone, so the bare gate asks for a session.
	for _, m := range []string{"expression path('/feed/*')", "expression path ('/feed/*')", "path_regexp (?i)^/feed/",
		"expression {path}.lowerAscii().startsWith('/feed/')", "not path_regexp ^/private/", "vars_regexp {path} ^/feed/",
		"vars {feed} yes\n\tmap {path} {feed} {\n\t\t~(?i)^/(feed|private)/ yes\n\t\tdefault no\n\t}", "expression file()",
		"not path /private/*"} {
		e = startCaddy(t, "", "sigra_gate\n\t@feed "+m+"\n\tsigra_gate @feed {\n\t\toptional\n\t}")
		for _, target := range []string{"/feed/x", "/FEED/x", "/PRIVATE/x"} {
			if code, body := rawGet(t, e, target, jsonAccept); code != http.StatusUnauthorized {
				t.Errorf("anonymous GET %s past an optional gate on %s: status %d %s; want 401", target, m, code, body)
			}
		}
	}
}

// A pattern that does not start at the path's start (*.css, a regexp
// without ^/ and a literal) matches within any path: /admin/users.css
// to an app that serves /admin/ by prefix, /admin/users.php/x.css to
// PHP, which runs users.php. Such a gate never decides alone.
func TestSuffixSiblingNeverDecidesAlone(t *testing.T) {
	for _, m := range []string{"path *.css", "path /public/* *.css", "path *admin*", `path_regexp \.css$`,
		`path_regexp ^/.*\.css$`, `path_regexp ^/[a-z]+/x\.css$`} {
		e := startCaddy(t, "", "sigra_gate\n\t@pub "+m+"\n\tsigra_gate @pub {\n\t\toptional\n\t}")
		for _, target := range []string{"/admin/users.css", "/admin/users.php/x.css"} {
			if code, body := rawGet(t, e, target, jsonAccept); code != http.StatusUnauthorized {
				t.Errorf("anonymous GET %s past an optional gate on %s: status %d %s; want 401", target, m, code, body)
			}
		}
	}
}

// Matchers that read nothing of the path, a path_regexp with groups but
// no flags, and a not of path patterns leave a gate deciding alone.
func TestPathBlindSiblingDecidesAlone(t *testing.T) {
	for m, cases := range map[string]map[string]int{
		"{\n\t\tpath /public/*\n\t\theader User-Agent *curious*\n\t}":                          {"/public/x": 200, "/PUBLIC/x": 401},
		"path_regexp ^/(?:public|assets)/":                                                     {"/public/x": 200, "/assets/x": 200, "/PUBLIC/x": 401},
		"{\n\t\tpath /public/*\n\t\tnot path /public/secret/*\n\t}":                            {"/public/x": 200, "/public/secret/x": 401, "/public/SECRET/x": 401},
		"{\n\t\tpath /public/*\n\t\thost 127.0.0.1 uri.example pathfinder.example\n\t}":        {"/public/x": 200},
		"{\n\t\tpath /public/*\n\t\theader_regexp User-Agent ^a.{3}\n\t\tnot method POST\n\t}": {"/public/x": 200, "/PUBLIC/x": 401},
	} {
		e := startCaddy(t, "", "sigra_gate\n\t@pub "+m+"\n\tsigra_gate @pub {\n\t\toptional\n\t}")
		for target, want := range cases {
			hdr := map[string]string{"Accept": "application/json", "User-Agent": "a curious client"}
			if code, body := rawGet(t, e, target, hdr); code != want {
				t.Errorf("anonymous GET %s, gate on %q: status %d %s; want %d", target, m, code, body, want)
			}
		}
	}
}

func TestMatchesAsWritten(t *testing.T) {
	for _, tc := range []struct {
		paths []string
		rank  int
		raw   string
		want  bool
	}{
		{nil, 0, "/PUBLIC//x%2F", true}, // no matcher: nothing to read apart
		{[]string{"/public/*"}, 16, "/public/x", true},
		{[]string{"/public/*"}, 16, "/public/a%2Fb//c", true},
		{[]string{"/public/*"}, 16, "/Public/x", false},
		{[]string{"/public/*"}, 16, "//public/x", false},
		{[]string{"/public/*"}, 16, "/public%2fx", false},
		{[]string{"/docs", "/docs/*"}, 12, "/docs", true},
		{[]string{"/docs", "/docs/*"}, 12, "/DOCS", false},
		{[]string{"/admin*"}, 13, "/administrator", true},
		{[]string{"/reports/*.pdf"}, 1, "/reports/a.pdf", true},
		{[]string{"/reports/*.pdf"}, 1, "/reports/a.PDF", false},
		{[]string{"/caf%C3%A9/*"}, 1, "/caf%C3%A9/x", true},
		{[]string{"/café/*"}, 1, "/caf%C3%A9/x", true},
		{nil, 1, "/feed/x", true},
		{nil, 1, "/FEED/x", true}, // path_regexp heeds case itself
		{nil, 1, "/feed/a%2fb", false},
		{nil, 1, "/feed//x", false},
		{[]string{"/public/*"}, 16, "/%70ublic/x", false},
		{[]string{"/public/*"}, 16, "/public/%C3%A9", true},
		{nil, 1, "/feed/%61", false},
		{nil, 1, "/feed/%C3%A9%20x", true},
		{[]string{"*.css"}, 1, "/a/b.css", true},
		{[]string{"*.css"}, 1, "/a/b.CSS", false},
		{[]string{"*/edit*"}, 1, "/a/edit/b", true},
		{[]string{"*/edit*"}, 1, "/a/EDIT/b", false},
		{[]string{"/{env.PUBLIC}/*"}, 1, "/public/x", false}, // a placeholder's value is not known
		{[]string{"/public/*"}, 16, "/public/x", true},
		{[]string{"/public/*"}, 16, "/public/%7Euser", true},
		{[]string{"*.css"}, 1, "/admin/x%3F.css", false},
		{[]string{"*.css"}, 1, "/admin/x%23.css", false},
	} {
		u, err := url.Parse(tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		g := &Gate{Paths: tc.paths, Rank: tc.rank, Scope: 1, PathsKnown: true}
		if got := g.asWritten(&http.Request{URL: u}); got != tc.want {
			t.Errorf("gate %v (rank %d) on %s: asWritten %t; want %t", tc.paths, tc.rank, tc.raw, got, tc.want)
		}
		if g.AddsOnly = true; g.asWritten(&http.Request{URL: u}) && tc.rank > 0 {
			t.Errorf("gate %v (rank %d), adds only, on %s: asWritten; want never", tc.paths, tc.rank, tc.raw)
		}
	}
	// A gate adapted by an older version, which did not record its
	// paths, never decides alone.
	if (&Gate{Rank: 16, Scope: 1}).asWritten(&http.Request{URL: &url.URL{Path: "/public/x"}}) {
		t.Error("a gate adapted without its paths decided alone")
	}
	for raw, want := range map[string]string{"/a%2Fb%20c": "/a%2Fb c", "/a%2f%2F": "/a%2F%2F", "%2F": "%2F", "/x%": "/x%", "/%41%2fb%": "/A%2Fb%"} {
		if got := slashesKept(raw); got != want {
			t.Errorf("slashesKept(%q) = %q; want %q", raw, got, want)
		}
	}
}

// The adapter gives sibling gates one scope and a nested block's gates
// another, in the JSON that `caddy adapt` prints.
func TestGateScopesInAdaptedConfig(t *testing.T) {
	cf := `:8080 {
	sigra_portal
	sigra_gate
	sigra_gate /a/* {
		group a
	}
	handle /b/* {
		sigra_gate {
			group b
		}
		sigra_gate /b/c/* {
			group c
		}
	}
	handle /d/* {
		sigra_gate {
			group d
		}
	}
	respond ok
}
`
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	scopes := map[string]int{} // first group (or "" for the bare gate) -> scope
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["handler"] == "sigra_gate" {
				var g Gate
				b, _ := json.Marshal(x)
				if err := json.Unmarshal(b, &g); err != nil {
					t.Fatal(err)
				}
				name := ""
				if len(g.Groups) > 0 {
					name = g.Groups[0]
				}
				scopes[name] = g.Scope
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	walk(cfg)
	if len(scopes) != 5 {
		t.Fatalf("found gates %v; want 5", scopes)
	}
	for name, s := range scopes {
		if s == 0 {
			t.Errorf("gate %q has no scope", name)
		}
	}
	if scopes[""] != scopes["a"] || scopes["b"] != scopes["c"] {
		t.Errorf("siblings in different scopes: %v", scopes)
	}
	if scopes[""] == scopes["b"] || scopes[""] == scopes["d"] || scopes["b"] == scopes["d"] {
		t.Errorf("nested blocks share a scope with their parent or each other: %v", scopes)
	}
}

// Gates from hand-written JSON carry no scope: each applies its own
// requirements, the safe reading when nesting cannot be told.
func TestGatesWithoutScopeAllApply(t *testing.T) {
	const site = `
	sigra_gate
	handle /admin/* {
		sigra_gate {
			group admins
		}
	}`
	e := startCaddy(t, "", site)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(e.caddyfile("", site)), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	unscoped := regexp.MustCompile(`,?"scope":\d+`).ReplaceAll(cfg, nil)
	if bytes.Contains(unscoped, []byte(`"scope"`)) || bytes.Equal(unscoped, cfg) {
		t.Fatal("could not take the scopes out of the adapted config")
	}
	if err := caddy.Load(unscoped, true); err != nil {
		t.Fatal(err)
	}
	e.addUser("mallory@example.com", "staff")
	e.mustLogin("mallory@example.com")
	if resp, _ := e.get("/admin/secret", jsonAccept); resp.StatusCode != http.StatusForbidden {
		t.Errorf("non-admin on /admin/secret without scopes: status %d; want 403", resp.StatusCode)
	}
	if resp, _ := e.get("/elsewhere", jsonAccept); resp.StatusCode != http.StatusOK {
		t.Errorf("signed-in user elsewhere without scopes: status %d; want 200", resp.StatusCode)
	}
}

// Sibling gates inside a nested block follow the sibling rule among
// themselves, after the outer gate decided: the most specific of them
// decides for its block.
func TestNestedSiblingsStepAsideForEachOther(t *testing.T) {
	e := startCaddy(t, "", `
	sigra_gate
	handle /app/* {
		sigra_gate /app/admin/* {
			group admins
		}
		sigra_gate {
			group staff
		}
	}`)
	e.addUser("ada@example.com", "admins")
	e.addUser("sam@example.com", "staff")
	e.addUser("oz@example.com", "others")
	checkAccess(t, e, []access{
		{"ada@example.com", "/app/admin/x", http.StatusOK}, // the admins sibling decides, not staff
		{"ada@example.com", "/app/other", http.StatusForbidden},
		{"sam@example.com", "/app/other", http.StatusOK},
		{"sam@example.com", "/app/admin/x", http.StatusForbidden},
		{"oz@example.com", "/elsewhere", http.StatusOK},
		{"oz@example.com", "/app/other", http.StatusForbidden},
	})
}

// `assertion off` on a nested gate leaves the assertion out on its route
// even when the outer gate signed one.
func TestNestedAssertionOff(t *testing.T) {
	e := startCaddy(t, "", `
	sigra_gate
	handle /assets/* {
		sigra_gate {
			assertion off
		}
	}`)
	u := e.addUser("erin@example.com")
	e.mustLogin("erin@example.com")
	e.get("/assets/app.css", nil)
	h, _ := e.up.last()
	if v, ok := h[hdrAssertion]; ok {
		t.Errorf("X-Sigra-Assertion %q reached the app under a nested assertion-off gate", v)
	}
	if h.Get(hdrUser) != u.ID {
		t.Errorf("X-Sigra-User %q; want %s", h.Get(hdrUser), u.ID)
	}
	e.get("/page", nil)
	h, _ = e.up.last()
	verifyAssertion(t, e, h.Get(hdrAssertion))
}

// In a route block Caddy keeps the written order, so a less specific
// sibling may come first and decide; the more specific one met after it
// still applies its requirements, so `/docs/* { optional }` written
// before `/docs/internal/* { group staff }` does not open the inner
// pages to all. The less specific one still steps aside when the more
// specific one came first.
func TestRouteBlockMoreSpecificSiblingApplies(t *testing.T) {
	e := startCaddy(t, "", `
	route {
		sigra_gate /docs/* {
			optional
		}
		sigra_gate /docs/internal/* {
			group staff
		}
		sigra_gate /api/private/* {
			group staff
		}
		sigra_gate /api/* {
			optional
		}
		sigra_gate /team* {
			optional
		}
		sigra_gate /team {
			group staff
		}
	}`)
	e.addUser("sam@example.com", "staff")
	e.addUser("oz@example.com", "others")
	checkAccess(t, e, []access{
		{"", "/docs/x", http.StatusOK},
		{"", "/docs/internal/plan", http.StatusUnauthorized},
		{"", "/api/private/x", http.StatusUnauthorized},
		{"", "/api/x", http.StatusOK},
		{"", "/teams", http.StatusOK},
		{"", "/team", http.StatusUnauthorized}, // exact is more specific than a prefix as long
		{"oz@example.com", "/docs/internal/plan", http.StatusForbidden},
		{"oz@example.com", "/api/private/x", http.StatusForbidden},
		{"oz@example.com", "/docs/x", http.StatusOK},
		{"sam@example.com", "/docs/internal/plan", http.StatusOK},
		{"sam@example.com", "/api/private/x", http.StatusOK},
	})
}

// A gate in a named route, invoked from a site, adds its requirements
// like a nested gate: named routes are adapted apart, and a gate there
// must not count as a sibling of the site's gates that decided before.
func TestNamedRouteGateAddsItsRequirements(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	cf := e.caddyfile("", `sigra_gate {
		optional
	}
	route /secret* {
		invoke secret
	}`) + `
&(secret) {
	sigra_gate {
		group staff
	}
}
`
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
	e.addUser("sam@example.com", "staff")
	e.addUser("oz@example.com", "others")
	checkAccess(t, e, []access{
		{"", "/open", http.StatusOK},
		{"", "/secret", http.StatusUnauthorized},
		{"oz@example.com", "/secret", http.StatusForbidden},
		{"sam@example.com", "/secret", http.StatusOK},
	})
}

// access is one line of an access table: who signs in ("" for nobody),
// the path they ask for, and the status they must get.
type access struct {
	who, path string
	want      int
}

// checkAccess asks for each path, in a fresh browser signed in as who.
func checkAccess(t *testing.T, e *env, table []access) {
	t.Helper()
	for _, c := range table {
		e.client.Jar, _ = newJar()
		if c.who != "" {
			e.mustLogin(c.who)
		}
		if resp, body := e.get(c.path, jsonAccept); resp.StatusCode != c.want {
			t.Errorf("%q on %s: status %d (%s); want %d", c.who, c.path, resp.StatusCode, body, c.want)
		}
	}
}

// A spelling of a path that some apps read as another (IIS drops a
// segment's trailing dots and spaces and an NTFS stream name; apps that
// fold Unicode read a fullwidth ａ as a) is refused where the gates' path
// patterns tell the two apart: it would meet other gates than the path
// the app serves. Where they do not, it passes.
func TestPathsAppsReadAsAnotherAreRefusedWhereGatesTellThemApart(t *testing.T) {
	for conf, cases := range map[string]map[string]int{
		// An optional gate picked by a not of path patterns.
		"sigra_gate\n\t@pub {\n\t\tpath /*\n\t\tnot path /admin/*\n\t}\n\tsigra_gate @pub {\n\t\toptional\n\t}": {
			"/admin/x": 401, "/x": 200, "/admin./x": 400, "/admin%20/x": 400, "/%EF%BD%81dmin/x": 400,
			"/admin::$INDEX_ALLOCATION/x": 400, "/wiki/Washington,_D.C.": 200, "/caf%C3%A9/x": 200,
			"//admin./x": 400, "//%EF%BD%81dmin/x": 400, "/ADMIN~1/x": 400, "/adm%C4%B1n/x": 400, "/~ann/x": 200,
			// ASP.NET takes a cookieless session out of the path.
			"/(S(x))/admin/x": 400, "/%28a%28x%29F%28y%29%29/admin/x": 400, "/(S())/admin/x": 400, "/(S(x))/y": 200, "/(x)/admin/x": 200,
		},
		// A stricter gate nested in an optional one.
		"sigra_gate\n\tsigra_gate /docs/* {\n\t\toptional\n\t}\n\tsigra_gate /docs/internal/* {\n\t\tgroup staff\n\t}": {
			"/docs/x": 200, "/docs/internal/x": 401, "/docs/internal./x": 400, "/docs/internal%20/x": 400,
			"/docs/internal::$INDEX_ALLOCATION/x": 400, "/docs/%EF%BD%89nternal/x": 400, "/docs/%EF%AC%81le": 200,
			"/docs/INTERN~1%20/x": 400, "/docs/INTERN~1::$INDEX_ALLOCATION/x": 400, "/docs/%20internal/x": 400,
			"/docs/internal%0A/x": 400, "/docs/file~1.txt": 200, "/docs/HEAD~1": 200,
			"/docs/internal%0B/x": 400, "/docs/%0Cinternal/x": 400, "/docs/internal%1F/x": 400,
			"/docs/a./b": 200, "/docs/v1.2./x": 200,
			"/docs//internal./x": 400, "/docs///internal%20/x": 400, "/docs/%2Finternal./x": 400,
		},
		// A stricter gate in a block of its own (another scope).
		"sigra_gate\n\tsigra_gate /docs/* {\n\t\toptional\n\t}\n\troute {\n\t\tsigra_gate /docs/internal/* {\n\t\t\tgroup staff\n\t\t}\n\t}": {
			"/docs/x": 200, "/docs/internal/x": 401, "/docs/internal./x": 400, "/docs/%EF%BD%89nternal/x": 400,
		},
		// A stricter gate in a block picked by path: the block's pattern
		// counts as the gate's.
		"sigra_gate\n\tsigra_gate /docs/* {\n\t\toptional\n\t}\n\troute /docs/internal/* {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}": {
			"/docs/x": 200, "/docs/internal/x": 401, "/docs/internal./x": 400, "/docs/%EF%BD%89nternal/x": 400,
		},
		"@adm path /admin/*\n\thandle @adm {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n\thandle {\n\t\tsigra_gate {\n\t\t\toptional\n\t\t}\n\t}": {
			"/x": 200, "/admin/x": 401, "/admin./x": 400, "/admin::$INDEX_ALLOCATION/x": 400, "/%EF%BD%81dmin/x": 400,
		},
		// A handle picked by a named matcher that asks more than a path,
		// or by a path_regexp.
		"@adm {\n\t\tpath /admin/*\n\t\tmethod GET POST\n\t}\n\thandle @adm {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n\thandle {\n\t\tsigra_gate {\n\t\t\toptional\n\t\t}\n\t}": {
			"/x": 200, "/admin/x": 401, "/admin./x": 400, "/%EF%BD%81dmin/x": 400, "/ADMIN~1/x": 400,
		},
		"@adm path_regexp ^/admin/\n\thandle @adm {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n\thandle {\n\t\tsigra_gate {\n\t\t\toptional\n\t\t}\n\t}": {
			"/x": 200, "/admin/x": 401, "/admin./x": 400, "/%EF%BD%81dmin/x": 400,
		},
		// A handle_path: the patterns in it are the stripped path's.
		"sigra_gate {\n\t\toptional\n\t}\n\thandle_path /app/* {\n\t\thandle /admin/* {\n\t\t\tsigra_gate {\n\t\t\t\tgroup staff\n\t\t\t}\n\t\t}\n\t}": {
			"/app/x": 200, "/app/admin/x": 401, "/app/admin./x": 400, "/app/%EF%BD%81dmin/x": 400,
			"/admin./x": 400, // the patterns count for any prefix stripped
		},
		// Prefixes stripped otherwise: handle_path /app* (no slash), a
		// uri strip_prefix, a handle_path in a handle_path.
		"sigra_gate {\n\t\toptional\n\t}\n\thandle_path /app* {\n\t\thandle /admin/* {\n\t\t\tsigra_gate {\n\t\t\t\tgroup staff\n\t\t\t}\n\t\t}\n\t}": {
			"/appadmin/x": 401, "/appadmin./x": 400, "/appadmin%20/x": 400, "/app/x": 200,
			"/app%20admin/x": 400, "/app%09admin/x": 400, "//app/%20admin/x": 400, "//app/admin./x": 400, "///app%20admin/x": 400,
			// Short names of the stripped path.
			"/appADMIN~1/x": 400, "/appADMIN~1./x": 400, "/appADMIN~1.PDF": 400, "/appHEAD~1/x": 200,
		},
		"sigra_gate {\n\t\toptional\n\t}\n\thandle_path /api/v1* {\n\t\thandle /admin/* {\n\t\t\tsigra_gate {\n\t\t\t\tgroup staff\n\t\t\t}\n\t\t}\n\t}\n\thandle / {\n\t\trespond home\n\t}\n\thandle /public/* {\n\t\trespond public\n\t}": {
			"/api/v1admin/x": 401, "/api/v1admin./x": 400, "/api/v1%EF%BD%81dmin/x": 400,
			// Not refused: nothing strips a prefix that makes these another gated path.
			"/pricing.": 200, "/v1./public/x": 200, "/republic./x": 200, "/docs/api./x": 200,
		},
		"sigra_gate {\n\t\toptional\n\t}\n\thandle /app/* {\n\t\turi strip_prefix /app\n\t\thandle /admin/* {\n\t\t\tsigra_gate {\n\t\t\t\tgroup staff\n\t\t\t}\n\t\t}\n\t}": {
			"/app/admin/x": 401, "/app/admin./x": 400, "/app/x": 200,
		},
		"sigra_gate {\n\t\toptional\n\t}\n\thandle_path /app/* {\n\t\thandle_path /app/* {\n\t\t\thandle /admin/* {\n\t\t\t\tsigra_gate {\n\t\t\t\t\tgroup staff\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}": {
			"/app/app/admin/x": 401, "/app/app/admin./x": 400,
		},
		// Suffix patterns and alternations under a handle_path.
		"sigra_gate {\n\t\toptional\n\t}\n\thandle_path /app/* {\n\t\t@aspx path *.aspx\n\t\thandle @aspx {\n\t\t\tsigra_gate {\n\t\t\t\tgroup staff\n\t\t\t}\n\t\t}\n\t\t@adm path_regexp ^(?i)/admin/|^/secret/\n\t\thandle @adm {\n\t\t\tsigra_gate {\n\t\t\t\tgroup staff\n\t\t\t}\n\t\t}\n\t}": {
			"/app/secret.aspx": 401, "/app/secret.aspx.": 400, "/app/secret.aspx::$DATA": 400,
			"/app/admin./x": 400, "/app/secret./x": 400, "/app/x": 200,
		},
		// A named matcher defined in the block around the handle.
		"handle {\n\t\t@adm path /admin/*\n\t\thandle @adm {\n\t\t\tsigra_gate {\n\t\t\t\tgroup staff\n\t\t\t}\n\t\t}\n\t\tsigra_gate {\n\t\t\toptional\n\t\t}\n\t}": {
			"/x": 200, "/admin/x": 401, "/admin./x": 400,
		},
		// An exact pattern: a file's short name is refused too.
		"sigra_gate {\n\t\toptional\n\t}\n\tsigra_gate /reports/financials.pdf {\n\t\tgroup staff\n\t}": {
			"/reports/financials.pdf": 401, "/reports/FINANC~1.PDF": 400, "/reports/FINANC~1.PDF%20": 400, "/reports/x.pdf": 200,
		},
		// A prefix that ends within a name: the short names of files it
		// gates are refused too (plain and hashed), others pass.
		"sigra_gate {\n\t\toptional\n\t}\n\tsigra_gate /docs/internal* {\n\t\tgroup staff\n\t}": {
			"/docs/internal-roadmap.pdf": 401, "/docs/INTERN~1/x": 400, "/docs/INTERN~1.PDF": 400, "/docs/INTERN~1.PDF%20": 400,
			"/docs/INTERN~1.PDF::$DATA": 400, "/docs/IN3F2A~1.PDF": 400, "/docs/HEAD~1": 200, "/repo/blob/HEAD~1/x": 200,
		},
		// Patterns whose names are not known here (an escape, glob
		// syntax), or not in ASCII: any short name is refused.
		"sigra_gate {\n\t\toptional\n\t}\n\tsigra_gate /secret%20area/* {\n\t\tgroup staff\n\t}\n\thandle \"/reports/fin?ncials.pdf\" {\n\t\tsigra_gate {\n\t\t\tgroup staff\n\t\t}\n\t}\n\tsigra_gate /%C3%BCbersicht/* {\n\t\tgroup staff\n\t}": {
			"/secret%20area/x": 401, "/SECRET~1/x": 400, "/reports/financials.pdf": 401, "/reports/FINANC~1.PDF": 400,
			"/%C3%9CBERSI~1/x": 400, "/%C3%9CB3F2A~1/x": 400, "/x": 200,
		},
		// A site gated in part: the portal refuses what no gate meets.
		"handle /nest/* {\n\t\troute /nest/in/* {\n\t\t\tsigra_gate\n\t\t}\n\t}": {
			"/nest/x": 200, "/nest/in/x": 401, "/nest/in./x": 400,
		},
		// A pattern that names a loose spelling itself does not refuse
		// the paths it names.
		"sigra_gate\n\tsigra_gate /ｶﾀﾛｸﾞ/* {\n\t\toptional\n\t}\n\tsigra_gate /wiki/* {\n\t\toptional\n\t}\n\tsigra_gate /wiki/Washington,_D.C. {\n\t\tgroup staff\n\t}": {
			"/%EF%BD%B6%EF%BE%80%EF%BE%9B%EF%BD%B8%EF%BE%9E/item1": 200, "/wiki/Washington,_D.C.": 401, "/wiki/x": 200,
		},
		// A stricter gate picked by a path_regexp.
		"sigra_gate\n\t@adm path_regexp ^/admin/\n\tsigra_gate @adm {\n\t\tgroup staff\n\t}": {
			"/admin./x": 400, "/admin/x": 401, "/x./y": 401,
		},
	} {
		e := startCaddy(t, "", conf)
		for target, want := range cases {
			code, body := rawGet(t, e, target, jsonAccept)
			if code != want || want == 400 && problemReason(body) != "bad_path" {
				t.Errorf("anonymous GET %s, gates:\n\t%s\nstatus %d %s; want %d", target, conf, code, body, want)
			}
		}
	}
}

func TestAppReading(t *testing.T) {
	for p, want := range map[string]string{
		"/admin/x":                    "",
		"/x.css":                      "",
		"/wiki/Washington,_D.C.":      "/wiki/Washington,_D.C",
		"/admin./x":                   "/admin/x",
		"/admin. . /x":                "/admin/x",
		"/admin::$INDEX_ALLOCATION/x": "/admin/x",
		"//admin.//x":                 "/admin/x",
		"/a//b":                       "",
		"/admin:s:$DATA":              "/admin",
		"/a:b/x":                      "",
		"/ａdmin/x":                    "/admin/x",
		"/a／b":                        "/a/b",
		"/proﬁle":                     "/profile",
		"/café/x":                     "", // NFKC already
		"/ｃafé./x":                    "/café/x",
		"/admın/x":                    "/admin/x",
		"/(S(lit3py55))/admin/x":      "/admin/x",
		"/(S())/admin/x":              "/admin/x",
		"/(S)/admin/x":                "",
		"/(A(x)F(y))/a":               "/a",
		"/(s(x))":                     "/",
		"/(x)/a":                      "",
		"/a(S(x))/b":                  "",
		"/((S(x))/b":                  "",
	} {
		got, other := appReading(p)
		if want == "" && (other || got != p) || want != "" && (!other || got != want) {
			t.Errorf("appReading(%q) = %q, %t; want %q", p, got, other, want)
		}
	}
}

func TestShortNamesOfPatternedNames(t *testing.T) {
	var g gateReads
	reads, err := g.add([][]string{{"/admin/*", "/docs/internal*", "/reports/financials.pdf", "/a+b/*", "/x/*/y"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		// Folders and files whose long names a pattern spells, in the
		// plain and the hashed form.
		"/ADMIN~1/x": true, "/admin~2": true, "/ADMIN~1.HTM/x": true, "/docs/INTERN~12/": true, "/docs/INTERN~1.PDF": true,
		"/docs/IN3F2A~1.PDF": true, "/reports/FINANC~1.PDF": true, "/REPORT~1/x": true, "/A_B~1/x": true, "/Y~1": true,
		"/a/ADM~1/x": true, "/I~1/x": true,
		// Others, and names not shaped like a short one.
		"/repo/commit/HEAD~1": false, "/a/FILE~1.TXT": false, "/~ann/x": false, "/a/x~": false, "/a/b~c": false,
		"/abcdefg~1/x": false, "/a~1.html5/x": false, "/a/~1": false, "/ZZ3F2A~1/x": false, "/main~2": false,
	} {
		if got := reads.shortApart(p); got != want {
			t.Errorf("shortApart(%q) = %t; want %t", p, got, want)
		}
	}
	// Past a few, short-shaped segments are refused without comparing:
	// the comparing would cost a long path that much more.
	if p := strings.Repeat("/ZZZ~1", maxShortNames+1); !reads.shortApart(p) {
		t.Errorf("shortApart of %d segments like ZZZ~1 = false; want true", maxShortNames+1)
	}
	// A pattern that is a loose spelling itself is compared too.
	var l gateReads
	if reads, _ := l.add([][]string{{"/wiki/Washington,_D.C."}}, nil, nil); !reads.shortApart("/wiki/WASHIN~1.C") || reads.shortApart("/wiki/HEAD~1") {
		t.Error("beside /wiki/Washington,_D.C., WASHIN~1.C is not refused, or HEAD~1 is")
	}
	// A regexp, a suffix pattern, a placeholder, an escape, glob syntax
	// or a name out of ASCII cannot be compared: any short name may
	// stand for a name it matches, one out of ASCII too.
	for _, c := range []struct {
		patterns, regexps []string
	}{
		{[]string{"/admin/*", "*.aspx"}, nil},
		{[]string{"/admin/*"}, []string{"^/x"}},
		{[]string{"/admin/*"}, []string{"^/ｶﾀﾛｸﾞ/"}},
		{[]string{"/{env.DIR}/*"}, nil},
		{[]string{"/secret%20area/*"}, nil},
		{[]string{"/reports/fin?ncials.pdf"}, nil},
		{[]string{"/reports/[fq]inancials.pdf"}, nil},
		{[]string{"/übersicht/*"}, nil},
	} {
		var h gateReads
		reads, err := h.add([][]string{c.patterns}, c.regexps, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/repo/HEAD~1", "/\u00dcBERSI~1/x", "/\u00fcbersi~1/x", "/\u00dcB3F2A~1/x", "/\u30ab\u30bf\u30ed~1/x"} {
			if !reads.shortApart(p) {
				t.Errorf("with %q %q, shortApart(%s) = false; want true", c.patterns, c.regexps, p)
			}
		}
	}
}

// A long path of tildes costs one scan, not one per tilde.
func BenchmarkShortApartTildes(b *testing.B) {
	var g gateReads
	reads, _ := g.add([][]string{{"/admin/*"}}, nil, nil)
	p := "/" + strings.Repeat("~", 20000) + "/x"
	for b.Loop() {
		reads.shortApart(p)
	}
}

// A named route's blocks are read by its gates, as a site's are by its
// portal: a loose spelling of a path its handle gates is refused.
func TestNamedRouteBlocksTellLooseSpellingsApart(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	cf := e.caddyfile("", "invoke app") + `
&(app) {
	route {
		handle /admin/* {
			sigra_gate {
				group staff
			}
		}
		handle {
			sigra_gate {
				optional
			}
		}
	}
}
`
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]int{"/x": 200, "/admin/x": 401, "/admin./x": 400, "/%EF%BD%81dmin/x": 400, "/ADMIN~1/x": 400} {
		if code, body := rawGet(t, e, target, jsonAccept); code != want {
			t.Errorf("anonymous GET %s: status %d %s; want %d", target, code, body, want)
		}
	}
}

// A named route invoked in a handle_path sees the stripped path: the
// request's loose spellings are tried with the prefix stripped.
func TestNamedRouteUnderHandlePathTellsLooseSpellingsApart(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	cf := e.caddyfile("", "handle_path /app/* {\n\t\tinvoke app\n\t}") + `
&(app) {
	handle /admin/* {
		sigra_gate {
			group staff
		}
	}
}
`
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]int{"/app/x": 200, "/app/admin/x": 401, "/app/admin./x": 400, "/app/%EF%BD%81dmin/x": 400} {
		if code, body := rawGet(t, e, target, jsonAccept); code != want {
			t.Errorf("anonymous GET %s: status %d %s; want %d", target, code, body, want)
		}
	}
}

// The adapter writes what it reads from the blocks around a portal, and
// around a named route's gates, as site_paths, site_regexps and
// site_strips: names a JSON config may use too.
func TestSiteScopeIsWrittenToTheJSONConfig(t *testing.T) {
	cf := "{\n\tsigra {\n\t\tstorage bbolt /tmp/never-opened.db\n\t}\n}\n" +
		"&(gated) {\n\thandle /r/* {\n\t\tsigra_gate {\n\t\t\tgroup r\n\t\t}\n\t}\n}\n" +
		"http://127.0.0.1:9 {\n\tsigra_portal\n\thandle_path /app/* {\n\t\tsigra_gate /admin* {\n\t\t\tgroup admins\n\t\t}\n\t\tsigra_gate\n\t}\n" +
		"\t@api path_regexp ^/(?i)api/\n\thandle @api {\n\t\tsigra_gate\n\t}\n\trespond ok\n}\n" +
		"http://127.0.0.1:10 {\n\tsigra_portal\n\tinvoke gated\n}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`{"handler":"sigra_portal","site_paths":["/app/*"],"site_regexps":["^/(?i)api/"],"site_strips":["/app/"]}`,
		`"site_paths":["/r/*"]`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("adapted config lacks %s:\n%s", want, out)
		}
	}
}
