package caddymodule

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sigra-auth/caddy-sigra/audit"
)

// wantParseError checks a parse result against the expected error
// fragment ("" for none) and that an error names the file and line. It
// reports whether an error was expected (the case is then done).
func wantParseError(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v; want one containing %q", err, want)
	}
	if !strings.Contains(err.Error(), "Testfile:") {
		t.Errorf("error %q does not name the file and line", err)
	}
	return true
}

func TestParseGate(t *testing.T) {
	cases := []struct {
		name    string
		input   string
		want    Gate
		wantErr string
	}{
		{"bare", "sigra_gate", Gate{}, ""},
		{"optional", "sigra_gate {\n optional\n}", Gate{Optional: true}, ""},
		{"mfa", "sigra_gate {\n mfa\n}", Gate{MFA: &MFARequirement{}}, ""},
		{"mfa max_age", "sigra_gate {\n mfa max_age 15m\n}", Gate{MFA: &MFARequirement{MaxAge: caddy.Duration(15 * time.Minute)}}, ""},
		{"amr and group", "sigra_gate {\n amr otp hwk swk\n group admins ops\n}", Gate{AMR: []string{"otp", "hwk", "swk"}, Groups: []string{"admins", "ops"}}, ""},
		// Passkeys, federation and email links are not in this build: a
		// gate asking only for them would refuse everyone.
		{"amr none in this build", "sigra_gate {\n amr hwk swk\n}", Gate{}, "amr: hwk, swk not available in this build yet"},
		{"unknown requirement", "sigra_gate {\n nope\n}", Gate{}, `unknown requirement "nope" (known: optional, mfa, amr, group, assertion, preflight)`},
		{"groups for group", "sigra_gate {\n groups admins\n}", Gate{}, `unknown requirement "groups" (known: optional, mfa, amr, group, assertion, preflight); did you mean group?`},
		{"later requirement", "sigra_gate {\n rule `true`\n}", Gate{}, `"rule" is not available in this build yet`},
		{"unknown amr", "sigra_gate {\n amr fingerprint\n}", Gate{}, `unknown method "fingerprint"`},
		{"mfa bad option", "sigra_gate {\n mfa max_agee 1s\n}", Gate{}, `unknown option "max_agee"`},
		{"mfa bad duration", "sigra_gate {\n mfa max_age soon\n}", Gate{}, `invalid duration`},
		{"mfa max_age too short", "sigra_gate {\n mfa max_age 1s\n}", Gate{}, `mfa: max_age 1s is under 1m: users would be sent to their second factor on every request, at Testfile:2`},
		{"mfa with a bare duration", "sigra_gate {\n mfa 15m\n}", Gate{}, `mfa: unknown option "15m": write mfa max_age 15m`},
		{"group without names", "sigra_gate {\n group\n}", Gate{}, "group: missing value: group <name…>"},
		{"amr without methods", "sigra_gate {\n amr\n}", Gate{}, "amr: missing value: amr <method…>"},
		{"inline argument", "sigra_gate optional", Gate{}, "requirements go in a block"},
		{"a path without its slash", "sigra_gate admin/*", Gate{}, `unexpected argument "admin/*": a path matcher starts with /: write /admin/*`},
		{"optional with requirements", "sigra_gate {\n optional\n mfa\n}", Gate{}, "optional cannot be combined with other requirements (optional is on line 2)"},
		{"assertion off", "sigra_gate {\n assertion off\n}", Gate{OmitAssertion: true}, ""},
		{"assertion on", "sigra_gate {\n assertion on\n}", Gate{}, ""},
		{"optional without assertion", "sigra_gate {\n optional\n assertion off\n}", Gate{Optional: true, OmitAssertion: true}, ""},
		{"assertion bad value", "sigra_gate {\n assertion maybe\n}", Gate{}, `want on or off, not "maybe"`},
		{"assertion without value", "sigra_gate {\n assertion\n}", Gate{}, "assertion: missing value"},
		{"assertion extra value", "sigra_gate {\n assertion off now\n}", Gate{}, `assertion takes one value; "now" is one too many`},
		{"preflight allow", "sigra_gate {\n group admins\n preflight allow\n}", Gate{Groups: []string{"admins"}, AllowPreflight: true}, ""},
		{"preflight refuse", "sigra_gate {\n preflight refuse\n}", Gate{}, ""},
		{"preflight bad value", "sigra_gate {\n preflight yes\n}", Gate{}, `preflight: want allow or refuse, not "yes"`},
		{"preflight without value", "sigra_gate {\n preflight\n}", Gate{}, "preflight: missing value"},
		{"preflight twice", "sigra_gate {\n preflight allow\n preflight refuse\n}", Gate{}, "preflight is already given on line 2"},
		// A second line would widen the first: a bare mfa after max_age, or
		// more groups that any one of passes.
		{"mfa twice", "sigra_gate {\n mfa max_age 5m\n mfa\n}", Gate{}, "mfa is already given on line 2"},
		{"group twice", "sigra_gate {\n group admins\n group finance\n}", Gate{}, "group is already given on line 2"},
		{"amr twice", "sigra_gate {\n amr otp\n amr pwd\n}", Gate{}, "amr is already given on line 2"},
		// A group no user can be in would refuse everyone, quietly.
		{"group with a comma", "sigra_gate {\n group \"a,b\"\n}", Gate{}, `group: invalid input: group name "a,b"`},
		{"empty group", "sigra_gate {\n group admins \"\"\n}", Gate{}, `group: invalid input: group name ""`},
		{"requirement with a block", "sigra_gate {\n group admins {\n }\n}", Gate{}, `unexpected "{": the option on this line takes no block`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(tc.input)}
			got, err := parseGate(h, nil)
			if wantParseError(t, err, tc.wantErr) {
				return
			}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(&tc.want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("got %s; want %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestParseGlobal(t *testing.T) {
	cases := []struct {
		name    string
		input   string
		check   func(t *testing.T, a *App)
		wantErr string
	}{
		{"empty", "sigra", func(t *testing.T, a *App) {}, ""},
		{"full", `sigra {
			storage bbolt /var/lib/sigra/sigra.db
			session {
				idle 20m
				lifetime 8h
				pending_lifetime 5m
			}
			keys {
				algorithm ES256
				signing_key /etc/sigra/key.pem
				encryption_key {env.KEY}
				assertion_ttl 2m
			}
			prefix /auth
			admin_group ops
			allowed_redirect_hosts docs.example.com wiki.example.com
			header_aliases remote
			assertion_audience https://api.example.com
			bootstrap_admin off
			regulation {
				max_retries 3
				max_retries_per_ip 30
				find_time 5m
				ban_time 1h
				max_totp_failures 20
			}
			audit {
				retention 400d
				webhook https://hooks.example.com/x {
					secret {env.HOOK}
					actions auth.* mfa.challenge.failure
				}
			}
		}`, func(t *testing.T, a *App) {
			if a.Storage.Path != "/var/lib/sigra/sigra.db" || time.Duration(a.Session.Idle) != 20*time.Minute ||
				time.Duration(a.Session.Lifetime) != 8*time.Hour || time.Duration(a.Session.PendingLifetime) != 5*time.Minute ||
				a.Keys.Algorithm != "ES256" || time.Duration(a.Keys.AssertionTTL) != 2*time.Minute ||
				a.Prefix != "/auth" || a.AdminGroup != "ops" || len(a.AllowedRedirectHosts) != 2 ||
				a.HeaderAliases[0] != "remote" || a.BootstrapAdmin != "off" ||
				a.Regulation.MaxRetries != 3 || a.Regulation.MaxRetriesPerIP != 30 || time.Duration(a.Regulation.BanTime) != time.Hour || a.Regulation.MaxTOTPFailures != 20 ||
				time.Duration(a.Audit.Retention) != 400*24*time.Hour || a.Audit.Webhooks[0].Secret != "{env.HOOK}" || len(a.Audit.Webhooks[0].Actions) != 2 {
				b, _ := json.Marshal(a)
				t.Errorf("parsed %s", b)
			}
		}, ""},
		{"unknown option", "sigra {\n bogus 1\n}", nil, `unknown option "bogus" (known: storage, session, keys,`},
		{"path_params bad value", "sigra {\n path_params maybe\n}", nil, "want allow or refuse"},
		{"path_params allow", "sigra {\n path_params allow\n}", func(t *testing.T, a *App) {
			if a.PathParams != "allow" {
				t.Errorf("PathParams %q; want allow", a.PathParams)
			}
		}, ""},
		{"max_totp_failures zero", "sigra {\n regulation {\n max_totp_failures 0\n }\n}", nil, "whole number from 1 to 1000000"},
		{"later option", "sigra {\n oidc google {\n }\n}", nil, `"oidc" is not available in this build yet`},
		{"unknown backend", "sigra {\n storage redis\n}", nil, `unknown backend "redis"`},
		{"storage under ~", "sigra {\n storage bbolt ~/sigra.db\n}", nil, "storage: ~/sigra.db starts with ~, which Caddy does not expand"},
		{"bad algorithm", "sigra {\n keys {\n algorithm RS512\n }\n}", nil, `algorithm "RS512"`},
		{"bad session option", "sigra {\n session {\n idel 1m\n }\n}", nil, `unknown option "idel"`},
		{"bad duration", "sigra {\n session {\n idle forever\n }\n}", nil, `idle: invalid duration "forever" (write it as 30s, 15m, 12h or 7d)`},
		{"zero duration", "sigra {\n session {\n idle 0s\n }\n}", nil, `idle: "0s" must be longer than zero`},
		{"audience with a space", "sigra {\n assertion_audience \"https://a b\"\n}", nil, `assertion_audience: "https://a b" must be one value without spaces, such as https://app.example.com, at Testfile:2`},
		{"zero retries", "sigra {\n regulation {\n max_retries 0\n }\n}", nil, "whole number from 1 to 1000000"},
		// Durations that parse, and would undo what their option is for.
		{"find_time too short", "sigra {\n regulation {\n find_time 1ns\n }\n}", nil, "regulation: find_time 1ns is under 1m: failures older than it are forgotten, so nobody is ever banned, at Testfile:3"},
		{"ban_time too short", "sigra {\n regulation {\n ban_time 59s\n }\n}", nil, "regulation: ban_time 59s is under 1m"},
		{"idle too short", "sigra {\n session {\n idle 30s\n }\n}", nil, "session: idle 30s is under 1m"},
		{"pending_lifetime too short", "sigra {\n session {\n pending_lifetime 1ms\n }\n}", nil, "session: pending_lifetime 1ms is under 1m"},
		{"assertion_ttl too short", "sigra {\n keys {\n assertion_ttl 1ns\n }\n}", nil, "keys: assertion_ttl 1ns is under 30s"},
		{"admin_mfa_max_age too short", "sigra {\n admin_mfa_max_age 1ns\n}", nil, "admin_mfa_max_age 1ns is under 1m: admins would be sent to their second factor on every page, at Testfile:2"},
		{"shortest durations", "sigra {\n admin_mfa_max_age 1m\n regulation {\n find_time 1m\n ban_time 1m\n }\n session {\n idle 1m\n lifetime 1m\n pending_lifetime 1m\n }\n keys {\n assertion_ttl 30s\n }\n}", func(t *testing.T, a *App) {
			if time.Duration(a.Regulation.FindTime) != time.Minute || time.Duration(a.Keys.AssertionTTL) != 30*time.Second {
				t.Errorf("find_time %v, assertion_ttl %v; want 1m, 30s", a.Regulation.FindTime, a.Keys.AssertionTTL)
			}
		}, ""},
		{"bad prefix", "sigra {\n prefix auth/\n}", nil, "must be a path"},
		{"prefix with a query", "sigra {\n prefix /x?y\n}", nil, "must be a path"},
		{"prefix with dot segment", "sigra {\n prefix /a/../b\n}", nil, "must be a path"},
		{"nested prefix", "sigra {\n prefix /auth/portal\n}", func(t *testing.T, a *App) {
			if a.Prefix != "/auth/portal" {
				t.Errorf("prefix %q", a.Prefix)
			}
		}, ""},
		{"redirect host with port and IPv6", "sigra {\n allowed_redirect_hosts docs.example.com:8443 [::1]:9000 192.0.2.7\n}", func(t *testing.T, a *App) {
			if len(a.AllowedRedirectHosts) != 3 {
				t.Errorf("hosts %q", a.AllowedRedirectHosts)
			}
		}, ""},
		// Each host also becomes a CSP form-action source.
		{"redirect host injecting CSP", "sigra {\n allowed_redirect_hosts \"docs.example.com; script-src *\"\n}", nil, "is not a host name"},
		{"redirect host wildcard", "sigra {\n allowed_redirect_hosts *.example.com\n}", nil, "is not a host name"},
		{"redirect host URL", "sigra {\n allowed_redirect_hosts https://docs.example.com/path\n}", nil, "is not a host name"},
		{"redirect host without value", "sigra {\n allowed_redirect_hosts\n}", nil, "wrong argument count"},
		// The value as written, not lowered: {env.ADMIN_EMAIL}, not {env.admin_email}.
		{"bootstrap admin placeholder", "sigra {\n bootstrap_admin {env.ADMIN_EMAIL}\n}", nil, `"{env.ADMIN_EMAIL}" is not a valid email address, at Testfile:2`},
		{"webhook without secret", "sigra {\n audit {\n webhook https://h.example.com {\n actions *\n }\n }\n}", nil, "secret is required"},
		// A typo would keep a security webhook quiet for ever.
		{"webhook action typo", "sigra {\n audit {\n webhook https://h.example.com {\n secret {env.HOOK}\n actions auth.* auth.logn.*\n }\n }\n}", nil, `"auth.logn.*" selects no audit action, so a webhook would never fire for it (a whole name such as auth.login.success, or a family such as auth.*; the README lists the actions), at Testfile:5`},
		{"webhook action without its last part", "sigra {\n audit {\n webhook https://h.example.com {\n secret {env.HOOK}\n actions auth.login\n }\n }\n}", nil, `"auth.login" selects no audit action`},
		{"webhook actions to come and open families", "sigra {\n audit {\n webhook https://h.example.com {\n secret {env.HOOK}\n actions passkey.* billing.invoice.paid admin.user.*\n }\n }\n}", func(t *testing.T, a *App) {
			if got := a.Audit.Webhooks[0].Actions; len(got) != 3 {
				t.Errorf("actions %q; want all three", got)
			}
		}, ""},
		{"webhook bad url", "sigra {\n audit {\n webhook ftp://h.example.com {\n secret s\n }\n }\n}", nil, "scheme must be http or https, at Testfile:3"},
		// What audit.New would refuse at start is refused here, at the
		// webhook's line; a placeholder secret is checked once it is known.
		{"webhook short secret", "sigra {\n audit {\n webhook https://h.example.com {\n secret short\n }\n }\n}", nil, "secret must be at least 16 bytes, at Testfile:3"},
		{"webhook twice", "sigra {\n audit {\n webhook https://h.example.com {\n secret 0123456789abcdef\n }\n webhook https://h.example.com {\n secret {env.HOOK}\n }\n }\n}", nil, "configured twice (list every action pattern in one webhook), at Testfile:6"},
		{"webhook with a fragment", "sigra {\n audit {\n webhook https://h.example.com/in#part {\n secret {env.HOOK}\n }\n }\n}", nil, "a fragment is never sent; remove it, at Testfile:3"},
		{"webhook no host", "sigra {\n audit {\n webhook https:///in {\n secret {env.HOOK}\n }\n }\n}", nil, "no host, at Testfile:3"},
		{"webhook without secret hides credentials", "sigra {\n audit {\n webhook https://u:pw@h.example.com/in?token=t0k {\n actions *\n }\n }\n}", nil, "webhook https://xxxxx@h.example.com/in?xxxxx: secret is required"},
		{"webhook bad url hides credentials", "sigra {\n audit {\n webhook ftp://u:pw@h.example.com/?token=t0k {\n secret s\n }\n }\n}", nil, "ftp://xxxxx@h.example.com/?xxxxx"},
		{"unknown alias", "sigra {\n header_aliases nginx\n}", nil, `unknown alias family "nginx"`},
		{"admin hosts", "sigra {\n admin_hosts admin.example.com\n admin_hosts 10.0.0.5\n}", func(t *testing.T, a *App) {
			if !slices.Equal(a.AdminHosts, []string{"admin.example.com", "10.0.0.5"}) || !a.adminHost("admin.example.com:8443") || a.adminHost("app.example.com") {
				t.Errorf("admin hosts %q", a.AdminHosts)
			}
		}, ""},
		{"admin host with a port", "sigra {\n admin_hosts admin.example.com:8443\n}", nil, `admin_hosts: "admin.example.com:8443" is not a host name without a port, in lower case, such as admin.example.com, at Testfile:2`},
		{"admin host in capitals", "sigra {\n admin_hosts Admin.example.com\n}", nil, "is not a host name without a port"},
		{"admin group with a comma", "sigra {\n admin_group \"ops,admins\"\n}", nil, `admin_group: invalid input: group name "ops,admins"`},
		// An empty value would quietly mean the default: another
		// audience, another admin group, a generated key.
		{"empty admin group", "sigra {\n admin_group \"\"\n}", nil, "admin_group: empty value, at Testfile:2"},
		{"empty audience", "sigra {\n assertion_audience \"\"\n}", nil, "assertion_audience: empty value"},
		{"empty signing key", "sigra {\n keys {\n signing_key \"\"\n }\n}", nil, "signing_key: empty value, at Testfile:3"},
		// Wrong counts name the option and what it takes.
		{"duration with a unit word", "sigra {\n session {\n idle 30 minutes\n }\n}", nil, `idle takes one value; "minutes" is one too many (quote a value with spaces), at Testfile:3`},
		{"option without its value", "sigra {\n admin_group\n}", nil, "admin_group: missing value, at Testfile:2"},
		{"block option with a value", "sigra {\n session 30m\n}", nil, "session takes a block, not a value: session { … }, at Testfile:2"},
		{"regulation with a value", "sigra {\n regulation 5\n}", nil, "regulation takes a block, not a value"},
		{"storage without a value", "sigra {\n storage\n}", nil, "storage: missing value: storage bbolt <path>, at Testfile:2"},
		// Either would open the default store, empty, in place of the one
		// meant.
		{"storage without a path", "sigra {\n storage bbolt\n}", nil, "storage: missing path: storage bbolt <path> (leave the storage line out for the default, sigra/sigra.db in Caddy's data directory), at Testfile:2"},
		{"storage with an empty path", "sigra {\n storage bbolt \"\"\n}", nil, "storage: missing path"},
		{"storage with an unset variable", "sigra {\n storage bbolt {$SIGRA_TEST_UNSET}\n}", nil, "storage: missing path"},
		{"option with a block", "sigra {\n admin_group admins {\n }\n}", nil, `unexpected "{": the option on this line takes no block, at Testfile:2`},
		{"keys option with a block", "sigra {\n keys {\n algorithm EdDSA {\n }\n }\n}", nil, `unexpected "{": the option on this line takes no block, at Testfile:3`},
		// A timeout that can never end a session would be believed in:
		// refused at its line, whichever order the lines come in.
		{"idle longer than the default lifetime", "sigra {\n session {\n idle 24h\n }\n}", nil, "session: idle 24h is longer than the default lifetime 12h, which ends every session first: shorten idle, or set a longer lifetime, at Testfile:3"},
		{"pending longer than lifetime", "sigra {\n session {\n pending_lifetime 90m\n lifetime 1h\n }\n}", nil, "session: pending_lifetime 1h30m is longer than lifetime 1h, which ends every session first: shorten pending_lifetime, or set a longer lifetime, at Testfile:3"},
		{"idle up to the lifetime", "sigra {\n session {\n lifetime 48h\n idle 48h\n pending_lifetime 12h\n }\n}", func(t *testing.T, a *App) {
			if a.Session.Idle != caddy.Duration(48*time.Hour) || a.Session.PendingLifetime != caddy.Duration(12*time.Hour) {
				t.Errorf("session %+v", a.Session)
			}
		}, ""},
		// A repeated option would quietly replace the first: refused, by line.
		{"audit twice", "sigra {\n audit {\n webhook https://h.example.com {\n secret {env.HOOK}\n }\n }\n audit {\n retention 30d\n }\n}", nil, "audit is already set on line 2: write it once, at Testfile:7"},
		{"regulation twice", "sigra {\n regulation {\n max_retries 3\n }\n regulation {\n ban_time 1h\n }\n}", nil, "regulation is already set on line 2"},
		{"storage twice", "sigra {\n storage bbolt /a.db\n storage bbolt /b.db\n}", nil, "storage is already set on line 2: write it once, at Testfile:3"},
		{"max_retries twice", "sigra {\n regulation {\n max_retries 3\n max_retries 50\n }\n}", nil, "max_retries is already set on line 3: write it once, at Testfile:4"},
		{"idle twice", "sigra {\n session {\n idle 1m\n idle 9h\n }\n}", nil, "idle is already set on line 3"},
		{"algorithm twice", "sigra {\n keys {\n algorithm ES256\n algorithm EdDSA\n }\n}", nil, "algorithm is already set on line 3"},
		// From a review of config handling: values that passed and then
		// did harm or nothing.
		{"max_retries beyond any count", "sigra {\n regulation {\n max_retries 9223372036854775807\n }\n}", nil, "max_retries: want a whole number from 1 to 1000000, got \"9223372036854775807\", at Testfile:3"},
		{"retention in minutes", "sigra {\n audit {\n retention 6m\n }\n}", nil, "audit: retention 6m0s is under an hour, and audit rows older than it are deleted (m is minutes: for months write days, such as 180d), at Testfile:3"},
		{"retention of an hour", "sigra {\n audit {\n retention 1h\n }\n}", func(t *testing.T, a *App) {
			if a.Audit.Retention != caddy.Duration(time.Hour) {
				t.Errorf("retention %v", a.Audit.Retention)
			}
		}, ""},
		{"admin group from a placeholder", "sigra {\n admin_group {env.ADMINS}\n}", nil, `admin_group: group name "{env.ADMINS}" looks like a placeholder: group names are not expanded, so no user would be in it; name the group itself, at Testfile:2`},
		{"redirect host with a port out of range", "sigra {\n allowed_redirect_hosts docs.example.com:99999\n}", nil, "Testfile:2"},
		{"redirect host with port 0", "sigra {\n allowed_redirect_hosts docs.example.com:0\n}", nil, "Testfile:2"},
		{"redirect host with a hyphen at a label's end", "sigra {\n allowed_redirect_hosts -bad-.example.com\n}", nil, "Testfile:2"},
		{"redirect host with an empty label", "sigra {\n allowed_redirect_hosts docs..example.com\n}", nil, "Testfile:2"},
		{"redirect hosts that are fine", "sigra {\n allowed_redirect_hosts docs.example.com:8443 [::1]:8080 10.0.0.1 x-y.example.com\n}", func(t *testing.T, a *App) {
			if len(a.AllowedRedirectHosts) != 4 {
				t.Errorf("allowed_redirect_hosts %q", a.AllowedRedirectHosts)
			}
		}, ""},
		{"admin host IPv6", "sigra {\n admin_hosts ::1 admin.example.com\n}", func(t *testing.T, a *App) {
			if !slices.Equal(a.AdminHosts, []string{"::1", "admin.example.com"}) {
				t.Errorf("admin_hosts %q", a.AdminHosts)
			}
		}, ""},
		{"admin host IPv6 in another spelling", "sigra {\n admin_hosts 0:0::1\n}", nil, `admin_hosts: write the IPv6 address "0:0::1" as ::1, without brackets`},
		{"retention twice", "sigra {\n audit {\n retention 30d\n retention 1d\n }\n}", nil, "retention is already set on line 3"},
		{"webhook secret twice", "sigra {\n audit {\n webhook https://h.example.com {\n secret 0123456789abcdef\n secret {env.HOOK}\n }\n }\n}", nil, "secret is already set on line 4: write it once, at Testfile:5"},
		{"hosts and aliases add up", "sigra {\n allowed_redirect_hosts a.example.com\n allowed_redirect_hosts b.example.com\n audit {\n webhook https://a.example.com {\n secret {env.HOOK}\n }\n webhook https://b.example.com {\n secret {env.HOOK}\n }\n }\n}", func(t *testing.T, a *App) {
			if len(a.AllowedRedirectHosts) != 2 || len(a.Audit.Webhooks) != 2 {
				t.Errorf("hosts %q, %d webhooks; want 2 and 2", a.AllowedRedirectHosts, len(a.Audit.Webhooks))
			}
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := parseGlobal(caddyfile.NewTestDispenser(tc.input), nil)
			if wantParseError(t, err, tc.wantErr) {
				return
			}
			var a App
			if err := json.Unmarshal(v.(httpcaddyfile.App).Value, &a); err != nil {
				t.Fatal(err)
			}
			tc.check(t, &a)
		})
	}
}

// TestAdaptExample adapts Caddyfile.example and checks the handler order:
// portal first, then the gates most specific first, then the proxy.
func TestAdaptExample(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("adapting Caddyfile.example: %v", err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Routes []struct {
								Match  []map[string][]string `json:"match"`
								Handle []map[string]any      `json:"handle"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
			Sigra json.RawMessage `json:"sigra"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps.Sigra) == 0 {
		t.Error("no sigra app in the adapted config")
	}
	var order []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes[0].Handle[0].Routes {
			for _, h := range r.Handle {
				name := h["handler"].(string)
				if len(r.Match) > 0 {
					name += " " + r.Match[0]["path"][0]
				}
				order = append(order, name)
			}
		}
	}
	want := "sigra_portal|sigra_gate /public/*|sigra_gate /secure*|sigra_gate /admin*|sigra_gate|reverse_proxy"
	if got := strings.Join(order, "|"); got != want {
		t.Errorf("handler order %s; want %s", got, want)
	}
}

// adaptCaddyfile adapts a Caddyfile the way caddy adapt does.
func adaptCaddyfile(src string) error {
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Testfile"})
	return err
}

// Sibling gates decide most specific first, which Caddy can only sort
// when each has one path; otherwise the Caddyfile is refused, naming
// both lines, rather than letting the writing order decide silently.
func TestAdaptSiblingGateOrder(t *testing.T) {
	const site = "{\n\tsigra {\n\t\tstorage bbolt /tmp/never-opened.db\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n%s\n\trespond ok\n}\n"
	cases := []struct {
		name, gates, wantErr string
	}{
		{"single paths and a bare gate", "\tsigra_gate /public/* {\n\t\toptional\n\t}\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\tsigra_gate", ""},
		{"method matcher before a path", "\t@reads method GET HEAD\n\tsigra_gate @reads {\n\t\toptional\n\t}\n\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\tsigra_gate",
			"this gate and the one on line 9 both have matchers"},
		{"two paths in one matcher, one within the other gate's", "\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\t@ab path /admin/public/* /b/*\n\tsigra_gate @ab {\n\t\toptional\n\t}",
			"this gate and the one on line 8 both have matchers"},
		{"two paths in one matcher, one holding the other gate's", "\tsigra_gate /admin/* {\n\t\tgroup admins\n\t}\n\t@ab path /ad* /b/*\n\tsigra_gate @ab {\n\t\toptional\n\t}",
			"this gate and the one on line 8 both have matchers"},
		// No request matches both: which Caddy puts first decides nothing.
		{"two paths in one matcher, apart from the other gate's", "\tsigra_gate /config/* {\n\t\tgroup admins\n\t}\n\t@api path /api/* /auth/*\n\tsigra_gate @api {\n\t\toptional\n\t}\n\tsigra_gate", ""},
		{"two paths in one matcher, apart from an exact path", "\tsigra_gate /admin {\n\t\tgroup admins\n\t}\n\t@ab path /a/* /b\n\tsigra_gate @ab {\n\t\toptional\n\t}", ""},
		{"a matched gate and a bare one", "\t@reads method GET\n\tsigra_gate @reads {\n\t\toptional\n\t}\n\tsigra_gate", ""},
		// *.json is as long as /api/* and sorts first, though neither
		// holds the other: /api/users.json would escape the group.
		{"a suffix pattern beside a prefix", "\tsigra_gate /api/* {\n\t\tgroup api\n\t}\n\t@json path *.json\n\tsigra_gate @json {\n\t\toptional\n\t}",
			"this gate and the one on line 8 both have matchers"},
		{"a wildcard inside the path", "\tsigra_gate /a/* {\n\t\tgroup a\n\t}\n\tsigra_gate /a/*/open {\n\t\toptional\n\t}",
			"this gate and the one on line 8 both have matchers"},
		{"an exact path and prefixes", "\tsigra_gate /admin {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /admin/public/* {\n\t\toptional\n\t}", ""},
		// Equally specific siblings: the first would decide alone and
		// the second's group would never be asked for.
		{"two gates on one path", "\tsigra_gate /admin* {\n\t\toptional\n\t}\n\tsigra_gate /admin* {\n\t\tgroup admins\n\t}",
			"this gate and the one on line 8 match the same requests (both match /admin*)"},
		{"one path, written two ways", "\tsigra_gate /admin/* {\n\t\toptional\n\t}\n\t@admin path /admin/*\n\tsigra_gate @admin {\n\t\tgroup admins\n\t}",
			"this gate and the one on line 8 match the same requests (both match /admin/*)"},
		{"two bare gates", "\tsigra_gate {\n\t\toptional\n\t}\n\tsigra_gate {\n\t\tgroup admins\n\t}",
			"this gate and the one on line 8 match the same requests (neither has a matcher)"},
		// A path without its slash is an argument, not a matcher: said
		// so, rather than taken for a second bare gate.
		{"a path without its slash beside a bare gate", "\tsigra_gate\n\tsigra_gate *.css {\n\t\toptional\n\t}",
			`unexpected argument "*.css": a path matcher starts with /`},
		// Caddy matches paths without regard to case.
		{"one path in two cases", "\tsigra_gate /admin* {\n\t\tgroup admins\n\t}\n\tsigra_gate /ADMIN* {\n\t\toptional\n\t}",
			"this gate and the one on line 8 match the same requests (both match /ADMIN*)"},
		{"every path beside a bare gate", "\tsigra_gate /* {\n\t\toptional\n\t}\n\tsigra_gate {\n\t\tgroup admins\n\t}",
			"this gate and the one on line 8 match the same requests (both match every request)"},
		{"path * beside a bare gate", "\tsigra_gate {\n\t\tgroup admins\n\t}\n\t@all path *\n\tsigra_gate @all {\n\t\toptional\n\t}",
			"this gate and the one on line 8 match the same requests (both match every request)"},
		{"bare gates in two blocks", "\tsigra_gate {\n\t\toptional\n\t}\n\thandle /admin/* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t}", ""},
		{"the narrower gate nested", "\t@reads method GET HEAD\n\tsigra_gate @reads {\n\t\toptional\n\t}\n\thandle /admin/* {\n\t\tsigra_gate {\n\t\t\tgroup admins\n\t\t}\n\t}\n\tsigra_gate", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := adaptCaddyfile(fmt.Sprintf(site, tc.gates))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("adapt error %v; want one containing %q and naming the line", err, tc.wantErr)
			}
		})
	}
}

// The top-level gates of two sites are not siblings: a request never
// meets both, so what one site's gates match does not limit the other's.
// Each site's top level is a scope of its own.
func TestAdaptGatesOfTwoSitesAreNotSiblings(t *testing.T) {
	src := "http://a.example:9 {\n\tsigra_portal\n\tsigra_gate /api/* {\n\t\tgroup api\n\t}\n\tsigra_gate\n\trespond ok\n}\n" +
		"http://b.example:9 {\n\tsigra_portal\n\t@json path *.json\n\tsigra_gate @json {\n\t\toptional\n\t}\n\tsigra_gate\n\trespond ok\n}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Testfile"})
	if err != nil {
		t.Fatalf("two sites, each with sound siblings: %v", err)
	}
	scopes := map[float64]bool{}
	for _, m := range regexp.MustCompile(`"handler":"sigra_gate"[^}]*"scope":(-?\d+)`).FindAllSubmatch(out, -1) {
		n, _ := strconv.ParseFloat(string(m[1]), 64)
		scopes[n] = true
	}
	if len(scopes) != 2 {
		t.Errorf("scopes %v in %s; want one per site", scopes, out)
	}
	// Within one site the rule still holds.
	if err := adaptCaddyfile(strings.Replace(src, "\tsigra_gate\n\trespond ok\n}\n", "\tsigra_gate /files/* {\n\t\tgroup files\n\t}\n\trespond ok\n}\n", 2)); err == nil || !strings.Contains(err.Error(), "both have matchers") {
		t.Errorf("a suffix and a prefix gate in site b: %v; want refused", err)
	}
}

