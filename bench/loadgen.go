package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The load generator speaks HTTP/1.1 over raw keep-alive TCP connections
// instead of using net/http's client: on a two-core machine every
// microsecond it spends is taken from Caddy, and net/http's transport
// costs several times more per request (two goroutines per connection,
// channel hand-offs, header maps). Requests are written from a reused
// buffer; responses are parsed just enough to find their end.

// maxRate bounds how many requests a round can record per second of its
// duration. It sizes the preallocated latency buffers and bounds every
// worker's loop; no machine this harness targets gets near it.
const maxRate = 200_000

// target is one site under load.
type target struct {
	Name   string   // "A", "B", "C", or "1000 sessions"
	Addr   string   // 127.0.0.1:port
	Path   string   // request path
	Tokens tokenSet // session cookie values; one is drawn at random per request when there are several
}

// roundSpec says how to load a target for one round.
type roundSpec struct {
	Conns    int           // keep-alive connections, one worker each
	Duration time.Duration // closed loop: how long; open loop: Rate*Duration requests are scheduled
	Rate     float64       // requests per second for an open loop; 0 means a closed loop
}

// roundResult is what one round measured.
type roundResult struct {
	Requests int
	Elapsed  time.Duration // from the release of the workers to the last response
	Late     int           // open loop: requests sent behind schedule because their worker was still busy
	Samples  []uint32      // latency of every request, in nanoseconds
	// Delays (open loop) are how long after its scheduled time each
	// on-time request actually went out: the generator's own timer and
	// scheduling delay, from which such a request's latency counts.
	Delays []uint32
}

// generator runs rounds. It keeps the latency buffers between rounds so
// that measuring allocates nothing.
type generator struct {
	bufs, dbufs [][]uint32 // one per worker and target: [worker*targets+target]
}

// hooks are called around the measured part of a round: after the
// connections are up, just before the workers are released, and right
// after the last one finished, before the connections are closed.
type hooks struct {
	Start, End func()
}

// errRejected marks a response other than 200: the round is worthless.
var errRejected = errors.New("request not accepted")

// run loads ts for one round and returns a result for each. Several
// targets share an open-loop round: the schedule's requests go to the
// targets in turn (request s of the schedule to target s mod len(ts)),
// so that all of them are measured in the same moments, under the same
// noise. Each target then has spec.Conns connections of its own, each
// with its own goroutine and its own share of the target's requests, so
// a slow answer from one target never delays a request to another. Any
// failed request (a status other than 200, a broken connection) stops
// the round and is returned: a benchmark that counts errors as fast
// responses measures nothing.
func (g *generator) run(ctx context.Context, ts []target, spec roundSpec, h hooks) ([]roundResult, error) {
	k := len(ts)
	if spec.Conns < 1 || spec.Duration <= 0 || k == 0 {
		return nil, fmt.Errorf("round: need a target, at least one connection and a positive duration")
	}
	if k > 1 && spec.Rate <= 0 {
		return nil, fmt.Errorf("round: targets share a round only in an open loop")
	}
	for _, t := range ts {
		if t.Tokens.Len() == 0 {
			return nil, fmt.Errorf("round: target %s has no session token", t.Name)
		}
	}
	perWorker := int(math.Ceil(spec.Duration.Seconds()*maxRate/float64(spec.Conns))) + 1
	var total int // open loop: requests scheduled in all
	if spec.Rate > 0 {
		total = int(math.Round(spec.Rate * spec.Duration.Seconds()))
		if total < 1 {
			total = 1
		}
		perWorker = (total + spec.Conns - 1) / spec.Conns
	}
	nbuf := spec.Conns * k
	for len(g.bufs) < nbuf {
		g.bufs = append(g.bufs, nil)
		g.dbufs = append(g.dbufs, nil)
	}
	for i := range nbuf {
		if cap(g.bufs[i]) < perWorker {
			g.bufs[i] = make([]uint32, 0, perWorker)
		}
		g.bufs[i] = g.bufs[i][:0]
		if spec.Rate > 0 && cap(g.dbufs[i]) < perWorker {
			g.dbufs[i] = make([]uint32, 0, perWorker)
		}
		g.dbufs[i] = g.dbufs[i][:0]
	}

	// Connect first, outside the measured window.
	conns := make([]net.Conn, 0, nbuf)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	limit := time.Now().Add(spec.Duration + 30*time.Second) // nothing may hang past this
	d := net.Dialer{Timeout: 3 * time.Second}
	for range spec.Conns {
		for _, t := range ts {
			c, err := d.DialContext(ctx, "tcp", t.Addr)
			if err != nil {
				return nil, fmt.Errorf("site %s: %w", t.Name, err)
			}
			c.SetDeadline(limit)
			conns = append(conns, c)
		}
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		release  = make(chan struct{})
		t0       time.Time
		lastEnd  atomic.Int64 // the latest worker end, in ns since t0 (monotonic)
		errOnce  sync.Once
		firstErr error
	)
	var stop atomic.Bool // read on every request: cheaper than ctx.Err
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	go func() {
		<-rctx.Done()
		stop.Store(true)
	}()
	workers := make([]*worker, nbuf)
	for j, c := range conns {
		i, x, t := j/k, j%k, ts[j%k]
		w := &worker{
			conn:  c,
			br:    bufio.NewReaderSize(c, 16<<10),
			name:  t.Name,
			host:  t.Addr,
			path:  t.Path,
			toks:  t.Tokens,
			rng:   rand.New(rand.NewPCG(uint64(j)+1, uint64(time.Now().UnixNano()))),
			lat:   g.bufs[j],
			delay: g.dbufs[j],
			limit: perWorker,
		}
		workers[j] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			var err error
			if spec.Rate > 0 {
				// Connection i of target x sends requests x+k·i,
				// x+k·(i+W), x+k·(i+2W), … of the schedule: with one
				// target, i, i+W, i+2W, …
				first, stride := x+k*i, k*spec.Conns
				interval := time.Duration(float64(stride) / spec.Rate * float64(time.Second))
				offset := time.Duration(float64(first) / spec.Rate * float64(time.Second))
				n := 0
				if first < total {
					n = (total-first-1)/stride + 1
				}
				err = w.openLoop(rctx, t0.Add(offset), interval, n)
			} else {
				err = w.closedLoop(&stop, t0.Add(spec.Duration))
			}
			g.bufs[j], g.dbufs[j] = w.lat, w.delay
			if err != nil {
				fail(err)
			}
			end := int64(time.Since(t0))
			for {
				cur := lastEnd.Load()
				if end <= cur || lastEnd.CompareAndSwap(cur, end) {
					break
				}
			}
		}()
	}
	if h.Start != nil {
		h.Start()
	}
	t0 = time.Now()
	if spec.Rate > 0 {
		// The schedule starts a moment from now, so that the first
		// requests are not counted late only because the workers are
		// still waking up.
		t0 = t0.Add(openLead)
	}
	close(release)
	wg.Wait()
	if h.End != nil {
		h.End()
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]roundResult, k)
	for x := range out {
		res := &out[x]
		res.Elapsed = time.Duration(lastEnd.Load())
		for i := range spec.Conns {
			res.Requests += len(g.bufs[i*k+x])
			res.Late += workers[i*k+x].late
		}
		res.Samples = make([]uint32, 0, res.Requests)
		for i := range spec.Conns {
			res.Samples = append(res.Samples, g.bufs[i*k+x]...)
			res.Delays = append(res.Delays, g.dbufs[i*k+x]...)
		}
	}
	return out, nil
}

