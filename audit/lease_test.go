package audit

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMigrateSchema2 opens a database written by the release before lease
// rows (schema 2, with a signed head and a checkpoint): readers verify it as
// it is, Open migrates it to the current schema (3, then 4), and after lease events and new
// decisions the whole chain and the release's checkpoint verify, and a
// lease id finds its decision and its lifecycle through the new index.
func TestMigrateSchema2(t *testing.T) {
	dir := copyFixture(t, "v2")
	db, cp := filepath.Join(dir, "audit.db"), filepath.Join(dir, "checkpoint.json")
	pub, err := PublicKeyFromFile(db + ".key")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	before, err := Verify(ctx, db, VerifyOptions{PublicKey: pub, Checkpoint: cp})
	if err != nil || before.Decisions != 3 || before.SignedHeads != 1 || before.Rows != 4 {
		t.Fatalf("schema 2 as it is: %+v, %v", before, err)
	}
	const issued = "static-c9a1e5cdfdf5411d9f2c3da7" // the fixture's first allow

	l := startLog(t, Config{Path: db})
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) // after the fixture's rows
	exp := base.Add(time.Hour)
	events := []LeaseEvent{
		{Event: LeaseIssue, LeaseID: "postgres:credbroker_app_1", Credential: "orders-db", Subject: "unix:uid:1000", Provider: "postgres", ExpiresAt: exp},
		{Event: LeaseRevokeFailed, LeaseID: "postgres:credbroker_app_1", Credential: "orders-db", Subject: "unix:uid:1000", Provider: "postgres", Attempt: 1, Reason: "connection refused"},
		{Event: LeaseRevoke, LeaseID: "postgres:credbroker_app_1", Credential: "orders-db", Subject: "unix:uid:1000", Provider: "postgres", Attempt: 2},
		{Event: LeaseRevoke, LeaseID: issued, Credential: "demo", Provider: "static"},
	}
	for i, ev := range events {
		ev.Time = base.Add(time.Duration(i) * time.Second)
		if err := l.RecordLease(ctx, ev); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	appendN(t, l.Log, 2, base.Add(time.Minute))
	l.stop(t)

	c, err := openDatabase(db, modeReadOnly, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := readSchemaVersion(c)
	c.close()
	if v != schemaVersion {
		t.Fatalf("schema version %d after Open, want %d", v, schemaVersion)
	}
	res, err := Verify(ctx, db, VerifyOptions{PublicKey: pub, Checkpoint: cp})
	if err != nil {
		t.Fatalf("after migration: %v", err)
	}
	if res.Decisions != 5 || res.Rows != 4+4+2+1 || res.Unsigned != 0 {
		t.Errorf("after migration: %+v", res)
	}

	lease := func(id string) []string {
		var got []string
		err := Query(ctx, db, Filter{Lease: id, Kind: KindAll}, func(r *Record) error {
			got = append(got, r.Kind+" "+r.Decision+" "+r.Reason)
			return nil
		})
		if err != nil {
			t.Fatalf("query lease %s: %v", id, err)
		}
		return got
	}
	want := []string{
		"lease issue lease issued",
		"lease revoke_failed lease revocation failed; it will be retried: connection refused",
		"lease revoke lease revoked",
	}
	if got := lease("postgres:credbroker_app_1"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lifecycle of a lease:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := lease(issued); len(got) != 2 || got[0] != "decision allow allowed by policy local-user-reads-demo" || !strings.HasPrefix(got[1], "lease revoke") {
		t.Errorf("a lease issued by the release, then revoked: %q", got)
	}
	var table strings.Builder
	f, _ := NewFormatter(&table, "table")
	_ = Query(ctx, db, Filter{Lease: "postgres:credbroker_app_1"}, func(r *Record) error { return f.Write(r) })
	_ = f.Flush()
	if !strings.Contains(table.String(), "lease revoke_failed") {
		t.Errorf("table view of lease rows:\n%s", table.String())
	}
}

// TestRecordLeaseRefuses checks that malformed lease events are refused
// before they reach the store.
func TestRecordLeaseRefuses(t *testing.T) {
	l := startLog(t, Config{Path: filepath.Join(t.TempDir(), "audit.db")})
	defer l.stop(t)
	for _, ev := range []LeaseEvent{
		{Event: "expire", LeaseID: "x"},
		{Event: LeaseIssue},
	} {
		if err := l.RecordLease(context.Background(), ev); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%+v: %v, want ErrInvalidRecord", ev, err)
		}
	}
}
