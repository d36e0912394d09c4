package caddymodule

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/sockettest"
)

// socketSite is a site body with the socket app at app under /ws, and
// under /ws/gated behind a second gate with the options wsGate; the
// site's own gate (no requirement) covers both.
func socketSite(app, wsGate string) string {
	return fmt.Sprintf("sigra_gate\nhandle /ws/gated* {\n\tsigra_gate %s\n\treverse_proxy %s\n}\nhandle /ws* {\n\treverse_proxy %s\n}", wsGate, app, app)
}

// startSockets runs Caddy with socketSite beside the usual upstream.
func startSockets(t *testing.T, globalSigra, wsGate string) *env {
	t.Helper()
	return startCaddy(t, globalSigra, socketSite(sockettest.Start(t), wsGate))
}

// wsConn is a client's upgraded connection.
type wsConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// openSocket upgrades a connection to path as the holder of token, and
// fails the test unless the app takes it.
func (e *env) openSocket(path, token string) *wsConn {
	e.t.Helper()
	s, status := e.trySocket(path, token)
	if status != http.StatusSwitchingProtocols {
		e.t.Fatalf("upgrade of %s: status %d; want 101", path, status)
	}
	s.echo("hello")
	return s
}

// trySocket asks for an upgrade, returning the connection and the status.
// A connection closed unanswered just after a config load (closedByReload)
// is tried once more.
func (e *env) trySocket(path, token string) (*wsConn, int) {
	e.t.Helper()
	u, _ := url.Parse(e.base)
	for try := 0; ; try++ {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: sigra_session=%s\r\n\r\n", path, u.Host, token)
		s := &wsConn{t: e.t, c: c, r: bufio.NewReader(c)}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(s.r, nil)
		if err != nil && try == 0 && closedByReload(&http.Request{}, err) {
			continue
		}
		if err != nil {
			e.t.Fatalf("upgrade of %s: %v", path, err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			resp.Body.Close()
		}
		return s, resp.StatusCode
	}
}

// echo sends msg and fails the test unless the app echoes it.
func (s *wsConn) echo(msg string) {
	s.t.Helper()
	s.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(s.c, msg); err != nil {
		s.t.Fatalf("sending on the socket: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s.r, got); err != nil || string(got) != msg {
		s.t.Fatalf("echo of %q: %q, %v", msg, got, err)
	}
}

// closed reports whether the connection is closed within d, with nothing
// more read.
func (s *wsConn) closed(d time.Duration) bool {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(d))
	n, err := s.r.Read(make([]byte, 1))
	if n > 0 {
		s.t.Fatal("read something the client never sent")
	}
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// open fails the test if the connection closes for a while (a few
// rechecks with the test's short socketRecheck).
func (s *wsConn) open(what string) {
	s.t.Helper()
	if s.closed(300 * time.Millisecond) {
		s.t.Fatalf("%s: the socket closed; want it open", what)
	}
}

func (s *wsConn) mustClose(what string) {
	s.t.Helper()
	if !s.closed(5 * time.Second) {
		s.t.Fatalf("%s: the socket is still open 5s on; want it closed", what)
	}
}

// keptSocketSite is a site body with the socket app at app under /ws,
// its sockets kept open across a reload (stream_close_delay).
func keptSocketSite(app string) string {
	return fmt.Sprintf("sigra_gate\nhandle /ws* {\n\treverse_proxy %s {\n\t\tstream_close_delay 1m\n\t}\n}", app)
}

// signOut signs out through the portal's form.
func (e *env) signOut() {
	e.t.Helper()
	_, page := e.get("/.sigra/logout", nil)
	if r, _ := e.postForm("/.sigra/logout", url.Values{"csrf_token": {csrfFrom(e.t, page)}}, nil); r.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("sign-out: status %d", r.StatusCode)
	}
}

func fastRecheck(t *testing.T) {
	old := socketRecheck.Swap(int64(20 * time.Millisecond))
	t.Cleanup(func() { socketRecheck.Store(old) })
}

// A socket lasts while its session does: signing out, being signed out
// everywhere by an admin, or being disabled closes it, at once (the
// test's rechecks are off: only being told of the change can close it),
// and nobody else's.
func TestSocketClosesWhenItsSessionEnds(t *testing.T) {
	e := startSockets(t, "", "")
	ann := e.addUser("ann@example.com")
	e.addUser("bob@example.com")
	e.mustLogin("ann@example.com")
	annOne := e.sessionCookie()
	two := e.browser()
	two.mustLogin("ann@example.com")
	annTwo := two.sessionCookie()
	bob := e.browser()
	bob.mustLogin("bob@example.com")

	base := processCounts.streamsOpen.Load()
	ended := processMetrics().streamsClosed.WithLabelValues("session_ended")
	closed := counterValue(t, ended)
	s1, s2, sb := e.openSocket("/ws", annOne), e.openSocket("/ws", annTwo), e.openSocket("/ws/b", bob.sessionCookie())
	second := e.openSocket("/ws", annOne) // two sockets of one session
	streamsOpen(t, base+4)

	e.signOut()
	s1.mustClose("ann signed out")
	second.mustClose("ann signed out, her second socket of that session")
	streamsOpen(t, base+2)
	if got := counterValue(t, ended) - closed; got != 2 {
		t.Errorf("sigra_streams_closed_total{reason=session_ended} went up by %v; want 2", got)
	}
	s2.echo("ann's other session")
	sb.echo("bob")
	if _, status := e.trySocket("/ws", annOne); status != http.StatusUnauthorized {
		t.Errorf("a new socket with the ended session: status %d; want 401", status)
	}

	if _, err := e.rt().auth.SetDisabled(context.Background(), ann.ID, true); err != nil {
		t.Fatal(err)
	}
	s2.mustClose("ann disabled")
	sb.echo("bob, after ann was disabled")
}

// streamsOpen fails the test unless sigra_streams_open comes to want
// within 2 s (a watch starts and ends beside the request).
func streamsOpen(t *testing.T, want int64) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); processCounts.streamsOpen.Load() != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sigra_streams_open %d; want %d", processCounts.streamsOpen.Load(), want)
		}
	}
}

