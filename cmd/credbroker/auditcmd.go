package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/policies"
)

// dbFlag adds --db, defaulting to $CREDBROKER_AUDIT_DB or the default path.
func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("db", envOr("CREDBROKER_AUDIT_DB", defaultAuditPath), "audit database path")
}

func (c *cli) auditQuery(args []string) int {
	fs := flag.NewFlagSet("audit query", flag.ContinueOnError)
	db := dbFlag(fs)
	since := fs.String("since", "", "only decisions at or after this time (RFC 3339) or this long ago (1h)")
	until := fs.String("until", "", "only decisions before this time or this long ago")
	var f audit.Filter
	fs.StringVar(&f.Workload, "workload", "", "workload subject glob, e.g. 'unix:uid:*'")
	fs.StringVar(&f.Credential, "credential", "", "credential name")
	fs.StringVar(&f.Decision, "decision", "", "allow, deny or error")
	fs.StringVar(&f.Policy, "policy", "", "deciding policy name")
	fs.StringVar(&f.Lease, "lease", "", "lease id: the decision that issued it and the lease's lifecycle rows")
	fs.StringVar(&f.Database, "database", "", "database a database listener's client asked for (exact)")
	fs.StringVar(&f.Kind, "kind", "", "rows of one kind: decision, lease, undelivered, override, signed_head, or all (default: every kind but signed_head; decisions with --count-by)")
	fs.IntVar(&f.Limit, "limit", 0, "at most this many rows, or with --count-by groups, the largest first (0: all)")
	format := fs.String("format", "table", "table, json (one object per line) or csv")
	fleetFilterFlags(fs, &f)
	ff := addFleetFlags(fs)
	countBy := fs.String("count-by", "", "count rows per group instead of listing them: a comma-separated list of "+strings.Join(audit.CountKeys(), ", ")+", in the order given; largest group first")
	columns := fs.String("columns", "", "the table's columns, comma-separated (default "+strings.Join(audit.DefaultColumns(), ",")+"); any of "+strings.Join(audit.TableColumns(), ", "))
	follow := fs.Bool("follow", false, "after the matching rows, print each new matching row as it is written, as JSON lines (--format json is implied), until SIGINT or SIGTERM (exit 0)")
	fs.StringVar(&f.DecisionID, "decision-id", "", "show this one decision whole: every field, the policy input, and the recorded policy and reason, or with --policies the decision re-evaluated")
	policiesPath := fs.String("policies", "", "with --decision-id: re-evaluate the recorded input under this policy file or directory, explain-style")
	self := brokerSelfFlags(fs)
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	now := time.Now()
	var err error
	if *since != "" {
		if f.Since, err = audit.ParseTimeOrAgo(*since, now); err != nil {
			return c.usageErr("--since", err)
		}
	}
	if *until != "" {
		if f.Until, err = audit.ParseTimeOrAgo(*until, now); err != nil {
			return c.usageErr("--until", err)
		}
	}
	switch f.Decision {
	case "", "allow", "deny", "error":
	default:
		return c.usageErr("--decision", fmt.Errorf("%q: use allow, deny or error", f.Decision))
	}
	switch *format {
	case audit.FormatTable, audit.FormatJSON, audit.FormatCSV:
	default:
		return c.usageErr("--format", fmt.Errorf("%q: use table, json or csv", *format))
	}
	// Flags that do not go together, each pair named once.
	for _, x := range [...]struct{ a, b, why string }{
		{"follow", "count-by", "counts are final and following never ends"},
		{"follow", "decision-id", "one decision is written once"},
		{"follow", "limit", "a limit would end what never ends"},
		{"follow", "until", "rows written from now on are never before --until"},
		{"follow", "columns", "--follow prints JSON lines, which hold every field"},
		{"count-by", "columns", "counts have a column per --count-by key"},
		{"count-by", "decision-id", "one decision is one row"},
		{"decision-id", "columns", "--decision-id shows every field"},
		{"decision-id", "limit", "a decision id names one row"},
	} {
		if given[x.a] && given[x.b] {
			return c.usageErr("--"+x.a, fmt.Errorf("and --%s do not go together: %s", x.b, x.why))
		}
	}
	switch {
	case *follow && given["format"] && *format != audit.FormatJSON:
		return c.usageErr("--follow", fmt.Errorf("prints JSON lines; leave out --format %s", *format))
	case given["columns"] && *format != audit.FormatTable:
		return c.usageErr("--columns", fmt.Errorf("chooses the table's columns; --format %s has every field", *format))
	case given["decision-id"] && *format == audit.FormatCSV:
		return c.usageErr("--decision-id", fmt.Errorf("shows one decision as text or JSON: use --format table or json"))
	case *policiesPath != "" && !given["decision-id"]:
		return c.usageErr("--policies", fmt.Errorf("re-evaluates one decision: give --decision-id too (audit replay re-evaluates many)"))
	case given["decision-id"] && f.DecisionID == "":
		return c.usageErr("--decision-id", fmt.Errorf("is empty"))
	}
	store, code := c.openStore(*db, ff, f)
	if store == nil {
		return code
	}
	defer store.Close()
	switch {
	case *countBy != "":
		return c.queryCounts(store, f, *countBy, *format)
	case *follow:
		return c.queryFollow(store, f)
	case f.DecisionID != "":
		return c.queryDecision(store, f, *format, *policiesPath, self)
	}
	var out audit.Formatter
	if *format == audit.FormatTable {
		out, err = audit.NewTable(c.stdout, splitList(*columns))
		if err != nil {
			return c.usageErr("--columns", err)
		}
	} else if out, err = audit.NewFormatter(c.stdout, *format); err != nil {
		return c.usageErr("--format", err)
	}
	if err := store.Query(context.Background(), f, out.Write); err != nil {
		return c.fail(err)
	}
	if err := out.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

// splitList splits a comma-separated flag value, dropping spaces around
// each item; "" gives none.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items
}

