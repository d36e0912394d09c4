package caddymodule

// Behaviour tests for global options that caddyfile_test.go only parses:
// each checks that the option changes what the running gateway does.

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
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/store"
)

// assertionParts verifies a JWT against the served JWKS (without
// verifyAssertion's fixed 5m lifetime) and returns its kid and claims.
func assertionParts(t *testing.T, e *env, token string) (string, map[string]any) {
	t.Helper()
	if token == "" {
		t.Fatal("no assertion")
	}
	_, body := e.get("/.sigra/jwks.json", nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		t.Fatalf("parsing assertion: %v", err)
	}
	kid := tok.Headers[0].KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %q: %d keys in JWKS; want 1", kid, len(keys))
	}
	var claims map[string]any
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("verifying assertion against the JWKS: %v", err)
	}
	return kid, claims
}

// signedInAssertion signs a new user in and returns the assertion the app
// receives.
func signedInAssertion(t *testing.T, e *env) string {
	t.Helper()
	e.addUser("opt@example.com")
	e.mustLogin("opt@example.com")
	if r, _ := e.get("/x", nil); r.StatusCode != 200 {
		t.Fatalf("signed-in request: status %d", r.StatusCode)
	}
	h, _ := e.up.last()
	return h.Get(hdrAssertion)
}

func TestOptionAssertionAudience(t *testing.T) {
	e := startCaddy(t, "assertion_audience https://api.example.com", "sigra_gate")
	claims := verifyAssertion(t, e, signedInAssertion(t, e))
	if claims["aud"] != "https://api.example.com" {
		t.Errorf("aud %v; want the configured https://api.example.com", claims["aud"])
	}
	if claims["iss"] != e.base {
		t.Errorf("iss %v; want the site origin %s (assertion_audience changes aud only)", claims["iss"], e.base)
	}
}

// Like the store's path, the audience may come from the environment:
// taken as written, every verifier would refuse the assertion.
func TestOptionAssertionAudienceFromTheEnvironment(t *testing.T) {
	t.Setenv("SIGRA_TEST_AUD", "https://env.example.com")
	e := startCaddy(t, "assertion_audience {env.SIGRA_TEST_AUD}", "sigra_gate")
	if aud := verifyAssertion(t, e, signedInAssertion(t, e))["aud"]; aud != "https://env.example.com" {
		t.Errorf("aud %v; want https://env.example.com from {env.SIGRA_TEST_AUD}", aud)
	}
	a := &App{AssertionAudience: "{env.SIGRA_TEST_UNSET_AUD}", Storage: &StorageConfig{Path: filepath.Join(t.TempDir(), "sigra.db")}}
	if err := a.setDefaults(); err == nil || !strings.Contains(err.Error(), "assertion_audience {env.SIGRA_TEST_UNSET_AUD}") {
		t.Errorf("an audience from a variable not set: %v; want it refused, naming it", err)
	}
}

// assertionLifetime signs a new user in and returns the iat and exp of
// the assertion the app receives.
func assertionLifetime(t *testing.T, e *env) (iat, exp float64) {
	t.Helper()
	_, claims := assertionParts(t, e, signedInAssertion(t, e))
	iat, _ = claims["iat"].(float64)
	exp, _ = claims["exp"].(float64)
	if iat == 0 {
		t.Fatalf("the assertion has no iat: %v", claims)
	}
	return iat, exp
}

func TestOptionAssertionTTL(t *testing.T) {
	e := startCaddy(t, "keys {\n\t\t\tassertion_ttl 90s\n\t\t}", "sigra_gate")
	iat, exp := assertionLifetime(t, e)
	if exp-iat != 90 {
		t.Errorf("exp-iat = %v s (iat %v, exp %v); want 90 (assertion_ttl 90s)", exp-iat, iat, exp)
	}
	if now := float64(time.Now().Unix()); exp < now || exp > now+91 {
		t.Errorf("exp %v is not within 90s from now (%v)", exp, now)
	}
}

