package lease

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/credbroker/credbroker/providers"
)

// The store's file: an application id so that another file is never taken
// for it, and a schema version for forward migrations.
const (
	applicationID = 0x63626c73 // "cbls"
	schemaVersion = 1
)

const schema = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE leases (
	id           TEXT PRIMARY KEY,
	credential   TEXT NOT NULL,
	subject      TEXT NOT NULL,
	kind         TEXT NOT NULL,
	expires_at   INTEGER NOT NULL, -- Unix ns
	state        TEXT NOT NULL,    -- active | revoke | revoked
	reason       TEXT NOT NULL DEFAULT '',
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt INTEGER NOT NULL DEFAULT 0, -- Unix ns
	last_error   TEXT NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;
-- What falls due: active leases by expiry, queued revocations by next attempt.
CREATE INDEX leases_expiry ON leases (state, expires_at);
CREATE INDEX leases_retry ON leases (state, next_attempt);
`

// States of a stored lease.
const (
	stateActive  = "active"  // issued; revoked when it expires
	stateRevoke  = "revoke"  // to be revoked at next_attempt
	stateRevoked = "revoked" // revoked upstream; its audit row is still to be written
)

// Store is the broker's own durable record of the revocable leases it
// issued and of the revocations still to do: a SQLite file, not the audit
// chain. It survives restarts, so that a lease issued before a crash is
// still revoked after it.
type Store struct {
	db        *sql.DB
	installID string
}

// stored is one row of the store.
type stored struct {
	providers.Lease
	state       string
	reason      string
	attempts    int
	nextAttempt time.Time
}

// OpenStore opens the store at path, creating it (mode 0600) when absent.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("lease: store: a path is required")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lease: store: %w", err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("lease: store: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("lease: store: %s is not a regular file", path)
	}
	dsn := "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path) + "?mode=rw" +
		"&_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("lease: store: %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	s := &Store{db: db}
	if err := s.init(ctx, path); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// init creates the schema and the install id in an empty file, or checks
// the file is a lease store this package reads.
func (s *Store) init(ctx context.Context, path string) error {
	var app, version, objects int
	for _, q := range []struct {
		sql string
		dst *int
	}{{"PRAGMA application_id", &app}, {"PRAGMA user_version", &version}, {"SELECT count(*) FROM sqlite_schema", &objects}} {
		if err := s.db.QueryRowContext(ctx, q.sql).Scan(q.dst); err != nil {
			return fmt.Errorf("lease: store: %s: %w", path, err)
		}
	}
	switch {
	case app == 0 && version == 0 && objects == 0:
		var b [16]byte
		_, _ = rand.Read(b[:])
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("lease: store: %s: create: %w", path, err)
		}
		defer tx.Rollback()
		for _, stmt := range []string{schema,
			"INSERT INTO meta (key, value) VALUES ('install_id', '" + hex.EncodeToString(b[:]) + "')",
			"PRAGMA application_id = " + strconv.Itoa(applicationID),
			"PRAGMA user_version = " + strconv.Itoa(schemaVersion),
		} {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("lease: store: %s: create: %w", path, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("lease: store: %s: create: %w", path, err)
		}
	case app != applicationID:
		return fmt.Errorf("lease: store: %s is not a credbroker lease store; name a file of its own", path)
	case version > schemaVersion:
		return fmt.Errorf("lease: store: %s has schema version %d, newer than this credbroker's %d", path, version, schemaVersion)
	}
	if err := s.db.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'install_id'").Scan(&s.installID); err != nil {
		return fmt.Errorf("lease: store: %s: install id: %w", path, err)
	}
	return nil
}

// InstallID identifies this install (this store) to providers that mark
// what they create upstream, so that leftovers are recognised as its own.
func (s *Store) InstallID() string { return s.installID }

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// add records a newly issued lease as active.
func (s *Store) add(ctx context.Context, l providers.Lease) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO leases (id, credential, subject, kind, expires_at, state) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`, l.ID, l.Credential, l.Subject, l.Kind, l.ExpiresAt.UnixNano(), stateActive)
	if err != nil {
		return fmt.Errorf("lease: store: recording lease %s: %w", l.ID, err)
	}
	return nil
}

