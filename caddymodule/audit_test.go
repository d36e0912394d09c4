package caddymodule

import (
	"strings"
	"testing"
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &AuditConfig{Webhooks: []*AuditWebhook{&tt.hook}}
			err := c.validate()
			if !isAuditConfigError(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate() = %v; want an audit config error mentioning %q", err, tt.want)
			}
			msg := err.Error()
			for _, secret := range []string{"s3cr3tpass", "t0ken", "hooks:"} {
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&AuditConfig{Webhooks: tt.hooks}).validate()
			if !isAuditConfigError(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate() = %v; want an audit config error mentioning %q", err, tt.want)
			}
		})
	}
	ok := &AuditConfig{Webhooks: []*AuditWebhook{{URL: "https://h.example.com/a", Secret: secret}, {URL: "https://h.example.com/b", Secret: secret}}}
	if err := ok.validate(); err != nil {
		t.Fatalf("two good webhooks: validate() = %v", err)
	}
}

// isAuditConfigError reports whether err reads as one audit config error,
// named once: "audit: …", never "audit: audit: …".
func isAuditConfigError(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "audit: ") && !strings.Contains(err.Error(), "audit: audit")
}
