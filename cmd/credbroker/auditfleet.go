package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/audit/fleet"
)

// fleetFlags are the flags that point an audit command at a fleet's
// central store instead of one log: --fleet DSN or --dsn-file FILE.
type fleetFlags struct {
	fs      *flag.FlagSet
	dsn     *string
	dsnFile *string
}

// addFleetFlags adds --fleet and --dsn-file to fs.
func addFleetFlags(fs *flag.FlagSet) *fleetFlags {
	return &fleetFlags{
		fs:      fs,
		dsn:     fs.String("fleet", "", "the fleet's central store on PostgreSQL instead of --db: a postgres:// URL or key=value DSN (PGPASSWORD, ~/.pgpass and the other libpq variables fill in what it leaves out)"),
		dsnFile: fs.String("dsn-file", "", "like --fleet, with the DSN read from this file, which keeps a password out of the process list"),
	}
}

// set reports whether a fleet store was asked for.
func (ff *fleetFlags) set() bool { return *ff.dsn != "" || *ff.dsnFile != "" }

// resolve returns the DSN asked for, refusing --fleet with --dsn-file or
// --db.
func (ff *fleetFlags) resolve() (string, error) {
	given := map[string]bool{}
	ff.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	switch {
	case given["fleet"] && given["dsn-file"]:
		return "", errors.New("and --dsn-file both name the store: give one")
	case given["db"]:
		return "", errors.New("reads the fleet store, --db one log: give one")
	case *ff.dsnFile != "":
		return fleet.ReadDSN(*ff.dsnFile)
	}
	return *ff.dsn, nil
}

// fleetFilterFlags adds --install and --host, which only a fleet store
// answers, to fs.
func fleetFilterFlags(fs *flag.FlagSet, f *audit.Filter) {
	fs.StringVar(&f.Install, "install", "", "with --fleet: one install's rows (its id: the SHA-256 of its audit public key, as audit verify --fleet lists them)")
	fs.StringVar(&f.Host, "host", "", "with --fleet: the rows forwarded by this host (exact)")
}

// openStore returns the Reader the flags ask for: the fleet store, or the
// log at db. On failure it has reported the problem and returns the exit
// code.
func (c *cli) openStore(db string, ff *fleetFlags, f audit.Filter) (audit.Reader, int) {
	if !ff.set() {
		if f.Install != "" || f.Host != "" {
			return nil, c.usageErr("--install", errors.New("and --host select rows of a fleet store: give --fleet or --dsn-file"))
		}
		return audit.OpenFile(db), 0
	}
	dsn, err := ff.resolve()
	if err != nil {
		return nil, c.usageErr("--fleet", err)
	}
	s, err := fleet.Open(context.Background(), dsn)
	if err != nil {
		return nil, c.fail(err)
	}
	return s, 0
}

// auditVerifyFleet verifies every install of the fleet store (or one):
// one line per install on stdout, exit 1 when any fails.
func (c *cli) auditVerifyFleet(ff *fleetFlags, install string) int {
	dsn, err := ff.resolve()
	if err != nil {
		return c.usageErr("--fleet", err)
	}
	ctx := context.Background()
	s, err := fleet.Open(ctx, dsn)
	if err != nil {
		return c.fail(err)
	}
	defer s.Close()
	res, err := s.Verify(ctx, fleet.VerifyOptions{Install: install})
	if err != nil {
		return c.fail(err)
	}
	failed := 0
	for _, r := range res {
		fmt.Fprintln(c.stdout, r)
		if !r.OK() {
			failed++
		}
	}
	switch {
	case len(res) == 0:
		return c.fail(errors.New("the fleet store holds no install yet"))
	case failed > 0:
		return c.fail(fmt.Errorf("%d of %d %s FAILED verification", failed, len(res), plural(len(res), "install")))
	}
	return 0
}

// auditFleetInit creates or migrates the fleet store's schema.
func (c *cli) auditFleetInit(args []string) int {
	fs := flag.NewFlagSet("audit fleet-init", flag.ContinueOnError)
	ff := addFleetFlags(fs)
	if _, err := c.parse(fs, args); err != nil {
		return exitUsage
	}
	if !ff.set() {
		return c.usageErr("--fleet", errors.New("or --dsn-file is required: the store to create the schema in"))
	}
	dsn, err := ff.resolve()
	if err != nil {
		return c.usageErr("--fleet", err)
	}
	if err := fleet.Init(context.Background(), dsn); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "fleet schema version %d ready in %s\n", fleet.SchemaVersion, dsnWhere(dsn))
	return 0
}

// dsnWhere names the database a DSN points at, without its password.
func dsnWhere(dsn string) string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "the database"
	}
	return fmt.Sprintf("database %q on %s as %s", cfg.Database, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), cfg.User)
}

// plural returns word, with an s unless n is 1.
func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
