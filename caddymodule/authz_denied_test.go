package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// A signed-in user refused by a requirement leaves an authz.denied row,
// at most one per user, route and reason a minute; not being signed in
// is not an authorization decision and leaves none.
func TestGateWritesAuthzDenied(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", `
	sigra_gate
	sigra_gate /admin/* {
		group admins
	}
	sigra_gate /keys/* {
		amr otp
	}`)
	if resp, _ := e.get("/admin/x", jsonAccept); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous: status %d; want 401", resp.StatusCode)
	}
	if rows := e.auditRows("authz.denied"); len(rows) != 0 {
		t.Fatalf("an anonymous request wrote %d authz.denied rows; want none", len(rows))
	}

	u := e.addUser("mallory@example.com", "staff")
	e.mustLogin("mallory@example.com")
	for range 3 {
		if resp, _ := e.get("/admin/x", jsonAccept); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("non-admin on /admin/x: status %d; want 403", resp.StatusCode)
		}
	}
	rows := e.auditRows("authz.denied")
	if len(rows) != 1 {
		t.Fatalf("%d authz.denied rows after three refusals within a minute; want 1", len(rows))
	}
	r := rows[0]
	if r.ActorID != u.ID || r.SubjectID != u.ID || r.Outcome != "failure" || r.Metadata["reason"] != "group" ||
		r.Metadata["path"] != "/admin/x" || r.Metadata["method"] != "GET" || r.Metadata["session"] == "" || r.IP == "" {
		t.Errorf("row %+v; want the user as actor and subject, reason group, path, method, session and IP", r)
	}

	// Another reason on another route is a row of its own.
	if resp, _ := e.get("/keys/1", jsonAccept); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("password-only session on an amr otp route: status %d; want 403", resp.StatusCode)
	}
	if rows := e.auditRows("authz.denied"); len(rows) != 2 || rows[0].Metadata["reason"] != "amr" {
		t.Errorf("after an amr refusal: %d rows, newest reason %q; want 2 and amr", len(rows), rows[0].Metadata["reason"])
	}

	fake.Advance(time.Minute)
	e.get("/admin/y", jsonAccept)
	if rows := e.auditRows("authz.denied"); len(rows) != 3 || rows[0].Metadata["path"] != "/admin/y" {
		t.Errorf("a minute later: %d rows; want a third for /admin/y", len(rows))
	}

	// A long path is cut as every client string of a row is: whole
	// characters, and a mark saying so.
	fake.Advance(time.Minute)
	e.get("/admin/"+strings.Repeat("é", 200), jsonAccept)
	rows = e.auditRows("authz.denied")
	if got := rows[0].Metadata["path"]; len(rows) != 4 || len(got) > 256 || !utf8.ValidString(got) ||
		!strings.HasPrefix(got, "/admin/éé") || !strings.HasSuffix(got, "é…") {
		t.Errorf("%d rows, the newest path %q (%d bytes); want a fourth, cut to 256 bytes after a whole é and ended with …", len(rows), got, len(got))
	}
}

// The rate limit remembers a bounded number of keys.
func TestDeniedLogIsBounded(t *testing.T) {
	var l deniedLog
	t0 := time.Unix(1_800_000_000, 0)
	for i := range deniedLogMax {
		if _, due := l.due(deniedKey{user: fmt.Sprint(i), reason: "group"}, t0); !due {
			t.Fatalf("key %d not due the first time", i)
		}
	}
	if _, due := l.due(deniedKey{user: "0", reason: "group"}, t0.Add(59*time.Second)); due {
		t.Error("a key was due again within the minute")
	}
	if _, due := l.due(deniedKey{user: "new", reason: "group"}, t0.Add(time.Minute)); !due {
		t.Error("a new key was not due")
	}
	if len(l.last) != 1 {
		t.Errorf("%d keys kept after the old ones expired; want 1", len(l.last))
	}
	for i := range deniedLogMax + 5 {
		l.due(deniedKey{user: fmt.Sprint("x", i), reason: "group"}, t0.Add(2*time.Minute))
	}
	if len(l.last) > deniedLogMax {
		t.Errorf("%d keys kept; want at most %d", len(l.last), deniedLogMax)
	}
}

// A row that could not be written is due again at the next refusal, not
// a minute later: the refusal stands, and its row is written then. An
// undo that comes after the key was noted again takes nothing back.
func TestDeniedLogUndo(t *testing.T) {
	var l deniedLog
	k := deniedKey{user: "u1", reason: "group"}
	t0 := time.Unix(1_800_000_000, 0)
	undo, due := l.due(k, t0)
	if !due {
		t.Fatal("a new key was not due")
	}
	undo()
	if _, due := l.due(k, t0.Add(time.Second)); !due {
		t.Fatal("a key whose row could not be written was not due again")
	}
	undo() // late: the key's note is the second one's now
	if _, due := l.due(k, t0.Add(2*time.Second)); due {
		t.Error("an earlier undo took back a later note")
	}
	// Not due: its undo does nothing.
	undo3, due := l.due(k, t0.Add(3*time.Second))
	if due {
		t.Fatal("due twice within the minute")
	}
	undo3()
	if _, due := l.due(k, t0.Add(4*time.Second)); due {
		t.Error("the undo of a row that was not due took back the note")
	}
}

// A gate's refusal whose authz.denied row could not be written is
// refused all the same, and the next one writes the row.
func TestAuthzDeniedRowAfterAFailedWrite(t *testing.T) {
	useFakeClock(t)
	e := startCaddy(t, "", `
	sigra_gate
	sigra_gate /admin/* {
		group admins
	}`)
	e.addUser("mallory@example.com", "staff")
	e.mustLogin("mallory@example.com")
	e.failAudit("authz.denied")
	if resp, _ := e.get("/admin/x", jsonAccept); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("with its row failing: status %d; want 403", resp.StatusCode)
	}
	e.failAudit("")
	if resp, _ := e.get("/admin/x", jsonAccept); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d; want 403", resp.StatusCode)
	}
	if rows := e.auditRows("authz.denied"); len(rows) != 1 {
		t.Errorf("%d authz.denied rows after a refusal whose row failed and one more, within a second; want 1", len(rows))
	}
}

// The row names the path the client asked for, not what handle_path left.
func TestAuthzDeniedPathUnderHandlePath(t *testing.T) {
	useFakeClock(t)
	e := startCaddy(t, "", `
	handle_path /admin/* {
		sigra_gate {
			group admins
		}
	}`)
	e.addUser("mallory@example.com", "staff")
	e.mustLogin("mallory@example.com")
	if resp, _ := e.get("/admin/secret", jsonAccept); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d; want 403", resp.StatusCode)
	}
	rows := e.auditRows("authz.denied")
	if len(rows) != 1 || rows[0].Metadata["path"] != "/admin/secret" {
		t.Errorf("rows %+v; want one for /admin/secret", rows)
	}
}

// A non-member is told so before being asked for a second factor that
// would not make them one; a member is asked for it.
func TestGroupIsCheckedBeforeTheSecondFactor(t *testing.T) {
	useFakeClock(t)
	e := startCaddy(t, "", `
	sigra_gate
	sigra_gate /admin/* {
		group admins
		mfa
	}`)
	e.addUser("mallory@example.com", "staff")
	e.addUser("ada@example.com", "admins")
	e.mustLogin("mallory@example.com")
	if resp, body := e.get("/admin/x", jsonAccept); resp.StatusCode != http.StatusForbidden || problemReason(body) != "group" {
		t.Errorf("password-only non-member: status %d, %s; want 403 group", resp.StatusCode, body)
	}
	e.mustLogin("ada@example.com")
	if resp, body := e.get("/admin/x", jsonAccept); resp.StatusCode != http.StatusUnauthorized || problemReason(body) != "mfa_required" {
		t.Errorf("password-only member: status %d, %s; want 401 mfa_required", resp.StatusCode, body)
	}
}

// A signed-in user outside admin_group refused by the admin API or pages
// is an authz.denied row (reason admin_required), as a gate's refusal
// is: one per user a minute, however many requests probe. Nobody signed
// in, and an admin still to step up, write none.
func TestAdminRefusalIsAuthzDenied(t *testing.T) {
	fake := useFakeClock(t)
	e := startCaddy(t, "", "sigra_gate")
	root := e.addUser("root@example.com", "admins")
	u := e.addUser("nia@example.com")
	api := map[string]string{"Accept": "application/json"}
	if r, _ := e.get("/.sigra/api/admin/users", api); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("signed out: status %d; want 401", r.StatusCode)
	}
	e.mustLogin("nia@example.com")
	for _, path := range []string{"/.sigra/api/admin/users", "/.sigra/api/admin/audit", "/.sigra/admin"} {
		if r, _ := e.get(path, api); r.StatusCode != http.StatusForbidden {
			t.Fatalf("non-admin GET %s: status %d; want 403", path, r.StatusCode)
		}
	}
	rows := e.auditRows("authz.denied")
	if len(rows) != 1 || rows[0].ActorID != u.ID || rows[0].Outcome != "failure" || rows[0].Metadata["reason"] != "admin_required" ||
		rows[0].Metadata["path"] != "/.sigra/api/admin/users" || rows[0].Metadata["method"] != "GET" || rows[0].Metadata["session"] == "" {
		t.Fatalf("authz.denied rows %+v; want one by %s, reason admin_required, its path, method and session", rows, u.ID)
	}
	fake.Advance(time.Minute)
	if r, _ := e.get("/.sigra/admin/users", nil); r.StatusCode != http.StatusForbidden {
		t.Fatalf("non-admin admin page: status %d; want 403", r.StatusCode)
	}
	if rows := e.auditRows("authz.denied"); len(rows) != 2 || rows[0].Metadata["path"] != "/.sigra/admin/users" {
		t.Errorf("authz.denied rows a minute later %+v; want a second one, for the page", rows)
	}
	e.client.Jar, _ = newJar()
	e.mustLogin("root@example.com")
	if r, _ := e.get("/.sigra/api/admin/users", api); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin without a second factor: status %d; want 401", r.StatusCode)
	}
	for _, row := range e.auditRows("authz.denied") {
		if row.ActorID == root.ID {
			t.Errorf("an admin still to step up wrote %+v", row)
		}
	}
}
