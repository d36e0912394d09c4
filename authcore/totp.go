package authcore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// TOTP sentinel errors. Only caddymodule maps them to pages.
var (
	// ErrInvalidCode is the single answer for a wrong, malformed, replayed
	// or out-of-window TOTP code and for an unknown or spent recovery
	// code. Wrapped errors add a detail for logs; show users only this.
	ErrInvalidCode = errors.New("invalid code")
	// ErrNoPendingEnrolment means ConfirmTOTP found no enrolment to
	// confirm: none was started, it expired, or it was already confirmed.
	ErrNoPendingEnrolment = errors.New("no pending TOTP enrolment")
	// ErrNotEnrolled means the user has no TOTP authenticator (or, for
	// recovery codes, no second factor at all).
	ErrNotEnrolled = errors.New("no second factor enrolled")
	// ErrTOTPLocked means the user's authenticator app took
	// Config.MaxTOTPFailures wrong codes in a row and accepts none until
	// a recovery code passes or an administrator unlocks the account
	// (UnlockTOTP). VerifyTOTP returns it alone when the app was locked
	// already and nothing was checked, and together with ErrInvalidCode
	// for the wrong code that locked it (write one auth.lockout row).
	ErrTOTPLocked = errors.New("the authenticator app is locked after too many wrong codes in a row")
	// errMalformedCode is a code that is not six digits: not a guess at
	// one, so not counted towards ErrTOTPLocked.
	errMalformedCode = fmt.Errorf("%w: not a %d-digit code", ErrInvalidCode, totpDigits.Length())
)

// TOTP parameters. They are what every authenticator app supports: SHA-1,
// six digits, 30-second steps, a 160-bit secret.
const (
	totpPeriod     = 30
	totpDigits     = otp.DigitsSix
	totpSecretSize = 20
	// totpSkew is how many steps either side of now a code may be from:
	// one step absorbs clock drift and typing time.
	totpSkew = 1
)

// TOTPEnrolmentTTL is how long a started TOTP enrolment can be confirmed.
const TOTPEnrolmentTTL = 15 * time.Minute

// TOTPEnrolment is what the enrolment page shows: the same secret three
// ways. It is secret itself: never log it, and serve the page with
// Cache-Control: no-store.
type TOTPEnrolment struct {
	// Secret is the base32 secret, for typing into an app by hand.
	Secret string
	// URL is the otpauth:// key URI (what the QR code encodes).
	URL string
	// QRCode is a 256×256 PNG of URL as a data: URI. html/template
	// sanitises data: URIs in src attributes, so pass it as template.URL.
	QRCode string
	// ExpiresAt is when the enrolment can no longer be confirmed.
	ExpiresAt time.Time
	// Page is the enrolment, sealed, for the form that confirms it to
	// send back (see totpPageAAD). It holds Secret: keep it as secret.
	Page string
}

// String redacts the secret.
func (e *TOTPEnrolment) String() string { return "TOTPEnrolment{REDACTED}" }

// LogValue implements slog.LogValuer, redacting the secret.
func (e *TOTPEnrolment) LogValue() slog.Value {
	return slog.GroupValue(slog.Time("expires_at", e.ExpiresAt))
}

// totpAAD binds a sealed TOTP secret to its user, so that a sealed value
// cannot be moved to another user (nor a page's, totpPageAAD, stored as
// an app).
func totpAAD(userID string) []byte { return []byte("sigra/totp/v1\x00" + userID) }

func (s *Service) mustBox() error {
	if s.box == nil {
		return errors.New("no encryption key configured for TOTP secrets")
	}
	return nil
}

// maxIssuer bounds the issuer, which comes from the request's host: the
// key URI, issuer twice, must fit in one QR code with any email.
const maxIssuer = 100

// totpIssuer cleans the issuer: a colon separates issuer and account in
// the key URI's label.
func totpIssuer(issuer string) string {
	issuer = strings.TrimSpace(strings.ReplaceAll(issuer, ":", " "))
	if len(issuer) > maxIssuer {
		issuer = strings.ToValidUTF8(issuer[:maxIssuer], "")
	}
	if issuer == "" {
		return "Sigra"
	}
	return issuer
}

func totpAccount(u *User) string {
	if u.Email == "" {
		return u.ID
	}
	return u.Email
}

