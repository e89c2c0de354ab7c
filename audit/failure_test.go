package audit

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// captureLogs returns a logger writing JSON lines to the returned buffer.
func captureLogs() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// mustFailClosed appends and expects ErrUnavailable, with Healthy agreeing.
func mustFailClosed(t *testing.T, l *Log, i int) {
	t.Helper()
	r := testRecord(i, t0)
	err := l.Append(context.Background(), r)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append = %v, want ErrUnavailable", err)
	}
	if r.Seq != 0 || r.Hash != "" {
		t.Errorf("failed Append still set seq %d hash %q", r.Seq, r.Hash)
	}
	if err := l.Healthy(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Healthy after a failed commit = %v, want ErrUnavailable", err)
	}
}

// mustRecover appends and expects success at seq want, with Healthy agreeing.
func mustRecover(t *testing.T, l *Log, i int, want int64) {
	t.Helper()
	r := testRecord(i, t0)
	if err := l.Append(context.Background(), r); err != nil {
		t.Fatalf("Append after recovery: %v", err)
	}
	if r.Seq != want {
		t.Errorf("seq after recovery = %d, want %d (the chain must not advance on failure)", r.Seq, want)
	}
	if err := l.Healthy(); err != nil {
		t.Errorf("Healthy after recovery = %v", err)
	}
}

// TestFailClosedLockHeld holds the write lock from a second connection,
// as another process would, longer than BusyTimeout.
func TestFailClosedLockHeld(t *testing.T) {
	logger, logs := captureLogs()
	l := startLog(t, Config{BusyTimeout: 50 * time.Millisecond, Logger: logger})
	mustRecover(t, l.Log, 0, 1)

	db, err := sql.Open("sqlite", l.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	other, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	mustFailClosed(t, l.Log, 1)
	mustFailClosed(t, l.Log, 2)
	if _, err := other.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	mustRecover(t, l.Log, 3, 2)

	out := logs.String()
	for _, want := range []string{`"msg":"audit store unavailable`, `database is locked`, `"msg":"audit store recovered","failed_batches":2`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	if strings.Count(out, `"level":"ERROR"`) != 1 {
		t.Errorf("want one ERROR line for one outage:\n%s", out)
	}
	if _, err := Verify(context.Background(), l.cfg.Path, VerifyOptions{}); err != nil {
		t.Error(err)
	}
}

// tmpfs is a small tmpfs mounted for one test; root is required, and a
// failure to mount fails the test.
type tmpfs struct{ dir string }

func mountTmpfs(t *testing.T, size string) *tmpfs {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (this test needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return &tmpfs{dir: dir}
}

// remount changes the tmpfs to ro or rw. Linux refuses a read-only
// remount while a file on it is open for writing, as it is for a moment
// while the Log probes a failed store: the remount is retried until it
// goes through.
func (fs *tmpfs) remount(t *testing.T, mode string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command("mount", "-o", "remount,"+mode, fs.dir).CombinedOutput()
		if err == nil {
			return
		}
		if !strings.Contains(string(out), "busy") || time.Now().After(deadline) {
			t.Fatalf("remount %s: %v: %s", mode, err, out)
		}
		time.Sleep(time.Millisecond)
	}
}

// fill writes a junk file until the file system is full.
func (fs *tmpfs) fill(t *testing.T) {
	t.Helper()
	f, err := os.Create(filepath.Join(fs.dir, "junk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling: %v", err)
			}
			return
		}
	}
}

// free deletes the junk file.
func (fs *tmpfs) free(t *testing.T) {
	t.Helper()
	if err := os.Remove(filepath.Join(fs.dir, "junk")); err != nil {
		t.Fatal(err)
	}
}

// TestFailClosedDiskFullAndReadOnly puts the database on a real tmpfs, fills
// it and remounts it read-only, and checks that Append fails closed and that
// the same Log recovers once the file system does.
//
// Linux refuses `mount -o remount,ro` (EBUSY) while any file on the file
// system is open for writing, as the writer's database is while it is
// healthy; a live store turns read-only only through the kernel (an
// errors=remount-ro file system). The read-only step therefore follows a
// failed commit, after which the writer has released its files, as it does
// after any failure, opening them only briefly to probe the store.
func TestFailClosedDiskFullAndReadOnly(t *testing.T) {
	fs := mountTmpfs(t, "2m")
	logger, logs := captureLogs()
	l := startLog(t, Config{Path: filepath.Join(fs.dir, "audit.db"), Logger: logger})
	var seq int64
	steps := []struct {
		name   string
		before func(t *testing.T)
		ok     bool
	}{
		{"healthy", func(*testing.T) {}, true},
		{"disk full", fs.fill, false},
		{"still full", func(*testing.T) {}, false},
		{"space freed", fs.free, true},
		{"full again", fs.fill, false},
		{"space freed but read-only", func(t *testing.T) { fs.free(t); fs.remount(t, "ro") }, false},
		{"still read-only", func(*testing.T) {}, false},
		{"read-write again", func(t *testing.T) { fs.remount(t, "rw") }, true},
	}
	for i, st := range steps {
		st.before(t)
		if st.ok {
			seq++
			mustRecover(t, l.Log, i, seq)
		} else {
			mustFailClosed(t, l.Log, i)
		}
		t.Logf("step %q: ok", st.name)
	}
	l.stop(t)
	res, err := Verify(context.Background(), l.cfg.Path, VerifyOptions{})
	if err != nil || res.Decisions != seq {
		t.Fatalf("Verify = %+v, %v; want %d decisions", res, err, seq)
	}
	out := logs.String()
	for _, want := range []string{
		`"level":"ERROR","msg":"audit store unavailable; decisions fail closed until it recovers"`,
		`"error":"audit: store unavailable: commit: database or disk is full`,
		`"msg":"audit store recovered"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	// The read-only failure is logged at ERROR when the writer's probe
	// recovered on the freed space before the remount, else at WARN as a
	// new cause of a failure in progress: either way at a level an
	// operator sees, with its cause.
	const readOnly = `"rows":1,"error":"audit: store unavailable: commit: attempt to write a readonly database`
	if !strings.Contains(out, `"level":"WARN","msg":"audit store still unavailable",`+readOnly) &&
		!strings.Contains(out, `"level":"ERROR","msg":"audit store unavailable; decisions fail closed until it recovers","path":"`+l.cfg.Path+`",`+readOnly) {
		t.Errorf("logs lack the read-only failure at WARN or ERROR:\n%s", out)
	}
}
