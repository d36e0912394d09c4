package authcore

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/seal"
)

// Service tests that need sessions run against the real bbolt store in
// store/bolt_auth_test.go (this package cannot import store). Here the
// store is a stub holding users only; any other Store method panics
// through the nil embedded interface, which also proves those paths do
// not touch it.
type svcUsersStore struct {
	Store // nil

	mu      sync.Mutex
	byEmail map[string]*User
	err     error // returned by UserByEmail when set
	lookups int
}

func (s *svcUsersStore) UserByEmail(ctx context.Context, email string) (*User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	if s.err != nil {
		return nil, s.err
	}
	u, ok := s.byEmail[email]
	if !ok {
		return nil, ErrNotFound
	}
	return u.Clone(), nil
}

func (s *svcUsersStore) CreateUser(ctx context.Context, u *User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byEmail[u.Email]; ok {
		return ErrEmailTaken
	}
	s.byEmail[u.Email] = u.Clone()
	return nil
}

var svcTestStart = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func newSvcForTest(t *testing.T, params Argon2Params) (*Service, *svcUsersStore) {
	t.Helper()
	box, err := seal.New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := &svcUsersStore{byEmail: map[string]*User{}}
	svc, err := NewService(slog.New(slog.DiscardHandler), clock.NewFake(svcTestStart), st, box, Config{Argon2: params})
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	return svc, st
}

// svcAddUser stores a user directly; an empty password leaves it without one.
func svcAddUser(t *testing.T, st *svcUsersStore, params Argon2Params, email, password string, disabled bool) *User {
	t.Helper()
	u := &User{ID: "0190a3c4-0000-7000-8000-" + email[:1] + "00000000000", Email: email, Disabled: disabled}
	if password != "" {
		u.PasswordHash = mustHash(t, params, password)
	}
	st.mu.Lock()
	st.byEmail[email] = u
	st.mu.Unlock()
	return u
}

func TestNewServiceDefaults(t *testing.T) {
	box, _ := seal.New(make([]byte, 32))
	svc, err := NewService(slog.New(slog.DiscardHandler), clock.NewFake(svcTestStart), &svcUsersStore{}, box, Config{})
	if err != nil {
		t.Fatal(err)
	}
	got := svc.Config()
	want := Config{
		Idle: 30 * time.Minute, Lifetime: 12 * time.Hour, PendingLifetime: 10 * time.Minute, TouchInterval: time.Minute,
		CacheTTL: 10 * time.Second, CacheSize: 100_000, Argon2: DefaultArgon2, MaxTOTPFailures: 100,
	}
	if got != want {
		t.Errorf("Config() = %+v; want %+v", got, want)
	}
	if !svc.Now().Equal(svcTestStart) {
		t.Errorf("Now() = %v; want the injected clock's %v", svc.Now(), svcTestStart)
	}

	short, err := NewService(slog.New(slog.DiscardHandler), clock.NewFake(svcTestStart), &svcUsersStore{}, box,
		Config{Idle: 5 * time.Minute, Argon2: cheapArgon2})
	if err != nil {
		t.Fatal(err)
	}
	if got := short.Config().TouchInterval; got != 30*time.Second {
		t.Errorf("TouchInterval with Idle 5m = %v; want Idle/10 = 30s", got)
	}
	if got := short.Config().Argon2; got != cheapArgon2 {
		t.Errorf("Argon2 = %+v; want the configured %+v", got, cheapArgon2)
	}
}

func TestCheckPassword(t *testing.T) {
	svc, st := newSvcForTest(t, cheapArgon2)
	const pw = "correct horse battery"
	alice := svcAddUser(t, st, cheapArgon2, "alice@example.com", pw, false)
	svcAddUser(t, st, cheapArgon2, "nopass@example.com", "", false)
	svcAddUser(t, st, cheapArgon2, "disabled@example.com", pw, true)
	tests := []struct {
		name    string
		email   string
		pw      string
		wantErr error
	}{
		{"right password", "alice@example.com", pw, nil},
		{"email in another case and with spaces", "  Alice@Example.COM ", pw, nil},
		{"wrong password", "alice@example.com", pw + "!", ErrInvalidCredentials},
		{"empty password", "alice@example.com", "", ErrInvalidCredentials},
		{"unknown user", "nobody@example.com", pw, ErrInvalidCredentials},
		{"malformed email", "not an email", pw, ErrInvalidCredentials},
		{"empty email", "", pw, ErrInvalidCredentials},
		{"user without a password, empty password", "nopass@example.com", "", ErrInvalidCredentials},
		// The fake hash stands in for a missing one; its password opens nothing.
		{"user without a password, the fake password", "nopass@example.com", "sigra fake password for unknown users", ErrInvalidCredentials},
		// The right password of a disabled user is an ErrInvalidCredentials
		// that the audit row can tell apart; a wrong one is not.
		{"disabled user, right password", "disabled@example.com", pw, ErrAccountDisabled},
		{"disabled user, wrong password", "disabled@example.com", pw + "!", ErrInvalidCredentials},
		{"over-long password", "alice@example.com", string(make([]byte, MaxPasswordLen+1)), ErrInvalidCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := svc.CheckPassword(context.Background(), tt.email, tt.pw)
			if tt.wantErr != nil {
				if err != tt.wantErr { // exactly the sentinel: no detail that tells the cases apart
					t.Errorf("CheckPassword(%q) = %v, %v; want exactly %v", tt.email, u, err, tt.wantErr)
				}
				if u != nil {
					t.Errorf("CheckPassword(%q) returned user %q with an error", tt.email, u.Email)
				}
				return
			}
			if err != nil {
				t.Fatalf("CheckPassword(%q) = %v; want nil", tt.email, err)
			}
			if u.ID != alice.ID {
				t.Errorf("CheckPassword(%q) = user %q; want %q", tt.email, u.ID, alice.ID)
			}
		})
	}
}

