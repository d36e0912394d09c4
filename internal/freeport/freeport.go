// Package freeport hands out loopback TCP ports for the tests and the
// bench, which start servers (Caddy among them) on addresses they must
// name in a config before anything listens there.
package freeport

import (
	"fmt"
	"net"
	"sync"
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Take returns n distinct loopback ports that were free a moment ago and
// that no earlier call in this process returned.
//
// Both conditions matter because Caddy listens with SO_REUSEPORT: when a
// port it was given is also given to another of our listeners that sets
// the option (a second site, its own admin endpoint, another Caddy), both
// bind without error and the kernel splits the connections between them.
// The kernel readily hands out a port again once its probe listener is
// closed, so asking it alone is not enough. Another process can still
// take a port before it is used; on loopback that is rare.
func Take(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			return nil, fmt.Errorf("freeport: no fresh loopback port after %d tries", tries)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("freeport: %w", err)
		}
		// Held until all are chosen, so the kernel does not repeat one.
		defer ln.Close()
		p := ln.Addr().(*net.TCPAddr).Port
		if given[p] {
			continue
		}
		given[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}
