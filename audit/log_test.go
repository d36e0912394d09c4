package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

var hookSecret = []byte("0123456789abcdef-secret")

func TestRecordFillsIDAndTime(t *testing.T) {
	ft := newFakeTime()
	st := newMemStore()
	l := newTestLog(t, st, ft, Options{})

	got := mustRecord(t, l, sampleRow("auth.logout"))

	id, err := uuid.Parse(got.ID)
	if err != nil || id.Version() != 7 {
		t.Fatalf("id = %q; want a UUIDv7", got.ID)
	}
	if !got.OccurredAt.Equal(t0) {
		t.Fatalf("occurred_at = %v; want the clock's %v", got.OccurredAt, t0)
	}
	if n := st.rowCount(); n != 1 {
		t.Fatalf("stored rows = %d; want 1", n)
	}
}

func TestRecordKeepsGivenIDAndTime(t *testing.T) {
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{})
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", -3600))
	r := sampleRow("billing.subscription.updated")
	r.ID, r.OccurredAt, r.ActorType = "0193a4c8-7b1e-7cc3-9d2a-5f0e8b4c1a22", at, ActorBilling

	got := mustRecord(t, l, r)
	if got.ID != r.ID || !got.OccurredAt.Equal(at) || got.OccurredAt.Location() != time.UTC {
		t.Fatalf("stored id %q at %v; want %q at %v UTC", got.ID, got.OccurredAt, r.ID, at.UTC())
	}
}

func TestRecordRejectsInvalidRows(t *testing.T) {
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{})
	for _, r := range []Row{
		{Action: "auth.logout", ActorType: "robot"},
		{Action: "logout", ActorType: ActorUser},
		{Action: "auth.logout", ActorType: ActorUser, ID: "not-a-uuid"},
	} {
		if err := l.Record(context.Background(), r); !errors.Is(err, ErrInvalidRow) {
			t.Errorf("Record(%+v) = %v; want ErrInvalidRow", r, err)
		}
	}
	if n := st.rowCount(); n != 0 {
		t.Fatalf("stored rows = %d; want 0", n)
	}
}

func TestRecordIsIdempotent(t *testing.T) {
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{Webhooks: []WebhookConfig{
		{URL: "https://hooks.example.com/a", Secret: hookSecret, Actions: []string{"auth.*"}},
	}})
	sub, err := l.Subscribe(nil, 10)
	if err != nil {
		t.Fatal(err)
	}

	r := sampleRow("auth.login.success")
	r.ID, r.OccurredAt = uuid.NewString(), t0
	mustRecord(t, l, r)
	mustRecord(t, l, r) // a retried request, a replayed event

	// Same id, other time: a different row by the contract (id + occurred_at).
	other := r
	other.OccurredAt = t0.Add(time.Second)
	mustRecord(t, l, other)
	l.Close()

	if n := st.rowCount(); n != 2 {
		t.Errorf("stored rows = %d; want 2", n)
	}
	if pending, _, _ := st.AuditOutboxStats(context.Background()); pending != 2 {
		t.Errorf("pending deliveries = %d; want 2 (one per distinct row)", pending)
	}
	var seen []time.Time
	for r := range sub.C {
		seen = append(seen, r.OccurredAt)
	}
	if len(seen) != 2 {
		t.Errorf("subscriber saw %d rows; want 2 (duplicates are not fanned out)", len(seen))
	}
}

func TestRecordEnqueuesMatchingWebhooksOnly(t *testing.T) {
	st := newMemStore()
	hooks := []WebhookConfig{
		{URL: "https://a.example.com/", Secret: hookSecret, Actions: []string{"auth.*", "mfa.*"}},
		{URL: "https://b.example.com/", Secret: hookSecret, Actions: []string{"billing.*"}},
		{URL: "https://c.example.com/", Secret: hookSecret, Actions: []string{"*"}},
	}
	l := newTestLog(t, st, newFakeTime(), Options{Webhooks: hooks})
	tests := []struct {
		action string
		want   []string // webhook hosts
	}{
		{"auth.login.success", []string{"a", "c"}},
		{"mfa.totp.enrolled", []string{"a", "c"}},
		{"billing.subscription.updated", []string{"b", "c"}},
		{"authz.denied", []string{"c"}},
	}
	idOf := map[string]string{}
	for i, h := range hooks {
		idOf[hooks[i].ID()] = string(h.URL[8])
	}
	for _, tt := range tests {
		r := mustRecord(t, l, sampleRow(tt.action))
		var got []string
		st.mu.Lock()
		for k := range st.pending {
			if k.pos.ID.String() == r.ID {
				got = append(got, idOf[k.hook])
			}
		}
		st.mu.Unlock()
		slices.Sort(got)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s went to %v; want %v", tt.action, got, tt.want)
		}
	}
}