func TestOptionSigningKeyPEM(t *testing.T) {
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecPriv)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKCS8PrivateKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, alg, pemType string
		der                []byte
		pub                crypto.PublicKey
		sigAlg             jose.SignatureAlgorithm
	}{
		{"Ed25519 PKCS#8", "EdDSA", "PRIVATE KEY", edDER, edPub, jose.EdDSA},
		{"P-256 SEC 1", "ES256", "EC PRIVATE KEY", ecDER, &ecPriv.PublicKey, jose.ES256},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "assertion.pem")
			if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: tc.pemType, Bytes: tc.der}), 0o600); err != nil {
				t.Fatal(err)
			}
			e := startCaddy(t, "keys {\n\t\t\talgorithm "+tc.alg+"\n\t\t\tsigning_key "+path+"\n\t\t}", "sigra_gate")
			token := signedInAssertion(t, e)

			// The assertion verifies against the PEM's public key itself.
			tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{tc.sigAlg})
			if err != nil {
				t.Fatalf("parsing assertion: %v", err)
			}
			var claims map[string]any
			if err := tok.Claims(tc.pub, &claims); err != nil {
				t.Fatalf("assertion does not verify with the signing_key's public key: %v", err)
			}
			if claims["sub"] == nil || claims["iss"] != e.base {
				t.Errorf("claims %v; want sub and iss %s", claims, e.base)
			}

			// The JWKS publishes exactly that key, under the kid used.
			kid, _ := assertionParts(t, e, token)
			_, body := e.get("/.sigra/jwks.json", nil)
			var set jose.JSONWebKeySet
			if err := json.Unmarshal([]byte(body), &set); err != nil {
				t.Fatal(err)
			}
			if len(set.Keys) != 1 {
				t.Fatalf("JWKS has %d keys; want only the signing_key's", len(set.Keys))
			}
			k := set.Keys[0]
			if k.KeyID != kid || k.Algorithm != tc.alg {
				t.Errorf("JWKS key kid %q alg %q; want kid %q alg %s", k.KeyID, k.Algorithm, kid, tc.alg)
			}
			eq, ok := k.Key.(interface{ Equal(crypto.PublicKey) bool })
			if !ok || !eq.Equal(tc.pub) {
				t.Errorf("JWKS key %T is not the signing_key's public key", k.Key)
			}
			if err := e.rt().keys.Rotate(t.Context(), ""); err == nil {
				t.Error("rotating a PEM-file key succeeded; want it refused")
			}
		})
	}
}

// A new key in the signing_key file, reloaded, signs at once (the old
// one's private half was never stored, so it cannot go on signing), and
// the change is an admin.keys.rotate row as a change of algorithm is,
// even when a CLI run met the new file first.
func TestSigningKeyFileChangeIsARow(t *testing.T) {
	path := writeEd25519Key(t, filepath.Join(t.TempDir(), "assertion.pem"))
	e := startCaddy(t, "keys {\n\t\t\tsigning_key "+path+"\n\t\t}", "sigra_gate")
	before, _ := assertionParts(t, e, signedInAssertion(t, e))
	writeEd25519Key(t, path)
	if err := e.load(e.config); err != nil {
		t.Fatal(err)
	}
	if r, _ := e.get("/x", nil); r.StatusCode != 200 {
		t.Fatalf("signed-in request after the reload: status %d", r.StatusCode)
	}
	h, _ := e.up.last()
	after, _ := assertionParts(t, e, h.Get(hdrAssertion))
	if after == before {
		t.Fatal("the reload with a new signing_key file kept the old key")
	}
	var rows []audit.Row
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if rows = e.auditRows("admin.keys.rotate"); len(rows) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(rows) != 1 || rows[0].Metadata["reason"] != "config" || rows[0].Metadata["kid"] != after || rows[0].Metadata["previous_kid"] != before {
		t.Errorf("admin.keys.rotate rows %+v; want one, reason config, kid %s, previous %s", rows, after, before)
	}

	// A CLI run on the stopped store after the next change of file
	// stores nothing of it: the start that follows does, with its row.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	writeEd25519Key(t, path)
	cf := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cf, []byte(e.config), 0o600); err != nil {
		t.Fatal(err)
	}
	listed, err := runKeysOp(context.Background(), cliFlags{config: cf, adapter: "caddyfile"}, keysRequest{Op: "list"})
	if err != nil {
		t.Fatal(err)
	}
	third := listed.Keys[0].KID
	if err := e.load(e.config); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if rows = e.auditRows("admin.keys.rotate"); len(rows) > 1 || time.Now().After(deadline) {
			break
		}
	}
	if len(rows) != 2 || rows[0].Metadata["kid"] != third || rows[0].Metadata["previous_kid"] != after {
		t.Errorf("admin.keys.rotate rows after a CLI run and a start %+v; want a second, kid %s, previous %s", rows, third, after)
	}
}

