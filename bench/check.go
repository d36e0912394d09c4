package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The checks run once before anything is measured. They make sure every
// site does what its name says, so that the numbers are about the gate
// doing its job: A passes everything, B injects the seeded user's identity
// (and drops a forged one), refuses a request without a session, and C
// also enforces its requirements.

// httpGet sends a GET with an optional session cookie and extra headers
// and returns the status and (the start of) the body.
func httpGet(ctx context.Context, client *http.Client, u, token string, hdr map[string]string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Cookie", sessionCookie+"="+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), nil
}

// checkSite verifies one site before it is measured. token is the session
// the load will use; for gated sites seed tells what to expect.
func checkSite(ctx context.Context, s siteConf, token string, seed *seeded) error {
	client := &http.Client{Timeout: 10 * time.Second}
	base := fmt.Sprintf("http://127.0.0.1:%d", s.Port)
	expect := func(what string, wantOK bool, code int, body string, err error) error {
		if err != nil {
			return fmt.Errorf("site %s, %s: %w", s.Name, what, err)
		}
		if (code == http.StatusOK) != wantOK {
			want := "200"
			if !wantOK {
				want = "a refusal"
			}
			return fmt.Errorf("site %s, %s: got HTTP %d, want %s: %.300q", s.Name, what, code, want, body)
		}
		return nil
	}

	code, body, err := httpGet(ctx, client, base+"/", token, nil)
	if err := expect("GET / with the session", true, code, body, err); err != nil {
		return err
	}
	forged := map[string]string{"X-Sigra-User": "forged-by-client"}
	code, body, err = httpGet(ctx, client, base+whoamiPath, token, forged)
	if err := expect("GET "+whoamiPath, true, code, body, err); err != nil {
		return err
	}
	if len(s.HeaderUp) > 0 {
		if body != siteHUser {
			return fmt.Errorf("site %s: the upstream saw X-Sigra-User %q, want the header_up value %s", s.Name, body, siteHUser)
		}
		return nil
	}
	if !s.Gate {
		if body != "forged-by-client" {
			return fmt.Errorf("site %s has no gate, yet the upstream saw X-Sigra-User %q", s.Name, body)
		}
		return nil
	}
	if body != seed.UserID {
		return fmt.Errorf("site %s: the upstream saw X-Sigra-User %q, want the seeded user %s", s.Name, body, seed.UserID)
	}
	code, body, err = httpGet(ctx, client, base+"/", "", nil)
	if err := expect("GET / without a session", false, code, body, err); err != nil {
		return err
	}
	if code != http.StatusUnauthorized {
		return fmt.Errorf("site %s, GET / without a session as a JSON client: got HTTP %d, want 401", s.Name, code)
	}
	// Each requirement of the site refuses the sessions that lack it, so
	// that C is measured deciding them, not passing a gate that ignores
	// them; B takes every one of these sessions. A session is refused
	// when any line of -require refuses it: mfa without a second factor,
	// an amr line naming none of its methods, a group line none of its
	// user's groups.
	refused := func(amr []string, groups []string) bool {
		return slices.ContainsFunc(s.Require, func(r string) bool {
			f := strings.Fields(r)
			names := func(has []string) bool {
				return slices.ContainsFunc(f[1:], func(v string) bool { return slices.Contains(has, v) })
			}
			switch f[0] {
			case "mfa":
				return !slices.Contains(amr, "mfa")
			case "amr":
				return !names(amr)
			case "group":
				return !names(groups)
			}
			return false
		})
	}
	for _, c := range []struct {
		what, token string
		refused     bool
	}{
		{"a password-only session", seed.PwdOnly, refused(seedPwdOnlyAMR, seedGroups)},
		{"a session whose second factor was an emailed code", seed.NoAppFactor, refused(seedNoAppFactorAMR, seedGroups)},
		{"a session of a user outside the group", seed.Outsider, refused(seedAMR, seedOutsiderGroups)},
	} {
		if c.token == "" {
			continue
		}
		code, body, err = httpGet(ctx, client, base+"/", c.token, nil)
		if err := expect("GET / with "+c.what, !c.refused, code, body, err); err != nil {
			return err
		}
	}
	return nil
}

var (
	csrfInput = regexp.MustCompile(`<input[^>]*\bname="csrf_token"[^>]*>`)
	valueAttr = regexp.MustCompile(`\bvalue="([^"]*)"`)
)

// checkLogin signs in through the portal's password form, as a browser
// would, and checks that the new session reaches the upstream. It is a
// side check: seeding is how the benchmark gets its sessions.
func checkLogin(ctx context.Context, port int, seed *seeded) error {
	jar, _ := cookiejar.New(nil)
	client := &http.Client{
		Timeout: 10 * time.Second,
		Jar:     jar,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/.sigra/login", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	page, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /.sigra/login: HTTP %d", resp.StatusCode)
	}
	tag := csrfInput.Find(page)
	m := valueAttr.FindSubmatch(tag)
	if m == nil {
		return errors.New("GET /.sigra/login: no hidden input named csrf_token")
	}
	form := url.Values{
		"email":      {seed.Email},
		"password":   {seed.Password},
		"csrf_token": {html.UnescapeString(string(m[1]))},
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"/.sigra/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return fmt.Errorf("POST /.sigra/login: HTTP %d, want 303", resp.StatusCode)
	}
	var token string
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			token = c.Value
		}
	}
	if token == "" {
		return fmt.Errorf("POST /.sigra/login: no %s cookie set", sessionCookie)
	}
	code, body, err := httpGet(ctx, &http.Client{Timeout: 10 * time.Second}, base+whoamiPath, token, nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK || body != seed.UserID {
		return fmt.Errorf("after signing in: HTTP %d, upstream saw X-Sigra-User %q, want 200 and %s", code, body, seed.UserID)
	}
	return nil
}
