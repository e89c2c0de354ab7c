package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/inject/postgres"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/pgtest"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/lease"
	pgprov "github.com/credbroker/credbroker/providers/postgres"
	"github.com/credbroker/credbroker/providers/static"
)

// hangBound bounds every wait of these tests: a guard against hangs, never
// a measure.
const hangBound = 2 * time.Minute

// The credentials of the harness, each a role of the test's PostgreSQL.
const (
	credApp     = "app-db"     // app: SCRAM-SHA-256, logins without TLS rejected by pg_hba.conf
	credLegacy  = "legacy-db"  // legacy: password stored and checked as md5
	credClear   = "clear-db"   // clear: the server asks for a cleartext password
	credWrongPW = "wrongpw-db" // app with a wrong password
	credDynamic = "dyn-db"     // roles issued by providers/postgres through the lease manager, 3s each
	credHeld    = "held-db"    // the same, for an hour
)

// testPolicies let this test's processes (uid self) use every credential
// over the postgres channel, except app-db for the database "forbidden";
// the dynamic roles live 3 seconds, so that their leases expire within a
// test.
const testPolicies = `policies:
  - name: apps-use-databases
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [app-db, legacy-db, clear-db, wrongpw-db, held-db]
    when: 'request.channel == "postgres"'
  - name: no-forbidden-db
    effect: deny
    workloads: [{unix: {uid: self}}]
    credentials: [app-db]
    when: 'request.database == "forbidden"'
  - name: apps-use-dynamic-roles
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [dyn-db]
    when: 'request.channel == "postgres"'
    ttl: 3s
`

// harness is a real broker (unix attestor, compiled policies, audit log
// running, static-backed credentials and providers/postgres under the
// lease manager) and a real PostgreSQL with TLS (pgtest, certificate
// made here) whose pg_hba.conf makes each role log in its own way.
type harness struct {
	pg      *pgtest.Server
	caFile  string // the CA of the server's certificate
	canary  string // app's password, the canary of the leak checks
	logs    *logtest.Buffer
	db      string // the audit database
	broker  *broker.Broker
	peer    *unixattest.Attestor
	manager *lease.Manager
	clock   *offsetClock // the lease manager's
	admin   *pgx.Conn    // the superuser's, for the test's own queries
}

// userPass is a static credential with the fields username and password,
// which a listener needs: the static provider (which yields one field,
// value) holds the password in its file, re-read as it changes; the
// username is fixed.
type userPass struct {
	user string
	p    *static.Provider
}