// gateStore holds the first AppendAudit until released, so the test can
// line up writers behind it.
type gateStore struct {
	*memStore
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	sizes   []int
}

func (g *gateStore) AppendAudit(ctx context.Context, es []Entry) ([]bool, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	g.mu.Lock()
	g.sizes = append(g.sizes, len(es))
	g.mu.Unlock()
	return g.memStore.AppendAudit(ctx, es)
}

func TestRecordSharesCommitsUnderLoad(t *testing.T) {
	g := &gateStore{memStore: newMemStore(), entered: make(chan struct{}), release: make(chan struct{})}
	l := newTestLog(t, g, newFakeTime(), Options{})

	errs := make(chan error, 11)
	go func() { errs <- l.Record(context.Background(), sampleRow("auth.logout")) }()
	<-g.entered // the first commit is in progress
	for range 10 {
		go func() { errs <- l.Record(context.Background(), sampleRow("auth.logout")) }()
	}
	// Wait until all ten are queued behind the running commit.
	deadline := time.Now().Add(waitLimit)
	for len(l.reqs) < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("queued = %d; want 10", len(l.reqs))
		}
		runtime.Gosched()
	}
	close(g.release)
	for range 11 {
		if err := recv(t, errs); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	if fmt.Sprint(g.sizes) != "[1 10]" {
		t.Fatalf("commit sizes = %v; want [1 10]", g.sizes)
	}
}

func TestRecordReturnsStorageErrors(t *testing.T) {
	st := newMemStore()
	st.failAppend = errBoom
	l := newTestLog(t, st, newFakeTime(), Options{})
	sub, _ := l.Subscribe(nil, 1)

	err := l.Record(context.Background(), sampleRow("auth.logout"))
	if !errors.Is(err, errBoom) {
		t.Fatalf("Record = %v; want the store's error", err)
	}
	l.Close()
	if _, ok := <-sub.C; ok {
		t.Fatal("a row that was not stored reached a subscriber")
	}
}

func TestRecordAfterClose(t *testing.T) {
	l := newTestLog(t, newMemStore(), newFakeTime(), Options{})
	l.Close()
	if err := l.Record(context.Background(), sampleRow("auth.logout")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close = %v; want ErrClosed", err)
	}
	l.Close() // idempotent
}

// An ended context keeps a row out, and says so, only before the row is
// queued; a queued row is committed and Record says it was, whatever the
// context does meanwhile. Either way the answer is the truth: a caller
// writing the row of a change never hears "not written" for a row that
// is there, nor "written" for one that is not.
func TestRecordAnswersWhatHappened(t *testing.T) {
	g := &gateStore{memStore: newMemStore(), entered: make(chan struct{}), release: make(chan struct{})}
	l := newTestLog(t, g, newFakeTime(), Options{})
	first := make(chan error, 1)
	go func() { first <- l.Record(context.Background(), sampleRow("auth.logout")) }()
	<-g.entered // the first commit is held, so the queue has room

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for range 50 {
		if err := l.Record(ended, sampleRow("auth.login.failure")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Record with an ended context = %v; want context.Canceled", err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() { queued <- l.Record(ctx, sampleRow("session.revoked")) }()
	deadline := time.Now().Add(waitLimit)
	for len(l.reqs) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the row was never queued")
		}
		runtime.Gosched()
	}
	cancel() // the client hangs up while the row waits for its commit
	close(g.release)
	if err := recv(t, first); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, queued); err != nil {
		t.Errorf("Record of a queued row whose context then ended = %v; want nil (it is committed)", err)
	}
	got := map[string]int{}
	g.memStore.mu.Lock()
	for _, r := range g.rows {
		got[r.Action]++
	}
	g.memStore.mu.Unlock()
	if got["auth.login.failure"] != 0 || got["session.revoked"] != 1 || got["auth.logout"] != 1 {
		t.Errorf("stored rows by action %v; want none of the 50 refused, the queued one and the first", got)
	}
}

