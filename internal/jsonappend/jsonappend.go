// Package jsonappend appends JSON to byte slices the way the audit log
// stores it — keys in order, no white space, no HTML escaping — for the
// encoders that write it by hand because they run on every decision (the
// stored policy input, the socket API's reply).
package jsonappend

import (
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// String appends s as a JSON string: as it is when it needs no escaping,
// else through encoding/json.
func String(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			j, _ := json.Marshal(s) // a string always encodes
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Members appends the members of m to a JSON object, in key order, each
// value appended by value; it stops at value's first error.
func Members[V any](b []byte, m map[string]V, value func(b []byte, key string, v V) ([]byte, error)) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(String(b, k), ':')
		var err error
		if b, err = value(b, k, m[k]); err != nil {
			return b, err
		}
	}
	return b, nil
}