// The portal must see every request of its site: a matcher would let
// forged identity headers and the gateway's cookies through elsewhere.
func TestAdaptPortalRefusesMatcher(t *testing.T) {
	err := adaptCaddyfile("http://127.0.0.1:9 {\n\tsigra_portal /.sigra/*\n\trespond ok\n}\n")
	if err == nil || !strings.Contains(err.Error(), "sigra_portal takes no matcher") || !strings.Contains(err.Error(), "Testfile:2") {
		t.Errorf("adapt error %v; want sigra_portal refusing its matcher at Testfile:2", err)
	}
}

// A second sigra block in the global options is refused at its line.
func TestParseGlobalTwice(t *testing.T) {
	_, err := parseGlobal(caddyfile.NewTestDispenser("\nsigra {\n storage bbolt /a.db\n}"), new(App))
	if err == nil || !strings.Contains(err.Error(), "only once, at Testfile:2") {
		t.Fatalf("a second sigra block: %v; want an error at its line", err)
	}
}

// The README's Caddyfile, every documented option in it, adapts.
func TestAdaptReadmeCaddyfile(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "```caddyfile\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("no caddyfile block in README.md")
	}
	// Copied as it is, it adapts without Caddy's "not formatted" warning.
	if f := caddyfile.Format([]byte(block)); string(f) != block {
		t.Errorf("the README's Caddyfile is not as caddy fmt writes it:\n%s", f)
	}
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(block), map[string]any{"filename": "README.md"})
	if err != nil {
		t.Fatalf("adapting the README's Caddyfile: %v", err)
	}
	for _, want := range []string{`"max_retries_per_ip":20`, `"assertion_ttl":300000000000`, `"bootstrap_admin":"admin@localhost"`, `"prefix":"/.sigra"`, `"allow_preflight":true`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("adapted README Caddyfile lacks %s", want)
		}
	}
}

