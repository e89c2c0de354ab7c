package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/credbroker/credbroker/audit"
)

// Options says what a report covers and how it names its source.
type Options struct {
	// Since and Until bound the window: rows at or after Since and before
	// Until. Both are required, Since before Until.
	Since, Until time.Time
	// Source names where the rows come from, as the report shows it: "audit
	// log /var/lib/credbroker/audit.db on host db-1". Never a secret (a DSN
	// without its password).
	Source string
	// Generator names the program and version that wrote the report.
	// Default "credbroker".
	Generator string
	// Generated is when the report was made. Default: time.Now().
	Generated time.Time
	// Verification is the result of verifying the store's chain and
	// checkpoints, which the caller runs (see FileVerification). The zero
	// value reports that nothing was verified.
	Verification Verification
	// Top is how many workloads and credentials the top tables list before
	// summing the rest. Default 10.
	Top int
	// Install limits a fleet store's report to one install's rows (see
	// audit.Filter.Install); "" for every row.
	Install string
}

// Limits of the tables, beyond which rows are summed into one.
const (
	// defaultTop is Options.Top's default.
	defaultTop = 10
	// maxReasons is how many reasons of denials and errors are listed.
	maxReasons = 25
	// maxNotices is how many undelivered and override rows are listed.
	maxNotices = 100
	// maxBuckets is how many bars the timeline has at most: beyond
	// maxBuckets days, a bar spans several days.
	maxBuckets = 400
	// hourlyUpTo is the longest window drawn per hour.
	hourlyUpTo = 72 * time.Hour
)

// Report is what one report shows: the tallies of the window's rows, and
// the facts about them the caller supplies. Build makes one; WriteHTML
// renders it.
type Report struct {
	Source       string
	Generator    string
	Generated    time.Time
	Since, Until time.Time
	Verification Verification

	// Step is the span of one bar of the timeline: an hour, a day, or
	// several days for windows longer than a year.
	Step time.Duration
	// Timeline has one bucket per Step from Since (rounded down to a whole
	// Step in UTC) to Until.
	Timeline []Bucket
	// Totals counts every decision in the window.
	Totals Counts
	// Rows counts the rows read, of every kind but signed heads.
	Rows int64

	// Workloads and Credentials rank subjects and credential names by
	// their decisions.
	Workloads, Credentials Ranking
	// Reasons lists the reasons of denials and errors, most frequent
	// first; OtherReasons sums those beyond the list (Count 0 when none).
	Reasons      []Reason
	OtherReasons Reason
	// Policies lists each version of each deciding policy, and each
	// version of the policy set that decided a default deny, by policy
	// and then first seen.
	Policies []PolicyVersion
	// Leases counts lease lifecycle rows by event (issue, refresh, renew,
	// revoke, revoke_failed), in that order.
	Leases []EventCount
	// Notices are the undelivered and override rows, oldest first, at
	// most maxNotices; NoticeCount counts them all.
	Notices     []Notice
	NoticeCount int64
	// Installs ranks the installs whose rows a fleet store returned,
	// empty for a single install's log.
	Installs []Install
}

// Counts are decisions by outcome.
type Counts struct {
	Allow, Deny, Error int64
}

// Total is the number of decisions counted.
func (c Counts) Total() int64 { return c.Allow + c.Deny + c.Error }

// add counts one decision.
func (c *Counts) add(decision string) {
	switch decision {
	case audit.DecisionAllow:
		c.Allow++
	case audit.DecisionDeny:
		c.Deny++
	default:
		c.Error++
	}
}

// plus returns the sum of c and d.
func (c Counts) plus(d Counts) Counts {
	return Counts{Allow: c.Allow + d.Allow, Deny: c.Deny + d.Deny, Error: c.Error + d.Error}
}

// Bucket is one bar of the timeline: the decisions from Start for one Step.
type Bucket struct {
	Start time.Time
	Counts
}

// Tally is the decisions of one name: a workload subject or a credential.
type Tally struct {
	Name string // "" for rows without one (a failed attestation has no subject)
	Counts
}

// Ranking is the top names by decisions, most first (ties by name), and
// the sum of the rest.
type Ranking struct {
	Top []Tally
	// Others sums the names beyond Top; OtherNames says how many.
	Others     Counts
	OtherNames int
	// Distinct is the number of names in all.
	Distinct int
}

// Reason is how often denials or errors gave one reason.
type Reason struct {
	Decision string // deny or error
	Reason   string
	Count    int64
	Last     time.Time // the newest row with it
	Example  string    // the decision id of that row
}

// PolicyVersion is one version of one policy as the decisions recorded it:
// when it was first and last seen deciding, and what it decided.
type PolicyVersion struct {
	// Policy names the deciding policy; "" for the policy set, whose
	// version default denies (no policy matched) record.
	Policy  string
	Version string
	First   time.Time
	Last    time.Time
	Counts
	// Replaced is the version of the same policy seen before this one in
	// the window, "" for the first.
	Replaced string
}