// TestCheckPasswordStorageError: a storage failure is reported as such,
// not as bad credentials, so callers fail closed and do not count it as a
// failed attempt.
func TestCheckPasswordStorageError(t *testing.T) {
	svc, st := newSvcForTest(t, cheapArgon2)
	boom := errors.New("disk on fire")
	st.err = boom
	if _, err := svc.CheckPassword(context.Background(), "alice@example.com", "correct horse battery"); !errors.Is(err, boom) {
		t.Errorf("CheckPassword with a failing store = %v; want %v", err, boom)
	}
}

// TestCheckPasswordHashesOnEveryPath: unknown users, malformed emails,
// users without a password and disabled users get the same argon2id work
// as a wrong password (one check, against a hash of the same cost), so
// the response time does not reveal which accounts exist.
func TestCheckPasswordHashesOnEveryPath(t *testing.T) {
	params := Argon2Params{Memory: 64, Time: 2, Threads: 1, KeyLen: 32, SaltLen: 16}
	svc, st := newSvcForTest(t, params)
	const pw = "correct horse battery"
	alice := svcAddUser(t, st, params, "alice@example.com", pw, false)
	svcAddUser(t, st, params, "nopass@example.com", "", false)
	svcAddUser(t, st, params, "disabled@example.com", pw, true)

	ctx := context.Background()
	for _, p := range []struct {
		name, email, pw string
		want            error
	}{
		{"wrong password", "alice@example.com", "wrong password!", ErrInvalidCredentials},
		{"unknown user", "nobody@example.com", "wrong password!", ErrInvalidCredentials},
		{"malformed email", "nobody", "wrong password!", ErrInvalidCredentials},
		{"user without a password", "nopass@example.com", "wrong password!", ErrInvalidCredentials},
		{"disabled user", "disabled@example.com", pw, ErrAccountDisabled},
	} {
		before := svc.PasswordChecks()
		if _, err := svc.CheckPassword(ctx, p.email, p.pw); err != p.want {
			t.Fatalf("%s: CheckPassword = %v; want %v", p.name, err, p.want)
		}
		if n := svc.PasswordChecks() - before; n != 1 {
			t.Errorf("%s: %d argon2id checks; want 1, as for any password typed", p.name, n)
		}
	}
	// The hash checked for a missing account costs what a real one does:
	// the same argon2id parameters ($argon2id$v=19$m=…,t=…,p=…$).
	cost := func(hash string) string {
		parts := strings.Split(hash, "$")
		if len(parts) != 6 {
			t.Fatalf("hash %q is not in the PHC format", hash)
		}
		return strings.Join(parts[:4], "$")
	}
	if fake, real := cost(svc.fakeHash), cost(alice.PasswordHash); fake != real {
		t.Errorf("the hash checked for missing accounts has cost %s; a user's has %s", fake, real)
	}
}

func TestCreateUserValidates(t *testing.T) {
	svc, st := newSvcForTest(t, cheapArgon2)
	ctx := context.Background()
	tests := []struct {
		name string
		in   NewUser
	}{
		{"bad email", NewUser{Email: "Alice <alice@example.com>"}},
		{"name with a line break", NewUser{Email: "a@example.com", Name: "A\r\nX-Sigra-User: x"}},
		{"group with a comma", NewUser{Email: "a@example.com", Groups: []string{"a,b"}}},
		{"short password", NewUser{Email: "a@example.com", Password: "short"}},
		{"over-long password", NewUser{Email: "a@example.com", Password: string(make([]byte, MaxPasswordLen+1))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if u, err := svc.CreateUser(ctx, tt.in); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("CreateUser(%+v) = %v, %v; want ErrInvalidInput", tt.in, u, err)
			}
		})
	}
	if len(st.byEmail) != 0 {
		t.Errorf("%d users stored after refused creations; want 0", len(st.byEmail))
	}
}

