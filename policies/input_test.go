package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// inputNow is the time of the stored-input tests: nanoseconds, a zone
// other than UTC.
var inputNow = time.Date(2026, 11, 30, 1, 2, 3, 456789000, time.FixedZone("X", 3600))

// Identity shapes as each attestor builds them (see attest/*; the
// attestors themselves produce them from real evidence in
// input_attest_test.go).
var (
	unixShape = attest.Identity{Method: "unix", Subject: "unix:uid:1000", Claims: map[string]any{
		"uid": int64(1000), "gid": int64(100), "pid": int64(4242), "exe": "/usr/bin/app",
		"exe_sha256": "a62293e968446ea3826c01f9bd1b80f14d8790033bc34ca2ca3e2c5743ab263b",
		"pod_uid":    "0f9e8d7c-6b5a-4321-8fed-cba987654321", "container_id": "3b1f0c2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a",
	}}
	unixTCPShape = attest.Identity{Method: "unix", Subject: "unix:uid:0", Claims: map[string]any{
		"uid": int64(0), "gid": int64(0), "pid": int64(1), "exe": "/sbin/init", "exe_sha256": "00", "transport": "tcp",
	}}
	kubernetesShape = attest.Identity{Method: "kubernetes", Subject: "system:serviceaccount:payments:api", Claims: map[string]any{
		"namespace": "payments", "service_account": "api", "audience": []any{"credbroker", "vault"},
		"pod_name": "api-5d8f7c9b7-abcde", "pod_uid": "0f9e8d7c-6b5a-4321-8fed-cba987654321",
	}, Peer: &unixShape}
	spiffeJWTShape = attest.Identity{Method: "spiffe", Subject: "spiffe://example.org/ns/payments/sa/api", Claims: map[string]any{
		"trust_domain": "example.org", "path": "/ns/payments/sa/api", "audience": []any{"credbroker"}, "expiry": int64(1795997740),
	}, Peer: &unixShape}
	spiffeX509Shape = attest.Identity{Method: "spiffe", Subject: "spiffe://example.org/ns/payments/sa/api", Claims: map[string]any{
		"trust_domain": "example.org", "path": "/ns/payments/sa/api",
	}}
	githubShape = attest.Identity{Method: "github", Subject: "repo:acme/payments:ref:refs/heads/main", Claims: map[string]any{
		"repository": "acme/payments", "repository_id": "123456", "repository_owner": "acme", "repository_owner_id": "1234",
		"ref": "refs/heads/main", "ref_type": "branch", "environment": "prod", "workflow_ref": "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
		"job_workflow_ref": "acme/payments/.github/workflows/deploy.yml@refs/heads/main", "event_name": "push", "run_id": "987654321", "actor": "octocat", "sha": "ffac537e6cbbf934b08745a378932722df287a53",
	}, Peer: &unixShape}
	awsShape = attest.Identity{Method: "aws", Subject: "arn:aws:iam::123456789012:role/payments", Claims: map[string]any{
		"account": "123456789012", "principal_id": "AROAEXAMPLEROLEID:session-1", "arn": "arn:aws:sts::123456789012:assumed-role/payments/session-1",
		"role_name": "payments", "session_name": "session-1",
	}}
	// everyType holds every value type of attest.Identity's contract,
	// nested, with the numbers whose type a JSON round trip could lose.
	everyType = attest.Identity{Method: "kubernetes", Subject: "system:serviceaccount:a:b", Claims: map[string]any{
		"s": "plain", "html": "<script>&", "uni": "é\u2028☃", "ctl": "a\"b\\c\nd\x01",
		"t": true, "f": false, "null": nil,
		"i": int64(7), "neg": int64(-7), "zero": int64(0), "max": int64(math.MaxInt64), "min": int64(math.MinInt64),
		"half": 0.5, "whole": 3.0, "negwhole": -2.0, "fzero": 0.0, "big": 1e21, "bigwhole": 1e20, "tiny": 1e-7,
		"twoTo63": 9.223372036854776e18, "minAsFloat": -9.223372036854776e18, "maxf": math.MaxFloat64, "smallest": math.SmallestNonzeroFloat64,
		"list":  []any{"a", int64(1), 1.0, 1.5, true, nil, []any{}, map[string]any{}, []any{int64(2), map[string]any{"x": 2.0}}},
		"empty": []any{}, "obj": map[string]any{},
		"nested": map[string]any{"b": int64(1), "a": true, "c": map[string]any{"<k>": "<v>", "d": []any{-0.5, int64(-1)}}},
	}}
	fullRequest = Request{Channel: "postgres", Credential: "orders-db", Method: "GET", Path: "/v1/x?<y>", Host: "db.internal:5432", Database: "orders", User: "app"}
)

