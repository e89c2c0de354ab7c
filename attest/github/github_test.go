package github_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/attest/github"
	"github.com/credbroker/credbroker/attest/oidc"
	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

const brokerAudience = "credbroker"

// actions stands for GitHub's token.actions.githubusercontent.com: its OIDC
// discovery document and JWKS, served by a local TLS issuer with real keys.
type actions struct {
	iss   *oidctest.Issuer
	key   *oidctest.Key
	clock *oidctest.Clock
}

func newActions(t testing.TB) *actions {
	t.Helper()
	g := &actions{key: oidctest.NewRSAKey(t, "cc413527-173f-5a05-976e-9c52b1d7b431"), clock: oidctest.NewClock(time.Now().Truncate(time.Second))}
	g.iss = oidctest.NewIssuer(t, g.key)
	return g
}

// claims returns the claims of a push-triggered job's token, shaped as
// GitHub documents them, valid for 5 minutes from the clock.
func (g *actions) claims() map[string]any {
	now := g.clock.Now()
	return map[string]any{
		"jti":                   "example-id",
		"sub":                   "repo:acme/payments:environment:prod",
		"environment":           "prod",
		"aud":                   brokerAudience,
		"ref":                   "refs/heads/main",
		"sha":                   "example-sha",
		"repository":            "acme/payments",
		"repository_owner":      "acme",
		"actor_id":              "12",
		"repository_visibility": "private",
		"repository_id":         "74",
		"repository_owner_id":   "65",
		"run_id":                "example-run-id",
		"run_number":            "10",
		"run_attempt":           "2",
		"runner_environment":    "github-hosted",
		"actor":                 "octocat",
		"workflow":              "example-workflow",
		"head_ref":              "",
		"base_ref":              "",
		"event_name":            "workflow_dispatch",
		"ref_type":              "branch",
		"job_workflow_ref":      "acme/automation/.github/workflows/deploy.yml@refs/heads/main",
		"workflow_ref":          "acme/payments/.github/workflows/ci.yml@refs/heads/main",
		"iss":                   g.iss.URL,
		"nbf":                   now.Add(-5 * time.Second).Unix(),
		"exp":                   now.Add(5 * time.Minute).Unix(),
		"iat":                   now.Unix(),
	}
}

func (g *actions) config() github.Config {
	return github.Config{
		Issuer:     g.iss.URL,
		Audiences:  []string{brokerAudience},
		Now:        g.clock.Now,
		HTTPClient: g.iss.Client(),
		Logger:     slog.New(slog.DiscardHandler),
	}
}

