package fleet

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/pgtest"
)

// TestForwardRoundTrip forwards a log of every kind of row — decisions of
// every channel, lease lifecycle rows, signed heads, values PostgreSQL text
// cannot hold — and checks that the store answers every filter with
// exactly the rows the log does, and verifies.
func TestForwardRoundTrip(t *testing.T) {
	checkLeaks(t)
	db := newFleetDB(t)
	l := startLog(t, "", audit.Config{SignInterval: 20 * time.Millisecond})
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	appendRecords(t, l.Log, 0, 300, t0)
	odd := record(1000, t0.Add(time.Hour))
	odd.Subject = "unix:uid:\x00evil"
	odd.Reason = "bad utf-8 \xff\xfe here"
	odd.Database = "db\x00x"
	if err := l.Append(context.Background(), odd); err != nil {
		t.Fatal(err)
	}
	for i, ev := range []string{audit.LeaseIssue, audit.LeaseRenew, audit.LeaseRevoke} {
		err := l.RecordLease(context.Background(), audit.LeaseEvent{Event: ev, Time: t0.Add(time.Duration(400+i) * time.Second),
			LeaseID: "lease-0", Credential: "demo", Subject: "unix:uid:1000", Provider: "postgres", ExpiresAt: t0.Add(2 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	runForwarder(t, Config{DSNFile: db.dsnFile, Source: l.path, Host: "host-a", BatchSize: 37, Registerer: reg})
	l.stop(t) // its final signed head is the last row
	db.waitForwarded(t, l.path)

	install := InstallID(l.PublicKey())
	store := db.open(t)
	file := audit.OpenFile(l.path)
	filters := []audit.Filter{
		{Kind: audit.KindAll},
		{},
		{Workload: "unix:uid:1000"},
		{Workload: "unix:uid:*"},
		{Workload: "*"},
		{Workload: "system:serviceaccount:payments:[a-v]*"},
		{Workload: "system:serviceaccount:payments:[^a]*"},
		{Workload: "*:ref:refs/heads/ma?n"},
		{Workload: "unix:uid:100[0-3"},
		{Workload: "UNIX:*"},
		{Credential: "orders-db"},
		{Decision: audit.DecisionDeny},
		{Policy: "ops"},
		{Lease: "lease-0"},
		{Database: "orders"},
		{Database: "db\x00x"},
		{Kind: audit.KindLease},
		{Kind: audit.KindSignedHead},
		{Since: t0.Add(100 * time.Second), Until: t0.Add(200 * time.Second)},
		{Since: t0.Add(100 * time.Second), Workload: "unix:*", Decision: audit.DecisionAllow, Limit: 7},
		{Limit: 5},
		{Workload: "unix:uid:\x00evil"},
		{Workload: "unix:uid:"},
		{DecisionID: odd.DecisionID},
		{DecisionID: record(7, t0).DecisionID, Kind: audit.KindAll},
		{DecisionID: "nope"},
	}
	for _, f := range filters {
		local := query(t, file, f)
		fleet := query(t, store, f)
		sameRecords(t, filterName(f), local, fleet, install, "host-a")
	}
	for _, f := range []audit.Filter{{Install: install}, {Host: "host-a"}} {
		all := query(t, file, audit.Filter{})
		sameRecords(t, filterName(f), all, query(t, store, f), install, "host-a")
	}
	if got := query(t, store, audit.Filter{Install: "other"}); len(got) != 0 {
		t.Errorf("install other: %d rows", len(got))
	}
	if err := file.Query(context.Background(), audit.Filter{Install: install}, func(*audit.Record) error { return nil }); !errors.Is(err, audit.ErrFleetOnly) {
		t.Errorf("file reader with an install filter: %v, want ErrFleetOnly", err)
	}

	res, err := store.Verify(context.Background(), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || !res[0].OK() {
		t.Fatalf("verify: %v", res)
	}
	local, err := audit.Verify(context.Background(), l.path, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if r.Chain.HeadSeq != local.HeadSeq || r.Chain.HeadHash != local.HeadHash || r.Chain.SignedHeads != local.SignedHeads || r.Checkpoints != local.SignedHeads {
		t.Errorf("store: head %d %s, %d signed heads, %d checkpoints; log: head %d %s, %d signed heads",
			r.Chain.HeadSeq, r.Chain.HeadHash, r.Chain.SignedHeads, r.Checkpoints, local.HeadSeq, local.HeadHash, local.SignedHeads)
	}
	if !strings.HasPrefix(r.String(), "install "+install+" (host host-a): ok: ") {
		t.Errorf("result: %s", r)
	}
	if got := metricValue(t, reg, "credbroker_audit_forward_rows_total"); got != float64(local.Rows) {
		t.Errorf("rows forwarded %v, want %d", got, local.Rows)
	}
	if got := metricValue(t, reg, "credbroker_audit_forward_lag_rows"); got != 0 {
		t.Errorf("lag %v rows after catching up", got)
	}
}

// filterName describes a filter in test messages.
func filterName(f audit.Filter) string {
	return strings.TrimPrefix(strings.ReplaceAll(fmtFilter(f), "0001-01-01 00:00:00 +0000 UTC", "-"), "audit.")
}

func fmtFilter(f audit.Filter) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("workload", f.Workload)
	add("credential", f.Credential)
	add("decision", f.Decision)
	add("policy", f.Policy)
	add("lease", f.Lease)
	add("database", f.Database)
	add("install", f.Install)
	add("host", f.Host)
	add("decision_id", f.DecisionID)
	add("kind", f.Kind)
	if !f.Since.IsZero() || !f.Until.IsZero() {
		parts = append(parts, "window")
	}
	if f.Limit > 0 {
		parts = append(parts, "limit")
	}
	return "filter{" + strings.Join(parts, " ") + "}"
}

// metricValue returns the value of an unlabelled counter or gauge in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// forwardGrants are the privileges docs/audit-fleet.md gives the forwarding
// role, and readGrants the reader's.
const (
	forwardGrants = `GRANT INSERT ON audit_installs, audit_rows, audit_checkpoints, audit_anchors TO credbroker_forward`
	readGrants    = `GRANT SELECT ON audit_schema, audit_installs, audit_rows, audit_checkpoints, audit_anchors TO credbroker_audit`
)

// TestForwarderInsertOnly runs the forwarder as a role granted only what
// the documentation says it needs — INSERT on the fleet's tables — first
// before the schema exists (it waits, saying to run fleet-init), then
// after; and reads the store as a role granted SELECT only.
func TestForwarderInsertOnly(t *testing.T) {
	srv := pgtest.Start(t)
	srv.Exec(t, `CREATE ROLE credbroker_forward LOGIN PASSWORD 'forward-pw'`)
	srv.Exec(t, `CREATE ROLE credbroker_audit LOGIN PASSWORD 'audit-pw'`)
	dsnFile := writeFile(t, "forward.dsn", srv.DSN("credbroker_forward", "forward-pw", "postgres"))

	l := startLog(t, "", audit.Config{SignInterval: 20 * time.Millisecond})
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	appendRecords(t, l.Log, 0, 50, t0)
	var logs logtest.Buffer
	runForwarder(t, Config{DSNFile: dsnFile, Source: l.path, Host: "h", Logger: logs.Logger()})
	waitFor(t, "the forwarder to ask for fleet-init", func() bool {
		return strings.Contains(logs.String(), "fleet-init")
	})
	if err := Init(context.Background(), srv.AdminDSN()); err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, forwardGrants)
	srv.Exec(t, readGrants)
	appendRecords(t, l.Log, 50, 50, t0)
	l.stop(t)
	db := &fleetDB{srv: srv, dsn: srv.AdminDSN()}
	db.waitForwarded(t, l.path)
	// The recovery is logged after the batch is committed: the rows can
	// be in the store before the line is in the log.
	waitFor(t, "the recovery to be logged", func() bool {
		return strings.Contains(logs.String(), "audit forwarding resumed")
	})

	fwd := pgConn(t, srv, "credbroker_forward", "forward-pw")
	for _, q := range []string{
		"SELECT count(*) FROM audit_rows",
		"UPDATE audit_rows SET reason = 'x'",
		"DELETE FROM audit_checkpoints",
		"CREATE TABLE audit_x (a int)",
	} {
		if _, err := fwd.Exec(context.Background(), q); err == nil || !isPermission(err) {
			t.Errorf("forwarding role: %s: %v, want permission denied", q, err)
		}
	}

	reader, err := Open(context.Background(), srv.DSN("credbroker_audit", "audit-pw", "postgres"))
	if err != nil {
		t.Fatalf("Open as the reader role: %v", err)
	}
	defer reader.Close()
	install := InstallID(l.PublicKey())
	sameRecords(t, "reader role", query(t, audit.OpenFile(l.path), audit.Filter{}), query(t, reader, audit.Filter{}), install, "h")
	res, err := reader.Verify(context.Background(), VerifyOptions{Install: install})
	if err != nil || len(res) != 1 || !res[0].OK() {
		t.Errorf("verify as the reader role: %v %v", res, err)
	}
}

// TestForwarderSecrets checks that the DSN's password reaches no log line
// and no error, whether the store is unreachable or the DSN malformed.
func TestForwarderSecrets(t *testing.T) {
	checkLeaks(t)
	const canary = "canary-Pw-7d1e"
	l := startLog(t, "", audit.Config{})
	appendRecords(t, l.Log, 0, 3, time.Now())
	for _, dsn := range []string{
		"postgres://fwd:" + canary + "@127.0.0.1:1/fleet?sslmode=disable&connect_timeout=2",
		"host=127.0.0.1 port=1 user=fwd password=" + canary + " dbname=fleet connect_timeout=2",
		"postgres://fwd:" + canary + "@127.0.0.1:notaport/fleet",
		"host=127.0.0.1 password='" + canary + " user=fwd",
	} {
		var logs logtest.Buffer
		stop := runForwarder(t, Config{DSNFile: writeFile(t, "dsn", dsn), Source: l.path, Logger: logs.Logger()})
		waitFor(t, "a forwarding failure", func() bool { return strings.Contains(logs.String(), "failed") })
		stop()
		if strings.Contains(logs.String(), canary) {
			t.Errorf("DSN %d: the password is in the log:\n%s", len(dsn), logs.String())
		}
		_, err := Open(context.Background(), dsn)
		if err == nil || strings.Contains(err.Error(), canary) {
			t.Errorf("Open: %v", err)
		}
		if err := Init(context.Background(), dsn); err == nil || strings.Contains(err.Error(), canary) {
			t.Errorf("Init: %v", err)
		}
	}
}

// TestForwarderCursorUnwritable forwards with a cursor file that cannot be
// written: every row still reaches the store, and the log says why the
// cursor is not kept.
func TestForwarderCursorUnwritable(t *testing.T) {
	db := newFleetDB(t)
	l := startLog(t, "", audit.Config{SignInterval: -1})
	appendRecords(t, l.Log, 0, 40, time.Now())
	var logs logtest.Buffer
	runForwarder(t, Config{DSNFile: db.dsnFile, Source: l.path, Host: "h", BatchSize: 7, Logger: logs.Logger(),
		CursorFile: filepath.Join(t.TempDir(), "missing", "cursor")})
	l.stop(t)
	db.waitForwarded(t, l.path)
	if n := db.count(t, "SELECT count(*) FROM audit_rows"); n != feedState(t, l.path).HeadSeq {
		t.Errorf("%d rows in the store", n)
	}
	if !strings.Contains(logs.String(), "the cursor file cannot be written") || strings.Count(logs.String(), "cursor file cannot") != 1 {
		t.Errorf("want one warning about the cursor file:\n%s", logs.String())
	}
}
