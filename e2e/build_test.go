package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestListModules: the binary built from xcaddy.json has the pinned Caddy
// and all four Sigra modules.
func TestListModules(t *testing.T) {
	t.Parallel()
	h := newHome(t)

	r := runCaddy(t, h, "", "list-modules")
	if r.code != 0 {
		t.Fatalf("list-modules failed\n%s", r)
	}
	mods := strings.Fields(r.stdout)
	for _, want := range []string{"sigra", "http.handlers.sigra_portal", "http.handlers.sigra_gate", "admin.api.sigra"} {
		if !slices.Contains(mods, want) {
			t.Errorf("list-modules does not show %s\n%s", want, r)
		}
	}

	data, err := os.ReadFile(filepath.Join(repoRoot, "xcaddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var recipe struct {
		Caddy string `json:"caddy"`
	}
	if err := json.Unmarshal(data, &recipe); err != nil {
		t.Fatal(err)
	}
	if v := runCaddy(t, h, "", "version"); v.code != 0 || !strings.HasPrefix(v.stdout, recipe.Caddy+" ") {
		t.Errorf("caddy version = %q; want the version pinned in xcaddy.json, %s\n%s", v.stdout, recipe.Caddy, v)
	}
	if bi := runCaddy(t, h, "", "build-info"); !strings.Contains(bi.stdout, "github.com/sigra-auth/caddy-sigra") {
		t.Errorf("build-info does not list github.com/sigra-auth/caddy-sigra\n%s", bi)
	}
	// "users" as DESIGN names it, "user" as earlier releases did.
	for _, cmd := range []string{"users", "user"} {
		if help := runCaddy(t, h, "", "sigra", cmd, "--help"); help.code != 0 ||
			!strings.Contains(help.stdout, "add") || !strings.Contains(help.stdout, "disable") {
			t.Errorf("caddy sigra %s --help does not list the subcommands\n%s", cmd, help)
		}
	}
	if help := runCaddy(t, h, "", "sigra", "keys", "--help"); help.code != 0 ||
		!strings.Contains(help.stdout, "list") || !strings.Contains(help.stdout, "rotate") {
		t.Errorf("caddy sigra keys --help does not list the subcommands\n%s", help)
	}
	// A command that is none fails, naming itself and what there is; a
	// script must not take it for done.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sigra", "users", "remove", "--config", "Caddyfile", "--email", "a@example.com"}, `unknown command "remove" for caddy sigra users (known: add, delete, `},
		{[]string{"sigra", "users", "remove"}, "did you mean delete?"},
		{[]string{"sigra", "kyes"}, `unknown command "kyes" for caddy sigra (known: audit, backup, bans, keys, users); did you mean keys?`},
		{[]string{"sigra", "audit"}, "caddy sigra audit needs a command: export, replay"},
	} {
		if r := runCaddy(t, h, "", c.args...); r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("caddy %s: exit %d; want a failure saying %q\n%s", strings.Join(c.args, " "), r.code, c.want, r)
		}
	}
}

