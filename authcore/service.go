package authcore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	goruntime "runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/ids"
	"github.com/sigra-auth/caddy-sigra/internal/seal"
)

// Config tunes the Service. Zero fields take the defaults noted.
type Config struct {
	// Idle ends a session unused for this long. Default 30m.
	Idle time.Duration
	// Lifetime ends a session this long after sign-in. Default 12h.
	Lifetime time.Duration
	// PendingLifetime ends a pending session (the password of a user
	// with a second factor, the second factor still to come) this long
	// after sign-in, if Lifetime does not end it sooner: a stolen
	// password buys a short window to try codes in, not a whole
	// session's. Completing the second factor gives the session its
	// Lifetime from sign-in. Default DefaultPendingLifetime.
	PendingLifetime time.Duration
	// TouchInterval is how often a session's LastSeen is written back to
	// the store. Default Idle/10, at most 1m.
	TouchInterval time.Duration
	// CacheTTL is how long a cached session is trusted before it is read
	// from the store again (revocations made by this process apply at
	// once; this bounds how late other writers are seen). Default 10s.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached sessions. Default 100000.
	CacheSize int
	// Argon2 are the parameters for new password hashes. Default DefaultArgon2.
	Argon2 Argon2Params
	// MaxTOTPFailures is how many wrong codes in a row lock an
	// authenticator app (ErrTOTPLocked). Default DefaultMaxTOTPFailures.
	MaxTOTPFailures int
	// PasswordChecks, when set, is where the service counts its argon2id
	// checks (PasswordChecks): one counter shared by the services that
	// replace each other keeps a count across them. Default: the
	// service's own.
	PasswordChecks *atomic.Uint64
}

// DefaultMaxTOTPFailures is the default Config.MaxTOTPFailures: NIST SP
// 800-63B's bound. With three codes in a million passing at any moment,
// it leaves a guesser a chance of 0.03 % before the owner is locked out
// and has to notice.
const DefaultMaxTOTPFailures = 100

// DefaultIdle is the default Config.Idle.
const DefaultIdle = 30 * time.Minute

// DefaultLifetime is the default Config.Lifetime.
const DefaultLifetime = 12 * time.Hour

// DefaultPendingLifetime is the default Config.PendingLifetime: time to
// find the phone or the recovery codes.
const DefaultPendingLifetime = 10 * time.Minute

func (c *Config) setDefaults() {
	if c.Idle <= 0 {
		c.Idle = DefaultIdle
	}
	if c.Lifetime <= 0 {
		c.Lifetime = DefaultLifetime
	}
	if c.PendingLifetime <= 0 {
		c.PendingLifetime = DefaultPendingLifetime
	}
	if c.TouchInterval <= 0 {
		c.TouchInterval = min(c.Idle/10, time.Minute)
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = 10 * time.Second
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 100_000
	}
	if c.Argon2 == (Argon2Params{}) {
		c.Argon2 = DefaultArgon2
	}
	if c.MaxTOTPFailures <= 0 {
		c.MaxTOTPFailures = DefaultMaxTOTPFailures
	}
}

// ClientMeta describes the client of a request, for sessions and audit.
type ClientMeta struct {
	IP        string
	UserAgent string
	// Host is the request's host (a Host header, port and all): the
	// session is valid on that host name alone.
	Host string
	// Secure is set when the request came over HTTPS. A session made
	// without it is Plain: not valid on HTTPS.
	Secure bool
}

// Service is the user and session core. It is safe for concurrent use.
type Service struct {
	store    Store
	box      *seal.Box
	clock    clock.Clock
	log      *slog.Logger
	cfg      Config
	fakeHash string
	cache    *sessionCache
	// hashSlots bounds concurrent argon2id checks: each allocates
	// Argon2.Memory, so a flood of sign-in posts must queue, not OOM.
	hashSlots chan struct{}
	// hashChecks counts the argon2id checks run (Config.PasswordChecks).
	hashChecks *atomic.Uint64

	touchMu sync.Mutex
	touched map[SessionID]time.Time
}

// NewService returns a Service over st; box seals secrets at rest (TOTP
// secrets and the like).
func NewService(log *slog.Logger, clk clock.Clock, st Store, box *seal.Box, cfg Config) (*Service, error) {
	cfg.setDefaults()
	fake, err := cfg.Argon2.HashPassword("sigra fake password for unknown users")
	if err != nil {
		return nil, err
	}
	s := &Service{
		store: st, box: box, clock: clk, log: log, cfg: cfg, fakeHash: fake,
		cache:      newSessionCache(cfg.CacheSize),
		touched:    make(map[SessionID]time.Time),
		hashSlots:  make(chan struct{}, max(4, 2*goruntime.GOMAXPROCS(0))),
		hashChecks: cfg.PasswordChecks,
	}
	if s.hashChecks == nil {
		s.hashChecks = new(atomic.Uint64)
	}
	// An evicted session's latest use must not be lost with it.
	s.cache.onEvict = s.queueTouch
	return s, nil
}

