package fleet

import (
	"encoding/json"
	"testing"

	"github.com/credbroker/credbroker/audit"
)

// FuzzParseCursor feeds the cursor file parser anything: it must refuse
// or return a cursor that encodes back to what it parsed.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{
		`{"install":"ab","seq":3,"hash":"00","anchor":"ff"}`,
		`{"install":"ab","seq":0}`,
		`{"install":"ab","seq":-1}`,
		`{"install":"","seq":1}`,
		`{"install":"ab","seq":1,"extra":1}`,
		`{"install":"ab","seq":1}{}`,
		`[]`, ``, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseCursor(data)
		if err != nil {
			return
		}
		if c.Install == "" || c.Seq < 0 {
			t.Fatalf("accepted %+v", c)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseCursor(b)
		if err != nil || again != c {
			t.Fatalf("%+v encodes to %s, which parses to %+v, %v", c, b, again, err)
		}
	})
}

// FuzzEscape checks that any row's text survives escaping byte for byte
// and that whatever is stored escaped is PostgreSQL text; and that
// unescaping what a store holds — anything — fails cleanly or not at all.
func FuzzEscape(f *testing.F) {
	f.Add("unix:uid:1000", "reason", "orders", int64(0), "")
	f.Add("unix:uid:\x00x", "bad \xff", "db\x00", int64(subjectBit), "dW5peDp1aWQ6AHg=")
	f.Add("\xff", "", "", int64(1<<22), "!!")
	f.Fuzz(func(t *testing.T, subject, reason, database string, mask int64, raw string) {
		r := audit.StoredRow{Seq: 1, Kind: audit.KindDecision, Subject: subject, Reason: reason, Database: database}
		orig := r
		m, enc := escape(&r)
		for i, p := range textFields(&r) {
			if !storable(*p) {
				t.Fatalf("field %d %q is not storable after escaping", i, *p)
			}
		}
		if !storable(enc) {
			t.Fatalf("subject_raw %q is not storable", enc)
		}
		if err := unescape(&r, m, enc); err != nil || r != orig {
			t.Fatalf("round trip: %+v, %v; want %+v", r, err, orig)
		}
		junk := audit.StoredRow{Subject: subject, Reason: reason, Database: database}
		_ = unescape(&junk, mask, raw)
	})
}
