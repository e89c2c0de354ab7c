package oauth2

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Bounds on what an error repeats from an endpoint's answer.
const (
	maxCodeLen        = 64
	maxDescriptionLen = 200
)

// ResponseError is an endpoint's refusal or unusable answer. Its fields are
// already bounded and sanitised: printable ASCII, the client secret
// redacted. The response body itself is never kept.
type ResponseError struct {
	// Endpoint is "token" or "revocation".
	Endpoint string
	// Status is the HTTP status code; zero when the problem is in a
	// successful answer's content.
	Status int
	// Code is the OAuth error code (RFC 6749 §5.2), such as
	// "invalid_client"; empty when the answer had none.
	Code string
	// Description is the server's error_description; empty when none.
	Description string
	// Problem says what was wrong with an answer that was not an OAuth
	// error (no access token, not a token response); empty otherwise.
	Problem string
}

func (e *ResponseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s endpoint answered", e.Endpoint)
	if e.Status != 0 {
		fmt.Fprintf(&b, " %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, " (%q)", e.Description)
	}
	if e.Problem != "" {
		fmt.Fprintf(&b, ": %s", e.Problem)
	}
	return b.String()
}

// newResponseError builds a ResponseError from what an endpoint said,
// with every string in redact (the client secret in the forms it was sent
// in) replaced before bounding and sanitising.
func newResponseError(endpoint string, status int, code, description string, redact []string) *ResponseError {
	return &ResponseError{
		Endpoint:    endpoint,
		Status:      status,
		Code:        sanitise(code, maxCodeLen, redact),
		Description: sanitise(description, maxDescriptionLen, redact),
	}
}

const redacted = "[redacted]"

// secretForms returns the forms in which a request carries the client
// secret: as is, form-encoded (in a body), and inside the Basic
// credentials. A server that echoes its request shows one of them.
func secretForms(clientID string, secret []byte) []string {
	enc := url.QueryEscape(string(secret))
	basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID) + ":" + enc))
	return []string{string(secret), enc, basic}
}

// sanitise returns s with every occurrence of the strings in redact
// replaced, every byte outside printable ASCII replaced by '?', and cut to
// limit bytes (marked by a trailing "...").
func sanitise(s string, limit int, redact []string) string {
	// Longest first: one form may contain another (a Basic credential the
	// bare secret), and the longer must go whole.
	redact = slices.Clone(redact)
	slices.SortFunc(redact, func(a, b string) int { return len(b) - len(a) })
	for _, r := range redact {
		if r != "" {
			s = strings.ReplaceAll(s, r, redacted)
		}
	}
	var b strings.Builder
	for i := range len(s) {
		if b.Len() >= limit {
			b.WriteString("...")
			break
		}
		if c := s[i]; c >= 0x20 && c <= 0x7e {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// parseErrorBody reads an RFC 6749 §5.2 error response (JSON, or a form
// for the servers that answer that way), returning its error code and
// description unsanitised; empty when the body is neither.
func parseErrorBody(contentType string, body []byte) (code, description string) {
	media, _, _ := mime.ParseMediaType(contentType)
	switch media {
	case "application/x-www-form-urlencoded", "text/plain":
		v, err := url.ParseQuery(string(body))
		if err != nil {
			return "", ""
		}
		return v.Get("error"), v.Get("error_description")
	default:
		var e struct {
			Code        string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &e) != nil {
			return "", ""
		}
		return e.Code, e.Description
	}
}