// Config returns the effective configuration.
func (s *Service) Config() Config { return s.cfg }

// Bound cuts sess's end to the lifetime in force now: a session keeps
// the end it was given at sign-in, and one signed in under a longer
// lifetime (before a reload or restart that shortened it, after an
// incident, say) ends by the shorter one. A longer lifetime lengthens
// none. PendingLifetime is not applied again: a session may have been
// made pending long after its sign-in (PendUnprovenSessions), and a
// pending one ends within minutes anyway.
func (c Config) Bound(sess *Session) {
	if end := sess.CreatedAt.Add(c.Lifetime); end.Before(sess.ExpiresAt) {
		sess.ExpiresAt = end
	}
}

// Store returns the backing store.
func (s *Service) Store() Store { return s.store }

// Now is the service clock's time.
func (s *Service) Now() time.Time { return s.clock.Now() }

// NewUser is the input to CreateUser.
type NewUser struct {
	Email    string
	Name     string
	Groups   []string
	Password string // empty: no password sign-in
	// EmailVerified marks the address as verified (admin-created users).
	EmailVerified bool
}

// CreateUser validates and stores a new user.
func (s *Service) CreateUser(ctx context.Context, in NewUser) (*User, error) {
	u, err := s.NewUserRecord(in)
	if err != nil {
		return nil, err
	}
	if err := s.store.CreateUser(ctx, u); err != nil {
		return nil, err
	}
	return u, nil
}

// earlierForm refuses, as ErrEmailTaken, a typed address a user holds
// under another form than its normal one, as stored before addresses
// were mapped (emailForms): the store knows only the normal one.
func (s *Service) earlierForm(ctx context.Context, typed string) error {
	forms, norm, err := emailForms(typed)
	if err != nil {
		return err
	}
	for _, f := range forms {
		if f == norm {
			continue
		}
		switch _, err := s.store.UserByEmail(ctx, f); {
		case err == nil:
			return fmt.Errorf("%w: as %s", ErrEmailTaken, f)
		case !errors.Is(err, ErrNotFound):
			return err
		}
	}
	return nil
}

