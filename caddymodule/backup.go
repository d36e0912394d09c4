package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/store"
)

// backupStore writes a consistent copy of the store to w, after its
// admin.store.backup row: a copy of every password hash and sealed
// secret is not made unrecorded. (The copy holds that row.) A copy that
// then fails gets a failure row after it.
func backupStore(ctx context.Context, rt *runtime, w io.Writer, size func(int64), r *http.Request) (int64, error) {
	ev := event{action: "admin.store.backup", actorType: audit.ActorSystem, outcome: "success"}
	if err := rt.record(ctx, rowFor(r, ev)); err != nil {
		return 0, fmt.Errorf("writing audit row: %w", err)
	}
	n, err := rt.store.Backup(w, size)
	if err != nil {
		ev.outcome, ev.meta = "failure", map[string]string{"reason": "incomplete"}
		if aerr := rt.record(ctx, rowFor(r, ev)); aerr != nil {
			err = fmt.Errorf("%w; and writing the failure row: %v", err, aerr)
		}
	}
	return n, err
}

// handleAdminBackup answers GET with a copy of the store, its length
// known in advance (Content-Length), for `caddy sigra backup` while
// Caddy holds the store.
func handleAdminBackup(w http.ResponseWriter, r *http.Request) error {
	return streamToAdmin(w, r, "application/octet-stream", "store backup", func(rt *runtime) (int64, error) {
		return backupStore(r.Context(), rt, w, func(size int64) {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		}, r)
	})
}

// addBackupCommand adds `backup`.
func addBackupCommand(cmd *cobra.Command) {
	var cf cliFlags
	var out string
	c := &cobra.Command{
		Use:   "backup --config <file> --out <file>",
		Short: "Writes a consistent copy of the store to a file, while Caddy runs or not",
		Long: `Writes a copy of the Sigra store (the bbolt file) to --out, consistent as
of one moment: sign-ins and other writes go on meanwhile, and none is
half in the copy. Through the running Caddy when it holds the store.
The copy is written next to --out, checked as a start would check it,
and only then renamed over --out, with mode 0600. It is an
admin.store.backup audit row.

The copy's secrets are sealed with the store's encryption key
(encryption.key next to the store, or keys { encryption_key }): keep
the key, apart from the copies. To restore, stop Caddy and put the copy
in place of the store file.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return backupCommand(c, cf, out) },
	}
	cf.register(c, false)
	c.Flags().StringVar(&out, "out", "", "the file to write the copy to (replaced only by a whole, checked copy)")
	cmd.AddCommand(c)
}

// backupCommand runs `caddy sigra backup`.
func backupCommand(c *cobra.Command, cf cliFlags, out string) error {
	if out == "" {
		return errors.New("backup: --out <file> is required: where to write the copy")
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cfg, err := loadAppConfig(cf.config, cf.adapter)
	if err != nil {
		return err
	}
	if sameStoreFile(storeFile(out), cfg.app.storeFile()) {
		return fmt.Errorf("backup: --out %s is the store itself", out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".sigra-backup-*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone once renamed; left by nothing else
	defer tmp.Close()
	var n int64
	err = onStore(cf, false, func(cfg *cliConfig) error {
		resp, err := adminRequest(cfg, http.MethodGet, "/sigra/backup", nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		// A copy cut short is io.ErrUnexpectedEOF here.
		n, err = io.Copy(tmp, resp.Body)
		return err
	}, func(rt *runtime, _ *App) error {
		n, err = backupStore(c.Context(), rt, tmp, nil, nil)
		return err
	})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = store.CheckBackup(tmp.Name())
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	if err != nil {
		return fmt.Errorf("backup: %w (%s is unchanged)", err, out)
	}
	fmt.Fprintf(c.ErrOrStderr(), "wrote a backup of %s to %s (%d bytes)\n", cfg.store, out, n)
	return nil
}
