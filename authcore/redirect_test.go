package authcore

import (
	"strings"
	"testing"
)

// TestCleanRedirect: each case names the attack it stands for. host is the
// site the portal is served on; allowed are the allowed_redirect_hosts.
func TestCleanRedirect(t *testing.T) {
	const host = "app.example.com"
	allowed := []string{"docs.example.com", "api.example.com:8443"}
	longPath := "/" + strings.Repeat("a", MaxRedirectLen-1) // the longest kept

	tests := []struct {
		name   string
		rd     string
		host   string // default host
		secure bool   // the site is served over HTTPS
		want   string // "" means rd itself (kept verbatim)
	}{
		// Safe targets are kept exactly as given.
		{name: "root", rd: "/"},
		{name: "local path", rd: "/dashboard"},
		{name: "local path with query and fragment", rd: "/a/b?x=1&y=2#top"},
		{name: "query holding a scheme-relative url", rd: "/search?next=//evil.com"},
		{name: "double slash later in the path", rd: "/a//b"},
		{name: "dots in names", rd: "/v1.2/a..b/.well-known/x.?q=/./"},
		{name: "percent-encoded slashes stay a path", rd: "/%2F%2Fevil.com"},
		{name: "percent-encoded backslash stays a path", rd: "/%5Cevil.com"},
		{name: "percent-encoded tab stays a path", rd: "/%09/evil.com"},
		{name: "same host https", rd: "https://app.example.com/reports?id=1"},
		{name: "same host http", rd: "http://app.example.com/"},
		{name: "same host, other case", rd: "HTTPS://APP.Example.com/x"},
		{name: "same host with its port", rd: "https://app.example.com:8443/x", host: "app.example.com:8443"},
		{name: "allowed host", rd: "https://docs.example.com/guide"},
		{name: "allowed host, other case", rd: "https://DOCS.example.COM/guide"},
		{name: "allowed host with its port", rd: "https://api.example.com:8443/v1"},
		{name: "MaxRedirectLen bytes", rd: longPath},

		// Attacks and junk all become "/".
		{name: "dot segment resolving to //evil.com", rd: "/.//evil.com", want: "/"},
		{name: "encoded dot segment", rd: "/%2e//evil.com", want: "/"},
		{name: "dot-dot segment", rd: "/a/..//evil.com", want: "/"},
		{name: "encoded dot-dot segment", rd: "/a/%2E%2e//evil.com", want: "/"},
		{name: "dot segment on the same host", rd: "https://app.example.com/.//evil.com", want: "/"},
		{name: "dot segment at the end", rd: "/a/.", want: "/"},
		{name: "empty", rd: "", want: "/"},
		{name: "scheme-relative //evil", rd: "//evil.com/x", want: "/"},
		{name: "scheme-relative to our own host", rd: "//app.example.com/x", want: "/"},
		{name: "triple slash", rd: "///evil.com", want: "/"},
		{name: "slash backslash /\\evil", rd: "/\\evil.com", want: "/"},
		{name: "double backslash \\\\evil", rd: "\\\\evil.com", want: "/"},
		{name: "backslash after host", rd: "https://app.example.com\\@evil.com/", want: "/"},
		{name: "absolute url to another host", rd: "https://evil.com/", want: "/"},
		{name: "another host whose path names ours", rd: "https://evil.com/app.example.com", want: "/"},
		{name: "our host as a prefix of theirs", rd: "https://app.example.com.evil.com/", want: "/"},
		{name: "our host as a suffix of theirs", rd: "https://evilapp.example.com/", want: "/"},
		{name: "userinfo trick http://host@evil", rd: "http://app.example.com@evil.com/", want: "/"},
		{name: "userinfo on our own host", rd: "https://user:pass@app.example.com/", want: "/"},
		{name: "empty userinfo", rd: "https://@app.example.com/", want: "/"},
		{name: "fragment hides the host", rd: "https://evil.com#@app.example.com", want: "/"},
		{name: "query hides the host", rd: "https://evil.com?@app.example.com", want: "/"},
		{name: "javascript:", rd: "javascript:alert(document.cookie)", want: "/"},
		{name: "JaVaScRiPt: mixed case", rd: "JaVaScRiPt:alert(1)", want: "/"},
		{name: "javascript: with an authority", rd: "javascript://app.example.com/%0aalert(1)", want: "/"},
		{name: "data:", rd: "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", want: "/"},
		{name: "vbscript:", rd: "vbscript:msgbox(1)", want: "/"},
		{name: "file:", rd: "file:///etc/passwd", want: "/"},
		{name: "ftp to our host", rd: "ftp://app.example.com/", want: "/"},
		{name: "tab smuggled into //", rd: "/\t/evil.com", want: "/"},
		{name: "newline smuggled into //", rd: "/\n/evil.com", want: "/"},
		{name: "carriage return smuggled into //", rd: "/\r/evil.com", want: "/"},
		{name: "tab inside javascript:", rd: "java\tscript:alert(1)", want: "/"},
		{name: "leading space", rd: " //evil.com", want: "/"},
		{name: "NUL", rd: "/\x00/evil.com", want: "/"},
		{name: "DEL", rd: "/\x7f/evil.com", want: "/"},
		{name: "%09 in scheme position", rd: "java%09script:alert(1)", want: "/"},
		{name: "%09 before the scheme", rd: "%09javascript:alert(1)", want: "/"},
		{name: "relative without slash", rd: "evil.com/path", want: "/"},
		{name: "bare word", rd: "dashboard", want: "/"},
		{name: "query only", rd: "?next=/x", want: "/"},
		{name: "fragment only", rd: "#x", want: "/"},
		{name: "dot-relative", rd: "./x", want: "/"},
		{name: "overlong", rd: longPath + "a", want: "/"},
		{name: "same host, different port", rd: "https://app.example.com:8443/", want: "/"},
		{name: "same host, explicit default port", rd: "https://app.example.com:443/", want: "/"},
		{name: "site on a port, target without it", rd: "https://app.example.com/", host: "app.example.com:8443", want: "/"},
		{name: "allowed host on another port", rd: "https://docs.example.com:8443/", want: "/"},
		{name: "allowed host:port without the port", rd: "https://api.example.com/", want: "/"},
		{name: "subdomain of an allowed host", rd: "https://x.docs.example.com/", want: "/"},
		{name: "opaque http:evil", rd: "http:evil.com", want: "/"},
		{name: "opaque https:host", rd: "https:app.example.com", want: "/"},
		{name: "scheme with path but no host", rd: "https:/evil.com", want: "/"},
		{name: "scheme and no host", rd: "https:///evil.com", want: "/"},
		{name: "mailto:", rd: "mailto:a@evil.com", want: "/"},
		{name: "unparsable", rd: "https://app.example.com/%zz", want: "/"},

		// On an HTTPS site, never down to plaintext.
		{name: "https site, same host https", rd: "https://app.example.com/x", secure: true},
		{name: "https site, allowed host https", rd: "https://docs.example.com/guide", secure: true},
		{name: "https site, local path", rd: "/x", secure: true},
		{name: "https site, same host http", rd: "http://app.example.com/x", secure: true, want: "/"},
		{name: "https site, same host HTTP", rd: "HTTP://app.example.com/x", secure: true, want: "/"},
		{name: "https site, allowed host http", rd: "http://docs.example.com/guide", secure: true, want: "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.host
			if h == "" {
				h = host
			}
			want := tt.want
			if want == "" {
				want = tt.rd
			}
			if got := CleanRedirect(tt.rd, h, tt.secure, allowed); got != want {
				t.Errorf("CleanRedirect(%q, %q, secure %v) = %q; want %q", tt.rd, h, tt.secure, got, want)
			}
		})
	}
}

func TestCleanRedirectWithoutAllowedHosts(t *testing.T) {
	if got := CleanRedirect("https://docs.example.com/", "app.example.com", false, nil); got != "/" {
		t.Errorf("CleanRedirect to another host with no allowed hosts = %q; want %q", got, "/")
	}
	if got := CleanRedirect("https://docs.example.com/", "", false, nil); got != "/" {
		t.Errorf("CleanRedirect with an empty site host = %q; want %q", got, "/")
	}
	if got := CleanRedirect("https:///x", "", false, nil); got != "/" {
		t.Errorf("CleanRedirect of an empty host to an empty site host = %q; want %q", got, "/")
	}
}