// EventCount is how many lease lifecycle rows recorded one event.
type EventCount struct {
	Event string
	Count int64
}

// Notice is one undelivered or override row: what an auditor must read.
type Notice struct {
	Time       time.Time
	Kind       string // audit.KindUndelivered or audit.KindOverride
	DecisionID string
	Reason     string
	Install    string
	Host       string
}

// Install is the rows one install of a fleet wrote in the window.
type Install struct {
	Install string
	Host    string
	First   time.Time
	Last    time.Time
	Rows    int64
	Counts
}

// Build reads the rows of r in the window (every kind but signed heads) and
// tallies them into a Report.
func Build(ctx context.Context, r audit.Reader, opts Options) (*Report, error) {
	if opts.Since.IsZero() || opts.Until.IsZero() {
		return nil, errors.New("report: the window needs a start and an end (Options.Since, Options.Until)")
	}
	if !opts.Since.Before(opts.Until) {
		return nil, fmt.Errorf("report: the window starts at %s, not before its end %s; give a start before the end",
			opts.Since.UTC().Format(time.RFC3339), opts.Until.UTC().Format(time.RFC3339))
	}
	if opts.Top < 0 {
		return nil, fmt.Errorf("report: top %d: want 1 or more rows (0 for the default, %d)", opts.Top, defaultTop)
	}
	t := newTally(opts)
	if err := r.Query(ctx, audit.Filter{Since: opts.Since, Until: opts.Until, Install: opts.Install}, t.add); err != nil {
		return nil, fmt.Errorf("report: reading the rows: %w", err)
	}
	return t.report(), nil
}

// tally accumulates the rows of one report.
type tally struct {
	rep         *Report
	top         int
	start       time.Time // Start of the first bucket
	workloads   map[string]*Counts
	credentials map[string]*Counts
	reasons     map[reasonKey]*Reason
	policies    map[policyKey]*PolicyVersion
	leases      map[string]int64
	installs    map[installKey]*Install
}

type reasonKey struct{ decision, reason string }

type policyKey struct{ policy, version string }

type installKey struct{ install, host string }

// newTally starts the tally of a report with opts (already checked).
func newTally(opts Options) *tally {
	rep := &Report{
		Source: opts.Source, Generator: cmp.Or(opts.Generator, "credbroker"), Generated: opts.Generated,
		Since: opts.Since.UTC(), Until: opts.Until.UTC(), Verification: opts.Verification,
	}
	if rep.Generated.IsZero() {
		rep.Generated = time.Now()
	}
	rep.Generated = rep.Generated.UTC()
	rep.Step = step(rep.Until.Sub(rep.Since))
	start := rep.Since.Truncate(rep.Step) // whole hours and days in UTC: the Unix epoch is midnight UTC
	n := int((rep.Until.Sub(start) + rep.Step - 1) / rep.Step)
	rep.Timeline = make([]Bucket, n)
	for i := range rep.Timeline {
		rep.Timeline[i].Start = start.Add(time.Duration(i) * rep.Step)
	}
	return &tally{
		rep: rep, top: cmp.Or(opts.Top, defaultTop), start: start,
		workloads: map[string]*Counts{}, credentials: map[string]*Counts{},
		reasons: map[reasonKey]*Reason{}, policies: map[policyKey]*PolicyVersion{},
		leases: map[string]int64{}, installs: map[installKey]*Install{},
	}
}

// step returns the span of one bar for a window of length d: an hour up to
// hourlyUpTo, else a day, else as many days as keep the bars within
// maxBuckets.
func step(d time.Duration) time.Duration {
	const day = 24 * time.Hour
	switch {
	case d <= hourlyUpTo:
		return time.Hour
	case d <= maxBuckets*day:
		return day
	}
	days := (d + maxBuckets*day - 1) / (maxBuckets * day)
	return days * day
}

