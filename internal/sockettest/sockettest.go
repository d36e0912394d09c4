// Package sockettest is an app for tests of upgraded connections: it
// takes WebSocket upgrades and echoes what the client sends. Frames are
// the app's business and a proxy passes bytes, so it echoes bytes.
package sockettest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Start runs the app on loopback until the test ends and returns its
// address. A request that asks for no WebSocket gets "app".
func Start(t testing.TB) string {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			io.WriteString(w, "app")
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		if brw.Flush() == nil {
			io.Copy(c, brw)
		}
	}))
	t.Cleanup(func() {
		app.CloseClientConnections()
		app.Close()
	})
	return app.Listener.Addr().String()
}
