package authcore

import (
	"net/url"
	"strings"
)

// MaxRedirectLen bounds a return target: 4 KiB, so that a dashboard's
// long link with its many query parameters still brings the user back
// after sign-in, while the sign-in page's URL that carries it, escaped
// (a third longer for a query string, three times at worst), stays
// within the 8 KiB request line a proxy in front takes (nginx, Apache).
const MaxRedirectLen = 4096

// CleanRedirect returns rd if it is a safe place to send a user after
// sign-in, and "/" otherwise. Safe means a local path ("/x", never "//x"
// or "/\x"), or an absolute http(s) URL whose host is host or one of
// allowedHosts (compared case-insensitively, port included). Anything
// with control characters, whitespace or backslashes is refused, because
// browsers repair such URLs into other origins. On a site served over
// HTTPS (secure) an http:// target is refused too: following it would
// send the user, and whatever the target reads from the URL, over
// plaintext. A target longer than MaxRedirectLen is refused too.
func CleanRedirect(rd, host string, secure bool, allowedHosts []string) string {
	if rd == "" || len(rd) > MaxRedirectLen {
		return "/"
	}
	for i := 0; i < len(rd); i++ {
		if c := rd[i]; c <= ' ' || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(rd)
	if err != nil || u.User != nil || u.Opaque != "" {
		return "/"
	}
	if u.Scheme == "" && u.Host == "" {
		if !strings.HasPrefix(rd, "/") || strings.HasPrefix(rd, "//") {
			return "/"
		}
		return rd
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && (scheme != "http" || secure) || u.Host == "" {
		return "/"
	}
	if strings.EqualFold(u.Host, host) {
		return rd
	}
	for _, h := range allowedHosts {
		if strings.EqualFold(u.Host, h) || strings.EqualFold(u.Hostname(), h) && u.Port() == "" {
			return rd
		}
	}
	return "/"
}
