package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/audit/replay"
)

// The audit replay command's entry in the command table: summary, usage
// arguments, description and examples.
const (
	replaySummary = "re-evaluate recorded decisions under proposed policies, report what would change"
	replayArgs    = "--policies FILE|DIR [--db PATH] [flags]"
	replayAbout   = `Reads the decisions of the window (--since, --until) from the audit log, evaluates the policy
input each one recorded — the identity, the request and the time, which conditions see as
now — under the proposed policies, and reports the decisions whose outcome would change:
allow→deny and deny→allow, grouped by credential, workload and deciding policy (the recorded
policy for an allow that would be denied, the proposed one for a deny that would be allowed),
with counts and the ids of the oldest decisions of each group. The same outcome by another
policy, or with another ttl, is not a change. The log may be live; run it in CI on a policy pull request against a copy of production's.

Every decision of the window is counted once:
  compared         allows and denies, and error rows that record a policy — the policy
                   allowed, then the provider or the audit log failed — which are compared
                   as allows, since the policy outcome is what a change of policies changes
  no stored input  the attestation failed: there was no identity to evaluate
  not evaluated    error rows refused before any policy was evaluated (a malformed or
                   unknown credential name, a malformed request)
  undecodable      inputs this version cannot read (the broker could not encode one, or a
                   newer release wrote it); counted and warned about, not compared

"uid: self" stands for the broker's uid: give --broker-uid when the log comes from a broker
running as another user than this command.

Exit codes:
  0  no recorded allow would become a deny (deny→allow changes are reported, and exit 0)
  1  the log or the policies cannot be read; policy problems as file:line: message
  2  usage: a command-line mistake
  9  a recorded allow would become a deny, unless --allow-changes`
	replayExamples = `credbroker audit replay --db /var/lib/credbroker/audit.db --policies policies/
# in CI: the last 30 days of production's decisions against the pull request's policies
credbroker audit replay --db prod-audit.db --policies policies/ --since 720h --format json > replay.json
# a change meant to take access away
credbroker audit replay --policies policies/ --allow-changes`
)

// exitAllowDenied is audit replay's exit code when a recorded allow would
// become a deny under the proposed policies and --allow-changes is not
// given.
const exitAllowDenied = 9

func (c *cli) auditReplay(args []string) int {
	fs := flag.NewFlagSet("audit replay", flag.ContinueOnError)
	db := dbFlag(fs)
	policiesPath := fs.String("policies", "", "the proposed policy file, or directory of *.yaml and *.yml files (required)")
	since := fs.String("since", "168h", `only decisions at or after this time (RFC 3339) or this long ago; "" for the whole log`)
	until := fs.String("until", "", "only decisions before this time or this long ago (default: now)")
	format := fs.String("format", "table", "table, or json (one document)")
	allowChanges := fs.Bool("allow-changes", false, "exit 0 even when a recorded allow would become a deny")
	self := brokerSelfFlags(fs)
	pos, err := c.parse(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		return c.usageErr(pos[0], fmt.Errorf("audit replay takes no arguments; name the policies with --policies"))
	}
	if *policiesPath == "" {
		return c.usageErr("--policies", fmt.Errorf("is required: the proposed policy file or directory"))
	}
	if *format != "table" && *format != "json" {
		return c.usageErr("--format", fmt.Errorf("%q: use table or json", *format))
	}
	now := time.Now()
	var f audit.Filter
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
	set, err := loadPoliciesFor(self, *policiesPath, nil)
	if err != nil {
		for _, line := range problemLines(err) {
			fmt.Fprintln(c.stderr, line)
		}
		return 1
	}
	store := audit.OpenFile(*db)
	defer store.Close()
	rep, err := replay.Run(context.Background(), store, set, f)
	if err != nil {
		return c.fail(err)
	}
	if *format == "json" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(c.stdout, "%s\n", b)
	} else {
		printReplay(c.stdout, rep, *policiesPath)
	}
	if rep.Undecodable > 0 {
		fmt.Fprintf(c.stderr, "credbroker audit replay: warning: %d decisions' stored inputs could not be decoded and were not compared\n", rep.Undecodable)
	}
	if rep.AllowToDeny > 0 {
		if *allowChanges {
			return 0
		}
		fmt.Fprintf(c.stderr, "credbroker audit replay: %d recorded allows would be denied under %s (exit %d; --allow-changes accepts them)\n", rep.AllowToDeny, *policiesPath, exitAllowDenied)
		return exitAllowDenied
	}
	return 0
}

// printReplay prints a replay report as people read it: the window and
// the counts, then one line per group of changed decisions.
func printReplay(w io.Writer, rep *replay.Report, policiesPath string) {
	from, to := "the first decision", "now"
	if !rep.Since.IsZero() {
		from = rep.Since.UTC().Format(time.RFC3339)
	}
	if !rep.Until.IsZero() {
		to = rep.Until.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "replayed %d decisions from %s to %s under %s (policy set version %s)\n", rep.Decisions, from, to, policiesPath, rep.PolicySetVersion)
	compared := ""
	if rep.ComparedErrors > 0 {
		compared = fmt.Sprintf("including %d error rows whose policy had allowed, compared as allows", rep.ComparedErrors)
	}
	for _, line := range []struct {
		what string
		n    int
		note string
	}{
		{"compared", rep.Compared, compared},
		{"unchanged", rep.Unchanged, ""},
		{"allow → deny", rep.AllowToDeny, ""},
		{"deny → allow", rep.DenyToAllow, ""},
		{"no stored input", rep.NoInput, "attestation failed: no identity to evaluate"},
		{"not evaluated", rep.NotEvaluated, "refused before any policy: malformed or unknown credential, malformed request"},
		{"undecodable input", rep.Undecodable, "not compared"},
	} {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %-17s %6d  %s", line.what, line.n, line.note), " "))
	}
	if len(rep.Changes) == 0 {
		fmt.Fprintln(w, "\nno decision would change")
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANGE\tCOUNT\tCREDENTIAL\tWORKLOAD\tPOLICY\tEXAMPLES\tPROPOSED REASON")
	for _, g := range rep.Changes {
		change := "allow → deny"
		if g.Change == replay.DenyToAllow {
			change = "deny → allow"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", change, g.Count, g.Credential, g.Subject, g.Policy, strings.Join(g.Examples, ","), g.Reason)
	}
	tw.Flush()
}
