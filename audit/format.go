package audit

import (
	"bufio"
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
//   - "table": aligned columns TIME, DECISION (the kind, for rows other
//     than decisions), SUBJECT, CREDENTIAL, DATABASE, UPSTREAM_USER (of
//     database listeners), POLICY, REASON, DECISION_ID for
//     people; control characters are escaped so a
//     subject cannot rewrite the terminal; columns are aligned per block of
//     1,000 rows;
//   - "json": one Record object per line (see Record.MarshalJSON);
//   - "csv": a header, then every field of each record, claims and input as
//     JSON text, times in RFC 3339 with nanoseconds; columns added by later
//     releases (database, upstream_user) come last, so earlier ones keep
//     their positions.
func NewFormatter(w io.Writer, format string) (Formatter, error) {
	switch format {
	case FormatTable:
		return &tableFormatter{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}, nil
	case FormatJSON:
		return newJSONFormatter(w), nil
	case FormatCSV:
		return &csvFormatter{w: csv.NewWriter(w)}, nil
	}
	return nil, fmt.Errorf("audit: format %q: want table, json or csv", format)
}

// tableFormatter writes aligned columns.
type tableFormatter struct {
	tw     *tabwriter.Writer
	rows   int
	header bool
}

// Write implements Formatter.
func (f *tableFormatter) Write(r *Record) error {
	if !f.header {
		f.header = true
		if _, err := io.WriteString(f.tw, "TIME\tDECISION\tSUBJECT\tCREDENTIAL\tDATABASE\tUPSTREAM_USER\tPOLICY\tREASON\tDECISION_ID\n"); err != nil {
			return err
		}
	}
	decision := r.Decision
	switch r.Kind {
	case "", KindDecision:
	case KindLease:
		decision = KindLease + " " + r.Decision
	default:
		decision = r.Kind
	}
	cells := []string{r.Time.UTC().Format(timeLayout), decision, r.Subject, r.Credential, r.Database,
		r.UpstreamUser, r.Policy, r.Reason, r.DecisionID}
	for i, c := range cells {
		cells[i] = cell(c)
	}
	if _, err := io.WriteString(f.tw, strings.Join(cells, "\t")+"\n"); err != nil {
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
	"prev_hash", "hash", "kind", "database", "upstream_user"}

// csvFormatter writes CSV.
type csvFormatter struct {
	w      *csv.Writer
	header bool
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
	return f.w.Write([]string{strconv.FormatInt(r.Seq, 10), r.Time.UTC().Format(time.RFC3339Nano),
		r.DecisionID, r.Decision, r.Reason, r.Policy, r.PolicyVersion, r.Attestor, r.Subject, claims,
		strconv.FormatInt(r.PeerPID, 10), strconv.FormatInt(r.PeerUID, 10), r.Credential, r.Provider,
		r.Channel, r.TargetHost, r.Method, r.Path, r.LeaseID, expires, r.Fingerprint,
		strconv.FormatFloat(float64(r.Latency)/float64(time.Millisecond), 'f', -1, 64), string(r.Input),
		r.PrevHash, r.Hash, r.Kind, r.Database, r.UpstreamUser})
}

// Flush implements Formatter.
func (f *csvFormatter) Flush() error {
	f.w.Flush()
	return f.w.Error()
}