func TestLoggerReceivesEveryRow(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	l, err := New(logger, newFakeTime(), newMemStore(), Options{ErrorLog: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r := sampleRow("auth.login.success")
	r.SubjectID, r.IP, r.Metadata = "u1", "203.0.113.7", map[string]string{"method": "passkey"}
	got := mustRecord(t, l, r)
	mustRecord(t, l, sampleRow("auth.logout"))
	l.Close() // drains the fan-out

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %d lines; want 2:\n%s", len(lines), buf.String())
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"msg": "audit", "id": got.ID, "occurred_at": "2026-11-22T10:00:00.123456789Z",
		"action": "auth.login.success", "actor_id": "u1", "actor_type": "user", "subject_id": "u1",
		"ip": "203.0.113.7", "outcome": "success",
	}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("log field %s = %v; want %v", k, e[k], v)
		}
	}
	if m, _ := e["metadata"].(map[string]any); m["method"] != "passkey" {
		t.Errorf("log field metadata = %v; want {method: passkey}", e["metadata"])
	}
}

type panicHandler struct{ slog.Handler }

func (panicHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (panicHandler) Handle(context.Context, slog.Record) error { panic("logger exploded") }

func TestPanickingLoggerDoesNotBreakRecording(t *testing.T) {
	l, err := New(slog.New(panicHandler{}), newFakeTime(), newMemStore(), Options{ErrorLog: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sub, _ := l.Subscribe([]string{"*"}, 4)
	for range 3 {
		mustRecord(t, l, sampleRow("auth.logout"))
	}
	for range 3 {
		recv(t, sub.C)
	}
}

func TestSubscribePatterns(t *testing.T) {
	l := newTestLog(t, newMemStore(), newFakeTime(), Options{})
	subscribe := func(ps ...string) *Subscription {
		t.Helper()
		s, err := l.Subscribe(ps, 100)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	subs := map[string]*Subscription{
		"auth.*":        subscribe("auth.*"),
		"mfa.*":         subscribe("mfa.*"),
		"exact logout":  subscribe("auth.logout"),
		"*":             subscribe("*"),
		"none given":    subscribe(),
		"auth or mfa":   subscribe("auth.*", "mfa.*"),
		"billing only":  subscribe("billing.*"),
		"nothing seen":  subscribe("passkey.clone_detected"),
		"deeper prefix": subscribe("mfa.challenge.*"),
	}
	actions := []string{"auth.login.success", "auth.logout", "mfa.totp.enrolled", "mfa.challenge.failure", "authz.denied", "billing.seat.assigned"}
	for _, a := range actions {
		mustRecord(t, l, sampleRow(a))
	}
	l.Close()
	want := map[string]string{
		"auth.*":        "[auth.login.success auth.logout]",
		"mfa.*":         "[mfa.totp.enrolled mfa.challenge.failure]",
		"exact logout":  "[auth.logout]",
		"*":             fmt.Sprint(actions),
		"none given":    fmt.Sprint(actions),
		"auth or mfa":   "[auth.login.success auth.logout mfa.totp.enrolled mfa.challenge.failure]",
		"billing only":  "[billing.seat.assigned]",
		"nothing seen":  "[]",
		"deeper prefix": "[mfa.challenge.failure]",
	}
	for name, s := range subs {
		got := []string{}
		for r := range s.C {
			got = append(got, r.Action)
		}
		if fmt.Sprint(got) != want[name] {
			t.Errorf("subscriber %s got %v; want %s", name, got, want[name])
		}
	}
}

func TestSubscribeRejectsBadPatterns(t *testing.T) {
	l := newTestLog(t, newMemStore(), newFakeTime(), Options{})
	if _, err := l.Subscribe([]string{"auth.*", "*.failure"}, 1); !errors.Is(err, ErrBadPattern) {
		t.Fatalf("Subscribe = %v; want ErrBadPattern", err)
	}
}

func TestSlowSubscriberNeverBlocksRecording(t *testing.T) {
	l := newTestLog(t, newMemStore(), newFakeTime(), Options{})
	slow, _ := l.Subscribe(nil, 1) // never read until the end
	for range 5 {
		mustRecord(t, l, sampleRow("auth.logout")) // would hang if the tap blocked
	}
	l.Close()
	if got := slow.Dropped(); got != 4 {
		t.Errorf("Dropped() = %d; want 4 (buffer 1, five rows)", got)
	}
	st, _ := l.Stats(context.Background())
	if st.Dropped != 4 {
		t.Errorf("Stats().Dropped = %d; want 4", st.Dropped)
	}
	if n := len(slow.C); n != 1 {
		t.Errorf("buffered rows = %d; want 1", n)
	}
}

func TestSubscriptionClose(t *testing.T) {
	l := newTestLog(t, newMemStore(), newFakeTime(), Options{})
	s, _ := l.Subscribe(nil, 10)
	s.Close()
	s.Close() // idempotent
	mustRecord(t, l, sampleRow("auth.logout"))
	if _, ok := <-s.C; ok {
		t.Fatal("a closed subscription received a row")
	}
	l.Close()
	late, _ := l.Subscribe(nil, 1)
	if _, ok := <-late.C; ok {
		t.Fatal("a subscription made after Close is open")
	}
	late.Close()
}

func TestConcurrentRecording(t *testing.T) {
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{Webhooks: []WebhookConfig{
		{URL: "https://hooks.example.com/", Secret: hookSecret, Actions: []string{"mfa.*"}},
	}})
	sub, _ := l.Subscribe([]string{"*"}, 2000)
	// The first commit is held until other rows are waiting, as they do
	// behind a real disk sync; the next commit must then take them
	// together. (Left alone, the instant memStore may commit each row
	// before the next one arrives on a busy machine.)
	var first sync.Once
	st.beforeAppend = func() {
		first.Do(func() {
			for deadline := time.Now().Add(10 * time.Second); len(l.reqs) < 2 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		})
	}
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				a := "auth.logout"
				if i%3 == 0 {
					a = "mfa.totp.removed"
				}
				r := sampleRow(a)
				r.ActorID = fmt.Sprintf("u%d", w)
				if err := l.Record(context.Background(), r); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	l.Close()
	if n := st.rowCount(); n != 960 {
		t.Errorf("stored rows = %d; want 960", n)
	}
	if pending, _, _ := st.AuditOutboxStats(context.Background()); pending != 320 {
		t.Errorf("pending deliveries = %d; want 320", pending)
	}
	if n := len(sub.C); n != 960 {
		t.Errorf("subscriber got %d rows; want 960", n)
	}
	if st.appends >= 960 {
		t.Errorf("%d commits for 960 concurrent rows; want shared commits", st.appends)
	}
}

func TestNewValidatesWebhooks(t *testing.T) {
	good := WebhookConfig{URL: "https://hooks.example.com/sigra", Secret: hookSecret, Actions: []string{"auth.*"}}
	with := func(f func(*WebhookConfig)) WebhookConfig { c := good; f(&c); return c }
	tests := []struct {
		name  string
		hooks []WebhookConfig
		want  string // "" for valid
	}{
		{"https", []WebhookConfig{good}, ""},
		{"http with port and path", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "http://127.0.0.1:8080/in" })}, ""},
		{"several", []WebhookConfig{good, with(func(c *WebhookConfig) { c.URL = "https://other.example.com/" })}, ""},
		{"ftp scheme", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "ftp://hooks.example.com/" })}, "scheme"},
		{"relative", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "/hooks" })}, "scheme"},
		{"no host", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https:///path" })}, "no host"},
		{"port only", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://:443/" })}, "no host"},
		{"unparseable", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://[::1" })}, "url"},
		{"short secret", []WebhookConfig{with(func(c *WebhookConfig) { c.Secret = []byte("short") })}, "secret"},
		{"no secret", []WebhookConfig{with(func(c *WebhookConfig) { c.Secret = nil })}, "secret"},
		{"no actions", []WebhookConfig{with(func(c *WebhookConfig) { c.Actions = nil })}, "no actions"},
		{"bad pattern", []WebhookConfig{with(func(c *WebhookConfig) { c.Actions = []string{"*.failure"} })}, "pattern"},
		{"duplicate", []WebhookConfig{good, good}, "twice"},
		{"duplicate, cased otherwise", []WebhookConfig{good, with(func(c *WebhookConfig) { c.URL = "HTTPS://Hooks.Example.com/sigra" })}, "twice"},
		{"same host, another path", []WebhookConfig{good, with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com/Sigra" })}, ""},
		// Spellings of one URL are one receiver, sent every row twice.
		{"duplicate, default port", []WebhookConfig{good, with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com:443/sigra" })}, "twice"},
		{"duplicate, no path and /", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "http://127.0.0.1:9" }), with(func(c *WebhookConfig) { c.URL = "http://127.0.0.1:9/" })}, "twice"},
		{"duplicate, empty query", []WebhookConfig{good, with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com/sigra?" })}, "twice"},
		{"duplicate, an unreserved character escaped", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com/~sigra" }), with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com/%7esigra" })}, "twice"},
		{"duplicate, escapes in either case", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com/a%2fb" }), with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com/a%2Fb" })}, "twice"},
		{"an escaped slash is another path", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com/a%2Fb" }), with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com/a/b" })}, ""},
		{"another port", []WebhookConfig{good, with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com:8443/sigra" })}, ""},
		// URLs no delivery could ever reach.
		{"port out of range", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com:99999/sigra" })}, `port "99999" is not from 1 to 65535`},
		{"port zero", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com:0/" })}, `port "0"`},
		{"empty port", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com:/" })}, `port ""`},
		{"empty label", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://hooks..example.com/" })}, `"hooks..example.com" is not a host name`},
		{"label starting with -", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://-bad-.example.com/" })}, "is not a host name"},
		{"container name and IPv6", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "http://sigra_hooks:8080/in" }), with(func(c *WebhookConfig) { c.URL = "http://[::1]:8080/in" })}, ""},
		{"IPv6 with a zone, a name in another script, a trailing dot", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "http://[fe80::1%25eth0]:9000/" }),
			with(func(c *WebhookConfig) { c.URL = "https://bücher.example/in" }), with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com./in" })}, ""},
		{"duplicate, trailing dot", []WebhookConfig{good, with(func(c *WebhookConfig) { c.URL = "https://hooks.example.com./sigra" })}, "twice"},
		{"duplicate IPv6, default port", []WebhookConfig{with(func(c *WebhookConfig) { c.URL = "https://[::1]/in" }), with(func(c *WebhookConfig) { c.URL = "https://[::1]:443/in" })}, "twice"},
		{"empty pattern", []WebhookConfig{with(func(c *WebhookConfig) { c.Actions = []string{"auth.*", " "} })}, "empty action pattern"},
		{"password redacted in errors", []WebhookConfig{with(func(c *WebhookConfig) {
			c.URL, c.Secret = "https://user:hunter2@hooks.example.com/", nil
		})}, "xxxxx"},
		{"query token redacted in errors", []WebhookConfig{with(func(c *WebhookConfig) {
			c.URL, c.Secret = "https://hooks.example.com/in?token=hunter2", nil
		})}, "hooks.example.com/in?xxxxx"},
		{"user-only credential redacted in errors", []WebhookConfig{with(func(c *WebhookConfig) {
			c.URL, c.Secret = "https://hunter2@hooks.example.com/", nil
		})}, "xxxxx@hooks.example.com"},
		{"unparseable URL not echoed", []WebhookConfig{with(func(c *WebhookConfig) {
			c.URL = "https://user:hunter2@[::1/?token=hunter2"
		})}, "url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(nil, nil, newMemStore(), Options{Webhooks: tt.hooks})
			// Config layers check with ValidateWebhooks: the same answer.
			if verr := ValidateWebhooks(tt.hooks); fmt.Sprint(verr) != fmt.Sprint(err) {
				t.Errorf("ValidateWebhooks = %v; New = %v", verr, err)
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New = %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrBadWebhook) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v; want ErrBadWebhook mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error %q leaks the URL's password", err)
			}
		})
	}
}

