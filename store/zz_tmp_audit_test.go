package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/audit"
)

func BenchmarkTmpAuditCommit64(b *testing.B) {
	st := auditOpen(b, "")
	hook := audit.WebhookConfig{URL: "https://hooks.example.com/"}.ID()
	ctx := context.Background()
	i := 0
	for b.Loop() {
		es := make([]audit.Entry, 64)
		for j := range es {
			i++
			var hooks []string
			if i%3 == 0 { hooks = []string{hook} }
			es[j] = auditEntry(b, audit.Row{Action: "auth.login.success", ActorID: fmt.Sprint("user-", j), SubjectID: fmt.Sprint("user-", j), OccurredAt: time.Now()}, time.Now(), hooks...)
		}
		if _, err := st.AppendAudit(ctx, es); err != nil {
			b.Fatal(err)
		}
	}
}
