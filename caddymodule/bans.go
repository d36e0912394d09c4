package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// bansRequest is one operation on the bans of client addresses, from the
// CLI directly or through Caddy's admin API (POST /sigra/bans). A user's
// own bans are the users command's (list, unlock): an address's ban
// (max_retries_per_ip failures from it, whatever accounts they tried)
// keeps out everyone behind it, an office's NAT say, and is no user's.
type bansRequest struct {
	Op      string `json:"op"`                // list or lift
	Address string `json:"address,omitempty"` // lift: an IP address, or as listed
}

// bansResult lists the addresses banned now (after a lift, the rest).
type bansResult struct {
	// Lifted is the address a lift cleared, as listed (an IPv6
	// address's /64).
	Lifted string                `json:"lifted,omitempty"`
	Bans   []authcore.AddressBan `json:"bans"`
}

// doBans runs a bans operation on behalf of actor ("" for the CLI,
// recorded as the system). A lift writes admin.address.unlock, in one
// transaction with the lift.
func doBans(ctx context.Context, rt *runtime, req bansRequest, r *http.Request, actor string) (*bansResult, error) {
	var lifted string
	switch req.Op {
	case "list":
	case "lift":
		key, err := authcore.AddressKey(req.Address)
		if err != nil {
			return nil, err
		}
		ev := event{action: "admin.address.unlock", actor: actor, actorType: adminActorType(actor), outcome: "success",
			meta: map[string]string{"address": authcore.KeyAddress(key)}}
		refused, err := rt.changeWithRow(ctx, rowFor(r, ev), func(commit authcore.Commit) error {
			return rt.auth.UnlockAddressWith(ctx, rt.reg, key, commit)
		})
		if err != nil {
			return nil, fmt.Errorf("writing audit row (the ban was not lifted): %w", err)
		}
		if refused != nil {
			return nil, refused
		}
		lifted = authcore.KeyAddress(key)
	default:
		return nil, fmt.Errorf("%w: bans operation %q (want list or lift)", errUsage, req.Op)
	}
	bans, err := rt.reg.AddressBans(ctx)
	if err != nil {
		return nil, err
	}
	if bans == nil {
		bans = []authcore.AddressBan{} // a list, empty: not null
	}
	return &bansResult{Lifted: lifted, Bans: bans}, nil
}

// handleAdminBans runs one bansRequest (POST, JSON body).
func handleAdminBans(w http.ResponseWriter, r *http.Request) error {
	return adminOp(w, r, func(_ *App, rt *runtime, req bansRequest) (any, error) {
		return doBans(r.Context(), rt, req, r, "")
	})
}

// runBansOp runs req on the store named by the config: directly when no
// Caddy holds it, else through the running Caddy's admin API.
func runBansOp(ctx context.Context, cf cliFlags, req bansRequest) (*bansResult, error) {
	return runOp(ctx, cf, nil, "/sigra/bans", req, func(ctx context.Context, rt *runtime, _ *App) (*bansResult, error) {
		return doBans(ctx, rt, req, nil, "")
	})
}

// addBansCommand adds `bans list` and `bans lift`.
func addBansCommand(cmd *cobra.Command) {
	bans := &cobra.Command{Use: "bans", Short: "Lists and lifts the bans of client addresses"}
	cmd.AddCommand(bans)
	var cf cliFlags
	var address string
	run := func(c *cobra.Command, req bansRequest) error {
		res, err := runBansOp(c.Context(), cf, req)
		if err != nil {
			return err
		}
		if res.Lifted != "" {
			fmt.Fprintf(c.ErrOrStderr(), "lifted the ban and failures of %s\n", res.Lifted)
		}
		tw := tabwriter.NewWriter(c.OutOrStdout(), 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tBANNED UNTIL")
		for _, b := range res.Bans {
			fmt.Fprintf(tw, "%s\t%s\n", b.Address, b.Until.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	}
	list := &cobra.Command{
		Use:   "list --config <file>",
		Short: "Lists the client addresses banned now (IPv4 addresses, IPv6 /64s)",
		Long: `Lists the client addresses banned now: max_retries_per_ip failed
sign-ins or codes from one address within find_time, whatever accounts
they tried, ban the address (an IPv4 address, or an IPv6 /64) for
ban_time. Everyone behind it is kept out, an office's NAT say; a user's
own bans are in users list, and users unlock lifts them.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return run(c, bansRequest{Op: "list"}) },
	}
	cf.register(list, false)
	lift := &cobra.Command{
		Use:   "lift --config <file> --address <ip>",
		Short: "Lifts the ban of a client address and forgets its failures",
		Long: `Lifts the ban of a client address and forgets its failures (an
admin.address.unlock audit row). --address is an IP address, or an
IPv6 /64 as bans list shows it. Through the running Caddy when it holds
the store.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return run(c, bansRequest{Op: "lift", Address: address})
		},
	}
	cf.register(lift, false)
	lift.Flags().StringVar(&address, "address", "", "the client address: an IP address, or an IPv6 /64 as listed")
	_ = lift.MarkFlagRequired("address")
	bans.AddCommand(list, lift)
	commandGroup(bans)
}

// readOnly reports whether the request changes nothing (runOp).
func (r bansRequest) readOnly() bool { return r.Op == "list" }
