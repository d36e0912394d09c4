package caddymodule

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/sockettest"
)

// An answer still being written when its session ends is cut off at its
// next write, whatever the request said it accepts: a stream read with
// fetch (no Accept: text/event-stream, which would make it a watched
// event stream) as much as a download. Nobody else's is.
func TestAnswerIsCutWhenItsSessionEnds(t *testing.T) {
	e := startSockets(t, "", "")
	ann := e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	other := e.browser()
	other.mustLogin("ann@example.com")
	tok := e.sessionCookie()
	ended := processMetrics().streamsClosed.WithLabelValues("session_ended")
	before := counterValue(t, ended)
	lines := sockettest.Read(t, e.base+"/ws/stream", tok, "")
	events := sockettest.Read(t, e.base+"/ws/stream/events", tok, "*/*")
	// An Upgrade the app does not take leaves an answer like any other.
	upgrade := sockettest.ReadWith(t, e.base+"/ws/stream", tok, http.Header{"Upgrade": {"foo"}, "Connection": {"Upgrade"}})
	theirs := sockettest.Read(t, e.base+"/ws/stream", other.sessionCookie(), "")

	e.signOut()
	lines.MustBeCut("signed out")
	events.MustBeCut("signed out, an event stream asked for without saying so")
	upgrade.MustBeCut("signed out, an answer to an upgrade the app did not take")
	if got := counterValue(t, ended) - before; got != 3 {
		t.Errorf("sigra_streams_closed_total{reason=session_ended} went up by %v; want 3", got)
	}
	theirs.Event("another session's answer after the sign-out")

	if _, err := e.rt().auth.SetDisabled(context.Background(), ann.ID, true); err != nil {
		t.Fatal(err)
	}
	theirs.MustBeCut("ann disabled")
}

// An answer lasts while the gates that let it through would: losing the
// group one requires cuts it off; an answer whose gate asks for no group
// goes on.
func TestAnswerIsCutWhenItsGateWouldRefuse(t *testing.T) {
	e := startSockets(t, "", "{\n\t\tgroup staff\n\t}")
	u := e.addUser("ann@example.com", "staff", "dev")
	e.mustLogin("ann@example.com")
	tok := e.sessionCookie()
	staff, free := sockettest.Read(t, e.base+"/ws/gated/stream", tok, ""), sockettest.Read(t, e.base+"/ws/stream", tok, "")
	if _, err := e.rt().auth.UpdateUser(context.Background(), u.ID, func(u *authcore.User) error { u.Groups = []string{"dev"}; return nil }); err != nil {
		t.Fatal(err)
	}
	staff.MustBeCut("ann left staff")
	free.Event("the answer of a gate with no group, after the change")
}

// An answer being written is a use of its session, as a request is, so
// that a long download does not idle its session out; an event stream's
// writes are not, as a watched one's are not, so the session of a page
// left open with one idles out.
func TestAnswerInProgressIsAUseOfItsSession(t *testing.T) {
	for _, c := range []struct {
		path string
		use  bool
	}{{"/ws/stream", true}, {"/ws/stream/events", false}} {
		t.Run(c.path, func(t *testing.T) {
			fastRecheck(t)
			fake := useFakeClock(t)
			e := startSockets(t, "session {\n\t\t\tidle 30m\n\t\t}", "")
			e.addUser("ann@example.com")
			e.mustLogin("ann@example.com")
			tok := e.sessionCookie()
			s := sockettest.Read(t, e.base+c.path, tok, "")
			fake.Advance(20 * time.Minute)
			s.Event("20m on")
			fake.Advance(20 * time.Minute)
			if !c.use {
				s.MustBeCut("an event stream, 40m after the last request")
				if got := e.statusAs(tok, "/x"); got != http.StatusUnauthorized {
					t.Errorf("the session after 40m of an event stream: status %d; want 401", got)
				}
				return
			}
			s.Event("40m on, 20m after the last look")
			if got := e.statusAs(tok, "/x"); got != http.StatusOK {
				t.Errorf("the session after 40m of a download: status %d; want 200", got)
			}
		})
	}
}

// An answer's session ends at its lifetime, in use or not.
func TestAnswerEndsWithItsSessionsLifetime(t *testing.T) {
	fastRecheck(t)
	fake := useFakeClock(t)
	e := startSockets(t, "session {\n\t\t\tlifetime 1h\n\t\t}", "")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	s := sockettest.Read(t, e.base+"/ws/stream", e.sessionCookie(), "")
	for range 3 {
		fake.Advance(19 * time.Minute)
		s.Event("within the lifetime")
	}
	fake.Advance(4 * time.Minute)
	s.MustBeCut("past the session's lifetime")
}

// A file that file_server sends is looked at between chunks of it
// (sendfile takes a limited file): a download is cut off too once its
// session ends.
func TestFileDownloadIsCutWhenItsSessionEnds(t *testing.T) {
	dir := t.TempDir()
	const size = 48 << 20
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startCaddy(t, "", "sigra_gate\n\thandle_path /files/* {\n\t\troot * "+dir+"\n\t\tfile_server\n\t}")
	e.addUser("ann@example.com")
	e.mustLogin("ann@example.com")
	req, _ := http.NewRequest(http.MethodGet, e.base+"/files/big.bin", nil)
	req.AddCookie(&http.Cookie{Name: "sigra_session", Value: e.sessionCookie()})
	resp, err := (&http.Transport{}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
		t.Fatalf("download: status %d, length %d; want 200 and %d", resp.StatusCode, resp.ContentLength, size)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatalf("the first MiB: %v", err)
	}
	e.signOut()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n+1<<20 >= size {
		t.Errorf("the download after the sign-out: %d more bytes, %v; want it cut off short", n, err)
	}
}
