package caddymodule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// adminPost posts body to uri on Caddy's admin endpoint (the way the CLI
// does) and returns the status and the answer.
func (e *env) adminPost(uri, body string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+e.admin+uri, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("POST %s: %v", uri, err)
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
