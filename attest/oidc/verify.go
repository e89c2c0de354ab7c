package oidc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/credbroker/credbroker/attest"
)

// Defaults and limits shared by the token-based attestors.
const (
	// DefaultMaxTokenSize caps the length of a token before it is parsed.
	DefaultMaxTokenSize = 16 << 10
	// MaxLeeway is the largest clock skew tolerated on exp, nbf and iat.
	MaxLeeway = 60 * time.Second
)

// Caller-safe reasons. They name what was wrong and never contain any part
// of the token.
const (
	ReasonMalformed       = "malformed token"
	ReasonTooLarge        = "token too large"
	ReasonAlgNotAllowed   = "algorithm not allowed"
	ReasonEmbeddedKey     = "token header carries a key or key URL (jwk, jku, x5u, x5c) or crit, which is not allowed"
	ReasonUnknownIssuer   = "unknown issuer"
	ReasonUnknownKey      = "unknown signing key"
	ReasonBadSignature    = "bad signature"
	ReasonWrongAudience   = "wrong audience"
	ReasonExpired         = "token expired"
	ReasonNotYetValid     = "token not yet valid"
	ReasonNoExpiry        = "token has no expiry"
	ReasonKeysUnavailable = "signing keys unavailable"
)

// allowedAlgs are the asymmetric algorithms a Config may allow. Symmetric
// (HS*) algorithms and "none" are never accepted: a public key must not
// double as an HMAC secret.
var allowedAlgs = []string{
	"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512", "EdDSA",
}

// forbiddenHeaders are header parameters that would let a token name its own
// verification key or change how it is processed.
var forbiddenHeaders = []string{"jwk", "jku", "x5u", "x5c", "crit"}

// Config configures a Verifier. Zero values take the documented defaults.
type Config struct {
	// Method names the attestation method in errors (attest.MethodKubernetes…).
	Method string
	// Issuer must equal the token's iss exactly. Required.
	Issuer string
	// Audiences lists the audiences this broker accepts; a token's aud must
	// contain at least one of them. Required.
	Audiences []string
	// Keys supplies the issuer's verification keys. Required.
	Keys KeySet
	// AllowedAlgs lists the signature algorithms accepted. Required; only
	// asymmetric algorithms may be listed.
	AllowedAlgs []string
	// MaxLifetime caps exp minus iat (or nbf, or now when both are absent).
	// Required.
	MaxLifetime time.Duration
	// Leeway is the clock skew tolerated on exp, nbf and iat; 0 means
	// MaxLeeway (60s), more than MaxLeeway is an error.
	Leeway time.Duration
	// MaxTokenSize caps the token length; 0 means DefaultMaxTokenSize.
	MaxTokenSize int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("issuer is required"))
	}
	if c.Keys == nil {
		errs = append(errs, errors.New("a key set is required"))
	}
	if len(c.AllowedAlgs) == 0 {
		errs = append(errs, errors.New("allowed algorithms are required"))
	}
	if c.MaxLifetime <= 0 {
		errs = append(errs, errors.New("max lifetime must be positive"))
	}
	errs = append(errs, CheckSettings(c.Audiences, c.AllowedAlgs, c.MaxLifetime, c.Leeway)...)
	if c.MaxTokenSize < 0 {
		errs = append(errs, errors.New("max token size must not be negative"))
	}
	return errors.Join(errs...)
}

// CheckSettings reports the problems of the settings every token attestor
// shares, for their Validate methods (which run before defaults are
// applied, so zero algorithms and lifetime are not problems here):
// audiences present and non-empty, only allowed algorithms, a lifetime cap
// that is not negative, leeway between 0 and MaxLeeway.
func CheckSettings(audiences, algs []string, maxLifetime, leeway time.Duration) []error {
	var errs []error
	if len(audiences) == 0 || slices.Contains(audiences, "") {
		errs = append(errs, errors.New("audiences are required and must not be empty strings"))
	}
	for _, a := range algs {
		if !slices.Contains(allowedAlgs, a) {
			errs = append(errs, fmt.Errorf("algorithm %q is not allowed (allowed: %s)", a, strings.Join(allowedAlgs, ", ")))
		}
	}
	if maxLifetime < 0 {
		errs = append(errs, errors.New("max_lifetime must not be negative"))
	}
	if leeway < 0 || leeway > MaxLeeway {
		errs = append(errs, fmt.Errorf("leeway %s must be between 0 and %s", leeway, MaxLeeway))
	}
	return errs
}

// Verifier checks signed JWTs from one issuer.
type Verifier struct {
	method    string
	issuer    string
	audiences []string
	keys      KeySet
	algs      []string
	maxLife   time.Duration
	leeway    time.Duration
	maxSize   int
	now       func() time.Time
}

