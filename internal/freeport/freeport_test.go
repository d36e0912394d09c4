package freeport

import (
	"net"
	"strconv"
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
