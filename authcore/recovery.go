package authcore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// RecoveryCodeCount is how many recovery codes a user gets at a time.
const RecoveryCodeCount = 10

// Recovery codes are 12 symbols of Crockford's base32 (60 random bits),
// shown lower-case in groups of four: "7k2m-x9qd-4h0c". The alphabet has no
// i, l, o or u, and reading them back maps o to 0 and i, l to 1, so codes
// survive handwriting. 60 bits keep even a stolen hash list out of reach of
// brute force, so a plain SHA-256 is enough to store them.
const (
	recoveryAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"
	recoveryLen      = 12
	recoveryGroup    = 4
)

// RegenerateRecoveryCodes replaces all of the user's recovery codes with
// RecoveryCodeCount new ones and returns them in plain text this once. It
// returns ErrNotEnrolled for a user without a second factor (codes stand
// in for one). Callers should require a second factor passed recently in
// the session, as for RemoveTOTP.
func (s *Service) RegenerateRecoveryCodes(ctx context.Context, userID string) ([]string, error) {
	return s.regenerateRecoveryCodes(ctx, userID, func(hashes [][]byte) error {
		return s.store.ReplaceRecoveryCodes(ctx, userID, hashes)
	})
}

// ErrRecoveryCodesChanged refuses new recovery codes asked for against a
// set that has changed since it was read: the form was sent twice (a
// reload of the page that showed the new codes), or a code was spent
// meanwhile. Making a set again then would leave the user holding a
// set that no longer works.
var ErrRecoveryCodesChanged = errors.New("the recovery codes changed since they were shown")

// RecoverySetDigest names a set of recovery codes by its stored hashes
// (SHA-256 sums, concatenated in stored order): it changes whenever the
// set does, new codes or one spent. It is not for showing: with one code
// left, it would confirm guesses of that code offline. A form shows a
// keyed MAC of it.
func RecoverySetDigest(stored []byte) string {
	sum := sha256.Sum256(stored)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// RegenerateRecoveryCodesWith is RegenerateRecoveryCodes made through
// commit (see Commit): the old codes stop working when the row telling
// of it is stored, not before. shown tells, in that transaction,
// whether the stored set's digest (RecoverySetDigest) is the one of the
// set the user was shown (RecoveryCodeSet); if not, nothing changes and
// it returns ErrRecoveryCodesChanged.
func (s *Service) RegenerateRecoveryCodesWith(ctx context.Context, userID string, shown func(digest string) bool, commit Commit) ([]string, error) {
	cs, err := s.changeStore()
	if err != nil {
		return nil, err
	}
	return s.regenerateRecoveryCodes(ctx, userID, func(hashes [][]byte) error {
		return commit(cs.ReplaceRecoveryCodesIn(userID, shown, hashes))
	})
}

func (s *Service) regenerateRecoveryCodes(ctx context.Context, userID string, replace func(hashes [][]byte) error) ([]string, error) {
	u, err := s.store.UserByID(ctx, userID)
	if err != nil {
		return nil, err
	}
	if !u.SecondFactor {
		return nil, ErrNotEnrolled
	}
	codes, hashes := newRecoveryCodes(userID)
	if err := replace(hashes); err != nil {
		return nil, err
	}
	return codes, nil
}

// UseRecoveryCode spends one of the user's recovery codes. Case, spaces
// and dashes do not matter. Each code passes once, also under concurrent
// requests (the check and the spend are one store transaction).
//
// It returns ErrInvalidCode for a malformed, unknown or spent code. On
// success the caller writes the mfa.recovery_code.used audit row, calls
// CompleteSecondFactor (AMROTP: a recovery code is a one-time password)
// and may show RecoveryCodesLeft. Failures count with the Regulator like
// wrong passwords. UseRecoveryCodeWith does the spend, the session and
// the rows in one transaction.
func (s *Service) UseRecoveryCode(ctx context.Context, userID, code string) error {
	hash, err := recoveryCodeHash(userID, code)
	if err != nil {
		return err
	}
	return spentRecoveryCode(s.store.ConsumeRecoveryCode(ctx, userID, hash))
}

// UseRecoveryCodeWith is UseRecoveryCode and CompleteSecondFactor
// (AMROTP) for the session id, made through commit (see Commit): the
// code is spent with the new session and the rows telling of them, or
// not at all. A session ended meanwhile is ErrNoSession, and the code is
// not spent on it. secure is as for CompleteSecondFactor.
func (s *Service) UseRecoveryCodeWith(ctx context.Context, userID string, id SessionID, code string, secure bool, commit Commit) (token string, sess *Session, err error) {
	hash, err := recoveryCodeHash(userID, code)
	if err != nil {
		return "", nil, err
	}
	// A wrong code is answered here, read-only: it never reaches the
	// commit, where its refusal would make the audit log commit the
	// rows it shared a batch with again. The spend checks again.
	switch has, err := s.store.HasRecoveryCode(ctx, userID, hash); {
	case err != nil:
		return "", nil, err
	case !has:
		return "", nil, spentRecoveryCode(ErrNotFound)
	}
	token, sess, err = s.passSecondFactorWith(ctx, id, AMROTP, secure, commit, func(cs ChangeStore) func(tx any) error {
		return cs.ConsumeRecoveryCodeIn(userID, hash)
	})
	if err = spentRecoveryCode(err); err != nil {
		return "", nil, err
	}
	return token, sess, nil
}

// recoveryCodeHash is the stored form of a typed recovery code, or
// ErrInvalidCode for one that is not a recovery code.
func recoveryCodeHash(userID, code string) ([]byte, error) {
	norm, ok := normalizeRecoveryCode(code)
	if !ok {
		return nil, fmt.Errorf("%w: not a recovery code", ErrInvalidCode)
	}
	return recoveryHash(userID, norm), nil
}

// spentRecoveryCode is the answer to a code the store spent with err:
// none such is ErrInvalidCode.
func spentRecoveryCode(err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: unknown or spent recovery code", ErrInvalidCode)
	}
	return err
}

