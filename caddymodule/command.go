package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/store"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sigra",
		Usage: "users <add|list|passwd|groups|disable|enable|unlock|signout|mfa-reset|delete> | keys <list|rotate> | bans <list|lift> | audit <export|replay> | backup --config <file> [flags]",
		Short: "Manages Sigra gateway users, assertion keys, address bans and the audit trail, and backs up the store",
		Long: `
Manages the users, the identity-assertion keys, the bans of client
addresses and the audit trail of the Sigra gateway.

The store and the admin endpoint are found from the config (--config,
--adapter; without --config, ./Caddyfile, as caddy run reads it). When no
Caddy holds the store, the command opens it directly; when a running Caddy
holds its lock, the command goes through that Caddy's admin API instead.

  caddy sigra users add    --config Caddyfile --email a@example.com [--name N] [--groups a,b] [--admin] [--password-stdin]
  caddy sigra users list   --config Caddyfile
  caddy sigra users passwd --config Caddyfile --email a@example.com --password-stdin
  caddy sigra users groups --config Caddyfile --email a@example.com --groups dev,ops [--admin]
  caddy sigra users disable|enable|unlock|signout --config Caddyfile --email a@example.com
  caddy sigra users mfa-reset|delete      --config Caddyfile --email a@example.com
  caddy sigra keys list    --config Caddyfile
  caddy sigra keys rotate  --config Caddyfile
  caddy sigra bans list    --config Caddyfile
  caddy sigra bans lift    --config Caddyfile --address 203.0.113.7
  caddy sigra audit export --config Caddyfile [--since 24h] [--until <RFC 3339 or 1h>]
  caddy sigra audit replay --config Caddyfile [--hook <id> [--to <id>]]
  caddy sigra backup       --config Caddyfile --out sigra-backup.db
`,
		CobraFunc: buildSigraCommand,
	})
}

