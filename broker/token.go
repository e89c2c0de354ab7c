package broker

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// maxTokenBytes bounds a bearer token; real ones are a few KiB.
const maxTokenBytes = 16 << 10

// peekClaims reads the iss and sub claims of a compact JWS without
// verifying it, only to choose which attestor will verify it. Nothing read
// here is trusted, and its errors never quote the token.
func peekClaims(token string) (iss, sub string, err error) {
	if len(token) > maxTokenBytes {
		return "", "", errors.New("token over 16 KiB")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", "", errors.New("not a compact JWS (want three dot-separated parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", errors.New("payload is not base64url")
	}
	var claims struct {
		Iss json.RawMessage `json:"iss"`
		Sub json.RawMessage `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", "", errors.New("payload is not a JSON object")
	}
	// iss and sub are strings when present; anything else routes nowhere.
	_ = json.Unmarshal(claims.Iss, &iss)
	_ = json.Unmarshal(claims.Sub, &sub)
	return iss, sub, nil
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
