package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sealTestKey returns a 32-byte key whose base64 uses the characters that
// differ between the standard and URL alphabets ('+' '/' versus '-' '_'),
// so each encoding ParseKey accepts is really exercised.
func sealTestKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = []byte{0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff}[i%6]
	}
	return k
}

func newTestBox(t *testing.T, key []byte) *Box {
	t.Helper()
	b, err := New(key)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func TestNewKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New(%d-byte key) = nil error; want an error", n)
		}
	}
	if _, err := New(make([]byte, KeySize)); err != nil {
		t.Errorf("New(32-byte key) = %v; want nil", err)
	}
}

func TestSealRoundTrip(t *testing.T) {
	box := newTestBox(t, sealTestKey(t))
	tests := []struct {
		name      string
		plaintext []byte
		aad       []byte
	}{
		{"empty plaintext", []byte{}, []byte("user:1")},
		{"short", []byte("JBSWY3DPEHPK3PXP"), []byte("user:1")},
		{"binary", []byte{0, 1, 2, 0xff, 0xfe}, []byte("x")},
		{"no aad", []byte("secret"), nil},
		{"large", bytes.Repeat([]byte("k"), 64<<10), []byte("keys")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed := box.Seal(tt.plaintext, tt.aad)
			if len(tt.plaintext) > 0 && bytes.Contains(sealed, tt.plaintext) {
				t.Errorf("sealed value contains the plaintext")
			}
			got, err := box.Open(sealed, tt.aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open = %q; want %q", got, tt.plaintext)
			}
		})
	}
}

func TestSealUsesFreshNonce(t *testing.T) {
	box := newTestBox(t, sealTestKey(t))
	a := box.Seal([]byte("same"), []byte("aad"))
	b := box.Seal([]byte("same"), []byte("aad"))
	if bytes.Equal(a, b) {
		t.Errorf("two seals of the same value are identical (%x); want a fresh nonce each time", a)
	}
}

func TestOpenRefuses(t *testing.T) {
	key := sealTestKey(t)
	box := newTestBox(t, key)
	other := make([]byte, KeySize)
	copy(other, key)
	other[0] ^= 1
	otherBox := newTestBox(t, other)

	aad := []byte("user:0190a3c4")
	sealed := box.Seal([]byte("JBSWY3DPEHPK3PXP"), aad)
	flip := func(i int) []byte {
		c := bytes.Clone(sealed)
		c[i] ^= 0x01
		return c
	}
	tests := []struct {
		name   string
		box    *Box
		sealed []byte
		aad    []byte
	}{
		{"wrong key", otherBox, sealed, aad},
		{"tampered nonce", box, flip(0), aad},
		{"tampered ciphertext", box, flip(12), aad},
		{"tampered tag", box, flip(len(sealed) - 1), aad},
		{"wrong aad (value moved to another record)", box, sealed, []byte("user:0190a3c5")},
		{"missing aad", box, sealed, nil},
		{"truncated by one byte", box, sealed[:len(sealed)-1], aad},
		{"truncated to nonce and tag", box, sealed[:12+16], aad},
		{"shorter than nonce and tag", box, sealed[:12+15], aad},
		{"nonce only", box, sealed[:12], aad},
		{"empty", box, nil, aad},
		{"extra byte", box, append(bytes.Clone(sealed), 0), aad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.box.Open(tt.sealed, tt.aad)
			if !errors.Is(err, ErrOpen) {
				t.Errorf("Open = %q, %v; want ErrOpen", got, err)
			}
			if got != nil {
				t.Errorf("Open returned plaintext %q alongside an error", got)
			}
		})
	}
}

