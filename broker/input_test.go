package broker

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/credbroker/credbroker/providers"
)

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
