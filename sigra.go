// Package caddysigra registers the Sigra gateway's Caddy modules. Build a
// Caddy with it using xcaddy (see xcaddy.json and `make caddy`).
package caddysigra

import (
	// The Caddy modules: the sigra app, sigra_portal, sigra_gate, the
	// admin API routes and the `caddy sigra` command.
	_ "github.com/sigra-auth/caddy-sigra/caddymodule"
)
