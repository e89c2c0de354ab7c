package broker

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// requestDecodingCases seed the fuzz target and are checked as a table.
var requestDecodingCases = []struct {
	name    string
	header  string
	body    string
	wantErr string
}{
	{"no body", "1", "", ""},
	{"empty object", "1", "{}", ""},
	{"whitespace", "1", " \n{ }\n", ""},
	{"missing header", "", "", "missing header"},
	{"wrong header", "true", "", "missing header"},
	{"truncated", "1", `{"aws_iam": `, "malformed JSON body: unexpected end"},
	{"syntax", "1", `{"aws_iam" 1}`, "syntax error at byte"},
	{"unknown field", "1", `{"password":"hunter2"}`, "unknown field"},
	{"wrong type", "1", `[1,2]`, "wrong type"},
	{"two values", "1", `{} {}`, "more than one JSON value"},
	{"aws evidence", "1", `{"aws_iam":{"method":"POST"}}`, ""},
	{"null aws evidence", "1", `{"aws_iam":null}`, ""},
	{"oversized", "1", `{"aws_iam":"` + strings.Repeat("A", MaxBodyBytes) + `"}`, "over 65536 bytes"},
}

func TestDecodeCredentialRequest(t *testing.T) {
	for _, tt := range requestDecodingCases {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeRequest(tt.header, []byte(tt.body))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func decodeRequest(header string, body []byte) error {
	r := httptest.NewRequest("POST", "/v1/credentials/demo", bytes.NewReader(body))
	if header != "" {
		r.Header.Set(RequestHeader, header)
	}
	_, err := decodeCredentialRequest(httptest.NewRecorder(), r)
	return err
}

// FuzzCredentialRequest feeds arbitrary headers and bodies to the socket
// API's request decoding. It must never panic, and its caller-visible error
// must never echo the body: a caller's bytes could be someone's secret.
func FuzzCredentialRequest(f *testing.F) {
	for _, tt := range requestDecodingCases {
		f.Add(tt.header, []byte(tt.body))
	}
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := decodeRequest(header, body)
		if err == nil {
			return
		}
		msg := err.Error()
		if len(body) >= 12 && strings.Contains(msg, string(body)) {
			t.Fatalf("error %q echoes the body", msg)
		}
		for _, tok := range strings.FieldsFunc(string(body), func(r rune) bool { return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') }) {
			if len(tok) >= 12 && strings.Contains(msg, tok) && !strings.Contains(knownWords, tok) {
				t.Fatalf("error %q echoes %q from the body", msg, tok)
			}
		}
	})
}

// knownWords appear in our own messages and may coincide with body bytes.
const knownWords = "malformed JSON body syntax error unexpected end of input unknown field or invalid value accepted aws_iam evidence attestor configured request over bytes more than one wrong type missing header Credbroker-Request"

// FuzzRawRequest parses arbitrary bytes as an HTTP request, as the server
// does, and runs the socket API handler's decoding on what parses.
func FuzzRawRequest(f *testing.F) {
	f.Add([]byte("GET /v1/credentials/demo HTTP/1.1\r\nHost: x\r\nCredbroker-Request: 1\r\n\r\n"))
	f.Add([]byte("POST /v1/credentials/demo HTTP/1.1\r\nHost: x\r\nCredbroker-Request: 1\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("POST /v1/credentials/%2e%2e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		_, _ = decodeCredentialRequest(httptest.NewRecorder(), r)
		_, _ = bearerToken(r.Header.Get("Authorization"))
	})
}

var peekCases = []struct {
	name, token, iss, sub, err string
}{
	{"kubernetes", "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMiLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bnM6c2EifQ.c2ln", "https://kubernetes.default.svc", "system:serviceaccount:ns:sa", ""},
	{"no iss", "e30.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9hIn0.c2ln", "", "spiffe://example.org/a", ""},
	{"iss not a string", "e30.eyJpc3MiOjF9.c2ln", "", "", ""},
	{"two parts", "a.b", "", "", "three dot-separated parts"},
	{"bad base64", "a.!!!.c", "", "", "not base64url"},
	{"not json", "a.bm90IGpzb24.c", "", "", "not a JSON object"},
	{"oversized", "a." + strings.Repeat("A", maxTokenBytes) + ".c", "", "", "over 16 KiB"},
}

func TestPeekClaims(t *testing.T) {
	for _, tt := range peekCases {
		p, err := peekClaims(tt.token)
		iss, sub := p.iss, p.sub
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil || iss != tt.iss || sub != tt.sub {
			t.Errorf("%s: %q %q %v", tt.name, iss, sub, err)
		}
	}
}

// FuzzPeekClaims: the unverified peek that routes bearer tokens never
// panics and never quotes the token in its errors.
func FuzzPeekClaims(f *testing.F) {
	for _, tt := range peekCases {
		f.Add(tt.token)
	}
	f.Fuzz(func(t *testing.T, token string) {
		_, err := peekClaims(token)
		if err != nil && len(token) >= 8 && strings.Contains(err.Error(), token) {
			t.Fatalf("error %q quotes the token", err)
		}
		if tok, err := bearerToken("Bearer " + token); err == nil && tok != strings.TrimSpace(token) {
			t.Fatalf("bearerToken changed the token: %q", tok)
		}
	})
}
