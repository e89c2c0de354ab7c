package audit

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// copyFixture copies a committed fixture directory to a fresh one, with the
// key file given the mode a broker would have left it with (git keeps
// neither modes nor owners).
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("testdata", name, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestMigrateReleaseDatabase opens databases written by the previous release
// (schema 1, plain and pruned): readers verify them as they are, Open
// migrates them forward, and after new rows the whole chain, its signed
// heads and the old checkpoint all verify.
func TestMigrateReleaseDatabase(t *testing.T) {
	for _, tt := range []struct {
		fixture   string
		decisions int64
		first     int64
	}{
		{"v1", 8, 1},
		{"v1-pruned", 5, 4},
	} {
		t.Run(tt.fixture, func(t *testing.T) {
			dir := copyFixture(t, tt.fixture)
			db, cp := filepath.Join(dir, "audit.db"), filepath.Join(dir, "checkpoint.json")
			pub, err := PublicKeyFromFile(db + ".key")
			if err != nil {
				t.Fatal(err)
			}
			before, err := Verify(context.Background(), db, VerifyOptions{PublicKey: pub, Checkpoint: cp})
			if err != nil || before.Decisions != tt.decisions || before.FirstSeq != tt.first || before.SignedHeads != 0 {
				t.Fatalf("schema 1 as it is: %v, %v", before, err)
			}
			if !strings.Contains(before.String(), "self-consistency only") {
				t.Errorf("a log without signed heads: %q", before)
			}

			l := startLog(t, Config{Path: db})
			appendN(t, l.Log, 2, t0)
			l.stop(t)
			c, err := openDatabase(db, modeReadOnly, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			v, _ := readSchemaVersion(c)
			c.close()
			if v != schemaVersion {
				t.Fatalf("schema version %d after Open, want %d", v, schemaVersion)
			}
			res, err := Verify(context.Background(), db, VerifyOptions{PublicKey: pub, Checkpoint: cp})
			if err != nil {
				t.Fatalf("after migration: %v", err)
			}
			if res.Decisions != tt.decisions+2 || res.SignedHeads != 1 || res.SignedSeq != res.HeadSeq-1 || res.Unsigned != 0 {
				t.Errorf("after migration: %+v", res)
			}
			var got []string
			if err := Query(context.Background(), db, Filter{}, func(r *Record) error { got = append(got, r.Kind); return nil }); err != nil {
				t.Fatal(err)
			}
			if int64(len(got)) != tt.decisions+2 {
				t.Errorf("Query lists %d rows (%v), want the %d decisions and no signed head", len(got), got, tt.decisions+2)
			}
		})
	}
}

// TestTheOpenedFileIsTheWrittenFile moves, replaces and deletes the database
// and its WAL under a running Log: every Append fails closed, nothing is
// created at the path, the stand-in is never written, and the Log resumes by
// itself once the original files are back.
func TestTheOpenedFileIsTheWrittenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "audit.db")
	l := startLog(t, Config{Path: db, Logger: discard()})
	seq := int64(0)
	next := func() int64 { seq++; return seq }
	mustRecover(t, l.Log, 0, next())
	keep := filepath.Join(t.TempDir(), "kept")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name            string
		break_, restore func()
	}{
		{"database unlinked", func() { must(os.Link(db, keep)); must(os.Remove(db)) }, func() { must(os.Link(keep, db)); must(os.Remove(keep)) }},
		{"write-ahead log unlinked", func() { must(os.Link(db+"-wal", keep)); must(os.Remove(db + "-wal")) }, func() { must(os.Link(keep, db+"-wal")); must(os.Remove(keep)) }},
		{"database replaced by a copy", func() {
			must(os.Rename(db, keep))
			data, err := os.ReadFile(keep)
			must(err)
			must(os.WriteFile(db, data, 0o600))
		}, func() { must(os.Rename(keep, db)) }},
		{"directory moved away and an empty one put in its place", func() {
			must(os.Rename(dir, dir+".moved"))
			must(os.Mkdir(dir, 0o700))
		}, func() { must(os.Remove(dir)); must(os.Rename(dir+".moved", dir)) }},
	}
	for i, st := range steps {
		st.break_()
		var standIn os.FileInfo
		if fi, err := os.Stat(db); err == nil {
			standIn = fi
		}
		for j := range 3 {
			mustFailClosed(t, l.Log, 100*i+j)
		}
		if err := l.Healthy(); err == nil || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "start-up") && !strings.Contains(err.Error(), "is gone") {
			t.Errorf("%s: Healthy = %v", st.name, err)
		}
		switch fi, err := os.Stat(db); {
		case standIn == nil && err == nil:
			t.Fatalf("%s: a file was created at %s", st.name, db)
		case standIn != nil && (err != nil || fi.Size() != standIn.Size() || !fi.ModTime().Equal(standIn.ModTime())):
			t.Fatalf("%s: the stand-in at %s was written", st.name, db)
		}
		st.restore()
		mustRecover(t, l.Log, 100*i+50, next())
		t.Logf("%s: refused, then resumed on the original", st.name)
	}
	l.stop(t)
	res, err := Verify(context.Background(), db, VerifyOptions{})
	if err != nil || res.Decisions != seq {
		t.Fatalf("Verify = %v, %v; want %d decisions", res, err, seq)
	}
}

