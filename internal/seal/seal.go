// Package seal encrypts small secrets at rest (signing keys, TOTP secrets)
// with AES-256-GCM under the deployment's encryption key.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigra-auth/caddy-sigra/internal/keyfile"
	"github.com/sigra-auth/caddy-sigra/internal/tmpfile"
)

// KeySize is the length of an encryption key in bytes.
const KeySize = 32

// ErrOpen means a sealed value could not be decrypted: the key is wrong or
// the value was tampered with.
var ErrOpen = errors.New("seal: cannot decrypt (wrong encryption key or tampered value)")

// Box seals and opens values. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
	id   string
}

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: encryption key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("sigra-key-id:"), key...))
	return &Box{aead: aead, id: hex.EncodeToString(sum[:4])}, nil
}

// ID is a short fingerprint of the key, safe to log, so an operator can
// tell which key an instance holds.
func (b *Box) ID() string { return b.id }

// Seal encrypts plaintext; aad binds the value to its place (for example a
// user id) so a sealed value cannot be moved to another record.
func (b *Box) Seal(plaintext, aad []byte) []byte {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	_, _ = rand.Read(nonce)
	return b.aead.Seal(nonce, nonce, plaintext, aad)
}

// Open decrypts a value made by Seal with the same aad.
func (b *Box) Open(sealed, aad []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, ErrOpen
	}
	pt, err := b.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// ParseKey decodes a base64 (standard or URL, padded or not) 32-byte key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, fmt.Errorf("encryption key decodes to %d bytes; want %d", len(k), KeySize)
			}
			return k, nil
		}
	}
	return nil, errors.New("encryption key is not valid base64")
}

// LoadOrCreateKeyFile reads a base64 key from path, or creates the file
// (mode 0600, parent directories 0700) with a new random key.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	if k, err := ReadKeyFile(path); !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for encryption key: %w", err)
	}
	k := make([]byte, KeySize)
	_, _ = rand.Read(k)
	// Written unnamed and linked into place: a concurrent first start
	// never reads a half-written key, and a start killed meanwhile leaves
	// no stray copy of the key beside it (tmpfile).
	tmp, err := tmpfile.New(filepath.Dir(path), ".encryption-key-*")
	if err != nil {
		return nil, fmt.Errorf("creating encryption key file: %w", err)
	}
	defer tmp.Remove()
	if _, err := tmp.WriteString(base64.StdEncoding.EncodeToString(k) + "\n"); err != nil {
		return nil, fmt.Errorf("writing encryption key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Link(path); errors.Is(err, os.ErrExist) {
		// Another process won the race: its key. A name that is taken
		// yet reads as missing is a link to nothing (a secrets mount
		// not mounted yet, say): trying again would never end.
		k, err := ReadKeyFile(path)
		if errors.Is(err, os.ErrNotExist) {
			to, _ := os.Readlink(path)
			return nil, fmt.Errorf("the encryption key file %s is a link to %q, which does not exist: make that file (or mount what holds it), or remove the link for a new key", path, to)
		}
		return k, err
	} else if err != nil {
		return nil, fmt.Errorf("creating encryption key file: %w", err)
	}
	return k, nil
}

// ReadKeyFile reads and parses the key file at path, never making one;
// an error wrapping os.ErrNotExist when there is none.
func ReadKeyFile(path string) ([]byte, error) {
	data, err := keyfile.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("reading encryption key: %w", err)
	}
	k, err := ParseKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