// inputCases are inputs of every identity shape, for the encode and
// round-trip tests and as fuzz seeds.
var inputCases = []struct {
	name string
	in   Input
}{
	{"unix", Input{Identity: unixShape, Request: Request{Channel: "socket", Credential: "demo", Method: "GET", Path: "/v1/credentials/demo"}, Now: inputNow}},
	{"unix over tcp", Input{Identity: unixTCPShape, Request: Request{Channel: "http", Credential: "api", Method: "POST", Path: "/v1/charges", Host: "api.example.com"}, Now: inputNow}},
	{"kubernetes with peer", Input{Identity: kubernetesShape, Request: Request{Channel: "mtls", Credential: "db", Host: "db.internal"}, Now: inputNow}},
	{"spiffe jwt", Input{Identity: spiffeJWTShape, Request: Request{Channel: "socket", Credential: "demo"}, Now: inputNow}},
	{"spiffe x509", Input{Identity: spiffeX509Shape, Request: Request{Channel: "mtls", Credential: "demo"}, Now: inputNow}},
	{"github", Input{Identity: githubShape, Request: Request{Channel: "socket", Credential: "deploy"}, Now: inputNow}},
	{"aws", Input{Identity: awsShape, Request: Request{Channel: "aws", Credential: "payments-aws"}, Now: inputNow}},
	{"database", Input{Identity: unixShape, Request: fullRequest, Now: inputNow}},
	{"every type", Input{Identity: everyType, Request: fullRequest, Now: inputNow}},
	{"no claims", Input{Identity: attest.Identity{Method: "spiffe", Subject: "spiffe://example.org/a"}, Request: Request{Channel: "socket", Credential: "x"}, Now: inputNow}},
	{"zero identity", Input{Request: Request{Channel: "socket"}, Now: inputNow}},
	{"escapes", Input{Identity: attest.Identity{Method: "unix", Subject: "a\"b\\c\nd", Claims: map[string]any{
		"html": "<script>&", "uni": "é\u2028", "ctl": "\x01", "k\"ey": "v",
	}}, Request: Request{Channel: "socket", Credential: "demo", Path: "/x?<y>"}, Now: inputNow}},
}

// TestEncodeInput: the stored input says what encoding/json says of the
// same document, and, when no string needs escaping, says it in the audit
// log's canonical form (keys in order, no white space), which the log then
// keeps as it is.
func TestEncodeInput(t *testing.T) {
	type request struct {
		Channel    string `json:"channel"`
		Credential string `json:"credential"`
		Method     string `json:"method,omitempty"`
		Path       string `json:"path,omitempty"`
		Host       string `json:"host,omitempty"`
		Database   string `json:"database,omitempty"`
		User       string `json:"user,omitempty"`
	}
	for _, tc := range inputCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeInput(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(got) {
				t.Fatalf("not JSON: %s", got)
			}
			want, err := json.Marshal(struct {
				Identity attest.Identity `json:"identity"`
				Request  request         `json:"request"`
				Now      time.Time       `json:"now"`
			}{tc.in.Identity, request(tc.in.Request), tc.in.Now.UTC()})
			if err != nil {
				t.Fatal(err)
			}
			// Floats are compared as numbers: EncodeInput marks whole ones.
			if g, w := decodeJSON(t, got), decodeJSON(t, want); !reflect.DeepEqual(g, w) {
				t.Fatalf("EncodeInput says\n%v\nencoding/json says\n%v", g, w)
			}
			if tc.name == "escapes" || tc.name == "every type" {
				return
			}
			var canonical bytes.Buffer
			enc := json.NewEncoder(&canonical)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(decodeJSON(t, got)); err != nil {
				t.Fatal(err)
			}
			if c := bytes.TrimSuffix(canonical.Bytes(), []byte("\n")); !bytes.Equal(got, c) {
				t.Fatalf("not canonical:\n got %s\nwant %s", got, c)
			}
		})
	}
}

// decodeJSON decodes a JSON object with numbers as float64, so that 3 and
// 3.0 compare equal.
func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

