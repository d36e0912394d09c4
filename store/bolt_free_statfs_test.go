//go:build linux || darwin || freebsd

package store

import "testing"

// A negative count of available blocks (FreeBSD, with the reserve in
// use) is none, not a huge number.
func TestAvailBytes(t *testing.T) {
	if got := availBytes(10, 4096); got != 10*4096 {
		t.Errorf("availBytes(10, 4096) = %d", got)
	}
	if got := availBytes(-5, 4096); got != 0 {
		t.Errorf("availBytes(-5, 4096) = %d; want 0", got)
	}
}