// openLead is how far ahead of the release of the workers an open-loop
// schedule starts.
const openLead = time.Millisecond

// worker owns one connection.
type worker struct {
	conn  net.Conn
	br    *bufio.Reader
	name  string // the target's, for errors
	host  string
	path  string
	toks  tokenSet
	rng   *rand.Rand
	req   []byte
	resp  response
	lat   []uint32
	delay []uint32 // open loop: send delay of each on-time request
	late  int      // open loop: requests sent behind schedule
	limit int      // most requests this worker may send in the round
}

// closedLoop sends the next request as soon as the previous answer is in,
// until deadline.
func (w *worker) closedLoop(stop *atomic.Bool, deadline time.Time) error {
	for range w.limit {
		if stop.Load() {
			return nil // another worker failed or the run is being stopped
		}
		start := time.Now()
		if err := w.do(); err != nil {
			return fmt.Errorf("site %s: %w", w.name, err)
		}
		end := time.Now()
		w.record(end.Sub(start))
		if !end.Before(deadline) {
			return nil
		}
	}
	return nil
}

// openLoop sends n requests at first, first+interval, … whether or not the
// server keeps up. A request's latency counts from its scheduled time when
// the worker was still busy then (the server's delay, so it is not hidden:
// no coordinated omission), and from the actual send otherwise (so the
// timer's own wake-up delay is not charged to the server).
func (w *worker) openLoop(ctx context.Context, first time.Time, interval time.Duration, n int) error {
	for j := range n {
		due := first.Add(time.Duration(j) * interval)
		now := time.Now()
		start := due
		if now.Before(due) {
			t := time.NewTimer(due.Sub(now))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			start = time.Now()
			if len(w.delay) < cap(w.delay) {
				w.delay = append(w.delay, uint32(min(start.Sub(due), math.MaxUint32)))
			}
		} else {
			w.late++
			if ctx.Err() != nil {
				return nil
			}
		}
		if err := w.do(); err != nil {
			return fmt.Errorf("site %s: %w", w.name, err)
		}
		w.record(time.Since(start))
	}
	return nil
}

func (w *worker) record(d time.Duration) {
	if len(w.lat) == cap(w.lat) {
		return // cannot happen: limit == cap; kept so a bug cannot allocate mid-round
	}
	if d > math.MaxUint32 {
		d = math.MaxUint32
	}
	w.lat = append(w.lat, uint32(d))
}

