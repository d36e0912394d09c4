package caddymodule

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus collectors, registered in Caddy's
// metrics registry so they appear on Caddy's /metrics. Labels are
// bounded: methods, results and reasons from fixed sets; never a user
// id, an email or a path.
type metrics struct {
	logins        *prometheus.CounterVec
	gateDecisions *prometheus.CounterVec
	gateDuration  prometheus.Histogram
	auditAppend   prometheus.Histogram
	auditFailures prometheus.Counter
	streamsClosed *prometheus.CounterVec

	gateAllow     prometheus.Counter // pre-resolved for the hot path
	gateAnonymous prometheus.Counter // allowed without a session (optional)
}

// processMetrics are the counters and histograms, one set per process
// and registered in each config's registry: Caddy serves the admin
// endpoint's /metrics from the newest config's registry even when it
// then refuses that config, and counts that started again from zero
// there would be lost, not reset. Across reloads they go on.
var processMetrics = sync.OnceValue(func() *metrics {
	m := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigra_logins_total", Help: "Sign-in attempts by method (password, totp, recovery_code; reauth: a signed-in user's password checked again) and result (success, pending: a right password with a second factor due, step_up: a second factor for a signed-in session, failure, locked, session_ended).",
		}, []string{"method", "result"}),
		gateDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigra_gate_decisions_total", Help: "Gate decisions by result (allow, deny, error) and reason; one per request, however many gates it meets. A request the portal refuses first (a bad path) meets no gate.",
		}, []string{"result", "reason"}),
		gateDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sigra_gate_duration_seconds", Help: "Time the gates spend deciding a request (excluding the upstream), one sample per decision, errors included.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1e-2, 0.1},
		}),
		auditAppend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sigra_audit_append_seconds", Help: "Time to append audit rows durably, one sample per append (a row, or the rows of one change; appends that succeed; failures count in sigra_audit_append_failures_total).",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2.5, 10),
		}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigra_audit_append_failures_total", Help: "Audit appends (a row, or the rows of one change) that could not be written; each fails the action it records (audit is fail-closed), except a sign-out or a revocation, which ends the session all the same.",
		}),
		streamsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigra_streams_closed_total", Help: "WebSockets and event streams closed, and other answers cut off at a write, because their session would not pass a gate now, by reason: session_ended (signed out, revoked, expired, its user disabled), or the gate's deny reason (mfa_pending, mfa_required, amr, group), storage (the store could not be read), or not_started (a reload left no sigra app on its store).",
		}, []string{"reason"}),
	}
	// Known series start at zero, so dashboards see them before the first event.
	for method, results := range map[string][]string{
		"password":      {"success", "pending", "failure", "locked"},
		"reauth":        {"success", "failure", "locked"},
		"totp":          {"success", "step_up", "failure", "locked", "session_ended"},
		"recovery_code": {"success", "step_up", "failure", "locked", "session_ended"},
	} {
		for _, result := range results {
			m.logins.WithLabelValues(method, result)
		}
	}
	for _, reason := range []string{"login_required", "mfa_pending", "mfa_required", "amr", "group", "cookie_conflict", "bad_path"} {
		m.gateDecisions.WithLabelValues("deny", reason)
	}
	for _, reason := range []string{"not_started", "storage", "signing"} {
		m.gateDecisions.WithLabelValues("error", reason)
	}
	for _, reason := range []string{"session_ended", "mfa_pending", "mfa_required", "amr", "group", "storage", "not_started"} {
		m.streamsClosed.WithLabelValues(reason)
	}
	m.gateAllow = m.gateDecisions.WithLabelValues("allow", "ok")
	m.gateAnonymous = m.gateDecisions.WithLabelValues("allow", "anonymous")
	return m
})

// processCounts are the counts that the runtimes replacing each other at
// a reload share, for the process's counters to go on across reloads as
// processMetrics do.
var processCounts struct {
	passwordChecks  atomic.Uint64 // authcore.Config.PasswordChecks
	webhookFailures atomic.Uint64 // audit.DeliveryOptions.Failures
	streamsOpen     atomic.Int64  // sockets and event streams watched
}

// storeReadEvery is how often at most the gauges that count the store's
// keys read them: sigra_sessions_active, and the webhook outbox's depth
// and dead deliveries. Counting walks a bucket's pages, and /metrics may
// be scraped often, or be public. A variable for tests.
var storeReadEvery = 5 * time.Second

