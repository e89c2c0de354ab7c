package postgres_test

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/postgres"
	"github.com/credbroker/credbroker/internal/pgtest"
)

// TestClientsSCRAMOverTLS: psql, pgbench and pgx connect through a Unix
// listener with no password, and the broker logs in as app over verified
// TLS with SCRAM-SHA-256-PLUS (pg_hba.conf rejects app without TLS). The
// password is in no output and no log line.
func TestClientsSCRAMOverTLS(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "unix", credApp, nil)

	out, errOut, err := s.psql(t, "someone", "appdb", "-c", `SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`)
	if err != nil || strings.TrimSpace(out) != "app|t" {
		t.Fatalf("psql: %q %q %v\n%s", out, errOut, err, h.logs)
	}
	h.noCanary(t, "psql's output", out+errOut)

	pgbench := func(args ...string) {
		t.Helper()
		out, errOut, err := run(t, "pgbench", append([]string{"-h", s.host, "-p", strconv.Itoa(s.port), "-U", "someone"}, append(args, "appdb")...)...)
		if err != nil {
			t.Fatalf("pgbench %v: %v\n%s\n%s", args, err, out, errOut)
		}
		h.noCanary(t, "pgbench's output", out+errOut)
		if !strings.Contains(out, "number of failed transactions: 0") && !strings.Contains(errOut, "done in") {
			t.Errorf("pgbench %v: %s\n%s", args, out, errOut)
		}
	}
	pgbench("-i", "-q")
	pgbench("-t", "20", "-c", "2")
	pgbench("-S", "-C", "-t", "20")

	conn := s.mustConnect(t, "someone", "appdb")
	var user string
	var accounts int
	if err := conn.QueryRow(context.Background(), `SELECT current_user, (SELECT count(*) FROM pgbench_accounts)`).Scan(&user, &accounts); err != nil || user != "app" || accounts != 100000 {
		t.Fatalf("pgx: user %q, %d accounts, %v", user, accounts, err)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "method=SCRAM-SHA-256-PLUS") {
		t.Errorf("no login with SCRAM-SHA-256-PLUS logged:\n%s", logs)
	}
	h.noCanary(t, "the broker's log", logs)

	// Every session was one decision, recorded with what the client asked
	// for and who the broker logged in as.
	rows := h.rows(t, audit.Filter{Credential: credApp, Decision: audit.DecisionAllow})
	if len(rows) < 25 {
		t.Fatalf("%d allow rows, want one per session", len(rows))
	}
	for _, r := range rows {
		if r.Channel != broker.ChannelPostgres || r.Database != "appdb" || r.UpstreamUser != "app" || r.TargetHost != s.cfg.Upstream || r.Attestor != "unix" {
			t.Fatalf("row %+v", r)
		}
	}
}

