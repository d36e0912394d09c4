package authcore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/seal"
)

// The KeyRing tests that need real persistence (a reopened bbolt file,
// concurrent first starts) are in store/bolt_auth_test.go. Here the store
// keeps secrets in a map; any other Store method panics through the nil
// embedded interface.
type krSecretsStore struct {
	Store // nil

	mu      sync.Mutex
	secrets map[string][]byte
	puts    int
	failPut error // PutSecret fails with it when set
}

func newKRSecretsStore() *krSecretsStore { return &krSecretsStore{secrets: map[string][]byte{}} }

func (s *krSecretsStore) GetSecret(ctx context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.secrets[name]
	if !ok {
		return nil, ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (s *krSecretsStore) PutSecret(ctx context.Context, name string, value []byte, ifAbsent bool) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failPut != nil {
		return nil, s.failPut
	}
	s.puts++
	if old, ok := s.secrets[name]; ok && ifAbsent {
		return bytes.Clone(old), nil
	}
	s.secrets[name] = bytes.Clone(value)
	return bytes.Clone(value), nil
}

// PutSecretIn stores in the "transaction" of the map store itself.
func (s *krSecretsStore) PutSecretIn(name string, value []byte) func(tx any) error {
	return func(tx any) error {
		if tx != any(s) {
			return fmt.Errorf("PutSecretIn given %T, not the store", tx)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.puts++
		s.secrets[name] = bytes.Clone(value)
		return nil
	}
}

var krStart = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func krBox(t *testing.T) *seal.Box {
	t.Helper()
	box, err := seal.New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return box
}

func newKR(t *testing.T, clk clock.Clock, st Store, cfg KeyRingConfig) *KeyRing {
	t.Helper()
	kr, err := LoadKeyRing(context.Background(), clk, st, krBox(t), cfg)
	if err != nil {
		t.Fatalf("LoadKeyRing(%+v): %v", cfg, err)
	}
	return kr
}

// krPrincipal is a signed-in principal as the Service would cache it.
// krSignAndRotate signs an assertion for iss with the active key, then
// rotates: it returns the assertion, the retired key's id and the new
// one's.
func krSignAndRotate(t *testing.T, kr *KeyRing, iss string, now time.Time) (last, retired, active string) {
	t.Helper()
	retired = kr.ActiveKeyID()
	last, err := kr.Assertion(krPrincipal(t, nil), iss, iss, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Rotate(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	return last, retired, kr.ActiveKeyID()
}

func krPrincipal(t *testing.T, groups []string) *Principal {
	t.Helper()
	_, id := NewToken()
	u := &User{
		ID: "0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d", Email: "alice@example.com", EmailVerified: true,
		Name: "Alice Smith", Groups: groups, UpdatedAt: krStart,
	}
	s := &Session{
		ID: id, UserID: u.ID, CreatedAt: krStart, LastSeen: krStart, ExpiresAt: krStart.Add(12 * time.Hour),
		AuthTime: krStart.Add(-time.Minute), AMR: []string{AMRPassword, AMROTP, AMRMFA}, MFAAt: krStart,
	}
	return newPrincipal(s, u, krStart)
}

// krJWKS parses the published key set.
func krJWKS(t *testing.T, kr *KeyRing) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(kr.JWKS(), &set); err != nil {
		t.Fatalf("JWKS %s does not parse: %v", kr.JWKS(), err)
	}
	return set
}

func krKIDs(set jose.JSONWebKeySet) []string {
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

// krVerify checks token the way an upstream application would: with
// go-jose, only the JWKS document, and standard claim validation.
func krVerify(t *testing.T, kr *KeyRing, token, iss, aud string, at time.Time) (jwt.Claims, map[string]any) {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		t.Fatalf("ParseSigned(%q): %v", token, err)
	}
	if len(tok.Headers) != 1 {
		t.Fatalf("%d signature headers; want 1", len(tok.Headers))
	}
	set := krJWKS(t, kr)
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q matches %d keys in the JWKS %s; want 1", tok.Headers[0].KeyID, len(keys), kr.JWKS())
	}
	var std jwt.Claims
	var all map[string]any
	if err := tok.Claims(keys[0], &std, &all); err != nil {
		t.Fatalf("verifying with the JWKS key: %v", err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: iss, AnyAudience: jwt.Audience{aud}, Time: at}, 0); err != nil {
		t.Errorf("claim validation at %v: %v", at, err)
	}
	return std, all
}

func krHeader(t *testing.T, token string) map[string]any {
	t.Helper()
	seg, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("header of %q: %v", token, err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestLoadKeyRingFirstStart(t *testing.T) {
	st := newKRSecretsStore()
	box := krBox(t)
	kr, err := LoadKeyRing(context.Background(), clock.NewFake(krStart), st, box, KeyRingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if kr.TTL() != 5*time.Minute {
		t.Errorf("TTL() = %v; want the default 5m", kr.TTL())
	}
	set := krJWKS(t, kr)
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys; want 1", len(set.Keys))
	}
	k := set.Keys[0]
	if k.KeyID != kr.ActiveKeyID() || k.Algorithm != "EdDSA" || k.Use != "sig" || !k.IsPublic() {
		t.Errorf("JWKS key = kid %q alg %q use %q public %t; want kid %q, EdDSA, sig, public", k.KeyID, k.Algorithm, k.Use, k.IsPublic(), kr.ActiveKeyID())
	}
	if _, ok := k.Key.(ed25519.PublicKey); !ok {
		t.Errorf("JWKS key is %T; want ed25519.PublicKey", k.Key)
	}
	if bytes.Contains(kr.JWKS(), []byte(`"d"`)) {
		t.Errorf("JWKS %s contains private key material", kr.JWKS())
	}

	sealed, ok := st.secrets["assertion_keys"]
	if !ok {
		t.Fatalf("no %q secret stored", "assertion_keys")
	}
	if bytes.Contains(sealed, []byte("pkcs8")) || bytes.Contains(sealed, []byte(kr.ActiveKeyID())) {
		t.Errorf("stored key set is not sealed: %q", sealed)
	}
	plain, err := box.Open(sealed, []byte("sigra:assertion_keys"))
	if err != nil {
		t.Fatalf("stored key set does not open with the box and its aad: %v", err)
	}
	if !bytes.Contains(plain, []byte(kr.ActiveKeyID())) {
		t.Errorf("unsealed key set %s does not hold the active kid %q", plain, kr.ActiveKeyID())
	}
}

func TestLoadKeyRingAdoptsStoredKey(t *testing.T) {
	st := newKRSecretsStore()
	clk := clock.NewFake(krStart)
	first := newKR(t, clk, st, KeyRingConfig{})
	clk.Advance(time.Hour)
	second := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA})
	if second.ActiveKeyID() != first.ActiveKeyID() {
		t.Errorf("second start kid = %q; want the stored %q", second.ActiveKeyID(), first.ActiveKeyID())
	}
	if !bytes.Equal(second.JWKS(), first.JWKS()) {
		t.Errorf("second start JWKS = %s; want %s", second.JWKS(), first.JWKS())
	}
	// A token from one instance verifies against the other's JWKS.
	p := krPrincipal(t, nil)
	tok, err := first.Assertion(p, "https://app.example.com", "https://app.example.com", clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	krVerify(t, second, tok, "https://app.example.com", "https://app.example.com", clk.Now())
}

func TestLoadKeyRingWrongEncryptionKey(t *testing.T) {
	st := newKRSecretsStore()
	newKR(t, clock.NewFake(krStart), st, KeyRingConfig{})
	k := make([]byte, 32)
	k[0] = 1
	other, err := seal.New(k)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LoadKeyRing(context.Background(), clock.NewFake(krStart), st, other, KeyRingConfig{})
	if err == nil {
		t.Fatal("LoadKeyRing with another encryption key = nil error; want a refusal")
	}
	if !errors.Is(err, seal.ErrOpen) {
		t.Errorf("error %q does not wrap seal.ErrOpen", err)
	}
	if !strings.Contains(err.Error(), other.ID()) {
		t.Errorf("error %q does not name the key id %q", err, other.ID())
	}
}

func TestLoadKeyRingMalformedStoredKeys(t *testing.T) {
	box := krBox(t)
	for name, plain := range map[string]string{
		"not json":     "nonsense",
		"empty list":   "[]",
		"bad pkcs8":    `[{"kid":"k1","alg":"EdDSA","pkcs8":"AAAA"}]`,
		"null payload": "null",
	} {
		t.Run(name, func(t *testing.T) {
			st := newKRSecretsStore()
			st.secrets["assertion_keys"] = box.Seal([]byte(plain), []byte("sigra:assertion_keys"))
			if kr, err := LoadKeyRing(context.Background(), clock.NewFake(krStart), st, box, KeyRingConfig{}); err == nil {
				t.Errorf("LoadKeyRing over %q = kid %q, nil; want an error", plain, kr.ActiveKeyID())
			}
		})
	}
}

func TestLoadKeyRingRejectsAlgorithm(t *testing.T) {
	for _, alg := range []string{"RS256", "HS256", "none", "eddsa"} {
		_, err := LoadKeyRing(context.Background(), clock.NewFake(krStart), newKRSecretsStore(), krBox(t), KeyRingConfig{Algorithm: alg})
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("LoadKeyRing(algorithm %q) = %v; want ErrInvalidInput", alg, err)
		}
	}
}

// With DeferSave, a change of algorithm waits for Save: until then the
// stored key signs and the store is as it was, so a config Caddy then
// refuses has neither rotated the stored keys nor signed with a key that
// nobody publishes. Save stores the change and makes it the key that
// signs. Nothing is saved when nothing changed.
func TestKeyRingDeferSave(t *testing.T) {
	st := newKRSecretsStore()
	clk := clock.NewFake(krStart)
	ed := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA})
	stored := krStoredPlain(t, st)

	same := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA, DeferSave: true})
	if err := same.Save(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(krStoredPlain(t, st), stored) {
		t.Error("Save with no change rewrote the stored keys")
	}

	clk.Advance(time.Minute)
	es := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, DeferSave: true})
	if es.ActiveKeyID() != ed.ActiveKeyID() || !bytes.Equal(es.JWKS(), ed.JWKS()) {
		t.Fatalf("before Save: kid %q, JWKS %s; want the stored key and set, kid %q", es.ActiveKeyID(), es.JWKS(), ed.ActiveKeyID())
	}
	const iss = "https://app.example.com"
	before, err := es.Assertion(krPrincipal(t, nil), iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	krVerify(t, ed, before, iss, iss, clk.Now()) // published by the ring still in force
	if !bytes.Equal(krStoredPlain(t, st), stored) {
		t.Fatal("a deferred change was stored before Save")
	}
	if err := es.Save(context.Background()); err != nil {
		t.Fatal(err)
	}
	if es.ActiveKeyID() == ed.ActiveKeyID() {
		t.Fatal("after Save the ES256 ring still signs with the EdDSA key")
	}
	keys := krStored(t, st)
	if len(keys) != 2 || keys[0].KID != es.ActiveKeyID() || keys[1].KID != ed.ActiveKeyID() {
		t.Errorf("stored after Save: %d keys; want the ES256 key then the retired EdDSA one", len(keys))
	}
	after, err := es.Assertion(krPrincipal(t, nil), iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if h := krHeader(t, after); h["alg"] != "ES256" {
		t.Errorf("after Save: alg %v; want ES256", h["alg"])
	}
	krVerify(t, es, before, iss, iss, clk.Now()) // the old key stays published
	krVerify(t, es, after, iss, iss, clk.Now())
}

// A deferred change and a rotation (the admin API's) before Save: the
// rotation makes a key of the configured algorithm, not of the stored
// key's, and is saved; Save leaves it be.
func TestKeyRingRotateBeforeDeferredSave(t *testing.T) {
	st := newKRSecretsStore()
	clk := clock.NewFake(krStart)
	newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA})
	es := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, DeferSave: true})
	if err := es.Rotate(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if keys := krStored(t, st); keys[0].Alg != AlgES256 || keys[0].KID != es.ActiveKeyID() {
		t.Errorf("after Rotate: stored active %s %q, signing %q; want a new ES256 key", keys[0].Alg, keys[0].KID, es.ActiveKeyID())
	}
	rotated := krStoredPlain(t, st)
	if err := es.Save(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(krStoredPlain(t, st), rotated) {
		t.Error("Save after a Rotate stored the deferred change over the rotation")
	}
}

// Two configs loaded back to back with a change of algorithm (a reload,
// then another before the first's Save): the second's Save works on the
// set stored then, so the key the first made and signed with stays
// published, and as it is of the configured algorithm it goes on
// signing: no second rotation.
func TestKeyRingDeferredSavesBackToBack(t *testing.T) {
	st := newKRSecretsStore()
	clk := clock.NewFake(krStart)
	ed := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA})
	b := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, DeferSave: true})
	c := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, DeferSave: true})
	if err := b.Save(context.Background()); err != nil {
		t.Fatal(err)
	}
	const iss = "https://app.example.com"
	tok, err := b.Assertion(krPrincipal(t, nil), iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if err := c.Save(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.ActiveKeyID() != b.ActiveKeyID() {
		t.Errorf("the second Save made another key %q; want the first's %q, already of the configured algorithm", c.ActiveKeyID(), b.ActiveKeyID())
	}
	krVerify(t, c, tok, iss, iss, clk.Now())
	if got := krKIDs(krJWKS(t, c)); !slices.Contains(got, ed.ActiveKeyID()) {
		t.Errorf("JWKS %q lost the EdDSA key that signed before", got)
	}
}

// A Save long after the load (it waited for the config to be in force,
// or failed and was tried again): the old key signed until then, so it
// is retired then, and stays published for the lifetime of what it
// signed last. Until a Save succeeds, the old key goes on signing.
func TestKeyRingLateDeferredSave(t *testing.T) {
	st := newKRSecretsStore()
	clk := clock.NewFake(krStart)
	ed := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA, TTL: 5 * time.Minute})
	es := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, TTL: 5 * time.Minute, DeferSave: true})
	st.mu.Lock()
	st.failPut = errors.New("disk full")
	st.mu.Unlock()
	if err := es.Save(context.Background()); err == nil {
		t.Fatal("Save with a failing store: want an error")
	}
	if es.ActiveKeyID() != ed.ActiveKeyID() {
		t.Fatal("after a failed Save the new key signs, unpublished by the store")
	}
	clk.Advance(5 * time.Minute)
	const iss = "https://app.example.com"
	late, err := es.Assertion(krPrincipal(t, nil), iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.failPut = nil
	st.mu.Unlock()
	if err := es.Prune(context.Background()); err != nil { // upkeep tries again
		t.Fatal(err)
	}
	if es.ActiveKeyID() == ed.ActiveKeyID() {
		t.Fatal("after the Save that worked, the old key still signs")
	}
	clk.Advance(4 * time.Minute) // the late assertion is still valid
	krVerify(t, es, late, iss, iss, clk.Now())
	again := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, TTL: 5 * time.Minute})
	krVerify(t, again, late, iss, iss, clk.Now()) // and the store publishes it
}

