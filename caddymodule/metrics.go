package caddymodule

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigra-auth/caddy-sigra/audit"
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

	gateAllow     prometheus.Counter // pre-resolved for the hot path
	gateAnonymous prometheus.Counter // allowed without a session (optional)
}

func newMetrics(reg prometheus.Registerer, a *App) (*metrics, error) {
	m := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigra_logins_total", Help: "Sign-in attempts by method (password, totp, recovery_code) and result (success, failure, locked).",
		}, []string{"method", "result"}),
		gateDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigra_gate_decisions_total", Help: "Gate decisions by result (allow, deny, error) and reason.",
		}, []string{"result", "reason"}),
		gateDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sigra_gate_duration_seconds", Help: "Time the gate spends deciding a request (excluding the upstream).",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1},
		}),
		auditAppend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sigra_audit_append_seconds", Help: "Time to append an audit row durably.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2.5, 10),
		}),
	}
	m.gateAllow = m.gateDecisions.WithLabelValues("allow", "ok")
	m.gateAnonymous = m.gateDecisions.WithLabelValues("allow", "anonymous")
	// Known series start at zero, so dashboards see them before the first event.
	for _, method := range []string{"password", "totp", "recovery_code"} {
		for _, result := range []string{"success", "failure", "locked", "session_ended"} {
			m.logins.WithLabelValues(method, result)
		}
	}
	for _, reason := range []string{"login_required", "mfa_pending", "mfa_required", "amr", "group", "cookie_conflict"} {
		m.gateDecisions.WithLabelValues("deny", reason)
	}
	sessions := &cachedGauge{ttl: 5 * time.Second, read: func(ctx context.Context) (float64, error) {
		rt := a.life.rt.Load()
		if rt == nil {
			return 0, errNotStarted
		}
		n, err := rt.store.CountSessions(ctx)
		return float64(n), err
	}}
	// outbox reads one figure of the audit log's Stats. The outbox
	// counts come from the store: unknown (NaN) when it cannot be read,
	// rather than a zero an alert would take for an empty outbox. The
	// rest are kept in memory and stand either way.
	outbox := func(fromStore bool, pick func(audit.Stats) float64) func() float64 {
		return func() float64 {
			rt := a.life.rt.Load()
			if rt == nil {
				return 0
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			st, err := rt.audit.Stats(ctx)
			if err != nil && fromStore {
				return math.NaN()
			}
			return pick(st)
		}
	}
	collectors := []prometheus.Collector{
		m.logins, m.gateDecisions, m.gateDuration, m.auditAppend,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sigra_password_checks_total", Help: "Password hashes checked (argon2id, each taking its configured memory and time): one per password typed, for unknown and banned accounts too.",
		}, func() float64 {
			if rt := a.life.rt.Load(); rt != nil {
				return float64(rt.auth.PasswordChecks())
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigra_sessions_active", Help: "Sessions in the store, including those awaiting a second factor and those ended but not yet pruned (read at most every 5s).",
		}, sessions.value),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigra_webhook_outbox_depth", Help: "Webhook deliveries waiting in the outbox.",
		}, outbox(true, func(s audit.Stats) float64 { return float64(s.Pending) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigra_webhook_dead_deliveries", Help: "Webhook deliveries that gave up after the retry limit.",
		}, outbox(true, func(s audit.Stats) float64 { return float64(s.Dead) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sigra_webhook_failures_total", Help: "Failed webhook delivery attempts since start.",
		}, outbox(false, func(s audit.Stats) float64 { return float64(s.Failures) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigra_webhooks_down", Help: "Webhooks whose receiver was unavailable at the last attempt, backing off.",
		}, outbox(false, func(s audit.Stats) float64 { return float64(s.Down) })),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}

var errNotStarted = errors.New("sigra is not started")

// cachedGauge reads an expensive value at most once per ttl.
type cachedGauge struct {
	ttl  time.Duration
	read func(context.Context) (float64, error)

	mu   sync.Mutex
	at   time.Time
	last float64
}

func (g *cachedGauge) value() float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.at) < g.ttl {
		return g.last
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v, err := g.read(ctx); err == nil {
		g.last, g.at = v, time.Now()
	}
	return g.last
}