// NewVerifier validates cfg and returns a Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	v := &Verifier{
		method:    cfg.Method,
		issuer:    cfg.Issuer,
		audiences: slices.Clone(cfg.Audiences),
		keys:      cfg.Keys,
		maxLife:   cfg.MaxLifetime,
		leeway:    cfg.Leeway,
		maxSize:   cfg.MaxTokenSize,
		now:       cfg.Now,
	}
	v.algs = slices.Clone(cfg.AllowedAlgs)
	if v.leeway == 0 {
		v.leeway = MaxLeeway
	}
	if v.maxSize == 0 {
		v.maxSize = DefaultMaxTokenSize
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Issuer returns the exact issuer tokens must carry.
func (v *Verifier) Issuer() string { return v.issuer }

// Token is a verified JWT.
type Token struct {
	Issuer    string
	Subject   string
	Audience  []string
	Expiry    time.Time
	IssuedAt  time.Time // zero when absent
	NotBefore time.Time // zero when absent
	// Claims is the whole payload, decoded with json.Number for numbers.
	Claims map[string]any
}

// rawB64 rejects non-canonical base64 so that one signed token has exactly
// one accepted spelling.
var rawB64 = base64.RawURLEncoding.Strict()

// Verify checks token's size, header, issuer, signature, audience and
// validity window, in that order, and returns its claims. Every failure is
// an *attest.Error whose Reason never contains any part of the token.
func (v *Verifier) Verify(ctx context.Context, token string) (*Token, error) {
	if len(token) > v.maxSize {
		return nil, v.fail(ReasonTooLarge)
	}
	h64, rest, ok1 := strings.Cut(token, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") || h64 == "" || p64 == "" || s64 == "" {
		return nil, v.fail(ReasonMalformed)
	}
	hdrJSON, err1 := rawB64.DecodeString(h64)
	payload, err2 := rawB64.DecodeString(p64)
	_, err3 := rawB64.DecodeString(s64)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, v.fail(ReasonMalformed)
	}

	var hdr map[string]json.RawMessage
	if json.Unmarshal(hdrJSON, &hdr) != nil {
		return nil, v.fail(ReasonMalformed)
	}
	for _, name := range forbiddenHeaders {
		if _, ok := hdr[name]; ok {
			return nil, v.fail(ReasonEmbeddedKey)
		}
	}
	var alg, kid string // the key set reads kid again from the verified header
	if json.Unmarshal(hdr["alg"], &alg) != nil {
		return nil, v.fail(ReasonMalformed)
	}
	if !slices.Contains(v.algs, alg) {
		return nil, v.fail(ReasonAlgNotAllowed)
	}
	if raw, ok := hdr["kid"]; ok && json.Unmarshal(raw, &kid) != nil {
		return nil, v.fail(ReasonMalformed)
	}

	claims, err := decodeClaims(payload)
	if err != nil {
		return nil, v.fail(ReasonMalformed)
	}
	// The issuer is checked before the signature only to give the caller
	// the more useful reason; nothing unverified is accepted.
	if iss, _ := claims["iss"].(string); iss != v.issuer {
		return nil, v.fail(ReasonUnknownIssuer)
	}

	// go-oidc verifies the signature (through v.keys), iss and exp. It gets
	// no ClientID: it would check one audience, and Config.Audiences may
	// list several, so checkClaims checks aud on the verified payload. Its
	// clock runs v.leeway behind so that exp gets the same leeway as here.
	now := v.now()
	sig := &sigCheck{keys: v.keys, payload: payload}
	idt, err := gooidc.NewVerifier(v.issuer, sig, &gooidc.Config{
		SkipClientIDCheck:    true,
		SupportedSigningAlgs: v.algs,
		Now:                  func() time.Time { return now.Add(-v.leeway) },
	}).Verify(ctx, token)
	switch {
	case !sig.called:
		// go-oidc refused the token before asking for a signature check.
		return nil, v.fail(ReasonMalformed)
	case errors.Is(sig.err, ErrUnknownKey):
		return nil, v.fail(ReasonUnknownKey)
	case errors.Is(sig.err, ErrAlgMismatch):
		return nil, v.fail(ReasonAlgNotAllowed)
	case errors.Is(sig.err, ErrBadSignature):
		return nil, v.fail(ReasonBadSignature)
	case sig.err != nil:
		return nil, &attest.Error{Method: v.method, Reason: ReasonKeysUnavailable, Err: sig.err}
	}
	// The payload is verified. The stricter checks below run whether or not
	// go-oidc accepted it, so that the reason is the same either way.
	t, cerr := v.checkClaims(claims, now)
	if cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, v.oidcFail(err)
	}
	if idt.Issuer != t.Issuer {
		return nil, v.fail(ReasonMalformed)
	}
	return t, nil
}

