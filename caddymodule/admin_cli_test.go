package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/store"
)

// adminPost posts body to uri on Caddy's admin endpoint the way the CLI
// does, naming the env's store, and returns the status and the answer.
func (e *env) adminPost(uri, body string) (int, string) {
	e.t.Helper()
	return e.adminDo(http.MethodPost, uri+"?"+url.Values{"store": {e.store()}}.Encode(), body)
}

// store is the env's store file.
func (e *env) store() string { return filepath.Join(e.dir, "sigra.db") }

// offline stops Caddy, runs fn in one write transaction on the store's
// bbolt file, and loads the config again: for damage no API can do.
func (e *env) offline(fn func(tx *bolt.Tx) error) {
	e.t.Helper()
	if err := caddy.Stop(); err != nil {
		e.t.Fatal(err)
	}
	db, err := bolt.Open(e.store(), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		e.t.Fatal(err)
	}
	err = db.Update(fn)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.load(e.config); err != nil {
		e.t.Fatal(err)
	}
}

// adminDo sends a request to Caddy's admin endpoint as it is and returns
// the status and the answer.
func (e *env) adminDo(method, uri, body string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.admin+uri, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, uri, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// apiErrorText is the message of a Caddy admin API error answer, or the
// body itself when it is not one.
func apiErrorText(body string) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
		return body
	}
	return e.Error
}

// The CLI's admin endpoints take exactly one JSON object of known fields:
// a misspelt field or anything after the object is a 400 that says so
// (not an operation run on half the request), and a body over the limit
// is a 413.
func TestAdminCLIRequestBody(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("bob@example.com")

	code, body := e.adminPost("/sigra/users", `{"op":"list"}`+"\n")
	var res userResult
	if code != http.StatusOK || json.Unmarshal([]byte(body), &res) != nil || len(res.Users) != 1 {
		t.Fatalf("a well-formed list: status %d, %s; want 200 and bob", code, body)
	}
	if code, body := e.adminPost("/sigra/keys", ` {"op":"list"} `); code != http.StatusOK {
		t.Errorf("keys list with white space around: status %d, %s; want 200", code, body)
	}

	for _, c := range []struct{ uri, body, want string }{
		{"/sigra/users", `{"op":"list"} trailing`, "trailing data"},
		{"/sigra/users", `{"op":"list"}{"op":"add"}`, "trailing data"},
		{"/sigra/users", `{"op":"list","limt":5}`, `unknown field "limt"`},
		{"/sigra/keys", `{"op":"rotate","force":true}`, `unknown field "force"`},
		{"/sigra/keys", `{"op":"list"} x`, "trailing data"},
		{"/sigra/users", ``, "empty body"},
		{"/sigra/users", "{\"op\":\"add\",\"email\":\"eve\xff@example.com\"}", "not valid UTF-8"},
		// Go's decoder keeps the last of two keys and matches names
		// case-blind: either would run a request that was not the one
		// written.
		{"/sigra/users", `{"op":"list","op":"delete","user":"bob@example.com"}`, `"op" is given twice`},
		{"/sigra/users", `{"op":"add","email":"a@example.com","groups":["x"],"groups":["admins"]}`, `"groups" is given twice`},
		{"/sigra/users", `{"OP":"list"}`, `unknown field "OP" (the field is "op")`},
		{"/sigra/users", `{"op":"list","limit":-5}`, "limit must not be negative"},
		{"/sigra/users", `[{"op":"list"}]`, "the body must be a JSON object, not a JSON array"},
		{"/sigra/keys", `"list"`, "the body must be a JSON object, not a JSON string"},
		{"/sigra/bans", `{"op":"lift","ip":"127.0.0.1"}`, `unknown field "ip"`},
	} {
		code, body := e.adminPost(c.uri, c.body)
		if code != http.StatusBadRequest || !strings.Contains(apiErrorText(body), c.want) {
			t.Errorf("POST %s %q: status %d, %s; want 400 saying %q", c.uri, c.body, code, body, c.want)
		}
	}

	big := `{"op":"list","q":"` + strings.Repeat("a", maxFormBody) + `"}`
	if code, body := e.adminPost("/sigra/users", big); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "over") {
		t.Errorf("a body over the limit: status %d, %s; want 413", code, body)
	}
	// Within the limit, padding after the object is still read to the end.
	padded := `{"op":"list"}` + strings.Repeat(" ", maxFormBody)
	if code, body := e.adminPost("/sigra/users", padded); code != http.StatusRequestEntityTooLarge {
		t.Errorf("an object followed by white space past the limit: status %d, %s; want 413", code, body)
	}
}

