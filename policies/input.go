package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/internal/jsonappend"
)

// maxPeerDepth bounds how deep peers nest in a stored input: the broker
// records one level (a token identity and the unix process that presented
// it); EncodeInput refuses, and DecodeInput rejects, anything deeper than
// this.
const maxPeerDepth = 8

// ErrInputNotEncodable is wrapped by EncodeInput's errors: a claim holds a
// value JSON cannot express (NaN, an infinity, a channel, a cycle) or
// peers nest deeper than a stored input allows.
var ErrInputNotEncodable = errors.New("policies: input not encodable")

// EncodeInput encodes in as the audit log stores it. The broker records
// with every decision it evaluated the Input it was made on, written by
// EncodeInput; `credbroker audit replay` reads it back with DecodeInput
// and evaluates it under another Set. It is one JSON object, keys in byte
// order at every level, no white space:
//
//	{"identity":{"claims":{…},"method":"…","peer":{…identity…},"subject":"…"},
//	 "now":"2026-11-30T01:02:03.456789Z",
//	 "request":{"channel":"…","credential":"…","database":"…","host":"…","method":"…","path":"…","user":"…"}}
//
// claims and peer are left out when empty, as are database, host, method,
// path and user. now is RFC 3339 in UTC with as many fractional digits as
// it needs. A claim string is written as it is when it needs no escaping,
// else as encoding/json writes it; values inside claim lists and objects,
// and their keys, are written as encoding/json writes them (sorted keys,
// HTML-escaped). A string that is not valid UTF-8 is written, and read
// back, with U+FFFD in place of each invalid byte, as encoding/json does.
//
// # Numbers
//
// Claim numbers keep their Go type through the round trip, so that a
// condition comparing an integer claim decides the same on replay: an
// int64 (or int) is written as a decimal integer, a float64 as
// encoding/json writes it, followed by ".0" when that alone would read as
// an integer (3.0 is written "3.0", 1.5 "1.5", 1e21 "1e+21"). DecodeInput
// reads a number written without a fraction or an exponent that fits in
// an int64 as an int64, and every other number as a float64.
//
// Rows written before EncodeInput existed, by the broker's own encoder,
// are byte for byte what EncodeInput writes for the same Input, except
// that a float64 claim with a whole value was written without ".0" and so
// reads back as an int64. No attestor has ever produced a float64 claim
// (unix uid, gid and pid and spiffe expiry are int64; the others are strings
// and lists of strings), so no stored decision holds one.
//
// The types that round-trip are those of attest.Identity's contract:
// string, bool, int64, float64, []any, map[string]any, and nil. Other
// values are written as encoding/json writes them and read back as the
// JSON they became (an int as an int64, a []string as a []any, a nil
// []any as nil). An empty claims map reads back as nil, which policies
// treat alike, and now reads back in UTC.
//
// EncodeInput fails, wrapping ErrInputNotEncodable, only for a claim value
// JSON cannot express or peers nested more than 8 deep.
func EncodeInput(in Input) (json.RawMessage, error) {
	b := make([]byte, 0, 512)
	b = append(b, `{"identity":`...)
	b, err := appendIdentity(b, &in.Identity, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInputNotEncodable, err)
	}
	b = append(b, `,"now":"`...)
	b = in.Now.UTC().AppendFormat(b, time.RFC3339Nano)
	r := &in.Request
	b = append(b, `","request":{"channel":`...)
	b = jsonappend.String(b, r.Channel)
	b = append(b, `,"credential":`...)
	b = jsonappend.String(b, r.Credential)
	for _, f := range [...]struct{ key, v string }{{`,"database":`, r.Database}, {`,"host":`, r.Host}, {`,"method":`, r.Method}, {`,"path":`, r.Path}, {`,"user":`, r.User}} {
		if f.v != "" {
			b = jsonappend.String(append(b, f.key...), f.v)
		}
	}
	return append(b, "}}"...), nil
}

// appendIdentity appends id as JSON, its keys in order; depth counts the
// peers above it.
func appendIdentity(b []byte, id *attest.Identity, depth int) ([]byte, error) {
	b = append(b, '{')
	if len(id.Claims) > 0 {
		b = append(b, `"claims":{`...)
		var err error
		b, err = jsonappend.Members(b, id.Claims, func(b []byte, k string, v any) ([]byte, error) {
			b, err := appendClaim(b, v)
			if err != nil {
				err = fmt.Errorf("claim %q: %w", k, err)
			}
			return b, err
		})
		if err != nil {
			return b, err
		}
		b = append(b, "},"...)
	}
	b = append(b, `"method":`...)
	b = jsonappend.String(b, id.Method)
	if id.Peer != nil {
		if depth == maxPeerDepth {
			return b, fmt.Errorf("peers nest more than %d deep", maxPeerDepth)
		}
		b = append(b, `,"peer":`...)
		var err error
		if b, err = appendIdentity(b, id.Peer, depth+1); err != nil {
			return b, err
		}
	}
	b = append(b, `,"subject":`...)
	return append(jsonappend.String(b, id.Subject), '}'), nil
}

// appendClaim appends a claim's value: the common kinds directly, others
// as appendJSON does.
func appendClaim(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case string:
		return jsonappend.String(b, v), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	}
	return appendJSON(b, v)
}

// appendJSON appends v as json.Marshal writes it, except that a float64
// that json.Marshal would write as an integer gets ".0", at any depth.
func appendJSON(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case float64:
		j, err := json.Marshal(v)
		if err != nil {
			return b, err
		}
		b = append(b, j...)
		if !bytes.ContainsAny(j, ".eE") {
			if _, err := strconv.ParseInt(string(j), 10, 64); err == nil {
				b = append(b, ".0"...)
			}
		}
		return b, nil
	case []any:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		if v == nil {
			return append(b, "null"...), nil
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			j, _ := json.Marshal(k) // a string always encodes
			b = append(append(b, j...), ':')
			var err error
			if b, err = appendJSON(b, v[k]); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	}
	j, err := json.Marshal(v)
	return append(b, j...), err
}