// TestMD5OverTCP: a TCP loopback listener (attested by ListenTCP) logs in
// as legacy, whose password the server checks with md5, without TLS.
func TestMD5OverTCP(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "tcp", credLegacy, func(c *postgres.Config) { c.TLS = postgres.TLSConfig{Mode: postgres.ModeDisable} })
	out, errOut, err := s.psql(t, "legacy", "postgres", "-c", `SELECT current_user, (SELECT count(*) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl)`)
	if err != nil || strings.TrimSpace(out) != "legacy|0" {
		t.Fatalf("psql: %q %q %v\n%s", out, errOut, err, h.logs)
	}
	conn := s.mustConnect(t, "legacy", "postgres")
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT 1`).Scan(&n); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if !strings.Contains(h.logs.String(), "method=md5") {
		t.Errorf("no md5 login logged:\n%s", h.logs)
	}
	if rows := h.rows(t, audit.Filter{Credential: credLegacy}); len(rows) != 2 || rows[0].Attestor != "unix" || rows[0].Decision != audit.DecisionAllow {
		t.Errorf("rows %+v", rows)
	}
}

// TestCleartextOnlyOverTLS: a server asking for a cleartext password gets
// it over TLS; without TLS the broker refuses before sending it, and says
// why.
func TestCleartextOnlyOverTLS(t *testing.T) {
	h := newHarness(t)
	tlsListener := h.listen(t, "unix", credClear, func(c *postgres.Config) { c.TLS.Mode = postgres.ModeRequire; c.TLS.CAFile = "" })
	if out, errOut, err := tlsListener.psql(t, "clear", "postgres", "-c", "SELECT current_user"); err != nil || strings.TrimSpace(out) != "clear" {
		t.Fatalf("cleartext over TLS: %q %q %v\n%s", out, errOut, err, h.logs)
	}
	plain := h.listen(t, "unix", credClear, func(c *postgres.Config) { c.TLS = postgres.TLSConfig{Mode: postgres.ModeDisable} })
	out, errOut, err := plain.psql(t, "clear", "postgres", "-c", "SELECT current_user")
	if err == nil || !strings.Contains(errOut, "cleartext on a connection without TLS") || !strings.Contains(errOut, "credbroker decision ") {
		t.Fatalf("cleartext without TLS: %q %q %v", out, errOut, err)
	}
	if strings.Contains(errOut+h.logs.String(), "clear-pw") {
		t.Error("the cleartext password was shown or logged")
	}
}

// TestUpstreamTLSModes: require encrypts without verifying, verify-ca
// checks the chain and not the name, verify-full both.
func TestUpstreamTLSModes(t *testing.T) {
	h := newHarness(t)
	_, otherCA := pgtest.NewTLS(t, "127.0.0.1") // a CA that signed nothing the server presents
	for _, tt := range []struct {
		name    string
		tls     postgres.TLSConfig
		wantErr string // in the client's error; "" for a login
	}{
		{"verify-full", postgres.TLSConfig{Mode: postgres.ModeVerifyFull, CAFile: h.caFile}, ""},
		{"verify-full wrong name", postgres.TLSConfig{Mode: postgres.ModeVerifyFull, CAFile: h.caFile, ServerName: "db.example"}, "wanted to match db.example"},
		{"verify-full system roots", postgres.TLSConfig{Mode: postgres.ModeVerifyFull}, "certificate signed by unknown authority"},
		{"verify-ca wrong name", postgres.TLSConfig{Mode: postgres.ModeVerifyCA, CAFile: h.caFile, ServerName: "db.example"}, ""},
		{"verify-ca other CA", postgres.TLSConfig{Mode: postgres.ModeVerifyCA, CAFile: write(t, t.TempDir(), "other.pem", string(otherCA))}, "certificate signed by unknown authority"},
		{"require", postgres.TLSConfig{Mode: postgres.ModeRequire}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := h.listen(t, "unix", credApp, func(c *postgres.Config) { c.TLS = tt.tls })
			conn, err := s.connect(t, "someone", "appdb")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				var ssl bool
				if err := conn.QueryRow(context.Background(), `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
					t.Fatalf("ssl %v, %v", ssl, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || sqlState(err) != "08006" {
				t.Fatalf("error %v, want %q under 08006", err, tt.wantErr)
			}
		})
	}
}

