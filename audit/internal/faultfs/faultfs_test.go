//go:build linux

package faultfs

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// mountT mounts a loopback of a fresh backing directory on a fresh mount
// point and unmounts it when the test ends, pass or fail. It fails the test
// when it cannot mount: this package exists to run tests that must not be
// skipped.
func mountT(t *testing.T) (f *FS, backing, mnt string) {
	t.Helper()
	backing, mnt = t.TempDir(), t.TempDir()
	f, err := Mount(backing, mnt)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	// Registered after TempDir's, so it runs before the directories
	// are removed.
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		if isMountpoint(t, mnt) {
			t.Errorf("%s is still a mount point after Unmount", mnt)
		}
	})
	return f, backing, mnt
}

// isMountpoint reports whether /proc/self/mountinfo lists a mount at path.
func isMountpoint(t *testing.T, path string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == path {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds, failing the test with the goroutine
// dump if it does not within ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("timed out waiting for %s; goroutines:\n%s", what, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFailSyncPlainFile(t *testing.T) {
	f, backing, mnt := mountT(t)

	file, err := os.Create(filepath.Join(mnt, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	dir, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()

	if _, err := file.WriteString("one\n"); err != nil {
		t.Fatal(err)
	}
	if err := file.Sync(); err != nil {
		t.Fatalf("fsync before FailSync: %v", err)
	}
	if err := dir.Sync(); err != nil {
		t.Fatalf("directory fsync before FailSync: %v", err)
	}
	if n := f.SyncFailures(); n != 0 {
		t.Fatalf("SyncFailures = %d before FailSync, want 0", n)
	}

	f.FailSync(true)
	if _, err := file.WriteString("two\n"); err != nil {
		t.Fatalf("write while syncs fail: %v", err)
	}
	syncs := []struct {
		name string
		sync func() error
	}{
		{"fsync", file.Sync},
		{"fdatasync", func() error { return unix.Fdatasync(int(file.Fd())) }},
		{"directory fsync", dir.Sync},
	}
	for i, s := range syncs {
		if err := s.sync(); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s while syncs fail = %v, want EIO", s.name, err)
		}
		if n, want := f.SyncFailures(), int64(i+1); n != want {
			t.Errorf("SyncFailures after failed %s = %d, want %d", s.name, n, want)
		}
	}

	// The data the failed fsync did not make durable is still there, as
	// in the page cache of a disk whose write-back failed.
	for _, path := range []string{filepath.Join(mnt, "data"), filepath.Join(backing, "data")} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "one\ntwo\n" {
			t.Errorf("%s = %q, want %q", path, got, "one\ntwo\n")
		}
	}

	f.FailSync(false)
	for _, s := range syncs {
		if err := s.sync(); err != nil {
			t.Errorf("%s after FailSync(false): %v", s.name, err)
		}
	}
	if n := f.SyncFailures(); n != int64(len(syncs)) {
		t.Errorf("SyncFailures after FailSync(false) = %d, want %d", n, len(syncs))
	}
}

// TestWhatSQLiteNeeds checks, below SQLite, the file operations its unix
// VFS uses: pwrite, pread, ftruncate, POSIX advisory locks (kept by the
// kernel, since the file system does not take them) and a shared writable
// mapping (the WAL index in -shm).
func TestWhatSQLiteNeeds(t *testing.T) {
	f, backing, mnt := mountT(t)
	path := filepath.Join(mnt, "db-shm")

	open := func() *os.File {
		t.Helper()
		file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { file.Close() })
		return file
	}
	a, b := open(), open()

	t.Run("pwrite pread ftruncate", func(t *testing.T) {
		if _, err := a.WriteAt([]byte("hello"), 4096); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := b.ReadAt(got, 4096); err != nil || string(got) != "hello" {
			t.Fatalf("pread = %q, %v; want %q", got, err, "hello")
		}
		if err := a.Truncate(32768); err != nil {
			t.Fatal(err)
		}
		if fi, err := b.Stat(); err != nil || fi.Size() != 32768 {
			t.Fatalf("size after ftruncate = %v, %v; want 32768", fi.Size(), err)
		}
	})

	t.Run("posix locks", func(t *testing.T) {
		wr := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: 120, Len: 1}
		// SQLite's locks: F_SETLK, per process.
		if err := unix.FcntlFlock(a.Fd(), unix.F_SETLK, &wr); err != nil {
			t.Fatalf("F_SETLK: %v", err)
		}
		unlock := wr
		unlock.Type = unix.F_UNLCK
		if err := unix.FcntlFlock(a.Fd(), unix.F_SETLK, &unlock); err != nil {
			t.Fatalf("F_SETLK unlock: %v", err)
		}
		// The same lock table, per open file: two descriptors in one
		// process conflict, which shows the kernel enforces them.
		if err := unix.FcntlFlock(a.Fd(), unix.F_OFD_SETLK, &wr); err != nil {
			t.Fatalf("F_OFD_SETLK: %v", err)
		}
		conflict := wr
		if err := unix.FcntlFlock(b.Fd(), unix.F_OFD_SETLK, &conflict); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("conflicting F_OFD_SETLK = %v, want EAGAIN", err)
		}
		probe := wr
		if err := unix.FcntlFlock(b.Fd(), unix.F_OFD_GETLK, &probe); err != nil || probe.Type != unix.F_WRLCK {
			t.Fatalf("F_OFD_GETLK = type %d, %v; want the write lock", probe.Type, err)
		}
		if err := unix.FcntlFlock(a.Fd(), unix.F_OFD_SETLK, &unlock); err != nil {
			t.Fatalf("F_OFD_SETLK unlock: %v", err)
		}
		if err := unix.FcntlFlock(b.Fd(), unix.F_OFD_SETLK, &conflict); err != nil {
			t.Fatalf("F_OFD_SETLK after unlock: %v", err)
		}
	})

	t.Run("shared mmap", func(t *testing.T) {
		mapping := func(file *os.File) []byte {
			m, err := unix.Mmap(int(file.Fd()), 0, 32768, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatalf("mmap: %v", err)
			}
			t.Cleanup(func() { unix.Munmap(m) })
			return m
		}
		ma, mb := mapping(a), mapping(b)
		copy(ma[100:], "wal-index")
		if got := string(mb[100:109]); got != "wal-index" {
			t.Fatalf("second mapping reads %q, want %q", got, "wal-index")
		}
		if err := unix.Msync(ma, unix.MS_SYNC); err != nil {
			t.Fatalf("msync: %v", err)
		}
		// Written back through the server to the backing file.
		got := make([]byte, 9)
		backingFile, err := os.Open(filepath.Join(backing, "db-shm"))
		if err != nil {
			t.Fatal(err)
		}
		defer backingFile.Close()
		if _, err := backingFile.ReadAt(got, 100); err != nil || string(got) != "wal-index" {
			t.Fatalf("backing file reads %q, %v after msync; want %q", got, err, "wal-index")
		}

		// A passthrough mapping is the backing file's: msync syncs that
		// file without asking the server, so FailSync does not fail it
		// (as the package documents). SQLite never msyncs.
		f.FailSync(true)
		defer f.FailSync(false)
		before := f.SyncFailures()
		copy(ma[200:], "unsynced")
		if err := unix.Msync(ma, unix.MS_SYNC); err != nil {
			t.Errorf("msync(MS_SYNC) while syncs fail = %v, want nil (passthrough mapping)", err)
		}
		if n := f.SyncFailures(); n != before {
			t.Errorf("SyncFailures went from %d to %d over an msync", before, n)
		}
		if _, err := backingFile.ReadAt(got[:8], 200); err != nil || string(got[:8]) != "unsynced" {
			t.Errorf("backing file reads %q, %v; want the mapped write %q", got[:8], err, "unsynced")
		}
	})

	if n := f.faults.served.Load(); n != 0 {
		t.Errorf("%d reads and writes reached the server; want 0 (passthrough)", n)
	}
}