// Webhook URLs reach logs, config errors and the admin API; a
// credential in the userinfo, the query or the fragment must not.
func TestRedactURLHidesCredentials(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "https://hooks.example.com/sigra", "https://hooks.example.com/sigra"},
		{"password", "https://user:hunter2@hooks.example.com/in", "https://xxxxx@hooks.example.com/in"},
		{"user only (a token as user name)", "https://hunter2@hooks.example.com/in", "https://xxxxx@hooks.example.com/in"},
		{"query token", "https://hooks.example.com/in?token=hunter2&v=1", "https://hooks.example.com/in?xxxxx"},
		{"bare query", "https://hooks.example.com/in?hunter2", "https://hooks.example.com/in?xxxxx"},
		{"fragment", "https://hooks.example.com/in#hunter2", "https://hooks.example.com/in#xxxxx"},
		{"all at once", "http://u:hunter2@127.0.0.1:8080/in?sig=hunter2#hunter2", "http://xxxxx@127.0.0.1:8080/in?xxxxx#xxxxx"},
		{"unparseable", "https://u:hunter2@[::1/?token=hunter2", "(unparseable URL)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RedactURL(tt.in); got != tt.want {
				t.Fatalf("RedactURL(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestWebhookIDIsStable(t *testing.T) {
	a := WebhookConfig{URL: "https://hooks.example.com/sigra"}
	b := WebhookConfig{URL: "https://hooks.example.com/sigra", Actions: []string{"*"}, Secret: []byte("rotated")}
	if a.ID() != b.ID() || len(a.ID()) != 16 {
		t.Fatalf("ID() = %q and %q; want the same 16 hex characters for the same URL", a.ID(), b.ID())
	}
}

// RecordWith hands the store the change with the row: run, they are
// stored together; refused, the row is not stored and the change's
// error comes back.
func TestRecordWith(t *testing.T) {
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{})
	ctx := context.Background()
	ran := 0
	if err := l.RecordWith(ctx, sampleRow("account.deletion_execute"), func(tx any) error {
		if tx != any(st) {
			t.Errorf("the change was given %T; want the store's transaction", tx)
		}
		ran++
		return nil
	}); err != nil || ran != 1 {
		t.Fatalf("RecordWith = %v, the change ran %d times; want it stored, the change run once", err, ran)
	}
	refused := errors.New("the only admin")
	if err := l.RecordWith(ctx, sampleRow("account.deletion_execute"), func(any) error { return refused }); !errors.Is(err, refused) {
		t.Errorf("RecordWith of a refused change = %v; want its error", err)
	}
	st.mu.Lock()
	n := len(st.rows)
	st.mu.Unlock()
	if n != 1 {
		t.Errorf("%d rows; want the first alone", n)
	}
	if err := l.RecordWith(ctx, sampleRow("auth.logout"), nil); !errors.Is(err, ErrInvalidRow) {
		t.Errorf("RecordWith without a change = %v; want ErrInvalidRow", err)
	}
}

