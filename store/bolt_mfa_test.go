package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/seal"
)

// mfaRefTOTP is an independent RFC 6238 TOTP (HMAC-SHA-1, dynamic
// truncation, six digits, 30-second steps), not pquerna/otp: the codes an
// authenticator app shows at t.
func mfaRefTOTP(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatalf("decoding secret %q: %v", secret, err)
	}
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(at.Unix())/30)
	mac := hmac.New(sha1.New, key)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	return fmt.Sprintf("%06d", (binary.BigEndian.Uint32(sum[off:off+4])&0x7fffffff)%1_000_000)
}

// A step boundary plus 10 s, so ±30 s stays in the neighbouring steps.
var mfaStart = time.Date(2026, 11, 22, 10, 0, 10, 0, time.UTC)

type mfaEnv struct {
	svc *authcore.Service
	st  *Bolt
	clk *clock.Fake
	box *seal.Box
	ctx context.Context
}

func newMFAEnv(t *testing.T) *mfaEnv {
	t.Helper()
	return newMFAEnvOn(t, openAuthBolt(t))
}

func newMFAEnvOn(t *testing.T, st authcore.Store) *mfaEnv {
	t.Helper()
	return newMFAEnvWith(t, st, authcore.Config{})
}

// newMFAEnvWith is newMFAEnvOn with the Service configured as cfg (cheap
// password hashing added).
func newMFAEnvWith(t *testing.T, st authcore.Store, cfg authcore.Config) *mfaEnv {
	t.Helper()
	box, err := seal.New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(mfaStart)
	cfg.Argon2 = authcore.Argon2Params{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}
	svc, err := authcore.NewService(slog.New(slog.NewTextHandler(io.Discard, nil)), clk, st, box, cfg)
	if err != nil {
		t.Fatal(err)
	}
	env := &mfaEnv{svc: svc, clk: clk, box: box, ctx: context.Background()}
	if b, ok := st.(*Bolt); ok {
		env.st = b
	}
	return env
}

// pendingSession enrols a new user email and signs them in with the
// password alone: the session is pending. secret is the app's.
func (e *mfaEnv) pendingSession(t *testing.T, email string) (token string, s *authcore.Session, secret string) {
	t.Helper()
	u := e.user(t, email)
	secret, _ = e.enrol(t, u)
	u, _ = e.st.UserByID(e.ctx, u.ID)
	token, s, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	return token, s, secret
}

func (e *mfaEnv) user(t *testing.T, email string) *authcore.User {
	t.Helper()
	u, err := e.svc.CreateUser(e.ctx, authcore.NewUser{Email: email, Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// mfaSID is the session the tests' enrolments belong to.
var mfaSID = authcore.SessionID{1}

// enrol runs a whole TOTP enrolment and returns the secret and the
// recovery codes.
func (e *mfaEnv) enrol(t *testing.T, u *authcore.User) (secret string, codes []string) {
	t.Helper()
	en, err := e.svc.BeginTOTP(e.ctx, u, mfaSID, "Example")
	if err != nil {
		t.Fatalf("BeginTOTP: %v", err)
	}
	codes, err = e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, en.Page, mfaRefTOTP(t, en.Secret, e.clk.Now()))
	if err != nil {
		t.Fatalf("ConfirmTOTP: %v", err)
	}
	return en.Secret, codes
}

func TestTOTPEnrolment(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")

	en, err := e.svc.BeginTOTP(e.ctx, u, mfaSID, "Example: Inc")
	if err != nil {
		t.Fatalf("BeginTOTP: %v", err)
	}
	if key, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret); len(key) != 20 {
		t.Errorf("secret %q is %d bytes; want 20", en.Secret, len(key))
	}
	uri, err := url.Parse(en.URL)
	if err != nil {
		t.Fatal(err)
	}
	q := uri.Query()
	if uri.Scheme != "otpauth" || uri.Host != "totp" || q.Get("secret") != en.Secret || q.Get("issuer") != "Example  Inc" ||
		q.Get("digits") != "6" || q.Get("period") != "30" || q.Get("algorithm") != "SHA1" ||
		!strings.HasSuffix(uri.Path, ":alice@example.com") {
		t.Errorf("URL = %q; want an otpauth://totp URI for alice with the secret, SHA1, 6 digits, 30 s", en.URL)
	}
	data, ok := strings.CutPrefix(en.QRCode, "data:image/png;base64,")
	if !ok {
		t.Fatalf("QRCode = %.40q…; want a PNG data URI", en.QRCode)
	}
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("QR code is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 256 || b.Dy() != 256 {
		t.Errorf("QR code is %v; want 256×256", b)
	}

	// Nothing changes before the code confirms it.
	if has, _ := e.svc.HasTOTP(e.ctx, u.ID); has {
		t.Error("HasTOTP before confirming")
	}
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, mfaRefTOTP(t, en.Secret, e.clk.Now())); !errors.Is(err, authcore.ErrNotEnrolled) {
		t.Errorf("VerifyTOTP before confirming = %v; want ErrNotEnrolled", err)
	}
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, en.Page, "000000"); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("ConfirmTOTP with a wrong code = %v; want ErrInvalidCode", err)
	}
	if got, _ := e.st.UserByID(e.ctx, u.ID); got.SecondFactor {
		t.Error("SecondFactor set by a wrong confirmation")
	}

	code := mfaRefTOTP(t, en.Secret, e.clk.Now())
	codes, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, en.Page, code)
	if err != nil {
		t.Fatalf("ConfirmTOTP after a wrong try: %v", err)
	}
	if len(codes) != authcore.RecoveryCodeCount {
		t.Errorf("got %d recovery codes; want %d", len(codes), authcore.RecoveryCodeCount)
	}
	if got, _ := e.st.UserByID(e.ctx, u.ID); !got.SecondFactor {
		t.Error("SecondFactor not set after confirming")
	}
	if has, err := e.svc.HasTOTP(e.ctx, u.ID); !has || err != nil {
		t.Errorf("HasTOTP = %v, %v; want true", has, err)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != 10 {
		t.Errorf("RecoveryCodesLeft = %d; want 10", n)
	}
	// The confirming code is spent.
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, code); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("VerifyTOTP with the confirming code = %v; want ErrInvalidCode", err)
	}
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, en.Page, code); !errors.Is(err, authcore.ErrNoPendingEnrolment) {
		t.Errorf("second ConfirmTOTP = %v; want ErrNoPendingEnrolment", err)
	}
	// A new password sign-in of alice is now pending.
	u, err = e.svc.CheckPassword(e.ctx, "alice@example.com", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	_, sess, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if !sess.Pending {
		t.Error("password-only session not pending after TOTP enrolment")
	}
	e.clk.Advance(30 * time.Second)
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, mfaRefTOTP(t, en.Secret, e.clk.Now())); err != nil {
		t.Errorf("VerifyTOTP with the next code = %v; want nil", err)
	}
}

