package providers

import (
	"strings"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	for _, tt := range []struct {
		raw, problem string
	}{
		{"https://vault.internal:8200", ""},
		{"https://idp.example.com/oauth/token?x=1", ""},
		{"http://127.0.0.1:8200", ""},
		{"http://[::1]:9000", ""},
		{"http://LOCALHOST:80", ""},
		{"http://vault.internal:8200", "must use https"},
		{"https://user:hunter2@idp.example.com/token", "must not carry user information"},
		{"/oauth/token", "absolute URL"},
		{"https://idp.example.com/token#frag", "fragment"},
		{"ftp://idp.example.com", `scheme "ftp"`},
		{"https://idp\x7f.example.com", "not a URL"},
	} {
		_, err := ParseEndpoint(tt.raw)
		switch {
		case tt.problem == "" && err != nil:
			t.Errorf("%q: %v", tt.raw, err)
		case tt.problem != "" && (err == nil || !strings.Contains(err.Error(), tt.problem)):
			t.Errorf("%q: %v, want %q", tt.raw, err, tt.problem)
		case err != nil && strings.Contains(err.Error(), "hunter2"):
			t.Errorf("%q: the error repeats the password: %v", tt.raw, err)
		}
	}
}
