package authcore

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

// foldHost lowers a host ASCII-wise and maps the only two non-ASCII runes
// whose Unicode simple folding lands on an ASCII letter, KELVIN SIGN
// (U+212A) and LATIN SMALL LETTER LONG S (U+017F), to the ASCII letter
// that UTS-46 (what browsers apply to a host) maps them to. strings.EqualFold
// folds them too, so a host spelled with them is, to a browser, the very
// host it was compared with; anything else non-ASCII must match byte for
// byte.
func foldHost(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case 'A' <= r && r <= 'Z':
			r += 'a' - 'A'
		case r == '\u212a':
			r = 'k'
		case r == '\u017f':
			r = 's'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// redirectHostOK is the reference for "the target's host is h": the
// authority equals h, or (for a bare allowed host name) the target names
// that host with no port ("host" or "host:"), so the scheme's default port.
func redirectHostOK(u *url.URL, h string) bool {
	if h == "" {
		return false // an empty configured host never names a real site
	}
	return foldHost(u.Host) == foldHost(h) || u.Port() == "" && foldHost(u.Hostname()) == foldHost(h)
}

// conservativePath reports whether rd is a plain local path that
// CleanRedirect must keep: "/" then only unreserved and a few harmless
// URL characters, no "//" at the start.
func conservativePath(rd string) bool {
	if len(rd) == 0 || len(rd) > MaxRedirectLen || rd[0] != '/' || strings.HasPrefix(rd, "//") {
		return false
	}
	for i := 0; i < len(rd); i++ {
		c := rd[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/-._~?=&#", c) >= 0) {
			return false
		}
	}
	return true
}

// FuzzCleanRedirect checks CleanRedirect's contract (its doc comment) for
// any rd, site host and allowed_redirect_hosts (comma-separated here):
// the result is rd itself or "/"; a kept local path starts with "/" but
// not "//" or "/\"; a kept absolute URL is http(s) (https only on an HTTPS
// site), has no user info, no opaque part, and names the site host or an
// allowed host; nothing kept carries control characters, whitespace or
// backslashes, or exceeds MaxRedirectLen bytes; cleaning is idempotent; and a plain
// local path is always kept.
func FuzzCleanRedirect(f *testing.F) {
	const site = "app.example.com"
	const allowed = "docs.example.com,api.example.com:8443"
	for _, rd := range []string{
		// Good.
		"/", "/dashboard", "/a/b?x=1&y=2#top", "/search?next=//evil.com", "/a//b",
		"/%2F%2Fevil.com", "/%5Cevil.com", "https://app.example.com/reports?id=1",
		"http://app.example.com/", "HTTPS://APP.Example.com/x", "https://docs.example.com/guide",
		"https://api.example.com:8443/v1", "https://docs.example.com:/x", "/" + strings.Repeat("a", MaxRedirectLen-1),
		// Bad.
		"", "//evil.com/x", "//app.example.com/x", "///evil.com", "/\\evil.com", "\\\\evil.com",
		"https://app.example.com\\@evil.com/", "https://evil.com/", "https://app.example.com.evil.com/",
		"http://app.example.com@evil.com/", "https://@app.example.com/", "https://evil.com#@app.example.com",
		"javascript:alert(document.cookie)", "JaVaScRiPt:alert(1)", "javascript://app.example.com/%0aalert(1)",
		"data:text/html;base64,PHNjcmlwdD4=", "file:///etc/passwd", "ftp://app.example.com/",
		"/\t/evil.com", "/\n/evil.com", " //evil.com", "/\x00/evil.com", "/\x7f/evil.com",
		"java%09script:alert(1)", "evil.com/path", "?next=/x", "#x", "./x", "http:evil.com",
		"https:/evil.com", "https:///evil.com", "https://app.example.com/%zz", "https://:/", "https://[::1]/",
		"https://[]/", "https://app.example.com:443/", "https://x.docs.example.com/",
		"https://\u212aey.example.com/", "https://%E2%84%AAey.example.com/", "https://a%C3%A9/",
		"/" + strings.Repeat("a", MaxRedirectLen),
	} {
		f.Add(rd, site, false, allowed)
		f.Add(rd, site, true, allowed)
	}
	f.Add("https://app.example.com:8443/x", "app.example.com:8443", true, "")
	f.Add("https://app.example.com/", "app.example.com:8443", false, "")
	f.Add("https://[::1]/x", "localhost", false, "::1,[::1]:8443")
	f.Add("https://key.example.com/", "\u212aey.example.com", true, "")
	f.Add("https://docs.example.com/", "", false, "")

	f.Fuzz(func(t *testing.T, rd, host string, secure bool, allowedCSV string) {
		var hosts []string
		if allowedCSV != "" {
			for h := range strings.SplitSeq(allowedCSV, ",") {
				// An empty entry is skipped: with "" allowed,
				// "https://:/" would be kept (its Hostname is "",
				// its Port ""). No browser can follow that, and a
				// configuration cannot hold a blank host name in
				// practice, so it is not what this test is for.
				if h != "" {
					hosts = append(hosts, h)
				}
			}
		}
		got := CleanRedirect(rd, host, secure, hosts)
		if got != "/" && got != rd {
			t.Fatalf("CleanRedirect(%q) = %q; want rd itself or \"/\"", rd, got)
		}
		if len(got) > MaxRedirectLen {
			t.Fatalf("CleanRedirect(%q) kept %d bytes; at most %d", rd, len(got), MaxRedirectLen)
		}
		for i := 0; i < len(got); i++ {
			if c := got[i]; c <= ' ' || c == 0x7f || c == '\\' {
				t.Fatalf("CleanRedirect(%q) = %q holds byte %#x", rd, got, c)
			}
		}
		if again := CleanRedirect(got, host, secure, hosts); again != got {
			t.Fatalf("not idempotent: CleanRedirect(%q) = %q, then %q", rd, got, again)
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("CleanRedirect(%q) = %q, which does not parse: %v", rd, got, err)
		}
		if strings.HasPrefix(got, "/") {
			if strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") {
				t.Fatalf("CleanRedirect(%q) = %q: scheme-relative, another origin", rd, got)
			}
			if u.Scheme != "" || u.Host != "" || u.User != nil {
				t.Fatalf("CleanRedirect(%q) = %q parses with scheme %q host %q", rd, got, u.Scheme, u.Host)
			}
		} else {
			scheme := strings.ToLower(u.Scheme)
			if scheme != "https" && scheme != "http" {
				t.Fatalf("CleanRedirect(%q) = %q: scheme %q", rd, got, u.Scheme)
			}
			if secure && scheme != "https" {
				t.Fatalf("CleanRedirect(%q) on an HTTPS site = %q: plaintext", rd, got)
			}
			if u.User != nil || u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
				t.Fatalf("CleanRedirect(%q) = %q: user %v, opaque %q, host %q", rd, got, u.User, u.Opaque, u.Host)
			}
			ok := redirectHostOK(u, host)
			for _, h := range hosts {
				ok = ok || redirectHostOK(u, h)
			}
			if !ok {
				t.Fatalf("CleanRedirect(%q, host %q, allowed %q) = %q: host %q is neither", rd, host, hosts, got, u.Host)
			}
		}
		if secure && got != "/" {
			// What is safe on an HTTPS site is safe on a plain one.
			if plain := CleanRedirect(rd, host, false, hosts); plain != got {
				t.Fatalf("CleanRedirect(%q) = %q over HTTPS but %q over HTTP", rd, got, plain)
			}
		}
		if conservativePath(rd) && got != rd {
			t.Fatalf("CleanRedirect(%q) = %q; a plain local path must be kept", rd, got)
		}
	})
}

