package lease

import (
	"context"
	"fmt"
	"math/bits"
	"time"

	"github.com/credbroker/credbroker/audit"
)

// Reasons recorded with revocations.
const (
	reasonExpired  = "expired"
	reasonLeftover = "left over from a previous run: owned by this install upstream but no longer tracked"
)

// Run revokes leases as they fall due — expired, released, or left over
// from a previous run — retrying failures with backoff, until ctx ends.
// It returns nil then, after every issue and revocation under way has
// finished; credentials asked for afterwards fail with ErrUnavailable.
// Leases still outstanding stay in the store for the next run.
func (m *Manager) Run(ctx context.Context) error {
	defer func() {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		m.stop()
		m.fetches.Wait()
	}()
	for {
		next := m.step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := idleWake
		if !next.IsZero() {
			wait = min(max(next.Sub(m.cfg.Now()), 0), idleWake)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
		case <-m.cfg.After(wait):
		}
	}
}

// step sweeps what has not been swept, revokes every lease that is due,
// drops expired cache entries, and returns when the next lease falls due
// (zero when none is known).
func (m *Manager) step(ctx context.Context) time.Time {
	m.sweep(ctx)
	next := m.revokeDue(ctx)
	m.prune()
	return next
}

// sweep asks each Sweeper once (again after a failure) for the leases this
// install owns upstream, and queues for revocation those the store does
// not hold. It waits for the credential's issues under way, and holds new
// ones back, from reading the store until the leftovers are queued: an
// issue's lease exists upstream before it is stored.
func (m *Manager) sweep(ctx context.Context) {
	m.mu.Lock()
	var todo []*Credential
	for name, c := range m.creds {
		if c.sweeper != nil && c.revoker != nil && !m.swept[name] {
			todo = append(todo, c)
		}
	}
	m.mu.Unlock()
	for _, c := range todo {
		if testHookSweepWaits != nil {
			testHookSweepWaits()
		}
		c.issuing.Lock()
		ok := m.sweepLeftovers(ctx, c)
		c.issuing.Unlock()
		if ok {
			m.mu.Lock()
			m.swept[c.name] = true
			m.mu.Unlock()
		}
	}
}

// sweepLeftovers queues for revocation the leases c's provider owns and
// the store does not hold. It reports whether all were queued.
func (m *Manager) sweepLeftovers(ctx context.Context, c *Credential) bool {
	known, err := m.cfg.Store.all(ctx)
	if err != nil {
		m.log.Warn("lease: sweep postponed: the lease store is unreadable", "error", err)
		return false
	}
	tracked := map[string]bool{}
	for _, st := range known {
		tracked[st.ID] = true
	}
	owned, err := c.sweeper.Owned(ctx)
	if err != nil {
		m.log.Warn("lease: sweep of leftovers postponed: the provider is unavailable", "credential", c.name, "error", err)
		return false
	}
	ok := true
	for _, l := range owned {
		if tracked[l.ID] {
			continue
		}
		if l.Credential == "" {
			l.Credential = c.name
		}
		if err := m.cfg.Store.schedule(ctx, l, m.cfg.Now(), reasonLeftover); err != nil {
			m.log.Warn("lease: leftover not queued", "credential", c.name, "lease_id", l.ID, "error", err)
			ok = false
		}
	}
	return ok
}

// revokeDue works through the store: revokes what is due, records
// revocations not yet recorded, and returns the next due time. It reads
// only the due rows (the store indexes expiries and retries).
func (m *Manager) revokeDue(ctx context.Context) time.Time {
	now := m.cfg.Now()
	rows, err := m.cfg.Store.due(ctx, now)
	if err != nil {
		m.log.Warn("lease: revocations postponed: the lease store is unreadable", "error", err)
		return now.Add(m.cfg.RetryMin)
	}
	var next time.Time
	due := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, st := range rows {
		if ctx.Err() != nil {
			return next
		}
		switch st.state {
		case stateActive:
			st.reason = reasonExpired
		case stateRevoked:
			if !m.recordRevoke(ctx, st) {
				due(m.cfg.Now().Add(m.backoff(1)))
			}
			continue
		}
		if t, retry := m.revoke(ctx, st); retry {
			due(t)
		}
	}
	later, counts, err := m.cfg.Store.nextDue(ctx)
	if err != nil {
		m.log.Warn("lease: the lease store is unreadable", "error", err)
		return m.cfg.Now().Add(m.cfg.RetryMin)
	}
	for state, n := range counts {
		m.metrics.outstanding.WithLabelValues(state).Set(float64(n))
	}
	if !later.IsZero() {
		due(later)
	}
	return next
}

