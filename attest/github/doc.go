// Package github attests GitHub Actions workflows by their OIDC token.
//
// An [Attestor] verifies the raw JWT a job obtained from GitHub (the
// broker strips "Bearer "): RS256 only by default, signed by a key in the
// JWKS found by OIDC discovery of Config.Issuer (default
// https://token.actions.githubusercontent.com) or at Config.JWKSURL; iss
// exactly Config.Issuer; aud containing one of Config.Audiences; exp, nbf
// and iat within Config.Leeway (at most 60s); exp - iat at most
// Config.MaxLifetime (default 1h — GitHub's tokens live 5-10 minutes). The
// checks and their caller-safe reasons are those of package
// [github.com/credbroker/credbroker/attest/oidc]. Keys are refetched on an
// unknown kid and every 5 minutes, so GitHub's key rotation needs no
// restart.
//
// The Identity is
//
//	Method:  "github"
//	Subject: the token's sub, e.g. "repo:acme/payments:ref:refs/heads/main"
//	Claims:  repository, repository_id, repository_owner,
//	         repository_owner_id, ref, ref_type, environment, workflow_ref,
//	         job_workflow_ref, event_name, run_id, actor, sha — strings, as
//	         GitHub sends them; absent claims are omitted.
//
// Usage:
//
//	a, err := github.New(ctx, github.Config{Audiences: []string{"credbroker"}})
//	id, err := a.Attest(ctx, rawJWT)
//	if errors.Is(err, attest.ErrFailed) { … 401 … }
//
// Every failure is an *attest.Error whose Reason never contains the token.
package github