// recordBatchWithRefusals holds the first commit (one row) until
// refusing+2 more requests queue behind it, so that they share the next
// batch: two rows, and refusing RecordWiths whose changes refuse
// (counting their runs in runs). hook, when set, runs at every later
// commit with the store and the commit's number (2 for the shared
// batch). It checks that the refusals alone failed and the three other
// rows are stored.
func recordBatchWithRefusals(t *testing.T, refusing int, runs *atomic.Int32, hook func(st *memStore, call int)) *memStore {
	t.Helper()
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{})
	ctx := context.Background()
	started := make(chan struct{})
	calls := 0
	st.beforeAppend = func() {
		calls++
		if calls == 1 {
			close(started)
			for deadline := time.Now().Add(10 * time.Second); len(l.reqs) < refusing+2 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		} else if hook != nil {
			hook(st, calls)
		}
	}
	errs := make(chan error, refusing+3)
	go func() { errs <- l.Record(ctx, sampleRow("auth.logout")) }()
	<-started // the first commit is held while the others queue
	refused := errors.New("the only admin")
	for range refusing {
		go func() {
			errs <- l.RecordWith(ctx, sampleRow("account.deletion_execute"), func(any) error { runs.Add(1); return refused })
		}()
	}
	for range 2 {
		go func() { errs <- l.Record(ctx, sampleRow("auth.logout")) }()
	}
	failed := 0
	for range refusing + 3 {
		if err := <-errs; err != nil {
			if !errors.Is(err, refused) {
				t.Errorf("error %v; want the refused changes' alone", err)
			}
			failed++
		}
	}
	if failed != refusing {
		t.Fatalf("%d requests failed; want the %d refused changes", failed, refusing)
	}
	if n := st.rowCount(); n != 3 {
		t.Errorf("%d rows; want the three without a refused change", n)
	}
	return st
}

