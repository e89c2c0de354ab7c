package audit

import (
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// countKey is a key rows can be counted by, and the field it reads.
type countKey struct {
	name  string
	value func(*Record) string
}

// countKeys are the keys rows can be counted by. decision is the table's:
// a decision's outcome, or the kind of another row.
var countKeys = [...]countKey{
	{"workload", func(r *Record) string { return r.Subject }},
	{"credential", func(r *Record) string { return r.Credential }},
	{"policy", func(r *Record) string { return r.Policy }},
	{"decision", shownDecision},
	{"channel", func(r *Record) string { return r.Channel }},
	{"database", func(r *Record) string { return r.Database }},
	{"attestor", func(r *Record) string { return r.Attestor }},
	{"install", func(r *Record) string { return r.Install }},
	{"host", func(r *Record) string { return r.Host }},
}

// maxCountKeys is how many keys a Counter groups by at most: each key once.
const maxCountKeys = len(countKeys)

// CountKeys returns the names of the keys a Counter can group by.
func CountKeys() []string {
	names := make([]string, len(countKeys))
	for i, k := range countKeys {
		names[i] = k.name
	}
	return names
}

// Count is one group of rows: the values of the keys it was grouped by,
// in the order they were named, and how many rows have them.
type Count struct {
	Values []string
	N      int64
}

// Counter counts rows by the values of some keys (CountKeys): workload
// (the subject), credential, policy, decision, channel, database,
// attestor, install and host. It reads rows from any Reader, so a fleet
// store's rows are counted as a single log's are.
type Counter struct {
	keys   []string
	values []func(*Record) string
	groups map[[maxCountKeys]string]int64
}

// NewCounter returns a Counter grouping by keys, in that order. An unknown
// key, a key named twice, or none is an error naming the keys.
func NewCounter(keys []string) (*Counter, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("audit: count by nothing: name one or more of %s", strings.Join(CountKeys(), ", "))
	}
	c := &Counter{keys: keys, groups: map[[maxCountKeys]string]int64{}}
	for i, k := range keys {
		j := slices.IndexFunc(countKeys[:], func(ck countKey) bool { return ck.name == k })
		if j < 0 {
			return nil, fmt.Errorf("audit: cannot count by %q: want one or more of %s", k, strings.Join(CountKeys(), ", "))
		}
		if slices.Contains(keys[:i], k) {
			return nil, fmt.Errorf("audit: count by %q twice", k)
		}
		c.values = append(c.values, countKeys[j].value)
	}
	return c, nil
}

// Keys returns the keys c groups by, in order.
func (c *Counter) Keys() []string { return slices.Clone(c.keys) }

// Add counts r. Its signature suits Reader.Query.
func (c *Counter) Add(r *Record) error {
	var g [maxCountKeys]string
	for i, v := range c.values {
		g[i] = v(r)
	}
	c.groups[g]++
	return nil
}

// Counts returns the groups, the largest first, groups of the same size by
// their values in byte order.
func (c *Counter) Counts() []Count {
	counts := make([]Count, 0, len(c.groups))
	for g, n := range c.groups {
		counts = append(counts, Count{Values: slices.Clone(g[:len(c.keys)]), N: n})
	}
	slices.SortFunc(counts, func(a, b Count) int {
		if n := cmp.Compare(b.N, a.N); n != 0 {
			return n
		}
		return slices.Compare(a.Values, b.Values)
	})
	return counts
}

// CountBy counts the rows of r that f selects by keys (see Counter).
func CountBy(ctx context.Context, r Reader, f Filter, keys []string) ([]Count, error) {
	c, err := NewCounter(keys)
	if err != nil {
		return nil, err
	}
	if err := r.Query(ctx, f, c.Add); err != nil {
		return nil, err
	}
	return c.Counts(), nil
}

// WriteCounts writes counts grouped by keys in format:
//
//   - "table": a column per key, upper-cased, then COUNT; an empty value
//     shows as "-", control characters are escaped as in the rows' table;
//   - "json": one object per line, each key with its value, then "count";
//   - "csv": a header of the keys and count, then a line per group, text
//     escaped with CSVText, the count a plain number.
func WriteCounts(w io.Writer, format string, keys []string, counts []Count) error {
	switch format {
	case FormatTable:
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		titles := make([]string, len(keys))
		for i, k := range keys {
			titles[i] = strings.ToUpper(k)
		}
		fmt.Fprintf(tw, "%s\tCOUNT\n", strings.Join(titles, "\t"))
		for _, c := range counts {
			cells := make([]string, len(c.Values))
			for i, v := range c.Values {
				cells[i] = cell(v)
			}
			fmt.Fprintf(tw, "%s\t%d\n", strings.Join(cells, "\t"), c.N)
		}
		return tw.Flush()
	case FormatJSON:
		out := newJSONFormatter(w)
		for _, c := range counts {
			b := []byte{'{'}
			for i, k := range keys {
				b = strconv.AppendQuote(b, k)
				b = append(b, ':')
				v, err := json.Marshal(c.Values[i])
				if err != nil {
					return err
				}
				b = append(append(b, v...), ',')
			}
			b = strconv.AppendInt(append(b, `"count":`...), c.N, 10)
			out.w.Write(append(b, '}', '\n'))
		}
		return out.Flush()
	case FormatCSV:
		cw := csv.NewWriter(w)
		cw.Write(append(slices.Clone(keys), "count"))
		for _, c := range counts {
			line := make([]string, 0, len(keys)+1)
			for _, v := range c.Values {
				line = append(line, CSVText(v))
			}
			cw.Write(append(line, strconv.FormatInt(c.N, 10)))
		}
		cw.Flush()
		return cw.Error()
	}
	return fmt.Errorf("audit: format %q: want table, json or csv", format)
}
