// Package ids makes identifiers: UUIDv7, time-ordered, so keys sort by
// creation. (Session tokens are authcore.NewToken.)
package ids

import "github.com/google/uuid"

// NewV7 returns a new UUIDv7. It panics only if the system's random source
// fails, which crypto/rand already treats as fatal.
func NewV7() uuid.UUID {
	return uuid.Must(uuid.NewV7())
}

// New returns a new UUIDv7 in its canonical string form.
func New() string { return NewV7().String() }
