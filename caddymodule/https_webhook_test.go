package caddymodule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/internal/hmacsig"
)

// TestSecureCookieBehindTrustedProxy: when the client reached a trusted
// proxy over HTTPS, the session cookie is Secure with the __Host- prefix,
// and only that name is read; from an untrusted client the same header
// changes nothing.
func TestSecureCookieBehindTrustedProxy(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), up: newUpstream(t)}
	e.base = "http://127.0.0.1:" + itoa(freePort(t))
	jar, _ := newJar()
	e.client = &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	cf := e.caddyfile("", "sigra_gate")
	cf = strings.Replace(cf, "\tpersist_config off\n", "\tpersist_config off\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n", 1)
	if err := e.load(cf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	e.addUser("sec@example.com")

	// Cookies by hand: a jar would not send Secure cookies over plain HTTP.
	e.client.Jar = nil
	https := map[string]string{"X-Forwarded-Proto": "https"}
	origin := strings.Replace(e.base, "http://", "https://", 1)
	resp, page := e.get("/.sigra/login", https)
	var anon string
	for _, ck := range resp.Cookies() {
		if ck.Name == "__Host-sigra_csrf" {
			anon = ck.Value
			if !ck.Secure {
				t.Error("__Host-sigra_csrf is not Secure")
			}
		}
	}
	if anon == "" {
		t.Fatal("no __Host-sigra_csrf cookie on HTTPS")
	}
	login := map[string][]string{
		"email": {"sec@example.com"}, "password": {testPassword}, "csrf_token": {csrfFrom(t, page)},
		"rd": {e.base + "/x"}, // plaintext back to our own host
	}
	// Over HTTPS browsers send Sec-Fetch-Site: a null Origin without it
	// (a sandboxed frame of another site) is refused.
	resp, _ = e.postForm("/.sigra/login", login, map[string]string{"X-Forwarded-Proto": "https", "Origin": "null", "Sec-Fetch-Site": "", "Cookie": "__Host-sigra_csrf=" + anon})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("login over HTTPS with a null Origin and no Sec-Fetch-Site: status %d; want 403", resp.StatusCode)
	}
	resp, _ = e.postForm("/.sigra/login", login, map[string]string{"X-Forwarded-Proto": "https", "Origin": origin, "Cookie": "__Host-sigra_csrf=" + anon})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login over HTTPS: status %d; want 303", resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != "/" {
		t.Errorf("login over HTTPS with an http:// rd went to %q; want / (no downgrade)", loc)
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-sigra_session" {
			session = c
		}
		if c.Name == "sigra_session" {
			t.Error("the plain-HTTP cookie name was set on HTTPS")
		}
	}
	if session == nil || !session.Secure || !session.HttpOnly || session.Path != "/" || session.Domain != "" {
		t.Fatalf("session cookie %+v; want __Host-sigra_session, Secure, HttpOnly, Path=/, no Domain", session)
	}
	if r, _ := e.get("/x", map[string]string{"X-Forwarded-Proto": "https", "Cookie": "__Host-sigra_session=" + session.Value}); r.StatusCode != 200 {
		t.Errorf("HTTPS request with the __Host- cookie: status %d; want 200", r.StatusCode)
	}
	// On HTTPS the plain name is not read (it could be planted over HTTP).
	if r, _ := e.get("/x", map[string]string{"X-Forwarded-Proto": "https", "Cookie": "sigra_session=" + session.Value, "Accept": "application/json"}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("HTTPS request with the plain cookie name: status %d; want 401", r.StatusCode)
	}
}