// DecodeInput reads a stored policy input (see the format above) back into
// the Input EncodeInput was given, numbers with their Go types. It is
// strict: data must be one JSON object with exactly the keys EncodeInput
// writes — identity (method and subject required, claims and peer
// optional), now (RFC 3339) and request (channel and credential required;
// database, host, method, path and user optional) — so that an input
// written by a later, richer format is refused rather than evaluated
// without what it added. Errors say which key is wrong and why; they quote
// no value.
func DecodeInput(data []byte) (Input, error) {
	var in Input
	top, err := object(data, "input", []string{"identity", "now", "request"}, []string{"identity", "now", "request"})
	if err != nil {
		return Input{}, err
	}
	if in.Identity, err = decodeIdentity(top["identity"], "identity", 0); err != nil {
		return Input{}, err
	}
	now, err := str(top["now"], "now")
	if err != nil {
		return Input{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, now)
	if err != nil {
		return Input{}, errors.New("policies: stored input: now is not an RFC 3339 time")
	}
	in.Now = t.UTC()
	req, err := object(top["request"], "request", []string{"channel", "credential"}, []string{"channel", "credential", "database", "host", "method", "path", "user"})
	if err != nil {
		return Input{}, err
	}
	r := &in.Request
	for _, f := range [...]struct {
		key string
		dst *string
	}{{"channel", &r.Channel}, {"credential", &r.Credential}, {"database", &r.Database}, {"host", &r.Host}, {"method", &r.Method}, {"path", &r.Path}, {"user", &r.User}} {
		if raw, ok := req[f.key]; ok {
			if *f.dst, err = str(raw, "request."+f.key); err != nil {
				return Input{}, err
			}
		}
	}
	return in, nil
}

// decodeIdentity reads a stored identity found at path; depth counts the
// peers above it.
func decodeIdentity(raw json.RawMessage, path string, depth int) (attest.Identity, error) {
	var id attest.Identity
	m, err := object(raw, path, []string{"method", "subject"}, []string{"claims", "method", "peer", "subject"})
	if err != nil {
		return id, err
	}
	if id.Method, err = str(m["method"], path+".method"); err != nil {
		return id, err
	}
	if id.Subject, err = str(m["subject"], path+".subject"); err != nil {
		return id, err
	}
	if raw, ok := m["claims"]; ok {
		if id.Claims, err = decodeClaims(raw, path+".claims"); err != nil {
			return id, err
		}
	}
	if raw, ok := m["peer"]; ok {
		if depth == maxPeerDepth {
			return id, fmt.Errorf("policies: stored input: %s.peer: peers nest more than %d deep", path, maxPeerDepth)
		}
		peer, err := decodeIdentity(raw, path+".peer", depth+1)
		if err != nil {
			return id, err
		}
		id.Peer = &peer
	}
	return id, nil
}

// decodeClaims reads a claims object, numbers as their Go types; an empty
// object is nil.
func decodeClaims(raw json.RawMessage, path string) (map[string]any, error) {
	if !isKind(raw, '{') {
		return nil, fmt.Errorf("policies: stored input: %s: want an object", path)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var claims map[string]any
	if err := d.Decode(&claims); err != nil {
		return nil, fmt.Errorf("policies: stored input: %s: %w", path, err)
	}
	if len(claims) == 0 {
		return nil, nil
	}
	for k, v := range claims {
		n, err := numbers(v)
		if err != nil {
			return nil, fmt.Errorf("policies: stored input: %s: claim %q: %w", path, k, err)
		}
		claims[k] = n
	}
	return claims, nil
}

// numbers replaces, in a value decoded with json.Number, each number by an
// int64 when written as an integer that fits, else by a float64.
func numbers(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		s := string(v)
		if !bytes.ContainsAny([]byte(s), ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return n, nil
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, errors.New("number out of range")
		}
		return f, nil
	case []any:
		for i, e := range v {
			n, err := numbers(e)
			if err != nil {
				return nil, err
			}
			v[i] = n
		}
	case map[string]any:
		for k, e := range v {
			n, err := numbers(e)
			if err != nil {
				return nil, err
			}
			v[k] = n
		}
	}
	return v, nil
}

// object decodes a JSON object found at path, checking that it has every
// key of required and no key outside allowed (both exact, unlike
// encoding/json's case-insensitive field matching).
func object(raw json.RawMessage, path string, required, allowed []string) (map[string]json.RawMessage, error) {
	if !isKind(raw, '{') {
		return nil, fmt.Errorf("policies: stored input: %s: want a JSON object", path)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("policies: stored input: %s: %w", path, err)
	}
	for k := range m {
		if !slices.Contains(allowed, k) {
			return nil, fmt.Errorf("policies: stored input: %s: unknown key %q (keys: %v)", path, clip(k), allowed)
		}
	}
	for _, k := range required {
		if _, ok := m[k]; !ok {
			return nil, fmt.Errorf("policies: stored input: %s: missing key %q", path, k)
		}
	}
	return m, nil
}

// str decodes a JSON string found at path.
func str(raw json.RawMessage, path string) (string, error) {
	var s string
	if !isKind(raw, '"') || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("policies: stored input: %s: want a string", path)
	}
	return s, nil
}

// isKind reports whether the JSON value raw starts with c, past white
// space.
func isKind(raw json.RawMessage, c byte) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == c
}
