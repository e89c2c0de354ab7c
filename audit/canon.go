package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"unicode/utf8"
)

// canonicalObject re-encodes a JSON object canonically: no insignificant
// white space, object keys sorted (byte order) at every level with the last
// of duplicates kept, numbers exactly as written, strings escaped as
// encoding/json escapes them without HTML escaping. Empty input and null
// give "".
func canonicalObject(raw []byte) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if isCanonical(raw) {
		return string(raw), nil
	}
	if s, ok := fastCanonical(raw); ok {
		return s, nil
	}
	return reencode(raw)
}

// isCanonical reports whether raw is a JSON object already in canonical
// form whose strings need no escaping, which fastCanonical would return
// unchanged: checking is cheaper than re-encoding, and the broker writes
// its policy inputs that way.
func isCanonical(raw []byte) bool {
	c := jsonScanner{b: raw}
	return c.peek() == '{' && c.canonicalValue() && c.i == len(raw)
}

// canonicalValue moves past a value, reporting whether it is canonical:
// no white space, object keys strictly increasing, strings plain.
func (c *jsonScanner) canonicalValue() bool {
	open := c.peek()
	if open != '{' && open != '[' {
		_, ok := c.atom()
		return ok
	}
	if c.depth++; c.depth > maxFastDepth {
		return false
	}
	defer func() { c.depth-- }()
	c.i++
	close := byte('}')
	if open == '[' {
		close = ']'
	}
	if c.peek() == close {
		c.i++
		return true
	}
	var prev []byte
	for first := true; ; first = false {
		if open == '{' {
			key, ok := c.str()
			if !ok || !first && bytes.Compare(prev, key) >= 0 || c.peek() != ':' {
				return false
			}
			prev = key
			c.i++
		}
		if !c.canonicalValue() {
			return false
		}
		switch c.peek() {
		case ',':
			c.i++
		case close:
			c.i++
			return true
		default:
			return false
		}
	}
}

// fastCanonical is canonicalObject for objects whose strings need no
// (un)escaping, without encoding/json; ok is false for anything else.
func fastCanonical(raw []byte) (string, bool) {
	c := jsonScanner{b: raw}
	if c.skipSpace(); c.peek() != '{' {
		return "", false
	}
	out, ok := c.canonical(make([]byte, 0, len(raw)))
	if !ok || c.skipSpace() != len(raw) {
		return "", false
	}
	return string(out), true
}

