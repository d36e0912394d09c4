package authcore

import (
	"bytes"
	"testing"
)

func csrfForTest(t *testing.T, fill byte) *CSRF {
	t.Helper()
	return NewCSRF(bytes.Repeat([]byte{fill}, 32))
}

func TestCSRFToken(t *testing.T) {
	c := csrfForTest(t, 1)
	tok := c.Token("s:session-a")
	if len(tok) != 43 {
		t.Errorf("Token = %q (%d characters); want 43 (HMAC-SHA256, unpadded base64url)", tok, len(tok))
	}
	if again := c.Token("s:session-a"); again != tok {
		t.Errorf("Token is not stable: %q then %q", tok, again)
	}
	if again := csrfForTest(t, 1).Token("s:session-a"); again != tok {
		t.Errorf("Token differs between two CSRFs with one key: %q and %q", tok, again)
	}
}

func TestCSRFValid(t *testing.T) {
	c := csrfForTest(t, 1)
	other := csrfForTest(t, 2)
	const binding = "s:session-a"
	tok := c.Token(binding)
	tests := []struct {
		name    string
		c       *CSRF
		binding string
		token   string
		want    bool
	}{
		{"its own binding", c, binding, tok, true},
		{"another session", c, "s:session-b", tok, false},
		{"pre-session binding of the same value", c, "a:session-a", tok, false},
		{"binding prefix", c, "s:session-", tok, false},
		{"binding with suffix", c, binding + "x", tok, false},
		{"another server key", other, binding, tok, false},
		{"empty binding", c, "", c.Token(""), false},
		{"empty token", c, binding, "", false},
		{"both empty", c, "", "", false},
		{"truncated token", c, binding, tok[:42], false},
		{"token with suffix", c, binding, tok + "A", false},
		{"case changed", c, binding, csrfFlipCase(tok), false},
		{"token of another binding", c, binding, c.Token("s:session-b"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Valid(tt.binding, tt.token); got != tt.want {
				t.Errorf("Valid(%q, %q) = %t; want %t", tt.binding, tt.token, got, tt.want)
			}
		})
	}
}

// csrfFlipCase swaps the case of the first letter in s.
func csrfFlipCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
			return string(b)
		case c >= 'A' && c <= 'Z':
			b[i] = c - 'A' + 'a'
			return string(b)
		}
	}
	return s + "x"
}
