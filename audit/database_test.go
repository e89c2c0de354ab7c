package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dbRecord returns a decision of a database listener: channel, target
// host, the database the client asked for and the upstream user.
func dbRecord(i int, at time.Time, channel, database, user string) *Record {
	r := testRecord(i, at)
	r.Channel, r.TargetHost, r.Method, r.Path = channel, "db.internal:5432", "", ""
	r.Database, r.UpstreamUser = database, user
	return r
}

// TestDatabaseFieldsHash: database and upstream_user are covered by the
// hash, each pair of values — one empty, both, swapped, moved from one to
// the other — hashes differently, and only a row with neither hashes as
// rows did before schema 4 (which the fixtures written by earlier releases
// prove: they verify as they are, see TestMigrateSchema3).
func TestDatabaseFieldsHash(t *testing.T) {
	var prev [sha256.Size]byte
	pairs := [][2]string{{"", ""}, {"orders", ""}, {"", "orders"}, {"orders", "app"}, {"app", "orders"},
		{"ordersapp", ""}, {"orders\x00", "app"}, {"orders", "\x00app"}, {"o", "rdersapp"}}
	for _, kind := range []string{KindDecision, KindLease} {
		seen := map[[sha256.Size]byte][2]string{}
		for _, p := range pairs {
			rw, err := newRow(testRecord(1, t0))
			if err != nil {
				t.Fatal(err)
			}
			rw.kind, rw.database, rw.upstreamUser = kind, p[0], p[1]
			var h hasher
			sum := h.sum(1, &prev, rw)
			if other, dup := seen[sum]; dup {
				t.Errorf("%s rows with database/upstream_user %q and %q hash alike", kind, p, other)
			}
			seen[sum] = p
			hasMarker := bytes.Contains(h.buf, []byte(databaseMarker))
			if hasMarker != (p != [2]string{}) {
				t.Errorf("%s row %q: encoding has the marker: %v", kind, p, hasMarker)
			}
		}
	}
}

// dbFixture is a closed log with decisions of database listeners among
// others: seq 2 and 5 name a database and an upstream user, seq 4 only a
// database (a denial), the rest neither.
func dbFixture(t *testing.T) (string, []*Record) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	recs := []*Record{
		testRecord(0, t0),
		dbRecord(1, t0.Add(time.Second), "postgres", "orders", "orders_app"),
		testRecord(2, t0.Add(2*time.Second)),
		dbRecord(3, t0.Add(3*time.Second), "mysql", "inventory", ""),
		dbRecord(4, t0.Add(4*time.Second), "redis", "0", "cache_user"),
		testRecord(5, t0.Add(5*time.Second)),
	}
	recs[3].Decision = DecisionDeny
	for i, r := range recs {
		if err := l.Append(context.Background(), r); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	l.stop(t)
	return path, recs
}

// TestVerifyDetectsDatabaseTampering: editing the database or upstream_user
// of a stored row, as someone with the sqlite3 shell would, fails
// verification at that row.
func TestVerifyDetectsDatabaseTampering(t *testing.T) {
	path, _ := dbFixture(t)
	if _, err := Verify(context.Background(), path, VerifyOptions{}); err != nil {
		t.Fatalf("untouched: %v", err)
	}
	f := &fixture{path: path}
	tests := []struct {
		name   string
		update string
		seq    int64
	}{
		{"change the database", "SET database = 'payroll'", 2},
		{"change the upstream user", "SET upstream_user = 'postgres'", 2},
		{"swap the two", "SET database = upstream_user, upstream_user = database", 2},
		{"clear both", "SET database = '', upstream_user = ''", 5},
		{"clear the upstream user", "SET upstream_user = ''", 5},
		{"add an upstream user", "SET upstream_user = 'admin'", 4},
		{"move the database to the upstream user", "SET upstream_user = database, database = ''", 4},
		{"add a database to a row without one", "SET database = 'orders'", 3},
		{"add an upstream user to a row without one", "SET upstream_user = 'orders_app'", 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := f.copyDB(t)
			sqlExec(t, p, "UPDATE decisions "+tt.update+" WHERE seq = "+strconv.FormatInt(tt.seq, 10))
			res, err := Verify(context.Background(), p, VerifyOptions{})
			var fail *Failure
			if !errors.As(err, &fail) {
				t.Fatalf("Verify = %v, want a *Failure", err)
			}
			if want := "dec-" + pad8(int(tt.seq-1)); fail.Seq != tt.seq || fail.DecisionID != want || fail.Problem != ProblemEdited {
				t.Errorf("Failure = %v; want seq %d (decision %s), row edited", fail, tt.seq, want)
			}
			if !strings.Contains(res.String(), "seq "+strconv.FormatInt(tt.seq, 10)+" (decision ") {
				t.Errorf("String() = %q does not name the row", res)
			}
		})
	}
}