// Without --config the CLI reads ./Caddyfile, as caddy run does: the
// admin endpoint it asks must be the one that file names too, not Caddy's
// default localhost:2019.
func TestCLIDefaultCaddyfileAdminAddress(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("bob@example.com")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(e.config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)

	cfg, err := loadAppConfig("", "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.file != "Caddyfile" {
		t.Errorf("config file %q; want the adjacent Caddyfile", cfg.file)
	}
	if addr, err := cfg.adminAddress(); err != nil || addr != e.admin {
		t.Errorf("admin address from ./Caddyfile: %q, %v; want %s (its admin line)", addr, err, e.admin)
	}

	// The whole command: the running Caddy holds the store, so the CLI
	// goes through the admin endpoint that ./Caddyfile names.
	res, err := runUserOp(context.Background(), cliFlags{}, userRequest{Op: "list"})
	if err != nil {
		t.Fatalf("users list without --config, next to the running Caddy's Caddyfile: %v", err)
	}
	if len(res.Users) != 1 || res.Users[0].Email != "bob@example.com" {
		t.Errorf("users list without --config: %+v; want bob", res.Users)
	}
}

// A config that names one store but the admin address of a Caddy running
// another must not reach that Caddy's store: the CLI says which store
// each names, and nothing is read or changed. Here Caddy A runs in this
// process; the other store is held open, as a Caddy B with the admin
// endpoint off would hold it, so the CLI has to go through an admin API.
func TestCLIRefusesAnotherCaddysStore(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("bob@example.com")
	kid := e.rt().keys.ActiveKeyID()

	otherDir := t.TempDir()
	other := filepath.Join(otherDir, "data3", "sigra.db")
	held, err := store.OpenBolt(other, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	cfgB := filepath.Join(t.TempDir(), "Caddyfile")
	writeB := func(path, admin string) {
		t.Helper()
		cf := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tsigra {\n\t\tstorage bbolt %s\n\t\tbootstrap_admin off\n\t}\n}\n", admin, path)
		if err := os.WriteFile(cfgB, []byte(cf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeB(other, e.admin)
	flags := cliFlags{config: cfgB, adapter: "caddyfile"}
	want := fmt.Sprintf("Caddy at %s runs the Sigra store %s, but %s names %s", e.admin, resolved(t, e.store()), cfgB, resolved(t, other))
	ctx := context.Background()
	check := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s with config B: %v; want an error saying %q", what, err, want)
		}
	}

	res, err := runUserOp(ctx, flags, userRequest{Op: "list"})
	if err == nil {
		t.Errorf("users list with config B listed A's users: %+v", res.Users)
	}
	check("users list", err)
	_, err = runUserOp(ctx, flags, userRequest{Op: "add", Email: "mallory@example.com", Password: "mallory's long password"})
	check("users add", err)
	_, err = runKeysOp(ctx, flags, keysRequest{Op: "rotate"})
	check("keys rotate", err)
	var out strings.Builder
	c := &cobra.Command{}
	c.SetOut(&out)
	c.SetErr(io.Discard)
	check("audit export", exportAudit(c, flags, "", ""))
	check("audit replay", replayAudit(c, flags, "", ""))
	if out.Len() > 0 {
		t.Errorf("audit commands with config B wrote %q", out.String())
	}

	// A's store is as it was.
	code, body := e.adminPost("/sigra/users", `{"op":"list"}`)
	var users userResult
	if code != http.StatusOK || json.Unmarshal([]byte(body), &users) != nil || len(users.Users) != 1 {
		t.Errorf("A's users after the refused commands: status %d, %s; want only bob", code, body)
	}
	if got := e.rt().keys.ActiveKeyID(); got != kid {
		t.Errorf("A's signing key changed from %s to %s", kid, got)
	}

	// A path that Clean would make A's store is B's as the system
	// resolves it: <A's dir>/link/../sigra.db with link -> <B's dir>/sub.
	if err := os.Mkdir(filepath.Join(otherDir, "data3", "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(otherDir, "data3", "sub"), filepath.Join(e.dir, "link")); err != nil {
		t.Fatal(err)
	}
	writeB(e.dir+"/link/../sigra.db", e.admin)
	res, err = runUserOp(ctx, flags, userRequest{Op: "list"})
	if err == nil {
		t.Errorf("users list with B's store spelt as <A's dir>/link/../sigra.db listed A's users: %+v", res.Users)
	} else if !strings.Contains(err.Error(), "names "+resolved(t, other)) {
		t.Errorf("users list with B's store spelt through a link: %v; want it to name %s", err, other)
	}

	// A config naming A's own store works, however it spells the path.
	aliasDir := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(e.dir, aliasDir); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{e.store(), filepath.Join(aliasDir, "sigra.db"), e.dir + "//./sigra.db"} {
		writeB(path, e.admin)
		if res, err := runUserOp(ctx, flags, userRequest{Op: "list"}); err != nil || len(res.Users) != 1 {
			t.Errorf("users list with A's store as %s: %v; want bob", path, err)
		}
	}
}

// resolved is path with symbolic links resolved, as storeFile has it.
func resolved(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Each CLI endpoint of the admin API checks the store the request names:
// none (an older client) and a relative path are 400s; another store is a
// 421 that names both.
func TestAdminCLIStoreParameter(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	other := filepath.Join(t.TempDir(), "sigra.db")
	for _, c := range []struct{ method, uri, body string }{
		{http.MethodPost, "/sigra/users", `{"op":"list"}`},
		{http.MethodPost, "/sigra/keys", `{"op":"list"}`},
		{http.MethodPost, "/sigra/bans", `{"op":"list"}`},
		{http.MethodGet, "/sigra/audit/export", ``},
		{http.MethodPost, "/sigra/audit/replay", ``},
	} {
		q := func(store string) string {
			return c.uri + "?" + url.Values{"store": {store}}.Encode()
		}
		if code, body := e.adminDo(c.method, q(e.store()), c.body); code != http.StatusOK {
			t.Errorf("%s %s naming its store: status %d, %s; want 200", c.method, c.uri, code, body)
		}
		if code, body := e.adminDo(c.method, c.uri, c.body); code != http.StatusBadRequest || !strings.Contains(apiErrorText(body), "names no store") {
			t.Errorf("%s %s naming no store: status %d, %s; want 400", c.method, c.uri, code, body)
		}
		if code, body := e.adminDo(c.method, q("sigra.db"), c.body); code != http.StatusBadRequest || !strings.Contains(apiErrorText(body), "not an absolute path") {
			t.Errorf("%s %s naming a relative store: status %d, %s; want 400", c.method, c.uri, code, body)
		}
		twice := c.uri + "?" + url.Values{"store": {e.store(), other}}.Encode()
		if code, body := e.adminDo(c.method, twice, c.body); code != http.StatusBadRequest || !strings.Contains(apiErrorText(body), "more than once") {
			t.Errorf("%s %s naming two stores: status %d, %s; want 400", c.method, c.uri, code, body)
		}
		want := fmt.Sprintf("this Caddy runs the Sigra store %s, but the request names %s", resolved(t, e.store()), filepath.Join(resolved(t, filepath.Dir(other)), "sigra.db"))
		if code, body := e.adminDo(c.method, q(other), c.body); code != http.StatusMisdirectedRequest || apiErrorText(body) != want {
			t.Errorf("%s %s naming another store: status %d, %s; want 421 %q", c.method, c.uri, code, body, want)
		}
	}
}

// An export range that ends before it starts is the request's mistake: a
// 400 that says so, from the admin API and from the CLI before it asks.
func TestAuditExportRangeBackwards(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	q := url.Values{"store": {e.store()}, "since": {"2030-01-01"}, "until": {"2020-01-01"}}
	if code, body := e.adminDo(http.MethodGet, "/sigra/audit/export?"+q.Encode(), ""); code != http.StatusBadRequest || !strings.Contains(apiErrorText(body), "since 2030-01-01T00:00:00Z is after until") {
		t.Errorf("since after until: status %d, %s; want 400 naming both", code, body)
	}
	if _, _, err := exportRange("2030-01-01", "2020-01-01", time.Now()); !errors.Is(err, audit.ErrBadTime) {
		t.Errorf("exportRange since after until: %v; want ErrBadTime", err)
	}
}

// A user's groups are bounded so that the audit row names every one: a
// grant at the end of a longer list was cut from the row's metadata (and
// X-Sigra-Groups grew without bound). The bound counts the admin group
// that --admin adds.
func TestGroupsBoundedByTheAuditRow(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("root@example.com", "admins")
	e.addUser("gil@example.com", "dev")
	cfPath := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(e.config), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := cliFlags{config: cfPath, adapter: "caddyfile"}
	var groups []string // 15 × 64 bytes and 14 commas: 974
	for i := range 15 {
		groups = append(groups, fmt.Sprintf("%02d", i)+strings.Repeat("g", 62))
	}
	// With ",admins" that is 981; with a 43-byte group as well, 1025.
	over := append(slices.Clone(groups), strings.Repeat("x", 43))
	if _, err := runUserOp(context.Background(), flags, userRequest{Op: "groups", User: "gil@example.com", Groups: over, Admin: true}); err == nil || !strings.Contains(err.Error(), "at most 1024 bytes") {
		t.Errorf("1025 bytes of groups with --admin: %v; want an error naming the bound", err)
	}
	if rows := e.auditRows("admin.user.groups"); len(rows) != 0 {
		t.Errorf("a refused groups change wrote rows: %+v", rows)
	}
	fits := append(slices.Clone(groups), strings.Repeat("x", 42))
	if _, err := runUserOp(context.Background(), flags, userRequest{Op: "groups", User: "gil@example.com", Groups: fits, Admin: true}); err != nil {
		t.Fatalf("1024 bytes of groups with --admin: %v", err)
	}
	rows := e.auditRows("admin.user.groups")
	want := strings.Join(append(fits, "admins"), ",")
	if len(rows) != 1 || rows[0].Metadata["groups"] != want || !strings.HasSuffix(rows[0].Metadata["added"], ",admins") {
		t.Errorf("admin.user.groups rows %+v; want the whole list, and admins among the added", rows)
	}
}

// `users groups` sets a user's groups, the admin group with --admin, in
// the running Caddy: the user's session carries them from its next
// request, and the row names the new groups. An unknown user is an error.
func TestCLIUserGroups(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("gus@example.com", "dev")
	e.addUser("root@example.com", "admins") // so gus may leave the admin group again
	e.mustLogin("gus@example.com")
	cfPath := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(e.config), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := cliFlags{config: cfPath, adapter: "caddyfile"}
	groupsNow := func() string {
		t.Helper()
		e.get("/whoami", nil)
		h, _ := e.up.last()
		return h.Get(hdrGroups)
	}
	if g := groupsNow(); g != "dev" {
		t.Fatalf("X-Sigra-Groups before: %q; want dev", g)
	}
	res, err := runUserOp(context.Background(), flags, userRequest{Op: "groups", User: "gus@example.com", Groups: []string{"ops", " dev"}, Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.User.Groups, ","); got != "ops,dev,admins" {
		t.Errorf("groups after the change: %q; want ops,dev,admins", got)
	}
	if g := groupsNow(); g != "ops,dev,admins" {
		t.Errorf("X-Sigra-Groups after the change: %q; want ops,dev,admins at once", g)
	}
	rows := e.auditRows("admin.user.groups")
	if len(rows) != 1 || rows[0].SubjectID != u.ID || rows[0].ActorType != "system" || rows[0].Metadata["groups"] != "ops,dev,admins" || rows[0].IP != "127.0.0.1" {
		t.Errorf("admin.user.groups rows %+v; want one about the user, by the system, naming the groups, from the CLI's address", rows)
	}
	if _, err := runUserOp(context.Background(), flags, userRequest{Op: "groups", User: "gus@example.com", Groups: []string{}}); err != nil {
		t.Fatal(err)
	}
	if g := groupsNow(); g != "" {
		t.Errorf("X-Sigra-Groups after clearing: %q; want none", g)
	}
	// Keep adds to the groups the user has (users groups --admin
	// without --groups): it takes none away.
	for _, req := range []userRequest{{Groups: []string{"ops"}}, {Groups: []string{}, Admin: true, Keep: true}, {Groups: []string{"dev", "ops"}, Keep: true}} {
		req.Op, req.User = "groups", "gus@example.com"
		if _, err := runUserOp(context.Background(), flags, req); err != nil {
			t.Fatal(err)
		}
	}
	if g := groupsNow(); g != "ops,admins,dev" {
		t.Errorf("X-Sigra-Groups after ops, then the admin group kept with them, then dev and ops kept: %q; want ops,admins,dev", g)
	}
	if rows := e.auditRows("admin.user.groups"); len(rows) != 5 || rows[1].Metadata["previous"] != "ops" || rows[1].Metadata["added"] != "admins" || rows[1].Metadata["removed"] != "" {
		t.Errorf("the row of the admin group added: %+v; want previous ops, added admins, nothing removed", rows[1])
	}
	// Keeping takes no one out of the admin group, so it is never
	// refused as leaving no admin, even from the last one.
	if _, err := runUserOp(context.Background(), flags, userRequest{Op: "groups", User: "root@example.com", Groups: []string{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := runUserOp(context.Background(), flags, userRequest{Op: "groups", User: "gus@example.com", Groups: []string{"x"}, Keep: true}); err != nil {
		t.Errorf("adding a group to the last admin, keeping the others: %v; want it done", err)
	}
	if _, err := runUserOp(context.Background(), flags, userRequest{Op: "groups", User: "nobody@example.com", Groups: []string{"x"}}); err == nil {
		t.Error("groups of an unknown user: no error")
	}
	// A user added with groups: the row says which (the admin group
	// above all).
	added, err := runUserOp(context.Background(), flags, userRequest{Op: "add", Email: "ada@example.com", Groups: []string{"ops"}, Admin: true, Password: "ada's long password"})
	if err != nil {
		t.Fatal(err)
	}
	rows = e.auditRows("admin.user.add")
	if len(rows) != 1 || rows[0].SubjectID != added.User.ID || rows[0].Metadata["groups"] != "ops,admins" {
		t.Errorf("admin.user.add rows %+v; want one about ada naming ops,admins", rows)
	}
	// The user and the row are one transaction: the row refused, no
	// admin is made unrecorded.
	e.failAudit("admin.user.add")
	if _, err := runUserOp(context.Background(), flags, userRequest{Op: "add", Email: "eve@example.com", Admin: true, Password: "eve's long password"}); err == nil || !strings.Contains(err.Error(), "the user was not added") {
		t.Errorf("add with its row failing: %v; want it refused, nothing added", err)
	}
	e.failAudit("")
	if _, err := e.rt().auth.LookupUser(context.Background(), "eve@example.com"); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("an admin was added without its row: %v", err)
	}
}

func TestHasLoneSurrogate(t *testing.T) {
	for body, want := range map[string]bool{
		`{"g":["dev"]}`:              false,
		`{"g":["\ud83d\ude00"]}`:     false, // a pair: 😀
		`{"g":["\\ud800"]}`:          false, // an escaped backslash, then text
		`{"g":["a\\\\ud800"]}`:       false,
		`{"g":["dev\ud800"]}`:        true,
		`{"g":["dev\udc00"]}`:        true,
		`{"g":["\ud800\u0041"]}`:     true,
		`{"g":["\ud800\\ude00"]}`:    true,
		`{"g":["\uD800"]}`:           true,
		`{"g":["x"]} "\ud800`:        true,
		`{"g":["\u00e9\u20ac\u00"]}`: false,
	} {
		if got := hasLoneSurrogate([]byte(body)); got != want {
			t.Errorf("hasLoneSurrogate(%s) = %v; want %v", body, got, want)
		}
	}
}

// checkKeys tells keys from values at every depth: the same key in
// sibling objects is fine, twice in one object is not.
func TestCheckKeysNesting(t *testing.T) {
	for body, want := range map[string]string{
		`{"a":{"x":1,"y":[1,{"x":2}]},"b":[{"x":1},{"x":2}],"c":"x"}`: "",
		`{"a":[],"b":{},"c":[[{"x":"x"}]],"x":{"a":1}}`:               "",
		`{"a":{"x":1,"x":2}}`:           `"x" is given twice`,
		`{"a":[{"x":1},{"y":1,"y":2}]}`: `"y" is given twice`,
		`{"a":{},"a":1}`:                `"a" is given twice`,
		`{"A":{"op":1}}`:                `unknown field "A" (the field is "a")`,
	} {
		err := checkKeys([]byte(body), []string{"a", "b", "c", "x"})
		if got := fmt.Sprint(err); want == "" && err != nil || want != "" && !strings.Contains(got, want) {
			t.Errorf("%s: %v; want %q", body, err, want)
		}
	}
}

// An export through the running Caddy that fails part way must not look
// complete: the 200 and the first rows are out by then, so the answer is
// cut short, which the HTTP client sees as an error and the CLI exits
// non-zero with, instead of an error object read as one more row.
func TestAuditExportFailingPartWayIsCutShort(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	ctx := context.Background()
	for range 1500 {
		if err := e.rt().audit.Record(ctx, audit.Row{Action: "session.revoked", ActorType: audit.ActorSystem, SubjectID: "s", Outcome: "success"}); err != nil {
			t.Fatal(err)
		}
	}
	// A row the store cannot decode, in the second chunk of the export.
	e.offline(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("sigra/v1")).Bucket([]byte("audit_rows"))
		c := b.Cursor()
		k, _ := c.First()
		for range 1200 {
			k, _ = c.Next()
		}
		return b.Put(append([]byte(nil), k...), []byte("{not json"))
	})

	resp, err := http.Get("http://" + e.admin + "/sigra/audit/export?" + url.Values{"store": {e.store()}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("an export that failed after %d bytes read as complete (status %d); want the answer cut short", len(body), resp.StatusCode)
	}
	if strings.Contains(string(body), `"error"`) {
		t.Errorf("the export's rows end with an error object, which readers take for a row")
	}

	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfg, []byte(e.config), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	c := &cobra.Command{}
	c.SetContext(ctx)
	c.SetOut(&out)
	c.SetErr(io.Discard)
	if err := exportAudit(c, cliFlags{config: cfg}, "", ""); err == nil {
		t.Errorf("caddy sigra audit export of a store that fails part way: no error after %d bytes", out.Len())
	}
}

// A config that does not use Sigra is the wrong file for the CLI: it is
// refused, naming it, instead of answering from the default store. One
// that uses Sigra only through its directives (no sigra options) is fine.
func TestCLIRefusesAConfigWithoutSigra(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := write("plain.Caddyfile", "http://127.0.0.1:9 {\n\trespond ok\n}\n")
	if _, err := loadAppConfig(plain, "caddyfile"); err == nil || !strings.Contains(err.Error(), plain+" does not use Sigra") {
		t.Errorf("a Caddyfile without Sigra: %v; want it refused, naming the file", err)
	}
	plainJSON := write("plain.json", `{"apps":{"http":{"servers":{"a":{"listen":[":9"]}}}}}`)
	if _, err := loadAppConfig(plainJSON, ""); err == nil || !strings.Contains(err.Error(), "does not use Sigra") {
		t.Errorf("a JSON config without Sigra: %v; want it refused", err)
	}
	// An empty file (one cut short, say) is no config that uses Sigra.
	empty := write("empty.json", "")
	if _, err := loadAppConfig(empty, ""); err == nil || !strings.Contains(err.Error(), empty+" is empty") {
		t.Errorf("an empty JSON config: %v; want it refused, naming the file", err)
	}
	// As caddy adapt --pretty writes it: a .json file is read as written.
	pretty := write("pretty.json", "{\n  \"apps\": {\n    \"http\": {\"servers\": {\"a\": {\"listen\": [\":9\"], \"routes\": [{\"handle\": [\n      {\"handler\": \"sigra_portal\"}]}]}}}\n  }\n}\n")
	if _, err := loadAppConfig(pretty, ""); err != nil {
		t.Errorf("an indented JSON config with sigra_portal: %v; want the default store", err)
	}
	portalOnly := write("portal.Caddyfile", "http://127.0.0.1:9 {\n\tsigra_portal\n\trespond ok\n}\n")
	if cfg, err := loadAppConfig(portalOnly, "caddyfile"); err != nil || !strings.HasSuffix(cfg.store, filepath.Join("sigra", "sigra.db")) {
		t.Errorf("a Caddyfile with only sigra_portal: %+v, %v; want the default store", cfg, err)
	}
	options := write("options.Caddyfile", "{\n\tsigra {\n\t\tstorage bbolt "+filepath.Join(dir, "s.db")+"\n\t}\n}\n")
	if cfg, err := loadAppConfig(options, "caddyfile"); err != nil || cfg.store != filepath.Join(dir, "s.db") {
		t.Errorf("a Caddyfile with sigra options only: %+v, %v; want its store", cfg, err)
	}
}

// cliCaddyfile writes, in dir, a Caddyfile with Sigra's store at path
// and Caddy's admin endpoint at admin, and returns its path.
func cliCaddyfile(t *testing.T, dir, admin, path string) string {
	t.Helper()
	cfg := filepath.Join(dir, "Caddyfile")
	cf := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tsigra {\n\t\tstorage bbolt %s\n\t\tbootstrap_admin off\n\t}\n}\n", admin, path)
	if err := os.WriteFile(cfg, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A command that finds the store locked and no Caddy answering on the
// config's admin address waits for the lock as a start would: another
// command working offline holds it for a moment, and the two must not
// fail for being run together.
func TestCLIWaitsForAnotherOfflineCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sigra.db")
	st, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cliCaddyfile(t, dir, fmt.Sprintf("127.0.0.1:%d", freePort(t)), path)
	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond) // past the 100 ms a command first waits
		st.Close()
		close(released)
	}()
	var said strings.Builder
	old := cliStderr
	cliStderr = &said
	defer func() { cliStderr = old }()
	res, err := runUserOp(context.Background(), cliFlags{config: cfg, adapter: "caddyfile"}, userRequest{Op: "list"})
	<-released
	if err != nil {
		t.Fatalf("users list while another offline command held the store for 300 ms: %v", err)
	}
	if !strings.Contains(said.String(), "is locked by another process and no Caddy answers for it: waiting up to") {
		t.Errorf("the command waited without a word; stderr: %q", said.String())
	}
	if len(res.Users) != 0 {
		t.Errorf("users list on an empty store: %+v", res.Users)
	}
}

// A Caddy that dies after the CLI's request reached it may have done the
// work: the CLI says the outcome is unknown and does not do it again on
// the store the dead Caddy left unlocked (an add would be refused as a
// duplicate, or succeed a second time, a delete said not found, a
// rotation made twice). Here a listener at the admin address reads the
// request, frees the store as a killed Caddy would, and hangs up.
func TestCLIDoesNotRedoWhenCaddyDiesMidRequest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sigra.db")
	st, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := cliCaddyfile(t, dir, ln.Addr().String(), path)
	got := make(chan string, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err != nil { // a probe that only connects
				c.Close()
				continue
			}
			_, _ = io.Copy(io.Discard, req.Body)
			got <- req.URL.Path // before the hang-up the CLI reacts to
			st.Close()          // "killed": the lock goes with the process
			c.Close()
			return
		}
	}()
	_, err = runUserOp(context.Background(), cliFlags{config: cfg, adapter: "caddyfile"}, userRequest{Op: "add", Email: "new@example.com", Password: "a long enough password"})
	if err == nil || !strings.Contains(err.Error(), "may or may not have been done") {
		t.Errorf("users add when Caddy dies after taking the request: %v; want the outcome said to be unknown", err)
	}
	select {
	case p := <-got:
		if p != "/sigra/users" {
			t.Errorf("the admin endpoint got %s; want /sigra/users", p)
		}
	default:
		t.Fatal("the request never reached the admin endpoint")
	}
	check, err := store.OpenBolt(path, store.BoltOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	if _, err := check.UserByEmail(context.Background(), "new@example.com"); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("the CLI added the user itself after the request went through the admin endpoint (lookup: %v)", err)
	}
}

// A Caddy that took a CLI request and never answers (stopped with
// SIGSTOP, say) held the command silent for good: after a while the
// command says it is still waiting, and what Ctrl-C would leave.
func TestAdminRequestSaysItIsStillWaiting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	hangUp := func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	defer hangUp()
	cfPath := filepath.Join(t.TempDir(), "Caddyfile")
	cf := fmt.Sprintf("{\n\tadmin %s\n\tsigra {\n\t\tstorage bbolt %s\n\t}\n}\n\nhttp://127.0.0.1:1 {\n\tsigra_portal\n\tsigra_gate\n}\n", ln.Addr(), filepath.Join(t.TempDir(), "sigra.db"))
	if err := os.WriteFile(cfPath, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadAppConfig(cfPath, "caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	var out syncWriter
	wait, stderr := adminWaitNotice, cliStderr
	adminWaitNotice, cliStderr = 50*time.Millisecond, &out
	defer func() { adminWaitNotice, cliStderr = wait, stderr }()
	done := make(chan error, 1)
	go func() {
		_, err := adminRequest(cfg, http.MethodPost, "/sigra/users", strings.NewReader(`{"op":"list"}`), false)
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "still waiting for the Caddy at "+ln.Addr().String()); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no notice while the admin endpoint stays silent; stderr %q", out.String())
		}
	}
	hangUp()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "may or may not have been done") {
		t.Errorf("the silent Caddy hung up: %v; want the may-or-may-not error", err)
	}
}

