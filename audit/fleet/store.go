package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credbroker/credbroker/audit"
)

// InstallID returns the id of the install whose audit key is pub: the
// lowercase hex SHA-256 of the key's PKIX (SubjectPublicKeyInfo) DER
// encoding — the fingerprint of the PEM that `credbroker audit public-key`
// prints, which `openssl pkey -pubin -outform DER | sha256sum` computes
// too. It is recorded beside the chain (in audit_installs and in each
// forwarded row's install_id), never in it.
func InstallID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil { // only for a key of the wrong size
		der = pub
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// Store is a fleet's central audit store on PostgreSQL: the rows, signed
// checkpoints and prune anchors every install's broker forwards. It is an
// audit.Reader, so `credbroker audit query --fleet` filters as `--db` does,
// and it verifies each install's chain (Verify). It holds one connection:
// methods are safe for concurrent use and run one at a time, so a Query's
// fn must not call the Store.
type Store struct {
	mu    sync.Mutex
	conn  *pgx.Conn
	scrub scrubber
}

var _ audit.Reader = (*Store)(nil)

// Open connects to the store at dsn (a postgres:// URL or key=value
// connection string; libpq's environment variables and .pgpass file
// supply what it leaves out) and checks that it holds a fleet schema this
// program reads. The role needs SELECT on the fleet's tables (see
// docs/audit-fleet.md); Init needs more.
func Open(ctx context.Context, dsn string) (*Store, error) {
	s, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	var v *int64
	err = s.conn.QueryRow(ctx, "SELECT max(version) FROM "+tableSchema).Scan(&v)
	switch {
	case err != nil:
		s.Close()
		return nil, s.scrub.err(fmt.Errorf("audit/fleet: %w: %w (run `credbroker audit fleet-init`)", ErrSchema, err))
	case v == nil:
		s.Close()
		return nil, fmt.Errorf("%w: no version recorded (run `credbroker audit fleet-init`)", ErrSchema)
	case *v > SchemaVersion:
		s.Close()
		return nil, fmt.Errorf("audit/fleet: the fleet schema is version %d, newer than this program's %d: upgrade credbroker", *v, SchemaVersion)
	}
	return s, nil
}

// connect connects to dsn.
func connect(ctx context.Context, dsn string) (*Store, error) {
	sc := newScrubber(dsn)
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, sc.err(fmt.Errorf("audit/fleet: connecting to the fleet store: %w", err))
	}
	return &Store{conn: conn, scrub: sc}, nil
}

// Init creates the fleet schema, or brings an older one to SchemaVersion,
// at dsn; it is idempotent and safe to run from several places at once.
// The role needs CREATE on the database's current schema (or to own the
// tables). It is what `credbroker audit fleet-init` runs; a broker whose
// forwarding role may create tables runs it too.
func Init(ctx context.Context, dsn string) error {
	s, err := connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.scrub.err(initSchema(ctx, s.conn))
}

// Close closes the store's connections.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn.Close(context.Background())
}

// Query implements audit.Reader: it calls fn with each row of every
// install that matches f, oldest first (by time, then install, then seq),
// with Install and Host set, stopping at fn's first error. Every filter
// means what it means for a single log; Filter.Workload is an SQLite GLOB,
// translated exactly (see translateGlob). Values that PostgreSQL text
// cannot hold (a NUL, invalid UTF-8) are stored escaped and compared in
// that form: no filter value matches them.
func (s *Store) Query(ctx context.Context, f audit.Filter, fn func(*audit.Record) error) error {
	switch f.Decision {
	case "", audit.DecisionAllow, audit.DecisionDeny, audit.DecisionError:
	default:
		return fmt.Errorf("audit/fleet: query: decision %q is not allow, deny or error", f.Decision)
	}
	q, args, ok, err := statement(f)
	if err != nil || !ok {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return s.scrub.err(fmt.Errorf("audit/fleet: query: %w", err))
	}
	defer rows.Close()
	var sr scannedRow
	dest := sr.dest()
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return s.scrub.err(fmt.Errorf("audit/fleet: query: %w", err))
		}
		if err := sr.finish(); err != nil {
			return fmt.Errorf("audit/fleet: query: install %s: %w", sr.install, err)
		}
		r, err := sr.row.Record()
		if err != nil {
			return fmt.Errorf("audit/fleet: query: install %s: %w", sr.install, err)
		}
		r.Install, r.Host = sr.install, sr.host
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return s.scrub.err(fmt.Errorf("audit/fleet: query: %w", err))
	}
	return nil
}

