package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/freeport"
)

// Caddy binds a new socket for each config it loads (SO_REUSEPORT) and
// closes the old one, which resets a connection that reached the old
// one's queue meanwhile: a test's request right after a reload dials
// again rather than fail on Caddy's reload mechanics.
func init() {
	t := http.DefaultTransport.(*http.Transport)
	dial := t.DialContext
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		for try := 0; ; try++ {
			c, err := dial(ctx, network, addr)
			if err == nil || try == 10 || !errors.Is(err, syscall.ECONNRESET) {
				return c, err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// testPassword is the password of users made by env.addUser.
const testPassword = "correct horse battery staple"

// upstream records what the application behind the gate receives.
type upstream struct {
	*httptest.Server
	mu      sync.Mutex
	hdr     http.Header
	trailer http.Header
	body    int64 // the last request's body, in bytes
	hits    int
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body) // trailers arrive after the body
		u.mu.Lock()
		u.body = n
		u.hdr = r.Header.Clone()
		u.trailer = r.Trailer.Clone()
		u.hits++
		u.mu.Unlock()
		if cc := r.URL.Query().Get("cc"); cc != "" { // an app's own caching
			w.Header().Set("Cache-Control", cc)
		}
		for _, sc := range r.URL.Query()["sc"] { // an app's own cookies
			w.Header().Add("Set-Cookie", sc)
		}
		for _, h := range r.URL.Query()["h"] { // any header of an app's: "Name: value"
			if k, v, ok := strings.Cut(h, ":"); ok {
				w.Header().Add(k, strings.TrimSpace(v))
			}
		}
		io.WriteString(w, "app:"+r.URL.Path)
	}))
	t.Cleanup(u.Close)
	return u
}

// last returns the headers of the last request the app saw and how many
// it has seen.
func (u *upstream) last() (http.Header, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hdr, u.hits
}

// env is an in-process Caddy running a Caddyfile with the sigra modules
// in front of an upstream.
type env struct {
	t      *testing.T
	dir    string
	base   string // http://127.0.0.1:<port>
	admin  string // Caddy's admin endpoint, 127.0.0.1:<port>, of the last config
	config string // the Caddyfile last loaded
	up     *upstream
	client *http.Client // cookie jar, redirects not followed
}

// freePort returns a loopback port that was free a moment ago and that no
// other test, of this process or of another test package running beside
// it, was given (see freeport.Take for why that matters to Caddy).
func freePort(t *testing.T) int {
	t.Helper()
	ports, err := freeport.Take(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// caddyfile renders a test config: global sigra options, then the site
// body (directives) in front of the upstream.
func (e *env) caddyfile(globalSigra, site string) string {
	e.admin = fmt.Sprintf("127.0.0.1:%d", freePort(e.t))
	return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
	persist_config off
	storage file_system %s
	sigra {
		storage bbolt %s
		bootstrap_admin off
		%s
	}
}
%s {
	sigra_portal
	%s
	reverse_proxy %s
}
`, e.admin, filepath.Join(e.dir, "caddy"), filepath.Join(e.dir, "sigra.db"), globalSigra, e.base, site, e.up.Listener.Addr())
}

// startCaddy runs Caddy in-process. Tests using it must not run in
// parallel: Caddy's running config is process-wide.
func startCaddy(t *testing.T, globalSigra, site string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), up: newUpstream(t)}
	e.base = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	jar, _ := cookiejar.New(nil)
	e.client = &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	if err := e.load(e.caddyfile(globalSigra, site)); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return e
}

// load adapts and loads a Caddyfile.
func (e *env) load(cf string) error {
	e.config = cf
	// On disk, as caddy run reads it: the adapter reads a matcher that
	// Caddy took out of the tokens back from the file.
	file := filepath.Join(e.dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(cf), 0o600); err != nil {
		return err
	}
	cfg, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": file})
	if err != nil {
		return err
	}
	_ = warn
	if err := caddy.Load(cfg, true); err != nil {
		return err
	}
	// The replaced servers close their idle connections as they shut
	// down: a request sent on one of those meanwhile reads EOF. A browser
	// would retry; the tests dial afresh instead.
	if e.client != nil {
		e.client.CloseIdleConnections()
	}
	lastLoad.Store(time.Now().UnixNano())
	return nil
}

// lastLoad is when a test last loaded a config in this process: for a
// moment after, a new connection may still be accepted by a replaced
// server, which then closes it (EOF, with nothing answered).
var lastLoad atomic.Int64

// closedByReload reports whether err, for a request with no body, is a
// connection closed unanswered just after a load: worth one more try, as
// a browser makes. (http.ReadResponse reads such an end as an unexpected
// EOF.)
func closedByReload(req *http.Request, err error) bool {
	return req.Body == nil && time.Since(time.Unix(0, lastLoad.Load())) < 2*time.Second &&
		(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET))
}

// rt returns the running sigra runtime.
func (e *env) rt() *runtime {
	e.t.Helper()
	a := running.Load()
	if a == nil {
		e.t.Fatal("sigra app is not running")
	}
	return a.life.rt.Load()
}

// addUser creates a user with testPassword.
func (e *env) addUser(email string, groups ...string) *authcore.User {
	e.t.Helper()
	u, err := e.rt().auth.CreateUser(context.Background(), authcore.NewUser{Email: email, Name: "Test " + email, Groups: groups, Password: testPassword})
	if err != nil {
		e.t.Fatalf("adding user: %v", err)
	}
	return u
}

func (e *env) do(method, path string, hdr map[string]string, body io.Reader) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil && closedByReload(req, err) {
		resp, err = e.client.Do(req)
	}
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// get does a GET and returns the response with its body read.
func (e *env) get(path string, hdr map[string]string) (*http.Response, string) {
	e.t.Helper()
	resp := e.do(http.MethodGet, path, hdr, nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// postForm posts a form with the browser's same-origin headers.
func (e *env) postForm(path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	e.t.Helper()
	// What a browser sends with a portal page's form: the pages are
	// served with Referrer-Policy no-referrer, under which the Origin
	// of a form is null (Fetch); Sec-Fetch-Site says where it was.
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "null", "Sec-Fetch-Site": "same-origin"}
	for k, v := range hdr {
		h[k] = v
		if v == "" {
			delete(h, k) // not sent
		}
	}
	resp := e.do(http.MethodPost, path, h, strings.NewReader(form.Encode()))
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// csrfFrom extracts the hidden CSRF field of a page.
func csrfFrom(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf_token field in page:\n%s", page)
	}
	return m[1]
}

// login signs in through the login form and returns the response to the
// form post.
func (e *env) login(email, password, rd string) *http.Response {
	e.t.Helper()
	_, page := e.get("/.sigra/login", map[string]string{"Accept": "text/html"})
	resp, _ := e.postForm("/.sigra/login", url.Values{
		"email": {email}, "password": {password}, "csrf_token": {csrfFrom(e.t, page)}, "rd": {rd},
	}, nil)
	return resp
}

// mustLogin signs in and fails the test unless it worked.
func (e *env) mustLogin(email string) {
	e.t.Helper()
	resp := e.login(email, testPassword, "/")
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("login %s: status %d; want 303", email, resp.StatusCode)
	}
}

// sessionCookie returns the session cookie value in the jar.
func (e *env) sessionCookie() string {
	u, _ := url.Parse(e.base)
	for _, c := range e.client.Jar.Cookies(u) {
		if c.Name == "sigra_session" {
			return c.Value
		}
	}
	return ""
}

func newJar() (http.CookieJar, error) { return cookiejar.New(nil) }

func zapSlogNop() *slog.Logger { return slog.New(slog.DiscardHandler) }
