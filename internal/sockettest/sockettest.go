// Package sockettest is an app for tests of connections that outlive
// their handshake: it takes WebSocket upgrades and echoes what the
// client sends (frames are the app's business and a proxy passes bytes,
// so it echoes bytes), and sends an event stream to a request that
// accepts one. At a path with /stream in it, it streams whatever the
// request accepts: events at one ending in /stream/events, lines of
// JSON otherwise.
package sockettest

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Start runs the app on loopback until the test ends and returns its
// address. A request that asks for neither gets "app".
func Start(t testing.TB) string {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.Header.Get("Accept"), "text/event-stream"), strings.HasSuffix(r.URL.Path, "/stream/events"):
			events(w, r, "text/event-stream")
			return
		case strings.Contains(r.URL.Path, "/stream"):
			events(w, r, "application/x-ndjson")
			return
		}
		if r.URL.Path == "/page" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, page)
			return
		}
		if r.Header.Get("Upgrade") != "websocket" {
			io.WriteString(w, "app")
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")
		if key := r.Header.Get("Sec-WebSocket-Key"); key != "" {
			// What a browser checks (RFC 6455, 4.2.2).
			sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			brw.WriteString("Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n")
		}
		brw.WriteString("\r\n")
		if brw.Flush() == nil {
			io.Copy(c, brw)
		}
	}))
	t.Cleanup(func() {
		app.CloseClientConnections()
		app.Close()
	})
	return app.Listener.Addr().String()
}

// page opens a WebSocket and an event stream, and shows what becomes of
// them in #ws and #es: "open", then "closed <code>" for the socket, and
// "closed" for the stream once EventSource gives up (its retry refused).
const page = `<!doctype html>
<title>sockets</title>
<p id="ws">connecting</p>
<p id="es">connecting</p>
<script>
const show = (id, s) => { document.getElementById(id).textContent = s; };
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
ws.onopen = () => show("ws", "open");
ws.onclose = e => show("ws", "closed " + e.code);
const es = new EventSource("/events");
es.onopen = () => show("es", "open");
es.onerror = () => { if (es.readyState === EventSource.CLOSED) show("es", "closed"); };
</script>
`

// events sends an event every 20 ms until the request ends, as
// contentType (the lines are the same).
func events(w http.ResponseWriter, r *http.Request, contentType string) {
	w.Header().Set("Content-Type", contentType)
	rc := http.NewResponseController(w)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n := 0; ; n++ {
		if _, err := fmt.Fprintf(w, "data: %d\n\n", n); err != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

// Stream is a client reading an event stream.
type Stream struct {
	t     testing.TB
	lines chan string // closed when the stream ends
	err   error       // why it ended, nil if whole: read once lines is closed
}

// Events asks for an event stream at url as the holder of the session
// token, as EventSource does, and fails the test unless the first event
// comes.
func Events(t testing.TB, url, token string) *Stream {
	t.Helper()
	return Read(t, url, token, "text/event-stream")
}

// Read asks for a stream at url as the holder of the session token,
// saying it accepts accept (nothing if empty), as fetch does, and fails
// the test unless the first event comes.
func Read(t testing.TB, url, token, accept string) *Stream {
	t.Helper()
	h := http.Header{}
	if accept != "" {
		h.Set("Accept", accept)
	}
	return ReadWith(t, url, token, h)
}

// ReadWith is Read with the request's header h.
func ReadWith(t testing.TB, url, token string, h http.Header) *Stream {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	req.AddCookie(&http.Cookie{Name: "sigra_session", Value: token})
	resp, err := (&http.Transport{}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream at %s: status %d", url, resp.StatusCode)
	}
	s := &Stream{t: t, lines: make(chan string, 1000)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case s.lines <- sc.Text():
			default: // nobody reads now; drop
			}
		}
		s.err = sc.Err()
	}()
	s.Event("the first event")
	return s
}

// Event fails the test unless an event comes within 5 s, after those
// that came before the call.
func (s *Stream) Event(what string) {
	s.t.Helper()
	for range len(s.lines) {
		if _, ok := <-s.lines; !ok {
			s.t.Fatalf("%s: the stream ended", what)
		}
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("%s: the stream ended", what)
			}
			if strings.HasPrefix(l, "data: ") {
				return
			}
		case <-timeout:
			s.t.Fatalf("%s: no event in 5s", what)
		}
	}
}

// MustBeCut fails the test unless the stream ends within 5 s cut off,
// not whole (a chunked answer without its last chunk, say).
func (s *Stream) MustBeCut(what string) {
	s.t.Helper()
	s.MustEnd(what)
	if s.err == nil {
		s.t.Errorf("%s: the stream ended whole; want it cut off", what)
	}
}

// MustEnd fails the test unless the stream ends within 5 s.
func (s *Stream) MustEnd(what string) {
	s.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-s.lines:
			if !ok {
				return
			}
		case <-timeout:
			s.t.Fatalf("%s: the stream goes on 5s on; want it ended", what)
		}
	}
}
