package caddymodule

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sigra-auth/caddy-sigra/audit"
)

// Every answer of the admin API is JSON: a failure inside is a
// problem+json 500 that names no internals, and a known endpoint called
// with the wrong method is a 405 with Allow.
func TestAdminAPIErrorsAreProblems(t *testing.T) {
	e, target := startAsAdmin(t)
	hdr := map[string]string{"Accept": "application/json", "Origin": e.base, "X-CSRF-Token": e.adminCSRF()}
	problem := func(r *http.Response) (reason, detail string) {
		t.Helper()
		defer r.Body.Close()
		if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("Content-Type %q; want application/problem+json", ct)
		}
		var p struct {
			Status int    `json:"status"`
			Reason string `json:"reason"`
			Detail string `json:"detail"`
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &p); err != nil || p.Status != r.StatusCode {
			t.Errorf("body %q is not a problem for status %d", b, r.StatusCode)
		}
		return p.Reason, p.Detail
	}

	fail := func(row audit.Row) error {
		if row.Action == "admin.user.disable" {
			return errors.New("bbolt: disk on fire at /var/lib/secret/path")
		}
		return nil
	}
	e.rt().failRecord.Store(&fail)
	r := e.do(http.MethodPost, "/.sigra/api/admin/users/"+target.ID+"/disable", hdr, nil)
	if r.StatusCode != http.StatusInternalServerError {
		t.Errorf("disable with a failing audit row: status %d; want 500", r.StatusCode)
	}
	if reason, detail := problem(r); reason != "internal_server_error" || strings.Contains(detail, "secret") {
		t.Errorf("500 reason %q detail %q; want internal_server_error and no internals", reason, detail)
	}
	e.rt().failRecord.Store(nil)

	for _, c := range []struct{ method, path, allow string }{
		{http.MethodPost, "/users", "GET, HEAD"},
		{http.MethodDelete, "/users/" + target.ID, "GET, HEAD"},
		{http.MethodPut, "/users/" + target.ID + "/disable", "POST"},
		{http.MethodGet, "/sessions/x/revoke", "POST"},
	} {
		r := e.do(c.method, "/.sigra/api/admin"+c.path, hdr, nil)
		if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: status %d, Allow %q; want 405 and %q", c.method, c.path, r.StatusCode, r.Header.Get("Allow"), c.allow)
		}
		if reason, _ := problem(r); reason != "method_not_allowed" {
			t.Errorf("%s %s: reason %q; want method_not_allowed", c.method, c.path, reason)
		}
	}
	// The method is checked before the CSRF token: a request without one
	// learns only what the endpoint takes.
	noCSRF := map[string]string{"Accept": "application/json"}
	for _, m := range []string{http.MethodOptions, http.MethodPut} {
		r := e.do(m, "/.sigra/api/admin/users", noCSRF, nil)
		if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /users without a CSRF token: status %d, Allow %q; want 405 and GET, HEAD", m, r.StatusCode, r.Header.Get("Allow"))
		}
		problem(r)
	}
	r = e.do(http.MethodPost, "/.sigra/api/admin/users/"+target.ID+"/disable", noCSRF, nil)
	if reason, _ := problem(r); r.StatusCode != http.StatusForbidden || reason != "csrf" {
		t.Errorf("POST disable without a CSRF token: status %d reason %q; want 403 csrf", r.StatusCode, reason)
	}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		r = e.do(m, "/.sigra/api/admin/nothing/here", hdr, nil)
		if reason, _ := problem(r); r.StatusCode != http.StatusNotFound || reason != "not_found" {
			t.Errorf("%s unknown endpoint: status %d reason %q; want 404 not_found", m, r.StatusCode, reason)
		}
	}
	// A query parameter given twice is refused, as a form field given
	// twice is: which of the two was meant is not for the API to guess.
	for _, path := range []string{"/audit?limit=1&limit=2", "/users?q=a&q=b", "/audit/webhooks/dead?cursor=&cursor="} {
		r = e.do(http.MethodGet, "/.sigra/api/admin"+path, hdr, nil)
		if reason, detail := problem(r); r.StatusCode != http.StatusBadRequest || reason != "bad_query" || !strings.Contains(detail, "more than once") {
			t.Errorf("GET %s: status %d reason %q detail %q; want 400 bad_query saying which", path, r.StatusCode, reason, detail)
		}
	}
	if r, page := htmlGet(e, "/.sigra/admin/audit?action=auth.*&action=mfa.*"); r.StatusCode != http.StatusBadRequest || !strings.Contains(page, "more than once") {
		t.Errorf("the audit page with action twice: status %d; want 400 saying so", r.StatusCode)
	}
	// The sessions of a user who does not exist are 404, like the user.
	for _, path := range []string{"/users/zzz", "/users/zzz/sessions", "/users/00000000-0000-7000-8000-000000000000/sessions"} {
		r = e.do(http.MethodGet, "/.sigra/api/admin"+path, hdr, nil)
		if reason, _ := problem(r); r.StatusCode != http.StatusNotFound || reason != "not_found" {
			t.Errorf("GET %s: status %d reason %q; want 404 not_found", path, r.StatusCode, reason)
		}
	}
}

// users/<id> takes an email too, on GET as the POSTs do: a script can
// read the user it is about to change by the address it has.
func TestAdminAPIGetsAUserByEmail(t *testing.T) {
	e, _, target := startAdminUI(t)
	for _, path := range []string{"/users/" + target.Email, "/users/" + strings.ToUpper(target.Email) + "/sessions"} {
		if code, body := e.adminCall(http.MethodGet, path, nil); code != http.StatusOK || (!strings.Contains(body, target.ID) && !strings.Contains(body, `"sessions"`)) {
			t.Errorf("GET %s: status %d; want 200 with the user\n%s", path, code, body)
		}
	}
	if code, body := e.adminCall(http.MethodGet, "/users/"+target.Email, nil); !strings.Contains(body, `"id":"`+target.ID+`"`) {
		t.Errorf("GET by email: status %d, not the user %s\n%s", code, target.ID, body)
	}
	if _, page := htmlGet(e, "/.sigra/admin/users/"+target.Email); !strings.Contains(page, target.ID) {
		t.Errorf("the user's page by email does not show the user:\n%s", page)
	}
	if code, _ := e.adminCall(http.MethodGet, "/users/nobody@example.com", nil); code != http.StatusNotFound {
		t.Errorf("GET an unknown email: status %d; want 404", code)
	}
}
