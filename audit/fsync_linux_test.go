package audit

import (
	"context"
	"errors"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/audit/internal/faultfs"
)

// TestFsyncFailureIsNotResurrectedAsDelivered puts the log on a file system
// whose fsync fails on demand (a FUSE loopback standing in for a disk with a
// writeback error) and makes real commits fail with SQLITE_IOERR_FSYNC. The
// WAL frames of such a commit are in the file, and SQLite finds them when
// it reconnects: the decision its caller was refused is in the log after
// all. The log must then say so: an undelivered row names every such
// decision, every Append that succeeded is there, and the chain verifies.
func TestFsyncFailureIsNotResurrectedAsDelivered(t *testing.T) {
	backing, mnt := t.TempDir(), t.TempDir()
	fs, err := faultfs.Mount(backing, mnt)
	if err != nil {
		t.Fatalf("mount the fault-injecting file system (needs root and /dev/fuse): %v", err)
	}
	path := filepath.Join(mnt, "audit.db")
	logger, logs := captureLogs()
	l := startLog(t, Config{Path: path, Logger: logger, ProbeInterval: time.Hour})
	t.Cleanup(func() {
		l.stop(t)
		if err := fs.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})

	delivered := map[string]bool{}
	refused := map[string]bool{}
	appendOne := func(i int) error {
		r := testRecord(i, t0)
		err := l.Append(context.Background(), r)
		if err == nil {
			delivered[r.DecisionID] = true
		} else {
			refused[r.DecisionID] = true
		}
		return err
	}
	for round := range 3 {
		if err := appendOne(100 * round); err != nil {
			t.Fatalf("round %d: Append on a healthy disk: %v", round, err)
		}
		fs.FailSync(true)
		if err := appendOne(100*round + 1); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "disk I/O error") {
			t.Fatalf("round %d: Append while fsync fails = %v, want an I/O error", round, err)
		}
		fs.FailSync(false)
		if err := appendOne(100*round + 2); err != nil {
			t.Fatalf("round %d: Append after the disk recovered: %v", round, err)
		}
	}
	if fs.SyncFailures() == 0 {
		t.Fatal("no fsync failed: the test did not inject anything")
	}
	l.stop(t)

	var rows []*Record
	if err := Query(context.Background(), path, Filter{Kind: KindAll}, func(r *Record) error { rows = append(rows, r); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Seq < rows[j].Seq })
	present, named := map[string]bool{}, map[string]bool{}
	for _, r := range rows {
		switch r.Kind {
		case KindDecision:
			present[r.DecisionID] = true
		case KindUndelivered:
			for id := range refused {
				if strings.Contains(string(r.Input), `"`+id+`"`) {
					named[id] = true
				}
			}
		}
	}
	for id := range delivered {
		if !present[id] {
			t.Errorf("delivered decision %s has no row", id)
		}
	}
	resurrected := 0
	for id := range refused {
		switch {
		case present[id] && !named[id]:
			t.Errorf("refused decision %s is in the log as if delivered: no undelivered row names it", id)
		case present[id]:
			resurrected++
		case named[id]:
			t.Errorf("decision %s is named undelivered but has no row", id)
		}
	}
	// SQLite finds the failed commit's frames when the writer reconnects
	// (the WAL is kept on close): if it did not, this test would not be
	// testing what it says.
	if resurrected == 0 {
		t.Fatalf("no refused decision came back after the fsync error; rows: %d", len(rows))
	}
	if !strings.Contains(logs.String(), "recorded as undelivered") {
		t.Errorf("the undelivered rows were not logged:\n%s", logs)
	}
	if _, err := Verify(context.Background(), path, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d refused decisions came back after fsync errors; each is named undelivered", resurrected, len(refused))
}
