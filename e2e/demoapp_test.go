package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoApp: the demo app of `make demo` behind the real gateway shows a
// signed-in user's headers and verifies the assertion against the
// gateway's JWKS.
func TestDemoApp(t *testing.T) {
	t.Parallel()
	bin := buildDemoApp(t)

	appAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	g := newGateway(t, gatewayOptions{bootstrap: "admin@localhost", backend: appAddr})

	ctx, cancel := context.WithCancel(context.Background())
	app := exec.CommandContext(ctx, bin, "-listen", appAddr, "-origin", g.base)
	app.Cancel = func() error { return app.Process.Signal(syscall.SIGTERM) }
	app.WaitDelay = 5 * time.Second
	appOut := new(syncBuffer)
	app.Stdout, app.Stderr = appOut, appOut
	if err := app.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	appDone := make(chan struct{})
	go func() { _ = app.Wait(); close(appDone) }()
	t.Cleanup(func() { cancel(); <-appDone })

	// The demo app answers anonymous requests too.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + appAddr + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo app did not answer within 10s: %v\n%s", err, appOut)
		}
		time.Sleep(50 * time.Millisecond)
	}

	g.start()
	email, password := firstAdmin(t, g.proc)
	b := g.browser()
	html := http.Header{"Accept": {"text/html"}}

	resp, body := b.get("/public/", html)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "none: anonymous") {
		t.Errorf("anonymous /public/: status %d; want 200 and the demo app's anonymous page\n%s\n%s", resp.StatusCode, body, g.logs())
	}

	b.mustLogin(email, password, "/hello")
	resp, body = b.get("/hello", html)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /hello signed in: status %d\n%s\n%s\n--- demo app:\n%s", resp.StatusCode, body, g.logs(), appOut)
	}
	for _, want := range []string{"Assertion verified", "X-Sigra-Email", "admin@localhost", "X-Sigra-Groups", "admins"} {
		if !strings.Contains(body, want) {
			t.Errorf("the demo app's page does not contain %q\n%s\n--- demo app:\n%s", want, body, appOut)
		}
	}
}

func buildDemoApp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "demoapp")
	build := exec.Command("go", "build", "-o", bin, "./examples/demoapp")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/demoapp: %v\n%s", err, out)
	}
	return bin
}

// `make demo` starts the gateway only once the demo app says it listens
// (-ready): with its port taken, the app exits saying so, rather than
// the gateway sending signed-in users' identity headers to whatever holds
// the port. A port the gateway needs (-need-free) that is taken stops it
// too: Caddy would share it with another Caddy without a word.
func TestDemoAppRefusesTakenPorts(t *testing.T) {
	t.Parallel()
	bin := buildDemoApp(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	taken := held.Addr().String()
	free := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"its own port taken", []string{"-listen", taken}, "the demo app cannot listen on " + taken},
		{"the gateway's port taken", []string{"-listen", free, "-need-free", taken}, taken + " is taken"},
	} {
		ready := filepath.Join(t.TempDir(), "ready")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, append(tc.args, "-ready", ready)...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: %v; want it to exit saying %q\n%s", tc.name, err, tc.want, out)
		}
		if _, err := os.Stat(ready); err == nil {
			t.Errorf("%s: the ready file was made", tc.name)
		}
	}

	// Free, it listens, then makes the ready file.
	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	app := exec.CommandContext(ctx, bin, "-listen", free, "-need-free", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "-ready", ready)
	if err := app.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	defer func() { cancel(); _ = app.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no ready file within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := net.Dial("tcp", free)
	if err != nil {
		t.Fatalf("the ready file is there but the app does not listen: %v", err)
	}
	c.Close()
}