// A signing_key file on a store with no keys yet: the file's key signs
// at once (there is no stored key to go on), and Save stores it.
func TestKeyRingDeferSaveFromFileOnNewStore(t *testing.T) {
	st := newKRSecretsStore()
	clk := clock.NewFake(krStart)
	kr := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA, PEMFile: krEdPEMFile(t), DeferSave: true})
	if kr.ActiveKeyID() == "" {
		t.Fatal("no active key")
	}
	if err := kr.Save(context.Background()); err != nil {
		t.Fatal(err)
	}
	if keys := krStored(t, st); len(keys) != 1 || keys[0].KID != kr.ActiveKeyID() {
		t.Errorf("stored after Save: %d keys; want the file's", len(keys))
	}
}

func TestKeyRingAlgorithmChangeRotates(t *testing.T) {
	st := newKRSecretsStore()
	clk := clock.NewFake(krStart)
	ed := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA})
	p := krPrincipal(t, nil)
	const iss = "https://app.example.com"
	oldTok, err := ed.Assertion(p, iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}

	clk.Advance(time.Minute)
	es := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256})
	if es.ActiveKeyID() == ed.ActiveKeyID() {
		t.Fatalf("active kid unchanged (%q) after switching to ES256", es.ActiveKeyID())
	}
	set := krJWKS(t, es)
	if got, want := krKIDs(set), []string{es.ActiveKeyID(), ed.ActiveKeyID()}; !slices.Equal(got, want) {
		t.Fatalf("JWKS kids = %q; want the new key then the retired one %q", got, want)
	}
	if set.Keys[0].Algorithm != "ES256" || set.Keys[1].Algorithm != "EdDSA" {
		t.Errorf("JWKS algorithms = %q, %q; want ES256, EdDSA", set.Keys[0].Algorithm, set.Keys[1].Algorithm)
	}
	if _, ok := set.Keys[0].Key.(*ecdsa.PublicKey); !ok {
		t.Errorf("new JWKS key is %T; want *ecdsa.PublicKey", set.Keys[0].Key)
	}
	// An assertion signed before the switch still verifies.
	krVerify(t, es, oldTok, iss, iss, clk.Now())

	newTok, err := es.Assertion(krPrincipal(t, nil), iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if h := krHeader(t, newTok); h["alg"] != "ES256" || h["kid"] != es.ActiveKeyID() {
		t.Errorf("new assertion header = %v; want alg ES256, kid %q", h, es.ActiveKeyID())
	}
	krVerify(t, es, newTok, iss, iss, clk.Now())

	// Starting again with ES256 adopts the rotated set: no second rotation.
	again := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256})
	if again.ActiveKeyID() != es.ActiveKeyID() || !bytes.Equal(again.JWKS(), es.JWKS()) {
		t.Errorf("restart after rotation: kid %q, JWKS %s; want kid %q, JWKS %s", again.ActiveKeyID(), again.JWKS(), es.ActiveKeyID(), es.JWKS())
	}
}