// TestQueryDatabase: Filter.Database selects the rows of one database,
// exactly, with both fields read back.
func TestQueryDatabase(t *testing.T) {
	path, recs := dbFixture(t)
	for _, tt := range []struct {
		database string
		want     []int
	}{
		{"orders", []int{1}},
		{"inventory", []int{3}},
		{"0", []int{4}},
		{"order", nil},
		{"ORDERS", nil},
		{"", []int{0, 1, 2, 3, 4, 5}},
	} {
		var got []string
		err := Query(context.Background(), path, Filter{Database: tt.database}, func(r *Record) error {
			got = append(got, r.DecisionID+" "+r.Channel+" "+r.Database+" "+r.UpstreamUser)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, i := range tt.want {
			r := recs[i]
			want = append(want, r.DecisionID+" "+r.Channel+" "+r.Database+" "+r.UpstreamUser)
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("database %q:\n%s\nwant\n%s", tt.database, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// TestFormatDatabaseFields: the table, JSON and CSV show database and
// upstream_user; JSON omits them when empty; CSV adds them after the
// columns earlier releases wrote, which keep their positions.
func TestFormatDatabaseFields(t *testing.T) {
	r := storedRecord(t, dbRecord(1, t0, "postgres", "orders", "orders_app"))
	plain := storedRecord(t, testRecord(2, t0))
	format := func(name string, recs ...*Record) string {
		var buf bytes.Buffer
		f, err := NewFormatter(&buf, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if err := f.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Flush(); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}

	table := strings.Split(format(FormatTable, r, plain), "\n")
	header, row, other := strings.Fields(table[0]), strings.Fields(table[1]), strings.Fields(table[2])
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	if row[col["DATABASE"]] != "orders" || row[col["UPSTREAM_USER"]] != "orders_app" || row[col["CREDENTIAL"]] != "stripe-live" {
		t.Errorf("table row %q under header %q", table[1], table[0])
	}
	if other[col["DATABASE"]] != "-" || other[col["UPSTREAM_USER"]] != "-" {
		t.Errorf("table row without a database: %q", table[2])
	}

	lines := strings.Split(strings.TrimSpace(format(FormatJSON, r, plain)), "\n")
	var m, n map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &n); err != nil {
		t.Fatal(err)
	}
	if m["database"] != "orders" || m["upstream_user"] != "orders_app" || m["channel"] != "postgres" || m["target_host"] != "db.internal:5432" {
		t.Errorf("JSON: %s", lines[0])
	}
	if _, ok := n["database"]; ok {
		t.Errorf("JSON of a row without a database: %s", lines[1])
	}
	if _, ok := n["upstream_user"]; ok {
		t.Errorf("JSON of a row without an upstream user: %s", lines[1])
	}

	recs, err := csv.NewReader(strings.NewReader(format(FormatCSV, r, plain))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	// The header of releases before schema 4.
	before := []string{"seq", "time", "decision_id", "decision", "reason", "policy", "policy_version",
		"attestor", "subject", "claims", "peer_pid", "peer_uid", "credential", "provider", "channel",
		"target_host", "method", "path", "lease_id", "expires_at", "fingerprint", "latency_ms", "input",
		"prev_hash", "hash", "kind"}
	if got := strings.Join(recs[0], ","); !strings.HasPrefix(got, strings.Join(before, ",")+",database,upstream_user") {
		t.Errorf("CSV header %s", got)
	}
	if got := recs[1][len(before):]; got[0] != "orders" || got[1] != "orders_app" || recs[1][14] != "postgres" {
		t.Errorf("CSV row: %q", recs[1])
	}
	if got := recs[2][len(before):]; got[0] != "" || got[1] != "" {
		t.Errorf("CSV row without a database: %q", recs[2])
	}
}

// TestMigrateSchema3 opens a database written by the release before the
// database and upstream_user columns (schema 3, with a signed head and a
// checkpoint): readers verify and query it as it is, Open migrates it to
// schema 4, rows of database listeners are appended, and the whole chain
// and the release's checkpoint verify, the old rows keep their hashes, and
// a query by database finds the new row.
//
// testdata/v3 was written by the binary of commit
// fa7a4efa8701ae0d1537c9e625e98fba0d8283be on the quickstart configuration:
//
//	git worktree add /tmp/audit-v3 fa7a4efa8701ae0d1537c9e625e98fba0d8283be
//	cd /tmp/audit-v3 && CGO_ENABLED=0 go build -o /tmp/credbroker-v3 ./cmd/credbroker
//	/tmp/credbroker-v3 run --config examples/quickstart --socket DIR/broker.sock \
//	    --audit-db DIR/audit.db --checkpoint DIR/checkpoint.json --admin off
//	curl --unix-socket DIR/broker.sock -H 'Credbroker-Request: 1' http://x/v1/credentials/demo
//	curl … http://x/v1/credentials/nope   # error: no credential named "nope"
//	curl … http://x/v1/credentials/demo   # allowed again
//
// then, once DIR/checkpoint.json appeared (the signed head of seq 3), the
// broker was stopped with SIGTERM, which signed seq 4; sqlite3's
// wal_checkpoint(TRUNCATE) folded the WAL into audit.db, and audit.db,
// audit.db.head, audit.db.key and checkpoint.json were kept.
func TestMigrateSchema3(t *testing.T) {
	dir := copyFixture(t, "v3")
	db, cp := filepath.Join(dir, "audit.db"), filepath.Join(dir, "checkpoint.json")
	pub, err := PublicKeyFromFile(db + ".key")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	schema := func() int {
		t.Helper()
		c, err := openDatabase(db, modeReadOnly, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		v, err := readSchemaVersion(c)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	rows := func(f Filter) []*Record {
		t.Helper()
		var got []*Record
		if err := Query(ctx, db, f, func(r *Record) error { got = append(got, r); return nil }); err != nil {
			t.Fatalf("query %+v: %v", f, err)
		}
		return got
	}

	if v := schema(); v != 3 {
		t.Fatalf("fixture has schema %d, want 3", v)
	}
	before, err := Verify(ctx, db, VerifyOptions{PublicKey: pub, Checkpoint: cp})
	if err != nil || before.Rows != 4 || before.Decisions != 3 || before.SignedHeads != 1 || before.SignedSeq != 3 {
		t.Fatalf("schema 3 as it is: %+v, %v", before, err)
	}
	if got := rows(Filter{Database: "orders"}); len(got) != 0 {
		t.Errorf("schema 3: %d rows of database orders, want none", len(got))
	}
	old := rows(Filter{Kind: KindAll})
	if len(old) != 4 || old[0].Credential != "demo" || old[0].Channel != "socket" || old[1].Credential != "nope" {
		t.Fatalf("schema 3 rows: %+v", old)
	}

	l := startLog(t, Config{Path: db})
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) // after the fixture's rows
	added := []*Record{
		dbRecord(100, base, "postgres", "orders", "orders_app"),
		dbRecord(101, base.Add(time.Second), "mysql", "inventory", ""),
		testRecord(102, base.Add(2*time.Second)),
	}
	for i, r := range added {
		if err := l.Append(ctx, r); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	l.stop(t)

	if v := schema(); v != 4 {
		t.Fatalf("schema version %d after Open, want 4", v)
	}
	res, err := Verify(ctx, db, VerifyOptions{PublicKey: pub, Checkpoint: cp})
	if err != nil {
		t.Fatalf("after migration: %v", err)
	}
	if res.Rows != 4+3+1 || res.Decisions != 3+3 || res.SignedHeads != 2 || res.Unsigned != 0 || res.Checkpoint == nil || res.Checkpoint.Seq != 3 {
		t.Errorf("after migration: %+v", res)
	}
	all := rows(Filter{Kind: KindAll})
	for i, r := range old {
		if all[i].Seq != r.Seq || all[i].Hash != r.Hash || all[i].Database != "" || all[i].UpstreamUser != "" {
			t.Errorf("seq %d after migration: hash %s database %q upstream user %q; was hash %s",
				r.Seq, all[i].Hash, all[i].Database, all[i].UpstreamUser, r.Hash)
		}
	}
	got := rows(Filter{Database: "orders"})
	if len(got) != 1 {
		t.Fatalf("%d rows of database orders, want 1", len(got))
	}
	if r := got[0]; r.Seq != 5 || r.DecisionID != added[0].DecisionID || r.Channel != "postgres" ||
		r.TargetHost != "db.internal:5432" || r.Database != "orders" || r.UpstreamUser != "orders_app" {
		t.Errorf("the row of database orders: %+v", r)
	}
}
