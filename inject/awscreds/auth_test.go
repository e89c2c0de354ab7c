package awscreds

import (
	"errors"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/broker"
)

// authCases are the Authorization headers parseAuthorization is tested,
// and its fuzz target seeded, with.
var authCases = []struct {
	name   string
	header string
	token  string        // "" when refused
	kind   broker.Kind   // of the refusal
	err    *broker.Error // the refusal
}{
	{"the token as the SDK sends it", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", 0, nil},
	{"Bearer", "Bearer abc.def.ghi", "abc.def.ghi", 0, nil},
	{"bearer in any case", "bEaReR abc", "abc", 0, nil},
	{"Bearer and several spaces", "Bearer   \tabc", "abc", 0, nil},
	{"a token file ending in a new line", "abc\n", "abc", 0, nil},
	{"white space around", " \tabc \t", "abc", 0, nil},
	{"a token named like the scheme", "Bearerabc", "Bearerabc", 0, nil},
	{"Bearer Bearer", "Bearer Bearer", "", broker.KindUnauthenticated, errNoToken},
	{"empty", "", "", broker.KindUnauthenticated, errNoToken},
	{"blank", " \t ", "", broker.KindUnauthenticated, errNoToken},
	{"Bearer alone", "Bearer", "", broker.KindUnauthenticated, errNoToken},
	{"Bearer and a space", "bearer ", "", broker.KindUnauthenticated, errNoToken},
	{"Basic", "Basic dXNlcjpwYXNz", "", broker.KindBadRequest, errShape},
	{"a space inside", "abc def", "", broker.KindBadRequest, errShape},
	{"a control character", "abc\x00def", "", broker.KindBadRequest, errShape},
	{"a new line inside", "abc\ndef", "", broker.KindBadRequest, errShape},
	{"non-ASCII", "abc\u00e9", "", broker.KindBadRequest, errShape},
	{"DEL", "abc\x7f", "", broker.KindBadRequest, errShape},
	{"Bearer tab", "Bearer\tabc", "", broker.KindBadRequest, errShape},
	{"at the size limit", strings.Repeat("a", MaxTokenBytes), strings.Repeat("a", MaxTokenBytes), 0, nil},
	{"over the size limit", strings.Repeat("a", MaxTokenBytes+1), "", broker.KindBadRequest, errLong},
}

func TestParseAuthorization(t *testing.T) {
	for _, tc := range authCases {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := parseAuthorization(tc.header)
			if tc.err == nil {
				if err != nil || tok != tc.token {
					t.Fatalf("parseAuthorization = %q, %v; want %q", tok, err, tc.token)
				}
				return
			}
			var be *broker.Error
			if tok != "" || !errors.As(err, &be) || be != tc.err || be.Kind != tc.kind {
				t.Fatalf("parseAuthorization = %q, %v; want refusal %q", tok, err, tc.err.Message)
			}
		})
	}
}

// FuzzParseAuthorization: any header is either refused with one of the
// three refusals, none quoting it, or yields a token that is a piece of
// the header, bounded, of visible ASCII only, and that parses to itself.
func FuzzParseAuthorization(f *testing.F) {
	for _, tc := range authCases {
		f.Add(tc.header)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := parseAuthorization(header)
		if err != nil {
			if tok != "" {
				t.Fatalf("a token with an error")
			}
			if err != errNoToken && err != errLong && err != errShape {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if tok == "" || len(tok) > MaxTokenBytes || !strings.Contains(header, tok) {
			t.Fatalf("token %q from %q", tok, header)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] <= ' ' || tok[i] >= 0x7f {
				t.Fatalf("token %q has byte %#x", tok, tok[i])
			}
		}
		if again, err := parseAuthorization(tok); err != nil || again != tok {
			t.Fatalf("token %q parses to %q, %v", tok, again, err)
		}
	})
}
