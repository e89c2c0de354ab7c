package mysql_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/inject/mysql"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/mariadbtest"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
)

// credName is the credential the listener logs in upstream with.
const credName = "orders-db"

// testPolicies let this test's processes (uid self) use the credential
// over mysql unless they connect as "intruder", and deny mariadb-admin by
// the digest of its executable (ADMIN_SHA).
const testPolicies = `policies:
  - name: apps-use-orders-db
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [orders-db]
    when: 'request.channel == "mysql" && request.user != "intruder"'
  - name: no-admin-tool
    effect: deny
    workloads: [{unix: {exe_sha256: ADMIN_SHA}}]
    credentials: [orders-db]
`

// loginProvider issues one fixed MySQL login, as a database provider
// (vault's database engine, a dynamic-user provider) would issue a fresh
// one: it stands in for those, whose own tests cover minting. It holds
// each lease for a session, as the lease manager does, and reports each
// release.
type loginProvider struct {
	mu       sync.Mutex
	user     string
	password string
	held     int
	released chan string // lease ids, as sessions release them (up to its buffer)
}

func (p *loginProvider) Credential(_ context.Context, req providers.Request) (providers.Credential, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return providers.Credential{
		Lease: providers.Lease{ID: "lease-" + rand.Text(), Credential: req.Name, Subject: req.Identity.Subject,
			Kind: "test-login", ExpiresAt: time.Now().Add(time.Hour)},
		Data: map[string]providers.Secret{
			mysql.FieldUsername: providers.NewSecret([]byte(p.user)),
			mysql.FieldPassword: providers.NewSecret([]byte(p.password)),
		},
	}, nil
}

// Hold is the lease manager's capability the broker uses for sessions.
func (p *loginProvider) Hold(l providers.Lease) func() {
	p.mu.Lock()
	p.held++
	p.mu.Unlock()
	return func() {
		select {
		case p.released <- l.ID:
		default: // a benchmark's thousands of sessions: nobody counts them
		}
	}
}

func (p *loginProvider) setPassword(pw string) {
	p.mu.Lock()
	p.password = pw
	p.mu.Unlock()
}

// harness is a real broker (unix attestor, compiled policies, the login
// provider, audit log running) behind two mysql listeners — one on a Unix
// socket wrapped by the unix attestor, one on TCP loopback wrapped by its
// ListenTCP — in front of a real MariaDB holding the issued user.
type harness struct {
	srv    *mariadbtest.Server
	user   string // the issued user name
	canary string // the issued password
	prov   *loginProvider
	db     string // the audit log
	logs   *logtest.Buffer
	socket string
	tcp    string
}