// Rechecks alone (nobody told of a change) close nothing that would
// pass: a socket of a live session stays open across many.
func TestSocketOfALiveSessionStaysOpen(t *testing.T) {
	fastRecheck(t)
	e := startSockets(t, "", "")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	s := e.openSocket("/ws", e.sessionCookie())
	for range 5 {
		s.open("a live session")
		s.echo("still there")
	}
}

// A socket lasts while the gates that let it through would: losing the
// group one requires closes it; a socket whose gate asks for no group
// stays.
func TestSocketClosesWhenItsGateWouldRefuse(t *testing.T) {
	e := startSockets(t, "", "{\n\t\tgroup staff\n\t}")
	u := e.addUser("ann@example.com", "staff", "dev")
	e.mustLogin("ann@example.com")
	tok := e.sessionCookie()
	staff, free := e.openSocket("/ws/gated", tok), e.openSocket("/ws", tok)

	group := processMetrics().streamsClosed.WithLabelValues("group")
	before := counterValue(t, group)
	if _, err := e.rt().auth.UpdateUser(context.Background(), u.ID, func(u *authcore.User) error { u.Groups = []string{"dev"}; return nil }); err != nil {
		t.Fatal(err)
	}
	staff.mustClose("ann left staff")
	if got := counterValue(t, group) - before; got != 1 {
		t.Errorf("sigra_streams_closed_total{reason=group} went up by %v; want 1", got)
	}
	free.echo("the socket of a gate with no group")
	free.open("the socket of a gate with no group, after the change")
	if _, status := e.trySocket("/ws/gated", tok); status != http.StatusForbidden {
		t.Errorf("a new socket where staff is required: status %d; want 403", status)
	}
}

// signedInSocket runs Caddy with globalSigra and fast rechecks on a
// fake clock, signs ann in and opens a socket of her session at /ws.
func signedInSocket(t *testing.T, globalSigra string) (*clock.Fake, *env, *wsConn) {
	t.Helper()
	fastRecheck(t)
	fake := useFakeClock(t)
	e := startSockets(t, globalSigra, "")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	return fake, e, e.openSocket("/ws", e.sessionCookie())
}

// The client's traffic on a socket is a use of its session, as a
// request is: a socket in use keeps it from idling out; one idle for the
// session's idle time closes, as its session ends then.
func TestSocketTrafficKeepsItsSessionAlive(t *testing.T) {
	fake, e, s := signedInSocket(t, "session {\n\t\t\tidle 30m\n\t\t}")
	tok := e.sessionCookie()
	fake.Advance(20 * time.Minute)
	s.echo("in use at 20m")
	s.open("after use at 20m")
	fake.Advance(20 * time.Minute) // 40m after sign-in, 20m idle
	s.open("20m after the last use")
	if e.statusAs(tok, "/x") != http.StatusOK {
		t.Fatal("the session idled out though its socket was in use")
	}
	// That request was a use at 40m too; now nothing for 30m.
	fake.Advance(30 * time.Minute)
	s.mustClose("30m unused")
	if got := e.statusAs(tok, "/x"); got != http.StatusUnauthorized {
		t.Errorf("the session after 30m unused: status %d; want 401", got)
	}
}