// schedule marks a lease for revocation at the given time, for a reason;
// a lease the store did not hold is added.
func (s *Store) schedule(ctx context.Context, l providers.Lease, at time.Time, reason string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO leases (id, credential, subject, kind, expires_at, state, reason, next_attempt)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, reason = excluded.reason, next_attempt = excluded.next_attempt
		WHERE state = ?`,
		l.ID, l.Credential, l.Subject, l.Kind, l.ExpiresAt.UnixNano(), stateRevoke, reason, at.UnixNano(), stateActive)
	if err != nil {
		return fmt.Errorf("lease: store: scheduling revocation of %s: %w", l.ID, err)
	}
	return nil
}

// renewed records a lease's new expiry.
func (s *Store) renewed(ctx context.Context, l providers.Lease) error {
	_, err := s.db.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE id = ? AND state = ?`, l.ExpiresAt.UnixNano(), l.ID, stateActive)
	if err != nil {
		return fmt.Errorf("lease: store: recording renewal of %s: %w", l.ID, err)
	}
	return nil
}

// failed records a failed revocation attempt, for reason, and queues the
// lease for another at next.
func (s *Store) failed(ctx context.Context, id, reason string, attempts int, next time.Time, cause string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE leases SET state = ?, reason = ?, attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?`,
		stateRevoke, reason, attempts, next.UnixNano(), cause, id)
	if err != nil {
		return fmt.Errorf("lease: store: recording failed revocation of %s: %w", id, err)
	}
	return nil
}

// revoked records that a lease was revoked upstream; its audit row is
// still to be written.
func (s *Store) revoked(ctx context.Context, id string, attempts int) error {
	_, err := s.db.ExecContext(ctx, `UPDATE leases SET state = ?, attempts = ? WHERE id = ?`, stateRevoked, attempts, id)
	if err != nil {
		return fmt.Errorf("lease: store: recording revocation of %s: %w", id, err)
	}
	return nil
}

// remove forgets a lease whose revocation is recorded.
func (s *Store) remove(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM leases WHERE id = ?`, id); err != nil {
		return fmt.Errorf("lease: store: forgetting %s: %w", id, err)
	}
	return nil
}

// storedColumns are the columns scanned into a stored.
const storedColumns = `id, credential, subject, kind, expires_at, state, reason, attempts, next_attempt`

// all returns every stored lease.
func (s *Store) all(ctx context.Context) ([]stored, error) {
	return s.query(ctx, `SELECT `+storedColumns+` FROM leases ORDER BY id`)
}

// due returns the leases due at now: active ones expired, queued
// revocations whose next attempt has come.
func (s *Store) due(ctx context.Context, now time.Time) ([]stored, error) {
	n := now.UnixNano()
	return s.query(ctx, `SELECT `+storedColumns+` FROM leases WHERE state = ? AND expires_at <= ?
		UNION ALL SELECT `+storedColumns+` FROM leases WHERE state IN (?, ?) AND next_attempt <= ?`,
		stateActive, n, stateRevoke, stateRevoked, n)
}

// nextDue returns when the next lease falls due, zero when none will, and
// how many leases each state holds.
func (s *Store) nextDue(ctx context.Context) (time.Time, map[string]int, error) {
	var expiry, retry sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT (SELECT min(expires_at) FROM leases WHERE state = ?),
		(SELECT min(next_attempt) FROM leases WHERE state IN (?, ?))`, stateActive, stateRevoke, stateRevoked).Scan(&expiry, &retry)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("lease: store: %w", err)
	}
	var next time.Time
	for _, v := range []sql.NullInt64{expiry, retry} {
		if t := time.Unix(0, v.Int64); v.Valid && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	counts := map[string]int{stateActive: 0, stateRevoke: 0, stateRevoked: 0}
	rows, err := s.db.QueryContext(ctx, `SELECT state, count(*) FROM leases GROUP BY state`)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("lease: store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return time.Time{}, nil, fmt.Errorf("lease: store: %w", err)
		}
		counts[state] = n
	}
	return next, counts, rows.Err()
}

// query returns the leases a SELECT of storedColumns finds.
func (s *Store) query(ctx context.Context, q string, args ...any) ([]stored, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("lease: store: %w", err)
	}
	defer rows.Close()
	var out []stored
	for rows.Next() {
		var st stored
		var exp, next int64
		if err := rows.Scan(&st.ID, &st.Credential, &st.Subject, &st.Kind, &exp, &st.state, &st.reason, &st.attempts, &next); err != nil {
			return nil, fmt.Errorf("lease: store: %w", err)
		}
		st.ExpiresAt, st.nextAttempt = time.Unix(0, exp), time.Unix(0, next)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lease: store: %w", err)
	}
	return out, nil
}
