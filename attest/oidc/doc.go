// Package oidc verifies the signed JWTs that the token-based attestors
// (kubernetes, github) accept: one issuer, asymmetric signatures only, keys
// from the issuer's JWKS.
//
// The signature, iss and exp are verified by go-oidc's IDTokenVerifier
// (github.com/coreos/go-oidc/v3), with the [KeySet] as its key set. go-oidc
// runs with SkipClientIDCheck, because its ClientID names a single audience:
// the [Verifier] checks aud against Config.Audiences itself, on the payload
// go-oidc verified. The Verifier adds the stricter checks below before and
// after go-oidc, so that a token go-oidc alone would accept (an nbf or iat
// in the future, a lifetime beyond MaxLifetime, an embedded key header) is
// still refused.
//
// A [Verifier] refuses, with an *attest.Error whose Reason names the
// problem and never contains any part of the token:
//
//   - tokens longer than Config.MaxTokenSize (default 16 KiB) before any
//     parsing ("token too large"), and anything that is not three strict
//     base64url segments of JSON ("malformed token");
//   - a header whose alg is not in Config.AllowedAlgs — "none" and HS*
//     can never be allowed ("algorithm not allowed") — or that carries jwk,
//     jku, x5u, x5c or crit, so a token can never name its own key;
//   - an iss other than Config.Issuer, exactly ("unknown issuer");
//   - a kid the key set does not hold ("unknown signing key") and a
//     signature that does not verify ("bad signature");
//   - an aud without one of Config.Audiences ("wrong audience");
//   - a missing exp, an exp in the past or an nbf/iat in the future beyond
//     Config.Leeway (at most 60s), and exp minus iat beyond
//     Config.MaxLifetime ("token lifetime exceeds 24h").
//
// Keys come from a [KeySet]: [RemoteKeys] (OIDC discovery or a JWKS URL,
// refetched on an unknown kid and after DefaultKeysMaxAge, so rotation
// needs no restart) or [FileKeys] (a JWKS file re-read when it changes).
// RemoteConfig.Header (a credential for the key source) is sent only to the
// origin of RemoteConfig.Issuer and RemoteConfig.HeaderOrigins; a jwks_uri
// or redirect elsewhere is fetched with no header but Accept.
//
// Usage:
//
//	keys, _ := oidc.NewRemoteKeys(oidc.RemoteConfig{Issuer: iss})
//	v, err := oidc.NewVerifier(oidc.Config{Method: attest.MethodGitHub,
//		Issuer: iss, Audiences: []string{"credbroker"}, Keys: keys,
//		AllowedAlgs: []string{"RS256"}, MaxLifetime: time.Hour})
//	tok, err := v.Verify(ctx, raw) // tok.Subject, tok.Claims
package oidc