func buildSigraCommand(cmd *cobra.Command) {
	// "users" as DESIGN names it; "user" as earlier releases did.
	user := &cobra.Command{Use: "users", Aliases: []string{"user"}, Short: "Manages users"}
	cmd.AddCommand(user)

	var cf cliFlags
	add := &cobra.Command{
		Use:   "add --email <email> [--name <name>] [--groups <a,b>] [--admin] [--password-stdin]",
		Short: "Adds a user (without --password-stdin, a random password is printed)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			req := userRequest{Op: "add", Email: cf.email, Name: cf.name, Admin: cf.admin}
			if cf.groups != "" {
				req.Groups = strings.Split(cf.groups, ",")
			}
			generated := false
			if cf.passwordStdin {
				pw, err := readPasswordFrom(c)
				if err != nil {
					return err
				}
				req.Password = pw
			} else {
				req.Password, generated = authcore.RandomPassword(), true
				// Asked for, SIGPIPE no longer ends the command silently
				// at its first line: the write fails, and says so.
				signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
			}
			res, err := runUserOp(c.Context(), cf, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "added %s (%s)\n", res.User.Email, res.User.ID)
			if generated {
				// Printed once, and kept nowhere: a write that fails (a
				// full disk under > creds.txt, a pipe closed early) leaves
				// nobody the password.
				if _, err := fmt.Fprintf(c.OutOrStdout(), "password: %s\n", req.Password); err != nil {
					return fmt.Errorf("added %s, but its password could not be written out (%w), so nobody has it: set one with users passwd --email %s --password-stdin", res.User.Email, err, res.User.Email)
				}
			}
			return nil
		},
	}
	cf.register(add, true)
	add.Flags().StringVar(&cf.name, "name", "", "display name")
	add.Flags().StringVar(&cf.groups, "groups", "", "comma-separated groups")
	add.Flags().BoolVar(&cf.admin, "admin", false, "add to the admin group")
	add.Flags().BoolVar(&cf.passwordStdin, "password-stdin", false, "read the password from stdin: one line (more lines sent with it are refused)")

	list := &cobra.Command{
		Use: "list", Short: "Lists users", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(c.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEMAIL\tNAME\tGROUPS\tSECOND FACTOR\tSTATUS")
			after := ""
			for {
				res, err := runUserOp(c.Context(), cf, userRequest{Op: "list", After: after})
				if err != nil {
					return err
				}
				for _, u := range res.Users {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Name, strings.Join(u.Groups, ","), secondFactorText(u), statusText(u))
				}
				if res.NextCursor == "" {
					break
				}
				after = res.NextCursor
			}
			return tw.Flush()
		},
	}
	cf.register(list, false)

	passwd := &cobra.Command{
		Use: "passwd --email <email> --password-stdin", Short: "Sets a user's password and ends their sessions", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !cf.passwordStdin {
				return errors.New("passwd needs --password-stdin (the new password on the first line of stdin)")
			}
			pw, err := readPasswordFrom(c)
			if err != nil {
				return err
			}
			res, err := runUserOp(c.Context(), cf, userRequest{Op: "passwd", User: cf.email, Password: pw})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "password changed for %s; their sessions have ended\n", res.User.Email)
			return nil
		},
	}
	cf.register(passwd, true)
	passwd.Flags().BoolVar(&cf.passwordStdin, "password-stdin", false, "read the password from stdin: one line (more lines sent with it are refused)")

	for _, o := range []struct{ op, short, done string }{
		{"disable", "Disables a user and ends their sessions", "disabled %s"},
		{"enable", "Enables a disabled user", "enabled %s"},
		{"unlock", "Lifts a user's bans (sign-in, codes, password re-checks), and opens an authenticator app locked by wrong codes", "unlocked %s"},
		{"signout", "Ends all of a user's sessions (they sign in again; nothing else changes)", "signed %s out everywhere"},
		{"mfa-reset", "Removes a user's authenticator app and recovery codes, and ends their sessions",
			"second factor of %s reset: they sign in with their password and can enrol again"},
		{"delete", "Deletes a user, their sessions and second factors (not the last admin; the audit trail stays)", "deleted %s"},
	} {
		c := &cobra.Command{
			Use: o.op + " --email <email>", Short: o.short, Args: cobra.NoArgs,
			SuggestFor: map[string][]string{"delete": {"remove", "rm", "del"}, "signout": {"logout", "revoke"}}[o.op],
			RunE: func(c *cobra.Command, _ []string) error {
				res, err := runUserOp(c.Context(), cf, userRequest{Op: o.op, User: cf.email})
				if err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), o.done+"\n", res.User.Email)
				return nil
			},
		}
		cf.register(c, true)
		user.AddCommand(c)
	}
	groups := &cobra.Command{
		Use:   "groups --email <email> --groups <a,b> [--admin]",
		Short: "Sets a user's groups (--groups \"\" for none; --admin adds the admin group)",
		Long: `Sets a user's groups to exactly those of --groups (comma-separated;
"" for none), plus the admin group with --admin. --admin without
--groups adds the admin group and keeps the others. Their signed-in
sessions carry the new groups from their next request.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !c.Flags().Changed("groups") && !cf.admin {
				return errors.New(`groups needs --groups (comma-separated, or "" for none) or --admin`)
			}
			req := userRequest{Op: "groups", User: cf.email, Admin: cf.admin, Groups: []string{}, Keep: !c.Flags().Changed("groups")}
			if cf.groups != "" {
				req.Groups = strings.Split(cf.groups, ",")
			}
			res, err := runUserOp(c.Context(), cf, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "groups of %s: %s\n", res.User.Email, strings.Join(res.User.Groups, ","))
			return nil
		},
	}
	cf.register(groups, true)
	groups.Flags().StringVar(&cf.groups, "groups", "", "comma-separated groups (\"\" for none)")
	groups.Flags().BoolVar(&cf.admin, "admin", false, "also the admin group")
	user.AddCommand(add, list, passwd, groups)

	addKeysCommand(cmd)
	addBansCommand(cmd)
	addBackupCommand(cmd)

	auditCmd := &cobra.Command{Use: "audit", Short: "Reads the audit trail"}
	cmd.AddCommand(auditCmd)
	var since, until string
	export := &cobra.Command{
		Use:   "export --config <file> [--since <time>] [--until <time>]",
		Short: "Writes audit rows as NDJSON to stdout, oldest first",
		Long: `Writes audit rows as NDJSON (one JSON row a line) to stdout, oldest
first. --since and --until take RFC 3339 times or durations back from now
(for example 24h or 30d).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return exportAudit(c, cf, since, until)
		},
	}
	cf.register(export, false)
	export.Flags().StringVar(&since, "since", "", "first time to include (RFC 3339, or a duration back from now)")
	export.Flags().StringVar(&until, "until", "", "time to stop before (RFC 3339, or a duration back from now)")
	auditCmd.AddCommand(export)
	var hook, to string
	replay := &cobra.Command{
		Use:   "replay --config <file> [--hook <id> [--to <id>]]",
		Short: "Puts dead webhook deliveries back in the outbox",
		Long: `Puts webhook deliveries that were given up after the retry limit back
in the outbox, due now with a fresh retry schedule: every webhook's, or
only those of --hook (the hook_id listed by GET
/.sigra/api/admin/audit/webhooks/dead). With --to, those of --hook go to
that configured webhook instead: a webhook whose URL changed is a new
one (a new hook_id), and what was queued for the old URL died there.
Through the running Caddy when it holds the store; otherwise they go out
when Caddy next starts.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if to != "" && hook == "" {
				return fmt.Errorf("%w: --to needs --hook, the webhook the deliveries are from", errUsage)
			}
			return replayAudit(c, cf, hook, to)
		},
	}
	cf.register(replay, false)
	replay.Flags().StringVar(&hook, "hook", "", "only this webhook's deliveries (its hook_id)")
	replay.Flags().StringVar(&to, "to", "", "send them to this configured webhook instead (its hook_id)")
	auditCmd.AddCommand(replay)
	for _, group := range []*cobra.Command{cmd, user, auditCmd} {
		commandGroup(group)
	}
	flagsOnce(cmd)
}

// flagsOnce makes every flag of c and its subcommands refuse to be given
// twice. The flag parser keeps the last value, so users delete --email a
// --email b deleted b, and a script that appends a default to its
// arguments would change the wrong user; which was meant is not for the
// command to guess (the portal refuses a repeated form field alike).
func flagsOnce(c *cobra.Command) {
	c.Flags().VisitAll(func(f *pflag.Flag) { f.Value = &onceValue{Value: f.Value} })
	for _, sub := range c.Commands() {
		flagsOnce(sub)
	}
}

// onceValue is a flag's value that may be set once.
type onceValue struct {
	pflag.Value
	set bool
}

func (o *onceValue) Set(v string) error {
	if o.set {
		return errors.New("given more than once: give it once")
	}
	o.set = true
	return o.Value.Set(v)
}

// addKeysCommand adds `keys list` and `keys rotate`.
func addKeysCommand(cmd *cobra.Command) {
	keys := &cobra.Command{Use: "keys", Short: "Lists and rotates the identity-assertion signing keys"}
	cmd.AddCommand(keys)
	var cf cliFlags
	run := func(c *cobra.Command, req keysRequest) error {
		res, err := runKeysOp(c.Context(), cf, req)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.OutOrStdout(), 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KID\tALG\tSTATUS\tCREATED\tRETIRED")
		for _, k := range res.Keys {
			status, created, retired := "retired", "-", "-"
			if k.Active {
				status = "active"
			}
			if k.FromFile {
				status += " (signing_key file)"
			}
			if !k.CreatedAt.IsZero() {
				created = k.CreatedAt.UTC().Format(time.RFC3339)
			}
			if !k.RetiredAt.IsZero() {
				retired = k.RetiredAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.KID, k.Alg, status, created, retired)
		}
		return tw.Flush()
	}
	list := &cobra.Command{
		Use: "list --config <file>", Short: "Lists the published keys, the active one first", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return run(c, keysRequest{Op: "list"}) },
	}
	cf.register(list, false)
	rotate := &cobra.Command{
		Use:   "rotate --config <file>",
		Short: "Makes a new signing key; the old one stays published until its assertions expire",
		Long: `Makes a new active signing key for the identity assertion. The old key
stays in /.sigra/jwks.json until the assertions it signed have expired
(the assertion lifetime it was retired under). The new key signs at
once: upstreams that cache the JWKS must fetch it again when they meet
an unknown kid (the JWKS is served with Cache-Control: no-cache, so
caches in between revalidate). The new key has the configured algorithm (keys { algorithm }; to
change it, change the config: the next start rotates). Through the
running Caddy when it holds the store. Not available when the key comes
from a signing_key file: replace the file and run caddy reload --force
(without --force, Caddy sees the same config and keeps the old key).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return run(c, keysRequest{Op: "rotate"}) },
	}
	cf.register(rotate, false)
	keys.AddCommand(list, rotate)
	commandGroup(keys)
}