// FuzzParseSessionID: ParseSessionID and TokenID accept exactly the one
// canonical spelling of 32 bytes (43 characters of unpadded base64url, no
// stray padding bits, no line breaks), ParseSessionID round-trips through
// String, and TokenID is the SHA-256 of the decoded bytes.
func FuzzParseSessionID(f *testing.F) {
	token, id := NewToken()
	for _, s := range []string{
		token, id.String(), SessionID{}.String(), strings.Repeat("_", 43),
		"", "A", token[:42], token + "A", token[:42] + "B", // B: padding bits set
		base64.URLEncoding.EncodeToString(make([]byte, TokenLen)),
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, TokenLen)),
		token[:20] + "\n" + token[20:42], token[:20] + "\r" + token[21:],
		token[:42] + "=", strings.Repeat("A", 43), "not-a-session-id-at-all-but-43-characters!",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		raw, derr := base64.RawURLEncoding.DecodeString(s)
		canonical := derr == nil && len(raw) == TokenLen && base64.RawURLEncoding.EncodeToString(raw) == s

		pid, err := ParseSessionID(s)
		if (err == nil) != canonical {
			t.Fatalf("ParseSessionID(%q) error %v; canonical %v", s, err, canonical)
		}
		if err != nil {
			if err != errBadSessionID {
				t.Fatalf("ParseSessionID(%q) error %v; want errBadSessionID", s, err)
			}
			if pid != (SessionID{}) {
				t.Fatalf("ParseSessionID(%q) failed but returned %x", s, pid)
			}
		} else {
			if pid.String() != s || !bytes.Equal(pid[:], raw) {
				t.Fatalf("ParseSessionID(%q) = %s; does not round-trip", s, pid)
			}
			var u SessionID
			if err := u.UnmarshalText([]byte(s)); err != nil || u != pid {
				t.Fatalf("UnmarshalText(%q) = %s, %v; want %s", s, u, err, pid)
			}
		}

		tid, ok := TokenID(s)
		if ok != canonical {
			t.Fatalf("TokenID(%q) ok %v; canonical %v", s, ok, canonical)
		}
		if ok && tid != SessionID(sha256.Sum256(raw)) {
			t.Fatalf("TokenID(%q) = %s; want the SHA-256 of its bytes", s, tid)
		}
	})
}

