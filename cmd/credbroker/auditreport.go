package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/audit/fleet"
	"github.com/credbroker/credbroker/audit/report"
)

// The audit report command's entry in the command table: summary, usage
// arguments, description and examples.
const (
	auditReportSummary = "write an HTML report of a window of decisions, for auditors"
	auditReportArgs    = "--output FILE [--db PATH | --fleet DSN] [--since 30d] [--until TIME] [flags]"
	auditReportAbout   = `Writes one self-contained HTML file — inline CSS and SVG charts, no script, no external
font, image or URL — that reads on screen and prints to PDF: the decisions over time by
outcome (allow, deny, error; per hour for windows up to 3 days, else per day), the top
workloads and credentials with counts and shares, denials and errors by reason, each policy
version that decided and when it was first and last seen (a policy's change shows as a new
version), lease lifecycle counts, every undelivered and override row, and the verification
of the log's chain, signed heads and checkpoint, as ` + "`audit verify`" + ` does it with the same flags.
Subjects, reasons and names from the log are escaped, and a value holding non-printing
characters is shown quoted. Times are UTC; the window is [--since, --until).

With --fleet (or --dsn-file) the report reads a fleet's central store: every install's rows,
or one install's with --install, with a table of installs and hosts, and the verification of
each install's chain and checkpoints in the store, as ` + "`audit verify --fleet`" + ` does it.

The file is replaced atomically (--output - writes to stdout). Exit 0 when the report is
written and the log verifies; 1 when the log does not verify (the report is still written and
says so in red), or when it could not be written.`
	auditReportExamples = `credbroker audit report --output audit-report.html
credbroker audit report --db /var/lib/credbroker/audit.db --since 2025-01-01T00:00:00Z \
    --until 2025-04-01T00:00:00Z --public-key broker.pub --checkpoint shipped/checkpoint.json \
    --output q1.html
# the last day, per hour
credbroker audit report --since 24h --output today.html
# the whole fleet
credbroker audit report --dsn-file /etc/credbroker/fleet-reader.dsn --since 30d --output fleet.html`
)

// auditReport runs `credbroker audit report`.
func (c *cli) auditReport(args []string) int {
	fs := flag.NewFlagSet("audit report", flag.ContinueOnError)
	db := dbFlag(fs)
	since := fs.String("since", "30d", "start of the window: a time (RFC 3339) or how long ago (24h, 30d)")
	until := fs.String("until", "", "end of the window, exclusive: a time or how long ago (default: now)")
	output := fs.String("output", "", "the HTML file to write, replaced atomically; - for stdout (required)")
	top := fs.Int("top", 10, "workloads and credentials listed by name before the rest are summed")
	var vopts audit.VerifyOptions
	fs.StringVar(&vopts.Checkpoint, "checkpoint", "", "signed checkpoint file the log must still reach")
	pub := fs.String("public-key", "", "the install's public key file (base64 or PEM) that proves signed heads and checkpoints; default: the install's key file")
	fs.StringVar(&vopts.KeyFile, "key-file", "", "the install's key file (default: the database path + .key)")
	ff := addFleetFlags(fs)
	install := fs.String("install", "", "with --fleet: report on one install (its id, as audit verify --fleet lists them)")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if *output == "" {
		return c.usageErr("--output", errors.New("is required: the HTML file to write, or - for stdout"))
	}
	if *top < 1 {
		return c.usageErr("--top", fmt.Errorf("%d: want 1 or more", *top))
	}
	now := time.Now()
	opts := report.Options{Generated: now, Until: now, Top: *top, Generator: "credbroker " + readBuildInfo().Version}
	var err error
	if opts.Since, err = audit.ParseTimeOrAgo(*since, now); err != nil {
		return c.usageErr("--since", err)
	}
	if *until != "" {
		if opts.Until, err = audit.ParseTimeOrAgo(*until, now); err != nil {
			return c.usageErr("--until", err)
		}
	}
	if !opts.Since.Before(opts.Until) {
		return c.usageErr("--since", fmt.Errorf("%s is not before the window's end %s", opts.Since.UTC().Format(time.RFC3339), opts.Until.UTC().Format(time.RFC3339)))
	}

	ctx := context.Background()
	var src *reportSource
	if ff.set() {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for _, name := range []string{"public-key", "key-file", "checkpoint"} {
			if given[name] {
				return c.usageErr("--"+name, errors.New("verifies one log: the fleet store verifies each install with the key it registered"))
			}
		}
		dsn, err := ff.resolve()
		if err != nil {
			return c.usageErr("--fleet", err)
		}
		src, err = fleetReportSource(ctx, dsn, *install)
		if err != nil {
			return c.fail(err)
		}
	} else {
		if *install != "" {
			return c.usageErr("--install", errors.New("selects an install of a fleet store: give --fleet or --dsn-file"))
		}
		if *pub != "" {
			if vopts.PublicKey, err = readPublicKey(*pub); err != nil {
				return c.fail(err)
			}
		}
		if src, err = fileReportSource(ctx, *db, vopts); err != nil {
			return c.fail(err)
		}
	}
	defer src.reader.Close()
	opts.Source, opts.Verification, opts.Install = src.name, src.verification, *install
	rep, err := report.Build(ctx, src.reader, opts)
	if err != nil {
		return c.fail(err)
	}
	if err := writeReport(*output, rep, c.stdout); err != nil {
		return c.fail(err)
	}
	status := c.stdout
	if *output == "-" {
		status = c.stderr
	}
	fmt.Fprintf(status, "wrote %s: %d decisions (%d allowed, %d denied, %d errors) from %s to %s; integrity: %s\n",
		*output, rep.Totals.Total(), rep.Totals.Allow, rep.Totals.Deny, rep.Totals.Error,
		rep.Since.Format(time.RFC3339), rep.Until.Format(time.RFC3339), rep.Verification.Status)
	if rep.Verification.Status == report.Failed {
		fmt.Fprintf(c.stderr, "credbroker: the log does not verify, as the report says: %s\n", rep.Verification.Summary)
		return 1
	}
	return 0
}

