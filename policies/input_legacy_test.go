package policies

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/internal/jsonappend"
)

// legacyEncodeInput is the broker's encoder of the policy input before
// EncodeInput replaced it (broker/broker.go encodeInput at commit df1609d),
// copied unchanged but for names: every stored input written before
// EncodeInput existed was written by it. The tests hold EncodeInput to its
// bytes.
func legacyEncodeInput(in Input) json.RawMessage {
	b := make([]byte, 0, 512)
	b = append(b, `{"identity":`...)
	b, err := legacyAppendIdentity(b, &in.Identity)
	if err != nil {
		return json.RawMessage(`{"error":"policy input not encodable"}`)
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
	return append(b, "}}"...)
}

func legacyAppendIdentity(b []byte, id *attest.Identity) ([]byte, error) {
	b = append(b, '{')
	if len(id.Claims) > 0 {
		b = append(b, `"claims":{`...)
		keys := make([]string, 0, len(id.Claims))
		for k := range id.Claims {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(jsonappend.String(b, k), ':')
			var err error
			if b, err = legacyAppendValue(b, id.Claims[k]); err != nil {
				return b, err
			}
		}
		b = append(b, "},"...)
	}
	b = append(b, `"method":`...)
	b = jsonappend.String(b, id.Method)
	if id.Peer != nil {
		b = append(b, `,"peer":`...)
		var err error
		if b, err = legacyAppendIdentity(b, id.Peer); err != nil {
			return b, err
		}
	}
	b = append(b, `,"subject":`...)
	return append(jsonappend.String(b, id.Subject), '}'), nil
}

func legacyAppendValue(b []byte, v any) ([]byte, error) {
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
	j, err := json.Marshal(v)
	return append(b, j...), err
}