// TestValidateExample: Caddyfile.example validates and adapts, and
// neither command creates anything (no sigra.db, no encryption key).
func TestValidateExample(t *testing.T) {
	t.Parallel()
	h := newHome(t)
	example := filepath.Join(repoRoot, "Caddyfile.example")

	r := runCaddy(t, h, "", "validate", "--config", example, "--adapter", "caddyfile")
	if r.code != 0 || !strings.Contains(r.output(), "Valid configuration") {
		t.Fatalf("caddy validate Caddyfile.example failed\n%s", r)
	}

	r = runCaddy(t, h, "", "adapt", "--config", example, "--adapter", "caddyfile")
	if r.code != 0 {
		t.Fatalf("caddy adapt Caddyfile.example failed\n%s", r)
	}
	var cfg struct {
		Apps struct {
			Sigra map[string]any  `json:"sigra"`
			HTTP  json.RawMessage `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &cfg); err != nil {
		t.Fatalf("caddy adapt printed no JSON config: %v\n%s", err, r)
	}
	if cfg.Apps.Sigra["bootstrap_admin"] != "admin@localhost" || cfg.Apps.Sigra["admin_group"] != "admins" {
		t.Errorf("adapted sigra app = %v; want bootstrap_admin admin@localhost, admin_group admins", cfg.Apps.Sigra)
	}
	for _, h := range []string{`"handler":"sigra_portal"`, `"handler":"sigra_gate"`, `"optional":true`, `"groups":["admins"]`} {
		if !strings.Contains(string(cfg.Apps.HTTP), h) {
			t.Errorf("adapted http app lacks %s\n%s", h, cfg.Apps.HTTP)
		}
	}

	assertNoStore(t, h.dir)
}

// assertNoStore fails if anything under dir looks like Sigra state.
func assertNoStore(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch d.Name() {
		case "sigra", "sigra.db", "encryption.key":
			t.Errorf("validate/adapt created %s", path)
		}
		return nil
	})
}

// TestValidateWhileRunning: `caddy validate` opens nothing, so it works on
// the config of a running Caddy that holds the store's lock (opening it
// would fail, locked) without disturbing the running process.
func TestValidateWhileRunning(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	g.start()

	r := runCaddy(t, g.home, "", "validate", "--config", g.caddyfile, "--adapter", "caddyfile")
	if r.code != 0 || !strings.Contains(r.output(), "Valid configuration") {
		t.Fatalf("validate while Caddy runs on the same store failed\n%s\n%s", r, g.logs())
	}
	waitHealthy(t, g.proc, g.base+"/.sigra/healthz")

	// With the default store (Caddy's data dir) nothing is created either.
	h := newHome(t)
	cf := filepath.Join(h.dir, "Caddyfile")
	writeFile(t, cf, fmt.Sprintf("{\n\tadmin off\n\tsigra\n}\n%s {\n\tsigra_portal\n\tsigra_gate\n\trespond ok\n}\n", g.base))
	if r := runCaddy(t, h, "", "validate", "--config", cf, "--adapter", "caddyfile"); r.code != 0 {
		t.Fatalf("validate with the default store failed\n%s", r)
	}
	assertNoStore(t, h.dir)
}

// TestValidateRefusesWhatTheStartWould: `caddy validate` refuses a
// storage path naming a file that is no store, as the start would,
// naming the file, and leaves it as it was: another file, an empty one
// (a store copied onto a full disk), another program's bbolt database.
func TestValidateRefusesWhatTheStartWould(t *testing.T) {
	t.Parallel()
	h := newHome(t)
	other := filepath.Join(h.dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("otherapp"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(h.dir, "notes.txt")
	writeFile(t, text, strings.Repeat("not a store\n", 500))
	empty := filepath.Join(h.dir, "empty.db")
	writeFile(t, empty, "")
	for _, tt := range []struct{ path, want string }{
		{text, "no bbolt file"},
		{empty, "the file is empty"},
		{other, `another program (its buckets include "otherapp")`},
	} {
		before, err := os.ReadFile(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		cf := filepath.Join(h.dir, "Caddyfile")
		writeFile(t, cf, fmt.Sprintf("{\n\tadmin off\n\tsigra {\n\t\tstorage bbolt %s\n\t}\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\tsigra_gate\n\trespond ok\n}\n", tt.path))
		r := runCaddy(t, h, "", "validate", "--config", cf, "--adapter", "caddyfile")
		if out := r.output(); r.code == 0 || !strings.Contains(out, tt.path) || !strings.Contains(out, tt.want) {
			t.Errorf("caddy validate with the store %s: exit %d; want it refused, naming the file, %q\n%s", filepath.Base(tt.path), r.code, tt.want, r)
		}
		if after, _ := os.ReadFile(tt.path); string(after) != string(before) {
			t.Errorf("caddy validate changed %s", filepath.Base(tt.path))
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBadCaddyfiles: configuration mistakes fail `caddy validate` and
// `caddy adapt`, and the message names the file and the line.
func TestBadCaddyfiles(t *testing.T) {
	t.Parallel()
	// Each case is a global sigra block body and a gate block body; line
	// is where the mistake is, counted in the rendered file below.
	const tmpl = `{
	admin off
	sigra {
		%s
	}
}

http://127.0.0.1:9 {
	sigra_portal
	sigra_gate {
		%s
	}
	respond ok
}
`
	const globalLine, gateLine = 4, 11
	tests := []struct {
		name      string
		caddyfile string
		line      int
		want      string // also in the message (durations: it names the option)
	}{
		{"unknown global option", "{\n\tadmin off\n\tfrobnicate\n}\nhttp://127.0.0.1:9 {\n\trespond ok\n}\n", 3, "frobnicate"},
		{"unknown sigra option", fmt.Sprintf(tmpl, "frobnicate on", "optional"), globalLine, `unknown option "frobnicate"`},
		{"storage redis", fmt.Sprintf(tmpl, "storage redis", "optional"), globalLine, `"redis"`},
		{"storage without backend", fmt.Sprintf(tmpl, "storage", "optional"), globalLine, "storage"},
		{"keys algorithm RS512", fmt.Sprintf(tmpl, "keys {\n\t\t\talgorithm RS512\n\t\t}", "optional"), globalLine + 1, "RS512"},
		{"unknown keys option", fmt.Sprintf(tmpl, "keys {\n\t\t\tsize 4096\n\t\t}", "optional"), globalLine + 1, `"size"`},
		{"bad duration", fmt.Sprintf(tmpl, "session {\n\t\t\tidle fiveminutes\n\t\t}", "optional"), globalLine + 1, `idle: invalid duration "fiveminutes"`},
		{"negative duration", fmt.Sprintf(tmpl, "session {\n\t\t\tlifetime -1h\n\t\t}", "optional"), globalLine + 1, `lifetime: "-1h" must be longer than zero`},
		{"bad header alias", fmt.Sprintf(tmpl, "header_aliases forwarded", "optional"), globalLine, `"forwarded"`},
		{"bad prefix", fmt.Sprintf(tmpl, "prefix auth", "optional"), globalLine, "prefix"},
		{"unknown gate requirement", fmt.Sprintf(tmpl, "", "frobnicate"), gateLine, `unknown requirement "frobnicate"`},
		{"amr unknown method", fmt.Sprintf(tmpl, "", "amr pwd sms"), gateLine, `"sms"`},
		{"mfa max_agee", fmt.Sprintf(tmpl, "", "mfa max_agee 1s"), gateLine, `"max_agee"`},
		{"mfa bad max_age", fmt.Sprintf(tmpl, "", "mfa max_age soon"), gateLine, `max_age: invalid duration "soon"`},
		{"group without names", fmt.Sprintf(tmpl, "", "group"), gateLine, "group"},
		{"optional with group", fmt.Sprintf(tmpl, "", "optional\n\t\tgroup admins"), gateLine + 2, "optional"},
		{"assertion maybe", fmt.Sprintf(tmpl, "", "assertion maybe"), gateLine, `want on or off, not "maybe"`},
		{"rule not in this build", fmt.Sprintf(tmpl, "", "rule `\"admins\" in user.groups`"), gateLine, "not available in this build"},
		// Webhooks that audit.New would refuse at start.
		{"webhook secret too short", fmt.Sprintf(tmpl, "audit {\n\t\t\twebhook https://hooks.example.com/in {\n\t\t\t\tsecret short\n\t\t\t}\n\t\t}", "optional"), globalLine + 1, "secret must be at least 16 bytes"},
		{"webhook configured twice", fmt.Sprintf(tmpl, "audit {\n\t\t\twebhook https://hooks.example.com/in {\n\t\t\t\tsecret 0123456789abcdef\n\t\t\t}\n\t\t\twebhook https://hooks.example.com/in {\n\t\t\t\tsecret 0123456789abcdef\n\t\t\t\tactions auth.*\n\t\t\t}\n\t\t}", "optional"), globalLine + 4, "configured twice"},
		{"webhook URL with a fragment", fmt.Sprintf(tmpl, "audit {\n\t\t\twebhook https://hooks.example.com/in#x {\n\t\t\t\tsecret {env.HOOK_SECRET}\n\t\t\t}\n\t\t}", "optional"), globalLine + 1, "fragment"},
		{"sigra_portal with a block", "{\n\tadmin off\n}\nhttp://127.0.0.1:9 {\n\tsigra_portal {\n\t\tprefix /auth\n\t}\n\trespond ok\n}\n", 6, "global sigra block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHome(t)
			cf := filepath.Join(h.dir, "Caddyfile")
			writeFile(t, cf, tt.caddyfile)
			at := fmt.Sprintf("%s:%d", cf, tt.line)
			for _, cmd := range []string{"validate", "adapt"} {
				r := runCaddy(t, h, "", cmd, "--config", cf, "--adapter", "caddyfile")
				if r.code == 0 {
					t.Errorf("caddy %s accepted the config\n%s\n--- Caddyfile:\n%s", cmd, r, tt.caddyfile)
					continue
				}
				if out := r.output(); !strings.Contains(out, at) || !strings.Contains(out, tt.want) {
					t.Errorf("caddy %s: message does not contain %q and %q\n%s\n--- Caddyfile:\n%s", cmd, at, tt.want, r, tt.caddyfile)
				}
			}
			assertNoStore(t, h.dir)
		})
	}
}