func TestTOTPSecretSealedAtRest(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	en, err := e.svc.BeginTOTP(e.ctx, u, mfaSID, "Example")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
	secrets := map[string][]byte{"the TOTP secret": []byte(en.Secret), "the TOTP key": key}
	// check finds no secret anywhere in the store: any bucket, key or
	// value.
	check := func(when string) {
		t.Helper()
		var walk func(path string, b *bolt.Bucket) error
		walk = func(path string, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return walk(path+"/"+string(k), b.Bucket(k))
				}
				for what, s := range secrets {
					if bytes.Contains(k, s) || bytes.Contains(v, s) {
						t.Errorf("%s: %s is in the clear in %s", when, what, path)
					}
				}
				return nil
			})
		}
		err := e.st.db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check("pending")
	codes, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, en.Page, mfaRefTOTP(t, en.Secret, e.clk.Now()))
	if err != nil {
		t.Fatal(err)
	}
	// The recovery codes are stored hashed: neither as shown nor as typed
	// without dashes.
	for i, c := range codes {
		secrets[fmt.Sprintf("recovery code %d", i)] = []byte(c)
		secrets[fmt.Sprintf("recovery code %d without dashes", i)] = []byte(strings.ReplaceAll(c, "-", ""))
	}
	check("confirmed")
	if n := len(secrets); n != 2+2*authcore.RecoveryCodeCount {
		t.Fatalf("checked %d secrets; want the TOTP secret, its key and %d recovery codes in two forms", n, authcore.RecoveryCodeCount)
	}

	// Another encryption key cannot read it, and says so instead of
	// calling the code wrong.
	other, _ := seal.New(bytes.Repeat([]byte{1}, 32))
	svc2, _ := authcore.NewService(slog.New(slog.NewTextHandler(io.Discard, nil)), e.clk, e.st, other,
		authcore.Config{Argon2: authcore.Argon2Params{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}})
	e.clk.Advance(30 * time.Second)
	err = svc2.VerifyTOTP(e.ctx, u.ID, mfaRefTOTP(t, en.Secret, e.clk.Now()))
	if !errors.Is(err, seal.ErrOpen) {
		t.Errorf("VerifyTOTP under another key = %v; want seal.ErrOpen", err)
	}
	// A sealed secret moved to another user does not open.
	bob := e.user(t, "bob@example.com")
	rec, _ := e.st.TOTP(e.ctx, u.ID)
	err = e.st.db.Update(func(tx *bolt.Tx) error {
		uk, _ := userKey(bob.ID)
		return putJSON(bucket(tx, bktTOTP), uk, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.VerifyTOTP(e.ctx, bob.ID, mfaRefTOTP(t, en.Secret, e.clk.Now())); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("VerifyTOTP with alice's secret copied to bob = %v; want seal.ErrOpen", err)
	}
}

func TestConfirmTOTPExpires(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	en, err := e.svc.BeginTOTP(e.ctx, u, mfaSID, "Example")
	if err != nil {
		t.Fatal(err)
	}
	if !en.ExpiresAt.Equal(mfaStart.Add(authcore.TOTPEnrolmentTTL)) {
		t.Errorf("ExpiresAt = %v; want start + %v", en.ExpiresAt, authcore.TOTPEnrolmentTTL)
	}
	e.clk.Advance(authcore.TOTPEnrolmentTTL)
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, en.Page, mfaRefTOTP(t, en.Secret, e.clk.Now())); !errors.Is(err, authcore.ErrNoPendingEnrolment) {
		t.Errorf("ConfirmTOTP after %v = %v; want ErrNoPendingEnrolment", authcore.TOTPEnrolmentTTL, err)
	}
	if _, err := e.svc.ConfirmTOTP(e.ctx, e.user(t, "bob@example.com").ID, mfaSID, en.Page, "123456"); !errors.Is(err, authcore.ErrNoPendingEnrolment) {
		t.Errorf("ConfirmTOTP without BeginTOTP = %v; want ErrNoPendingEnrolment", err)
	}
}

// Two visits to the page are two enrolments: each is confirmed with its
// own secret's code, and the first confirmed ends the other.
func TestConfirmTOTPOfItsPage(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	first, _ := e.svc.BeginTOTP(e.ctx, u, mfaSID, "Example")
	second, _ := e.svc.BeginTOTP(e.ctx, u, mfaSID, "Example")
	if first.Page == second.Page || first.Secret == second.Secret {
		t.Fatal("two visits got the same enrolment")
	}
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, first.Page, mfaRefTOTP(t, second.Secret, e.clk.Now())); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("ConfirmTOTP of one page with the other's code = %v; want ErrInvalidCode", err)
	}
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, second.Page, mfaRefTOTP(t, second.Secret, e.clk.Now())); err != nil {
		t.Errorf("ConfirmTOTP with its own code = %v; want nil", err)
	}
	e.clk.Advance(30 * time.Second)
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, first.Page, mfaRefTOTP(t, first.Secret, e.clk.Now())); !errors.Is(err, authcore.ErrNoPendingEnrolment) {
		t.Errorf("ConfirmTOTP of the other page after an enrolment = %v; want ErrNoPendingEnrolment", err)
	}
}