// A session keeps the end it was given at sign-in, bounded by the
// lifetime in force: cutting lifetime (after an incident) ends the
// sessions signed in under the longer one, at the next request after a
// reload; lengthening it lengthens none.
func TestShorterLifetimeEndsOlderSessions(t *testing.T) {
	fake := useFakeClock(t)
	long := "session {\n\t\t\tlifetime 12h\n\t\t\tidle 3h\n\t\t}"
	short := "session {\n\t\t\tlifetime 1h\n\t\t\tidle 1h\n\t\t}"
	e := startCaddy(t, long, "sigra_gate")
	u := e.addUser("lea@example.com")
	_, old := mustSession(t, e, u)
	get := func(tok string) int {
		r := e.do(http.MethodGet, "/x", map[string]string{"Cookie": "sigra_session=" + tok, "Accept": "application/json"}, nil)
		r.Body.Close()
		return r.StatusCode
	}
	fake.Advance(2 * time.Hour)
	if code := get(old); code != http.StatusOK {
		t.Fatalf("a session 2h old under lifetime 12h: status %d; want 200", code)
	}
	if err := e.load(e.caddyfile(short, "sigra_gate")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if code := get(old); code != http.StatusUnauthorized {
		t.Errorf("a session 2h old after lifetime became 1h: status %d; want 401", code)
	}
	_, fresh := mustSession(t, e, u)
	if code := get(fresh); code != http.StatusOK {
		t.Fatalf("a new session under lifetime 1h: status %d; want 200", code)
	}
	if err := e.load(e.caddyfile(long, "sigra_gate")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	fake.Advance(90 * time.Minute)
	if code := get(fresh); code != http.StatusUnauthorized {
		t.Errorf("a session signed in under lifetime 1h, 90m later under 12h: status %d; want 401 (not lengthened)", code)
	}
}

func TestOptionAuditRetention(t *testing.T) {
	fake := useFakeClock(t)
	global := "audit {\n\t\t\tretention 1h\n\t\t}"
	e := startCaddy(t, global, "sigra_gate")
	u := e.addUser("ret@example.com")
	e.mustLogin("ret@example.com") // an auth.login.success row now
	oldRows := e.auditRows("auth.login.success")
	if len(oldRows) != 1 {
		t.Fatalf("%d login rows; want 1", len(oldRows))
	}

	fake.Advance(2 * time.Hour)
	e.mustLogin("ret@example.com") // and one 2h later
	if n := len(e.auditRows("auth.login.success")); n != 2 {
		t.Fatalf("%d login rows before retention ran; want 2", n)
	}

	// Retention runs when the app starts (and then hourly): reload.
	if err := e.load(e.caddyfile(global, "sigra_gate")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	var rows []string
	for range 200 {
		rows = rows[:0]
		for _, r := range e.auditRows("auth.login.success") {
			rows = append(rows, r.OccurredAt.Format(time.RFC3339))
		}
		if len(rows) == 1 {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if len(rows) != 1 {
		t.Fatalf("login rows after retention 1h: %v; want only the one from now (the 2h old one pruned)", rows)
	}
	if rows[0] == oldRows[0].OccurredAt.Format(time.RFC3339) {
		t.Errorf("retention kept the old row and pruned the new one: %v", rows)
	}
	if got := e.auditRows("auth.login.success")[0].ActorID; got != u.ID {
		t.Errorf("remaining row by %s; want %s", got, u.ID)
	}
}

// An encryption_key from an unset environment variable is refused, naming
// the placeholder, instead of sealing with an empty or a fresh key; a
// literal key never appears in the error.
func TestEncryptionKeyErrorsNameThePlaceholder(t *testing.T) {
	const name = "SIGRA_TEST_ENCRYPTION_KEY"
	validate := func(key string) error {
		a := &App{Keys: &KeysConfig{Algorithm: authcore.AlgEdDSA, EncryptionKey: key}}
		return a.Validate()
	}
	t.Setenv(name, "") // restored after the test
	os.Unsetenv(name)
	err := validate("{env." + name + "}")
	if err == nil || !strings.Contains(err.Error(), "{env."+name+"}") || !strings.Contains(err.Error(), "empty") {
		t.Errorf("unset variable: %v; want an error naming {env.%s} as empty", err, name)
	}
	t.Setenv(name, "c2hvcnQ=")
	if err := validate("{env." + name + "}"); err == nil || !strings.Contains(err.Error(), "{env."+name+"}") || strings.Contains(err.Error(), "c2hvcnQ=") {
		t.Errorf("short key from the variable: %v; want an error naming the placeholder, not the value", err)
	}
	if err := validate("c2hvcnQ="); err == nil || strings.Contains(err.Error(), "c2hvcnQ=") {
		t.Errorf("short literal key: %v; want an error without the value", err)
	}
	t.Setenv(name, base64.StdEncoding.EncodeToString(make([]byte, 32)))
	a := &App{Keys: &KeysConfig{EncryptionKey: "{env." + name + "}"}}
	if k, err := a.configuredEncryptionKey(); err != nil || len(k) != 32 {
		t.Errorf("a 32-byte key from the variable: %d bytes, %v", len(k), err)
	}
}

// A store that has started whose encryption.key is gone is refused at
// start, naming the file, and no new key takes the old one's place (it
// could read nothing, and would have to be overwritten once the old one
// is found); with the file back, it starts. A key that is not the one
// the store was sealed with is named, with where it came from.
func TestMissingOrWrongEncryptionKey(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	e.addUser("kim@example.com")
	keyFile := filepath.Join(e.dir, "encryption.key")
	saved, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	err = e.load(e.config)
	if err == nil || !strings.Contains(err.Error(), keyFile+" is missing") || !strings.Contains(err.Error(), "restore the file") {
		t.Fatalf("start without the key file: %v; want an error naming %s as missing", err, keyFile)
	}
	if _, serr := os.Stat(keyFile); !os.IsNotExist(serr) {
		t.Fatalf("a start without the key file made a new one (stat: %v)", serr)
	}

	other := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "\n"
	if err := os.WriteFile(keyFile, []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.load(e.config); err == nil || !strings.Contains(err.Error(), "sealed with another encryption key") || !strings.Contains(err.Error(), "the key file "+keyFile) {
		t.Fatalf("start with another key file: %v; want an error saying the key is not the store's, naming the file", err)
	}
	const name = "SIGRA_TEST_OTHER_KEY"
	t.Setenv(name, strings.TrimSpace(other))
	orig := e.config
	cf := strings.Replace(orig, "sigra {", "sigra {\n\t\tkeys {\n\t\t\tencryption_key {env."+name+"}\n\t\t}", 1)
	if err := e.load(cf); err == nil || !strings.Contains(err.Error(), "{env."+name+"}") || strings.Contains(err.Error(), strings.TrimSpace(other)) {
		t.Fatalf("start with another key from the environment: %v; want an error naming the placeholder, not the key", err)
	}

	if err := os.WriteFile(keyFile, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.load(orig); err != nil {
		t.Fatalf("start with the key file restored: %v", err)
	}
	e.mustLogin("kim@example.com")
}

// caddy validate checks the encryption key against a store no Caddy has
// open, as the start would: the generated key file must be there, and
// the key (the file's, or keys { encryption_key }) must open its
// secrets. A store a running Caddy holds is not read (its start checked).
func TestValidateChecksTheEncryptionKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sigra.db")
	if err := appOn(t, path).Stop(); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "encryption.key")
	saved, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	validate := func(key string) error {
		t.Helper()
		a := &App{Storage: &StorageConfig{Path: path}, BootstrapAdmin: "off"}
		if key != "" {
			a.Keys = &KeysConfig{EncryptionKey: key}
		}
		if err := a.setDefaults(); err != nil {
			t.Fatal(err)
		}
		return a.Validate()
	}
	if err := validate(""); err != nil {
		t.Fatalf("the store with its key file: %v", err)
	}
	if err := validate(strings.TrimSpace(string(saved))); err != nil {
		t.Errorf("the store with its key configured: %v", err)
	}
	other := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	if err := validate(other); err == nil || !strings.Contains(err.Error(), "sealed with another encryption key") || strings.Contains(err.Error(), other) {
		t.Errorf("another key configured: %v; want the store's key asked for, the key not shown", err)
	}
	if err := os.WriteFile(keyFile, []byte(other+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := validate(""); err == nil || !strings.Contains(err.Error(), "sealed with another encryption key") || !strings.Contains(err.Error(), keyFile) {
		t.Errorf("another key file: %v; want the store's key asked for, naming the file", err)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := validate(""); err == nil || !strings.Contains(err.Error(), keyFile+" is missing") {
		t.Errorf("the key file gone: %v; want it named as missing", err)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("validate made a key file (stat: %v)", err)
	}
	if err := os.WriteFile(keyFile, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	running := appOn(t, path)
	defer running.Stop()
	if err := validate(other); err != nil {
		t.Errorf("another key, the store held by a running app: %v; want it passed (not read)", err)
	}
}

// A storage path from an unset variable is an error naming it, not the
// default store in Caddy's data directory (a second, empty one).
func TestStoragePathFromUnsetVariable(t *testing.T) {
	const name = "SIGRA_TEST_STORE"
	t.Setenv(name, "")
	os.Unsetenv(name)
	a := &App{Storage: &StorageConfig{Path: "{env." + name + "}"}}
	if err := a.setDefaults(); err == nil || !strings.Contains(err.Error(), "{env."+name+"}") {
		t.Fatalf("setDefaults with an unset storage variable: %v; want an error naming it", err)
	}
	// A variable for a part of the path is checked as well: without it the
	// path still names a file, in another place.
	a = &App{Storage: &StorageConfig{Path: "/tmp/stores/{env." + name + "}/sigra.db"}}
	if err := a.setDefaults(); err == nil || !strings.Contains(err.Error(), "{env."+name+"}") {
		t.Fatalf("setDefaults with an unset variable in the storage path: %v (path %q); want an error naming it", err, a.storagePath)
	}
	t.Setenv(name, "/tmp/somewhere/sigra.db")
	a = &App{Storage: &StorageConfig{Path: "{env." + name + "}"}}
	if err := a.setDefaults(); err != nil || a.storagePath != "/tmp/somewhere/sigra.db" {
		t.Fatalf("setDefaults with the variable set: path %q, %v", a.storagePath, err)
	}
	// A directory is not a store file, and not a damaged one either.
	a = &App{Storage: &StorageConfig{Path: t.TempDir()}}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "is a directory: name the store file in it") {
		t.Fatalf("Validate with a directory as the store: %v; want it named as a directory", err)
	}
	// ~ is a shell's: Caddy would make a directory named ~ and a new,
	// empty store in it.
	a = &App{Storage: &StorageConfig{Path: "~/sigra.db"}}
	if err := a.setDefaults(); err == nil || !strings.Contains(err.Error(), "does not expand") {
		t.Fatalf("setDefaults with ~/sigra.db: %v; want it refused", err)
	}
}

// caddy validate reads the signing_key file, so a missing file or a key
// that does not suit the algorithm fails validation, before a start
// makes the store.
func TestValidateReadsSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	good := writeEd25519Key(t, filepath.Join(dir, "ed25519.pem"))
	validate := func(path, alg string) error {
		a := &App{Storage: &StorageConfig{Path: filepath.Join(dir, "sigra.db")}, Keys: &KeysConfig{SigningKey: path, Algorithm: alg}}
		if err := a.setDefaults(); err != nil {
			t.Fatal(err)
		}
		return a.Validate()
	}
	if err := validate(good, authcore.AlgEdDSA); err != nil {
		t.Errorf("an Ed25519 key with EdDSA: %v", err)
	}
	missing := filepath.Join(dir, "missing.pem")
	if err := validate(missing, authcore.AlgEdDSA); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("a missing file: %v; want an error naming it", err)
	}
	if err := validate(good, authcore.AlgES256); err == nil || !strings.Contains(err.Error(), "is Ed25519 but algorithm is ES256 (set algorithm EdDSA)") {
		t.Errorf("an Ed25519 key with ES256: %v; want an error naming the algorithm to set", err)
	}
	// An ECDSA key: the curve, or the algorithm to set, whichever is wrong.
	for curve, c := range map[string]struct {
		curve elliptic.Curve
		alg   string
		want  string
	}{
		"P-256 with EdDSA": {elliptic.P256(), authcore.AlgEdDSA, "is ECDSA P-256 but algorithm is EdDSA (set algorithm ES256)"},
		"P-384 with ES256": {elliptic.P384(), authcore.AlgES256, "is ECDSA on P-384; only P-256 (with algorithm ES256) is supported"},
	} {
		k, err := ecdsa.GenerateKey(c.curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, strings.ReplaceAll(curve, " ", "-")+".pem")
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := validate(path, c.alg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", curve, err, c.want)
		}
	}
	// Read without end, or blocked for ever, these would hang validation.
	if err := validate("/dev/zero", authcore.AlgEdDSA); err == nil || !strings.Contains(err.Error(), "/dev/zero is not a regular file") {
		t.Errorf("signing_key /dev/zero: %v; want it refused as no regular file", err)
	}
	fifo := filepath.Join(dir, "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := validate(fifo, authcore.AlgEdDSA); err == nil || !strings.Contains(err.Error(), "fifo.pem is not a regular file") {
		t.Errorf("signing_key on a fifo: %v; want it refused as no regular file", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sigra.db")); !os.IsNotExist(err) {
		t.Errorf("validation made the store (stat: %v)", err)
	}
}

// A key file or store every user can read, or its group replace, is
// accepted with a warning that names the file and the command that
// fixes it; a private one, or one its group may only read, is not
// warned about.
func TestLooseKeyFilesWarn(t *testing.T) {
	dir := t.TempDir()
	signing := writeEd25519Key(t, filepath.Join(dir, "assertion.pem"))
	encryption := filepath.Join(dir, "encryption.key")
	core, logs := observer.New(zap.WarnLevel)
	a := &App{Storage: &StorageConfig{Path: filepath.Join(dir, "sigra.db")}, Keys: &KeysConfig{SigningKey: signing, Algorithm: authcore.AlgEdDSA}}
	a.logger = zap.New(core)
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenBolt(a.storagePath, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// warnings validates (as caddy validate, the CLI and a start do) and
	// returns the paths warned about; then it loads the encryption key
	// as a start does, which must not warn a second time.
	warnings := func() map[string]bool {
		t.Helper()
		if err := a.Validate(); err != nil {
			t.Fatalf("validate: %v", err)
		}
		got := map[string]bool{}
		for _, e := range logs.TakeAll() {
			path, _ := e.ContextMap()["path"].(string)
			if e.ContextMap()["fix"] == "chmod o-rwx,g-w "+path && strings.Contains(e.Message, "other users") {
				got[path] = true
			}
		}
		if _, err := a.encryptionBox(context.Background(), st); err != nil {
			t.Fatalf("encryption key: %v", err)
		}
		if again := logs.TakeAll(); len(again) != 0 {
			t.Errorf("loading the encryption key warned again: %v", again)
		}
		return got
	}

	if got := warnings(); len(got) != 0 { // encryptionBox creates encryption.key, 0600
		t.Errorf("warnings about files only their owner can read: %v", got)
	}
	for _, c := range []struct {
		mode os.FileMode
		warn bool
	}{
		{0o640, false}, // root:caddy 0640: the group is Caddy's
		{0o644, true},
		{0o604, true},
		{0o660, true}, // the group could replace the key
	} {
		files := []string{signing, encryption, a.storagePath}
		for _, p := range files {
			if err := os.Chmod(p, c.mode); err != nil {
				t.Fatal(err)
			}
		}
		got := warnings()
		for _, p := range files {
			if got[p] != c.warn {
				t.Errorf("mode %#o: warned about %v; want each of %v: %v", c.mode, got, files, c.warn)
				break
			}
		}
	}
}

// writeEd25519Key writes a new Ed25519 private key as PKCS#8 PEM, mode
// 0600, and returns its path.
func writeEd25519Key(t *testing.T, path string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The first admin, made by the gateway on an empty store, is audited
// like any admin added: admin.user.add by the system, marked as the
// bootstrap. A later start makes no user and no row.
func TestBootstrapAdminAudited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	ctx := context.Background()
	rows := func(a *App) []audit.Row {
		t.Helper()
		page, err := a.runtime(ctx).audit.Timeline(ctx, audit.Query{Action: "admin.user.add", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		return page.Rows
	}
	a := startApp(t, &App{Storage: &StorageConfig{Path: path}, BootstrapAdmin: "first@example.com"})
	u, err := a.runtime(ctx).auth.LookupUser(ctx, "first@example.com")
	if err != nil {
		t.Fatalf("the first admin: %v", err)
	}
	got := rows(a)
	if len(got) != 1 {
		t.Fatalf("admin.user.add rows after the first start: %+v; want one", got)
	}
	if r := got[0]; r.ActorType != audit.ActorSystem || r.SubjectID != u.ID || r.Outcome != "success" ||
		r.Metadata["bootstrap"] != "true" || r.Metadata["groups"] != a.AdminGroup {
		t.Errorf("the first admin's row: %+v; want success by the system, subject %s, bootstrap, groups %s", r, u.ID, a.AdminGroup)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	again := startApp(t, &App{Storage: &StorageConfig{Path: path}, BootstrapAdmin: "first@example.com"})
	defer again.Stop()
	if got := rows(again); len(got) != 1 {
		t.Errorf("admin.user.add rows after a second start: %d; want still one", len(got))
	}
}

// An assertion never outlives the session it was signed for: with an
// idle timeout shorter than assertion_ttl, it lives as long as an idle
// session does.
func TestAssertionTTLFollowsShorterIdle(t *testing.T) {
	e := startCaddy(t, "session {\n\t\t\tidle 1m\n\t\t}\n\t\tkeys {\n\t\t\tassertion_ttl 5m\n\t\t}", "sigra_gate")
	if iat, exp := assertionLifetime(t, e); exp-iat != 60 {
		t.Errorf("exp-iat = %v s; want 60 (idle 1m, shorter than assertion_ttl 5m)", exp-iat)
	}
	for _, c := range []struct {
		ttl, idle, want time.Duration
	}{
		{0, 0, 5 * time.Minute},               // both defaults
		{time.Hour, 0, 30 * time.Minute},      // the default idle is shorter
		{time.Minute, time.Hour, time.Minute}, // assertion_ttl is
	} {
		a := &App{Keys: &KeysConfig{AssertionTTL: caddy.Duration(c.ttl)}, Session: &SessionConfig{Idle: caddy.Duration(c.idle)}}
		if got := a.assertionTTL(); got != c.want {
			t.Errorf("assertion_ttl %v, idle %v: lifetime %v; want %v", c.ttl, c.idle, got, c.want)
		}
	}
}

// The first admin's box says how to change the password with the config
// Caddy was started with, as a path a shell takes whatever the caller's
// directory.
func TestStartedConfigForTheFirstAdminBox(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"}, "--config /etc/caddy/Caddyfile --adapter caddyfile"},
		{[]string{"caddy", "run", "--adapter", "caddyfile", "-c", "Caddyfile.example"}, "--config " + filepath.Join(wd, "Caddyfile.example") + " --adapter caddyfile"},
		// A file not named Caddyfile loads as JSON without its adapter:
		// the command must repeat it.
		{[]string{"caddy", "run", "-c", "/etc/caddy/site.conf", "-a", "caddyfile"}, "--config /etc/caddy/site.conf --adapter caddyfile"},
		{[]string{"caddy", "run", "-c/etc/caddy/site.json"}, "--config /etc/caddy/site.json"},
		{[]string{"caddy", "start", "--config=/srv/my site/Caddyfile", "--watch"}, "--config '/srv/my site/Caddyfile'"},
		{[]string{"caddy", "run", "--envfile", "/etc/env", "--config", "/srv/it's;rm"}, `--config '/srv/it'\''s;rm'`},
		{[]string{"caddy", "run", "--resume", "--pidfile", "/run/caddy.pid", "--config", "/etc/c.json"}, "--config /etc/c.json"},
		{[]string{"caddy", "run", "--some-plugin-flag", "--config", "/etc/c.json"}, "--config /etc/c.json"},
		{[]string{"caddy", "run"}, "--config <this config>"},
		{[]string{"caddy", "run", "--config"}, "--config <this config>"},
		{[]string{"caddy", "run", "--config="}, "--config <this config>"},
		{[]string{"caddy", "run", "--resume"}, "--config <this config>"},
		{[]string{"caddy", "adapt", "--config", "/etc/caddy/Caddyfile"}, "--config <this config>"},
		{[]string{"/tmp/go-build/caddymodule.test", "-test.run", "x"}, "--config <this config>"},
		{nil, "--config <this config>"},
	}
	for _, tt := range tests {
		if got := startedConfig(tt.args); got != tt.want {
			t.Errorf("startedConfig(%q) = %q; want %q", tt.args, got, tt.want)
		}
	}
	// Without --config, Caddy loads the Caddyfile in its directory.
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("Caddyfile", []byte(":80\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := startedConfig([]string{"caddy", "run"}), "--config "+filepath.Join(dir, "Caddyfile"); got != want {
		t.Errorf("caddy run beside a Caddyfile: %q; want %q", got, want)
	}
}

// The first admin's box names this binary, which may not be the caddy on
// the PATH (the demo's ./caddy), and goes to the working directory
// first: run elsewhere, the command would not find a store or a signing
// key named relative to it.
func TestPasswdCommand(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "it's here")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	args := []string{"caddy", "run", "--config", "/etc/caddy/Caddyfile"}
	want := "cd " + shellWord(dir) + " && " + shellWord(exe) + " sigra users passwd --config /etc/caddy/Caddyfile --email 'a b@example.com' --password-stdin"
	if got := passwdCommand(args, "a b@example.com"); got != want {
		t.Errorf("passwdCommand: %q; want %q", got, want)
	}
}

// The first admin and its admin.user.add row are one transaction: when
// the row cannot be written, no admin is made (the start fails, and the
// next one tries again), and when it can, both are stored.
func TestBootstrapAdminWithItsRow(t *testing.T) {
	ctx := context.Background()
	a := startApp(t, &App{Storage: &StorageConfig{Path: filepath.Join(t.TempDir(), "sigra.db")}, BootstrapAdmin: "off"})
	defer a.Stop()
	rt := a.runtime(ctx)
	a.BootstrapAdmin = "first@example.com"
	fail := func(r audit.Row) error {
		if r.Action == "admin.user.add" {
			return errors.New("audit store unavailable")
		}
		return nil
	}
	rt.failRecord.Store(&fail)
	if err := a.bootstrapAdmin(ctx, rt); err == nil {
		t.Fatal("the first admin was made while its row failed; want an error")
	}
	if n, err := rt.store.CountUsers(ctx); err != nil || n != 0 {
		t.Fatalf("%d users after the failed row (%v); want none", n, err)
	}
	rt.failRecord.Store(nil)
	if err := a.bootstrapAdmin(ctx, rt); err != nil {
		t.Fatalf("the next try: %v", err)
	}
	u, err := rt.auth.LookupUser(ctx, "first@example.com")
	if err != nil {
		t.Fatalf("the first admin: %v", err)
	}
	page, err := rt.audit.Timeline(ctx, audit.Query{Action: "admin.user.add", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Rows) != 1 || page.Rows[0].SubjectID != u.ID {
		t.Errorf("admin.user.add rows %+v; want one, for %s", page.Rows, u.ID)
	}
}

// A key rotation and its admin.keys.rotate row are one transaction: when
// the row cannot be written the old key still signs and the store holds
// the old set; when it can, the row names the new key and the old.
func TestKeysRotateWithItsRow(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate")
	ctx := context.Background()
	before := e.rt().keys.Keys()
	stored, err := e.rt().store.GetSecret(ctx, "assertion_keys")
	if err != nil {
		t.Fatal(err)
	}
	e.failAudit("admin.keys.rotate")
	if _, err := doKeys(ctx, e.rt(), keysRequest{Op: "rotate"}, nil, ""); err == nil {
		t.Fatal("the keys were rotated while the row failed; want an error")
	}
	now, err := e.rt().store.GetSecret(ctx, "assertion_keys")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.rt().keys.Keys(); len(got) != len(before) || got[0].KID != before[0].KID || !bytes.Equal(now, stored) {
		t.Fatalf("after a rotation whose row failed: keys %+v (were %+v), store changed %v; want nothing changed", got, before, !bytes.Equal(now, stored))
	}
	e.failAudit("")
	res, err := doKeys(ctx, e.rt(), keysRequest{Op: "rotate"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	rows := e.auditRows("admin.keys.rotate")
	if len(rows) != 1 || rows[0].Metadata["kid"] != res.Keys[0].KID || rows[0].Metadata["previous_kid"] != before[0].KID {
		t.Errorf("admin.keys.rotate rows %+v; want one naming %s, previous %s", rows, res.Keys[0].KID, before[0].KID)
	}
}

// A start with nobody in admin_group (bootstrap_admin off) warns that the
// admin surface is closed to all, and says how to make an admin; with
// one, it does not.
func TestNoAdminWarns(t *testing.T) {
	e := startCaddy(t, "", "sigra_gate") // the tests' stores start empty: bootstrap_admin off
	core, logs := observer.New(zap.WarnLevel)
	// The running app's own warning went to its logger at the start.
	a := &App{AdminGroup: running.Load().AdminGroup, logger: zap.New(core)}
	a.warnNoAdmin(e.rt())
	if got := logs.TakeAll(); len(got) != 1 || !strings.Contains(got[0].Message, "no enabled user is in admin_group") || got[0].ContextMap()["admin_group"] != "admins" {
		t.Errorf("warnings with no admin: %+v; want one naming admin_group admins", got)
	}
	e.addUser("boss@example.com", "admins")
	a.warnNoAdmin(e.rt())
	if got := logs.TakeAll(); len(got) != 0 {
		t.Errorf("warnings with an admin: %+v; want none", got)
	}
}