// add tallies one row.
func (t *tally) add(r *audit.Record) error {
	if r.Kind == audit.KindSignedHead { // a store that returns them: not the reviewer's rows
		return nil
	}
	rep := t.rep
	rep.Rows++
	if r.Install != "" || r.Host != "" {
		t.install(r)
	}
	switch r.Kind {
	case "", audit.KindDecision:
	case audit.KindLease:
		t.leases[r.Decision]++
		return nil
	case audit.KindUndelivered, audit.KindOverride:
		rep.NoticeCount++
		if len(rep.Notices) < maxNotices {
			rep.Notices = append(rep.Notices, Notice{Time: r.Time.UTC(), Kind: r.Kind, DecisionID: r.DecisionID,
				Reason: r.Reason, Install: r.Install, Host: r.Host})
		}
		return nil
	default: // signed heads and kinds a later schema adds: not decisions
		return nil
	}
	rep.Totals.add(r.Decision)
	if i := int(r.Time.Sub(t.start) / rep.Step); i >= 0 && i < len(rep.Timeline) {
		rep.Timeline[i].add(r.Decision)
	}
	count(t.workloads, r.Subject, r.Decision)
	count(t.credentials, r.Credential, r.Decision)
	if r.Decision != audit.DecisionAllow {
		k := reasonKey{r.Decision, r.Reason}
		rs := t.reasons[k]
		if rs == nil {
			rs = &Reason{Decision: r.Decision, Reason: r.Reason}
			t.reasons[k] = rs
		}
		rs.Count++
		if !r.Time.Before(rs.Last) {
			rs.Last, rs.Example = r.Time.UTC(), r.DecisionID
		}
	}
	if r.PolicyVersion != "" { // "" when no policy was evaluated (the request failed before)
		k := policyKey{r.Policy, r.PolicyVersion}
		pv := t.policies[k]
		if pv == nil {
			pv = &PolicyVersion{Policy: r.Policy, Version: r.PolicyVersion, First: r.Time.UTC()}
			t.policies[k] = pv
		}
		pv.First, pv.Last = minTime(pv.First, r.Time.UTC()), maxTime(pv.Last, r.Time.UTC())
		pv.add(r.Decision)
	}
	return nil
}

// install tallies a fleet row's install.
func (t *tally) install(r *audit.Record) {
	k := installKey{r.Install, r.Host}
	in := t.installs[k]
	if in == nil {
		in = &Install{Install: r.Install, Host: r.Host, First: r.Time.UTC()}
		t.installs[k] = in
	}
	in.Rows++
	in.First, in.Last = minTime(in.First, r.Time.UTC()), maxTime(in.Last, r.Time.UTC())
	if r.Kind == "" || r.Kind == audit.KindDecision {
		in.add(r.Decision)
	}
}

// count adds a decision to name's counts in m.
func count(m map[string]*Counts, name, decision string) {
	c := m[name]
	if c == nil {
		c = &Counts{}
		m[name] = c
	}
	c.add(decision)
}

// report finishes the tally: ranks, sorts and caps the tables.
func (t *tally) report() *Report {
	rep := t.rep
	rep.Workloads = rank(t.workloads, t.top)
	rep.Credentials = rank(t.credentials, t.top)

	for _, rs := range t.reasons {
		rep.Reasons = append(rep.Reasons, *rs)
	}
	slices.SortFunc(rep.Reasons, func(a, b Reason) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Decision, b.Decision), cmp.Compare(a.Reason, b.Reason))
	})
	if len(rep.Reasons) > maxReasons {
		for _, rs := range rep.Reasons[maxReasons:] {
			rep.OtherReasons.Count += rs.Count
		}
		rep.Reasons = rep.Reasons[:maxReasons]
	}

	for _, pv := range t.policies {
		rep.Policies = append(rep.Policies, *pv)
	}
	slices.SortFunc(rep.Policies, func(a, b PolicyVersion) int {
		return cmp.Or(cmp.Compare(a.Policy, b.Policy), a.First.Compare(b.First), cmp.Compare(a.Version, b.Version))
	})
	for i := 1; i < len(rep.Policies); i++ {
		if rep.Policies[i].Policy == rep.Policies[i-1].Policy {
			rep.Policies[i].Replaced = rep.Policies[i-1].Version
		}
	}

	for _, ev := range []string{audit.LeaseIssue, audit.LeaseRefresh, audit.LeaseRenew, audit.LeaseRevoke, audit.LeaseRevokeFailed} {
		if n := t.leases[ev]; n > 0 {
			rep.Leases = append(rep.Leases, EventCount{Event: ev, Count: n})
			delete(t.leases, ev)
		}
	}
	var other []EventCount // events a later release adds
	for ev, n := range t.leases {
		other = append(other, EventCount{Event: ev, Count: n})
	}
	slices.SortFunc(other, func(a, b EventCount) int { return cmp.Compare(a.Event, b.Event) })
	rep.Leases = append(rep.Leases, other...)

	for _, in := range t.installs {
		rep.Installs = append(rep.Installs, *in)
	}
	slices.SortFunc(rep.Installs, func(a, b Install) int {
		return cmp.Or(cmp.Compare(b.Rows, a.Rows), cmp.Compare(a.Install, b.Install), cmp.Compare(a.Host, b.Host))
	})
	return rep
}

// rank returns the top names of m by decisions and the sum of the rest.
func rank(m map[string]*Counts, top int) Ranking {
	all := make([]Tally, 0, len(m))
	for name, c := range m {
		all = append(all, Tally{Name: name, Counts: *c})
	}
	slices.SortFunc(all, func(a, b Tally) int {
		return cmp.Or(cmp.Compare(b.Total(), a.Total()), cmp.Compare(a.Name, b.Name))
	})
	rk := Ranking{Distinct: len(all)}
	if len(all) > top {
		for _, tl := range all[top:] {
			rk.Others = rk.Others.plus(tl.Counts)
		}
		rk.OtherNames = len(all) - top
		all = all[:top]
	}
	rk.Top = all
	return rk
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