// reencode decodes a JSON object and encodes it canonically with
// encoding/json: the slow path, for strings that need (un)escaping.
func reencode(raw []byte) (string, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil {
		return "", fmt.Errorf("not a JSON object: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return "", errors.New("not a JSON object: data after the object")
	}
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(obj); err != nil {
		return "", err
	}
	return string(bytes.TrimSuffix(b.Bytes(), []byte("\n"))), nil
}

// jsonScanner scans JSON whose strings need no escaping, the fast path of
// canonicalObject and decodeObject. Anything else, or nesting deeper than
// maxFastDepth, makes it report !ok and leaves the input to encoding/json.
type jsonScanner struct {
	b     []byte
	i     int
	depth int
}

// maxFastDepth bounds the recursion of the fast path.
const maxFastDepth = 64

func (c *jsonScanner) peek() byte {
	if c.i < len(c.b) {
		return c.b[c.i]
	}
	return 0
}

// skipSpace moves past JSON white space and returns the new position.
func (c *jsonScanner) skipSpace() int {
	for ch := c.peek(); ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; ch = c.peek() {
		c.i++
	}
	return c.i
}

// member is one object member in canonical form.
type member struct {
	key, value []byte
}

// canonical appends the canonical form of the value at c.i to out.
func (c *jsonScanner) canonical(out []byte) ([]byte, bool) {
	c.skipSpace()
	switch c.peek() {
	case '{', '[':
		if c.depth++; c.depth > maxFastDepth {
			return out, false
		}
		defer func() { c.depth-- }()
		if c.peek() == '{' {
			return c.canonicalObject(out)
		}
		return c.canonicalArray(out)
	}
	v, ok := c.atom()
	return append(out, v...), ok
}

// atom moves past a string, number or literal and returns it as written,
// which is its canonical form.
func (c *jsonScanner) atom() ([]byte, bool) {
	start := c.i
	var ok bool
	switch ch := c.peek(); {
	case ch == '"':
		_, ok = c.str()
	case ch == '-' || ('0' <= ch && ch <= '9'):
		ok = c.number()
	default:
		ok = c.literal() != ""
	}
	return c.b[start:c.i], ok
}

// literal moves past true, false or null and returns it, or "" when there
// is none.
func (c *jsonScanner) literal() string {
	for _, lit := range [...]string{"true", "false", "null"} {
		if bytes.HasPrefix(c.b[c.i:], []byte(lit)) {
			c.i += len(lit)
			return lit
		}
	}
	return ""
}

// canonicalObject appends an object with its members sorted by key, the
// last of duplicate keys kept.
func (c *jsonScanner) canonicalObject(out []byte) ([]byte, bool) {
	c.i++ // {
	members := make([]member, 0, 16)
	if c.skipSpace(); c.peek() == '}' {
		c.i++
		return append(out, "{}"...), true
	}
	for {
		m, ok := c.member()
		if !ok {
			return out, false
		}
		members = append(members, m)
		c.skipSpace()
		if c.peek() == ',' {
			c.i++
			continue
		}
		if c.peek() != '}' {
			return out, false
		}
		c.i++
		break
	}
	slices.SortStableFunc(members, func(a, b member) int { return bytes.Compare(a.key, b.key) })
	out = append(out, '{')
	for i, m := range members {
		if i+1 < len(members) && bytes.Equal(m.key, members[i+1].key) {
			continue // a later duplicate wins
		}
		out = append(out, '"')
		out = append(out, m.key...)
		out = append(out, '"', ':')
		out = append(append(out, m.value...), ',')
	}
	out[len(out)-1] = '}' // replaces the last comma
	return out, true
}

// member reads one "key": value member of an object.
func (c *jsonScanner) member() (member, bool) {
	c.skipSpace()
	key, ok := c.str()
	if c.skipSpace(); !ok || c.peek() != ':' {
		return member{}, false
	}
	c.i++
	var value []byte
	if c.skipSpace(); c.peek() == '{' || c.peek() == '[' {
		value, ok = c.canonical(nil)
	} else {
		value, ok = c.atom() // as written: no copy
	}
	return member{key: key, value: value}, ok
}

// canonicalArray appends an array of canonical values.
func (c *jsonScanner) canonicalArray(out []byte) ([]byte, bool) {
	c.i++ // [
	out = append(out, '[')
	if c.skipSpace(); c.peek() == ']' {
		c.i++
		return append(out, ']'), true
	}
	for {
		var ok bool
		if out, ok = c.canonical(out); !ok {
			return out, false
		}
		switch c.skipSpace(); c.peek() {
		case ',':
			c.i++
			out = append(out, ',')
		case ']':
			c.i++
			return append(out, ']'), true
		default:
			return out, false
		}
	}
}

// str checks a string that needs no escaping and returns its contents.
func (c *jsonScanner) str() ([]byte, bool) {
	if c.peek() != '"' {
		return nil, false
	}
	start := c.i + 1
	for i := start; i < len(c.b); {
		ch := c.b[i]
		switch {
		case ch == '"':
			c.i = i + 1
			return c.b[start:i], true
		case ch == '\\' || ch < 0x20:
			return nil, false
		case ch < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRune(c.b[i:])
			if r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
				return nil, false
			}
			i += n
		}
	}
	return nil, false
}