// JSON written by hand gets the same group checks as the Caddyfile.
func TestValidateGroupNames(t *testing.T) {
	g := &Gate{Groups: []string{"staff", "a,b"}}
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), `group name "a,b"`) {
		t.Errorf("gate group a,b: %v; want refused", err)
	}
	a := &App{Storage: &StorageConfig{Path: filepath.Join(t.TempDir(), "sigra.db")}, AdminGroup: "ops,admins"}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), `admin_group: invalid input: group name "ops,admins"`) {
		t.Errorf("admin_group ops,admins: %v; want refused", err)
	}
}

// JSON written by hand gets the session timeout check too.
func TestValidateSessionTimeouts(t *testing.T) {
	a := &App{Storage: &StorageConfig{Path: filepath.Join(t.TempDir(), "sigra.db")}, Session: &SessionConfig{Lifetime: caddy.Duration(time.Hour), Idle: caddy.Duration(2 * time.Hour)}}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "session: idle 2h is longer than lifetime 1h") {
		t.Errorf("idle 2h, lifetime 1h: %v; want refused", err)
	}
	a.Session.Idle = caddy.Duration(time.Hour)
	if err := a.Validate(); err != nil {
		t.Errorf("idle equal to lifetime: %v", err)
	}
}

// JSON written by hand is checked as the Caddyfile is, for the values a
// review found passing there and then doing harm or nothing.
func TestValidateJSONValues(t *testing.T) {
	const hook = `{"url":"https://h.example.com/x","secret":"0123456789abcdef"`
	for _, tc := range []struct{ json, wantErr string }{
		{`{"regulation":{"max_retries":2305843009213693952}}`, "regulation: counts must be at most 1000000"},
		{`{"regulation":{"max_retries_per_ip":1000001}}`, "regulation: counts must be at most 1000000"},
		{`{"keys":{"assertion_ttl":"-5m"}}`, "keys: assertion_ttl must not be negative"},
		{`{"admin_mfa_max_age":"-5m"}`, "admin_mfa_max_age must not be negative"},
		{`{"admin_mfa_max_age":"1s"}`, "admin_mfa_max_age 1s is under 1m"},
		{`{"regulation":{"find_time":1}}`, "regulation: find_time 1ns is under 1m"},
		{`{"regulation":{"ban_time":"10s"}}`, "regulation: ban_time 10s is under 1m"},
		{`{"session":{"lifetime":"1s"}}`, "session: lifetime 1s is under 1m"},
		{`{"keys":{"assertion_ttl":1000000}}`, "keys: assertion_ttl 1ms is under 30s"},
		{`{"assertion_audience":" "}`, `assertion_audience: " " must be one value without spaces`},
		{`{"assertion_audience":"https://a.example.com https://b.example.com"}`, "must be one value without spaces"},
		{`{"audit":{"retention":"30m"}}`, "audit: retention 30m0s is under an hour"},
		{`{"audit":{"webhooks":[` + hook + `,"actions":[null]}]}}`, "an empty action pattern"},
		// Meant as "none for now", it would be every row, to a receiver
		// chosen for a few.
		{`{"audit":{"webhooks":[` + hook + `,"actions":[]}]}}`, `no actions (use "*" for every action)`},
		{`{"audit":{"webhooks":[` + hook + `,"actions":["auth.*",""]}]}}`, "an empty action pattern"},
		{`{"audit":{"webhooks":[{"url":"HTTPS://H.example.com/x","secret":"0123456789abcdef","actions":["*"]},` + hook + `,"actions":["*"]}]}}`, "configured twice"},
		{`{"admin_group":"{env.ADMINS}"}`, "looks like a placeholder"},
		{`{"allowed_redirect_hosts":["docs.example.com:99999"]}`, "allowed_redirect_hosts"},
		{`{"admin_hosts":["::1"],"allowed_redirect_hosts":["[::1]:8443"],"audit":{"retention":"720h","webhooks":[` + hook + `,"actions":["*"]}]},"assertion_audience":"https://app.example.com","regulation":{"max_retries":1000000}}`, ""},
	} {
		var a App
		if err := json.Unmarshal([]byte(tc.json), &a); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		a.Storage = &StorageConfig{Path: filepath.Join(t.TempDir(), "sigra.db")}
		if err := a.setDefaults(); err != nil {
			t.Fatal(err)
		}
		err := a.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v; want it accepted", tc.json, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %v; want an error containing %q", tc.json, err, tc.wantErr)
		}
	}
	g := &Gate{Groups: []string{"{http.request.header.X-Group}"}}
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "looks like a placeholder") {
		t.Errorf("gate group from a placeholder: %v; want refused", err)
	}
	g = &Gate{MFA: &MFARequirement{MaxAge: caddy.Duration(time.Second)}}
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "mfa: max_age 1s is under 1m") {
		t.Errorf("gate mfa max_age 1s: %v; want refused", err)
	}
}

