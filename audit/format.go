package audit

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// Formatter writes records in one output format. Call Flush at the end.
type Formatter interface {
	// Write formats one record.
	Write(r *Record) error
	// Flush writes whatever is buffered.
	Flush() error
}

// Output formats of NewFormatter.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatCSV   = "csv"
)

// timeLayout is how the table and messages show times.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// tableBlock is how many rows the table aligns at a time, bounding memory.
const tableBlock = 1000

// NewFormatter returns a Formatter for format:
//
//   - "table": aligned columns for people, DefaultColumns unless NewTable
//     chooses others: TIME, DECISION (the kind, for rows other than
//     decisions), SUBJECT, CREDENTIAL, DATABASE, UPSTREAM_USER (of
//     database listeners), POLICY, REASON, DECISION_ID; control characters
//     are escaped so a subject cannot rewrite the terminal, and an empty
//     cell shows as "-"; columns are aligned per block of 1,000 rows;
//   - "json": one Record object per line (see Record.MarshalJSON);
//   - "csv": a header, then every field of each record, claims and input as
//     JSON text, times in RFC 3339 with nanoseconds; columns added by later
//     releases (database, upstream_user, policy_set_version, install, host)
//     come last, so earlier ones keep their positions. A text cell that a
//     spreadsheet would run as a formula is escaped (see CSVText); the
//     numeric columns (seq, peer_pid, peer_uid, latency_ms) are plain
//     numbers, never escaped, so an unknown peer_uid reads as the number -1.
func NewFormatter(w io.Writer, format string) (Formatter, error) {
	switch format {
	case FormatTable:
		return NewTable(w, nil)
	case FormatJSON:
		return newJSONFormatter(w), nil
	case FormatCSV:
		return &csvFormatter{w: csv.NewWriter(w)}, nil
	}
	return nil, fmt.Errorf("audit: format %q: want table, json or csv", format)
}

// column is one column the table can show.
type column struct {
	name  string // as NewTable names it: the JSON key where there is one
	value func(r *Record) string
}

// tableColumns are every column the table can show, in the order
// TableColumns lists them: every Record field, and exe and peer drawn from
// several.
var tableColumns = []column{
	{"time", func(r *Record) string { return r.Time.UTC().Format(timeLayout) }},
	{"seq", func(r *Record) string { return strconv.FormatInt(r.Seq, 10) }},
	{"kind", func(r *Record) string { return cmpOr(r.Kind, KindDecision) }},
	{"decision", shownDecision},
	{"decision_id", func(r *Record) string { return r.DecisionID }},
	{"reason", func(r *Record) string { return r.Reason }},
	{"policy", func(r *Record) string { return r.Policy }},
	{"policy_version", (*Record).DecidingPolicyVersion},
	{"policy_set_version", (*Record).PolicySetVersion},
	{"attestor", func(r *Record) string { return r.Attestor }},
	{"subject", func(r *Record) string { return r.Subject }},
	{"claims", func(r *Record) string { return compactJSON(r.Claims) }},
	{"exe", (*Record).Exe},
	{"peer", peer},
	{"peer_pid", func(r *Record) string { return knownInt(r.PeerPID, 0) }},
	{"peer_uid", func(r *Record) string { return knownInt(r.PeerUID, -1) }},
	{"credential", func(r *Record) string { return r.Credential }},
	{"provider", func(r *Record) string { return r.Provider }},
	{"channel", func(r *Record) string { return r.Channel }},
	{"target_host", func(r *Record) string { return r.TargetHost }},
	{"method", func(r *Record) string { return r.Method }},
	{"path", func(r *Record) string { return r.Path }},
	{"database", func(r *Record) string { return r.Database }},
	{"upstream_user", func(r *Record) string { return r.UpstreamUser }},
	{"lease_id", func(r *Record) string { return r.LeaseID }},
	{"expires_at", func(r *Record) string { return shownTime(r.ExpiresAt) }},
	{"fingerprint", func(r *Record) string { return r.Fingerprint }},
	{"latency_ms", func(r *Record) string { return strconv.FormatFloat(latencyMS(r.Latency), 'f', 3, 64) }},
	{"input", func(r *Record) string { return string(r.Input) }},
	{"prev_hash", func(r *Record) string { return r.PrevHash }},
	{"hash", func(r *Record) string { return r.Hash }},
	{"install", func(r *Record) string { return r.Install }},
	{"host", func(r *Record) string { return r.Host }},
}

// columnAliases are shorter names NewTable also accepts.
var columnAliases = map[string]string{
	"workload": "subject", "target": "target_host", "lease": "lease_id", "expiry": "expires_at",
	"latency": "latency_ms",
}

