package caddymodule

import (
	"encoding/json"
	"io"
	"net/http"
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
