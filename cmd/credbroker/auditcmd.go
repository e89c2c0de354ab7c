package main

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/credbroker/credbroker/audit"
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
	fs.StringVar(&f.Kind, "kind", "", "rows of one kind: decision, lease, undelivered, override, signed_head, or all (default: every kind but signed_head)")
	fs.IntVar(&f.Limit, "limit", 0, "at most this many rows (0: all)")
	format := fs.String("format", "table", "table, json (one object per line) or csv")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
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
	out, err := audit.NewFormatter(c.stdout, *format)
	if err != nil {
		return c.usageErr("--format", err)
	}
	store := audit.OpenFile(*db)
	defer store.Close()
	if err := store.Query(context.Background(), f, out.Write); err != nil {
		return c.fail(err)
	}
	if err := out.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

func (c *cli) auditVerify(args []string) int {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	db := dbFlag(fs)
	var opts audit.VerifyOptions
	fs.StringVar(&opts.Checkpoint, "checkpoint", "", "signed checkpoint file the log must still reach")
	pub := fs.String("public-key", "", "checkpoint verification key file (base64 or PEM); default: the install's key file")
	fs.StringVar(&opts.KeyFile, "key-file", "", "the install's key file (default: the database path + .key)")
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
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