// DefaultColumns returns the table's columns when none are chosen.
func DefaultColumns() []string {
	return []string{"time", "decision", "subject", "credential", "database", "upstream_user", "policy", "reason", "decision_id"}
}

// TableColumns returns the name of every column NewTable can show, in a
// stable order. The names are the JSON keys of the fields they show (see
// Record.MarshalJSON), and:
//
//   - decision is a decision's outcome, or the kind of another row ("lease
//     issue" for a lease event);
//   - exe is the caller's executable: the exe claim of a unix identity, or
//     of the unix peer behind a token identity (from the input);
//   - peer is "pid=N uid=N" of the unix peer, either part left out when
//     unknown;
//   - latency_ms is in milliseconds, to the microsecond.
//
// NewTable also takes workload for subject, target for target_host, lease
// for lease_id, expiry for expires_at and latency for latency_ms.
func TableColumns() []string {
	names := make([]string, len(tableColumns))
	for i, c := range tableColumns {
		names[i] = c.name
	}
	return names
}

// NewTable returns a table Formatter (see NewFormatter) showing the named
// columns in the given order, DefaultColumns when names is empty. A name
// that is not a column is an error listing the columns.
func NewTable(w io.Writer, names []string) (Formatter, error) {
	if len(names) == 0 {
		names = DefaultColumns()
	}
	f := &tableFormatter{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	titles := make([]string, len(names))
	for i, name := range names {
		c, ok := findColumn(name)
		if !ok {
			return nil, fmt.Errorf("audit: no column %q: want one or more of %s (or workload, target, lease, expiry, latency)",
				name, strings.Join(TableColumns(), ", "))
		}
		f.columns = append(f.columns, c)
		titles[i] = strings.ToUpper(c.name)
	}
	f.header = strings.Join(titles, "\t") + "\n"
	return f, nil
}

// findColumn returns the column name or its alias names.
func findColumn(name string) (column, bool) {
	if n, ok := columnAliases[name]; ok {
		name = n
	}
	for _, c := range tableColumns {
		if c.name == name {
			return c, true
		}
	}
	return column{}, false
}

// tableFormatter writes aligned columns.
type tableFormatter struct {
	tw      *tabwriter.Writer
	columns []column
	header  string // written before the first row, then ""
	rows    int
	cells   []string
}

// Write implements Formatter.
func (f *tableFormatter) Write(r *Record) error {
	if f.header != "" {
		if _, err := io.WriteString(f.tw, f.header); err != nil {
			return err
		}
		f.header = ""
	}
	f.cells = f.cells[:0]
	for _, c := range f.columns {
		f.cells = append(f.cells, cell(c.value(r)))
	}
	if _, err := io.WriteString(f.tw, strings.Join(f.cells, "\t")+"\n"); err != nil {
		return err
	}
	if f.rows++; f.rows%tableBlock == 0 {
		return f.tw.Flush()
	}
	return nil
}

// Flush implements Formatter.
func (f *tableFormatter) Flush() error {
	return f.tw.Flush()
}

// WriteDetail writes one row whole, for people: every field on a line of
// its own, named as in TableColumns (peer for peer_pid and peer_uid;
// install and host only when set), times with nanoseconds, then the policy
// input, pretty-printed. Control characters are escaped as in the table,
// and an empty field shows as "-".
func WriteDetail(w io.Writer, r *Record) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, c := range tableColumns {
		v := c.value(r)
		switch c.name {
		case "input":
			if len(r.Input) > 0 {
				continue // pretty-printed below
			}
		case "peer_pid", "peer_uid":
			continue
		case "install", "host":
			if v == "" {
				continue
			}
		case "time":
			v = r.Time.UTC().Format(time.RFC3339Nano)
		case "expires_at":
			if !r.ExpiresAt.IsZero() {
				v = r.ExpiresAt.UTC().Format(time.RFC3339Nano)
			}
		case "latency_ms":
			v = strconv.FormatFloat(latencyMS(r.Latency), 'f', -1, 64)
		}
		if _, err := fmt.Fprintf(tw, "%s\t%s\n", c.name, cell(v)); err != nil {
			return err
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Input) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Indent(&b, r.Input, "  ", "  "); err != nil {
		b.Reset()
		b.WriteString(strconv.QuoteToGraphic(string(r.Input)))
	}
	_, err := fmt.Fprintf(w, "input\n  %s\n", b.Bytes())
	return err
}

// shownDecision is the table's decision column: a decision's outcome, a
// lease event as "lease EVENT", the kind of any other row.
func shownDecision(r *Record) string {
	switch r.Kind {
	case "", KindDecision:
		return r.Decision
	case KindLease:
		return KindLease + " " + r.Decision
	}
	return r.Kind
}

// peer shows the unix peer's pid and uid, each where known.
func peer(r *Record) string {
	var parts []string
	if r.PeerPID != 0 {
		parts = append(parts, "pid="+strconv.FormatInt(r.PeerPID, 10))
	}
	if r.PeerUID != -1 {
		parts = append(parts, "uid="+strconv.FormatInt(r.PeerUID, 10))
	}
	return strings.Join(parts, " ")
}

// knownInt formats n, or "" when it is unknown.
func knownInt(n, unknown int64) string {
	if n == unknown {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

// shownTime formats t for the table, "" when it is zero.
func shownTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

// compactJSON encodes claims as one line, "" when there are none.
func compactJSON(claims map[string]any) string {
	if len(claims) == 0 {
		return ""
	}
	b, err := json.Marshal(claims)
	if err != nil {
		return fmt.Sprintf("(claims not encodable: %v)", err)
	}
	return string(b)
}

// cmpOr returns s, or def when s is empty.
func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// latencyMS is d in fractional milliseconds.
func latencyMS(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// cell makes s safe for one table cell: "-" when empty, quoted with escapes
// when it holds tabs, newlines or other non-printing characters.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || r == '\t' }) >= 0 {
		return strconv.QuoteToGraphic(s)
	}
	return s
}

// jsonFormatter writes JSON lines.
type jsonFormatter struct {
	w *bufio.Writer
}

func newJSONFormatter(w io.Writer) *jsonFormatter {
	return &jsonFormatter{w: bufio.NewWriter(w)}
}

// Write implements Formatter.
func (f *jsonFormatter) Write(r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f.w.Write(b)
	return f.w.WriteByte('\n')
}

// Flush implements Formatter.
func (f *jsonFormatter) Flush() error {
	return f.w.Flush()
}

// csvHeader names the CSV columns, as in JSON. New columns go at the end,
// so that a consumer reading columns by position keeps working.
var csvHeader = []string{"seq", "time", "decision_id", "decision", "reason", "policy", "policy_version",
	"attestor", "subject", "claims", "peer_pid", "peer_uid", "credential", "provider", "channel",
	"target_host", "method", "path", "lease_id", "expires_at", "fingerprint", "latency_ms", "input",
	"prev_hash", "hash", "kind", "database", "upstream_user", "policy_set_version", "install", "host"}

// csvFormatter writes CSV.
type csvFormatter struct {
	w      *csv.Writer
	header bool
	cells  []string
}

// Write implements Formatter.
func (f *csvFormatter) Write(r *Record) error {
	if !f.header {
		f.header = true
		if err := f.w.Write(csvHeader); err != nil {
			return err
		}
	}
	claims := ""
	if len(r.Claims) > 0 {
		b, err := json.Marshal(r.Claims)
		if err != nil {
			return err
		}
		claims = string(b)
	}
	expires := ""
	if !r.ExpiresAt.IsZero() {
		expires = r.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	f.cells = append(f.cells[:0], strconv.FormatInt(r.Seq, 10))
	f.text(r.Time.UTC().Format(time.RFC3339Nano), r.DecisionID, r.Decision, r.Reason, r.Policy,
		r.DecidingPolicyVersion(), r.Attestor, r.Subject, claims)
	f.cells = append(f.cells, strconv.FormatInt(r.PeerPID, 10), strconv.FormatInt(r.PeerUID, 10))
	f.text(r.Credential, r.Provider, r.Channel, r.TargetHost, r.Method, r.Path, r.LeaseID, expires, r.Fingerprint)
	f.cells = append(f.cells, strconv.FormatFloat(latencyMS(r.Latency), 'f', -1, 64))
	f.text(string(r.Input), r.PrevHash, r.Hash, r.Kind, r.Database, r.UpstreamUser, r.PolicySetVersion(),
		r.Install, r.Host)
	return f.w.Write(f.cells)
}

// text appends text cells, escaped with CSVText.
func (f *csvFormatter) text(cells ...string) {
	for _, c := range cells {
		f.cells = append(f.cells, CSVText(c))
	}
}

// Flush implements Formatter.
func (f *csvFormatter) Flush() error {
	f.w.Flush()
	return f.w.Error()
}

// CSVText escapes a text cell of CSV output against formula injection, as
// OWASP recommends: a cell that begins with =, +, -, @, a tab or a carriage
// return, which a spreadsheet may run as a formula (a subject or reason
// chosen by a caller could be "=HYPERLINK(…)"), gets a leading apostrophe,
// which spreadsheets show as text and do not display. So does a cell that
// begins with an apostrophe, so that the escape reads back one way: drop
// the first character of a cell that begins with an apostrophe to get the
// value. Every other cell is returned as it is.
func CSVText(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r', '\'':
		return "'" + s
	}
	return s
}