// A pending enrolment belongs to the session that began it and to the
// page that showed it. A visit without that page's token, in another
// session of the user or in this one (a stolen copy of its cookie), is
// shown a secret of its own, cannot confirm the page's, and does not
// replace it; the page's token alone is no use in another session.
func TestTOTPEnrolmentBelongsToItsPage(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	other := authcore.SessionID{2}
	mine, err := e.svc.TOTPEnrolmentFor(e.ctx, u, mfaSID, "", "Example")
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.svc.TOTPEnrolmentFor(e.ctx, u, mfaSID, mine.Page, "Example")
	if err != nil || again.Secret != mine.Secret || again.Page != mine.Page {
		t.Fatalf("the page's form sent back: err %v, same secret %t; want the same enrolment", err, again.Secret == mine.Secret)
	}
	for _, visit := range []struct {
		name string
		sid  authcore.SessionID
		page string
	}{
		{"a visit of the same session (a stolen cookie)", mfaSID, ""},
		{"a visit with a malformed token", mfaSID, "x"},
		{"another session with the page's token", other, mine.Page},
		{"another session", other, ""},
	} {
		theirs, err := e.svc.TOTPEnrolmentFor(e.ctx, u, visit.sid, visit.page, "Example")
		if err != nil {
			t.Fatal(err)
		}
		if theirs.Secret == mine.Secret || theirs.Page == mine.Page {
			t.Errorf("%s was shown the page's pending secret", visit.name)
		}
		if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, visit.sid, visit.page, mfaRefTOTP(t, mine.Secret, e.clk.Now())); !errors.Is(err, authcore.ErrNoPendingEnrolment) && !errors.Is(err, authcore.ErrInvalidCode) {
			t.Errorf("%s confirming the page's secret = %v; want it refused", visit.name, err)
		}
	}
	if again, err := e.svc.TOTPEnrolmentFor(e.ctx, u, mfaSID, mine.Page, "Example"); err != nil || again.Secret != mine.Secret {
		t.Fatalf("the page after the other visits: err %v, same secret %t; want its own secret kept", err, again.Secret == mine.Secret)
	}
	theirs, err := e.svc.TOTPEnrolmentFor(e.ctx, u, mfaSID, "", "Example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, mine.Page, mfaRefTOTP(t, mine.Secret, e.clk.Now())); err != nil {
		t.Fatalf("confirming with the page after other visits: %v", err)
	}
	// Enrolling ends every pending enrolment of the user.
	e.clk.Advance(30 * time.Second)
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, theirs.Page, mfaRefTOTP(t, theirs.Secret, e.clk.Now())); !errors.Is(err, authcore.ErrNoPendingEnrolment) {
		t.Errorf("another visit confirming after the enrolment = %v; want ErrNoPendingEnrolment", err)
	}
}

// Showing the enrolment page stores nothing: the enrolment is carried by
// the page.
func TestTOTPEnrolmentStoresNothing(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	lastTx := func() (id int) {
		e.st.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	before := lastTx()
	var en *authcore.TOTPEnrolment
	for range 3 {
		var err error
		if en, err = e.svc.TOTPEnrolmentFor(e.ctx, u, mfaSID, "", "Example"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.TOTPEnrolmentFor(e.ctx, u, mfaSID, en.Page, "Example"); err != nil {
		t.Fatal(err)
	}
	if n := lastTx() - before; n != 0 {
		t.Errorf("showing the enrolment page four times committed %d transactions; want none", n)
	}
	if _, err := e.svc.ConfirmTOTP(e.ctx, u.ID, mfaSID, en.Page, mfaRefTOTP(t, en.Secret, e.clk.Now())); err != nil {
		t.Fatal(err)
	}
}

// The pending enrolments older versions stored, each with its secret
// sealed (under the user id alone, or with a session id), are read by
// nothing now: the store drops them when it is opened.
func TestOpenDropsOldPendingEnrolments(t *testing.T) {
	st := openAuthBolt(t)
	u := authCreate(t, st, "alice@example.com")
	uk, _ := userKey(u.ID)
	if err := st.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(rootBucket).CreateBucketIfNotExists(bktTOTPPending)
		if err != nil {
			return err
		}
		for _, k := range [][]byte{clone(uk), append(clone(uk), make([]byte, 32)...)} {
			if err := b.Put(k, []byte(`{"sealed":"eA=="}`)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st = reopenBolt(t, st)
	if err := st.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(rootBucket).Bucket(bktTOTPPending) != nil {
			t.Error("the old pending enrolments are still stored after the store was opened")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.UserByID(context.Background(), u.ID); err != nil || got.Email != "alice@example.com" {
		t.Errorf("the user after the store was opened: %+v, %v", got, err)
	}
}

// TestVerifyTOTPSkew: codes of the steps next to now pass, two steps away
// fail.
func TestVerifyTOTPSkew(t *testing.T) {
	tests := []struct {
		name   string
		offset time.Duration // when the app made the code, relative to the server's now
		ok     bool
	}{
		{"two steps behind", -60 * time.Second, false},
		{"one step behind", -30 * time.Second, true},
		{"same step", 0, true},
		{"one step ahead", 30 * time.Second, true},
		{"two steps ahead", 60 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMFAEnv(t)
			u := e.user(t, "alice@example.com")
			secret, _ := e.enrol(t, u)
			e.clk.Advance(5 * time.Minute) // well past the confirming step
			err := e.svc.VerifyTOTP(e.ctx, u.ID, mfaRefTOTP(t, secret, e.clk.Now().Add(tt.offset)))
			if tt.ok && err != nil {
				t.Errorf("VerifyTOTP = %v; want nil", err)
			}
			if !tt.ok && !errors.Is(err, authcore.ErrInvalidCode) {
				t.Errorf("VerifyTOTP = %v; want ErrInvalidCode", err)
			}
		})
	}
}

func TestVerifyTOTPReplay(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	secret, _ := e.enrol(t, u)
	e.clk.Advance(2 * time.Minute)
	now := e.clk.Now()
	code := mfaRefTOTP(t, secret, now)
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, code); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, code); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("same code again = %v; want ErrInvalidCode", err)
	}
	e.clk.Advance(20 * time.Second)
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, code); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("same code 20 s later = %v; want ErrInvalidCode", err)
	}
	// The previous step's code is still inside the skew window, but a
	// later step already passed.
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, mfaRefTOTP(t, secret, now.Add(-30*time.Second))); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("older step after a newer one = %v; want ErrInvalidCode", err)
	}
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, mfaRefTOTP(t, secret, now.Add(30*time.Second))); err != nil {
		t.Errorf("next step's code = %v; want nil", err)
	}
}

func TestVerifyTOTPConcurrentUseOfOneCode(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	secret, _ := e.enrol(t, u)
	e.clk.Advance(time.Minute)
	code := mfaRefTOTP(t, secret, e.clk.Now())
	const n = 16
	var ok, invalid atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			switch err := e.svc.VerifyTOTP(e.ctx, u.ID, code); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, authcore.ErrInvalidCode):
				invalid.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || invalid.Load() != n-1 {
		t.Errorf("%d successes and %d ErrInvalidCode; want 1 and %d", ok.Load(), invalid.Load(), n-1)
	}
}

