package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// userRequest is one user-management operation, run either directly on
// the store (CLI, Caddy stopped) or inside the running Caddy through the
// admin API (CLI, Caddy running): the same code serves both.
type userRequest struct {
	Op       string   `json:"op"`             // add, list, passwd, disable, enable, unlock
	User     string   `json:"user,omitempty"` // id or email of an existing user
	Email    string   `json:"email,omitempty"`
	Name     string   `json:"name,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Admin    bool     `json:"admin,omitempty"`
	Password string   `json:"password,omitempty"`
	After    string   `json:"after,omitempty"` // list: cursor
	Limit    int      `json:"limit,omitempty"` // list: page size
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

// doUser runs a user-management operation on behalf of actor (the admin's
// user id, or "" for the CLI, recorded as the system) and audits it.
func doUser(ctx context.Context, rt *runtime, adminGroup string, req userRequest, r *http.Request, actor string) (*userResult, error) {
	res, subject, err := runUserRequest(ctx, rt, adminGroup, req)
	if err != nil || req.Op == "list" {
		return res, err
	}
	ev := event{action: "admin.user." + req.Op, actor: actor, actorType: adminActorType(actor), subject: subject, outcome: "success"}
	if err := rt.record(ctx, rowFor(r, ev)); err != nil {
		return nil, fmt.Errorf("writing audit row: %w", err)
	}
	return res, nil
}

func runUserRequest(ctx context.Context, rt *runtime, adminGroup string, req userRequest) (*userResult, string, error) {
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
		if limit <= 0 || limit > 1000 {
			limit = 1000
		}
		// One more than a page says whether another page follows, so the
		// last page carries no cursor.
		users, err := auth.Store().ListUsers(ctx, req.After, limit+1)
		if err != nil {
			return nil, "", err
		}
		more := len(users) > limit
		if more {
			users = users[:limit]
		}
		res := &userResult{Users: []userView{}}
		for _, u := range users {
			res.Users = append(res.Users, viewUser(u))
		}
		if more {
			res.NextCursor = users[len(users)-1].ID
		}
		return res, "", nil
	case "passwd", "disable", "enable", "unlock":
		u, err := auth.LookupUser(ctx, req.User)
		if err != nil {
			return nil, "", fmt.Errorf("user %q: %w", req.User, err)
		}
		switch req.Op {
		case "passwd":
			err = auth.SetPassword(ctx, u.ID, req.Password)
		case "disable":
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