func TestCreateUserNormalises(t *testing.T) {
	svc, st := newSvcForTest(t, cheapArgon2)
	ctx := context.Background()
	u, err := svc.CreateUser(ctx, NewUser{
		Email: " Alice@Example.COM ", Name: "  Alice ", Groups: []string{"dev", " admins", "dev", ""},
		Password: "correct horse battery", EmailVerified: true,
	})
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if u.Email != "alice@example.com" || u.Name != "Alice" || !slices.Equal(u.Groups, []string{"dev", "admins"}) || !u.EmailVerified {
		t.Errorf("CreateUser = %+v; want email %q, name %q, groups [dev admins], verified", u, "alice@example.com", "Alice")
	}
	if !u.CreatedAt.Equal(svcTestStart) || !u.UpdatedAt.Equal(svcTestStart) || u.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt, UpdatedAt = %v, %v; want the clock's time in UTC %v", u.CreatedAt, u.UpdatedAt, svcTestStart)
	}
	if len(u.ID) != 36 || u.ID[14] != '7' {
		t.Errorf("ID = %q; want a UUIDv7", u.ID)
	}
	if !VerifyPassword(u.PasswordHash, "correct horse battery") {
		t.Errorf("stored hash %q does not verify the password", u.PasswordHash)
	}
	if _, err := svc.CheckPassword(ctx, "alice@example.com", "correct horse battery"); err != nil {
		t.Errorf("CheckPassword after CreateUser = %v; want nil", err)
	}

	nopw, err := svc.CreateUser(ctx, NewUser{Email: "bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if nopw.PasswordHash != "" {
		t.Errorf("user created without a password has hash %q; want none", nopw.PasswordHash)
	}
	if _, err := svc.CreateUser(ctx, NewUser{Email: "ALICE@example.com"}); !errors.Is(err, ErrEmailTaken) {
		t.Errorf("second CreateUser for the address in another case = %v; want ErrEmailTaken", err)
	}
	if n := len(st.byEmail); n != 2 {
		t.Errorf("%d users stored; want 2", n)
	}
}

// An address is one however its domain is written: a user added with
// an internationalised domain signs in with the ASCII form browsers
// send, and one stored in ASCII before domains were mapped still signs
// in either way and keeps the address from a second user.
func TestEmailDomainFormsAreOneAddress(t *testing.T) {
	params := Argon2Params{Memory: 8, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}
	svc, st := newSvcForTest(t, params)
	ctx := context.Background()
	if _, err := svc.CreateUser(ctx, NewUser{Email: "ute@BÜCHER.example", Password: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	for _, typed := range []string{"ute@bücher.example", "ute@xn--bcher-kva.example", "UTE@XN--BCHER-KVA.EXAMPLE"} {
		if _, err := svc.CheckPassword(ctx, typed, "correct horse battery"); err != nil {
			t.Errorf("CheckPassword(%q): %v; want the user", typed, err)
		}
	}
	if _, err := svc.CreateUser(ctx, NewUser{Email: "ute@xn--bcher-kva.example"}); !errors.Is(err, ErrEmailTaken) {
		t.Errorf("a second user at the ASCII form: %v; want ErrEmailTaken", err)
	}

	legacy := svcAddUser(t, st, params, "max@xn--mller-kva.example", "correct horse battery", false)
	for _, typed := range []string{"max@xn--mller-kva.example", "max@müller.example"} {
		if u, err := svc.CheckPassword(ctx, typed, "correct horse battery"); err != nil || u.ID != legacy.ID {
			t.Errorf("CheckPassword(%q) of a user stored in ASCII: %v; want the user", typed, err)
		}
		if u, err := svc.LookupUser(ctx, typed); err != nil || u.ID != legacy.ID {
			t.Errorf("LookupUser(%q) of a user stored in ASCII: %v; want the user", typed, err)
		}
	}
	if _, err := svc.CreateUser(ctx, NewUser{Email: "max@müller.example"}); !errors.Is(err, ErrEmailTaken) {
		t.Errorf("a second user at the Unicode form of an ASCII one: %v; want ErrEmailTaken", err)
	}
	if k1, _ := svc.AccountKey(ctx, "max@müller.example"); k1 != UserAccountKey(legacy.ID) {
		t.Errorf("AccountKey of the Unicode form: %q; want the user's", k1)
	}

	// Two users stored before, whose forms are now one address: each is
	// found by what it was stored as (what users list shows), and the
	// older spelling keeps its address from a new user.
	wide := svcAddUser(t, st, params, "ｗｅｎ@example.com", "correct horse battery", false)
	plain := svcAddUser(t, st, params, "wen@example.com", "another horse battery", false)
	if u, err := svc.LookupUser(ctx, "ｗｅｎ@example.com"); err != nil || u != nil && u.Email != wide.Email {
		t.Errorf("LookupUser of the full-width user as stored: %+v, %v; want %q", u, err, wide.Email)
	}
	if u, err := svc.LookupUser(ctx, "WEN@example.com"); err != nil || u != nil && u.Email != plain.Email {
		t.Errorf("LookupUser of the plain user: %+v, %v; want %q", u, err, plain.Email)
	}
	svcAddUser(t, st, params, "ｂｏｂ@example.com", "", false)
	if _, err := svc.CreateUser(ctx, NewUser{Email: "ｂｏｂ@example.com"}); !errors.Is(err, ErrEmailTaken) {
		t.Errorf("a new user typed as an older one's full-width address: %v; want ErrEmailTaken", err)
	}
}
