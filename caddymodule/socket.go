package caddymodule

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// socketRecheck is how often a socket's session is checked again when
// nothing told of a change: for its idle end, say. Tests shorten it.
var socketRecheck atomic.Int64

func init() { socketRecheck.Store(int64(time.Minute)) }

func recheckEvery() time.Duration { return time.Duration(socketRecheck.Load()) }

// socket is a connection that outlives its handshake, let through with
// a session: an upgraded one (a WebSocket; over HTTP/2 and HTTP/3, an
// extended CONNECT) or an event stream (text/event-stream). It lasts
// while its session does and the gates that let it through would let
// its handshake through again: the request's context is cancelled when
// they would not, which has reverse_proxy close both ends.
type socket struct {
	gate   *Gate         // the first gate
	d      *gateDecision // the gates' decision on its handshake
	id     authcore.SessionID
	user   string
	now    func() time.Time // the sessions' clock
	ctx    context.Context
	cancel context.CancelFunc

	// used is when the client's traffic was last counted as a use of
	// the session (the sessions' clock, unix nanos): at most once a
	// second, as requests are, so that an app used through its socket
	// alone does not idle out.
	used atomic.Int64

	on2xx   bool // a 2xx answer opens it: an extended CONNECT, an event stream
	started bool
}

// longLived reports whether r asks for a connection that outlives its
// handshake: an upgrade, or an event stream (what EventSource asks for).
func longLived(r *http.Request) bool {
	return r.Method == http.MethodConnect || r.Header.Get("Upgrade") != "" || wantsEvents(r)
}

func wantsEvents(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// watchSocket prepares r, an allowed request with a session that may
// become a socket, to be closed when its session ends.
// The caller must call the returned cancel when the request is done.
func (g *Gate) watchSocket(w http.ResponseWriter, r *http.Request, d *gateDecision) (http.ResponseWriter, *http.Request, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	s := &socket{
		gate: g, d: d,
		id: d.p.Session.ID, user: d.p.User.ID, now: g.app.clock.Now,
		ctx: ctx, cancel: cancel,
	}
	connect := r.Method == http.MethodConnect
	s.on2xx = connect || wantsEvents(r)
	s.used.Store(s.now().UnixNano()) // the handshake was one
	d.sock = s
	r = r.WithContext(ctx)
	if connect {
		// Over HTTP/2 and HTTP/3 the client's side of the connection is
		// the request body. (An HTTP/1.1 upgrade has none: a body there
		// would have the proxy send the handshake chunked.)
		r.Body = &usedBody{ReadCloser: r.Body, s: s}
	}
	return &socketWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, s: s}, r, cancel
}

// noteUse counts the client's traffic as a use of the session, as a
// request is, at most once a second. A session found ended meanwhile is
// dropped, which tells the watch.
func (s *socket) noteUse() {
	now := s.now()
	last := s.used.Load()
	if now.UnixNano()-last < int64(time.Second) || !s.used.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	if rt := s.gate.app.runtimeNow(); rt != nil { // no wait in the copy
		_, _ = rt.auth.AuthenticateOn(s.ctx, s.d.token, s.d.host, s.d.secure, now)
	}
}

// start starts the watch, once: the socket is open. Every gate the
// request meets has run; the watch may read s.d from here on.
func (s *socket) start() {
	if !s.started {
		s.started = true
		go s.watch()
	}
}

// watch rechecks the connection's session when told of a change to it,
// and every socketRecheck, until the request is done or its session
// would not pass, when it closes the connection.
func (s *socket) watch() {
	defer func() {
		if r := recover(); r != nil {
			s.gate.logger.Error("watching a socket panicked; closing it", zap.Any("panic", r), zap.Stack("stack"))
			s.cancel()
		}
	}()
	processCounts.streamsOpen.Add(1)
	defer processCounts.streamsOpen.Add(-1)
	var (
		rt *runtime
		w  *authcore.Watch
	)
	defer func() {
		if w != nil {
			w.Stop()
		}
	}()
	t := time.NewTimer(recheckEvery())
	defer t.Stop()
	for {
		cur := s.gate.app.runtime(s.ctx)
		if cur == nil && caddy.Exiting() {
			return // Caddy closes sockets itself, the way it likes
		}
		if cur == nil {
			// A reload to a config with no sigra app on this store:
			// nothing can tell whether its session goes on.
			s.close("not_started", nil)
			return
		}
		if cur != rt {
			// A new config's runtime after a reload: told of changes
			// made through it from now on. Watch before checking, so
			// that a change between the two is not missed.
			if w != nil {
				w.Stop()
			}
			rt, w = cur, cur.auth.WatchSession(s.id, s.user)
			if s.gate.app.runtimeNow() != cur {
				// Replaced meanwhile, its watches woken before this one
				// was made: watch through the new one.
				continue
			}
		}
		next, why, err := s.check(rt)
		if why != "" {
			s.close(why, err)
			return
		}
		t.Reset(next)
		select {
		case <-s.ctx.Done():
			return
		case <-w.C:
		case <-t.C:
		}
	}
}

// close closes the socket, saying why.
func (s *socket) close(why string, err error) {
	if s.ctx.Err() != nil {
		return // done meanwhile; a check failing with it says nothing
	}
	s.d.ended(s.gate.logger, "closing a socket or event stream: its session would not pass now", why, err)
	s.cancel()
}

// check resolves the connection's session again and applies the gates
// it met. It returns why it would not pass ("" if it would), and
// otherwise how long until it should be checked again at the latest.
func (s *socket) check(rt *runtime) (next time.Duration, why string, err error) {
	return s.d.recheck(s.ctx, rt, false, recheckEvery(), rt.auth.Now())
}

// socketWriter starts the watch when the socket opens: a 101 answer to
// an HTTP/1.1 upgrade, a 2xx to an extended CONNECT or an event stream's
// request. It notes the client's traffic on a hijacked connection.
type socketWriter struct {
	caddyhttp.ResponseWriterWrapper
	s *socket
}

func (w *socketWriter) WriteHeader(code int) {
	s := w.s
	if code == http.StatusSwitchingProtocols || s.on2xx && code >= 200 && code < 300 {
		s.start()
	}
	w.ResponseWriter.WriteHeader(code)
}

// Hijack is how reverse_proxy takes an HTTP/1.1 connection it upgrades
// (after its 101). A handler that writes its own 101 on the connection
// it takes starts the watch here.
func (w *socketWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.s.start()
	return &usedConn{Conn: c, s: w.s}, brw, nil
}

// usedConn is a hijacked connection that notes the client's traffic.
type usedConn struct {
	net.Conn
	s *socket
}

// CloseWrite passes on the half-close reverse_proxy makes when the app
// ends its side.
func (c *usedConn) CloseWrite() error {
	if wc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return wc.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *usedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.s.noteUse()
	}
	return n, err
}

// usedBody is an extended CONNECT's body (the client's side) that notes
// the client's traffic.
type usedBody struct {
	io.ReadCloser
	s *socket
}

func (b *usedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.s.noteUse()
	}
	return n, err
}
