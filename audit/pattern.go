package audit

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadPattern means an action pattern is malformed. The admin API answers
// it with 400.
var ErrBadPattern = errors.New("audit: bad action pattern")

// Pattern selects actions by name:
//
//	""  or "*"          every action
//	"auth.logout"       exactly that action
//	"auth.*"            every action under auth. ("auth.login.success",
//	                    "auth.logout"), but not "auth" itself
//	"auth.password_reset.*"  a deeper prefix works the same way
//
// The wildcard may only end a pattern, after a dot: that is what an index
// on action names can answer.
type Pattern string

// ParsePattern validates s as a Pattern.
func ParsePattern(s string) (Pattern, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return Pattern(s), nil
	}
	name, wild := strings.CutSuffix(s, ".*")
	if wild {
		// "auth.*" has a one-segment stem; validAction wants two, so check
		// the stem with a dummy last segment.
		if err := validAction(name + ".x"); err != nil || strings.Contains(name, "*") {
			return "", fmt.Errorf("%w: %q", ErrBadPattern, s)
		}
		return Pattern(s), nil
	}
	if err := validAction(s); err != nil {
		return "", fmt.Errorf("%w: %q (%v)", ErrBadPattern, s, err)
	}
	return Pattern(s), nil
}

// ParsePatterns validates each of ss, and returns them.
func ParsePatterns(ss []string) ([]Pattern, error) {
	ps := make([]Pattern, 0, len(ss))
	for _, s := range ss {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// Match reports whether action is selected by p.
func (p Pattern) Match(action string) bool {
	prefix, wild := p.Prefix()
	if wild {
		return strings.HasPrefix(action, prefix)
	}
	return action == prefix
}

// Prefix tells a store how to look p up: with wild false, the action must
// equal prefix; with wild true, it must start with prefix ("" for all,
// "auth." for "auth.*").
func (p Pattern) Prefix() (prefix string, wild bool) {
	switch {
	case p == "" || p == "*":
		return "", true
	case strings.HasSuffix(string(p), ".*"):
		return string(p[:len(p)-1]), true
	default:
		return string(p), false
	}
}

// All reports whether p selects every action.
func (p Pattern) All() bool { return p == "" || p == "*" }

func matchAny(ps []Pattern, action string) bool {
	for _, p := range ps {
		if p.Match(action) {
			return true
		}
	}
	return false
}

// Actions are the audit actions a webhook may subscribe to: those this
// build writes, and those DESIGN names for capabilities to come (so that
// a subscription can be made ahead of them). Besides these, the families
// in ActionFamilies are open: billing events keep their type verbatim,
// and admin.user.<verb> grows with the admin's verbs.
var Actions = []string{
	// written by this build
	"auth.login.success", "auth.login.pending", "auth.login.failure", "auth.logout", "auth.lockout",
	"auth.password_change.success", "auth.password_change.failure",
	"mfa.totp.enrolled", "mfa.totp.removed", "mfa.challenge.success", "mfa.challenge.failure",
	"mfa.recovery_code.used", "mfa.recovery_code.regenerated",
	"session.revoked", "session.revoked_others", "account.deletion_execute", "authz.denied",
	"admin.keys.rotate", "admin.address.unlock", "admin.webhook.replay", "admin.store.backup",
	// named by DESIGN for capabilities to come
	"auth.registration", "auth.email_verified", "auth.password_reset.requested", "auth.password_reset.success",
	"auth.magic_link.sent", "auth.magic_link.consumed", "auth.oidc.login", "auth.saml.login", "auth.account.linked",
	"passkey.registered", "passkey.removed", "passkey.clone_detected",
	"billing.admin.cancel", "billing.admin.pause", "billing.admin.resume", "billing.admin.replay",
	"oidc.authorize", "oidc.consent.granted",
	"oidc.token.issued", "oidc.token.refreshed", "oidc.token.revoked", "oidc.token.reuse_detected",
}

// ActionFamilies are the prefixes of open-ended action families.
var ActionFamilies = []string{"billing.", "admin.user."}

// Known reports whether p selects at least one action of Actions or of
// an open family: a pattern that selects none is a typo (auth.logn.*,
// auth.login), and a webhook with it would quietly never fire.
func (p Pattern) Known() bool {
	prefix, wild := p.Prefix()
	if wild && prefix == "" {
		return true
	}
	for _, a := range Actions {
		if p.Match(a) {
			return true
		}
	}
	for _, f := range ActionFamilies {
		if strings.HasPrefix(prefix, f) || wild && strings.HasPrefix(f, prefix) {
			return true
		}
	}
	return false
}

// CheckKnown refuses the first of ps that selects no action (Known).
func CheckKnown(ps []Pattern) error {
	for _, p := range ps {
		if !p.Known() {
			return fmt.Errorf("%w: %q selects no audit action, so a webhook would never fire for it "+
				"(a whole name such as auth.login.success, or a family such as auth.*; the README lists the actions)", ErrBadPattern, string(p))
		}
	}
	return nil
}