// NewUserRecord is the user CreateUser would store for in, checked (and
// its address against older spellings in the store: earlierForm), with
// its id and password hash, not stored: for CreateUserWith.
func (s *Service) NewUserRecord(in NewUser) (*User, error) {
	u, err := checkNewUser(in)
	if err != nil {
		return nil, err
	}
	if err := s.earlierForm(context.Background(), in.Email); err != nil {
		return nil, err
	}
	now := s.clock.Now().UTC()
	u.ID, u.CreatedAt, u.UpdatedAt = ids.New(), now, now
	if in.Password != "" {
		if u.PasswordHash, err = s.cfg.Argon2.HashPassword(in.Password); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// CheckNewUser refuses in as NewUserRecord would (ErrInvalidInput),
// without a Service: for a caller that checks before it opens, or
// creates, a store.
func CheckNewUser(in NewUser) error {
	_, err := checkNewUser(in)
	return err
}

// checkNewUser checks in and returns the user it describes, without id,
// times or password hash.
func checkNewUser(in NewUser) (*User, error) {
	email, err := NormalizeEmail(in.Email)
	if err != nil {
		return nil, err
	}
	name, err := CleanName(in.Name)
	if err != nil {
		return nil, err
	}
	groups, err := NormalizeGroups(in.Groups)
	if err != nil {
		return nil, err
	}
	if in.Password != "" {
		if err := CheckNewPassword(in.Password); err != nil {
			return nil, err
		}
	}
	return &User{Email: email, EmailVerified: in.EmailVerified, Name: name, Groups: groups}, nil
}

// CreateUserWith stores u, made by NewUserRecord, through commit (see
// Commit).
func (s *Service) CreateUserWith(u *User, commit Commit) error {
	return s.commitUserChange(u.ID, commit, func(cs ChangeStore) func(tx any) error { return cs.CreateUserIn(u) })
}

// UpdateUser applies fn to the stored user and saves it, in one store
// transaction so that concurrent updates keep each other's changes. Any
// change to a user drops that user's cached sessions so headers update
// at once.
func (s *Service) UpdateUser(ctx context.Context, id string, fn func(u *User) error) (*User, error) {
	return s.updateUser(ctx, id, false, fn)
}

// updateUser is UpdateUser that, with revoke, also ends all the user's
// sessions in the same transaction.
func (s *Service) updateUser(ctx context.Context, id string, revoke bool, fn func(u *User) error) (*User, error) {
	s.cache.dropUser(id)
	u, err := s.store.UpdateUser(ctx, id, revoke, s.checkedUpdate(fn))
	s.cache.dropUser(id) // a request may have re-cached one meanwhile
	if err != nil {
		return nil, err
	}
	return u, nil
}

// checkedUpdate is fn, then the checks of what it changed.
func (s *Service) checkedUpdate(fn func(u *User) error) func(u *User) error {
	now := s.clock.Now().UTC()
	return func(u *User) error {
		was := u.Clone()
		if err := fn(u); err != nil {
			return err
		}
		// Whatever fn changed is validated like a new user's fields. What
		// it left alone stands, though a rule made since would refuse it:
		// a user stored before must still be disabled, unlocked or given
		// a new password.
		var err error
		if u.Email != was.Email {
			if u.Email, err = NormalizeEmail(u.Email); err != nil {
				return err
			}
		}
		if u.Name != was.Name {
			if u.Name, err = CleanName(u.Name); err != nil {
				return err
			}
		}
		if !slices.Equal(u.Groups, was.Groups) {
			if u.Groups, err = NormalizeGroups(u.Groups); err != nil {
				return err
			}
		}
		u.UpdatedAt = now
		return nil
	}
}

// SetPassword replaces a user's password and ends all their sessions, in
// one transaction.
func (s *Service) SetPassword(ctx context.Context, id, password string) error {
	if err := CheckNewPassword(password); err != nil {
		return err
	}
	hash, err := s.cfg.Argon2.HashPassword(password)
	if err != nil {
		return err
	}
	_, err = s.updateUser(ctx, id, true, func(u *User) error { u.PasswordHash = hash; return nil })
	return err
}

// ChangePassword replaces the password of cur's user, who has just proved
// the current one, and ends all their sessions, cur included: whoever else
// was signed in (with a stolen cookie, say) is out. cur goes on as a new
// session, with a new token and id, that carries over its methods, its
// second factor's time, its creation and expiry; its auth time is now.
// All in one store transaction, which finds cur still live: a session
// ended meanwhile (a logout, a revoke) answers ErrNoSession and nothing
// changes. Set the returned token as the cookie. secure says whether the
// request came over HTTPS: the new session is Plain if not (or if cur
// was).
func (s *Service) ChangePassword(ctx context.Context, cur *Session, password string, secure bool) (token string, sess *Session, err error) {
	return s.changePassword(cur, password, secure, func(sess *Session, fn func(u *User) error) error {
		_, err := s.store.UpdateUserRenewing(ctx, cur.UserID, cur.ID, sess, fn)
		return err
	})
}

// ChangePasswordWith is ChangePassword, made through commit (see Commit).
func (s *Service) ChangePasswordWith(cur *Session, password string, secure bool, commit Commit) (token string, sess *Session, err error) {
	cs, err := s.changeStore()
	if err != nil {
		return "", nil, err
	}
	return s.changePassword(cur, password, secure, func(sess *Session, fn func(u *User) error) error {
		return commit(cs.UpdateUserRenewingIn(cur.UserID, cur.ID, sess, fn))
	})
}

// changePassword checks and hashes the password (before any transaction
// is open: argon2 takes its time), then has save store the user's new
// hash and the renewed session.
func (s *Service) changePassword(cur *Session, password string, secure bool, save func(sess *Session, fn func(u *User) error) error) (token string, sess *Session, err error) {
	if err := CheckNewPassword(password); err != nil {
		return "", nil, err
	}
	hash, err := s.cfg.Argon2.HashPassword(password)
	if err != nil {
		return "", nil, err
	}
	return s.renewAlone(cur, secure, save, func(u *User, now time.Time) {
		u.PasswordHash, u.UpdatedAt = hash, now
	})
}

// EndOtherSessionsWith ends every session of cur's user but cur, whose
// user has just proved their password again: as ChangePassword does,
// without changing the password. cur goes on as a new session (a new
// token and id; its auth time is now), so that nothing signed in before,
// a stolen cookie of this very session included, stays in. Made through
// commit (see Commit); ErrNoSession if cur ended meanwhile. secure is as
// for ChangePassword.
func (s *Service) EndOtherSessionsWith(cur *Session, secure bool, commit Commit) (token string, sess *Session, err error) {
	cs, err := s.changeStore()
	if err != nil {
		return "", nil, err
	}
	save := func(sess *Session, fn func(u *User) error) error {
		return commit(cs.UpdateUserRenewingIn(cur.UserID, cur.ID, sess, fn))
	}
	return s.renewAlone(cur, secure, save, func(*User, time.Time) {})
}

// renewAlone has save end all sessions of cur's user, change the user by
// change, and store cur renewed: a new token and id, auth time now, and
// Plain if the request that renews it is not secure.
func (s *Service) renewAlone(cur *Session, secure bool, save func(sess *Session, fn func(u *User) error) error, change func(u *User, now time.Time)) (token string, sess *Session, err error) {
	now := s.clock.Now().UTC()
	sess = cur.Clone()
	token, sess.ID = NewToken()
	sess.AuthTime, sess.LastSeen = now, now
	sess.RenewedOver(secure)
	s.cache.dropUser(cur.UserID)
	err = save(sess, func(u *User) error {
		change(u, now)
		return nil
	})
	s.cache.dropUser(cur.UserID) // a request may have re-cached one meanwhile
	if errors.Is(err, ErrNotFound) {
		return "", nil, ErrNoSession
	}
	if err != nil {
		return "", nil, err
	}
	return token, sess, nil
}

// DeleteUser removes the user and everything kept for them: sessions
// (cached ones too), second factors, recovery codes, regulation state.
// Audit rows about them stay. The only enabled member of adminGroup is
// not deleted (ErrLastAdmin); two admins deleting each other at once
// cannot both succeed.
func (s *Service) DeleteUser(ctx context.Context, id, adminGroup string) error {
	s.cache.dropUser(id)
	err := s.store.DeleteUser(ctx, id, adminGroup)
	s.cache.dropUser(id) // a request may have re-cached one meanwhile
	return err
}

// ChangeStore is implemented by a Store whose changes can also be made
// inside a transaction it runs for something else: the audit row that
// tells of the change, so that the two are stored together or not at
// all. Each method returns the change, to be given that transaction.
type ChangeStore interface {
	CreateUserIn(u *User) func(tx any) error
	DeleteUserIn(id, keepGroup string) func(tx any) error
	UpdateUserIn(id string, revoke bool, fn func(u *User) error) func(tx any) error
	UpdateUserRenewingIn(id string, cur SessionID, next *Session, fn func(u *User) error) func(tx any) error
	DeleteTOTPIn(userID string, lastFactor, endSessions bool, at time.Time) func(tx any) error
	// PutSessionIn stores a sign-in's new session, if the user's second
	// factor still agrees with it (s is pending when, and only when, the
	// user has one and s has no AMRMFA), else ErrFactorsChanged.
	PutSessionIn(s *Session) func(tx any) error
	DeleteSessionIn(id SessionID) func(tx any) error
	ReplaceSessionIn(old SessionID, s *Session) func(tx any) error
	CompleteTOTPEnrolmentIn(userID string, rec *TOTPRecord, recoveryHashes [][]byte) func(tx any) error
	AcceptTOTPStepIn(userID string, step uint64, maxFailures int) func(tx any) error
	ClearTOTPFailuresIn(userID string) func(tx any) error
	// ReplaceRecoveryCodesIn is ReplaceRecoveryCodes in tx, if shown
	// holds for the stored set's digest (RecoverySetDigest), else
	// ErrRecoveryCodesChanged.
	ReplaceRecoveryCodesIn(userID string, shown func(digest string) bool, hashes [][]byte) func(tx any) error
	ConsumeRecoveryCodeIn(userID string, hash []byte) func(tx any) error
	UpdateRegulationIn(keys []string, fn func(states []*RegulationState) error) func(tx any) error
	ClearUserRegulationIn(userID string) func(tx any) error
}

// Commit makes a change of a ChangeStore in one transaction with what it
// records (audit.Log.RecordWith, RecordAllWith), and returns the
// change's own error (ErrNotFound, ErrLastAdmin) or its own. The …With
// methods take one.
type Commit func(change func(tx any) error) error

// changeStore is the store as a ChangeStore, or an error saying it is
// not one.
func (s *Service) changeStore() (ChangeStore, error) {
	cs, ok := s.store.(ChangeStore)
	if !ok {
		return nil, errors.New("authcore: this store cannot make a change in the transaction of its audit row")
	}
	return cs, nil
}

// commitUserChange makes the change to the user id that change gives
// of the store through commit, dropping the user's cached sessions
// around it.
func (s *Service) commitUserChange(id string, commit Commit, change func(ChangeStore) func(tx any) error) error {
	cs, err := s.changeStore()
	if err != nil {
		return err
	}
	s.cache.dropUser(id)
	err = commit(change(cs))
	s.cache.dropUser(id) // a request may have re-cached one meanwhile
	return err
}

// DeleteUserWith is DeleteUser, made through commit.
func (s *Service) DeleteUserWith(id, adminGroup string, commit Commit) error {
	return s.commitUserChange(id, commit, func(cs ChangeStore) func(tx any) error { return cs.DeleteUserIn(id, adminGroup) })
}

// UpdateUserWith is UpdateUser, made through commit; with revoke it also
// ends all the user's sessions, as SetDisabled and SetPassword do.
func (s *Service) UpdateUserWith(id string, revoke bool, fn func(u *User) error, commit Commit) error {
	checked := s.checkedUpdate(fn)
	return s.commitUserChange(id, commit, func(cs ChangeStore) func(tx any) error { return cs.UpdateUserIn(id, revoke, checked) })
}

// SetPasswordWith is SetPassword, made through commit. The password is
// checked and hashed first: commit's transaction is not held for that.
func (s *Service) SetPasswordWith(id, password string, commit Commit) error {
	if err := CheckNewPassword(password); err != nil {
		return err
	}
	hash, err := s.cfg.Argon2.HashPassword(password)
	if err != nil {
		return err
	}
	return s.UpdateUserWith(id, true, func(u *User) error { u.PasswordHash = hash; return nil }, commit)
}

// SetDisabled disables or enables a user; disabling ends their sessions
// in the same transaction.
func (s *Service) SetDisabled(ctx context.Context, id string, disabled bool) (*User, error) {
	return s.updateUser(ctx, id, disabled, func(u *User) error { u.Disabled = disabled; return nil })
}

// LookupUser finds a user by id, or by email when the argument contains '@'.
func (s *Service) LookupUser(ctx context.Context, idOrEmail string) (*User, error) {
	if strings.Contains(idOrEmail, "@") {
		return s.userByEmail(ctx, idOrEmail)
	}
	return s.store.UserByID(ctx, idOrEmail)
}

// CheckPassword verifies an email and password. Unknown users, wrong
// passwords, users without a password and disabled users all return
// ErrInvalidCredentials after the same argon2id work, so neither the
// answer nor its timing tells them apart; the right password of a
// disabled user wraps it as ErrAccountDisabled, for the audit row only.
// Other errors are storage failures.
func (s *Service) CheckPassword(ctx context.Context, email, password string) (*User, error) {
	u, hash, err := s.passwordOf(ctx, email)
	if err != nil {
		return nil, err
	}
	ok, err := s.verify(ctx, hash, password)
	if err != nil {
		return nil, err
	}
	switch {
	case !ok || u == nil || u.PasswordHash == "":
		return nil, ErrInvalidCredentials
	case u.Disabled:
		return nil, ErrAccountDisabled
	}
	return u, nil
}

// CheckPasswordFor is CheckPassword under a regulated attempt. An attempt
// crowded out by its address's others in flight is ErrCrowded. While the
// client's address refuses the attempt, the password is not checked:
// the answer is a failure either way, its timing then tells the client
// only about its own address, and a banned address cannot keep the
// bounded hashing slots busy for everyone else. An attempt refused for
// the account alone is still checked, so that it takes a wrong
// password's time.
func (s *Service) CheckPasswordFor(ctx context.Context, att *Attempt, email, password string) (*User, error) {
	if att.Crowded() {
		return nil, ErrCrowded
	}
	if !att.Allowed() && att.AddressRefused() {
		return nil, ErrInvalidCredentials
	}
	return s.CheckPassword(ctx, email, password)
}

// passwordOf returns the user of email and the hash to check against: the
// fake hash when there is no such user or no password.
func (s *Service) passwordOf(ctx context.Context, email string) (*User, string, error) {
	u, err := s.userByEmail(ctx, email)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidInput) {
		return nil, s.fakeHash, nil
	}
	if err != nil {
		return nil, "", err
	}
	if u.PasswordHash == "" {
		return u, s.fakeHash, nil
	}
	return u, u.PasswordHash, nil
}

// verify runs one argon2id check in a bounded slot, waiting at most 5s
// for one (ErrBusy after that).
func (s *Service) verify(ctx context.Context, hash, password string) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	select {
	case s.hashSlots <- struct{}{}:
	case <-wctx.Done():
		return false, ErrBusy
	}
	defer func() { <-s.hashSlots }()
	s.hashChecks.Add(1)
	return VerifyPassword(hash, password), nil
}

