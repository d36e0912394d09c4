// Package hmacsig signs and verifies webhook bodies with the Sigra-Signature
// header, shared by outgoing audit webhooks and incoming billing events:
//
//	Sigra-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">
//
// The timestamp is covered by the MAC, so a captured request cannot be
// replayed outside the tolerance window. During secret rotation a sender
// may put several v1 values in one header (one per secret) and a receiver
// may accept several secrets; a match of any pair verifies.
package hmacsig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Header is the name of the HTTP header that carries the signature.
const Header = "Sigra-Signature"

// Errors returned by Verify. Callers answer all of them with 401 and may
// log which one it was.
var (
	// ErrMissing means the header is empty.
	ErrMissing = errors.New("hmacsig: missing signature header")
	// ErrMalformed means the header is not t=<unix>,v1=<hex>[,v1=<hex>…].
	ErrMalformed = errors.New("hmacsig: malformed signature header")
	// ErrTooOld means the timestamp is older than the tolerance allows.
	ErrTooOld = errors.New("hmacsig: signature timestamp outside tolerance (too old)")
	// ErrFuture means the timestamp is further in the future than the
	// tolerance allows.
	ErrFuture = errors.New("hmacsig: signature timestamp outside tolerance (in the future)")
	// ErrMismatch means no v1 value matches the body under any secret.
	ErrMismatch = errors.New("hmacsig: signature does not match")
	// ErrNoSecret means Verify was given no usable secret: a configuration
	// error, never the sender's fault.
	ErrNoSecret = errors.New("hmacsig: no secret configured")
)

// Compute returns the hex HMAC-SHA256 of "<unix seconds>.<body>" under
// secret: the v1 value of the header. Tests and fake senders use it.
func Compute(secret []byte, unix int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(strconv.AppendInt(nil, unix, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// Sign returns the Sigra-Signature header value for body sent at t.
// Sign exactly the bytes that go on the wire.
func Sign(secret []byte, t time.Time, body []byte) string {
	unix := t.Unix()
	return "t=" + strconv.FormatInt(unix, 10) + ",v1=" + Compute(secret, unix, body)
}

// Verify checks header against body. It accepts the header when one of its
// v1 values is the HMAC of "<t>.<body>" under one of secrets (several
// during rotation; empty secrets are ignored) and t lies within tolerance
// of now in either direction, counted in whole seconds (t has no finer
// part). Comparison is constant time. Errors are the sentinels above,
// possibly wrapped with detail: test them with errors.Is.
func Verify(header string, body []byte, secrets [][]byte, now time.Time, tolerance time.Duration) error {
	usable := 0
	for _, s := range secrets {
		if len(s) > 0 {
			usable++
		}
	}
	if usable == 0 {
		return ErrNoSecret
	}
	header = strings.TrimSpace(header)
	if header == "" {
		return ErrMissing
	}
	unix, sigs, err := parse(header)
	if err != nil {
		return err
	}
	if err := inWindow(unix, now, tolerance); err != nil {
		return err
	}
	for _, secret := range secrets {
		if len(secret) == 0 {
			continue
		}
		want, _ := hex.DecodeString(Compute(secret, unix, body))
		for _, got := range sigs {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return ErrMismatch
}

// inWindow checks that unix lies within tolerance of now, either way. t
// has whole seconds, so the check does too: now's second less t, against
// tolerance rounded down to whole seconds. t may be any positive int64,
// far beyond what a time.Duration spans (now.Sub saturates there), so the
// difference is taken in uint64 in the direction that is not negative,
// where it is exact.
func inWindow(unix int64, now time.Time, tolerance time.Duration) error {
	tolerance = max(tolerance, 0)
	tol := uint64(tolerance / time.Second)
	nowUnix := now.Unix()
	if unix <= nowUnix {
		if age := uint64(nowUnix) - uint64(unix); age > tol {
			return fmt.Errorf("%w: signed %s ago, tolerance %s", ErrTooOld, seconds(age), tolerance)
		}
		return nil
	}
	if ahead := uint64(unix) - uint64(nowUnix); ahead > tol {
		return fmt.Errorf("%w: signed %s ahead, tolerance %s", ErrFuture, seconds(ahead), tolerance)
	}
	return nil
}

// seconds formats n seconds as a duration when one can hold it.
func seconds(n uint64) string {
	if n <= uint64(math.MaxInt64/int64(time.Second)) {
		return (time.Duration(n) * time.Second).String()
	}
	return strconv.FormatUint(n, 10) + "s"
}

// parse splits "t=…,v1=…[,v1=…]". Unknown schemes (v0, v2) are ignored so
// a future scheme can be added alongside v1; at least one v1 is required.
func parse(header string) (unix int64, sigs [][]byte, err error) {
	haveT := false
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return 0, nil, fmt.Errorf("%w: element %q has no '='", ErrMalformed, part)
		}
		switch k {
		case "t":
			if haveT {
				return 0, nil, fmt.Errorf("%w: more than one t", ErrMalformed)
			}
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil || n <= 0 {
				return 0, nil, fmt.Errorf("%w: bad timestamp %q", ErrMalformed, v)
			}
			unix, haveT = n, true
		case "v1":
			b, herr := hex.DecodeString(v)
			if herr != nil || len(b) != sha256.Size {
				return 0, nil, fmt.Errorf("%w: v1 is not a hex SHA-256 MAC", ErrMalformed)
			}
			sigs = append(sigs, b)
		}
	}
	if !haveT {
		return 0, nil, fmt.Errorf("%w: no t", ErrMalformed)
	}
	if len(sigs) == 0 {
		return 0, nil, fmt.Errorf("%w: no v1", ErrMalformed)
	}
	return unix, sigs, nil
}
