package client_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/credbroker/credbroker/client"
)

// FuzzParseReply: any status and body from the socket gives a credential or
// an error, never a panic; a refusal is an *Error whose message is bounded
// and free of control characters; an error never quotes a body it could not
// decode.
func FuzzParseReply(f *testing.F) {
	f.Add(200, []byte(`{"name":"demo","kind":"static","data":{"value":"s3cr3t"},"expires_at":"2026-01-01T00:00:00Z","lease_id":"l","decision_id":"d"}`))
	f.Add(200, []byte(`{"name":"demo","data":{"value":"s3cr3t"}`))
	f.Add(200, []byte(`{"name":"demo","data":null,"expires_at":"2026-01-01T00:00:00Z"}`))
	f.Add(200, []byte(`{"name":1}`))
	f.Add(403, []byte(`{"error":{"code":"denied","message":"denied by policy x","decision_id":"d"}}`))
	f.Add(401, []byte(`{"error":{"code":"unauthenticated","message":"bad token\n\x1b[31m"}}`))
	f.Add(429, []byte(`{"error":{"code":"rate_limited","message":"slow down"}}`))
	f.Add(502, []byte(`<html>bad gateway</html>`))
	f.Add(431, []byte(nil))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		cred, err := client.ParseReply(status, body)
		if (cred == nil) == (err == nil) {
			t.Fatalf("credential %v and error %v", cred, err)
		}
		if cred != nil {
			if cred.Name == "" || cred.ExpiresAt.IsZero() || cred.Data == nil {
				t.Fatalf("incomplete credential accepted: %v", cred)
			}
			for _, v := range cred.Data {
				if len(v) >= 8 && strings.Contains(cred.String(), v) {
					t.Fatalf("String shows a value: %s", cred)
				}
			}
			return
		}
		var e *client.Error
		if status != 200 {
			if !errors.As(err, &e) {
				t.Fatalf("status %d: %T %v, want an *Error", status, err, err)
			}
			if len(e.Message) > 1100 || strings.IndexFunc(e.Message+e.Code+e.DecisionID, unicode.IsControl) >= 0 {
				t.Fatalf("unbounded or control characters: %q", e.Message)
			}
			return
		}
		if len(body) >= 16 && strings.Contains(err.Error(), string(body)) {
			t.Fatalf("the error quotes the body: %v", err)
		}
	})
}