// commandGroup makes a command that only holds subcommands refuse what
// is none of them, with a non-zero exit: by itself cobra prints the help
// and exits 0 for no subcommand, and for a misspelt one complains of its
// flags (caddy sigra users remove --config … said "unknown flag:
// --config").
func commandGroup(c *cobra.Command) {
	var names []string
	for _, sub := range c.Commands() {
		names = append(names, sub.Name())
	}
	c.Args = cobra.ArbitraryArgs
	c.FParseErrWhitelist.UnknownFlags = true
	c.SuggestionsMinimumDistance = 2
	c.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			_ = c.Usage()
			return fmt.Errorf("%s needs a command: %s", c.CommandPath(), strings.Join(names, ", "))
		}
		msg := fmt.Sprintf("unknown command %q for %s (known: %s)", args[0], c.CommandPath(), strings.Join(names, ", "))
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return errors.New(msg)
	}
}

// runKeysOp runs req on the store named by the config: directly when no
// Caddy holds it, else through the running Caddy's admin API.
func runKeysOp(ctx context.Context, cf cliFlags, req keysRequest) (*keysResult, error) {
	return runOp(ctx, cf, nil, "/sigra/keys", req, func(ctx context.Context, rt *runtime, _ *App) (*keysResult, error) {
		return doKeys(ctx, rt, req, nil, "")
	})
}

// runOp runs a CLI operation: direct on the store when no Caddy holds it,
// else as a POST of req to uri on the running Caddy's admin API, whose
// JSON answer is the result. create, when not nil, lets it start a store
// that does not exist yet (see onStore).
func runOp[Req, Res any](ctx context.Context, cf cliFlags, create func(a *App) error, uri string, req Req, direct func(ctx context.Context, rt *runtime, a *App) (*Res, error)) (*Res, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	var res *Res
	err := onStore(cf, create, func(cfg *cliConfig) error {
		body, _ := json.Marshal(req)
		changes := true
		if r, ok := any(req).(interface{ readOnly() bool }); ok {
			changes = !r.readOnly()
		}
		resp, err := adminRequest(cfg, http.MethodPost, uri, bytes.NewReader(body), changes)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		res = new(Res)
		if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(res); err != nil {
			return fmt.Errorf("admin API answer: %w", err)
		}
		return nil
	}, func(rt *runtime, a *App) error {
		var err error
		res, err = direct(ctx, rt, a)
		return err
	})
	return res, err
}

// secondFactorText is the SECOND FACTOR column of users list.
func secondFactorText(u userView) string {
	switch {
	case u.TOTPLocked:
		return "app (locked: unlock, or a recovery code)"
	case u.SecondFactor:
		return "app"
	}
	return "-"
}

