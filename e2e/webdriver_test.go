package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chrome is a headless Chromium driven through ChromeDriver's WebDriver
// protocol (W3C, JSON over HTTP on loopback): a real browser, with its
// own Origin, Sec-Fetch-* and cookie rules, which hand-made requests only
// imitate.
type chrome struct {
	t       *testing.T
	base    string // ChromeDriver's URL
	session string
	client  *http.Client
	log     string // ChromeDriver's log file
}

// elementKey is the W3C name of an element reference.
const elementKey = "element-6066-11e4-a52e-4f735466cecf"

// startChrome starts ChromeDriver and a browser session, both ended when
// the test ends; args are more Chromium flags. Debian's chromium and chromium-driver packages provide
// them (.ci/run installs them); without them the test fails, saying so.
func startChrome(t *testing.T, args ...string) *chrome {
	t.Helper()
	driver, err := exec.LookPath("chromedriver")
	if err != nil {
		t.Fatal("this test drives a real Chromium through ChromeDriver, which is not installed: apt-get install chromium chromium-driver (.ci/run does)")
	}
	dir := t.TempDir()
	port := freePort(t)
	c := &chrome{t: t, base: "http://127.0.0.1:" + strconv.Itoa(port), client: &http.Client{Timeout: 60 * time.Second}, log: filepath.Join(dir, "chromedriver.log")}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, driver, "--port="+strconv.Itoa(port), "--allowed-ips=127.0.0.1", "--log-path="+c.log)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting chromedriver: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var status struct {
			Ready bool `json:"ready"`
		}
		if err := c.call(http.MethodGet, "/status", nil, &status); err == nil && status.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver did not become ready within 20s\n%s", c.logs())
		}
	}
	opts := map[string]any{"args": append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
		"--no-proxy-server", "--user-data-dir=" + filepath.Join(dir, "profile"),
	}, args...)}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		opts["binary"] = "/usr/bin/chromium"
	}
	var created struct {
		SessionID string `json:"sessionId"`
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{"browserName": "chrome", "goog:chromeOptions": opts}}}
	if err := c.call(http.MethodPost, "/session", caps, &created); err != nil {
		t.Fatalf("starting a Chromium session: %v\n%s", err, c.logs())
	}
	c.session = "/session/" + created.SessionID
	t.Cleanup(func() { _ = c.call(http.MethodDelete, c.session, nil, nil) })
	return c
}

// call sends one WebDriver command and decodes its value into out.
func (c *chrome) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var res struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return fmt.Errorf("%s %s: status %d, %v", method, path, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, res.Value)
	}
	if out != nil {
		return json.Unmarshal(res.Value, out)
	}
	return nil
}

func (c *chrome) must(method, path string, in, out any) {
	c.t.Helper()
	if err := c.call(method, c.session+path, in, out); err != nil {
		c.t.Fatalf("webdriver: %v\n--- page at %s:\n%s", err, c.url(), c.source())
	}
}

func (c *chrome) logs() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return "--- chromedriver log (end):\n" + string(b)
}

// open loads url and waits for it.
func (c *chrome) open(url string) {
	c.t.Helper()
	c.must(http.MethodPost, "/url", map[string]string{"url": url}, nil)
}

// refresh reloads the page, as the browser's reload button does (a
// page that answered a form sends the form again).
func (c *chrome) refresh() {
	c.t.Helper()
	c.must(http.MethodPost, "/refresh", map[string]any{}, nil)
}

