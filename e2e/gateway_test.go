package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// upstream is the application behind the gateway: it records the headers
// of every request it receives.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Clone(r.Context()))
		u.mu.Unlock()
		io.WriteString(w, "app:"+r.URL.Path)
	}))
	t.Cleanup(u.Close)
	return u
}

// last returns the last request the app saw (nil if none) and the count.
func (u *upstream) last() (*http.Request, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return nil, 0
	}
	return u.reqs[len(u.reqs)-1], len(u.reqs)
}

// gatewayOptions shape the Caddyfile of a gateway.
type gatewayOptions struct {
	// bootstrap is the bootstrap_admin value; "" means off.
	bootstrap string
	// adminOff turns Caddy's admin endpoint off.
	adminOff bool
	// dbPath overrides <dir>/sigra.db.
	dbPath string
	// backend overrides the upstream address (host:port).
	backend string
	// global is added to the Caddyfile's global options.
	global string
	// anyHost serves the site on its port for every host name, not only
	// 127.0.0.1 (base still names 127.0.0.1).
	anyHost bool
	// env is added to Caddy's environment (KEY=value).
	env []string
}

// gateway is a Caddyfile for one Sigra site in front of an upstream, and
// the process running it.
type gateway struct {
	t         *testing.T
	home      *home
	up        *upstream
	caddyfile string
	db        string
	adminAddr string // host:port, "" with admin off
	base      string // http://127.0.0.1:<port>
	proc      *proc
}

// newGateway writes the Caddyfile (it does not start Caddy).
func newGateway(t *testing.T, opts gatewayOptions) *gateway {
	t.Helper()
	g := &gateway{t: t, home: newHome(t)}
	g.home.extra = opts.env
	g.db = opts.dbPath
	if g.db == "" {
		g.db = filepath.Join(g.home.dir, "sigra.db")
	}
	backend := opts.backend
	if backend == "" {
		g.up = newUpstream(t)
		backend = g.up.Listener.Addr().String()
	}
	admin := "admin off"
	if !opts.adminOff {
		g.adminAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		admin = "admin " + g.adminAddr
	}
	bootstrap := opts.bootstrap
	if bootstrap == "" {
		bootstrap = "off"
	}
	port := freePort(t)
	g.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	site := g.base
	if opts.anyHost {
		site = fmt.Sprintf("http://:%d", port)
	}
	cf := fmt.Sprintf(`{
	%s
	%s
	default_bind 127.0.0.1
	persist_config off
	sigra {
		storage bbolt %s
		bootstrap_admin %s
	}
}

%s {
	sigra_portal

	sigra_gate

	sigra_gate /admin/* {
		group admins
	}

	sigra_gate /public/* {
		optional
	}

	reverse_proxy %s
}
`, admin, opts.global, g.db, bootstrap, site, backend)
	g.caddyfile = filepath.Join(g.home.dir, "Caddyfile")
	if err := os.WriteFile(g.caddyfile, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

// start runs Caddy on the Caddyfile and waits until /.sigra/healthz
// answers.
func (g *gateway) start() *proc {
	g.t.Helper()
	g.proc = startProc(g.t, g.home, g.caddyfile)
	waitHealthy(g.t, g.proc, g.base+"/.sigra/healthz")
	return g.proc
}

// logs is the running process's output, for failure messages.
func (g *gateway) logs() string {
	if g.proc == nil {
		return "(caddy not started)"
	}
	return g.proc.logs()
}

// cli runs `caddy sigra users <args…> --config <Caddyfile>`.
func (g *gateway) cli(stdin string, args ...string) result {
	g.t.Helper()
	return runCaddy(g.t, g.home, stdin, append(append([]string{"sigra", "users"}, args...), "--config", g.caddyfile)...)
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, talking to one gateway.
type browser struct {
	t      *testing.T
	g      *gateway
	client *http.Client
}

func (g *gateway) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: g.t, g: g, client: &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// do sends a request and returns the response with its body read.
func (b *browser) do(method, path string, hdr http.Header, body io.Reader) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.g.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v // as given: non-canonical names stay so on the wire
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v\n%s", method, path, err, b.g.logs())
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func (b *browser) get(path string, hdr http.Header) (*http.Response, string) {
	b.t.Helper()
	return b.do(http.MethodGet, path, hdr, nil)
}

var csrfRe = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// login signs in through the portal's form like a browser: GET the form,
// take its csrf_token, POST it back from the same origin. It returns the
// response to the POST.
func (b *browser) login(email, password, rd string) (*http.Response, string) {
	b.t.Helper()
	resp, page := b.get("/.sigra/login", http.Header{"Accept": {"text/html"}})
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("GET /.sigra/login: status %d; want 200\n%s\n%s", resp.StatusCode, page, b.g.logs())
	}
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no csrf_token in the login page:\n%s", page)
	}
	form := url.Values{"email": {email}, "password": {password}, "csrf_token": {m[1]}, "rd": {rd}}
	return b.do(http.MethodPost, "/.sigra/login", http.Header{
		"Content-Type": {"application/x-www-form-urlencoded"},
		"Origin":       {b.g.base},
		"Accept":       {"text/html"},
	}, strings.NewReader(form.Encode()))
}

// mustLogin signs in and fails the test unless the portal redirects to rd
// with a session cookie.
func (b *browser) mustLogin(email, password, rd string) {
	b.t.Helper()
	resp, body := b.login(email, password, rd)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != rd {
		b.t.Fatalf("login %s: status %d, Location %q; want 303 to %q\n%s\n%s", email, resp.StatusCode,
			resp.Header.Get("Location"), rd, body, b.g.logs())
	}
	if b.session() == "" {
		b.t.Fatalf("login %s: no sigra_session cookie\n%s", email, b.g.logs())
	}
}

// session is the sigra_session cookie value in the jar.
func (b *browser) session() string {
	u, _ := url.Parse(b.g.base)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == "sigra_session" {
			return c.Value
		}
	}
	return ""
}