// A refused change in a shared commit keeps that commit out; the store
// names the entry to blame, and the log commits the others again at once
// without it, instead of one commit per row (a burst of disk syncs for
// everybody who shared the batch).
func TestRecordWithRefusedInABatch(t *testing.T) {
	var runs atomic.Int32
	st := recordBatchWithRefusals(t, 1, &runs, nil)
	st.mu.Lock()
	appends := st.appends
	st.mu.Unlock()
	if appends != 3 {
		t.Errorf("%d commits; want 3: the first row's, the batch the refusal kept out, and that batch again without it", appends)
	}
}

// Each refusal the store names is taken out in turn, up to maxNarrow;
// with more, the batch goes row by row, so a batch full of refusals
// costs a bounded number of extra commits before that.
func TestRecordWithRefusalsInABatch(t *testing.T) {
	for _, tc := range []struct {
		refusing, commits int
		why               string
	}{
		{2, 4, "the first row's, the batch, without one refusal, without both"},
		{maxNarrow, 2 + maxNarrow, "the first row's, the batch, and one without each refusal in turn"},
		{maxNarrow + 1, 2 + maxNarrow + maxNarrow + 3, "the first row's, the batch, maxNarrow tries, then one per row"},
	} {
		var runs atomic.Int32
		st := recordBatchWithRefusals(t, tc.refusing, &runs, nil)
		st.mu.Lock()
		appends := st.appends
		st.mu.Unlock()
		if appends != tc.commits {
			t.Errorf("%d refusals: %d commits; want %d: %s", tc.refusing, appends, tc.commits, tc.why)
		}
	}
}