// TestKeyRingRotateRetiresOldKeys: a retired key stays published for the
// assertion TTL (plus a minute), and is dropped at the next rotation after
// that.
func TestKeyRingRotateRetiresOldKeys(t *testing.T) {
	clk := clock.NewFake(krStart)
	st := newKRSecretsStore()
	kr := newKR(t, clk, st, KeyRingConfig{TTL: 5 * time.Minute})
	k1 := kr.ActiveKeyID()
	ctx := context.Background()

	if err := kr.Rotate(ctx, ""); err != nil {
		t.Fatal(err)
	}
	k2 := kr.ActiveKeyID()
	if h := krJWKS(t, kr); h.Keys[0].Algorithm != "EdDSA" {
		t.Errorf("Rotate(\"\") made a %s key; want the current algorithm EdDSA", h.Keys[0].Algorithm)
	}
	if got := krKIDs(krJWKS(t, kr)); !slices.Equal(got, []string{k2, k1}) {
		t.Fatalf("after first rotation JWKS kids = %q; want %q", got, []string{k2, k1})
	}

	clk.Advance(5*time.Minute + time.Minute - time.Second)
	if err := kr.Rotate(ctx, ""); err != nil {
		t.Fatal(err)
	}
	k3 := kr.ActiveKeyID()
	if got := krKIDs(krJWKS(t, kr)); !slices.Equal(got, []string{k3, k2, k1}) {
		t.Fatalf("rotation within TTL+1m: JWKS kids = %q; want %q", got, []string{k3, k2, k1})
	}

	clk.Advance(time.Second)
	if err := kr.Rotate(ctx, ""); err != nil {
		t.Fatal(err)
	}
	k4 := kr.ActiveKeyID()
	if got := krKIDs(krJWKS(t, kr)); !slices.Equal(got, []string{k4, k3, k2}) {
		t.Errorf("rotation TTL+1m after the first: JWKS kids = %q; want %q (k1 dropped)", got, []string{k4, k3, k2})
	}

	// The stored set is the rotated one.
	again := newKR(t, clk, st, KeyRingConfig{TTL: 5 * time.Minute})
	if !bytes.Equal(again.JWKS(), kr.JWKS()) {
		t.Errorf("reloaded JWKS = %s; want %s", again.JWKS(), kr.JWKS())
	}
}

