package hmacsig

import (
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"
)

var sentinels = []error{ErrMissing, ErrMalformed, ErrTooOld, ErrFuture, ErrMismatch, ErrNoSecret}

// checkSentinel fails unless err is nil or wraps exactly one of the
// documented sentinels.
func checkSentinel(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %q wraps %d of the documented sentinels; want exactly 1", err, n)
	}
}

// refWindow is the window check done with unbounded integers: nil when
// unix is within tolerance (whole seconds, negative meaning 0) of now's
// second, else ErrTooOld or ErrFuture.
func refWindow(unix int64, now time.Time, tolerance time.Duration) error {
	tol := big.NewInt(int64(max(tolerance, 0) / time.Second))
	d := new(big.Int).Sub(big.NewInt(now.Unix()), big.NewInt(unix))
	switch {
	case d.Cmp(tol) > 0:
		return ErrTooOld
	case new(big.Int).Neg(d).Cmp(tol) > 0:
		return ErrFuture
	}
	return nil
}

// signedBy is the reference for an accepted header: its single t element
// is a positive decimal integer within the window, and one of its v1
// elements is, as hex in either case, the MAC of "<t>.<body>" under one of
// the non-empty secrets. It says which secret signed, or -1.
func signedBy(header string, body []byte, secrets [][]byte, now time.Time, tolerance time.Duration) int {
	var ts []string
	var v1s []string
	for _, el := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(el), "=")
		switch k {
		case "t":
			ts = append(ts, v)
		case "v1":
			v1s = append(v1s, v)
		}
	}
	if len(ts) != 1 {
		return -1
	}
	unix, err := strconv.ParseInt(ts[0], 10, 64)
	if err != nil || unix <= 0 || refWindow(unix, now, tolerance) != nil {
		return -1
	}
	for i, s := range secrets {
		if len(s) == 0 {
			continue
		}
		want := Compute(s, unix, body)
		for _, v := range v1s {
			if strings.EqualFold(v, want) {
				return i
			}
		}
	}
	return -1
}

// FuzzVerify: for any header, body, clock and tolerance, Verify returns
// nil or one documented sentinel, and accepts only what some secret
// really signed for this body at a time inside the window (signedBy).
// The seeds include genuine signatures, so the accepting side is reached.
func FuzzVerify(f *testing.F) {
	nowU := now.Unix()
	good := Sign(secret, now, body)
	mac := Compute(secret, nowU, body)
	for _, h := range []string{
		good,
		" " + strings.ReplaceAll(good, ",", " , ") + " ",
		Sign(old, now, body),
		Sign(old, now, body) + ",v1=" + mac,
		good + ",v0=abc,v2=",
		"v1=" + mac + ",t=" + strconv.FormatInt(nowU, 10),
		"t=" + strconv.FormatInt(nowU, 10) + ",v1=" + strings.ToUpper(mac),
		"t=+" + strconv.FormatInt(nowU, 10) + ",v1=" + mac,
		"t=00" + strconv.FormatInt(nowU, 10) + ",v1=" + mac,
		"t=" + strconv.FormatInt(nowU+1, 10) + ",v1=" + mac,
		"t=1,t=" + strconv.FormatInt(nowU, 10) + ",v1=" + mac,
		"t=" + strconv.FormatInt(nowU, 10) + ",v1=" + mac[:62],
		"t=" + strconv.FormatInt(nowU, 10) + ",v1=" + mac[:63] + "0",
		"t=" + strconv.FormatInt(nowU, 10) + ",v1=0" + mac[1:],
		"t=" + strconv.FormatInt(nowU, 10) + ",v1=" + mac + "00",
		"t=" + strconv.FormatInt(nowU, 10) + ",v1=" + mac + ",v1=zz",
		"t=" + strconv.FormatInt(nowU, 10),
		"v1=" + mac,
		"t=0,v1=" + Compute(secret, 0, body),
		"t=-5,v1=" + Compute(secret, -5, body),
		"t=9223372036854775807,v1=" + Compute(secret, math.MaxInt64, body),
		"t=9223372036854775808,v1=" + mac,
		"", "   ", ",", "=", "t=", "t=soon,v1=", "t=1795341600,v1", "t=1795341600;v1=" + mac,
	} {
		f.Add(h, body, nowU, int64(0), int64(5*time.Minute))
	}
	f.Add(good, body, nowU+300, int64(999_999_999), int64(5*time.Minute))
	f.Add(good, body, nowU+301, int64(0), int64(5*time.Minute))
	f.Add(good, body, nowU-300, int64(0), int64(5*time.Minute))
	f.Add(good, body, nowU-301, int64(0), int64(5*time.Minute))
	f.Add(good, body, nowU, int64(0), int64(-time.Minute))
	f.Add(good, body, nowU, int64(0), int64(math.MaxInt64))
	f.Add(good, body, int64(math.MinInt64), int64(0), int64(math.MaxInt64))
	f.Add(good, append([]byte(nil), body[1:]...), nowU, int64(0), int64(5*time.Minute))
	f.Add(good, []byte{}, nowU, int64(0), int64(5*time.Minute))

	f.Fuzz(func(t *testing.T, header string, body []byte, nowUnix, nowNanos, tolerance int64) {
		now := time.Unix(nowUnix, nowNanos)
		tol := time.Duration(tolerance)
		secrets := [][]byte{{}, old, secret}
		err := Verify(header, body, secrets, now, tol)
		checkSentinel(t, err)
		if err == nil && signedBy(header, body, secrets, now, tol) < 0 {
			t.Fatalf("Verify(%q, body %q, now %d, tolerance %s) accepted a header no secret signed", header, body, now.Unix(), tol)
		}
		if err := Verify(header, body, [][]byte{{}, nil}, now, tol); !errors.Is(err, ErrNoSecret) {
			t.Fatalf("Verify with only empty secrets = %v; want ErrNoSecret", err)
		}
		if strings.TrimSpace(header) == "" && !errors.Is(err, ErrMissing) {
			t.Fatalf("Verify(%q) = %v; want ErrMissing", header, err)
		}
	})
}

