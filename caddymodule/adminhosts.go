package caddymodule

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// warnUnservedAdminHosts warns, at start, about every admin_hosts name
// that no site of Caddy's http app answers: the admin pages and API are
// only there, so with a typo, or without that site, they are nowhere,
// and `caddy validate` cannot tell (the sites are the http app's).
func (a *App) warnUnservedAdminHosts() {
	if len(a.AdminHosts) == 0 || a.caddyCtx.Context == nil {
		return
	}
	v, err := a.caddyCtx.AppIfConfigured("http")
	if err != nil {
		return
	}
	h, ok := v.(*caddyhttp.App)
	if !ok {
		return
	}
	for _, host := range unservedHosts(h.Servers, a.AdminHosts) {
		a.logger.Warn("admin_hosts names a host no site serves, so the admin pages and API are on no site: add a site for it with sigra_portal, or correct the name",
			zap.String("host", host))
	}
}

// unservedHosts returns those of hosts that no top-level route of the
// servers can match by host: every route has a host matcher, and none
// takes the host. A route without one (a site for every host, such as
// :8080), or with a placeholder in one, is taken to serve them all.
func unservedHosts(servers map[string]*caddyhttp.Server, hosts []string) []string {
	var out []string
	for _, host := range hosts {
		r, _ := http.NewRequestWithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer()),
			http.MethodGet, "/", nil)
		r.Host = net.JoinHostPort(host, "443")
		if !servesHost(servers, r) {
			out = append(out, host)
		}
	}
	return out
}

func servesHost(servers map[string]*caddyhttp.Server, r *http.Request) bool {
	for _, srv := range servers {
		for _, rt := range srv.Routes {
			if len(rt.MatcherSets) == 0 {
				return true
			}
			for _, set := range rt.MatcherSets {
				if setTakesHost(set, r) {
					return true
				}
			}
		}
	}
	return false
}

// setTakesHost reports whether a matcher set's host matchers (if any)
// take r's host; its other matchers are not asked.
func setTakesHost(set caddyhttp.MatcherSet, r *http.Request) bool {
	for _, m := range set {
		var hm caddyhttp.MatchHost
		switch m := m.(type) {
		case caddyhttp.MatchHost:
			hm = m
		case *caddyhttp.MatchHost:
			hm = *m
		default:
			continue
		}
		for _, h := range hm {
			if strings.Contains(h, "{") {
				return true
			}
		}
		if ok, err := hm.MatchWithError(r); !ok || err != nil {
			return false
		}
	}
	return true
}
