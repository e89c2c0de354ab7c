package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credbroker/credbroker/internal/pgtest"
	"github.com/credbroker/credbroker/providers/lease"
)

// The PostgreSQL tests run the broker binary against a real PostgreSQL
// (scram-sha-256) started by internal/pgtest, with the lease manager
// issuing, caching, expiring and revoking broker-managed login roles.

// pgPolicies let root read orders-db for 3 seconds per issue, so that
// leases expire within the test.
const pgPolicies = `policies:
  - name: root-reads-orders
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [orders-db]
    ttl: 3s
`

type pgEnv struct {
	*env
	pg *pgtest.Server
}

func newPGEnv(t *testing.T) *pgEnv {
	t.Helper()
	pg := pgtest.Start(t)
	pg.Exec(t, "CREATE ROLE orders_rw NOLOGIN")
	pg.Exec(t, "CREATE TABLE orders (id int)")
	pg.Exec(t, "INSERT INTO orders VALUES (42)")
	pg.Exec(t, "GRANT SELECT ON orders TO orders_rw")
	pg.Exec(t, "CREATE TABLE payroll (id int)")
	e := newEnv(t, pgPolicies, `  - {name: orders-db, ttl: 1h, postgres: {admin_dsn_file: secrets/pg-admin, grant: [orders_rw]}}
`)
	e.write("secrets/pg-admin", pg.AdminDSN())
	return &pgEnv{env: e, pg: pg}
}

// issued is a credential as the socket API gives it.
type issued struct {
	Data      map[string]string `json:"data"`
	LeaseID   string            `json:"lease_id"`
	ExpiresAt time.Time         `json:"expires_at"`
}

func (e *pgEnv) get(b *brokerProc) issued {
	e.t.Helper()
	r := call(e.t, socketClient(e.socket), "GET", "/v1/credentials/orders-db", nil, nil)
	if r.Status != 200 {
		e.t.Fatalf("get orders-db: %d %s\n%s", r.Status, r.Body, b.logs)
	}
	var c issued
	if err := json.Unmarshal(r.Body, &c); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// login connects as the issued role and reads orders.
func (e *pgEnv) login(c issued) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.pg.DSN(c.Data["username"], c.Data["password"], c.Data["database"]))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var id int
	return conn.QueryRow(ctx, "SELECT id FROM orders").Scan(&id)
}

// roleExists reports whether PostgreSQL still has the role.
func (e *pgEnv) roleExists(role string) bool {
	e.t.Helper()
	conn := e.pg.Conn(e.t)
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", role).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n == 1
}