// signing_key takes placeholders as the storage path does: {env.X} is
// read when the config loads, and an unset one is an error naming it,
// not a file named "{env.X}".
func TestValidateSigningKeyFromTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	key := writeEd25519Key(t, filepath.Join(dir, "assertion.pem"))
	t.Setenv("SIGRA_TEST_SIGNING_KEY", key)
	a := &App{Storage: &StorageConfig{Path: filepath.Join(dir, "sigra.db")}, Keys: &KeysConfig{SigningKey: "{env.SIGRA_TEST_SIGNING_KEY}"}}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("signing_key {env.SIGRA_TEST_SIGNING_KEY} set to %s: %v", key, err)
	}
	if a.signingKeyPath != key {
		t.Errorf("signing key path %q; want %q", a.signingKeyPath, key)
	}
	a = &App{Storage: &StorageConfig{Path: filepath.Join(dir, "sigra.db")}, Keys: &KeysConfig{SigningKey: "{env.SIGRA_TEST_UNSET_KEY}"}}
	if err := a.setDefaults(); err == nil || !strings.Contains(err.Error(), "keys: signing_key {env.SIGRA_TEST_UNSET_KEY}") || !strings.Contains(err.Error(), "environment variable") {
		t.Errorf("signing_key from an unset variable: %v; want an error naming it", err)
	}
}

