package mysql_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/mysql"
	"github.com/credbroker/credbroker/internal/mariadbtest"
)

// TestGoDriver runs go-sql-driver/mysql, with no password, through the
// listener on its Unix socket and on TCP loopback against a real MariaDB:
// the session is the issued user's, on the client's default database,
// with text and prepared statements, multiple result sets and large
// results and parameters; each session's grant is released when it ends,
// and each decision is recorded on channel mysql with the database and
// the upstream user.
func TestGoDriver(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t)
	h := newHarness(t, srv, "", nil)
	for _, via := range []string{"unix", "tcp"} {
		t.Run(via, func(t *testing.T) {
			c := h.config("app", "shop")
			if via == "tcp" {
				c.Net, c.Addr = "tcp", h.tcp
			}
			c.MultiStatements = true
			db := open(t, c)
			db.SetMaxOpenConns(1)
			exerciseSession(t, h, db)
			db.Close()
			h.waitReleased(t, 1)
		})
	}
	rows := h.auditRows(t)
	if len(rows) != 2 {
		t.Fatalf("%d decision rows, want 2", len(rows))
	}
	for _, r := range rows {
		if r.Decision != audit.DecisionAllow || r.Channel != "mysql" || r.Policy != "apps-use-orders-db" ||
			r.Database != "shop" || r.UpstreamUser != h.user || r.TargetHost != srv.Addr() || r.Fingerprint == "" {
			t.Errorf("row %+v", r)
		}
	}
	h.checkNoSecret(t)
}

// exerciseSession runs the session checks on one connection of db.
func exerciseSession(t *testing.T, h *harness, db *sql.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var user, database string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER(), DATABASE()").Scan(&user, &database); err != nil {
		t.Fatal(err)
	}
	if user != h.user+"@%" || database != "shop" {
		t.Errorf("session of %q on %q, want %s@%% on shop", user, database, h.user)
	}
	if _, err := db.ExecContext(ctx, "DELETE FROM orders"); err != nil {
		t.Fatal(err)
	}
	// Prepared statements (the binary protocol), with a 4 MiB parameter.
	big := bytes.Repeat([]byte("0123456789abcdef"), 256<<10)
	stmt, err := db.PrepareContext(ctx, "INSERT INTO orders (id, item, body) VALUES (?, ?, ?)")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		var body []byte
		if i == 3 {
			body = big
		}
		if _, err := stmt.ExecContext(ctx, i, fmt.Sprintf("item-%d", i), body); err != nil {
			t.Fatal(err)
		}
	}
	stmt.Close()
	var got []byte
	if err := db.QueryRowContext(ctx, "SELECT body FROM orders WHERE id = ?", 3).Scan(&got); err != nil || !bytes.Equal(got, big) {
		t.Errorf("the 4 MiB body came back with %d bytes, %v", len(got), err)
	}
	// Multiple statements, multiple result sets.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, "SELECT COUNT(*) FROM orders; SELECT item FROM orders WHERE id <= 2 ORDER BY id; SELECT 'x', 'y'")
	if err != nil {
		t.Fatal(err)
	}
	var sets [][]string
	for {
		var set []string
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				set = append(set, fmt.Sprint(v))
			}
		}
		sets = append(sets, set)
		if !rows.NextResultSet() {
			break
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if want := "[[3] [item-1 item-2] [x y]]"; fmt.Sprint(sets) != want {
		t.Errorf("result sets %v, want %s", sets, want)
	}
	// A large result: 200 000 rows.
	var n, sum int64
	rows, err = conn.QueryContext(ctx, "SELECT seq FROM seq_1_to_200000")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		n, sum = n+1, sum+v
	}
	rows.Close()
	if n != 200000 || sum != 200000*200001/2 {
		t.Errorf("%d rows summing to %d", n, sum)
	}
	// An error from the upstream reaches the client as it is.
	_, err = conn.ExecContext(ctx, "SELECT * FROM no_such_table")
	if me := mysqlError(t, err); me.Number != 1146 {
		t.Errorf("error %v, want 1146", me)
	}
	var one int
	if err := conn.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("after an error: %d, %v", one, err)
	}
}

