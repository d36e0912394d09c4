//go:build !linux

package caddymodule

// newBackupTemp opens the file a backup is written to in dir: a named
// temporary file (unnamed ones are Linux's).
func newBackupTemp(dir string) (*backupTemp, error) { return namedBackupTemp(dir) }
