package broker

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// maxTokenBytes bounds a bearer token; real ones are a few KiB.
const maxTokenBytes = 16 << 10

// peeked is what routing reads from a token before it is verified.
type peeked struct {
	iss, sub string
	exp      time.Time // zero when absent
}

// peekClaims reads the iss, sub and exp claims of a compact JWS without
// verifying it, to choose which attestor will verify it (and, once that
// attestor has verified it, how long its identity may be cached). Nothing
// read here is trusted before then, and its errors never quote the token.
func peekClaims(token string) (peeked, error) {
	var p peeked
	if len(token) > maxTokenBytes {
		return p, errors.New("token over 16 KiB")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return p, errors.New("not a compact JWS (want three dot-separated parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return p, errors.New("payload is not base64url")
	}
	var claims struct {
		Iss json.RawMessage `json:"iss"`
		Sub json.RawMessage `json:"sub"`
		Exp json.RawMessage `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return p, errors.New("payload is not a JSON object")
	}
	// Claims of the wrong type route nowhere and cache nothing.
	_ = json.Unmarshal(claims.Iss, &p.iss)
	_ = json.Unmarshal(claims.Sub, &p.sub)
	var exp float64
	if json.Unmarshal(claims.Exp, &exp) == nil && exp > 0 && exp < 1<<40 {
		p.exp = time.Unix(int64(exp), 0)
	}
	return p, nil
}

// bearerToken extracts the token of an Authorization header. An empty
// header is no evidence; any other scheme is an error.
func bearerToken(header string) (string, error) {
	if header == "" {
		return "", nil
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", errors.New("the Authorization header must be \"Bearer <token>\"")
	}
	return strings.TrimSpace(token), nil
}
