package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/pgtest"
)

// waitBound bounds each wait for an event (rows in the store, a log line);
// tests wait for the event itself, and a loaded machine is slow rather
// than failing.
const waitBound = 2 * time.Minute

// fleetDB is a throwaway PostgreSQL holding the fleet schema.
type fleetDB struct {
	srv     *pgtest.Server
	dsn     string // the superuser's
	dsnFile string // a file holding dsn
}

// newFleetDB starts PostgreSQL and creates the fleet schema with Init.
func newFleetDB(t *testing.T) *fleetDB {
	t.Helper()
	srv := pgtest.Start(t)
	db := &fleetDB{srv: srv, dsn: srv.AdminDSN()}
	db.dsnFile = writeFile(t, "fleet.dsn", db.dsn+"\n")
	if err := Init(context.Background(), db.dsn); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return db
}

// open opens the store as the superuser.
func (db *fleetDB) open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), db.dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// count returns a count(*) query's result.
func (db *fleetDB) count(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	conn := db.srv.Conn(t)
	var n int64
	if err := conn.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	conn.Close(context.Background())
	return n
}

// waitFor waits until cond holds, checking every few milliseconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitBound, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitForwarded waits until the store holds the log's rows up to its head.
func (db *fleetDB) waitForwarded(t *testing.T, path string) {
	t.Helper()
	st := feedState(t, path)
	install := InstallID(st.PublicKey)
	conn := db.srv.Conn(t)
	waitFor(t, fmt.Sprintf("row %d of %s in the store", st.HeadSeq, path), func() bool {
		var n int64
		err := conn.QueryRow(context.Background(), "SELECT count(*) FROM audit_rows WHERE install_id = $1 AND seq = $2", install, st.HeadSeq).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
}

// feedState reads a log's state.
func feedState(t *testing.T, path string) *audit.FeedState {
	t.Helper()
	f, err := audit.OpenFeed(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// writeFile writes a file into a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// localLog is an audit log running for one test.
type localLog struct {
	*audit.Log
	path   string
	cancel context.CancelFunc
	done   chan error
}

// startLog opens and runs an audit log at path (a fresh one when "").
func startLog(t *testing.T, path string, cfg audit.Config) *localLog {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "audit.db")
	}
	cfg.Path = path
	if cfg.Logger == nil {
		cfg.Logger = (&logtest.Buffer{}).Logger()
	}
	l, err := audit.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("audit.Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ll := &localLog{Log: l, path: path, cancel: cancel, done: make(chan error, 1)}
	go func() { ll.done <- l.Run(ctx) }()
	t.Cleanup(func() { ll.stop(t) })
	return ll
}

// stop ends the log's writer and closes it; it may be called twice.
func (ll *localLog) stop(t *testing.T) {
	t.Helper()
	if ll.done == nil {
		return
	}
	ll.cancel()
	if err := <-ll.done; err != nil {
		t.Errorf("audit Run: %v", err)
	}
	ll.done = nil
	if err := ll.Close(); err != nil {
		t.Errorf("audit Close: %v", err)
	}
}

// record returns a varied decision record.
func record(i int, at time.Time) *audit.Record {
	subjects := []string{"unix:uid:1000", "unix:uid:1001", "system:serviceaccount:payments:api",
		"system:serviceaccount:payments:worker", "spiffe://example.org/ns/shop/sa/web", "repo:acme/app:ref:refs/heads/main"}
	creds := []string{"demo", "orders-db", "stripe-live"}
	decisions := []string{audit.DecisionAllow, audit.DecisionAllow, audit.DecisionDeny, audit.DecisionError}
	r := &audit.Record{
		Time:          at,
		DecisionID:    fmt.Sprintf("%032x", i+1),
		Decision:      decisions[i%len(decisions)],
		Reason:        fmt.Sprintf("reason %d", i),
		Policy:        []string{"payments", "ops", ""}[i%3],
		PolicyVersion: "sha256:abc",
		Attestor:      "unix",
		Subject:       subjects[i%len(subjects)],
		Claims:        map[string]any{"uid": json.Number(fmt.Sprint(1000 + i%7)), "exe": "/usr/bin/app", "big": json.Number("12345678901234567890")},
		PeerPID:       int64(4000 + i),
		PeerUID:       int64(1000 + i%7),
		Credential:    creds[i%len(creds)],
		Provider:      "static",
		Channel:       []string{"socket", "postgres", "http"}[i%3],
		TargetHost:    "db.internal",
		Method:        "GET",
		Path:          "/v1/credentials/x",
		Latency:       time.Duration(i) * time.Microsecond,
		Input:         json.RawMessage(fmt.Sprintf(`{"request":{"n":%d,"s":"x\u00e9"}}`, i)),
	}
	if r.Channel == "postgres" {
		r.Database = []string{"orders", "billing"}[i%2]
		r.UpstreamUser = "app_rw"
	}
	if r.Decision == audit.DecisionAllow {
		r.LeaseID = fmt.Sprintf("lease-%d", i)
		r.ExpiresAt = at.Add(time.Hour)
		r.Fingerprint = "hmac-sha256:00"
	}
	return r
}

// appendRecords appends n records from first on, a second apart from t0.
func appendRecords(t *testing.T, l *audit.Log, first, n int, t0 time.Time) {
	t.Helper()
	for i := first; i < first+n; i++ {
		if err := l.Append(context.Background(), record(i, t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
}

// runForwarder runs a Forwarder with cfg until the test ends or the
// returned stop is called.
func runForwarder(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = (&logtest.Buffer{}).Logger()
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = Interval(20 * time.Millisecond)
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = Interval(200 * time.Millisecond)
	}
	f, err := NewForwarder(cfg)
	if err != nil {
		t.Fatalf("NewForwarder: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// query reads every record f selects.
func query(t *testing.T, r audit.Reader, f audit.Filter) []*audit.Record {
	t.Helper()
	var out []*audit.Record
	if err := r.Query(context.Background(), f, func(rec *audit.Record) error {
		out = append(out, rec)
		return nil
	}); err != nil {
		t.Fatalf("query %+v: %v", f, err)
	}
	return out
}

// sameRecords compares a single log's records with a store's, which must
// be the same but for Install and Host.
func sameRecords(t *testing.T, what string, local, fleet []*audit.Record, install, host string) {
	t.Helper()
	if len(local) != len(fleet) {
		t.Errorf("%s: %d local rows, %d in the store", what, len(local), len(fleet))
		return
	}
	for i := range local {
		f := *fleet[i]
		if f.Install != install || f.Host != host {
			t.Errorf("%s: row %d: install %q host %q, want %q %q", what, i, f.Install, f.Host, install, host)
		}
		f.Install, f.Host = "", ""
		if !reflect.DeepEqual(*local[i], f) {
			t.Errorf("%s: row %d differs:\nlocal %+v\nfleet %+v", what, i, *local[i], f)
			return
		}
	}
}

// pgConn connects as user to the server's postgres database.
func pgConn(t *testing.T, srv *pgtest.Server, user, password string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), srv.DSN(user, password, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// contains reports whether s contains sub, for messages.
func contains(s, sub string) bool { return strings.Contains(s, sub) }

// checkLeaks fails the test if goroutines it started outlive it, once
// every later cleanup (forwarders, logs, the PostgreSQL server) has run.
func checkLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitBound)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
