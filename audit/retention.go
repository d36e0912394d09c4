package audit

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"
)

// Prune deletes rows with occurred_at before `before`, with their index
// entries and dead webhook deliveries, and returns how many rows it
// deleted. It goes no further than the oldest row a pending delivery
// still needs (Store.PruneAudit). The store works in bounded
// transactions, so recording goes on meanwhile.
func (l *Log) Prune(ctx context.Context, before time.Time) (int, error) {
	n, err := l.st.PruneAudit(ctx, before.UTC())
	if err != nil {
		return n, fmt.Errorf("audit: pruning rows before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}

// RunRetention prunes rows older than retention (measured on the Log's
// clock) right away and then every `every`, until ctx ends or the Log is
// closed. Errors and panics are logged and the loop goes on. Start runs it
// when Options.Retention is set; call it yourself (in a goroutine) only
// when you manage the schedule.
func (l *Log) RunRetention(ctx context.Context, every, retention time.Duration) {
	if every <= 0 || retention <= 0 {
		l.errLog.Error("audit retention not started: every and retention must be positive",
			"every", every, "retention", retention)
		return
	}
	for {
		next := l.clk.Now().Add(every)
		l.pruneOnce(ctx, retention)
		select {
		case <-ctx.Done():
			return
		case <-l.quit:
			return
		case <-l.wakeAt(next):
		}
	}
}

func (l *Log) pruneOnce(ctx context.Context, retention time.Duration) {
	defer func() {
		if p := recover(); p != nil {
			l.errLog.Error("audit retention panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	cutoff := l.clk.Now().Add(-retention)
	n, err := l.Prune(ctx, cutoff)
	if err != nil && ctx.Err() == nil {
		l.errLog.Error("audit retention failed", "error", err, "deleted", n)
		return
	}
	if n > 0 {
		l.errLog.Info("audit retention", "deleted", n, "before", cutoff.Format(time.RFC3339))
	}
}
