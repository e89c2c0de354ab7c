package audit

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// conn is one SQLite connection driven through the database/sql/driver
// interfaces directly. The writer and each reader own exactly one, so the
// pool, locking and value conversions of database/sql would only cost time.
type conn struct {
	dc      driver.Conn
	version int // schema version, once checked or migrated
}

// Open modes, as SQLite URI "mode" values.
const (
	modeReadOnly  = "ro"
	modeReadWrite = "rw"
	modeCreate    = "rwc"
)

// driverWithFunctions is the SQLite driver with this package's SQL
// functions registered, once: modernc keeps registrations for the life of
// the program.
var driverWithFunctions = sync.OnceValue(func() *sqlite.Driver {
	d := &sqlite.Driver{}
	d.MustRegisterFunction(rowHashFunction, &sqlite.FunctionImpl{
		NArgs: numColumns, Deterministic: true, VolatileArgs: true, Scalar: rowHashSQL,
	})
	return d
})

// openConn opens path in the given mode with busy as its lock wait.
func openConn(path, mode string, busy time.Duration) (*conn, error) {
	dc, err := driverWithFunctions().Open("file:" + escapeURIPath(path) + "?mode=" + mode)
	if err != nil {
		return nil, err
	}
	c := &conn{dc: dc}
	if err := c.exec("PRAGMA busy_timeout = " + strconv.FormatInt(busy.Milliseconds(), 10)); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// readerMmapSize is how much of the database readers map into memory
// rather than read with a system call per page; SQLite caps it at its
// compile-time maximum (about 2 GiB). The writer never truncates the file,
// the one hazard of mapping it.
const readerMmapSize = 2 << 30

// readBusyTimeout is how long readers wait for a lock; in WAL mode they
// wait only while a crashed writer's log is recovered.
const readBusyTimeout = 5 * time.Second

// openDatabase opens an existing audit database in mode and checks that it
// has this package's schema.
func openDatabase(path, mode string, busy time.Duration) (*conn, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	c, err := openConn(path, mode, busy)
	if err != nil {
		return nil, withError("open", path, err)
	}
	if mode == modeReadOnly {
		if err := c.exec("PRAGMA mmap_size = " + strconv.Itoa(readerMmapSize)); err != nil {
			c.close()
			return nil, withError("open", path, err)
		}
	}
	if err := checkSchema(c); err != nil {
		c.close()
		return nil, withError("open", path, err)
	}
	return c, nil
}

// escapeURIPath escapes the characters that end or escape the path part of
// an SQLite file: URI, so any file name can be opened.
func escapeURIPath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// exec runs a statement that returns no rows.
func (c *conn) exec(query string, args ...any) error {
	_, err := c.dc.(driver.ExecerContext).ExecContext(context.Background(), query, namedValues(args))
	return err
}

// persistWAL keeps the connection's WAL file when it closes (SQLite's
// SQLITE_FCNTL_PERSIST_WAL), so that closing never deletes a file by name.
func (c *conn) persistWAL() error {
	fc, ok := c.dc.(interface {
		FileControlPersistWAL(dbName string, mode int) (int, error)
	})
	if !ok {
		return errors.New("the SQLite driver cannot keep the WAL on close")
	}
	_, err := fc.FileControlPersistWAL("main", 1)
	return err
}

// prepare compiles a statement for repeated execution.
func (c *conn) prepare(query string) (*stmt, error) {
	s, err := c.dc.(driver.ConnPrepareContext).PrepareContext(context.Background(), query)
	if err != nil {
		return nil, err
	}
	return &stmt{s: s}, nil
}

// query runs a statement that returns rows; ctx interrupts it.
func (c *conn) query(ctx context.Context, query string, args ...any) (driver.Rows, error) {
	return c.dc.(driver.QueryerContext).QueryContext(ctx, query, namedValues(args))
}

// queryRow runs a query and returns its first row, or ok false when it has none.
func (c *conn) queryRow(query string, args ...any) (values []driver.Value, ok bool, err error) {
	rows, err := c.query(context.Background(), query, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	values = make([]driver.Value, len(rows.Columns()))
	switch err := rows.Next(values); {
	case errors.Is(err, io.EOF):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return values, true, nil
}

// execCount runs a statement and returns the number of rows it changed.
func (c *conn) execCount(query string, args ...any) (int64, error) {
	res, err := c.dc.(driver.ExecerContext).ExecContext(context.Background(), query, namedValues(args))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// close releases the connection.
func (c *conn) close() error {
	return c.dc.Close()
}

// stmt is a prepared statement.
type stmt struct {
	s driver.Stmt
}

// exec runs the statement with args already in driver form.
func (s *stmt) exec(args []driver.NamedValue) error {
	_, err := s.s.(driver.StmtExecContext).ExecContext(context.Background(), args)
	return err
}

// namedValues converts positional arguments to the driver's form.
func namedValues(args []any) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}

// isBusy reports whether err is SQLITE_BUSY: another connection held the
// lock longer than the busy timeout. The connection itself is still sound.
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// beginRead starts a read transaction, so that everything read until
// rollback comes from one snapshot of the database.
func (c *conn) beginRead() error {
	return c.exec("BEGIN")
}

// withError wraps err with the operation and path it came from.
func withError(op, path string, err error) error {
	return fmt.Errorf("audit: %s %s: %w", op, path, err)
}

// eachRow runs query and calls fn with the values of each result row.
func eachRow(ctx context.Context, c *conn, query string, args []any, fn func([]driver.Value) error) error {
	rows, err := c.query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	for {
		switch err := rows.Next(dest); {
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
		if err := fn(dest); err != nil {
			return err
		}
	}
}