func TestAssertionClaims(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			clk := clock.NewFake(krStart)
			kr := newKR(t, clk, newKRSecretsStore(), KeyRingConfig{Algorithm: alg, TTL: 5 * time.Minute})
			p := krPrincipal(t, []string{"dev", "admins"})
			const iss, aud = "https://app.example.com", "https://api.example.com"
			now := clk.Now()
			tok, err := kr.Assertion(p, iss, aud, now)
			if err != nil {
				t.Fatal(err)
			}

			h := krHeader(t, tok)
			if h["alg"] != alg || h["kid"] != kr.ActiveKeyID() || h["typ"] != "JWT" {
				t.Errorf("header = %v; want alg %q, kid %q, typ JWT", h, alg, kr.ActiveKeyID())
			}

			std, all := krVerify(t, kr, tok, iss, aud, now)
			if std.Subject != p.User.ID {
				t.Errorf("sub = %q; want %q", std.Subject, p.User.ID)
			}
			if got, want := std.Expiry.Time().Sub(std.IssuedAt.Time()), 5*time.Minute; got != want {
				t.Errorf("exp - iat = %v; want the TTL %v", got, want)
			}

			want := map[string]any{
				"iss": iss, "aud": aud, "sub": p.User.ID, "email": "alice@example.com", "email_verified": true,
				"name": "Alice Smith", "groups": []any{"dev", "admins"}, "amr": []any{"pwd", "otp", "mfa"},
				"sid": p.Session.ID.String(), "auth_time": float64(krStart.Add(-time.Minute).Unix()),
				"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Add(5 * time.Minute).Unix()),
			}
			for k, w := range want {
				got, ok := all[k]
				if !ok {
					t.Errorf("claim %q missing", k)
					continue
				}
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(w)
				if !bytes.Equal(gj, wj) {
					t.Errorf("claim %q = %s; want %s", k, gj, wj)
				}
			}
			for k := range all {
				if _, ok := want[k]; !ok {
					t.Errorf("unexpected claim %q = %v", k, all[k])
				}
			}

			// The signature covers the payload: a changed claim fails.
			parts := strings.Split(tok, ".")
			forged := strings.Replace(string(must64(t, parts[1])), `"dev","admins"`, `"dev","root"`, 1)
			bad := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]
			if parsed, err := jwt.ParseSigned(bad, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256}); err == nil {
				var c map[string]any
				if err := parsed.Claims(krJWKS(t, kr).Keys[0], &c); err == nil {
					t.Errorf("a forged payload verified: %v", c)
				}
			}
		})
	}
}