// TestDynamicRole: providers/postgres issues a role for the session
// through the lease manager; the client logs in through the listener as
// that role, and once the session has ended and the lease (3s by policy)
// expired, the role is gone.
func TestDynamicRole(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "unix", credDynamic, nil)
	conn := s.mustConnect(t, "someone", "postgres")
	ctx := context.Background()
	var role string
	var id int
	if err := conn.QueryRow(ctx, `SELECT current_user, (SELECT id FROM orders)`).Scan(&role, &id); err != nil || !strings.HasPrefix(role, "dyn_unix_uid_") || id != 42 {
		t.Fatalf("role %q read %d, %v", role, id, err)
	}
	if _, err := conn.Exec(ctx, `CREATE ROLE escalate`); sqlState(err) != "42501" {
		t.Errorf("the issued role created a role: %v", err)
	}
	rows := h.rows(t, audit.Filter{Credential: credDynamic, Decision: audit.DecisionAllow})
	if len(rows) != 1 || rows[0].UpstreamUser != role || rows[0].LeaseID != "postgres:"+role {
		t.Fatalf("rows %+v", rows)
	}
	conn.Close(ctx)

	deadline := time.Now().Add(hangBound)
	for h.roleExists(t, role) {
		if time.Now().After(deadline) {
			t.Fatalf("role %s still exists after %v:\n%s", role, hangBound, h.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := s.connect(t, "someone", "postgres"); err != nil {
		t.Fatalf("a new session after the revocation: %v", err)
	}
	h.noCanary(t, "the broker's log", h.logs.String())
}

// TestCancel: a client's cancel request reaches its own backend through
// the listener, and only that one: of two sessions, the one whose context
// is cancelled returns 57014 (query_canceled) from pg_sleep(60), while the
// other, waiting on an advisory lock the test holds, is still waiting and
// then finishes.
func TestCancel(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "unix", credApp, nil)
	a, b := s.mustConnect(t, "someone", "appdb"), s.mustConnect(t, "someone", "appdb")
	bg := context.Background()
	// Advisory locks belong to a database: the test holds it in appdb.
	locker, err := pgx.Connect(bg, h.pg.DSN(h.pg.SuperUser, h.pg.SuperPassword, "appdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(bg)
	if _, err := locker.Exec(bg, `SELECT pg_advisory_lock(7)`); err != nil {
		t.Fatal(err)
	}
	bDone := make(chan error, 1)
	go func() {
		_, err := b.Exec(bg, `SELECT pg_advisory_lock(7)`)
		bDone <- err
	}()
	ctx, cancel := context.WithCancel(bg)
	aDone := make(chan error, 1)
	go func() {
		_, err := a.Exec(ctx, `SELECT pg_sleep(60)`)
		aDone <- err
	}()
	waitActive(t, h, a.PgConn().PID(), "pg_sleep")
	waitActive(t, h, b.PgConn().PID(), "pg_advisory_lock")
	cancel()
	select {
	case err := <-aDone:
		if sqlState(err) != "57014" {
			t.Fatalf("the cancelled query returned %v, want SQLSTATE 57014", err)
		}
	case <-time.After(hangBound):
		t.Fatal("the cancelled query did not return")
	}
	if !strings.Contains(h.logs.String(), "postgres: cancel request passed on") {
		t.Errorf("the listener did not log passing the cancel request on:\n%s", h.logs)
	}
	var state string
	if err := h.admin.QueryRow(bg, `SELECT state FROM pg_stat_activity WHERE pid = $1`, b.PgConn().PID()).Scan(&state); err != nil || state != "active" {
		t.Fatalf("the other session is %q (%v): it was cancelled too", state, err)
	}
	select {
	case err := <-bDone:
		t.Fatalf("the other session returned while the lock is held: %v", err)
	default:
	}
	if _, err := locker.Exec(bg, `SELECT pg_advisory_unlock(7)`); err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatalf("the other session: %v", err)
	}
	var n int
	if err := a.QueryRow(bg, `SELECT 1`).Scan(&n); err != nil {
		t.Fatalf("the cancelled session is unusable afterwards: %v", err)
	}
}

// waitActive waits until the backend pid runs a query containing what.
func waitActive(t *testing.T, h *harness, pid uint32, what string) {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for {
		var n int
		if err := h.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%' || $2 || '%'`, int64(pid), what).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d never ran %s", pid, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDenied: a policy denying the database gets psql a readable FATAL
// naming the policy and the decision, recorded as a deny on channel
// postgres with the database asked for.
func TestDenied(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "unix", credApp, nil)
	out, errOut, err := s.psql(t, "someone", "forbidden", "-c", "SELECT 1")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(errOut, "FATAL:  credbroker: denied by policy no-forbidden-db") {
		t.Fatalf("psql: %q %q %v", out, errOut, err)
	}
	rows := h.rows(t, audit.Filter{Decision: audit.DecisionDeny})
	if len(rows) != 1 {
		t.Fatalf("%d deny rows", len(rows))
	}
	r := rows[0]
	if r.Channel != broker.ChannelPostgres || r.Database != "forbidden" || r.Policy != "no-forbidden-db" || r.UpstreamUser != "" || !strings.Contains(errOut, "credbroker decision "+r.DecisionID) {
		t.Fatalf("row %+v, psql said %q", r, errOut)
	}
	if h.roleConnections(t, "app") != 0 {
		t.Error("a denied session reached the server")
	}
}

// roleConnections counts the role's sessions on the server.
func (h *harness) roleConnections(t *testing.T, role string) int {
	t.Helper()
	var n int
	if err := h.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, role).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUpstreamRefusal: the server refusing the broker's login (a wrong
// password in the credential, an unknown database) reaches the client
// under the server's SQLSTATE with a readable message, the password never.
func TestUpstreamRefusal(t *testing.T) {
	h := newHarness(t)
	wrong := h.listen(t, "unix", credWrongPW, nil)
	_, err := wrong.connect(t, "someone", "appdb")
	if sqlState(err) != "28P01" || !strings.Contains(err.Error(), `password authentication failed for user "app"`) {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), "not-the-password") || strings.Contains(h.logs.String(), "not-the-password") {
		t.Error("the wrong password was shown or logged")
	}
	s := h.listen(t, "unix", credApp, nil)
	if _, err := s.connect(t, "someone", "nodb"); sqlState(err) != "3D000" || !strings.Contains(err.Error(), `database "nodb" does not exist`) {
		t.Fatalf("unknown database: %v", err)
	}
}

// TestDrain: at shutdown a session in progress may go on for the drain
// timeout; one still open then is cut, Run says so, and the client's
// connection ends. A listener with no session left stops cleanly.
func TestDrain(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "unix", credApp, func(c *postgres.Config) { c.DrainTimeout = broker.DrainTimeout(200 * time.Millisecond) })
	conn := s.mustConnect(t, "someone", "appdb")
	err := s.stop()
	if err == nil || !strings.Contains(err.Error(), "1 sessions still open after the drain timeout") {
		t.Fatalf("Run: %v", err)
	}
	if _, err := conn.Exec(context.Background(), "SELECT 1"); err == nil {
		t.Fatal("the cut session still answers")
	}
	// The upstream session ends with it.
	deadline := time.Now().Add(hangBound)
	for h.roleConnections(t, "app") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the upstream session outlives the cut")
		}
		time.Sleep(10 * time.Millisecond)
	}
	idle := h.listen(t, "unix", credApp, nil)
	c := idle.mustConnect(t, "someone", "appdb")
	c.Close(context.Background())
	if err := idle.stop(); err != nil {
		t.Fatalf("Run after its last session ended: %v", err)
	}
	// Run joins every session, relay and cancel it started.
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "inject/postgres.(*") {
		t.Errorf("goroutines of the listener outlive Run:\n%s", stacks)
	}
}

