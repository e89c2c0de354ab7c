package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "24h", time.Hour: "1h", 90 * time.Minute: "1h30m",
		10 * time.Minute: "10m", 30 * time.Second: "30s", 61 * time.Second: "1m1s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestParseJWKSSkipsNonPublicKeys checks that a symmetric key or a private
// key published in a JWKS never becomes a verification key.
func TestParseJWKSSkipsNonPublicKeys(t *testing.T) {
	k := oidctest.NewRSAKey(t, "rsa")
	pub, _ := json.Marshal(k.JWK())
	keys, err := ParseJWKS([]byte(`{"keys":[
		{"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
		{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
		{"kty":"XYZ","kid":"odd"},
		` + string(pub) + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].KeyID != "rsa" {
		t.Fatalf("keys = %v", keys)
	}
	if _, err := ParseJWKS([]byte(`{"keys":[{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}]}`)); err == nil {
		t.Error("a JWKS of only a symmetric key was accepted")
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	iss := oidctest.NewIssuer(t, oidctest.NewRSAKey(t, "k"))
	keys, err := NewRemoteKeys(RemoteConfig{Issuer: iss.URL + "/other", HTTPClient: iss.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Key(context.Background(), "k"); err == nil || errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err = %v, want a fetch error", err)
	}
}

func TestKeyWithoutKid(t *testing.T) {
	a, b := oidctest.NewRSAKey(t, "a"), oidctest.NewRSAKey(t, "b")
	one := []jose.JSONWebKey{a.JWK()}
	if _, err := find(one, ""); err != nil {
		t.Errorf("single key, no kid: %v", err)
	}
	if _, err := find(append(one, b.JWK()), ""); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("two keys, no kid: err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	c := Config{AllowedAlgs: []string{"HS256", "none"}, Leeway: time.Hour, MaxLifetime: -1}
	err := c.Validate()
	for _, want := range []string{"issuer", "audiences", "key set", `"HS256"`, `"none"`, "max lifetime", "leeway"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %s", err, want)
		}
	}
}
