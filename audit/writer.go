package audit

import (
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
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

// writer owns the write connection and the committed chain head. It is used
// by one goroutine at a time: Open, then Run.
type writer struct {
	path string
	busy time.Duration

	db      *conn         // nil after a failure: reopened by the next write
	inserts map[int]*stmt // by number of rows, prepared on first use
	head    chainHead     // newest committed row
	hasher  hasher
	args    []driver.NamedValue
}

// newWriter opens the database at path, creating it (mode 0600) and its
// schema when missing.
func newWriter(path string, busy time.Duration) (*writer, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	w := &writer{path: path, busy: busy, args: make([]driver.NamedValue, maxInsertRows*numColumns)}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// open connects in WAL mode with synchronous=FULL, migrates the schema and
// loads the chain head from the database.
func (w *writer) open() error {
	db, err := openConn(w.path, modeCreate, w.busy)
	if err != nil {
		return err
	}
	if err := w.setup(db); err != nil {
		db.close()
		return err
	}
	w.db = db
	return nil
}

// setup readies a fresh connection for writing.
func (w *writer) setup(db *conn) error {
	v, _, err := db.queryRow("PRAGMA journal_mode = WAL")
	if err != nil {
		return err
	}
	if mode, _ := v[0].(string); mode != "wal" {
		return fmt.Errorf("journal mode is %q, want wal", mode)
	}
	if err := db.exec("PRAGMA synchronous = FULL"); err != nil {
		return err
	}
	if err := migrate(db); err != nil {
		return err
	}
	head, err := loadHead(db)
	if err != nil {
		return err
	}
	w.head, w.inserts = head, make(map[int]*stmt)
	return nil
}

// write commits batch as one transaction, chaining each row to the one
// before. On success every row has its seq and hashes and the head moves to
// the last; on failure nothing is committed and the head stays. A failure
// other than a busy lock drops the connection, so the next write starts from
// a fresh one and a head re-read from the database.
func (w *writer) write(batch []*request) error {
	if w.db == nil {
		if err := w.open(); err != nil {
			return err
		}
	}
	if err := w.db.exec("BEGIN IMMEDIATE"); err != nil {
		if !isBusy(err) {
			w.close()
		}
		return err
	}
	head := w.head
	for len(batch) > 0 {
		n := min(len(batch), maxInsertRows)
		var err error
		if head, err = w.insert(head, batch[:n]); err != nil {
			return w.abort(err)
		}
		batch = batch[n:]
	}
	if err := w.db.exec("COMMIT"); err != nil {
		return w.abort(err)
	}
	w.head = head
	return nil
}

// insert chains the rows of batch to head and inserts them with one
// statement, returning the new head.
func (w *writer) insert(head chainHead, batch []*request) (chainHead, error) {
	st, ok := w.inserts[len(batch)]
	if !ok {
		var err error
		if st, err = w.db.prepare(insertStatement(len(batch))); err != nil {
			return head, err
		}
		w.inserts[len(batch)] = st
	}
	for i, req := range batch {
		head = w.chain(head, req.row)
		req.row.args(w.args[i*numColumns:(i+1)*numColumns], i*numColumns+1)
	}
	return head, st.exec(w.args[:len(batch)*numColumns])
}

// chain links rw to prev: it sets rw's seq and hashes and returns rw as the
// new head.
func (w *writer) chain(prev chainHead, rw *row) chainHead {
	rw.seq = prev.seq + 1
	rw.prevHash = hex.EncodeToString(prev.hash[:])
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
	w.db, w.inserts = nil, nil
	return err
}
