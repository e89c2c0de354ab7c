package report

import (
	"errors"
	"fmt"
	"time"

	"github.com/credbroker/credbroker/audit"
)

// Status is the outcome of verifying a store's chain and checkpoints.
type Status int

// Statuses of a Verification.
const (
	// NotVerified: no verification ran, or it could not run (Summary says
	// why). The zero value.
	NotVerified Status = iota
	// Verified: the chain verifies and signed heads (and a checkpoint, when
	// one was given) prove its rows with the install's public key.
	Verified
	// SelfConsistent: the chain's hashes verify, but no signed head was
	// checked with a trusted key, so a rewrite that recomputed every hash
	// would pass.
	SelfConsistent
	// Failed: a row, the prune anchor, a signed head or the checkpoint does
	// not verify; Summary names it.
	Failed
)

// String names s as the report shows it.
func (s Status) String() string {
	switch s {
	case Verified:
		return "verified"
	case SelfConsistent:
		return "self-consistent only"
	case Failed:
		return "FAILED"
	}
	return "not verified"
}

// Verification is what the report says about the store's integrity: a
// status, a one-line summary (the verifier's own words) and the facts
// behind it as label and value pairs.
type Verification struct {
	Status  Status
	Summary string
	Details []Fact
}

// Fact is one labelled line of a Verification.
type Fact struct {
	Label, Value string
}

// FileVerification describes what audit.Verify returned for a single
// install's log: res and err as Verify returned them.
func FileVerification(res *audit.VerifyResult, err error) Verification {
	var failure *audit.Failure
	switch {
	case errors.As(err, &failure):
		v := Verification{Status: Failed, Summary: err.Error()}
		if res != nil {
			v.Details = append(v.Details, Fact{"Rows verified before the failure", fmt.Sprint(res.Rows)})
		}
		v.Details = append(v.Details, Fact{"Problem", failure.Problem.String()}, Fact{"At row", fmt.Sprint(failure.Seq)})
		if failure.DecisionID != "" {
			v.Details = append(v.Details, Fact{"Decision id", failure.DecisionID})
		}
		return v
	case err != nil:
		return Verification{Status: NotVerified, Summary: "the log could not be verified: " + err.Error()}
	case res == nil:
		return Verification{Status: NotVerified, Summary: "no verification result"}
	}
	v := Verification{Status: Verified, Summary: res.String()}
	if res.SignedHeads == 0 || res.KeySource == "" {
		v.Status = SelfConsistent
	}
	v.Details = []Fact{
		{"Rows verified", fmt.Sprintf("%d (%d decisions), seq %d to %d", res.Rows, res.Decisions, res.FirstSeq, res.HeadSeq)},
		{"Head hash", res.HeadHash},
	}
	switch {
	case res.SignedHeads == 0:
		v.Details = append(v.Details, Fact{"Signed heads", "none in the log"})
	case res.KeySource == "":
		v.Details = append(v.Details, Fact{"Signed heads", fmt.Sprintf("%d, not checked: no public key was given", res.SignedHeads)})
	default:
		s := fmt.Sprintf("%d checked with the %s; rows up to seq %d proven (signed %s)",
			res.SignedHeads, res.KeySource, res.SignedSeq, res.SignedTime.UTC().Format(timeLayout))
		if res.Unsigned > 0 {
			s += fmt.Sprintf("; %d rows after it not yet signed", res.Unsigned)
		}
		v.Details = append(v.Details, Fact{"Signed heads", s})
	}
	if res.Checkpoint != nil {
		v.Details = append(v.Details, Fact{"Checkpoint", fmt.Sprintf("reached: seq %d, signed %s",
			res.Checkpoint.Seq, res.Checkpoint.Time.UTC().Format(timeLayout))})
	} else {
		v.Details = append(v.Details, Fact{"Checkpoint", "none given: the log's newest rows could have been cut off unseen"})
	}
	if res.Anchor != nil {
		v.Details = append(v.Details, Fact{"Prune anchor", res.Anchor.Describe()})
	}
	return v
}

// timeLayout is how the report writes times: UTC, to the second.
const timeLayout = "2006-01-02 15:04:05 UTC"

// formatTime writes t in timeLayout, "—" when it is zero.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format(timeLayout)
}
