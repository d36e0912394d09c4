// Package freeport hands out loopback TCP ports for the tests and the
// bench, which start servers (Caddy among them) on addresses they must
// name in a config before anything listens there.
package freeport

import (
	"fmt"
	"net"
	"sync"
)

var mu sync.Mutex

// Take returns n distinct loopback ports that were free a moment ago and
// that no earlier call returned, in this process or in any other process
// of this user that is still running.
//
// Both conditions matter because Caddy listens with SO_REUSEPORT: when a
// port it was given is also given to another listener that sets the
// option (a second site, its own admin endpoint, another test package's
// Caddy), both bind without error and the kernel splits the connections
// between them. The kernel readily hands out a port again once its probe
// listener is closed, and a port stays unbound between a test's stopping
// Caddy and starting it again, so asking the kernel alone is not enough:
// each port is also claimed for the life of the process (see claim). A
// process that does not use this package, such as another Caddy on the
// machine, can still take a port before it is used; on loopback that is
// rare.
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
		ok, err := claim(p)
		if err != nil {
			return nil, fmt.Errorf("freeport: %w", err)
		}
		if ok {
			ports = append(ports, p)
		}
	}
	return ports, nil
}
