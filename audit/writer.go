package audit

import (
	"context"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxInsertRows is the most rows one INSERT statement carries: multi-row
// inserts save about a fifth of the writer's CPU time over single rows.
const maxInsertRows = 64

// insertStatement returns an INSERT of n decisions rows, every column given.
func insertStatement(n int) string {
	values := "(" + strings.Repeat("?,", numColumns-1) + "?)"
	return "INSERT INTO decisions (" + columns + ") VALUES " + strings.Repeat(values+",", n-1) + values
}

// errRewound is the cause when the database no longer holds what the writer
// committed: rows were removed or rewritten while it was open, or rows
// appeared that it never wrote.
var errRewound = errors.New("the log changed under the writer")

// writer owns the write connection and the committed chain head. It is used
// by one goroutine at a time: Open, then Run.
//
// The database file is created only by newWriter, at start-up. Afterwards
// the writer only ever reopens the very file it created or found then:
// before every commit it checks that the database and WAL paths still name
// the files its connection has open, and it refuses to write otherwise,
// keeping its connection (and so the original files) until they are back.
type writer struct {
	path string
	busy time.Duration
	dbID fileID                      // the database file found or created at start-up
	open atomic.Pointer[openedFiles] // nil until the first connection

	now func() time.Time

	db        *conn         // nil after a failure: reopened by the next write
	inserts   map[int]*stmt // by number of rows, prepared on first use
	head      chainHead     // newest committed row
	signed    bool          // head is a signed_head row: nothing after the last signature
	connected bool          // a connection was made: head is the writer's own
	suspect   bool          // a commit failed: rows beyond head may be in the file all the same
	hasher    hasher
	args      []driver.NamedValue

	// afterCommit, when set (tests), runs after a COMMIT that SQLite
	// reported successful and may turn it into a failure, as an fsync error
	// reported with the commit would: the rows are in the file, the writer
	// was told they are not.
	afterCommit func() error
	// onUndelivered is told about rows recorded as undelivered on recovery.
	onUndelivered func(u undelivered)
}

// newWriter opens the database at path, creating it (mode 0600) and its
// schema when missing. It is the only place a database file is created.
func newWriter(path string, busy time.Duration, now func() time.Time) (*writer, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, err
	}
	w := &writer{path: path, busy: busy, now: now, dbID: idOf(fi), args: make([]driver.NamedValue, maxInsertRows*numColumns)}
	if err := w.connect(); err != nil {
		return nil, err
	}
	return w, nil
}

// connect opens a connection to the database file of start-up, in WAL mode
// with synchronous=FULL and the WAL kept on close, migrates the schema and
// loads the chain head. On a reconnect it first reconciles the head it knew
// with the one in the file (see reconcile).
func (w *writer) connect() error {
	if err := w.checkDB(); err != nil {
		return err
	}
	db, err := openConn(w.path, modeReadWrite, w.busy)
	if err != nil {
		return err
	}
	// The connection has the file open now: make sure it is still ours.
	if err := w.checkDB(); err != nil {
		db.close()
		return err
	}
	head, signed, err := w.setup(db)
	if err == nil {
		err = w.recordFiles()
	}
	var ev *row
	if err == nil && w.connected {
		ev, err = w.reconcile(db, head)
	}
	if err != nil {
		db.close()
		return err
	}
	known := w.head
	w.db, w.inserts, w.head, w.signed, w.connected = db, make(map[int]*stmt), head, signed, true
	w.suspect = false
	if ev != nil {
		if err := w.commitRows([]*row{ev}); err != nil {
			// Until the undelivered row is committed, the rows it names
			// are not the writer's: the next connection reconciles again.
			w.head, w.suspect = known, true
			return err
		}
	}
	return nil
}

// checkDB makes sure the database path still names the file of start-up.
func (w *writer) checkDB() error {
	return checkPath(w.path, "database", remedyDB, w.dbID)
}