// waitGone waits until the role is dropped.
func (e *pgEnv) waitGone(b *brokerProc, role string) {
	e.t.Helper()
	deadline := time.Now().Add(hangBound)
	for e.roleExists(role) {
		if time.Now().After(deadline) {
			e.t.Fatalf("role %s still exists after %v:\n%s", role, hangBound, b.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaseRows returns "kind decision" of every row naming the lease.
func (e *pgEnv) leaseRows(id string) []string {
	e.t.Helper()
	out, errOut, code := credbroker(e.t, "audit", "query", "--db", e.db, "--lease", id, "--kind", "all", "--format", "json")
	if code != 0 {
		e.t.Fatalf("audit query --lease: %s", errOut)
	}
	var rows []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct{ Kind, Decision string }
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			e.t.Fatal(err)
		}
		rows = append(rows, r.Kind+" "+r.Decision)
	}
	return rows
}

// waitRow waits until the lease has a row "kind decision".
func (e *pgEnv) waitRow(b *brokerProc, id, row string) {
	e.t.Helper()
	deadline := time.Now().Add(hangBound)
	for !contains(e.leaseRows(id), row) {
		if time.Now().After(deadline) {
			e.t.Fatalf("lease %s has no %q row after %v: %q\n%s", id, row, hangBound, e.leaseRows(id), b.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func contains(rows []string, s string) bool {
	for _, r := range rows {
		if r == s {
			return true
		}
	}
	return false
}

func roleOf(leaseID string) string { return strings.TrimPrefix(leaseID, "postgres:") }

// TestPostgresLeaseLifecycle issues a role, uses it, sees it cached, and
// sees it dropped after its expiry, with every step in the audit log and
// the password nowhere in it.
func TestPostgresLeaseLifecycle(t *testing.T) {
	e := newPGEnv(t)
	b := e.start("--admin", "127.0.0.1:0")
	c := e.get(b)
	if !strings.HasPrefix(c.LeaseID, "postgres:credbroker_unix_uid_0") || c.Data["username"] != roleOf(c.LeaseID) || len(c.Data["password"]) < 32 {
		t.Fatalf("issued %q with username %q", c.LeaseID, c.Data["username"])
	}
	if err := e.login(c); err != nil {
		t.Fatalf("login with the issued role: %v", err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.pg.DSN(c.Data["username"], c.Data["password"], c.Data["database"]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT * FROM payroll"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("the issued role reads a table it was not granted: %v", err)
	}
	conn.Close(ctx)
	if again := e.get(b); again.LeaseID != c.LeaseID {
		t.Errorf("a second request within the refresh point got lease %s, want the cached %s", again.LeaseID, c.LeaseID)
	}

	e.waitGone(b, roleOf(c.LeaseID))
	e.waitRow(b, c.LeaseID, "lease revoke")
	if err := e.login(c); err == nil {
		t.Error("the expired role still logs in")
	}
	// The decision's row carries the time it started, before the issue.
	if got := e.leaseRows(c.LeaseID); len(got) != 4 || !contains(got, "lease issue") || got[3] != "lease revoke" {
		t.Errorf("rows of the lease: %q, want its issue, the two decisions and its revocation", got)
	}
	if out, err := exec.Command("grep", "-c", c.Data["password"], e.db, e.db+"-wal").CombinedOutput(); !strings.HasPrefix(string(out), e.db+":0") || err == nil && !strings.Contains(string(out), ":0") {
		t.Errorf("the issued password is in the audit database: %s", out)
	}
	if strings.Contains(b.logs.String(), c.Data["password"]) {
		t.Error("the issued password is in the broker's log")
	}
	_, metrics := httpGet(t, "http://"+adminAddr(t, b)+"/metrics")
	for _, want := range []string{
		`credbroker_lease_events_total{credential="orders-db",event="issue"} 1`,
		`credbroker_lease_requests_total{credential="orders-db",result="hit"} 1`,
		`credbroker_lease_requests_total{credential="orders-db",result="miss"} 1`,
		`credbroker_lease_revocations_total{result="ok"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, c.Data["password"]) {
		t.Error("the issued password is in /metrics")
	}
}

// TestPostgresRevocationOutage keeps PostgreSQL down when a lease expires:
// the revocation fails, is recorded as failed and retried, and once the
// database is back the role is dropped — no orphan.
func TestPostgresRevocationOutage(t *testing.T) {
	e := newPGEnv(t)
	b := e.start()
	c := e.get(b)
	e.pg.Stop(t)
	e.waitRow(b, c.LeaseID, "lease revoke_failed")
	e.pg.Restart(t)
	e.waitGone(b, roleOf(c.LeaseID))
	e.waitRow(b, c.LeaseID, "lease revoke")
}

// TestPostgresRestartRevokes kills the broker with a lease outstanding and
// a leftover role of its install that it never tracked: restarted, it
// revokes both.
func TestPostgresRestartRevokes(t *testing.T) {
	e := newPGEnv(t)
	b := e.start()
	c := e.get(b)
	b.stop(syscall.SIGKILL)

	s, err := lease.OpenStore(context.Background(), e.db+".leases")
	if err != nil {
		t.Fatal(err)
	}
	install := s.InstallID()
	s.Close()
	const orphan = "credbroker_unix_uid_0_orphan"
	e.pg.Exec(t, fmt.Sprintf("CREATE ROLE %s LOGIN; COMMENT ON ROLE %s IS 'credbroker install %s'", orphan, orphan, install))
	const foreign = "credbroker_other_install"
	e.pg.Exec(t, fmt.Sprintf("CREATE ROLE %s LOGIN; COMMENT ON ROLE %s IS 'credbroker install another'", foreign, foreign))
	for time.Now().Before(c.ExpiresAt) { // the lease runs out while the broker is down
		time.Sleep(50 * time.Millisecond)
	}
	if !e.roleExists(roleOf(c.LeaseID)) {
		t.Fatal("the role went away with no broker running")
	}

	b = e.start()
	e.waitGone(b, roleOf(c.LeaseID))
	e.waitGone(b, orphan)
	e.waitRow(b, "postgres:"+orphan, "lease revoke")
	if !e.roleExists(foreign) {
		t.Error("a role of another install was dropped")
	}
}

// TestPostgresDownAtStart starts the broker while its PostgreSQL is down:
// it says so at start and keeps serving its other credentials; the
// PostgreSQL credential fails with 503 until the database is back.
func TestPostgresDownAtStart(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(t, "CREATE ROLE orders_rw NOLOGIN")
	e := newEnv(t, strings.Replace(pgPolicies, "[orders-db]", "[orders-db, demo]", 1), `  - {name: orders-db, postgres: {admin_dsn_file: secrets/pg-admin, grant: [orders_rw]}}
  - {name: demo, static: {file: secrets/demo}}
`)
	e.write("secrets/pg-admin", pg.AdminDSN())
	e.write("secrets/demo", "s3cr3t")
	pg.Stop(t)
	b := e.start()
	b.waitLog("credential upstream unreachable at start")
	if !strings.Contains(b.logs.String(), `"credential":"orders-db"`) && !strings.Contains(b.logs.String(), "credential=orders-db") {
		t.Errorf("the warning does not name the credential:\n%s", b.logs)
	}
	c := socketClient(e.socket)
	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 200 {
		t.Fatalf("demo while PostgreSQL is down: %d %s", r.Status, r.Body)
	}
	r := call(t, c, "GET", "/v1/credentials/orders-db", nil, nil)
	if r.Status != 503 || !strings.Contains(string(r.Body), `credential \"orders-db\" is unavailable: its provider failed and no unexpired credential is cached`) {
		t.Fatalf("orders-db while PostgreSQL is down: %d %s", r.Status, r.Body)
	}
	pg.Restart(t)
	if r := call(t, c, "GET", "/v1/credentials/orders-db", nil, nil); r.Status != 200 {
		t.Fatalf("orders-db once PostgreSQL is back: %d %s", r.Status, r.Body)
	}
}

// TestPostgresUnrecordedIssueIsRevoked fills the volume of the audit log
// (and the lease store beside it) before the first request for a
// PostgreSQL credential: the request is refused, and the role the provider
// created for it is dropped — never left alive unrecorded.
func TestPostgresUnrecordedIssueIsRevoked(t *testing.T) {
	e := newPGEnv(t)
	disk := mountTmpfs(t, "4m")
	e.db = filepath.Join(disk, "audit.db")
	b := e.start("--audit-db", e.db)
	fillDisk(t, disk)
	r := call(t, socketClient(e.socket), "GET", "/v1/credentials/orders-db", nil, nil)
	if r.Status != 503 {
		t.Fatalf("with the audit volume full: %d %s", r.Status, r.Body)
	}
	b.waitLog("postgres: role created") // the refusal came after an issue upstream
	deadline := time.Now().Add(hangBound)
	for {
		var n int
		conn := e.pg.Conn(t)
		err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, 'credbroker_')").Scan(&n)
		conn.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d roles of the broker remain after a refused issue:\n%s", n, b.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