// Traffic counts as a use when it comes, as a request does, not at the
// next recheck: a socket busy again just before its session's idle end
// keeps the session (no recheck runs here: they are a minute apart).
func TestSocketTrafficCountsWhenItComes(t *testing.T) {
	fake := useFakeClock(t)
	e := startSockets(t, "session {\n\t\t\tidle 30m\n\t\t}", "")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	tok := e.sessionCookie()
	s := e.openSocket("/ws", tok)
	fake.Advance(29*time.Minute + 30*time.Second)
	s.echo("busy again at 29m30s")
	fake.Advance(time.Minute)
	s.echo("busy at 30m30s")
	if got := e.statusAs(tok, "/x"); got != http.StatusOK {
		t.Errorf("a request at 30m30s, the socket busy since 29m30s: status %d; want 200", got)
	}
}

// A socket's session ends at its lifetime, in use or not.
func TestSocketEndsWithItsSessionsLifetime(t *testing.T) {
	fake, _, s := signedInSocket(t, "session {\n\t\t\tlifetime 1h\n\t\t}")
	for range 3 {
		fake.Advance(19 * time.Minute)
		s.echo("in use")
		s.open("within the lifetime")
	}
	fake.Advance(4 * time.Minute)
	s.mustClose("past the session's lifetime")
}

// A socket the mfa gate let through closes when the second factor is
// older than its max_age.
func TestSocketEndsAsItsSecondFactorAges(t *testing.T) {
	fastRecheck(t)
	fake, e, _, _, _ := startEnrolled(t, "", "tia@example.com")
	if err := e.load(strings.Replace(e.config, "sigra_gate\n", socketSite(sockettest.Start(t), "{\n\t\tmfa max_age 10m\n\t}")+"\n", 1)); err != nil {
		t.Fatal(err)
	}
	s := e.openSocket("/ws/gated", e.sessionCookie())
	fake.Advance(9 * time.Minute)
	s.echo("within max_age")
	s.open("9m after the second factor")
	fake.Advance(2 * time.Minute)
	s.mustClose("11m after the second factor")
}

// A request that asks for an upgrade the app does not make is answered
// as any other: the gate's wrapping passes the plain answer on.
func TestSocketRefusedUpgradeIsAPlainRequest(t *testing.T) {
	e := startSockets(t, "", "")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	req, _ := http.NewRequest(http.MethodGet, e.base+"/plain", nil)
	req.Header.Set("Upgrade", "nonsense")
	req.Header.Set("Connection", "Upgrade")
	req.AddCookie(&http.Cookie{Name: "sigra_session", Value: e.sessionCookie()})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "app:/plain" {
		t.Errorf("a plain answer to a request asking for an upgrade: %d %q", resp.StatusCode, body)
	}
}

// A socket that a reload leaves open (reverse_proxy's
// stream_close_delay) is watched through the new config: a sign-out
// made through it closes the socket at once.
func TestSocketLeftOpenByAReloadIsStillWatched(t *testing.T) {
	app := sockettest.Start(t)
	site := keptSocketSite(app)
	e := startCaddy(t, "", site)
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	s := e.openSocket("/ws", e.sessionCookie())
	if err := e.load(e.config + "\n# reloaded\n"); err != nil {
		t.Fatal(err)
	}
	s.echo("after the reload")
	e.signOut()
	s.mustClose("signed out through the new config")
}

// A second factor enrolled closes the sockets of the user's other
// sessions opened with a password alone: they no longer pass a gate
// until they give it.
func TestSocketClosesWhenASecondFactorIsEnrolled(t *testing.T) {
	fake := useFakeClock(t)
	e := startSockets(t, "", "")
	e.addUser("tia@example.com")
	e.mustLogin("tia@example.com")
	other := e.browser()
	other.mustLogin("tia@example.com")
	before := e.sessionCookie()
	s := e.openSocket("/ws", other.sessionCookie())
	own := e.openSocket("/ws", before)
	enrolTOTP(t, e, fake.Now())
	s.mustClose("a second factor enrolled in another session")
	// The enrolling session goes on, renewed under a new id (it has
	// the second factor now): the old id's socket closes, as the
	// X-Sigra-Session it carried ended.
	if after := e.sessionCookie(); after == before || e.statusAs(after, "/x") != http.StatusOK {
		t.Fatalf("the enrolling session after enrolment: renewed %v, status %d; want renewed, 200", after != before, e.statusAs(after, "/x"))
	}
	own.mustClose("the enrolling session renewed")
	e.openSocket("/ws", e.sessionCookie()).open("a socket of the renewed session")
}

// An event stream (EventSource) lasts while its session does, as a
// socket: signing out ends it at once, and nobody else's.
func TestEventStreamEndsWithItsSession(t *testing.T) {
	e := startSockets(t, "", "")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	other := e.browser()
	other.mustLogin("ann@example.com")
	tok := e.sessionCookie()
	mine, theirs := sockettest.Events(t, e.base+"/ws/events", tok), sockettest.Events(t, e.base+"/ws/events", other.sessionCookie())
	e.signOut()
	mine.MustEnd("signed out")
	if got := e.hostRequest(tok, "", "/ws/events", map[string]string{"Accept": "text/event-stream"}).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("EventSource trying again with the ended session: status %d; want 401", got)
	}
	theirs.Event("another session's stream after the sign-out")
}