// recordFiles notes the database and WAL files of the new connection.
func (w *writer) recordFiles() error {
	walPath := w.path + "-wal"
	walID, err := statID(walPath)
	if err != nil {
		return fmt.Errorf("write-ahead log: %w", err)
	}
	w.open.Store(&openedFiles{db: w.dbID, wal: walID, dbPath: w.path, walPath: walPath})
	return nil
}

// checkFiles reports whether the database and WAL paths still name the
// files the connection has open; nil before the first connection.
func (w *writer) checkFiles() error {
	if f := w.open.Load(); f != nil {
		return f.check()
	}
	return nil
}

// setup readies a fresh connection for writing and returns the chain head.
func (w *writer) setup(db *conn) (chainHead, bool, error) {
	v, _, err := db.queryRow("PRAGMA journal_mode = WAL")
	if err != nil {
		return chainHead{}, false, err
	}
	if mode, _ := v[0].(string); mode != "wal" {
		return chainHead{}, false, fmt.Errorf("journal mode is %q, want wal", mode)
	}
	// The writer only appends: its cache needs the insertion paths of the
	// table and its two indexes, not SQLite's default 2 MiB.
	if err := db.exec("PRAGMA cache_size = -1024"); err != nil {
		return chainHead{}, false, err
	}
	if err := db.exec("PRAGMA synchronous = FULL"); err != nil {
		return chainHead{}, false, err
	}
	// Keep the WAL file when the connection closes: SQLite would otherwise
	// delete it by name, and the name may by then belong to another file.
	if err := db.persistWAL(); err != nil {
		return chainHead{}, false, err
	}
	if err := migrate(db); err != nil {
		return chainHead{}, false, err
	}
	return loadHead(db)
}

// reconcile compares the head the writer knew before it lost its
// connection with the head in the file. After an fsync error SQLite may
// find, on reopen, a transaction whose COMMIT it reported failed: reconcile
// returns a KindUndelivered row naming those rows, to be committed next, so
// the log says their callers were refused. Anything else the writer did not
// write — rows removed, rewritten or added by someone else — is an error
// that keeps the log unavailable.
func (w *writer) reconcile(db *conn, head chainHead) (*row, error) {
	known := w.head
	switch {
	case head == known:
		return nil, nil
	case head.seq < known.seq:
		return nil, fmt.Errorf("%w: the log ends at seq %d but this writer committed seq %d: rows were removed while it was open", errRewound, head.seq, known.seq)
	case head.seq == known.seq:
		return nil, fmt.Errorf("%w: the newest row, seq %d, is not the one this writer committed: it was rewritten while the log was open", errRewound, head.seq)
	case !w.suspect:
		return nil, fmt.Errorf("%w: rows %d to %d appeared that this writer did not commit", errRewound, known.seq+1, head.seq)
	}
	u := undelivered{FirstSeq: known.seq + 1, LastSeq: head.seq, DecisionIDs: []string{}}
	next, prev := known.seq+1, known.hashHex()
	err := eachRow(context.Background(), db, "SELECT seq, prev_hash, hash, decision_id, kind FROM decisions WHERE seq > ? ORDER BY seq", []any{known.seq},
		func(v []driver.Value) error {
			seq, _ := v[0].(int64)
			prevHash, _ := v[1].(string)
			hash, _ := v[2].(string)
			if seq != next || prevHash != prev {
				return fmt.Errorf("%w: row %d does not follow the head this writer committed (seq %d)", errRewound, seq, known.seq)
			}
			if kind, _ := v[4].(string); kind == KindDecision {
				id, _ := v[3].(string)
				u.DecisionIDs = append(u.DecisionIDs, id)
			}
			next, prev = seq+1, hash
			return nil
		})
	if err != nil {
		return nil, err
	}
	if w.onUndelivered != nil {
		w.onUndelivered(u)
	}
	return newEvent(KindUndelivered, reasonUndelivered, w.now(), u)
}

