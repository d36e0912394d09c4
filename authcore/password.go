package authcore

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/text/unicode/norm"
)

// Argon2Params are argon2id cost parameters. They are written into every
// hash string, so raising them later keeps old hashes verifiable.
type Argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
	KeyLen  uint32
	SaltLen uint32
}

// DefaultArgon2 follows OWASP's argon2id recommendation (19 MiB, t=2, p=1).
var DefaultArgon2 = Argon2Params{Memory: 19 * 1024, Time: 2, Threads: 1, KeyLen: 32, SaltLen: 16}

// MinPasswordLen is the shortest password accepted when one is set.
const MinPasswordLen = 10

// MaxPasswordLen bounds the work an attacker can make us do per attempt.
const MaxPasswordLen = 1024

// HashPassword returns a PHC-format argon2id hash:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>, of the password in
// Unicode's compatibility form (NFKC, as NIST SP 800-63B asks): ü typed
// as u and a combining diaeresis, as some keyboards and systems send it,
// is the ü of the precomposed form.
func (p Argon2Params) HashPassword(password string) (string, error) {
	if len(password) > MaxPasswordLen {
		return "", fmt.Errorf("%w: password longer than %d bytes", ErrInvalidInput, MaxPasswordLen)
	}
	salt := make([]byte, p.SaltLen)
	_, _ = rand.Read(salt)
	key := argon2.IDKey([]byte(norm.NFKC.String(password)), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

var errBadHash = errors.New("malformed argon2id hash")

// idKey is argon2.IDKey, which tests count.
var idKey = argon2.IDKey

// VerifyPassword reports whether password matches a hash made by
// HashPassword, comparing in constant time. A malformed hash never
// matches. A password not in NFKC is also checked as sent, against a
// hash made before passwords were normalised: always both, right or
// wrong, so that the work, and the time, is decided by the sender's own
// text, never by whether it was right (a check at a banned or disabled
// account must take a wrong password's time).
func VerifyPassword(hash, password string) bool {
	if len(password) > MaxPasswordLen {
		return false
	}
	p, salt, key, err := decodeHash(hash)
	if err != nil {
		return false
	}
	matches := func(pw string) bool {
		got := idKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
		return subtle.ConstantTimeCompare(got, key) == 1
	}
	normal := norm.NFKC.String(password)
	ok := matches(normal)
	if normal != password {
		ok = matches(password) || ok // both, whatever the first said
	}
	return ok
}

func decodeHash(hash string) (p Argon2Params, salt, key []byte, err error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return p, nil, nil, errBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, errBadHash
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, errBadHash
	}
	// Refuse absurd costs from a tampered store (at most 256 MiB, 16 passes,
	// 16 lanes) rather than let one hash exhaust memory at every sign-in.
	if p.Memory == 0 || p.Memory > 1<<18 || p.Time == 0 || p.Time > 16 || p.Threads == 0 || p.Threads > 16 {
		return p, nil, nil, errBadHash
	}
	if salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil {
		return p, nil, nil, errBadHash
	}
	if key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, errBadHash
	}
	return p, salt, key, nil
}

// CheckNewPassword applies the password policy to a password being set.
func CheckNewPassword(pw string) error {
	// Characters, not bytes (as NIST SP 800-63B counts them): ten
	// two-byte letters are ten, not twenty.
	if utf8.RuneCountInString(pw) < MinPasswordLen || utf8.RuneCountInString(norm.NFKC.String(pw)) < MinPasswordLen {
		return fmt.Errorf("%w: password must be at least %d characters", ErrInvalidInput, MinPasswordLen)
	}
	if len(pw) > MaxPasswordLen {
		return fmt.Errorf("%w: password must be at most %d bytes", ErrInvalidInput, MaxPasswordLen)
	}
	// A browser sends text as UTF-8: other bytes (set from a file or a
	// pipe) could never be typed at the sign-in form.
	if !utf8.ValidString(pw) {
		return fmt.Errorf("%w: password must be text (UTF-8)", ErrInvalidInput)
	}
	// Nor could control characters (a NUL, a newline, a tab, which moves
	// on to the next field).
	if strings.ContainsFunc(pw, unicode.IsControl) {
		return fmt.Errorf("%w: password must not contain control characters (such as a tab, a line break or a NUL)", ErrInvalidInput)
	}
	if strings.TrimSpace(pw) == "" {
		return fmt.Errorf("%w: password must not be spaces only", ErrInvalidInput)
	}
	return nil
}

// RandomPassword returns a random password of about 128 bits, for the
// first admin and for tests.
func RandomPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
