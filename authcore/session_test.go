package authcore

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewTokenAndTokenIDAgree(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		token, id := NewToken()
		if len(token) != 43 {
			t.Errorf("token %q is %d characters; want 43 (32 bytes, unpadded base64url)", token, len(token))
		}
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || len(raw) != TokenLen {
			t.Fatalf("token %q is not %d bytes of base64url: %v", token, TokenLen, err)
		}
		if want := SessionID(sha256.Sum256(raw)); id != want {
			t.Errorf("NewToken id = %s; want SHA-256 of the token bytes %s", id, want)
		}
		got, ok := TokenID(token)
		if !ok || got != id {
			t.Errorf("TokenID(%q) = %s, %t; want %s, true", token, got, ok, id)
		}
		if seen[token] {
			t.Fatalf("NewToken repeated %q", token)
		}
		seen[token] = true
	}
}

// TestSessionIDIsNotACookie: the X-Sigra-Session value (the id) has the
// shape of a token but is not the token: a backend that sees it cannot use
// it as a cookie.
func TestSessionIDIsNotACookie(t *testing.T) {
	token, id := NewToken()
	if id.String() == token {
		t.Fatalf("session id string equals the cookie token %q", token)
	}
	if got, ok := TokenID(id.String()); ok && got == id {
		t.Errorf("TokenID(id.String()) = %s; the id must not hash to itself", got)
	}
}

func TestTokenIDRejects(t *testing.T) {
	token, _ := NewToken()
	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"one short", token[:42]},
		{"one long", token + "A"},
		{"padded", base64.URLEncoding.EncodeToString(make([]byte, TokenLen))},
		{"padding inside the length", token[:42] + "="},
		{"standard alphabet plus", token[:20] + "+" + token[21:]},
		{"standard alphabet slash", token[:20] + "/" + token[21:]},
		{"space", token[:20] + " " + token[21:]},
		{"newline (decoders skip it)", token[:20] + "\n" + token[21:]},
		{"non-ASCII", token[:41] + "é"},
		{"NUL", token[:42] + "\x00"},
		{"dot", token[:20] + "." + token[21:]},
		{"far too long", strings.Repeat("A", 4096)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if id, ok := TokenID(tt.token); ok {
				t.Errorf("TokenID(%q) = %s, true; want false", tt.token, id)
			}
		})
	}
}