// syncWriter is a strings.Builder safe for a writer and a reader apart.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// users add with a config whose relative storage path, read from another
// directory, names no store made a second store there that the running
// Caddy never reads (its users then could not sign in). When a Caddy at
// the config's admin address runs another store, the command refuses,
// naming both, and makes nothing.
func TestUserAddRefusesAStoreBesideTheRunningOne(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	dir := t.TempDir()
	rel := strings.Replace(e.config, "storage bbolt "+e.store(), "storage bbolt elsewhere/sigra.db", 1)
	if rel == e.config {
		t.Fatal("the test config names no store to replace")
	}
	cfPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(rel), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	_, err := runUserOp(context.Background(), cliFlags{config: cfPath, adapter: "caddyfile"},
		userRequest{Op: "add", Email: "ann@example.com", Password: "ann's long password"})
	if err == nil || !strings.Contains(err.Error(), "nothing was done") || !strings.Contains(err.Error(), resolved(t, e.store())) {
		t.Errorf("users add naming a store beside the running Caddy's: %v; want an error naming the running store", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "elsewhere")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused command made %s (%v)", filepath.Join(dir, "elsewhere"), err)
	}
	if _, err := e.rt().auth.LookupUser(context.Background(), "ann@example.com"); err == nil {
		t.Error("the refused add reached the running Caddy's store")
	}
}

