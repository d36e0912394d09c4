package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// userRequest is one user-management operation, run either directly on
// the store (CLI, Caddy stopped) or inside the running Caddy through the
// admin API (CLI, Caddy running): the same code serves both.
type userRequest struct {
	Op       string   `json:"op"`             // add, list, passwd, groups, disable, enable, unlock
	User     string   `json:"user,omitempty"` // id or email of an existing user
	Email    string   `json:"email,omitempty"`
	Name     string   `json:"name,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Admin    bool     `json:"admin,omitempty"`
	Password string   `json:"password,omitempty"`
	After    string   `json:"after,omitempty"` // list: cursor
	Limit    int      `json:"limit,omitempty"` // list: page size
	Query    string   `json:"q,omitempty"`     // list: search (id, or part of email or name)
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
// and could leave nobody able to undo it from a browser.
var errSelfDisable = errors.New("you cannot disable your own account; another administrator can, or the CLI (caddy sigra users disable)")

// doUser runs a user-management operation on behalf of actor (the admin's
// user id, or "" for the CLI, recorded as the system) and audits it.
func doUser(ctx context.Context, rt *runtime, adminGroup string, req userRequest, r *http.Request, actor string) (*userResult, error) {
	res, subject, err := runUserRequest(ctx, rt, adminGroup, req, actor)
	if err != nil || req.Op == "list" {
		return res, err
	}
	ev := event{action: "admin.user." + req.Op, actor: actor, actorType: adminActorType(actor), subject: subject, outcome: "success"}
	if req.Op == "groups" {
		ev.meta = map[string]string{"groups": strings.Join(res.User.Groups, ",")}
	}
	if err := rt.record(ctx, rowFor(r, ev)); err != nil {
		return nil, fmt.Errorf("writing audit row: %w", err)
	}
	return res, nil
}

// runUserRequest runs req for actor, the admin's user id ("" for the
// CLI and Caddy's admin API).
func runUserRequest(ctx context.Context, rt *runtime, adminGroup string, req userRequest, actor string) (*userResult, string, error) {
	auth := rt.auth
	switch req.Op {
	case "add":
		groups := req.Groups
		if req.Admin {
			groups = append(groups, adminGroup)
		}
		u, err := auth.CreateUser(ctx, authcore.NewUser{Email: req.Email, Name: req.Name, Groups: groups, Password: req.Password, EmailVerified: true})
		if err != nil {
			return nil, "", err
		}
		v := viewUser(u)
		return &userResult{User: &v}, u.ID, nil
	case "list":
		limit := req.Limit
		if limit <= 0 || limit > maxUserPage {
			limit = maxUserPage
		}
		users, next, err := searchUsers(ctx, auth.Store(), req.After, req.Query, limit)
		if err != nil {
			return nil, "", err
		}
		res := &userResult{Users: []userView{}, NextCursor: next}
		for _, u := range users {
			res.Users = append(res.Users, viewUser(u))
		}
		return res, "", nil
	case "passwd", "groups", "disable", "enable", "unlock":
		u, err := auth.LookupUser(ctx, req.User)
		if err != nil {
			return nil, "", fmt.Errorf("user %q: %w", req.User, err)
		}
		switch req.Op {
		case "passwd":
			err = auth.SetPassword(ctx, u.ID, req.Password)
		case "groups":
			groups := req.Groups
			if req.Admin {
				groups = append(groups, adminGroup)
			}
			u, err = auth.UpdateUser(ctx, u.ID, func(u *authcore.User) error { u.Groups = groups; return nil })
		case "disable":
			if actor != "" && u.ID == actor {
				return nil, "", errSelfDisable
			}
			u, err = auth.SetDisabled(ctx, u.ID, true)
		case "enable":
			u, err = auth.SetDisabled(ctx, u.ID, false)
		case "unlock":
			err = rt.reg.Unlock(ctx, u.ID)
		}
		if err != nil {
			return nil, "", err
		}
		v := viewUser(u)
		return &userResult{User: &v}, u.ID, nil
	}
	return nil, "", fmt.Errorf("%w: unknown operation %q", errUsage, req.Op)
}

// maxUserPage is the most users one list request returns.
const maxUserPage = 1000

// searchScanMax bounds the users one filtered list request reads; a
// search that reaches it returns what it found so far and a cursor that
// goes on from there.
var searchScanMax = 20000

// searchUsers returns a page of users in id order after the cursor: all
// of them, or with query those whose id is the query or whose email or
// name contains it (case-insensitively). next is empty on the last page.
func searchUsers(ctx context.Context, st authcore.Store, after, query string, limit int) (users []*authcore.User, next string, err error) {
	query = strings.ToLower(strings.TrimSpace(query))
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
			if query != "" && u.ID != query && !strings.Contains(strings.ToLower(u.Email), query) && !strings.Contains(strings.ToLower(u.Name), query) {
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
