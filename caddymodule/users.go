package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/text/unicode/norm"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// userRequest is one user-management operation, run either directly on
// the store (CLI, Caddy stopped) or inside the running Caddy through the
// admin API (CLI, Caddy running): the same code serves both.
type userRequest struct {
	Op     string   `json:"op"`             // add, list, passwd, groups, disable, enable, unlock, delete, mfa-reset
	User   string   `json:"user,omitempty"` // id or email of an existing user
	Email  string   `json:"email,omitempty"`
	Name   string   `json:"name,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Admin  bool     `json:"admin,omitempty"`
	// Keep, for groups, keeps the user's groups and adds those of Groups
	// and Admin to them, instead of setting them.
	Keep     bool   `json:"keep,omitempty"`
	Password string `json:"password,omitempty"`
	After    string `json:"after,omitempty"` // list: cursor
	Limit    int    `json:"limit,omitempty"` // list: page size
	Query    string `json:"q,omitempty"`     // list: search (id, or part of email or name)
	// Session is the session an admin's request came in (the portal's
	// API and pages), which must still stand when its turn comes
	// (stillAdmin). Never from JSON.
	Session authcore.SessionID `json:"-"`
}

// userView is a user as shown to operators (never the password hash).
type userView struct {
	ID            string    `json:"id"`
	Email         string    `json:"email"`
	EmailVerified bool      `json:"email_verified"`
	Name          string    `json:"name"`
	Groups        []string  `json:"groups"`
	Disabled      bool      `json:"disabled"`
	SecondFactor  bool      `json:"second_factor"`
	CreatedAt     time.Time `json:"created_at"`
	// What keeps the user out for now (listed and shown to admins; see
	// runtime.addLocks): a sign-in ban after wrong passwords, a ban on
	// codes after wrong ones, a ban on the password typed again by the
	// signed-in user after wrong ones (in one of their sessions, the
	// latest), an authenticator app locked after
	// max_totp_failures wrong codes in a row.
	SignInBannedUntil time.Time `json:"sign_in_banned_until,omitzero"`
	CodesBannedUntil  time.Time `json:"codes_banned_until,omitzero"`
	ReauthBannedUntil time.Time `json:"reauth_banned_until,omitzero"`
	TOTPLocked        bool      `json:"totp_locked,omitempty"`
}

// addLocks fills in what keeps v's user out for now.
func (rt *runtime) addLocks(ctx context.Context, v *userView) (err error) {
	if v.SignInBannedUntil, err = rt.reg.AccountBan(ctx, v.ID); err != nil {
		return err
	}
	if v.CodesBannedUntil, err = rt.reg.CodesBan(ctx, v.ID); err != nil {
		return err
	}
	if v.ReauthBannedUntil, err = rt.reg.ReauthBan(ctx, v.ID); err != nil {
		return err
	}
	if v.SecondFactor {
		v.TOTPLocked, err = rt.auth.TOTPLocked(ctx, v.ID)
	}
	return err
}

func viewUser(u *authcore.User) userView {
	g := u.Groups
	if g == nil {
		g = []string{}
	}
	return userView{ID: u.ID, Email: u.Email, EmailVerified: u.EmailVerified, Name: u.Name, Groups: g,
		Disabled: u.Disabled, SecondFactor: u.SecondFactor, CreatedAt: u.CreatedAt}
}

type userResult struct {
	Users      []userView `json:"users,omitempty"`
	User       *userView  `json:"user,omitempty"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// errUsage marks errors in the request itself (HTTP 400, CLI exit 2).
var errUsage = errors.New("bad request")

// errSelfDisable refuses an admin disabling their own account through
// the API or the pages (HTTP 409), which would sign them out everywhere
// and could leave nobody able to undo it from a browser. The other
// operations an admin may not run on their own account from a browser
// have their own errors: each has a page of its own on /account.
var (
	errSelfDisable  = errors.New("you cannot disable your own account; another administrator can, or the CLI (caddy sigra users disable)")
	errSelfDelete   = errors.New("you cannot delete your own account here; use your account page, which asks for your password")
	errSelfMFAReset = errors.New("you cannot reset your own second factor here; use your account page")
	errSelfSignout  = errors.New("you cannot sign yourself out everywhere here; use Sign out all other sessions on your account page, which keeps this one")
	// A ban or lock on one's own account is lifted by time, a recovery
	// code, another admin or the CLI: lifted by the admin's own session,
	// whoever held that session could go on guessing the password its
	// re-checks are banned from.
	errSelfUnlock = errors.New("you cannot lift your own bans or locks; they lift with time (a recovery code opens a locked app), or another administrator or the CLI (caddy sigra users unlock) can")
)

// errNoAuthenticator refuses a second-factor reset for a user who has
// no authenticator app (HTTP 409).
var errNoAuthenticator = errors.New("this user has no authenticator app to reset")

// userChangeActions maps the operations on an existing user to their
// audit action. No change is made without its row (a deleted user could
// not be audited after, and an admin grant whose row failed would be
// made unrecorded): the row is written in the change's own transaction
// (userChange); a failure row follows if the change is refused there.
// Deletion and a second-factor reset are audited under the action of the
// change itself, whoever makes it: the user's own deletion and an
// admin's are both account.deletion_execute, so a consumer erasing a
// user's data downstream needs one action. The others are
// admin.user.<op>. Adding a user writes its row in the same transaction
// too (addUser).
var userChangeActions = map[string]string{
	"delete":    "account.deletion_execute",
	"mfa-reset": "mfa.totp.removed",
	"passwd":    "admin.user.passwd",
	"groups":    "admin.user.groups",
	"disable":   "admin.user.disable",
	"enable":    "admin.user.enable",
	"unlock":    "admin.user.unlock",
	"signout":   "admin.user.signout",
}

// adminChange serializes the changes that can take away an enabled
// administrator (delete, disable, a groups change without the admin
// group), each made only after checking, under it, that another one
// remains. One process holds the store (bbolt's file lock), so two
// admins acting on each other at the same moment cannot leave none.
// Deletion is also checked in its store transaction (DeleteUser's
// keepGroup).
var adminChange sync.Mutex

// errNoLongerAdmin refuses an admin's request that waited its turn
// behind a change that took the admin's rights or session away (HTTP
// 403).
var errNoLongerAdmin = errors.New("you are no longer signed in as an administrator: your rights or your session ended while this request waited")

// stillAdmin takes adminChange and checks, under it, that actor is still
// an enabled member of adminGroup and, when sid is set, that the session
// the request came in still stands: an admin request is let in when it
// arrives, and one queued behind the change that disabled, demoted or
// signed out its author (a stolen admin session ended by another admin)
// must not run after it. Call the returned unlock, error or not.
func stillAdmin(ctx context.Context, rt *runtime, adminGroup, actor string, sid authcore.SessionID) (func(), error) {
	adminChange.Lock()
	u, err := rt.store.UserByID(ctx, actor)
	switch {
	case errors.Is(err, authcore.ErrNotFound), errors.Is(err, authcore.ErrInvalidInput):
		return adminChange.Unlock, errNoLongerAdmin
	case err != nil:
		return adminChange.Unlock, err
	case u.Disabled || !u.InGroup(adminGroup):
		return adminChange.Unlock, errNoLongerAdmin
	case sid == authcore.SessionID{}:
		return adminChange.Unlock, nil
	}
	s, err := rt.store.GetSession(ctx, sid)
	switch {
	case errors.Is(err, authcore.ErrNotFound):
		return adminChange.Unlock, errNoLongerAdmin
	case err != nil:
		return adminChange.Unlock, err
	case s.UserID != actor || s.UserEpoch != u.SessionEpoch:
		return adminChange.Unlock, errNoLongerAdmin
	}
	return adminChange.Unlock, nil
}

// keepsAnAdmin refuses (ErrLastAdmin) req when it would leave no enabled
// member of adminGroup: when it takes u out of the group, disables or
// deletes u, and u is the only one. Call it holding adminChange.
func keepsAnAdmin(ctx context.Context, rt *runtime, adminGroup string, req userRequest, u *authcore.User) error {
	if !u.InGroup(adminGroup) || u.Disabled {
		return nil
	}
	switch req.Op {
	case "delete", "disable":
	case "groups":
		groups, err := authcore.NormalizeGroups(req.Groups)
		if err != nil || req.Admin || req.Keep || slices.Contains(groups, adminGroup) {
			return nil // stays an admin (or the change is refused anyway)
		}
	default:
		return nil
	}
	other, err := rt.store.HasOtherMember(ctx, adminGroup, u.ID)
	if err != nil {
		return err
	}
	if !other {
		return authcore.ErrLastAdmin
	}
	return nil
}

// doUser runs a user-management operation on behalf of actor (the admin's
// user id, or "" for the CLI, recorded as the system) and audits it.
func doUser(ctx context.Context, rt *runtime, adminGroup string, req userRequest, r *http.Request, actor string) (*userResult, error) {
	var u *authcore.User // the user changed, when looked up here already
	if actor != "" {
		unlock, err := stillAdmin(ctx, rt, adminGroup, actor, req.Session)
		defer unlock()
		if err != nil {
			return nil, err
		}
	}
	if req.Op == "delete" || req.Op == "disable" || req.Op == "groups" {
		if actor == "" {
			adminChange.Lock()
			defer adminChange.Unlock()
		}
		// No such user is the operation's own to report, and so is an
		// admin disabling or deleting their own account (refused with
		// its own message further on).
		found, err := rt.auth.LookupUser(ctx, req.User)
		switch {
		case errors.Is(err, authcore.ErrNotFound), errors.Is(err, authcore.ErrInvalidInput):
		case err != nil:
			return nil, err
		default:
			u = found
			if actor != u.ID || req.Op == "groups" {
				if err := keepsAnAdmin(ctx, rt, adminGroup, req, u); err != nil {
					return nil, err
				}
			}
		}
	}
	if action, ok := userChangeActions[req.Op]; ok {
		return doUserChange(ctx, rt, adminGroup, req, r, actor, action, u)
	}
	if req.Op == "add" {
		return addUser(ctx, rt, adminGroup, req, r, actor)
	}
	return runUserRequest(ctx, rt, req)
}

// addUser adds the user req asks for, and its admin.user.add row, in one
// transaction: an admin is never made unrecorded, nor a row written for
// one not made. Refused (an email taken), nothing is written.
func addUser(ctx context.Context, rt *runtime, adminGroup string, req userRequest, r *http.Request, actor string) (*userResult, error) {
	u, err := rt.auth.NewUserRecord(authcore.NewUser{Email: req.Email, Name: req.Name, Groups: requestedGroups(req, adminGroup), Password: req.Password, EmailVerified: true})
	if err != nil {
		return nil, err
	}
	ev := event{action: "admin.user.add", actor: actor, actorType: adminActorType(actor), subject: u.ID, outcome: "success"}
	ev.meta = groupsMeta(u.Groups, nil)
	refused, err := rt.changeWithRow(ctx, rowFor(r, ev), func(commit authcore.Commit) error {
		return rt.auth.CreateUserWith(u, commit)
	})
	if err != nil {
		return nil, fmt.Errorf("writing audit row (the user was not added): %w", err)
	}
	if refused != nil {
		return nil, refused
	}
	v := viewUser(u)
	return &userResult{User: &v}, nil
}

// groupsMeta is an audit row's account of a user's groups: who got which
// (the admin group, say), and, for a change, what they were and the
// change on its own (the lists are cut at the row's bound on a value,
// and a grant at the end of a long one would be lost).
func groupsMeta(groups []string, before *authcore.User) map[string]string {
	meta := map[string]string{"groups": strings.Join(groups, ",")}
	if before != nil {
		meta["previous"] = strings.Join(before.Groups, ",")
		if d := groupsNotIn(groups, before.Groups); d != "" {
			meta["added"] = d
		}
		if d := groupsNotIn(before.Groups, groups); d != "" {
			meta["removed"] = d
		}
	}
	return meta
}

// doUserChange runs a userChangeActions operation on u (nil: the user req
// names, looked up here): it checks what can be checked before writing
// the row, so a refused request leaves no success row. Then the row and
// the change are made in one transaction (userChange); a refusal that
// only the change itself can see (a race) leaves a failure row.
func doUserChange(ctx context.Context, rt *runtime, adminGroup string, req userRequest, r *http.Request, actor, action string, u *authcore.User) (*userResult, error) {
	if u == nil {
		var err error
		if u, err = rt.auth.LookupUser(ctx, req.User); err != nil {
			return nil, fmt.Errorf("user %q: %w", req.User, err)
		}
	}
	ev := event{action: action, actor: actor, actorType: adminActorType(actor), subject: u.ID, outcome: "success"}
	switch {
	case req.Op == "delete" && actor == u.ID:
		return nil, errSelfDelete
	case req.Op == "mfa-reset" && actor == u.ID:
		return nil, errSelfMFAReset
	case req.Op == "disable" && actor == u.ID:
		return nil, errSelfDisable
	case req.Op == "signout" && actor == u.ID:
		return nil, errSelfSignout
	case req.Op == "unlock" && actor == u.ID:
		return nil, errSelfUnlock
	case req.Op == "mfa-reset":
		has, err := rt.auth.HasTOTP(ctx, u.ID)
		if err != nil {
			return nil, err
		}
		if !has {
			return nil, errNoAuthenticator
		}
	case req.Op == "passwd":
		if err := authcore.CheckNewPassword(req.Password); err != nil {
			return nil, err
		}
	case req.Op == "groups":
		groups, err := authcore.NormalizeGroups(newGroups(req, adminGroup, u.Groups))
		if err != nil {
			return nil, err
		}
		ev.meta = groupsMeta(groups, u)
	}
	// The row and the change in one transaction: a crash between two
	// commits would leave a row, delivered to webhooks (that may erase
	// the user's data on a deletion), for a change not made, or a change
	// made unrecorded.
	err, aerr := rt.changeWithRow(ctx, rowFor(r, ev), userChange(ctx, rt, adminGroup, req, u))
	if aerr != nil {
		return nil, fmt.Errorf("writing audit row (nothing was changed): %w", aerr)
	}
	if err != nil {
		reason := "storage"
		switch {
		case errors.Is(err, authcore.ErrLastAdmin):
			reason = "last_admin"
		case errors.Is(err, authcore.ErrNotFound), errors.Is(err, errNoAuthenticator):
			reason = "gone" // deleted or reset meanwhile
		case errors.Is(err, authcore.ErrInvalidInput):
			reason = "invalid"
		}
		ev.outcome, ev.meta = "failure", map[string]string{"reason": reason}
		if aerr := rt.record(ctx, rowFor(r, ev)); aerr != nil {
			// The server's failure (500, the cause in the log), whatever
			// refused the change.
			return nil, fmt.Errorf("%v; and writing the failure row: %w", err, aerr)
		}
		return nil, err
	}
	return changedUser(ctx, rt, req.Op, u), nil
}

// userChange is req's change to u as one a Commit makes together with
// its row.
func userChange(ctx context.Context, rt *runtime, adminGroup string, req userRequest, u *authcore.User) func(authcore.Commit) error {
	auth := rt.auth
	switch req.Op {
	case "delete":
		return func(c authcore.Commit) error { return auth.DeleteUserWith(u.ID, adminGroup, c) }
	case "passwd":
		return func(c authcore.Commit) error { return auth.SetPasswordWith(u.ID, req.Password, c) }
	case "groups":
		return func(c authcore.Commit) error {
			return auth.UpdateUserWith(u.ID, false, func(u *authcore.User) error { u.Groups = newGroups(req, adminGroup, u.Groups); return nil }, c)
		}
	case "disable", "enable": // not disabling oneself: doUserChange refuses that first
		disable := req.Op == "disable"
		return func(c authcore.Commit) error {
			// Disabling ends the user's sessions in the same transaction.
			return auth.UpdateUserWith(u.ID, disable, func(u *authcore.User) error { u.Disabled = disable; return nil }, c)
		}
	case "mfa-reset":
		// The factor may be what was lost, or stolen with a device that
		// is still signed in: every session ends with it, in the same
		// transaction, and none keeps a second factor it passed with
		// the old one.
		return func(c authcore.Commit) error {
			err := auth.ResetTOTPWith(ctx, u.ID, c)
			if errors.Is(err, authcore.ErrNotEnrolled) {
				return errNoAuthenticator // removed meanwhile
			}
			return err
		}
	case "signout":
		// Every session ends, and nothing else changes: a lost laptop,
		// or a session the user does not know.
		return func(c authcore.Commit) error {
			return auth.UpdateUserWith(u.ID, true, func(*authcore.User) error { return nil }, c)
		}
	case "unlock":
		// Both locks: sign-in bans, and an authenticator app locked by
		// wrong codes in a row.
		return func(c authcore.Commit) error { return auth.UnlockWith(ctx, u.ID, c) }
	}
	return func(authcore.Commit) error { return fmt.Errorf("%w: unknown operation %q", errUsage, req.Op) }
}

// changedUser is the answer to op, made on u: the user as now stored,
// or as before (a deletion, or a user gone since).
func changedUser(ctx context.Context, rt *runtime, op string, u *authcore.User) *userResult {
	if op != "delete" {
		if now, err := rt.auth.LookupUser(ctx, u.ID); err == nil {
			u = now
		}
	}
	v := viewUser(u)
	return &userResult{User: &v}
}

// newGroups is the groups req gives a user who has groups now: those
// req asks for, after the user's own with req.Keep.
func newGroups(req userRequest, adminGroup string, groups []string) []string {
	if !req.Keep {
		return requestedGroups(req, adminGroup)
	}
	return append(slices.Clone(groups), requestedGroups(req, adminGroup)...)
}

// requestedGroups are the groups req gives a user: its list, and the
// admin group with --admin.
func requestedGroups(req userRequest, adminGroup string) []string {
	groups := slices.Clone(req.Groups)
	if req.Admin {
		groups = append(groups, adminGroup)
	}
	return groups
}

// runUserRequest runs req when it is a list: an add goes through
// addUser, the changes through userChange.
func runUserRequest(ctx context.Context, rt *runtime, req userRequest) (*userResult, error) {
	auth := rt.auth
	switch req.Op {
	case "list":
		limit := req.Limit
		if limit < 0 {
			return nil, fmt.Errorf("%w: limit must not be negative (0 is the default page)", authcore.ErrInvalidInput)
		}
		if limit == 0 || limit > maxUserPage {
			limit = maxUserPage
		}
		users, next, err := searchUsers(ctx, auth.Store(), req.After, req.Query, limit)
		if err != nil {
			return nil, err
		}
		res := &userResult{Users: []userView{}, NextCursor: next}
		for _, u := range users {
			v := viewUser(u)
			if err := rt.addLocks(ctx, &v); err != nil {
				return nil, err
			}
			res.Users = append(res.Users, v)
		}
		return res, nil
	}
	return nil, fmt.Errorf("%w: unknown operation %q", errUsage, req.Op)
}

// maxUserPage is the most users one list request returns.
const maxUserPage = 1000

// searchScanMax bounds the users one filtered list request reads; a
// search that reaches it returns what it found so far and a cursor that
// goes on from there.
var searchScanMax = 20000

// searchUsers returns a page of users in id order after the cursor: all
// of them, or with query those whose id is the query or whose email or
// name contains it (case-insensitively, and in NFKC: ｂob finds bob, as
// it signs in as bob). next is empty on the last page.
func searchUsers(ctx context.Context, st authcore.Store, after, query string, limit int) (users []*authcore.User, next string, err error) {
	query = searchFold(strings.TrimSpace(query))
	if query != "" && after == "" {
		// An id names one user: no need to read the others for it.
		if u, err := st.UserByID(ctx, query); err == nil {
			return []*authcore.User{u}, "", nil
		} else if !errors.Is(err, authcore.ErrNotFound) && !errors.Is(err, authcore.ErrInvalidInput) {
			return nil, "", err
		}
	}
	cursor, scanned := after, 0
	for {
		chunk := limit + 1 // one more than a page says whether another follows
		if query != "" {
			chunk = min(500, searchScanMax-scanned)
		}
		batch, err := st.ListUsers(ctx, cursor, chunk)
		if err != nil {
			return nil, "", err
		}
		for _, u := range batch {
			cursor = u.ID
			scanned++
			if query != "" && u.ID != query && !strings.Contains(searchFold(u.Email), query) && !strings.Contains(searchFold(u.Name), query) {
				continue
			}
			if len(users) == limit {
				return users, users[limit-1].ID, nil
			}
			users = append(users, u)
		}
		switch {
		case len(batch) < chunk:
			return users, "", nil
		case scanned >= searchScanMax:
			// Stopped by the cap, not by the end: a cursor only if there is
			// more to read.
			rest, err := st.ListUsers(ctx, cursor, 1)
			if err != nil {
				return nil, "", err
			}
			if len(rest) == 0 {
				cursor = ""
			}
			return users, cursor, nil
		}
	}
}

// searchFold is s as a search compares it: NFKC, lower case.
func searchFold(s string) string { return strings.ToLower(norm.NFKC.String(s)) }

// groupsNotIn lists, comma-separated, the groups of gs that are not in of.
func groupsNotIn(gs, of []string) string {
	var out []string
	for _, g := range gs {
		if !slices.Contains(of, g) {
			out = append(out, g)
		}
	}
	return strings.Join(out, ",")
}

// readOnly reports whether the request changes nothing (runOp).
func (r userRequest) readOnly() bool { return r.Op == "list" }