// mariadbCLI runs the mariadb client with args and returns its output.
func mariadbCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mariadb", append([]string{"--no-defaults"}, args...)...).CombinedOutput()
	return string(out), err
}

// TestMariaDBCLI runs the mariadb command-line client with no password
// through the listener, on the socket and on TCP: a default database,
// queries, a procedure returning two result sets, and a large result.
func TestMariaDBCLI(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t)
	h := newHarness(t, srv, "", nil)
	srv.Exec(t, "CREATE PROCEDURE shop.two() BEGIN SELECT 'first'; SELECT 'second'; END")
	for _, via := range [][]string{{"--protocol=socket", "--socket=" + h.socket}, {"--protocol=tcp", "--host=127.0.0.1", "--port=" + port(h.tcp)}} {
		t.Run(via[0], func(t *testing.T) {
			args := append(via, "--user=app", "--batch", "--skip-column-names", "shop", "--execute",
				"SELECT CURRENT_USER(), DATABASE(); CALL two(); SELECT COUNT(*), SUM(LENGTH(REPEAT('x', seq))) FROM seq_1_to_5000")
			out, err := mariadbCLI(t, args...)
			if err != nil {
				t.Fatalf("mariadb: %v: %s", err, out)
			}
			want := fmt.Sprintf("%s@%%\tshop\nfirst\nsecond\n5000\t12502500\n", h.user)
			if out != want {
				t.Errorf("output %q, want %q", out, want)
			}
		})
	}
	h.waitReleased(t, 2)
	h.checkNoSecret(t)
}

// TestDenied checks refusals: mariadb-admin, denied by the digest of its
// executable (a real other process, attested by the kernel), and a client
// connecting as "intruder", whom no policy allows, each get a readable
// ERR 1045 / 28000 naming the decision, recorded as a deny on channel
// mysql; the upstream is never logged in to.
func TestDenied(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t)
	h := newHarness(t, srv, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := srv.Admin(t)
	before := connections(t, admin)
	out, err := exec.CommandContext(ctx, "mariadb-admin", "--no-defaults", "--socket="+h.socket, "--user=app", "status").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "credbroker: ") || !strings.Contains(string(out), "decision ") {
		t.Errorf("mariadb-admin: %v: %s", err, out)
	}
	err = open(t, h.config("intruder", "shop")).PingContext(ctx)
	me := mysqlError(t, err)
	if me.Number != 1045 || string(me.SQLState[:]) != "28000" || !strings.HasPrefix(me.Message, "credbroker: ") || !strings.Contains(me.Message, "(decision ") {
		t.Errorf("refusal %d %s %q", me.Number, me.SQLState[:], me.Message)
	}
	rows := h.auditRows(t)
	if len(rows) != 2 {
		t.Fatalf("%d decision rows, want 2", len(rows))
	}
	if r := rows[0]; r.Decision != audit.DecisionDeny || r.Policy != "no-admin-tool" || r.Channel != "mysql" || r.UpstreamUser != "" {
		t.Errorf("mariadb-admin's row %+v", r)
	}
	if r := rows[1]; r.Decision != audit.DecisionDeny || r.Channel != "mysql" || r.Database != "shop" || !strings.Contains(me.Message, r.DecisionID) {
		t.Errorf("intruder's row %+v for %q", r, me.Message)
	}
	if n := connections(t, admin) - before; n != 0 {
		t.Errorf("the upstream saw %d connections: a refused client reached it", n)
	}
}

