package authcore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
)

// RegulationConfig tunes the Regulator (the Caddyfile's regulation block).
// Zero fields take the defaults noted.
type RegulationConfig struct {
	// MaxRetries is how many failed attempts on one account within
	// FindTime start a ban of the account: the MaxRetries-th failure bans.
	// Default 5.
	MaxRetries int
	// MaxRetriesPerIP is the same for one client address (an IPv4
	// address, or an IPv6 /64), whatever accounts were tried, so that
	// trying a few passwords on many accounts is stopped too. Default
	// 4 × MaxRetries.
	MaxRetriesPerIP int
	// FindTime is the window failures are counted in. Default 10m.
	FindTime time.Duration
	// BanTime is how long a ban lasts. Default 15m.
	BanTime time.Duration
}

func (c *RegulationConfig) setDefaults() {
	if c.MaxRetries <= 0 {
		c.MaxRetries = 5
	}
	if c.MaxRetriesPerIP <= 0 {
		c.MaxRetriesPerIP = 4 * c.MaxRetries
	}
	if c.FindTime <= 0 {
		c.FindTime = 10 * time.Minute
	}
	if c.BanTime <= 0 {
		c.BanTime = 15 * time.Minute
	}
}

// MaxFailureDelay caps Regulator.Delay.
const MaxFailureDelay = 3 * time.Second

// Regulator slows down and then bans guessing of passwords and second
// factors, per account and per client address. Its state lives in a
// RegulationStore, so bans survive restarts and are shared by instances
// over one database. It is safe for concurrent use.
//
// Every check of a password, TOTP code or recovery code goes like this:
//
//	att, err := reg.Begin(ctx, account, ip) // storage error: fail closed
//	u, err := svc.CheckPasswordFor(ctx, att, email, pw) // runs unless the address is banned: same work, same timing
//	if !att.Allowed() || err != nil {
//		res, _ := att.Fail(ctx)
//		if res.Lockout() { /* write one auth.lockout row */ }
//		/* write auth.login.failure (or mfa.challenge.failure), wait res.Delay, answer "invalid email or password" */
//	}
//	att.Succeed(ctx, true) // codes are counted under UserMFAKey, apart
//
// A refused attempt (Allowed false: a ban, or the account's quota taken by
// attempts in flight) must look exactly like a wrong password: same page,
// same status, same delay, whatever the password check said. The account
// is UserAccountKey(user.ID) for a known user, or Service.AccountKey of
// what was typed, which gives the same key for every spelling of a known
// user's email and a stable key for unknown ones, so unknown and known
// accounts behave alike.
type Regulator struct {
	st  RegulationStore
	clk clock.Clock
	cfg RegulationConfig
}

// NewRegulator returns a Regulator over st.
func NewRegulator(clk clock.Clock, st RegulationStore, cfg RegulationConfig) *Regulator {
	cfg.setDefaults()
	return &Regulator{st: st, clk: clk, cfg: cfg}
}

// Config returns the effective configuration.
func (r *Regulator) Config() RegulationConfig { return r.cfg }

// UserAccountKey is the regulation key of a known user's password.
func UserAccountKey(userID string) string { return "user:" + userID }

// UserReauthKey is the regulation key of a signed-in user's password
// re-checks in one session (before a password change, a TOTP set-up,
// revoking another session, deleting the account). It is not the
// sign-in's: anyone who knows an email can ban its sign-in for a while,
// and that must not keep the owner, signed in, from changing the
// password then. It is the session's, not the user's: whoever holds a
// stolen session cookie bans only that session's re-checks by guessing,
// not the owner's in another session, who can still change the password
// or revoke the thief's session.
func UserReauthKey(userID, sessionID string) string { return UserReauthPrefix(userID) + sessionID }

// UserReauthPrefix starts the re-check keys of every session of a user.
func UserReauthPrefix(userID string) string { return "reauth:" + userID + "/" }

// AccountKeyUser returns the user whose password key is key (from
// UserAccountKey, UserReauthKey or AccountKey), and false for a key of
// no known user.
func AccountKeyUser(key string) (string, bool) {
	if id, ok := strings.CutPrefix(key, "user:"); ok {
		return id, true
	}
	if rest, ok := strings.CutPrefix(key, "reauth:"); ok {
		id, _, _ := strings.Cut(rest, "/")
		return id, true
	}
	return "", false
}

