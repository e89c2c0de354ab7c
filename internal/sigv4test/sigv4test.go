// Package sigv4test verifies AWS Signature Version 4 on requests received
// by the test stand-ins for AWS services (internal/ststest,
// attest/aws/ststest), with its own canonical request, string to sign and
// signing key — written from AWS's "Create a signed AWS API request", not
// from the SDK's signer — and real HMAC-SHA256, so that a signature the SDK
// computes wrongly, or a request altered after signing, fails as it would
// at AWS.
package sigv4test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Key is what the verifier knows of an access key.
type Key struct {
	Secret  string
	Token   string    // the session token a temporary key must carry; "" for a long-term key
	Expires time.Time // zero for a key that does not expire
}

// Check says what to accept.
type Check struct {
	// Service and Region the credential scope must name; "" accepts any.
	Service, Region string
	// Now is the verifier's clock: X-Amz-Date must be within 15 minutes of
	// it and the key unexpired. Zero skips both checks.
	Now time.Time
	// Lookup finds an access key by its id.
	Lookup func(accessKeyID string) (Key, bool)
}

// Error is a refusal, with AWS's status, code and message.
type Error struct {
	Status        int
	Code, Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func fail(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Verify checks r's SigV4 Authorization header over body and returns the
// access key id that signed it.
func Verify(r *http.Request, body []byte, c Check) (string, *Error) {
	rest, ok := strings.CutPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ")
	if !ok {
		return "", fail(http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token")
	}
	comp := map[string]string{}
	for _, p := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		comp[k] = v
	}
	scope := strings.Split(comp["Credential"], "/")
	if len(scope) != 5 || comp["SignedHeaders"] == "" || comp["Signature"] == "" {
		return "", fail(http.StatusBadRequest, "IncompleteSignature", "Authorization header requires Credential, SignedHeaders and Signature")
	}
	if scope[4] != "aws4_request" || c.Service != "" && scope[3] != c.Service {
		return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "Credential should be scoped to correct service: '%s'.", c.Service)
	}
	if c.Region != "" && scope[2] != c.Region {
		return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "Credential should be scoped to a valid region.")
	}
	k, ok := c.Lookup(scope[0])
	if !ok {
		return "", fail(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Amz-Security-Token")), []byte(k.Token)) != 1 {
		return "", fail(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	if !c.Now.IsZero() && !k.Expires.IsZero() && !c.Now.Before(k.Expires) {
		return "", fail(http.StatusForbidden, "ExpiredToken", "The security token included in the request is expired")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || amzDate[:8] != scope[1] {
		return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "X-Amz-Date is missing, malformed or outside the credential scope's date")
	}
	if d := c.Now.Sub(t); !c.Now.IsZero() && (d > 15*time.Minute || d < -15*time.Minute) {
		return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "Signature expired: %s is now earlier than %s", amzDate, c.Now.Add(-15*time.Minute).UTC().Format("20060102T150405Z"))
	}
	signed := strings.Split(comp["SignedHeaders"], ";")
	if !slices.IsSorted(signed) || !slices.Contains(signed, "host") || !slices.Contains(signed, "x-amz-date") {
		return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "SignedHeaders must be sorted and include host and x-amz-date")
	}
	if r.Header.Get("X-Amz-Security-Token") != "" && !slices.Contains(signed, "x-amz-security-token") {
		return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "x-amz-security-token must be signed")
	}
	var headers strings.Builder
	for _, name := range signed {
		if name != strings.ToLower(name) {
			return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "SignedHeaders must be lowercase")
		}
		var vals []string
		switch name {
		case "host":
			vals = []string{r.Host}
		case "content-length":
			vals = []string{strconv.FormatInt(r.ContentLength, 10)}
		default:
			vals = r.Header.Values(name)
		}
		if len(vals) == 0 {
			return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "signed header %s is missing", name)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		headers.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	bodySum := sha256.Sum256(body)
	canonical := strings.Join([]string{
		r.Method,
		path,
		canonicalQuery(r.URL.Query()),
		headers.String(),
		comp["SignedHeaders"],
		hex.EncodeToString(bodySum[:]),
	}, "\n")
	canonicalSum := sha256.Sum256([]byte(canonical))
	stringToSign := strings.Join([]string{"AWS4-HMAC-SHA256", amzDate, strings.Join(scope[1:], "/"), hex.EncodeToString(canonicalSum[:])}, "\n")
	signingKey := hmacSHA256([]byte("AWS4"+k.Secret), scope[1])
	for _, part := range scope[2:] {
		signingKey = hmacSHA256(signingKey, part)
	}
	want := hex.EncodeToString(hmacSHA256(signingKey, stringToSign))
	if !hmac.Equal([]byte(want), []byte(comp["Signature"])) {
		return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return scope[0], nil
}

// canonicalQuery sorts q by name, then value, URI-encoding both.
func canonicalQuery(q url.Values) string {
	var parts []string
	for k, vs := range q {
		for _, v := range vs {
			parts = append(parts, uriEncode(k)+"="+uriEncode(v))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "&")
}

// uriEncode percent-encodes everything but RFC 3986's unreserved characters.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