// statusText is the STATUS column of users list: disabled, or the bans
// that keep the user out for now (unlock lifts them), or active.
func statusText(u userView) string {
	if u.Disabled {
		return "disabled"
	}
	var bans []string
	if !u.SignInBannedUntil.IsZero() {
		bans = append(bans, "sign-in banned until "+u.SignInBannedUntil.UTC().Format("2006-01-02 15:04 MST"))
	}
	if !u.CodesBannedUntil.IsZero() {
		bans = append(bans, "codes banned until "+u.CodesBannedUntil.UTC().Format("2006-01-02 15:04 MST"))
	}
	if !u.ReauthBannedUntil.IsZero() {
		bans = append(bans, "password re-checks banned until "+u.ReauthBannedUntil.UTC().Format("2006-01-02 15:04 MST"))
	}
	if len(bans) > 0 {
		return strings.Join(bans, ", ")
	}
	return "active"
}

// replayAudit puts dead deliveries back, directly or through the running
// Caddy's admin API when it holds the store.
func replayAudit(c *cobra.Command, cf cliFlags, hook, to string) error {
	return onStore(cf, nil, func(cfg *cliConfig) error {
		resp, err := adminRequest(cfg, http.MethodPost, "/sigra/audit/replay?"+url.Values{"hook": {hook}, "to": {to}}.Encode(), nil, true)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var res struct {
			Replayed int `json:"replayed"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			return fmt.Errorf("reading the admin API's answer: %w", err)
		}
		fmt.Fprintln(c.OutOrStdout(), replayedText(res.Replayed, ""))
		return nil
	}, func(rt *runtime, a *App) error {
		n, err := replayDead(c.Context(), rt, hook, to, nil, "")
		if err != nil {
			return err
		}
		fmt.Fprintln(c.OutOrStdout(), replayedText(n, "; they go out when Caddy next starts"))
		return nil
	})
}

// replayedText says how many dead deliveries a replay put back, and
// then (when there were some).
func replayedText(n int, then string) string {
	if n == 0 {
		return "no dead deliveries to replay"
	}
	return fmt.Sprintf("replayed %d dead deliveries%s", n, then)
}

// errAdminSilent is an admin API that did not answer at all.
type errAdminSilent struct{ err error }

func (e errAdminSilent) Error() string { return e.err.Error() }
func (e errAdminSilent) Unwrap() error { return e.err }

// errOtherStore is a Caddy at the config's admin address that runs
// another Sigra store than the one the command names.
type errOtherStore struct{ msg string }

func (e errOtherStore) Error() string { return e.msg }

// storeAtAdmin asks the Caddy at cfg's admin address, if one answers
// within otherStoreWait, which Sigra store it runs: same if cfg's path,
// errOtherStore if another. The question is a keys list, which carries
// nothing secret to whatever listens there; anything else (nothing
// listening, a Caddy without Sigra) is neither. Asked where the file at
// cfg's path is missing or was not locked: a Caddy running that path
// then has another file open under it (removed, moved or replaced while
// it ran), and one running another path would never read this one.
func storeAtAdmin(cfg *cliConfig) (same bool, other error) {
	answer := make(chan error, 1)
	go func() {
		resp, err := adminRequest(cfg, http.MethodPost, "/sigra/keys", strings.NewReader(`{"op":"list"}`), false)
		if err == nil {
			resp.Body.Close()
		}
		answer <- err
	}()
	select {
	case err := <-answer:
		if errors.As(err, new(errOtherStore)) {
			return false, err
		}
		return err == nil, nil
	case <-time.After(otherStoreWait):
		return false, nil
	}
}

// otherStoreWait bounds storeAtAdmin's question.
var otherStoreWait = 5 * time.Second

// cliLockWait is how long a command waits for the store's lock before
// going through the admin API of the Caddy that holds it.
const cliLockWait = 100 * time.Millisecond

// cliOfflineWait is how long a command waits for the store's lock when
// no Caddy answers for it: another command working offline holds it.
const cliOfflineWait = 15 * time.Second

// removedUnderCaddy refuses a command on a store that is not there when
// a Caddy answering at the config's admin address runs a store elsewhere
// (a relative path read from another directory, another HOME), which
// would never read one made here; or runs this very path, whose file it
// has open still, removed or moved while it ran (unless it made the file
// just now, starting): a store made now would not reach it, and "make
// one" is the wrong advice.
func removedUnderCaddy(cfg *cliConfig) error {
	same, other := storeAtAdmin(cfg)
	if other != nil {
		return other
	}
	if _, err := os.Stat(cfg.app.storagePath); same && errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("a Caddy answering at the admin address runs the store %s, yet there is no file there: "+
			"it was removed or moved while Caddy ran, and a store made now would not reach the running Caddy. "+
			"Put the file back (or restart Caddy, which then makes a new one), then run the command again; nothing was changed", cfg.store)
	}
	return nil
}

// onStore runs direct on the store when no Caddy holds it, or viaAdmin
// when a running Caddy does (its admin API then does the work). Unless
// create is given, a store that does not exist is an error, not a new
// empty one: a CLI run whose config or environment differs from the
// running Caddy's would otherwise answer from (or write to) a store
// nobody uses. Given, it checks the work first, for the config's app:
// refused there, no store is made either.
func onStore(cf cliFlags, create func(a *App) error, viaAdmin func(cfg *cliConfig) error, direct func(rt *runtime, a *App) error) error {
	cfg, err := loadAppConfig(cf.config, cf.adapter)
	if err != nil {
		return err
	}
	a := cfg.app
	abs := cfg.store
	// Not the second a start waits: a lock held is a running Caddy, whose
	// admin API serves the command at once.
	st, err := store.OpenBolt(a.storagePath, store.BoltOptions{MustExist: true, LockTimeout: cliLockWait})
	missing := errors.Is(err, store.ErrNoStore)
	if missing && create == nil {
		if err := removedUnderCaddy(cfg); err != nil {
			return err
		}
		where := ""
		switch {
		case a.Storage.Path == "":
			where = fmt.Sprintf(` Without "storage bbolt <path>" it is in Caddy's data directory (%s), which follows HOME and XDG_DATA_HOME.`, caddy.AppDataDir())
		case !filepath.IsAbs(a.storagePath):
			where = fmt.Sprintf(" The configured path %s is relative: it is read from the directory the command runs in, as Caddy reads it from the one it started in.", a.storagePath)
		}
		which := "check that --config is the file Caddy runs with"
		if cfg.file == "" {
			which = "no --config was given and there is no ./Caddyfile, so this is the default store: give --config the file Caddy runs with"
		}
		return fmt.Errorf("no Sigra store at %s: %s, in the same environment.%s Caddy creates the store when it first starts; so does users add.", abs, which, where)
	}
	if missing {
		if err := create(a); err != nil {
			return err
		}
		// Nor is one made for a running Caddy that would never read it.
		if err := removedUnderCaddy(cfg); err != nil {
			return err
		}
		st, err = store.OpenBolt(a.storagePath, store.BoltOptions{LockTimeout: cliLockWait})
	}
	if errors.Is(err, store.ErrLocked) {
		err = viaAdmin(cfg)
		if !errors.As(err, new(errAdminSilent)) {
			return err
		}
		// No Caddy answers: another command, working offline, may hold
		// the lock for a while (opening a large store takes seconds).
		fmt.Fprintf(cliStderr, "%s is locked by another process and no Caddy answers for it: waiting up to %s for it "+
			"(another caddy sigra command holds it while it runs)\n", abs, cliOfflineWait)
		var again error
		if st, again = store.OpenBolt(a.storagePath, store.BoltOptions{MustExist: create == nil, LockTimeout: cliOfflineWait}); again != nil {
			if errors.Is(again, store.ErrLocked) {
				return err
			}
			return again // freed, but then not a store to open (damaged, gone)
		}
	} else if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: run caddy sigra as the user Caddy runs as (the store is that user's alone)", err)
	} else if err != nil {
		return err
	} else if !missing {
		if same, _ := storeAtAdmin(cfg); same {
			st.Close()
			return fmt.Errorf("a Caddy answering at the admin address runs the store %s, yet the file there was not locked: "+
				"it is not the file that Caddy has open (replaced or restored while it ran), and a change made to it now "+
				"would not reach the running Caddy. Restart Caddy (it then opens this file), then run the command again; nothing was changed", abs)
		}
	}
	if missing {
		// Said on stderr: a store made where Caddy will not look is
		// otherwise found out only when nobody can sign in.
		fmt.Fprintf(os.Stderr, "created a new Sigra store at %s\n", abs)
	}
	defer st.Close()
	rt, err := a.buildRuntime(st)
	if err != nil {
		return err
	}
	defer rt.audit.Close()
	if err := direct(rt, a); errors.Is(err, authcore.ErrNotFound) {
		return fmt.Errorf("%w (in the store %s)", err, abs)
	} else if err != nil {
		return err
	}
	return nil
}

// exportRange parses the export window.
func exportRange(since, until string, now time.Time) (s, u time.Time, err error) {
	if s, err = audit.ParseTime(since, now); err != nil {
		return s, u, fmt.Errorf("since: %w", err)
	}
	if u, err = audit.ParseTime(until, now); err != nil {
		return s, u, fmt.Errorf("until: %w", err)
	}
	return s, u, audit.CheckRange(s, u)
}

// exportAudit writes NDJSON from the store, or through the running
// Caddy's admin API when it holds the store.
func exportAudit(c *cobra.Command, cf cliFlags, since, until string) error {
	sinceT, untilT, err := exportRange(since, until, time.Now())
	if err != nil {
		return err
	}
	return onStore(cf, nil, func(cfg *cliConfig) error {
		q := url.Values{}
		if !sinceT.IsZero() {
			q.Set("since", sinceT.Format(time.RFC3339Nano))
		}
		if !untilT.IsZero() {
			q.Set("until", untilT.Format(time.RFC3339Nano))
		}
		resp, err := adminRequest(cfg, http.MethodGet, "/sigra/audit/export?"+q.Encode(), nil, false)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		lines := &lineCounter{w: c.OutOrStdout()}
		if _, err := io.Copy(lines, resp.Body); err != nil {
			return err
		}
		fmt.Fprintf(c.ErrOrStderr(), "exported %d rows\n", lines.n)
		return nil
	}, func(rt *runtime, a *App) error {
		n, err := rt.audit.Export(c.Context(), c.OutOrStdout(), sinceT, untilT)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.ErrOrStderr(), "exported %d rows\n", n)
		return nil
	})
}