// UserMFAKey is the regulation key of a user's second-factor codes at
// sign-in. It is not the password's: anyone who knows an email can ban
// its password for a while, and that must not also keep the owner,
// already signed in, from a step-up.
func UserMFAKey(userID string) string { return "mfa:" + userID }

// UserStepUpKey is the regulation key of the codes given, as step-ups,
// in the sessions of one sign-in that passed the second factor (signIn:
// a session's SignInKey, which its renewals and step-ups carry over with
// a new id), apart from the sign-in's (UserMFAKey):
// whoever holds a stolen cookie of one sign-in must not, by guessing,
// ban the owner's step-ups in their others, which would keep the owner
// from ending the thief's. Such a sign-in cannot be had without a code,
// and renewing a session keeps its key, so a thief gets no more guesses
// than the sign-ins it stole (the address's count and the app's lock
// after max_totp_failures still apply). A copy of the owner's own
// session shares its key: signing out there ends both.
func UserStepUpKey(userID, signIn string) string { return UserStepUpPrefix(userID) + signIn }

// UserStepUpPrefix starts the step-up keys of every sign-in of a user.
func UserStepUpPrefix(userID string) string { return "mfa:" + userID + "/" }

// UserSessionPrefixes start the regulation keys a user has per session
// or sign-in: password re-checks and step-ups.
func UserSessionPrefixes(userID string) []string {
	return []string{UserReauthPrefix(userID), UserStepUpPrefix(userID)}
}

// checkedWhileBanned says whether the caller still checks an attempt on
// account while the account refuses it: a password is (the same work and
// time as a wrong one), a second-factor code is not, so only the first
// costs anything to count against the address.
func checkedWhileBanned(account string) bool { return !strings.HasPrefix(account, UserMFAKey("")) }

// UserRegulationKeys are the regulation keys of a known user but for
// the re-check and step-up keys of its sessions, which start with
// UserReauthPrefix and UserStepUpPrefix;
// and the one re-check key per user of versions before those, so that a
// deletion or an unlock clears what an older version left.
func UserRegulationKeys(userID string) []string {
	return []string{UserAccountKey(userID), UserMFAKey(userID), "reauth:" + userID}
}