// TestValidateChecksWebhookSecretFromEnv: a webhook secret given as a
// placeholder is unknown when the Caddyfile is adapted, but `caddy
// validate` expands it and refuses one that Caddy would refuse at start.
// (Not parallel: it sets the environment the binary inherits.)
func TestValidateChecksWebhookSecretFromEnv(t *testing.T) {
	t.Setenv("SIGRA_E2E_HOOK_SECRET", "short")
	h := newHome(t)
	cf := filepath.Join(h.dir, "Caddyfile")
	writeFile(t, cf, "{\n\tadmin off\n\tsigra {\n\t\taudit {\n\t\t\twebhook https://hooks.example.com/in {\n\t\t\t\tsecret {env.SIGRA_E2E_HOOK_SECRET}\n\t\t\t}\n\t\t}\n\t}\n}\n\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\trespond ok\n}\n")
	if r := runCaddy(t, h, "", "adapt", "--config", cf, "--adapter", "caddyfile"); r.code != 0 {
		t.Errorf("caddy adapt refused a placeholder secret it cannot know\n%s", r)
	}
	r := runCaddy(t, h, "", "validate", "--config", cf, "--adapter", "caddyfile")
	if out := r.output(); r.code == 0 || !strings.Contains(out, "secret must be at least 16 bytes") {
		t.Errorf("caddy validate with a 5-byte secret in the environment: want a non-zero exit naming the secret's length\n%s", r)
	}
	assertNoStore(t, h.dir)
}

