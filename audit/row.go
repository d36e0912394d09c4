package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Actor types: who caused a row.
const (
	// ActorUser is a signed-in (or signing-in) end user.
	ActorUser = "user"
	// ActorAdmin is an admin acting through the admin UI or API; ActorID
	// is the admin's user id.
	ActorAdmin = "admin"
	// ActorSystem is the gateway itself or the CLI.
	ActorSystem = "system"
	// ActorBilling is a signed billing event received from the processor.
	ActorBilling = "billing"
)

// Outcomes commonly used in Row.Outcome. Any short lower-case word is
// accepted.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// Bounds on a row. Strings that come from clients (IP, user agent,
// metadata values) are truncated to their bound rather than rejected, so a
// hostile client cannot stop its own actions from being recorded; the
// fields that code sets (action, ids, metadata keys) are validated.
const (
	MaxActionLen    = 128  // bytes in Action
	MaxIDLen        = 256  // bytes in ActorID, SubjectID, OrgID, RequestID
	MaxIPLen        = 64   // bytes kept of IP
	MaxUserAgentLen = 512  // bytes kept of UserAgent
	MaxOutcomeLen   = 32   // bytes in Outcome
	MaxMetadataKeys = 32   // entries in Metadata
	MaxMetaKeyLen   = 64   // bytes in a Metadata key
	MaxMetaValueLen = 1024 // bytes kept of a Metadata value
)

// ErrInvalidRow means Record refused a row: an unknown actor type, a
// malformed action name, an oversized id or metadata. The wrapped message
// says which field. It is a programming error in the caller, not a storage
// failure.
var ErrInvalidRow = errors.New("audit: invalid row")

// Row is one audit event. Its JSON form is the wire format of webhooks,
// exports and the admin API:
//
//	{"id":"01938c6e-…","occurred_at":"2026-11-22T10:00:00.123456789Z",
//	 "action":"auth.login.success","actor_id":"…","actor_type":"user",
//	 "subject_id":"…","org_id":"","ip":"203.0.113.7","user_agent":"…",
//	 "request_id":"…","outcome":"success","metadata":{"method":"password"}}
//
// Every field is always present; occurred_at is RFC 3339 in UTC with nine
// fractional digits; <, > and & in strings are escaped (\u003c) as
// encoding/json does by default, so rows are safe to embed in HTML. Treat a Row received from a subscription as read-only:
// its Metadata map is shared.
type Row struct {
	// ID is a UUID in canonical form. Record generates a UUIDv7 when empty.
	ID string `json:"id"`
	// OccurredAt is when it happened, UTC, nanosecond precision. Record
	// uses the clock when zero.
	OccurredAt time.Time `json:"occurred_at"`
	// Action names what happened: dot-separated lower-case segments, for
	// example "auth.login.success" or "admin.user.disable".
	Action string `json:"action"`
	// ActorID is who did it (a user id; empty for anonymous or system).
	ActorID string `json:"actor_id"`
	// ActorType is one of ActorUser, ActorAdmin, ActorSystem, ActorBilling.
	ActorType string `json:"actor_type"`
	// SubjectID is what it was done to (a user, session or org id).
	SubjectID string `json:"subject_id"`
	// OrgID is the organisation concerned, if any.
	OrgID string `json:"org_id"`
	// IP is the client address as Caddy resolved it.
	IP string `json:"ip"`
	// UserAgent is the client's User-Agent header.
	UserAgent string `json:"user_agent"`
	// RequestID correlates the row with Caddy's access log.
	RequestID string `json:"request_id"`
	// Outcome is a short lower-case word, usually "success" or "failure".
	Outcome string `json:"outcome"`
	// Metadata holds small extra facts (metadata.method, metadata.reason).
	Metadata map[string]string `json:"metadata"`
}

