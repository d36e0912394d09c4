package authcore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// CSRF makes and checks anti-forgery tokens bound to a session (or, before
// sign-in, to a random pre-session cookie). A token is an HMAC of its
// binding under a server key, so nothing is stored and a token from one
// session is useless in another.
type CSRF struct {
	key []byte
}

// NewCSRF returns a CSRF with a 32-byte server key.
func NewCSRF(key []byte) *CSRF { return &CSRF{key: key} }

// Token returns the token for a binding ("s:<session id>" or "a:<cookie>").
func (c *CSRF) Token(binding string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("sigra-csrf\x00"))
	m.Write([]byte(binding))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Valid reports whether token is the token for binding, in constant time.
// An empty binding or token is never valid.
func (c *CSRF) Valid(binding, token string) bool {
	if binding == "" || token == "" {
		return false
	}
	return hmac.Equal([]byte(c.Token(binding)), []byte(token))
}
