package authcore

import (
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

// cheapArgon2 keeps password tests fast; the parameters are written into
// each hash, so verification does not depend on them.
var cheapArgon2 = Argon2Params{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

func mustHash(t *testing.T, p Argon2Params, pw string) string {
	t.Helper()
	h, err := p.HashPassword(pw)
	if err != nil {
		t.Fatalf("HashPassword(%q): %v", pw, err)
	}
	return h
}

func TestHashPasswordFormat(t *testing.T) {
	h := mustHash(t, cheapArgon2, "correct horse battery")
	phc := regexp.MustCompile(`^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !phc.MatchString(h) {
		t.Errorf("hash = %q; want PHC form %s", h, phc)
	}
	if strings.Contains(h, "correct horse") {
		t.Errorf("hash %q contains the password", h)
	}
	if h2 := mustHash(t, cheapArgon2, "correct horse battery"); h2 == h {
		t.Errorf("two hashes of one password are equal (%q); want a fresh salt each time", h)
	}
}

func TestVerifyPassword(t *testing.T) {
	h := mustHash(t, cheapArgon2, "correct horse battery")
	tests := []struct {
		name string
		pw   string
		want bool
	}{
		{"right password", "correct horse battery", true},
		{"wrong password", "correct horse batterY", false},
		{"prefix", "correct horse", false},
		{"extra character", "correct horse battery ", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerifyPassword(h, tt.pw); got != tt.want {
				t.Errorf("VerifyPassword(hash, %q) = %t; want %t", tt.pw, got, tt.want)
			}
		})
	}
}

// A password is one however Unicode spells it (NFKC): composed or with
// a combining mark, full-width or not. A hash made before passwords were
// normalised, of a password sent decomposed, still verifies as sent.
func TestVerifyPasswordNormalises(t *testing.T) {
	composed, decomposed := "pässwordpässword", "pa\u0308sswordpa\u0308ssword"
	for _, set := range []string{composed, decomposed} {
		h := mustHash(t, cheapArgon2, set)
		for _, typed := range []string{composed, decomposed} {
			if !VerifyPassword(h, typed) {
				t.Errorf("set as %q, typed as %q: refused; want it to verify", set, typed)
			}
		}
		if VerifyPassword(h, "passwordpassword") {
			t.Errorf("set as %q: the password without its accents verifies", set)
		}
	}
	if h := mustHash(t, cheapArgon2, "ｗｉｄｅ password"); !VerifyPassword(h, "wide password") {
		t.Error("a full-width password does not verify as its ASCII")
	}
	// Before: the raw bytes were hashed.
	salt := make([]byte, 16)
	legacy := "$argon2id$v=19$m=64,t=1,p=1$" + base64.RawStdEncoding.EncodeToString(salt) + "$" +
		base64.RawStdEncoding.EncodeToString(argon2.IDKey([]byte(decomposed), salt, 1, 64, 1, 32))
	if !VerifyPassword(legacy, decomposed) {
		t.Error("a hash of a decomposed password made before normalising does not verify as sent")
	}
}

// The work a check does is decided by the text sent, never by whether
// it was right: a right password at a banned or disabled account must
// take a wrong one's time.
func TestVerifyPasswordWorkDoesNotTell(t *testing.T) {
	set := "ginapass-1234567"
	h := mustHash(t, cheapArgon2, set)
	hashes := 0
	t.Cleanup(func() { idKey = argon2.IDKey })
	idKey = func(pw, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
		hashes++
		return argon2.IDKey(pw, salt, time, memory, threads, keyLen)
	}
	for _, c := range []struct {
		typed string
		ok    bool
		work  int
	}{
		{set, true, 1}, {"ginapass-7654321", false, 1},
		{"ｇinapass-1234567", true, 2}, {"ｇinapass-7654321", false, 2},
	} {
		hashes = 0
		if got := VerifyPassword(h, c.typed); got != c.ok || hashes != c.work {
			t.Errorf("VerifyPassword(%q) = %t after %d hashes; want %t after %d", c.typed, got, hashes, c.ok, c.work)
		}
	}
}

func TestVerifyPasswordEmptyPasswordHash(t *testing.T) {
	h := mustHash(t, cheapArgon2, "")
	if !VerifyPassword(h, "") {
		t.Errorf("VerifyPassword(hash of %q, %q) = false; want true", "", "")
	}
	if VerifyPassword(h, "x") {
		t.Errorf("VerifyPassword(hash of %q, %q) = true; want false", "", "x")
	}
}

// TestVerifyPasswordMalformedHash: a damaged or hostile hash string never
// verifies (not even with the right password) and never panics.
func TestVerifyPasswordMalformedHash(t *testing.T) {
	const pw = "correct horse battery"
	good := mustHash(t, cheapArgon2, pw)
	if !VerifyPassword(good, pw) {
		t.Fatalf("the untampered hash does not verify")
	}
	parts := strings.Split(good, "$") // "", "argon2id", "v=19", "m=64,t=1,p=1", salt, key
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	salt, _ := base64.RawStdEncoding.DecodeString(parts[4])
	key, _ := base64.RawStdEncoding.DecodeString(parts[5])
	flipped := append([]byte(nil), key...)
	flipped[0] ^= 1
	otherSalt := append([]byte(nil), salt...)
	otherSalt[0] ^= 1
	b64 := base64.RawStdEncoding.EncodeToString

	tests := []struct {
		name string
		hash string
	}{
		{"empty", ""},
		{"plain text", pw},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i", with(1, "argon2i")},
		{"argon2d", with(1, "argon2d")},
		{"upper-case algorithm", with(1, "ARGON2ID")},
		{"version 16", with(2, "v=16")},
		{"version 20", with(2, "v=20")},
		{"version not a number", with(2, "v=x")},
		{"version missing", with(2, "")},
		{"memory zero", with(3, "m=0,t=1,p=1")},
		{"time zero", with(3, "m=64,t=0,p=1")},
		{"threads zero", with(3, "m=64,t=1,p=0")},
		{"absurd memory", with(3, "m=4194305,t=1,p=1")},
		{"memory overflows uint32", with(3, "m=4294967296,t=1,p=1")},
		{"absurd time", with(3, "m=64,t=17,p=1")},
		{"huge time", with(3, "m=64,t=4294967295,p=1")},
		{"threads overflow uint8", with(3, "m=64,t=1,p=256")},
		{"negative memory", with(3, "m=-64,t=1,p=1")},
		{"params reordered", with(3, "t=1,m=64,p=1")},
		{"params missing", with(3, "m=64")},
		{"salt not base64", with(4, "!!!!")},
		{"salt padded", with(4, base64.StdEncoding.EncodeToString(salt))},
		{"salt changed", with(4, b64(otherSalt))},
		{"key not base64", with(5, "****")},
		{"key padded", with(5, base64.StdEncoding.EncodeToString(key))},
		{"key changed", with(5, b64(flipped))},
		{"key empty", with(5, "")},
		{"key 15 bytes", with(5, b64(key[:15]))},
		{"key truncated to 16 bytes", with(5, b64(key[:16]))},
		{"key 65 bytes", with(5, b64(append(append([]byte(nil), key...), make([]byte, 33)...)))},
		{"extra field", good + "$extra"},
		{"trailing dollar", good + "$"},
		{"field missing", strings.Join(parts[:5], "$")},
		{"only dollars", "$$$$$"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("VerifyPassword(%q) panicked: %v", tt.hash, r)
				}
			}()
			if VerifyPassword(tt.hash, pw) {
				t.Errorf("VerifyPassword(%q, right password) = true; want false", tt.hash)
			}
		})
	}
}

// TestHashKeepsItsParameters: the cost parameters travel in the hash, so
// raising them for new hashes keeps old ones verifiable.
func TestHashKeepsItsParameters(t *testing.T) {
	const pw = "correct horse battery"
	old := mustHash(t, cheapArgon2, pw)
	raised := Argon2Params{Memory: 128, Time: 2, Threads: 2, KeyLen: 64, SaltLen: 32}
	newer := mustHash(t, raised, pw)

	if !strings.HasPrefix(newer, "$argon2id$v=19$m=128,t=2,p=2$") {
		t.Errorf("hash = %q; want the raised parameters m=128,t=2,p=2 in it", newer)
	}
	parts := strings.Split(newer, "$")
	if salt, _ := base64.RawStdEncoding.DecodeString(parts[4]); len(salt) != 32 {
		t.Errorf("salt is %d bytes; want 32", len(salt))
	}
	if key, _ := base64.RawStdEncoding.DecodeString(parts[5]); len(key) != 64 {
		t.Errorf("key is %d bytes; want 64", len(key))
	}
	for name, h := range map[string]string{"old": old, "raised": newer} {
		if !VerifyPassword(h, pw) {
			t.Errorf("%s hash %q does not verify", name, h)
		}
		if VerifyPassword(h, pw+"!") {
			t.Errorf("%s hash %q verifies a wrong password", name, h)
		}
	}
}

func TestPasswordLengthLimit(t *testing.T) {
	longest := strings.Repeat("p", MaxPasswordLen)
	h, err := cheapArgon2.HashPassword(longest)
	if err != nil {
		t.Fatalf("HashPassword(%d bytes) = %v; want nil", MaxPasswordLen, err)
	}
	if !VerifyPassword(h, longest) {
		t.Errorf("a %d-byte password does not verify", MaxPasswordLen)
	}

	tooLong := longest + "p"
	if got, err := cheapArgon2.HashPassword(tooLong); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("HashPassword(%d bytes) = %q, %v; want ErrInvalidInput", len(tooLong), got, err)
	}
	if VerifyPassword(h, tooLong) {
		t.Errorf("VerifyPassword accepted a %d-byte password", len(tooLong))
	}
}

func TestCheckNewPassword(t *testing.T) {
	tests := []struct {
		name    string
		pw      string
		wantErr bool
	}{
		{"empty", "", true},
		{"nine", "123456789", true},
		{"ten", "1234567890", false},
		{"nine letters in 18 bytes", "ééééééééé", true},
		{"ten letters in 20 bytes", "éééééééééé", false},
		{"ten letters in 40 bytes", "🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑", false},
		// Counted as compared (NFKC): ten jamo are four syllables.
		{"ten jamo, four syllables", "\u1100\u1161\u11a8\u1100\u1161\u11a8\u1100\u1161\u11a8a", true},
		{"ten decomposed accents, ten letters", strings.Repeat("e\u0301", 10), false},
		{"passphrase", "correct horse battery staple", false},
		{"longest", strings.Repeat("p", MaxPasswordLen), false},
		{"one byte too long", strings.Repeat("p", MaxPasswordLen+1), true},
		{"not UTF-8", "\xff\xfe\xfdabcdefghijkl", true},
		{"spaces only", strings.Repeat(" ", 12), true},
		{"a NUL", "abcdefghij\x00k", true},
		{"a tab", "abcde\tfghijk", true},
		{"a line break", "abcdefghijk\n", true},
		{"DEL", "abcdefghijk\x7f", true},
		{"a C1 control", "abcdefghijk\u0085", true},
		{"spaces around words", "  two words here  ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckNewPassword(tt.pw)
			if tt.wantErr && !errors.Is(err, ErrInvalidInput) {
				t.Errorf("CheckNewPassword(%d bytes) = %v; want ErrInvalidInput", len(tt.pw), err)
			}
			if !tt.wantErr && err != nil {
				t.Errorf("CheckNewPassword(%d bytes) = %v; want nil", len(tt.pw), err)
			}
		})
	}
}

func TestRandomPassword(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		pw := RandomPassword()
		if err := CheckNewPassword(pw); err != nil {
			t.Fatalf("RandomPassword() = %q fails the policy: %v", pw, err)
		}
		if len(pw) != 22 {
			t.Errorf("RandomPassword() = %q (%d characters); want 22 (128 bits)", pw, len(pw))
		}
		if seen[pw] {
			t.Fatalf("RandomPassword() repeated %q", pw)
		}
		seen[pw] = true
	}
}
