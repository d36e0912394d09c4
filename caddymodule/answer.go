package caddymodule

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// recheck resolves the session of the decision's request again,
// counting that as a use of it if use is set, and applies the gates it
// met. It returns why it would not pass now ("" if it would), and
// otherwise how long until it should be checked again at the latest:
// every, or sooner at the session's end or a gate's `mfa max_age`.
func (d *gateDecision) recheck(ctx context.Context, rt *runtime, use bool, every time.Duration, now time.Time) (next time.Duration, why string, err error) {
	resolve := rt.auth.Recheck
	if use {
		resolve = rt.auth.AuthenticateOn
	}
	p, err := resolve(ctx, d.token, d.host, d.secure, now)
	switch {
	case errors.Is(err, authcore.ErrNoSession):
		return 0, "session_ended", nil
	case err != nil:
		// Fail closed, as the gate does.
		return 0, "storage", err
	case p.Session.Pending:
		return 0, denyPending.reason, nil
	}
	next, why = d.judge(p, every, now)
	return next, why, nil
}

// judge applies the gates the request met to p at now: why it would not
// pass ("" if it would), and otherwise how long until it should be
// checked again at the latest (see recheck).
func (d *gateDecision) judge(p *authcore.Principal, every time.Duration, now time.Time) (next time.Duration, why string) {
	next = min(every, p.Session.End().Sub(now))
	for _, g := range d.met {
		if dn := g.check(p, now); dn != nil {
			return 0, dn.reason
		}
		if g.MFA != nil && g.MFA.MaxAge > 0 {
			next = min(next, p.Session.MFAAt.Add(time.Duration(g.MFA.MaxAge)).Sub(now))
		}
	}
	// A deadline reached still passes (it ends just after): not too soon
	// again.
	return max(next, min(time.Second, every)), ""
}

// ended logs msg for a socket or an answer of the decision's session
// ended for why (an error at Error level), and counts it in
// sigra_streams_closed_total.
func (d *gateDecision) ended(l *zap.Logger, msg, why string, err error) {
	log := l.Info
	if err != nil {
		log = l.Error
	}
	log(msg, zap.String("reason", why), zap.String("session", d.p.Session.ID.String()), zap.String("host", d.host), zap.Error(err))
	processMetrics().streamsClosed.WithLabelValues(why).Inc()
}

// errAnswerCut is what a write of an answer whose session ended returns:
// reverse_proxy then aborts the answer, so the client sees it cut off
// rather than complete.
var errAnswerCut = errors.New("sigra: the session of this answer ended, or would no longer pass its gates")

// answerWriter is the writer of an answer let through with a session (but
// for a socket's once it opened, which is watched): one that is still being written
// when its session ends, or would no longer pass the gates that let it
// through, is cut off at its next write. That is a download, or a stream
// read with fetch rather than EventSource, which no Accept header tells
// apart from any other request; watching each request as a socket is
// would cost every request a context.
//
// A write reads two atomics and the clock. Its session is looked at
// again only when the sessions or users of the runtime changed (any
// sign-out, revocation or user change bumps its cache generation) or
// the last look is old: so an answer going on for minutes is looked at
// every half socketRecheck. Such a look at an answer that is not an
// event stream is a use of the session, as a request is, so that a long
// download does not idle its session out; an event stream's writes are
// not, as a watched one's are not.
type answerWriter struct {
	caddyhttp.ResponseWriterWrapper
	g      *Gate // the first gate
	d      *gateDecision
	ctx    context.Context
	rt     *runtime // the runtime that looked last
	gen    uint64   // its cache generation then
	until  int64    // look again by then (the sessions' clock, unix nanos); 0: not yet written
	events bool     // an event stream
	cut    bool
}

// wrap returns w as the answer's writer.
func (a *answerWriter) wrap(w http.ResponseWriter, r *http.Request, g *Gate, d *gateDecision) http.ResponseWriter {
	rt := g.app.runtimeNow()
	if rt == nil {
		return w
	}
	*a = answerWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, g: g, d: d, ctx: r.Context(), rt: rt, gen: rt.auth.Changes()}
	return a
}

func (a *answerWriter) Write(b []byte) (int, error) {
	if err := a.still(); err != nil {
		return 0, err
	}
	return a.ResponseWriter.Write(b)
}

// copyBufs are ReadFrom's buffers.
var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// ReadFrom is how file_server sends a file: through Write, 32 KiB at a
// time, each looked at, so that a download however slow is cut off, and
// kept in use, as it goes. (Caddy's writers before this one keep
// sendfile out already.)
func (a *answerWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[32 << 10]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(writeOnly{a}, r, buf[:])
}

// writeOnly hides a writer's ReadFrom from io.CopyBuffer.
type writeOnly struct{ io.Writer }

// still returns errAnswerCut once the answer's session would not pass.
func (a *answerWriter) still() error {
	if a.cut {
		return errAnswerCut
	}
	if s := a.d.sock; s != nil && s.started {
		return nil // a socket, watched (socket.go)
	}
	now := a.g.app.clock.Now()
	rt := a.g.app.runtimeNow()
	if a.until == 0 {
		// The first write, with the header final. The gates decided a
		// moment ago, on p.
		a.events = strings.HasPrefix(a.Header().Get("Content-Type"), "text/event-stream")
		next, _ := a.d.judge(a.d.p, answerRecheck(), now)
		a.until = now.Add(next).UnixNano()
	}
	if rt == a.rt && rt.auth.Changes() == a.gen && now.UnixNano() < a.until {
		return nil
	}
	var (
		next time.Duration
		why  string
		err  error
	)
	switch {
	case rt == nil && caddy.Exiting():
		return nil // Caddy ends its answers itself
	case rt == nil:
		// A reload to a config with no sigra app on this store.
		why = "not_started"
	default:
		gen := rt.auth.Changes() // before looking: a change meanwhile is looked at next time
		next, why, err = a.d.recheck(a.ctx, rt, !a.events, answerRecheck(), now)
		a.rt, a.gen, a.until = rt, gen, now.Add(next).UnixNano()
	}
	if why == "" {
		return nil
	}
	a.cut = true
	a.d.ended(a.g.logger, "cutting off an answer: its session would not pass now", why, err)
	return errAnswerCut
}

// answerRecheck is how long an answer goes between looks at its session
// when nothing changed: half a socket's, so that its uses keep a session
// with the shortest idle (a minute) going.
func answerRecheck() time.Duration { return recheckEvery() / 2 }
