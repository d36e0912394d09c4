package authcore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TokenLen is the cookie token length in bytes (256 bits).
const TokenLen = 32

// strictB64 rejects non-zero padding bits, so each token has exactly one
// spelling.
var strictB64 = base64.RawURLEncoding.Strict()

// tokenTextLen is the length of a token or session id as unpadded base64url.
var tokenTextLen = base64.RawURLEncoding.EncodedLen(TokenLen)

// SessionID is the SHA-256 of the session cookie's token. Only the id is
// stored; the token lives in the browser alone, so a copy of the store
// cannot be replayed as cookies.
type SessionID [32]byte

// String is the id as unpadded base64url: the X-Sigra-Session value and
// the id shown to users and admins.
func (id SessionID) String() string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// MarshalText implements encoding.TextMarshaler.
func (id SessionID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *SessionID) UnmarshalText(b []byte) error {
	p, err := ParseSessionID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

var errBadSessionID = errors.New("malformed session id")

// ParseSessionID parses the String form of a SessionID.
func ParseSessionID(s string) (SessionID, error) {
	var id SessionID
	if len(s) != tokenTextLen {
		return id, errBadSessionID
	}
	if n, err := strictB64.Decode(id[:], []byte(s)); err != nil || n != len(id) {
		return SessionID{}, errBadSessionID
	}
	return id, nil
}

// NewToken returns a fresh random cookie token and the id it hashes to.
func NewToken() (token string, id SessionID) {
	var raw [TokenLen]byte
	_, _ = rand.Read(raw[:])
	token = base64.RawURLEncoding.EncodeToString(raw[:])
	return token, sha256.Sum256(raw[:])
}

// TokenID hashes a cookie token to its SessionID without allocating. ok is
// false for anything that is not a well-formed token, so tampered or
// truncated cookies never reach the store.
func TokenID(token string) (id SessionID, ok bool) {
	if len(token) != tokenTextLen {
		return id, false
	}
	var raw [TokenLen]byte
	var src [64]byte
	n := copy(src[:], token)
	if m, err := strictB64.Decode(raw[:], src[:n]); err != nil || m != TokenLen {
		return id, false
	}
	return sha256.Sum256(raw[:]), true
}

// Authentication method references (RFC 8176 names where they exist).
const (
	AMRPassword = "pwd"
	AMROTP      = "otp"
	AMRHardware = "hwk"
	AMRSoftware = "swk"
	AMRMFA      = "mfa"
	AMROIDC     = "oidc"
	AMRSAML     = "saml"
	AMREmail    = "email"
)

// Session is a server-side sign-in.
type Session struct {
	ID        SessionID `json:"id"`
	UserID    string    `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
	// LastSeen is when the session was last used; persisted lazily (see
	// Service), so it may trail the truth by up to the touch interval.
	LastSeen time.Time `json:"last_seen"`
	// ExpiresAt is the absolute end (created + lifetime).
	ExpiresAt time.Time `json:"expires_at"`
	// AuthTime is when the user last proved the first factor.
	AuthTime time.Time `json:"auth_time"`
	// AMR lists the methods used, in order.
	AMR []string `json:"amr"`
	// MFAAt is when a second factor last passed; zero if never.
	MFAAt time.Time `json:"mfa_at,omitzero"`
	// Pending is true while a required second factor is outstanding: the
	// session then counts as anonymous everywhere except the MFA page.
	Pending   bool   `json:"pending,omitempty"`
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	// UserEpoch is the user's SessionEpoch when the session started; the
	// session is valid only while the two are equal.
	UserEpoch uint64 `json:"user_epoch,omitempty"`
	// SignIn names the sign-in the session comes from: the id of its
	// first session, kept by its renewals and step-ups, which change the
	// id. Sessions stored before it have none (see SignInKey).
	SignIn string `json:"sign_in,omitempty"`
	// Host is the host name (lower case, no port) of the site the
	// session was started on, where alone it is valid (see OnHost).
	Host string `json:"host,omitempty"`
	// Plain is set on a session signed in, or renewed, over plain HTTP:
	// its token went in the clear, so it is not valid on HTTPS (see
	// OnSite). Sessions stored before it have it unset.
	Plain bool `json:"plain,omitempty"`
}

// RenewedOver marks the session as renewed by a request over HTTPS if
// secure: it is Plain if it was, or if the renewal's token goes in the
// clear.
func (s *Session) RenewedOver(secure bool) { s.Plain = s.Plain || !secure }

// OnSite reports whether the session is valid on a request for hostport
// (see OnHost) made over HTTPS if secure: a session whose token went in
// the clear (Plain) is not valid on HTTPS, where its cookie would sign
// in whoever read it on the network.
func (s *Session) OnSite(hostport string, secure bool) bool {
	return !(secure && s.Plain) && s.OnHost(hostport)
}

// OnHost reports whether the session is valid on a request for hostport
// (a Host header): on its own site's host name, whatever the port, as
// browsers send one host's cookies to all its ports. A session a leaked
// cookie carries to another site of the same gateway is not signed in
// there. A session stored without a host is valid on any.
func (s *Session) OnHost(hostport string) bool {
	return s.Host == "" || strings.EqualFold(s.Host, hostName(hostport))
}

// NormalizeHost returns the host name of hostport as a session keeps it:
// lower case, without the port, an IPv6 literal's brackets or a final
// dot.
func NormalizeHost(hostport string) string { return strings.ToLower(hostName(hostport)) }

// hostName is hostport without its port, an IPv6 literal's brackets or
// a final dot.
func hostName(hostport string) string {
	h := hostport
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[1:i]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// HasAMR reports whether the session used method m.
func (s *Session) HasAMR(m string) bool { return slices.Contains(s.AMR, m) }

// MFA reports whether a second factor has passed in this session.
func (s *Session) MFA() bool { return !s.MFAAt.IsZero() && s.HasAMR(AMRMFA) }

// PendingFor reports whether the session awaits a second factor from u,
// its user: stored pending, or started before u enrolled one (enrolling
// in one browser must not leave a stolen session in another signed in).
func (s *Session) PendingFor(u *User) bool { return s.Pending || u.SecondFactor && !s.MFA() }

// End is when the session is over by its absolute lifetime: ExpiresAt
// cut to its second. An identity assertion's exp is a whole second and
// never later than the session's end, so a session that lived on into
// ExpiresAt's last fraction of a second would pass its requests on with
// an assertion already expired (exp equal to iat).
func (s *Session) End() time.Time { return s.ExpiresAt.Truncate(time.Second) }

// Expired reports whether the session is over at now, by the absolute
// lifetime (End) or by idling longer than idle.
func (s *Session) Expired(now time.Time, idle time.Duration) bool {
	if !now.Before(s.End()) {
		return true
	}
	return idle > 0 && now.Sub(s.LastSeen) >= idle
}

// SignInKey names the session's sign-in: SignIn, or for a session stored
// without one, its start, which renewals and step-ups keep as well.
func (s *Session) SignInKey() string {
	if s.SignIn != "" {
		return s.SignIn
	}
	return "t" + strconv.FormatInt(s.CreatedAt.UnixNano(), 36)
}

// Clone returns a deep copy.
func (s *Session) Clone() *Session {
	c := *s
	c.AMR = slices.Clone(s.AMR)
	return &c
}
