package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // to cut a log short as an intruder would

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/audit/fleet"
	"github.com/credbroker/credbroker/internal/pgtest"
)

// fleetStore is a throwaway PostgreSQL with the fleet schema, made by
// `credbroker audit fleet-init` as its owner, a forwarding role granted
// INSERT only and a reader role granted SELECT only, as
// docs/audit-fleet.md says.
type fleetStore struct {
	srv     *pgtest.Server
	forward string // DSN file of the forwarding role
	reader  string // DSN file of the reader role
}

func newFleetStore(t *testing.T) *fleetStore {
	t.Helper()
	srv := pgtest.Start(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	owner := write("owner.dsn", srv.AdminDSN())
	out, errOut, code := credbroker(t, "audit", "fleet-init", "--dsn-file", owner)
	if code != 0 || !strings.Contains(out, "fleet schema version 1 ready") {
		t.Fatalf("fleet-init: exit %d: %s %s", code, out, errOut)
	}
	if _, _, code := credbroker(t, "audit", "fleet-init", "--dsn-file", owner); code != 0 {
		t.Fatalf("second fleet-init: exit %d", code)
	}
	srv.Exec(t, `CREATE ROLE credbroker_forward LOGIN PASSWORD 'fwd-pw'`)
	srv.Exec(t, `GRANT INSERT ON audit_installs, audit_rows, audit_checkpoints, audit_anchors TO credbroker_forward`)
	srv.Exec(t, `CREATE ROLE credbroker_audit LOGIN PASSWORD 'audit-pw'`)
	srv.Exec(t, `GRANT SELECT ON audit_schema, audit_installs, audit_rows, audit_checkpoints, audit_anchors TO credbroker_audit`)
	return &fleetStore{
		srv:     srv,
		forward: write("forward.dsn", srv.DSN("credbroker_forward", "fwd-pw", "postgres")),
		reader:  write("reader.dsn", srv.DSN("credbroker_audit", "audit-pw", "postgres")),
	}
}

// broker returns a broker environment forwarding to the store as host.
func (fs *fleetStore) broker(t *testing.T, host string) *env {
	t.Helper()
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	forward := fmt.Sprintf(", forward: {postgres: {dsn_file: %s, host: %s, batch_size: 20, poll_interval: 50ms, max_backoff: 300ms}}}", fs.forward, host)
	text := strings.Replace(string(cfg), "interval: 1s}}", "interval: 1s}"+forward, 1)
	if text == string(cfg) {
		t.Fatal("the harness's audit section changed: cannot add forward")
	}
	e.write("credbroker.yaml", text)
	return e
}

// count runs a count query as the superuser.
func (fs *fleetStore) count(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	conn := fs.srv.Conn(t)
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// logState reads a broker's log: its install id and newest seq.
func logState(t *testing.T, db string) (string, int64) {
	t.Helper()
	f, err := audit.OpenFeed(db)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return fleet.InstallID(st.PublicKey), st.HeadSeq
}

// waitCaughtUp waits until the store holds every row of an idle broker's
// log: its newest row, and as many rows as the log.
func (fs *fleetStore) waitCaughtUp(t *testing.T, e *env) string {
	t.Helper()
	install, head := logState(t, e.db)
	deadline := time.Now().Add(hangBound)
	for {
		n := fs.count(t, "SELECT count(*) FROM audit_rows WHERE install_id = $1", install)
		if _, now := logState(t, e.db); now == head && n == head {
			return install
		} else {
			head = now
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store holds %d rows of %s, the log %d, after %v", n, install, head, hangBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// installHostJSON matches what a fleet store adds to a JSON line.
var installHostJSON = regexp.MustCompile(`,"install":"[0-9a-f]{64}","host":"[^"]*"`)

// sameOutput runs audit query on the log and on the store for one install,
// in each format, and compares the bytes (less install and host in JSON).
// The broker may still be writing (a signed head, a lease's end): outputs
// that differ while the log grew or the store was behind it are asked
// again once the store has caught up; outputs that differ with both still
// are a failure.
func (fs *fleetStore) sameOutput(t *testing.T, e *env, install string, extra ...string) {
	t.Helper()
	for _, format := range []string{"json", "table", "csv"} {
		args := append([]string{"audit", "query", "--format", format}, extra...)
		var local, stored string
		for {
			_, before := logState(t, e.db)
			var errOut string
			var code int
			local, errOut, code = credbroker(t, append(args, "--db", e.db)...)
			if code != 0 {
				t.Fatalf("audit query --db: exit %d: %s", code, errOut)
			}
			// Counted before the store's query, so that a count that
			// matches the log proves the query saw every row (rows are
			// only added): counted after, it could include a row that
			// arrived while the query ran.
			n := fs.count(t, "SELECT count(*) FROM audit_rows WHERE install_id = $1", install)
			stored, errOut, code = credbroker(t, append(args, "--dsn-file", fs.reader, "--install", install)...)
			if code != 0 {
				t.Fatalf("audit query --fleet: exit %d: %s", code, errOut)
			}
			switch format {
			case "json":
				if n := len(installHostJSON.FindAllString(stored, -1)); n != strings.Count(stored, "\n") {
					t.Errorf("%d of %d JSON lines name the install and host", n, strings.Count(stored, "\n"))
				}
				stored = installHostJSON.ReplaceAllString(stored, "")
			case "csv": // install and host are the last columns, empty for a log
				stored = strings.ReplaceAll(stored, ","+install+","+hostOf(t, stored)+"\n", ",,\n")
			}
			_, after := logState(t, e.db)
			if local == stored || before == after && n == after {
				break
			}
			t.Logf("audit query %v --format %s: the log moved (seq %d to %d, %d rows in the store): asking again once the store has caught up", extra, format, before, after, n)
			fs.waitCaughtUp(t, e)
		}
		if local != stored {
			t.Errorf("audit query %v --format %s: the store's output differs from the log's: %s", extra, format, firstDifference(local, stored))
		}
		if strings.Count(local, "\n") < 2 {
			t.Errorf("audit query %v --format %s: only %q", extra, format, local)
		}
	}
}

// hostOf returns the host named in the second CSV line's last column.
func hostOf(t *testing.T, csv string) string {
	t.Helper()
	lines := strings.SplitN(csv, "\n", 3)
	if len(lines) < 2 {
		return ""
	}
	return lines[1][strings.LastIndex(lines[1], ",")+1:]
}

// okLines counts the installs audit verify --fleet reports as ok.
func okLines(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "install ") && strings.Contains(l, "): ok: ") {
			n++
		}
	}
	return n
}

// head returns the first lines of s, for messages.
// firstDifference describes where two outputs part: the line number and
// the two lines, or which one has more lines.
func firstDifference(local, stored string) string {
	a, b := strings.Split(local, "\n"), strings.Split(stored, "\n")
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("line %d of %d and %d:\n--db:    %s\n--fleet: %s", i+1, len(a), len(b), a[i], b[i])
		}
	}
	return fmt.Sprintf("--db has %d lines, --fleet %d", len(a), len(b))
}

// load makes n requests for demo on each socket at once, expecting every
// one to succeed; it returns when all have.
func load(t *testing.T, n int, sockets ...string) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, s := range sockets {
		c := socketClient(s)
		for range 4 {
			wg.Go(func() {
				for range n / 4 {
					if _, ok := tryGet(context.Background(), c); !ok {
						failed.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d requests failed", f)
	}
}

// TestFleetForwarding runs two brokers forwarding to one store at once,
// SIGKILLs one while its forwarder is behind and restarts it: the store
// then holds every row of each log exactly once, audit query --fleet
// --install prints what audit query --db prints, and audit verify --fleet
// passes for both.
func TestFleetForwarding(t *testing.T) {
	fs := newFleetStore(t)
	e1, e2 := fs.broker(t, "host-1"), fs.broker(t, "host-2")
	b1, b2 := e1.start(), e2.start()

	// Both under load; b1 killed once its store copy is part-way.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range []string{e1.socket, e2.socket} {
		c := socketClient(s)
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					tryGet(ctx, c)
				}
			})
		}
	}
	install1, _ := logState(t, e1.db)
	deadline := time.Now().Add(hangBound)
	for {
		// The store counted before the log's head is read: rows only
		// grow, so n < headSeq means the forwarder was behind the log.
		// Read the other way round, a forwarder that keeps up under
		// load shows more stored rows than the head read just before.
		n := fs.count(t, "SELECT count(*) FROM audit_rows WHERE install_id = $1", install1)
		_, headSeq := logState(t, e1.db)
		if n >= 100 && n < headSeq {
			t.Logf("SIGKILL with %d of %d rows in the store", n, headSeq)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store held %d of %d rows after %v", n, headSeq, hangBound)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := b1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b1.done
	cancel()
	wg.Wait()
	b1 = e1.start()
	load(t, 40, e1.socket, e2.socket)

	for _, c := range []struct {
		e    *env
		host string
	}{{e1, "host-1"}, {e2, "host-2"}} {
		install := fs.waitCaughtUp(t, c.e)
		if n := fs.count(t, "SELECT count(DISTINCT host) FROM audit_rows WHERE install_id = $1 AND host = $2", install, c.host); n != 1 {
			t.Errorf("%s: rows not marked with its host", c.host)
		}
		fs.sameOutput(t, c.e, install, "--kind", "all")
		fs.sameOutput(t, c.e, install)
		fs.sameOutput(t, c.e, install, "--workload", "unix:uid:*", "--decision", "allow", "--limit", "25")
	}
	out, errOut, code := credbroker(t, "audit", "verify", "--dsn-file", fs.reader)
	if code != 0 || okLines(out) != 2 {
		t.Fatalf("audit verify --fleet: exit %d:\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, install1+" (host host-1): ok") {
		t.Errorf("audit verify --fleet does not report %s:\n%s", install1, out)
	}
	if !strings.Contains(b1.logs.String(), "audit forwarding to the fleet store") {
		t.Errorf("no forwarding start logged:\n%s", b1.logs)
	}
	b1.stop(syscall.SIGTERM)
	b2.stop(syscall.SIGTERM)
}

// TestFleetStoreOutage stops PostgreSQL under a broker: every request made
// meanwhile succeeds, and once PostgreSQL is back the forwarder catches up.
func TestFleetStoreOutage(t *testing.T) {
	fs := newFleetStore(t)
	e := fs.broker(t, "host-1")
	b := e.start()
	load(t, 20, e.socket)
	fs.waitCaughtUp(t, e)

	fs.srv.Stop(t)
	load(t, 200, e.socket) // fails the test if one request does not succeed
	b.waitLog("audit forwarding to the fleet store failed")
	_, behind := logState(t, e.db)
	fs.srv.Restart(t)
	install := fs.waitCaughtUp(t, e)
	if n := fs.count(t, "SELECT count(*) FROM audit_rows WHERE install_id = $1", install); n < behind {
		t.Errorf("the store holds %d rows, the log held %d at the restart", n, behind)
	}
	b.waitLog("audit forwarding resumed")
	fs.sameOutput(t, e, install, "--kind", "all")
	if out, errOut, code := credbroker(t, "audit", "verify", "--dsn-file", fs.reader, "--install", install); code != 0 {
		t.Fatalf("audit verify --fleet: exit %d:\n%s%s", code, out, errOut)
	}
	b.stop(syscall.SIGTERM)
}

// TestFleetTruncation cuts a forwarded log short as an intruder would —
// the newest rows deleted, with the head file and the log's record of its
// signed head, so that the broker starts without a word — and restarts its
// broker, which signs its new head: audit verify --fleet reports the
// truncation for that install, and the other install still verifies.
func TestFleetTruncation(t *testing.T) {
	fs := newFleetStore(t)
	e1, e2 := fs.broker(t, "host-1"), fs.broker(t, "host-2")
	b1, b2 := e1.start(), e2.start()
	load(t, 80, e1.socket, e2.socket)
	install := fs.waitCaughtUp(t, e1)
	fs.waitCaughtUp(t, e2)
	b1.stop(syscall.SIGTERM)
	_, oldHead := logState(t, e1.db)

	db, err := sql.Open("sqlite", e1.db)
	if err != nil {
		t.Fatal(err)
	}
	cut := oldHead / 2
	for _, q := range []string{"DELETE FROM decisions WHERE seq > ?", "DELETE FROM meta WHERE key = 'signed_seq' AND ? > 0"} {
		if _, err := db.Exec(q, cut); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	if err := os.Remove(e1.db + ".head"); err != nil {
		t.Fatal(err)
	}
	b1 = e1.start()
	load(t, 8, e1.socket)
	// The restarted broker signs its new head within a second: wait for a
	// checkpoint the stored rows contradict.
	deadline := time.Now().Add(hangBound)
	for fs.count(t, `SELECT count(*) FROM audit_checkpoints c JOIN audit_rows r ON r.install_id = c.install_id AND r.seq = c.seq
		WHERE c.install_id = $1 AND r.hash <> c.hash`, install) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of the rewritten log reached the store after %v:\n%s", hangBound, b1.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, errOut, code := credbroker(t, "audit", "verify", "--dsn-file", fs.reader)
	if code != 1 || !strings.Contains(errOut, "1 of 2 installs FAILED") {
		t.Errorf("audit verify --fleet: exit %d, stderr %s", code, errOut)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "install "+install) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "FAILED") || !strings.Contains(lines[0], "cut short or rewritten") {
		t.Errorf("audit verify --fleet does not report the truncation of %s:\n%s", install, out)
	}
	if okLines(out) != 1 {
		t.Errorf("the other install should verify:\n%s", out)
	}
	if _, _, code := credbroker(t, "audit", "verify", "--dsn-file", fs.reader, "--install", install); code != 1 {
		t.Errorf("audit verify --fleet --install %s: exit %d, want 1", install, code)
	}
	if !strings.Contains(b1.logs.String(), "no longer holds the rows forwarded") {
		t.Errorf("the forwarder did not notice the rewind:\n%s", b1.logs)
	}
	b1.stop(syscall.SIGTERM)
	b2.stop(syscall.SIGTERM)
}

// TestFleetConfig checks the forward section: its keys are strict, its
// values validated by check, its paths relative to the file; and the
// audit commands' fleet flags refuse what does not go together.
func TestFleetConfig(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	base, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		forward string
		want    []string
	}{
		{"{postgres: {dsn_file: fleet.dsn, bogus: 1}}", []string{`unknown key "bogus"`}},
		{"{postgres: {host: h}}", []string{"audit.forward.postgres: dsn_file is required"}},
		{"{postgres: {dsn_file: fleet.dsn, batch_size: 99999}}", []string{"batch_size 99999: want 1 to 5000"}},
		{"{postgres: {dsn_file: fleet.dsn, poll_interval: soon}}", []string{`invalid duration "soon"`}},
		{"{kafka: {}}", []string{`unknown key "kafka"`}},
	} {
		e.write("credbroker.yaml", strings.Replace(string(base), "interval: 1s}}", "interval: 1s}, forward: "+c.forward+"}", 1))
		out, errOut, code := credbroker(t, "check", "--config", e.config)
		for _, w := range c.want {
			if code != 1 || !strings.Contains(out+errOut, w) {
				t.Errorf("forward: %s: exit %d, want %q in:\n%s%s", c.forward, code, w, out, errOut)
			}
		}
	}
	e.write("credbroker.yaml", strings.Replace(string(base), "interval: 1s}}", "interval: 1s}, forward: {postgres: {dsn_file: fleet.dsn, poll_interval: 2s}}}", 1))
	if out, errOut, code := credbroker(t, "check", "--config", e.config); code != 0 {
		t.Errorf("a valid forward section: exit %d:\n%s%s", code, out, errOut)
	}

	dsn := e.write("fleet.dsn", "postgres://u:p@127.0.0.1:1/fleet")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "query", "--install", "ab"}, "--install: and --host select rows of a fleet store"},
		{[]string{"audit", "query", "--fleet", "x", "--dsn-file", dsn}, "--fleet: and --dsn-file both name the store"},
		{[]string{"audit", "query", "--fleet", "x", "--db", e.db}, "--fleet: reads the fleet store, --db one log"},
		{[]string{"audit", "verify", "--install", "ab"}, "--install: verifies one install of a fleet store"},
		{[]string{"audit", "verify", "--dsn-file", dsn, "--checkpoint", "c.json"}, "leave out --checkpoint"},
		{[]string{"audit", "fleet-init"}, "--fleet: or --dsn-file is required"},
	} {
		_, errOut, code := credbroker(t, c.args...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, want %d and %q in:\n%s", c.args, code, exitUsage, c.want, errOut)
		}
	}
	_, errOut, code := credbroker(t, "audit", "query", "--dsn-file", dsn)
	if code != 1 || !strings.Contains(errOut, "connecting to the fleet store") || strings.Contains(errOut, "u:p@") {
		t.Errorf("audit query against no store: exit %d: %s", code, errOut)
	}
}
