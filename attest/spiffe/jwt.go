package spiffe

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/credbroker/credbroker/attest"
)

// Reasons an attestation fails, as they appear in attest.Error.Reason. A
// refused trust domain reads "trust domain NAME is not trusted".
const (
	ReasonNoToken            = "no token"
	ReasonTokenTooLarge      = "token too large"
	ReasonMalformedToken     = "malformed token"
	ReasonUnsupportedAlg     = "unsupported signing algorithm (want RS, ES or PS)"
	ReasonNoKeyID            = "token has no key id"
	ReasonBadType            = "token type is not JWT"
	ReasonNoSubject          = "token subject is not a SPIFFE ID"
	ReasonNoExpiry           = "token has no expiry"
	ReasonNoBundle           = "no bundle for the trust domain"
	ReasonUnknownKey         = "unknown signing key"
	ReasonBadSignature       = "invalid signature"
	ReasonTokenExpired       = "token expired"
	ReasonTokenNotYetValid   = "token not yet valid"
	ReasonIssuedInFuture     = "token issued in the future"
	ReasonWrongAudience      = "wrong audience"
	ReasonInvalidToken       = "invalid token"
	ReasonCancelled          = "attestation cancelled"
	ReasonNoCertificate      = "no client certificate"
	ReasonNoSPIFFEID         = "certificate has no SPIFFE ID"
	ReasonNotLeaf            = "certificate is not a leaf X.509-SVID"
	ReasonCertExpired        = "certificate expired"
	ReasonCertNotYetValid    = "certificate not yet valid"
	ReasonCertNotSigned      = "certificate not signed by the trust domain"
	reasonUntrustedTDPattern = "trust domain %s is not trusted"
)

// allowedAlgs are the JWT-SVID signature algorithms (JWT-SVID spec §3.1,
// the set go-spiffe's jwtsvid accepts).
var allowedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
}

// leeway matches go-jose's default, which jwtsvid applies.
const leeway = jwt.DefaultLeeway

// Attest verifies a JWT-SVID bearer token: signed by a JWT authority of the
// trust domain's current bundle, subject a SPIFFE ID in the trust domain, one
// of the configured audiences, not expired. The Identity's Subject is the
// SPIFFE ID. Every failure is an *attest.Error whose Reason never contains
// the token.
func (a *Attestor) Attest(ctx context.Context, token string) (attest.Identity, error) {
	if err := ctx.Err(); err != nil {
		return attest.Identity{}, failf(err, ReasonCancelled)
	}
	switch {
	case token == "":
		return attest.Identity{}, failf(nil, ReasonNoToken)
	case len(token) > MaxTokenSize:
		return attest.Identity{}, failf(nil, "%s (over %d bytes)", ReasonTokenTooLarge, MaxTokenSize)
	}
	svid, err := jwtsvid.ParseAndValidate(token, a.bundles, a.audiences)
	if err != nil {
		return attest.Identity{}, a.explain(token, err)
	}
	// jwtsvid checks exp and nbf against the wall clock; check them against
	// the configured clock as well.
	now := a.now()
	if now.After(svid.Expiry.Add(leeway)) {
		return attest.Identity{}, failf(nil, ReasonTokenExpired)
	}
	if nbf, ok := svid.Claims["nbf"].(float64); ok && now.Add(leeway).Before(time.Unix(int64(nbf), 0)) {
		return attest.Identity{}, failf(nil, ReasonTokenNotYetValid)
	}
	aud := make([]any, len(svid.Audience))
	for i, s := range svid.Audience {
		aud[i] = s
	}
	return attest.Identity{
		Method:  attest.MethodSPIFFE,
		Subject: svid.ID.String(),
		Claims: map[string]any{
			ClaimTrustDomain: svid.ID.TrustDomain().Name(),
			ClaimPath:        svid.ID.Path(),
			ClaimAudience:    aud,
			ClaimExpiry:      svid.Expiry.Unix(),
		},
	}, nil
}

// explain turns a jwtsvid failure into a reason the caller can act on. It
// re-parses the (already refused) token step by step, because jwtsvid's
// errors are strings rather than values to branch on. cause is kept as the
// internal detail.
func (a *Attestor) explain(token string, cause error) *attest.Error {
	hdr, ok := parseHeader(token)
	if !ok {
		return failf(cause, ReasonMalformedToken)
	}
	if !slices.Contains(allowedAlgs, jose.SignatureAlgorithm(hdr.Alg)) {
		return failf(cause, ReasonUnsupportedAlg)
	}
	tok, err := jwt.ParseSigned(token, allowedAlgs)
	if err != nil || len(tok.Headers) != 1 {
		return failf(cause, ReasonMalformedToken)
	}
	if hdr.Typ != nil && *hdr.Typ != "JWT" && *hdr.Typ != "JOSE" {
		return failf(cause, ReasonBadType)
	}
	var claims jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return failf(cause, ReasonMalformedToken)
	}
	id, err := spiffeid.FromString(claims.Subject)
	if err != nil {
		return failf(cause, ReasonNoSubject)
	}
	if id.TrustDomain() != a.td {
		// A trust domain name is restricted to [a-z0-9._-] by spiffeid, so
		// it is safe to show.
		return failf(cause, reasonUntrustedTDPattern, id.TrustDomain().Name())
	}
	if claims.Expiry == nil {
		return failf(cause, ReasonNoExpiry)
	}
	if tok.Headers[0].KeyID == "" {
		return failf(cause, ReasonNoKeyID)
	}
	bundle, err := a.bundles.GetJWTBundleForTrustDomain(a.td)
	if err != nil {
		return failf(cause, ReasonNoBundle)
	}
	key, ok := bundle.FindJWTAuthority(tok.Headers[0].KeyID)
	if !ok {
		return failf(cause, ReasonUnknownKey)
	}
	if err := tok.Claims(key); err != nil {
		return failf(cause, ReasonBadSignature)
	}
	for _, now := range []time.Time{a.now(), time.Now()} {
		err := claims.ValidateWithLeeway(jwt.Expected{AnyAudience: a.audiences, Time: now}, leeway)
		switch {
		case err == nil:
		case errors.Is(err, jwt.ErrExpired):
			return failf(cause, ReasonTokenExpired)
		case errors.Is(err, jwt.ErrNotValidYet):
			return failf(cause, ReasonTokenNotYetValid)
		case errors.Is(err, jwt.ErrIssuedInTheFuture):
			return failf(cause, ReasonIssuedInFuture)
		case errors.Is(err, jwt.ErrInvalidAudience):
			return failf(cause, ReasonWrongAudience)
		default:
			return failf(cause, ReasonInvalidToken)
		}
	}
	return failf(cause, ReasonInvalidToken)
}

type jwsHeader struct {
	Alg string  `json:"alg"`
	Typ *string `json:"typ"`
}

// parseHeader decodes the protected header of a compact JWS.
func parseHeader(token string) (jwsHeader, bool) {
	var h jwsHeader
	enc, rest, ok := strings.Cut(token, ".")
	if !ok || strings.Count(rest, ".") != 1 {
		return h, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || json.Unmarshal(raw, &h) != nil {
		return h, false
	}
	return h, true
}
