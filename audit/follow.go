package audit

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Follower is a Reader that also streams rows as they are written. OpenFile's
// Reader is one; a store that cannot follow does not implement it.
type Follower interface {
	// Follow calls fn with each row that matches f, as Query does (oldest
	// first), then with each matching row written afterwards, in the order
	// they were written, until ctx is done, when it returns nil. It stops
	// at fn's first error, which it returns, and when the store no longer
	// continues the rows already read (ErrLogReplaced).
	Follow(ctx context.Context, f Filter, opts FollowOptions, fn func(*Record) error) error
}

var _ Follower = fileReader("")

// FollowOptions tune Follower.Follow.
type FollowOptions struct {
	// Poll is how often the log is read again when no change to it was
	// noticed; default DefaultFollowPoll. On Linux a write to the database
	// or its WAL wakes Follow at once (inotify on their directory), and it
	// reads again 10 ms later, then at doubling intervals up to Poll, since
	// a commit becomes visible a little after its write; the poll covers
	// file systems that report no changes (NFS, FUSE) and systems without
	// inotify.
	Poll time.Duration
	// Caught, when set, is called each time fn has been given every row
	// written so far, before Follow waits for more: the place to flush
	// buffered output. Its error ends Follow.
	Caught func() error
	// Gap, when set, is called with the seqs of rows that were deleted
	// before Follow could read them: pruned with --force below rows not yet
	// read. Follow carries on after it; rows deleted after they were read
	// (an ordinary prune of old rows) are no gap.
	Gap func(first, last int64)
}

// DefaultFollowPoll is FollowOptions.Poll's default.
const DefaultFollowPoll = time.Second

// followSettle is how soon Follow reads the log again after a change woke
// it; it then doubles the wait up to the poll interval.
const followSettle = 10 * time.Millisecond

// ErrLogReplaced is wrapped by Follow's error when the log no longer
// continues the rows it has read: the file at the path was replaced or
// removed, or the log now ends before the newest row already read (cut
// short, or restored from an older copy). Follow stops rather than read a
// different chain as if it continued the first; `audit verify` tells what
// happened.
var ErrLogReplaced = errors.New("audit: the log no longer continues the rows already read")

// Follow implements Follower for a SQLite log. The rows before Follow
// started come in Query's order (time, then seq); the rows written after,
// by seq, which is the order they were committed in: a decision that took
// long may come after a later-started one that took less. The connection
// stays open between reads, and each read is one snapshot.
func (p fileReader) Follow(ctx context.Context, f Filter, opts FollowOptions, fn func(*Record) error) error {
	path := string(p)
	if f.Limit != 0 {
		return errors.New("audit: follow: a limit would end the rows, and following never ends; leave it out")
	}
	if err := f.check(); err != nil {
		return err
	}
	if opts.Poll <= 0 {
		opts.Poll = DefaultFollowPoll
	}
	// Watch before the first read, so that no write between that read and
	// the first wait goes unnoticed.
	w := newWatcher(path)
	defer w.close()
	c, err := openDatabase(path, modeReadOnly, readBusyTimeout)
	if err != nil {
		return err
	}
	defer c.close()
	id, err := statID(path)
	if err != nil {
		return withError("follow", path, err)
	}
	fw := &follower{c: c, f: f, fn: fn, gap: opts.Gap}
	if err := fw.first(ctx); err != nil {
		return withError("follow", path, err)
	}
	delay := opts.Poll
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		if opts.Caught != nil {
			if err := opts.Caught(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.changed():
			// The write that woke us may be a commit's WAL frames, which
			// become visible only once they are synced and the WAL index
			// (shared memory, which makes no event) is updated: look
			// again soon, then less and less often.
			delay = min(followSettle, opts.Poll)
		case <-t.C:
			delay = min(2*delay, opts.Poll)
		}
		t.Reset(delay)
		now, err := statID(path)
		if err != nil || now != id {
			return fmt.Errorf("%w: the file at %s was replaced or removed after seq %d", ErrLogReplaced, path, fw.last)
		}
		if err := fw.next(ctx); err != nil {
			var cut *cutShort
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.As(err, &cut):
				return fmt.Errorf("%w: %s now ends at seq %d, and seq %d was read", ErrLogReplaced, path, cut.head, cut.read)
			}
			return withError("follow", path, err)
		}
	}
}

// cutShort is next's error for a log that ends before the rows read.
type cutShort struct{ head, read int64 }

func (e *cutShort) Error() string {
	return fmt.Sprintf("the log ends at seq %d, before seq %d, already read", e.head, e.read)
}

// follower reads one log's rows for Follow.
type follower struct {
	c    *conn
	f    Filter
	fn   func(*Record) error
	gap  func(first, last int64)
	last int64 // the newest seq read, whether it matched or not
	rw   row
}

// first reads the rows that match f, in Query's order, and the head, in one
// snapshot.
func (fw *follower) first(ctx context.Context) error {
	return fw.snapshot(func() error {
		if err := fw.f.query(ctx, fw.c, fw.fn); err != nil {
			return err
		}
		head, _, err := loadHead(fw.c)
		fw.last = head.seq
		return err
	})
}

// next reads, in one snapshot, the rows after the newest one read that
// match f, by seq, and reports a gap when rows after it were deleted
// unread.
func (fw *follower) next(ctx context.Context) error {
	return fw.snapshot(func() error {
		head, _, err := loadHead(fw.c)
		switch {
		case err != nil:
			return err
		case head.seq < fw.last:
			return &cutShort{head: head.seq, read: fw.last}
		case head.seq == fw.last:
			return nil
		}
		v, _, err := fw.c.queryRow("SELECT min(seq) FROM decisions WHERE seq > ?", fw.last)
		if err != nil {
			return err
		}
		oldest, ok := v[0].(int64)
		if !ok { // every row after the last read was pruned
			oldest = head.seq + 1
		}
		if oldest > fw.last+1 && fw.gap != nil {
			fw.gap(fw.last+1, oldest-1)
		}
		where, args, _ := fw.f.conditions(fw.c, nil)
		where = append([]string{"seq > ?", "seq <= ?"}, where...)
		args = append([]any{fw.last, head.seq}, args...)
		query := "SELECT " + fw.c.selectColumns() + " FROM decisions NOT INDEXED WHERE " + strings.Join(where, " AND ") + " ORDER BY seq"
		err = eachRow(ctx, fw.c, query, args, func(values []driver.Value) error {
			if err := fw.rw.scan(values); err != nil {
				return err
			}
			r, err := fw.rw.record()
			if err != nil {
				return err
			}
			return fw.fn(r)
		})
		if err != nil {
			return err
		}
		fw.last = head.seq
		return nil
	})
}

// snapshot runs read in one read transaction.
func (fw *follower) snapshot(read func() error) error {
	if err := fw.c.beginRead(); err != nil {
		return err
	}
	err := read()
	if rerr := fw.c.exec("ROLLBACK"); err == nil {
		err = rerr
	}
	return err
}