// connections is the upstream's count of connection attempts, read on
// admin's pooled connection (so reading opens none).
func connections(t *testing.T, admin *sql.DB) int {
	t.Helper()
	admin.SetMaxOpenConns(1)
	var n int
	if err := admin.QueryRow("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'Connections'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNoSecretToClient captures every byte go-sql-driver receives from
// the listener — in a working session, and when the upstream refuses the
// issued credential — and looks for the issued password in them, in the
// logs and in the audit database.
func TestNoSecretToClient(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t)
	h := newHarness(t, srv, "", func(c *mysql.Config) {})
	var mu sync.Mutex
	var received bytes.Buffer
	gomysql.RegisterDialContext("capture", func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", addr)
		if err != nil {
			return nil, err
		}
		return capture{Conn: c, mu: &mu, buf: &received}, nil
	})
	c := h.config("app", "shop")
	c.Net = "capture"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := open(t, c)
	var s string
	if err := db.QueryRowContext(ctx, "SELECT CONCAT(CURRENT_USER(), ' ', @@version)").Scan(&s); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// The upstream refuses: the provider issues a password it does not know.
	h.prov.setPassword(h.canary + "-stale")
	err := open(t, c).PingContext(ctx)
	me := mysqlError(t, err)
	if me.Number != 1045 || !strings.Contains(me.Message, "the upstream refused the issued credential") {
		t.Errorf("refusal %d %q", me.Number, me.Message)
	}
	mu.Lock()
	got := received.Bytes()
	mu.Unlock()
	if len(got) == 0 {
		t.Fatal("nothing captured")
	}
	if bytes.Contains(got, []byte(h.canary)) {
		t.Error("the issued password reached the client")
	}
	h.checkNoSecret(t)
	if !strings.Contains(h.logs.String(), "upstream login failed") {
		t.Error("the failed login upstream is not logged")
	}
}

// TestPreProtocol41 checks that a client of the protocol before 4.1 is
// refused with a message saying so, and a malformed response with 1043;
// each refusal is recorded.
func TestPreProtocol41(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t)
	h := newHarness(t, srv, "", nil)
	for _, tc := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"pre-4.1", []byte{0x85, 0x24, 0x00, 0x00, 0x00, 'a', 'p', 'p', 0, 0}, "before 4.1"},
		{"truncated", []byte{0x85, 0xa6, 0x0f, 0x00, 0, 0, 0, 1, 45}, "ends early"},
		{"no user terminator", append(append([]byte{0x85, 0xa6, 0x0f, 0x00, 0, 0, 0, 1, 45}, make([]byte, 23)...), "app"...), "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.DialTimeout("unix", h.socket, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Minute))
			if _, err := readRaw(conn); err != nil {
				t.Fatal(err)
			}
			hdr := []byte{byte(len(tc.payload)), byte(len(tc.payload) >> 8), 0, 1}
			if _, err := conn.Write(append(hdr, tc.payload...)); err != nil {
				t.Fatal(err)
			}
			p, err := readRaw(conn)
			if err != nil {
				t.Fatal(err)
			}
			if len(p) < 9 || p[0] != 0xff || p[1] != 0x13 || p[2] != 0x04 || string(p[4:9]) != "08S01" || !strings.Contains(string(p[9:]), tc.want) {
				t.Errorf("answer %q, want ERR 1043 08S01 saying %q", p, tc.want)
			}
		})
	}
	// Each refused handshake is still a decision: an error row with the
	// reason, against the attested caller, whose id the answer names.
	rows := h.auditRows(t)
	if len(rows) != 3 {
		t.Fatalf("%d decision rows for 3 refused handshakes", len(rows))
	}
	for _, r := range rows {
		if r.Decision != audit.DecisionError || r.Channel != broker.ChannelMySQL || r.Subject == "" || !strings.Contains(r.Reason, "credbroker:") {
			t.Errorf("row %s on %s by %q: %q", r.Decision, r.Channel, r.Subject, r.Reason)
		}
	}
}

// readRaw reads one packet's payload.
func readRaw(c net.Conn) ([]byte, error) {
	h := make([]byte, 4)
	if _, err := io.ReadFull(c, h); err != nil {
		return nil, err
	}
	p := make([]byte, int(h[0])|int(h[1])<<8|int(h[2])<<16)
	_, err := io.ReadFull(c, p)
	return p, err
}

// port returns the port of host:port.
func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