// number checks a number against the JSON grammar.
func (c *jsonScanner) number() bool {
	if c.peek() == '-' {
		c.i++
	}
	switch ch := c.peek(); {
	case ch == '0':
		c.i++
	case '1' <= ch && ch <= '9':
		c.digits()
	default:
		return false
	}
	if c.peek() == '.' {
		c.i++
		if !c.digits() {
			return false
		}
	}
	if ch := c.peek(); ch == 'e' || ch == 'E' {
		c.i++
		if ch := c.peek(); ch == '+' || ch == '-' {
			c.i++
		}
		if !c.digits() {
			return false
		}
	}
	return true
}

// digits moves past one or more digits, reporting whether there was one.
func (c *jsonScanner) digits() bool {
	start := c.i
	for ch := c.peek(); '0' <= ch && ch <= '9'; ch = c.peek() {
		c.i++
	}
	return c.i > start
}

// decodeObject decodes a JSON object, numbers as json.Number. Flat objects
// of plain strings, numbers, booleans and nulls, which is what claims
// usually are, skip encoding/json.
func decodeObject(s string) (map[string]any, error) {
	if m, ok := decodeFlat([]byte(s)); ok {
		return m, nil
	}
	var m map[string]any
	if err := decodeJSON([]byte(s), &m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeFlat decodes a flat object whose strings need no unescaping; ok is
// false for anything else.
func decodeFlat(b []byte) (m map[string]any, ok bool) {
	c := jsonScanner{b: b}
	if c.peek() != '{' {
		return nil, false
	}
	c.i++
	m = make(map[string]any)
	if c.peek() == '}' {
		c.i++
		return m, c.i == len(b)
	}
	for {
		key, ok := c.str()
		if !ok || c.peek() != ':' {
			return nil, false
		}
		c.i++
		v, ok := c.scalar()
		if !ok {
			return nil, false
		}
		m[string(key)] = v
		switch c.peek() {
		case ',':
			c.i++
		case '}':
			c.i++
			return m, c.i == len(b)
		default:
			return nil, false
		}
	}
}

// scalar decodes a plain string, number, boolean or null.
func (c *jsonScanner) scalar() (any, bool) {
	switch ch := c.peek(); {
	case ch == '"':
		s, ok := c.str()
		return string(s), ok
	case ch == '-' || ('0' <= ch && ch <= '9'):
		start := c.i
		ok := c.number()
		return json.Number(c.b[start:c.i]), ok
	}
	switch c.literal() {
	case "true":
		return true, true
	case "false":
		return false, true
	case "null":
		return nil, true
	}
	return nil, false
}

// encodeFlat encodes a map of plain strings, booleans, nils, integers and
// json.Numbers as canonicalObject would encode its json.Marshal output,
// without reflection; ok is false for any other map.
func encodeFlat(m map[string]any) (string, bool) {
	b := make([]byte, 0, 48*len(m))
	b = append(b, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if !plainString(k) {
			return "", false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, '"'), k...), '"', ':')
		switch v := m[k].(type) {
		case string:
			if !plainString(v) {
				return "", false
			}
			b = append(append(append(b, '"'), v...), '"')
		case bool:
			b = strconv.AppendBool(b, v)
		case nil:
			b = append(b, "null"...)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case int32:
			b = strconv.AppendInt(b, int64(v), 10)
		case uint32:
			b = strconv.AppendUint(b, uint64(v), 10)
		case uint64:
			b = strconv.AppendUint(b, v, 10)
		case json.Number:
			c := jsonScanner{b: []byte(v)}
			if !c.number() || c.i != len(v) {
				return "", false
			}
			b = append(b, v...)
		default:
			return "", false
		}
	}
	return string(append(b, '}')), true
}

// plainString reports whether s is valid UTF-8 that JSON carries without
// escapes, as jsonScanner.str accepts.
func plainString(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == '"' || r == '\\' || r == '\u2028' || r == '\u2029' {
			return false
		}
	}
	return true
}
