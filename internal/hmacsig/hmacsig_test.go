package hmacsig

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	now    = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	secret = []byte("whsec_current_0123456789")
	old    = []byte("whsec_previous_987654321")
	body   = []byte(`{"id":"evt_123","type":"billing.subscription.updated"}`)
)

func TestSignFormat(t *testing.T) {
	got := Sign(secret, now, body)
	want := "t=1795341600,v1=" + Compute(secret, 1795341600, body)
	if got != want {
		t.Fatalf("Sign = %q; want %q", got, want)
	}
	if v1 := strings.TrimPrefix(got, "t=1795341600,v1="); len(v1) != 64 {
		t.Fatalf("v1 = %q; want 64 hex characters", v1)
	}
}

// TestComputeKnownVector pins the MAC construction: HMAC-SHA256 over
// "<t>.<body>", computed independently with
// printf '1795341600.hello' | openssl dgst -sha256 -hmac key
func TestComputeKnownVector(t *testing.T) {
	got := Compute([]byte("key"), 1795341600, []byte("hello"))
	const want = "9dc35f107aae8a1fbc956eb8cd4fa96472ee9531e2f914175465b4b778c07926"
	if got != want {
		t.Fatalf("Compute = %q; want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	const tol = 5 * time.Minute
	good := Sign(secret, now, body)
	tests := []struct {
		name    string
		header  string
		body    []byte
		secrets [][]byte
		now     time.Time
		want    error
	}{
		{"valid", good, body, [][]byte{secret}, now, nil},
		{"valid with surrounding spaces", " " + strings.ReplaceAll(good, ",", ", ") + " ", body, [][]byte{secret}, now, nil},
		{"old secret still accepted during rotation", Sign(old, now, body), body, [][]byte{secret, old}, now, nil},
		{"sender signs with both secrets", Sign(old, now, body) + ",v1=" + Compute(secret, now.Unix(), body), body, [][]byte{secret}, now, nil},
		{"unknown scheme ignored beside v1", good + ",v0=abc", body, [][]byte{secret}, now, nil},
		{"at the edge of the window (old)", good, body, [][]byte{secret}, now.Add(tol), nil},
		{"at the edge of the window (future)", good, body, [][]byte{secret}, now.Add(-tol), nil},
		{"replayed after the window", good, body, [][]byte{secret}, now.Add(tol + time.Second), ErrTooOld},
		{"timestamp from the future", good, body, [][]byte{secret}, now.Add(-tol - time.Second), ErrFuture},
		{"body tampered", good, []byte(`{"id":"evt_124"}`), [][]byte{secret}, now, ErrMismatch},
		{"body with trailing newline", good, append(append([]byte{}, body...), '\n'), [][]byte{secret}, now, ErrMismatch},
		{"timestamp swapped keeps old MAC", strings.Replace(good, "t=1795341600", "t=1795341601", 1), body, [][]byte{secret}, now, ErrMismatch},
		{"wrong secret", Sign([]byte("attacker-guess-0000"), now, body), body, [][]byte{secret}, now, ErrMismatch},
		{"removed secret no longer accepted", Sign(old, now, body), body, [][]byte{secret}, now, ErrMismatch},
		{"missing header", "", body, [][]byte{secret}, now, ErrMissing},
		{"no t", "v1=" + Compute(secret, now.Unix(), body), body, [][]byte{secret}, now, ErrMalformed},
		{"no v1", "t=1795341600", body, [][]byte{secret}, now, ErrMalformed},
		{"two t", "t=1,t=1795341600,v1=" + Compute(secret, now.Unix(), body), body, [][]byte{secret}, now, ErrMalformed},
		{"t not a number", "t=soon,v1=" + Compute(secret, now.Unix(), body), body, [][]byte{secret}, now, ErrMalformed},
		{"negative t", "t=-5,v1=" + Compute(secret, -5, body), body, [][]byte{secret}, now, ErrMalformed},
		{"v1 not hex", "t=1795341600,v1=zz", body, [][]byte{secret}, now, ErrMalformed},
		{"v1 truncated", good[:len(good)-2], body, [][]byte{secret}, now, ErrMalformed},
		{"element without =", "t=1795341600,v1", body, [][]byte{secret}, now, ErrMalformed},
		{"no secrets configured", good, body, nil, now, ErrNoSecret},
		{"only empty secrets configured", good, body, [][]byte{{}}, now, ErrNoSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.header, tt.body, tt.secrets, tt.now, tol)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Verify(%q) = %v; want %v", tt.header, err, tt.want)
			}
		})
	}
}

func TestVerifyNegativeToleranceMeansExact(t *testing.T) {
	h := Sign(secret, now, body)
	if err := Verify(h, body, [][]byte{secret}, now, -time.Minute); err != nil {
		t.Fatalf("Verify at the signing second = %v; want nil", err)
	}
	if err := Verify(h, body, [][]byte{secret}, now.Add(time.Second), -time.Minute); !errors.Is(err, ErrTooOld) {
		t.Fatalf("Verify one second later = %v; want ErrTooOld", err)
	}
}

// A timestamp far ahead once overflowed now.Sub(ts) to its minimum, whose
// negation is itself, so neither bound tripped and any MAC over a far
// future t verified forever. The window is checked in whole seconds, with
// no arithmetic that can overflow, on both sides.
func TestVerifyTimestampWindowCannotOverflow(t *testing.T) {
	const tol = 5 * time.Minute
	ts := func(unix int64) string {
		return "t=" + strconv.FormatInt(unix, 10) + ",v1=" + Compute(secret, unix, body)
	}
	tests := []struct {
		name string
		unix int64
		now  time.Time
		want error
	}{
		{"exactly tolerance ahead", now.Unix() + 300, now, nil},
		{"one second beyond tolerance ahead", now.Unix() + 301, now, ErrFuture},
		{"exactly tolerance behind", now.Unix() - 300, now, nil},
		{"one second beyond tolerance behind", now.Unix() - 301, now, ErrTooOld},
		{"an hour ahead", now.Unix() + 3600, now, ErrFuture},
		{"t=1<<40, about 34,000 years ahead", 1 << 40, now, ErrFuture},
		{"t=1<<62", 1 << 62, now, ErrFuture},
		{"largest t", math.MaxInt64, now, ErrFuture},
		{"largest t, now long before 1970", math.MaxInt64, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), ErrFuture},
		{"t=1, now centuries ahead", 1, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), ErrTooOld},
		{"sub-second part of now ignored", now.Unix() - 300, now.Add(999 * time.Millisecond), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(ts(tt.unix), body, [][]byte{secret}, tt.now, tol)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Verify(t=%d) at %v = %v; want %v", tt.unix, tt.now, err, tt.want)
			}
		})
	}
}
