package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

// testKey is a fixed Ed25519 key for parser tables.
var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// testPub is testKey's public key.
var testPub = testKey.Public().(ed25519.PublicKey)

// publicKeyTests are ParsePublicKey's table and its fuzz seeds.
var publicKeyTests = func() []struct {
	name string
	in   string
	ok   bool
} {
	pemKey, _ := EncodePublicKey(testPub)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	b64 := base64.StdEncoding.EncodeToString(testPub)
	return []struct {
		name string
		in   string
		ok   bool
	}{
		{"PEM", string(pemKey), true},
		{"base64", b64, true},
		{"base64 with newline", b64 + "\n", true},
		{"PEM of another type", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), false},
		{"PEM of an ECDSA key", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER})), false},
		{"PEM with garbage", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", false},
		{"short base64", base64.StdEncoding.EncodeToString(testPub[:31]), false},
		{"not base64", "not a key!", false},
		{"empty", "", false},
	}
}()

func TestParsePublicKey(t *testing.T) {
	for _, tt := range publicKeyTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePublicKey([]byte(tt.in))
			if tt.ok != (err == nil) {
				t.Fatalf("ParsePublicKey = %v, %v; want ok %v", got, err, tt.ok)
			}
			if tt.ok && !got.Equal(testPub) {
				t.Errorf("key = %x, want %x", got, testPub)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "audit: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// signedTestCheckpoint returns the JSON of a checkpoint signed by testKey.
func signedTestCheckpoint() string {
	h, _ := parseHash(strings.Repeat("ab", 32))
	cp, _ := signCheckpoint(chainHead{seq: 42, hash: h}, t0, testKey)
	b, _ := json.Marshal(cp)
	return string(b)
}

// checkpointTests are ParseCheckpoint's table and its fuzz seeds.
var checkpointTests = func() []struct {
	name, in string
	ok       bool
} {
	good := signedTestCheckpoint()
	return []struct {
		name, in string
		ok       bool
	}{
		{"valid", good, true},
		{"valid with newline", good + "\n", true},
		{"unknown field", strings.Replace(good, `{"seq"`, `{"x":1,"seq"`, 1), false},
		{"missing hash", strings.Replace(good, `"hash"`, `"hush"`, 1), false},
		{"uppercase hash", strings.Replace(good, strings.Repeat("ab", 32), strings.Repeat("AB", 32), 1), false},
		{"negative seq", strings.Replace(good, `"seq":42`, `"seq":-1`, 1), false},
		{"time out of range", strings.Replace(good, `"time":"2025`, `"time":"3025`, 1), false},
		{"short key", strings.Replace(good, `"public_key":"`, `"public_key":"AAAA`, 1), false},
		{"trailing data", good + "{}", false},
		{"not JSON", "seq=1", false},
		{"empty", "", false},
	}
}()

func TestParseCheckpoint(t *testing.T) {
	for _, tt := range checkpointTests {
		t.Run(tt.name, func(t *testing.T) {
			cp, err := ParseCheckpoint([]byte(tt.in))
			if tt.ok != (err == nil) {
				t.Fatalf("ParseCheckpoint = %v; want ok %v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if cp.Seq != 42 || !cp.Time.Equal(t0) || !cp.PublicKey.Equal(testPub) {
				t.Errorf("checkpoint = %+v", cp)
			}
			if err := cp.Verify(testPub); err != nil {
				t.Error(err)
			}
			other, _, _ := ed25519.GenerateKey(nil)
			if cp.Verify(other) == nil {
				t.Error("checkpoint verifies with an unrelated key")
			}
			cp.Time = cp.Time.Add(time.Nanosecond)
			if cp.Verify(testPub) == nil {
				t.Error("checkpoint with a changed time still verifies")
			}
		})
	}
}

// canonicalTests are canonicalObject's table and its fuzz seeds.
var canonicalTests = []struct{ in, want string }{
	{`{"b":1,"a":{"d":[1,{"z":true,"y":null}],"c":"x"}}`, `{"a":{"c":"x","d":[1,{"y":null,"z":true}]},"b":1}`},
	{` { "a" : 1.50e+3 } `, `{"a":1.50e+3}`},
	{`{"a":1,"a":2}`, `{"a":2}`},
	{`{"html":"<&>","nl":"a\nb","u":"\u00e9"}`, `{"html":"<&>","nl":"a\nb","u":"é"}`},
	{`{"ls":"\u2028"}`, `{"ls":"\u2028"}`},
	{`{}`, `{}`},
	{` {"b" : [ 1 , {"y":2, "x":[]} ] , "a":{}, "b":"last"}`, `{"a":{},"b":"last"}`},
	{`{"a":[true,false,null,-0.5e-3,"s"]}`, `{"a":[true,false,null,-0.5e-3,"s"]}`},
	{`{"a":tru}`, "error"},
	{`{"a" 1}`, "error"},
	{`{"a":1,}`, "error"},
	{``, ``},
	{`null`, ``},
	{`[1]`, "error"},
	{`"s"`, "error"},
	{`{"a":1} {}`, "error"},
	{`{"a":01}`, "error"},
	{"{\"a\":\"\xff\"}", "{\"a\":\"\ufffd\"}"},
	{`{"deep":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, `{"deep":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`},
}

func TestCanonicalObject(t *testing.T) {
	for _, tt := range canonicalTests {
		got, err := canonicalObject([]byte(tt.in))
		if tt.want == "error" {
			if err == nil {
				t.Errorf("canonicalObject(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("canonicalObject(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestEncodeFlat(t *testing.T) {
	tests := []struct {
		m    map[string]any
		flat bool
	}{
		{map[string]any{"b": "x", "a": 1, "c": true, "d": nil, "e": int64(-2), "f": uint64(3), "g": json.Number("1.5e3"), "h": int32(4), "i": uint32(5)}, true},
		{map[string]any{"html": "<&>", "é": "ü"}, true},
		{map[string]any{"q": `say "hi"`}, false},
		{map[string]any{"nl": "a\nb"}, false},
		{map[string]any{"ls": "\u2028"}, false},
		{map[string]any{"bad": "\xff"}, false},
		{map[string]any{"k\x01": 1}, false},
		{map[string]any{"f": 1.5}, false},
		{map[string]any{"n": json.Number("01")}, false},
		{map[string]any{"nested": map[string]any{"b": 1, "a": 2}}, false},
	}
	for _, tt := range tests {
		got, ok := encodeFlat(tt.m)
		if ok != tt.flat {
			t.Errorf("encodeFlat(%v) ok = %v, want %v", tt.m, ok, tt.flat)
		}
		raw, err := json.Marshal(tt.m)
		if err != nil {
			continue // json.Number("01") cannot be marshalled at all
		}
		slow, err := canonicalObject(raw)
		if err != nil {
			t.Fatal(err)
		}
		if ok && got != slow {
			t.Errorf("encodeFlat(%v) = %s, the slow path gives %s", tt.m, got, slow)
		}
		if viaClaims, err := canonicalClaims(tt.m); err != nil || viaClaims != slow {
			t.Errorf("canonicalClaims(%v) = %s, %v; want %s", tt.m, viaClaims, err, slow)
		}
	}
}
