package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// siteConf is one site block of the generated Caddyfile.
type siteConf struct {
	Name string // "A", "B", "C", "H", "A2"
	Port int
	// Gate puts sigra_portal and sigra_gate in front of reverse_proxy.
	Gate bool
	// Require lists the lines inside `sigra_gate { … }` for site C:
	// defaultRequire unless -require says otherwise.
	Require []string
	// Desc describes the site in the report; describe's wording when
	// empty.
	Desc string
	// HeaderUp adds these request headers in reverse_proxy (site H: the
	// identity headers' bytes without the gate).
	HeaderUp [][2]string
}

// defaultRequire is site C's gate block: every per-route requirement this
// build has, each one met by the seeded session (a second factor now,
// AMR pwd+otp+mfa, group bench) and failed by the password-only one. Add
// each new requirement here as it is built ("rule …", "flag …",
// "seat …", with what they need in the global sigra block), so that C
// keeps measuring all of them.
const defaultRequire = "mfa max_age 12h; amr otp hwk swk; group bench"

// identityLikeHeaders are the gate's identity headers with values of the
// sizes a real signed-in request carries (the assertion about 650 bytes),
// for site H: what carrying them costs reverse_proxy and the upstream,
// without any of the gate's work.
var identityLikeHeaders = [][2]string{
	{"X-Sigra-User", siteHUser},
	{"X-Sigra-Email", "bench@example.com"},
	{"X-Sigra-Name", "Bench"},
	{"X-Sigra-Groups", "bench"},
	{"X-Sigra-Amr", "pwd,otp,mfa"},
	{"X-Sigra-Session", strings.Repeat("s", 43)},
	{"X-Sigra-Assertion", strings.Repeat("h", 60) + "." + strings.Repeat("c", 500) + "." + strings.Repeat("g", 86)},
	// The gate keeps its session cookie from the upstream; so does H.
	{"-Cookie", ""},
}

// siteHUser is the user id site H's upstream sees.
const siteHUser = "00000000-0000-7000-8000-00000000000h"

// caddyConf is everything the generated Caddyfile depends on.
type caddyConf struct {
	AdminPort int
	DBPath    string // the bbolt file of the sigra app
	Upstream  string // host:port of the upstream
	Sites     []siteConf
	// NoProxyLog leaves reverse_proxy out of Caddy's default log on every
	// site (-proxy-log=false): Caddy 2.11 JSON-encodes every request
	// header into reverse_proxy's per-request logger whether or not
	// anything is logged, unless no log takes the module at all.
	NoProxyLog bool
}

// caddyfile renders the configuration: one Caddy, every site on its own
// loopback port, all proxying to the same upstream. Only the sites differ,
// so A, B and C share the process, its runtime and its warm-up.
func (c caddyConf) caddyfile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin 127.0.0.1:%d\n\tdefault_bind 127.0.0.1\n\tauto_https off\n\tpersist_config off\n", c.AdminPort)
	if c.NoProxyLog {
		b.WriteString("\tlog default {\n\t\texclude http.handlers.reverse_proxy\n\t}\n")
	}
	if c.needsSigra() {
		fmt.Fprintf(&b, "\tsigra {\n\t\tstorage bbolt %s\n\t}\n", c.DBPath)
	}
	b.WriteString("}\n")
	for _, s := range c.Sites {
		fmt.Fprintf(&b, "\n# site %s\nhttp://127.0.0.1:%d {\n", s.Name, s.Port)
		if s.Gate {
			b.WriteString("\tsigra_portal\n")
			if len(s.Require) == 0 {
				b.WriteString("\tsigra_gate\n")
			} else {
				b.WriteString("\tsigra_gate {\n")
				for _, r := range s.Require {
					fmt.Fprintf(&b, "\t\t%s\n", r)
				}
				b.WriteString("\t}\n")
			}
		}
		if len(s.HeaderUp) == 0 {
			fmt.Fprintf(&b, "\treverse_proxy %s\n}\n", c.Upstream)
			continue
		}
		fmt.Fprintf(&b, "\treverse_proxy %s {\n", c.Upstream)
		for _, h := range s.HeaderUp {
			if strings.HasPrefix(h[0], "-") {
				fmt.Fprintf(&b, "\t\theader_up %s\n", h[0])
				continue
			}
			fmt.Fprintf(&b, "\t\theader_up %s %q\n", h[0], h[1])
		}
		b.WriteString("\t}\n}\n")
	}
	return b.String()
}

