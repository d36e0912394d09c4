package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sigra-auth/caddy-sigra/internal/sockettest"
)

// TestBrowserForms signs in, sets up an authenticator app, makes new
// recovery codes, signs out, signs in again with one of them and
// disables a user on an admin page, in a real Chromium, through the portal's own forms. A browser sends what hand-made requests do not:
// portal pages are served with Referrer-Policy no-referrer, under which
// a form goes out with Origin: null, and every form's check must take
// that from the page it was on.
func TestBrowserForms(t *testing.T) {
	t.Parallel()
	b := startChrome(t)
	g := newGateway(t, gatewayOptions{})
	const email, password = "rita@example.com", "rita's browser password"
	if r := g.cli(password+"\n", "add", "--email", email, "--admin", "--password-stdin"); r.code != 0 {
		t.Fatalf("user add: %s", r)
	}
	r := g.cli("", "add", "--email", "sam@example.com")
	sam := regexp.MustCompile(`added sam@example\.com \(([0-9a-f-]{36})\)`).FindStringSubmatch(r.stdout)
	if r.code != 0 || sam == nil {
		t.Fatalf("user add: %s", r)
	}
	g.start()

	// An app page sends the browser to sign in, and back.
	signIn := func() { b.signIn(g.base+"/x", email, password) }
	signIn()
	b.waitAt(g.base + "/x")
	if src := b.source(); !strings.Contains(src, "app:/x") {
		t.Fatalf("after signing in, the browser shows no app page:\n%s\n%s", src, g.logs())
	}
	if req, _ := g.up.last(); req == nil || req.Header.Get("X-Sigra-Email") != email {
		t.Fatalf("the app did not see %s signed in", email)
	}

	// The account's forms: an authenticator app, with its code.
	b.open(g.base + "/.sigra/account/totp")
	secret := b.text(`[data-sigra=totp-secret]`)
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatalf("a code for the secret %q: %v", secret, err)
	}
	b.fill(`[data-sigra=totp-enrol-form] input[name=password]`, password)
	b.fill(`[data-sigra=totp-enrol-form] input[name=code]`, code)
	b.click(`[data-sigra=totp-enrol-form] button[type=submit]`)
	if codes := strings.Fields(b.text(`[data-sigra=recovery-codes]`)); len(codes) == 0 {
		t.Fatalf("no recovery codes after setting up the app:\n%s", b.source())
	}

	// New recovery codes; the page listing them reloaded sends the form
	// again, which must not make a set behind the one shown.
	b.open(g.base + "/.sigra/account/totp")
	b.fill(`[data-sigra=recovery-codes-form] input[name=password]`, password)
	b.click(`[data-sigra=recovery-codes-form] button[type=submit]`)
	codes := strings.Fields(b.text(`[data-sigra=recovery-codes]`))
	if len(codes) == 0 {
		t.Fatalf("no new recovery codes:\n%s", b.source())
	}
	b.refresh()
	if msg := b.text(`[role=alert]`); !strings.Contains(msg, "Your recovery codes changed") {
		t.Fatalf("the new codes' page reloaded says %q; want that the codes changed", msg)
	}

	// Signing out, through the sign-out page's form. The click does not
	// wait for the answer: wait for the sign-in page it leads to, or the
	// next page opened can be replaced by it (and its rd).
	b.open(g.base + "/.sigra/logout")
	b.click(`[data-sigra=logout-form] button[type=submit]`)
	b.waitPrefix(g.base + "/.sigra/login")

	// Signing in again takes the password, then the second factor: a
	// recovery code here, one of the set shown (the app's code of this
	// minute is spent).
	signIn()
	b.waitPrefix(g.base + "/.sigra/mfa")
	b.click(`summary`)
	b.fill(`#recovery_code`, codes[0])
	b.click(`form:has(#recovery_code) button[type=submit]`)
	b.waitAt(g.base + "/x")
	if req, _ := g.up.last(); req == nil || req.Header.Get("X-Sigra-Email") != email || !strings.Contains(req.Header.Get("X-Sigra-Amr"), "mfa") {
		t.Fatalf("after the recovery code, the app did not see %s signed in with a second factor", email)
	}

	// An admin page's form (the admin pages need that second factor).
	b.open(g.base + "/.sigra/admin/users/" + sam[1])
	b.click(`[data-sigra=admin-user-disable] button[type=submit]`)
	b.find(`[data-sigra=admin-user-enable]`)
	if row := listRow(g.cli("", "list").stdout, "sam@example.com"); !strings.Contains(row, "disabled") {
		t.Errorf("sam is not disabled after the admin page's form: %q", row)
	}
}

// On a plain-HTTP site whose host is not localhost (an intranet name, a
// LAN address), browsers send a form with Origin: null and without
// Sec-Fetch-Site, which they send to HTTPS and localhost only: the
// portal's forms must work there too. lan.test is mapped to 127.0.0.1
// inside Chromium only.
func TestBrowserSignInOnAPlainHTTPHost(t *testing.T) {
	t.Parallel()
	b := startChrome(t, "--host-resolver-rules=MAP lan.test 127.0.0.1")
	const email, password = "lena@example.com", "lena's browser password"
	g := gatewayWithUser(t, gatewayOptions{anyHost: true}, email, password)
	base := strings.Replace(g.base, "127.0.0.1", "lan.test", 1)
	b.signIn(base+"/x", email, password)
	b.waitAt(base + "/x")
	if req, _ := g.up.last(); req == nil || req.Header.Get("X-Sigra-Email") != email || req.Host != strings.TrimPrefix(base, "http://") {
		t.Fatalf("the app did not see %s signed in on %s", email, base)
	}
	b.open(base + "/.sigra/logout")
	b.click(`[data-sigra=logout-form] button[type=submit]`)
	b.open(base + "/x")
	b.waitPrefix(base + "/.sigra/login")
}

