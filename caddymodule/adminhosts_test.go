package caddymodule

import (
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// An admin_hosts name that no site answers puts the admin pages nowhere;
// the warning names it, and only it.
func TestUnservedAdminHosts(t *testing.T) {
	route := func(sets ...caddyhttp.MatcherSet) caddyhttp.Route {
		return caddyhttp.Route{MatcherSets: sets}
	}
	host := func(h ...string) caddyhttp.MatcherSet {
		m := caddyhttp.MatchHost(h)
		return caddyhttp.MatcherSet{&m}
	}
	hosts := []string{"admin.example.com", "app.example.com", "::1", "a.b.example.com"}
	for _, c := range []struct {
		name   string
		routes caddyhttp.RouteList
		want   []string
	}{
		{"no site for it", caddyhttp.RouteList{route(host("app.example.com"))}, []string{"admin.example.com", "::1", "a.b.example.com"}},
		{"its own site", caddyhttp.RouteList{route(host("app.example.com")), route(host("admin.example.com", "::1"))}, []string{"a.b.example.com"}},
		{"a wildcard", caddyhttp.RouteList{route(host("*.example.com", "*.b.example.com", "::1"))}, nil},
		{"a site for every host", caddyhttp.RouteList{route(host("app.example.com")), route()}, nil},
		{"a placeholder", caddyhttp.RouteList{route(host("{env.SITE}"))}, nil},
		{"with a path matcher beside", caddyhttp.RouteList{route(append(host("admin.example.com"), caddyhttp.MatchPath{"/x"}))}, []string{"app.example.com", "::1", "a.b.example.com"}},
		{"a second matcher set", caddyhttp.RouteList{route(host("x.example.org"), host("app.example.com"))}, []string{"admin.example.com", "::1", "a.b.example.com"}},
	} {
		servers := map[string]*caddyhttp.Server{"srv0": {Routes: c.routes}}
		if got := unservedHosts(servers, hosts); !slices.Equal(got, c.want) {
			t.Errorf("%s: unserved %q; want %q", c.name, got, c.want)
		}
	}
}
