// Package kubernetes attests workloads by their projected service-account
// token.
//
// An [Attestor] verifies the raw JWT (the broker strips "Bearer "): signed
// with an allowed algorithm (default RS256, ES256; never none or HS*) by a
// key of the cluster's issuer — from Config.JWKSFile (re-read when it
// changes), Config.JWKSURL, or OIDC discovery of Config.Issuer, refetched on
// an unknown kid so key rotation needs no restart; no jwk, jku, x5u, x5c or
// crit header; iss exactly Config.Issuer; aud containing one of
// Config.Audiences (a token for the API server's default audience
// "https://kubernetes.default.svc" only is refused); exp, nbf and iat within
// Config.Leeway (at most 60s); exp - iat at most Config.MaxLifetime (default
// 24h); sub equal to system:serviceaccount:NS:SA of its kubernetes.io claim.
// With Config.TokenReview the API server is then asked too (a TokenReview
// with the broker's audiences in spec.audiences); it must answer
// authenticated, with an audience of ours and the same service account, so a
// token of a deleted pod or service account is refused before it expires.
//
// Config.BearerTokenFile, the broker's own service-account token, is sent
// to the TokenReview API and with discovery and JWKS requests, but only to
// the origin (scheme, host and port) of Config.Issuer or Config.APIServer.
// A jwks_uri (or Config.JWKSURL, or a redirect) on any other origin is
// fetched without it: the keys are public and the tokens they sign are
// verified as usual, and a key host that demands authentication fails the
// fetch ("signing keys unavailable") rather than receive the token.
//
// The Identity is
//
//	Method:  "kubernetes"
//	Subject: "system:serviceaccount:NS:SA"
//	Claims:  namespace, service_account, pod_name, pod_uid (strings; the
//	         pod ones only for pod-bound tokens), audience ([]any of strings)
//
// Usage:
//
//	a, err := kubernetes.New(ctx, kubernetes.Config{
//		Issuer:    "https://kubernetes.default.svc.cluster.local",
//		Audiences: []string{"credbroker"},
//		JWKSFile:  "/etc/credbroker/cluster-jwks.json",
//	})
//	id, err := a.Attest(ctx, rawJWT)
//	if errors.Is(err, attest.ErrFailed) { … 401 … }
//
// Every failure is an *attest.Error whose Reason says what was wrong ("token
// expired", "wrong audience", "unknown signing key", …) and never contains
// the token.
package kubernetes