// statement builds the SELECT for f; ok is false when f can match no row
// (a glob with an unclosed class). Every filter is a condition an index
// serves (see schemaStatements); the planner picks among them with the
// statistics PostgreSQL keeps.
func statement(f audit.Filter) (q string, args []any, ok bool, err error) {
	for _, v := range []string{f.Install, f.Host} {
		if v != "" && !storable(v) {
			return "", nil, false, nil // no install id or host name is stored escaped
		}
	}
	var where []string
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	// eq adds col = v with the log's byte equality: a value PostgreSQL
	// text cannot hold is compared in the escaped form it is stored in,
	// and an escaped value never equals one that needed no escaping.
	eq := func(col, rawCol string, bit int, v string) {
		if storable(v) {
			add(col+" = ?", v)
			where = append(where, fmt.Sprintf("(escaped & %d) = 0", bit))
			return
		}
		add(rawCol+" = ?", base64.StdEncoding.EncodeToString([]byte(v)))
		where = append(where, fmt.Sprintf("(escaped & %d) <> 0", bit))
	}
	if !f.Since.IsZero() {
		add("time_ns >= ?", clampUnixNano(f.Since))
	}
	if !f.Until.IsZero() {
		add("time_ns < ?", clampUnixNano(f.Until))
	}
	if f.Workload != "" {
		m, err := translateGlob(f.Workload)
		if err != nil {
			return "", nil, false, err
		}
		switch {
		case m.never:
			return "", nil, false, nil
		case m.regex == "":
			eq("subject", "subject_raw", subjectBit, m.exact)
		default:
			if m.prefix != "" {
				add("subject >= ?", m.prefix)
				if m.hasEnd {
					add("subject < ?", m.end)
				}
			}
			add("subject ~ ?", m.regex)
		}
	}
	if f.Lease != "" {
		eq("lease_id", "lease_id", leaseBit, f.Lease)
		where = append(where, "lease_id <> ''") // lets the partial index serve
	}
	if f.Database != "" {
		eq("database_name", "database_name", databaseBit, f.Database)
		where = append(where, "database_name <> ''")
	}
	if f.Credential != "" {
		eq("credential", "credential", credentialBit, f.Credential)
	}
	if f.Decision != "" {
		add("decision = ?", f.Decision)
	}
	if f.DecisionID != "" {
		eq("decision_id", "decision_id", decisionIDBit, f.DecisionID)
	}
	if f.Policy != "" {
		eq("policy", "policy", policyBit, f.Policy)
	}
	if f.Install != "" {
		add("install_id = ?", f.Install)
	}
	if f.Host != "" {
		add("host = ?", f.Host)
	}
	switch f.Kind {
	case audit.KindAll:
	case "":
		add("kind <> ?", audit.KindSignedHead)
	default:
		add("kind = ?", f.Kind)
	}
	var b strings.Builder
	b.WriteString("SELECT " + selectRow + " FROM " + tableRows)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY time_ns, install_id, seq")
	if f.Limit > 0 {
		args = append(args, int64(f.Limit))
		b.WriteString(" LIMIT $" + strconv.Itoa(len(args)))
	}
	return b.String(), args, true, nil
}

// Times outside what int64 nanoseconds since 1970 can hold.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// clampUnixNano converts t to Unix ns, saturating outside what int64
// holds, as the SQLite reader does.
func clampUnixNano(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// collect reads every row of a query into fn; for short internal queries.
func collect(ctx context.Context, q pgxQuerier, sql string, args []any, fn func(pgx.Rows) error) error {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// pgxQuerier is what collect needs of a pool or a connection.
type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}