// jwks fetches the gateway's public keys.
func (g *gateway) jwks() jose.JSONWebKeySet {
	g.t.Helper()
	resp, err := http.Get(g.base + "/.sigra/jwks.json")
	if err != nil {
		g.t.Fatalf("GET jwks.json: %v\n%s", err, g.logs())
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || resp.StatusCode != http.StatusOK {
		g.t.Fatalf("GET jwks.json: status %d, %v", resp.StatusCode, err)
	}
	return set
}

// assertionClaims are the identity assertion's claims (DESIGN.md §4).
type assertionClaims struct {
	jwt.Claims
	Email         string   `json:"email"`
	EmailVerified bool     `json:"email_verified"`
	Name          string   `json:"name"`
	Groups        []string `json:"groups"`
	AMR           []string `json:"amr"`
	SID           string   `json:"sid"`
	AuthTime      int64    `json:"auth_time"`
}

// verifyAssertion checks token against the gateway's JWKS as any upstream
// would with go-jose, and returns its kid and claims.
func (g *gateway) verifyAssertion(token string) (string, assertionClaims) {
	g.t.Helper()
	var c assertionClaims
	if token == "" {
		g.t.Fatal("no X-Sigra-Assertion upstream")
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		g.t.Fatalf("parsing the assertion: %v\n%s", err, token)
	}
	kid := tok.Headers[0].KeyID
	set := g.jwks()
	keys := set.Key(kid)
	if len(keys) != 1 {
		g.t.Fatalf("the assertion's kid %q matches %d keys in jwks.json; want 1", kid, len(keys))
	}
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		g.t.Fatalf("assertion signature does not verify against jwks.json: %v", err)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: g.base, AnyAudience: jwt.Audience{g.base}, Time: time.Now()}, 5*time.Second); err != nil {
		g.t.Fatalf("assertion claims: %v (iss %q, aud %q)", err, c.Issuer, c.Audience)
	}
	return kid, c
}
