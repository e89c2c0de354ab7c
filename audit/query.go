package audit

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Filter selects rows for Query. Zero fields do not filter.
type Filter struct {
	Since      time.Time // rows at or after Since
	Until      time.Time // rows before Until
	Workload   string    // glob on the subject: * any run, ? one character, [a-z] a class (SQLite GLOB, case-sensitive)
	Credential string    // exact credential name
	Decision   string    // allow, deny or error
	Policy     string    // exact policy name
	Lease      string    // exact lease id: the decision that issued it and its lifecycle rows
	Database   string    // exact database a database listener's client asked for
	DecisionID string    // exact decision id: one decision's row (event rows have ids of their own)
	Install    string    // exact install id (fleet stores only; see Record.Install)
	Host       string    // exact host name (fleet stores only; see Record.Host)
	// Kind selects rows by kind: "" every row but the signed heads (one a
	// second under load, of interest to verifiers, not reviewers),
	// KindAll every row, or one kind (KindDecision, KindUndelivered, …).
	Kind  string
	Limit int // at most this many rows; 0 for all
}

// KindAll is the Filter.Kind that selects rows of every kind.
const KindAll = "all"

// Query calls fn with each row that matches f, oldest first (by time, then
// seq), stopping at fn's first error, which it returns. The database is
// opened read-only and may be live; fn sees one consistent snapshot.
func Query(ctx context.Context, path string, f Filter, fn func(*Record) error) error {
	if err := f.check(); err != nil {
		return err
	}
	c, err := openDatabase(path, modeReadOnly, readBusyTimeout)
	if err != nil {
		return err
	}
	defer c.close()
	if err := f.query(ctx, c, fn); err != nil {
		return withError("query", path, err)
	}
	return nil
}

// check refuses a Filter no single log can answer.
func (f Filter) check() error {
	switch f.Decision {
	case "", DecisionAllow, DecisionDeny, DecisionError:
	default:
		return fmt.Errorf("audit: query: decision %q is not allow, deny or error", f.Decision)
	}
	if f.Install != "" || f.Host != "" {
		return ErrFleetOnly
	}
	return nil
}

// query runs f's statement on c and calls fn with each row. A decision id
// of the broker's time-ordered form (idTime) is first looked for in the
// millisecond it names, through decisions_time; only when no row is found
// there is the whole table scanned, so an id the broker wrote costs an
// index probe, and any other id is still found.
func (f Filter) query(ctx context.Context, c *conn, fn func(*Record) error) error {
	var rw row
	each := func(values []driver.Value) error {
		if err := rw.scan(values); err != nil {
			return err
		}
		r, err := rw.record()
		if err != nil {
			return err
		}
		return fn(r)
	}
	if at, ok := idTime(f.DecisionID); ok {
		found := false
		query, args := f.statement(c, &at)
		err := eachRow(ctx, c, query, args, func(values []driver.Value) error {
			found = true
			return each(values)
		})
		if err != nil || found {
			return err
		}
	}
	query, args := f.statement(c, nil)
	return eachRow(ctx, c, query, args, each)
}

// idTime returns the millisecond a time-ordered decision id names: the
// broker's decision ids and the log's event ids are 32 lowercase hex
// digits, the first 12 of them the Unix milliseconds of the row's time.
// ok is false for any other id.
func idTime(id string) (ms int64, ok bool) {
	if len(id) != 32 {
		return 0, false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return 0, false
		}
	}
	ms, err := strconv.ParseInt(id[:12], 16, 64)
	if err != nil || ms > maxTime.UnixMilli() {
		return 0, false
	}
	return ms, true
}

