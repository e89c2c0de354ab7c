package fleet

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/credbroker/credbroker/internal/pgtest"
)

// catalog lists the fleet's tables, columns and indexes (with their
// definitions) as PostgreSQL describes them.
func catalog(t *testing.T, srv *pgtest.Server) []string {
	t.Helper()
	conn := srv.Conn(t)
	ctx := context.Background()
	var out []string
	rows, err := conn.Query(ctx, `SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(collation_name, '')
		FROM information_schema.columns WHERE table_schema = 'public' AND table_name LIKE 'audit\_%'
		UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename LIKE 'audit\_%'
		UNION ALL SELECT 'version ' || version FROM audit_schema`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestInitIdempotent runs Init again, and from several connections at
// once (as brokers starting together do), and checks that the schema is
// the same as after the first: every table, column and index once, and
// one version row.
func TestInitIdempotent(t *testing.T) {
	db := newFleetDB(t)
	first := catalog(t, db.srv)
	for _, want := range []string{
		"CREATE UNIQUE INDEX audit_rows_pkey ON public.audit_rows USING btree (install_id, seq)",
		"CREATE INDEX audit_rows_subject ON public.audit_rows USING btree (subject, time_ns)",
		"CREATE INDEX audit_rows_lease ON public.audit_rows USING btree (lease_id) WHERE (lease_id <> ''::text)",
		"CREATE UNIQUE INDEX audit_checkpoints_pkey ON public.audit_checkpoints USING btree (install_id, seq, hash, signed_ns)",
		"audit_rows.subject text NO C",
		"version 1",
	} {
		if !slices.Contains(first, want) {
			t.Errorf("schema lacks %q:\n%s", want, strings.Join(first, "\n"))
		}
	}
	if err := Init(context.Background(), db.dsn); err != nil {
		t.Fatalf("second Init: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- Init(context.Background(), db.dsn) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Init: %v", err)
		}
	}
	if again := catalog(t, db.srv); !slices.Equal(first, again) {
		t.Errorf("schema changed by Init:\nbefore %q\nafter  %q", first, again)
	}
}

// TestInitConcurrentFresh creates the schema from several connections at
// once on an empty database: PostgreSQL's CREATE … IF NOT EXISTS can fail
// with a duplicate when two run together, which Init retries.
func TestInitConcurrentFresh(t *testing.T) {
	srv := pgtest.Start(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() { errs <- Init(context.Background(), srv.AdminDSN()) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Init on an empty database: %v", err)
		}
	}
	if got := catalog(t, srv); !slices.Contains(got, "version 1") {
		t.Errorf("schema after concurrent Init: %q", got)
	}
}

// TestOpenRefuses checks that Open refuses a database without the fleet
// schema, and one of a newer version, saying what to do.
func TestOpenRefuses(t *testing.T) {
	srv := pgtest.Start(t)
	_, err := Open(context.Background(), srv.AdminDSN())
	if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "fleet-init") {
		t.Errorf("Open without a schema: %v", err)
	}
	if err := Init(context.Background(), srv.AdminDSN()); err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, "INSERT INTO audit_schema (version) VALUES (99)")
	if _, err := Open(context.Background(), srv.AdminDSN()); err == nil || !strings.Contains(err.Error(), "version 99, newer") {
		t.Errorf("Open of a newer schema: %v", err)
	}
}