// A refusal stands only when the rest of its batch then commits: it was
// judged beside their changes. When the rest fails (the disk, say), every
// entry is committed again on its own, the refused one included, and
// judged against what is stored.
func TestRecordWithRefusalJudgedAgainWhenTheRestFails(t *testing.T) {
	var runs atomic.Int32
	recordBatchWithRefusals(t, 1, &runs, func(st *memStore, call int) {
		switch call {
		case 3: // the batch again without the refused entry
			st.failAppend = errors.New("disk full")
		case 4:
			st.failAppend = nil
		}
	})
	if n := runs.Load(); n != 2 {
		t.Errorf("the refused change ran %d times; want twice: in the batch, and alone once the rest failed", n)
	}
}

// RecordAll stores rows that go together in one commit, or none of
// them: a failure that starts a ban costs no commit more than another.
func TestRecordAll(t *testing.T) {
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{})
	ctx := context.Background()
	if err := l.RecordAll(ctx, []Row{sampleRow("auth.lockout"), sampleRow("auth.login.failure")}); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	rows, appends := len(st.rows), st.appends
	st.mu.Unlock()
	if rows != 2 || appends != 1 {
		t.Errorf("%d rows in %d commits; want 2 in 1", rows, appends)
	}
	bad := sampleRow("auth.login.failure")
	bad.ActorType = "robot"
	if err := l.RecordAll(ctx, []Row{sampleRow("auth.lockout"), bad}); !errors.Is(err, ErrInvalidRow) {
		t.Errorf("RecordAll with an invalid second row = %v; want ErrInvalidRow", err)
	}
	if n := st.rowCount(); n != 2 {
		t.Errorf("%d rows after an invalid row; want none of its request's rows", n)
	}
}

