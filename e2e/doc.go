// Package e2e tests the real Caddy binary, built with xcaddy from the
// pinned recipe in xcaddy.json, the way users run it: as a separate
// process configured by a Caddyfile, in front of a real upstream, driven
// over loopback HTTP and through the `caddy sigra` CLI.
//
// The binary is $SIGRA_CADDY when set (`make test` builds ./caddy and
// sets it); otherwise TestMain builds one into a temporary directory with
// `go run ./internal/buildcaddy` at the repository root. A failed build
// fails the tests.
//
// Every Caddy process gets its own temporary HOME, XDG_DATA_HOME and
// XDG_CONFIG_HOME, an admin endpoint and a site on free loopback ports,
// and `persist_config off`; it is stopped with SIGTERM (then SIGKILL) when
// its test ends. Failure messages include the process's output.
package e2e
