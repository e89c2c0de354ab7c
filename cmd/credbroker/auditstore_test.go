package main

import (
	"context"
	"database/sql"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// decide starts the broker, fetches demo n times, each of which must be
// granted, and stops it.
func (e *env) decide(n int) {
	e.t.Helper()
	b := e.start()
	c := socketClient(e.socket)
	for range n {
		if r := call(e.t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 200 {
			e.t.Fatalf("GET demo: %d %s", r.Status, r.Body)
		}
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		e.t.Fatalf("broker exit %d:\n%s", code, b.logs)
	}
}

// publicKeyFile writes the public key of a key file where a verifier
// without the key file would keep it, and returns that path.
func publicKeyFile(t *testing.T, keyFile string) string {
	t.Helper()
	out, errOut, code := credbroker(t, "audit", "public-key", "--key-file", keyFile)
	if code != 0 || !strings.Contains(out, "BEGIN PUBLIC KEY") {
		t.Fatalf("public-key: exit %d %s %s", code, out, errOut)
	}
	p := filepath.Join(t.TempDir(), "audit.pub")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// grants fetches demo and remembers the decision of every credential
// handed out.
type grants struct {
	t   *testing.T
	c   *http.Client
	ids []string
}

func (g *grants) get() apiReply {
	r := call(g.t, g.c, "GET", "/v1/credentials/demo", nil, nil)
	if r.Status == 200 {
		g.ids = append(g.ids, r.OK.DecisionID)
	}
	return r
}

// audited checks that every credential handed out has its allow row in db.
func (g *grants) audited(db string) {
	g.t.Helper()
	rows := auditRows(g.t, db)
	for _, id := range g.ids {
		if rows[id].Decision != "allow" {
			g.t.Errorf("granted decision %s has no allow row", id)
		}
	}
}

// waitUntil polls cond until it holds; the deadline only bounds a hang.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAuditStoreMovedAway moves the audit database away from under a
// running broker — unlinked, its directory renamed with an empty one put in
// its place — and checks through the binary that every request is refused
// with 503 and no credential, /readyz says why without waiting for a
// request, nothing is created at the path, and service resumes by itself,
// readiness first, once the original file is back.
func TestAuditStoreMovedAway(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	store := filepath.Join(e.dir, "store")
	if err := os.Mkdir(store, 0o700); err != nil {
		t.Fatal(err)
	}
	e.db = filepath.Join(store, "audit.db")
	b := e.start("--audit-db", e.db, "--admin", "127.0.0.1:0")
	admin := "http://" + adminAddr(t, b)
	c := socketClient(e.socket)
	g := &grants{t: t, c: c}
	get := g.get
	ready := func() bool { code, _ := httpGet(t, admin+"/readyz"); return code == 200 }
	if r := get(); r.Status != 200 {
		t.Fatalf("before: %d %s", r.Status, r.Body)
	}
	kept := filepath.Join(e.dir, "kept.db")
	for _, st := range []struct {
		name            string
		break_, restore func() error
	}{
		{"database unlinked", func() error {
			if err := os.Link(e.db, kept); err != nil {
				return err
			}
			return os.Remove(e.db)
		}, func() error {
			if err := os.Link(kept, e.db); err != nil {
				return err
			}
			return os.Remove(kept)
		}},
		{"directory moved, an empty one in its place", func() error {
			if err := os.Rename(store, store+".moved"); err != nil {
				return err
			}
			return os.Mkdir(store, 0o700)
		}, func() error {
			if err := os.Remove(store); err != nil {
				return err
			}
			return os.Rename(store+".moved", store)
		}},
	} {
		if err := st.break_(); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, st.name+": /readyz to turn not ready by itself", func() bool { return !ready() })
		_, body := httpGet(t, admin+"/readyz")
		if !strings.Contains(body, "audit") || !strings.Contains(body, e.db) {
			t.Errorf("%s: /readyz says %q", st.name, body)
		}
		for range 20 {
			expectUnavailable(t, get())
		}
		if _, err := os.Stat(e.db); err == nil {
			t.Fatalf("%s: a database was created at %s", st.name, e.db)
		}
		if err := st.restore(); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, st.name+": /readyz to turn ready without a request", ready)
		if r := get(); r.Status != 200 {
			t.Fatalf("%s: after the file came back: %d %s\n%s", st.name, r.Status, r.Body, b.logs)
		}
	}
	if b.stop(syscall.SIGTERM) != 0 {
		t.Fatalf("exit:\n%s", b.logs)
	}
	g.audited(e.db)
	if out, errOut, code := credbroker(t, "audit", "verify", "--db", e.db); code != 0 {
		t.Fatalf("audit verify: %s %s", out, errOut)
	}
}

// TestAuditOutageLogIsRateLimited: 300 requests refused by a locked store
// leave a handful of warning lines with a count, not 300 lines; the
// failures metric counts them.
func TestAuditOutageLogIsRateLimited(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "audit: {", "audit: {busy_timeout: 5ms, ", 1)), 0o600)
	b := e.start("--admin", "127.0.0.1:0")
	admin := "http://" + adminAddr(t, b)
	c := socketClient(e.socket)
	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 200 {
		t.Fatalf("before: %d %s", r.Status, r.Body)
	}
	unlock := lockDatabase(t, e.db)
	start := time.Now()
	const refused = 300
	for range refused {
		expectUnavailable(t, call(t, c, "GET", "/v1/credentials/demo", nil, nil))
	}
	elapsed := time.Since(start)
	unlock()
	lines := strings.Count(b.logs.String(), "audit record not committed; requests refused")
	// One line at once, then at most one per 10 s interval (plus its final
	// count): however long the refusals took, far fewer than one per request.
	if limit := 2 + 2*int(elapsed/(10*time.Second)); lines < 1 || lines > limit {
		t.Errorf("%d refusal lines for %d refused requests over %v, want 1 to %d:\n%s", lines, refused, elapsed, limit, b.logs)
	}
	_, metrics := httpGet(t, admin+"/metrics")
	if !strings.Contains(metrics, "credbroker_audit_failures_total 300\n") {
		t.Errorf("want credbroker_audit_failures_total 300:\n%s", grepLines(metrics, "credbroker_audit_failures_total"))
	}
	waitUntil(t, "/readyz after the lock is released", func() bool { code, _ := httpGet(t, admin+"/readyz"); return code == 200 })
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestAuditLogCutShortIsRefused deletes the newest rows of a stopped
// broker's log: the next start refuses, naming both sequence numbers,
// without signing the shortened log (the shipped checkpoint still shows the
// cut); --accept-audit-rewind starts it and the override is in the log.
func TestAuditLogCutShortIsRefused(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	e.decide(5)
	c := socketClient(e.socket)
	checkpoint := filepath.Join(e.dir, "checkpoint.json")
	before := mustRead(t, checkpoint)
	sqlite(t, e.db, "DELETE FROM decisions WHERE seq > 3")

	out, errOut, code := credbroker(t, "run", "--config", e.config)
	if code != 1 || !strings.Contains(errOut, "the log ends at seq 3, before seq 5") || !strings.Contains(errOut, "--accept-audit-rewind") {
		t.Fatalf("start on a cut log: exit %d\n%s%s", code, out, errOut)
	}
	if string(mustRead(t, checkpoint)) != string(before) {
		t.Fatal("the refused start rewrote the checkpoint")
	}
	if out, errOut, code := credbroker(t, "audit", "verify", "--db", e.db, "--checkpoint", checkpoint); code == 0 || !strings.Contains(out+errOut, "ends at seq 3") {
		t.Fatalf("verify against the checkpoint: exit %d %s %s", code, out, errOut)
	}

	b := e.start("--accept-audit-rewind")
	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 200 {
		t.Fatalf("after the override: %d %s", r.Status, r.Body)
	}
	b.stop(syscall.SIGTERM)
	if !strings.Contains(b.logs.String(), "operator override") {
		t.Errorf("the override was not logged:\n%s", b.logs)
	}
	out, errOut, code = credbroker(t, "audit", "query", "--db", e.db, "--kind", "override")
	if code != 0 || !strings.Contains(out, "override") || !strings.Contains(out, "before seq 5") {
		t.Fatalf("the override is not in the log: exit %d\n%s%s", code, out, errOut)
	}
	b = e.start() // the next start is clean again
	b.stop(syscall.SIGTERM)
}