// FuzzSessionToken: a token made from any 32 bytes maps to the SHA-256 of
// those bytes, its id round-trips through ParseSessionID, and any one-byte
// change of the token is refused or names another session.
func FuzzSessionToken(f *testing.F) {
	f.Add(bytes.Repeat([]byte{0}, 32), uint8(0), byte('B'))
	f.Add(bytes.Repeat([]byte{0xff}, 32), uint8(42), byte('A'))
	f.Add([]byte("0123456789abcdef0123456789abcdef"), uint8(42), byte('B'))
	f.Add([]byte("0123456789abcdef0123456789abcdef"), uint8(10), byte('='))
	f.Add([]byte("0123456789abcdef0123456789abcdef"), uint8(21), byte('\n'))
	f.Add([]byte("short"), uint8(5), byte('+'))
	f.Fuzz(func(t *testing.T, seed []byte, pos uint8, b byte) {
		var raw [TokenLen]byte
		copy(raw[:], seed)
		token := base64.RawURLEncoding.EncodeToString(raw[:])
		want := SessionID(sha256.Sum256(raw[:]))
		id, ok := TokenID(token)
		if !ok || id != want {
			t.Fatalf("TokenID(%q) = %s, %v; want %s", token, id, ok, want)
		}
		if back, err := ParseSessionID(id.String()); err != nil || back != id {
			t.Fatalf("ParseSessionID(%q) = %s, %v; want %s", id.String(), back, err, id)
		}
		m := []byte(token)
		i := int(pos) % len(m)
		if m[i] == b {
			return
		}
		m[i] = b
		if mid, ok := TokenID(string(m)); ok && mid == id {
			t.Fatalf("token %q mutated at %d to %q still names session %s", token, i, m, id)
		}
		if pid, err := ParseSessionID(string(m)); err == nil && pid == SessionID(raw) {
			t.Fatalf("id %q mutated at %d to %q still parses to %x", token, i, m, raw)
		}
	})
}

// FuzzCSRF: a token is valid for the binding it was made for and no other,
// under its key and no other key of that length; no one-byte change,
// truncation or extension of a valid token is valid; an arbitrary token
// is valid only if it is exactly the binding's token; an empty binding or
// token is never valid.
func FuzzCSRF(f *testing.F) {
	key := bytes.Repeat([]byte{1}, 32)
	token, id := NewToken()
	for _, tc := range []struct{ binding, other, token string }{
		{"s:" + id.String(), "s:" + SessionID{}.String(), ""},
		{"s:session-a", "s:session-b", "garbage"},
		{"s:session-a", "a:session-a", NewCSRF(key).Token("s:session-a")},
		{"a:" + token, "a:" + token + "x", NewCSRF(key).Token("a:" + token)},
		{"s:session-a", "s:session-", strings.ToUpper(NewCSRF(key).Token("s:session-a"))},
		{"", "", NewCSRF(key).Token("")},
		{"s:x", "s:x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
	} {
		f.Add(key, tc.binding, tc.other, tc.token, uint8(0), byte('A'))
		f.Add(key, tc.binding, tc.other, tc.token, uint8(42), byte('B'))
	}
	f.Add([]byte{}, "s:session-a", "s:session-b", "", uint8(7), byte('-'))
	f.Fuzz(func(t *testing.T, key []byte, binding, other, token string, pos uint8, b byte) {
		c := NewCSRF(key)
		tok := c.Token(binding)
		if len(tok) != 43 {
			t.Fatalf("Token(%q) = %q; want 43 characters", binding, tok)
		}
		if got := c.Valid(binding, tok); got != (binding != "") {
			t.Fatalf("Valid(%q, own token) = %v", binding, got)
		}
		if c.Valid("", token) || c.Valid(binding, "") {
			t.Fatalf("an empty binding or token was valid (binding %q, token %q)", binding, token)
		}
		if c.Valid(binding, token) && token != tok {
			t.Fatalf("Valid(%q, %q) but the binding's token is %q", binding, token, tok)
		}
		if other != binding && c.Valid(other, tok) {
			t.Fatalf("token of %q is valid for %q", binding, other)
		}
		if binding == "" {
			return
		}
		if len(key) > 0 {
			k2 := bytes.Clone(key)
			k2[int(pos)%len(k2)] ^= 1 | b
			if NewCSRF(k2).Valid(binding, tok) {
				t.Fatalf("token valid under key %x, made under %x", k2, key)
			}
		}
		m := []byte(tok)
		if i := int(pos) % len(m); m[i] != b {
			m[i] = b
			if c.Valid(binding, string(m)) {
				t.Fatalf("token %q mutated to %q is still valid", tok, m)
			}
		}
		n := int(pos) % len(tok)
		if c.Valid(binding, tok[:n]) || c.Valid(binding, tok+string(rune(b))) || c.Valid(binding, tok+"\n") {
			t.Fatalf("a truncated or extended token %q was valid", tok)
		}
	})
}