// RecoveryCodesLeft returns how many unused recovery codes the user has.
func (s *Service) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	left, _, err := s.store.RecoveryCodeSet(ctx, userID)
	return left, err
}

// RecoveryCodeSet returns how many unused recovery codes the user has,
// and the set's digest (RecoverySetDigest), for a form that replaces it
// (RegenerateRecoveryCodesWith).
func (s *Service) RecoveryCodeSet(ctx context.Context, userID string) (left int, digest string, err error) {
	return s.store.RecoveryCodeSet(ctx, userID)
}

// newRecoveryCodes returns RecoveryCodeCount fresh codes in display form
// and their hashes for userID.
func newRecoveryCodes(userID string) (codes []string, hashes [][]byte) {
	codes = make([]string, RecoveryCodeCount)
	hashes = make([][]byte, RecoveryCodeCount)
	for i := range codes {
		var raw [recoveryLen]byte
		_, _ = rand.Read(raw[:])
		var b strings.Builder
		for j, r := range raw {
			if j > 0 && j%recoveryGroup == 0 {
				b.WriteByte('-')
			}
			b.WriteByte(recoveryAlphabet[r&31]) // 32 symbols: unbiased
		}
		codes[i] = b.String()
		norm, _ := normalizeRecoveryCode(codes[i])
		hashes[i] = recoveryHash(userID, norm)
	}
	return codes, hashes
}

// normalizeRecoveryCode lower-cases a typed code, drops spaces and dashes,
// and maps the look-alikes o→0 and i, l→1. ok is false unless the result
// is recoveryLen symbols of the alphabet.
func normalizeRecoveryCode(s string) (string, bool) {
	if len(s) > 64 {
		return "", false
	}
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch r {
		case ' ', '-', '\t':
			continue
		case 'o':
			r = '0'
		case 'i', 'l':
			r = '1'
		}
		if r > 0x7f || !strings.ContainsRune(recoveryAlphabet, r) {
			return "", false
		}
		b.WriteRune(r)
	}
	if b.Len() != recoveryLen {
		return "", false
	}
	return b.String(), true
}

// recoveryHash is the stored form of a normalised code, bound to its user.
func recoveryHash(userID, norm string) []byte {
	sum := sha256.Sum256([]byte("sigra/recovery-code/v1\x00" + userID + "\x00" + norm))
	return sum[:]
}
