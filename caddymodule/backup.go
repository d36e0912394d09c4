package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/internal/tmpfile"
	"github.com/sigra-auth/caddy-sigra/store"
)

// backupStore writes a consistent copy of the store to w, a local file,
// after its admin.store.backup row: a copy of every password hash and
// sealed secret is not read out unrecorded. (The copy holds that row.)
// A copy that then fails gets a failure row after it.
func backupStore(ctx context.Context, rt *runtime, w io.Writer, r *http.Request) (int64, error) {
	ev := event{action: "admin.store.backup", actorType: audit.ActorSystem, outcome: "success"}
	if err := rt.record(ctx, rowFor(r, ev)); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			// The copy may be going elsewhere; its row cannot.
			return 0, fmt.Errorf("writing audit row (a backup is recorded before it is made): the store's file system is full, free space there first: %w", err)
		}
		return 0, fmt.Errorf("writing audit row: %w", err)
	}
	n, err := rt.store.Backup(w)
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
// Caddy holds the store. The copy's read transaction holds back any
// write that must grow the store's map for as long as it lasts, and the
// reads queued behind that write: so the copy is made to a file next to
// the store, at disk speed, and that file is what the client reads, at
// its own pace.
func handleAdminBackup(w http.ResponseWriter, r *http.Request) error {
	return streamToAdmin(w, r, "application/octet-stream", "store backup", func(rt *runtime, out io.Writer) error {
		dir := filepath.Dir(rt.store.Path())
		f, err := os.CreateTemp(dir, ".sigra-backup-*")
		if err != nil {
			return fmt.Errorf("the running Caddy copies the store into its own directory (%s) before sending it, and could not: %w", dir, err)
		}
		// Unnamed from the start where the system allows it (the open
		// file stays readable): a Caddy that dies mid-copy leaves no copy
		// of the password hashes behind it.
		if os.Remove(f.Name()) != nil {
			defer os.Remove(f.Name())
		}
		defer f.Close()
		size, err := backupStore(r.Context(), rt, f, r)
		if err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err != nil {
			return err
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, err = io.Copy(out, f)
		return err
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
half in the copy. Through the running Caddy when it holds the store
(which first copies it to a file beside the store: leave room there).
The copy is written next to --out, checked as a start would check it,
and only then renamed over --out, with mode 0600. An existing --out is
replaced only if it is an earlier copy of the same store. It is an
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
	switch out {
	case "":
		return errors.New("backup: --out <file> is required: where to write the copy")
	case "-":
		return errors.New("backup: --out -: the copy is checked before it is kept, so it cannot go to standard output: name a file")
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cfg, err := loadAppConfig(cf.config, cf.adapter)
	if err != nil {
		return err
	}
	replacing, err := checkBackupOut(out, cfg)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	tmp, err := tmpfile.New(filepath.Dir(out), ".sigra-backup-*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer tmp.Remove()
	// Ctrl-C or a TERM mid-copy ends the copy (its writes fail), so the
	// part copied, password hashes and all, is removed on the way out.
	ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			// Closed and, where the system cannot keep it unnamed,
			// removed now: a second Ctrl-C ends the process before
			// the deferred Remove.
			tmp.Remove()
			// A copy waiting on a Caddy that does not answer is not ended
			// by its writes failing: the next Ctrl-C ends the command.
			stop()
			fmt.Fprintln(c.ErrOrStderr(), "backup: interrupted; the partial copy is removed (Ctrl-C again if this does not end)")
		case <-done:
		}
	}()
	var n int64
	err = onStore(cf, nil, func(cfg *cliConfig) error {
		resp, err := adminRequest(cfg, http.MethodGet, "/sigra/backup", nil, false)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		// A copy cut short is io.ErrUnexpectedEOF here.
		n, err = io.Copy(tmp, resp.Body)
		return err
	}, func(rt *runtime, _ *App) error {
		n, err = backupStore(ctx, rt, tmp, nil)
		return err
	})
	if ctx.Err() != nil {
		err = errors.New("interrupted") // its writes failed on the closed file; or it stopped just as the copy ended
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = store.CheckBackup(tmp.Path())
	}
	if err == nil && replacing {
		err = sameStoreCopy(tmp.Path(), out)
	}
	if err == nil {
		err = tmp.Keep(out)
	}
	if err != nil {
		return fmt.Errorf("backup: %w (%s is unchanged)", err, out)
	}
	fmt.Fprintf(c.ErrOrStderr(), "wrote a backup of %s to %s (%d bytes)\n", cfg.store, out, n)
	return nil
}

// checkBackupOut refuses an --out that is the store itself, a directory,
// or a file that is not a copy of a store: a typo must not replace the
// encryption key or the Caddyfile with a copy. It reports whether --out
// exists, a store (sameStoreCopy then checks that it is this one's).
func checkBackupOut(out string, cfg *cliConfig) (bool, error) {
	if sameStoreFile(storeFile(out), cfg.app.storeFile()) {
		return false, fmt.Errorf("--out %s is the store itself", out)
	}
	if dir, err := os.Stat(filepath.Dir(out)); err != nil || !dir.IsDir() {
		return false, fmt.Errorf("--out %s: the directory %s does not exist", out, filepath.Dir(out))
	}
	fi, err := os.Stat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case fi.IsDir():
		return false, fmt.Errorf("--out %s is a directory: name the file to write", out)
	}
	if err := store.CheckBackup(out); err != nil {
		why := ""
		if !errors.Is(err, store.ErrDamaged) { // a file that is no store reads as damaged: say nothing of restoring it
			why = fmt.Sprintf(" (%v)", err)
		}
		return false, fmt.Errorf("--out %s exists and is not a copy of a Sigra store, so it is not replaced: remove it first, or choose another name%s", out, why)
	}
	return true, nil
}

// sameStoreCopy refuses to replace out, a store, with the copy at copied
// unless out is an earlier copy of the same store: a stopped site's own
// store (which no lock protects) must not be overwritten with this one.
func sameStoreCopy(copied, out string) error {
	// The CSRF key tells one store's copies from another store: made at
	// random, sealed, at the store's first start and never changed, every
	// copy holds it byte for byte.
	mine, err := store.ReadSecret(copied, secretCSRFKey)
	if err != nil {
		return err
	}
	theirs, err := store.ReadSecret(out, secretCSRFKey)
	if err != nil || !bytes.Equal(mine, theirs) {
		return fmt.Errorf("--out %s is a store, but not a copy of this one (another site's store, say), so it is not replaced: remove it first, or choose another name", out)
	}
	return nil
}
