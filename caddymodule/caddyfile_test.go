package caddymodule

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
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
		{"amr and group", "sigra_gate {\n amr hwk swk\n group admins ops\n}", Gate{AMR: []string{"hwk", "swk"}, Groups: []string{"admins", "ops"}}, ""},
		{"unknown requirement", "sigra_gate {\n nope\n}", Gate{}, `unknown requirement "nope"`},
		{"later requirement", "sigra_gate {\n rule `true`\n}", Gate{}, `"rule" is not available in this build yet`},
		{"unknown amr", "sigra_gate {\n amr fingerprint\n}", Gate{}, `unknown method "fingerprint"`},
		{"mfa bad option", "sigra_gate {\n mfa max_agee 1s\n}", Gate{}, `unknown option "max_agee"`},
		{"mfa bad duration", "sigra_gate {\n mfa max_age soon\n}", Gate{}, `invalid duration`},
		{"group without names", "sigra_gate {\n group\n}", Gate{}, "wrong argument count"},
		{"inline argument", "sigra_gate optional", Gate{}, "requirements go in a block"},
		{"optional with requirements", "sigra_gate {\n optional\n mfa\n}", Gate{}, "optional cannot be combined"},
		{"assertion off", "sigra_gate {\n assertion off\n}", Gate{OmitAssertion: true}, ""},
		{"assertion on", "sigra_gate {\n assertion on\n}", Gate{}, ""},
		{"optional without assertion", "sigra_gate {\n optional\n assertion off\n}", Gate{Optional: true, OmitAssertion: true}, ""},
		{"assertion bad value", "sigra_gate {\n assertion maybe\n}", Gate{}, `want on or off, not "maybe"`},
		{"assertion without value", "sigra_gate {\n assertion\n}", Gate{}, "wrong argument count"},
		{"assertion extra value", "sigra_gate {\n assertion off now\n}", Gate{}, "wrong argument count"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(tc.input)}
			got, err := parseGate(h)
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
				a.Keys.Algorithm != "ES256" || time.Duration(a.Keys.AssertionTTL) != 2*time.Minute ||
				a.Prefix != "/auth" || a.AdminGroup != "ops" || len(a.AllowedRedirectHosts) != 2 ||
				a.HeaderAliases[0] != "remote" || a.BootstrapAdmin != "off" ||
				a.Regulation.MaxRetries != 3 || a.Regulation.MaxRetriesPerIP != 30 || time.Duration(a.Regulation.BanTime) != time.Hour ||
				time.Duration(a.Audit.Retention) != 400*24*time.Hour || a.Audit.Webhooks[0].Secret != "{env.HOOK}" || len(a.Audit.Webhooks[0].Actions) != 2 {
				b, _ := json.Marshal(a)
				t.Errorf("parsed %s", b)
			}
		}, ""},
		{"unknown option", "sigra {\n bogus 1\n}", nil, `unknown option "bogus"`},
		{"later option", "sigra {\n oidc google {\n }\n}", nil, `"oidc" is not available in this build yet`},
		{"unknown backend", "sigra {\n storage redis\n}", nil, `unknown backend "redis"`},
		{"bad algorithm", "sigra {\n keys {\n algorithm RS512\n }\n}", nil, `algorithm "RS512"`},
		{"bad session option", "sigra {\n session {\n idel 1m\n }\n}", nil, `unknown option "idel"`},
		{"bad duration", "sigra {\n session {\n idle forever\n }\n}", nil, "invalid duration"},
		{"zero retries", "sigra {\n regulation {\n max_retries 0\n }\n}", nil, "positive whole number"},
		{"bad prefix", "sigra {\n prefix auth/\n}", nil, "must start with /"},
		{"webhook without secret", "sigra {\n audit {\n webhook https://h.example.com {\n actions *\n }\n }\n}", nil, "secret is required"},
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
	want := "sigra_portal|sigra_gate /public/*|sigra_gate /secure/*|sigra_gate /admin/*|sigra_gate|reverse_proxy"
	if got := strings.Join(order, "|"); got != want {
		t.Errorf("handler order %s; want %s", got, want)
	}
}