// RecordAllWith stores several rows and the change they tell of in one
// commit, or none of them.
func TestRecordAllWith(t *testing.T) {
	st := newMemStore()
	l := newTestLog(t, st, newFakeTime(), Options{})
	ctx := context.Background()
	sub, err := l.Subscribe(nil, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rows := []Row{sampleRow("mfa.challenge.success"), sampleRow("mfa.recovery_code.used"), sampleRow("auth.login.success")}
	ran := 0
	if err := l.RecordAllWith(ctx, rows, func(any) error { ran++; return nil }); err != nil || ran != 1 {
		t.Fatalf("RecordAllWith = %v, the change ran %d times; want the rows stored, the change run once", err, ran)
	}
	if n := st.rowCount(); n != 3 {
		t.Errorf("%d rows; want the three", n)
	}
	for _, want := range rows {
		select {
		case got := <-sub.C:
			if got.Action != want.Action {
				t.Errorf("fanned out %s; want %s, in the order given", got.Action, want.Action)
			}
		case <-time.After(waitLimit):
			t.Fatalf("%s not fanned out", want.Action)
		}
	}
	refused := errors.New("session ended")
	if err := l.RecordAllWith(ctx, rows[:2], func(any) error { return refused }); !errors.Is(err, refused) {
		t.Errorf("RecordAllWith of a refused change = %v; want its error", err)
	}
	if n := st.rowCount(); n != 3 {
		t.Errorf("%d rows after a refused change; want none of its rows", n)
	}
	if err := l.RecordAllWith(ctx, nil, func(any) error { return nil }); !errors.Is(err, ErrInvalidRow) {
		t.Errorf("RecordAllWith without rows = %v; want ErrInvalidRow", err)
	}
	bad := sampleRow("auth.logout")
	bad.ActorType = "robot"
	if err := l.RecordAllWith(ctx, []Row{sampleRow("auth.logout"), bad}, func(any) error { t.Error("a change ran with an invalid row"); return nil }); !errors.Is(err, ErrInvalidRow) {
		t.Errorf("RecordAllWith with an invalid second row = %v; want ErrInvalidRow", err)
	}
	if n := st.rowCount(); n != 3 {
		t.Errorf("%d rows after an invalid row; want none of its request's rows", n)
	}
	// A row stored already, second in a request: it cannot say whether
	// the change was made with it, so the request is refused.
	stored := mustRecord(t, l, sampleRow("auth.logout"))
	ran = 0
	if err := l.RecordAllWith(ctx, []Row{sampleRow("mfa.challenge.success"), stored}, func(any) error { ran++; return nil }); !errors.Is(err, ErrInvalidRow) {
		t.Errorf("RecordAllWith with a stored second row = %v; want ErrInvalidRow", err)
	}
	if n := st.rowCount(); n != 4 {
		t.Errorf("%d rows after a stored second row; want none of its request's rows", n)
	}
}

// In a shared commit, the store names a refused entry by its place among
// all the batch's entries; the log takes out the request holding it (all
// its rows) and commits the others again, the rows of several-row
// requests before and after it included.
func TestRecordAllWithInABatch(t *testing.T) {
	for _, tc := range []struct {
		name         string
		refusedAt    int  // which queued request refuses its change
		storedSecond bool // the request of three refused for its second row, stored already
		wantStored   int
	}{
		{"a single row refused after a request of three", 1, false, 1 + 3 + 1},
		{"a request of three refused", 0, false, 1 + 1 + 1},
		{"a request of three refused for its second row", -1, true, 1 + 1 + 1 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newMemStore()
			l := newTestLog(t, st, newFakeTime(), Options{})
			ctx := context.Background()
			three := []Row{sampleRow("mfa.challenge.success"), sampleRow("mfa.recovery_code.used"), sampleRow("auth.login.success")}
			if tc.storedSecond {
				three[1] = mustRecord(t, l, three[1])
				tc.refusedAt = 0
			}
			started := make(chan struct{})
			calls := 0
			const queued = 3
			st.beforeAppend = func() {
				calls++
				if calls == 1 {
					close(started)
					for deadline := time.Now().Add(10 * time.Second); len(l.reqs) < queued && time.Now().Before(deadline); {
						time.Sleep(time.Millisecond)
					}
				}
			}
			refused := errors.New("refused")
			if tc.storedSecond {
				refused = ErrInvalidRow
			}
			change := func(i int) func(any) error {
				return func(any) error {
					if i == tc.refusedAt && !tc.storedSecond {
						return refused
					}
					return nil
				}
			}
			errs := make([]chan error, queued)
			first := make(chan error, 1)
			go func() { first <- l.Record(ctx, sampleRow("auth.logout")) }()
			<-started // the first commit is held while the others queue, in order
			for i := range queued {
				errs[i] = make(chan error, 1)
				go func() {
					switch i {
					case 0:
						errs[i] <- l.RecordAllWith(ctx, three, change(i))
					case 1:
						errs[i] <- l.RecordWith(ctx, sampleRow("admin.user.unlock"), change(i))
					default:
						errs[i] <- l.Record(ctx, sampleRow("auth.logout"))
					}
				}()
				// The last one queued lets the held commit go, which takes
				// them all: no waiting for it to be seen in the queue.
				for deadline := time.Now().Add(10 * time.Second); i < queued-1 && len(l.reqs) < i+1 && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
			}
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			for i := range queued {
				err := <-errs[i]
				if i == tc.refusedAt && !errors.Is(err, refused) {
					t.Errorf("request %d = %v; want its refusal", i, err)
				}
				if i != tc.refusedAt && err != nil {
					t.Errorf("request %d = %v; want it stored", i, err)
				}
			}
			if n := st.rowCount(); n != tc.wantStored {
				t.Errorf("%d rows; want %d", n, tc.wantStored)
			}
			st.mu.Lock()
			appends := st.appends
			st.mu.Unlock()
			if tc.storedSecond {
				appends-- // the stored row's own
			}
			if appends != 3 {
				t.Errorf("%d commits; want 3: the first row's, the batch, the batch without the refused request", appends)
			}
		})
	}
}
