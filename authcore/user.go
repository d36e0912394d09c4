package authcore

import (
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// User is a person who can sign in.
type User struct {
	ID            string    `json:"id"` // UUIDv7, stable; X-Sigra-User and the assertion's sub
	Email         string    `json:"email"`
	EmailVerified bool      `json:"email_verified"`
	Name          string    `json:"name"`
	Groups        []string  `json:"groups"`
	Disabled      bool      `json:"disabled"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	// PasswordHash is a PHC-format argon2id string; empty for users who
	// cannot sign in with a password.
	PasswordHash string `json:"password_hash,omitempty"`
	// SecondFactor is true when the user has enrolled TOTP or a passkey,
	// so a password alone leaves the session pending.
	SecondFactor bool `json:"second_factor,omitempty"`
	// SessionEpoch moves on each time all the user's sessions are ended
	// (password change, disabling, "sign out everywhere"). A session
	// carries the epoch of the user it was started from, and one from an
	// older epoch is refused: a sign-in whose password was checked just
	// before the change cannot store a session that outlives it.
	SessionEpoch uint64 `json:"session_epoch,omitempty"`
}

// InGroup reports whether the user is a member of group g.
func (u *User) InGroup(g string) bool { return slices.Contains(u.Groups, g) }

// Clone returns a deep copy, so cached users are never shared mutably.
func (u *User) Clone() *User {
	c := *u
	c.Groups = slices.Clone(u.Groups)
	return &c
}

// NormalizeEmail trims and lower-cases an address, checks that it is a
// plain addr-spec (no display name, no angle brackets), writes it in
// Unicode's compatibility form (NFKC: å typed as a and a combining ring
// is å, full-width ａｎｎ is ann, the ligature ﬀ is ff), and writes an
// internationalised domain in Unicode, as IDNA maps it for lookup: a
// browser sends ute@bücher.example typed into an email field as
// ute@xn--bcher-kva.example, and both are one address. A domain IDNA
// refuses (an address literal, an underscore) is kept as written.
func NormalizeEmail(s string) (string, error) {
	if utf8.ValidString(s) {
		s = norm.NFKC.String(s) // before parsing: a full-width ＠ is an @
	}
	s, err := plainEmail(s)
	if err != nil {
		return "", err
	}
	if !norm.NFKC.IsNormalString(s) { // lower case may undo it
		if s, err = plainEmail(norm.NFKC.String(s)); err != nil {
			return "", err
		}
	}
	at := strings.LastIndexByte(s, '@')
	domain, err := idna.Lookup.ToUnicode(s[at+1:])
	if err != nil || domain == s[at+1:] {
		return s, nil
	}
	return plainEmail(s[:at+1] + domain)
}

// plainEmail is NormalizeEmail but for NFKC and the domain's IDNA
// mapping, as addresses were stored before them.
func plainEmail(s string) (string, error) {
	if !utf8.ValidString(s) { // before ToLower, which makes such bytes U+FFFD
		return "", fmt.Errorf("%w: email %q is not text (UTF-8)", ErrInvalidInput, s)
	}
	typed := strings.TrimSpace(s) // for the error: as written
	s = strings.ToLower(typed)
	if s == "" || len(s) > 254 {
		return "", fmt.Errorf("%w: email must be 1 to 254 characters", ErrInvalidInput)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || strings.ContainsFunc(s, isHidden) {
		return "", fmt.Errorf("%w: %q is not a valid email address", ErrInvalidInput, typed)
	}
	return s, nil
}

// emailForms are the keys a typed address may be stored under, in the
// order to look: as typed (lower case, trimmed: a user stored before
// addresses were mapped, under exactly what the admin copies from users
// list, is that one, even where its normal form is another user's), its
// normal form (norm), then that with the domain in ASCII, as stored
// before domains were mapped.
func emailForms(typed string) (forms []string, norm string, err error) {
	if norm, err = NormalizeEmail(typed); err != nil {
		return nil, "", err
	}
	if plain, err := plainEmail(typed); err == nil && plain != norm {
		forms = append(forms, plain)
	}
	forms = append(forms, norm)
	at := strings.LastIndexByte(norm, '@')
	if ascii, err := idna.Lookup.ToASCII(norm[at+1:]); err == nil && ascii != norm[at+1:] && !slices.Contains(forms, norm[:at+1]+ascii) {
		forms = append(forms, norm[:at+1]+ascii)
	}
	return forms, norm, nil
}

// CheckGroupName refuses a group name that could not travel in the
// comma-separated X-Sigra-Groups header: empty, a comma, a control
// character, invalid UTF-8, space around it, or over 64 bytes.
func CheckGroupName(g string) error {
	if g == "" || g != strings.TrimSpace(g) || strings.ContainsRune(g, ',') || strings.ContainsFunc(g, isHidden) || !utf8.ValidString(g) || len(g) > 64 {
		return fmt.Errorf("%w: group name %q (no commas, control or invisible characters, or surrounding spaces, 1 to 64 bytes)", ErrInvalidInput, g)
	}
	return nil
}

// MaxGroupsLen bounds a user's groups joined by commas, as they travel
// in X-Sigra-Groups and the assertion, and in one audit metadata value
// (audit.MaxMetaValueLen): a list cut there would hide a grant at its
// end from the trail.
const MaxGroupsLen = 1024

// NormalizeGroups trims, drops empties and duplicates, and checks that
// group names can travel in a comma-separated header, and all of them
// together in MaxGroupsLen.
func NormalizeGroups(in []string) ([]string, error) {
	var out []string
	n := -1 // the commas between
	for _, g := range in {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		if err := CheckGroupName(g); err != nil {
			return nil, err
		}
		if !slices.Contains(out, g) {
			out = append(out, g)
			n += len(g) + 1
		}
	}
	if n > MaxGroupsLen {
		return nil, fmt.Errorf("%w: %d groups of %d bytes in all (joined by commas); at most %d bytes", ErrInvalidInput, len(out), n, MaxGroupsLen)
	}
	return out, nil
}

// CleanName checks a display name: it travels in a header, so no control
// characters.
func CleanName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > 128 || !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: name must be valid UTF-8 of at most 128 bytes", ErrInvalidInput)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return isControl(r) || isBidiOverride(r) }) {
		return "", fmt.Errorf("%w: name contains a control character", ErrInvalidInput)
	}
	return s, nil
}

// isControl reports the characters that cannot travel in a header value
// (C0 and DEL), or that terminals act on or text breaks at when a log
// line, a CLI listing or an export prints them: C1 (U+0080–U+009F, CSI
// and OSC among them) and the Unicode line and paragraph separators.
func isControl(r rune) bool {
	return r < 0x20 || 0x7f <= r && r <= 0x9f || r == '\u2028' || r == '\u2029'
}

// isBidiOverride reports the bidirectional embeddings, overrides and
// isolates, which reorder the text around them when shown.
func isBidiOverride(r rune) bool {
	return '\u202a' <= r && r <= '\u202e' || '\u2066' <= r && r <= '\u2069'
}

// isHidden reports, beyond control characters, the invisible formatting
// characters (Unicode Cf: zero-width spaces and joiners, bidi marks and
// overrides, the soft hyphen): an identifier holding one (a group name,
// an email) looks the same as another that does not, as adm\u200bins
// looks like admins.
func isHidden(r rune) bool { return isControl(r) || unicode.Is(unicode.Cf, r) }

// visible is s with its hidden characters (isHidden) replaced by U+FFFD:
// a right-to-left override in a user agent would show the rest of a
// sessions list reversed.
func visible(s string) string {
	if !strings.ContainsFunc(s, isHidden) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isHidden(r) {
			return '\uFFFD'
		}
		return r
	}, s)
}
