package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// caddy sigra backup: a consistent copy of the store, through the running
// Caddy and with Caddy stopped, written 0600 and never over the store
// itself. Put in place of the store, the copy is the gateway as it was:
// the users it holds sign in with their passwords; one added after it is
// not there. The copy is an audit row.
func TestCLIBackupAndRestore(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{})
	backup := func(out string) result {
		return runCaddy(t, g.home, "", "sigra", "backup", "--config", g.caddyfile, "--out", out)
	}
	if r := g.cli(bobPassword+"\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add\n%s", r)
	}
	g.start()
	b := g.browser()
	b.mustLogin("bob@example.com", bobPassword, "/")

	copyPath := filepath.Join(t.TempDir(), "sigra-backup.db")
	if r := backup(copyPath); r.code != 0 || !strings.Contains(r.stderr, "wrote a backup of "+g.db) {
		t.Fatalf("backup through the running Caddy\n%s\n%s", r, g.logs())
	}
	if fi, err := os.Stat(copyPath); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("the copy: %v, %v; want a non-empty file, mode 0600", fi, err)
	}
	if r := backup(g.db); r.code == 0 || !strings.Contains(r.output(), "is the store itself") {
		t.Errorf("backup over the store itself: want a refusal\n%s", r)
	}
	// A typo must not replace what is not an earlier copy (the key, the
	// Caddyfile), nor write into a directory; an earlier copy is replaced.
	if r := backup(g.caddyfile); r.code == 0 || !strings.Contains(r.output(), "is not a copy of a Sigra store, so it is not replaced") || strings.Contains(r.output(), "restore") {
		t.Errorf("backup over the Caddyfile: want a refusal, saying nothing of a damaged store to restore\n%s", r)
	}
	if r := backup("-"); r.code == 0 || !strings.Contains(r.output(), "cannot go to standard output") {
		t.Errorf("backup --out -: want a refusal\n%s", r)
	}
	if _, err := os.Stat("-"); err == nil {
		t.Error(`backup --out - wrote a file named "-"`)
	}
	if r := backup(filepath.Join(t.TempDir(), "nodir", "b.db")); r.code == 0 || !strings.Contains(r.output(), "nodir does not exist") || strings.Contains(r.output(), ".sigra-backup-") {
		t.Errorf("backup into a missing directory: want a refusal naming it\n%s", r)
	}
	if cf, err := os.ReadFile(g.caddyfile); err != nil || !strings.Contains(string(cf), "sigra_portal") {
		t.Fatalf("the Caddyfile after a refused backup over it: %v", err)
	}
	if r := backup(t.TempDir()); r.code == 0 || !strings.Contains(r.output(), "is a directory") {
		t.Errorf("backup into a directory: want a refusal\n%s", r)
	}
	if r := backup(copyPath); r.code != 0 {
		t.Errorf("backup over an earlier copy: want it replaced\n%s", r)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(copyPath), ".sigra-backup-*")); len(left) > 0 {
		t.Errorf("temporary copies left behind: %v", left)
	}
	if r := g.cli("carol's long password\n", "add", "--email", "carol@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add carol\n%s", r)
	}
	export := runCaddy(t, g.home, "", "sigra", "audit", "export", "--config", g.caddyfile)
	if export.code != 0 || strings.Count(export.stdout, `"action":"admin.store.backup"`) != 2 {
		t.Errorf("audit export: want two admin.store.backup rows (the refused ones read nothing)\n%s", export)
	}
	if want := fmt.Sprintf("exported %d rows", strings.Count(export.stdout, "\n")); !strings.Contains(export.stderr, want) {
		t.Errorf("audit export through the running Caddy: want %q on stderr\n%s", want, export)
	}
	// Another site's store, stopped (so no lock keeps it), is a store but
	// no copy of this one: not replaced.
	other := newGateway(t, gatewayOptions{})
	if r := other.cli(bobPassword+"\n", "add", "--email", "olga@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("users add on the other site\n%s", r)
	}
	before, err := os.ReadFile(other.db)
	if err != nil {
		t.Fatal(err)
	}
	if r := backup(other.db); r.code == 0 || !strings.Contains(r.output(), "not a copy of this one") {
		t.Errorf("backup over another site's store: want a refusal\n%s", r)
	}
	if after, err := os.ReadFile(other.db); err != nil || !bytes.Equal(after, before) {
		t.Errorf("the other site's store changed under a refused backup: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(other.db), ".sigra-backup-*")); len(left) > 0 {
		t.Errorf("temporary copies left behind: %v", left)
	}

	// Restore: stop Caddy, put the copy in place of the store.
	g.proc.stop()
	data, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.db, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// With Caddy stopped, the command copies the store itself.
	second := filepath.Join(t.TempDir(), "second.db")
	if r := backup(second); r.code != 0 {
		t.Fatalf("backup with Caddy stopped\n%s", r)
	}
	g.start()
	b = g.browser()
	b.mustLogin("bob@example.com", bobPassword, "/")
	if resp, _ := b.get("/x", http.Header{"Accept": {"application/json"}}); resp.StatusCode != http.StatusOK {
		t.Errorf("bob after the restore: status %d; want 200", resp.StatusCode)
	}
	if resp, _ := g.browser().login("carol@example.com", "carol's long password", "/"); resp.StatusCode == http.StatusSeeOther {
		t.Errorf("carol, added after the backup, signs in after the restore")
	}
}
