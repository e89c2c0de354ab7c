package oidc

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

// FuzzOrigin: the origin of a URL a discovery document names (jwks_uri) or
// a redirect points to decides whether the broker's token goes with the
// request. Whatever the input, origin never panics, and what it returns is
// an http(s) origin that is its own origin.
func FuzzOrigin(f *testing.F) {
	for _, s := range []string{
		"https://Example.COM", "https://example.com:443/path?q#f", "https://[::1]:8443/x", "http://example.com",
		"https://user:pass@example.com", "https://example.com.", "https://%65xample.com", "https://example.com:0",
		"https://", "ftp://example.com", "//example.com", "https:example.com", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		o, err := origin(raw)
		if err != nil {
			return
		}
		if !strings.HasPrefix(o, "https://") && !strings.HasPrefix(o, "http://") {
			t.Fatalf("origin(%q) = %q", raw, o)
		}
		if again, err := origin(o); err != nil || again != o {
			t.Fatalf("origin(%q) = %q, whose origin is %q, %v", raw, o, again, err)
		}
	})
}

// FuzzParseJWKS: a JWKS fetched from an issuer never yields anything but
// public signing keys, and never panics.
func FuzzParseJWKS(f *testing.F) {
	k := oidctest.NewRSAKey(f, "rsa")
	e := oidctest.NewECKey(f, "ec")
	rsaJWK, _ := json.Marshal(k.JWK())
	ecJWK, _ := json.Marshal(e.JWK())
	f.Add([]byte(`{"keys":[` + string(rsaJWK) + `,` + string(ecJWK) + `]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseJWKS(data)
		if err != nil {
			return
		}
		for _, key := range keys {
			switch key.Key.(type) {
			case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			default:
				t.Fatalf("key %q of type %T", key.KeyID, key.Key)
			}
			if key.Use != "" && key.Use != "sig" {
				t.Fatalf("key %q for use %q", key.KeyID, key.Use)
			}
		}
	})
}