// write commits rows as one transaction, chaining each row to the one
// before. On success every row has its seq and hashes and the head moves to
// the last; on failure the head stays. A failure other than a busy lock or
// a moved file drops the connection, so the next write starts from a fresh
// one, reconciled with the file.
func (w *writer) write(rows []*row) error {
	if w.db == nil {
		if err := w.connect(); err != nil {
			return err
		}
	}
	if err := w.checkFiles(); err != nil {
		return err
	}
	return w.commitRows(rows)
}

// commitRows is write on an open, checked connection.
func (w *writer) commitRows(rows []*row) error {
	last := rows[len(rows)-1]
	if err := w.db.exec("BEGIN IMMEDIATE"); err != nil {
		if !isBusy(err) {
			w.close()
		}
		return err
	}
	head := w.head
	for len(rows) > 0 {
		n := min(len(rows), maxInsertRows)
		var err error
		if head, err = w.insert(head, rows[:n]); err != nil {
			return w.abort(err)
		}
		rows = rows[n:]
	}
	if last.kind == KindSignedHead {
		if err := setMeta(w.db, metaSignedSeq, strconv.FormatInt(last.seq-1, 10)); err != nil {
			return w.abort(err)
		}
	}
	// From here a failure may still leave the rows in the file.
	w.suspect = true
	err := w.db.exec("COMMIT")
	if err == nil && w.afterCommit != nil {
		err = w.afterCommit()
	}
	if err != nil {
		return w.abort(err)
	}
	w.suspect, w.signed = false, last.kind == KindSignedHead
	w.head = head
	return nil
}

// probe proves the store writable with a small committed write. A
// connection it had to open for that is closed again, so that a failed
// store is not held open between requests (an operator may be remounting
// it); the next write reconnects.
func (w *writer) probe(now time.Time) error {
	if w.db != nil {
		return w.probeWrite(now)
	}
	if err := w.connect(); err != nil {
		return err
	}
	err := w.probeWrite(now)
	w.close()
	return err
}

// probeWrite commits a small write on the open connection.
func (w *writer) probeWrite(now time.Time) error {
	if err := w.checkFiles(); err != nil {
		return err
	}
	if err := w.db.exec("BEGIN IMMEDIATE"); err != nil {
		if !isBusy(err) {
			w.close()
		}
		return err
	}
	if err := setMeta(w.db, metaProbe, now.UTC().Format(time.RFC3339Nano)); err != nil {
		return w.abort(err)
	}
	if err := w.db.exec("COMMIT"); err != nil {
		return w.abort(err)
	}
	return nil
}

// insert chains rows to head and inserts them with one statement, returning
// the new head.
func (w *writer) insert(head chainHead, rows []*row) (chainHead, error) {
	st, ok := w.inserts[len(rows)]
	if !ok {
		var err error
		if st, err = w.db.prepare(insertStatement(len(rows))); err != nil {
			return head, err
		}
		w.inserts[len(rows)] = st
	}
	for i, rw := range rows {
		head = w.chain(head, rw)
		rw.args(w.args[i*numColumns:(i+1)*numColumns], i*numColumns+1)
	}
	return head, st.exec(w.args[:len(rows)*numColumns])
}

// chain links rw to prev: it sets rw's seq and hashes and returns rw as the
// new head.
func (w *writer) chain(prev chainHead, rw *row) chainHead {
	rw.seq = prev.seq + 1
	rw.prevHash = prev.hashHex()
	h := w.hasher.sum(rw.seq, &prev.hash, rw)
	rw.hash = hex.EncodeToString(h[:])
	return chainHead{seq: rw.seq, hash: h}
}

// abort drops the connection, which rolls back the open transaction, and
// returns cause.
func (w *writer) abort(cause error) error {
	w.close()
	return cause
}

// close releases the connection; the next write reopens it.
func (w *writer) close() error {
	if w.db == nil {
		return nil
	}
	for _, st := range w.inserts {
		st.s.Close()
	}
	err := w.db.close()
	w.db = nil
	return err
}