// newMetrics registers the process's counters and a's gauges in reg.
func newMetrics(reg prometheus.Registerer, a *App) (*metrics, error) {
	m := new(metrics)
	*m = *processMetrics()
	sessions := &cached[float64]{ttl: storeReadEvery, read: func(ctx context.Context) (float64, error) {
		rt := a.liveRuntime()
		if rt == nil {
			return 0, errNotStarted
		}
		n, err := rt.store.CountSessions(ctx)
		return float64(n), err
	}}
	sessionsActive := func() float64 {
		if n, ok := sessions.get(); ok {
			return n
		}
		return math.NaN()
	}
	collectors := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sigra_password_checks_total", Help: "Password hashes checked (argon2id, each taking its configured memory and time): one per password typed, for unknown and banned accounts too.",
		}, func() float64 { return float64(processCounts.passwordChecks.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigra_sessions_active", Help: "Sessions in the store, including those awaiting a second factor and those ended but not yet pruned (read at most every 5s; NaN while the store cannot be read).",
		}, sessionsActive),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigra_streams_open", Help: "WebSockets and event streams open through the gates with a session, watched to be closed when it ends.",
		}, func() float64 { return float64(processCounts.streamsOpen.Load()) }),
		newWebhookCollector(a),
	}
	var err error
	if m.logins, err = register(reg, m.logins); err != nil {
		return nil, err
	}
	if m.gateDecisions, err = register(reg, m.gateDecisions); err != nil {
		return nil, err
	}
	if m.gateDuration, err = register(reg, m.gateDuration); err != nil {
		return nil, err
	}
	if m.auditAppend, err = register(reg, m.auditAppend); err != nil {
		return nil, err
	}
	if m.auditFailures, err = register(reg, m.auditFailures); err != nil {
		return nil, err
	}
	if m.streamsClosed, err = register(reg, m.streamsClosed); err != nil {
		return nil, err
	}
	for _, c := range collectors {
		if _, err := register(reg, c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// liveRuntime is the runtime whose state a's gauges report: a's own
// while it runs, or else the running app's (a registry Caddy still
// serves can outlive the config that registered them, as on a refused
// reload); nil for none.
func (a *App) liveRuntime() *runtime {
	if rt := a.life.rt.Load(); rt != nil {
		return rt
	}
	if b := running.Load(); b != nil && b != a {
		return b.life.rt.Load()
	}
	return nil
}

// register registers c, or, when reg holds one like it already, returns
// that one: counting into a collector nobody exports would lose every
// count silently.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old, nil
		}
	}
	return c, err
}

// webhookCollector reports the webhook outbox. The outbox counts come
// from the store, read at most every storeReadEvery: unknown (NaN) when
// it cannot be read, rather than a zero an alert would take for an empty
// outbox. The rest are kept in memory, read at each scrape, and stand
// either way.
type webhookCollector struct {
	a      *App
	outbox *cached[[2]int] // pending, dead
}

func newWebhookCollector(a *App) *webhookCollector {
	w := &webhookCollector{a: a}
	w.outbox = &cached[[2]int]{ttl: storeReadEvery, read: func(ctx context.Context) ([2]int, error) {
		rt := a.liveRuntime()
		if rt == nil {
			return [2]int{}, errNotStarted
		}
		st, err := rt.audit.Stats(ctx)
		return [2]int{st.Pending, st.Dead}, err
	}}
	return w
}

var (
	webhookDepthDesc    = prometheus.NewDesc("sigra_webhook_outbox_depth", "Webhook deliveries waiting in the outbox (read at most every 5s; NaN while the store cannot be read).", nil, nil)
	webhookDeadDesc     = prometheus.NewDesc("sigra_webhook_dead_deliveries", "Webhook deliveries that gave up after the retry limit (read at most every 5s; NaN while the store cannot be read).", nil, nil)
	webhookFailuresDesc = prometheus.NewDesc("sigra_webhook_failures_total", "Failed webhook delivery attempts since Caddy started.", nil, nil)
	webhookDownDesc     = prometheus.NewDesc("sigra_webhooks_down", "Configured webhooks whose receiver was unavailable at the last attempt, backing off.", nil, nil)
)

func (*webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- webhookDepthDesc
	ch <- webhookDeadDesc
	ch <- webhookFailuresDesc
	ch <- webhookDownDesc
}

func (w *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	depth, dead := math.NaN(), math.NaN() // before the store is open
	if n, ok := w.outbox.get(); ok {
		depth, dead = float64(n[0]), float64(n[1])
	}
	down := 0
	if rt := w.a.liveRuntime(); rt != nil {
		down = rt.audit.WebhooksDown()
	}
	ch <- prometheus.MustNewConstMetric(webhookDepthDesc, prometheus.GaugeValue, depth)
	ch <- prometheus.MustNewConstMetric(webhookDeadDesc, prometheus.GaugeValue, dead)
	ch <- prometheus.MustNewConstMetric(webhookFailuresDesc, prometheus.CounterValue, float64(processCounts.webhookFailures.Load()))
	ch <- prometheus.MustNewConstMetric(webhookDownDesc, prometheus.GaugeValue, float64(down))
}

var errNotStarted = errors.New("sigra is not started")

// cached reads an expensive value at most once per ttl.
type cached[T any] struct {
	ttl  time.Duration
	read func(context.Context) (T, error)

	mu   sync.Mutex
	at   time.Time
	last T
}

// get is the value read last, or read now if that was ttl ago or more;
// false when it cannot be read.
func (c *cached[T]) get() (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < c.ttl {
		return c.last, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.read(ctx)
	if err != nil {
		// Unknown, rather than a figure an alert would trust; read
		// again at the next scrape.
		var zero T
		c.at, c.last = time.Time{}, zero
		return zero, false
	}
	c.last, c.at = v, time.Now()
	return v, true
}
