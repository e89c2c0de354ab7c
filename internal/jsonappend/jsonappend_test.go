package jsonappend

import (
	"encoding/json"
	"errors"
	"testing"
)

// String writes what encoding/json reads back as the same string, without
// HTML escaping.
func TestString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "nl\n", "ctl\x01", "é", "<tag>&", "\xff"} {
		b := String(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("String(%q) = %s: %v", s, b, err)
		}
		if want := string([]rune(s)); got != want && !(s == "\xff" && got == "\ufffd") {
			t.Errorf("String(%q) reads back as %q", s, got)
		}
	}
	if got := string(String(nil, "<a&b>")); got != `"<a&b>"` {
		t.Errorf("String escapes HTML: %s", got)
	}
}

// Members writes keys in order and stops at the first error.
func TestMembers(t *testing.T) {
	m := map[string]int{"b": 2, "a": 1, "c": 3}
	b, err := Members([]byte("{"), m, func(b []byte, _ string, v int) ([]byte, error) {
		return append(b, byte('0'+v)), nil
	})
	if got := string(append(b, '}')); err != nil || got != `{"a":1,"b":2,"c":3}` {
		t.Fatalf("Members = %s, %v", got, err)
	}
	stop := errors.New("stop")
	_, err = Members(nil, m, func(b []byte, k string, _ int) ([]byte, error) {
		if k == "b" {
			return b, stop
		}
		return b, nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Members error = %v, want the value's", err)
	}
}