func TestAcceptTOTPStep(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	e.enrol(t, u)
	rec, _ := e.st.TOTP(e.ctx, u.ID)
	tests := []struct {
		step uint64
		want error
	}{
		{rec.LastStep, authcore.ErrTOTPStepUsed},
		{rec.LastStep - 1, authcore.ErrTOTPStepUsed},
		{rec.LastStep + 2, nil},
		{rec.LastStep + 1, authcore.ErrTOTPStepUsed},
		{rec.LastStep + 3, nil},
	}
	for _, tt := range tests {
		if err := e.st.AcceptTOTPStep(e.ctx, u.ID, tt.step, 3); !errors.Is(err, tt.want) {
			t.Errorf("AcceptTOTPStep(last%+d) = %v; want %v", int64(tt.step)-int64(rec.LastStep), err, tt.want)
		}
	}
	bob := e.user(t, "bob@example.com")
	if err := e.st.AcceptTOTPStep(e.ctx, bob.ID, 1, 3); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("AcceptTOTPStep without TOTP = %v; want ErrNotFound", err)
	}

	// Failures: counted, reset by an accepted step, and at the limit no
	// step is accepted (nor spent).
	for want := 1; want <= 3; want++ {
		if n, err := e.st.FailTOTP(e.ctx, u.ID); n != want || err != nil {
			t.Fatalf("FailTOTP = %d, %v; want %d", n, err, want)
		}
	}
	before, _ := e.st.TOTP(e.ctx, u.ID)
	if err := e.st.AcceptTOTPStep(e.ctx, u.ID, before.LastStep+1, 3); !errors.Is(err, authcore.ErrTOTPLocked) {
		t.Errorf("AcceptTOTPStep after 3 failures, limit 3 = %v; want ErrTOTPLocked", err)
	}
	if after, _ := e.st.TOTP(e.ctx, u.ID); after.LastStep != before.LastStep || after.Failures != 3 {
		t.Errorf("a locked app changed: last step %d→%d, failures %d", before.LastStep, after.LastStep, after.Failures)
	}
	if err := e.st.AcceptTOTPStep(e.ctx, u.ID, before.LastStep+1, 4); err != nil {
		t.Errorf("AcceptTOTPStep under a higher limit = %v", err)
	}
	if after, _ := e.st.TOTP(e.ctx, u.ID); after.Failures != 0 {
		t.Errorf("failures after an accepted step: %d; want 0", after.Failures)
	}
	if _, err := e.st.FailTOTP(e.ctx, bob.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("FailTOTP without TOTP = %v; want ErrNotFound", err)
	}
	if err := e.st.ClearTOTPFailures(e.ctx, bob.ID); err != nil {
		t.Errorf("ClearTOTPFailures without TOTP = %v; want nil", err)
	}
	e.st.FailTOTP(e.ctx, u.ID)
	if err := e.st.ClearTOTPFailures(e.ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if after, _ := e.st.TOTP(e.ctx, u.ID); after.Failures != 0 {
		t.Errorf("failures after ClearTOTPFailures: %d; want 0", after.Failures)
	}
}

// wrongTOTP is a six-digit code that no step within ±1 of at accepts.
func wrongTOTP(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	near := map[string]bool{}
	for _, off := range []time.Duration{-30, 0, 30} {
		near[mfaRefTOTP(t, secret, at.Add(off*time.Second))] = true
	}
	for i := 0; ; i++ {
		if c := fmt.Sprintf("%06d", i); !near[c] {
			return c
		}
	}
}

