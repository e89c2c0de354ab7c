package audit

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// storedRecord appends r and reads it back, so tests see it as Query does.
func storedRecord(t *testing.T, r *Record) *Record {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	if err := l.Append(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	var got *Record
	if err := Query(context.Background(), path, Filter{}, func(r *Record) error { got = r; return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestRecordJSON(t *testing.T) {
	in := testRecord(7, t0)
	in.Channel, in.Database, in.UpstreamUser = "postgres", "orders", "orders_app"
	r := storedRecord(t, in)
	r.Install, r.Host = "5e1f0c2a9b7d", "web-1" // as a fleet store fills them
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	defaultDeny := *r
	defaultDeny.Policy, defaultDeny.Decision = "", DecisionDeny
	db, _ := json.Marshal(&defaultDeny)
	var dm map[string]any
	if err := json.Unmarshal(db, &dm); err != nil {
		t.Fatal(err)
	}
	for _, k := range csvHeader {
		_, ok := m[k]
		switch k {
		case "policy", "policy_version": // a policy decided
		case "policy_set_version": // a default deny
			if ok {
				t.Errorf("policy_set_version in a row a policy decided: %s", b)
			}
			ok = dm[k] == r.PolicyVersion
			if _, has := dm["policy_version"]; has {
				t.Errorf("policy_version in a default deny: %s", db)
			}
		}
		if !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	var back Record
	if err := json.Unmarshal(db, &back); err != nil || back.PolicyVersion != r.PolicyVersion {
		t.Errorf("policy_set_version read back as PolicyVersion %q, %v", back.PolicyVersion, err)
	}
	if m["time"] != "2025-03-04T05:06:07.890123456Z" || m["latency_ms"] != 1.234567 || m["peer_uid"] != 1000.0 {
		t.Errorf("time/latency/peer_uid encoded as %v %v %v", m["time"], m["latency_ms"], m["peer_uid"])
	}
	back = Record{}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, *r)
	}

	minimal, _ := json.Marshal(Record{Seq: 1, Time: t0, DecisionID: "d", Decision: DecisionDeny, PeerUID: -1})
	if want := `{"seq":1,"time":"2025-03-04T05:06:07.890123456Z","decision_id":"d","decision":"deny","peer_pid":0,"peer_uid":-1,"latency_ms":0}`; string(minimal) != want {
		t.Errorf("minimal record = %s\nwant %s", minimal, want)
	}
	var noUID Record
	if err := json.Unmarshal([]byte(`{"seq":1}`), &noUID); err != nil || noUID.PeerUID != -1 {
		t.Errorf("absent peer_uid = %d, %v; want -1", noUID.PeerUID, err)
	}
}

func TestFormatter(t *testing.T) {
	r := storedRecord(t, testRecord(7, t0))
	evil := *r
	evil.Subject = "unix:uid:0\x1b[2J\nforged\tcell"
	evil.Reason = ""
	tests := []struct {
		format string
		recs   []*Record
		check  func(t *testing.T, out string)
	}{
		{FormatTable, []*Record{r, &evil}, func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME ") || !strings.Contains(lines[0], "DECISION_ID") {
				t.Fatalf("table:\n%s", out)
			}
			if !strings.Contains(lines[1], "2025-03-04T05:06:07.890Z  allow") || !strings.HasSuffix(lines[1], "dec-00000007") {
				t.Errorf("row: %q", lines[1])
			}
			if strings.ContainsAny(lines[2], "\x1b\t") || !strings.Contains(lines[2], `"unix:uid:0\x1b[2J\nforged\tcell"`) || !strings.Contains(lines[2], " - ") {
				t.Errorf("control characters not escaped or empty cell not shown: %q", lines[2])
			}
		}},
		{FormatJSON, []*Record{r, r}, func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("want 2 lines:\n%s", out)
			}
			var back Record
			if err := json.Unmarshal([]byte(lines[1]), &back); err != nil || back.Hash != r.Hash {
				t.Errorf("line does not decode to the record: %v", err)
			}
		}},
		{FormatCSV, []*Record{r}, func(t *testing.T, out string) {
			recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
			if err != nil || len(recs) != 2 {
				t.Fatalf("csv: %v\n%s", err, out)
			}
			got := map[string]string{}
			for i, k := range recs[0] {
				got[k] = recs[1][i]
			}
			if got["seq"] != "1" || got["time"] != "2025-03-04T05:06:07.890123456Z" || got["latency_ms"] != "1.234567" ||
				!strings.HasPrefix(got["claims"], `{"audience":"credbroker"`) || got["input"] != string(r.Input) || got["hash"] != r.Hash {
				t.Errorf("csv row: %v", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			f, err := NewFormatter(&buf, tt.format)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tt.recs {
				if err := f.Write(r); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
			tt.check(t, buf.String())
		})
	}
	if _, err := NewFormatter(&bytes.Buffer{}, "xml"); err == nil {
		t.Error("NewFormatter accepted xml")
	}
}

func TestExport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	recs := appendN(t, l.Log, 5, t0)
	var buf bytes.Buffer
	if err := Export(context.Background(), path, &buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("Export wrote %d lines, want 5", len(lines))
	}
	for i, line := range lines {
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Seq != recs[i].Seq || r.Hash != recs[i].Hash {
			t.Errorf("line %d: seq %d hash %s, want %d %s", i, r.Seq, r.Hash, recs[i].Seq, recs[i].Hash)
		}
	}
}

// timeTests are ParseTimeOrAgo's table and its fuzz seeds.
var timeTests = []struct {
	in   string
	want time.Time // zero: error
}{
	{"2024-05-01T12:00:00Z", time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)},
	{" 2024-05-01T12:00:00.5+02:00 ", time.Date(2024, 5, 1, 10, 0, 0, 500000000, time.UTC)},
	{"1h", t0.Add(-time.Hour)},
	{"1h30m", t0.Add(-90 * time.Minute)},
	{"0s", t0},
	{"7d", t0.Add(-7 * 24 * time.Hour)},
	{"-1h", time.Time{}},
	{"", time.Time{}},
	{"yesterday", time.Time{}},
	{"2024-05-01", time.Time{}},
	{"99999d", time.Time{}},
}

func TestParseTimeOrAgo(t *testing.T) {
	for _, tt := range timeTests {
		got, err := ParseTimeOrAgo(tt.in, t0)
		switch {
		case tt.want.IsZero() && err == nil:
			t.Errorf("ParseTimeOrAgo(%q) = %v, want an error", tt.in, got)
		case !tt.want.IsZero() && (err != nil || !got.Equal(tt.want)):
			t.Errorf("ParseTimeOrAgo(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}
