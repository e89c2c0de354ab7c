// Package replaydb keeps the AWS attestor's used signatures in a SQLite
// file, so that a signed sts:GetCallerIdentity request accepted once cannot
// be replayed after the broker restarts.
//
// A [DB] is an aws.ReplayStore. It stores, per signature, only its SHA-256
// (aws.ReplayKey) and the moment it expires — the end of the window in
// which the attestor would still accept the signed request — never the
// signature or the request. Every record is committed (WAL,
// synchronous=FULL) before Reserve returns, so a signature the attestor
// let through is on disk before STS is asked. Expired rows are deleted at
// most once a minute and whenever the store is full; the store holds at
// most Config.MaxEntries unexpired rows and then refuses (aws.ErrReplayFull)
// rather than forget one. When a row cannot be written, Reserve returns the
// error and the attestor refuses the request: a failure never lets a
// signature through unrecorded.
//
// The file is the broker's state, not its audit log: it is created with
// mode 0600, marked with its own SQLite application_id, and a file that is
// not a replay database (say, the audit log) is refused. One broker uses a
// file at a time; two sharing one still refuse each other's replays (the
// insert is atomic), but each then bounds the size only approximately.
//
// Usage:
//
//	db, err := replaydb.Open(ctx, replaydb.Config{Path: "/var/lib/credbroker/audit.db.aws-replay"})
//	if err != nil { … }
//	defer db.Close()
//	a, err := aws.New(aws.Config{ServerID: "credbroker.example.org", Replay: db})
package replaydb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/credbroker/credbroker/attest/aws"
)

// Defaults of Config.
const (
	// DefaultMaxEntries is the in-memory store's default size too: at the
	// default 5-minute window, about 218 signed requests a second.
	DefaultMaxEntries = aws.DefaultReplayCacheSize
	// DefaultBusyTimeout bounds the wait for another connection's lock.
	DefaultBusyTimeout = time.Second
)

// sweepInterval is the longest time between two deletions of expired rows.
const sweepInterval = time.Minute

// The file's identity: SQLite's application_id ("cbrp", credbroker replay)
// and user_version.
const (
	applicationID = 0x63627270
	schemaVersion = 1
)

const schema = `CREATE TABLE seen (
	hash    BLOB PRIMARY KEY,  -- SHA-256 of the signature
	expires INTEGER NOT NULL   -- Unix milliseconds; the row is void from then on
) WITHOUT ROWID;
CREATE INDEX seen_expires ON seen (expires);`

// Config configures a DB.
type Config struct {
	// Path of the SQLite file; created (mode 0600) when absent. Required.
	Path string
	// MaxEntries bounds the unexpired signatures kept. Default
	// DefaultMaxEntries.
	MaxEntries int
	// BusyTimeout is how long a write waits for a lock held by another
	// connection before Reserve fails. Default DefaultBusyTimeout.
	BusyTimeout time.Duration
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("path is required"))
	}
	if c.MaxEntries < 0 {
		errs = append(errs, errors.New("max entries must not be negative"))
	}
	if c.BusyTimeout < 0 {
		errs = append(errs, errors.New("busy timeout must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("replaydb: config: %w", err)
	}
	return nil
}

// DB is a file-backed aws.ReplayStore. It is safe for concurrent use.
type DB struct {
	db  *sql.DB
	max int

	mu        sync.Mutex // serialises writes, guards count and nextSweep
	count     int        // rows held; never below the true number
	nextSweep time.Time
}

var _ aws.ReplayStore = (*DB)(nil)

// Open opens the replay database at cfg.Path, creating it when absent.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.BusyTimeout == 0 {
		cfg.BusyTimeout = DefaultBusyTimeout
	}
	// Created here with mode 0600, so that SQLite gives its WAL the same.
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("replaydb: %w", err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("replaydb: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("replaydb: %s is not a regular file", cfg.Path)
	}
	dsn := "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(cfg.Path) + "?mode=rw" +
		"&_pragma=busy_timeout(" + strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10) + ")" +
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("replaydb: %s: %w", cfg.Path, err)
	}
	sdb.SetMaxOpenConns(1)
	sdb.SetMaxIdleConns(1)
	d := &DB{db: sdb, max: cfg.MaxEntries}
	if err := d.init(ctx, cfg.Path); err != nil {
		sdb.Close()
		return nil, err
	}
	return d, nil
}

