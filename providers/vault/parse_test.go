package vault

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

// Vault's answers, as its HTTP API writes them.
var answerCases = []struct {
	name    string
	body    string
	field   string   // kv
	fields  []string // dynamic
	kv      string   // the kv value, "" when the kv read fails
	version int64
	dynamic map[string]string // nil when the dynamic read fails
}{
	{
		name:  "kv v2 secret",
		body:  `{"data":{"data":{"key":"sk_live_abcdef","n":42,"ok":true,"obj":{"a":1}},"metadata":{"version":3,"destroyed":false}}}`,
		field: "key", kv: "sk_live_abcdef", version: 3,
	},
	{
		name:  "kv v2 number field",
		body:  `{"data":{"data":{"n":42},"metadata":{"version":1}}}`,
		field: "n", kv: "42", version: 1,
	},
	{
		name:  "kv v2 object field",
		body:  `{"data":{"data":{"obj":{"a":1}},"metadata":{"version":1}}}`,
		field: "obj", kv: `{"a":1}`, version: 1,
	},
	{name: "kv v2 deleted version", body: `{"data":{"data":null,"metadata":{"version":4,"deletion_time":"2026-01-01T00:00:00Z"}}}`, field: "key"},
	{name: "kv v2 missing field", body: `{"data":{"data":{"other":"sk_live_abcdef"},"metadata":{"version":2}}}`, field: "key"},
	{name: "kv v2 empty field", body: `{"data":{"data":{"key":""},"metadata":{"version":2}}}`, field: "key"},
	{name: "kv v1 secret", body: `{"data":{"key":"sk_live_abcdef"}}`, field: "key"},
	{
		name:    "database credentials",
		body:    `{"lease_id":"database/creds/ro/AbCdEf","renewable":true,"lease_duration":3600,"data":{"username":"v-ro-xyz","password":"A1a-secretpw"}}`,
		fields:  []string{"username", "password"},
		dynamic: map[string]string{"username": "v-ro-xyz", "password": "A1a-secretpw"},
	},
	{
		name:   "leased secret missing a field",
		body:   `{"lease_id":"aws/creds/x/1","lease_duration":60,"data":{"access_key":"AKIAEXAMPLE1"}}`,
		fields: []string{"access_key", "secret_key"},
	},
	{name: "no lease", body: `{"data":{"username":"u","password":"secretpw"}}`, fields: []string{"username", "password"}},
	{name: "empty", body: ``, fields: []string{"username"}, field: "key"},
	{
		name:    "database credentials with symbols",
		body:    `{"lease_id":"database/creds/ro/X","lease_duration":60,"data":{"username":"v-ro-1","password":"pw#Secret!42{}"}}`,
		fields:  []string{"username", "password"},
		dynamic: map[string]string{"username": "v-ro-1", "password": "pw#Secret!42{}"},
	},
	{name: "not JSON", body: `<html>sk_live_abcdef</html>`, fields: []string{"username"}, field: "key"},
}

func TestValues(t *testing.T) {
	for _, tt := range answerCases {
		t.Run(tt.name, func(t *testing.T) {
			sec, perr := api.ParseSecret(strings.NewReader(tt.body))
			if tt.field != "" {
				v, version, err := kvValue(sec, tt.field)
				switch {
				case tt.kv == "" && err == nil:
					t.Errorf("kv: read %q, want an error", v.Reveal())
				case tt.kv != "" && (perr != nil || err != nil || string(v.Reveal()) != tt.kv || version != tt.version):
					t.Errorf("kv: %q v%d, %v %v; want %q v%d", v.Reveal(), version, perr, err, tt.kv, tt.version)
				case err != nil && !errors.Is(err, ErrNotFound):
					t.Errorf("kv: %v does not wrap ErrNotFound", err)
				}
			}
			if tt.fields != nil {
				got, err := dynamicValues(sec, tt.fields)
				switch {
				case tt.dynamic == nil && err == nil:
					t.Errorf("dynamic: read %v, want an error", got)
				case tt.dynamic != nil && err != nil:
					t.Errorf("dynamic: %v", err)
				case err != nil && !errors.Is(err, ErrNotFound):
					t.Errorf("dynamic: %v does not wrap ErrNotFound", err)
				}
				for k, want := range tt.dynamic {
					if string(got[k].Reveal()) != want {
						t.Errorf("dynamic: %s = %q, want %q", k, got[k].Reveal(), want)
					}
				}
			}
		})
	}
}