// An enrolment not yet confirmed is carried by the page that shows it,
// sealed (TOTPEnrolment.Page), and stored nowhere: showing the page
// changes no state, and a form sent back with it shows the same secret
// again. It is bound to the user and the session: a copy of the session
// cookie, stolen, is the same session, but the thief's own visit gets a
// secret of its own, and cannot read the owner's page.
func totpPageAAD(userID string, sid SessionID) []byte {
	return append([]byte("sigra/totp-page/v1\x00"+userID+"\x00"), sid[:]...)
}

// maxTOTPPage bounds the page token that is opened: a sealed secret and
// its end, base64url, are about 100 bytes.
const maxTOTPPage = 256

// sealTOTPPage seals an enrolment's secret and end into its page token.
func (s *Service) sealTOTPPage(userID string, sid SessionID, secret string, exp time.Time) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(secret)), uint64(exp.UnixNano()))
	return base64.RawURLEncoding.EncodeToString(s.box.Seal(append(b, secret...), totpPageAAD(userID, sid)))
}

// openTOTPPage returns the secret and end of the enrolment page carries,
// if it is one of this user and session's.
func (s *Service) openTOTPPage(userID string, sid SessionID, page string) (secret string, exp time.Time, ok bool) {
	if page == "" || len(page) > maxTOTPPage {
		return "", time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(page)
	if err != nil {
		return "", time.Time{}, false
	}
	b, err := s.box.Open(raw, totpPageAAD(userID, sid))
	if err != nil || len(b) <= 8 {
		return "", time.Time{}, false
	}
	return string(b[8:]), time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC(), true
}

// BeginTOTP starts a TOTP enrolment for u in session sid: it generates a
// secret, to be confirmed within TOTPEnrolmentTTL by ConfirmTOTP with the
// enrolment's Page. Nothing is stored, and nothing changes for the user,
// until then. issuer names the site in the authenticator app (default
// "Sigra"); the account name is the user's email.
//
// The enrolment belongs to sid and to the page that shows it (see
// totpPageAAD): another session of the same user, or another visit to the
// page with a copy of this session's cookie, is never shown its secret
// and cannot confirm it, so it cannot learn the authenticator the user is
// about to scan.
func (s *Service) BeginTOTP(ctx context.Context, u *User, sid SessionID, issuer string) (*TOTPEnrolment, error) {
	if err := s.mustBox(); err != nil {
		return nil, err
	}
	issuer, account := totpIssuer(issuer), totpAccount(u)
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer: issuer, AccountName: account,
		Period: totpPeriod, SecretSize: totpSecretSize, Digits: totpDigits, Algorithm: otp.AlgorithmSHA1,
	})
	if err != nil {
		return nil, fmt.Errorf("generating TOTP secret: %w", err)
	}
	exp := s.clock.Now().UTC().Add(TOTPEnrolmentTTL)
	return enrolment(key, exp, s.sealTOTPPage(u.ID, sid, key.Secret(), exp))
}

// TOTPEnrolmentFor returns the enrolment that page (the token a form
// sent back; "" for a new visit) carries, while it has at least a minute
// left, else begins a new one. A failed confirmation then shows the
// secret the user may already have scanned.
func (s *Service) TOTPEnrolmentFor(ctx context.Context, u *User, sid SessionID, page, issuer string) (*TOTPEnrolment, error) {
	if err := s.mustBox(); err != nil {
		return nil, err
	}
	if secret, exp, ok := s.openTOTPPage(u.ID, sid, page); ok && s.clock.Now().Before(exp.Add(-time.Minute)) {
		key, err := otp.NewKeyFromURL(totpKeyURL(totpIssuer(issuer), totpAccount(u), secret))
		if err != nil {
			return nil, fmt.Errorf("rebuilding TOTP key: %w", err)
		}
		return enrolment(key, exp, page)
	}
	return s.BeginTOTP(ctx, u, sid, issuer)
}

