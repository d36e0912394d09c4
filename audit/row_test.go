package audit

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestRowJSONWireFormat(t *testing.T) {
	r := Row{
		ID:         "0193a4c8-7b1e-7cc3-9d2a-5f0e8b4c1a22",
		OccurredAt: time.Date(2026, 11, 22, 11, 0, 0, 123456789, time.FixedZone("CET", 3600)),
		Action:     "auth.login.success",
		ActorID:    "u1",
		ActorType:  ActorUser,
		SubjectID:  "u1",
		OrgID:      "acme",
		IP:         "203.0.113.7",
		UserAgent:  "Mozilla/5.0 <script>",
		RequestID:  "req-1",
		Outcome:    OutcomeSuccess,
		Metadata:   map[string]string{"method": "password"},
	}
	got, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"0193a4c8-7b1e-7cc3-9d2a-5f0e8b4c1a22","occurred_at":"2026-11-22T10:00:00.123456789Z",` +
		`"action":"auth.login.success","actor_id":"u1","actor_type":"user","subject_id":"u1","org_id":"acme",` +
		`"ip":"203.0.113.7","user_agent":"Mozilla/5.0 \u003cscript\u003e","request_id":"req-1","outcome":"success",` +
		`"metadata":{"method":"password"}}`
	if string(got) != want {
		t.Fatalf("json.Marshal(row) =\n%s\nwant\n%s", got, want)
	}
}

func TestRowJSONEmptyFieldsArePresent(t *testing.T) {
	got, err := json.Marshal(Row{ID: "x", OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"x","occurred_at":"2026-01-02T03:04:05.000000000Z","action":"","actor_id":"","actor_type":"",` +
		`"subject_id":"","org_id":"","ip":"","user_agent":"","request_id":"","outcome":"","metadata":{}}`
	if string(got) != want {
		t.Fatalf("json.Marshal(row) =\n%s\nwant\n%s", got, want)
	}
}

