package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		status int
		body   string // kept body (only for statuses other than 200)
		close  bool
		err    bool
	}{
		{name: "content length", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n", status: 200},
		{name: "lower-case headers", in: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", status: 200},
		{name: "chunked with trailer", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n", status: 200},
		{name: "401 keeps the body", in: "HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nsign in, pls", status: 401, body: "sign in, pls"},
		{name: "chunked 502 keeps the body", in: "HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbad \r\n3\r\ngw!\r\n0\r\n\r\n", status: 502, body: "bad gw!"},
		{name: "connection close", in: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", status: 200, close: true},
		{name: "204 has no body", in: "HTTP/1.1 204 No Content\r\n\r\n", status: 204},
		{name: "no length", in: "HTTP/1.1 200 OK\r\n\r\nok", err: true},
		{name: "garbage", in: "SSH-2.0-OpenSSH\r\n", err: true},
		{name: "short body", in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", err: true},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			err := readResponse(bufio.NewReader(strings.NewReader(tt.in)), &r)
			if tt.err {
				if err == nil {
					t.Fatalf("got %+v, want an error", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tt.status || string(r.Body) != tt.body || r.Close != tt.close {
				t.Errorf("got status %d body %q close %v; want %d %q %v", r.Status, r.Body, r.Close, tt.status, tt.body, tt.close)
			}
		})
	}
}

func TestReadResponseKeepAlive(t *testing.T) {
	two := "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(two))
	var r response
	for i := range 2 {
		if err := readResponse(br, &r); err != nil || r.Status != 200 {
			t.Fatalf("response %d: status %d, err %v", i+1, r.Status, err)
		}
	}
	if br.Buffered() != 0 {
		t.Errorf("%d bytes left over", br.Buffered())
	}
}

func TestAppendRequest(t *testing.T) {
	got := string(appendRequest(nil, "127.0.0.1:8080", "/", []byte("tok")))
	want := "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: sigra-bench\r\nAccept: application/json\r\nCookie: sigra_session=tok\r\n\r\n"
	if got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

func TestTokenSet(t *testing.T) {
	var s tokenSet
	for _, tok := range []string{"a", "bc", "", "def"} {
		s.Add(tok)
	}
	if s.Len() != 4 {
		t.Fatalf("Len %d; want 4", s.Len())
	}
	for i, want := range []string{"a", "bc", "", "def"} {
		if got := string(s.At(i)); got != want {
			t.Errorf("At(%d) = %q; want %q", i, got, want)
		}
	}
}

// TestGenerator runs both loops briefly against an in-process server; it
// checks the bookkeeping, not the speed.
func TestGenerator(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, _ := r.Cookie(sessionCookie); c == nil || c.Value != "good" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		upstreamHandler().ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	var g generator
	tgt := target{Name: "T", Addr: ln.Addr().String(), Path: "/", Tokens: oneToken("good")}
	var started, ended bool
	out, err := g.run(context.Background(), []target{tgt}, roundSpec{Conns: 4, Duration: 200 * time.Millisecond}, hooks{
		Start: func() { started = true },
		End:   func() { ended = true },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res := out[0]; !started || !ended || res.Requests == 0 || len(res.Samples) != res.Requests || res.Elapsed < 200*time.Millisecond {
		t.Errorf("closed loop: started %v ended %v, %d requests, %d samples in %s", started, ended, res.Requests, len(res.Samples), res.Elapsed)
	}

	out, err = g.run(context.Background(), []target{tgt}, roundSpec{Conns: 3, Duration: 300 * time.Millisecond, Rate: 100}, hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Requests != 30 {
		t.Errorf("open loop at 100/s for 0.3 s: %d requests; want 30", out[0].Requests)
	}

	tgt.Tokens = oneToken("bad")
	if _, err := g.run(context.Background(), []target{tgt}, roundSpec{Conns: 2, Duration: time.Second}, hooks{}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("with a refused session: got %v; want an error naming the 401", err)
	}
}

// Targets sharing an open-loop round take turns: each gets its share of
// the schedule, on its own connections, and its own samples.
func TestGeneratorSharedRound(t *testing.T) {
	var targets []target
	var counts [3]atomic.Int64
	for i := range counts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			counts[i].Add(1)
			upstreamHandler().ServeHTTP(w, r)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		targets = append(targets, target{Name: fmt.Sprint(i), Addr: ln.Addr().String(), Path: "/", Tokens: oneToken("t")})
	}
	var g generator
	// 4 workers, 3 targets: worker i sends requests i, i+4, … of the
	// schedule, and they go to targets 0, 1, 2 in turn.
	out, err := g.run(context.Background(), targets, roundSpec{Conns: 4, Duration: 400 * time.Millisecond, Rate: 300}, hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 {
		t.Fatalf("%d results; want one per target", len(out))
	}
	for i, res := range out {
		if res.Requests != 40 || len(res.Samples) != 40 || counts[i].Load() != 40 {
			t.Errorf("target %d: %d requests, %d samples, %d served; want 40 each (120 at 300/s over 0.4 s, in turns)", i, res.Requests, len(res.Samples), counts[i].Load())
		}
	}
	if _, err := g.run(context.Background(), targets, roundSpec{Conns: 2, Duration: time.Second}, hooks{}); err == nil {
		t.Error("targets sharing a closed-loop round: no error")
	}
}

// A slow answer from one target of a shared round delays no request to
// another: here one target answers nothing until the other has served
// every request of its share.
func TestGeneratorSharedRoundNoBleed(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	byFast := false
	serve := func(h http.HandlerFunc) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	const share = 20 // 40 requests at 100/s over 0.4 s, every other one to each target
	var fastServed atomic.Int64
	slow := serve(func(w http.ResponseWriter, r *http.Request) {
		<-release
		upstreamHandler().ServeHTTP(w, r)
	})
	fast := serve(func(w http.ResponseWriter, r *http.Request) {
		if fastServed.Add(1) == share {
			once.Do(func() { byFast = true; close(release) })
		}
		upstreamHandler().ServeHTTP(w, r)
	})
	watchdog := time.AfterFunc(10*time.Second, func() { once.Do(func() { close(release) }) })
	defer watchdog.Stop()

	var g generator
	targets := []target{
		{Name: "slow", Addr: slow, Path: "/", Tokens: oneToken("t")},
		{Name: "fast", Addr: fast, Path: "/", Tokens: oneToken("t")},
	}
	out, err := g.run(context.Background(), targets, roundSpec{Conns: 3, Duration: 400 * time.Millisecond, Rate: 100}, hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if !byFast {
		t.Fatalf("the fast target could not serve its %d requests while the slow one held its answers: its requests waited on the other's (the watchdog let them go)", share)
	}
	if out[1].Requests != share {
		t.Errorf("fast target: %d requests; want %d", out[1].Requests, share)
	}
	if out[0].Requests != share || out[0].Late == 0 {
		t.Errorf("slow target: %d requests, %d late; want %d, some late", out[0].Requests, out[0].Late, share)
	}
	// A late request is timed from when it was due, not from when its
	// worker got to send it (coordinated omission): besides the first
	// request of each connection, held from the start, the ones due
	// while it waited show the wait. Each connection sends one every
	// 60 ms and waits about 400 ms, so about 4 of each connection's late
	// requests were due 100 ms or more before they could go out.
	long := 0
	for _, d := range out[0].Samples {
		if time.Duration(d) >= 100*time.Millisecond {
			long++
		}
	}
	if long < 3*3 {
		t.Errorf("slow target: %d of %d samples ≥ 100 ms; want at least 9 (its 3 held requests, and the late ones timed from when they were due)", long, len(out[0].Samples))
	}
}
