package authcore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/seal"
)

// Signing algorithms for the identity assertion.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

// secretAssertionKeys is the store secret holding the sealed key set.
const secretAssertionKeys = "assertion_keys"

// KeyRing holds the assertion signing keys: one active key that signs,
// and retired keys still published until their last assertion expires.
type KeyRing struct {
	store    Store
	box      *seal.Box
	clock    clock.Clock
	ttl      time.Duration
	fromFile bool

	mu     sync.Mutex // serialises rotation
	state  atomic.Pointer[keyState]
	rotGen atomic.Uint64
}

type keyState struct {
	gen    uint64
	active *signingKey
	keys   []*signingKey // active first, then retired still published
	jwks   []byte
}

type signingKey struct {
	KID       string    `json:"kid"`
	Alg       string    `json:"alg"`
	PKCS8     []byte    `json:"pkcs8"`
	CreatedAt time.Time `json:"created_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`

	priv   crypto.Signer
	signer jose.Signer
}

// KeyRingConfig says where the keys come from.
type KeyRingConfig struct {
	// Algorithm is EdDSA (default) or ES256.
	Algorithm string
	// PEMFile, if set, is the only signing key (PKCS#8, SEC 1 EC or
	// Ed25519 PEM); otherwise keys are generated and kept in the store.
	PEMFile string
	// TTL is the assertion lifetime; retired keys stay published this
	// long after rotation. Default 5m.
	TTL time.Duration
}

// LoadKeyRing loads the signing keys, creating the first key on first
// start. If the configured algorithm differs from the stored active key,
// it rotates to a new key of that algorithm.
func LoadKeyRing(ctx context.Context, clk clock.Clock, st Store, box *seal.Box, cfg KeyRingConfig) (*KeyRing, error) {
	if cfg.Algorithm == "" {
		cfg.Algorithm = AlgEdDSA
	}
	if cfg.Algorithm != AlgEdDSA && cfg.Algorithm != AlgES256 {
		return nil, fmt.Errorf("%w: assertion algorithm %q (want EdDSA or ES256)", ErrInvalidInput, cfg.Algorithm)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Minute
	}
	kr := &KeyRing{store: st, box: box, clock: clk, ttl: cfg.TTL}
	if cfg.PEMFile != "" {
		k, err := loadPEMKey(cfg.PEMFile, cfg.Algorithm)
		if err != nil {
			return nil, err
		}
		kr.fromFile = true
		return kr, kr.install([]*signingKey{k})
	}
	keys, err := kr.read(ctx)
	if errors.Is(err, ErrNotFound) {
		k, gerr := newSigningKey(cfg.Algorithm, clk.Now())
		if gerr != nil {
			return nil, gerr
		}
		sealed, serr := kr.seal([]*signingKey{k})
		if serr != nil {
			return nil, serr
		}
		// ifAbsent: an instance that started at the same moment wins and
		// we adopt its key.
		got, perr := st.PutSecret(ctx, secretAssertionKeys, sealed, true)
		if perr != nil {
			return nil, fmt.Errorf("storing assertion key: %w", perr)
		}
		if keys, err = kr.unseal(got); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if err := kr.install(keys); err != nil {
		return nil, err
	}
	if keys[0].Alg != cfg.Algorithm {
		if err := kr.Rotate(ctx, cfg.Algorithm); err != nil {
			return nil, err
		}
	}
	return kr, nil
}

// Rotate makes a new active key of the given algorithm ("" keeps the
// current one's). The old key stays published until assertions signed
// with it have expired. Cached assertions are re-signed on next use.
func (kr *KeyRing) Rotate(ctx context.Context, alg string) error {
	if kr.fromFile {
		return fmt.Errorf("%w: the signing key is loaded from a PEM file (signing_key): replace the file and reload instead", ErrInvalidInput)
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	cur := kr.state.Load()
	if alg == "" {
		alg = cur.active.Alg
	}
	now := kr.clock.Now()
	k, err := newSigningKey(alg, now)
	if err != nil {
		return err
	}
	keys := []*signingKey{k}
	for i, old := range cur.keys {
		c := *old
		if i == 0 {
			c.RetiredAt = now
		}
		if now.Sub(c.RetiredAt) < kr.ttl+time.Minute {
			keys = append(keys, &c)
		}
	}
	sealed, err := kr.seal(keys)
	if err != nil {
		return err
	}
	if _, err := kr.store.PutSecret(ctx, secretAssertionKeys, sealed, false); err != nil {
		return fmt.Errorf("storing rotated keys: %w", err)
	}
	return kr.install(keys)
}

func (kr *KeyRing) read(ctx context.Context) ([]*signingKey, error) {
	raw, err := kr.store.GetSecret(ctx, secretAssertionKeys)
	if err != nil {
		return nil, err
	}
	return kr.unseal(raw)
}

var keysAAD = []byte("sigra:" + secretAssertionKeys)

func (kr *KeyRing) seal(keys []*signingKey) ([]byte, error) {
	plain, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	return kr.box.Seal(plain, keysAAD), nil
}

func (kr *KeyRing) unseal(raw []byte) ([]*signingKey, error) {
	plain, err := kr.box.Open(raw, keysAAD)
	if err != nil {
		return nil, fmt.Errorf("assertion keys in storage: %w (key id %s)", err, kr.box.ID())
	}
	var keys []*signingKey
	if err := json.Unmarshal(plain, &keys); err != nil || len(keys) == 0 {
		return nil, fmt.Errorf("assertion keys in storage are malformed")
	}
	for _, k := range keys {
		priv, err := x509.ParsePKCS8PrivateKey(k.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("assertion key %s: %w", k.KID, err)
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("assertion key %s is not a signing key", k.KID)
		}
		k.priv = signer
	}
	return keys, nil
}

// install builds signers and the JWKS document, and publishes the new
// state with a new generation (invalidating cached assertions).
func (kr *KeyRing) install(keys []*signingKey) error {
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		alg := jose.SignatureAlgorithm(k.Alg)
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.KID, Algorithm: k.Alg}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			return fmt.Errorf("assertion key %s: %w", k.KID, err)
		}
		k.signer = s
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.KID, Algorithm: k.Alg, Use: "sig"})
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return err
	}
	kr.state.Store(&keyState{gen: kr.rotGen.Add(1), active: keys[0], keys: keys, jwks: jwks})
	return nil
}

