package oauth2

import (
	"strings"
	"testing"
)

// errorBodyCases are error responses as servers send them, from the table
// tests' canned answers and a few malformed ones.
var errorBodyCases = []struct {
	contentType, body string
	code, description string
}{
	{"application/json", `{"error":"invalid_client","error_description":"Client authentication failed"}`, "invalid_client", "Client authentication failed"},
	{"application/json;charset=UTF-8", `{"error":"temporarily_unavailable"}`, "temporarily_unavailable", ""},
	{"application/x-www-form-urlencoded", "error=invalid_client&error_description=unknown+client", "invalid_client", "unknown client"},
	{"text/plain", "error=invalid_request", "invalid_request", ""},
	{"", `{"error":"invalid_request\u001b[31m","error_description":"bad\r\nrequest\u0000"}`, "invalid_request\x1b[31m", "bad\r\nrequest\x00"},
	{"text/html", "<html>oops</html>", "", ""},
	{"application/json", `{"error":42}`, "", ""},
	{"application/x-www-form-urlencoded", "error=%zz", "", ""},
	{"application/json", "", "", ""},
}

func TestParseErrorBody(t *testing.T) {
	for _, tt := range errorBodyCases {
		code, desc := parseErrorBody(tt.contentType, []byte(tt.body))
		if code != tt.code || desc != tt.description {
			t.Errorf("%s %q: got %q %q, want %q %q", tt.contentType, tt.body, code, desc, tt.code, tt.description)
		}
	}
}

func TestSanitise(t *testing.T) {
	const secret = "s3cret+/="
	redact := secretForms("client", []byte(secret))
	for _, tt := range []struct {
		in, want string
		limit    int
	}{
		{"plain words", "plain words", 50},
		{"tab\there\nnewline\x1b[0m", "tab?here?newline?[0m", 50},
		{"utf-8 é", "utf-8 ??", 50},
		{"abcdefghij", "abcde...", 5},
		{"the secret is s3cret+/= ok", "the secret is [redacted] ok", 50},
		{"form: client_secret=s3cret%2B%2F%3D", "form: client_secret=[redacted]", 50},
		{"Basic " + redact[2], "Basic [redacted]", 50},
		{"s3cret+/=s3cret+/=", "[redacted][redacted]", 50},
	} {
		if got := sanitise(tt.in, tt.limit, redact); got != tt.want {
			t.Errorf("sanitise(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzErrorResponse feeds arbitrary error responses through the parser and
// the sanitiser: the outcome is bounded, printable ASCII, and never shows
// the client secret in any of the forms a request carries it.
func FuzzErrorResponse(f *testing.F) {
	for _, tt := range errorBodyCases {
		f.Add(tt.contentType, []byte(tt.body), "s3cret+/=")
	}
	f.Add("application/json", []byte(`{"error":"x","error_description":"echo s3cret%2B%2F%3D"}`), "s3cret+/=")
	f.Add("application/json", []byte(`{"error":"x","error_description":"Basic Y2xpZW50OnMzY3JldCUyQiUyRiUzRA=="}`), "s3cret+/=")
	f.Add("application/json", []byte(`{"error":"CANARYsecret1","error_description":"echo client_secret=CANARYsecret1"}`), "CANARYsecret1")
	f.Add("application/x-www-form-urlencoded", []byte("error=x&error_description=Basic+Y2xpZW50OkNBTkFSWXNlY3JldDE%3D"), "CANARYsecret1")
	f.Fuzz(func(t *testing.T, contentType string, body []byte, secret string) {
		code, desc := parseErrorBody(contentType, body)
		e := newResponseError("token", 400, code, desc, secretForms("client", []byte(secret)))
		if len(e.Code) > maxCodeLen+3 || len(e.Description) > maxDescriptionLen+3 {
			t.Fatalf("unbounded: %d, %d bytes", len(e.Code), len(e.Description))
		}
		msg := e.Error()
		for i := range len(msg) {
			if msg[i] < 0x20 || msg[i] > 0x7e {
				t.Fatalf("byte %#x in %q", msg[i], msg)
			}
		}
		// Checked for secrets of 8 or more letters and digits, which
		// neither the '?' of a replaced byte nor the marker's brackets can
		// complete (the marker's word itself excepted).
		if len(secret) >= 8 && isAlnum(secret) && !strings.Contains(redacted, secret) {
			for _, s := range []string{e.Code, e.Description} {
				if strings.Contains(s, secret) {
					t.Fatalf("%q shows the secret %q", s, secret)
				}
			}
		}
	})
}

func isAlnum(s string) bool {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
