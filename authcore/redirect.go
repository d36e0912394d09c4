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
// plaintext. A target longer than MaxRedirectLen is refused too, and one
// whose path has a dot segment: a browser resolves /.//evil.com to the
// path //evil.com, which an app that echoes the path into a redirect
// (adding a trailing slash, say) sends to another origin. Browsers
// resolve such segments before they send a URL, so a page's own address
// never has one.
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
	if err != nil || u.User != nil || u.Opaque != "" || hasDotSegment(u.EscapedPath()) {
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

// hasDotSegment reports whether an escaped path has a segment "." or
// "..", either dot also written %2e, as browsers read it.
func hasDotSegment(escaped string) bool {
	for _, seg := range strings.Split(escaped, "/") {
		seg = strings.ReplaceAll(strings.ToLower(seg), "%2e", ".")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
