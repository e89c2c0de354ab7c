package replay

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/policies"
)

// MaxExamples is the most decision ids a Group lists.
const MaxExamples = 3

// Change is how the outcome of a recorded decision would change.
type Change string

// The two changes Run reports. The same outcome decided by another policy,
// or with another ttl, is not a change.
const (
	AllowToDeny Change = "allow_to_deny"
	DenyToAllow Change = "deny_to_allow"
)

// Group counts the recorded decisions of one workload for one credential
// that would change the same way, under the same deciding policy.
type Group struct {
	Change     Change `json:"change"`
	Credential string `json:"credential"`
	// Subject is the workload subject the decisions recorded.
	Subject string `json:"subject"`
	// Policy is the recorded deciding policy of an allow that would be
	// denied, the proposed deciding policy of a deny that would be allowed.
	Policy string `json:"policy"`
	// Count is how many decisions of the window the group holds.
	Count int `json:"count"`
	// Examples are the ids of the group's oldest decisions, at most
	// MaxExamples, oldest first.
	Examples []string `json:"examples"`
	// Reason is the proposed decision's reason for the oldest decision of
	// the group, such as "no policy allows …" or "denied by policy …".
	Reason string `json:"reason"`
	// First and Last are the times of the group's oldest and newest
	// decisions.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// Report is what replaying a window of decisions under a proposed Set
// found. Every decision row read is counted exactly once among Compared,
// NoInput, NotEvaluated and Undecodable; every compared one among
// Unchanged, AllowToDeny and DenyToAllow.
type Report struct {
	// PolicySetVersion is the version (hash) of the proposed policy set.
	PolicySetVersion string `json:"policy_set_version"`
	// Since and Until are the Filter's window; zero when open.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// Decisions is how many decision rows the window holds.
	Decisions int `json:"decisions"`
	// Compared is how many were evaluated under the proposed Set and
	// compared with the recorded outcome.
	Compared int `json:"compared"`
	// ComparedErrors is how many of Compared are error rows whose policy
	// had allowed (the provider or the audit log failed afterwards),
	// compared as allows.
	ComparedErrors int `json:"compared_errors"`
	// Unchanged is how many compared decisions keep their outcome.
	Unchanged int `json:"unchanged"`
	// AllowToDeny and DenyToAllow count the decisions that would change.
	AllowToDeny int `json:"allow_to_deny"`
	DenyToAllow int `json:"deny_to_allow"`
	// NoInput counts rows without a stored input: the caller's attestation
	// failed, so no policy was evaluated.
	NoInput int `json:"no_input"`
	// NotEvaluated counts error rows with an input that were refused before
	// any policy was evaluated: a malformed or unknown credential name, a
	// malformed request.
	NotEvaluated int `json:"not_evaluated"`
	// Undecodable counts rows whose stored input policies.DecodeInput
	// refuses: the broker could not encode it, or it was written in a
	// format this version does not read.
	Undecodable int `json:"undecodable"`
	// Changes groups the changed decisions: allow→deny first, then by
	// count, largest first, then by credential, subject and policy.
	Changes []Group `json:"changes"`
}

// groupKey identifies a Group.
type groupKey struct {
	change                      Change
	credential, subject, policy string
}

// Run replays the decision rows r holds that f selects (rows of other
// kinds are never read, whatever f.Kind says) under set, and reports the
// decisions whose outcome would change. Each input is evaluated at its
// recorded time. It stops at ctx's end, or at the first error of r, and
// returns that error.
func Run(ctx context.Context, r audit.Reader, set *policies.Set, f audit.Filter) (*Report, error) {
	if set == nil {
		return nil, fmt.Errorf("replay: no policy set")
	}
	f.Kind = audit.KindDecision
	rep := &Report{PolicySetVersion: set.Version(), Since: f.Since, Until: f.Until, Changes: []Group{}}
	groups := map[groupKey]int{} // index in rep.Changes
	err := r.Query(ctx, f, func(rec *audit.Record) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		rep.Decisions++
		recorded, ok := rep.recordedOutcome(rec)
		if !ok {
			return nil
		}
		in, err := policies.DecodeInput(rec.Input)
		if err != nil {
			rep.Undecodable++
			return nil
		}
		d := set.EvaluateContext(ctx, in)
		if err := ctx.Err(); err != nil {
			// A condition interrupted by the context fails closed: that
			// decision says nothing about the proposed policies.
			return err
		}
		rep.Compared++
		if rec.Decision == audit.DecisionError {
			rep.ComparedErrors++
		}
		var key groupKey
		switch {
		case recorded == policies.Allow && !d.Allowed():
			rep.AllowToDeny++
			key = groupKey{AllowToDeny, rec.Credential, rec.Subject, rec.Policy}
		case recorded == policies.Deny && d.Allowed():
			rep.DenyToAllow++
			key = groupKey{DenyToAllow, rec.Credential, rec.Subject, d.Policy}
		default:
			rep.Unchanged++
			return nil
		}
		i, ok := groups[key]
		if !ok {
			i = len(rep.Changes)
			groups[key] = i
			rep.Changes = append(rep.Changes, Group{Change: key.change, Credential: key.credential, Subject: key.subject,
				Policy: key.policy, Reason: d.Reason, First: rec.Time, Examples: []string{}})
		}
		g := &rep.Changes[i]
		g.Count++
		g.Last = rec.Time
		if len(g.Examples) < MaxExamples {
			g.Examples = append(g.Examples, rec.DecisionID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	slices.SortStableFunc(rep.Changes, func(a, b Group) int {
		return cmp.Or(
			cmp.Compare(changeOrder(a.Change), changeOrder(b.Change)),
			cmp.Compare(b.Count, a.Count),
			cmp.Compare(a.Credential, b.Credential),
			cmp.Compare(a.Subject, b.Subject),
			cmp.Compare(a.Policy, b.Policy),
		)
	})
	return rep, nil
}

// recordedOutcome returns the policy outcome rec recorded, or counts rec
// as not comparable and returns false.
func (rep *Report) recordedOutcome(rec *audit.Record) (policies.Effect, bool) {
	if len(rec.Input) == 0 {
		rep.NoInput++
		return "", false
	}
	switch rec.Decision {
	case audit.DecisionAllow:
		return policies.Allow, true
	case audit.DecisionDeny:
		return policies.Deny, true
	case audit.DecisionError:
		// Only an allow reaches the provider; a refusal before the policy
		// was evaluated records none.
		if rec.Policy != "" {
			return policies.Allow, true
		}
	}
	rep.NotEvaluated++
	return "", false
}

// changeOrder puts allow→deny, the change that takes access away, first.
func changeOrder(c Change) int {
	if c == AllowToDeny {
		return 0
	}
	return 1
}