func must64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An assertion never outlives its session: near the session's end, exp
// is the session's expiry, not now + TTL.
func TestAssertionExpiryCappedBySession(t *testing.T) {
	p := krPrincipal(t, nil)
	clk := clock.NewFake(p.Session.ExpiresAt.Add(-2 * time.Minute))
	kr := newKR(t, clk, newKRSecretsStore(), KeyRingConfig{TTL: 5 * time.Minute})
	const iss = "https://app.example.com"
	tok, err := kr.Assertion(p, iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	std, _ := krVerify(t, kr, tok, iss, iss, clk.Now())
	if got, want := std.Expiry.Time(), p.Session.ExpiresAt; !got.Equal(want) {
		t.Errorf("exp = %v; want the session's expiry %v", got, want)
	}
}

func TestAssertionEmptyGroupsIsAList(t *testing.T) {
	kr := newKR(t, clock.NewFake(krStart), newKRSecretsStore(), KeyRingConfig{})
	for name, groups := range map[string][]string{"nil": nil, "empty": {}} {
		t.Run(name, func(t *testing.T) {
			tok, err := kr.Assertion(krPrincipal(t, groups), "https://a.example", "https://a.example", krStart)
			if err != nil {
				t.Fatal(err)
			}
			payload := must64(t, strings.Split(tok, ".")[1])
			if !bytes.Contains(payload, []byte(`"groups":[]`)) {
				t.Errorf("payload %s; want \"groups\":[] (an empty list, not null or absent)", payload)
			}
		})
	}
}

func TestAssertionOmitsEmptyName(t *testing.T) {
	kr := newKR(t, clock.NewFake(krStart), newKRSecretsStore(), KeyRingConfig{})
	p := krPrincipal(t, nil)
	p.User.Name = ""
	tok, err := kr.Assertion(p, "https://a.example", "https://a.example", krStart)
	if err != nil {
		t.Fatal(err)
	}
	if payload := must64(t, strings.Split(tok, ".")[1]); bytes.Contains(payload, []byte(`"name"`)) {
		t.Errorf("payload %s has a name claim for a user without a name", payload)
	}
}

func TestAssertionCaching(t *testing.T) {
	clk := clock.NewFake(krStart)
	kr := newKR(t, clk, newKRSecretsStore(), KeyRingConfig{TTL: 5 * time.Minute})
	p := krPrincipal(t, []string{"dev"})
	const iss, aud = "https://app.example.com", "https://app.example.com"
	sign := func(iss, aud string) string {
		t.Helper()
		tok, err := kr.Assertion(p, iss, aud, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	first := sign(iss, aud)
	clk.Advance(2*time.Minute + 29*time.Second) // just under TTL/2
	if got := sign(iss, aud); got != first {
		t.Errorf("assertion re-signed %v after issue; want the cached one until TTL/2", clk.Now().Sub(krStart))
	}

	clk.Advance(time.Second) // exactly TTL/2
	second := sign(iss, aud)
	if second == first {
		t.Fatalf("assertion not re-signed at TTL/2")
	}
	_, claims := krVerify(t, kr, second, iss, aud, clk.Now())
	if got := int64(claims["iat"].(float64)); got != clk.Now().Unix() {
		t.Errorf("re-signed iat = %d; want %d", got, clk.Now().Unix())
	}

	if got := sign(iss, aud); got != second {
		t.Errorf("assertion re-signed right after re-signing")
	}
	if err := kr.Rotate(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	third := sign(iss, aud)
	if third == second {
		t.Fatalf("assertion not re-signed after Rotate")
	}
	if h := krHeader(t, third); h["kid"] != kr.ActiveKeyID() {
		t.Errorf("kid after rotation = %v; want %q", h["kid"], kr.ActiveKeyID())
	}

	otherIss := sign("https://other.example.com", aud)
	if otherIss == third {
		t.Errorf("same token for another issuer")
	}
	krVerify(t, kr, otherIss, "https://other.example.com", aud, clk.Now())
	otherAud := sign("https://other.example.com", "https://api.example.com")
	if otherAud == otherIss {
		t.Errorf("same token for another audience")
	}
	krVerify(t, kr, otherAud, "https://other.example.com", "https://api.example.com", clk.Now())
	if back := sign(iss, aud); back == otherAud {
		t.Errorf("token for the first issuer and audience equals the last one")
	} else {
		krVerify(t, kr, back, iss, aud, clk.Now())
	}

	// A session used on several origins keeps one assertion for each:
	// switching between them signs nothing new.
	for range 3 {
		clk.Advance(time.Second) // a re-signed token would differ in iat
		if got := sign(iss, aud); got != third {
			t.Fatal("switching back to the first issuer re-signed its assertion")
		}
		if got := sign("https://other.example.com", aud); got != otherIss {
			t.Fatal("switching back to the second issuer re-signed its assertion")
		}
		if got := sign("https://other.example.com", "https://api.example.com"); got != otherAud {
			t.Fatal("switching back to the second audience re-signed its assertion")
		}
	}
	// At most maxCachedAssertions are kept: the least recently signed goes.
	for i := range maxCachedAssertions {
		sign(fmt.Sprintf("https://o%d.example.com", i), aud)
	}
	cached := *p.assertion.Load()
	if len(cached) != maxCachedAssertions {
		t.Errorf("%d assertions cached; want at most %d", len(cached), maxCachedAssertions)
	}
	for _, c := range cached {
		if c.iss == iss {
			t.Error("the least recently signed assertion was kept past the bound")
		}
	}
	// A rotation re-signs every one of them.
	if err := kr.Rotate(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if got := sign("https://o3.example.com", aud); krHeader(t, got)["kid"] != kr.ActiveKeyID() {
		t.Error("a cached assertion of the old key was served after the rotation")
	}
}

// --- PEM signing keys -------------------------------------------------

func krWritePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "assertion.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// krEdPEMFile writes a new Ed25519 key as a signing_key file and
// returns its path.
func krEdPEMFile(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return krWritePEM(t, "PRIVATE KEY", krPKCS8(t, priv))
}

func krPKCS8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestKeyRingPEMFile(t *testing.T) {
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecSEC1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		alg     string
		typ     string
		der     []byte
		wantPub any
	}{
		{"Ed25519 PKCS#8", AlgEdDSA, "PRIVATE KEY", krPKCS8(t, edPriv), edPub},
		{"Ed25519 PKCS#8, default algorithm", "", "PRIVATE KEY", krPKCS8(t, edPriv), edPub},
		{"P-256 SEC 1", AlgES256, "EC PRIVATE KEY", ecSEC1, &ec.PublicKey},
		{"P-256 PKCS#8", AlgES256, "PRIVATE KEY", krPKCS8(t, ec), &ec.PublicKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newKRSecretsStore()
			clk := clock.NewFake(krStart)
			kr := newKR(t, clk, st, KeyRingConfig{Algorithm: tt.alg, PEMFile: krWritePEM(t, tt.typ, tt.der)})
			set := krJWKS(t, kr)
			if len(set.Keys) != 1 {
				t.Fatalf("JWKS has %d keys; want only the file's", len(set.Keys))
			}
			type equaler interface{ Equal(crypto.PublicKey) bool }
			if pub, ok := set.Keys[0].Key.(equaler); !ok || !pub.Equal(tt.wantPub) {
				t.Errorf("JWKS key %T is not the file's public key", set.Keys[0].Key)
			}
			// The store learns the public half only, for the next file.
			if stored := krStored(t, st); len(stored) != 1 || stored[0].KID != set.Keys[0].KeyID || stored[0].PKCS8 != nil {
				t.Errorf("store holds %+v; want the file key's public half alone", stored)
			}
			if bytes.Contains(krStoredPlain(t, st), []byte(base64.StdEncoding.EncodeToString(tt.der))) {
				t.Errorf("the file's private key was written to the store")
			}
			puts := st.puts
			newKR(t, clk, st, KeyRingConfig{Algorithm: tt.alg, PEMFile: krWritePEM(t, tt.typ, tt.der)})
			if st.puts != puts {
				t.Errorf("loading the same file again wrote to the store")
			}
			const iss = "https://app.example.com"
			tok, err := kr.Assertion(krPrincipal(t, nil), iss, iss, clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			krVerify(t, kr, tok, iss, iss, clk.Now())
			if err := kr.Rotate(context.Background(), ""); err == nil {
				t.Errorf("Rotate with a PEM file = nil; want an error")
			}
			if kid := kr.ActiveKeyID(); kid != set.Keys[0].KeyID {
				t.Errorf("active kid changed to %q by a refused rotation", kid)
			}
		})
	}
}

// krStoredPlain is the key set as stored, unsealed.
func krStoredPlain(t *testing.T, st *krSecretsStore) []byte {
	t.Helper()
	raw, err := st.GetSecret(context.Background(), secretAssertionKeys)
	if err != nil {
		t.Fatalf("stored key set: %v", err)
	}
	plain, err := krBox(t).Open(raw, keysAAD)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// krStored is the key set as stored, decoded.
func krStored(t *testing.T, st *krSecretsStore) []*signingKey {
	t.Helper()
	var keys []*signingKey
	if err := json.Unmarshal(krStoredPlain(t, st), &keys); err != nil {
		t.Fatal(err)
	}
	return keys
}

func krStoredKIDs(t *testing.T, st *krSecretsStore) []string {
	t.Helper()
	var kids []string
	for _, k := range krStored(t, st) {
		kids = append(kids, k.KID)
	}
	return kids
}

// TestKeyRingRetiredKeyLeavesOnTime: a retired key is published until its
// last assertion has expired (TTL plus a minute of clock skew after it
// stopped signing) and not after, without waiting for another rotation:
// an operator who rotates away from a leaked key gets it untrusted within
// minutes. Its private half is gone from the store at once.
func TestKeyRingRetiredKeyLeavesOnTime(t *testing.T) {
	clk := clock.NewFake(krStart)
	st := newKRSecretsStore()
	ctx := context.Background()
	cfg := KeyRingConfig{TTL: 5 * time.Minute}
	kr := newKR(t, clk, st, cfg)
	const iss = "https://app.example.com"
	clk.Advance(2 * time.Minute)
	// The last assertion k1 signs: valid until rotation + TTL.
	last, k1, k2 := krSignAndRotate(t, kr, iss, clk.Now())
	for _, k := range krStored(t, st) {
		if (k.KID == k1) != (k.PKCS8 == nil) {
			t.Errorf("stored key %s: private half kept = %t; want only the active key's", k.KID, k.PKCS8 != nil)
		}
	}
	gen2 := kr.state.Load().gen

	clk.Advance(5*time.Minute + time.Minute - time.Second)
	krVerify(t, kr, last, iss, iss, clk.Now().Add(-2*time.Minute)) // a verifier whose clock is behind
	restarted := newKR(t, clk, st, cfg)
	for name, r := range map[string]*KeyRing{"running": kr, "restarted": restarted} {
		if got := krKIDs(krJWKS(t, r)); !slices.Equal(got, []string{k2, k1}) {
			t.Errorf("%s, TTL+1m−1s after rotation: JWKS kids %q; want %q", name, got, []string{k2, k1})
		}
	}

	clk.Advance(time.Second)
	for name, r := range map[string]*KeyRing{"running": kr, "restarted": restarted, "started now": newKR(t, clk, st, cfg)} {
		if got := krKIDs(krJWKS(t, r)); !slices.Equal(got, []string{k2}) {
			t.Errorf("%s, TTL+1m after rotation: JWKS kids %q; want %q", name, got, []string{k2})
		}
		if keys := r.Keys(); len(keys) != 1 || keys[0].KID != k2 {
			t.Errorf("%s: Keys() = %+v; want only %s", name, keys, k2)
		}
	}
	if err := kr.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if got := krStoredKIDs(t, st); !slices.Equal(got, []string{k2}) {
		t.Errorf("after Prune the store holds %q; want %q", got, []string{k2})
	}
	puts := st.puts
	if err := kr.Prune(ctx); err != nil || st.puts != puts {
		t.Errorf("Prune with nothing to drop: err %v, %d writes; want nil, none", err, st.puts-puts)
	}
	// Dropping a retired key keeps the generation: cached assertions of
	// the active key stay good.
	if gen := kr.state.Load().gen; gen != gen2 {
		t.Errorf("generation %d after dropping a retired key; want %d as before", gen, gen2)
	}
}

// A retired key stays published for the assertion lifetime it was
// retired under: lowering assertion_ttl afterwards must not unpublish it
// while assertions it signed are still valid. Raising it keeps it
// longer.
func TestKeyRingRetiredKeyKeepsItsTTL(t *testing.T) {
	clk := clock.NewFake(krStart)
	st := newKRSecretsStore()
	ctx := context.Background()
	kr := newKR(t, clk, st, KeyRingConfig{TTL: time.Hour})
	const iss = "https://app.example.com"
	last, k1, k2 := krSignAndRotate(t, kr, iss, clk.Now())
	clk.Advance(7 * time.Minute)
	shorter := newKR(t, clk, st, KeyRingConfig{TTL: 5 * time.Minute})
	if got := krKIDs(krJWKS(t, shorter)); !slices.Equal(got, []string{k2, k1}) {
		t.Fatalf("TTL lowered to 5m 7m after a rotation under 1h: JWKS kids %q; want %q", got, []string{k2, k1})
	}
	krVerify(t, shorter, last, iss, iss, clk.Now())
	clk.Advance(time.Hour - 7*time.Minute + time.Minute)
	if got := krKIDs(krJWKS(t, shorter)); !slices.Equal(got, []string{k2}) {
		t.Errorf("1h+1m after the rotation: JWKS kids %q; want %q", got, []string{k2})
	}
	// Raised after a rotation under 5m: the longer TTL holds.
	kr2 := newKR(t, clk, st, KeyRingConfig{TTL: 5 * time.Minute})
	if err := kr2.Rotate(ctx, ""); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Minute)
	if got := krKIDs(krJWKS(t, newKR(t, clk, st, KeyRingConfig{TTL: time.Hour}))); len(got) != 2 {
		t.Errorf("TTL raised to 1h 10m after a rotation under 5m: JWKS kids %q; want the retired key kept", got)
	}
}

// TestKeyRingOldStoredFormat: a key set stored before retired keys lost
// their private halves is rewritten without them on load.
func TestKeyRingOldStoredFormat(t *testing.T) {
	clk := clock.NewFake(krStart)
	st := newKRSecretsStore()
	a, err := newSigningKey(AlgEdDSA, krStart)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newSigningKey(AlgEdDSA, krStart)
	if err != nil {
		t.Fatal(err)
	}
	b.RetiredAt = krStart
	type oldKey struct {
		KID       string    `json:"kid"`
		Alg       string    `json:"alg"`
		PKCS8     []byte    `json:"pkcs8"`
		CreatedAt time.Time `json:"created_at"`
		RetiredAt time.Time `json:"retired_at,omitzero"`
	}
	plain, err := json.Marshal([]oldKey{{a.KID, a.Alg, a.PKCS8, a.CreatedAt, time.Time{}}, {b.KID, b.Alg, b.PKCS8, b.CreatedAt, b.RetiredAt}})
	if err != nil {
		t.Fatal(err)
	}
	st.secrets[secretAssertionKeys] = krBox(t).Seal(plain, keysAAD)

	kr := newKR(t, clk, st, KeyRingConfig{})
	if got := krKIDs(krJWKS(t, kr)); !slices.Equal(got, []string{a.KID, b.KID}) {
		t.Errorf("JWKS kids %q; want %q", got, []string{a.KID, b.KID})
	}
	stored := krStored(t, st)
	if len(stored) != 2 || stored[0].PKCS8 == nil || stored[1].PKCS8 != nil || stored[1].PKIX == nil {
		t.Errorf("rewritten set %+v; want the active key whole and the retired one public only", stored)
	}
}

// TestKeyRingPEMFileReplaced: replacing the signing_key file (the way to
// rotate it) keeps the previous key published until its assertions have
// expired, and so do switches between a file and generated keys.
func TestKeyRingPEMFileReplaced(t *testing.T) {
	clk := clock.NewFake(krStart)
	st := newKRSecretsStore()
	fileA, fileB := KeyRingConfig{PEMFile: krEdPEMFile(t)}, KeyRingConfig{PEMFile: krEdPEMFile(t)}
	const iss = "https://app.example.com"

	gen := newKR(t, clk, st, KeyRingConfig{})
	kGen := gen.ActiveKeyID()
	tokGen, err := gen.Assertion(krPrincipal(t, nil), iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}

	clk.Advance(time.Second)
	ra := newKR(t, clk, st, fileA)
	kA := ra.ActiveKeyID()
	if got := krKIDs(krJWKS(t, ra)); !slices.Equal(got, []string{kA, kGen}) {
		t.Fatalf("generated key, then signing_key: JWKS kids %q; want %q", got, []string{kA, kGen})
	}
	krVerify(t, ra, tokGen, iss, iss, clk.Now())
	for _, k := range krStored(t, st) {
		if k.PKCS8 != nil {
			t.Errorf("with signing_key, the store keeps the private half of %s", k.KID)
		}
	}
	tokA, err := ra.Assertion(krPrincipal(t, nil), iss, iss, clk.Now())
	if err != nil {
		t.Fatal(err)
	}

	clk.Advance(time.Second)
	rb := newKR(t, clk, st, fileB)
	kB := rb.ActiveKeyID()
	if got := krKIDs(krJWKS(t, rb)); !slices.Equal(got, []string{kB, kA, kGen}) {
		t.Fatalf("file replaced: JWKS kids %q; want %q", got, []string{kB, kA, kGen})
	}
	krVerify(t, rb, tokA, iss, iss, clk.Now())

	// Back to generated keys: a new one, since the store never had the
	// file's private half.
	clk.Advance(time.Second)
	back := newKR(t, clk, st, KeyRingConfig{})
	kNew := back.ActiveKeyID()
	if kNew == kB || kNew == kA || kNew == kGen {
		t.Fatalf("signing_key removed: active kid %s is an old one", kNew)
	}
	if got := krKIDs(krJWKS(t, back)); !slices.Equal(got, []string{kNew, kB, kA, kGen}) {
		t.Errorf("signing_key removed: JWKS kids %q; want %q", got, []string{kNew, kB, kA, kGen})
	}

	clk.Advance(5*time.Minute + time.Minute)
	if got := krKIDs(krJWKS(t, newKR(t, clk, st, KeyRingConfig{}))); !slices.Equal(got, []string{kNew}) {
		t.Errorf("TTL+1m later: JWKS kids %q; want %q", got, []string{kNew})
	}
}

func TestKeyRingPEMFileRefused(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecSEC1, _ := x509.MarshalECPrivateKey(ec)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	edPKCS8 := krPKCS8(t, edPriv)
	twoKeys := filepath.Join(dir, "two.pem")
	two := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edPKCS8}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: krPKCS8(t, ec)})...)
	if err := os.WriteFile(twoKeys, two, 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("just text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		alg  string
		path string
		want string // in the error
	}{
		{"RSA PKCS#8", AlgEdDSA, krWritePEM(t, "PRIVATE KEY", krPKCS8(t, rsaKey)), "unsupported key type"},
		{"RSA PKCS#1", AlgEdDSA, krWritePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), "unsupported PEM type"},
		{"Ed25519 with ES256", AlgES256, krWritePEM(t, "PRIVATE KEY", krPKCS8(t, edPriv)), "Ed25519"},
		{"P-256 with EdDSA", AlgEdDSA, krWritePEM(t, "EC PRIVATE KEY", ecSEC1), "ES256"},
		{"P-384", AlgES256, krWritePEM(t, "PRIVATE KEY", krPKCS8(t, p384)), "P-256"},
		{"public key only", AlgEdDSA, krWritePEM(t, "PUBLIC KEY", []byte{1, 2, 3}), "unsupported PEM type"},
		{"garbage DER", AlgEdDSA, krWritePEM(t, "PRIVATE KEY", []byte("garbage")), ""},
		{"not PEM", AlgEdDSA, notPEM, "no PEM block"},
		{"two keys", AlgEdDSA, twoKeys, "holds 2 keys"},
		{"missing file", AlgEdDSA, filepath.Join(dir, "missing.pem"), "missing.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newKRSecretsStore()
			kr, err := LoadKeyRing(context.Background(), clock.NewFake(krStart), st, krBox(t), KeyRingConfig{Algorithm: tt.alg, PEMFile: tt.path})
			if err == nil {
				t.Fatalf("LoadKeyRing = kid %q, nil; want an error", kr.ActiveKeyID())
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q; want it to mention %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %q does not name the file %s", err, tt.path)
			}
			if len(st.secrets) != 0 {
				t.Errorf("a refused PEM key fell back to a generated key in the store")
			}
		})
	}
}