// newHarness starts everything against srv, with the issued user created
// by create (a statement with %s for the quoted user and password);
// adjust changes the listeners' configuration.
func newHarness(tb testing.TB, srv *mariadbtest.Server, create string, adjust func(*mysql.Config)) *harness {
	tb.Helper()
	dir := tb.TempDir()
	h := &harness{
		srv:    srv,
		user:   "issued_" + strings.ToLower(rand.Text()[:8]),
		canary: "canary-" + rand.Text(),
		db:     filepath.Join(dir, "audit.db"),
		logs:   &logtest.Buffer{},
	}
	if create == "" {
		create = "CREATE USER %s@'%%' IDENTIFIED BY %s"
	}
	srv.Exec(tb,
		"CREATE DATABASE IF NOT EXISTS shop",
		"CREATE TABLE IF NOT EXISTS shop.orders (id INT PRIMARY KEY, item VARCHAR(100), body LONGBLOB)",
		fmt.Sprintf(create, quote(h.user), quote(h.canary)),
		"GRANT ALL ON shop.* TO "+quote(h.user)+"@'%'",
		"GRANT SELECT ON mysql.* TO "+quote(h.user)+"@'%'",
	)
	h.prov = &loginProvider{user: h.user, password: h.canary, released: make(chan string, 100)}

	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(testPolicies, "ADMIN_SHA", digest(tb, "mariadb-admin")))}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	alog, err := audit.Open(ctx, audit.Config{Path: h.db})
	if err != nil {
		tb.Fatal(err)
	}
	auditDone := make(chan error, 1)
	go func() { auditDone <- alog.Run(ctx) }()
	peer, err := unixattest.New(unixattest.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	b, err := broker.New(broker.Config{
		Peer:        peer,
		Credentials: map[string]broker.Provider{credName: h.prov},
		Kinds:       map[string]string{credName: "test-login"},
		Policies:    set,
		Audit:       alog,
		Logger:      h.logs.Logger(),
	})
	if err != nil {
		tb.Fatal(err)
	}

	sockDir, err := os.MkdirTemp("", "cbmy-")
	if err != nil {
		tb.Fatal(err)
	}
	h.socket = filepath.Join(sockDir, "mysqld.sock")
	uln, err := broker.ListenUnix(h.socket, 0o600, -1)
	if err != nil {
		tb.Fatal(err)
	}
	wrapped, err := peer.Listen(uln)
	if err != nil {
		tb.Fatal(err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	h.tcp = tln.Addr().String()

	runCtx, stop := context.WithCancel(context.Background())
	var runs []chan error
	for _, l := range []struct {
		listen string
		ln     net.Listener
	}{{"unix://" + h.socket, wrapped}, {h.tcp, peer.ListenTCP(tln)}} {
		cfg := mysql.Config{Listen: l.listen, Upstream: srv.Addr(), Credential: credName, TLS: mysql.TLSConfig{Mode: mysql.ModeDisable}}
		if adjust != nil {
			adjust(&cfg)
		}
		ml, err := mysql.New(cfg, b, listener.WithLogger(h.logs.Logger()))
		if err != nil {
			tb.Fatal(err)
		}
		done := make(chan error, 1)
		runs = append(runs, done)
		go func() { done <- ml.Run(runCtx, l.ln) }()
	}
	tb.Cleanup(func() {
		stop()
		for _, done := range runs {
			if err := <-done; err != nil {
				tb.Errorf("Run: %v", err)
			}
		}
		cancel()
		<-auditDone
		alog.Close()
		os.RemoveAll(sockDir)
	})
	return h
}

// config is a go-sql-driver configuration for the listener's Unix socket
// as user, on database, with no password.
func (h *harness) config(user, database string) *gomysql.Config {
	c := gomysql.NewConfig()
	c.User, c.Net, c.Addr, c.DBName = user, "unix", h.socket, database
	c.Timeout = time.Minute
	return c
}

// open opens a pool with c, closed by t.Cleanup.
func open(tb testing.TB, c *gomysql.Config) *sql.DB {
	tb.Helper()
	conn, err := gomysql.NewConnector(c)
	if err != nil {
		tb.Fatal(err)
	}
	db := sql.OpenDB(conn)
	tb.Cleanup(func() { db.Close() })
	return db
}

// auditRows returns the decision rows of the credential.
func (h *harness) auditRows(tb testing.TB) []audit.Record {
	tb.Helper()
	var rows []audit.Record
	err := audit.Query(context.Background(), h.db, audit.Filter{Credential: credName, Kind: audit.KindDecision}, func(r *audit.Record) error {
		rows = append(rows, *r)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rows
}

// waitReleased waits until n sessions have released their grants.
func (h *harness) waitReleased(tb testing.TB, n int) {
	tb.Helper()
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-h.prov.released:
		case <-timer.C:
			tb.Fatalf("%d of %d sessions released their grant", i, n)
		}
	}
}

// checkNoSecret fails the test if the issued password is in the logs or
// anywhere in the audit database's files.
func (h *harness) checkNoSecret(tb testing.TB) {
	tb.Helper()
	if strings.Contains(h.logs.String(), h.canary) {
		tb.Error("the issued password is in the log")
	}
	files, _ := filepath.Glob(h.db + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		if bytes.Contains(b, []byte(h.canary)) {
			tb.Errorf("the issued password is in %s", filepath.Base(f))
		}
	}
}

// mysqlError returns err's MySQL error, failing the test without one.
func mysqlError(tb testing.TB, err error) *gomysql.MySQLError {
	tb.Helper()
	var me *gomysql.MySQLError
	if !errors.As(err, &me) {
		tb.Fatalf("error %v, want a MySQL error", err)
	}
	return me
}

// digest is the sha256 of an installed program's executable.
func digest(tb testing.TB, program string) string {
	tb.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		tb.Fatalf("%s is not installed (apt-get install mariadb-client): %v", program, err)
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// quote quotes s as an SQL string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// capture is a connection that keeps every byte it reads: what a client
// receives.
type capture struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c capture) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}