func (c caddyConf) needsSigra() bool {
	for _, s := range c.Sites {
		if s.Gate {
			return true
		}
	}
	return false
}

// caddyProc is a running Caddy.
type caddyProc struct {
	cmd     *exec.Cmd
	PID     string
	admin   string
	ports   []int
	logPath string
	exited  chan struct{}
	once    sync.Once
}

// startCaddy writes the Caddyfile into dir and runs bin on it. HOME and
// the XDG directories point into dir, so Caddy's data (keys, the dev mail
// sink, certificates) never touches the user's. procs sets Caddy's
// GOMAXPROCS when positive.
func startCaddy(bin, dir string, conf caddyConf, procs int) (*caddyProc, error) {
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(conf.caddyfile()), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "caddy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HOME="+filepath.Join(dir, "home"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
	)
	if procs > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMAXPROCS=%d", procs))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a Ctrl-C reaches only the harness,
	// which then stops the round and the children in order; SIGKILL from
	// the kernel if the harness dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &caddyProc{
		cmd:     cmd,
		PID:     fmt.Sprint(cmd.Process.Pid),
		admin:   fmt.Sprintf("127.0.0.1:%d", conf.AdminPort),
		logPath: logPath,
		exited:  make(chan struct{}),
	}
	for _, s := range conf.Sites {
		p.ports = append(p.ports, s.Port)
	}
	go func() { cmd.Wait(); close(p.exited) }()
	children.add(p.stop)
	return p, nil
}

// waitReady polls until the admin endpoint answers and every site port
// accepts connections, for at most timeout.
func (p *caddyProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("caddy exited during start-up:\n%s", p.logTail(30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := client.Get("http://" + p.admin + "/config/")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			continue
		}
		up := true
		for _, port := range p.ports {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err != nil {
				up = false
				break
			}
			c.Close()
		}
		if up {
			return nil
		}
	}
	return fmt.Errorf("caddy not ready after %s:\n%s", timeout, p.logTail(30))
}

// stop asks Caddy to shut down (SIGINT: graceful) and kills it after 10s.
func (p *caddyProc) stop() {
	p.once.Do(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// logTail returns the last n lines of Caddy's output.
func (p *caddyProc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkCaddy makes sure bin runs and, when sigra is needed, that it was
// built with this module; it returns `caddy version`.
func checkCaddy(bin string, needSigra bool) (string, error) {
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%w (build it first: make caddy)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ver, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", bin, err)
	}
	if needSigra {
		mods, err := exec.CommandContext(ctx, bin, "list-modules").Output()
		if err != nil {
			return "", fmt.Errorf("%s list-modules: %w", bin, err)
		}
		for _, m := range []string{"sigra", "http.handlers.sigra_portal", "http.handlers.sigra_gate"} {
			if !hasLine(mods, m) {
				return "", fmt.Errorf("%s has no module %s: build it with make caddy", bin, m)
			}
		}
	}
	return strings.TrimSpace(string(ver)), nil
}

func hasLine(b []byte, line string) bool {
	for l := range bytes.SplitSeq(b, []byte("\n")) {
		if string(bytes.TrimSpace(l)) == line {
			return true
		}
	}
	return false
}

// staleSource returns a Go source file of the module that is newer than
// bin, or "" if there is none: a warning that the numbers may not be of
// the code in the work tree.
func staleSource(bin string) string {
	st, err := os.Stat(bin)
	if err != nil {
		return ""
	}
	var newest string
	errStop := errors.New("stop")
	filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bench" || d.Name() == "testdata" || d.Name() == "examples") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.ModTime().After(st.ModTime()) {
			newest = path
			return errStop
		}
		return nil
	})
	return newest
}
