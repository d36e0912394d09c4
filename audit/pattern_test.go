package audit

import (
	"errors"
	"testing"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
	}{
		{"", false},
		{"*", false},
		{"auth.*", false},
		{"auth.password_reset.*", false},
		{"auth.login.success", false},
		{"billing.subscription.updated", false},
		{"auth", true},      // one segment: not an action name
		{"auth*", true},     // wildcard only after a dot
		{"*.success", true}, // wildcard only at the end
		{"auth.*.success", true},
		{"auth.**", true},
		{".*", true},
		{"Auth.*", true},
		{"auth. login", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParsePattern(tt.in)
			if tt.wantErr != (err != nil) {
				t.Fatalf("ParsePattern(%q) = %v; want error %v", tt.in, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadPattern) {
				t.Fatalf("ParsePattern(%q) = %v; want ErrBadPattern", tt.in, err)
			}
		})
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern Pattern
		action  string
		want    bool
	}{
		{"*", "auth.login.success", true},
		{"", "mfa.totp.enrolled", true},
		{"auth.*", "auth.login.success", true},
		{"auth.*", "auth.logout", true},
		{"auth.*", "authz.denied", false}, // prefix stops at the dot
		{"auth.*", "mfa.challenge.success", false},
		{"mfa.challenge.*", "mfa.challenge.failure", true},
		{"mfa.challenge.*", "mfa.totp.enrolled", false},
		{"auth.logout", "auth.logout", true},
		{"auth.logout", "auth.logout.all", false},
		{"auth.login", "auth.login.success", false},
	}
	for _, tt := range tests {
		if got := tt.pattern.Match(tt.action); got != tt.want {
			t.Errorf("Pattern(%q).Match(%q) = %v; want %v", tt.pattern, tt.action, got, tt.want)
		}
	}
}
