package store

import (
	"context"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
)

// TestDeleteExpiredSessionsAcrossChunks prunes more sessions than one
// scan chunk holds, with live and expired ones interleaved.
func TestDeleteExpiredSessionsAcrossChunks(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "many@example.com")
	const total = 2*pruneChunk + 500
	var batch []*authcore.Session
	live := 0
	for i := range total {
		_, id := authcore.NewToken()
		s := &authcore.Session{ID: id, UserID: u.ID, CreatedAt: authT0, LastSeen: authT0, ExpiresAt: authT0.Add(time.Hour)}
		if i%3 == 0 {
			s.ExpiresAt = authT0.Add(-time.Minute) // expired
		} else {
			live++
		}
		batch = append(batch, s)
	}
	if err := st.PutSessions(ctx, batch); err != nil {
		t.Fatal(err)
	}
	n, err := st.DeleteExpiredSessions(ctx, authT0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := total - live; n != want {
		t.Errorf("deleted %d; want %d", n, want)
	}
	left, err := st.CountSessions(ctx)
	if err != nil || left != live {
		t.Errorf("%d sessions left (err %v); want %d", left, err, live)
	}
	byUser, err := st.UserSessions(ctx, u.ID)
	if err != nil || len(byUser) != live {
		t.Errorf("the by-user index lists %d sessions (err %v); want %d", len(byUser), err, live)
	}
}
