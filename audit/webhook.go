package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// ErrBadWebhook means a webhook's configuration is unusable; the message
// names the webhook (by its redacted URL) and the problem.
var ErrBadWebhook = errors.New("audit: bad webhook")

// MinSecretLen is the shortest webhook secret accepted, in bytes.
const MinSecretLen = 16

// WebhookConfig is one webhook receiver. Several may be configured; each
// gets the rows whose action matches one of its patterns.
type WebhookConfig struct {
	// URL receives a POST per row: an http or https URL with a host.
	// Redirects are not followed.
	URL string `json:"url"`
	// Secret keys the Sigra-Signature HMAC. At least MinSecretLen bytes.
	// It is never serialised; the Caddy glue reads it from its own config
	// (placeholders such as {env.HOOK_SECRET}).
	Secret []byte `json:"-"`
	// Actions are the action patterns to send (see Pattern), for example
	// "auth.*", "mfa.*", "billing.*". At least one; "*" sends everything.
	Actions []string `json:"actions"`
}

// ID is the webhook's stable identifier: derived from its URL, so that a
// restart or a config reload that keeps the URL resumes the same pending
// deliveries. It is 16 hex characters.
func (c WebhookConfig) ID() string {
	sum := sha256.Sum256([]byte(c.URL))
	return hex.EncodeToString(sum[:8])
}

// Validate checks the URL, the secret and the patterns.
func (c WebhookConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		// A *url.Error quotes the whole URL; its cause names no credential.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%w: url: %v", ErrBadWebhook, err)
	}
	name := redacted(u)
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w %s: scheme must be http or https", ErrBadWebhook, name)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%w %s: no host", ErrBadWebhook, name)
	}
	if !hostLike(u.Hostname()) {
		return fmt.Errorf("%w %s: %q is not a host name or IP address", ErrBadWebhook, name, u.Hostname())
	}
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w %s: port %q is not from 1 to 65535", ErrBadWebhook, name, p)
		}
	}
	if u.Fragment != "" {
		return fmt.Errorf("%w %s: a fragment is never sent; remove it", ErrBadWebhook, name)
	}
	if len(c.Secret) < MinSecretLen {
		return fmt.Errorf("%w %s: secret must be at least %d bytes", ErrBadWebhook, name, MinSecretLen)
	}
	if len(c.Actions) == 0 {
		return fmt.Errorf("%w %s: no actions (use \"*\" for every action)", ErrBadWebhook, name)
	}
	if slices.ContainsFunc(c.Actions, func(a string) bool { return strings.TrimSpace(a) == "" }) {
		return fmt.Errorf("%w %s: an empty action pattern (use \"*\" for every action)", ErrBadWebhook, name)
	}
	ps, err := ParsePatterns(c.Actions)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrBadWebhook, name, err)
	}
	if err := CheckKnown(ps); err != nil {
		return fmt.Errorf("%w %s: %w", ErrBadWebhook, name, err)
	}
	return nil
}

// hostLike says whether h (a URL's host name, without brackets or port)
// could be dialled: an IP address (IPv6 with a zone too), or
// dot-separated labels of letters (any script: the transport converts
// them), digits, '-' and '_' (container names have them), none empty and
// none starting or ending with '-'.
func hostLike(h string) bool {
	if ip, _, _ := strings.Cut(h, "%"); net.ParseIP(ip) != nil {
		return true
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") ||
			strings.ContainsFunc(label, func(r rune) bool {
				return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '-' && r != '_'
			}) {
			return false
		}
	}
	return true
}

// receiverKey is the webhook URL u as one receiver: scheme and host in
// lower case, no trailing dot, no default port, an empty path as "/",
// percent-encoding in the path as RFC 3986 §6.2.2 normalises it, no
// empty query, so that two spellings of one URL are not two webhooks
// each sent every row.
func receiverKey(u *url.URL) string {
	k := *u
	k.Scheme, k.Host = strings.ToLower(k.Scheme), strings.ToLower(k.Host)
	host, port := strings.TrimSuffix(k.Hostname(), "."), k.Port()
	if k.Scheme == "http" && port == "80" || k.Scheme == "https" && port == "443" {
		port = ""
	}
	k.Host = host
	if strings.Contains(host, ":") {
		k.Host = "[" + host + "]"
	}
	if port != "" {
		k.Host += ":" + port
	}
	if k.Path == "" && k.RawPath == "" {
		k.Path = "/"
	}
	k.RawPath = normalEscapes(k.EscapedPath())
	k.ForceQuery = false
	return k.String()
}

// normalEscapes decodes the percent-encoded unreserved characters of an
// escaped path (%7E is ~) and writes the other escapes' hex digits in
// upper case (%2f is %2F). Every other byte stays as it is.
func normalEscapes(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	const digits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) {
			b.WriteByte(p[i])
			continue
		}
		v, err := strconv.ParseUint(p[i+1:i+3], 16, 8)
		if err != nil {
			b.WriteByte(p[i])
			continue
		}
		switch c := byte(v); {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-._~", c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteString("%" + string(digits[c>>4]) + string(digits[c&15]))
		}
		i += 2
	}
	return b.String()
}

// hook is a validated webhook.
type hook struct {
	id       string
	url      string
	secret   []byte
	patterns []Pattern
}

// ValidateWebhooks checks a set of webhooks as New does: each one
// (Validate), and no URL twice. Errors wrap ErrBadWebhook; with several
// problems, the first webhook that has one is named. A configuration
// layer calls it to refuse, at validation time, a config that New would
// refuse at start.
func ValidateWebhooks(cfgs []WebhookConfig) error {
	seen := make(map[string]bool, len(cfgs))
	for _, c := range cfgs {
		if err := c.Validate(); err != nil {
			return err
		}
		u, _ := url.Parse(c.URL) // Validate parsed it
		key := receiverKey(u)
		if seen[key] {
			return fmt.Errorf("%w %s: configured twice (list every action pattern in one webhook)", ErrBadWebhook, RedactURL(c.URL))
		}
		seen[key] = true
	}
	return nil
}

func newHooks(cfgs []WebhookConfig) ([]*hook, error) {
	if err := ValidateWebhooks(cfgs); err != nil {
		return nil, err
	}
	hooks := make([]*hook, 0, len(cfgs))
	for _, c := range cfgs {
		ps, _ := ParsePatterns(c.Actions)
		hooks = append(hooks, &hook{id: c.ID(), url: c.URL, secret: append([]byte(nil), c.Secret...), patterns: ps})
	}
	return hooks, nil
}

// RedactURL returns a webhook URL fit for logs, error messages and the
// admin API: scheme, host and path, with whatever may carry a credential
// replaced by xxxxx: the userinfo (user name and password), the query and
// the fragment. A URL that does not parse is not shown at all.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return redacted(u)
}

func redacted(u *url.URL) string {
	r := *u
	if r.User != nil {
		r.User = url.User("xxxxx")
	}
	if r.RawQuery != "" || r.ForceQuery {
		r.RawQuery, r.ForceQuery = "xxxxx", false
	}
	if r.Fragment != "" {
		r.Fragment, r.RawFragment = "xxxxx", ""
	}
	return r.String()
}
