package freeport

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Ports are never handed out twice, within a call or across calls, even
// though each probe listener is closed at once and the kernel may offer
// its port again.
func TestTakeNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		ports, err := Take(3)
		if err != nil {
			t.Fatal(err)
		}
		if len(ports) != 3 {
			t.Fatalf("Take(3) gave %d ports", len(ports))
		}
		for _, p := range ports {
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
}

func TestTakenPortIsBindable(t *testing.T) {
	ports, err := Take(1)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(ports[0]))
	if err != nil {
		t.Fatalf("binding the port Take returned: %v", err)
	}
	ln.Close()
}

// TestMain doubles as the other process of TestClaimsAcrossProcesses:
// with FREEPORT_CHILD set it claims or takes a port, prints the outcome
// and exits, releasing its claims as any process does.
func TestMain(m *testing.M) {
	switch os.Getenv("FREEPORT_CHILD") {
	case "":
		os.Exit(m.Run())
	case "take":
		ports, err := Take(1)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(ports[0])
	default:
		p, _ := strconv.Atoi(os.Getenv("FREEPORT_CHILD"))
		ok, err := claim(p)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(ok)
	}
	os.Exit(0)
}

// child runs this test binary as another process with FREEPORT_CHILD=arg
// and returns what it printed.
func child(t *testing.T, arg string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FREEPORT_CHILD="+arg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", arg, err, out)
	}
	return strings.TrimSpace(string(out))
}

// A port one process took is not given to another while the first runs
// (two test packages' Caddys would otherwise share it through
// SO_REUSEPORT, as happened across a Caddy restart in e2e), and is free
// to claim again once that process has exited.
func TestClaimsAcrossProcesses(t *testing.T) {
	ports, err := Take(1)
	if err != nil {
		t.Fatal(err)
	}
	if got := child(t, strconv.Itoa(ports[0])); got != "false" {
		t.Errorf("another process claimed port %d, which this one holds: printed %q; want false", ports[0], got)
	}

	q, err := strconv.Atoi(child(t, "take"))
	if err != nil {
		t.Fatalf("child take: %v", err)
	}
	ok, err := claim(q)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Errorf("port %d is still claimed after the process that took it exited", q)
	}
}