func (u userPass) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	c, err := u.p.Credential(ctx, req)
	if err != nil {
		return c, err
	}
	c.Data = map[string]providers.Secret{
		postgres.FieldUsername: providers.NewSecret([]byte(u.user)),
		postgres.FieldPassword: c.Data[static.FieldValue],
	}
	return c, nil
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srvTLS, ca := pgtest.NewTLS(t, "127.0.0.1")
	h := &harness{canary: "CANARY-" + rand.Text(), logs: &logtest.Buffer{}, clock: &offsetClock{}}
	h.pg = pgtest.StartWith(t, pgtest.Options{TLS: srvTLS, HBA: []string{
		"hostnossl all app 127.0.0.1/32 reject",
		"host all legacy 127.0.0.1/32 md5",
		"host all clear 127.0.0.1/32 password",
	}})
	adminPW := rand.Text()
	for _, sql := range []string{
		`CREATE ROLE app LOGIN PASSWORD '` + h.canary + `'`,
		`CREATE DATABASE appdb OWNER app`,
		`CREATE DATABASE forbidden OWNER app`,
		`SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'legacy-pw'`,
		`CREATE ROLE clear LOGIN PASSWORD 'clear-pw'`,
		`CREATE ROLE broker_admin LOGIN CREATEROLE PASSWORD '` + adminPW + `'`,
		`CREATE ROLE dyn_rw NOLOGIN`,
		`GRANT dyn_rw TO broker_admin WITH ADMIN OPTION`,
		`CREATE TABLE orders (id int)`,
		`INSERT INTO orders VALUES (42)`,
		`GRANT SELECT ON orders TO dyn_rw`,
	} {
		h.pg.Exec(t, sql)
	}
	h.admin = h.pg.Conn(t)
	dir := t.TempDir()
	h.caFile = write(t, dir, "ca.pem", string(ca))

	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(testPolicies)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.db = filepath.Join(dir, "audit.db")
	alog, err := audit.Open(ctx, audit.Config{Path: h.db})
	if err != nil {
		t.Fatal(err)
	}
	auditDone := make(chan error, 1)
	go func() { auditDone <- alog.Run(ctx) }()
	if h.peer, err = unixattest.New(unixattest.Config{}); err != nil {
		t.Fatal(err)
	}

	creds := map[string]broker.Provider{}
	kinds := map[string]string{}
	for name, up := range map[string][2]string{
		credApp:     {"app", h.canary},
		credLegacy:  {"legacy", "legacy-pw"},
		credClear:   {"clear", "clear-pw"},
		credWrongPW: {"app", "not-the-password"},
	} {
		p, err := static.New(static.Config{Name: name, File: write(t, dir, name, up[1]+"\n"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		creds[name], kinds[name] = userPass{user: up[0], p: p}, static.Kind
	}

	store, err := lease.OpenStore(ctx, filepath.Join(dir, "leases.db"))
	if err != nil {
		t.Fatal(err)
	}
	if h.manager, err = lease.New(lease.Config{Store: store, Audit: alog, Logger: h.logs.Logger(), Now: h.clock.Now}); err != nil {
		t.Fatal(err)
	}
	adminDSN := write(t, dir, "admin.dsn", h.pg.DSN("broker_admin", adminPW, "postgres"))
	var provs []*pgprov.Provider
	for name, prefix := range map[string]string{credDynamic: "dyn_", credHeld: "held_"} {
		prov, err := pgprov.New(pgprov.Config{
			Name:         name,
			AdminDSNFile: adminDSN,
			Grant:        []string{"dyn_rw"},
			RolePrefix:   prefix,
			InstallID:    store.InstallID(),
			TTL:          time.Hour,
			Logger:       h.logs.Logger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		provs = append(provs, prov)
		managed, err := h.manager.Add(name, prov)
		if err != nil {
			t.Fatal(err)
		}
		creds[name], kinds[name] = managed, pgprov.Kind
	}
	managerDone := make(chan error, 1)
	go func() { managerDone <- h.manager.Run(ctx) }()

	h.broker, err = broker.New(broker.Config{
		Peer:        h.peer,
		Credentials: creds,
		Kinds:       kinds,
		Policies:    set,
		Audit:       alog,
		Logger:      h.logs.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-managerDone; err != nil {
			t.Errorf("lease manager: %v", err)
		}
		for _, p := range provs {
			p.Close()
		}
		store.Close()
		if err := <-auditDone; err != nil {
			t.Errorf("audit log: %v", err)
		}
		alog.Close()
	})
	return h
}

// offsetClock is real time shifted by what the test advanced it.
type offsetClock struct {
	mu sync.Mutex
	d  time.Duration
}

// Now is the shifted time.
func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.d)
}

// Advance shifts the clock forward by d.
func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

// write writes a file of the test and returns its path.
func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// served is a listener running for a test.
type served struct {
	h   *harness
	cfg postgres.Config
	// dir is the directory of a Unix listener's socket (.s.PGSQL.5432);
	// host and port are where clients connect: dir and 5432, or
	// 127.0.0.1 and a TCP port.
	dir, host string
	port      int
	// stop stops the listener and returns what Run returned.
	stop func() error
}

// listen starts a listener for credential on a Unix socket (network
// "unix", at DIR/.s.PGSQL.5432, wrapped by the unix attestor's Listen) or
// on TCP loopback ("tcp", wrapped by its ListenTCP), to the harness's
// PostgreSQL over verify-full TLS unless adjust says otherwise. Cleanup
// stops it and checks that Run returned nil.
func (h *harness) listen(t *testing.T, network, credential string, adjust func(*postgres.Config)) *served {
	t.Helper()
	s := &served{h: h, cfg: postgres.Config{
		Upstream:   net.JoinHostPort(h.pg.Host, strconv.Itoa(h.pg.Port)),
		Credential: credential,
		TLS:        postgres.TLSConfig{Mode: postgres.ModeVerifyFull, CAFile: h.caFile},
	}}
	var ln net.Listener
	switch network {
	case "unix":
		dir, err := os.MkdirTemp("", "cbpg-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		s.dir, s.host, s.port = dir, dir, 5432
		path := filepath.Join(dir, ".s.PGSQL.5432")
		s.cfg.Listen = "unix://" + path
		ul, err := broker.ListenUnix(path, 0o600, -1)
		if err != nil {
			t.Fatal(err)
		}
		if ln, err = h.peer.Listen(ul); err != nil {
			t.Fatal(err)
		}
	case "tcp":
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.host, s.port = "127.0.0.1", tl.Addr().(*net.TCPAddr).Port
		s.cfg.Listen = tl.Addr().String()
		ln = h.peer.ListenTCP(tl)
	default:
		t.Fatalf("network %q", network)
	}
	if adjust != nil {
		adjust(&s.cfg)
	}
	l, err := postgres.New(s.cfg, h.broker, listener.WithLogger(h.logs.Logger()))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, ln) }()
	stopped := false
	s.stop = func() error { stopped = true; stop(); return <-done }
	t.Cleanup(func() {
		if stopped {
			return
		}
		if err := s.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// dsn is a libpq key=value DSN for the listener, without a password.
func (s *served) dsn(user, database string, extra ...string) string {
	parts := append([]string{"host=" + s.host, "port=" + strconv.Itoa(s.port), "user=" + user, "dbname=" + database, "sslmode=disable", "connect_timeout=60"}, extra...)
	return strings.Join(parts, " ")
}

// connect connects with pgx through the listener; a cancelled context
// sends a CancelRequest (and waits for its answer) instead of cutting the
// connection.
func (s *served) connect(t *testing.T, user, database string) (*pgx.Conn, error) {
	t.Helper()
	cc, err := pgx.ParseConfig(s.dsn(user, database))
	if err != nil {
		t.Fatal(err)
	}
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: hangBound}
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}

// mustConnect is connect that fails the test on error.
func (s *served) mustConnect(t *testing.T, user, database string) *pgx.Conn {
	t.Helper()
	conn, err := s.connect(t, user, database)
	if err != nil {
		t.Fatalf("connecting through the listener: %v\n%s", err, s.h.logs)
	}
	return conn
}

// run runs a PostgreSQL client program (psql, pgbench) with no PG*
// variable of the test's environment, no password and no psqlrc, and
// returns its output.
func run(t *testing.T, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	path, lerr := exec.LookPath(name)
	if lerr != nil {
		t.Fatalf("%s, a client these tests run, is not installed: %v", name, lerr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PGCONNECT_TIMEOUT=60", "PGPASSFILE=/dev/null", "PSQLRC=/dev/null", "PGSSLMODE=disable", "PGGSSENCMODE=disable")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// psql runs psql -X -w -At against the listener and returns its output.
func (s *served) psql(t *testing.T, user, database string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return run(t, "psql", append([]string{"-X", "-w", "-At", "-h", s.host, "-p", strconv.Itoa(s.port), "-U", user, "-d", database}, args...)...)
}

// sqlState is the SQLSTATE of a PostgreSQL error, "" for another error.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// rows returns the audit rows matching f.
func (h *harness) rows(t *testing.T, f audit.Filter) []*audit.Record {
	t.Helper()
	var out []*audit.Record
	err := audit.Query(context.Background(), h.db, f, func(r *audit.Record) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// noCanary fails the test if the app's password is in any of what.
func (h *harness) noCanary(t *testing.T, where string, what string) {
	t.Helper()
	if strings.Contains(what, h.canary) {
		t.Errorf("the password reached %s", where)
	}
}

// roleExists reports whether the harness's PostgreSQL has the role.
func (h *harness) roleExists(t *testing.T, role string) bool {
	t.Helper()
	var n int
	if err := h.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_roles WHERE rolname = $1`, role).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}