// totpKeyURL is the otpauth:// URI for a secret, as totp.Generate makes
// it: a space (an issuer of a host with a port) is %20 in the query, not
// +, which some authenticator apps show as it is.
func totpKeyURL(issuer, account, secret string) string {
	v := url.Values{}
	v.Set("secret", secret)
	v.Set("issuer", issuer)
	v.Set("period", strconv.Itoa(totpPeriod))
	v.Set("digits", totpDigits.String())
	v.Set("algorithm", otp.AlgorithmSHA1.String())
	// Encode writes a space as + and a literal + as %2B: every + is a space.
	u := url.URL{Scheme: "otpauth", Host: "totp", Path: "/" + issuer + ":" + account, RawQuery: strings.ReplaceAll(v.Encode(), "+", "%20")}
	return u.String()
}

// enrolment renders a key for the enrolment page.
func enrolment(key *otp.Key, exp time.Time, page string) (*TOTPEnrolment, error) {
	img, err := key.Image(256, 256)
	if err != nil {
		// Not wrapped: the encoder's error quotes the URI, secret and all,
		// and errors end up in logs.
		return nil, fmt.Errorf("drawing TOTP QR code: the %d-byte key URI does not fit", len(key.URL()))
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encoding TOTP QR code: %w", err)
	}
	return &TOTPEnrolment{
		Secret:    key.Secret(),
		URL:       key.URL(),
		QRCode:    "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()),
		ExpiresAt: exp,
		Page:      page,
	}, nil
}

// ConfirmTOTP completes the enrolment that page carries (begun by
// session sid), if code is valid for its secret and the user has no
// authenticator app yet. Then, in one store transaction, the secret is
// stored sealed, the code's time step is spent (so the same code cannot
// sign in right after), the user is marked as having a second factor,
// and a new set of RecoveryCodeCount recovery codes replaces any earlier
// set. The codes are returned in plain text this once; show them and
// forget them.
//
// Errors: ErrNoPendingEnrolment (page is none of this session's, or
// expired, or the user has an app already, set up meanwhile by this
// page sent twice or another: start again, or see that one is on),
// ErrInvalidCode (the page still carries the enrolment, so the user can
// retry).
func (s *Service) ConfirmTOTP(ctx context.Context, userID string, sid SessionID, page, code string) ([]string, error) {
	codes, done, err := s.checkEnrolment(userID, sid, page, code)
	if err != nil {
		return nil, err
	}
	return codes, s.endEnrolment(userID, s.store.CompleteTOTPEnrolment(ctx, userID, done.rec, done.hashes))
}

// ConfirmTOTPWith is ConfirmTOTP and CompleteSecondFactor (AMROTP) for
// the session sid, made through commit (see Commit): the app, the
// multi-factor session and the row telling of them are stored together
// or not at all, so no app is set up whose recovery codes nobody saw.
// A session ended meanwhile is ErrNoSession, and nothing is set up.
// secure is as for CompleteSecondFactor.
func (s *Service) ConfirmTOTPWith(ctx context.Context, userID string, sid SessionID, page, code string, secure bool, commit Commit) (codes []string, token string, sess *Session, err error) {
	codes, done, err := s.checkEnrolment(userID, sid, page, code)
	if err != nil {
		return nil, "", nil, err
	}
	token, sess, err = s.passSecondFactorWith(ctx, sid, AMROTP, secure, commit, func(cs ChangeStore) func(tx any) error {
		return cs.CompleteTOTPEnrolmentIn(userID, done.rec, done.hashes)
	})
	if err = s.endEnrolment(userID, err); err != nil {
		return nil, "", nil, err
	}
	return codes, token, sess, nil
}

// checkedEnrolment is what a checked code completes: the app to store,
// and the new recovery codes' hashes.
type checkedEnrolment struct {
	rec    *TOTPRecord
	hashes [][]byte
}

// checkEnrolment checks code against the enrolment page carries, and
// makes the app and recovery codes it completes.
func (s *Service) checkEnrolment(userID string, sid SessionID, page, code string) ([]string, *checkedEnrolment, error) {
	if err := s.mustBox(); err != nil {
		return nil, nil, err
	}
	secret, exp, ok := s.openTOTPPage(userID, sid, page)
	now := s.clock.Now()
	if !ok || !now.Before(exp) {
		return nil, nil, ErrNoPendingEnrolment
	}
	step, err := matchTOTP(secret, code, now)
	if err != nil {
		return nil, nil, err
	}
	codes, hashes := newRecoveryCodes(userID)
	rec := &TOTPRecord{Sealed: s.box.Seal([]byte(secret), totpAAD(userID)), LastStep: step, EnrolledAt: now.UTC()}
	return codes, &checkedEnrolment{rec: rec, hashes: hashes}, nil
}