// TestAuditWebhookFromCaddyfile: a webhook configured in the Caddyfile
// receives signed rows for the actions it asked for, and no others.
func TestAuditWebhookFromCaddyfile(t *testing.T) {
	const secret = "a webhook secret of some length"
	var mu sync.Mutex
	var got []map[string]any
	var ids []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := hmacsig.Verify(r.Header.Get("Sigra-Signature"), body, [][]byte{[]byte(secret)}, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var row map[string]any
		if err := json.Unmarshal(body, &row); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		got = append(got, row)
		ids = append(ids, r.Header.Get("Sigra-Event-Id"))
		mu.Unlock()
	}))
	defer recv.Close()
	e := startCaddy(t, "audit {\n\t\t\twebhook "+recv.URL+" {\n\t\t\t\tsecret \""+secret+"\"\n\t\t\t\tactions auth.login.*\n\t\t\t}\n\t\t}", "sigra_gate")
	e.addUser("hook@example.com")
	e.login("hook@example.com", "wrong wrong wrong", "/")
	e.mustLogin("hook@example.com")
	_, page := e.get("/.sigra/logout", nil)
	e.postForm("/.sigra/logout", map[string][]string{"csrf_token": {csrfFrom(t, page)}}, nil) // auth.logout: not subscribed

	// Every row is in the outbox once its request is answered: when the
	// outbox is empty, every delivery made has been received, an
	// unwanted auth.logout one included.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		st, err := e.rt().audit.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n >= 2 && st.Pending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d deliveries; want 2 (login failure and success): %v", len(got), got)
	}
	actions := map[string]bool{}
	for i, row := range got {
		actions[row["action"].(string)] = true
		if ids[i] != row["id"] {
			t.Errorf("Sigra-Event-Id %q; want the row id %v", ids[i], row["id"])
		}
	}
	if !actions["auth.login.failure"] || !actions["auth.login.success"] {
		t.Errorf("delivered actions %v; want auth.login.failure and auth.login.success", actions)
	}
}

// giveUp waits for the one pending delivery to the webhook at url to
// fail its first attempt (the fake clock at now then keeps the retry
// from coming due), and gives it up as the sender would after its last:
// a receiver down past the retry limit.
func giveUp(t *testing.T, e *env, now time.Time, url string) {
	t.Helper()
	ctx := context.Background()
	st := e.rt().store
	var pending []audit.Delivery
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		pending, _ = st.AuditDeliveriesDue(ctx, audit.WebhookConfig{URL: url}.ID(), now.Add(24*time.Hour), 10)
		if len(pending) == 1 && pending[0].Attempts == 1 {
			break
		}
	}
	if len(pending) != 1 || pending[0].Attempts != 1 {
		t.Fatalf("pending deliveries %+v; want one, after one failed attempt", pending)
	}
	pending[0].Attempts = 15
	if err := st.AuditSettle(ctx, []audit.Settlement{{Delivery: pending[0], Verdict: audit.Dead}}); err != nil {
		t.Fatal(err)
	}
}