func TestSessionIDText(t *testing.T) {
	_, id := NewToken()
	s := id.String()
	if len(s) != 43 || strings.ContainsAny(s, "+/=") {
		t.Errorf("String() = %q; want 43 characters of unpadded base64url", s)
	}
	parsed, err := ParseSessionID(s)
	if err != nil || parsed != id {
		t.Errorf("ParseSessionID(%q) = %s, %v; want %s", s, parsed, err, id)
	}

	text, err := id.MarshalText()
	if err != nil || string(text) != s {
		t.Errorf("MarshalText = %q, %v; want %q", text, err, s)
	}
	var back SessionID
	if err := back.UnmarshalText(text); err != nil || back != id {
		t.Errorf("UnmarshalText(%q) = %s, %v; want %s", text, back, err, id)
	}

	// JSON: as a value and as a map key (TouchSessions takes such a map).
	type wrap struct {
		ID   SessionID               `json:"id"`
		Seen map[SessionID]time.Time `json:"seen"`
	}
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	b, err := json.Marshal(wrap{ID: id, Seen: map[SessionID]time.Time{id: at}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"` + s + `","seen":{"` + s + `":"2026-11-23T12:00:00Z"}}`; string(b) != want {
		t.Errorf("json = %s; want %s", b, want)
	}
	var w wrap
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	if w.ID != id || !w.Seen[id].Equal(at) {
		t.Errorf("json round trip = %+v; want id %s seen %v", w, id, at)
	}
}

func TestParseSessionIDRejects(t *testing.T) {
	_, id := NewToken()
	s := id.String()
	for name, in := range map[string]string{
		"empty":    "",
		"short":    s[:42],
		"long":     s + "A",
		"padded":   base64.URLEncoding.EncodeToString(id[:]),
		"standard": strings.Repeat("+", 43),
		"hex":      strings.Repeat("ab", 32),
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := ParseSessionID(in); err == nil {
				t.Errorf("ParseSessionID(%q) = %s, nil; want an error", in, got)
			}
			keep := id
			if err := keep.UnmarshalText([]byte(in)); err == nil {
				t.Errorf("UnmarshalText(%q) = nil; want an error", in)
			}
			if keep != id {
				t.Errorf("UnmarshalText(%q) changed the id on error", in)
			}
		})
	}
}

func TestSessionExpired(t *testing.T) {
	created := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	const idle = 30 * time.Minute
	sess := func(lastSeen time.Time) *Session {
		return &Session{CreatedAt: created, LastSeen: lastSeen, ExpiresAt: created.Add(12 * time.Hour)}
	}
	tests := []struct {
		name string
		s    *Session
		now  time.Time
		idle time.Duration
		want bool
	}{
		{"fresh", sess(created), created, idle, false},
		{"just before idle", sess(created), created.Add(idle - time.Nanosecond), idle, false},
		{"idle boundary", sess(created), created.Add(idle), idle, true},
		{"idle long ago", sess(created), created.Add(2 * time.Hour), idle, true},
		{"recent activity", sess(created.Add(2 * time.Hour)), created.Add(2*time.Hour + 29*time.Minute), idle, false},
		{"no idle limit", sess(created), created.Add(11 * time.Hour), 0, false},
		{"just before absolute end", sess(created.Add(12*time.Hour - time.Minute)), created.Add(12*time.Hour - time.Nanosecond), idle, false},
		{"absolute boundary", sess(created.Add(12*time.Hour - time.Minute)), created.Add(12 * time.Hour), idle, true},
		{"absolute end despite activity", sess(created.Add(12 * time.Hour)), created.Add(12*time.Hour + time.Second), idle, true},
		{"absolute end without idle limit", sess(created), created.Add(12 * time.Hour), 0, true},
		{"within the last second", &Session{CreatedAt: created, LastSeen: created.Add(12 * time.Hour), ExpiresAt: created.Add(12*time.Hour + 700*time.Millisecond)}, created.Add(12*time.Hour + 100*time.Millisecond), idle, true},
		{"before the last second", &Session{CreatedAt: created, LastSeen: created, ExpiresAt: created.Add(12*time.Hour + 700*time.Millisecond)}, created.Add(12*time.Hour - time.Nanosecond), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Expired(tt.now, tt.idle); got != tt.want {
				t.Errorf("Expired(created+%v, idle %v) = %t; want %t", tt.now.Sub(created), tt.idle, got, tt.want)
			}
		})
	}
}

func TestSessionAMRAndMFA(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		s       Session
		wantMFA bool
	}{
		{"password only", Session{AMR: []string{AMRPassword}}, false},
		{"mfa listed but no time", Session{AMR: []string{AMRPassword, AMROTP, AMRMFA}}, false},
		{"time but mfa not listed", Session{AMR: []string{AMRPassword}, MFAAt: at}, false},
		{"password and totp", Session{AMR: []string{AMRPassword, AMROTP, AMRMFA}, MFAAt: at}, true},
		{"passkey", Session{AMR: []string{AMRHardware, AMRMFA}, MFAAt: at}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.MFA(); got != tt.wantMFA {
				t.Errorf("MFA() with amr %q = %t; want %t", tt.s.AMR, got, tt.wantMFA)
			}
		})
	}
	s := Session{AMR: []string{AMRPassword, AMROTP}}
	if !s.HasAMR(AMROTP) || s.HasAMR(AMRHardware) {
		t.Errorf("HasAMR on %q: otp %t, hwk %t; want true, false", s.AMR, s.HasAMR(AMROTP), s.HasAMR(AMRHardware))
	}
}

func TestSessionCloneIsDeep(t *testing.T) {
	s := &Session{UserID: "u", AMR: []string{AMRPassword}}
	c := s.Clone()
	c.AMR[0] = AMROTP
	c.AMR = append(c.AMR, AMRMFA)
	if !slices.Equal(s.AMR, []string{AMRPassword}) {
		t.Errorf("original AMR = %q after changing the clone; want %q", s.AMR, []string{AMRPassword})
	}
}

func TestSessionOnHost(t *testing.T) {
	for _, tc := range []struct {
		stored, request string
		want            bool
	}{
		{"app.example.com", "app.example.com", true},
		{"app.example.com", "app.example.com:8443", true}, // one host's ports share cookies
		{"app.example.com", "APP.Example.com.", true},
		{"app.example.com", "admin.example.com", false},
		{"app.example.com", "example.com", false},
		{"app.example.com", "app.example.com.evil.test", false},
		{"app.example.com", "", false},
		{"127.0.0.1", "127.0.0.1:8080", true},
		{"127.0.0.1", "localhost:8080", false},
		{"::1", "[::1]:8443", true},
		{"::1", "[::2]:8443", false},
		{"", "anything.example", true}, // stored before sessions kept their host
	} {
		s := &Session{Host: tc.stored}
		if got := s.OnHost(tc.request); got != tc.want {
			t.Errorf("session of %q on %q: %v; want %v", tc.stored, tc.request, got, tc.want)
		}
	}
	for in, want := range map[string]string{
		"App.Example.com:443": "app.example.com", "[::1]:80": "::1", "example.com.": "example.com", "127.0.0.1": "127.0.0.1",
	} {
		if got := NormalizeHost(in); got != want {
			t.Errorf("NormalizeHost(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestSessionOnSite(t *testing.T) {
	for _, tc := range []struct {
		plain, secure bool
		want          bool
	}{
		{false, false, true},
		{false, true, true}, // signed in over HTTPS, or stored before sessions kept the scheme
		{true, false, true}, // plain HTTP, on plain HTTP
		{true, true, false}, // its token went in the clear: not on HTTPS
	} {
		s := &Session{Host: "app.example.com", Plain: tc.plain}
		if got := s.OnSite("app.example.com:443", tc.secure); got != tc.want {
			t.Errorf("session plain %v on a request secure %v: %v; want %v", tc.plain, tc.secure, got, tc.want)
		}
		if s.OnSite("admin.example.com", tc.secure) {
			t.Errorf("session plain %v on another host, secure %v: valid; want not", tc.plain, tc.secure)
		}
	}
}

// Bound cuts a session's end to the lifetime in force and never
// lengthens it. A pending session is bound by Lifetime alone: it may
// have been made pending (its end PendingLifetime from then) long after
// its sign-in.
func TestConfigBound(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	cfg := Config{Lifetime: time.Hour, PendingLifetime: 10 * time.Minute}
	for _, tc := range []struct {
		name    string
		pending bool
		stored  time.Duration // ExpiresAt − CreatedAt
		want    time.Duration
	}{
		{"signed in under a longer lifetime", false, 12 * time.Hour, time.Hour},
		{"signed in under a shorter lifetime", false, 30 * time.Minute, 30 * time.Minute},
		{"made pending 50m after sign-in", true, time.Hour, time.Hour},
		{"pending under a longer lifetime", true, 3 * time.Hour, time.Hour},
	} {
		s := &Session{CreatedAt: t0, ExpiresAt: t0.Add(tc.stored), Pending: tc.pending}
		cfg.Bound(s)
		if got := s.ExpiresAt.Sub(t0); got != tc.want {
			t.Errorf("%s: ends %v after sign-in; want %v", tc.name, got, tc.want)
		}
	}
}
