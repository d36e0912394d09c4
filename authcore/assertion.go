package authcore

import (
	"bytes"
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/keyfile"
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

	mu      sync.Mutex  // serialises changes to the set
	unsaved bool        // the set in memory differs from the store's: keys dropped, or a change deferred (DeferSave)
	pending *signingKey // the active key of a deferred change, which Save makes the key that signs
	// pendingSigns: pending signs already. It took over at load from a
	// stored key that could not go on signing (a signing_key file's,
	// whose private half is not stored), so Save stores it, with its
	// row, rather than adopt a key another instance stored meanwhile.
	pendingSigns bool
	alg          string // the configured algorithm, that Rotate("") makes keys of
	state        atomic.Pointer[keyState]
	rotGen       atomic.Uint64
}

type keyState struct {
	gen    uint64
	active *signingKey
	keys   []*signingKey // active first, then retired still published
	jwks   []byte
	dropAt time.Time // when the first retired key is due to go; zero if none
}

// signingKey is a key of the set as stored. Only the active key keeps its
// private half (PKCS8), and only when it was generated here: a key from
// signing_key and every retired key keep just the public half (PKIX), as
// that is all publishing needs.
type signingKey struct {
	KID       string    `json:"kid"`
	Alg       string    `json:"alg"`
	PKCS8     []byte    `json:"pkcs8,omitempty"`
	PKIX      []byte    `json:"pkix,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
	// PublishUntil is when a retired key's last assertion has expired,
	// with the lifetime assertions had when it was retired: lowering
	// assertion_ttl later must not unpublish keys that signed longer
	// lived ones. Zero in sets stored before it was kept.
	PublishUntil time.Time `json:"publish_until,omitzero"`

	pub    crypto.PublicKey
	priv   crypto.Signer
	signer jose.Signer
}

// publicOnly is k without its private half.
func (k *signingKey) publicOnly() (*signingKey, error) {
	c := &signingKey{KID: k.KID, Alg: k.Alg, PKIX: k.PKIX, CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt, PublishUntil: k.PublishUntil, pub: k.pub}
	if c.PKIX == nil {
		der, err := x509.MarshalPKIXPublicKey(k.pub)
		if err != nil {
			return nil, fmt.Errorf("assertion key %s: %w", k.KID, err)
		}
		c.PKIX = der
	}
	return c, nil
}

// DefaultAssertionTTL is the assertions' lifetime unless configured.
const DefaultAssertionTTL = 5 * time.Minute

// KeyRingConfig says where the keys come from.
type KeyRingConfig struct {
	// Algorithm is EdDSA (default) or ES256.
	Algorithm string
	// PEMFile, if set, is the signing key (PKCS#8, SEC 1 EC or Ed25519
	// PEM); otherwise keys are generated and kept in the store. Either
	// way the store keeps the public halves of the keys that signed
	// before, so that replacing the file keeps the old key published.
	PEMFile string
	// TTL is the assertion lifetime; retired keys stay published this
	// long (plus a minute for clock skew) after they stop signing.
	// Default 5m.
	TTL time.Duration
	// DeferSave defers a change of the active key (another algorithm, or
	// signing_key naming another key or removed) until Save: until then
	// the stored active key goes on signing, where it can (its private
	// half is stored), and the store is not changed. A configuration that
	// is loaded but then refused (another Caddy app failed to start) must
	// neither rotate the stored keys nor sign with a key that is never
	// published.
	DeferSave bool
}

// LoadKeyRing loads the signing keys, creating the first key on first
// start. The key that signed last is retired, and stays published, when
// the active key changes here: the configured algorithm differs from the
// stored key's, signing_key names another key, or signing_key was removed.
func LoadKeyRing(ctx context.Context, clk clock.Clock, st Store, box *seal.Box, cfg KeyRingConfig) (*KeyRing, error) {
	if cfg.Algorithm == "" {
		cfg.Algorithm = AlgEdDSA
	}
	if cfg.Algorithm != AlgEdDSA && cfg.Algorithm != AlgES256 {
		return nil, fmt.Errorf("%w: assertion algorithm %q (want EdDSA or ES256)", ErrInvalidInput, cfg.Algorithm)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultAssertionTTL
	}
	kr := &KeyRing{store: st, box: box, clock: clk, ttl: cfg.TTL, fromFile: cfg.PEMFile != "", alg: cfg.Algorithm}
	now := clk.Now()
	stored, err := kr.read(ctx)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var k *signingKey
	switch {
	case kr.fromFile:
		if k, err = loadPEMKey(cfg.PEMFile, cfg.Algorithm); err != nil {
			return nil, err
		}
	case stored == nil:
		if k, err = newSigningKey(cfg.Algorithm, now); err != nil {
			return nil, err
		}
		sealed, err := kr.seal([]*signingKey{k})
		if err != nil {
			return nil, err
		}
		// ifAbsent: an instance that started at the same moment wins and
		// we adopt its key.
		got, err := st.PutSecret(ctx, secretAssertionKeys, sealed, true)
		if err != nil {
			return nil, fmt.Errorf("storing assertion key: %w", err)
		}
		if stored, err = kr.unseal(got); err != nil {
			return nil, err
		}
		fallthrough
	default:
		// Keep the key that signed last, unless it came from a
		// signing_key file now gone, or has another algorithm.
		if k = stored[0]; k.priv == nil || k.Alg != cfg.Algorithm {
			if k, err = newSigningKey(cfg.Algorithm, now); err != nil {
				return nil, err
			}
		}
	}
	keys, err := kr.succeed(k, stored, now)
	if err != nil {
		return nil, err
	}
	changed, err := kr.differs(stored, keys)
	if err != nil {
		return nil, fmt.Errorf("storing assertion keys: %w", err)
	}
	if cfg.DeferSave && changed && len(stored) > 0 && stored[0].priv != nil && stored[0].KID != k.KID {
		// The stored key signs until Save makes k the active one.
		if err := kr.install(kr.live(stored, now)); err != nil {
			return nil, err
		}
		kr.pending, kr.unsaved = k, true
		return kr, nil
	}
	if err := kr.install(keys); err != nil {
		return nil, err
	}
	switch {
	case changed && cfg.DeferSave:
		kr.unsaved = true
		if len(stored) > 0 && stored[0].KID != k.KID {
			kr.pending, kr.pendingSigns = k, true
		}
	case changed:
		if err := kr.save(ctx, keys); err != nil {
			return nil, fmt.Errorf("storing assertion keys: %w", err)
		}
	}
	return kr, nil
}

// Save stores the set in memory if the store's differs from it (retired
// keys dropped, or a key that signed at once), or makes the change
// LoadKeyRing deferred (KeyRingConfig.DeferSave): on the set stored now,
// which another instance may have changed since (a reload in quick
// succession), the old active key retired now, as it signed until now.
// If the key stored now is already one of the configured algorithm, it
// goes on signing (unless the new key signs already: pendingSigns). A Rotate in between saved a set already, and the
// deferred change is dropped. Until Save succeeds, the key that signed
// goes on signing; Prune tries again.
func (kr *KeyRing) Save(ctx context.Context) error {
	return kr.SaveWith(ctx, nil)
}

// KeyCommit stores a change of the active key (change, given the store's
// transaction) in one transaction with the row that tells of it, naming
// the key that signed and the one that signs now.
type KeyCommit func(previous, active KeyInfo, change func(tx any) error) error

// SaveWith is Save with the deferred change of the active key, when this
// instance makes it (not one that another instance made meanwhile, which
// it adopts), stored through commit as RotateWith stores a rotation: in
// one transaction with the admin.keys.rotate row that tells of it. A nil
// commit, or a store that cannot, stores it alone.
func (kr *KeyRing) SaveWith(ctx context.Context, commit KeyCommit) error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if !kr.unsaved {
		return nil
	}
	if kr.pending == nil {
		if err := kr.save(ctx, kr.state.Load().keys); err != nil {
			return fmt.Errorf("storing assertion keys: %w", err)
		}
		kr.unsaved = false
		return nil
	}
	now := kr.clock.Now()
	stored, err := kr.read(ctx)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if len(stored) == 0 {
		stored = kr.state.Load().keys
	}
	k := kr.pending
	if !kr.fromFile && !kr.pendingSigns && stored[0].priv != nil && stored[0].Alg == k.Alg {
		k = stored[0] // made by another instance meanwhile: no second rotation
	}
	keys, err := kr.succeed(k, stored, now)
	if err != nil {
		return err
	}
	cs, canCommit := kr.store.(SecretChangeStore)
	switch changed, err := kr.differs(stored, keys); {
	case err != nil:
		return err
	case changed && commit != nil && canCommit && k.KID != stored[0].KID:
		sealed, err := kr.sealStored(keys)
		if err != nil {
			return err
		}
		previous := KeyInfo{KID: stored[0].KID, Alg: stored[0].Alg, CreatedAt: stored[0].CreatedAt}
		active := KeyInfo{KID: k.KID, Alg: k.Alg, Active: true, CreatedAt: k.CreatedAt, FromFile: kr.fromFile}
		if err := commit(previous, active, cs.PutSecretIn(secretAssertionKeys, sealed)); err != nil {
			return fmt.Errorf("storing assertion keys: %w", err)
		}
	case changed:
		if err := kr.save(ctx, keys); err != nil {
			return fmt.Errorf("storing assertion keys: %w", err)
		}
	}
	if err := kr.install(keys); err != nil {
		return err
	}
	kr.pending, kr.pendingSigns, kr.unsaved = nil, false, false
	return nil
}

// Rotate makes a new active key of the given algorithm ("" for the
// configured one). The old key stays published until assertions signed
// with it have expired; its private half is forgotten at once. Cached
// assertions are re-signed on next use.
func (kr *KeyRing) Rotate(ctx context.Context, alg string) error {
	return kr.rotate(alg, func(_, _ KeyInfo, sealed []byte) error {
		_, err := kr.store.PutSecret(ctx, secretAssertionKeys, sealed, false)
		return err
	})
}

// SecretChangeStore stores a secret inside a transaction it runs for
// something else, as ChangeStore changes users.
type SecretChangeStore interface {
	PutSecretIn(name string, value []byte) func(tx any) error
}

// RotateWith is Rotate with the new keys stored through commit, in one
// transaction with what it records (audit.Log.RecordWith), so that a
// rotation is never stored without its row or its row without it.
// commit is told the key that signed until now and the new one, for the
// row to name. Until commit answers, the old key goes on signing; when it
// fails, nothing changed.
func (kr *KeyRing) RotateWith(alg string, commit KeyCommit) error {
	cs, ok := kr.store.(SecretChangeStore)
	if !ok {
		return errors.New("authcore: this store cannot store keys in the transaction of their audit row")
	}
	return kr.rotate(alg, func(previous, active KeyInfo, sealed []byte) error {
		return commit(previous, active, cs.PutSecretIn(secretAssertionKeys, sealed))
	})
}

// rotate makes the new key set and has store keep it (sealed), then
// installs it; everything that can fail but the store comes first.
func (kr *KeyRing) rotate(alg string, store func(previous, active KeyInfo, sealed []byte) error) error {
	if kr.fromFile {
		return fmt.Errorf("%w: the signing key is loaded from a PEM file (signing_key): replace the file and run caddy reload --force instead (an unchanged config is not reloaded without --force)", ErrInvalidInput)
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	cur := kr.state.Load()
	if alg == "" {
		alg = kr.alg // the configured one, also while a change to it waits for Save
	}
	now := kr.clock.Now()
	k, err := newSigningKey(alg, now)
	if err != nil {
		return err
	}
	keys, err := kr.succeed(k, cur.keys, now)
	if err != nil {
		return err
	}
	sealed, err := kr.sealStored(keys)
	if err != nil {
		return err
	}
	next, err := kr.prepare(keys)
	if err != nil {
		return err
	}
	previous := KeyInfo{KID: cur.active.KID, Alg: cur.active.Alg, CreatedAt: cur.active.CreatedAt}
	if err := store(previous, KeyInfo{KID: k.KID, Alg: k.Alg, Active: true, CreatedAt: k.CreatedAt}, sealed); err != nil {
		return fmt.Errorf("storing rotated keys: %w", err)
	}
	kr.unsaved, kr.pending, kr.pendingSigns = false, nil, false
	kr.publish(next)
	return nil
}

// Prune stops publishing retired keys whose last assertion has expired,
// and removes them from the store. The published set drops them when
// they are due whether or not Prune runs; Prune is the store's upkeep.
func (kr *KeyRing) Prune(ctx context.Context) error {
	return kr.PruneWith(ctx, nil)
}

// PruneWith is Prune, storing what Save would through SaveWith with
// commit: a deferred change of the active key whose commit failed at
// first is tried again with its row, never stored without it.
func (kr *KeyRing) PruneWith(ctx context.Context, commit KeyCommit) error {
	kr.mu.Lock()
	if err := kr.dropExpiredLocked(); err != nil {
		kr.mu.Unlock()
		return err
	}
	kr.mu.Unlock()
	return kr.SaveWith(ctx, commit)
}

// current is the key state, without retired keys that are due to go.
func (kr *KeyRing) current() *keyState {
	st := kr.state.Load()
	if st.dropAt.IsZero() || kr.clock.Now().Before(st.dropAt) {
		return st
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	_ = kr.dropExpiredLocked() // cannot fail: the active key, which installed, stays
	return kr.state.Load()
}

func (kr *KeyRing) dropExpiredLocked() error {
	cur := kr.state.Load()
	keys := kr.live(cur.keys, kr.clock.Now())
	if len(keys) == len(cur.keys) {
		return nil
	}
	kr.unsaved = true
	return kr.install(keys)
}

// published says whether a retired key may still have valid assertions
// out (publishUntil).
func (kr *KeyRing) published(k *signingKey, now time.Time) bool {
	return now.Before(kr.publishUntil(k))
}

// publishUntil is when a retired key's last assertion has surely
// expired: it was signed at RetiredAt and lived the TTL of then
// (PublishUntil) or of now, whichever is longer, and verifiers' clocks
// may run a minute behind.
func (kr *KeyRing) publishUntil(k *signingKey) time.Time {
	until := k.RetiredAt.Add(kr.ttl + time.Minute)
	if k.PublishUntil.After(until) {
		return k.PublishUntil
	}
	return until
}

// live is keys (active first) without the retired keys that are no
// longer published.
func (kr *KeyRing) live(keys []*signingKey, now time.Time) []*signingKey {
	out := []*signingKey{keys[0]}
	for _, k := range keys[1:] {
		if kr.published(k, now) {
			out = append(out, k)
		}
	}
	return out
}

// succeed makes k the active key of the set prev: prev's active key is
// retired now unless it is k itself, and of the retired keys those still
// published stay, without their private halves.
func (kr *KeyRing) succeed(k *signingKey, prev []*signingKey, now time.Time) ([]*signingKey, error) {
	out := []*signingKey{k}
	for i, old := range prev {
		if old.KID == k.KID {
			continue
		}
		r, err := old.publicOnly()
		if err != nil {
			return nil, err
		}
		if i == 0 && r.RetiredAt.IsZero() {
			r.RetiredAt = now.UTC()
			r.PublishUntil = r.RetiredAt.Add(kr.ttl + time.Minute)
		}
		if kr.published(r, now) {
			out = append(out, r)
		}
	}
	return out, nil
}

// stored is keys as the store keeps them: a key from signing_key without
// its private half.
func (kr *KeyRing) stored(keys []*signingKey) ([]*signingKey, error) {
	if !kr.fromFile {
		return keys, nil
	}
	first, err := keys[0].publicOnly()
	if err != nil {
		return nil, err
	}
	return append([]*signingKey{first}, keys[1:]...), nil
}

// differs says whether keys must be saved over what the store had.
func (kr *KeyRing) differs(had, keys []*signingKey) (bool, error) {
	if had == nil {
		return true, nil
	}
	want, err := kr.stored(keys)
	if err != nil {
		return false, err
	}
	a, err := json.Marshal(had)
	if err != nil {
		return false, err
	}
	b, err := json.Marshal(want)
	if err != nil {
		return false, err
	}
	return !bytes.Equal(a, b), nil
}

func (kr *KeyRing) save(ctx context.Context, keys []*signingKey) error {
	sealed, err := kr.sealStored(keys)
	if err != nil {
		return err
	}
	_, err = kr.store.PutSecret(ctx, secretAssertionKeys, sealed, false)
	return err
}

// sealStored seals keys as the store keeps them (stored).
func (kr *KeyRing) sealStored(keys []*signingKey) ([]byte, error) {
	keys, err := kr.stored(keys)
	if err != nil {
		return nil, err
	}
	return kr.seal(keys)
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
		switch {
		case len(k.PKCS8) > 0:
			priv, err := x509.ParsePKCS8PrivateKey(k.PKCS8)
			if err != nil {
				return nil, fmt.Errorf("assertion key %s: %w", k.KID, err)
			}
			signer, ok := priv.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("assertion key %s is not a signing key", k.KID)
			}
			k.priv, k.pub = signer, signer.Public()
		case len(k.PKIX) > 0:
			pub, err := x509.ParsePKIXPublicKey(k.PKIX)
			if err != nil {
				return nil, fmt.Errorf("assertion key %s: %w", k.KID, err)
			}
			k.pub = pub
		default:
			return nil, fmt.Errorf("assertion key %s in storage has no key", k.KID)
		}
	}
	return keys, nil
}

// install builds the signer and the JWKS document and publishes the new
// state. A new active key gets a new generation, invalidating cached
// assertions.
func (kr *KeyRing) install(keys []*signingKey) error {
	st, err := kr.prepare(keys)
	if err != nil {
		return err
	}
	kr.publish(st)
	return nil
}

// prepare makes the state that publish installs: the active key's signer
// and the published set. It changes nothing the ring shows.
func (kr *KeyRing) prepare(keys []*signingKey) (*keyState, error) {
	active := keys[0]
	if active.priv == nil {
		return nil, fmt.Errorf("assertion key %s has no private key", active.KID)
	}
	if active.signer == nil {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(active.Alg), Key: jose.JSONWebKey{Key: active.priv, KeyID: active.KID, Algorithm: active.Alg}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			return nil, fmt.Errorf("assertion key %s: %w", active.KID, err)
		}
		active.signer = s
	}
	set := jose.JSONWebKeySet{}
	var dropAt time.Time
	for i, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.pub, KeyID: k.KID, Algorithm: k.Alg, Use: "sig"})
		if at := kr.publishUntil(k); i > 0 && (dropAt.IsZero() || at.Before(dropAt)) {
			dropAt = at
		}
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	return &keyState{active: active, keys: keys, jwks: jwks, dropAt: dropAt}, nil
}

// publish makes st the ring's state.
func (kr *KeyRing) publish(st *keyState) {
	st.gen = kr.rotGen.Load()
	if cur := kr.state.Load(); cur == nil || cur.active != st.active {
		st.gen = kr.rotGen.Add(1)
	}
	kr.state.Store(st)
}

// JWKS returns the public key set as JSON (RFC 7517).
func (kr *KeyRing) JWKS() []byte { return kr.current().jwks }

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
	st := kr.current()
	out := make([]KeyInfo, 0, len(st.keys))
	for i, k := range st.keys {
		out = append(out, KeyInfo{KID: k.KID, Alg: k.Alg, Active: i == 0, CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt, FromFile: kr.fromFile && i == 0})
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
	return &signingKey{KID: base64.RawURLEncoding.EncodeToString(tp)[:16], Alg: alg, PKCS8: der, CreatedAt: now.UTC(), pub: priv.Public(), priv: priv}, nil
}

// CheckSigningKeyFile reports what LoadKeyRing would refuse in the PEM
// file path for algorithm alg: a missing or unreadable file, no PEM
// block, a key of another kind.
func CheckSigningKeyFile(path, alg string) error {
	_, err := loadPEMKey(path, alg)
	return err
}

func loadPEMKey(path, alg string) (*signingKey, error) {
	data, err := keyfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("signing_key: %w", err)
	}
	// One private key per file. An operator who appends the next key
	// during a rotation would otherwise go on signing with the first
	// without a word. Other blocks (the EC PARAMETERS that `openssl
	// ecparam -genkey` writes before its key, a certificate or public key
	// kept with it) are not keys to sign with; without a private key,
	// the first block is what the error names.
	var block, first *pem.Block
	keys := 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if first == nil {
			first = b
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		if keys++; keys == 1 {
			block = b
		}
	}
	if block == nil {
		block = first
	}
	switch {
	case block == nil:
		return nil, fmt.Errorf("signing_key %s: no PEM block", path)
	case keys > 1:
		return nil, fmt.Errorf("signing_key %s: the file holds %d keys; it must hold one, the key to sign with (to rotate, replace the file and run caddy reload --force: the previous key stays published)", path, keys)
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
			return nil, fmt.Errorf("signing_key %s is Ed25519 but algorithm is %s (set algorithm EdDSA)", path, alg)
		}
		return keyFromSigner(k, alg, time.Time{})
	case *ecdsa.PrivateKey:
		switch {
		case k.Curve != elliptic.P256():
			return nil, fmt.Errorf("signing_key %s is ECDSA on %s; only P-256 (with algorithm ES256) is supported", path, k.Curve.Params().Name)
		case alg != AlgES256:
			return nil, fmt.Errorf("signing_key %s is ECDSA P-256 but algorithm is %s (set algorithm ES256)", path, alg)
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

func (c *cachedAssertion) fresh(gen uint64, now int64) bool { return c.gen == gen && now < c.refreshAt }

// cachedAssertions are a principal's signed assertions, newest first,
// one per issuer and audience: a session used on several origins (one
// host's ports share cookies) keeps one for each instead of re-signing
// on every switch. Never changed once stored.
type cachedAssertions []*cachedAssertion

// maxCachedAssertions bounds the assertions kept per principal.
const maxCachedAssertions = 4

// Assertion returns the signed identity assertion for p, issued by iss
// for aud. It is cached on the principal, per issuer and audience, and
// re-signed once half its lifetime has passed or when the key rotates,
// so the hot path signs only rarely.
func (kr *KeyRing) Assertion(p *Principal, iss, aud string, now time.Time) (string, error) {
	st := kr.state.Load()
	nowNs := now.UnixNano()
	var old cachedAssertions
	if cs := p.assertion.Load(); cs != nil {
		old = *cs
	}
	for _, c := range old {
		if c.iss == iss && c.aud == aud && c.fresh(st.gen, nowNs) {
			return c.token, nil
		}
	}
	groups := p.User.Groups
	if groups == nil {
		groups = []string{}
	}
	// Never valid past the session's own end.
	exp := min(now.Add(kr.ttl).Unix(), p.Session.End().Unix())
	claims := AssertionClaims{
		Issuer: iss, Audience: aud, Subject: p.User.ID, Email: p.User.Email, EmailVerified: p.User.EmailVerified,
		Name: p.User.Name, Groups: groups, AMR: p.Session.AMR, SessionID: p.SessionID,
		AuthTime: p.Session.AuthTime.Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: exp,
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
	next := cachedAssertions{{token: token, gen: st.gen, iss: iss, aud: aud, refreshAt: now.Add(kr.ttl / 2).UnixNano()}}
	for _, c := range old {
		if len(next) < maxCachedAssertions && (c.iss != iss || c.aud != aud) && c.fresh(st.gen, nowNs) {
			next = append(next, c)
		}
	}
	// Requests of the same session racing here may each store their own
	// set; one wins and the others' signatures are simply done again
	// later.
	p.assertion.Store(&next)
	return token, nil
}