// TestAuditKeyFileGuarded: a log whose key file is missing, readable by
// others or owned by another user does not start, and says why.
func TestAuditKeyFileGuarded(t *testing.T) {
	for _, tt := range []struct {
		name, want string
		tamper     func(key string) error
	}{
		{"missing", "is missing, and the log", os.Remove},
		{"readable by group", "mode 0640", func(key string) error { return os.Chmod(key, 0o640) }},
		{"owned by another user", "owned by uid 65534", func(key string) error { return os.Chown(key, 65534, 65534) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, e2ePolicies, e2eCredentials())
			e.write("secrets/demo", "s3cr3t")
			e.decide(1)
			if err := tt.tamper(e.db + ".key"); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := credbroker(t, "run", "--config", e.config)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d, want 1 saying %q:\n%s%s", code, tt.want, out, errOut)
			}
			if _, err := os.Stat(e.socket); err == nil {
				t.Error("the refused broker left a socket")
			}
		})
	}
}

// TestAuditVerifyWithPublicKeyOnly: an auditor holding only the public key
// proves the log up to its newest signed head; without a key verify says it
// proved self-consistency only; another install's key fails. (Rewriting a
// row and recomputing every hash is tested in the audit package.)
func TestAuditVerifyWithPublicKeyOnly(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	e.decide(4)
	pub := publicKeyFile(t, e.db+".key")
	// The auditor's copy of the log, without the key file beside it.
	copyDir := t.TempDir()
	db := filepath.Join(copyDir, "audit.db")
	if err := os.WriteFile(db, mustRead(t, e.db), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := credbroker(t, "audit", "verify", "--db", db, "--public-key", pub)
	if code != 0 || !strings.Contains(out, "rows up to seq 4 proven by") {
		t.Fatalf("verify with the public key: exit %d %s %s", code, out, errOut)
	}
	out, _, code = credbroker(t, "audit", "verify", "--db", db)
	if code != 0 || !strings.Contains(out, "self-consistency only") {
		t.Fatalf("verify without any key: exit %d %s", code, out)
	}
	// Another install's key does not verify this log's signed heads.
	other := newEnv(t, e2ePolicies, e2eCredentials())
	other.write("secrets/demo", "s3cr3t")
	other.decide(1)
	out, errOut, code = credbroker(t, "audit", "verify", "--db", db, "--public-key", publicKeyFile(t, other.db+".key"))
	if code == 0 || !strings.Contains(out+errOut, "signature does not verify") {
		t.Fatalf("verify with another install's key: exit %d %s %s", code, out, errOut)
	}
}

// lockDatabase holds the audit database's write lock from another
// connection, as another process would, until the returned function runs.
func lockDatabase(t *testing.T, path string) func() {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	return func() {
		conn.ExecContext(context.Background(), "ROLLBACK")
		conn.Close()
		db.Close()
	}
}

// sqlite runs statements on the database, as an operator with the sqlite3
// shell would.
func sqlite(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}