// TestUnmountedStoreIsNotRecreated unmounts the volume under a running Log,
// as an unmount/fsck/mount cycle would: the Log refuses, and never creates a
// database in the directory the unmount uncovers.
func TestUnmountedStoreIsNotRecreated(t *testing.T) {
	fs := mountTmpfs(t, "4m")
	db := filepath.Join(fs.dir, "audit.db")
	l := startLog(t, Config{Path: db, Logger: discard()})
	mustRecover(t, l.Log, 0, 1)
	if out, err := exec.Command("umount", "-l", fs.dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	for i := range 5 {
		mustFailClosed(t, l.Log, i+1)
	}
	entries, _ := os.ReadDir(fs.dir)
	if len(entries) != 0 {
		t.Fatalf("the uncovered directory holds %d entries after refused appends: %v", len(entries), entries)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", fs.dir).CombinedOutput(); err != nil {
		t.Fatalf("remount for cleanup: %v: %s", err, out)
	}
	l.stop(t)
}

// TestUndeliveredAfterFailedCommit: a COMMIT that reports failure although
// its rows reached the file (as after an fsync error) refuses its callers,
// and on recovery the log names those rows as undelivered instead of
// silently showing them as allowed.
func TestUndeliveredAfterFailedCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	logger, logs := captureLogs()
	l, err := Open(context.Background(), Config{Path: path, Logger: logger, SignInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	// Stands in for the kernel reporting EIO from fsync after the WAL frames
	// were written: SQLite returns an error from COMMIT, the frames are in
	// the file. (faultfs reproduces the real thing; this is its writer-side
	// view, exact and fast.)
	l.w.afterCommit = func() error {
		if fail.Load() {
			return errors.New("disk I/O error (fsync)")
		}
		return nil
	}
	tl := &testLog{Log: l, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	tl.cancel = cancel
	go func() { tl.done <- l.Run(ctx) }()
	t.Cleanup(func() { tl.stop(t) })

	mustRecover(t, l, 0, 1)
	fail.Store(true)
	refused := testRecord(1, t0)
	if err := l.Append(context.Background(), refused); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append with a failing commit = %v", err)
	}
	fail.Store(false)
	after := testRecord(2, t0)
	if err := l.Append(context.Background(), after); err != nil {
		t.Fatalf("Append after recovery: %v", err)
	}
	tl.stop(t)

	var rows []*Record
	if err := Query(context.Background(), path, Filter{Kind: KindAll}, func(r *Record) error { rows = append(rows, r); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Seq < rows[j].Seq }) // Query orders by time
	var kinds []string
	for _, r := range rows {
		kinds = append(kinds, r.Kind+":"+r.DecisionID)
	}
	// seq 1 allowed; seq 2 the refused decision, committed after all; seq 3
	// the record that it was not delivered; seq 4 the next decision.
	if len(rows) < 4 || rows[1].DecisionID != refused.DecisionID || rows[2].Kind != KindUndelivered || rows[3].DecisionID != after.DecisionID {
		t.Fatalf("rows %v", kinds)
	}
	if !strings.Contains(string(rows[2].Input), `"decision_ids":["`+refused.DecisionID+`"]`) || rows[2].Reason != reasonUndelivered {
		t.Errorf("undelivered row: %s %s", rows[2].Reason, rows[2].Input)
	}
	if !strings.Contains(logs.String(), "recorded as undelivered") {
		t.Errorf("not logged:\n%s", logs)
	}
	if _, err := Verify(context.Background(), path, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// closedLog writes n decisions and stops, leaving a log with a signed head.
func closedLog(t *testing.T, n int) (path, checkpoint string) {
	t.Helper()
	dir := t.TempDir()
	path, checkpoint = filepath.Join(dir, "audit.db"), filepath.Join(dir, "checkpoint.json")
	l := startLog(t, Config{Path: path, Logger: discard(), Checkpoint: CheckpointConfig{File: checkpoint}})
	appendN(t, l.Log, n, t0)
	l.stop(t)
	return path, checkpoint
}

// TestSignedHeadsNeverGoBack cuts the newest rows off a closed log, rewrites
// it, and loses its head file: Open refuses each (naming both seqs), never
// signs the shortened log, and accepts it only with AcceptRewind, which it
// records.
func TestSignedHeadsNeverGoBack(t *testing.T) {
	for _, tt := range []struct {
		name, want string
		tamper     func(t *testing.T, path string)
	}{
		{"newest rows deleted", "the log ends at seq 6, before seq 10", func(t *testing.T, p string) {
			sqlExec(t, p, "DELETE FROM decisions WHERE seq > 6")
		}},
		{"every row deleted", "the log ends at seq 0, before seq 10", func(t *testing.T, p string) {
			sqlExec(t, p, "DELETE FROM decisions")
		}},
		{"head row rewritten", "row 10 no longer has the hash", func(t *testing.T, p string) {
			sqlExec(t, p, "UPDATE decisions SET decision = 'deny' WHERE seq = 3")
			rechain(t, p, 3)
		}},
		{"head file deleted", "the record of the newest", func(t *testing.T, p string) {
			if err := os.Remove(filepath.Join(filepath.Dir(p), "audit.db.head")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path, checkpoint := closedLog(t, 10)
			cpBefore, _ := os.ReadFile(checkpoint)
			tt.tamper(t, path)
			_, err := Open(context.Background(), Config{Path: path, Logger: discard(), Checkpoint: CheckpointConfig{File: checkpoint}})
			if !errors.Is(err, ErrRewound) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want ErrRewound: %s", err, tt.want)
			}
			if cpAfter, _ := os.ReadFile(checkpoint); string(cpAfter) != string(cpBefore) {
				t.Fatal("the refused start rewrote the checkpoint")
			}

			logger, logs := captureLogs()
			l := startLog(t, Config{Path: path, Logger: logger, AcceptRewind: true, Checkpoint: CheckpointConfig{File: checkpoint}})
			appendN(t, l.Log, 1, t0)
			l.stop(t)
			if !strings.Contains(logs.String(), "operator override") {
				t.Errorf("the override was not logged:\n%s", logs)
			}
			var override *Record
			Query(context.Background(), path, Filter{Kind: KindOverride}, func(r *Record) error { override = r; return nil })
			if override == nil || !strings.Contains(override.Reason, tt.want) {
				t.Fatalf("override row %+v", override)
			}
			// The next start is clean: the head file follows the accepted log.
			l = startLog(t, Config{Path: path, Logger: discard()})
			l.stop(t)
		})
	}
}

// TestStaleTempFilesRemoved: temporary files a crash left while replacing
// the checkpoint, head or key file are removed at start.
func TestStaleTempFilesRemoved(t *testing.T) {
	path, checkpoint := closedLog(t, 1)
	dir := filepath.Dir(path)
	stale := []string{"." + filepath.Base(checkpoint) + ".tmp123", ".audit.db.head.tmp456", ".audit.db.key.tmp789"}
	for _, s := range stale {
		if err := os.WriteFile(filepath.Join(dir, s), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l := startLog(t, Config{Path: path, Logger: discard(), Checkpoint: CheckpointConfig{File: checkpoint}})
	l.stop(t)
	for _, s := range stale {
		if _, err := os.Stat(filepath.Join(dir, s)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", s, err)
		}
	}
}

// TestKeysBelongToTheirLog: keys are created only with a new, empty log; a
// log without its key file, a key file others can read or another user
// owns, and another log's key file are refused.
func TestKeysBelongToTheirLog(t *testing.T) {
	t.Run("new log", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.db")
		l := startLog(t, Config{Path: path, Logger: discard()})
		l.stop(t)
		fi, err := os.Stat(path + ".key")
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file: %v %v", fi, err)
		}
	})
	for _, tt := range []struct {
		name, want string
		tamper     func(t *testing.T, key string)
	}{
		{"key file missing", "is missing, and the log", func(t *testing.T, key string) { os.Remove(key) }},
		{"key file readable by group", "mode 0640", func(t *testing.T, key string) { os.Chmod(key, 0o640) }},
		{"key file readable by others", "mode 0604", func(t *testing.T, key string) { os.Chmod(key, 0o604) }},
		{"key file owned by another user", "owned by uid 65534", func(t *testing.T, key string) {
			if err := os.Chown(key, 65534, 65534); err != nil {
				t.Fatalf("chown (the test needs root): %v", err)
			}
		}},
		{"another log's key file", "belongs to another log", func(t *testing.T, key string) {
			other, _ := closedLog(t, 1)
			data, err := os.ReadFile(other + ".key")
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(key, data, 0o600)
		}},
		{"key file is a directory", "not a regular file", func(t *testing.T, key string) {
			os.Remove(key)
			os.Mkdir(key, 0o700)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := closedLog(t, 3)
			key := path + ".key"
			tt.tamper(t, key)
			before, _ := os.ReadFile(key)
			_, err := Open(context.Background(), Config{Path: path, Logger: discard()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want %q", err, tt.want)
			}
			if after, _ := os.ReadFile(key); string(after) != string(before) {
				t.Fatal("the key file was rewritten")
			}
		})
	}
}

// TestHealthyRecoversWithoutRequests: once the store is writable again,
// Healthy turns nil on its own, without waiting for a request; and it
// reports a moved database without any request.
func TestHealthyRecoversWithoutRequests(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path, BusyTimeout: 20 * time.Millisecond, ProbeInterval: 5 * time.Millisecond, Logger: discard()})
	mustRecover(t, l.Log, 0, 1)
	unlock := holdWriteLock(t, path)
	mustFailClosed(t, l.Log, 1)
	unlock()
	waitFor(t, "Healthy to turn nil without a request", func() bool { return l.Healthy() == nil })

	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Healthy to report the moved database", func() bool {
		err := l.Healthy()
		return errors.Is(err, ErrUnavailable) && strings.Contains(err.Error(), "is gone")
	})
	if err := os.Rename(path+".moved", path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Healthy to turn nil once the database is back", func() bool { return l.Healthy() == nil })
	mustRecover(t, l.Log, 2, 2)
}

// TestHeadsSignedWhileWriting: while rows are written, the head is signed
// into the log every SignInterval, without waiting for shutdown, and the
// head file follows it.
func TestHeadsSignedWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path, SignInterval: 5 * time.Millisecond, Logger: discard()})
	pub := l.PublicKey()
	for round := range 3 {
		recs := appendN(t, l.Log, 3, t0)
		last := recs[len(recs)-1].Seq
		waitFor(t, "a signed head of the newest row", func() bool {
			res, err := Verify(context.Background(), path, VerifyOptions{PublicKey: pub})
			return err == nil && res.SignedSeq >= last
		})
		// The head file follows, written off the writer's goroutine.
		waitFor(t, "the head file to name the newest signed head", func() bool {
			hf, err := readHeadFile(path + ".head")
			return err == nil && hf != nil && hf.Seq >= last
		})
		hf, err := readHeadFile(path + ".head")
		if err != nil || hf.Verify(pub) != nil {
			t.Fatalf("round %d: head file %+v, %v: not signed by the log's key", round, hf, err)
		}
	}
	// An idle log is not signed again and again.
	before, _ := Verify(context.Background(), path, VerifyOptions{PublicKey: pub})
	start := l.signTicks.Load()
	waitFor(t, "ten more sign ticks", func() bool { return l.signTicks.Load() >= start+10 })
	after, _ := Verify(context.Background(), path, VerifyOptions{PublicKey: pub})
	if after.Rows != before.Rows {
		t.Errorf("an idle log grew from %d to %d rows", before.Rows, after.Rows)
	}
}

