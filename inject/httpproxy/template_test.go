package httpproxy

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// data returns a lookup over fields.
func data(fields map[string]string) func(string) ([]byte, bool) {
	return func(f string) ([]byte, bool) {
		v, ok := fields[f]
		return []byte(v), ok
	}
}

var renderTests = []struct {
	name   string
	tmpl   string
	fields map[string]string
	want   string
	err    error
}{
	{"bearer", "Bearer {{.token}}", map[string]string{"token": "abc"}, "Bearer abc", nil},
	{"basic", "Basic {{basic .username .password}}", map[string]string{"username": "u", "password": "p:w"}, "Basic " + base64.StdEncoding.EncodeToString([]byte("u:p:w")), nil},
	{"basic literal", `Basic {{basic .token ""}}`, map[string]string{"token": "sk_1"}, "Basic " + base64.StdEncoding.EncodeToString([]byte("sk_1:")), nil},
	{"base64", "{{base64 .token}}", map[string]string{"token": "\x00\x01"}, base64.StdEncoding.EncodeToString([]byte{0, 1}), nil},
	{"trim markers", "Token {{- .token -}} !", map[string]string{"token": "t"}, "Tokent!", nil},
	{"missing field", "{{.token}}", map[string]string{"value": "x"}, "", nil},
	{"CRLF in value", "Bearer {{.token}}", map[string]string{"token": "a\r\nX-Evil: 1"}, "", errBadValue},
	{"LF in value", "{{.token}}", map[string]string{"token": "a\nb"}, "", errBadValue},
	{"NUL in value", "{{.token}}", map[string]string{"token": "a\x00"}, "", errBadValue},
	{"tab allowed", "{{.token}}", map[string]string{"token": "a\tb"}, "a\tb", nil},
}

func TestRender(t *testing.T) {
	for _, tc := range renderTests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := compileTemplate(tc.tmpl)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.render(data(tc.fields))
			switch {
			case tc.name == "missing field":
				if err == nil || !strings.Contains(err.Error(), `no field "token"`) {
					t.Errorf("err %v", err)
				}
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Errorf("err %v, want %v", err, tc.err)
				}
			case err != nil || got != tc.want:
				t.Errorf("got %q %v, want %q", got, err, tc.want)
			}
			for _, v := range tc.fields {
				if err != nil && v != "" && strings.Contains(err.Error(), v) {
					t.Errorf("error %q holds the value", err)
				}
			}
		})
	}
}

// FuzzRender checks that compiling any template never panics, that a
// compiled template's fields are exactly those it renders from, and that
// rendering never yields a value with CR, LF or another control
// character, nor an error holding a value.
func FuzzRender(f *testing.F) {
	for _, tc := range renderTests {
		f.Add(tc.tmpl, tc.fields["token"], tc.fields["username"])
	}
	f.Add("{{.a.b}}{{range .}}", "x", "y")
	f.Add(`{{basic "a\r\n" .token}}`, "x", "y")
	f.Fuzz(func(t *testing.T, text, token, user string) {
		tmpl, err := compileTemplate(text)
		if err != nil {
			return
		}
		used := map[string]bool{}
		got, err := tmpl.render(func(field string) ([]byte, bool) {
			used[field] = true
			switch field {
			case "username":
				return []byte(user), true
			default:
				return []byte(token), true
			}
		})
		for f := range used {
			found := false
			for _, g := range tmpl.fields {
				found = found || g == f
			}
			if !found {
				t.Errorf("render used field %q that Fields does not list (%q)", f, tmpl.fields)
			}
		}
		if err != nil {
			if (len(token) > 3 && strings.Contains(err.Error(), token)) || (len(user) > 3 && strings.Contains(err.Error(), user)) {
				t.Errorf("error %q holds a value", err)
			}
			return
		}
		if !validValue(got) || strings.ContainsAny(got, "\r\n\x00") {
			t.Errorf("rendered %q: not a header value", got)
		}
	})
}