// PasswordChecks returns how many argon2id password checks have run: one
// per CheckPassword, whether the account exists, has a password, is
// disabled or is banned; none for an attempt refused for the client's
// address (CheckPasswordFor) or one that found every slot busy. With
// Config.PasswordChecks shared, the count is every sharer's.
func (s *Service) PasswordChecks() uint64 { return s.hashChecks.Load() }

// StartSession creates a new session for u after the given methods
// passed. It is always a new id (no fixation). If u has a second factor
// and amr does not include one, the session is pending, and ends after
// PendingLifetime unless the second factor completes it.
func (s *Service) StartSession(ctx context.Context, u *User, amr []string, meta ClientMeta) (string, *Session, error) {
	token, sess := s.NewSessionRecord(u, amr, meta)
	if err := s.store.PutSession(ctx, sess); err != nil {
		return "", nil, err
	}
	return token, sess, nil
}

// NewSessionRecord is the session StartSession makes, and its cookie
// token, not stored: for StartSessionWith.
func (s *Service) NewSessionRecord(u *User, amr []string, meta ClientMeta) (string, *Session) {
	now := s.clock.Now().UTC()
	token, id := NewToken()
	sess := &Session{
		ID: id, SignIn: id.String(), UserID: u.ID, CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(s.cfg.Lifetime),
		AuthTime: now, AMR: amr, IP: meta.IP, UserAgent: truncate(visible(meta.UserAgent), 256), Host: truncate(NormalizeHost(meta.Host), 255), Plain: !meta.Secure,
		UserEpoch: u.SessionEpoch, // as read when the credential was checked
	}
	if sess.HasAMR(AMRMFA) {
		sess.MFAAt = now
	} else if u.SecondFactor {
		sess.Pending = true
		sess.ExpiresAt = now.Add(min(s.cfg.Lifetime, s.cfg.PendingLifetime))
	}
	return token, sess
}