// endEnrolment is the answer to an enrolment the store completed with
// err: an app set up meanwhile (or the user gone) is
// ErrNoPendingEnrolment.
func (s *Service) endEnrolment(userID string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return ErrNoPendingEnrolment
	}
	if err == nil {
		s.DropCached(userID)
	}
	return err
}

// VerifyTOTP checks a code from the user's authenticator app. Codes of the
// current 30-second step and one step either side pass; each step passes at
// most once, and never after a later one passed, also under concurrent
// requests (the check and the spend are one store transaction).
//
// Errors: ErrInvalidCode (wrong, malformed, replayed, too old or too new;
// wrapped with a detail for logs), ErrTOTPLocked, ErrNotEnrolled;
// anything else is a storage or key failure.
//
// Callers count failures with the Regulator like wrong passwords, and on
// success call CompleteSecondFactor with AMROTP (VerifyTOTPWith does
// both, in one transaction with the rows). The Regulator's window
// bounds how fast codes are guessed; the app's own count of wrong codes in
// a row (every six-digit code that did not pass, replays included) bounds
// how many: a million codes, three of which pass at any moment, are
// otherwise found by patience alone (NIST SP 800-63B 5.2.2: at most 100
// consecutive failures).
func (s *Service) VerifyTOTP(ctx context.Context, userID, code string) error {
	step, err := s.totpStep(ctx, userID, code)
	if err != nil {
		return err
	}
	return s.acceptedStep(ctx, userID, s.store.AcceptTOTPStep(ctx, userID, step, s.cfg.MaxTOTPFailures))
}

// VerifyTOTPWith is VerifyTOTP and CompleteSecondFactor (AMROTP) for the
// session id, made through commit (see Commit): the code's time step is
// spent with the new session and the rows telling of them, or not at
// all. A session ended meanwhile is ErrNoSession, and a right code is
// not spent on it. secure is as for CompleteSecondFactor.
func (s *Service) VerifyTOTPWith(ctx context.Context, userID string, id SessionID, code string, secure bool, commit Commit) (token string, sess *Session, err error) {
	step, err := s.totpStep(ctx, userID, code)
	if err != nil {
		return "", nil, err
	}
	token, sess, err = s.passSecondFactorWith(ctx, id, AMROTP, secure, commit, func(cs ChangeStore) func(tx any) error {
		return cs.AcceptTOTPStepIn(userID, step, s.cfg.MaxTOTPFailures)
	})
	if err = s.acceptedStep(ctx, userID, err); err != nil {
		return "", nil, err
	}
	return token, sess, nil
}

// totpStep returns the time step of a code from the user's app that may
// pass: a wrong one, or one of a step spent already, is counted against
// the app (failTOTP).
func (s *Service) totpStep(ctx context.Context, userID, code string) (uint64, error) {
	if err := s.mustBox(); err != nil {
		return 0, err
	}
	rec, err := s.store.TOTP(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return 0, ErrNotEnrolled
	}
	if err != nil {
		return 0, err
	}
	if rec.Failures >= s.cfg.MaxTOTPFailures {
		return 0, ErrTOTPLocked
	}
	secret, err := s.box.Open(rec.Sealed, totpAAD(userID))
	if err != nil {
		return 0, fmt.Errorf("opening TOTP secret: %w", err)
	}
	step, err := matchTOTP(string(secret), code, s.clock.Now())
	switch {
	case errors.Is(err, errMalformedCode):
		return 0, err
	case errors.Is(err, ErrInvalidCode):
		return 0, s.failTOTP(ctx, userID, err)
	case err != nil:
		return 0, err
	case step <= rec.LastStep:
		return 0, s.failTOTP(ctx, userID, fmt.Errorf("%w: time step already used", ErrInvalidCode))
	}
	return step, nil
}

