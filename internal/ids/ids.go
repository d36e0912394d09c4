// Package ids makes identifiers: UUIDv7 (time-ordered, so keys sort by
// creation) and random URL-safe tokens.
package ids

import (
	"crypto/rand"
	"encoding/base64"

	"github.com/google/uuid"
)

// NewV7 returns a new UUIDv7. It panics only if the system's random source
// fails, which crypto/rand already treats as fatal.
func NewV7() uuid.UUID {
	return uuid.Must(uuid.NewV7())
}

// New returns a new UUIDv7 in its canonical string form.
func New() string { return NewV7().String() }

// Token returns n random bytes encoded as unpadded base64url.
func Token(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