// StartSessionWith stores sess, made by NewSessionRecord, through commit
// (see Commit): the sign-in and its row are stored together or not at
// all. A second factor set up (or removed) since u was read is
// ErrFactorsChanged: sess would not wait for it, or wait for none, and
// its row say so.
func (s *Service) StartSessionWith(sess *Session, commit Commit) error {
	cs, err := s.changeStore()
	if err != nil {
		return err
	}
	return commit(cs.PutSessionIn(sess))
}

// Authenticate resolves a cookie token to its signed-in principal. It is
// the gate's hot path: a cached session costs a hash and a map lookup.
// It returns ErrNoSession for a missing, malformed, expired or revoked
// session, or a session of a disabled or deleted user; any other error is
// a storage failure. A pending session is returned with Session.Pending
// set: callers that need a signed-in user must check it.
func (s *Service) Authenticate(ctx context.Context, token string) (*Principal, error) {
	return s.AuthenticateAt(ctx, token, s.clock.Now())
}

// AuthenticateOn is Authenticate for a request to hostport (its Host),
// made over HTTPS if secure: a session of another site (see
// Session.OnSite) is ErrOtherHost, and its use there does not keep it
// from idling out.
func (s *Service) AuthenticateOn(ctx context.Context, token, hostport string, secure bool, now time.Time) (*Principal, error) {
	return s.authenticate(ctx, token, hostport, true, secure, true, now)
}