// lineCounter counts the lines (rows of JSON Lines) written through it.
type lineCounter struct {
	w io.Writer
	n int
}

func (l *lineCounter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	l.n += bytes.Count(p[:n], []byte{'\n'})
	return n, err
}

// cliFlags are the flags shared by the subcommands.
type cliFlags struct {
	config, adapter string
	email, name     string
	groups          string
	admin           bool
	passwordStdin   bool
}

func (cf *cliFlags) register(c *cobra.Command, needEmail bool) {
	c.Flags().StringVarP(&cf.config, "config", "c", "", "the Caddy config file that configures sigra")
	c.Flags().StringVarP(&cf.adapter, "adapter", "a", "", "the config adapter (default: caddyfile for Caddyfiles)")
	if needEmail {
		c.Flags().StringVar(&cf.email, "email", "", "the user's email (or, except for add, id)")
		_ = c.MarkFlagRequired("email")
	}
}

// readPasswordFrom reads the password for --password-stdin: the one
// line of a pipe (readPassword), or, typed on a terminal, after a prompt
// and without echo, so that it is not left on the screen and in its
// scrollback.
func readPasswordFrom(c *cobra.Command) (string, error) {
	if f, ok := c.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(c.ErrOrStderr(), "Password (not shown as you type): ")
		// Ctrl-C at the prompt: the terminal echoes again, as before.
		stop := func() {}
		if state, err := term.GetState(fd); err == nil {
			stop = onInterrupt(func() {
				_ = term.Restore(fd, state)
				fmt.Fprintln(c.ErrOrStderr())
			})
		}
		b, err := term.ReadPassword(fd)
		stop()
		fmt.Fprintln(c.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("reading the password from the terminal: %w", err)
		}
		return readPassword(bytes.NewReader(append(b, '\n')))
	}
	return readPassword(c.InOrStdin())
}

