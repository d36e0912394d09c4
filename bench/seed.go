package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/ids"
	"github.com/sigra-auth/caddy-sigra/store"
)

// sessionCookie is the session cookie's name on plain HTTP (on HTTPS it
// is __Host-sigra_session).
const sessionCookie = "sigra_session"

// seedChunk is how many sessions go into one bbolt transaction.
const seedChunk = 10_000

// What the seeded sessions and users carry: the measured sessions sign in
// with a password and an authenticator app, the user in group bench; the
// check sessions each lack one of that (see checkSite).
var (
	seedAMR            = []string{"pwd", "otp", "mfa"}
	seedPwdOnlyAMR     = []string{"pwd"}
	seedNoAppFactorAMR = []string{"pwd", "email", "mfa"}
	seedGroups         = []string{"bench"}
	seedOutsiderGroups = []string{"staff"}
)

// seeded is what the harness put into a store before Caddy opened it.
type seeded struct {
	UserID   string
	Email    string
	Password string   // for the optional portal login check
	Tokens   tokenSet // cookie values of signed-in sessions with a second factor (they satisfy mfa)
	// PwdOnly is the cookie of a session signed in with a password only:
	// site B must accept it and site C (mfa) must not.
	PwdOnly string
	// NoAppFactor is a session whose second factor was none that an
	// `amr otp hwk swk` route takes (an emailed code), and Outsider a
	// fully signed-in session of another user, outside the group bench:
	// B accepts both, C refuses both.
	NoAppFactor, Outsider string
	Took                  time.Duration
}

// seedStore creates one user with n fully signed-in sessions in the bbolt
// file at path (and, when extras is set, the user's password and the three
// sessions for the checks, one of them a second user's). Caddy must not
// be running on the file: it holds bbolt's lock while it runs.
func seedStore(ctx context.Context, path string, n int, extras bool) (*seeded, error) {
	begin := time.Now()
	// NoSync: the file is written once and read by Caddy right after; a
	// crash only means re-running the harness.
	st, err := store.OpenBolt(path, store.BoltOptions{NoSync: true})
	if err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	defer st.Close()

	now := time.Now()
	s := &seeded{Email: "bench@example.com"}
	u := &authcore.User{
		ID:            ids.New(),
		Email:         s.Email,
		EmailVerified: true,
		Name:          "Bench",
		Groups:        seedGroups,
		CreatedAt:     now,
		UpdatedAt:     now,
	}
	if extras {
		s.Password = authcore.RandomPassword()
		if u.PasswordHash, err = authcore.DefaultArgon2.HashPassword(s.Password); err != nil {
			return nil, fmt.Errorf("seeding: %w", err)
		}
	}
	if err := st.CreateUser(ctx, u); err != nil {
		return nil, fmt.Errorf("seeding: creating the user: %w", err)
	}
	s.UserID = u.ID

	newSession := func(id authcore.SessionID, amr []string, mfaAt time.Time) *authcore.Session {
		return &authcore.Session{
			ID:        id,
			UserID:    u.ID,
			CreatedAt: now,
			LastSeen:  now,
			ExpiresAt: now.Add(12 * time.Hour),
			AuthTime:  now,
			AMR:       amr,
			MFAAt:     mfaAt,
			Host:      "127.0.0.1", // every site's, as a sign-in there stores it
		}
	}
	s.Tokens.data = make([]byte, 0, n*48)
	s.Tokens.ends = make([]uint32, 0, n)
	batch := make([]*authcore.Session, 0, min(n, seedChunk))
	for i := 0; i < n; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch = batch[:0]
		for ; i < n && len(batch) < seedChunk; i++ {
			tok, id := authcore.NewToken()
			s.Tokens.Add(tok)
			batch = append(batch, newSession(id, seedAMR, now))
		}
		if err := st.PutSessions(ctx, batch); err != nil {
			return nil, fmt.Errorf("seeding: sessions: %w", err)
		}
	}
	if extras {
		tok, id := authcore.NewToken()
		s.PwdOnly = tok
		tok2, id2 := authcore.NewToken()
		s.NoAppFactor = tok2
		other := &authcore.User{ID: ids.New(), Email: "outsider@example.com", EmailVerified: true, Name: "Outsider",
			Groups: seedOutsiderGroups, CreatedAt: now, UpdatedAt: now}
		if err := st.CreateUser(ctx, other); err != nil {
			return nil, fmt.Errorf("seeding: creating the outsider: %w", err)
		}
		tok3, id3 := authcore.NewToken()
		s.Outsider = tok3
		outsider := newSession(id3, seedAMR, now)
		outsider.UserID = other.ID
		if err := st.PutSessions(ctx, []*authcore.Session{
			newSession(id, seedPwdOnlyAMR, time.Time{}),
			newSession(id2, seedNoAppFactorAMR, now),
			outsider,
		}); err != nil {
			return nil, fmt.Errorf("seeding: sessions: %w", err)
		}
	}
	if err := st.Close(); err != nil {
		return nil, fmt.Errorf("seeding: closing the store: %w", err)
	}
	// Written without syncs, the file would be written back to disk by
	// the kernel while the rounds run (1.5 GB for a million sessions),
	// and that work would count as the machine's noise: flush it first.
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("seeding: flushing the store: %w", err)
	}
	s.Took = time.Since(begin)
	return s, nil
}