// AuthenticateAt is Authenticate at a time the caller already read from
// Now, so a request reads the clock once.
func (s *Service) AuthenticateAt(ctx context.Context, token string, now time.Time) (*Principal, error) {
	return s.authenticate(ctx, token, "", false, false, true, now)
}

// Recheck is AuthenticateOn for a connection let through earlier (a
// WebSocket), to learn whether its session goes on, without counting
// as a use of the session: the connection's traffic is counted as it
// comes, by AuthenticateOn.
func (s *Service) Recheck(ctx context.Context, token, hostport string, secure bool, now time.Time) (*Principal, error) {
	return s.authenticate(ctx, token, hostport, true, secure, false, now)
}

// authenticate resolves token at now, counting that as a use of the
// session if use is set. With onHost, a session not valid on hostport
// over HTTPS if secure (Session.OnSite) is ErrOtherHost.
func (s *Service) authenticate(ctx context.Context, token, hostport string, onHost, secure, use bool, now time.Time) (*Principal, error) {
	id, ok := TokenID(token)
	if !ok {
		return nil, ErrNoSession
	}
	p := s.cache.get(id)
	if p == nil || now.Sub(p.loadedAt) >= s.cfg.CacheTTL {
		// Note the cache generation before reading: a revocation racing
		// with this load then keeps the stale result out of the cache.
		var err error
		if p, err = s.load(ctx, id, p, now); err != nil {
			return nil, err
		}
	}
	last := p.lastSeen.Load()
	if !now.Before(p.Session.End()) || now.UnixNano()-last >= int64(s.cfg.Idle) {
		s.cache.drop(id)
		if err := s.store.DeleteSession(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
			s.log.Warn("deleting expired session", "error", err)
		}
		return nil, ErrNoSession
	}
	if onHost && !p.Session.OnSite(hostport, secure) {
		return nil, ErrOtherHost
	}
	// Refresh the in-memory LastSeen at most once a second (one atomic
	// store, no contention on busy sessions), and queue a write-back once
	// per TouchInterval.
	if use && now.UnixNano()-last >= int64(time.Second) {
		p.lastSeen.Store(now.UnixNano())
		if now.UnixNano()-p.persistedSeen.Load() >= int64(s.cfg.TouchInterval) {
			s.queueTouch(p)
		}
	}
	return p, nil
}

// queueTouch queues p's in-memory LastSeen for write-back if the store
// has an older one.
func (s *Service) queueTouch(p *Principal) {
	seen := p.lastSeen.Load()
	if seen <= p.persistedSeen.Load() {
		return
	}
	p.persistedSeen.Store(seen)
	s.touchMu.Lock()
	s.requeueLocked(p.Session.ID, time.Unix(0, seen))
	s.touchMu.Unlock()
}

