package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/internal/mariadbtest"
	"github.com/credbroker/credbroker/internal/pgtest"
	"github.com/credbroker/credbroker/internal/redistest"
)

// pgListenPolicies let root use orders-db, for 3 seconds per issue so that
// a lease ends within the test; nobody is not allowed.
const pgListenPolicies = `policies:
  - name: root-reads-orders
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [orders-db]
    when: 'request.database == "postgres"'
    ttl: 3s
`

// TestPostgresListener runs the broker binary with a postgres listener on
// a Unix socket (where psql looks for .s.PGSQL.5432) and one on TCP
// loopback, in front of a real PostgreSQL, issuing dynamic login roles.
// psql connects with no password and runs as the issued role; each
// connection is one decision row with its database and upstream user; a
// caller the policy does not allow gets PostgreSQL's own error with the
// reason; the role is dropped once the session and the lease have ended.
func TestPostgresListener(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql is not installed (PostgreSQL's client)")
	}
	pg := pgtest.Start(t)
	pg.Exec(t, "CREATE ROLE orders_rw NOLOGIN")
	pg.Exec(t, "CREATE TABLE orders (id int)")
	pg.Exec(t, "INSERT INTO orders VALUES (42)")
	pg.Exec(t, "GRANT SELECT ON orders TO orders_rw")
	pgDir, err := os.MkdirTemp("/tmp", "cbpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pgDir) })
	e := newEnv(t, pgListenPolicies, fmt.Sprintf(`  - {name: orders-db, ttl: 1h, postgres: {admin_dsn_file: secrets/pg-admin, grant: [orders_rw]}}
listeners:
  - postgres: {listen: "unix://%s/.s.PGSQL.5432", upstream: "127.0.0.1:%d", credential: orders-db, tls: {mode: disable}}
  - postgres: {listen: "127.0.0.1:0", upstream: "127.0.0.1:%d", credential: orders-db, tls: {mode: disable}}
`, pgDir, pg.Port, pg.Port))
	e.write("secrets/pg-admin", pg.AdminDSN())
	if out, _, code := credbroker(t, "check", "--config", e.config); code != 0 {
		t.Fatalf("check: %s", out)
	}
	b := e.start()
	addr := logAddr(t, b, "postgres listening")
	_, port, _ := strings.Cut(addr, ":")

	psql := func(uid uint32, args ...string) (string, error) {
		cmd := exec.Command("psql", append([]string{"-X", "-At", "-v", "ON_ERROR_STOP=1"}, args...)...)
		cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=30", "PGPASSWORD=")
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	// psql on the Unix socket, as any user, without a password.
	out, err := psql(0, "-h", pgDir, "-U", "whoever", "-d", "postgres", "-c", "SELECT current_user, (SELECT id FROM orders)")
	if err != nil {
		t.Fatalf("psql through the unix listener: %v\n%s\n%s", err, out, b.logs)
	}
	role, id, _ := strings.Cut(out, "|")
	if id != "42" || role == "" || role == "whoever" {
		t.Fatalf("psql printed %q, want the issued role and 42", out)
	}

	// The same workload on TCP reuses the cached role.
	out, err = psql(0, "-h", "127.0.0.1", "-p", port, "-U", "app", "-d", "postgres", "-c", "SELECT current_user")
	if err != nil || out != role {
		t.Fatalf("psql through the tcp listener: %q, %v, want %q", out, err, role)
	}

	// A database the policy does not allow, and a uid it does not.
	out, err = psql(0, "-h", pgDir, "-U", "app", "-d", "template1", "-c", "SELECT 1")
	if err == nil || !strings.Contains(out, "no policy allows") {
		t.Fatalf("psql on a database not allowed: %v: %s", err, out)
	}
	out, err = psql(65534, "-h", "127.0.0.1", "-p", port, "-U", "app", "-d", "postgres", "-c", "SELECT 1")
	if err == nil || !strings.Contains(out, "no policy allows") {
		t.Fatalf("psql as nobody: %v: %s", err, out)
	}

	rows := auditRows(t, e.db)
	var allows, denies int
	for _, r := range rows {
		if r.Channel != "postgres" {
			continue
		}
		switch r.Decision {
		case "allow":
			allows++
			if r.Database != "postgres" || r.UpstreamUser != role || r.TargetHost != fmt.Sprintf("127.0.0.1:%d", pg.Port) {
				t.Errorf("allow row: database %q upstream user %q target %q", r.Database, r.UpstreamUser, r.TargetHost)
			}
		case "deny":
			denies++
		}
	}
	if allows != 2 || denies != 2 {
		t.Errorf("%d allow and %d deny rows on channel postgres, want 2 and 2", allows, denies)
	}

	// The sessions have ended; once the lease does, the role is dropped.
	admin := pg.Conn(t)
	deadline := time.Now().Add(hangBound)
	for {
		var n int
		if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", role).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("role %s still exists %v after its lease ended:\n%s", role, hangBound, b.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(b.logs.String(), "password=") {
		t.Error("the broker's log holds a password")
	}
}

// redisPolicies let root use the cache credential.
const redisPolicies = `policies:
  - name: root-uses-cache
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [cache]
`

// TestRedisListener runs the broker binary with a redis listener in front
// of a real redis-server whose default user is off: redis-cli with no
// password works as the ACL user whose password the broker holds (a
// static credential of two fields), a client's own AUTH is answered by the
// server for the broker's credential and never carries the client's, and
// nobody is refused with the reason.
func TestRedisListener(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli is not installed (Debian's redis-tools)")
	}
	const password = "cache-pw-b61f0c"
	rs := redistest.Start(t, redistest.Options{Users: []string{"app on >" + password + " ~* &* +@all"}})
	e := newEnv(t, redisPolicies, fmt.Sprintf(`  - {name: cache, static: {fields: {username: {file: secrets/cache-user}, password: {file: secrets/cache-pw}}}}
listeners:
  - redis: {listen: "127.0.0.1:0", upstream: %q, credential: cache}
`, rs.Addr))
	e.write("secrets/cache-user", "app")
	e.write("secrets/cache-pw", password)
	if out, _, code := credbroker(t, "check", "--config", e.config); code != 0 {
		t.Fatalf("check: %s", out)
	}
	b := e.start()
	host, port, _ := strings.Cut(logAddr(t, b, "redis listening"), ":")
	cli := func(uid uint32, args ...string) (string, error) {
		cmd := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...)
		cmd.Env = append(os.Environ(), "REDISCLI_AUTH=")
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := cli(0, "SET", "k", "v"); err != nil || out != "OK" {
		t.Fatalf("SET through the listener: %q, %v\n%s", out, err, b.logs)
	}
	if out, err := cli(0, "ACL", "WHOAMI"); err != nil || out != "app" {
		t.Fatalf("ACL WHOAMI: %q, %v", out, err)
	}
	// A client's own AUTH is rewritten to the broker's credential.
	if out, err := cli(0, "--user", "mallory", "--pass", "not-the-password", "--no-auth-warning", "GET", "k"); err != nil || out != "v" {
		t.Fatalf("GET after a client AUTH: %q, %v", out, err)
	}
	if out, _ := cli(65534, "GET", "k"); !strings.Contains(out, "no policy allows") {
		t.Fatalf("redis-cli as nobody: %q", out)
	}
	rows := auditRows(t, e.db)
	var allows, denies int
	for _, r := range rows {
		switch {
		case r.Channel != "redis":
		case r.Decision == "allow" && r.UpstreamUser == "app" && r.TargetHost == rs.Addr:
			allows++
		case r.Decision == "deny":
			denies++
		default:
			t.Errorf("row %+v", r)
		}
	}
	if allows != 3 || denies != 1 {
		t.Errorf("%d allow and %d deny rows on channel redis, want 3 and 1", allows, denies)
	}
	for _, leak := range []string{password, "not-the-password"} {
		if strings.Contains(b.logs.String(), leak) {
			t.Errorf("the broker's log holds %q", leak)
		}
	}
	if strings.Contains(rs.Log(), "not-the-password") {
		t.Error("the client's password reached the server's log")
	}
}

// mysqlPolicies let root use the shop credential.
const mysqlPolicies = `policies:
  - name: root-uses-shop
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [shop]
`

// TestMySQLListener runs the broker binary with a mysql listener in front
// of a real MariaDB: the mariadb client connects as any user without a
// password and runs as the user whose password the broker holds, on the
// database it asked for; nobody is refused with the reason; rows carry the
// database and the upstream user.
func TestMySQLListener(t *testing.T) {
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Fatal("the mariadb client is not installed (Debian's mariadb-client)")
	}
	const password = "shop-pw-7d2e91"
	db := mariadbtest.Start(t)
	db.Exec(t, "CREATE DATABASE shop",
		"CREATE TABLE shop.items (id INT)",
		"INSERT INTO shop.items VALUES (7)",
		"CREATE USER 'shop_app'@'%' IDENTIFIED BY '"+password+"'",
		"GRANT SELECT ON shop.* TO 'shop_app'@'%'")
	e := newEnv(t, mysqlPolicies, fmt.Sprintf(`  - {name: shop, static: {fields: {username: {file: secrets/shop-user}, password: {file: secrets/shop-pw}}}}
listeners:
  - mysql: {listen: "127.0.0.1:0", upstream: %q, credential: shop, tls: {mode: disable}}
`, db.Addr()))
	e.write("secrets/shop-user", "shop_app")
	e.write("secrets/shop-pw", password)
	if out, _, code := credbroker(t, "check", "--config", e.config); code != 0 {
		t.Fatalf("check: %s", out)
	}
	b := e.start()
	host, port, _ := strings.Cut(logAddr(t, b, "mysql listening"), ":")
	client := func(uid uint32, sql string) (string, error) {
		cmd := exec.Command("mariadb", "--no-defaults", "-h", host, "-P", port, "-u", "whoever", "--skip-ssl", "-N", "-B", "shop", "-e", sql)
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := client(0, "SELECT CURRENT_USER(), DATABASE(), id FROM items")
	if err != nil || out != "shop_app@%\tshop\t7" {
		t.Fatalf("mariadb through the listener: %q, %v\n%s", out, err, b.logs)
	}
	if out, err := client(65534, "SELECT 1"); err == nil || !strings.Contains(out, "no policy allows") {
		t.Fatalf("mariadb as nobody: %q, %v", out, err)
	}
	var allows, denies int
	for _, r := range auditRows(t, e.db) {
		switch {
		case r.Channel != "mysql":
		case r.Decision == "allow" && r.Database == "shop" && r.UpstreamUser == "shop_app" && r.TargetHost == db.Addr():
			allows++
		case r.Decision == "deny":
			denies++
		default:
			t.Errorf("row %+v", r)
		}
	}
	if allows != 1 || denies != 1 {
		t.Errorf("%d allow and %d deny rows on channel mysql, want 1 and 1", allows, denies)
	}
	if strings.Contains(b.logs.String(), password) {
		t.Error("the broker's log holds the password")
	}
}
