package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

// AuditConfig configures the audit trail.
type AuditConfig struct {
	// Retention prunes rows older than this. Default: keep forever.
	Retention caddy.Duration `json:"retention,omitempty"`
	// Webhooks receive matching rows, signed, from a durable outbox.
	Webhooks []*AuditWebhook `json:"webhooks,omitempty"`
}

// AuditWebhook is one webhook receiver.
type AuditWebhook struct {
	// URL receives a POST per row (http or https).
	URL string `json:"url"`
	// Secret signs each delivery (Sigra-Signature). Placeholders such as
	// {env.HOOK_SECRET} are expanded.
	Secret string `json:"secret"`
	// Actions are action patterns (auth.*, mfa.challenge.failure, *).
	// Default, when not set: every action. An empty list is refused.
	Actions []string `json:"actions,omitempty"`
}

// webhooks converts the configured webhooks for the audit package, their
// secrets' placeholders expanded, and checks them as audit.New will.
func (c *AuditConfig) webhooks() ([]audit.WebhookConfig, error) {
	if c == nil {
		return nil, nil
	}
	var out []audit.WebhookConfig
	repl := caddy.NewReplacer()
	for i, w := range c.Webhooks {
		if w == nil { // "webhooks": [null] in a JSON config
			return nil, fmt.Errorf("audit: webhook %d is null: give it a url and a secret, or remove it", i+1)
		}
		// Every placeholder must come out set: a secret signed with part
		// of itself missing (x{env.UNSET}yyy) or with a placeholder kept
		// as text would make every delivery fail at the receiver.
		secret, err := repl.ReplaceOrErr(w.Secret, false, true)
		if err == nil && secret != "" {
			_, err = repl.ReplaceOrErr(w.Secret, true, true)
		}
		switch {
		case err != nil:
			// The replacer's error would quote part of a literal secret.
			return nil, fmt.Errorf("audit: webhook %d (%s): secret %s has a placeholder that is not set or not known: a secret takes environment variables ({env.NAME}) set for this process, and no other placeholder", i+1, audit.RedactURL(w.URL), placeholderName(w.Secret))
		case secret == "" && strings.Contains(w.Secret, "{"):
			return nil, fmt.Errorf("audit: webhook %d (%s): secret %s is empty: is the environment variable set for this process?", i+1, audit.RedactURL(w.URL), placeholderName(w.Secret))
		case secret == "":
			return nil, fmt.Errorf("audit: webhook %d (%s): a secret is required", i+1, audit.RedactURL(w.URL))
		}
		out = append(out, w.config(secret))
	}
	if err := audit.ValidateWebhooks(out); err != nil {
		return nil, err
	}
	return out, nil
}

// config is w for the audit package, with this secret.
func (w *AuditWebhook) config(secret string) audit.WebhookConfig {
	actions := w.Actions
	if actions == nil { // not set; an empty list written in JSON selects nothing, and is refused
		actions = []string{"*"}
	}
	return audit.WebhookConfig{URL: w.URL, Secret: []byte(secret), Actions: actions}
}

// checkWebhooksAsWritten checks webhooks as audit.New will, while a
// Caddyfile is adapted, where the error can name the line. A secret given
// as a placeholder ({env.HOOK_SECRET}) has no value yet: webhooks checks
// it when the config loads.
func checkWebhooksAsWritten(ws []*AuditWebhook) error {
	cfgs := make([]audit.WebhookConfig, 0, len(ws))
	for _, w := range ws {
		secret := w.Secret
		if strings.Contains(secret, "{") {
			secret = strings.Repeat("-", audit.MinSecretLen) // a stand-in of a valid length
		}
		cfgs = append(cfgs, w.config(secret))
	}
	return audit.ValidateWebhooks(cfgs)
}

// event is an audit row in the making; the request fills in the rest.
type event struct {
	action    string
	actor     string
	actorType string // default user
	subject   string
	outcome   string
	meta      map[string]string
}