// readPassword reads the password, the one line of r.
func readPassword(r io.Reader) (string, error) {
	// No more than a password's bytes, its line end and one to tell a
	// longer one: a stream without a line end is not read into memory
	// whole.
	lr := &io.LimitedReader{R: r, N: authcore.MaxPasswordLen + 3}
	br := bufio.NewReader(lr)
	line, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if !strings.HasSuffix(line, "\n") && lr.N == 0 {
		return "", fmt.Errorf("%w: the first line on stdin is longer than a password may be (%d bytes)", authcore.ErrInvalidInput, authcore.MaxPasswordLen)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("no password on stdin")
	}
	// A second line would otherwise be dropped without a word (a
	// password file in two lines, say). A file is read to its end; of a
	// pipe or a terminal, only what came with the first line: a parent
	// may keep a pipe open, and someone may type into one (docker exec
	// -i), so waiting for its end could wait for ever.
	rest := make([]byte, br.Buffered())
	_, _ = br.Read(rest)
	if f, ok := r.(*os.File); !ok || isRegular(f) {
		more, err := io.ReadAll(io.LimitReader(io.MultiReader(br, r), 1<<16))
		if err != nil {
			return "", err
		}
		rest = append(rest, more...)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return "", fmt.Errorf("%w: stdin holds more than one line; the password is the first line, alone", authcore.ErrInvalidInput)
	}
	return pw, nil
}

// isRegular says whether f is a regular file (stdin from < file).
func isRegular(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular()
}

// runUserOp runs req on the store named by the config: directly when no
// Caddy holds it, else through the running Caddy's admin API.
func runUserOp(ctx context.Context, cf cliFlags, req userRequest) (*userResult, error) {
	// Through a running Caddy the request travels as JSON, which turns
	// bytes that are not UTF-8 into U+FFFD: refused here, as the store
	// refuses them when the command opens it itself.
	for what, v := range map[string]string{"password": req.Password, "email": req.Email, "name": req.Name, "user": req.User} {
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("%w: the %s is not text (UTF-8)", authcore.ErrInvalidInput, what)
		}
	}
	for _, g := range req.Groups {
		if !utf8.ValidString(g) {
			return nil, fmt.Errorf("%w: group name %q is not text (UTF-8)", authcore.ErrInvalidInput, g)
		}
	}
	// Only adding a user may start a new store: every other operation
	// needs the users of an existing one. A user it would refuse is
	// refused first, leaving no empty store behind.
	var create func(a *App) error
	if req.Op == "add" {
		create = func(a *App) error {
			return authcore.CheckNewUser(authcore.NewUser{Email: req.Email, Name: req.Name, Groups: requestedGroups(req, a.AdminGroup), Password: req.Password})
		}
	}
	return runOp(ctx, cf, create, "/sigra/users", req, func(ctx context.Context, rt *runtime, a *App) (*userResult, error) {
		return doUser(ctx, rt, a.AdminGroup, req, nil, "")
	})
}

// cliConfig is the config a CLI run works with.
type cliConfig struct {
	json    []byte // in Caddy's JSON
	file    string // the file it came from (./Caddyfile without --config), or "" for none
	adapter string // the adapter that read it
	app     *App   // its sigra app, completed
	store   string // the app's store path, absolute, for messages
}