// TestValueMistakesNameTheLine: values that the sigra block stores as
// written and only checks in Validate (an email, a literal key) are config
// errors too: `caddy adapt` must reject them and every message must name
// the line, like the parser's own errors (DESIGN.md §2).
func TestValueMistakesNameTheLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, option string
		line         int
		want         string
	}{
		{"bootstrap_admin not an email", "bootstrap_admin not-an-email", 4, "bootstrap_admin"},
		{"literal encryption_key too short", "keys {\n\t\t\tencryption_key c2hvcnQ=\n\t\t}", 5, "encryption_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHome(t)
			cf := filepath.Join(h.dir, "Caddyfile")
			writeFile(t, cf, fmt.Sprintf("{\n\tadmin off\n\tsigra {\n\t\t%s\n\t}\n}\n\nhttp://127.0.0.1:9 {\n\tsigra_portal\n\trespond ok\n}\n", tt.option))
			at := fmt.Sprintf("%s:%d", cf, tt.line)
			for _, cmd := range []string{"validate", "adapt"} {
				r := runCaddy(t, h, "", cmd, "--config", cf, "--adapter", "caddyfile")
				if out := r.output(); r.code == 0 || !strings.Contains(out, at) || !strings.Contains(out, tt.want) {
					t.Errorf("caddy %s: want a non-zero exit and a message with %q and %q\n%s", cmd, at, tt.want, r)
				}
			}
		})
	}
}

// TestValidateRefusesAnUnreachableGate: a gate that an order line puts
// after reverse_proxy would never run, serving the app to anyone, and a
// portal inside a matched block would not serve the sign-in pages: the
// real binary's validate refuses both, at the directive's line.
func TestValidateRefusesAnUnreachableGate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, global, site string
		line               int
		want               string
	}{
		{"gate ordered after reverse_proxy", "\torder sigra_gate after reverse_proxy\n",
			"\tsigra_portal\n\tsigra_gate\n\treverse_proxy 127.0.0.1:9\n", 8, "runs reverse_proxy (line 9) before sigra_gate"},
		{"portal inside handle /app/*", "",
			"\thandle /app/* {\n\t\tsigra_portal\n\t\tsigra_gate\n\t\trespond hi\n\t}\n", 7, "sigra_portal: it is inside handle /app/* on line 6"},
		// Caddy runs handle before route, whatever the written order.
		{"gate in a route beside a bare handle", "",
			"\tsigra_portal\n\troute {\n\t\tsigra_gate\n\t}\n\thandle {\n\t\treverse_proxy 127.0.0.1:9\n\t}\n", 8, "handle on line 10 runs before the route block on line 7 that holds it"},
		{"gate and no portal", "",
			"\tsigra_gate /admin*\n\treverse_proxy 127.0.0.1:9\n", 6, "this site has no sigra_portal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHome(t)
			cf := filepath.Join(h.dir, "Caddyfile")
			writeFile(t, cf, "{\n\tadmin off\n"+tt.global+"}\n\nhttp://127.0.0.1:9 {\n"+tt.site+"}\n")
			at := fmt.Sprintf("%s:%d", cf, tt.line)
			r := runCaddy(t, h, "", "validate", "--config", cf, "--adapter", "caddyfile")
			if out := r.output(); r.code == 0 || !strings.Contains(out, at) || !strings.Contains(out, tt.want) {
				t.Errorf("caddy validate: want a non-zero exit and a message with %q and %q\n%s", at, tt.want, r)
			}
			assertNoStore(t, h.dir)
		})
	}
}
