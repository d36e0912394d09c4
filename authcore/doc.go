// Package authcore is the identity core of the Sigra gateway: users,
// password hashing, sessions, CSRF tokens, return-URL checks and signed
// identity assertions. It knows nothing of Caddy or HTTP servers and
// declares the persistence it needs as the Store interface, which the
// store package implements.
package authcore

import (
	"errors"
	"fmt"
)

// Sentinel errors. Only the caddymodule package maps them to HTTP.
var (
	// ErrNotFound means the record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrEmailTaken means another user already has the email address.
	ErrEmailTaken = errors.New("email address already in use")
	// ErrInvalidCredentials is the single answer for an unknown user, a
	// wrong password, a disabled account and a ban: callers must not be
	// able to tell them apart.
	ErrInvalidCredentials = errors.New("invalid email or password")
	// ErrAccountDisabled is ErrInvalidCredentials for the right password
	// of a disabled account. Callers answer it as ErrInvalidCredentials;
	// it is for the audit row, which tells the operator that someone
	// they shut out still holds the password.
	ErrAccountDisabled = fmt.Errorf("%w: the account is disabled", ErrInvalidCredentials)
	// ErrNoSession means the request carries no valid, unexpired session.
	ErrNoSession = errors.New("no valid session")
	// ErrOtherHost is ErrNoSession for a session of another site (see
	// Session.OnSite): another host name, or plain HTTP for an HTTPS one.
	ErrOtherHost = fmt.Errorf("%w: the session was signed in on another site", ErrNoSession)
	// ErrInvalidInput means a field failed validation; wrapped errors say which.
	ErrInvalidInput = errors.New("invalid input")
	// ErrBusy means too many password checks are running: each takes
	// tens of MiB, so their number is bounded. Try again shortly.
	ErrBusy = errors.New("too many sign-in attempts in progress")
	// ErrCrowded is ErrBusy for one client address: its attempts (in
	// flight, a busy office behind one NAT address, and its recent
	// failures) fill its quota, and this one was refused unchecked and
	// uncounted, without a ban. Ask the client to try again shortly
	// (429): that tells it nothing of the password or the account.
	ErrCrowded = fmt.Errorf("%w from this address", ErrBusy)
	// ErrLastAdmin refuses to delete, disable or demote the only enabled
	// member of the admin group, which would leave nobody to manage the
	// site.
	ErrLastAdmin = errors.New("this is the only enabled administrator; make another administrator first")
	// ErrFactorsChanged refuses to store a sign-in's session made from a
	// user whose second factor came (or went) since it was read: set up
	// while the password was checked, say. Nothing is stored; make the
	// session again from the user as stored now. A session renewed for a
	// password change or a sign-out of the others is refused so too when
	// a second factor came since and the session passed none.
	ErrFactorsChanged = errors.New("the user's second factor changed during the sign-in")
)