// persistWALer is modernc's connection-level SQLITE_FCNTL_PERSIST_WAL.
type persistWALer interface {
	FileControlPersistWAL(dbName string, mode int) (int, error)
}

// TestSQLiteCommitFsyncFailure commits a row, makes fsync fail, commits a
// second row (COMMIT must fail with an I/O error), then reopens the database
// and reports whether the second row came back ("resurrected"). Variants:
//
//   - default: syncs recover, then every connection closes normally.
//   - persist-wal: as default, with SQLITE_FCNTL_PERSIST_WAL on, so closing
//     keeps the -wal file.
//   - close-while-failing: every connection closes while syncs still fail.
//   - killed: the database and -wal files are copied as they stand right
//     after the failed COMMIT, as a process killed then would leave them,
//     and the copy is opened.
//   - retry-then-killed: syncs recover, the same connection commits a third
//     row (as the audit writer retries), and then the files are copied as
//     in killed.
func TestSQLiteCommitFsyncFailure(t *testing.T) {
	for _, tc := range []struct {
		name              string
		persistWAL        bool
		closeWhileFailing bool
		killed            bool
		commitAfter       bool
	}{
		{name: "default"},
		{name: "persist-wal", persistWAL: true},
		{name: "close-while-failing", closeWhileFailing: true},
		{name: "killed", killed: true},
		{name: "retry-then-killed", killed: true, commitAfter: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f, backing, mnt := mountT(t)
			path := filepath.Join(mnt, "audit.db")

			db, conn := openSQLite(t, path)
			if tc.persistWAL {
				err := conn.Raw(func(dc any) error {
					p, ok := dc.(persistWALer)
					if !ok {
						return fmt.Errorf("%T has no FileControlPersistWAL", dc)
					}
					if _, err := p.FileControlPersistWAL("main", 1); err != nil {
						return err
					}
					if mode, err := p.FileControlPersistWAL("main", -1); err != nil || mode != 1 {
						return fmt.Errorf("persist WAL reads back %d, %v; want 1", mode, err)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			exec(t, conn, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
			exec(t, conn, "INSERT INTO t (v) VALUES ('committed')")

			f.FailSync(true)
			exec(t, conn, "BEGIN IMMEDIATE")
			exec(t, conn, "INSERT INTO t (v) VALUES ('failed-commit')")
			_, err := conn.ExecContext(ctx, "COMMIT")
			if err == nil {
				t.Fatal("COMMIT succeeded while fsync fails")
			}
			var se *sqlite.Error
			if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_IOERR {
				t.Fatalf("COMMIT error %v (%T), want an SQLITE_IOERR", err, err)
			}
			t.Logf("COMMIT: %v (extended code %d = %s)", err, se.Code(), sqliteCodeName(se.Code()))
			if f.SyncFailures() == 0 {
				t.Fatal("COMMIT failed, but no sync was failed")
			}
			t.Logf("after the failed COMMIT: failing connection sees failed row: %v; %s",
				hasRow(t, conn, "failed-commit"), rollbackResult(ctx, conn))
			t.Logf("files after the failed COMMIT: %s", listFiles(t, backing))

			if tc.commitAfter {
				f.FailSync(false)
				exec(t, conn, "INSERT INTO t (v) VALUES ('after')")
			}
			reopen := path
			if tc.killed {
				copyDir := t.TempDir()
				for _, name := range []string{"audit.db", "audit.db-wal"} {
					copyFile(t, filepath.Join(backing, name), filepath.Join(copyDir, name))
				}
				reopen = filepath.Join(copyDir, "audit.db")
			}
			if !tc.closeWhileFailing {
				f.FailSync(false)
			}
			if err := conn.Close(); err != nil {
				t.Logf("closing the connection: %v", err)
			}
			if err := db.Close(); err != nil {
				t.Logf("closing the database: %v", err)
			}
			f.FailSync(false)
			t.Logf("syncs failed in all: %d; files after close: %s", f.SyncFailures(), listFiles(t, backing))

			_, conn2 := openSQLite(t, reopen)
			if !hasRow(t, conn2, "committed") {
				t.Fatal("the committed row is gone after reopening")
			}
			if tc.commitAfter && !hasRow(t, conn2, "after") {
				t.Fatal("the row committed after the failure is gone after reopening")
			}
			var check string
			if err := conn2.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
				t.Fatalf("integrity_check = %q, %v", check, err)
			}
			t.Logf("RESULT %s: row whose COMMIT failed present after reopen (resurrected): %v",
				tc.name, hasRow(t, conn2, "failed-commit"))
			// Every page fault on SQLite's mappings was served by the
			// kernel, never by this process (see checkPassthrough).
			if n := f.faults.served.Load(); n != 0 {
				t.Errorf("%d reads and writes reached the server; want 0 (passthrough)", n)
			}
		})
	}
}

// TestSQLiteUnderGC runs a writer and a reader that maps the database
// (mmap_size) through the mount while the garbage collector runs without
// pause. If a page fault on a mapping ever waited for this process's server,
// a collection would stop the server and this test would hang.
func TestSQLiteUnderGC(t *testing.T) {
	ctx := context.Background()
	f, _, mnt := mountT(t)
	path := filepath.Join(mnt, "gc.db")
	_, writer := openSQLite(t, path)
	exec(t, writer, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
	_, reader := openSQLite(t, path)
	exec(t, reader, "PRAGMA mmap_size = 268435456")

	stop := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	readErr := make(chan error, 1)
	go func() {
		var n int
		for {
			select {
			case <-stop:
				readErr <- nil
				return
			default:
			}
			if err := reader.QueryRowContext(ctx, "SELECT count(*) FROM t WHERE v LIKE 'row%'").Scan(&n); err != nil {
				readErr <- err
				return
			}
		}
	}()
	const rows = 300
	var werr error
	for i := range rows {
		if _, werr = writer.ExecContext(ctx, "INSERT INTO t (v) VALUES (?)", fmt.Sprintf("row %d %s", i, strings.Repeat("x", 500))); werr != nil {
			break
		}
	}
	close(stop)
	<-gcDone
	if err := <-readErr; err != nil {
		t.Errorf("reader: %v", err)
	}
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	var n int
	if err := reader.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != rows {
		t.Fatalf("count = %d, %v; want %d", n, err, rows)
	}
	if n := f.faults.served.Load(); n != 0 {
		t.Errorf("%d reads and writes reached the server; want 0 (passthrough)", n)
	}
}

// openSQLite opens path in WAL mode with synchronous=FULL through one
// connection, closed when the test ends.
func openSQLite(t *testing.T, path string) (*sql.DB, *sql.Conn) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var mode string
	var sync int
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous = %d, %v; want 2 (FULL)", sync, err)
	}
	return db, conn
}

// exec runs a statement that must succeed.
func exec(t *testing.T, conn *sql.Conn, query string) {
	t.Helper()
	if _, err := conn.ExecContext(context.Background(), query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// hasRow reports whether table t has a row with value v.
func hasRow(t *testing.T, conn *sql.Conn, v string) bool {
	t.Helper()
	var n int
	if err := conn.QueryRowContext(context.Background(), "SELECT count(*) FROM t WHERE v = ?", v).Scan(&n); err != nil {
		t.Fatalf("count rows %q: %v", v, err)
	}
	return n > 0
}

// rollbackResult tries ROLLBACK and says whether a transaction was still
// open.
func rollbackResult(ctx context.Context, conn *sql.Conn) string {
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		return fmt.Sprintf("ROLLBACK: %v", err)
	}
	return "ROLLBACK succeeded (the transaction was still open)"
}

// sqliteCodeName names the extended result codes a failed sync can give.
func sqliteCodeName(code int) string {
	switch code {
	case sqlite3.SQLITE_IOERR_FSYNC:
		return "SQLITE_IOERR_FSYNC"
	case sqlite3.SQLITE_IOERR_DIR_FSYNC:
		return "SQLITE_IOERR_DIR_FSYNC"
	case sqlite3.SQLITE_IOERR_WRITE:
		return "SQLITE_IOERR_WRITE"
	case sqlite3.SQLITE_IOERR:
		return "SQLITE_IOERR"
	}
	return "another code"
}

// listFiles lists dir's files with their sizes.
func listFiles(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s (%d bytes)", e.Name(), info.Size()))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// copyFile copies src to dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestUnmountLeavesNothingBehind(t *testing.T) {
	before := runtime.NumGoroutine()
	backing, mnt := t.TempDir(), t.TempDir()
	f, err := Mount(backing, mnt)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { f.Unmount() })
	if !isMountpoint(t, mnt) {
		t.Fatalf("%s is not a mount point after Mount", mnt)
	}

	if err := os.WriteFile(filepath.Join(mnt, "file"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadDir(mnt); err != nil {
		t.Fatal(err)
	}
	if err := f.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if isMountpoint(t, mnt) {
		t.Fatalf("%s is still a mount point after Unmount", mnt)
	}
	waitFor(t, "the server's goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
	if err := f.Unmount(); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(backing, "file")); err != nil {
		t.Errorf("the backing file: %v", err)
	}
}

func TestUnmountBusyDetaches(t *testing.T) {
	before := runtime.NumGoroutine()
	backing, mnt := t.TempDir(), t.TempDir()
	f, err := Mount(backing, mnt)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { f.Unmount() })

	file, err := os.Create(filepath.Join(mnt, "held-open"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()

	err = f.Unmount()
	if !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("Unmount with a file open = %v, want an error wrapping EBUSY", err)
	}
	t.Logf("Unmount with a file open: %v", err)
	if isMountpoint(t, mnt) {
		t.Fatalf("%s is still a mount point after a busy Unmount", mnt)
	}
	waitFor(t, "the server's goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
	// The open file's reads and writes are passthrough, kernel-only, and
	// still reach the backing file; anything that needs the server fails.
	if _, err := file.Write([]byte("x")); err != nil {
		t.Errorf("write to a file left open on the aborted mount: %v", err)
	}
	if err := file.Sync(); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("fsync of a file left open on the aborted mount = %v, want ENOTCONN", err)
	}
}

func TestMountErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, backing, mountpoint string
		want                      error
	}{
		{"missing backing", filepath.Join(dir, "missing"), dir, os.ErrNotExist},
		{"missing mount point", dir, filepath.Join(dir, "missing"), os.ErrNotExist},
		{"backing not a directory", notDir, dir, syscall.ENOTDIR},
		{"mount point not a directory", dir, notDir, syscall.ENOTDIR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Mount(tc.backing, tc.mountpoint)
			if err == nil {
				f.Unmount()
				t.Fatal("Mount succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.HasPrefix(err.Error(), "faultfs: ") {
				t.Errorf("Mount = %v, want a faultfs: error wrapping %v", err, tc.want)
			}
		})
	}
}
