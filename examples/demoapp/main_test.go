package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The demo app is the README's example of verifying the assertion, so it
// checks what an app must: the signature, the time, and that iss and aud
// are this site.
func TestVerifierChecksIssuerAndAudience(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k1", Algorithm: string(jose.EdDSA), Use: "sig"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jwks)
	}))
	defer srv.Close()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: priv, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	const site = "https://app.example.com"
	sign := func(iss, aud string) string {
		now := time.Now()
		tok, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: iss, Audience: jwt.Audience{aud}, Subject: "u1",
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute))}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	v := &verifier{url: srv.URL, origin: site}
	if claims, err := v.verify(context.Background(), sign(site, site)); err != nil || claims["sub"] != "u1" {
		t.Fatalf("this site's assertion: %v, %v", claims, err)
	}
	for _, tt := range []struct{ name, iss, aud, want string }{
		{"another issuer", "https://other.example.com", site, "issuer"},
		{"another audience", site, "https://other.example.com", "audience"},
	} {
		if _, err := v.verify(context.Background(), sign(tt.iss, tt.aud)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: verify = %v; want an error about the %s", tt.name, err, tt.want)
		}
	}
}

// A key the gateway stopped publishing stops verifying within
// keysMaxAge, however long the app has run: the app fetches the set
// again once it is that old.
func TestVerifierDropsUnpublishedKeys(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	published := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		set := jose.JSONWebKeySet{}
		if published {
			set.Keys = []jose.JSONWebKey{{Key: pub, KeyID: "k1", Algorithm: string(jose.EdDSA), Use: "sig"}}
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer srv.Close()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: priv, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	const site = "https://app.example.com"
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: site, Audience: jwt.Audience{site}, Subject: "u1",
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	clock := now
	v := &verifier{url: srv.URL, origin: site, now: func() time.Time { return clock }}
	if _, err := v.verify(context.Background(), tok); err != nil {
		t.Fatalf("while published: %v", err)
	}
	published = false
	clock = clock.Add(keysMaxAge - time.Second)
	if _, err := v.verify(context.Background(), tok); err != nil {
		t.Errorf("within keysMaxAge of the fetch: %v; want the cached key still used", err)
	}
	clock = clock.Add(2 * time.Second)
	if _, err := v.verify(context.Background(), tok); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("after keysMaxAge, the key unpublished: %v; want it refused", err)
	}
}
