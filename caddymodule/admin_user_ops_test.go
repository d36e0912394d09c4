package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// enrolTOTPFor gives u a confirmed authenticator app through the service,
// in a session of its own that then passes it, and returns that
// session's token.
func enrolTOTPFor(t *testing.T, e *env, u *authcore.User) string {
	t.Helper()
	ctx := context.Background()
	s, _ := mustSession(t, e, u)
	enr, err := e.rt().auth.BeginTOTP(ctx, u, s.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt().auth.ConfirmTOTP(ctx, u.ID, s.ID, enr.Page, refTOTP(t, enr.Secret, e.rt().auth.Now())); err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.rt().auth.CompleteSecondFactor(ctx, s.ID, authcore.AMROTP, false)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// apiPost posts to the admin JSON API as the signed-in admin and returns
// the status and body.
func (e *env) apiPost(path string) (int, string) {
	e.t.Helper()
	hdr := map[string]string{"Accept": "application/json", "Origin": e.base, "X-CSRF-Token": e.adminCSRF()}
	r := e.do(http.MethodPost, "/.sigra/api/admin"+path, hdr, nil)
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	return r.StatusCode, string(b)
}

// An admin resets a user's second factor from the user's page: the
// authenticator app, the recovery codes and every session go, the user
// signs in with the password alone, and the row is mfa.totp.removed by
// the admin. A user without one, and the admin's own account, are
// refused with 409 and no row.
func TestAdminResetsSecondFactor(t *testing.T) {
	e, root, target := startAdminUI(t)
	ctx := context.Background()
	tok := enrolTOTPFor(t, e, target)
	if code := e.statusAs(tok, "/x"); code != http.StatusOK {
		t.Fatalf("the user's session before: status %d", code)
	}
	page := "/.sigra/admin/users/" + target.ID
	body := mustPage(t, e, page)
	if !strings.Contains(body, `data-sigra="admin-user-mfa-reset"`) {
		t.Fatal("the page of a user with a second factor has no reset form")
	}
	if own := mustPage(t, e, "/.sigra/admin/users/"+root.ID); strings.Contains(own, `data-sigra="admin-user-mfa-reset"`) || strings.Contains(own, `data-sigra="admin-user-delete"`) {
		t.Error("the admin's own page offers to reset or delete their account")
	}
	if r, _ := e.postForm(page+"/mfa-reset", url.Values{}, nil); r.StatusCode != http.StatusForbidden {
		t.Errorf("reset without the CSRF token: status %d; want 403", r.StatusCode)
	}
	if has, _ := e.rt().auth.HasTOTP(ctx, target.ID); !has {
		t.Fatal("a refused form removed the authenticator")
	}

	r, _ := e.postForm(page+"/mfa-reset", url.Values{"csrf_token": {csrfFrom(t, body)}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != page {
		t.Fatalf("reset: status %d Location %q; want 303 to the user's page", r.StatusCode, r.Header.Get("Location"))
	}
	if has, _ := e.rt().auth.HasTOTP(ctx, target.ID); has {
		t.Error("the authenticator is still there")
	}
	if u, _ := e.rt().store.UserByID(ctx, target.ID); u.SecondFactor {
		t.Error("the user still counts as having a second factor")
	}
	if n, err := e.rt().auth.RecoveryCodesLeft(ctx, target.ID); n != 0 {
		t.Errorf("%d recovery codes left (%v); want none", n, err)
	}
	if code := e.statusAs(tok, "/x"); code != http.StatusUnauthorized {
		t.Errorf("the user's session after the reset: status %d; want 401", code)
	}
	b := e.browser()
	if resp := b.login("target@example.com", testPassword, "/"); resp.StatusCode != http.StatusSeeOther || strings.Contains(resp.Header.Get("Location"), "/mfa") {
		t.Errorf("sign-in after the reset: status %d Location %q; want straight in with the password", resp.StatusCode, resp.Header.Get("Location"))
	}
	assertAdminRow(t, e, "mfa.totp.removed", root.ID, target.ID)

	// Again: nothing to reset. Through the API, the same.
	if code, body := e.apiPost("/users/" + target.ID + "/mfa-reset"); code != http.StatusConflict || !strings.Contains(body, "no authenticator app") {
		t.Errorf("resetting a user without one: status %d; want 409 saying why\n%s", code, body)
	}
	if code, body := e.apiPost("/users/" + root.ID + "/mfa-reset"); code != http.StatusConflict || !strings.Contains(body, "your own second factor") {
		t.Errorf("resetting one's own: status %d; want 409 saying why\n%s", code, body)
	}
	if has, _ := e.rt().auth.HasTOTP(ctx, root.ID); !has {
		t.Error("the refused self-reset removed the admin's authenticator")
	}
	if rows := e.auditRows("mfa.totp.removed"); len(rows) != 1 {
		t.Errorf("%d mfa.totp.removed rows; want 1 (refusals write none)", len(rows))
	}
}

// An admin deletes a user from the user's page, after ticking the box:
// the account and its sessions go, and the row is
// account.deletion_execute by the admin, as for a user deleting their
// own account, so one action covers every deletion.
func TestAdminDeletesUser(t *testing.T) {
	e, root, target := startAdminUI(t)
	ctx := context.Background()
	_, tok := mustSession(t, e, target)
	page := "/.sigra/admin/users/" + target.ID
	body := mustPage(t, e, page)
	if !strings.Contains(body, `data-sigra="admin-user-delete"`) {
		t.Fatal("the user's page has no delete form")
	}
	csrf := csrfFrom(t, body)
	if r, _ := e.postForm(page+"/delete", url.Values{"csrf_token": {csrf}}, nil); r.StatusCode != http.StatusBadRequest {
		t.Errorf("delete without ticking the box: status %d; want 400", r.StatusCode)
	}
	if r, _ := e.postForm(page+"/delete", url.Values{"confirm": {"yes"}}, nil); r.StatusCode != http.StatusForbidden {
		t.Errorf("delete without the CSRF token: status %d; want 403", r.StatusCode)
	}
	if _, err := e.rt().store.UserByID(ctx, target.ID); err != nil {
		t.Fatalf("a refused form deleted the user: %v", err)
	}

	r, _ := e.postForm(page+"/delete", url.Values{"csrf_token": {csrf}, "confirm": {"yes"}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.sigra/admin/users" {
		t.Fatalf("delete: status %d Location %q; want 303 to the user list", r.StatusCode, r.Header.Get("Location"))
	}
	if _, err := e.rt().store.UserByID(ctx, target.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("the user after deletion: %v; want ErrNotFound", err)
	}
	if code := e.statusAs(tok, "/x"); code != http.StatusUnauthorized {
		t.Errorf("the user's session after deletion: status %d; want 401", code)
	}
	assertAdminRow(t, e, "account.deletion_execute", root.ID, target.ID)
	if code, _ := e.apiPost("/users/" + target.ID + "/delete"); code != http.StatusNotFound {
		t.Errorf("deleting them again: status %d; want 404", code)
	}
	if code, body := e.apiPost("/users/" + root.ID + "/delete"); code != http.StatusConflict || !strings.Contains(body, "your account page") {
		t.Errorf("deleting oneself through the API: status %d; want 409 saying where\n%s", code, body)
	}
	if _, err := e.rt().store.UserByID(ctx, root.ID); err != nil {
		t.Fatalf("the refused self-delete: %v", err)
	}
	if rows := e.auditRows("account.deletion_execute"); len(rows) != 1 {
		t.Errorf("%d account.deletion_execute rows; want 1 (refusals write none)", len(rows))
	}
}

// An admin signs a user out everywhere from the user's page or the API:
// every session of theirs ends, nothing else changes (they sign in again
// with the same password), and the row is admin.user.signout by the
// admin. Other users' sessions stay. The CLI does the same as the
// system.
func TestAdminSignsUserOutEverywhere(t *testing.T) {
	e, root, target := startAdminUI(t)
	ctx := context.Background()
	_, tok1 := mustSession(t, e, target)
	_, tok2 := mustSession(t, e, target)
	page := "/.sigra/admin/users/" + target.ID
	body := mustPage(t, e, page)
	if !strings.Contains(body, `data-sigra="admin-user-signout"`) {
		t.Fatal("the user's page has no sign-out form")
	}
	if own := mustPage(t, e, "/.sigra/admin/users/"+root.ID); strings.Contains(own, `data-sigra="admin-user-signout"`) {
		t.Error("the admin's own page offers to sign them out everywhere; their account page does that, keeping this session")
	}
	if r, _ := e.postForm(page+"/signout", url.Values{}, nil); r.StatusCode != http.StatusForbidden {
		t.Errorf("without the CSRF token: status %d; want 403", r.StatusCode)
	}
	if code := e.statusAs(tok1, "/x"); code != http.StatusOK {
		t.Fatalf("the user's session after a refused form: status %d; want kept", code)
	}
	before, err := e.rt().store.UserByID(ctx, target.ID)
	if err != nil {
		t.Fatal(err)
	}

	r, _ := e.postForm(page+"/signout", url.Values{"csrf_token": {csrfFrom(t, body)}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != page {
		t.Fatalf("sign out: status %d Location %q; want 303 to the user's page", r.StatusCode, r.Header.Get("Location"))
	}
	for i, tok := range []string{tok1, tok2} {
		if code := e.statusAs(tok, "/x"); code != http.StatusUnauthorized {
			t.Errorf("the user's session %d after: status %d; want 401", i, code)
		}
	}
	if r, _ := htmlGet(e, "/.sigra/admin"); r.StatusCode != http.StatusOK {
		t.Errorf("the admin's own session after: status %d; want 200", r.StatusCode)
	}
	after, err := e.rt().store.UserByID(ctx, target.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Disabled || after.PasswordHash != before.PasswordHash || !slices.Equal(after.Groups, before.Groups) {
		t.Errorf("the user after: disabled %t, password changed %t, groups %q; want only the sessions gone", after.Disabled, after.PasswordHash != before.PasswordHash, after.Groups)
	}
	assertAdminRow(t, e, "admin.user.signout", root.ID, target.ID)
	b := e.browser()
	b.mustLogin("target@example.com")

	// The API, the same; a user that does not exist is 404 with no row.
	if code, body := e.apiPost("/users/" + target.ID + "/signout"); code != http.StatusOK || !strings.Contains(body, target.ID) {
		t.Errorf("through the API: status %d; want 200 with the user\n%s", code, body)
	}
	if code := e.statusAs(b.sessionCookie(), "/x"); code != http.StatusUnauthorized {
		t.Errorf("the session signed in again, after the API's sign-out: status %d; want 401", code)
	}
	if code, _ := e.apiPost("/users/nobody/signout"); code != http.StatusNotFound {
		t.Errorf("an unknown user: status %d; want 404", code)
	}
	if code, body := e.apiPost("/users/" + root.ID + "/signout"); code != http.StatusConflict || !strings.Contains(body, "your account page") {
		t.Errorf("signing oneself out everywhere: status %d; want 409 saying where\n%s", code, body)
	}
	if r, _ := htmlGet(e, "/.sigra/admin"); r.StatusCode != http.StatusOK {
		t.Errorf("the admin's session after the refusal: status %d; want 200", r.StatusCode)
	}
	if rows := e.auditRows("admin.user.signout"); len(rows) != 2 {
		t.Errorf("%d admin.user.signout rows; want 2", len(rows))
	}

	// The CLI, through the running Caddy.
	b.mustLogin("target@example.com")
	cfPath := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(e.config), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runUserOp(ctx, cliFlags{config: cfPath, adapter: "caddyfile"}, userRequest{Op: "signout", User: "target@example.com"}); err != nil {
		t.Fatal(err)
	}
	if code := e.statusAs(b.sessionCookie(), "/x"); code != http.StatusUnauthorized {
		t.Errorf("the session after the CLI's sign-out: status %d; want 401", code)
	}
	if rows := e.auditRows("admin.user.signout"); len(rows) != 3 || rows[0].ActorType != audit.ActorSystem || rows[0].SubjectID != target.ID {
		t.Errorf("admin.user.signout rows %+v; want the newest by the system about the user", rows)
	}
}

// The CLI, through the running Caddy, resets a second factor and deletes
// users, as the system; it refuses to delete the only administrator.
func TestCLIUserMFAResetAndDelete(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	root := e.addUser("root@example.com", "admins")
	u := e.addUser("lost@example.com")
	tok := enrolTOTPFor(t, e, u)
	cfPath := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(e.config), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := cliFlags{config: cfPath, adapter: "caddyfile"}
	ctx := context.Background()

	if _, err := runUserOp(ctx, flags, userRequest{Op: "mfa-reset", User: "lost@example.com"}); err != nil {
		t.Fatal(err)
	}
	if has, _ := e.rt().auth.HasTOTP(ctx, u.ID); has {
		t.Error("mfa-reset left the authenticator")
	}
	if code := e.statusAs(tok, "/x"); code != http.StatusUnauthorized {
		t.Errorf("the user's session after mfa-reset: status %d; want 401", code)
	}
	if rows := e.auditRows("mfa.totp.removed"); len(rows) != 1 || rows[0].ActorType != audit.ActorSystem || rows[0].SubjectID != u.ID {
		t.Errorf("mfa.totp.removed rows %+v; want one about the user, by the system", rows)
	}
	if _, err := runUserOp(ctx, flags, userRequest{Op: "mfa-reset", User: "lost@example.com"}); err == nil || !strings.Contains(err.Error(), "no authenticator app") {
		t.Errorf("mfa-reset of a user without one: %v; want a refusal saying why", err)
	}

	if _, err := runUserOp(ctx, flags, userRequest{Op: "delete", User: "root@example.com"}); err == nil || !strings.Contains(err.Error(), "make another administrator first") {
		t.Errorf("deleting the only admin: %v; want a refusal saying what to do", err)
	}
	if _, err := e.rt().store.UserByID(ctx, root.ID); err != nil {
		t.Fatalf("the only admin after the refusal: %v", err)
	}
	if _, err := runUserOp(ctx, flags, userRequest{Op: "delete", User: "lost@example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt().store.UserByID(ctx, u.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("the deleted user: %v; want ErrNotFound", err)
	}
	rows := e.auditRows("account.deletion_execute")
	if len(rows) != 1 || rows[0].ActorType != audit.ActorSystem || rows[0].SubjectID != u.ID || rows[0].Outcome != "success" {
		t.Errorf("account.deletion_execute rows %+v; want one success about the user, by the system", rows)
	}
}

// The row and the change to an existing user are one transaction: when
// the row cannot be written, nothing changes (an admin grant made
// without its row would be unrecorded), from the admin pages and the CLI
// alike.
func TestAdminUserOpsAuditFailsClosed(t *testing.T) {
	e, _, target := startAdminUI(t)
	ctx := context.Background()
	tok := enrolTOTPFor(t, e, target)
	before, err := e.rt().store.UserByID(ctx, target.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Both locks on, for the unlock to leave on.
	for range e.rt().auth.Config().MaxTOTPFailures {
		if _, err := e.rt().store.FailTOTP(ctx, target.ID); err != nil {
			t.Fatal(err)
		}
	}
	for range e.rt().reg.Config().MaxRetries {
		a, err := e.rt().reg.Begin(ctx, authcore.UserAccountKey(target.ID), "198.51.100.9")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Fail(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range []string{"delete", "mfa-reset", "disable", "unlock", "signout"} {
		e.failAudit(userChangeActions[op])
		if code, _ := e.apiPost("/users/" + target.ID + "/" + op); code != http.StatusInternalServerError {
			t.Errorf("%s with a failing audit row: status %d; want 500", op, code)
		}
		e.failAudit("")
	}
	for op, action := range userChangeActions {
		req := userRequest{Op: op, User: target.ID}
		switch op {
		case "passwd":
			req.Password = "a new password, long enough"
		case "groups":
			req.Groups, req.Admin = []string{"ops"}, true
		}
		e.failAudit(action)
		if _, err := doUser(ctx, e.rt(), "admins", req, nil, ""); err == nil || !strings.Contains(err.Error(), "nothing was changed") {
			t.Errorf("CLI %s with a failing audit row: %v; want an error saying nothing was changed", op, err)
		}
		e.failAudit("")
	}
	after, err := e.rt().store.UserByID(ctx, target.ID)
	if err != nil {
		t.Fatalf("after the failed rows: %v; want the user kept", err)
	}
	if after.Disabled || !slices.Equal(after.Groups, before.Groups) || after.PasswordHash != before.PasswordHash {
		t.Errorf("after the failed rows: disabled %t, groups %q, password changed %t; want as before (%q)",
			after.Disabled, after.Groups, after.PasswordHash != before.PasswordHash, before.Groups)
	}
	if has, _ := e.rt().auth.HasTOTP(ctx, target.ID); !has {
		t.Error("after the failed rows: the authenticator is gone")
	}
	if locked, _ := e.rt().auth.TOTPLocked(ctx, target.ID); !locked {
		t.Error("after the failed rows: the authenticator is unlocked")
	}
	if until, _ := e.rt().reg.AccountBan(ctx, target.ID); until.IsZero() {
		t.Error("after the failed rows: the sign-in ban is lifted")
	}
	if code := e.statusAs(tok, "/x"); code != http.StatusOK {
		t.Errorf("after the failed rows: the user's session: status %d; want it kept", code)
	}
	for _, action := range userChangeActions {
		for _, r := range e.auditRows(action) {
			if r.SubjectID == target.ID && r.Outcome == "success" {
				t.Errorf("a %s success row although its write failed", action)
			}
		}
	}
}

// A reset that finds the app already gone, removed between the check
// and the change, is the same 409 as when the check sees it, not a 500,
// and its row, in the same transaction, is not kept.
func TestMFAResetOfRemovedAppIsConflict(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("gone@example.com")
	ctx := context.Background()
	row := rowFor(nil, event{action: "mfa.totp.removed", actorType: audit.ActorSystem, subject: u.ID, outcome: "success"})
	refused, err := e.rt().changeWithRow(ctx, row, userChange(ctx, e.rt(), "admins", userRequest{Op: "mfa-reset", User: u.ID}, u))
	if err != nil {
		t.Fatalf("writing the row: %v", err)
	}
	if status := userErrorStatus(refused); status != http.StatusConflict {
		t.Errorf("reset of a user whose app is gone: %v, status %d; want 409", refused, status)
	}
	if rows := e.auditRows("mfa.totp.removed"); len(rows) != 0 {
		t.Errorf("rows %+v for a reset that was refused in its transaction", rows)
	}
}

// Disabling the only enabled administrator, or taking them out of the
// admin group, is refused like deleting them, from the CLI too; and two
// admins disabling each other at the same moment cannot both succeed.
func TestLastAdminCannotBeDisabledOrDemoted(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	root := e.addUser("root@example.com", "admins")
	ctx := context.Background()
	for _, req := range []userRequest{
		{Op: "disable", User: root.ID},
		{Op: "groups", User: root.ID, Groups: []string{"dev"}},
		{Op: "groups", User: root.ID, Groups: []string{}},
	} {
		_, err := doUser(ctx, e.rt(), "admins", req, nil, "")
		if !errors.Is(err, authcore.ErrLastAdmin) || userErrorStatus(err) != http.StatusConflict {
			t.Errorf("%s %v of the only admin: %v; want ErrLastAdmin (409)", req.Op, req.Groups, err)
		}
	}
	if u, _ := e.rt().store.UserByID(ctx, root.ID); u.Disabled || !u.InGroup("admins") {
		t.Fatalf("the only admin after the refusals: disabled %v, groups %v", u.Disabled, u.Groups)
	}
	if rows := e.auditRows("admin.user.disable"); len(rows) != 0 {
		t.Errorf("refusals wrote %d admin.user.disable rows", len(rows))
	}
	// Keeping the group (explicitly or with --admin) is not a demotion.
	for _, req := range []userRequest{
		{Op: "groups", User: root.ID, Groups: []string{"dev", "admins"}},
		{Op: "groups", User: root.ID, Groups: []string{"ops"}, Admin: true},
	} {
		if _, err := doUser(ctx, e.rt(), "admins", req, nil, ""); err != nil {
			t.Errorf("groups %v admin=%v of the only admin: %v; want it done", req.Groups, req.Admin, err)
		}
	}

	for round := range 10 {
		a := e.addUser(fmt.Sprintf("a%d@example.com", round), "admins")
		b := e.addUser(fmt.Sprintf("b%d@example.com", round), "admins")
		// root leaves the group so that a and b are the only admins.
		if _, err := doUser(ctx, e.rt(), "admins", userRequest{Op: "groups", User: root.ID, Groups: []string{}}, nil, ""); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 2)
		for _, pair := range [][2]*authcore.User{{a, b}, {b, a}} {
			go func() {
				_, err := doUser(ctx, e.rt(), "admins", userRequest{Op: "disable", User: pair[1].ID}, nil, pair[0].ID)
				errs <- err
			}()
		}
		ok := 0
		for range 2 {
			if err := <-errs; err == nil {
				ok++
			} else if !errors.Is(err, authcore.ErrLastAdmin) && !errors.Is(err, errNoLongerAdmin) {
				// The one that waits finds itself disabled, or the
				// other the only admin.
				t.Fatal(err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of two admins disabling each other succeeded; want exactly 1", round, ok)
		}
		// Back to one enabled admin in root for the next round.
		if _, err := doUser(ctx, e.rt(), "admins", userRequest{Op: "groups", User: root.ID, Groups: []string{"admins"}}, nil, ""); err != nil {
			t.Fatal(err)
		}
		for _, u := range []*authcore.User{a, b} {
			if _, err := doUser(ctx, e.rt(), "admins", userRequest{Op: "delete", User: u.ID}, nil, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// An admin sets a user's groups from the user's page or the API: the
// change shows in the next request's headers, is written as
// admin.user.groups by the admin, and cannot take the last admin out of
// the admin group. Bad bodies are 400, oversized ones 413.
func TestAdminSetsGroups(t *testing.T) {
	e, root, target := startAdminUI(t)
	ctx := context.Background()
	page := "/.sigra/admin/users/" + target.ID
	body := mustPage(t, e, page)
	if !strings.Contains(body, `data-sigra="admin-user-groups"`) {
		t.Fatal("the user's page has no groups form")
	}
	if r, _ := e.postForm(page+"/groups", url.Values{"groups": {"ops"}}, nil); r.StatusCode != http.StatusForbidden {
		t.Errorf("groups without the CSRF token: status %d; want 403", r.StatusCode)
	}
	r, _ := e.postForm(page+"/groups", url.Values{"csrf_token": {csrfFrom(t, body)}, "groups": {" dev, ops "}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != page {
		t.Fatalf("groups: status %d Location %q; want 303 to the user's page", r.StatusCode, r.Header.Get("Location"))
	}
	if u, _ := e.rt().store.UserByID(ctx, target.ID); strings.Join(u.Groups, ",") != "dev,ops" {
		t.Errorf("groups after the form: %v; want dev,ops", u.Groups)
	}
	rows := e.auditRows("admin.user.groups")
	if len(rows) != 1 || rows[0].ActorID != root.ID || rows[0].ActorType != audit.ActorAdmin || rows[0].SubjectID != target.ID ||
		rows[0].Metadata["groups"] != "dev,ops" || rows[0].Metadata["previous"] != "" {
		t.Errorf("admin.user.groups rows %+v; want one by the admin about the user naming dev,ops, and none before", rows)
	}
	// The form shows the groups the user has, so that saving it as it
	// stands changes nothing.
	if body := mustPage(t, e, page); !strings.Contains(body, `name="groups" value="dev,ops"`) {
		t.Error("the groups form does not show the user's groups")
	}

	post := func(path, payload string) (int, string) {
		t.Helper()
		hdr := map[string]string{"Accept": "application/json", "Content-Type": "application/json", "Origin": e.base, "X-CSRF-Token": e.adminCSRF()}
		resp := e.do(http.MethodPost, "/.sigra/api/admin"+path, hdr, strings.NewReader(payload))
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if code, b := post("/users/"+target.ID+"/groups", `{"groups": []}`); code != http.StatusOK || !strings.Contains(b, `"groups":[]`) {
		t.Errorf("API groups []: status %d; want 200 with no groups\n%s", code, b)
	}
	if rows := e.auditRows("admin.user.groups"); len(rows) != 2 || rows[0].ActorID != root.ID || rows[0].ActorType != audit.ActorAdmin || rows[0].Metadata["previous"] != "dev,ops" ||
		rows[0].Metadata["removed"] != "dev,ops" || rows[0].Metadata["added"] != "" {
		t.Errorf("admin.user.groups rows after the API call %+v; want the newest by the admin, naming the previous dev,ops, removed", rows)
	}
	// A grant at the end of a long list: the list is bounded so that the
	// row names it whole (a cut one hid the grant).
	var many []string
	for i := range 20 {
		many = append(many, fmt.Sprintf("team-%02d-%s", i, strings.Repeat("x", 50)))
	}
	manyJSON, _ := json.Marshal(map[string][]string{"groups": many})
	if code, b := post("/users/"+target.ID+"/groups", string(manyJSON)); code != http.StatusBadRequest || !strings.Contains(b, "at most 1024 bytes") {
		t.Fatalf("API groups, 20 long names (1179 bytes): status %d; want 400 naming the bound\n%s", code, b)
	}
	many = many[:17] // 1002 bytes
	manyJSON, _ = json.Marshal(map[string][]string{"groups": many})
	if code, b := post("/users/"+target.ID+"/groups", string(manyJSON)); code != http.StatusOK {
		t.Fatalf("API groups, 17 long names: status %d\n%s", code, b)
	}
	grant, _ := json.Marshal(map[string][]string{"groups": append(slices.Clone(many), "admins")})
	if code, b := post("/users/"+target.ID+"/groups", string(grant)); code != http.StatusOK {
		t.Fatalf("API groups, 17 long names and admins: status %d\n%s", code, b)
	}
	if rows := e.auditRows("admin.user.groups"); len(rows) != 4 || rows[0].Metadata["added"] != "admins" || rows[0].Metadata["removed"] != "" ||
		rows[0].Metadata["groups"] != strings.Join(many, ",")+",admins" || rows[0].Metadata["previous"] != strings.Join(many, ",") {
		t.Errorf("the row of a grant at the end of a long list: %+v; want added admins, and both lists whole", rows[0].Metadata)
	}
	if code, _ := post("/users/"+target.ID+"/groups", `{"groups": []}`); code != http.StatusOK {
		t.Fatal("API groups []: could not clear the groups again")
	}
	if code, _ := post("/users/"+target.ID+"/groups", `{"groups": ["a\u0001"]}`); code != http.StatusBadRequest {
		t.Errorf("API groups with a control character in a name: status %d; want 400", code)
	}
	for name, payload := range map[string]string{
		"no body": "", "not JSON": "groups=dev", "no groups": `{}`, "unknown field": `{"groups": [], "admin": true}`,
		"two values": `{"groups": []} {"groups": ["x"]}`, "not a list": `{"groups": "dev"}`,
		"a stray bracket after": `{"groups": []}]`,
		// Go's decoder would store U+FFFD for the bad byte: a name that
		// is not the one sent.
		"not UTF-8":             "{\"groups\": [\"dev\xff\"]}",
		"half a surrogate pair": `{"groups": ["dev\ud800"]}`,
	} {
		if code, _ := post("/users/"+target.ID+"/groups", payload); code != http.StatusBadRequest {
			t.Errorf("API groups, %s: status %d; want 400", name, code)
		}
	}
	if u, _ := e.rt().store.UserByID(ctx, target.ID); len(u.Groups) != 0 {
		t.Errorf("refused bodies changed the groups to %q", u.Groups)
	}
	if _, b := post("/users/"+target.ID+"/groups", `{"groups": "dev"}`); !strings.Contains(b, "groups cannot be a JSON string") || strings.Contains(b, "[]string") {
		t.Errorf("a string for the list: %s; want the problem said without Go's type names", b)
	}
	if code, _ := post("/users/"+target.ID+"/groups", `{"groups": ["`+strings.Repeat("x", maxFormBody)+`"]}`); code != http.StatusRequestEntityTooLarge {
		t.Errorf("API groups, oversized: status %d; want 413", code)
	}
	// The only admin cannot leave the admin group, from the page or the API.
	if code, b := post("/users/"+root.ID+"/groups", `{"groups": ["dev"]}`); code != http.StatusConflict || !strings.Contains(b, "only enabled administrator") {
		t.Errorf("the only admin leaving the admin group: status %d; want 409 saying why\n%s", code, b)
	}
	if u, _ := e.rt().store.UserByID(ctx, root.ID); !u.InGroup("admins") {
		t.Fatal("the only admin left the admin group")
	}
	// With another admin, they can, and land on their account page.
	e.addUser("ops@example.com", "admins")
	own := "/.sigra/admin/users/" + root.ID
	r, _ = e.postForm(own+"/groups", url.Values{"csrf_token": {csrfFrom(t, mustPage(t, e, own))}, "groups": {"dev"}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/.sigra/account" {
		t.Errorf("an admin leaving the admin group: status %d Location %q; want 303 to their account page", r.StatusCode, r.Header.Get("Location"))
	}
	if resp, _ := htmlGet(e, "/.sigra/admin"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("the admin pages after leaving the admin group: status %d; want 403", resp.StatusCode)
	}
}

// raceBeforeCommit makes fn run once, in the window between the checks made
// before action's success row and the transaction that writes it with
// its change, as another admin or process could.
func raceBeforeCommit(e *env, action string, fn func()) {
	var once bool
	f := func(r audit.Row) error {
		if r.Action == action && r.Outcome == "success" && !once {
			once = true
			fn()
		}
		return nil
	}
	e.rt().failRecord.Store(&f)
	e.t.Cleanup(func() { e.rt().failRecord.Store(nil) })
}

// A change refused in its own transaction (something changed since the
// checks before it) takes its success row with it, written in that
// transaction, and leaves a failure row with the reason. The last-admin
// check inside the deletion's transaction is the one that refuses here:
// the check under the lock had passed.
func TestAdminUserOpRaceLeavesFailureRow(t *testing.T) {
	e, root, target := startAdminUI(t)
	ctx := context.Background()

	enrolTOTPFor(t, e, target)
	raceBeforeCommit(e, "mfa.totp.removed", func() {
		if err := e.rt().auth.ResetTOTP(ctx, target.ID); err != nil {
			t.Error(err)
		}
	})
	if code, body := e.apiPost("/users/" + target.ID + "/mfa-reset"); code != http.StatusConflict || !strings.Contains(body, "no authenticator app") {
		t.Errorf("reset of an app removed meanwhile: status %d; want 409\n%s", code, body)
	}
	checkRaceRows(t, e, "mfa.totp.removed", root.ID, target.ID, "gone")

	// target becomes a second admin; while the delete is under way, the
	// acting admin is disabled, which leaves target the only one.
	if _, err := e.rt().auth.UpdateUser(ctx, target.ID, func(u *authcore.User) error { u.Groups = []string{"admins"}; return nil }); err != nil {
		t.Fatal(err)
	}
	raceBeforeCommit(e, "account.deletion_execute", func() {
		if _, err := e.rt().auth.SetDisabled(ctx, root.ID, true); err != nil {
			t.Error(err)
		}
	})
	if code, body := e.apiPost("/users/" + target.ID + "/delete"); code != http.StatusConflict || !strings.Contains(body, "only enabled administrator") {
		t.Errorf("deleting the admin who became the last one meanwhile: status %d; want 409\n%s", code, body)
	}
	if _, err := e.rt().store.UserByID(ctx, target.ID); err != nil {
		t.Errorf("the last admin was deleted: %v", err)
	}
	checkRaceRows(t, e, "account.deletion_execute", root.ID, target.ID, "last_admin")
}

// An admin's request is let in when it arrives; one that then waits
// its turn behind the change that demotes or disables its author does
// not run after it. The test holds the turn until the request waits for
// it (its goroutine blocked in doUser), then demotes the admin.
func TestAdminRequestQueuedBehindItsDemotionIsRefused(t *testing.T) {
	e, root, target := startAdminUI(t)
	ctx := context.Background()
	for _, op := range []string{"disable", "signout"} {
		if _, err := e.rt().auth.UpdateUser(ctx, root.ID, func(u *authcore.User) error { u.Groups = []string{"admins"}; return nil }); err != nil {
			t.Fatal(err)
		}
		adminChange.Lock()
		type answer struct {
			code int
			body string
		}
		done := make(chan answer, 1)
		go func() {
			code, body := e.apiPost("/users/" + target.ID + "/" + op)
			done <- answer{code, body}
		}()
		waitBlockedIn(t, "caddymodule.doUser")
		if _, err := e.rt().auth.UpdateUser(ctx, root.ID, func(u *authcore.User) error { u.Groups = nil; return nil }); err != nil {
			t.Fatal(err)
		}
		adminChange.Unlock()
		a := <-done
		if a.code != http.StatusForbidden || !strings.Contains(a.body, "admin_required") {
			t.Errorf("%s queued behind its author's demotion: status %d; want 403 admin_required\n%s", op, a.code, a.body)
		}
		if rows := e.auditRows(userChangeActions[op]); len(rows) != 0 {
			t.Errorf("%s queued behind its author's demotion wrote rows %+v; want none", op, rows)
		}
	}
	if u, err := e.rt().store.UserByID(ctx, target.ID); err != nil || u.Disabled {
		t.Errorf("the target after a refused disable: %+v, %v; want enabled", u, err)
	}

	// Nor after the change that signed its author out everywhere (a
	// stolen admin session ended by another admin), the author still an
	// admin.
	if _, err := e.rt().auth.UpdateUser(ctx, root.ID, func(u *authcore.User) error { u.Groups = []string{"admins"}; return nil }); err != nil {
		t.Fatal(err)
	}
	adminChange.Lock()
	done := make(chan int, 1)
	go func() {
		code, _ := e.apiPost("/users/" + target.ID + "/disable")
		done <- code
	}()
	waitBlockedIn(t, "caddymodule.doUser")
	if _, err := e.rt().auth.RevokeUserSessions(ctx, root.ID); err != nil {
		t.Fatal(err)
	}
	adminChange.Unlock()
	if code := <-done; code != http.StatusForbidden {
		t.Errorf("disable queued behind its author's sign-out everywhere: status %d; want 403", code)
	}
	if u, err := e.rt().store.UserByID(ctx, target.ID); err != nil || u.Disabled {
		t.Errorf("the target after a disable from a session signed out meanwhile: %+v, %v; want enabled", u, err)
	}
}

// waitBlockedIn waits until a goroutine waits on a mutex inside fn.
func waitBlockedIn(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for range 500 {
		n := goruntime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, "sync.(*Mutex).Lock") && strings.Contains(g, fn+"(") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no goroutine waited on a mutex in %s", fn)
}

// checkRaceRows checks that action's rows are the admin's failure row
// giving reason, alone: the success row went with the refused change.
func checkRaceRows(t *testing.T, e *env, action, admin, subject, reason string) {
	t.Helper()
	rows := e.auditRows(action) // newest first
	if len(rows) != 1 || rows[0].Outcome != "failure" || rows[0].Metadata["reason"] != reason {
		t.Fatalf("%s rows %+v; want a failure row with reason %s alone", action, rows, reason)
	}
	for _, r := range rows {
		if r.ActorID != admin || r.ActorType != audit.ActorAdmin || r.SubjectID != subject {
			t.Errorf("%s row: actor %s (%s) subject %s; want admin %s acting on %s", action, r.ActorID, r.ActorType, r.SubjectID, admin, subject)
		}
	}
}

// A user stored before a rule that now refuses a value of theirs (an
// invisible character in the name or a group) can still be disabled or
// given a new password: only what an update changes is checked again.
// Changing the name to such a value is refused.
func TestUpdatesOfAUserStoredUnderOlderRules(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	u := e.addUser("mal@example.com")
	ctx := context.Background()
	if _, err := e.rt().store.UpdateUser(ctx, u.ID, false, func(u *authcore.User) error {
		u.Name, u.Groups = "Mallory \u202egnp.exe", []string{"adm\u00adins"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt().auth.SetDisabled(ctx, u.ID, true); err != nil {
		t.Errorf("disabling the user: %v", err)
	}
	if err := e.rt().auth.SetPassword(ctx, u.ID, "a new and long passphrase"); err != nil {
		t.Errorf("a new password for the user: %v", err)
	}
	if _, err := e.rt().auth.UpdateUser(ctx, u.ID, func(u *authcore.User) error { u.Name = "Eve \u202e"; return nil }); !errors.Is(err, authcore.ErrInvalidInput) {
		t.Errorf("renaming to a name with an override: %v; want ErrInvalidInput", err)
	}
}