func (s *Service) requeueLocked(id SessionID, seen time.Time) {
	if cur, ok := s.touched[id]; !ok || seen.After(cur) {
		s.touched[id] = seen
	}
}

// load reads a session and its user from the store into the cache. old
// is the stale cache entry, if any: its signed assertion is carried over
// when nothing it asserts has changed.
func (s *Service) load(ctx context.Context, id SessionID, old *Principal, now time.Time) (*Principal, error) {
	gen := s.cache.gen.Load()
	sess, err := s.store.GetSession(ctx, id)
	if errors.Is(err, ErrNotFound) {
		s.cache.drop(id)
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("reading session: %w", err)
	}
	s.cfg.Bound(sess)
	u, err := s.store.UserByID(ctx, sess.UserID)
	if errors.Is(err, ErrNotFound) || (err == nil && (u.Disabled || sess.UserEpoch != u.SessionEpoch)) {
		s.cache.drop(id)
		_ = s.store.DeleteSession(ctx, id)
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("reading session user: %w", err)
	}
	sess.Pending = sess.PendingFor(u)
	p := newPrincipal(sess, u, now)
	if old != nil {
		if seen := old.lastSeen.Load(); seen > p.lastSeen.Load() {
			p.lastSeen.Store(seen)
		}
		p.persistedSeen.Store(max(p.persistedSeen.Load(), old.persistedSeen.Load()))
		if old.fingerprint == p.fingerprint {
			p.assertion.Store(old.assertion.Load())
		}
	}
	s.cache.put(p, gen)
	return p, nil
}

