package audit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func FuzzParseCheckpoint(f *testing.F) {
	for _, tt := range checkpointTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, err := ParseCheckpoint(data)
		if err != nil {
			return
		}
		cp.Verify(testPub)
		b, err := json.Marshal(cp)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseCheckpoint(b)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", b, err)
		}
		if again.Seq != cp.Seq || again.Hash != cp.Hash || !again.Time.Equal(cp.Time) {
			t.Errorf("round trip changed %+v to %+v", cp, again)
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	for _, tt := range publicKeyTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := ParsePublicKey(data)
		if err != nil {
			return
		}
		enc, err := EncodePublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParsePublicKey(enc)
		if err != nil || !again.Equal(pub) {
			t.Errorf("round trip of %x: %x, %v", pub, again, err)
		}
	})
}

func FuzzParseTimeOrAgo(f *testing.F) {
	for _, tt := range timeTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTimeOrAgo(s, t0)
		if err != nil {
			return
		}
		if d, err := time.ParseDuration(s); err == nil && !got.Equal(t0.Add(-d)) {
			t.Errorf("ParseTimeOrAgo(%q) = %v, want %v", s, got, t0.Add(-d))
		}
		clampUnixNano(got) // a Filter bound: must not overflow
	})
}

func FuzzCanonicalObject(f *testing.F) {
	for _, tt := range canonicalTests {
		f.Add([]byte(tt.in))
	}
	f.Add([]byte(testInput))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := canonicalObject(data)
		if err != nil {
			return
		}
		if fast, ok := fastCanonical(data); ok {
			slow, err := reencode(data)
			if err != nil || slow != fast {
				t.Fatalf("fast path gives %q, the slow path %q, %v", fast, slow, err)
			}
		}
		// Input the check accepts is what canonicalization would return.
		if isCanonical(data) {
			if slow, err := reencode(data); err != nil || slow != string(data) {
				t.Fatalf("isCanonical(%q), but canonical is %q, %v", data, slow, err)
			}
		}
		again, err := canonicalObject([]byte(got))
		if err != nil || again != got {
			t.Errorf("not idempotent: %q -> %q -> %q, %v", data, got, again, err)
		}
		if fast, ok := decodeFlat([]byte(got)); ok {
			var slow map[string]any
			if err := decodeJSON([]byte(got), &slow); err != nil || !reflect.DeepEqual(fast, slow) {
				t.Errorf("decodeFlat(%q) = %v, encoding/json gives %v, %v", got, fast, slow, err)
			}
		}
	})
}

func FuzzRecordJSON(f *testing.F) {
	good, _ := json.Marshal(testRecord(1, t0))
	f.Add(good)
	db, _ := json.Marshal(dbRecord(2, t0, "postgres", "orders", "orders_app"))
	f.Add(db)
	f.Add([]byte(`{"seq":1,"latency_ms":1e300}`))
	f.Add([]byte(`{"claims":{"n":12345678901234567890}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		if r.UnmarshalJSON(data) != nil {
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			return // e.g. an input that is not valid JSON on its own
		}
		var again Record
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		b2, err := json.Marshal(again)
		if err != nil || !bytes.Equal(b, b2) {
			t.Errorf("not a fixed point:\n%s\n%s", b, b2)
		}
	})
}

func FuzzParseAnchor(f *testing.F) {
	f.Add(`{"seq":6,"prev_hash":"` + zeroHashHex + `","signature":"AAAA"}`)
	f.Add(`{"seq":0}`)
	f.Add(`{`)
	f.Fuzz(func(t *testing.T, s string) {
		if a, err := parseAnchor(s); err == nil {
			a.verify(testPub)
		}
	})
}