// Before making a store, users add asks whatever answers at the config's
// admin address only a keys list: the password never goes there, and a
// listener that is no Sigra Caddy leaves the command to make the store.
func TestUserAddAsksTheAdminAddressNothingSecret(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+string(b))
		mu.Unlock()
		http.NotFound(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	db := filepath.Join(dir, "sigra.db")
	cfPath := filepath.Join(dir, "Caddyfile")
	cf := fmt.Sprintf("{\n\tadmin %s\n\tsigra {\n\t\tstorage bbolt %s\n\t\tbootstrap_admin off\n\t}\n}\n\nhttp://127.0.0.1:1 {\n\tsigra_portal\n\tsigra_gate\n}\n", ln.Addr(), db)
	if err := os.WriteFile(cfPath, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	const pw = "ann's long secret password"
	if _, err := runUserOp(context.Background(), cliFlags{config: cfPath, adapter: "caddyfile"},
		userRequest{Op: "add", Email: "ann@example.com", Password: pw}); err != nil {
		t.Fatalf("users add beside a listener that is no Sigra Caddy: %v", err)
	}
	if _, err := os.Stat(db); err != nil {
		t.Errorf("the store was not made: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "/sigra/keys ") || strings.Contains(seen[0], pw) {
		t.Errorf("requests at the admin address: %q; want one keys list, no password", seen)
	}
}

// users add refuses a user it could not add (a short password, a bad
// email) before it creates a store, so a typo leaves no empty store
// behind for a later start to adopt.
func TestCLIAddRefusedLeavesNoStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "sigra.db")
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(fmt.Sprintf("{\n\tadmin 127.0.0.1:1\n\tsigra {\n\t\tstorage bbolt %s\n\t}\n}\n", path)), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := cliFlags{config: cf, adapter: "caddyfile"}
	// Groups that fit, until --admin adds the admin group to them.
	var full []string
	for i := 0; ; i++ {
		full = append(full, fmt.Sprintf("g%d", i))
		if _, err := authcore.NormalizeGroups(append(slices.Clone(full), "admins")); err != nil {
			break
		}
	}
	if _, err := authcore.NormalizeGroups(full); err != nil {
		t.Fatalf("the groups alone should fit: %v", err)
	}
	if _, err := authcore.NormalizeGroups(append(slices.Clone(full), "admins")); err == nil {
		t.Fatal("the groups with admins should not fit")
	}
	for _, req := range []userRequest{
		{Op: "add", Email: "ann@example.com", Password: "short"},
		{Op: "add", Email: "not an email", Password: "a long enough password"},
		{Op: "add", Email: "ann@example.com", Password: "a long enough password", Groups: full, Admin: true},
	} {
		if _, err := runUserOp(context.Background(), flags, req); !errors.Is(err, authcore.ErrInvalidInput) {
			t.Errorf("users add %+v: %v; want ErrInvalidInput", req, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after the refused users add %q: store %v; want none made", req.Email, err)
		}
	}
}

// --password-stdin takes the first line, and refuses more lines from a
// file or a pipe rather than drop them.
func TestReadPasswordOneLine(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"first-password-1\n", "first-password-1", false},
		{"first-password-1", "first-password-1", false},
		{"first-password-1\r\n\n  \n", "first-password-1", false},
		{"first-password-1\nsecond-line-2\n", "", true},
		{"\n", "", true},
		{"", "", true},
	} {
		got, err := readPassword(strings.NewReader(tc.in))
		if tc.err != (err != nil) || got != tc.want {
			t.Errorf("readPassword(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// endless is a stream of one byte without end, counting what was read.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += len(p)
	return len(p), nil
}

// A first line longer than any password is refused once it is, not read
// to its end (a file without a line end, /dev/zero).
func TestReadPasswordStopsAtAPasswordsLength(t *testing.T) {
	src := new(endless)
	if _, err := readPassword(src); err == nil || !strings.Contains(err.Error(), "longer than a password may be") {
		t.Errorf("readPassword(endless) error %v; want it refused as too long", err)
	}
	if src.n > 64<<10 {
		t.Errorf("read %d bytes of a line without end; want about a password's length", src.n)
	}
	long := strings.Repeat("p", authcore.MaxPasswordLen) + "\r\n"
	if got, err := readPassword(strings.NewReader(long)); err != nil || got != long[:authcore.MaxPasswordLen] {
		t.Errorf("readPassword(the longest password) = %d bytes, %v; want it whole", len(got), err)
	}
}

// From a pipe, readPassword takes what came with the first line and
// does not wait for the pipe's end, which a parent holding it open (or
// someone typing into docker exec -i) would never send; a second line
// written with the first is still refused.
func TestReadPasswordFromAnOpenPipe(t *testing.T) {
	for _, tc := range []struct {
		in  string
		err bool
	}{
		{"first-password-1\n", false},
		{"first-password-1\nsecond-line-2\n", true},
	} {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pw.WriteString(tc.in); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := readPassword(pr)
			done <- err
		}()
		select {
		case err := <-done:
			if tc.err != (err != nil) {
				t.Errorf("readPassword(pipe %q) error %v; want error %v", tc.in, err, tc.err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("readPassword(pipe %q) still waits for the pipe's end", tc.in)
		}
		pw.Close()
		pr.Close()
	}
}

// A flag given twice is refused before the command runs: the parser
// would keep the last, and users delete --email a --email b deleted b.
func TestCLIRefusesAFlagGivenTwice(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "Caddyfile")
	for _, args := range [][]string{
		{"users", "delete", "--config", missing, "--email", "a@example.com", "--email", "b@example.com"},
		{"users", "groups", "--config", missing, "--email", "w@example.com", "--groups", "dev", "--groups", ""},
		{"users", "add", "--config", missing, "--email", "d@example.com", "--admin", "--admin=false"},
		{"audit", "replay", "-c", missing, "--config", missing},
	} {
		root := &cobra.Command{Use: "sigra", SilenceUsage: true, SilenceErrors: true}
		buildSigraCommand(root)
		root.SetArgs(args)
		root.SetOut(io.Discard)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "given more than once") {
			t.Errorf("%q: %v; want it refused, a flag given more than once", args, err)
		}
	}
	// Once each, the command runs (and finds no config).
	root := &cobra.Command{Use: "sigra", SilenceUsage: true, SilenceErrors: true}
	buildSigraCommand(root)
	root.SetArgs([]string{"users", "delete", "--config", missing, "--email", "a@example.com"})
	root.SetOut(io.Discard)
	if err := root.Execute(); err == nil || strings.Contains(err.Error(), "more than once") || !strings.Contains(err.Error(), missing) {
		t.Errorf("flags given once: %v; want the command run, refusing the missing config", err)
	}
}