// JWKS returns the public key set as JSON (RFC 7517).
func (kr *KeyRing) JWKS() []byte { return kr.state.Load().jwks }

// ActiveKeyID is the kid of the signing key.
func (kr *KeyRing) ActiveKeyID() string { return kr.state.Load().active.KID }

// TTL is the assertion lifetime.
func (kr *KeyRing) TTL() time.Duration { return kr.ttl }

// KeyInfo describes a published signing key, for operators.
type KeyInfo struct {
	KID       string    `json:"kid"`
	Alg       string    `json:"alg"`
	Active    bool      `json:"active"` // signs new assertions; the others only verify old ones
	CreatedAt time.Time `json:"created_at,omitzero"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
	FromFile  bool      `json:"from_file,omitempty"` // loaded from signing_key: rotate by replacing the file
}

// Keys lists the published keys, the active one first.
func (kr *KeyRing) Keys() []KeyInfo {
	st := kr.state.Load()
	out := make([]KeyInfo, 0, len(st.keys))
	for i, k := range st.keys {
		out = append(out, KeyInfo{KID: k.KID, Alg: k.Alg, Active: i == 0, CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt, FromFile: kr.fromFile})
	}
	return out
}

// Sign signs a JSON payload with the active key as a compact JWS.
func (kr *KeyRing) Sign(payload []byte) (string, error) {
	obj, err := kr.state.Load().active.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

func newSigningKey(alg string, now time.Time) (*signingKey, error) {
	var priv crypto.Signer
	switch alg {
	case AlgEdDSA:
		_, p, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		priv = p
	case AlgES256:
		p, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		priv = p
	default:
		return nil, fmt.Errorf("%w: algorithm %q", ErrInvalidInput, alg)
	}
	return keyFromSigner(priv, alg, now)
}

func keyFromSigner(priv crypto.Signer, alg string, now time.Time) (*signingKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	tp, err := (&jose.JSONWebKey{Key: priv.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &signingKey{KID: base64.RawURLEncoding.EncodeToString(tp)[:16], Alg: alg, PKCS8: der, CreatedAt: now.UTC(), priv: priv}, nil
}

func loadPEMKey(path, alg string) (*signingKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing_key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("signing_key %s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("signing_key %s: unsupported PEM type %q (want PRIVATE KEY or EC PRIVATE KEY)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing_key %s: %w", path, err)
	}
	switch k := key.(type) {
	case ed25519.PrivateKey:
		if alg != AlgEdDSA {
			return nil, fmt.Errorf("signing_key %s is Ed25519 but algorithm is %s", path, alg)
		}
		return keyFromSigner(k, alg, time.Time{})
	case *ecdsa.PrivateKey:
		if alg != AlgES256 || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("signing_key %s is ECDSA; it must be P-256 with algorithm ES256", path)
		}
		return keyFromSigner(k, alg, time.Time{})
	default:
		return nil, fmt.Errorf("signing_key %s: unsupported key type %T", path, key)
	}
}

// AssertionClaims is the identity assertion's payload.
type AssertionClaims struct {
	Issuer        string   `json:"iss"`
	Audience      string   `json:"aud"`
	Subject       string   `json:"sub"`
	Email         string   `json:"email"`
	EmailVerified bool     `json:"email_verified"`
	Name          string   `json:"name,omitempty"`
	Groups        []string `json:"groups"`
	Org           string   `json:"org,omitempty"`
	AMR           []string `json:"amr"`
	SessionID     string   `json:"sid"`
	AuthTime      int64    `json:"auth_time"`
	IssuedAt      int64    `json:"iat"`
	NotBefore     int64    `json:"nbf"`
	Expiry        int64    `json:"exp"`
}

type cachedAssertion struct {
	token     string
	gen       uint64
	iss, aud  string
	refreshAt int64 // unix nanos
}

// Assertion returns the signed identity assertion for p, issued by iss
// for aud. It is cached on the principal and re-signed once half its
// lifetime has passed, when the key rotates, or when iss/aud change, so
// the hot path signs only rarely.
func (kr *KeyRing) Assertion(p *Principal, iss, aud string, now time.Time) (string, error) {
	st := kr.state.Load()
	if c := p.assertion.Load(); c != nil && c.gen == st.gen && now.UnixNano() < c.refreshAt && c.iss == iss && c.aud == aud {
		return c.token, nil
	}
	groups := p.User.Groups
	if groups == nil {
		groups = []string{}
	}
	claims := AssertionClaims{
		Issuer: iss, Audience: aud, Subject: p.User.ID, Email: p.User.Email, EmailVerified: p.User.EmailVerified,
		Name: p.User.Name, Groups: groups, AMR: p.Session.AMR, SessionID: p.SessionID,
		AuthTime: p.Session.AuthTime.Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(kr.ttl).Unix(),
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	obj, err := st.active.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("signing assertion: %w", err)
	}
	token, err := obj.CompactSerialize()
	if err != nil {
		return "", err
	}
	p.assertion.Store(&cachedAssertion{token: token, gen: st.gen, iss: iss, aud: aud, refreshAt: now.Add(kr.ttl / 2).UnixNano()})
	return token, nil
}