// acceptedStep is the answer to a time step the store spent with err
// (AcceptTOTPStep): one spent meanwhile counts as a wrong code.
func (s *Service) acceptedStep(ctx context.Context, userID string, err error) error {
	switch {
	case errors.Is(err, ErrTOTPStepUsed):
		return s.failTOTP(ctx, userID, fmt.Errorf("%w: time step already used", ErrInvalidCode))
	case errors.Is(err, ErrNotFound):
		return ErrNotEnrolled
	default:
		return err // nil, ErrNoSession, ErrTOTPLocked (locked meanwhile), or storage
	}
}

// failTOTP counts a wrong code against the user's app and returns wrong,
// joined with ErrTOTPLocked when this is the failure that locks it.
func (s *Service) failTOTP(ctx context.Context, userID string, wrong error) error {
	n, err := s.store.FailTOTP(ctx, userID)
	switch {
	case errors.Is(err, ErrNotFound):
		return ErrNotEnrolled // removed meanwhile
	case err != nil:
		// Still the wrong code it was: callers count the attempt.
		return fmt.Errorf("%w; and counting it against the app: %w", wrong, err)
	case n == s.cfg.MaxTOTPFailures:
		return fmt.Errorf("%w (%w)", wrong, ErrTOTPLocked)
	}
	return wrong
}