// Wrong codes in a row lock the authenticator app, so that patience
// alone cannot find one of the three codes in a million that pass: the
// right code is then refused without being spent, until a recovery code
// passes or the app is unlocked. Malformed codes are not guesses and do
// not count; a replayed code does; a right code starts the count again.
func TestTOTPLocksAfterWrongCodesInARow(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	secret, codes := e.enrol(t, u)
	max := authcore.DefaultMaxTOTPFailures
	verify := func(code string) error { return e.svc.VerifyTOTP(e.ctx, u.ID, code) }
	locked := func() bool {
		t.Helper()
		l, err := e.svc.TOTPLocked(e.ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// fail makes n wrong attempts, none of them the locking one.
	fail := func(n int) {
		t.Helper()
		wrong := wrongTOTP(t, secret, e.clk.Now())
		for i := range n {
			if err := verify(wrong); !errors.Is(err, authcore.ErrInvalidCode) || errors.Is(err, authcore.ErrTOTPLocked) {
				t.Fatalf("wrong code %d: %v; want ErrInvalidCode alone", i+1, err)
			}
		}
	}
	for range 5 {
		if err := verify("12ab56"); !errors.Is(err, authcore.ErrInvalidCode) {
			t.Fatalf("malformed code: %v", err)
		}
	}
	fail(max - 2)
	// The code of the enrolment's step, already used: a replay counts.
	if err := verify(mfaRefTOTP(t, secret, e.clk.Now())); !errors.Is(err, authcore.ErrInvalidCode) || errors.Is(err, authcore.ErrTOTPLocked) {
		t.Fatalf("replayed code: %v; want ErrInvalidCode alone", err)
	}
	if locked() {
		t.Fatalf("locked after %d failures; the limit is %d", max-1, max)
	}
	err := verify(wrongTOTP(t, secret, e.clk.Now()))
	if !errors.Is(err, authcore.ErrInvalidCode) || !errors.Is(err, authcore.ErrTOTPLocked) {
		t.Fatalf("wrong code %d: %v; want ErrInvalidCode and ErrTOTPLocked (this one locked it)", max, err)
	}
	if !locked() {
		t.Fatal("not locked after the limit")
	}
	e.clk.Advance(30 * time.Second)
	right := mfaRefTOTP(t, secret, e.clk.Now())
	before, _ := e.st.TOTP(e.ctx, u.ID)
	if err := verify(right); !errors.Is(err, authcore.ErrTOTPLocked) || errors.Is(err, authcore.ErrInvalidCode) {
		t.Fatalf("right code on a locked app: %v; want ErrTOTPLocked alone", err)
	}
	if after, _ := e.st.TOTP(e.ctx, u.ID); after.LastStep != before.LastStep || after.Failures != before.Failures {
		t.Error("a refused code on a locked app changed its record")
	}
	// A wrong code on a locked app is refused as locked, and counts no
	// further.
	if err := verify(wrongTOTP(t, secret, e.clk.Now())); !errors.Is(err, authcore.ErrTOTPLocked) || errors.Is(err, authcore.ErrInvalidCode) {
		t.Fatalf("wrong code on a locked app: %v; want ErrTOTPLocked alone", err)
	}
	if after, _ := e.st.TOTP(e.ctx, u.ID); after.Failures != before.Failures {
		t.Errorf("a wrong code on a locked app took its failures from %d to %d", before.Failures, after.Failures)
	}

	// A recovery code opens it.
	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, codes[0]); err != nil {
		t.Fatal(err)
	}
	if locked() {
		t.Fatal("still locked after a recovery code")
	}
	if err := verify(right); err != nil {
		t.Fatalf("right code after a recovery code: %v", err)
	}
	// A right code starts the count again.
	fail(max - 1)
	e.clk.Advance(30 * time.Second)
	if err := verify(mfaRefTOTP(t, secret, e.clk.Now())); err != nil {
		t.Fatalf("right code after %d failures: %v", max-1, err)
	}
	fail(max - 1)
	if locked() {
		t.Fatal("locked: the right code did not start the count again")
	}
	// An administrator's unlock opens it too.
	if err := verify(wrongTOTP(t, secret, e.clk.Now())); !errors.Is(err, authcore.ErrTOTPLocked) {
		t.Fatalf("the locking code: %v", err)
	}
	if err := e.svc.UnlockTOTP(e.ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(30 * time.Second)
	if err := verify(mfaRefTOTP(t, secret, e.clk.Now())); err != nil {
		t.Fatalf("right code after the unlock: %v", err)
	}
	// A new enrolment is a new app, with no failures.
	fail(max - 1)
	if err := e.svc.RemoveTOTP(e.ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	secret, _ = e.enrol(t, u)
	if rec, _ := e.st.TOTP(e.ctx, u.ID); rec.Failures != 0 {
		t.Errorf("a new enrolment starts with %d failures", rec.Failures)
	}
}

func TestRecoveryCodes(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	_, codes := e.enrol(t, u)

	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, codes[3]); err != nil {
		t.Fatalf("UseRecoveryCode: %v", err)
	}
	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, codes[3]); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("second use of a code = %v; want ErrInvalidCode", err)
	}
	typed := strings.ToUpper(strings.ReplaceAll(codes[4], "-", " "))
	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, typed); err != nil {
		t.Errorf("UseRecoveryCode(%q) = %v; want case and separators ignored", typed, err)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != 8 {
		t.Errorf("RecoveryCodesLeft = %d; want 8", n)
	}
	for _, bad := range []string{"", "not a code", "0000-0000-0000"} {
		if err := e.svc.UseRecoveryCode(e.ctx, u.ID, bad); !errors.Is(err, authcore.ErrInvalidCode) {
			t.Errorf("UseRecoveryCode(%q) = %v; want ErrInvalidCode", bad, err)
		}
	}
	// Codes belong to their user.
	bob := e.user(t, "bob@example.com")
	_, bobCodes := e.enrol(t, bob)
	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, bobCodes[0]); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("bob's code for alice = %v; want ErrInvalidCode", err)
	}

	fresh, err := e.svc.RegenerateRecoveryCodes(e.ctx, u.ID)
	if err != nil {
		t.Fatalf("RegenerateRecoveryCodes: %v", err)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != 10 {
		t.Errorf("RecoveryCodesLeft after regenerating = %d; want 10", n)
	}
	if err := e.svc.UseRecoveryCode(e.ctx, u.ID, codes[5]); !errors.Is(err, authcore.ErrInvalidCode) {
		t.Errorf("old code after regenerating = %v; want ErrInvalidCode", err)
	}
	if slices.ContainsFunc(fresh, func(c string) bool { return slices.Contains(codes, c) }) {
		t.Error("regenerated set repeats an old code")
	}
	for _, c := range fresh {
		if err := e.svc.UseRecoveryCode(e.ctx, u.ID, c); err != nil {
			t.Errorf("UseRecoveryCode(%q) = %v", c, err)
		}
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != 0 {
		t.Errorf("RecoveryCodesLeft after using all = %d; want 0", n)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, bob.ID); n != 10 {
		t.Errorf("bob's RecoveryCodesLeft = %d; want 10 (untouched)", n)
	}
}

func TestRecoveryCodeConcurrentUse(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	_, codes := e.enrol(t, u)
	const n = 16
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			switch err := e.svc.UseRecoveryCode(e.ctx, u.ID, codes[0]); {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, authcore.ErrInvalidCode):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Errorf("%d of %d concurrent uses of one code passed; want 1", ok.Load(), n)
	}
	if left, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); left != 9 {
		t.Errorf("RecoveryCodesLeft = %d; want 9", left)
	}
}

