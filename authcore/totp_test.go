package authcore

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// refHOTP is an independent RFC 4226 HOTP (HMAC-SHA-1 and dynamic
// truncation), written from the RFC, to check pquerna/otp and our use of
// it against.
func refHOTP(key []byte, counter uint64, digits int) string {
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], counter)
	mac := hmac.New(sha1.New, key)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	bin := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	mod := uint32(1)
	for range digits {
		mod *= 10
	}
	return fmt.Sprintf("%0*d", digits, bin%mod)
}

// refTOTP is RFC 6238 TOTP over refHOTP with 30-second steps.
func refTOTP(key []byte, t time.Time, digits int) string {
	return refHOTP(key, uint64(t.Unix())/30, digits)
}

var rfcSecret = []byte("12345678901234567890")

// The SHA-1 rows of RFC 6238, appendix B.
var rfc6238Vectors = []struct {
	unix int64
	code string
}{
	{59, "94287082"},
	{1111111109, "07081804"},
	{1111111111, "14050471"},
	{1234567890, "89005924"},
	{2000000000, "69279037"},
	{20000000000, "65353130"},
}

func TestRFC6238Vectors(t *testing.T) {
	secret := base32.StdEncoding.EncodeToString(rfcSecret)
	opts := totp.ValidateOpts{Period: 30, Digits: otp.DigitsEight, Algorithm: otp.AlgorithmSHA1}
	for _, v := range rfc6238Vectors {
		t.Run(fmt.Sprint(v.unix), func(t *testing.T) {
			at := time.Unix(v.unix, 0).UTC()
			if got := refTOTP(rfcSecret, at, 8); got != v.code {
				t.Errorf("reference TOTP = %q; want %q", got, v.code)
			}
			got, err := totp.GenerateCodeCustom(secret, at, opts)
			if err != nil || got != v.code {
				t.Errorf("pquerna GenerateCodeCustom = %q, %v; want %q", got, err, v.code)
			}
			if ok, err := totp.ValidateCustom(v.code, secret, at, opts); !ok || err != nil {
				t.Errorf("pquerna ValidateCustom(%q) = %v, %v; want true", v.code, ok, err)
			}
		})
	}
}

// TestMatchTOTPWindow checks the six-digit codes the service accepts
// against the independent implementation: the current step and one step
// either side pass and report their step; two steps away fail.
func TestMatchTOTPWindow(t *testing.T) {
	keys := [][]byte{rfcSecret, []byte("\x00\xffsigra-test-secret!!")}
	for _, key := range keys {
		secret := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(key)
		for _, v := range rfc6238Vectors {
			now := time.Unix(v.unix, 0)
			cur := uint64(v.unix) / 30
			for off := -2; off <= 2; off++ {
				step := uint64(int64(cur) + int64(off))
				code := refHOTP(key, step, 6)
				got, err := matchTOTP(secret, code, now)
				if off >= -1 && off <= 1 {
					if err != nil || got != step {
						t.Errorf("t=%d offset %+d: matchTOTP(%q) = %d, %v; want step %d", v.unix, off, code, got, err, step)
					}
				} else if err == nil && !sameCodeInWindow(key, code, cur) {
					t.Errorf("t=%d offset %+d: matchTOTP(%q) = step %d; want ErrInvalidCode", v.unix, off, code, got)
				}
			}
		}
	}
}

// sameCodeInWindow reports whether code is also the code of a step in the
// accepted window (a legitimate one-in-a-million collision).
func sameCodeInWindow(key []byte, code string, cur uint64) bool {
	for s := cur - 1; s <= cur+1; s++ {
		if refHOTP(key, s, 6) == code {
			return true
		}
	}
	return false
}

func TestMatchTOTPStepBoundaries(t *testing.T) {
	secret := base32.StdEncoding.EncodeToString(rfcSecret)
	start := time.Unix(1111111110, 0) // first second of a step
	tests := []struct {
		name string
		now  time.Time
		code time.Time // when the authenticator computed the code
		ok   bool
	}{
		{"same second", start, start, true},
		{"last second of the step", start.Add(29 * time.Second), start, true},
		{"code from the previous step", start, start.Add(-time.Second), true},
		{"code from the next step", start.Add(29 * time.Second), start.Add(30 * time.Second), true},
		{"code from two steps back", start, start.Add(-31 * time.Second), false},
		{"code from two steps ahead", start.Add(29 * time.Second), start.Add(60 * time.Second), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code := refTOTP(rfcSecret, tt.code, 6)
			_, err := matchTOTP(secret, code, tt.now)
			if (err == nil) != tt.ok {
				t.Errorf("matchTOTP = %v; want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestMatchTOTPInput(t *testing.T) {
	secret := base32.StdEncoding.EncodeToString(rfcSecret)
	now := time.Unix(1234567890, 0)
	code := refTOTP(rfcSecret, now, 6)
	n, _ := strconv.Atoi(code)
	tests := []struct {
		name, code string
		ok         bool
	}{
		{"plain", code, true},
		{"space in the middle", code[:3] + " " + code[3:], true},
		{"dash in the middle", code[:3] + "-" + code[3:], true},
		{"surrounding spaces", " " + code + " ", true},
		{"empty", "", false},
		{"five digits", code[:5], false},
		{"seven digits", code + "0", false},
		{"eight-digit code of the same step", refTOTP(rfcSecret, now, 8), false},
		{"letter", code[:5] + "a", false},
		{"non-ASCII digits", "١٢٣٤٥٦", false},
		{"wrong code", fmt.Sprintf("%06d", (n+1)%1000000), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := matchTOTP(secret, tt.code, now)
			if tt.ok && err != nil {
				t.Errorf("matchTOTP(%q) = %v; want nil", tt.code, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidCode) {
				t.Errorf("matchTOTP(%q) = %v; want ErrInvalidCode", tt.code, err)
			}
		})
	}
}

func TestTOTPEnrolmentRedacts(t *testing.T) {
	e := &TOTPEnrolment{Secret: "JBSWY3DPEHPK3PXP", URL: "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"}
	for _, s := range []string{e.String(), fmt.Sprint(e), e.LogValue().String()} {
		if want := "JBSWY3DPEHPK3PXP"; strings.Contains(s, want) {
			t.Errorf("%q shows the secret", s)
		}
	}
}

// A key shown again (after a wrong code) has the URI it had when first
// made: an issuer with a space (a host with a port) written %20, not +,
// which some authenticator apps show as it is.
func TestTOTPKeyURLAsGenerated(t *testing.T) {
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "localhost 24080", AccountName: "a+b@example.com", Period: totpPeriod, Digits: totpDigits, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	if got := totpKeyURL("localhost 24080", "a+b@example.com", key.Secret()); got != key.URL() {
		t.Errorf("totpKeyURL = %s\nwant the generated %s", got, key.URL())
	}
}