// FuzzSignVerify: Sign then Verify round-trips for any secret, body and
// positive time, during rotation too, exactly when the clock is inside
// the window; a secret not given is refused; and changing any one byte of
// the body or of the header is refused (the one harmless change is the
// case of a hex digit of v1).
func FuzzSignVerify(f *testing.F) {
	nowU := now.Unix()
	f.Add(secret, body, nowU, int64(0), int64(0), int64(5*time.Minute), uint16(0), byte('x'), false)
	f.Add(secret, body, nowU, int64(300), int64(5e8), int64(5*time.Minute), uint16(5), byte('1'), false)
	f.Add(secret, body, nowU, int64(-301), int64(0), int64(5*time.Minute), uint16(20), byte('A'), false)
	f.Add(old, body, nowU, int64(10), int64(0), int64(time.Minute), uint16(3), byte('{'), true)
	f.Add([]byte("k"), []byte{}, int64(1), int64(0), int64(0), int64(0), uint16(2), byte('+'), false)
	f.Add([]byte("k"), []byte("x"), int64(0), int64(0), int64(0), int64(0), uint16(0), byte(0), true)
	f.Add([]byte("k"), []byte("x"), int64(-5), int64(0), int64(0), int64(0), uint16(0), byte(0), true)
	f.Add([]byte{}, []byte("x"), int64(math.MaxInt64), int64(0), int64(0), int64(math.MaxInt64), uint16(7), byte(','), false)
	f.Add(secret, body, nowU, int64(0), int64(0), int64(time.Hour), uint16(2), byte(' '), false)
	f.Add(secret, body, nowU, int64(0), int64(0), int64(time.Hour), uint16(13), byte('0'), false)
	f.Add(secret, body, nowU, int64(301), int64(0), int64(5*time.Minute), uint16(0), byte('x'), false)
	f.Add(secret, body, nowU, int64(300), int64(999_999_999), int64(5*time.Minute+999*time.Millisecond), uint16(0), byte('x'), false)
	f.Add(secret, body, nowU, int64(0), int64(0), int64(time.Minute), uint16(79), byte('0'), false)
	f.Add(secret, body, nowU, int64(0), int64(0), int64(time.Minute), uint16(79), byte('1'), false)
	f.Add(secret, body, nowU, int64(0), int64(0), int64(time.Minute), uint16(16), byte('f'), false)
	f.Add(secret, body, nowU, int64(0), int64(0), int64(time.Minute), uint16(79), byte('g'), true)

	f.Fuzz(func(t *testing.T, key, body []byte, unix, skew, nowNanos, tolerance int64, pos uint16, b byte, inBody bool) {
		if len(key) == 0 {
			key = secret
		}
		other := append([]byte("other:"), key...)
		if hmac.Equal(other, old) {
			other = append(other, '!')
		}
		nowUnix := unix + skew
		if (skew > 0 && nowUnix < unix) || (skew < 0 && nowUnix > unix) {
			return // overflow: no such clock
		}
		now := time.Unix(nowUnix, nowNanos)
		sent := time.Unix(unix, 0)
		tol := time.Duration(tolerance)

		header := Sign(key, sent, body)
		wantV1 := Compute(key, unix, body)
		if want := "t=" + strconv.FormatInt(unix, 10) + ",v1=" + wantV1; header != want {
			t.Fatalf("Sign = %q; want %q", header, want)
		}
		if raw, err := hex.DecodeString(wantV1); err != nil || len(raw) != 32 {
			t.Fatalf("Compute = %q; want 64 hex digits", wantV1)
		}

		want := refWindow(unix, now, tol)
		if unix <= 0 {
			want = ErrMalformed // t must be positive
		}
		for _, secrets := range [][][]byte{{key}, {other, key}, {key, {}, other}} {
			err := Verify(header, body, secrets, now, tol)
			checkSentinel(t, err)
			if !errors.Is(err, want) || (want == nil && err != nil) {
				t.Fatalf("Verify(Sign(t=%d)) at %d (tolerance %s) = %v; want %v", unix, now.Unix(), tol, err, want)
			}
		}
		rotated := Sign(other, sent, body) + ",v1=" + wantV1
		if err := Verify(rotated, body, [][]byte{key}, now, tol); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("Verify(two signatures) = %v; want %v", err, want)
		}
		if want != nil {
			return
		}
		if err := Verify(header, body, [][]byte{other}, now, tol); !errors.Is(err, ErrMismatch) {
			t.Fatalf("Verify with another secret = %v; want ErrMismatch", err)
		}

		if inBody {
			if len(body) == 0 {
				return
			}
			m := []byte(string(body))
			i := int(pos) % len(m)
			if m[i] == b {
				return
			}
			m[i] = b
			if err := Verify(header, m, [][]byte{key}, now, tol); err == nil {
				t.Fatalf("body %q changed at %d to %q still verifies", body, i, m)
			}
			return
		}
		m := []byte(header)
		i := int(pos) % len(m)
		if m[i] == b {
			return
		}
		m[i] = b
		err := Verify(string(m), body, [][]byte{key}, now, tol)
		checkSentinel(t, err)
		if err == nil && !(strings.EqualFold(string(m), header) && i > len(header)-len(wantV1)-1) {
			t.Fatalf("header %q changed at %d to %q still verifies", header, i, m)
		}
	})
}