func TestRemoveTOTP(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	secret, _ := e.enrol(t, u)
	if err := e.svc.RemoveTOTP(e.ctx, u.ID); err != nil {
		t.Fatalf("RemoveTOTP: %v", err)
	}
	if got, _ := e.st.UserByID(e.ctx, u.ID); got.SecondFactor {
		t.Error("SecondFactor still set with no factor left")
	}
	if has, _ := e.svc.HasTOTP(e.ctx, u.ID); has {
		t.Error("HasTOTP after RemoveTOTP")
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != 0 {
		t.Errorf("RecoveryCodesLeft = %d; want 0 with no factor left", n)
	}
	e.clk.Advance(time.Minute)
	if err := e.svc.VerifyTOTP(e.ctx, u.ID, mfaRefTOTP(t, secret, e.clk.Now())); !errors.Is(err, authcore.ErrNotEnrolled) {
		t.Errorf("VerifyTOTP after removal = %v; want ErrNotEnrolled", err)
	}
	if err := e.svc.RemoveTOTP(e.ctx, u.ID); !errors.Is(err, authcore.ErrNotEnrolled) {
		t.Errorf("second RemoveTOTP = %v; want ErrNotEnrolled", err)
	}
	if _, err := e.svc.RegenerateRecoveryCodes(e.ctx, u.ID); !errors.Is(err, authcore.ErrNotEnrolled) {
		t.Errorf("RegenerateRecoveryCodes without a factor = %v; want ErrNotEnrolled", err)
	}
	_, sess, _ := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if sess.Pending {
		t.Error("password session pending after the only factor was removed")
	}
}

// passkeyBolt is a store whose users all keep a passkey.
type passkeyBolt struct{ *Bolt }

func (passkeyBolt) CountPasskeys(ctx context.Context, userID string) (int, error) { return 1, nil }

func TestRemoveTOTPKeepsOtherSecondFactor(t *testing.T) {
	st := openAuthBolt(t)
	e := newMFAEnvOn(t, passkeyBolt{st})
	e.st = st
	u := e.user(t, "alice@example.com")
	e.enrol(t, u)
	if err := e.svc.RemoveTOTP(e.ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.UserByID(e.ctx, u.ID); !got.SecondFactor {
		t.Error("SecondFactor cleared although a passkey remains")
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != 10 {
		t.Errorf("RecoveryCodesLeft = %d; want 10 kept for the passkey", n)
	}
}

func TestCompleteSecondFactor(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	e.enrol(t, u)
	u, _ = e.st.UserByID(e.ctx, u.ID)
	oldToken, pending, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{IP: "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !pending.Pending {
		t.Fatal("session not pending")
	}
	if want := pending.CreatedAt.Add(authcore.DefaultPendingLifetime); !pending.ExpiresAt.Equal(want) {
		t.Errorf("pending session expires at %v; want %v, PendingLifetime after sign-in", pending.ExpiresAt, want)
	}
	e.clk.Advance(20 * time.Second)

	token, sess, err := e.svc.CompleteSecondFactor(e.ctx, pending.ID, authcore.AMROTP, false)
	if err != nil {
		t.Fatalf("CompleteSecondFactor: %v", err)
	}
	if token == oldToken || sess.ID == pending.ID {
		t.Error("session id not rotated")
	}
	if want := []string{"pwd", "otp", "mfa"}; !slices.Equal(sess.AMR, want) {
		t.Errorf("AMR = %q; want %q", sess.AMR, want)
	}
	if sess.Pending || !sess.MFA() || !sess.MFAAt.Equal(e.clk.Now()) {
		t.Errorf("Pending=%v MFA()=%v MFAAt=%v; want a completed session with MFAAt now", sess.Pending, sess.MFA(), sess.MFAAt)
	}
	if !sess.CreatedAt.Equal(pending.CreatedAt) || !sess.AuthTime.Equal(pending.AuthTime) || sess.IP != "192.0.2.1" {
		t.Errorf("rotated session %+v does not carry over creation, auth time and IP of %+v", sess, pending)
	}
	if want := pending.CreatedAt.Add(e.svc.Config().Lifetime); !sess.ExpiresAt.Equal(want) {
		t.Errorf("completed session expires at %v; want %v, the full Lifetime after sign-in", sess.ExpiresAt, want)
	}
	if _, err := e.svc.Authenticate(e.ctx, oldToken); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("old token after rotation = %v; want ErrNoSession", err)
	}
	p, err := e.svc.Authenticate(e.ctx, token)
	if err != nil || p.Session.Pending || p.AMRCSV != "pwd,otp,mfa" {
		t.Errorf("new token: %v, %+v; want a signed-in session with amr pwd,otp,mfa", err, p)
	}

	// Step-up later: no duplicate methods, a fresh MFAAt, another rotation.
	e.clk.Advance(time.Hour)
	token2, sess2, err := e.svc.CompleteSecondFactor(e.ctx, sess.ID, authcore.AMROTP, false)
	if err != nil {
		t.Fatal(err)
	}
	if token2 == token || !slices.Equal(sess2.AMR, sess.AMR) || !sess2.MFAAt.Equal(e.clk.Now()) {
		t.Errorf("step-up: AMR %q MFAAt %v; want %q, now, and a new token", sess2.AMR, sess2.MFAAt, sess.AMR)
	}
	if !sess2.ExpiresAt.Equal(sess.ExpiresAt) {
		t.Errorf("step-up moved the expiry from %v to %v; want it kept", sess.ExpiresAt, sess2.ExpiresAt)
	}
	_, sess3, err := e.svc.CompleteSecondFactor(e.ctx, sess2.ID, authcore.AMRHardware, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"pwd", "otp", "mfa", "hwk"}; !slices.Equal(sess3.AMR, want) {
		t.Errorf("AMR after a passkey = %q; want %q", sess3.AMR, want)
	}

	if _, _, err := e.svc.CompleteSecondFactor(e.ctx, sess3.ID, authcore.AMRPassword, false); !errors.Is(err, authcore.ErrInvalidInput) {
		t.Errorf("method pwd = %v; want ErrInvalidInput", err)
	}
	if _, _, err := e.svc.CompleteSecondFactor(e.ctx, pending.ID, authcore.AMROTP, false); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("replaced session = %v; want ErrNoSession", err)
	}
	e.clk.Advance(12 * time.Hour)
	if _, _, err := e.svc.CompleteSecondFactor(e.ctx, sess3.ID, authcore.AMROTP, false); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("expired session = %v; want ErrNoSession", err)
	}
}

// A password alone, for a user with a second factor, buys a short
// window: the pending session ends PendingLifetime after sign-in, however
// busy, and cannot be completed after that.
func TestPendingSessionEndsSoon(t *testing.T) {
	e := newMFAEnv(t)
	token, pending, _ := e.pendingSession(t, "alice@example.com")
	// Used every minute (never idle) until just before the end.
	for e.clk.Now().Before(pending.CreatedAt.Add(authcore.DefaultPendingLifetime - time.Minute)) {
		e.clk.Advance(time.Minute)
		if p, err := e.svc.Authenticate(e.ctx, token); err != nil || !p.Session.Pending {
			t.Fatalf("pending session at %v: %v; want it alive and pending", e.clk.Now().Sub(pending.CreatedAt), err)
		}
	}
	e.clk.Advance(time.Minute)
	if _, err := e.svc.Authenticate(e.ctx, token); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("pending session at PendingLifetime = %v; want ErrNoSession", err)
	}
	if _, _, err := e.svc.CompleteSecondFactor(e.ctx, pending.ID, authcore.AMROTP, false); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("completing it then = %v; want ErrNoSession", err)
	}

	// Without a second factor a password session gets the full lifetime.
	plain := e.user(t, "bob@example.com")
	_, sess, err := e.svc.StartSession(e.ctx, plain, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if want := sess.CreatedAt.Add(e.svc.Config().Lifetime); sess.Pending || !sess.ExpiresAt.Equal(want) {
		t.Errorf("password-only user's session: pending %v, expires %v; want not pending, %v", sess.Pending, sess.ExpiresAt, want)
	}
}

