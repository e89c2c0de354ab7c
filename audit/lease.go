package audit

import (
	"context"
	"fmt"
	"time"
)

// KindLease rows record the lifecycle of issued credentials, written by the
// broker's lease manager (Log.RecordLease) in the same chain as the
// decisions that handed them out. The row's decision column holds the
// event (LeaseIssue, …), and its lease_id, credential, subject, provider
// and expires_at columns the lease; its input holds the details
// ({"event":…,"replaces":…,"attempt":…,"error":…}). Never a secret.
const KindLease = "lease"

// Lease lifecycle events, the LeaseEvent.Event values.
const (
	LeaseIssue        = "issue"         // a provider minted the credential
	LeaseRefresh      = "refresh"       // issued ahead of the expiry of Replaces, which it replaces in the cache
	LeaseRenew        = "renew"         // the provider extended the lease; ExpiresAt is the new expiry
	LeaseRevoke       = "revoke"        // the provider ended the lease (or found it gone)
	LeaseRevokeFailed = "revoke_failed" // a revocation attempt failed; it is retried
)

// LeaseEvent is one lifecycle event of one lease.
type LeaseEvent struct {
	Event      string    // LeaseIssue, LeaseRefresh, LeaseRenew, LeaseRevoke or LeaseRevokeFailed
	Time       time.Time // when it happened; default Config.Now
	LeaseID    string    // required
	Credential string    // the configured credential name
	Subject    string    // the workload subject the lease was issued for
	Provider   string    // the provider kind
	ExpiresAt  time.Time // the lease's expiry (after a renewal, the new one); zero when unknown
	Replaces   string    // for LeaseRefresh: the lease it replaces
	Attempt    int       // for LeaseRevoke and LeaseRevokeFailed: which attempt, from 1
	Reason     string    // why, in words: the revocation's cause or failure; never a secret
}

// leaseDetails is the Input of a KindLease row.
type leaseDetails struct {
	Event    string `json:"event"`
	Replaces string `json:"replaces,omitempty"`
	Attempt  int    `json:"attempt,omitempty"`
}

// leaseReasons are the reason column's words for each event, followed by
// LeaseEvent.Reason when there is one.
var leaseReasons = map[string]string{
	LeaseIssue:        "lease issued",
	LeaseRefresh:      "lease issued ahead of the expiry of the one it replaces",
	LeaseRenew:        "lease renewed",
	LeaseRevoke:       "lease revoked",
	LeaseRevokeFailed: "lease revocation failed; it will be retried",
}

// newLeaseRow validates ev and converts it to a row.
func newLeaseRow(ev *LeaseEvent) (*row, error) {
	reason, ok := leaseReasons[ev.Event]
	if !ok {
		return nil, fmt.Errorf("%w: lease event %q is not one of issue, refresh, renew, revoke, revoke_failed", ErrInvalidRecord, ev.Event)
	}
	if ev.LeaseID == "" {
		return nil, fmt.Errorf("%w: lease event %s without a lease id", ErrInvalidRecord, ev.Event)
	}
	if ev.Reason != "" {
		reason += ": " + ev.Reason
	}
	rw, err := newEvent(KindLease, reason, ev.Time, leaseDetails{Event: ev.Event, Replaces: ev.Replaces, Attempt: ev.Attempt})
	if err != nil {
		return nil, err
	}
	rw.decision, rw.leaseID, rw.credential, rw.subject, rw.provider = ev.Event, ev.LeaseID, ev.Credential, ev.Subject, ev.Provider
	if !ev.ExpiresAt.IsZero() {
		if rw.expiresAt, err = unixNano("expires_at", ev.ExpiresAt); err != nil {
			return nil, err
		}
		rw.hasExpiry = true
	}
	return rw, nil
}

// RecordLease records a lease lifecycle event as a KindLease row, blocking
// until it is committed, with Append's guarantees and errors. Decisions
// are recorded with Append; RecordLease is for the lease manager.
func (l *Log) RecordLease(ctx context.Context, ev LeaseEvent) error {
	if ev.Time.IsZero() {
		ev.Time = l.cfg.Now()
	}
	rw, err := newLeaseRow(&ev)
	if err != nil {
		return err
	}
	return l.submit(ctx, rw)
}