// TOTPLocked reports whether the user's authenticator app is locked
// (ErrTOTPLocked); false when they have none.
func (s *Service) TOTPLocked(ctx context.Context, userID string) (bool, error) {
	rec, err := s.store.TOTP(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return rec.Failures >= s.cfg.MaxTOTPFailures, nil
}

// UnlockTOTP clears the count of wrong codes of the user's authenticator
// app, so a locked one accepts codes again. A user without one is not an
// error; one that does not exist is ErrNotFound. An administrator's
// unlock is UnlockWith.
func (s *Service) UnlockTOTP(ctx context.Context, userID string) error {
	return s.store.ClearTOTPFailures(ctx, userID)
}

// HasTOTP reports whether the user has a confirmed TOTP authenticator.
func (s *Service) HasTOTP(ctx context.Context, userID string) (bool, error) {
	_, err := s.store.TOTP(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// RemoveTOTP deletes the user's TOTP authenticator and any pending
// enrolment. If the user has no other second factor left, the same store
// transaction clears SecondFactor (a password alone signs in again) and
// deletes the recovery codes. It returns ErrNotEnrolled, changing nothing
// else, if there was no TOTP.
//
// Removing a factor weakens the account: callers must require a second
// factor passed recently in this session (Session.MFAAt) before calling.
func (s *Service) RemoveTOTP(ctx context.Context, userID string) error {
	return s.removeTOTP(ctx, userID, false)
}

// ResetTOTP is RemoveTOTP for an administrator resetting a factor that
// was lost or stolen: the same store transaction also ends every session
// of the user, so none that passed the old factor, or that stands on a
// device taken with it, outlives it, and a reset either happens whole or
// not at all.
func (s *Service) ResetTOTP(ctx context.Context, userID string) error {
	return s.removeTOTP(ctx, userID, true)
}

// RemoveTOTPWith is RemoveTOTP, made through commit (see Commit).
func (s *Service) RemoveTOTPWith(ctx context.Context, userID string, commit Commit) error {
	return s.removeTOTPWith(ctx, userID, false, commit)
}

// ResetTOTPWith is ResetTOTP, made through commit (see Commit).
func (s *Service) ResetTOTPWith(ctx context.Context, userID string, commit Commit) error {
	return s.removeTOTPWith(ctx, userID, true, commit)
}

func (s *Service) removeTOTPWith(ctx context.Context, userID string, endSessions bool, commit Commit) error {
	cs, err := s.changeStore()
	if err != nil {
		return err
	}
	return s.removeTOTPVia(ctx, userID, endSessions, func(lastFactor bool, at time.Time) error {
		return commit(cs.DeleteTOTPIn(userID, lastFactor, endSessions, at))
	})
}

func (s *Service) removeTOTP(ctx context.Context, userID string, endSessions bool) error {
	return s.removeTOTPVia(ctx, userID, endSessions, func(lastFactor bool, at time.Time) error {
		return s.store.DeleteTOTP(ctx, userID, lastFactor, endSessions, at)
	})
}

// removeTOTPVia removes the user's app through del, which is given
// whether it was their last second factor and the time.
func (s *Service) removeTOTPVia(ctx context.Context, userID string, endSessions bool, del func(lastFactor bool, at time.Time) error) error {
	other, err := s.hasOtherSecondFactor(ctx, userID)
	if err != nil {
		return err
	}
	s.DropCached(userID)
	err = del(!other, s.clock.Now().UTC())
	s.DropCached(userID) // a request may have re-cached one meanwhile
	if errors.Is(err, ErrNotFound) {
		return ErrNotEnrolled
	}
	if err != nil || other || endSessions {
		return err
	}
	// The last factor gone, a session still waiting for one (a password
	// sign-in, or one from before the enrolment that PendUnprovenSessions
	// marked) would wait for ever: the MFA page has nothing to ask. It
	// never proved a factor, so it ends, and its holder signs in again.
	ss, err := s.store.UserSessions(ctx, userID)
	if err != nil {
		return err
	}
	for _, sess := range ss {
		if sess.Pending && !sess.MFA() {
			if _, err := s.EndSession(ctx, sess.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// PasskeyCounter is implemented by a Store that keeps passkeys. RemoveTOTP
// asks it whether the user keeps a second factor; a Store without it is
// taken to hold no passkeys.
type PasskeyCounter interface {
	CountPasskeys(ctx context.Context, userID string) (int, error)
}

// hasOtherSecondFactor reports whether the user has a second factor other
// than TOTP.
func (s *Service) hasOtherSecondFactor(ctx context.Context, userID string) (bool, error) {
	pc, ok := s.store.(PasskeyCounter)
	if !ok {
		return false, nil
	}
	n, err := pc.CountPasskeys(ctx, userID)
	return n > 0, err
}

// matchTOTP checks a six-digit code against secret at now, allowing
// totpSkew steps either side, and returns the step it matched. Every
// candidate step is computed (no early exit), so timing says nothing about
// which one matched. If several match (a one-in-a-million coincidence), the
// latest wins.
func matchTOTP(secret, code string, now time.Time) (uint64, error) {
	code = strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, code)
	if len(code) != totpDigits.Length() || strings.Trim(code, "0123456789") != "" {
		return 0, errMalformedCode
	}
	opts := totp.ValidateOpts{Period: totpPeriod, Skew: 0, Digits: totpDigits, Algorithm: otp.AlgorithmSHA1}
	cur := totpStep(now)
	var step uint64
	found := false
	for off := -totpSkew; off <= totpSkew; off++ {
		if off < 0 && cur < uint64(-off) {
			continue
		}
		t := now.Add(time.Duration(off) * totpPeriod * time.Second)
		ok, err := totp.ValidateCustom(code, secret, t, opts)
		if err != nil {
			return 0, fmt.Errorf("validating TOTP code: %w", err)
		}
		if ok {
			step, found = uint64(int64(cur)+int64(off)), true
		}
	}
	if !found {
		return 0, fmt.Errorf("%w: no match within ±%d steps", ErrInvalidCode, totpSkew)
	}
	return step, nil
}

// totpStep is the RFC 6238 time step of t.
func totpStep(t time.Time) uint64 {
	u := t.Unix()
	if u < 0 {
		return 0
	}
	return uint64(u) / totpPeriod
}

// PendUnprovenSessions gives the user's sessions that a password alone
// opened before the user enrolled a second factor what a password-only
// sign-in gets from then on: PendingFor already keeps them out of every
// gate, and now they also end PendingLifetime from now, unless the new
// factor completes them (CompleteSecondFactor then restores their
// lifetime). Without it, a session opened with a stolen password before
// the owner turned TOTP on could keep guessing codes for the rest of its
// lifetime. It returns how many sessions it changed; one that ends
// meanwhile is left ended.
func (s *Service) PendUnprovenSessions(ctx context.Context, userID string) (int, error) {
	ss, err := s.store.UserSessions(ctx, userID)
	if err != nil {
		return 0, err
	}
	now := s.clock.Now().UTC()
	end := now.Add(min(s.cfg.Lifetime, s.cfg.PendingLifetime))
	n := 0
	for _, old := range ss {
		if old.Pending || old.MFA() || !end.Before(old.ExpiresAt) {
			continue
		}
		next := old.Clone()
		next.Pending = true
		next.ExpiresAt = end
		s.cache.drop(old.ID)
		err := s.store.ReplaceSession(ctx, old.ID, next)
		s.cache.drop(old.ID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// CompleteSecondFactor records on a session that a second factor passed:
// method (AMROTP for TOTP and recovery codes, AMRHardware or AMRSoftware
// for passkeys) and AMRMFA are added to the AMR (no duplicates), MFAAt is
// now, and the session is no longer pending. Use it both to finish a
// pending sign-in and to step up a signed-in session (admin pages,
// mfa max_age).
//
// The privilege level changes, so the session id changes too: a new token
// and id replace the old session, which is deleted; creation, expiry and
// auth time carry over, except that a pending session's short expiry
// becomes the full Lifetime from sign-in; it is Plain if the old one
// was, or if the request is not secure (not over HTTPS). Set the
// returned token as the cookie. If the session is gone or expired, or a
// concurrent call already replaced it, the answer is ErrNoSession and
// nothing is created.
//
// The caller must have verified the factor for sess.UserID, through this
// Service, in the same request.
func (s *Service) CompleteSecondFactor(ctx context.Context, id SessionID, method string, secure bool) (token string, sess *Session, err error) {
	token, sess, err = s.secondFactorSession(ctx, id, method, secure)
	if err != nil {
		return "", nil, err
	}
	// One transaction: of two concurrent completions only one finds the
	// old session, so only one new session comes out of it, and a logout
	// of the old one that lands first leaves none. Drop the cached copy
	// before and after, as a request may re-cache it meanwhile.
	s.cache.drop(id)
	err = s.store.ReplaceSession(ctx, id, sess)
	s.cache.drop(id)
	if errors.Is(err, ErrNotFound) {
		return "", nil, ErrNoSession
	}
	if err != nil {
		return "", nil, err
	}
	return token, sess, nil
}

// passSecondFactorWith is CompleteSecondFactor made through commit, with
// the change spend gives of the store: the factor's proof spent (a time
// step, a recovery code) or what it completes (an enrolment). The
// session is replaced first, so a session gone is ErrNoSession whatever
// the proof; spend's own refusal (its ErrNotFound) comes back as it is.
func (s *Service) passSecondFactorWith(ctx context.Context, id SessionID, method string, secure bool, commit Commit, spend func(ChangeStore) func(tx any) error) (token string, sess *Session, err error) {
	cs, err := s.changeStore()
	if err != nil {
		return "", nil, err
	}
	token, sess, err = s.secondFactorSession(ctx, id, method, secure)
	if err != nil {
		return "", nil, err
	}
	replace, proof := cs.ReplaceSessionIn(id, sess), spend(cs)
	s.cache.drop(id)
	err = commit(func(tx any) error {
		if err := replace(tx); err != nil {
			if errors.Is(err, ErrNotFound) {
				return ErrNoSession
			}
			return err
		}
		return proof(tx)
	})
	s.cache.drop(id)
	if err != nil {
		return "", nil, err
	}
	return token, sess, nil
}

// secondFactorSession is the session that replaces session id once a
// second factor passed by method (CompleteSecondFactor), and its token.
func (s *Service) secondFactorSession(ctx context.Context, id SessionID, method string, secure bool) (token string, sess *Session, err error) {
	switch method {
	case AMROTP, AMRHardware, AMRSoftware:
	default:
		return "", nil, fmt.Errorf("%w: %q is not a second-factor method", ErrInvalidInput, method)
	}
	old, err := s.store.GetSession(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return "", nil, ErrNoSession
	}
	if err != nil {
		return "", nil, err
	}
	now := s.clock.Now().UTC()
	s.cfg.Bound(old)
	if !now.Before(old.End()) {
		return "", nil, ErrNoSession
	}
	sess = old.Clone()
	token, sess.ID = NewToken()
	for _, m := range []string{method, AMRMFA} {
		if !sess.HasAMR(m) {
			sess.AMR = append(sess.AMR, m)
		}
	}
	sess.MFAAt = now
	if old.Pending {
		sess.ExpiresAt = old.CreatedAt.Add(s.cfg.Lifetime)
	}
	sess.Pending = false
	sess.LastSeen = now
	sess.RenewedOver(secure)
	return token, sess, nil
}
