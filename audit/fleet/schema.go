package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SchemaVersion is the version of the fleet schema this package creates,
// writes and reads. Init brings a store to it; every step is idempotent, so
// Init may run again, and from many brokers at once.
const SchemaVersion = 1

// Tables of the fleet schema, in the database's current schema
// (search_path).
const (
	tableSchema      = "audit_schema"
	tableInstalls    = "audit_installs"
	tableRows        = "audit_rows"
	tableCheckpoints = "audit_checkpoints"
	tableAnchors     = "audit_anchors"
)

// schemaStatements returns the statements that create schema version 1,
// each idempotent and each run on its own (no DDL inside a transaction, no
// sequence, trigger, advisory lock or notification: see docs/audit-fleet.md
// for the engines this was checked against). The subject column sorts in
// byte order, which prefix ranges of workload globs rely on: COLLATE "C" on
// PostgreSQL (and Citus and Aurora), whose default collation may be a
// locale's; CockroachDB's strings always sort in byte order.
//
// Rows are keyed (install_id, seq): a row re-sent after a crash or a retry
// is ignored (INSERT … ON CONFLICT DO NOTHING), and the first copy received
// is kept. Checkpoints and prune anchors are keyed so that two different
// ones at the same seq are both kept: the store is append-only, and a host
// that rewrote its log and signed again shows as two histories.
func schemaStatements(cockroach bool) []string {
	subject := `subject TEXT COLLATE "C" NOT NULL`
	if cockroach {
		subject = `subject TEXT NOT NULL`
	}
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + tableSchema + ` (
			version INT PRIMARY KEY
		)`,
		// One row per install: its id is the fingerprint of its public key
		// (see InstallID), which verifiers recompute from public_key.
		`CREATE TABLE IF NOT EXISTS ` + tableInstalls + ` (
			install_id    TEXT PRIMARY KEY,
			public_key    TEXT NOT NULL,
			host          TEXT NOT NULL,
			registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)`,
		// The rows of every install, each column as the install's SQLite
		// log stores it (times in Unix ns), plus the forwarding host;
		// escaped, a bit mask of the text columns stored as base64 because
		// PostgreSQL text cannot hold them (a NUL or invalid UTF-8); and
		// subject_raw, the base64 of such a subject, whose column then holds
		// what SQLite's GLOB sees of it.
		`CREATE TABLE IF NOT EXISTS ` + tableRows + ` (
			install_id     TEXT NOT NULL,
			seq            BIGINT NOT NULL,
			host           TEXT NOT NULL,
			kind           TEXT NOT NULL,
			time_ns        BIGINT NOT NULL,
			decision_id    TEXT NOT NULL,
			decision       TEXT NOT NULL,
			reason         TEXT NOT NULL,
			policy         TEXT NOT NULL,
			policy_version TEXT NOT NULL,
			attestor       TEXT NOT NULL,
			` + subject + `,
			claims         TEXT NOT NULL,
			peer_pid       BIGINT NOT NULL,
			peer_uid       BIGINT NOT NULL,
			credential     TEXT NOT NULL,
			provider       TEXT NOT NULL,
			channel        TEXT NOT NULL,
			target_host    TEXT NOT NULL,
			method         TEXT NOT NULL,
			path           TEXT NOT NULL,
			lease_id       TEXT NOT NULL,
			expires_ns     BIGINT,
			fingerprint    TEXT NOT NULL,
			latency_ns     BIGINT NOT NULL,
			input          TEXT NOT NULL,
			prev_hash      TEXT NOT NULL,
			hash           TEXT NOT NULL,
			database_name  TEXT NOT NULL,
			upstream_user  TEXT NOT NULL,
			escaped        INT NOT NULL,
			subject_raw    TEXT NOT NULL,
			PRIMARY KEY (install_id, seq)
		)`,
		// One index per filter of audit query, each ending in time_ns so
		// that a time window narrows the range and rows come out in order.
		`CREATE INDEX IF NOT EXISTS audit_rows_time ON ` + tableRows + ` (time_ns)`,
		`CREATE INDEX IF NOT EXISTS audit_rows_subject ON ` + tableRows + ` (subject, time_ns)`,
		`CREATE INDEX IF NOT EXISTS audit_rows_credential ON ` + tableRows + ` (credential, time_ns)`,
		`CREATE INDEX IF NOT EXISTS audit_rows_decision ON ` + tableRows + ` (decision, time_ns)`,
		`CREATE INDEX IF NOT EXISTS audit_rows_policy ON ` + tableRows + ` (policy, time_ns)`,
		`CREATE INDEX IF NOT EXISTS audit_rows_lease ON ` + tableRows + ` (lease_id) WHERE lease_id <> ''`,
		`CREATE INDEX IF NOT EXISTS audit_rows_database ON ` + tableRows + ` (database_name, time_ns) WHERE database_name <> ''`,
		`CREATE INDEX IF NOT EXISTS audit_rows_install_time ON ` + tableRows + ` (install_id, time_ns)`,
		`CREATE INDEX IF NOT EXISTS audit_rows_host ON ` + tableRows + ` (host, time_ns)`,
		`CREATE INDEX IF NOT EXISTS audit_rows_decision_id ON ` + tableRows + ` (decision_id)`,
		// Every checkpoint (signed head) an install sent, never replaced:
		// keyed by what it states, so that a second history signed over the
		// same seq is kept beside the first.
		`CREATE TABLE IF NOT EXISTS ` + tableCheckpoints + ` (
			install_id  TEXT NOT NULL,
			seq         BIGINT NOT NULL,
			hash        TEXT NOT NULL,
			signed_ns   BIGINT NOT NULL,
			signature   TEXT NOT NULL,
			host        TEXT NOT NULL,
			received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
			PRIMARY KEY (install_id, seq, hash, signed_ns)
		)`,
		// Every prune anchor an install sent: where its chain resumes after
		// rows pruned on the host before they were forwarded.
		`CREATE TABLE IF NOT EXISTS ` + tableAnchors + ` (
			install_id  TEXT NOT NULL,
			seq         BIGINT NOT NULL,
			anchor      TEXT NOT NULL,
			signature   TEXT NOT NULL,
			host        TEXT NOT NULL,
			received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
			PRIMARY KEY (install_id, seq, signature)
		)`,
		`INSERT INTO ` + tableSchema + ` (version) VALUES (1) ON CONFLICT DO NOTHING`,
	}
}

