package caddymodule

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
)

// A webhook URL may carry credentials (userinfo, a token in the query);
// config errors name the webhook without them.
func TestAuditConfigErrorsRedactWebhookURL(t *testing.T) {
	const url = "https://hooks:s3cr3tpass@hooks.example.com/in?token=t0ken"
	tests := []struct {
		name string
		hook AuditWebhook
		want string
	}{
		{"missing secret", AuditWebhook{URL: url, Secret: "{env.SIGRA_TEST_UNSET_HOOK_SECRET}"}, "secret {env.SIGRA_TEST_UNSET_HOOK_SECRET} is empty"},
		{"bad action pattern", AuditWebhook{URL: url, Secret: "0123456789abcdef", Actions: []string{"*.failure"}}, "pattern"},
		// A part of the secret unset, or a placeholder no environment
		// variable: not signed with what is left, nor with the text.
		{"secret unset in part", AuditWebhook{URL: url, Secret: "x{env.SIGRA_TEST_UNSET_HOOK_SECRET}yyyyyyyyyyyyyyyyyyyy"}, "has a placeholder that is not set or not known"},
		{"secret of a request placeholder", AuditWebhook{URL: url, Secret: "{http.request.host}"}, "secret {http.request.host} has a placeholder that is not set or not known"},
		{"literal secret with braces", AuditWebhook{URL: url, Secret: "s3cr3t{pass}word0"}, "secret (the configured value) has a placeholder"},
		{"literal between placeholders", AuditWebhook{URL: url, Secret: "{env.SIGRA_TEST_UNSET_HOOK_SECRET}s3cr3tpass{env.HOME}"}, "secret (the configured value) has a placeholder"},
		{"two placeholders", AuditWebhook{URL: url, Secret: "{env.SIGRA_TEST_UNSET_HOOK_SECRET}{env.SIGRA_TEST_UNSET_HOOK_SECRET2}"}, "secret {env.SIGRA_TEST_UNSET_HOOK_SECRET}{env.SIGRA_TEST_UNSET_HOOK_SECRET2} is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &AuditConfig{Webhooks: []*AuditWebhook{&tt.hook}}
			_, err := c.validate()
			if !isAuditConfigError(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate() = %v; want an audit config error mentioning %q", err, tt.want)
			}
			msg := err.Error()
			for _, secret := range []string{"s3cr3tpass", "t0ken", "hooks:", "{pass}"} {
				if strings.Contains(msg, secret) {
					t.Errorf("validate() = %q; leaks %q from the URL", msg, secret)
				}
			}
			if !strings.Contains(msg, "hooks.example.com/in") {
				t.Errorf("validate() = %q; want the webhook named by host and path", msg)
			}
		})
	}
}

// The checks that audit.New runs at start run when the config is
// validated (caddy validate, a JSON config through the admin API) too.
func TestAuditConfigValidateChecksWebhooksAsStartWould(t *testing.T) {
	t.Setenv("SIGRA_TEST_SHORT_HOOK_SECRET", "short")
	const secret = "0123456789abcdef"
	tests := []struct {
		name  string
		hooks []*AuditWebhook
		want  string
	}{
		{"short literal secret", []*AuditWebhook{{URL: "https://h.example.com/in", Secret: "short"}}, "secret must be at least 16 bytes"},
		{"short secret from the environment", []*AuditWebhook{{URL: "https://h.example.com/in", Secret: "{env.SIGRA_TEST_SHORT_HOOK_SECRET}"}}, "secret must be at least 16 bytes"},
		{"the same URL twice", []*AuditWebhook{{URL: "https://h.example.com/in", Secret: secret}, {URL: "https://h.example.com/in", Secret: secret, Actions: []string{"auth.*"}}}, "configured twice"},
		{"a fragment", []*AuditWebhook{{URL: "https://h.example.com/in#x", Secret: secret}}, "fragment"},
		{"no host", []*AuditWebhook{{URL: "https:///in", Secret: secret}}, "no host"},
		{"ftp", []*AuditWebhook{{URL: "ftp://h.example.com/in", Secret: secret}}, "scheme"},
		// "webhooks": [{…}, null] in a JSON config crashed caddy validate.
		{"a null entry", []*AuditWebhook{{URL: "https://h.example.com/in", Secret: secret}, nil}, "webhook 2 is null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := (&AuditConfig{Webhooks: tt.hooks}).validate()
			if !isAuditConfigError(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate() = %v; want an audit config error mentioning %q", err, tt.want)
			}
		})
	}
	ok := &AuditConfig{Webhooks: []*AuditWebhook{{URL: "https://h.example.com/a", Secret: secret}, {URL: "https://h.example.com/b", Secret: secret}}}
	if _, err := ok.validate(); err != nil {
		t.Fatalf("two good webhooks: validate() = %v", err)
	}
}

// isAuditConfigError reports whether err reads as one audit config error,
// named once: "audit: …", never "audit: audit: …".
func isAuditConfigError(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "audit: ") && !strings.Contains(err.Error(), "audit: audit")
}

// A client that hangs up as soon as its request is sent ends the
// request's context, yet the change is made (the store does not stop
// for it): its row must be written too. An admin promoting users and
// hanging up at once used to leave about half the grants without a row.
func TestRowWrittenWhenClientHangsUp(t *testing.T) {
	e, _ := startAsAdmin(t)
	csrf, cookie := e.adminCSRF(), e.sessionCookie()
	host := strings.TrimPrefix(e.base, "http://")
	ctx := context.Background()
	for i := range 5 {
		u := e.addUser(fmt.Sprintf("promoted%d@example.com", i))
		body := `{"groups":["admins"]}`
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /.sigra/api/admin/users/%s/groups HTTP/1.1\r\nHost: %s\r\nOrigin: %s\r\nAccept: application/json\r\n"+
			"Content-Type: application/json\r\nX-CSRF-Token: %s\r\nCookie: sigra_session=%s\r\nContent-Length: %d\r\n\r\n%s",
			url.PathEscape(u.ID), host, e.base, csrf, cookie, len(body), body)
		c.Close() // gone before the answer
		rows := func() int {
			page, err := e.rt().audit.Timeline(ctx, audit.Query{SubjectID: u.ID, Action: "admin.user.groups"})
			if err != nil {
				t.Fatal(err)
			}
			return len(page.Rows)
		}
		// The handler goes on after the hang-up; wait for the change,
		// then give its row as long again.
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := e.rt().store.UserByID(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(got.Groups, "admins") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("user %d was never promoted", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for rows() == 0 && time.Now().Before(deadline.Add(5*time.Second)) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := rows(); n != 1 {
			t.Fatalf("user %d was promoted by a client that hung up; admin.user.groups rows %d, want 1", i, n)
		}
	}
	// The same below the handlers: a row recorded under an ended context
	// is written, and its writer told so.
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := e.rt().record(ended, audit.Row{Action: "session.revoked", ActorType: audit.ActorSystem, SubjectID: "x", Outcome: "success"}); err != nil {
		t.Errorf("record under an ended context: %v; want nil", err)
	}
	if page, err := e.rt().audit.Timeline(ctx, audit.Query{SubjectID: "x", Action: "session.revoked"}); err != nil || len(page.Rows) != 1 {
		t.Errorf("rows recorded under an ended context: %d (%v); want 1", len(page.Rows), err)
	}
}