// TestSessionHoldsLease: the listener holds its grant for the session
// (Grant.Release at its end), so the lease manager revokes a role that
// sessions alone used as soon as the last of them ends once a newer role
// is cached, long before its hour is up; the cached role stays for the
// workload's next session. The manager's clock is advanced past the
// refresh point (half the lifetime) instead of waiting for it.
func TestSessionHoldsLease(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "unix", credHeld, nil)
	ctx := context.Background()
	user := func(c interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) string {
		t.Helper()
		var u string
		if err := c.QueryRow(ctx, "SELECT current_user").Scan(&u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	a := s.mustConnect(t, "someone", "postgres")
	first := user(a)
	h.clock.Advance(31 * time.Minute)
	// This session still gets the first role, and starts its refresh.
	b := s.mustConnect(t, "someone", "postgres")
	if got := user(b); got != first {
		t.Fatalf("the session at the refresh point got %s, want the cached %s", got, first)
	}
	// Wait for the refreshed role to be issued.
	deadline := time.Now().Add(hangBound)
	for len(h.rows(t, audit.Filter{Credential: credHeld, Kind: audit.KindLease})) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no second issue:\n%s", h.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := s.mustConnect(t, "someone", "postgres")
	second := user(c)
	if second == first {
		t.Fatal("no new role after the refresh")
	}
	a.Close(ctx)
	if !h.roleExists(t, first) {
		t.Fatal("the first role was dropped while a session still used it")
	}
	b.Close(ctx)
	for h.roleExists(t, first) {
		if time.Now().After(deadline) {
			t.Fatalf("the first role outlives its last session:\n%s", h.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close(ctx)
	if !h.roleExists(t, second) {
		t.Fatal("the cached role was dropped when its session ended")
	}
	if d := s.mustConnect(t, "someone", "postgres"); user(d) != second {
		t.Fatal("the next session did not reuse the cached role")
	}
}
