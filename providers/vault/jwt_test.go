package vault

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/providers"
)

// issuer is a local OIDC-style token issuer: an httptest server serving
// its JSON Web Key Set (what Vault's jwt auth fetches from jwks_url, as it
// would from Kubernetes, GitHub Actions or an IdP), and RS256 tokens signed
// with the real key.
type issuer struct {
	srv    *httptest.Server
	signer jose.Signer
	name   string
}

func newIssuer(t testing.TB) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const kid = "test-key-1"
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/keys" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(srv.Close)
	return &issuer{srv: srv, signer: signer, name: "https://issuer.credbroker.test"}
}

// token signs a token for subject with audience, valid for ttl (negative:
// already expired).
func (is *issuer) token(t testing.TB, subject, audience string, ttl time.Duration) string {
	t.Helper()
	now := time.Now()
	s, err := jwt.Signed(is.signer).Claims(jwt.Claims{
		Issuer:    is.name,
		Subject:   subject,
		Audience:  jwt.Audience{audience},
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry:    jwt.NewNumericDate(now.Add(ttl)),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwtAuth enables Vault's jwt auth against the issuer, with a role
// "workloads" (bound audience "credbroker", user_claim sub) whose policy
// is templated on the caller's identity: a workload reads
// secret/teams/<its sub>/*, nothing else.
func (f *fixture) jwtAuth(t testing.TB, is *issuer) {
	t.Helper()
	ctx := context.Background()
	f.enableAuth(t, "jwt", "jwt")
	f.write(t, "auth/jwt/config", map[string]any{"jwks_url": is.srv.URL + "/keys", "bound_issuer": is.name})
	mounts, err := f.root.Sys().ListAuthWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	accessor := mounts["jwt/"].Accessor
	f.putPolicy(t, "team-kv", `path "secret/data/teams/{{identity.entity.aliases.`+accessor+`.name}}/*" { capabilities = ["read"] }`)
	f.write(t, "auth/jwt/role/workloads", map[string]any{
		"role_type":       "jwt",
		"bound_audiences": []string{"credbroker"},
		"user_claim":      "sub",
		"token_policies":  []string{"team-kv"},
		"token_ttl":       "10m",
	})
	f.putKV(t, "teams/alice/db", map[string]any{"password": "alice-db-pw"})
	f.putKV(t, "teams/bob/db", map[string]any{"password": "bob-db-pw"})
}

// liveTokens counts the tokens alive in Vault.
func (f *fixture) liveTokens(t testing.TB) int {
	t.Helper()
	sec, err := f.root.Logical().ListWithContext(context.Background(), "auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := sec.Data["keys"].([]any)
	return len(keys)
}

// TestJWTPassCallerToken: with pass_caller_token the provider logs in to
// Vault with each caller's own token, so Vault's templated policy decides
// per workload: alice reads her team's secret and not bob's, and the other
// way round. Tokens Vault refuses (wrong audience, expired) and a missing
// token fail; the caller's Vault token is revoked after a KV read.
func TestJWTPassCallerToken(t *testing.T) {
	f := newFixture(t)
	is := newIssuer(t)
	f.jwtAuth(t, is)
	ctx := context.Background()
	var log logtest.Buffer
	provider := func(path string) *Provider {
		return mustNew(t, Config{
			Address: f.srv.Addr,
			Auth:    Auth{JWT: &JWTAuth{Role: "workloads", PassCallerToken: true}},
			KV:      &KV{Path: path, Field: "password"},
			Name:    "team-db",
			Logger:  log.Logger(),
		})
	}
	alicePath, bobPath := provider("teams/alice/db"), provider("teams/bob/db")
	alice := is.token(t, "alice", "credbroker", time.Hour)
	bob := is.token(t, "bob", "credbroker", time.Hour)
	tokens := f.liveTokens(t)

	for _, tt := range []struct {
		name   string
		p      *Provider
		token  string
		want   string // the value, or "" for an error
		errHas string
		errIs  error
	}{
		{"alice reads her team's secret", alicePath, alice, "alice-db-pw", "", nil},
		{"bob reads his team's secret", bobPath, bob, "bob-db-pw", "", nil},
		{"alice may not read bob's", bobPath, alice, "", "403", nil},
		{"bob may not read alice's", alicePath, bob, "", "403", nil},
		{"a token for another audience", alicePath, is.token(t, "alice", "someone-else", time.Hour), "", "auth/jwt/login: Vault answered 400", ErrAuth},
		{"an expired token", alicePath, is.token(t, "alice", "credbroker", -time.Minute), "", "auth/jwt/login", ErrAuth},
		{"no caller token", alicePath, "", "", "no verified caller token", ErrNoCallerToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := providers.Request{Name: "team-db", Identity: attest.Identity{Method: attest.MethodKubernetes, Subject: "system:serviceaccount:team:api"}}
			if tt.token != "" {
				req.Token = providers.NewSecret([]byte(tt.token))
			}
			cr, err := tt.p.Credential(ctx, req)
			if tt.want != "" {
				if err != nil || string(cr.Data[FieldValue].Reveal()) != tt.want {
					t.Fatalf("got %q, %v; want %q", cr.Data[FieldValue].Reveal(), err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("read %q, want an error", cr.Data[FieldValue].Reveal())
			}
			if !strings.Contains(err.Error(), tt.errHas) || (tt.errIs != nil && !errors.Is(err, tt.errIs)) {
				t.Errorf("error %v, want %q / %v", err, tt.errHas, tt.errIs)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error carries the caller's token: %v", err)
			}
		})
	}
	if got := f.liveTokens(t); got != tokens {
		t.Errorf("%d tokens alive after the reads, %d before: the callers' Vault tokens were not revoked", got, tokens)
	}
	if strings.Contains(log.String(), alice) || strings.Contains(log.String(), bob) {
		t.Errorf("the log carries a caller's token: %s", log.String())
	}

	// The broker's own JWT from a file: it is alice, to Vault.
	own := mustNew(t, Config{
		Address: f.srv.Addr,
		Auth:    Auth{JWT: &JWTAuth{Role: "workloads", TokenFile: f.file(t, "jwt", alice)}},
		KV:      &KV{Path: "teams/alice/db", Field: "password"},
		Name:    "team-db",
	})
	if cr := issue(t, own, providers.Request{Name: "team-db"}); string(cr.Data[FieldValue].Reveal()) != "alice-db-pw" {
		t.Fatalf("jwt token_file: %q", cr.Data[FieldValue].Reveal())
	}
	if own.sess == nil || own.sess.ttl != 10*time.Minute {
		t.Errorf("jwt token_file session %+v, want the role's 10m TTL", own.sess)
	}
}

// TestJWTPassCallerDynamic: a leased secret issued under a caller's own
// Vault token is renewed and revoked with that token (the broker has none);
// revoking it revokes the caller's token and the lease with it.
func TestJWTPassCallerDynamic(t *testing.T) {
	f := newFixture(t)
	is := newIssuer(t)
	f.jwtAuth(t, is)
	pg := f.databaseEngine(t)
	ctx := context.Background()
	// sys/leases/revoke lets Revoke end the lease synchronously before
	// revoking the caller's token.
	f.putPolicy(t, "db-read", `
path "database/creds/ro" { capabilities = ["read"] }
path "sys/leases/revoke" { capabilities = ["update"] }
`)
	f.write(t, "auth/jwt/role/db", map[string]any{
		"role_type":       "jwt",
		"bound_audiences": []string{"credbroker"},
		"user_claim":      "sub",
		"token_policies":  []string{"db-read"},
		"token_ttl":       "30m",
		"token_max_ttl":   "1h",
	})
	var log logtest.Buffer
	p := mustNew(t, Config{
		Address: f.srv.Addr,
		Auth:    Auth{JWT: &JWTAuth{Role: "db", PassCallerToken: true}},
		Dynamic: &Dynamic{Path: "database/creds/ro"},
		Name:    "orders-db",
		Logger:  log.Logger(),
	})
	alice := is.token(t, "alice", "credbroker", time.Hour)
	req := providers.Request{Name: "orders-db", Identity: caller, Token: providers.NewSecret([]byte(alice))}
	cr := issue(t, p, req)
	if err := login(ctx, pg, cr); err != nil {
		t.Fatal(err)
	}
	renewed, err := p.Renew(ctx, cr.Lease, 10*time.Minute)
	if err != nil || renewed.ExpiresAt.After(time.Now().Add(10*time.Minute)) {
		t.Fatalf("renew with the caller's token: %+v, %v", renewed, err)
	}
	if err := p.Revoke(ctx, cr.Lease); err != nil {
		t.Fatal(err)
	}
	if err := login(ctx, pg, cr); err == nil {
		t.Fatalf("the revoked user still logs in; log:\n%s", log.String())
	}
	if err := p.Revoke(ctx, cr.Lease); err != nil {
		t.Fatalf("revoking again: %v", err)
	}
	if _, err := p.Renew(ctx, cr.Lease, time.Minute); !errors.Is(err, ErrNotRenewable) {
		t.Fatalf("renewing a lease whose caller token is gone: %v, want ErrNotRenewable", err)
	}
	if strings.Contains(log.String(), alice) {
		t.Errorf("the log carries the caller's token: %s", log.String())
	}
}