// Webhooks that work but that an operator would not choose knowingly
// are warned of: plain http beyond loopback, and one secret for two
// receivers. https, loopback and distinct secrets are not.
func TestWarnWebhooks(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	s1, s2 := []byte("0123456789abcdef-one"), []byte("0123456789abcdef-two")
	warnWebhooks(zap.New(core), []audit.WebhookConfig{
		{URL: "http://127.0.0.1:9000/in", Secret: s1},
		{URL: "http://localhost.:9001/in", Secret: s2},
		{URL: "https://siem.example.com/in", Secret: []byte("0123456789abcdef-three")},
		{URL: "http://hooks.example.com/in?token=hunter2", Secret: []byte("0123456789abcdef-four")},
		{URL: "https://other.example.com/in", Secret: s1},
	})
	var got []string
	for _, e := range logs.All() {
		got = append(got, e.Message+" "+e.ContextMap()["url"].(string))
	}
	want := []string{
		"webhook over plain http to another machine: its rows travel unencrypted; use https http://hooks.example.com/in?xxxxx",
		"two webhooks share a secret: either receiver could replay its deliveries to the other; give each its own https://other.example.com/in",
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings:\n%q\nwant:\n%q", got, want)
	}
}

// A storage path naming a file that is no store (a typo for another
// file) fails caddy validate, not only the start, and gets no chmod
// advice for that file.
func TestValidateStoragePathToAnotherFile(t *testing.T) {
	other := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(other, []byte(strings.Repeat("root:x:0:0:root:/root:/bin/sh\n", 200)), 0o644); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	a := &App{Storage: &StorageConfig{Path: other}}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	a.logger = zap.New(core)
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "not a Sigra store") || !strings.Contains(err.Error(), other) {
		t.Errorf("storage at a text file: %v; want refused, naming it", err)
	}
	if n := logs.Len(); n != 0 {
		t.Errorf("%d warnings (%v); want none: the file is no store to chmod", n, logs.All()[0].Message)
	}
}
