package broker

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
)

// TestEncodeInput: the recorded policy input says what encoding/json says
// of the same document, and, when no string needs escaping, says it in the
// audit log's canonical form (keys in order, no white space), which the log
// then keeps as it is.
func TestEncodeInput(t *testing.T) {
	now := time.Date(2026, 11, 30, 1, 2, 3, 456789000, time.FixedZone("X", 3600))
	unixID := attest.Identity{Method: "unix", Subject: "unix:uid:1000", Claims: map[string]any{
		"uid": int64(1000), "gid": int64(100), "pid": int64(4242), "exe": "/usr/bin/app",
		"exe_sha256": "a62293e968446ea3826c01f9bd1b80f14d8790033bc34ca2ca3e2c5743ab263b",
	}}
	tokenID := attest.Identity{Method: "kubernetes", Subject: "system:serviceaccount:payments:api", Claims: map[string]any{
		"namespace": "payments", "aud": []any{"credbroker", "vault"}, "exp": json.Number("1795997740"),
		"nested": map[string]any{"b": 1, "a": true}, "verified": true, "n": 7,
	}, Peer: &unixID}
	cases := []struct {
		name  string
		in    policies.Input
		plain bool // no string needs escaping
	}{
		{"unix", policies.Input{Identity: unixID, Request: policies.Request{Channel: "socket", Credential: "demo", Method: "GET", Path: "/v1/credentials/demo"}, Now: now}, true},
		{"token with peer", policies.Input{Identity: tokenID, Request: policies.Request{Channel: "mtls", Credential: "db", Host: "db.internal"}, Now: now}, true},
		{"database", policies.Input{Identity: unixID, Request: policies.Request{Channel: "postgres", Credential: "db", Host: "db.internal:5432", Database: "orders", User: "app"}, Now: now}, true},
		{"no claims", policies.Input{Identity: attest.Identity{Method: "spiffe", Subject: "spiffe://example.org/a"}, Request: policies.Request{Channel: "socket", Credential: "x"}, Now: now}, true},
		{"failed attestation", policies.Input{Request: policies.Request{Channel: "socket"}, Now: now}, true},
		{"escapes", policies.Input{Identity: attest.Identity{Method: "unix", Subject: "a\"b\\c\nd", Claims: map[string]any{
			"html": "<script>&", "uni": "é\u2028", "ctl": "\x01", "bad": "\xff",
		}}, Request: policies.Request{Channel: "socket", Credential: "demo", Path: "/x?<y>"}, Now: now}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := encodeInput(tc.in)
			if !json.Valid(got) {
				t.Fatalf("not JSON: %s", got)
			}
			want, err := json.Marshal(struct {
				Identity attest.Identity `json:"identity"`
				Request  struct {
					Channel    string `json:"channel"`
					Credential string `json:"credential"`
					Method     string `json:"method,omitempty"`
					Path       string `json:"path,omitempty"`
					Host       string `json:"host,omitempty"`
					Database   string `json:"database,omitempty"`
					User       string `json:"user,omitempty"`
				} `json:"request"`
				Now time.Time `json:"now"`
			}{Identity: tc.in.Identity, Request: struct {
				Channel    string `json:"channel"`
				Credential string `json:"credential"`
				Method     string `json:"method,omitempty"`
				Path       string `json:"path,omitempty"`
				Host       string `json:"host,omitempty"`
				Database   string `json:"database,omitempty"`
				User       string `json:"user,omitempty"`
			}(tc.in.Request), Now: tc.in.Now.UTC()})
			if err != nil {
				t.Fatal(err)
			}
			if g, w := decode(t, got), decode(t, want); !reflect.DeepEqual(g, w) {
				t.Fatalf("encodeInput says\n%v\nencoding/json says\n%v", g, w)
			}
			if !tc.plain {
				return
			}
			var canonical bytes.Buffer
			enc := json.NewEncoder(&canonical)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(decode(t, got)); err != nil {
				t.Fatal(err)
			}
			if c := bytes.TrimSuffix(canonical.Bytes(), []byte("\n")); !bytes.Equal(got, c) {
				t.Fatalf("not canonical:\n got %s\nwant %s", got, c)
			}
		})
	}
}

// decode decodes a JSON object keeping numbers as written.
func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

// TestAppendReply: the success body says what encoding/json says of reply,
// whatever bytes the secret holds.
func TestAppendReply(t *testing.T) {
	exp := time.Date(2026, 11, 30, 1, 2, 3, 4, time.FixedZone("X", -7200))
	for _, data := range []map[string]string{
		{"value": "s3cr3t"},
		{"password": "p\"w\\d\n<&>", "username": "app", "a": "\xff\xfe invalid", "z": "é \u2028 \x00"},
		{},
	} {
		secrets := map[string]providers.Secret{}
		for k, v := range data {
			secrets[k] = providers.NewSecret([]byte(v))
		}
		g := &Grant{DecisionID: "0192abc", Name: "db", Credential: providers.Credential{
			Lease: providers.Lease{ID: "lease-1", Kind: "static", ExpiresAt: exp}, Data: secrets,
		}}
		got := appendReply(nil, g)
		want, err := json.Marshal(reply{Name: g.Name, Kind: "static", Data: data, ExpiresAt: exp.UTC(), LeaseID: "lease-1", DecisionID: g.DecisionID})
		if err != nil {
			t.Fatal(err)
		}
		if g, w := decode(t, got), decode(t, want); !reflect.DeepEqual(g, w) {
			t.Errorf("appendReply says\n%v\nencoding/json says\n%v", g, w)
		}
	}
}