// loadAppConfig adapts the config file (without one, ./Caddyfile if there
// is one, as caddy run does) and completes its sigra app.
func loadAppConfig(configFile, adapter string) (*cliConfig, error) {
	cfgJSON, file, adapterUsed, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if len(cfgJSON) > 0 {
		if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
	}
	a := new(App)
	if raw := cfg.Apps["sigra"]; raw != nil {
		if err := json.Unmarshal(raw, a); err != nil {
			return nil, fmt.Errorf("reading sigra config: %w", err)
		}
	} else if file != "" && len(bytes.TrimSpace(cfgJSON)) == 0 {
		return nil, fmt.Errorf("%s is empty: give --config the file Caddy runs with", file)
	} else if len(cfgJSON) > 0 && !usesSigra(cfgJSON) {
		// Without sigra options the store is the default one; a config
		// that does not use Sigra at all is the wrong file, and would
		// have the command answer from (or make) a store nobody runs.
		return nil, fmt.Errorf("%s does not use Sigra (no sigra options, sigra_portal or sigra_gate): give --config the file Caddy runs with", file)
	}
	a.logger = caddy.Log()
	a.slog = slog.New(slog.DiscardHandler)
	if err := a.setDefaults(); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(a.storagePath)
	if err != nil {
		return nil, fmt.Errorf("storage path %s: %w", a.storagePath, err)
	}
	return &cliConfig{json: cfgJSON, file: file, adapter: adapterUsed, app: a, store: abs}, nil
}

// usesSigra reports whether a config without a sigra app has a
// sigra_portal or sigra_gate handler anywhere (Caddy then runs the sigra
// app with its defaults).
func usesSigra(cfgJSON []byte) bool {
	var doc any
	if json.Unmarshal(cfgJSON, &doc) != nil {
		return true // read as well as Caddy can: not ours to refuse
	}
	return jsonHandler(doc, func(h map[string]any) bool {
		n, _ := h["handler"].(string)
		return strings.HasPrefix(n, "sigra_")
	})
}

// adminAddress is the admin endpoint of the Caddy that runs cfg: its
// admin listen address, or Caddy's default. Like caddy reload, it reads
// the address from the file the config came from, also when that is the
// ./Caddyfile found without --config.
func (cfg *cliConfig) adminAddress() (string, error) {
	return caddycmd.DetermineAdminAPIAddress("", cfg.json, cfg.file, cfg.adapter)
}

// adminWaitNotice is how long adminRequest waits for an answer before it
// says it is still waiting, on cliStderr (variables for the tests).
var (
	adminWaitNotice           = 15 * time.Second
	cliStderr       io.Writer = os.Stderr
)

// adminRequest calls the admin API of the running Caddy that holds cfg's
// store. Error answers come back as errors with Caddy's message. The
// request names the store it means, and the Caddy answering refuses it if
// that is not the store it runs. changes says whether it changes
// anything: then Ctrl-C before the answer warns (cautionOnInterrupt).
func adminRequest(cfg *cliConfig, method, uri string, body io.Reader, changes bool) (*http.Response, error) {
	path := cfg.store
	// With the admin endpoint off, nothing of ours listens: never send the
	// request (a password, perhaps) to whatever holds the default address.
	var admin struct {
		Admin *struct {
			Disabled bool `json:"disabled"`
		} `json:"admin"`
	}
	if err := json.Unmarshal(cfg.json, &admin); err == nil && admin.Admin != nil && admin.Admin.Disabled {
		return nil, fmt.Errorf("%s is locked by a running Caddy whose admin endpoint is off (admin off): stop Caddy to run this command", path)
	}
	addr, err := cfg.adminAddress()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	// The file the CLI found locked: the answering Caddy must hold that
	// very file (storeFile resolves both sides' paths alike).
	q.Set("store", cfg.app.storeFile())
	if cfg.file != "" {
		q.Set("config", cfg.file) // for the answer's message only
	}
	u.RawQuery = q.Encode()
	// Only a Caddy that could not be reached may be passed over for the
	// store itself. One that took the request and then died (killed
	// mid-commit) may have done the work, and freed the store: doing it
	// again there would add twice, rotate twice, or call a deleted user
	// not found. AdminAPIRequest's errors do not tell a failed dial from
	// a connection lost after the request, so a dial first tells.
	if err := dialAdmin(addr); err != nil {
		return nil, fmt.Errorf("%s is locked by another process, and no Caddy answered at the admin address %s (%w): "+
			"a Caddy running on this store needs its admin endpoint there for this command (or stop it); "+
			"another caddy sigra command holds the store only while it runs", path, addr, errAdminSilent{err})
	}
	// A Caddy that took the request and then stops answering (stopped
	// with SIGSTOP, a disk that hangs) would hold the command silent for
	// good; a long one (a backup) answers late. Say which it may be.
	notice := time.AfterFunc(adminWaitNotice, func() {
		fmt.Fprintf(cliStderr, "still waiting for the Caddy at %s, which took the request and has not answered yet: "+
			"it is busy (a big backup or export), or stopped answering. Ctrl-C gives up; the command may or may not "+
			"have been done then: check (users list, keys list, audit export) before running it again\n", addr)
	})
	stopCaution := func() {}
	if changes {
		stopCaution = cautionOnInterrupt(addr)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, u.String(), nil, body)
	stopCaution()
	notice.Stop()
	if err != nil {
		// AdminAPIRequest turns a 4xx/5xx answer into an error carrying
		// the body: that is Caddy answering, not an unreachable endpoint.
		if _, answer, ok := strings.Cut(err.Error(), "caddy responded with error: "); ok {
			var apiErr struct {
				Error string `json:"error"`
			}
			var status int
			_, _ = fmt.Sscanf(answer, "HTTP %d:", &status)
			if _, js, ok := strings.Cut(answer, ": "); ok && json.Unmarshal([]byte(js), &apiErr) == nil && apiErr.Error != "" {
				if status == http.StatusMisdirectedRequest {
					// Another Caddy than the one holding the store.
					msg := "admin API at " + addr + ": " + apiErr.Error
					if rest, ok := strings.CutPrefix(apiErr.Error, "this Caddy "); ok {
						msg = "Caddy at " + addr + " " + rest
					}
					return nil, errOtherStore{msg + "; nothing was done (the admin address in the config must be that of the Caddy that holds its store)"}
				}
				return nil, errors.New(apiErr.Error)
			}
			return nil, fmt.Errorf("admin API at %s: %s", addr, answer)
		}
		return nil, fmt.Errorf("the Caddy at %s stopped answering after it was sent the request (%w): the command may or may not have been done; "+
			"check (users list, keys list, audit export) before running it again", addr, err)
	}
	return resp, nil
}

