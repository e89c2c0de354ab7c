package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// followWait bounds how long a test waits for Follow to deliver a row; it
// waits for the row itself, and only a hang takes this long.
const followWait = time.Minute

// following is one Follow running in the background for a test.
type following struct {
	rows   chan *Record
	caught chan struct{} // a value each time Follow has caught up
	gaps   chan [2]int64
	done   chan error
	cancel context.CancelFunc
}

// follow starts Follow on path with f. On Linux the poll is an hour, so
// that every row the test waits for is delivered because inotify woke
// Follow. gate, when not nil, is received from each time Follow has
// caught up, before it waits: a test holds Follow there while it changes
// the log.
func follow(t *testing.T, path string, f Filter, gate <-chan struct{}) *following {
	t.Helper()
	poll := time.Hour
	if runtime.GOOS != "linux" {
		poll = 10 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	fl := &following{rows: make(chan *Record, 100), caught: make(chan struct{}, 100), gaps: make(chan [2]int64, 10),
		done: make(chan error, 1), cancel: cancel}
	opts := FollowOptions{
		Poll: poll,
		Caught: func() error {
			fl.caught <- struct{}{}
			if gate != nil {
				<-gate
			}
			return nil
		},
		Gap: func(first, last int64) { fl.gaps <- [2]int64{first, last} },
	}
	r := OpenFile(path)
	go func() {
		fl.done <- r.(Follower).Follow(ctx, f, opts, func(r *Record) error { fl.rows <- r; return nil })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-fl.done:
		case <-time.After(followWait):
			t.Error("Follow did not return after its context was cancelled")
		}
	})
	return fl
}

// expect waits for the next rows and checks their decision ids.
func (fl *following) expect(t *testing.T, ids ...string) {
	t.Helper()
	var got []string
	for range ids {
		select {
		case r := <-fl.rows:
			got = append(got, r.DecisionID)
		case err := <-fl.done:
			t.Fatalf("Follow returned %v after %v, want %v", err, got, ids)
		case <-time.After(followWait):
			t.Fatalf("Follow delivered %v in %v, want %v", got, followWait, ids)
		}
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("Follow delivered %v, want %v", got, ids)
	}
}

// waitCaught waits until Follow has caught up with the log.
func (fl *following) waitCaught(t *testing.T) {
	t.Helper()
	select {
	case <-fl.caught:
	case err := <-fl.done:
		t.Fatalf("Follow returned %v", err)
	case <-time.After(followWait):
		t.Fatal("Follow did not catch up")
	}
}

// end waits for Follow to return by itself and returns its error.
func (fl *following) end(t *testing.T) error {
	t.Helper()
	select {
	case err := <-fl.done:
		fl.done <- err // for the cleanup
		return err
	case <-time.After(followWait):
		t.Fatal("Follow did not return")
		return nil
	}
}

