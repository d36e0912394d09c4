package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/freeport"
)

var (
	// caddyBin is the binary under test.
	caddyBin string
	// repoRoot is the module root (the parent of e2e/).
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "xcaddy.json"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the repository root (want xcaddy.json in ..): %v\n", err)
		return 1
	}
	repoRoot = root

	if bin := os.Getenv("SIGRA_CADDY"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: SIGRA_CADDY=%s: %v (build it with `make caddy`)\n", bin, err)
			return 1
		}
		caddyBin = abs
		return m.Run()
	}

	dir, err := os.MkdirTemp("", "sigra-e2e-caddy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	caddyBin = filepath.Join(dir, "caddy")
	start := time.Now()
	cmd := exec.Command("go", "run", "./internal/buildcaddy", "-o", caddyBin)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building caddy from xcaddy.json failed (%v):\n%s\n", err, out)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", caddyBin, time.Since(start).Round(100*time.Millisecond))
	return m.Run()
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// home is a private environment for Caddy processes: its own HOME,
// XDG_DATA_HOME and XDG_CONFIG_HOME, so nothing touches the user's.
type home struct {
	dir, data, config string
	extra             []string // more of the environment, KEY=value
}

func newHome(t *testing.T) *home {
	t.Helper()
	dir := t.TempDir()
	h := &home{dir: dir, data: filepath.Join(dir, "data"), config: filepath.Join(dir, "config")}
	for _, d := range []string{h.data, h.config} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// env is the process environment: ours, with HOME and the XDG
// directories replaced.
func (h *home) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+h.dir, "XDG_DATA_HOME="+h.data, "XDG_CONFIG_HOME="+h.config,
		"XDG_CACHE_HOME="+filepath.Join(h.dir, "cache"))
	return append(env, h.extra...)
}

// result is a finished command.
type result struct {
	args           []string
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

// output is stdout and stderr, with Caddy's JSON log lines reduced to
// their messages, unescaped, so tests can look for quoted text.
func (r result) output() string { return readable(r.stdout + r.stderr) }

// readable turns JSON log lines into "level: msg key=value" lines and
// leaves other lines as they are.
func readable(out string) string {
	var b strings.Builder
	for line := range strings.Lines(out) {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) != nil || entry["msg"] == nil {
			b.WriteString(line)
			continue
		}
		fmt.Fprintf(&b, "%v: %v", entry["level"], entry["msg"])
		for k, v := range entry {
			switch k {
			case "level", "msg", "ts":
				continue
			}
			fmt.Fprintf(&b, " %s=%v", k, v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (r result) String() string {
	return fmt.Sprintf("caddy %s\nexit %d after %s\n--- stdout:\n%s\n--- stderr:\n%s", strings.Join(r.args, " "),
		r.code, r.elapsed.Round(time.Millisecond), r.stdout, r.stderr)
}

// runCaddy runs the binary to completion (at most 60 s) in h's
// environment with dir as working directory, feeding it stdin.
func runCaddy(t *testing.T, h *home, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, args...)
	cmd.Dir = h.dir
	cmd.Env = h.env()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("running caddy %s: %v\n%s", strings.Join(args, " "), err, r)
	}
	if ctx.Err() != nil {
		t.Fatalf("caddy %s did not finish within 60s\n%s", strings.Join(args, " "), r)
	}
	return r
}

// proc is a running `caddy run`.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan struct{}
	err    error // from Wait, once done is closed
}

// startProc starts `caddy run` on a Caddyfile. It does not wait for
// readiness; see gateway.start.
func startProc(t *testing.T, h *home, caddyfile string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, caddyBin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Dir = h.dir
	cmd.Env = h.env()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second // then SIGKILL
	p := &proc{t: t, cmd: cmd, out: new(syncBuffer), cancel: cancel, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting caddy: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop ends the process (SIGTERM, then SIGKILL after 5 s) and waits.
func (p *proc) stop() {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Errorf("caddy did not exit after SIGTERM and SIGKILL\n%s", p.out)
	}
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits at most d for the process to exit on its own and returns its
// exit code, or -1 if it still runs.
func (p *proc) wait(d time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

// logs is the output so far, for failure messages.
func (p *proc) logs() string {
	return "--- caddy output:\n" + readable(p.out.String())
}

// freePort returns a loopback port that was free a moment ago and that no
// other test, of this process or of another test package running beside
// it, was given (see freeport.Take for why that matters to Caddy).
func freePort(t *testing.T) int {
	t.Helper()
	ports, err := freeport.Take(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// waitHealthy polls url until it answers 200, the process exits or 20 s
// pass.
func waitHealthy(t *testing.T, p *proc, url string) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		if p.exited() {
			t.Fatalf("caddy exited before %s answered (%v)\n%s", url, p.err, p.logs())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy within 20s: %v\n%s", url, err, p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	adminEmailRe    = regexp.MustCompile(`│ email:\s+(\S+)`)
	adminPasswordRe = regexp.MustCompile(`│ password:\s+(\S+)`)
)

// firstAdmin reads the bootstrap admin's credentials from the box Caddy
// prints on stderr on first start.
func firstAdmin(t *testing.T, p *proc) (email, password string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := p.out.String()
		e, pw := adminEmailRe.FindStringSubmatch(out), adminPasswordRe.FindStringSubmatch(out)
		if e != nil && pw != nil {
			return e[1], pw[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no first-admin box (email:, password:) in the output\n%s", p.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