// `openssl ecparam -name prime256v1 -genkey` writes an EC PARAMETERS
// block before the key: that file is one key, as is a key followed by
// its certificate.
func TestKeyRingPEMFileWithECParameters(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	oid := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07} // prime256v1
	path := filepath.Join(t.TempDir(), "ec.pem")
	data := append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: oid}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckSigningKeyFile(path, AlgES256); err != nil {
		t.Fatalf("an openssl ecparam key file: %v; want it taken", err)
	}
	// A key kept with its certificate is one key too.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ec.PublicKey, ec)
	if err != nil {
		t.Fatal(err)
	}
	withCert := filepath.Join(t.TempDir(), "kc.pem")
	if err := os.WriteFile(withCert, append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert})...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckSigningKeyFile(withCert, AlgES256); err != nil {
		t.Fatalf("a key file with its certificate: %v; want it taken", err)
	}
}

func TestKeyRingSign(t *testing.T) {
	kr := newKR(t, clock.NewFake(krStart), newKRSecretsStore(), KeyRingConfig{})
	tok, err := kr.Sign([]byte(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	set := krJWKS(t, kr)
	keys := set.Key(kr.ActiveKeyID())
	if len(keys) != 1 {
		t.Fatalf("active kid not in JWKS")
	}
	payload, err := obj.Verify(keys[0])
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if string(payload) != `{"hello":"world"}` {
		t.Errorf("payload = %q; want %q", payload, `{"hello":"world"}`)
	}
}

// RotateWith hands the sealed new keys to commit, with the new key to
// name in its row: stored, the new key signs; refused, nothing changed,
// neither in the store nor in what signs.
func TestKeyRingRotateWith(t *testing.T) {
	ctx := context.Background()
	st := newKRSecretsStore()
	kr := newKR(t, clock.NewFake(krStart), st, KeyRingConfig{Algorithm: AlgEdDSA, TTL: 5 * time.Minute})
	before := kr.ActiveKeyID()
	stored, _ := st.GetSecret(ctx, secretAssertionKeys)
	puts := st.puts

	refused := errors.New("its row was not written")
	var told KeyInfo
	if err := kr.RotateWith("", func(previous, active KeyInfo, change func(tx any) error) error {
		told = active
		if previous.KID != before {
			t.Errorf("commit was told the previous key %s; want %s", previous.KID, before)
		}
		return refused
	}); !errors.Is(err, refused) {
		t.Fatalf("RotateWith with the commit refused = %v; want its error", err)
	}
	if told.KID == "" || told.KID == before || told.Alg != AlgEdDSA || !told.Active {
		t.Errorf("commit was told %+v; want the new active EdDSA key", told)
	}
	now, _ := st.GetSecret(ctx, secretAssertionKeys)
	if kr.ActiveKeyID() != before || !bytes.Equal(now, stored) || st.puts != puts || len(kr.Keys()) != 1 {
		t.Fatalf("after a refused commit: active %s (was %s), %d keys, store changed %v; want nothing changed", kr.ActiveKeyID(), before, len(kr.Keys()), !bytes.Equal(now, stored))
	}

	if err := kr.RotateWith("", func(_, active KeyInfo, change func(tx any) error) error {
		told = active
		return change(st)
	}); err != nil {
		t.Fatalf("RotateWith: %v", err)
	}
	if kr.ActiveKeyID() != told.KID || kr.ActiveKeyID() == before {
		t.Fatalf("active key %s after RotateWith; want the one commit was told, %s", kr.ActiveKeyID(), told.KID)
	}
	reloaded := newKR(t, clock.NewFake(krStart), st, KeyRingConfig{Algorithm: AlgEdDSA, TTL: 5 * time.Minute})
	if got := reloaded.Keys(); len(got) != 2 || got[0].KID != told.KID || got[1].KID != before {
		t.Errorf("the store holds %+v; want %s active and %s retired", got, told.KID, before)
	}

	plain := newKR(t, clock.NewFake(krStart), struct{ Store }{st}, KeyRingConfig{Algorithm: AlgEdDSA, TTL: 5 * time.Minute})
	if err := plain.RotateWith("", func(_, _ KeyInfo, _ func(any) error) error { return nil }); err == nil {
		t.Error("RotateWith on a store that cannot store in another's transaction succeeded")
	}
}

// SaveWith hands a deferred change of the active key to commit, as
// RotateWith does; an instance that finds the change made by another
// meanwhile adopts its key, and has nothing to commit.
func TestKeyRingSaveWith(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(krStart)
	st := newKRSecretsStore()
	old := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA}).ActiveKeyID()
	first := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, DeferSave: true})
	second := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, DeferSave: true})

	refused := errors.New("its row was not written")
	calls := 0
	if err := first.SaveWith(ctx, func(_, _ KeyInfo, _ func(any) error) error { calls++; return refused }); !errors.Is(err, refused) {
		t.Fatalf("SaveWith with the commit refused = %v; want its error", err)
	}
	if first.ActiveKeyID() != old {
		t.Errorf("after a refused commit the active key is %s; want %s still", first.ActiveKeyID(), old)
	}
	var told, was KeyInfo
	if err := first.SaveWith(ctx, func(previous, active KeyInfo, change func(any) error) error {
		calls++
		told, was = active, previous
		return change(st)
	}); err != nil {
		t.Fatal(err)
	}
	if calls != 2 || was.KID != old || told.Alg != AlgES256 || !told.Active || first.ActiveKeyID() != told.KID {
		t.Errorf("SaveWith told previous %+v, active %+v; signs with %s; want %s retired for the new ES256 key that signs", was, told, first.ActiveKeyID(), old)
	}
	if err := second.SaveWith(ctx, func(_, _ KeyInfo, _ func(any) error) error {
		t.Error("the second instance committed a rotation of its own")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if second.ActiveKeyID() != told.KID {
		t.Errorf("the second instance signs with %s; want the first's %s", second.ActiveKeyID(), told.KID)
	}
}

// A deferred change of the active key whose commit failed stays
// deferred: the upkeep's PruneWith tries it again with its commit (the
// row), and the key that signed goes on signing until then.
func TestKeyRingPruneWithRetriesTheCommit(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(krStart)
	st := newKRSecretsStore()
	old := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgEdDSA}).ActiveKeyID()
	kr := newKR(t, clk, st, KeyRingConfig{Algorithm: AlgES256, DeferSave: true})
	refused := errors.New("its row was not written")
	if err := kr.SaveWith(ctx, func(_, _ KeyInfo, _ func(any) error) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("SaveWith with the commit refused = %v; want its error", err)
	}
	if err := kr.PruneWith(ctx, func(_, _ KeyInfo, _ func(any) error) error { return refused }); !errors.Is(err, refused) || kr.ActiveKeyID() != old {
		t.Fatalf("PruneWith with the commit refused = %v, signing with %s; want its error, and %s signing still", err, kr.ActiveKeyID(), old)
	}
	var told KeyInfo
	if err := kr.PruneWith(ctx, func(_, active KeyInfo, change func(any) error) error {
		told = active
		return change(st)
	}); err != nil {
		t.Fatal(err)
	}
	if told.Alg != AlgES256 || kr.ActiveKeyID() != told.KID {
		t.Errorf("after PruneWith: told %+v, signing with %s; want the new ES256 key, committed", told, kr.ActiveKeyID())
	}
}