// A Lifetime shorter than PendingLifetime bounds a pending session too.
func TestPendingSessionWithinLifetime(t *testing.T) {
	e := newMFAEnvWith(t, openAuthBolt(t), authcore.Config{Lifetime: 5 * time.Minute, PendingLifetime: time.Hour})
	_, pending, _ := e.pendingSession(t, "alice@example.com")
	if want := pending.CreatedAt.Add(5 * time.Minute); !pending.ExpiresAt.Equal(want) {
		t.Errorf("pending session expires at %v; want %v (Lifetime, the shorter)", pending.ExpiresAt, want)
	}
}

func TestCompleteSecondFactorConcurrent(t *testing.T) {
	e := newMFAEnv(t)
	_, pending, _ := e.pendingSession(t, "alice@example.com")
	const n = 8
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			switch _, _, err := e.svc.CompleteSecondFactor(e.ctx, pending.ID, authcore.AMROTP, false); {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, authcore.ErrNoSession):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Errorf("%d of %d concurrent completions succeeded; want 1", ok.Load(), n)
	}
	if ss, _ := e.st.UserSessions(e.ctx, pending.UserID); len(ss) != 1 || ss[0].Pending {
		t.Errorf("user has %d sessions after concurrent completion; want exactly one, not pending", len(ss))
	}
}

func TestRegulationOnBolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := newMFAEnvOn(t, st)
	u := e.user(t, "alice@example.com")
	reg := authcore.NewRegulator(e.clk, st, authcore.RegulationConfig{})

	// Every spelling of alice's email is one account; strangers get a
	// stable key of their own that does not keep what they typed.
	keys := map[string]string{}
	for _, typed := range []string{"alice@example.com", " Alice@Example.COM ", "nobody@example.com", "NOBODY@example.com", "not an email"} {
		k, err := e.svc.AccountKey(e.ctx, typed)
		if err != nil {
			t.Fatal(err)
		}
		keys[typed] = k
	}
	if keys["alice@example.com"] != authcore.UserAccountKey(u.ID) || keys[" Alice@Example.COM "] != keys["alice@example.com"] {
		t.Errorf("alice's keys %q, %q; want both %q", keys["alice@example.com"], keys[" Alice@Example.COM "], authcore.UserAccountKey(u.ID))
	}
	if k := keys["nobody@example.com"]; k != keys["NOBODY@example.com"] || strings.Contains(k, "nobody") || k == keys["not an email"] {
		t.Errorf("unknown keys %q, %q, %q; want the same key per address, hashed, distinct per address", k, keys["NOBODY@example.com"], keys["not an email"])
	}

	// A ban started on one store survives a restart.
	var lockouts int
	for range 5 {
		a, err := reg.Begin(e.ctx, keys["alice@example.com"], "192.0.2.1")
		if err != nil || !a.Allowed() {
			t.Fatalf("Begin = %v, allowed %v", err, a != nil && a.Allowed())
		}
		res, err := a.Fail(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Lockout() {
			lockouts++
		}
	}
	if lockouts != 1 {
		t.Errorf("lockout reported %d times; want 1", lockouts)
	}
	st.Close()
	st, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg = authcore.NewRegulator(e.clk, st, authcore.RegulationConfig{})
	a, err := reg.Begin(e.ctx, authcore.UserAccountKey(u.ID), "198.51.100.1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Allowed() {
		t.Error("ban lost on restart")
	}
	if until, _ := reg.AccountBan(e.ctx, u.ID); !until.Equal(mfaStart.Add(15 * time.Minute)) {
		t.Errorf("AccountBan = %v; want start + 15m", until)
	}
	if err := reg.Unlock(e.ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if a, _ := reg.Begin(e.ctx, authcore.UserAccountKey(u.ID), "198.51.100.1"); !a.Allowed() {
		t.Error("refused after Unlock")
	}

	e.clk.Advance(time.Hour)
	if n, err := reg.Prune(e.ctx); err != nil || n != 3 {
		t.Errorf("Prune = %d, %v; want 3 (alice and two addresses)", n, err)
	}
	if n, _ := reg.Prune(e.ctx); n != 0 {
		t.Errorf("second Prune = %d; want 0", n)
	}
}

func TestRegulationOnBoltParallel(t *testing.T) {
	e := newMFAEnv(t)
	reg := authcore.NewRegulator(e.clk, e.st, authcore.RegulationConfig{})
	const n = 40
	var allowed, lockouts atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := reg.Begin(e.ctx, "email:target", fmt.Sprintf("198.51.100.%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			if a.Allowed() {
				allowed.Add(1)
			}
			res, err := a.Fail(e.ctx)
			if err != nil {
				t.Error(err)
			}
			if res.Lockout() {
				lockouts.Add(1)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 5 || lockouts.Load() != 1 {
		t.Errorf("%d allowed, %d lockouts of %d parallel guesses; want 5 and 1", allowed.Load(), lockouts.Load(), n)
	}
}

func TestDeleteUserMFA(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	e.enrol(t, u)
	reg := authcore.NewRegulator(e.clk, e.st, authcore.RegulationConfig{})
	a, _ := reg.Begin(e.ctx, authcore.UserAccountKey(u.ID), "")
	a.Fail(e.ctx)
	uk, _ := userKey(u.ID)
	if err := e.st.db.Update(func(tx *bolt.Tx) error { return deleteUserMFA(tx, uk, u.ID) }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.TOTP(e.ctx, u.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("TOTP after deleteUserMFA = %v; want ErrNotFound", err)
	}
	if n, _, _ := e.st.RecoveryCodeSet(e.ctx, u.ID); n != 0 {
		t.Errorf("%d recovery codes after deleteUserMFA; want 0", n)
	}
	if st, _ := e.st.RegulationState(e.ctx, authcore.UserAccountKey(u.ID)); !st.IsZero() {
		t.Errorf("regulation state after deleteUserMFA = %+v; want none", st)
	}
}

// TestRemoveTOTPWithoutTOTP: a user whose second factor is something else
// (here only the flag) keeps it when asked to remove a TOTP they lack.
func TestRemoveTOTPWithoutTOTP(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	if _, err := e.svc.UpdateUser(e.ctx, u.ID, func(u *authcore.User) error { u.SecondFactor = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.RemoveTOTP(e.ctx, u.ID); !errors.Is(err, authcore.ErrNotEnrolled) {
		t.Errorf("RemoveTOTP = %v; want ErrNotEnrolled", err)
	}
	if got, _ := e.st.UserByID(e.ctx, u.ID); !got.SecondFactor {
		t.Error("SecondFactor cleared by removing a TOTP that did not exist")
	}
}

// The issuer comes from the request's Host, which a client chooses on a
// catch-all site: a long one is cut so the key URI still fits a QR code,
// rather than failing the page (with the secret in the error).
func TestTOTPEnrolmentLongIssuer(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	long := strings.Repeat("é", 1500) // 3000 bytes; cut inside a rune
	en, err := e.svc.BeginTOTP(e.ctx, u, mfaSID, long)
	if err != nil {
		t.Fatalf("BeginTOTP with a %d-byte issuer: %v", len(long), err)
	}
	uri, err := url.Parse(en.URL)
	if err != nil {
		t.Fatal(err)
	}
	iss := uri.Query().Get("issuer")
	if iss == "" || len(iss) > 100 || !utf8.ValidString(iss) || !strings.HasPrefix(long, iss) {
		t.Errorf("issuer %d bytes (valid UTF-8 %v); want a valid prefix of at most 100 bytes", len(iss), utf8.ValidString(iss))
	}
	if !strings.HasPrefix(en.QRCode, "data:image/png;base64,") {
		t.Errorf("QRCode = %.40q…; want a PNG data URI", en.QRCode)
	}
}

// ResetTOTP removes the factor and ends every session in one
// transaction: the sessions, the user's epoch (so a session started from
// a check made before cannot be stored after), and with no factor, the
// sessions are left alone.
func TestResetTOTPEndsSessions(t *testing.T) {
	e := newMFAEnv(t)
	u := e.user(t, "alice@example.com")
	other := e.user(t, "bob@example.com")
	e.enrol(t, u)
	tok, _, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	otherTok, _, err := e.svc.StartSession(e.ctx, other, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := e.st.UserByID(e.ctx, u.ID)
	if err := e.svc.ResetTOTP(e.ctx, u.ID); err != nil {
		t.Fatalf("ResetTOTP: %v", err)
	}
	if has, _ := e.svc.HasTOTP(e.ctx, u.ID); has {
		t.Error("HasTOTP after ResetTOTP")
	}
	after, _ := e.st.UserByID(e.ctx, u.ID)
	if after.SecondFactor || after.SessionEpoch != before.SessionEpoch+1 {
		t.Errorf("after ResetTOTP: SecondFactor %v, epoch %d → %d; want false and moved on by one", after.SecondFactor, before.SessionEpoch, after.SessionEpoch)
	}
	if sessions, _ := e.st.UserSessions(e.ctx, u.ID); len(sessions) != 0 {
		t.Errorf("%d sessions left after ResetTOTP; want none", len(sessions))
	}
	if _, err := e.svc.Authenticate(e.ctx, tok); err == nil {
		t.Error("the user's session still authenticates after ResetTOTP")
	}
	if _, err := e.svc.Authenticate(e.ctx, otherTok); err != nil {
		t.Errorf("another user's session after ResetTOTP: %v", err)
	}
	// Nothing to reset: ErrNotEnrolled, and no session ends.
	tok, _, err = e.svc.StartSession(e.ctx, after, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ResetTOTP(e.ctx, u.ID); !errors.Is(err, authcore.ErrNotEnrolled) {
		t.Errorf("ResetTOTP without a factor = %v; want ErrNotEnrolled", err)
	}
	if _, err := e.svc.Authenticate(e.ctx, tok); err != nil {
		t.Errorf("a refused ResetTOTP ended a session: %v", err)
	}
}

// noRevokeBolt is a store whose DeleteUserSessions always fails: a reset
// that ends the sessions with it, in a second step, fails against it.
type noRevokeBolt struct{ *Bolt }

func (noRevokeBolt) DeleteUserSessions(ctx context.Context, userID string) ([]authcore.SessionID, error) {
	return nil, errors.New("DeleteUserSessions called")
}

// ResetTOTP ends the sessions in DeleteTOTP's own transaction, not in a
// second step that could fail after the factor is gone.
func TestResetTOTPIsOneTransaction(t *testing.T) {
	e := newMFAEnvOn(t, noRevokeBolt{openAuthBolt(t)})
	u := e.user(t, "alice@example.com")
	e.enrol(t, u)
	tok, _, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ResetTOTP(e.ctx, u.ID); err != nil {
		t.Fatalf("ResetTOTP: %v", err)
	}
	if _, err := e.svc.Authenticate(e.ctx, tok); err == nil {
		t.Error("the user's session still authenticates after ResetTOTP")
	}
}

// raceStore runs beforeReplace once, just before ReplaceRecoveryCodes:
// what a concurrent request can do between RegenerateRecoveryCodes'
// check that the user has a second factor and its write.
type raceStore struct {
	*Bolt
	beforeReplace func()
}

func (s *raceStore) ReplaceRecoveryCodes(ctx context.Context, userID string, hashes [][]byte) error {
	if f := s.beforeReplace; f != nil {
		s.beforeReplace = nil
		f()
	}
	return s.Bolt.ReplaceRecoveryCodes(ctx, userID, hashes)
}

// New recovery codes are written only while the user has a second
// factor, checked in the writing transaction: a reset (or the user's own
// removal) landing between the check and the write must not leave a user
// without an authenticator holding working codes.
func TestRegenerateRecoveryCodesRacesReset(t *testing.T) {
	rs := &raceStore{Bolt: openAuthBolt(t)}
	e := newMFAEnvOn(t, rs)
	e.st = rs.Bolt
	u := e.user(t, "alice@example.com")
	e.enrol(t, u)
	rs.beforeReplace = func() {
		if err := e.svc.ResetTOTP(e.ctx, u.ID); err != nil {
			t.Fatal(err)
		}
	}
	codes, err := e.svc.RegenerateRecoveryCodes(e.ctx, u.ID)
	if !errors.Is(err, authcore.ErrNotEnrolled) || codes != nil {
		t.Fatalf("RegenerateRecoveryCodes raced by a reset = %d codes, %v; want ErrNotEnrolled", len(codes), err)
	}
	if n, _ := e.svc.RecoveryCodesLeft(e.ctx, u.ID); n != 0 {
		t.Errorf("%d recovery codes left after the reset; want none", n)
	}
	if err := e.st.ReplaceRecoveryCodes(e.ctx, e.user(t, "bob@example.com").ID, [][]byte{make([]byte, 32)}); !errors.Is(err, authcore.ErrNotEnrolled) {
		t.Errorf("ReplaceRecoveryCodes for a user without a second factor = %v; want ErrNotEnrolled", err)
	}
}
