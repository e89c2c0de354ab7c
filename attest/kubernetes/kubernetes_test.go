package kubernetes_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/attest/kubernetes"
	"github.com/credbroker/credbroker/attest/oidc"
	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

const brokerAudience = "credbroker"

// cluster stands for a Kubernetes API server: its service-account issuer
// discovery (/.well-known/openid-configuration, /openid/v1/jwks) and its
// TokenReview API, on one TLS server as in a real cluster.
type cluster struct {
	iss   *oidctest.Issuer
	rsa   *oidctest.Key
	ec    *oidctest.Key
	clock *oidctest.Clock

	// brokerToken is the bearer token the broker must present to TokenReview.
	brokerToken string

	mu sync.Mutex
	// revoked subjects are answered authenticated:false, as for a deleted
	// service account or pod.
	revoked map[string]bool
	// audiences, when set, replaces status.audiences (to test a mismatch).
	audiences []string
	reviews   int
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	c := &cluster{
		rsa:         oidctest.NewRSAKey(t, "rsa-1"),
		ec:          oidctest.NewECKey(t, "ec-1"),
		clock:       oidctest.NewClock(time.Now().Truncate(time.Second)),
		brokerToken: "broker-own-token",
		revoked:     map[string]bool{},
	}
	c.iss = oidctest.NewIssuer(t, c.rsa, c.ec)
	keys, err := oidc.NewRemoteKeys(oidc.RemoteConfig{Issuer: c.iss.URL, HTTPClient: c.iss.Client(), Now: c.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	// The API server checks tokens with its own keys and accepts any
	// audience it is asked about that the token carries.
	apiVerifier := func(auds []string) (*oidc.Verifier, error) {
		return oidc.NewVerifier(oidc.Config{
			Issuer: c.iss.URL, Audiences: auds, Keys: keys,
			AllowedAlgs: []string{"RS256", "ES256"}, MaxLifetime: 48 * time.Hour, Now: c.clock.Now,
		})
	}
	c.iss.Mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+c.brokerToken {
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}`, http.StatusUnauthorized)
			return
		}
		var review struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Spec       struct {
				Token     string   `json:"token"`
				Audiences []string `json:"audiences"`
			} `json:"spec"`
		}
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &review) != nil || review.Kind != "TokenReview" || review.APIVersion != "authentication.k8s.io/v1" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.reviews++
		status := map[string]any{"authenticated": false, "user": map[string]any{}}
		v, err := apiVerifier(review.Spec.Audiences)
		if err == nil {
			tok, err := v.Verify(r.Context(), review.Spec.Token)
			switch {
			case err != nil:
				status["error"] = "[invalid bearer token, token lookup failed]"
			case c.revoked[tok.Subject]:
				status["error"] = "[invalid bearer token, service account deleted]"
			default:
				status["authenticated"] = true
				status["user"] = map[string]any{"username": tok.Subject, "groups": []string{"system:serviceaccounts"}}
				var auds []string
				for _, a := range tok.Audience {
					if slices.Contains(review.Spec.Audiences, a) {
						auds = append(auds, a)
					}
				}
				if c.audiences != nil {
					auds = c.audiences
				}
				status["audiences"] = auds
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
			"metadata": map[string]any{"creationTimestamp": nil},
			"spec":     map[string]any{"audiences": review.Spec.Audiences},
			"status":   status,
		})
	})
	return c
}

// claims returns the claims of a pod-bound projected token as the kubelet
// requests it, valid for an hour from the cluster clock.
func (c *cluster) claims() map[string]any {
	now := c.clock.Now()
	return map[string]any{
		"aud": []any{brokerAudience},
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"iss": c.iss.URL,
		"jti": "7d7b9f3a-0d3a-4f0e-9e39-3c1f4d2f6b11",
		"sub": "system:serviceaccount:payments:api",
		"kubernetes.io": map[string]any{
			"namespace": "payments",
			"node":      map[string]any{"name": "node-1", "uid": "2b8a1f2e-cf1d-4b5e-9d0c-1a2b3c4d5e6f"},
			"pod":       map[string]any{"name": "api-5d8f7c9b7-abcde", "uid": "0f9e8d7c-6b5a-4321-8fed-cba987654321"},
			"serviceaccount": map[string]any{
				"name": "api", "uid": "11111111-2222-3333-4444-555555555555",
			},
			"warnafter": now.Add(time.Hour).Unix(),
		},
	}
}

func (c *cluster) config() kubernetes.Config {
	return kubernetes.Config{
		Issuer:     c.iss.URL,
		Audiences:  []string{brokerAudience},
		Now:        c.clock.Now,
		HTTPClient: c.iss.Client(),
		Logger:     slog.New(slog.DiscardHandler),
	}
}

func newAttestor(t testing.TB, cfg kubernetes.Config) *kubernetes.Attestor {
	t.Helper()
	a, err := kubernetes.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func writeJWKS(t testing.TB, c *cluster, mtime time.Time) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, c.iss.JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return path
}

var wantClaims = map[string]any{
	"namespace":       "payments",
	"service_account": "api",
	"pod_name":        "api-5d8f7c9b7-abcde",
	"pod_uid":         "0f9e8d7c-6b5a-4321-8fed-cba987654321",
	"audience":        []any{brokerAudience},
}

func TestAttestValid(t *testing.T) {
	c := newCluster(t)
	jwksFile := writeJWKS(t, c, time.Now())
	sources := map[string]func(*kubernetes.Config){
		"discovery": func(*kubernetes.Config) {},
		"jwks_url":  func(cfg *kubernetes.Config) { cfg.JWKSURL = c.iss.URL + oidctest.JWKSPath },
		"jwks_file": func(cfg *kubernetes.Config) { cfg.JWKSFile = jwksFile },
	}
	for name, set := range sources {
		cfg := c.config()
		set(&cfg)
		a := newAttestor(t, cfg)
		if a.Issuer() != c.iss.URL {
			t.Errorf("%s: Issuer() = %q", name, a.Issuer())
		}
		for _, key := range []*oidctest.Key{c.rsa, c.ec} {
			id, err := a.Attest(context.Background(), oidctest.Sign(t, key, c.claims(), nil))
			if err != nil {
				t.Fatalf("%s/%s: %v", name, key.Alg, err)
			}
			want := attest.Identity{Method: attest.MethodKubernetes, Subject: "system:serviceaccount:payments:api", Claims: wantClaims}
			if !reflect.DeepEqual(id, want) {
				t.Errorf("%s/%s: identity\n got %#v\nwant %#v", name, key.Alg, id, want)
			}
		}
	}
}

// TestAttestWithinLeeway accepts a token expired or not yet valid by less
// than the leeway.
func TestAttestWithinLeeway(t *testing.T) {
	c := newCluster(t)
	a := newAttestor(t, c.config())
	claims := c.claims()
	now := c.clock.Now()
	claims["iat"], claims["nbf"], claims["exp"] = now.Add(-time.Hour).Unix(), now.Add(30*time.Second).Unix(), now.Add(-30*time.Second).Unix()
	if _, err := a.Attest(context.Background(), oidctest.Sign(t, c.rsa, claims, nil)); err != nil {
		t.Fatal(err)
	}
}

func checkRefused(t *testing.T, token string, err error, reason string) {
	t.Helper()
	var ae *attest.Error
	if !errors.As(err, &ae) || !errors.Is(err, attest.ErrFailed) {
		t.Fatalf("err = %v, want an *attest.Error", err)
	}
	if ae.Method != attest.MethodKubernetes {
		t.Errorf("Method = %q", ae.Method)
	}
	if ae.Reason != reason {
		t.Errorf("Reason = %q, want %q", ae.Reason, reason)
	}
	if oidctest.Leaks(token, ae.Reason) || oidctest.Leaks(token, err.Error()) {
		t.Errorf("error contains part of the token: %v", err)
	}
}

func TestAttestRefused(t *testing.T) {
	c := newCluster(t)
	bad := oidctest.BadTokens(t, c.iss, c.rsa, c.claims, c.clock.Now(), 24*time.Hour+time.Minute, "token lifetime exceeds 24h")
	with := func(edit func(map[string]any)) string {
		cl := c.claims()
		edit(cl)
		return oidctest.Sign(t, c.rsa, cl, nil)
	}
	bad = append(bad,
		oidctest.BadToken{Name: "API server default audience only", Reason: "wrong audience",
			Token: with(func(cl map[string]any) { cl["aud"] = []any{kubernetes.APIServerAudience} })},
		oidctest.BadToken{Name: "audience is not a string", Reason: "malformed token",
			Token: with(func(cl map[string]any) { cl["aud"] = []any{1} })},
		oidctest.BadToken{Name: "subject of another service account", Reason: "token subject does not match its kubernetes.io namespace and service account",
			Token: with(func(cl map[string]any) { cl["sub"] = "system:serviceaccount:kube-system:admin" })},
		oidctest.BadToken{Name: "no kubernetes.io claim", Reason: "token has no kubernetes.io claim",
			Token: with(func(cl map[string]any) { delete(cl, "kubernetes.io") })},
		oidctest.BadToken{Name: "kubernetes.io without namespace", Reason: "token's kubernetes.io claim lacks namespace or service account",
			Token: with(func(cl map[string]any) { delete(cl["kubernetes.io"].(map[string]any), "namespace") })},
		oidctest.BadToken{Name: "ES512 not allowed", Reason: "algorithm not allowed",
			Token: oidctest.Sign(t, c.ec, c.claims(), map[string]any{"alg": "ES512"})},
	)
	a := newAttestor(t, c.config())
	for _, tc := range bad {
		t.Run(tc.Name, func(t *testing.T) {
			id, err := a.Attest(context.Background(), tc.Token)
			if err == nil {
				t.Fatalf("accepted: %+v", id)
			}
			checkRefused(t, tc.Token, err, tc.Reason)
		})
	}
}

func TestTokenReview(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(tokenFile, []byte(c.brokerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, c.iss.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := c.config()
	cfg.HTTPClient = nil // trust the API server through CAFile
	cfg.CAFile = caFile
	cfg.TokenReview = true
	cfg.APIServer = c.iss.URL
	cfg.BearerTokenFile = tokenFile
	a := newAttestor(t, cfg)
	token := oidctest.Sign(t, c.rsa, c.claims(), nil)

	t.Run("authenticated", func(t *testing.T) {
		if _, err := a.Attest(context.Background(), token); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("not authenticated", func(t *testing.T) {
		c.mu.Lock()
		c.revoked["system:serviceaccount:payments:api"] = true
		c.mu.Unlock()
		defer func() { c.mu.Lock(); clear(c.revoked); c.mu.Unlock() }()
		_, err := a.Attest(context.Background(), token)
		checkRefused(t, token, err, "token review: token not authenticated by the API server")
	})
	t.Run("audiences mismatch", func(t *testing.T) {
		c.mu.Lock()
		c.audiences = []string{kubernetes.APIServerAudience}
		c.mu.Unlock()
		defer func() { c.mu.Lock(); c.audiences = nil; c.mu.Unlock() }()
		_, err := a.Attest(context.Background(), token)
		checkRefused(t, token, err, "token review: wrong audience")
	})
	t.Run("broker not authorised", func(t *testing.T) {
		if err := os.WriteFile(tokenFile, []byte("stale"), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(tokenFile, []byte(c.brokerToken), 0o600)
		_, err := a.Attest(context.Background(), token)
		checkRefused(t, token, err, "token review unavailable")
	})
	t.Run("forged token never reaches the API server", func(t *testing.T) {
		c.mu.Lock()
		before := c.reviews
		c.mu.Unlock()
		forged := oidctest.Sign(t, oidctest.NewRSAKey(t, "rsa-1"), c.claims(), nil)
		_, err := a.Attest(context.Background(), forged)
		checkRefused(t, forged, err, "bad signature")
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.reviews != before {
			t.Error("a forged token was sent to TokenReview")
		}
	})
}

func TestKeyRotation(t *testing.T) {
	c := newCluster(t)
	a := newAttestor(t, c.config())
	ctx := context.Background()
	old := c.rsa
	if _, err := a.Attest(ctx, oidctest.Sign(t, old, c.claims(), nil)); err != nil {
		t.Fatal(err)
	}
	next := oidctest.NewRSAKey(t, "rsa-2")
	c.iss.Publish(next)
	c.clock.Advance(oidc.DefaultRefetchInterval + time.Second)
	if _, err := a.Attest(ctx, oidctest.Sign(t, next, c.claims(), nil)); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	c.clock.Advance(oidc.DefaultKeysMaxAge + time.Second)
	oldToken := oidctest.Sign(t, old, c.claims(), nil)
	_, err := a.Attest(ctx, oldToken)
	checkRefused(t, oldToken, err, "unknown signing key")
	if _, err := a.Attest(ctx, oidctest.Sign(t, next, c.claims(), nil)); err != nil {
		t.Fatalf("token of the new key after refresh: %v", err)
	}
}

func TestKeyRotationFile(t *testing.T) {
	c := newCluster(t)
	path := writeJWKS(t, c, time.Now().Add(-time.Hour))
	cfg := c.config()
	cfg.JWKSFile = path
	a := newAttestor(t, cfg)
	ctx := context.Background()
	old := c.rsa
	if _, err := a.Attest(ctx, oidctest.Sign(t, old, c.claims(), nil)); err != nil {
		t.Fatal(err)
	}
	next := oidctest.NewECKey(t, "ec-2")
	c.iss.Publish(next)
	if err := os.WriteFile(path, c.iss.JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(ctx, oidctest.Sign(t, next, c.claims(), nil)); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	oldToken := oidctest.Sign(t, old, c.claims(), nil)
	_, err := a.Attest(ctx, oldToken)
	checkRefused(t, oldToken, err, "unknown signing key")
}

func TestKeysUnavailable(t *testing.T) {
	c := newCluster(t)
	cfg := c.config()
	cfg.JWKSURL = c.iss.URL + "/no-such-jwks"
	a := newAttestor(t, cfg)
	token := oidctest.Sign(t, c.rsa, c.claims(), nil)
	_, err := a.Attest(context.Background(), token)
	checkRefused(t, token, err, "signing keys unavailable")
}

func TestNewValidates(t *testing.T) {
	c := newCluster(t)
	for name, tc := range map[string]struct {
		edit func(*kubernetes.Config)
		want string
	}{
		"no issuer":           {func(cfg *kubernetes.Config) { cfg.Issuer = "" }, "issuer is required"},
		"no audiences":        {func(cfg *kubernetes.Config) { cfg.Audiences = nil }, "audiences are required"},
		"API server audience": {func(cfg *kubernetes.Config) { cfg.Audiences = []string{kubernetes.APIServerAudience} }, "the API server's own"},
		"both key sources":    {func(cfg *kubernetes.Config) { cfg.JWKSURL, cfg.JWKSFile = "https://x", "/x" }, "at most one"},
		"review without URL":  {func(cfg *kubernetes.Config) { cfg.TokenReview = true }, "token_review needs api_server"},
		"http API server":     {func(cfg *kubernetes.Config) { cfg.APIServer = "http://10.0.0.1:6443" }, "api_server must be an https URL"},
		"leeway too large":    {func(cfg *kubernetes.Config) { cfg.Leeway = 2 * time.Minute }, "leeway"},
		"HS256":               {func(cfg *kubernetes.Config) { cfg.AllowedAlgs = []string{"HS256"} }, `algorithm "HS256" is not allowed`},
		"none":                {func(cfg *kubernetes.Config) { cfg.AllowedAlgs = []string{"none"} }, `algorithm "none" is not allowed`},
		"http issuer":         {func(cfg *kubernetes.Config) { cfg.Issuer = "http://example" }, "not an https URL"},
		"missing JWKS file":   {func(cfg *kubernetes.Config) { cfg.JWKSFile = "/nonexistent/jwks.json" }, "no such file"},
	} {
		cfg := c.config()
		tc.edit(&cfg)
		_, err := kubernetes.New(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, tc.want)
		}
	}
}

// FuzzAttest feeds arbitrary strings, seeded with valid and refused tokens,
// to an attestor: it must never panic, never accept anything but the valid
// tokens it was seeded with, and never echo the token in an error.
func FuzzAttest(f *testing.F) {
	c := newCluster(f)
	cfg := c.config()
	cfg.JWKSFile = writeJWKS(f, c, time.Now())
	a := newAttestor(f, cfg)
	valid := map[string]bool{}
	for _, key := range []*oidctest.Key{c.rsa, c.ec} {
		tok := oidctest.Sign(f, key, c.claims(), nil)
		valid[tok] = true
		f.Add(tok)
	}
	for _, b := range oidctest.BadTokens(f, c.iss, c.rsa, c.claims, c.clock.Now(), 25*time.Hour, "") {
		f.Add(b.Token)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := a.Attest(context.Background(), token)
		if err == nil {
			if !valid[token] {
				t.Fatalf("accepted a token that was never signed: %+v", id)
			}
			return
		}
		var ae *attest.Error
		if !errors.As(err, &ae) {
			t.Fatalf("error is not an *attest.Error: %v", err)
		}
		if len(token) <= 4096 && oidctest.Leaks(token, err.Error()) {
			t.Fatalf("error contains part of the token: %v", err)
		}
	})
}

// BenchmarkAttest measures one verification with the keys already fetched.
func BenchmarkAttest(b *testing.B) {
	c := newCluster(b)
	a := newAttestor(b, c.config())
	for _, key := range []*oidctest.Key{c.rsa, c.ec} {
		b.Run(key.Alg, func(b *testing.B) {
			tok := oidctest.Sign(b, key, c.claims(), nil)
			if _, err := a.Attest(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Attest(context.Background(), tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDiscoveryUsesBrokerToken: an API server that serves OIDC discovery
// and its JWKS only to authenticated service accounts (the default RBAC of
// system:service-account-issuer-discovery) gets the broker's own token.
func TestDiscoveryUsesBrokerToken(t *testing.T) {
	c := newCluster(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(c.brokerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	token := oidctest.Sign(t, c.rsa, c.claims(), nil)
	for _, tt := range []struct {
		name      string
		tokenFile string
		ok        bool
	}{
		{"anonymous discovery is refused", "", false},
		{"the broker's token is sent", tokenFile, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c.iss.RequireBearer(c.brokerToken)
			defer c.iss.RequireBearer("")
			a, err := kubernetes.New(context.Background(), kubernetes.Config{
				Issuer: c.iss.URL, Audiences: []string{brokerAudience}, BearerTokenFile: tt.tokenFile,
				HTTPClient: c.iss.Client(), Now: c.clock.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.Attest(context.Background(), token)
			if (err == nil) != tt.ok {
				t.Fatalf("Attest: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestBrokerTokenOnlyToIssuerAndAPIServer: the broker's own token goes to
// the issuer's origin and the configured API server's, never to a jwks_uri
// that discovery names elsewhere; those keys are fetched without it, and
// tokens they sign verify.
func TestBrokerTokenOnlyToIssuerAndAPIServer(t *testing.T) {
	c := newCluster(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(c.brokerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	keyHost := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		_, _ = w.Write(c.iss.JWKS())
	}))
	defer keyHost.Close()
	c.iss.RequireBearer(c.brokerToken)
	defer c.iss.RequireBearer("")
	c.iss.SetJWKSURI(keyHost.URL + "/openid/v1/jwks")
	defer c.iss.SetJWKSURI("")
	token := oidctest.Sign(t, c.rsa, c.claims(), nil)

	for _, tt := range []struct {
		name      string
		apiServer string
		want      string // Authorization the key host receives
	}{
		{"key host is neither issuer nor API server", "", ""},
		{"key host is the API server", keyHost.URL, "Bearer " + c.brokerToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := kubernetes.New(context.Background(), kubernetes.Config{
				Issuer: c.iss.URL, Audiences: []string{brokerAudience}, BearerTokenFile: tokenFile,
				APIServer: tt.apiServer, HTTPClient: c.iss.Client(), Now: c.clock.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			before := len(seen)
			mu.Unlock()
			if _, err := a.Attest(context.Background(), token); err != nil {
				t.Fatalf("Attest: %v", err)
			}
			mu.Lock()
			got := seen[before:]
			mu.Unlock()
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("key host received Authorization %q, want one request with %q", got, tt.want)
			}
		})
	}
}
