package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/attest/oidc"
)

// DefaultIssuer is GitHub Actions' token issuer.
const DefaultIssuer = "https://token.actions.githubusercontent.com"

// DefaultMaxLifetime caps exp - iat. GitHub issues Actions tokens for about
// 5 to 10 minutes; an hour leaves room for GHES configurations while still
// refusing long-lived tokens from a misconfigured or compromised issuer.
const DefaultMaxLifetime = time.Hour

// claimNames are copied from the token into Identity.Claims as strings when
// present.
var claimNames = []string{
	"repository", "repository_id", "repository_owner", "repository_owner_id",
	"ref", "ref_type", "environment", "workflow_ref", "job_workflow_ref",
	"event_name", "run_id", "actor", "sha",
}

// Config configures an Attestor. Zero values take the documented defaults.
type Config struct {
	// Issuer defaults to DefaultIssuer; set it for GitHub Enterprise
	// Server or tests. Matched exactly against iss.
	Issuer string
	// Audiences are the broker's audiences; a token must carry one. Required.
	Audiences []string
	// JWKSURL, if set, is fetched instead of discovering the JWKS.
	JWKSURL string
	// AllowedAlgs defaults to RS256.
	AllowedAlgs []string
	// MaxLifetime defaults to DefaultMaxLifetime.
	MaxLifetime time.Duration
	// Leeway is the clock skew tolerated, at most 60s; 0 means 60s.
	Leeway time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// HTTPClient defaults to a client with a 10s timeout.
	HTTPClient *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	errs = append(errs, oidc.CheckSettings(c.Audiences, c.AllowedAlgs, c.MaxLifetime, c.Leeway)...)
	return errors.Join(errs...)
}

// Attestor verifies GitHub Actions OIDC tokens.
type Attestor struct {
	v *oidc.Verifier
}

// New validates cfg and returns an Attestor. It makes no network request:
// keys are fetched on first use.
func New(ctx context.Context, cfg Config) (*Attestor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	if len(cfg.AllowedAlgs) == 0 {
		cfg.AllowedAlgs = []string{"RS256"}
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	keys, err := oidc.NewRemoteKeys(oidc.RemoteConfig{
		Issuer: cfg.Issuer, JWKSURL: cfg.JWKSURL, HTTPClient: cfg.HTTPClient,
		Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	v, err := oidc.NewVerifier(oidc.Config{
		Method: attest.MethodGitHub, Issuer: cfg.Issuer, Audiences: cfg.Audiences,
		Keys: keys, AllowedAlgs: cfg.AllowedAlgs, MaxLifetime: cfg.MaxLifetime,
		Leeway: cfg.Leeway, Now: cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	return &Attestor{v: v}, nil
}

// Issuer returns the exact issuer this attestor accepts.
func (a *Attestor) Issuer() string { return a.v.Issuer() }

// Attest verifies token (the raw JWT) and returns the workflow's identity.
// Every failure is an *attest.Error.
func (a *Attestor) Attest(ctx context.Context, token string) (attest.Identity, error) {
	t, err := a.v.Verify(ctx, token)
	if err != nil {
		return attest.Identity{}, err
	}
	if t.Subject == "" {
		return attest.Identity{}, attest.Failf(attest.MethodGitHub, "token has no subject")
	}
	claims := make(map[string]any, len(claimNames))
	for _, name := range claimNames {
		if s, ok := oidc.StringClaim(t.Claims, name); ok {
			claims[name] = s
		}
	}
	return attest.Identity{Method: attest.MethodGitHub, Subject: t.Subject, Claims: claims}, nil
}
