package audit

import (
	"context"
	"errors"
)

// Reader answers queries over a store of audit rows: one install's SQLite
// log (OpenFile) or a fleet's central store, where rows of many installs
// are kept (package audit/fleet). `credbroker audit query` and the
// commands built on it read through a Reader, so every filter means the
// same thing whichever store answers.
type Reader interface {
	// Query calls fn with each row that matches f, oldest first (by time,
	// then install, then seq), stopping at fn's first error, which it
	// returns.
	Query(ctx context.Context, f Filter, fn func(*Record) error) error
	// Close releases the store.
	Close() error
}

// ErrFleetOnly is returned by a single install's Reader for a Filter that
// selects by install or host, which only a fleet store records.
var ErrFleetOnly = errors.New("audit: install and host filters need a fleet store")

// OpenFile returns a Reader of the SQLite log at path. The database is
// opened for each query, read-only, and may be live.
func OpenFile(path string) Reader { return fileReader(path) }

// fileReader is the Reader of one SQLite log.
type fileReader string

// Query implements Reader.
func (p fileReader) Query(ctx context.Context, f Filter, fn func(*Record) error) error {
	return Query(ctx, string(p), f, fn)
}

// Close implements Reader.
func (fileReader) Close() error { return nil }