func TestRowJSONRoundTrip(t *testing.T) {
	in := Row{ID: uuid.NewString(), OccurredAt: t0, Action: "mfa.challenge.failure", ActorType: ActorUser,
		Metadata: map[string]string{"method": "totp", "reason": "bad \"code\""}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Row
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.OccurredAt.Equal(in.OccurredAt) || out.OccurredAt.Location() != time.UTC {
		t.Fatalf("occurred_at = %v; want %v in UTC", out.OccurredAt, in.OccurredAt)
	}
	if out.ID != in.ID || out.Action != in.Action || out.Metadata["reason"] != in.Metadata["reason"] {
		t.Fatalf("round trip = %+v; want %+v", out, in)
	}
}

func TestRowUnmarshalAcceptsAnyRFC3339(t *testing.T) {
	var r Row
	if err := json.Unmarshal([]byte(`{"occurred_at":"2026-11-22T11:00:00+01:00"}`), &r); err != nil {
		t.Fatal(err)
	}
	if got, want := r.OccurredAt.Format(TimeLayout), "2026-11-22T10:00:00.000000000Z"; got != want {
		t.Fatalf("occurred_at = %q; want %q", got, want)
	}
	if err := json.Unmarshal([]byte(`{"occurred_at":"yesterday"}`), &r); err == nil {
		t.Fatal("Unmarshal accepted occurred_at \"yesterday\"")
	}
}

func TestNormalize(t *testing.T) {
	valid := func(f func(r *Row)) Row {
		r := sampleRow("auth.login.success")
		f(&r)
		return r
	}
	longID := strings.Repeat("a", MaxIDLen+1)
	manyMeta := map[string]string{}
	for i := range MaxMetadataKeys + 1 {
		manyMeta[string(rune('a'+i%26))+strings.Repeat("x", i)] = "v"
	}
	tests := []struct {
		name    string
		row     Row
		wantErr string // "" for valid
	}{
		{"minimal", valid(func(r *Row) {}), ""},
		{"every actor type: admin", valid(func(r *Row) { r.ActorType = ActorAdmin }), ""},
		{"every actor type: system", valid(func(r *Row) { r.ActorType = ActorSystem }), ""},
		{"every actor type: billing", valid(func(r *Row) { r.ActorType = ActorBilling }), ""},
		{"billing type verbatim", valid(func(r *Row) { r.Action = "billing.subscription.updated" }), ""},
		{"admin verb", valid(func(r *Row) { r.Action = "admin.user.disable" }), ""},
		{"digits, dash and underscore", valid(func(r *Row) { r.Action = "oidc.token.reuse_detected-2" }), ""},
		{"empty outcome", valid(func(r *Row) { r.Outcome = "" }), ""},
		{"given UUIDv4 id", valid(func(r *Row) { r.ID = "6ba7b810-9dad-41d1-80b4-00c04fd430c8" }), ""},
		{"unknown actor type", valid(func(r *Row) { r.ActorType = "robot" }), "actor_type"},
		{"missing actor type", valid(func(r *Row) { r.ActorType = "" }), "actor_type"},
		{"empty action", valid(func(r *Row) { r.Action = "" }), "action"},
		{"one segment", valid(func(r *Row) { r.Action = "login" }), "two dot-separated"},
		{"upper case", valid(func(r *Row) { r.Action = "Auth.login" }), "lower-case"},
		{"empty segment", valid(func(r *Row) { r.Action = "auth..login" }), "empty segment"},
		{"trailing dot", valid(func(r *Row) { r.Action = "auth.login." }), "empty segment"},
		{"wildcard", valid(func(r *Row) { r.Action = "auth.*" }), "may only hold"},
		{"space", valid(func(r *Row) { r.Action = "auth.log in" }), "may only hold"},
		{"too long", valid(func(r *Row) { r.Action = "a." + strings.Repeat("b", MaxActionLen) }), "bytes"},
		{"bad id", valid(func(r *Row) { r.ID = "evt_123" }), "not a UUID"},
		{"nil id", valid(func(r *Row) { r.ID = uuid.Nil.String() }), "not a UUID"},
		{"actor id too long", valid(func(r *Row) { r.ActorID = longID }), "actor_id longer"},
		{"subject id with NUL", valid(func(r *Row) { r.SubjectID = "a\x00b" }), "NUL"},
		{"outcome not a word", valid(func(r *Row) { r.Outcome = "Denied!" }), "outcome"},
		{"too much metadata", valid(func(r *Row) { r.Metadata = manyMeta }), "metadata entries"},
		{"empty metadata key", valid(func(r *Row) { r.Metadata = map[string]string{"": "x"} }), "metadata key"},
		{"before 1970", valid(func(r *Row) { r.OccurredAt = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC) }), "out of range"},
		{"after 2261", valid(func(r *Row) { r.OccurredAt = time.Date(2262, 6, 1, 0, 0, 0, 0, time.UTC) }), "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.row
			_, err := r.normalize(uuid.New, t0)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("normalize = %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidRow) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("normalize = %v; want ErrInvalidRow mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestNormalizeFillsAndCanonicalises(t *testing.T) {
	fixed := uuid.MustParse("0193a4c8-7b1e-7cc3-9d2a-5f0e8b4c1a22")
	r := sampleRow("auth.logout")
	pos, err := r.normalize(func() uuid.UUID { return fixed }, t0.In(time.FixedZone("X", 7200)))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != fixed.String() || pos.ID != fixed {
		t.Fatalf("id = %q; want %q", r.ID, fixed)
	}
	if !r.OccurredAt.Equal(t0) || r.OccurredAt.Location() != time.UTC || !pos.At.Equal(t0) {
		t.Fatalf("occurred_at = %v; want %v UTC", r.OccurredAt, t0)
	}

	r = sampleRow("auth.logout")
	r.ID = "{0193A4C8-7B1E-7CC3-9D2A-5F0E8B4C1A22}"
	if _, err := r.normalize(uuid.New, t0); err != nil {
		t.Fatal(err)
	}
	if r.ID != fixed.String() {
		t.Fatalf("id = %q; want canonical %q", r.ID, fixed)
	}
}

func TestNormalizeTruncatesClientStrings(t *testing.T) {
	r := sampleRow("auth.login.failure")
	r.UserAgent = strings.Repeat("é", MaxUserAgentLen) // 2 bytes each
	r.IP = strings.Repeat("1", 100)
	r.Metadata = map[string]string{"email": strings.Repeat("x", 5000), "bad": "\xff\xfe"}
	caller := r.Metadata
	if _, err := r.normalize(uuid.New, t0); err != nil {
		t.Fatalf("normalize = %v; want client strings truncated, not rejected", err)
	}
	// Cut at a rune, and marked as cut: a reader must not take a cut list
	// (of groups, say) for the whole of it.
	if len(r.UserAgent) > MaxUserAgentLen || len(r.UserAgent) < MaxUserAgentLen-4 || !strings.HasSuffix(r.UserAgent, "é…") {
		t.Errorf("user_agent is %d bytes ending %q; want at most %d, cut at a rune and marked", len(r.UserAgent), r.UserAgent[len(r.UserAgent)-5:], MaxUserAgentLen)
	}
	if len(r.IP) != MaxIPLen || !strings.HasSuffix(r.IP, "1…") {
		t.Errorf("ip is %q (%d bytes); want %d bytes, marked as cut", r.IP, len(r.IP), MaxIPLen)
	}
	if got := r.Metadata["email"]; len(got) != MaxMetaValueLen || !strings.HasSuffix(got, "x…") {
		t.Errorf("metadata.email is %d bytes ending %q; want %d, marked as cut", len(got), got[len(got)-4:], MaxMetaValueLen)
	}
	if got := Truncate(strings.Repeat("y", MaxMetaValueLen), MaxMetaValueLen); got != strings.Repeat("y", MaxMetaValueLen) {
		t.Error("a value of exactly the bound was cut")
	}
	if got := r.Metadata["bad"]; got != "\uFFFD" {
		t.Errorf("metadata.bad = %q; want invalid UTF-8 replaced", got)
	}
	if got := Truncate("Mozilla\u202e <b>x</b>\u2066é\u200d", 64); got != "Mozilla\uFFFD <b>x</b>\uFFFDé\u200d" {
		t.Errorf("Truncate of bidi controls = %q; want them replaced, other characters kept", got)
	}
	caller["late"] = "change"
	if _, ok := r.Metadata["late"]; ok {
		t.Error("the row shares the caller's metadata map; want a private copy")
	}
}

func TestPositionOrder(t *testing.T) {
	a := Position{At: t0, ID: uuid.MustParse("00000000-0000-7000-8000-000000000001")}
	b := Position{At: t0, ID: uuid.MustParse("00000000-0000-7000-8000-000000000002")}
	c := Position{At: t0.Add(time.Nanosecond), ID: uuid.MustParse("00000000-0000-7000-8000-000000000000")}
	if !a.Less(b) || !b.Less(c) || c.Less(a) || a.Less(a) {
		t.Fatal("positions must order by time, then id bytes")
	}
}
