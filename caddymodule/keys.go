package caddymodule

import (
	"context"
	"fmt"
	"net/http"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// keysRequest is one assertion-key operation, from the CLI directly or
// through Caddy's admin API (POST /sigra/keys).
type keysRequest struct {
	Op string `json:"op"` // list or rotate
}

// keysResult lists the published keys, the active one first.
type keysResult struct {
	Keys []authcore.KeyInfo `json:"keys"`
}

// keyCommit stores a change of the active key with its admin.keys.rotate
// row, by actor ("" for the system), with metadata.reason when given
// ("config": a reloaded config's change of algorithm or signing_key).
func (rt *runtime) keyCommit(ctx context.Context, r *http.Request, actor, reason string) authcore.KeyCommit {
	return func(previous, active authcore.KeyInfo, change func(tx any) error) error {
		ev := event{action: "admin.keys.rotate", actor: actor, actorType: adminActorType(actor), outcome: "success",
			meta: map[string]string{"kid": active.KID, "alg": active.Alg, "previous_kid": previous.KID}}
		if reason != "" {
			ev.meta["reason"] = reason
		}
		refused, err := rt.recordChange(ctx, []audit.Row{rowFor(r, ev)}, change)
		if refused != nil {
			return refused
		}
		return err
	}
}

// doKeys runs a key operation on behalf of actor ("" for the CLI, recorded
// as the system). A rotation writes admin.keys.rotate.
func doKeys(ctx context.Context, rt *runtime, req keysRequest, r *http.Request, actor string) (*keysResult, error) {
	switch req.Op {
	case "list":
	case "rotate":
		// The new key has the configured algorithm: the key ring rotated
		// to it when it was loaded, and a change of algorithm is made in
		// the config (keys { algorithm }), which rotates at the next start.
		// The new keys and their row are one transaction: a rotation is
		// never stored without its row, nor its row without it.
		if err := rt.keys.RotateWith("", rt.keyCommit(ctx, r, actor, "")); err != nil {
			return nil, fmt.Errorf("the keys were not rotated: %w", err)
		}
	default:
		return nil, fmt.Errorf("%w: keys operation %q (want list or rotate)", errUsage, req.Op)
	}
	return &keysResult{Keys: rt.keys.Keys()}, nil
}

// readOnly reports whether the request changes nothing (runOp).
func (r keysRequest) readOnly() bool { return r.Op == "list" }