// EndSession deletes a session (logout, revocation) and reports whether
// this call ended it: false when it had ended already (the same logout
// or revocation sent twice, say), so that one end is audited once. The
// cached copy is dropped before and after the delete: a request that
// read the session from the store before the delete committed may have
// cached it again.
func (s *Service) EndSession(ctx context.Context, id SessionID) (bool, error) {
	s.cache.drop(id)
	err := s.store.DeleteSession(ctx, id)
	s.cache.drop(id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// EndSessionWith is EndSession made through commit (see Commit): a
// session already ended is ErrNotFound, and nothing is stored.
func (s *Service) EndSessionWith(id SessionID, commit Commit) error {
	cs, err := s.changeStore()
	if err != nil {
		return err
	}
	s.cache.drop(id)
	err = commit(cs.DeleteSessionIn(id))
	s.cache.drop(id)
	return err
}

// RevokeUserSessions ends every session of a user, including one being
// started at this moment from a credential checked before the call: the
// store moves the user's SessionEpoch on with the delete, so such a
// session is refused when it is loaded, even if it is stored after.
func (s *Service) RevokeUserSessions(ctx context.Context, userID string) ([]SessionID, error) {
	s.cache.dropUser(userID)
	ids, err := s.store.DeleteUserSessions(ctx, userID)
	s.cache.dropUser(userID) // a request may have re-cached one meanwhile
	return ids, err
}

// DropCached forgets cached sessions of a user (after a change made
// elsewhere, such as a second factor enrolled).
func (s *Service) DropCached(userID string) { s.cache.dropUser(userID) }

// FlushTouches writes queued LastSeen updates to the store. When the
// store fails they stay queued for the next flush.
func (s *Service) FlushTouches(ctx context.Context) error {
	s.touchMu.Lock()
	if len(s.touched) == 0 {
		s.touchMu.Unlock()
		return nil
	}
	batch := s.touched
	s.touched = make(map[SessionID]time.Time, len(batch))
	s.touchMu.Unlock()
	err := s.store.TouchSessions(ctx, batch)
	if err != nil {
		s.touchMu.Lock()
		for id, seen := range batch {
			s.requeueLocked(id, seen)
		}
		s.touchMu.Unlock()
	}
	return err
}

// FlushActivity writes every cached session's latest LastSeen that the
// store does not have yet, not only those due by TouchInterval, so that a
// restart or a config reload measures idle time from the last request.
// Run calls it when it stops.
func (s *Service) FlushActivity(ctx context.Context) error {
	for i := range s.cache.shards {
		sh := &s.cache.shards[i]
		sh.mu.RLock()
		for _, p := range sh.m {
			s.queueTouch(p)
		}
		sh.mu.RUnlock()
	}
	return s.FlushTouches(ctx)
}

// Run does the background upkeep (LastSeen write-back every few seconds,
// expired-session cleanup every few minutes) until ctx is done, then
// flushes once more.
func (s *Service) Run(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("session upkeep panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	flush := time.NewTicker(min(s.cfg.TouchInterval, 5*time.Second))
	defer flush.Stop()
	prune := time.NewTicker(5 * time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.FlushActivity(fctx); err != nil {
				s.log.Warn("writing back session activity", "error", err)
			}
			cancel()
			return
		case <-flush.C:
			if err := s.FlushTouches(ctx); err != nil {
				s.log.Warn("writing back session activity", "error", err)
			}
		case <-prune.C:
			// The stored LastSeen may trail by up to TouchInterval.
			if n, err := s.store.DeleteExpiredSessions(ctx, s.clock.Now(), s.cfg.Idle+s.cfg.TouchInterval); err != nil {
				s.log.Warn("pruning expired sessions", "error", err)
			} else if n > 0 {
				s.log.Debug("pruned expired sessions", "count", n)
			}
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Principal is a signed-in session with its user, as cached for the hot
// path. Its User and Session are read-only snapshots.
type Principal struct {
	User    *User
	Session *Session
	// SessionID is Session.ID.String(), computed once.
	SessionID string
	// GroupsCSV and AMRCSV are the header forms, computed once.
	GroupsCSV string
	AMRCSV    string

	loadedAt      time.Time
	fingerprint   string
	lastSeen      atomic.Int64 // unix nanos
	persistedSeen atomic.Int64
	assertion     atomic.Pointer[cachedAssertions]
}

func newPrincipal(sess *Session, u *User, now time.Time) *Principal {
	p := &Principal{
		User: u, Session: sess, SessionID: sess.ID.String(),
		GroupsCSV: strings.Join(u.Groups, ","), AMRCSV: strings.Join(sess.AMR, ","),
		loadedAt: now,
	}
	p.fingerprint = fmt.Sprintf("%s|%d|%s|%s|%d|%t", u.ID, u.UpdatedAt.UnixNano(), p.AMRCSV, sess.AuthTime, sess.MFAAt.UnixNano(), sess.Pending)
	p.lastSeen.Store(sess.LastSeen.UnixNano())
	p.persistedSeen.Store(sess.LastSeen.UnixNano())
	return p
}

// sessionCache is a sharded map of principals with a size bound. gen
// counts invalidations: a load that began before one is not cached.
type sessionCache struct {
	shards      [32]cacheShard
	maxPerShard int
	gen         atomic.Uint64
	onEvict     func(*Principal) // called with the shard locked
	watch       watchSet         // told of every drop
	peers       atomic.Pointer[Peers]
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[SessionID]*Principal
}

func newSessionCache(size int) *sessionCache {
	c := &sessionCache{maxPerShard: max(size/32, 1)}
	for i := range c.shards {
		c.shards[i].m = make(map[SessionID]*Principal)
	}
	return c
}

func (c *sessionCache) shard(id SessionID) *cacheShard { return &c.shards[id[0]&31] }

func (c *sessionCache) get(id SessionID) *Principal {
	sh := c.shard(id)
	sh.mu.RLock()
	p := sh.m[id]
	sh.mu.RUnlock()
	return p
}

// put caches p unless an invalidation happened since generation gen was
// read (the caller then still uses p for its own request).
func (c *sessionCache) put(p *Principal, gen uint64) {
	sh := c.shard(p.Session.ID)
	sh.mu.Lock()
	if c.gen.Load() != gen {
		sh.mu.Unlock()
		return
	}
	if _, ok := sh.m[p.Session.ID]; !ok && len(sh.m) >= c.maxPerShard {
		for k, ev := range sh.m { // evict an arbitrary entry
			delete(sh.m, k)
			if c.onEvict != nil {
				c.onEvict(ev)
			}
			break
		}
	}
	sh.m[p.Session.ID] = p
	sh.mu.Unlock()
}

// drop forgets session id here and in the peers' caches.
func (c *sessionCache) drop(id SessionID) {
	c.forget(id)
	for _, o := range c.others() {
		o.forget(id)
	}
}

func (c *sessionCache) forget(id SessionID) {
	c.gen.Add(1)
	sh := c.shard(id)
	sh.mu.Lock()
	delete(sh.m, id)
	sh.mu.Unlock()
	c.watch.session(id)
}

// dropUser forgets the user's sessions here and in the peers' caches.
func (c *sessionCache) dropUser(userID string) {
	c.forgetUser(userID)
	for _, o := range c.others() {
		o.forgetUser(userID)
	}
}

func (c *sessionCache) forgetUser(userID string) {
	c.gen.Add(1)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for id, p := range sh.m {
			if p.User.ID == userID {
				delete(sh.m, id)
			}
		}
		sh.mu.Unlock()
	}
	c.watch.user(userID)
}

// userByEmail finds the user of a typed address under each of its forms
// (emailForms): ErrInvalidInput for no address, ErrNotFound for nobody.
func (s *Service) userByEmail(ctx context.Context, typed string) (*User, error) {
	forms, _, err := emailForms(typed)
	if err != nil {
		return nil, err
	}
	for _, email := range forms {
		u, err := s.store.UserByEmail(ctx, email)
		if !errors.Is(err, ErrNotFound) {
			return u, err
		}
	}
	return nil, ErrNotFound
}