// rowFor builds the audit row for an event caused by request r.
func rowFor(r *http.Request, ev event) audit.Row {
	row := audit.Row{
		Action: ev.action, ActorID: ev.actor, ActorType: ev.actorType, SubjectID: ev.subject,
		Outcome: ev.outcome, Metadata: ev.meta,
	}
	if row.ActorType == "" {
		row.ActorType = audit.ActorUser
	}
	if r != nil {
		row.IP, row.UserAgent = clientIP(r), r.UserAgent()
		if row.IP == "" {
			// Caddy's admin endpoint (the CLI's way in) resolves no client
			// address: the peer's is the one there is.
			if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
				row.IP = host
			}
		}
		if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
			row.RequestID, _ = repl.GetString("http.request.uuid")
		}
	}
	return row
}

// audit records events durably, in one commit, before the response is
// written. A row that cannot be written fails the request (5xx), never
// silently.
func (q *preq) audit(evs ...event) error {
	if len(evs) == 0 {
		return nil
	}
	rows := make([]audit.Row, len(evs))
	for i, ev := range evs {
		rows[i] = rowFor(q.r, ev)
	}
	if _, err := q.rt.recordChange(q.ctx(), rows, nil); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s: %w", evs[len(evs)-1].action, err))
	}
	return nil
}

// auditWith writes ev's row and the change apply makes through its
// commit in one store transaction (changeWithRow): both or neither.
func (q *preq) auditWith(ev event, apply func(authcore.Commit) error) error {
	refused, err := q.rt.changeWithRow(q.ctx(), rowFor(q.r, ev), apply)
	if err == nil {
		err = refused
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("writing audit row %s with its change: %w", ev.action, err))
	}
	return nil
}

func itoa(n int) string { return strconv.Itoa(n) }

// replayDead puts dead webhook deliveries (of one webhook, or all when
// hook is empty) back in the outbox, for the webhook to if set (a new URL
// of the same receiver), and writes the admin.webhook.replay row. actor
// "" is the CLI.
func replayDead(ctx context.Context, rt *runtime, hook, to string, r *http.Request, actor string) (int, error) {
	var n int
	var err error
	if to != "" {
		n, err = rt.audit.ReplayDeadTo(ctx, hook, to)
	} else {
		n, err = rt.audit.ReplayDead(ctx, hook)
	}
	if err != nil && n == 0 {
		return n, err
	}
	target := hook
	if target == "" {
		target = "all"
	}
	meta := map[string]string{"hook_id": target, "count": itoa(n)}
	if to != "" && to != hook { // to itself is a plain replay (ReplayDeadTo)
		meta["to"] = to
	}
	outcome := "success"
	if err != nil { // stopped part way: the n already moved are sent, so they need their row
		outcome = "failure"
	}
	ev := event{action: "admin.webhook.replay", actor: actor, actorType: adminActorType(actor), outcome: outcome, meta: meta}
	if rerr := rt.record(ctx, rowFor(r, ev)); rerr != nil {
		return n, errors.Join(err, fmt.Errorf("writing audit row: %w", rerr))
	}
	return n, err
}

// adminActorType is the actor type of an admin action: admin for an
// admin's user id, system for the CLI (no actor).
func adminActorType(actor string) string {
	if actor == "" {
		return audit.ActorSystem
	}
	return audit.ActorAdmin
}

// validate checks the audit options and returns the webhooks they
// configure.
func (c *AuditConfig) validate() ([]audit.WebhookConfig, error) {
	if c == nil {
		return nil, nil
	}
	if c.Retention < 0 {
		return nil, errors.New("audit: retention must not be negative")
	}
	if c.Retention != 0 {
		if err := checkRetention(c.Retention); err != nil {
			return nil, err
		}
	}
	return c.webhooks() // its errors start with "audit: "
}

// minRetention is the shortest audit retention: rows younger than it are
// kept whatever the setting.
const minRetention = time.Hour

// checkRetention refuses a retention under minRetention: audit rows are
// deleted once older than it, and "6m" meant as six months is six
// minutes.
func checkRetention(r caddy.Duration) error {
	if time.Duration(r) < minRetention {
		return fmt.Errorf("audit: retention %s is under an hour, and audit rows older than it are deleted (m is minutes: for months write days, such as 180d)", time.Duration(r))
	}
	return nil
}

// retention returns the configured retention or 0 (keep forever).
func (c *AuditConfig) retention() time.Duration {
	if c == nil {
		return 0
	}
	return time.Duration(c.Retention)
}
