package caddymodule

import (
	"errors"
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
		{"missing secret", AuditWebhook{URL: url, Secret: "{env.SIGRA_TEST_UNSET_HOOK_SECRET}"}, "a secret is required"},
		{"bad action pattern", AuditWebhook{URL: url, Secret: "0123456789abcdef", Actions: []string{"*.failure"}}, "pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &AuditConfig{Webhooks: []*AuditWebhook{&tt.hook}}
			err := c.validate()
			if !errors.Is(err, errAuditConfig) || !strings.Contains(err.Error(), tt.want) {
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