// A socket that a reload leaves open, to a config with no sigra app,
// closes: nothing can tell whether its session goes on.
func TestSocketLeftWithoutSigraByAReloadCloses(t *testing.T) {
	app := sockettest.Start(t)
	e := startCaddy(t, "", keptSocketSite(app))
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	s := e.openSocket("/ws", e.sessionCookie())
	c := processMetrics().streamsClosed.WithLabelValues("not_started")
	before := counterValue(t, c)
	plain := fmt.Sprintf("{\n\tadmin %s\n\tdefault_bind 127.0.0.1\n\tpersist_config off\n\tstorage file_system %s\n}\n%s {\n\treverse_proxy %s\n}\n",
		e.admin, filepath.Join(e.dir, "caddy"), e.base, app)
	if err := e.load(plain); err != nil {
		t.Fatal(err)
	}
	s.mustClose("a reload to a config without sigra")
	if got := counterValue(t, c) - before; got != 1 {
		t.Errorf("sigra_streams_closed_total{reason=not_started} went up by %v; want 1", got)
	}
}

// At a reload the old config's runtime and the new one's run side by
// side for a moment. A sign-out served by the old one then, for a socket
// already watched through the new one, closes it at once, and the new
// one refuses the session at once: the runtimes of one store are peers,
// and drop each other's copies.
func TestSocketOfASessionEndedByTheOldConfigDuringAReload(t *testing.T) {
	app := sockettest.Start(t)
	e := startCaddy(t, "", keptSocketSite(app))
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	tok := e.sessionCookie()
	id, _ := authcore.TokenID(tok)
	s := e.openSocket("/ws", tok)
	// Its config replaced once: it follows whichever runtime runs now.
	if err := e.load(e.config + "\n# reloaded\n"); err != nil {
		t.Fatal(err)
	}
	s.echo("after the first reload")
	fastRecheck(t)
	var ended atomic.Bool
	stopping = func(a *App) {
		old, cur := a.life.rt.Load(), running.Load().life.rt.Load()
		if old == nil || cur == nil || old == cur || ended.Load() {
			return
		}
		time.Sleep(200 * time.Millisecond) // the socket now watches through cur
		socketRecheck.Store(int64(time.Hour))
		time.Sleep(100 * time.Millisecond) // and no recheck comes soon
		if _, err := cur.auth.AuthenticateAt(context.Background(), tok, cur.auth.Now()); err != nil {
			t.Errorf("the new runtime: %v", err) // and caches the session
		}
		if ok, err := old.auth.EndSession(context.Background(), id); !ok || err != nil {
			t.Errorf("ending the session through the old runtime: %v, %v", ok, err)
		}
		ended.Store(true)
	}
	t.Cleanup(func() { stopping = nil })
	if err := e.load(e.config + "\n# reloaded again\n"); err != nil {
		t.Fatal(err)
	}
	if !ended.Load() {
		t.Fatal("the reload ran no overlap")
	}
	s.mustClose("the session ended through the old config during the reload")
	if got := e.statusAs(tok, "/x"); got != http.StatusUnauthorized {
		t.Errorf("a request with that session on the new config: status %d; want 401", got)
	}
}

// A sign-out in flight over a reload, its body sent after the old
// config's sigra app stopped (Caddy does not wait for the old requests),
// ends the session through the old runtime: the new one, which had it
// cached, refuses it at once.
func TestSignOutInFlightOverAReload(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	tok := e.sessionCookie()
	_, page := e.get("/.sigra/logout", nil)
	body := url.Values{"csrf_token": {csrfFrom(t, page)}}.Encode()
	host := strings.TrimPrefix(e.base, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /.sigra/logout HTTP/1.1\r\nHost: %s\r\nOrigin: %s\r\nCookie: sigra_session=%s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n",
		host, e.base, tok, len(body))
	time.Sleep(300 * time.Millisecond) // the portal waits for the body
	if err := e.load(e.config + "\n# reloaded\n"); err != nil {
		t.Fatal(err)
	}
	if got := e.statusAs(tok, "/x"); got != http.StatusOK {
		t.Fatalf("the new config before the sign-out: status %d; want 200", got)
	}
	io.WriteString(c, body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the sign-out: status %d; want 303", resp.StatusCode)
	}
	if got := e.statusAs(tok, "/x"); got != http.StatusUnauthorized {
		t.Errorf("after the sign-out in flight: status %d on the new config; want 401", got)
	}
}
