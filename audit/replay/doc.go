// Package replay re-evaluates the decisions an audit log recorded under a
// proposed policy set and reports those whose outcome would change: what a
// policy change would have done to the requests the brokers actually
// served, before it is merged.
//
// Each decision row holds the policy input it was made on (identity,
// request and time; see policies.EncodeInput). Run reads the decision rows
// a Filter selects from any audit.Reader — one install's SQLite log or a
// fleet store — decodes each input with policies.DecodeInput, evaluates it
// under the proposed Set at its recorded time, and compares the outcome
// with the recorded one:
//
//   - allow rows, and error rows whose policy allowed before the provider
//     or the audit log failed (they record the deciding policy), are
//     compared as allows;
//   - deny rows are compared as denies;
//   - error rows without a recorded policy were refused before any policy
//     was evaluated (a malformed or unknown credential name, a malformed
//     request) and are counted as not evaluated;
//   - rows without a stored input (attestation failed, so there was no
//     identity to evaluate) and rows whose input does not decode are
//     counted, never skipped silently.
//
// Changes are grouped by credential, workload subject and deciding policy —
// the recorded policy for an allow that would be denied, the proposed one
// for a deny that would be allowed — with counts and the ids of the oldest
// decisions of each group.
//
// Usage:
//
//	set, err := policies.Compile(files)
//	rep, err := replay.Run(ctx, audit.OpenFile("/var/lib/credbroker/audit.db"), set, audit.Filter{Since: time.Now().Add(-7 * 24 * time.Hour)})
//	if rep.AllowToDeny > 0 {
//		for _, g := range rep.Changes { … }
//	}
package replay