// oidcFail maps an error of go-oidc's IDTokenVerifier that the checks of
// this package did not already catch to a reason.
func (v *Verifier) oidcFail(err error) *attest.Error {
	var expired *gooidc.TokenExpiredError
	reason := ReasonMalformed
	switch {
	case errors.As(err, &expired):
		reason = ReasonExpired
	case strings.Contains(err.Error(), "issued by a different provider"):
		reason = ReasonUnknownIssuer
	case strings.Contains(err.Error(), "nbf"):
		reason = ReasonNotYetValid
	}
	return &attest.Error{Method: v.method, Reason: reason, Err: err}
}

// sigCheck is the go-oidc KeySet for one Verify call. go-oidc flattens the
// key set's error into a string, so sigCheck keeps it for Verify to map to a
// reason, and it insists that the verified payload is the one whose claims
// Verify decoded.
type sigCheck struct {
	keys    KeySet
	payload []byte
	called  bool
	err     error
}

func (s *sigCheck) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	s.called = true
	p, err := s.keys.VerifySignature(ctx, jwt)
	if err == nil && !bytes.Equal(p, s.payload) {
		err = ErrBadSignature
	}
	s.err = err
	return p, err
}

func (v *Verifier) checkClaims(claims map[string]any, now time.Time) (*Token, error) {
	t := &Token{Claims: claims}
	t.Issuer, _ = claims["iss"].(string)
	if s, ok := claims["sub"]; ok {
		if t.Subject, ok = s.(string); !ok {
			return nil, v.fail(ReasonMalformed)
		}
	}
	switch aud := claims["aud"].(type) {
	case string:
		t.Audience = []string{aud}
	case []any:
		for _, a := range aud {
			s, ok := a.(string)
			if !ok {
				return nil, v.fail(ReasonMalformed)
			}
			t.Audience = append(t.Audience, s)
		}
	case nil:
	default:
		return nil, v.fail(ReasonMalformed)
	}
	if !slices.ContainsFunc(t.Audience, func(a string) bool { return slices.Contains(v.audiences, a) }) {
		return nil, v.fail(ReasonWrongAudience)
	}

	var err error
	var hasExp bool
	if t.Expiry, hasExp, err = numericDate(claims, "exp"); err != nil {
		return nil, v.fail(ReasonMalformed)
	}
	if t.NotBefore, _, err = numericDate(claims, "nbf"); err != nil {
		return nil, v.fail(ReasonMalformed)
	}
	if t.IssuedAt, _, err = numericDate(claims, "iat"); err != nil {
		return nil, v.fail(ReasonMalformed)
	}
	if !hasExp {
		return nil, v.fail(ReasonNoExpiry)
	}
	if !now.Before(t.Expiry.Add(v.leeway)) {
		return nil, v.fail(ReasonExpired)
	}
	if !t.NotBefore.IsZero() && now.Add(v.leeway).Before(t.NotBefore) {
		return nil, v.fail(ReasonNotYetValid)
	}
	if !t.IssuedAt.IsZero() && now.Add(v.leeway).Before(t.IssuedAt) {
		return nil, v.fail(ReasonNotYetValid)
	}
	start := t.IssuedAt
	if start.IsZero() {
		start = t.NotBefore
	}
	if start.IsZero() {
		start = now
	}
	if t.Expiry.Sub(start) > v.maxLife {
		return nil, v.fail("token lifetime exceeds %s", fmtDuration(v.maxLife))
	}
	return t, nil
}

func (v *Verifier) fail(format string, args ...any) *attest.Error {
	return attest.Failf(v.method, format, args...)
}

// decodeClaims decodes a JWT payload, keeping numbers as json.Number.
func decodeClaims(payload []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, err
	}
	if dec.More() || claims == nil {
		return nil, errors.New("trailing data")
	}
	return claims, nil
}

// numericDate reads a JWT NumericDate claim.
func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	raw, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, ok := raw.(json.Number)
	if !ok {
		return time.Time{}, false, errors.New("not a number")
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > 1<<40 {
		return time.Time{}, false, errors.New("out of range")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// fmtDuration prints whole hours and minutes as "24h" or "10m" rather than
// "24h0m0s".
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// StringClaim returns claims[name] as a string: strings as they are, numbers
// in their JSON spelling. ok is false when the claim is absent or of another
// type.
func StringClaim(claims map[string]any, name string) (string, bool) {
	switch v := claims[name].(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	}
	return "", false
}
