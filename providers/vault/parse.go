package vault

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/credbroker/credbroker/providers"
)

// kvValue extracts field from a KV v2 read (data.data[field]) and the
// version read (data.metadata.version). Its errors name the field, never a
// value.
func kvValue(sec *api.Secret, field string) (providers.Secret, int64, error) {
	if sec == nil || sec.Data == nil {
		return providers.Secret{}, 0, fmt.Errorf("%w: the secret does not exist", ErrNotFound)
	}
	meta, _ := sec.Data["metadata"].(map[string]any)
	version, _ := meta["version"].(json.Number)
	v, err := strconv.ParseInt(string(version), 10, 64)
	if err != nil || v <= 0 {
		return providers.Secret{}, 0, fmt.Errorf("%w: the answer is not a KV v2 secret (no metadata.version); is the mount KV v2?", ErrNotFound)
	}
	data, ok := sec.Data["data"].(map[string]any)
	if !ok {
		return providers.Secret{}, 0, fmt.Errorf("%w: version %d of the secret is deleted", ErrNotFound, v)
	}
	b, ok := valueOf(data[field])
	if !ok {
		return providers.Secret{}, 0, fmt.Errorf("%w: version %d of the secret has no field %q", ErrNotFound, v, field)
	}
	return providers.NewSecret(b), v, nil
}

// dynamicValues extracts fields from a leased secret's data. Its errors
// name the fields, never a value.
func dynamicValues(sec *api.Secret, fields []string) (map[string]providers.Secret, error) {
	if sec == nil {
		return nil, fmt.Errorf("%w: the path returned nothing", ErrNotFound)
	}
	if sec.LeaseID == "" {
		return nil, fmt.Errorf("%w: the path returned a secret without a lease; a KV secret is read with kv, not dynamic", ErrNotFound)
	}
	out := make(map[string]providers.Secret, len(fields))
	var missing []string
	for _, f := range fields {
		b, ok := valueOf(sec.Data[f])
		if !ok {
			missing = append(missing, strconv.Quote(f))
			continue
		}
		out[f] = providers.NewSecret(b)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: the leased secret has no field %s", ErrNotFound, strings.Join(missing, ", "))
	}
	return out, nil
}

// valueOf renders one field of Vault's JSON: a string as it is, a number
// or boolean in its JSON form, an object or array as JSON. Absent, null and
// empty values are not values.
func valueOf(v any) ([]byte, bool) {
	var b []byte
	switch x := v.(type) {
	case nil:
		return nil, false
	case string:
		b = []byte(x)
	case json.Number:
		b = []byte(x)
	case bool:
		b = strconv.AppendBool(nil, x)
	default:
		var err error
		if b, err = json.Marshal(x); err != nil {
			return nil, false
		}
	}
	return b, len(b) > 0
}

// A KV credential's lease id is "vault:kv:v<version>:<24 hex digits>": the
// version read, which Renew checks is still current, and a random part
// that makes every issue's id unique. A dynamic credential's lease id is
// "vault:" followed by Vault's own lease id.
const kvLeasePrefix = Kind + ":kv:v"

func kvLeaseID(version int64) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return kvLeasePrefix + strconv.FormatInt(version, 10) + ":" + hex.EncodeToString(b[:])
}

// parseKVLease returns the version a KV lease id names.
func parseKVLease(id string) (int64, bool) {
	rest, ok := strings.CutPrefix(id, kvLeasePrefix)
	if !ok {
		return 0, false
	}
	ver, random, ok := strings.Cut(rest, ":")
	if !ok || len(random) != 24 || ver == "" || ver[0] == '0' || ver[0] == '+' {
		return 0, false
	}
	if _, err := hex.DecodeString(random); err != nil || strings.ToLower(random) != random {
		return 0, false
	}
	v, err := strconv.ParseInt(ver, 10, 64)
	if err != nil || v <= 0 {
		return 0, false
	}
	return v, true
}

// parseDynamicLease returns the Vault lease id a dynamic lease id carries.
func parseDynamicLease(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, Kind+":")
	if !ok || rest == "" || strings.HasPrefix(rest, "kv:") || strings.ContainsAny(rest, " \t\r\n") {
		return "", false
	}
	return rest, true
}