// TimeLayout is occurred_at's layout: it always prints nine fractional
// digits, so that the text has a fixed width and sorts as the times do.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// rowWire is Row's JSON shape with occurred_at already formatted.
type rowWire struct {
	ID         string            `json:"id"`
	OccurredAt string            `json:"occurred_at"`
	Action     string            `json:"action"`
	ActorID    string            `json:"actor_id"`
	ActorType  string            `json:"actor_type"`
	SubjectID  string            `json:"subject_id"`
	OrgID      string            `json:"org_id"`
	IP         string            `json:"ip"`
	UserAgent  string            `json:"user_agent"`
	RequestID  string            `json:"request_id"`
	Outcome    string            `json:"outcome"`
	Metadata   map[string]string `json:"metadata"`
}

var emptyMeta = map[string]string{}

// MarshalJSON encodes the row in its wire format (see Row).
func (r Row) MarshalJSON() ([]byte, error) {
	w := rowWire{
		ID: r.ID, OccurredAt: r.OccurredAt.UTC().Format(TimeLayout), Action: r.Action,
		ActorID: r.ActorID, ActorType: r.ActorType, SubjectID: r.SubjectID, OrgID: r.OrgID,
		IP: r.IP, UserAgent: r.UserAgent, RequestID: r.RequestID, Outcome: r.Outcome,
		Metadata: r.Metadata,
	}
	if w.Metadata == nil {
		w.Metadata = emptyMeta
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the wire format; occurred_at may be any RFC 3339
// time and is converted to UTC.
func (r *Row) UnmarshalJSON(b []byte) error {
	var w rowWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	var at time.Time
	if w.OccurredAt != "" {
		t, err := time.Parse(time.RFC3339Nano, w.OccurredAt)
		if err != nil {
			return fmt.Errorf("audit: occurred_at: %w", err)
		}
		at = t.UTC()
	}
	*r = Row{
		ID: w.ID, OccurredAt: at, Action: w.Action, ActorID: w.ActorID, ActorType: w.ActorType,
		SubjectID: w.SubjectID, OrgID: w.OrgID, IP: w.IP, UserAgent: w.UserAgent,
		RequestID: w.RequestID, Outcome: w.Outcome, Metadata: w.Metadata,
	}
	if len(r.Metadata) == 0 {
		r.Metadata = nil
	}
	return nil
}

// Position is a row's place in the total order of the log: by OccurredAt,
// then by ID bytes. Stores key rows by it, so that it is also the unit of
// idempotency (id + occurred_at) and of cursors.
type Position struct {
	At time.Time
	ID uuid.UUID
}

// Less reports whether p sorts before q.
func (p Position) Less(q Position) bool {
	if !p.At.Equal(q.At) {
		return p.At.Before(q.At)
	}
	return bytes.Compare(p.ID[:], q.ID[:]) < 0
}

// PositionOf returns the position of a row whose ID is a valid UUID.
func PositionOf(r Row) (Position, error) {
	id, err := uuid.Parse(r.ID)
	if err != nil {
		return Position{}, fmt.Errorf("%w: id %q: %v", ErrInvalidRow, r.ID, err)
	}
	return Position{At: r.OccurredAt.UTC(), ID: id}, nil
}

var (
	minTime = time.Unix(0, 0).UTC()
	// maxTime keeps UnixNano representable (it overflows in 2262).
	maxTime = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// normalize validates r in place and fills what Record fills: the id, the
// time, canonical forms, truncated client strings and a private copy of
// the metadata. It returns the row's position.
func (r *Row) normalize(newID func() uuid.UUID, now time.Time) (Position, error) {
	var id uuid.UUID
	if r.ID == "" {
		id = newID()
	} else {
		var err error
		if id, err = uuid.Parse(r.ID); err != nil || id == uuid.Nil {
			return Position{}, fmt.Errorf("%w: id %q is not a UUID", ErrInvalidRow, r.ID)
		}
	}
	r.ID = id.String()
	if r.OccurredAt.IsZero() {
		r.OccurredAt = now
	}
	r.OccurredAt = r.OccurredAt.UTC().Round(0)
	if r.OccurredAt.Before(minTime) || !r.OccurredAt.Before(maxTime) {
		return Position{}, fmt.Errorf("%w: occurred_at %s out of range", ErrInvalidRow, r.OccurredAt.Format(TimeLayout))
	}
	if err := validAction(r.Action); err != nil {
		return Position{}, fmt.Errorf("%w: %v", ErrInvalidRow, err)
	}
	switch r.ActorType {
	case ActorUser, ActorAdmin, ActorSystem, ActorBilling:
	default:
		return Position{}, fmt.Errorf("%w: actor_type %q is not one of user, admin, system, billing", ErrInvalidRow, r.ActorType)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"actor_id", &r.ActorID}, {"subject_id", &r.SubjectID}, {"org_id", &r.OrgID}, {"request_id", &r.RequestID}} {
		*f.v = strings.ToValidUTF8(*f.v, "\uFFFD")
		if len(*f.v) > MaxIDLen {
			return Position{}, fmt.Errorf("%w: %s longer than %d bytes", ErrInvalidRow, f.name, MaxIDLen)
		}
		if strings.IndexByte(*f.v, 0) >= 0 {
			return Position{}, fmt.Errorf("%w: %s contains a NUL byte", ErrInvalidRow, f.name)
		}
	}
	if len(r.Outcome) > MaxOutcomeLen || !isWord(r.Outcome) {
		return Position{}, fmt.Errorf("%w: outcome %q is not a short lower-case word", ErrInvalidRow, r.Outcome)
	}
	r.IP = Truncate(r.IP, MaxIPLen)
	r.UserAgent = Truncate(r.UserAgent, MaxUserAgentLen)
	if len(r.Metadata) > MaxMetadataKeys {
		return Position{}, fmt.Errorf("%w: %d metadata entries, at most %d", ErrInvalidRow, len(r.Metadata), MaxMetadataKeys)
	}
	if len(r.Metadata) == 0 {
		r.Metadata = nil
	} else {
		meta := make(map[string]string, len(r.Metadata))
		for k, v := range r.Metadata {
			if k == "" || len(k) > MaxMetaKeyLen || !utf8.ValidString(k) {
				return Position{}, fmt.Errorf("%w: metadata key %q must be 1 to %d bytes of UTF-8", ErrInvalidRow, k, MaxMetaKeyLen)
			}
			meta[k] = Truncate(v, MaxMetaValueLen)
		}
		r.Metadata = meta
	}
	return Position{At: r.OccurredAt, ID: id}, nil
}

// validAction accepts dot-separated segments of [a-z0-9_-], at least two,
// the first starting with a letter: "auth.login.success".
func validAction(a string) error {
	if len(a) == 0 || len(a) > MaxActionLen {
		return fmt.Errorf("action %q must be 1 to %d bytes", a, MaxActionLen)
	}
	if a[0] < 'a' || a[0] > 'z' {
		return fmt.Errorf("action %q must start with a lower-case letter", a)
	}
	segs := 1
	prevDot := false
	for i := 0; i < len(a); i++ {
		c := a[i]
		switch {
		case c == '.':
			if prevDot || i == len(a)-1 {
				return fmt.Errorf("action %q has an empty segment", a)
			}
			segs++
			prevDot = true
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("action %q may only hold a-z, 0-9, '_', '-' and '.'", a)
		}
		prevDot = false
	}
	if segs < 2 {
		return fmt.Errorf("action %q needs at least two dot-separated segments (auth.logout)", a)
	}
	return nil
}

func isWord(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

// cutMark ends a string Truncate cut, so that a reader can tell it from
// one that was that short.
const cutMark = "…"

// Truncate returns s as valid UTF-8 of at most n bytes, its bidi
// controls replaced: when it is longer, cut at a rune boundary and ended
// with "…". Rows get their
// client strings cut so; callers that keep less of one use it too, so
// that every cut in a row looks alike.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.ContainsFunc(s, isBidiControl) {
		// A right-to-left override in a user agent shows the rest of a
		// log line reversed in a terminal: the row keeps that it was
		// there, not what it does.
		s = strings.Map(func(r rune) rune {
			if isBidiControl(r) {
				return '\uFFFD'
			}
			return r
		}, s)
	}
	if len(s) <= n {
		return s
	}
	n -= len(cutMark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + cutMark
}

// isBidiControl reports the characters that reorder the text around
// them: the directional marks, embeddings, overrides and isolates.
func isBidiControl(r rune) bool {
	return r == '\u061c' || r == '\u200e' || r == '\u200f' || r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
}