// TestEncodeInputAsBefore: EncodeInput writes, byte for byte, what the
// broker's encoder wrote before it, so that every stored input reads the
// same and the audit log's hashes of new rows are those the old encoder
// would have given — except for a float64 with a whole value, which it
// marks with ".0" and which the old encoder wrote as an integer.
func TestEncodeInputAsBefore(t *testing.T) {
	for _, tc := range inputCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeInput(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			want := legacyEncodeInput(tc.in)
			if tc.name == "every type" {
				// Exactly the five whole floats that fit in an int64 differ
				// (no other number or string of this input holds ".0").
				if n := bytes.Count(got, []byte(".0")); n != 5 {
					t.Errorf("%d whole floats marked, want 5: %s", n, got)
				}
				got = bytes.ReplaceAll(got, []byte(".0"), nil)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("EncodeInput\n%s\nthe old encoder\n%s", got, want)
			}
		})
	}
}

// TestInputRoundTrip: DecodeInput gives back what EncodeInput was given,
// deeply and with every number's Go type, for each identity shape and for
// every value type claims may hold.
func TestInputRoundTrip(t *testing.T) {
	for _, tc := range inputCases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeInput(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeInput(b)
			if err != nil {
				t.Fatalf("DecodeInput(%s): %v", b, err)
			}
			expectSameInput(t, got, tc.in)
		})
	}
}

// expectSameInput compares a decoded input with the original: Now as the
// same instant in UTC, everything else deeply, types included.
func expectSameInput(t *testing.T, got, want Input) {
	t.Helper()
	if !got.Now.Equal(want.Now) || got.Now.Location() != time.UTC {
		t.Errorf("now = %v, want %v in UTC", got.Now, want.Now)
	}
	got.Now, want.Now = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%s\nwant\n%s", describeInput(got), describeInput(want))
	}
}

// describeInput prints an input with the Go type of every claim value.
func describeInput(in Input) string {
	var b strings.Builder
	var id func(*attest.Identity, string)
	id = func(x *attest.Identity, indent string) {
		b.WriteString(indent + "method=" + x.Method + " subject=" + x.Subject + "\n")
		for k, v := range x.Claims {
			b.WriteString(indent + "  " + k + " = " + strings.ReplaceAll(reflect.ValueOf(&v).Elem().Elem().Kind().String(), "invalid", "nil") + " " + strings.TrimSpace(jsonOf(v)) + "\n")
		}
		if x.Peer != nil {
			id(x.Peer, indent+"  peer: ")
		}
	}
	id(&in.Identity, "")
	b.WriteString(jsonOf(in.Request))
	return b.String()
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b) + "\n"
}

// TestDecodeOldWholeFloat: an input the old encoder wrote with a whole
// float64 claim reads back as an int64, as documented; the same claim
// written by EncodeInput reads back as a float64.
func TestDecodeOldWholeFloat(t *testing.T) {
	in := Input{Identity: attest.Identity{Method: "kubernetes", Subject: "s", Claims: map[string]any{"score": 3.0, "ratio": 0.5}}, Request: Request{Channel: "socket", Credential: "c"}, Now: inputNow}
	old, err := DecodeInput(legacyEncodeInput(in))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := old.Identity.Claims["score"].(int64); !ok || v != 3 {
		t.Errorf("old encoding: score = %#v, want int64(3)", old.Identity.Claims["score"])
	}
	if v, ok := old.Identity.Claims["ratio"].(float64); !ok || v != 0.5 {
		t.Errorf("old encoding: ratio = %#v, want 0.5", old.Identity.Claims["ratio"])
	}
	b, err := EncodeInput(in)
	if err != nil {
		t.Fatal(err)
	}
	now, err := DecodeInput(b)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := now.Identity.Claims["score"].(float64); !ok || v != 3 {
		t.Errorf("EncodeInput: score = %#v, want float64(3)", now.Identity.Claims["score"])
	}
}