// holdWriteLock takes the database's write lock from another connection, as
// another process would, until the returned function is called.
func holdWriteLock(t *testing.T, path string) func() {
	t.Helper()
	c, err := openConn(path, modeReadWrite, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.exec("BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	return func() {
		c.exec("ROLLBACK")
		c.close()
	}
}

// waitFor polls cond until it holds; the deadline only bounds a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestDeletedWALFoldedAtRestart: a WAL deleted under a running Log cannot
// come back; the Log refuses until restarted, and the restart keeps every
// row that was committed into it.
func TestDeletedWALFoldedAtRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path, Logger: discard()})
	appendN(t, l.Log, 5, t0)
	if err := os.Remove(path + "-wal"); err != nil {
		t.Fatal(err)
	}
	mustFailClosed(t, l.Log, 5)
	l.stop(t)

	l = startLog(t, Config{Path: path, Logger: discard()})
	mustRecover(t, l.Log, 6, 6)
	l.stop(t)
	res, err := Verify(context.Background(), path, VerifyOptions{})
	if err != nil || res.Decisions != 6 {
		t.Fatalf("Verify = %v, %v; want the 5 decisions of the deleted WAL and 1 more", res, err)
	}
}

// TestUndeliveredRecordSurvivesItsOwnFailedCommit: when the commit of the
// undelivered row itself reports failure, the next connection reconciles
// again, and the refused decision is still named.
func TestUndeliveredRecordSurvivesItsOwnFailedCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l, err := Open(context.Background(), Config{Path: path, Logger: discard(), SignInterval: -1, ProbeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var failures atomic.Int32 // commits still to report failed
	l.w.afterCommit = func() error {
		if failures.Add(-1) >= 0 {
			return errors.New("disk I/O error (fsync)")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &testLog{Log: l, cancel: cancel, done: make(chan error, 1)}
	go func() { tl.done <- l.Run(ctx) }()
	t.Cleanup(func() { tl.stop(t) })

	mustRecover(t, l, 0, 1)
	failures.Store(1)
	refused := testRecord(1, t0)
	if err := l.Append(context.Background(), refused); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append = %v", err)
	}
	failures.Store(1) // the undelivered row's commit fails too
	if err := l.Append(context.Background(), testRecord(2, t0)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append while the undelivered row fails = %v", err)
	}
	if err := l.Append(context.Background(), testRecord(3, t0)); err != nil {
		t.Fatalf("Append after recovery: %v", err)
	}
	tl.stop(t)
	named := 0
	Query(context.Background(), path, Filter{Kind: KindUndelivered}, func(r *Record) error {
		if strings.Contains(string(r.Input), refused.DecisionID) {
			named++
		}
		return nil
	})
	if named == 0 {
		t.Fatal("the refused decision is named by no undelivered row")
	}
	if _, err := Verify(context.Background(), path, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}