// FuzzValues feeds arbitrary answers to the extraction of fields: it never
// panics, and its errors never repeat a value from the answer.
func FuzzValues(f *testing.F) {
	for _, tt := range answerCases {
		f.Add([]byte(tt.body), tt.field)
	}
	f.Fuzz(func(t *testing.T, body []byte, field string) {
		sec, err := api.ParseSecret(bytes.NewReader(body))
		if err != nil {
			return
		}
		// The values checked carry a character no error template has;
		// the field names an error may quote are removed before the
		// check.
		var values []string
		collect := func(m map[string]any) {
			for _, v := range m {
				if b, ok := valueOf(v); ok && bytes.ContainsAny(b, "{}[]<>@#$%^&*=+|~") {
					values = append(values, string(b))
				}
			}
		}
		if sec != nil {
			collect(sec.Data)
			if d, ok := sec.Data["data"].(map[string]any); ok {
				collect(d)
			}
		}
		check := func(err error) {
			if err == nil {
				return
			}
			msg := strings.ReplaceAll(err.Error(), strconv.Quote(field), "")
			msg = strings.ReplaceAll(msg, strconv.Quote("password"), "")
			for _, v := range values {
				if strings.Contains(msg, v) {
					t.Fatalf("error %q repeats a value %q", err, v)
				}
			}
		}
		_, _, kerr := kvValue(sec, field)
		check(kerr)
		_, derr := dynamicValues(sec, []string{field, "password"})
		check(derr)
	})
}

func TestLeaseIDs(t *testing.T) {
	id := kvLeaseID(17)
	if v, ok := parseKVLease(id); !ok || v != 17 {
		t.Fatalf("parseKVLease(%q) = %d, %v", id, v, ok)
	}
	if kvLeaseID(17) == id {
		t.Error("two KV lease ids are equal")
	}
	for _, tt := range []struct {
		id      string
		kv      bool
		dynamic string
	}{
		{"vault:kv:v3:0123456789abcdef01234567", true, ""},
		{"vault:database/creds/ro/AbCd123", false, "database/creds/ro/AbCd123"},
		{"vault:kv:v0:0123456789abcdef01234567", false, ""},
		{"vault:kv:v03:0123456789abcdef01234567", false, ""},
		{"vault:kv:v+3:0123456789abcdef01234567", false, ""},
		{"vault:kv:v3:0123456789ABCDEF01234567", false, ""},
		{"vault:kv:v3:0123456789abcdef0123456", false, ""},
		{"vault:kv:v99999999999999999999:0123456789abcdef01234567", false, ""},
		{"vault:", false, ""},
		{"static-0123", false, ""},
		{"vault:a b", false, ""},
	} {
		_, kv := parseKVLease(tt.id)
		dyn, _ := parseDynamicLease(tt.id)
		if kv != tt.kv || dyn != tt.dynamic {
			t.Errorf("%q: kv %v, dynamic %q; want %v, %q", tt.id, kv, dyn, tt.kv, tt.dynamic)
		}
	}
}

// FuzzLeaseIDs: lease ids come back from the lease manager's durable
// store; parsing one never panics, and a KV id that parses is the one
// kvLeaseID writes for its version.
func FuzzLeaseIDs(f *testing.F) {
	f.Add(kvLeaseID(3))
	f.Add("vault:database/creds/ro/AbCd123")
	f.Add("vault:kv:v03:0123456789abcdef01234567")
	f.Add("vault:kv:v3:0123456789ABCDEF01234567")
	f.Fuzz(func(t *testing.T, id string) {
		if v, ok := parseKVLease(id); ok {
			want := kvLeasePrefix + strconv.FormatInt(v, 10) + ":"
			if !strings.HasPrefix(id, want) || len(id) != len(want)+24 {
				t.Fatalf("%q parsed as version %d", id, v)
			}
			if _, dyn := parseDynamicLease(id); dyn {
				t.Fatalf("%q is both a KV and a dynamic lease id", id)
			}
		}
		if rest, ok := parseDynamicLease(id); ok && Kind+":"+rest != id {
			t.Fatalf("%q parsed as Vault lease %q", id, rest)
		}
	})
}