// revoke makes one attempt at revoking st. retry reports that another
// attempt (or its recording) is due at t.
func (m *Manager) revoke(ctx context.Context, st stored) (t time.Time, retry bool) {
	m.mu.Lock()
	c := m.creds[st.Credential]
	m.mu.Unlock()
	attempt := st.attempts + 1
	var err error
	switch {
	case c == nil:
		err = fmt.Errorf("credential %q is no longer configured: its provider is unknown", st.Credential)
	case c.revoker == nil:
		// Nothing to do upstream: the lease ends at its expiry.
	default:
		err = c.revoker.Revoke(ctx, st.Lease)
	}
	now := m.cfg.Now()
	if err != nil {
		if ctx.Err() != nil {
			return time.Time{}, false // stopping; the next run resumes
		}
		m.metrics.revocations.WithLabelValues("failed").Inc()
		wait := m.backoff(attempt)
		if serr := m.cfg.Store.failed(ctx, st.ID, st.reason, attempt, now.Add(wait), err.Error()); serr != nil {
			m.log.Warn("lease: failed revocation not stored", "lease_id", st.ID, "error", serr)
		}
		// Attempts 1, 2, 4, 8, … are recorded and logged at warn, so that a
		// long outage does not flood either.
		if bits.OnesCount(uint(attempt)) == 1 {
			m.log.Warn("lease: revocation failed; retrying", "credential", st.Credential, "lease_id", st.ID, "attempt", attempt, "retry_in", wait, "error", err)
			if aerr := m.cfg.Audit.RecordLease(ctx, audit.LeaseEvent{Event: audit.LeaseRevokeFailed, LeaseID: st.ID, Credential: st.Credential, Subject: st.Subject, Provider: st.Kind, ExpiresAt: st.ExpiresAt, Attempt: attempt, Reason: err.Error()}); aerr != nil {
				m.log.Warn("lease: failed revocation not recorded in the audit log", "lease_id", st.ID, "error", aerr)
			}
		} else {
			m.log.Debug("lease: revocation failed; retrying", "credential", st.Credential, "lease_id", st.ID, "attempt", attempt, "error", err)
		}
		return now.Add(wait), true
	}
	m.metrics.revocations.WithLabelValues("ok").Inc()
	if err := m.cfg.Store.revoked(ctx, st.ID, attempt); err != nil {
		m.log.Warn("lease: revocation not stored; it will be repeated", "lease_id", st.ID, "error", err)
		return now.Add(m.backoff(1)), true
	}
	st.attempts = attempt
	if !m.recordRevoke(ctx, st) {
		return now.Add(m.backoff(1)), true
	}
	return time.Time{}, false
}

// recordRevoke writes the audit row of a revocation done upstream, then
// forgets the lease; false means the audit log did not take it yet.
func (m *Manager) recordRevoke(ctx context.Context, st stored) bool {
	ev := audit.LeaseEvent{Event: audit.LeaseRevoke, LeaseID: st.ID, Credential: st.Credential, Subject: st.Subject, Provider: st.Kind, ExpiresAt: st.ExpiresAt, Attempt: st.attempts, Reason: st.reason}
	if err := m.cfg.Audit.RecordLease(ctx, ev); err != nil {
		m.log.Warn("lease: revocation done but not yet recorded in the audit log; retrying", "lease_id", st.ID, "error", err)
		return false
	}
	if err := m.cfg.Store.remove(ctx, st.ID); err != nil {
		m.log.Warn("lease: revoked lease not forgotten; its revocation may be recorded twice", "lease_id", st.ID, "error", err)
	}
	return true
}

// prune drops cache entries whose credential expired and that nothing is
// waiting on.
func (m *Manager) prune() {
	now := m.cfg.Now()
	m.mu.Lock()
	creds := make([]*Credential, 0, len(m.creds))
	for _, c := range m.creds {
		creds = append(creds, c)
	}
	m.mu.Unlock()
	for _, c := range creds {
		c.mu.Lock()
		for k, e := range c.cache {
			if e.flight == nil && (e.cur == nil || !now.Before(e.cur.cred.ExpiresAt)) {
				if e.cur != nil && !e.cur.inUse() {
					delete(c.leases, e.cur.cred.ID)
				}
				delete(c.cache, k)
			}
		}
		c.mu.Unlock()
	}
}

// testHookSweepWaits, when set, is called as the sweep starts waiting for
// the issues under way.
var testHookSweepWaits func()
