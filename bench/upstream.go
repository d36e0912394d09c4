package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The upstream is the "unmodified app": a tiny net/http server that
// answers 200 "ok". It runs as a child process (this same binary, started
// with -upstream-serve) rather than inside the harness, so that its
// allocations and garbage collection never pause the load generator's
// clock, and so that its CPU can be read apart from the generator's.

// whoamiPath answers with the X-Sigra-User header the upstream received;
// the harness uses it once per site to check that the gate injects
// identity (and strips a forged value). The measured path is "/".
const whoamiPath = "/.bench/whoami"

var okBody = []byte("ok\n")

func upstreamHandler() http.Handler {
	ct := []string{"text/plain; charset=utf-8"}
	cl := []string{fmt.Sprint(len(okBody))}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == whoamiPath {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, r.Header.Get("X-Sigra-User"))
			return
		}
		h := w.Header()
		h["Content-Type"] = ct
		h["Content-Length"] = cl
		w.Write(okBody)
	})
}

// serveUpstream is the child's main: it listens on addr, prints the
// address it got on stdout, and serves until its standard input closes
// (the harness holds the other end, so the child goes away with it even
// when the harness is killed).
func serveUpstream(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	srv := &http.Server{
		Handler:           upstreamHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       10 * time.Minute,
		ErrorLog:          nil,
	}
	return srv.Serve(ln)
}

// upstreamProc is the running child.
type upstreamProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	once  sync.Once
	Addr  string
	PID   string
}

// startUpstream runs this binary again as the upstream on a free loopback
// port. procs sets the child's GOMAXPROCS when positive.
func startUpstream(ctx context.Context, procs int) (*upstreamProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	cmd := exec.Command(exe, "-upstream-serve", "127.0.0.1:0")
	cmd.Env = os.Environ()
	if procs > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMAXPROCS=%d", procs))
	}
	cmd.Stderr = os.Stderr
	// Its own process group, so that a Ctrl-C reaches only the harness,
	// which then stops the round and the children in order; SIGKILL from
	// the kernel if the harness dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	p := &upstreamProc{cmd: cmd, stdin: stdin, PID: fmt.Sprint(cmd.Process.Pid)}
	children.add(p.stop)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case p.Addr = <-line:
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	if p.Addr == "" {
		p.stop()
		return nil, errors.New("upstream: the child did not report its address")
	}
	return p, nil
}

// stop ends the child: closing its stdin makes it exit; SIGKILL if not.
func (p *upstreamProc) stop() {
	p.once.Do(func() {
		p.stdin.Close()
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	})
}