// TestReplayedInputDecidesAlike: conditions that look at the types of
// claims — integer comparisons, arithmetic, type() — decide the same on a
// decoded input as on the original.
func TestReplayedInputDecidesAlike(t *testing.T) {
	s := mustCompile(t, `
		policies:
		  - name: unix-pid
		    effect: allow
		    workloads: [{unix: {uid: 1000}}]
		    credentials: [db]
		    when: 'identity.claims.pid + 1 == 4243 && type(identity.claims.uid) == int && now.getFullYear() == 2026'
		  - name: scored
		    effect: allow
		    workloads: [{kubernetes: {namespace: payments}}]
		    credentials: [api]
		    when: 'type(identity.claims.score) == double && identity.claims.score + 0.5 == 3.5 && identity.claims.limits.max * 2 == 8 && identity.peer.claims.gid == 100'
		  - name: no-fractions
		    effect: deny
		    workloads: [{kubernetes: {namespace: payments}}]
		    credentials: [api]
		    when: 'identity.claims.audience.exists(a, a == "vault") && type(identity.claims.limits.max) == double'
	`)
	scored := kubernetesShape
	scored.Claims = map[string]any{"namespace": "payments", "score": 3.0, "limits": map[string]any{"max": int64(4)}, "audience": []any{"vault"}}
	floatMax := scored
	floatMax.Claims = map[string]any{"namespace": "payments", "score": 3.0, "limits": map[string]any{"max": 4.0}, "audience": []any{"vault"}}
	for _, tc := range []struct {
		name   string
		in     Input
		policy string
	}{
		{"int claims", Input{Identity: unixShape, Request: Request{Channel: "socket", Credential: "db"}, Now: inputNow}, "unix-pid"},
		{"float and int claims", Input{Identity: scored, Request: Request{Channel: "socket", Credential: "api"}, Now: inputNow}, "scored"},
		{"a whole float", Input{Identity: floatMax, Request: Request{Channel: "socket", Credential: "api"}, Now: inputNow}, "no-fractions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := s.Evaluate(tc.in)
			if want.Policy != tc.policy {
				t.Fatalf("the original input is decided by %q (%s), want %q", want.Policy, want.Reason, tc.policy)
			}
			b, err := EncodeInput(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			in, err := DecodeInput(b)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Evaluate(in); got != want {
				t.Errorf("decoded input: %+v, original: %+v", got, want)
			}
		})
	}
}