// userRegulationKeys are all the regulation keys of a known user held in
// st: UserRegulationKeys, and the re-check and step-up keys of the
// sessions that have any.
func userRegulationKeys(ctx context.Context, st RegulationStore, userID string) ([]string, error) {
	keys := UserRegulationKeys(userID)
	for _, prefix := range UserSessionPrefixes(userID) {
		err := st.RegulationStates(ctx, prefix, func(key string, _ *RegulationState) bool {
			keys = append(keys, key)
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// AccountKey returns the regulation key for an identifier typed into a
// sign-in form: UserAccountKey of the user when it names one, else a key
// derived from the normalised identifier (hashed: typed strings of
// strangers are not kept). Errors are storage failures.
func (s *Service) AccountKey(ctx context.Context, identifier string) (string, error) {
	norm, err := NormalizeEmail(identifier)
	if err == nil {
		u, err := s.userByEmail(ctx, identifier)
		if err == nil {
			return UserAccountKey(u.ID), nil
		}
		if !errors.Is(err, ErrNotFound) {
			return "", err
		}
	} else {
		norm = strings.ToLower(strings.TrimSpace(identifier))
	}
	sum := sha256.Sum256([]byte("sigra/regulation/v1\x00" + norm))
	return "email:" + base64.RawURLEncoding.EncodeToString(sum[:16]), nil
}

// ipKey is the regulation key of a client address: IPv4 addresses count
// alone, IPv6 addresses by /64 (one subscriber's usual share). "" means
// no address is known.
func ipKey(ip string) string {
	ip = strings.TrimSpace(ip)
	if ip == "" {
		return ""
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		ap, perr := netip.ParseAddrPort(ip)
		if perr != nil {
			sum := sha256.Sum256([]byte(ip))
			return ipKeyPrefix + "?" + base64.RawURLEncoding.EncodeToString(sum[:16])
		}
		a = ap.Addr()
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return ipKeyPrefix + p.String()
	}
	return ipKeyPrefix + a.String()
}

// ipKeyPrefix starts every client address's regulation key.
const ipKeyPrefix = "ip:"

// Attempt is one regulated check of a credential, from Begin to exactly
// one call of Fail or Succeed. It is not safe for concurrent use.
type Attempt struct {
	r       *Regulator
	keys    []string // the account, then the address if known
	limits  []int
	at      time.Time
	allowed bool
	addr    bool // the client address refused it (banned or at its quota)
	// addrOnly: refused for the account alone, the attempt still counts
	// for the address (see Begin).
	addrOnly bool
	// crowded: the address's attempts fill its quota, with no ban of the
	// address (see Crowded).
	crowded bool
	until   time.Time
	done    bool
}

// Begin starts an attempt on account (a key from UserAccountKey,
// UserMFAKey or Service.AccountKey) from client address ip ("" if
// unknown). The attempt is allowed unless the account or the address is
// banned, or attempts in flight already fill the account's or address's
// quota; an allowed attempt counts as a failure until Succeed says
// otherwise, so parallel guessing gets no more tries than serial
// guessing. Errors are storage failures: deny the request.
func (r *Regulator) Begin(ctx context.Context, account, ip string) (*Attempt, error) {
	if account == "" {
		return nil, fmt.Errorf("%w: regulation needs an account key", ErrInvalidInput)
	}
	a := &Attempt{r: r, keys: []string{account}, limits: []int{r.cfg.MaxRetries}, at: r.clk.Now().UTC()}
	if k := ipKey(ip); k != "" {
		a.keys = append(a.keys, k)
		a.limits = append(a.limits, r.cfg.MaxRetriesPerIP)
	}
	err := r.st.UpdateRegulation(ctx, a.keys, func(states []*RegulationState) error {
		a.allowed, a.addr, a.until, a.crowded = true, false, time.Time{}, false
		for i, st := range states {
			r.settle(st, a.at)
			switch {
			case a.at.Before(st.BannedUntil):
				a.allowed = false
				a.addr = a.addr || i == 1
				if st.BannedUntil.After(a.until) {
					a.until = st.BannedUntil
				}
			case len(st.Attempts) >= a.limits[i]:
				a.allowed = false
				a.addr = a.addr || i == 1
				// The address's quota, not a ban of it: whatever the
				// account's state, which the answer must not tell.
				a.crowded = i == 1
			}
		}
		a.addrOnly = !a.allowed && !a.addr && len(states) > 1 && checkedWhileBanned(account)
		for i, st := range states {
			// An attempt the account refused while its address did not
			// is still checked (a wrong password's time, and hashing
			// cost): it counts for the address, so that one address
			// cannot hash without end at a banned account (any email,
			// banned by its own first failures) and keep the bounded
			// hashing slots from everyone else.
			if a.allowed || (a.addrOnly && i == 1) {
				st.Attempts = append(st.Attempts, a.at)
				st.InFlight = append(st.InFlight, a.at)
			}
			r.stamp(st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("regulation: %w", err)
	}
	return a, nil
}

// Allowed reports whether the attempt may succeed. When false, the caller
// still runs the check (same timing) but answers as for a wrong
// credential, and calls Fail.
func (a *Attempt) Allowed() bool { return a.allowed }

// Checked reports whether the caller checks the credential of this
// attempt and it counts as a failure somewhere if wrong: an allowed
// attempt, or a password the account alone refused (see Begin), which
// counts for its address. A refused attempt that is not Checked cost its
// sender nothing.
func (a *Attempt) Checked() bool { return a.allowed || a.addrOnly }

// AddressRefused reports whether the client address refused the attempt
// (banned, or its quota in flight), whatever the account's state.
func (a *Attempt) AddressRefused() bool { return a.addr }

// Crowded reports an attempt refused because the client address's
// attempts (in flight, and its failures within the window) fill its
// quota, without a ban of the address. It is decided by the address
// alone, whatever the account's state, so that the answer tells nothing
// of the account. It was not counted; answer ErrCrowded.
func (a *Attempt) Crowded() bool { return a.crowded }

// RefusedBy is the regulation key that refused the attempt: the client
// address's if it did, else the account's; "" for an allowed attempt.
// Callers use it to keep one record of a run of refusals, which cost the
// sender nothing.
func (a *Attempt) RefusedBy() string {
	switch {
	case a.allowed:
		return ""
	case a.addr:
		return a.keys[1]
	}
	return a.keys[0]
}

// BannedUntil is when the ban that refused the attempt ends (zero if
// none). It is for logs and admins; never tell the client.
func (a *Attempt) BannedUntil() time.Time { return a.until }

// FailResult is what a failed attempt led to.
type FailResult struct {
	// Delay is how long to wait before answering the failure (see
	// Regulator.Delay): honour ctx while waiting.
	Delay time.Duration
	// AccountLocked and IPLocked report that this failure started a ban
	// of the account or of the client address. Each ban is reported by
	// exactly one failure.
	AccountLocked bool
	IPLocked      bool
	// Until is when the ban started by this failure ends.
	Until time.Time
}

// Lockout reports whether this failure started a ban: write one
// auth.lockout audit row (metadata: which of account and IP, and Until).
func (f FailResult) Lockout() bool { return f.AccountLocked || f.IPLocked }

// Fail records that the attempt failed (or was refused). The failure that
// brings the account to MaxRetries, or the address to MaxRetriesPerIP,
// within FindTime starts a ban of BanTime and says so once. A refused
// attempt changes nothing but, when the account alone refused it, the
// address's count (Begin), which may start the address's ban.
//
// The delay comes from the client address alone (the account's count
// only when no address is known): the longest while the address is
// banned, else Delay of its failures scaled to MaxRetries. So its
// timing tells a client nothing of the account tried, not whether it is
// banned nor how many failures others left on it; the account's own
// protection is its ban. On a storage error the result still carries a
// delay to apply.
func (a *Attempt) Fail(ctx context.Context) (FailResult, error) {
	r := a.r
	if a.done || (!a.allowed && !a.addrOnly) {
		return FailResult{Delay: MaxFailureDelay}, nil
	}
	a.done = true
	now := r.clk.Now().UTC()
	skip := 0 // keys before this one are not counted: the account refused the attempt
	if !a.allowed {
		skip = 1
	}
	var res FailResult
	err := r.st.UpdateRegulation(ctx, a.keys[skip:], func(states []*RegulationState) error {
		res = FailResult{}
		for i, st := range states {
			k := skip + i
			r.settle(st, now)
			landed(st, a.at)
			banned := now.Before(st.BannedUntil)
			if !banned && st.failures() >= a.limits[k] {
				st.BannedUntil, st.Attempts, st.InFlight = now.Add(r.cfg.BanTime), nil, nil
				res.Until, banned = st.BannedUntil, true
				if k == 0 {
					res.AccountLocked = true
				} else {
					res.IPLocked = true
				}
			}
			r.stamp(st)
			if k == len(a.keys)-1 { // the address if known: it sets the delay
				res.Delay = MaxFailureDelay
				if !banned {
					res.Delay = r.Delay(st.failures() * r.cfg.MaxRetries / a.limits[k])
				}
			}
		}
		return nil
	})
	if err != nil {
		return FailResult{Delay: MaxFailureDelay}, fmt.Errorf("regulation: %w", err)
	}
	return res, nil
}

// Succeed records that the attempt passed: it no longer counts as a
// failure. With proven (the key's own secret passed: the password for
// UserAccountKey, a code for UserMFAKey) the account key's earlier
// failures are cleared as well; pass false when nothing was proven for
// this account (the check did not run). The keys being apart, a known
// password cannot reset the count of wrong codes. The address's other
// failures always stay (one account's success says nothing about the
// others tried from there). A ban is never lifted here. Succeed on a
// refused attempt returns ErrInvalidCredentials: a refused attempt never
// succeeds.
func (a *Attempt) Succeed(ctx context.Context, proven bool) error {
	if !a.allowed {
		return ErrInvalidCredentials
	}
	if a.done {
		return nil
	}
	a.done = true
	r := a.r
	now := r.clk.Now().UTC()
	err := r.st.UpdateRegulation(ctx, a.keys, func(states []*RegulationState) error {
		for i, st := range states {
			r.settle(st, now)
			landed(st, a.at)
			if j := slices.IndexFunc(st.Attempts, a.at.Equal); j >= 0 {
				st.Attempts = slices.Delete(st.Attempts, j, j+1)
			}
			if i == 0 && proven {
				st.Attempts, st.InFlight = nil, nil
			}
			r.stamp(st)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("regulation: %w", err)
	}
	return nil
}

// Abandon records that the attempt checked nothing that could have
// passed (an authenticator app locked by wrong codes, every hashing slot
// busy): it no longer counts, and earlier failures stay. It is Succeed
// without the success; on an attempt the account refused, it takes back
// what Begin counted for the address.
func (a *Attempt) Abandon(ctx context.Context) error {
	if a.addrOnly && !a.done {
		// Refused for the account and counted for the address (Begin),
		// but nothing was checked after all (every hashing slot busy):
		// it no longer counts there either.
		a.done = true
		err := a.r.st.UpdateRegulation(ctx, a.keys[1:], func(states []*RegulationState) error {
			st := states[0]
			landed(st, a.at)
			if j := slices.IndexFunc(st.Attempts, a.at.Equal); j >= 0 {
				st.Attempts = slices.Delete(st.Attempts, j, j+1)
			}
			a.r.stamp(st)
			return nil
		})
		if err != nil {
			return fmt.Errorf("regulation: %w", err)
		}
		return nil
	}
	if !a.allowed {
		return nil
	}
	return a.Succeed(ctx, false)
}

// Delay is how long to hold back the answer to a failure when this many
// failures are counted (an address's scaled to MaxRetries, see Fail):
// nothing for the first two, then 0.5 s, 1 s, 2 s, and MaxFailureDelay
// from the sixth on.
func (r *Regulator) Delay(failures int) time.Duration {
	if failures < 3 {
		return 0
	}
	if failures-3 >= 3 {
		return MaxFailureDelay
	}
	return min(500*time.Millisecond<<(failures-3), MaxFailureDelay)
}

// Unlock lifts a user's bans (password and second factor) and clears
// their failures. Bans of client addresses stay. An administrator's
// unlock (caddy sigra user unlock, the admin API's users/<id>/unlock) is
// Service.UnlockWith, which does this and UnlockTOTP in one transaction
// with its admin.user.unlock row.
func (r *Regulator) Unlock(ctx context.Context, userID string) error {
	keys, err := userRegulationKeys(ctx, r.st, userID)
	if err != nil {
		return err
	}
	return r.st.UpdateRegulation(ctx, keys, clearStates)
}

// UnlockWith is Unlock of the user's bans and UnlockTOTP of their app,
// made through commit (see Commit) in one transaction with the
// admin.user.unlock row: both locks are lifted with their row, or
// neither is.
func (s *Service) UnlockWith(ctx context.Context, userID string, commit Commit) error {
	cs, err := s.changeStore()
	if err != nil {
		return err
	}
	bans, app := cs.ClearUserRegulationIn(userID), cs.ClearTOTPFailuresIn(userID)
	return commit(func(tx any) error {
		if err := bans(tx); err != nil {
			return err
		}
		return app(tx)
	})
}

// AddressBan is a ban of a client address: MaxRetriesPerIP failures
// from it within FindTime, whatever accounts they tried.
type AddressBan struct {
	// Address is an IPv4 address or an IPv6 /64.
	Address string    `json:"address"`
	Until   time.Time `json:"banned_until"`
}

// AddressBans lists the client addresses banned now, in key order.
func (r *Regulator) AddressBans(ctx context.Context) ([]AddressBan, error) {
	now := r.clk.Now()
	var bans []AddressBan
	err := r.st.RegulationStates(ctx, ipKeyPrefix, func(key string, st *RegulationState) bool {
		if now.Before(st.BannedUntil) {
			bans = append(bans, AddressBan{Address: KeyAddress(key), Until: st.BannedUntil})
		}
		return true
	})
	return bans, err
}

// AddressKey is the regulation key of a client address as an
// administrator writes it (an IPv4 or IPv6 address, or as AddressBans
// lists it: an IPv6 /64, or "?…" for a client address that was no IP
// address): ErrInvalidInput for anything else.
func AddressKey(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if strings.HasPrefix(addr, "?") && len(addr) > 1 {
		return ipKeyPrefix + addr, nil // listed so: a client address that was no IP address
	}
	if p, err := netip.ParsePrefix(addr); err == nil && p.Addr().Is6() && !p.Addr().Is4In6() && p.Bits() == 64 {
		addr = p.Addr().String()
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("%w: %q is not an IP address (or an IPv6 /64)", ErrInvalidInput, addr)
	}
	return ipKey(a.String()), nil
}

// KeyAddress is the client address of an AddressKey, as AddressBans
// lists it.
func KeyAddress(key string) string { return strings.TrimPrefix(key, ipKeyPrefix) }

// UnlockAddressWith lifts the ban of a client address (key from
// AddressKey) and forgets its failures, made through commit (see Commit)
// in one transaction with the row telling of it. An address with
// neither is ErrNotFound, and nothing is written.
func (s *Service) UnlockAddressWith(ctx context.Context, reg *Regulator, key string, commit Commit) error {
	cs, err := s.changeStore()
	if err != nil {
		return err
	}
	st, err := reg.st.RegulationState(ctx, key)
	if err != nil {
		return err
	}
	reg.settle(st, reg.clk.Now())
	if st.BannedUntil.IsZero() && len(st.Attempts) == 0 {
		return fmt.Errorf("%w: no ban or failures recorded for %s", ErrNotFound, KeyAddress(key))
	}
	return commit(cs.UpdateRegulationIn([]string{key}, clearStates))
}

// clearStates forgets every failure and ban of states.
func clearStates(states []*RegulationState) error {
	for _, st := range states {
		*st = RegulationState{}
	}
	return nil
}

// AccountBan returns when the ban of the user's password ends, or the
// zero time if there is none (for the admin pages).
func (r *Regulator) AccountBan(ctx context.Context, userID string) (time.Time, error) {
	return r.Ban(ctx, UserAccountKey(userID))
}

// Ban returns when the ban of a regulation key ends, or the zero time if
// the key is not banned.
func (r *Regulator) Ban(ctx context.Context, key string) (time.Time, error) {
	st, err := r.st.RegulationState(ctx, key)
	if err != nil {
		return time.Time{}, err
	}
	if r.clk.Now().Before(st.BannedUntil) {
		return st.BannedUntil, nil
	}
	return time.Time{}, nil
}

// ReauthBan is when the latest ban of a user's password re-checks ends,
// among their sessions (zero if none is banned now).
func (r *Regulator) ReauthBan(ctx context.Context, userID string) (time.Time, error) {
	return r.latestBan(ctx, UserReauthPrefix(userID))
}

// CodesBan is when the latest ban of a user's second-factor codes ends,
// at sign-in (UserMFAKey) or in a session stepping up (zero if none is
// banned now).
func (r *Regulator) CodesBan(ctx context.Context, userID string) (time.Time, error) {
	until, err := r.Ban(ctx, UserMFAKey(userID))
	if err != nil {
		return time.Time{}, err
	}
	stepUp, err := r.latestBan(ctx, UserStepUpPrefix(userID))
	if stepUp.After(until) {
		until = stepUp
	}
	return until, err
}

// latestBan is when the latest ban of the keys starting with prefix ends
// (zero if none is banned now).
func (r *Regulator) latestBan(ctx context.Context, prefix string) (time.Time, error) {
	now := r.clk.Now()
	var until time.Time
	err := r.st.RegulationStates(ctx, prefix, func(_ string, st *RegulationState) bool {
		if now.Before(st.BannedUntil) && st.BannedUntil.After(until) {
			until = st.BannedUntil
		}
		return true
	})
	return until, err
}

// Prune forgets states whose failures and bans are all over. Run it now and
// then (every few minutes); it only bounds the store's size.
func (r *Regulator) Prune(ctx context.Context) (int, error) {
	return r.st.PruneRegulation(ctx, r.clk.Now())
}

// settle brings a state to now: an ended ban is forgotten together with the
// failures that led to it, and attempts older than FindTime drop out.
func (r *Regulator) settle(st *RegulationState, now time.Time) {
	if !st.BannedUntil.IsZero() && !now.Before(st.BannedUntil) {
		st.BannedUntil, st.Attempts, st.InFlight = time.Time{}, nil, nil
	}
	cutoff := now.Add(-r.cfg.FindTime)
	old := func(t time.Time) bool { return !t.After(cutoff) }
	st.Attempts = slices.DeleteFunc(st.Attempts, old)
	st.InFlight = slices.DeleteFunc(st.InFlight, old)
	if len(st.Attempts) == 0 {
		st.Attempts = nil
	}
	if len(st.InFlight) == 0 {
		st.InFlight = nil
	}
}

// landed takes the attempt begun at at out of st's attempts in flight:
// it failed, passed or was given up, and is no longer under way.
func landed(st *RegulationState, at time.Time) {
	if j := slices.IndexFunc(st.InFlight, at.Equal); j >= 0 {
		st.InFlight = slices.Delete(st.InFlight, j, j+1)
	}
	if len(st.InFlight) == 0 {
		st.InFlight = nil
	}
}

// failures are st's counted attempts that failed: those not in flight.
func (st *RegulationState) failures() int { return len(st.Attempts) - len(st.InFlight) }

// stamp sets when a state can be pruned.
func (r *Regulator) stamp(st *RegulationState) {
	st.Expires = st.BannedUntil
	for _, t := range st.Attempts {
		if e := t.Add(r.cfg.FindTime); e.After(st.Expires) {
			st.Expires = e
		}
	}
	if st.IsZero() {
		st.Expires = time.Time{}
	}
}