func newAttestor(t testing.TB, cfg github.Config) *github.Attestor {
	t.Helper()
	a, err := github.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAttestValid(t *testing.T) {
	g := newActions(t)
	for name, jwksURL := range map[string]string{"discovery": "", "jwks_url": g.iss.URL + oidctest.JWKSPath} {
		cfg := g.config()
		cfg.JWKSURL = jwksURL
		a := newAttestor(t, cfg)
		if a.Issuer() != g.iss.URL {
			t.Errorf("Issuer() = %q", a.Issuer())
		}
		claims := g.claims()
		claims["repository_owner_id"] = 65 // a number is kept in its JSON spelling
		id, err := a.Attest(context.Background(), oidctest.Sign(t, g.key, claims, nil))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := attest.Identity{Method: attest.MethodGitHub, Subject: "repo:acme/payments:environment:prod", Claims: map[string]any{
			"repository": "acme/payments", "repository_id": "74", "repository_owner": "acme",
			"repository_owner_id": "65", "ref": "refs/heads/main", "ref_type": "branch",
			"environment": "prod", "workflow_ref": "acme/payments/.github/workflows/ci.yml@refs/heads/main",
			"job_workflow_ref": "acme/automation/.github/workflows/deploy.yml@refs/heads/main",
			"event_name":       "workflow_dispatch", "run_id": "example-run-id", "actor": "octocat", "sha": "example-sha",
		}}
		if !reflect.DeepEqual(id, want) {
			t.Errorf("%s: identity\n got %#v\nwant %#v", name, id, want)
		}
	}
}

func TestAbsentClaimsOmitted(t *testing.T) {
	g := newActions(t)
	a := newAttestor(t, g.config())
	claims := g.claims()
	delete(claims, "environment")
	claims["sub"] = "repo:acme/payments:ref:refs/heads/main"
	id, err := a.Attest(context.Background(), oidctest.Sign(t, g.key, claims, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := id.Claims["environment"]; ok {
		t.Errorf("environment present: %v", id.Claims)
	}
}

func TestDefaultIssuer(t *testing.T) {
	a, err := github.New(context.Background(), github.Config{Audiences: []string{brokerAudience}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Issuer() != "https://token.actions.githubusercontent.com" {
		t.Errorf("Issuer() = %q", a.Issuer())
	}
}

func checkRefused(t *testing.T, token string, err error, reason string) {
	t.Helper()
	var ae *attest.Error
	if !errors.As(err, &ae) || !errors.Is(err, attest.ErrFailed) {
		t.Fatalf("err = %v, want an *attest.Error", err)
	}
	if ae.Method != attest.MethodGitHub {
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
	g := newActions(t)
	bad := oidctest.BadTokens(t, g.iss, g.key, g.claims, g.clock.Now(), time.Hour+time.Minute, "token lifetime exceeds 1h")
	ec := oidctest.NewECKey(t, "ec-1")
	g.iss.Publish(g.key, ec)
	noSub := g.claims()
	delete(noSub, "sub")
	bad = append(bad,
		oidctest.BadToken{Name: "ES256 not allowed by default", Token: oidctest.Sign(t, ec, g.claims(), nil), Reason: "algorithm not allowed"},
		oidctest.BadToken{Name: "no subject", Token: oidctest.Sign(t, g.key, noSub, nil), Reason: "token has no subject"},
	)
	a := newAttestor(t, g.config())
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

func TestKeyRotation(t *testing.T) {
	g := newActions(t)
	a := newAttestor(t, g.config())
	ctx := context.Background()
	old := g.key
	if _, err := a.Attest(ctx, oidctest.Sign(t, old, g.claims(), nil)); err != nil {
		t.Fatal(err)
	}
	next := oidctest.NewRSAKey(t, "rotated")
	g.iss.Publish(old, next)
	g.clock.Advance(oidc.DefaultRefetchInterval + time.Second)
	if _, err := a.Attest(ctx, oidctest.Sign(t, next, g.claims(), nil)); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	if _, err := a.Attest(ctx, oidctest.Sign(t, old, g.claims(), nil)); err != nil {
		t.Fatalf("old key while still published: %v", err)
	}
	g.iss.Publish(next)
	g.clock.Advance(oidc.DefaultKeysMaxAge + time.Second)
	oldToken := oidctest.Sign(t, old, g.claims(), nil)
	_, err := a.Attest(ctx, oldToken)
	checkRefused(t, oldToken, err, "unknown signing key")
}

// TestUnknownKidRateLimited checks that tokens with made-up key ids do not
// make the attestor refetch the JWKS on every request.
func TestUnknownKidRateLimited(t *testing.T) {
	g := newActions(t)
	a := newAttestor(t, g.config())
	for range 20 {
		_, _ = a.Attest(context.Background(), oidctest.Sign(t, oidctest.NewECKey(t, "made-up"), g.claims(), map[string]any{"alg": "RS256"}))
		_, _ = a.Attest(context.Background(), oidctest.Sign(t, g.key, g.claims(), map[string]any{"kid": "made-up"}))
	}
	if n := g.iss.JWKSRequests.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times, want 1", n)
	}
}

func TestNewValidates(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  github.Config
		want string
	}{
		"no audiences": {github.Config{}, "audiences are required"},
		"HS256":        {github.Config{Audiences: []string{"a"}, AllowedAlgs: []string{"HS256"}}, `algorithm "HS256" is not allowed`},
		"leeway":       {github.Config{Audiences: []string{"a"}, Leeway: time.Hour}, "leeway"},
		"http issuer":  {github.Config{Audiences: []string{"a"}, Issuer: "http://example"}, "not an https URL"},
	} {
		_, err := github.New(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, tc.want)
		}
	}
}

// FuzzAttest: arbitrary strings never panic, are never accepted unless they
// are one of the validly signed seeds, and never come back in an error.
func FuzzAttest(f *testing.F) {
	g := newActions(f)
	a := newAttestor(f, g.config())
	valid := map[string]bool{}
	tok := oidctest.Sign(f, g.key, g.claims(), nil)
	valid[tok] = true
	f.Add(tok)
	for _, b := range oidctest.BadTokens(f, g.iss, g.key, g.claims, g.clock.Now(), 2*time.Hour, "") {
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
	g := newActions(b)
	a := newAttestor(b, g.config())
	tok := oidctest.Sign(b, g.key, g.claims(), nil)
	if _, err := a.Attest(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Attest(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
	}
}