// cautionOnInterrupt says, should Ctrl-C (or a TERM) end the command
// while a change sent to the Caddy at addr has no answer yet, that it
// may or may not have been done (that Caddy goes on with it), then ends
// the command as the signal would have. It stops watching when called.
func cautionOnInterrupt(addr string) (stop func()) {
	return onInterrupt(func() {
		fmt.Fprintf(cliStderr, "interrupted while waiting for the Caddy at %s, which took the request: the command may or may not "+
			"have been done; check (users list, keys list, audit export) before running it again\n", addr)
	})
}

// onInterrupt runs last, should Ctrl-C or a TERM end the command before
// stop is called, then ends the command as the signal would have. A
// signal the command was started ignoring (a background job's SIGINT)
// is left alone: it ends nothing.
func onInterrupt(last func()) (stop func()) {
	var sigs []os.Signal
	for _, s := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		if !signal.Ignored(s) {
			sigs = append(sigs, s)
		}
	}
	if len(sigs) == 0 {
		return func() {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, sigs...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			last()
			signal.Stop(sig)
			if p, err := os.FindProcess(os.Getpid()); err != nil || p.Signal(s) != nil {
				os.Exit(130)
			}
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
}

// dialAdmin connects to the admin address and hangs up: an error is a
// Caddy that cannot have been sent anything.
func dialAdmin(addr string) error {
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil {
		return err
	}
	host := na.JoinHostPort(0)
	if na.IsUnixNetwork() {
		host, _, _ = strings.Cut(host, "|") // socket permission bits, not part of the path
	}
	c, err := net.DialTimeout(na.Network, host, 5*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// startedConfig is the config file this process was started with (caddy
// run or start, --config or -c), absolute, with its --adapter if one was
// given, or else the Caddyfile in the working directory that Caddy loads
// then, as flags for commands to copy; or a stand-in when there is none (a
// config loaded through the admin API). Caddy does not tell a module
// which file it loaded; the arguments are read with Caddy's own flags for
// the command.
func startedConfig(args []string) string {
	const unknown = "--config <this config>"
	if len(args) < 2 || (args[1] != "run" && args[1] != "start") {
		return unknown
	}
	def, ok := caddycmd.Commands()[args[1]]
	if !ok || def.CobraFunc == nil {
		return unknown
	}
	cmd := new(cobra.Command)
	def.CobraFunc(cmd) // defines the command's flags, as Caddy parsed them
	fs := cmd.Flags()
	fs.SetOutput(io.Discard)
	fs.ParseErrorsWhitelist.UnknownFlags = true
	if fs.Parse(args[2:]) != nil {
		return unknown
	}
	path, _ := fs.GetString("config")
	adapter, _ := fs.GetString("adapter")
	if path == "" {
		// as Caddy does: the Caddyfile in the working directory, if any
		if fi, err := os.Stat("Caddyfile"); err != nil || !fi.Mode().IsRegular() {
			return unknown
		}
		path = "Caddyfile"
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	out := "--config " + shellWord(path)
	if adapter != "" {
		out += " --adapter " + shellWord(adapter)
	}
	return out
}

// passwdCommand is the command that changes email's password, to paste
// into a shell: this very binary (there may be no caddy on the PATH, as
// in the demo, or another build), the config this process was started
// with, and a cd to the working directory first, where the config's
// relative paths (a store, a signing key) are found.
func passwdCommand(args []string, email string) string {
	exe := "caddy"
	if p, err := os.Executable(); err == nil {
		exe = shellWord(p)
	}
	cmd := exe + " sigra users passwd " + startedConfig(args) + " --email " + shellWord(email) + " --password-stdin"
	if wd, err := os.Getwd(); err == nil {
		cmd = "cd " + shellWord(wd) + " && " + cmd
	}
	return cmd
}

// shellWord is s as one word for a POSIX shell: as it is when it holds
// nothing a shell reads, else single-quoted.
func shellWord(s string) string {
	safe := func(r rune) bool {
		return r < utf8.RuneSelf && (r == '/' || r == '.' || r == '_' || r == '-' || r == '+' || r == ':' || r == '@' || r == ',' ||
			'0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !safe(r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