func TestBoxID(t *testing.T) {
	key := sealTestKey(t)
	a, b := newTestBox(t, key), newTestBox(t, bytes.Clone(key))
	if a.ID() != b.ID() {
		t.Errorf("ID differs for the same key: %q and %q", a.ID(), b.ID())
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(a.ID()) {
		t.Errorf("ID = %q; want 8 lower-case hex digits", a.ID())
	}
	other := newTestBox(t, make([]byte, KeySize))
	if other.ID() == a.ID() {
		t.Errorf("ID = %q for two different keys; want them distinct", a.ID())
	}
	for _, enc := range []string{base64.StdEncoding.EncodeToString(key), string(key)} {
		if strings.Contains(enc, a.ID()) {
			t.Errorf("ID %q is a fragment of the key", a.ID())
		}
	}
}

func TestParseKey(t *testing.T) {
	key := sealTestKey(t)
	accept := []struct {
		name string
		in   string
	}{
		{"standard padded", base64.StdEncoding.EncodeToString(key)},
		{"standard raw", base64.RawStdEncoding.EncodeToString(key)},
		{"url padded", base64.URLEncoding.EncodeToString(key)},
		{"url raw", base64.RawURLEncoding.EncodeToString(key)},
		{"surrounding whitespace and newline", "  " + base64.StdEncoding.EncodeToString(key) + "\n"},
	}
	for _, tt := range accept {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKey(tt.in)
			if err != nil {
				t.Fatalf("ParseKey(%q) = %v; want nil", tt.in, err)
			}
			if !bytes.Equal(got, key) {
				t.Errorf("ParseKey(%q) = %x; want %x", tt.in, got, key)
			}
		})
	}

	reject := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"blank", "   \n"},
		{"31 bytes", base64.StdEncoding.EncodeToString(key[:31])},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 1))},
		{"16 bytes", base64.RawURLEncoding.EncodeToString(key[:16])},
		{"64 bytes", base64.StdEncoding.EncodeToString(append(bytes.Clone(key), key...))},
		{"not base64", "this is not a key!"},
		{"64 characters decoding to 48 bytes", strings.Repeat("zz", 32)},
		{"mixed alphabets", base64.StdEncoding.EncodeToString(key)[:10] + "-_" + base64.StdEncoding.EncodeToString(key)[12:]},
	}
	for _, tt := range reject {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := ParseKey(tt.in); err == nil {
				t.Errorf("ParseKey(%q) = %x, nil; want an error", tt.in, got)
			}
		})
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nested", "data", "encryption.key")

	k1, err := LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatalf("first LoadOrCreateKeyFile: %v", err)
	}
	if len(k1) != KeySize {
		t.Fatalf("key is %d bytes; want %d", len(k1), KeySize)
	}
	if bytes.Equal(k1, make([]byte, KeySize)) {
		t.Errorf("generated key is all zeros")
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode = %v; want -rw-------", got)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("key directory mode = %v; want drwx------", got)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.StdEncoding.EncodeToString(k1) + "\n"; string(data) != want {
		t.Errorf("file content = %q; want %q", data, want)
	}

	for i := range 3 {
		k, err := LoadOrCreateKeyFile(path)
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if !bytes.Equal(k, k1) {
			t.Errorf("reload %d = %x; want the stored key %x", i, k, k1)
		}
	}

	other, err := LoadOrCreateKeyFile(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other, k1) {
		t.Errorf("two new key files hold the same key")
	}
}

func TestLoadOrCreateKeyFileReadsOperatorKey(t *testing.T) {
	key := sealTestKey(t)
	path := filepath.Join(t.TempDir(), "encryption.key")
	if err := os.WriteFile(path, []byte(base64.RawURLEncoding.EncodeToString(key)+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatalf("LoadOrCreateKeyFile: %v", err)
	}
	if !bytes.Equal(got, key) {
		t.Errorf("key = %x; want %x", got, key)
	}
}

func TestLoadOrCreateKeyFileRejectsGarbage(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{"not base64", "hello, world\n"},
		{"wrong length", base64.StdEncoding.EncodeToString(make([]byte, 16)) + "\n"},
		{"PEM", "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "encryption.key")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := LoadOrCreateKeyFile(path)
			if err == nil {
				t.Fatalf("LoadOrCreateKeyFile = %x, nil; want an error", k)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
			// The operator's file is left alone, never replaced by a new key.
			if data, _ := os.ReadFile(path); string(data) != tt.content {
				t.Errorf("file rewritten to %q", data)
			}
		})
	}
}

func TestLoadOrCreateKeyFileOnDirectory(t *testing.T) {
	path := t.TempDir()
	if k, err := LoadOrCreateKeyFile(path); err == nil {
		t.Errorf("LoadOrCreateKeyFile(directory) = %x, nil; want an error", k)
	}
}

// A key file that is a link to a missing file (a secrets mount not
// mounted yet) is refused, naming both; it is not created through the
// link, nor tried again without end.
func TestLoadOrCreateKeyFileRefusesADanglingLink(t *testing.T) {
	dir := t.TempDir()
	path, target := filepath.Join(dir, "encryption.key"), filepath.Join(dir, "mnt", "secret.key")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	k, err := LoadOrCreateKeyFile(path)
	if err == nil {
		t.Fatalf("LoadOrCreateKeyFile = %x, nil; want an error", k)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), target) {
		t.Errorf("error %q; want it to name %s and %s", err, path, target)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target: %v; want it still missing", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".encryption-key-*")); len(left) != 0 {
		t.Errorf("left beside it: %v", left)
	}
}