// forwardedColumns lists, per table, the columns the forwarder inserts:
// a store that lacks one is older than this program.
var forwardedColumns = map[string][]string{
	tableInstalls:    {"install_id", "public_key", "host"},
	tableRows:        append([]string{"install_id", "host", "escaped", "subject_raw"}, rowColumns...),
	tableCheckpoints: {"install_id", "seq", "hash", "signed_ns", "signature", "host"},
	tableAnchors:     {"install_id", "seq", "anchor", "signature", "host"},
}

// ErrSchema means the store lacks the fleet schema, or has an older one,
// and the role connected cannot create it: run `credbroker audit
// fleet-init` as a role that may.
var ErrSchema = errors.New("audit/fleet: the fleet schema is missing or older than this program")

// initSchema creates or migrates the schema on conn. Statements that race
// with another broker's (PostgreSQL's CREATE … IF NOT EXISTS can fail with
// a duplicate when two run at once) are run again.
func initSchema(ctx context.Context, conn *pgx.Conn) error {
	cockroach, err := isCockroach(ctx, conn)
	if err != nil {
		return err
	}
	for _, stmt := range schemaStatements(cockroach) {
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if _, err = conn.Exec(ctx, stmt); err == nil || !isDuplicate(err) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("audit/fleet: creating the schema: %s: %w", firstLine(stmt), err)
		}
	}
	return nil
}

// isCockroach reports whether conn is to CockroachDB.
func isCockroach(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return false, fmt.Errorf("audit/fleet: %w", err)
	}
	return strings.Contains(v, "CockroachDB"), nil
}

// isDuplicate reports whether err says an object being created exists
// already: a concurrent CREATE … IF NOT EXISTS.
func isDuplicate(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "42P07", "42710", "23505": // duplicate_table, duplicate_object, unique_violation (pg_type)
		return true
	}
	return false
}

// isPermission reports whether err is PostgreSQL's insufficient_privilege.
func isPermission(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42501"
}

// missingColumns returns the columns the forwarder writes that the store
// does not have (or that the role connected may not see), as
// "table.column". It reads information_schema only, which needs no
// privilege on the tables beyond the INSERT the forwarder has.
func missingColumns(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	tables := make([]string, 0, len(forwardedColumns))
	for t := range forwardedColumns {
		tables = append(tables, t)
	}
	rows, err := conn.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = ANY($1)`, tables)
	if err != nil {
		return nil, fmt.Errorf("audit/fleet: reading the schema: %w", err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			rows.Close()
			return nil, fmt.Errorf("audit/fleet: reading the schema: %w", err)
		}
		have[t+"."+c] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit/fleet: reading the schema: %w", err)
	}
	var missing []string
	for t, cols := range forwardedColumns {
		for _, c := range cols {
			if !have[t+"."+c] {
				missing = append(missing, t+"."+c)
			}
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// ensureSchema makes sure the forwarder can write: when columns it writes
// are missing it creates the schema, and when its role may not, it returns
// ErrSchema naming what is missing.
func ensureSchema(ctx context.Context, conn *pgx.Conn) error {
	missing, err := missingColumns(ctx, conn)
	if err != nil || len(missing) == 0 {
		return err
	}
	if err := initSchema(ctx, conn); err != nil {
		if isPermission(err) {
			return fmt.Errorf("%w (missing: %s): run `credbroker audit fleet-init --dsn-file FILE` as the schema's owner, then grant the forwarding role INSERT (see docs/audit-fleet.md)",
				ErrSchema, summarize(missing))
		}
		return err
	}
	return nil
}

// summarize lists up to five names and how many more there are.
func summarize(names []string) string {
	if len(names) <= 5 {
		return strings.Join(names, ", ")
	}
	return strings.Join(slices.Clip(names[:5]), ", ") + fmt.Sprintf(" and %d more", len(names)-5)
}

// firstLine returns the first line of a statement, for messages.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSuffix(strings.TrimSpace(s), "(")
}