// statement builds the SELECT for f, oldest first. The index is chosen
// here rather than by the planner, which has no statistics: an exact
// subject uses decisions_subject (subject, then time in order); a time
// window uses decisions_time, which also tests the workload glob before the
// row is read; a glob with a literal prefix and no window scans that
// prefix's range of decisions_subject; a lease id uses decisions_lease
// (schema 3 on). idMilli, when set, is the millisecond a time-ordered
// decision id names (see query): the rows of that millisecond are read
// through decisions_time.
func (f Filter) statement(c *conn, idMilli *int64) (string, []any) {
	where, args, index := f.conditions(c, idMilli)
	var b strings.Builder
	b.WriteString("SELECT " + c.selectColumns() + " FROM decisions INDEXED BY " + index)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY time, seq")
	if f.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, int64(f.Limit))
	}
	return b.String(), args
}

// conditions returns the WHERE conditions of f, their arguments, and the
// index that serves them best (see statement).
func (f Filter) conditions(c *conn, idMilli *int64) (where []string, args []any, index string) {
	add := func(cond string, v any) {
		where = append(where, cond)
		args = append(args, v)
	}
	window := !f.Since.IsZero() || !f.Until.IsZero() || idMilli != nil
	if !f.Since.IsZero() {
		add("time >= ?", clampUnixNano(f.Since))
	}
	if !f.Until.IsZero() {
		add("time < ?", clampUnixNano(f.Until))
	}
	if idMilli != nil {
		from := time.UnixMilli(*idMilli)
		add("time >= ?", clampUnixNano(from))
		add("time < ?", clampUnixNano(from.Add(time.Millisecond)))
	}
	index = "decisions_time"
	if f.Workload != "" {
		prefix := globPrefix(f.Workload)
		switch {
		case prefix == f.Workload:
			add("subject = ?", f.Workload)
			index = "decisions_subject"
		default:
			if prefix != "" {
				add("subject >= ?", prefix)
				if end, ok := prefixEnd(prefix); ok {
					add("subject < ?", end)
				}
				if !window {
					index = "decisions_subject"
				}
			}
			add("subject GLOB ?", f.Workload)
		}
	}
	if f.Lease != "" {
		add("lease_id = ?", f.Lease)
		if c.version >= 3 {
			where = append(where, "lease_id != ''") // lets the partial index serve
			index = "decisions_lease"
		}
	}
	for _, eq := range [...]struct{ col, v string }{{"credential", f.Credential}, {"decision", f.Decision},
		{"policy", f.Policy}, {"decision_id", f.DecisionID}} {
		if eq.v != "" {
			add(eq.col+" = ?", eq.v)
		}
	}
	switch {
	case f.Database == "":
	case c.version < 4: // no row names a database
		where = append(where, "0")
	default:
		add("database = ?", f.Database)
	}
	switch {
	case f.Kind == KindAll:
	case c.version == 1: // every row is a decision
		if f.Kind != "" && f.Kind != KindDecision {
			where = append(where, "0")
		}
	case f.Kind == "":
		add("kind != ?", KindSignedHead)
	default:
		add("kind = ?", f.Kind)
	}
	return where, args, index
}

// globPrefix returns the literal part of a glob before its first wildcard.
func globPrefix(glob string) string {
	if i := strings.IndexAny(glob, "*?["); i >= 0 {
		return glob[:i]
	}
	return glob
}

// prefixEnd returns the least string greater than every string with the
// given prefix (in byte order), or false when there is none.
func prefixEnd(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// Export writes every row, in seq order, as JSON lines (one Record object
// per line, the format of `audit query --format json`).
func Export(ctx context.Context, path string, w io.Writer) error {
	c, err := openDatabase(path, modeReadOnly, readBusyTimeout)
	if err != nil {
		return err
	}
	defer c.close()
	out := newJSONFormatter(w)
	var rw row
	err = eachRow(ctx, c, "SELECT "+c.selectColumns()+" FROM decisions ORDER BY seq", nil, func(values []driver.Value) error {
		if err := rw.scan(values); err != nil {
			return err
		}
		r, err := rw.record()
		if err != nil {
			return err
		}
		return out.Write(r)
	})
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		return withError("export", path, err)
	}
	return nil
}