// Two configs loaded back to back, each with a new signing_key file in
// place of the stored one's (a reload, then another before the first's
// Save): the change is one rotation, with one row; the second Save finds
// it stored and adopts it.
func TestKeyRingPEMFileReplacedOneRow(t *testing.T) {
	clk := clock.NewFake(krStart)
	st := newKRSecretsStore()
	fileA, fileB := KeyRingConfig{PEMFile: krEdPEMFile(t)}, KeyRingConfig{PEMFile: krEdPEMFile(t), DeferSave: true}
	kA := newKR(t, clk, st, fileA).ActiveKeyID()

	clk.Advance(time.Second)
	first, second := newKR(t, clk, st, fileB), newKR(t, clk, st, fileB)
	var rows []string
	commit := func(previous, active KeyInfo, change func(tx any) error) error {
		rows = append(rows, previous.KID+" → "+active.KID)
		return change(st)
	}
	for _, kr := range []*KeyRing{first, second} {
		if err := kr.SaveWith(context.Background(), commit); err != nil {
			t.Fatal(err)
		}
	}
	kB := first.ActiveKeyID()
	if want := []string{kA + " → " + kB}; !slices.Equal(rows, want) {
		t.Errorf("rows %q; want one, %q", rows, want)
	}
	if got := krStoredKIDs(t, st); !slices.Equal(got, []string{kB, kA}) {
		t.Errorf("stored kids %q; want %q", got, []string{kB, kA})
	}
	if second.ActiveKeyID() != kB {
		t.Errorf("the second config signs with %s; want %s", second.ActiveKeyID(), kB)
	}
}