// After signing out, the back button does not show the app's pages
// from the browser's cache: the sign-out has the browser drop it
// (Clear-Site-Data), so going back asks the gate again, which sends
// the browser to sign in.
func TestBrowserBackAfterSignOutShowsNoAppPage(t *testing.T) {
	t.Parallel()
	b := startChrome(t)
	const email, password = "nell@example.com", "nell's browser password"
	g := gatewayWithUser(t, gatewayOptions{}, email, password)
	b.signIn(g.base+"/private", email, password)
	b.waitAt(g.base + "/private")
	if src := b.source(); !strings.Contains(src, "app:/private") {
		t.Fatalf("signed in, /private shows:\n%s", src)
	}
	b.open(g.base + "/.sigra/logout")
	b.click(`[data-sigra=logout-form] button[type=submit]`)
	b.waitPrefix(g.base + "/.sigra/login")
	_, seen := g.up.last()
	b.back() // the sign-out page
	b.back() // the app's page
	b.waitPrefix(g.base + "/.sigra/login")
	if src := b.source(); strings.Contains(src, "app:/private") {
		t.Errorf("back after signing out shows the app's page:\n%s", src)
	}
	if _, n := g.up.last(); n != seen {
		t.Errorf("the app saw %d requests after the sign-out; want none", n-seen)
	}
}

// A hurried double click sends a form once: signing in makes one
// session, not a second that nobody holds.
func TestBrowserDoubleClickSendsAFormOnce(t *testing.T) {
	t.Parallel()
	b := startChrome(t)
	const email, password = "hal@example.com", "hal's browser password"
	g := gatewayWithUser(t, gatewayOptions{}, email, password)
	b.open(g.base + "/x")
	b.waitPrefix(g.base + "/.sigra/login")
	// A form held back after a send that was stopped (Esc) goes again
	// once a field changes.
	if got := b.run(`const f = document.querySelector("[data-sigra=login-form]"); f.dataset.sent = "1";
		f.querySelector("input[name=password]").dispatchEvent(new Event("input", {bubbles: true}));
		return f.dataset.sent === undefined`); got != true {
		t.Errorf("a held-back form after a field changed: let go %v; want true", got)
	}
	b.fill(`[data-sigra=login-form] input[name=email]`, email)
	b.fill(`[data-sigra=login-form] input[name=password]`, password)
	b.doubleClick(`[data-sigra=login-form] button[type=submit]`, 20*time.Millisecond)
	b.waitAt(g.base + "/x")
	b.open(g.base + "/.sigra/account")
	b.find(`[data-sigra=session-list]`)
	if n := strings.Count(b.source(), "<td>127.0.0.1"); n != 1 {
		t.Errorf("after a double click on Sign in, the account page lists %d sessions; want 1\n%s", n, b.source())
	}
}

// An address with a letter outside ASCII before the @, and a domain
// typed in capitals or in the ASCII form browsers send for an email
// field, signs in from a real Chromium's form as the user added.
func TestBrowserSignInWithAnInternationalAddress(t *testing.T) {
	t.Parallel()
	b := startChrome(t)
	const email, password = "josé@bücher.example", "josé's browser password"
	g := gatewayWithUser(t, gatewayOptions{}, email, password)
	for _, typed := range []string{email, "JOSÉ@BÜCHER.EXAMPLE", "josé@xn--bcher-kva.example"} {
		b.signIn(g.base+"/x", typed, password)
		b.waitAt(g.base + "/x")
		if req, _ := g.up.last(); req == nil || req.Header.Get("X-Sigra-Email") != email {
			t.Fatalf("signed in as %q: the app did not see %s", typed, email)
		}
		b.open(g.base + "/.sigra/logout")
		b.click(`[data-sigra=logout-form] button[type=submit]`)
		b.waitPrefix(g.base + "/.sigra/login")
	}
}

// A real Chromium's WebSocket and EventSource, open on a signed-in page,
// end when an operator signs the user out: the socket closes (code
// 1006), and EventSource, trying again, is refused and gives up.
func TestBrowserSocketsEndWithTheSession(t *testing.T) {
	t.Parallel()
	b := startChrome(t)
	const email, password = "wes@example.com", "wes's browser password"
	g := gatewayWithUser(t, gatewayOptions{backend: sockettest.Start(t)}, email, password)
	b.signIn(g.base+"/page", email, password)
	b.waitAt(g.base + "/page")
	b.waitText("#ws", "open")
	b.waitText("#es", "open")
	if r := g.cli("", "signout", "--email", email); r.code != 0 {
		t.Fatalf("signout: %s", r)
	}
	b.waitText("#ws", "closed 1006")
	b.waitText("#es", "closed")
}

// gatewayWithUser starts a gateway (opts) with one user added through the
// CLI, for a browser to sign in as.
func gatewayWithUser(t *testing.T, opts gatewayOptions, email, password string) *gateway {
	t.Helper()
	g := newGateway(t, opts)
	if r := g.cli(password+"\n", "add", "--email", email, "--password-stdin"); r.code != 0 {
		t.Fatalf("user add: %s", r)
	}
	g.start()
	return g
}
