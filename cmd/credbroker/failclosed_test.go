package main

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// mountTmpfs mounts a small tmpfs at a fresh directory, standing in for the
// volume the audit database lives on, so the test can fill it up for real.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (the test needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes junk into dir until the file system is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "junk")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling disk: %v", err)
			}
			return p
		}
	}
}

// expectUnavailable asserts a 503 that hands out nothing.
func expectUnavailable(t *testing.T, r apiReply) {
	t.Helper()
	if r.Status != http.StatusServiceUnavailable || r.Err.Error.Code != "unavailable" {
		t.Fatalf("status %d body %s, want 503 unavailable", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), "s3cr3t") {
		t.Fatalf("503 body carries the secret: %s", r.Body)
	}
}

// TestFailClosedDiskFullAndReadOnly puts the audit database on a small
// tmpfs, then fills it and makes it read-only under a running broker: every
// request is refused with 503 and no credential, /readyz says why, and
// service resumes by itself once the volume recovers.
func TestFailClosedDiskFullAndReadOnly(t *testing.T) {
	disk := mountTmpfs(t, "4m")
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.db = filepath.Join(disk, "audit.db")
	e.write("secrets/demo", "s3cr3t")
	b := e.start("--audit-db", e.db, "--admin", "127.0.0.1:0")
	admin := "http://" + adminAddr(t, b)
	c := socketClient(e.socket)
	g := &grants{t: t, c: c}
	get := g.get
	if r := get(); r.Status != 200 {
		t.Fatalf("before: status %d %s", r.Status, r.Body)
	}

	// Disk full. SQLite may still fit a few rows into pages the WAL already
	// holds; every request is either committed and answered, or refused.
	junk := fillDisk(t, disk)
	refused := false
	for i := 0; i < 5000 && !refused; i++ {
		if r := get(); r.Status != 200 {
			expectUnavailable(t, r)
			refused = true
		}
	}
	if !refused {
		t.Fatal("a full disk never refused a request")
	}
	if code, body := httpGet(t, admin+"/readyz"); code != 503 || !strings.Contains(body, "audit") {
		t.Errorf("/readyz while the store fails: %d %s", code, body)
	}

	// Read-only. Linux refuses to remount a file system read-only while a
	// file on it is open for writing; after the failed commit the writer
	// has closed the database and opens it only briefly to probe it, so the
	// remount goes through (see remount).
	os.Remove(junk)
	remount(t, disk, "ro")
	expectUnavailable(t, get())
	remount(t, disk, "rw")

	if r := get(); r.Status != 200 {
		t.Fatalf("after the volume recovered: status %d %s\n%s", r.Status, r.Body, b.logs)
	}
	if code, body := httpGet(t, admin+"/readyz"); code != 200 {
		t.Errorf("/readyz after recovery: %d %s", code, body)
	}
	_, metrics := httpGet(t, admin+"/metrics")
	if strings.Contains(metrics, "credbroker_audit_failures_total 0\n") || !strings.Contains(metrics, "credbroker_audit_failures_total") {
		t.Errorf("audit failures not counted:\n%s", metrics)
	}
	b.stop(syscall.SIGTERM)
	g.audited(e.db)
	if !strings.Contains(b.logs.String(), "audit record not committed") {
		t.Errorf("the refusal was not logged:\n%s", b.logs)
	}
	if out, errOut, code := credbroker(t, "audit", "verify", "--db", e.db); code != 0 {
		t.Fatalf("audit verify: %s %s", out, errOut)
	}
}

// remount changes the mount at dir to ro or rw. Linux refuses a read-only
// remount while a file on it is open for writing, as the audit database is
// for a moment each time the broker probes the failed store: the remount
// is retried until it goes through.
func remount(t *testing.T, dir, mode string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput()
		if err == nil {
			return
		}
		if !strings.Contains(string(out), "busy") || time.Now().After(deadline) {
			t.Fatalf("remount %s %s: %v: %s", dir, mode, err, out)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFailClosedLockHeld(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	// A short busy timeout keeps the test quick.
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "audit: {", "audit: {busy_timeout: 200ms, ", 1)), 0o600)
	b := e.start()
	c := socketClient(e.socket)
	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 200 {
		t.Fatalf("before: status %d %s", r.Status, r.Body)
	}

	// Another process's write transaction holds the lock.
	db, err := sql.Open("sqlite", e.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	expectUnavailable(t, call(t, c, "GET", "/v1/credentials/demo", nil, nil))
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 200 {
		t.Fatalf("after the lock was released: status %d %s\n%s", r.Status, r.Body, b.logs)
	}
	b.stop(syscall.SIGTERM)
	if out, errOut, code := credbroker(t, "audit", "verify", "--db", e.db); code != 0 {
		t.Fatalf("audit verify: %s %s", out, errOut)
	}
}
