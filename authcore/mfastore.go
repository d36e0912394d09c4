package authcore

import (
	"context"
	"errors"
	"time"
)

// ErrTOTPStepUsed is returned by MFAStore.AcceptTOTPStep when the time step
// is not newer than the last accepted one: the code was already used (or
// a newer one was). The Service answers it as ErrInvalidCode.
var ErrTOTPStepUsed = errors.New("TOTP time step already used")

// TOTPRecord is a user's confirmed TOTP authenticator.
type TOTPRecord struct {
	// Sealed is the base32 secret sealed with the Service's box, bound to
	// the user id.
	Sealed []byte `json:"sealed"`
	// LastStep is the last accepted time step (Unix time / 30 s). Codes of
	// this step or an earlier one are refused, so a code works once.
	LastStep uint64 `json:"last_step"`
	// EnrolledAt is when the enrolment was confirmed.
	EnrolledAt time.Time `json:"enrolled_at"`
	// Failures counts wrong codes in a row: since the last accepted code
	// or recovery code, or an administrator's unlock (ErrTOTPLocked).
	Failures int `json:"failures,omitempty"`
}

// MFAStore is the persistence for TOTP authenticators, recovery codes and
// regulation (lockout) counters. It is part of Store. Implementations
// return ErrNotFound for missing records; any other error is a storage
// failure.
//
// Methods documented as atomic must do their read, check and write in one
// transaction that serialises with other writers of the same record
// (bbolt: one Update; PostgreSQL: SELECT … FOR UPDATE), so that two
// concurrent uses of one code cannot both succeed.
type MFAStore interface {
	// CompleteTOTPEnrolment atomically enrols the user's authenticator
	// app: if the user has none, it stores rec as the user's TOTP,
	// replaces all recovery codes with recoveryHashes, and sets the
	// user's SecondFactor flag (UpdatedAt = rec.EnrolledAt). It returns
	// ErrNotFound, changing nothing, when the user has one already (set
	// up meanwhile: the same form sent twice, another tab) or does not
	// exist.
	CompleteTOTPEnrolment(ctx context.Context, userID string, rec *TOTPRecord, recoveryHashes [][]byte) error
	// TOTP returns the user's confirmed TOTP, or ErrNotFound.
	TOTP(ctx context.Context, userID string) (*TOTPRecord, error)
	// AcceptTOTPStep atomically raises the user's LastStep to step and
	// sets Failures to 0. It returns ErrTOTPLocked if Failures is
	// maxFailures or more, ErrTOTPStepUsed if step is not greater than
	// LastStep, and ErrNotFound if the user has no TOTP, changing nothing.
	AcceptTOTPStep(ctx context.Context, userID string, step uint64, maxFailures int) error
	// FailTOTP atomically adds one to the user's TOTP Failures and
	// returns the new count, or ErrNotFound if the user has no TOTP.
	FailTOTP(ctx context.Context, userID string) (int, error)
	// ClearTOTPFailures sets the user's TOTP Failures to 0; a user
	// without a TOTP is not an error, one that does not exist is
	// ErrNotFound.
	ClearTOTPFailures(ctx context.Context, userID string) error
	// DeleteTOTP removes the user's TOTP and all pending enrolments. With
	// lastFactor, the same transaction also deletes the recovery codes
	// and clears the user's SecondFactor (UpdatedAt = at), so the account
	// is never left with a flag and no factor, or a factor and no flag.
	// With endSessions, the same transaction also ends every session of
	// the user and moves their SessionEpoch on, as DeleteUserSessions.
	// It returns ErrNotFound, changing nothing else, if there was no
	// confirmed TOTP (a pending enrolment is still removed).
	DeleteTOTP(ctx context.Context, userID string, lastFactor, endSessions bool, at time.Time) error

	// ReplaceRecoveryCodes replaces all of a user's recovery code hashes
	// (each 32 bytes); an empty list deletes them. A non-empty list is
	// refused with ErrNotEnrolled, in the same transaction, when the
	// user's SecondFactor is not set (ErrNotFound: no such user).
	ReplaceRecoveryCodes(ctx context.Context, userID string, hashes [][]byte) error
	// ConsumeRecoveryCode atomically deletes the user's unused recovery
	// code with this hash, comparing in constant time, and in the same
	// transaction sets the user's TOTP Failures to 0 (a recovery code
	// opens a locked app). It returns ErrNotFound, changing nothing, if
	// there is no such code.
	ConsumeRecoveryCode(ctx context.Context, userID string, hash []byte) error
	// RecoveryCodeSet returns how many unused recovery codes a user has,
	// and RecoverySetDigest of the stored hashes.
	RecoveryCodeSet(ctx context.Context, userID string) (left int, digest string, err error)
	// HasRecoveryCode reports whether the user has an unused recovery
	// code with this hash, comparing in constant time. It spends nothing.
	HasRecoveryCode(ctx context.Context, userID string, hash []byte) (bool, error)

	RegulationStore
}

// RegulationStore persists regulation counters and bans, so that bans
// survive restarts and instances sharing one database share them. It
// stores; the Regulator decides.
type RegulationStore interface {
	// UpdateRegulation atomically reads the state of each key (a zero
	// state for keys it does not hold), calls fn once with them in the
	// order of keys, and writes back what fn left; states left zero
	// (IsZero) are deleted. If fn returns an error nothing is written and
	// UpdateRegulation returns it. Implementations that lock rows lock
	// them in the order given.
	UpdateRegulation(ctx context.Context, keys []string, fn func(states []*RegulationState) error) error
	// RegulationState returns the state of one key (zero if not held).
	RegulationState(ctx context.Context, key string) (*RegulationState, error)
	// PruneRegulation deletes states whose Expires is before now and
	// returns how many.
	PruneRegulation(ctx context.Context, now time.Time) (int, error)
	// RegulationStates calls fn with each state whose key starts with
	// prefix, in key order, until fn returns false.
	RegulationStates(ctx context.Context, prefix string, fn func(key string, st *RegulationState) bool) error
}

// RegulationState is what the Regulator keeps per key (an account or a
// client address).
type RegulationState struct {
	// Attempts are the times of counted attempts within the find time,
	// oldest first: failures, and attempts still being checked.
	Attempts []time.Time `json:"attempts,omitempty"`
	// InFlight are those of Attempts still being checked: they count
	// against a new attempt's quota (parallel guessing gets no more tries
	// than serial), but a failure bans only once the failures alone,
	// without them, reach the limit (what is under way may yet pass).
	InFlight []time.Time `json:"in_flight,omitempty"`
	// BannedUntil is when the current ban ends; zero if never banned.
	BannedUntil time.Time `json:"banned_until,omitzero"`
	// Expires is when the state means nothing any more and may be pruned.
	Expires time.Time `json:"expires,omitzero"`
}

// IsZero reports whether the state holds nothing worth storing.
func (s *RegulationState) IsZero() bool {
	return len(s.Attempts) == 0 && s.BannedUntil.IsZero()
}