// queryCounts prints the rows f selects counted by the keys in countBy.
// Without --kind it counts decisions: lease events and the log's own rows
// would otherwise count as workloads' requests. f.Limit caps the groups
// printed, the largest first, not the rows counted.
func (c *cli) queryCounts(store audit.Reader, f audit.Filter, countBy, format string) int {
	keys := splitList(countBy)
	counter, err := audit.NewCounter(keys)
	if err != nil {
		return c.usageErr("--count-by", err)
	}
	if f.Kind == "" {
		f.Kind = audit.KindDecision
	}
	limit := f.Limit
	f.Limit = 0
	if err := store.Query(context.Background(), f, counter.Add); err != nil {
		return c.fail(err)
	}
	counts := counter.Counts()
	if limit > 0 && len(counts) > limit {
		counts = counts[:limit]
	}
	if err := audit.WriteCounts(c.stdout, format, keys, counts); err != nil {
		return c.fail(err)
	}
	return 0
}

// queryFollow prints the rows f selects, then every new one as it is
// written, as JSON lines flushed as soon as the log has no more, until
// SIGINT or SIGTERM (exit 0). Rows deleted before they could be read are
// warned about on stderr; a log replaced or cut short under it ends it
// with exit 1.
func (c *cli) queryFollow(store audit.Reader, f audit.Filter) int {
	follower, ok := store.(audit.Follower)
	if !ok {
		return c.usageErr("--follow", errors.New("this store cannot be followed; follow each broker's log (--db)"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out, err := audit.NewFormatter(c.stdout, audit.FormatJSON)
	if err != nil {
		return c.fail(err)
	}
	opts := audit.FollowOptions{
		Caught: out.Flush,
		Gap: func(first, last int64) {
			fmt.Fprintf(c.stderr, "credbroker audit query: warning: rows %d to %d were deleted (pruned) before --follow could read them\n", first, last)
		},
	}
	if err := follower.Follow(ctx, f, opts, out.Write); err != nil {
		out.Flush()
		return c.fail(err)
	}
	if err := out.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

// decisionJSON is --decision-id's JSON: the row, and with --policies the
// decision re-evaluated.
type decisionJSON struct {
	Record      *audit.Record    `json:"record"`
	Reevaluated *explanationJSON `json:"reevaluated,omitempty"`
}

// queryDecision shows the one row with f.DecisionID whole. With
// policiesPath it decodes the row's stored input and re-evaluates it at
// its recorded time under those policies, as explain prints a decision;
// without, it prints what was recorded. Exit 1 when no row has the id.
func (c *cli) queryDecision(store audit.Reader, f audit.Filter, format, policiesPath string, self *policies.Self) int {
	f.Kind = audit.KindAll
	var rec *audit.Record
	err := store.Query(context.Background(), f, func(r *audit.Record) error {
		rec = r
		return nil
	})
	if err != nil {
		return c.fail(err)
	}
	if rec == nil {
		return c.fail(fmt.Errorf("no row has decision id %q (with these filters); list ids with audit query --format json, or check --db", f.DecisionID))
	}
	var set *policies.Set
	var ex policies.Explanation
	if policiesPath != "" {
		if set, err = loadPoliciesFor(self, policiesPath, nil); err != nil {
			for _, line := range problemLines(err) {
				fmt.Fprintln(c.stderr, line)
			}
			return 1
		}
		if len(rec.Input) == 0 {
			return c.fail(fmt.Errorf("decision %s recorded no policy input (its attestation failed, or it is not a decision): there is nothing to re-evaluate", rec.DecisionID))
		}
		in, err := policies.DecodeInput(rec.Input)
		if err != nil {
			return c.fail(fmt.Errorf("decision %s: %w", rec.DecisionID, err))
		}
		ex = set.Explain(in)
	}
	if format == audit.FormatJSON {
		out := decisionJSON{Record: rec}
		if set != nil {
			e := newExplanationJSON(set, ex)
			out.Reevaluated = &e
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(c.stdout, "%s\n", b)
		return 0
	}
	if err := audit.WriteDetail(c.stdout, rec); err != nil {
		return c.fail(err)
	}
	if set == nil {
		printRecorded(c.stdout, rec)
		return 0
	}
	fmt.Fprintf(c.stdout, "\nre-evaluated at its time (%s) under %s:\n", rec.Time.UTC().Format(time.RFC3339Nano), policiesPath)
	writeExplanation(c.stdout, set, ex)
	switch recorded := recordedEffect(rec); {
	case recorded == "":
	case recorded != string(ex.Effect):
		fmt.Fprintf(c.stdout, "\nchanged:    recorded %s, %s under %s\n", recorded, ex.Effect, policiesPath)
	default:
		fmt.Fprintf(c.stdout, "\nunchanged:  recorded %s, %s under %s\n", recorded, ex.Effect, policiesPath)
	}
	return 0
}

// recordedEffect is the policy outcome a row recorded: allow or deny, or
// allow for an error row whose policy allowed before the provider or the
// audit log failed; "" when no policy was evaluated.
func recordedEffect(r *audit.Record) string {
	switch {
	case r.Kind != "" && r.Kind != audit.KindDecision:
		return ""
	case r.Decision == audit.DecisionAllow, r.Decision == audit.DecisionDeny:
		return r.Decision
	case r.Policy != "":
		return audit.DecisionAllow
	}
	return ""
}

// printRecorded says what decided a row, as it was recorded, in explain's
// words: the deciding policy and its version, or the policy set's for a
// default deny.
func printRecorded(w io.Writer, r *audit.Record) {
	fmt.Fprintln(w, "\nas recorded (give --policies FILE|DIR to re-evaluate the input and see why each policy matched):")
	switch {
	case r.Kind != "" && r.Kind != audit.KindDecision:
		fmt.Fprintf(w, "  a %s row, not a decision: %s\n", r.Kind, r.Reason)
	case r.Policy != "":
		fmt.Fprintf(w, "  %s by policy %s (policy version %s): %s\n", r.Decision, r.Policy, r.DecidingPolicyVersion(), r.Reason)
	case r.PolicySetVersion() != "":
		fmt.Fprintf(w, "  %s: no policy matched, default deny under policy set version %s: %s\n", r.Decision, r.PolicySetVersion(), r.Reason)
	default:
		fmt.Fprintf(w, "  %s before any policy was evaluated: %s\n", r.Decision, r.Reason)
	}
}

func (c *cli) auditVerify(args []string) int {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	db := dbFlag(fs)
	var opts audit.VerifyOptions
	fs.StringVar(&opts.Checkpoint, "checkpoint", "", "signed checkpoint file the log must still reach")
	pub := fs.String("public-key", "", "checkpoint verification key file (base64 or PEM); default: the install's key file")
	fs.StringVar(&opts.KeyFile, "key-file", "", "the install's key file (default: the database path + .key)")
	ff := addFleetFlags(fs)
	install := fs.String("install", "", "with --fleet: verify this install only (default: every install)")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	switch {
	case ff.set() && (opts.Checkpoint != "" || *pub != "" || opts.KeyFile != ""):
		return c.usageErr("--fleet", fmt.Errorf("verifies with each install's key and checkpoints as the store holds them: leave out --checkpoint, --public-key and --key-file"))
	case ff.set():
		return c.auditVerifyFleet(ff, *install)
	case *install != "":
		return c.usageErr("--install", fmt.Errorf("verifies one install of a fleet store: give --fleet or --dsn-file"))
	}
	if *pub != "" {
		b, err := os.ReadFile(*pub)
		if err != nil {
			return c.fail(err)
		}
		k, err := audit.ParsePublicKey(b)
		if err != nil {
			return c.fail(err)
		}
		opts.PublicKey = ed25519.PublicKey(k)
	}
	res, err := audit.Verify(context.Background(), *db, opts)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, res)
	return 0
}

func (c *cli) auditExport(args []string) int {
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	db := dbFlag(fs)
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if err := audit.Export(context.Background(), *db, c.stdout); err != nil {
		return c.fail(err)
	}
	return 0
}

func (c *cli) auditPrune(args []string) int {
	fs := flag.NewFlagSet("audit prune", flag.ContinueOnError)
	db := dbFlag(fs)
	before := fs.String("before", "", "delete decisions older than this time (RFC 3339) or this long ago (720h) (required)")
	keyFile := fs.String("key-file", "", "the install's key file, to sign the new chain anchor (default: the database path + .key)")
	batch := fs.Int("batch", audit.DefaultPruneBatch, "rows deleted per transaction: larger is faster, and holds the write lock longer against a live broker")
	force := fs.Bool("force", false, "prune even rows newer than the retention floor (audit.min_retention); the signed anchor records it")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if *before == "" {
		return c.usageErr("--before", fmt.Errorf("is required"))
	}
	if *batch < 1 {
		return c.usageErr("--batch", fmt.Errorf("%d: want 1 or more rows", *batch))
	}
	t, err := audit.ParseTimeOrAgo(*before, time.Now())
	if err != nil {
		return c.usageErr("--before", err)
	}
	n, err := audit.Prune(context.Background(), *db, t, audit.PruneOptions{KeyFile: *keyFile, BatchSize: *batch, Force: *force})
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "pruned %d decisions before %s\n", n, t.UTC().Format(time.RFC3339))
	return 0
}

func (c *cli) auditPublicKey(args []string) int {
	fs := flag.NewFlagSet("audit public-key", flag.ContinueOnError)
	keyFile := fs.String("key-file", "", "the install's key file (required)")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if *keyFile == "" {
		return c.usageErr("--key-file", fmt.Errorf("is required"))
	}
	k, err := audit.PublicKeyFromFile(*keyFile)
	if err != nil {
		return c.fail(err)
	}
	b, err := audit.EncodePublicKey(k)
	if err != nil {
		return c.fail(err)
	}
	_, _ = c.stdout.Write(b)
	return 0
}

func (c *cli) usageErr(flagName string, err error) int {
	fmt.Fprintf(c.stderr, "credbroker: %s: %v\n", flagName, err)
	return exitUsage
}
