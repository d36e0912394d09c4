package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/sigra-auth/caddy-sigra/internal/sockettest"
)

// socket is one end of an upgraded connection: reads and writes.
type socket struct {
	t    *testing.T
	what string
	r    io.Reader
	w    io.Writer
	c    io.Closer
	dl   func(time.Time) // read deadline
}

// h1Socket upgrades an HTTP/1.1 connection to path as the holder of
// token.
func h1Socket(t *testing.T, base, path, token string) *socket {
	t.Helper()
	u, _ := url.Parse(base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: sigra_session=%s\r\n\r\n", path, u.Host, token)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("HTTP/1.1 upgrade: %v, %v; want 101", resp, err)
	}
	return &socket{t: t, what: "HTTP/1.1 socket", r: br, w: c, c: c, dl: func(d time.Time) { c.SetReadDeadline(d) }}
}

// h2Socket opens a WebSocket over HTTP/2 (RFC 8441, an extended CONNECT;
// h2c here) to path as the holder of token.
func h2Socket(t *testing.T, base, path, token string) *socket {
	t.Helper()
	// net/http's own Transport refuses the :protocol pseudo-header.
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return new(net.Dialer).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	req, err := http.NewRequest(http.MethodConnect, base+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.AddCookie(&http.Cookie{Name: "sigra_session", Value: token})
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("HTTP/2 extended CONNECT: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 extended CONNECT: status %d over HTTP/%d; want 200 over HTTP/2", resp.StatusCode, resp.ProtoMajor)
	}
	// Reads block without a deadline: a goroutine feeds a channel.
	ch := make(chan readResult, 16)
	go func() {
		for {
			b := make([]byte, 64)
			n, err := resp.Body.Read(b)
			ch <- readResult{b[:n], err}
			if err != nil {
				return
			}
		}
	}()
	cr := &chanReader{ch: ch}
	return &socket{t: t, what: "HTTP/2 socket", r: cr, w: pw, c: pw, dl: func(d time.Time) { cr.deadline = d }}
}

type readResult struct {
	b   []byte
	err error
}

// chanReader reads what a goroutine read, up to a deadline.
type chanReader struct {
	ch       chan readResult
	rest     []byte
	err      error
	deadline time.Time
}

var errTimeout = errors.New("read timed out")

func (c *chanReader) Read(p []byte) (int, error) {
	for len(c.rest) == 0 && c.err == nil {
		select {
		case r := <-c.ch:
			c.rest, c.err = r.b, r.err
		case <-time.After(time.Until(c.deadline)):
			return 0, errTimeout
		}
	}
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return 0, c.err
}

func (s *socket) echo(msg string) {
	s.t.Helper()
	s.dl(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(s.w, msg); err != nil {
		s.t.Fatalf("%s: sending: %v", s.what, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s.r, got); err != nil || string(got) != msg {
		s.t.Fatalf("%s: echo of %q: %q, %v", s.what, msg, got, err)
	}
}

// closed reports whether the socket ends within d, nothing more read.
func (s *socket) closed(d time.Duration) bool {
	s.t.Helper()
	s.dl(time.Now().Add(d))
	n, err := s.r.Read(make([]byte, 1))
	if n > 0 {
		s.t.Fatalf("%s: read something never sent", s.what)
	}
	var ne net.Error
	return !errors.Is(err, errTimeout) && !(errors.As(err, &ne) && ne.Timeout())
}

// WebSockets through the real binary, over HTTP/1.1 and over HTTP/2
// (extended CONNECT, which Go's HTTP/2 server offers with
// GODEBUG=http2xconnect=1), and event streams, close when their session
// is signed out, at once, and those of other sessions stay open. A
// stream asked for without saying it is one (fetch) is cut off at its
// next write.
func TestSocketsCloseWhenTheirSessionEnds(t *testing.T) {
	t.Parallel()
	g := newGateway(t, gatewayOptions{
		bootstrap: "admin@localhost",
		backend:   sockettest.Start(t),
		global:    "servers {\n\t\tprotocols h1 h2c\n\t}",
		env:       []string{"GODEBUG=http2xconnect=1"},
	})
	email, password := firstAdmin(t, g.start())
	if r := g.cli("bob's long password\n", "add", "--email", "bob@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("adding bob: %s", r.output())
	}
	ann, bob := g.browser(), g.browser()
	ann.mustLogin(email, password, "/")
	bob.mustLogin("bob@example.com", "bob's long password", "/")

	annH1, annH2 := h1Socket(t, g.base, "/ws", ann.session()), h2Socket(t, g.base, "/ws", ann.session())
	bobH1, bobH2 := h1Socket(t, g.base, "/ws", bob.session()), h2Socket(t, g.base, "/ws", bob.session())
	for _, s := range []*socket{annH1, annH2, bobH1, bobH2} {
		s.echo("hello")
	}
	annEvents, bobEvents := sockettest.Events(t, g.base+"/events", ann.session()), sockettest.Events(t, g.base+"/events", bob.session())
	annFetch, annFetchedEvents := sockettest.Read(t, g.base+"/stream", ann.session(), ""), sockettest.Read(t, g.base+"/stream/events", ann.session(), "*/*")

	_, page := ann.get("/.sigra/logout", http.Header{"Accept": {"text/html"}})
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf_token on the sign-out page:\n%s", page)
	}
	resp, _ := ann.do(http.MethodPost, "/.sigra/logout", http.Header{
		"Content-Type": {"application/x-www-form-urlencoded"}, "Origin": {g.base}, "Accept": {"text/html"},
	}, strings.NewReader(url.Values{"csrf_token": {m[1]}}.Encode()))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: status %d\n%s", resp.StatusCode, g.logs())
	}
	for _, s := range []*socket{annH1, annH2} {
		if !s.closed(5 * time.Second) {
			t.Errorf("%s of the signed-out session: still open 5s on\n%s", s.what, g.logs())
		}
	}
	annEvents.MustEnd("ann's event stream after she signed out")
	annFetch.MustBeCut("ann's streamed answer after she signed out")
	annFetchedEvents.MustBeCut("ann's event stream asked for as */* after she signed out")
	bobEvents.Event("bob's event stream after ann signed out")
	for _, s := range []*socket{bobH1, bobH2} {
		s.echo("bob's socket after ann signed out")
		if s.closed(200 * time.Millisecond) {
			t.Errorf("bob's %s closed when ann signed out", s.what)
		}
	}
	for _, line := range []string{"closing a socket or event stream: its session would not pass now", "cutting off an answer: its session would not pass now"} {
		if !strings.Contains(g.logs(), line) {
			t.Errorf("no log line %q\n%s", line, g.logs())
		}
	}
}