// do sends one request and reads its response.
func (w *worker) do() error {
	tok := w.toks.At(0)
	if n := w.toks.Len(); n > 1 {
		tok = w.toks.At(w.rng.IntN(n))
	}
	w.req = appendRequest(w.req[:0], w.host, w.path, tok)
	if _, err := w.conn.Write(w.req); err != nil {
		return err
	}
	if err := readResponse(w.br, &w.resp); err != nil {
		return err
	}
	if w.resp.Status != 200 {
		hint := ""
		if w.resp.Status == 401 {
			hint = " (the session cookie was not accepted: seeding or the session contract is broken)"
		}
		return fmt.Errorf("%w: HTTP %d%s: %.200q", errRejected, w.resp.Status, hint, w.resp.Body)
	}
	if w.resp.Close {
		return errors.New("the server closed the keep-alive connection")
	}
	return nil
}

// appendRequest appends a GET with the session cookie. Every site gets the
// very same request, cookie included, so A, B and C differ only on the
// server side.
func appendRequest(b []byte, host, path string, token []byte) []byte {
	b = append(b, "GET "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUser-Agent: sigra-bench\r\nAccept: application/json\r\nCookie: "...)
	b = append(b, sessionCookie...)
	b = append(b, '=')
	b = append(b, token...)
	return append(b, "\r\n\r\n"...)
}

// response is what the generator keeps of an HTTP/1.1 response.
type response struct {
	Status int
	Close  bool   // the server sent Connection: close
	Body   []byte // the first bytes of the body, kept only when Status is not 200
}

// maxKeptBody bounds response.Body.
const maxKeptBody = 512

// readResponse reads one response from br and discards its body (keeping
// the start of it in r.Body when the status is not 200). It understands
// Content-Length and chunked bodies; a response delimited by closing the
// connection is an error, as keep-alive is the point.
func readResponse(br *bufio.Reader, r *response) error {
	r.Status, r.Close, r.Body = 0, false, r.Body[:0]
	line, err := br.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("reading status line: %w", err)
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 13 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return fmt.Errorf("malformed status line %q", line)
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return fmt.Errorf("malformed status line %q", line)
		}
		r.Status = r.Status*10 + int(c-'0')
	}
	length, chunked := -1, false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("reading headers: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return fmt.Errorf("malformed header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseUint(string(value), 10, 40)
			if err != nil {
				return fmt.Errorf("bad Content-Length %q", value)
			}
			length = int(n)
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(value), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			r.Close = bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case r.Status == 204 || r.Status == 304 || (r.Status >= 100 && r.Status < 200):
		return nil
	case chunked:
		return r.readChunked(br)
	case length >= 0:
		return r.consume(br, length)
	default:
		return fmt.Errorf("HTTP %d response without Content-Length or chunked encoding", r.Status)
	}
}

// consume reads n body bytes, keeping the first ones when the status is
// not 200.
func (r *response) consume(br *bufio.Reader, n int) error {
	if r.Status != 200 && len(r.Body) < maxKeptBody {
		k := min(n, maxKeptBody-len(r.Body))
		p, err := br.Peek(k)
		if err != nil {
			return fmt.Errorf("reading body: %w", err)
		}
		r.Body = append(r.Body, p...)
	}
	if _, err := br.Discard(n); err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	return nil
}

// readChunked reads a chunked body and its trailers. The loop is bounded:
// a body of more than a million chunks is refused.
func (r *response) readChunked(br *bufio.Reader) error {
	for range 1 << 20 {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("reading chunk size: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 40)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			for range 1 << 10 { // trailers, then the empty line
				line, err := br.ReadSlice('\n')
				if err != nil {
					return fmt.Errorf("reading trailers: %w", err)
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
			return errors.New("too many trailers")
		}
		if err := r.consume(br, int(size)); err != nil {
			return err
		}
		if _, err := br.Discard(2); err != nil { // the CRLF after the chunk
			return fmt.Errorf("reading chunk end: %w", err)
		}
	}
	return errors.New("too many chunks")
}

// tokenSet holds session cookie values in one flat byte slice, so that a
// million of them cost the garbage collector nothing to scan.
type tokenSet struct {
	data []byte
	ends []uint32
}

// Add appends a token.
func (s *tokenSet) Add(tok string) {
	s.data = append(s.data, tok...)
	s.ends = append(s.ends, uint32(len(s.data)))
}

// Len is the number of tokens.
func (s tokenSet) Len() int { return len(s.ends) }

// At returns token i; the slice must not be modified.
func (s tokenSet) At(i int) []byte {
	start := uint32(0)
	if i > 0 {
		start = s.ends[i-1]
	}
	return s.data[start:s.ends[i]]
}

// Head returns the first k tokens (all of them when k is 0 or too big).
func (s tokenSet) Head(k int) tokenSet {
	if k <= 0 || k >= len(s.ends) {
		return s
	}
	return tokenSet{data: s.data[:s.ends[k-1]], ends: s.ends[:k]}
}

// one returns a set holding just tok.
func oneToken(tok string) tokenSet {
	var s tokenSet
	s.Add(tok)
	return s
}