// An admin puts dead deliveries back through the admin API once the
// receiver is up again; they arrive, and the replay is an audit row.
func TestAdminReplaysDeadWebhooks(t *testing.T) {
	fake := useFakeClock(t)
	var down atomic.Bool
	down.Store(true)
	arrived := make(chan string, 100)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		arrived <- r.Header.Get("Sigra-Event-Id")
	}))
	defer recv.Close()
	e := startCaddy(t, "audit {\n\t\t\twebhook "+recv.URL+" {\n\t\t\t\tsecret \"0123456789abcdef0123456789abcdef\"\n\t\t\t\tactions auth.login.success\n\t\t\t}\n\t\t}", "sigra_gate")
	admin := e.addUser("ops@example.com", "admins")
	e.mustLogin("ops@example.com")
	enrolTOTP(t, e, fake.Now())
	login := e.auditRows("auth.login.success")
	if len(login) != 1 {
		t.Fatalf("%d login rows; want 1", len(login))
	}

	giveUp(t, e, fake.Now(), recv.URL)
	api := map[string]string{"Accept": "application/json"}
	_, body := e.get("/.sigra/api/admin/audit/webhooks/dead", api)
	var dead struct {
		Deliveries []audit.Delivery `json:"deliveries"`
	}
	if err := json.Unmarshal([]byte(body), &dead); err != nil || len(dead.Deliveries) != 1 || strings.Contains(body, "next_cursor") {
		t.Fatalf("dead list %s; want the login's delivery, and no next cursor", body)
	}
	hook := dead.Deliveries[0].HookID
	// A list like every other: cursor and limit as for the timeline.
	if r, body := e.get("/.sigra/api/admin/audit/webhooks/dead?cursor=nonsense", api); r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "bad_query") {
		t.Errorf("dead list with a bad cursor: status %d, %s; want 400 bad_query", r.StatusCode, body)
	}
	if r, _ := e.get("/.sigra/api/admin/audit/webhooks/dead?limit=501", api); r.StatusCode != http.StatusBadRequest {
		t.Errorf("dead list with limit 501: status %d; want 400", r.StatusCode)
	}

	_, body = e.get("/.sigra/api/admin/csrf", api)
	var tok struct {
		CSRF string `json:"csrf_token"`
	}
	_ = json.Unmarshal([]byte(body), &tok)
	post := func(query string, csrf string) (*http.Response, string) {
		resp := e.do(http.MethodPost, "/.sigra/api/admin/audit/webhooks/dead/replay"+query,
			map[string]string{"Accept": "application/json", "Origin": e.base, "X-CSRF-Token": csrf}, nil)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if r, _ := post("", ""); r.StatusCode != http.StatusForbidden {
		t.Errorf("replay without X-CSRF-Token: status %d; want 403", r.StatusCode)
	}
	if r, b := post("?hook=0000000000000000", tok.CSRF); r.StatusCode != http.StatusNotFound {
		t.Errorf("replay of an unknown webhook: status %d (%s); want 404", r.StatusCode, b)
	}
	down.Store(false)
	r, b := post("?hook="+hook, tok.CSRF)
	if r.StatusCode != http.StatusOK || !strings.Contains(b, `"replayed":1`) {
		t.Fatalf("replay: status %d body %s; want 200 and 1 replayed", r.StatusCode, b)
	}
	select {
	case id := <-arrived:
		if id != login[0].ID {
			t.Errorf("delivered event %s; want the login row %s", id, login[0].ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the replayed delivery never arrived")
	}
	rows := e.auditRows("admin.webhook.replay")
	if len(rows) != 1 || rows[0].ActorType != audit.ActorAdmin || rows[0].ActorID != admin.ID || rows[0].Metadata["count"] != "1" || rows[0].Metadata["hook_id"] != hook {
		t.Errorf("admin.webhook.replay rows %+v; want one by %s, count 1, hook %s", rows, admin.ID, hook)
	}

	// A delivery that died at a URL no longer configured (the webhook's
	// URL changed, and with it its hook_id) goes to the new one with to=.
	down.Store(true)
	b2 := e.browser()
	e.addUser("dee@example.com")
	b2.mustLogin("dee@example.com")
	giveUp(t, e, fake.Now(), recv.URL)
	old := hook
	newURL := recv.URL + "/renewed?token=b"
	if err := e.load(strings.Replace(e.config, "webhook "+recv.URL+" {", "webhook "+newURL+" {", 1)); err != nil {
		t.Fatal(err)
	}
	renewed := audit.WebhookConfig{URL: newURL}.ID()
	down.Store(false)
	_, body = e.get("/.sigra/api/admin/csrf", api)
	_ = json.Unmarshal([]byte(body), &tok)
	if r, b := post("?hook="+old, tok.CSRF); r.StatusCode != http.StatusNotFound {
		t.Errorf("replay of the old URL's webhook alone: status %d (%s); want 404, it is not configured", r.StatusCode, b)
	}
	if r, b := post("?hook="+old+"&to=0000000000000000", tok.CSRF); r.StatusCode != http.StatusNotFound {
		t.Errorf("replay to a webhook not configured: status %d (%s); want 404", r.StatusCode, b)
	}
	r, b = post("?hook="+old+"&to="+renewed, tok.CSRF)
	if r.StatusCode != http.StatusOK || !strings.Contains(b, `"replayed":1`) {
		t.Fatalf("replay to the new URL: status %d body %s; want 200 and 1 replayed", r.StatusCode, b)
	}
	select {
	case id := <-arrived:
		if want := e.auditRows("auth.login.success")[0].ID; id != want {
			t.Errorf("delivered event %s; want dee's login row %s", id, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery replayed to the new URL never arrived")
	}
	if rows := e.auditRows("admin.webhook.replay"); len(rows) != 2 || rows[0].Metadata["hook_id"] != old || rows[0].Metadata["to"] != renewed {
		t.Errorf("admin.webhook.replay rows %+v; want a second, from %s to %s", rows, old, renewed)
	}
	// A replay to the webhook it is from is a plain replay, and its row
	// says so.
	if r, b := post("?hook="+renewed+"&to="+renewed, tok.CSRF); r.StatusCode != http.StatusOK {
		t.Fatalf("replay to the same webhook: status %d body %s; want 200", r.StatusCode, b)
	}
	if rows := e.auditRows("admin.webhook.replay"); len(rows) != 3 || rows[0].Metadata["hook_id"] != renewed || rows[0].Metadata["to"] != "" {
		t.Errorf("admin.webhook.replay rows %+v; want a third, of %s, naming no other webhook", rows, renewed)
	}
}
