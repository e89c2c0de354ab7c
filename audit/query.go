package audit

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
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
	switch f.Decision {
	case "", DecisionAllow, DecisionDeny, DecisionError:
	default:
		return fmt.Errorf("audit: query: decision %q is not allow, deny or error", f.Decision)
	}
	if f.Install != "" || f.Host != "" {
		return ErrFleetOnly
	}
	c, err := openDatabase(path, modeReadOnly, readBusyTimeout)
	if err != nil {
		return err
	}
	defer c.close()
	query, args := f.statement(c)
	var rw row
	err = eachRow(ctx, c, query, args, func(values []driver.Value) error {
		if err := rw.scan(values); err != nil {
			return err
		}
		r, err := rw.record()
		if err != nil {
			return err
		}
		return fn(r)
	})
	if err != nil {
		return withError("query", path, err)
	}
	return nil
}

// statement builds the SELECT for f. The index is chosen here rather than
// by the planner, which has no statistics: an exact subject uses
// decisions_subject (subject, then time in order); a time window uses
// decisions_time, which also tests the workload glob before the row is read;
// a glob with a literal prefix and no window scans that prefix's range of
// decisions_subject; a lease id uses decisions_lease (schema 3 on).
func (f Filter) statement(c *conn) (string, []any) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		where = append(where, cond)
		args = append(args, v)
	}
	window := !f.Since.IsZero() || !f.Until.IsZero()
	if !f.Since.IsZero() {
		add("time >= ?", clampUnixNano(f.Since))
	}
	if !f.Until.IsZero() {
		add("time < ?", clampUnixNano(f.Until))
	}
	index := "decisions_time"
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
	for _, eq := range [...]struct{ col, v string }{{"credential", f.Credential}, {"decision", f.Decision}, {"policy", f.Policy}} {
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