// init creates the schema in an empty file, or checks that the file is a
// replay database of a version this package reads, and counts its rows.
func (d *DB) init(ctx context.Context, path string) error {
	var app, version, objects int
	if err := d.db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&app); err != nil {
		return fmt.Errorf("replaydb: %s: %w", path, err)
	}
	if err := d.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("replaydb: %s: %w", path, err)
	}
	if err := d.db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&objects); err != nil {
		return fmt.Errorf("replaydb: %s: %w", path, err)
	}
	switch {
	case app == 0 && version == 0 && objects == 0:
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("replaydb: %s: create: %w", path, err)
		}
		defer tx.Rollback()
		for _, stmt := range []string{
			schema,
			"PRAGMA application_id = " + strconv.Itoa(applicationID),
			"PRAGMA user_version = " + strconv.Itoa(schemaVersion),
		} {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("replaydb: %s: create: %w", path, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("replaydb: %s: create: %w", path, err)
		}
	case app != applicationID:
		return fmt.Errorf("replaydb: %s is not a credbroker replay database; name a file of its own", path)
	case version > schemaVersion:
		return fmt.Errorf("replaydb: %s has schema version %d, newer than this credbroker's %d", path, version, schemaVersion)
	case version != schemaVersion:
		return fmt.Errorf("replaydb: %s has unknown schema version %d", path, version)
	}
	if err := d.db.QueryRowContext(ctx, "SELECT count(*) FROM seen").Scan(&d.count); err != nil {
		return fmt.Errorf("replaydb: %s: %w", path, err)
	}
	return nil
}

// Reserve implements aws.ReplayStore: it records key until expiry and
// returns once the row is committed.
func (d *DB) Reserve(ctx context.Context, key aws.ReplayKey, expiry, now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !now.Before(d.nextSweep) || d.count >= d.max {
		if err := d.sweep(ctx, now); err != nil {
			return err
		}
	}
	if d.count >= d.max {
		var exp int64
		err := d.db.QueryRowContext(ctx, "SELECT expires FROM seen WHERE hash = ?", key[:]).Scan(&exp)
		if err == nil && exp > now.UnixMilli() {
			return aws.ErrReplay
		}
		return aws.ErrReplayFull
	}
	// One statement, so that the check and the write are one step even for
	// another broker on the same file: an unexpired row stays as it is.
	res, err := d.db.ExecContext(ctx, `INSERT INTO seen (hash, expires) VALUES (?, ?)
		ON CONFLICT (hash) DO UPDATE SET expires = excluded.expires WHERE seen.expires <= ?`,
		key[:], expiry.UnixMilli(), now.UnixMilli())
	if err != nil {
		return fmt.Errorf("replaydb: record: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("replaydb: record: %w", err)
	}
	if n == 0 {
		return aws.ErrReplay
	}
	d.count++ // one too many when an expired row was replaced; the next sweep recounts
	return nil
}

// sweep deletes expired rows and recounts.
func (d *DB) sweep(ctx context.Context, now time.Time) error {
	if _, err := d.db.ExecContext(ctx, "DELETE FROM seen WHERE expires <= ?", now.UnixMilli()); err != nil {
		return fmt.Errorf("replaydb: delete expired: %w", err)
	}
	if err := d.db.QueryRowContext(ctx, "SELECT count(*) FROM seen").Scan(&d.count); err != nil {
		return fmt.Errorf("replaydb: count: %w", err)
	}
	d.nextSweep = now.Add(sweepInterval)
	return nil
}

// Release implements aws.ReplayStore.
func (d *DB) Release(ctx context.Context, key aws.ReplayKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	res, err := d.db.ExecContext(ctx, "DELETE FROM seen WHERE hash = ?", key[:])
	if err != nil {
		return fmt.Errorf("replaydb: release: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		d.count--
	}
	return nil
}

// Close closes the database; Reserve fails afterwards.
func (d *DB) Close() error {
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("replaydb: close: %w", err)
	}
	return nil
}