// appendRecord appends one test record with id, subject and time.
func appendRecord(t *testing.T, l *Log, id, credential string, at time.Time) {
	t.Helper()
	r := testRecord(0, at)
	r.DecisionID, r.Credential = id, credential
	if err := l.Append(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// Follow gives the matching rows already written in time order, then the
// rows written afterwards, woken by the writes, in the order they were
// written, each once, and returns nil when its context ends.
func TestFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	appendRecord(t, l.Log, "old-2", "stripe", t0.Add(2*time.Second))
	appendRecord(t, l.Log, "old-1", "stripe", t0.Add(time.Second))
	appendRecord(t, l.Log, "other", "ledger", t0.Add(3*time.Second))

	fl := follow(t, path, Filter{Credential: "stripe"}, nil)
	fl.expect(t, "old-1", "old-2")
	fl.waitCaught(t)
	// Written after Follow started: delivered by seq, though new-b is older.
	appendRecord(t, l.Log, "new-a", "stripe", t0.Add(10*time.Second))
	appendRecord(t, l.Log, "new-x", "ledger", t0.Add(11*time.Second))
	appendRecord(t, l.Log, "new-b", "stripe", t0.Add(5*time.Second))
	fl.expect(t, "new-a", "new-b")
	for i := range 20 {
		id := fmt.Sprintf("burst-%02d", i)
		appendRecord(t, l.Log, id, "stripe", t0.Add(time.Minute))
		fl.expect(t, id)
	}
	select {
	case r := <-fl.rows:
		t.Errorf("Follow delivered %s again or out of order", r.DecisionID)
	default:
	}
	fl.cancel()
	if err := fl.end(t); err != nil {
		t.Errorf("Follow after cancel = %v, want nil", err)
	}
}

// Rows deleted before Follow read them are reported as a gap and Follow
// carries on; rows deleted after it read them are no gap.
func TestFollowPrunedUnread(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := startLog(t, Config{Path: path})
	appendN(t, l.Log, 3, t0) // seq 1-3 at t0, t0+1s, t0+2s
	gate := make(chan struct{})
	fl := follow(t, path, Filter{}, gate)
	fl.expect(t, "dec-00000000", "dec-00000001", "dec-00000002")
	fl.waitCaught(t) // Follow holds here until the gate opens
	appendRecord(t, l.Log, "pruned-4", "stripe", t0.Add(10*time.Second))
	appendRecord(t, l.Log, "pruned-5", "stripe", t0.Add(11*time.Second))
	appendRecord(t, l.Log, "kept-6", "stripe", t0.Add(12*time.Second))
	if n, err := Prune(context.Background(), path, t0.Add(12*time.Second), pruneOpts(0)); err != nil || n != 5 {
		t.Fatalf("Prune = %d, %v; want 5 rows", n, err)
	}
	close(gate)
	fl.expect(t, "kept-6")
	select {
	case g := <-fl.gaps:
		if g != [2]int64{4, 5} {
			t.Errorf("gap %v, want seqs 4 to 5", g)
		}
	default:
		t.Error("no gap reported for seqs 4 and 5, deleted unread")
	}
	appendRecord(t, l.Log, "after-7", "stripe", t0.Add(13*time.Second))
	fl.expect(t, "after-7")
	if len(fl.gaps) != 0 {
		t.Errorf("more gaps: %v", <-fl.gaps)
	}
}

// Follow stops with ErrLogReplaced when the log no longer continues the
// rows it read: another file renamed over it, or rows it read deleted.
func TestFollowReplaced(t *testing.T) {
	t.Run("file replaced", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "audit.db")
		l := startLog(t, Config{Path: path})
		appendN(t, l.Log, 2, t0)
		other := startLog(t, Config{Path: filepath.Join(dir, "other.db")})
		appendN(t, other.Log, 5, t0)
		other.stop(t)
		fl := follow(t, path, Filter{}, nil)
		fl.expect(t, "dec-00000000", "dec-00000001")
		fl.waitCaught(t)
		l.stop(t)
		if err := os.Rename(filepath.Join(dir, "other.db"), path); err != nil {
			t.Fatal(err)
		}
		if err := fl.end(t); !errors.Is(err, ErrLogReplaced) {
			t.Errorf("Follow = %v, want ErrLogReplaced", err)
		}
	})
	t.Run("cut short", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.db")
		l := startLog(t, Config{Path: path})
		appendN(t, l.Log, 4, t0)
		fl := follow(t, path, Filter{}, nil)
		fl.expect(t, "dec-00000000", "dec-00000001", "dec-00000002", "dec-00000003")
		fl.waitCaught(t)
		l.stop(t)
		c, err := openDatabase(path, modeReadWrite, readBusyTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		if err := c.exec("DELETE FROM decisions WHERE seq > 2"); err != nil {
			t.Fatal(err)
		}
		err = fl.end(t)
		if !errors.Is(err, ErrLogReplaced) {
			t.Fatalf("Follow = %v, want ErrLogReplaced", err)
		}
		t.Log(err)
	})
}

// A limit, or a filter no single log answers, is refused before anything
// is read.
func TestFollowRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	startLog(t, Config{Path: path})
	for _, f := range []Filter{{Limit: 1}, {Host: "web-1"}, {Decision: "maybe"}} {
		err := OpenFile(path).(Follower).Follow(context.Background(), f, FollowOptions{}, func(*Record) error {
			t.Error("a row was delivered")
			return nil
		})
		if err == nil {
			t.Errorf("Follow(%+v) = nil, want an error", f)
		}
	}
}
