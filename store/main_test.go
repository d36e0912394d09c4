package store

import (
	"os"
	"testing"
)

// TestMain runs the crash-safety child process when asked to (see
// TestAuditCrashSafety), and the tests otherwise.
func TestMain(m *testing.M) {
	if path := os.Getenv("SIGRA_AUDIT_CRASH_DB"); path != "" {
		auditCrashChild(path)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