// TestDecodeInputRefuses: anything but an input EncodeInput could have
// written is an error naming the key, and no error quotes a value.
func TestDecodeInputRefuses(t *testing.T) {
	const id = `"identity":{"method":"unix","subject":"unix:uid:0"}`
	const now = `"now":"2026-11-30T01:02:03Z"`
	const req = `"request":{"channel":"socket","credential":"demo"}`
	tests := []struct{ name, data, want string }{
		{"empty", ``, "input: want a JSON object"},
		{"null", `null`, "input: want a JSON object"},
		{"list", `[]`, "input: want a JSON object"},
		{"not JSON", `{"identity":`, "input: unexpected end of JSON input"},
		{"trailing data", `{` + id + `,` + now + `,` + req + `} {}`, "input: invalid character"},
		{"the broker's stand-in for an unencodable input", `{"error":"policy input not encodable"}`, `input: unknown key "error"`},
		{"no request", `{` + id + `,` + now + `}`, `input: missing key "request"`},
		{"no now", `{` + id + `,` + req + `}`, `input: missing key "now"`},
		{"no identity", `{` + now + `,` + req + `}`, `input: missing key "identity"`},
		{"another key", `{` + id + `,` + now + `,` + req + `,"token":"s3cr3t"}`, `input: unknown key "token"`},
		{"a key in another case", `{"Identity":{"method":"unix","subject":"x"},` + now + `,` + req + `}`, `input: unknown key "Identity"`},
		{"now not a time", `{` + id + `,"now":"s3cr3t",` + req + `}`, "now is not an RFC 3339 time"},
		{"now a number", `{` + id + `,"now":1,` + req + `}`, "now: want a string"},
		{"no method", `{"identity":{"subject":"x"},` + now + `,` + req + `}`, `identity: missing key "method"`},
		{"method a number", `{"identity":{"method":1,"subject":"x"},` + now + `,` + req + `}`, "identity.method: want a string"},
		{"subject null", `{"identity":{"method":"unix","subject":null},` + now + `,` + req + `}`, "identity.subject: want a string"},
		{"claims a list", `{"identity":{"claims":["s3cr3t"],"method":"unix","subject":"x"},` + now + `,` + req + `}`, "identity.claims: want an object"},
		{"a number out of range", `{"identity":{"claims":{"n":1e400},"method":"unix","subject":"x"},` + now + `,` + req + `}`, `identity.claims: claim "n": number out of range`},
		{"peer not an object", `{"identity":{"method":"k","peer":"s3cr3t","subject":"x"},` + now + `,` + req + `}`, "identity.peer: want a JSON object"},
		{"a bad peer", `{"identity":{"method":"k","peer":{"method":"unix"},"subject":"x"},` + now + `,` + req + `}`, `identity.peer: missing key "subject"`},
		{"peers too deep", `{"identity":` + strings.Repeat(`{"method":"m","peer":`, 9) + `{"method":"m","subject":"s"}` + strings.Repeat(`,"subject":"s"}`, 9) + `,` + now + `,` + req + `}`, "peers nest more than 8 deep"},
		{"no credential", `{` + id + `,` + now + `,"request":{"channel":"socket"}}`, `request: missing key "credential"`},
		{"path a number", `{` + id + `,` + now + `,"request":{"channel":"socket","credential":"demo","path":7}}`, "request.path: want a string"},
		{"unknown request key", `{` + id + `,` + now + `,"request":{"channel":"socket","credential":"demo","body":"s3cr3t"}}`, `request: unknown key "body"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := DecodeInput([]byte(tt.data))
			if err == nil {
				t.Fatalf("DecodeInput(%s) = %+v, want an error", tt.data, in)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "policies: stored input: ") || !strings.Contains(msg, tt.want) || strings.Contains(msg, "s3cr3t") {
				t.Errorf("error %q, want one starting \"policies: stored input: \" with %q and no value", msg, tt.want)
			}
		})
	}
}

// TestEncodeInputRefuses: values JSON cannot express, at any depth, and
// peers nested deeper than a stored input allows, are errors, never a
// partial encoding.
func TestEncodeInputRefuses(t *testing.T) {
	deep := &attest.Identity{Method: "unix", Subject: "s"}
	for range 9 {
		deep = &attest.Identity{Method: "m", Subject: "s", Peer: deep}
	}
	for _, tc := range []struct {
		name string
		id   attest.Identity
		want string
	}{
		{"NaN", attest.Identity{Claims: map[string]any{"n": math.NaN()}}, `claim "n"`},
		{"infinity in a list", attest.Identity{Claims: map[string]any{"l": []any{int64(1), math.Inf(1)}}}, `claim "l"`},
		{"a channel in an object", attest.Identity{Claims: map[string]any{"o": map[string]any{"c": make(chan int)}}}, `claim "o"`},
		{"peers too deep", *deep, "peers nest more than 8 deep"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeInput(Input{Identity: tc.id, Now: inputNow})
			if !errors.Is(err, ErrInputNotEncodable) || !strings.Contains(err.Error(), tc.want) || b != nil {
				t.Errorf("EncodeInput = %q, %v; want nil and ErrInputNotEncodable naming %s", b, err, tc.want)
			}
		})
	}
	var nine attest.Identity = *deep.Peer // 8 peers below: the most allowed
	b, err := EncodeInput(Input{Identity: nine, Now: inputNow})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeInput(b); err != nil {
		t.Errorf("8 nested peers: %v", err)
	}
}

// FuzzDecodeInput: DecodeInput never panics; what it accepts encodes, and
// reads back the same (types included); the encoding is a fixed point; and
// unless a float is involved it is what the old encoder wrote.
func FuzzDecodeInput(f *testing.F) {
	for _, tc := range inputCases {
		b, err := EncodeInput(tc.in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(b))
		f.Add([]byte(legacyEncodeInput(tc.in)))
	}
	f.Add([]byte(`{"identity":{"claims":{"n":1e400},"method":"unix","subject":"x"},"now":"2026-11-30T01:02:03+01:00","request":{"channel":"socket","credential":"demo"}}`))
	f.Add([]byte(`{"identity":{"claims":{},"method":"unix","subject":"x","peer":{"method":"unix","subject":"y","claims":{"a":[1,2.5,{"b":-0}]}}},"now":"2026-11-30T01:02:03.100Z","request":{"channel":"socket","credential":"demo","path":"\u003c"}}`))
	f.Add([]byte(`{"error":"policy input not encodable"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodeInput(data)
		if err != nil {
			return
		}
		b, err := EncodeInput(in)
		if err != nil {
			t.Fatalf("a decoded input does not encode: %v", err)
		}
		again, err := DecodeInput(b)
		if err != nil {
			t.Fatalf("DecodeInput(EncodeInput(%s)) = %v", b, err)
		}
		if !reflect.DeepEqual(again, in) {
			t.Fatalf("round trip of %s\nchanged\n%s\nto\n%s", data, describeInput(in), describeInput(again))
		}
		if b2, _ := EncodeInput(again); !bytes.Equal(b2, b) {
			t.Fatalf("not a fixed point:\n%s\n%s", b, b2)
		}
		if !hasFloat(&in.Identity) && !bytes.Equal(legacyEncodeInput(in), b) {
			t.Fatalf("EncodeInput\n%s\nthe old encoder\n%s", b, legacyEncodeInput(in))
		}
	})
}

// hasFloat reports whether an identity's claims hold a float64 anywhere.
func hasFloat(id *attest.Identity) bool {
	var walk func(any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case float64:
			return true
		case []any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		case map[string]any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	for ; id != nil; id = id.Peer {
		if walk(id.Claims) {
			return true
		}
	}
	return false
}
