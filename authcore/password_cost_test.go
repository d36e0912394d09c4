package authcore

import (
	"strings"
	"testing"
)

// Regression: decodeHash (authcore/password.go) means to "refuse absurd costs from
// a tampered store rather than burn the CPU", but its memory ceiling is
// p.Memory > 1<<22, i.e. it accepts m=4194304 KiB = 4 GiB (with t up to 16).
// One such hash string in the users bucket (tampering, a bad import, a
// migration from another system) makes every sign-in attempt for that
// email allocate 4 GiB in argon2.IDKey, which OOM-kills the whole gateway
// on a typical host or container, not just that user's login. OWASP's
// recommendation is 19–46 MiB. Fix: lower the ceiling to something still
// generous, e.g. `p.Memory > 1<<18` (256 MiB), and optionally bound
// p.Threads (e.g. > 16) the same way.
//
// The test inspects decodeHash only: calling VerifyPassword with this hash
// would try to allocate the 4 GiB.
func TestDecodeHashRefusesGibibytesOfMemory(t *testing.T) {
	good := mustHash(t, cheapArgon2, "correct horse battery")
	parts := strings.Split(good, "$")
	parts[3] = "m=4194304,t=16,p=1" // 4 GiB, 16 passes
	hostile := strings.Join(parts, "$")
	if p, _, _, err := decodeHash(hostile); err == nil {
		t.Errorf("decodeHash(%q) accepted m=%d KiB (%d GiB), t=%d; want errBadHash", hostile, p.Memory, p.Memory>>20, p.Time)
	}
}