// reportSource is the store a report reads, how the report names it, and
// what verifying it found.
type reportSource struct {
	reader       audit.Reader
	name         string
	verification report.Verification
}

// fileReportSource opens one install's SQLite log and verifies it. An error
// means the log could not be verified at all (no database, an unreadable
// checkpoint or key); a log that does not verify is a source whose
// verification failed.
func fileReportSource(ctx context.Context, db string, opts audit.VerifyOptions) (*reportSource, error) {
	res, err := audit.Verify(ctx, db, opts)
	v := report.FileVerification(res, err)
	if v.Status == report.NotVerified {
		return nil, err
	}
	name := "audit log " + db
	if abs, err := filepath.Abs(db); err == nil {
		name = "audit log " + abs
	}
	if host, err := os.Hostname(); err == nil {
		name += " on host " + host
	}
	return &reportSource{reader: audit.OpenFile(db), name: name, verification: v}, nil
}

// fleetReportSource opens a fleet's central store and verifies each
// install's chain and checkpoints in it (or one install's).
func fleetReportSource(ctx context.Context, dsn, install string) (*reportSource, error) {
	s, err := fleet.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	res, err := s.Verify(ctx, fleet.VerifyOptions{Install: install})
	if err != nil {
		s.Close()
		return nil, err
	}
	name := "fleet store, " + dsnWhere(dsn)
	if install != "" {
		name += ", install " + install
	}
	return &reportSource{reader: s, name: name, verification: fleetVerification(res)}, nil
}

// fleetVerification sums up the verification of a fleet store's installs:
// failed when one fails, verified when every install's signed heads were
// checked with its registered key, one line per install.
func fleetVerification(res []*fleet.InstallResult) report.Verification {
	if len(res) == 0 {
		return report.Verification{Status: report.NotVerified, Summary: "the fleet store holds no install to verify"}
	}
	v := report.Verification{Status: report.Verified}
	failed := 0
	for _, r := range res {
		switch {
		case !r.OK():
			failed++
		case r.Chain.SignedHeads == 0 && v.Status == report.Verified:
			v.Status = report.SelfConsistent
		}
		v.Details = append(v.Details, report.Fact{Label: "Install " + shortID(r.Install), Value: r.String()})
	}
	switch {
	case failed > 0:
		v.Status = report.Failed
		v.Summary = fmt.Sprintf("%d of %d %s FAILED verification", failed, len(res), plural(len(res), "install"))
	case v.Status == report.SelfConsistent:
		v.Summary = fmt.Sprintf("%d %s verified; one or more holds no signed head, so its rows are proved self-consistent only", len(res), plural(len(res), "install"))
	default:
		v.Summary = fmt.Sprintf("%d %s verified: every chain, signed head and checkpoint with each install's registered key", len(res), plural(len(res), "install"))
	}
	return v
}

// shortID shortens an install id (64 hex digits) for a label; the full id
// follows in the value.
func shortID(id string) string {
	if len(id) > 16 {
		return id[:16] + "…"
	}
	return id
}

// readPublicKey reads an Ed25519 public key file, base64 or PEM.
func readPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := audit.ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("--public-key %s: %w", path, err)
	}
	return k, nil
}

// writeReport writes rep's HTML to path, atomically: into a new file
// beside it (mode 0644 less the umask, as a shell redirection makes it),
// renamed over it once complete. "-" writes to stdout.
func writeReport(path string, rep *report.Report, stdout io.Writer) error {
	if path == "-" {
		return rep.WriteHTML(stdout)
	}
	dir, base := filepath.Split(path)
	var tmp *os.File
	var err error
	for range 10 { // a name taken by another writer: try another
		tmp, err = os.OpenFile(filepath.Join(dir, "."+base+".tmp-"+rand.Text()[:8]), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	err = rep.WriteHTML(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing the report %s: %w", path, err)
	}
	return nil
}