// doubleClick clicks the element css selects twice, gap apart, as a
// hurried user does: the second click comes while the first one's page
// is on its way.
func (c *chrome) doubleClick(css string, gap time.Duration) {
	c.t.Helper()
	el := c.find(css)
	c.must(http.MethodPost, "/actions", map[string]any{"actions": []any{map[string]any{
		"type": "pointer", "id": "mouse", "parameters": map[string]string{"pointerType": "mouse"},
		"actions": []any{
			map[string]any{"type": "pointerMove", "origin": map[string]string{elementKey: el}, "x": 0, "y": 0},
			map[string]any{"type": "pointerDown", "button": 0},
			map[string]any{"type": "pointerUp", "button": 0},
			map[string]any{"type": "pause", "duration": gap.Milliseconds()},
			map[string]any{"type": "pointerDown", "button": 0},
			map[string]any{"type": "pointerUp", "button": 0},
		},
	}}}, nil)
}

// run runs script in the page and returns what it returns.
func (c *chrome) run(script string) any {
	c.t.Helper()
	var out any
	c.must(http.MethodPost, "/execute/sync", map[string]any{"script": script, "args": []any{}}, &out)
	return out
}

// back goes back in the history, as the browser's back button does.
func (c *chrome) back() {
	c.t.Helper()
	c.must(http.MethodPost, "/back", map[string]any{}, nil)
}

// url is the page's address now.
func (c *chrome) url() string {
	var u string
	_ = c.call(http.MethodGet, c.session+"/url", nil, &u)
	return u
}

// source is the page's HTML now.
func (c *chrome) source() string {
	var s string
	_ = c.call(http.MethodGet, c.session+"/source", nil, &s)
	return s
}

// find returns the element css selects, waiting up to 10 s for it.
func (c *chrome) find(css string) string {
	c.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var el map[string]string
		err := c.call(http.MethodPost, c.session+"/element", map[string]string{"using": "css selector", "value": css}, &el)
		if err == nil && el[elementKey] != "" {
			return el[elementKey]
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no element %q on %s within 10s (%v)\n--- page:\n%s", css, c.url(), err, c.source())
		}
	}
}

// fill types text into the field css selects.
func (c *chrome) fill(css, text string) {
	c.t.Helper()
	c.must(http.MethodPost, "/element/"+c.find(css)+"/value", map[string]string{"text": text}, nil)
}

// click clicks the element css selects (a submit button: the browser
// sends the form).
func (c *chrome) click(css string) {
	c.t.Helper()
	c.must(http.MethodPost, "/element/"+c.find(css)+"/click", map[string]any{}, nil)
}

// text is the visible text of the element css selects.
func (c *chrome) text(css string) string {
	c.t.Helper()
	var s string
	c.must(http.MethodGet, "/element/"+c.find(css)+"/text", nil, &s)
	return s
}

// waitText waits up to 15 s for the element css selects to show want.
func (c *chrome) waitText(css, want string) {
	c.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := c.text(css)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s shows %q, not %q, after 15s\n--- page:\n%s", css, got, want, c.source())
		}
	}
}

// waitURL waits up to 10 s for the page's address to satisfy ok.
func (c *chrome) waitURL(what string, ok func(string) bool) {
	c.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		u := c.url()
		if ok(u) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the browser is at %s, not %s, after 10s\n--- page:\n%s", u, what, c.source())
		}
	}
}

// waitAt waits for the page's address to be exactly url.
func (c *chrome) waitAt(url string) {
	c.t.Helper()
	c.waitURL(url, func(u string) bool { return u == url })
}

// waitPrefix waits for the page's address to start with prefix.
func (c *chrome) waitPrefix(prefix string) {
	c.t.Helper()
	c.waitURL(prefix+"…", func(u string) bool { return strings.HasPrefix(u, prefix) })
}

// signIn opens page, which must send the browser to the portal's sign-in
// form, and sends the form with email and password.
func (c *chrome) signIn(page, email, password string) {
	c.t.Helper()
	c.open(page)
	u, _ := url.Parse(page)
	c.waitPrefix(u.Scheme + "://" + u.Host + "/.sigra/login")
	c.fill(`[data-sigra=login-form] input[name=email]`, email)
	c.fill(`[data-sigra=login-form] input[name=password]`, password)
	c.click(`[data-sigra=login-form] button[type=submit]`)
}
