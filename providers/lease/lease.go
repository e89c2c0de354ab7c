// Package lease manages the lifecycle of the credentials providers mint:
// one Manager wraps any provider (in the spirit of aws-sdk-go-v2's
// CredentialsCache) and
//
//   - caches a credential per (workload subject, credential, policy TTL
//     cap), so that repeated requests reuse it;
//   - collapses concurrent requests for the same key into one upstream
//     call;
//   - refreshes ahead of expiry: the first request after RefreshAt of the
//     lifetime has passed (default half) starts a new issue — or a renewal,
//     for a provider that is a providers.Renewer — and gets the current
//     credential meanwhile; if the provider is down, the current credential
//     is served until it expires, so an outage shorter than its remaining
//     lifetime is invisible to callers, and a longer one fails with
//     ErrUnavailable;
//   - never serves an expired credential;
//   - records every issue, refresh, renewal, revocation and failed
//     revocation in the audit log (audit.LeaseEvent rows in the decisions'
//     chain), never a secret;
//   - revokes the leases of providers that are a providers.Revoker when
//     they expire, and at once when the decision that obtained a freshly
//     minted credential could not be recorded (Settle): such a credential
//     is never left alive unrecorded;
//   - keeps revocations in a durable queue (Store, the broker's own SQLite
//     state, not the audit chain), retried with backoff until they succeed,
//     resumed after a restart, and at start revokes what a providers.Sweeper
//     finds upstream that this install owns but no longer tracks.
//
// Usage:
//
//	store, err := lease.OpenStore(ctx, "/var/lib/credbroker/leases.db")
//	m, err := lease.New(lease.Config{Store: store, Audit: auditLog, Logger: log})
//	ordersDB, err := m.Add("orders-db", postgresProvider) // give ordersDB to the broker
//	go m.Run(ctx) // revocations; returns nil when ctx ends, with every fetch joined
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/providers"
)

// Provider issues credentials; it is what the manager wraps.
type Provider interface {
	Credential(ctx context.Context, req providers.Request) (providers.Credential, error)
}

// Recorder records lease lifecycle events, committed before it returns: the
// audit log.
type Recorder interface {
	RecordLease(ctx context.Context, ev audit.LeaseEvent) error
}

// ErrUnavailable is wrapped by every failure to hand out a credential: the
// provider failed and nothing unexpired is cached, the event could not be
// recorded, or the manager has stopped.
var ErrUnavailable = errors.New("lease: credential unavailable")

// Error is a failure to hand out a credential. Reason says, in words safe
// to show the caller, what failed; Err is the cause, for the log. It wraps
// ErrUnavailable and the cause.
type Error struct {
	Credential string
	Reason     string
	Err        error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("lease: credential %q: %s", e.Credential, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap gives ErrUnavailable and the cause.
func (e *Error) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// CallerReason is the part of the error a caller may see.
func (e *Error) CallerReason() string { return e.Reason }

// Reasons of Error.
const (
	reasonStopping   = "the broker is shutting down"
	reasonProvider   = "its provider failed and no unexpired credential is cached"
	reasonUnusable   = "its provider returned a credential without a lease id or already expired"
	reasonStore      = "the lease store cannot record it; no credential was issued"
	reasonAuditIssue = "the audit log cannot record its issue; no credential was issued"
)

// reasonSessionsOver is why a lease used only by sessions is revoked
// before its expiry.
const reasonSessionsOver = "its last session ended and a newer credential is cached"

// Defaults of Config.
const (
	DefaultRefreshAt    = 0.5
	DefaultFetchTimeout = 30 * time.Second
	DefaultRetryMin     = time.Second
	DefaultRetryMax     = time.Minute
	// idleWake bounds how long Run sleeps with nothing due, so that caches
	// of subjects that stopped asking are dropped.
	idleWake = time.Minute
)

// Config configures a Manager.
type Config struct {
	// Store holds revocable leases and the revocation queue. Required.
	Store *Store
	// Audit records lifecycle events. Required.
	Audit Recorder
	// RefreshAt is the fraction of a credential's lifetime after which it
	// is refreshed, in (0, 1); default 0.5.
	RefreshAt float64
	// FetchTimeout bounds one upstream issue or renewal; default 30s.
	FetchTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between attempts of a failed
	// revocation or refresh (doubling from RetryMin); default 1s and 1m.
	RetryMin, RetryMax time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// After waits; default time.After. Tests drive both with a fake clock.
	After func(time.Duration) <-chan time.Time
	// Logger receives lifecycle failures; default slog.Default().
	Logger *slog.Logger
	// Registerer receives the manager's metrics (credbroker_lease_*,
	// credbroker_leases); nil means none are exported.
	Registerer prometheus.Registerer
}

// Manager manages the leases of every credential added to it.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	base    context.Context // ends when Run ends: fetches and revocations
	stop    context.CancelFunc

	mu      sync.Mutex
	creds   map[string]*Credential
	stopped bool
	swept   map[string]bool // credentials whose Sweeper has run
	kick    chan struct{}
	fetches sync.WaitGroup
}

// New validates cfg and returns a Manager.
func New(cfg Config) (*Manager, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("lease: a store is required"))
	}
	if cfg.Audit == nil {
		errs = append(errs, errors.New("lease: an audit recorder is required"))
	}
	if cfg.RefreshAt != 0 && (cfg.RefreshAt <= 0 || cfg.RefreshAt >= 1) {
		errs = append(errs, fmt.Errorf("lease: refresh_at %v must be between 0 and 1 (a fraction of the lifetime)", cfg.RefreshAt))
	}
	if cfg.FetchTimeout < 0 || cfg.RetryMin < 0 || cfg.RetryMax < 0 {
		errs = append(errs, errors.New("lease: timeouts must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.RefreshAt == 0 {
		cfg.RefreshAt = DefaultRefreshAt
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = cfg.RetryMin
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	base, stop := context.WithCancel(context.Background())
	return &Manager{
		cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registerer), base: base, stop: stop,
		creds: map[string]*Credential{}, swept: map[string]bool{}, kick: make(chan struct{}, 1),
	}, nil
}

// Add puts the provider of the credential name under management and
// returns the managed credential, which the broker asks instead.
func (m *Manager) Add(name string, p Provider) (*Credential, error) {
	if p == nil {
		return nil, fmt.Errorf("lease: credential %q has no provider", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.creds[name]; dup {
		return nil, fmt.Errorf("lease: credential %q is added twice", name)
	}
	c := &Credential{m: m, name: name, p: p, cache: map[key]*entry{}, leases: map[string]*served{}, metrics: m.metrics.forCredential(name)}
	c.revoker, _ = p.(providers.Revoker)
	c.renewer, _ = p.(providers.Renewer)
	c.sweeper, _ = p.(providers.Sweeper)
	m.creds[name] = c
	return c, nil
}

// backoff is the wait before attempt n+1 after n failures.
func (m *Manager) backoff(n int) time.Duration {
	d := m.cfg.RetryMin
	for i := 1; i < n && d < m.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, m.cfg.RetryMax)
}

// poke wakes Run.
func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// key is what a cached credential is shared by.
type key struct {
	subject string
	ttl     time.Duration
}

// entry is the cache slot of one key.
type entry struct {
	cur      *served // the credential served, nil when none
	flight   *flight // an issue or renewal under way
	failures int     // refreshes failed in a row
}

// served is one issued credential and what the manager knows of it.
type served struct {
	cred      providers.Credential
	k         key
	refreshAt time.Time
	pending   int  // handed out, not yet settled
	recorded  bool // a decision handing it out was recorded
	failed    bool // a decision handing it out was not
	sessions  int  // sessions holding it (Hold)
	kept      bool // handed to a caller that keeps it, not only to sessions
}

// inUse reports whether anything may still use s: a decision not yet
// settled, or a session.
func (s *served) inUse() bool { return s.pending > 0 || s.sessions > 0 }

// flight is one upstream call shared by every request that waits for it.
type flight struct {
	done chan struct{}
	err  error
}

// Credential is one credential under management. It is what the broker
// asks: Credential, then Settle with the fate of the decision.
type Credential struct {
	m       *Manager
	name    string
	p       Provider
	revoker providers.Revoker
	renewer providers.Renewer
	sweeper providers.Sweeper
	metrics credentialMetrics

	mu     sync.Mutex
	cache  map[key]*entry
	leases map[string]*served // handed out and not settled, or current

	// issuing is held for reading from the provider's issue until the
	// lease is in the store, and for writing by the sweep of leftovers,
	// which would otherwise take a lease created upstream and not yet
	// stored for one.
	issuing sync.RWMutex
}

// Credential returns an unexpired credential for req's subject and TTL cap:
// the cached one, or one issued now. Every credential it returns must be
// settled with Settle once the decision that asked is recorded or not.
func (c *Credential) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	req.Name = c.name
	k := key{subject: req.Identity.Subject, ttl: req.TTL}
	waited := false // for an upstream call: a miss
	for {
		if err := ctx.Err(); err != nil {
			return providers.Credential{}, fmt.Errorf("lease: credential %q: %w", c.name, err)
		}
		now := c.m.cfg.Now()
		c.mu.Lock()
		e := c.cache[k]
		if e == nil {
			e = &entry{}
			c.cache[k] = e
		}
		if s := e.cur; s != nil && now.Before(s.cred.ExpiresAt) {
			if e.flight == nil && !now.Before(s.refreshAt) {
				if _, err := c.start(e, req, s); err != nil {
					c.m.log.Debug("lease: refresh not started", "credential", c.name, "error", err)
				}
			}
			s.pending++
			if !req.Session {
				s.kept = true
			}
			c.mu.Unlock()
			if waited {
				c.metrics.miss.Inc()
			} else {
				c.metrics.hit.Inc()
			}
			return s.cred, nil
		}
		f := e.flight
		if f == nil {
			var err error
			if f, err = c.start(e, req, nil); err != nil {
				c.mu.Unlock()
				return providers.Credential{}, err
			}
		}
		waited = true
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return providers.Credential{}, fmt.Errorf("lease: credential %q: waiting for the provider: %w", c.name, ctx.Err())
		}
		if f.err != nil {
			return providers.Credential{}, f.err
		}
		// The entry now holds what the flight issued: take it on the next turn.
	}
}

// start begins an issue (or a renewal of old) for e, on a goroutine that
// Run joins. c.mu is held.
func (c *Credential) start(e *entry, req providers.Request, old *served) (*flight, error) {
	m := c.m
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return nil, &Error{Credential: c.name, Reason: reasonStopping}
	}
	m.fetches.Add(1)
	m.mu.Unlock()
	f := &flight{done: make(chan struct{})}
	e.flight = f
	go func() {
		defer m.fetches.Done()
		ctx, cancel := context.WithTimeout(m.base, m.cfg.FetchTimeout)
		defer cancel()
		s, err := c.fetch(ctx, req, old)
		now := m.cfg.Now()
		c.mu.Lock()
		e.flight = nil
		if err != nil {
			c.metrics.failure.Inc()
		}
		switch {
		case err == nil:
			var unused *served
			if prev := e.cur; prev != nil && prev != s && !prev.inUse() {
				delete(c.leases, prev.cred.ID)
				if !prev.kept && prev.recorded {
					unused = prev
				}
			}
			e.cur, e.failures = s, 0
			c.leases[s.cred.ID] = s
			if unused != nil {
				defer c.release(unused.cred.Lease, reasonSessionsOver)
			}
		case old != nil:
			// The current credential stays in service until it expires;
			// the refresh is tried again after a backoff.
			e.failures++
			old.refreshAt = now.Add(m.backoff(e.failures))
			m.log.Warn("lease: refresh failed; the current credential is served until it expires",
				"credential", c.name, "lease_id", old.cred.ID, "expires_at", old.cred.ExpiresAt, "error", err)
		}
		f.err = err
		c.mu.Unlock()
		close(f.done)
	}()
	return f, nil
}

// fetch renews old when the provider can and the renewal extends it,
// otherwise issues a new credential, and records the event.
func (c *Credential) fetch(ctx context.Context, req providers.Request, old *served) (*served, error) {
	m := c.m
	if old != nil && c.renewer != nil {
		if s, ok := c.renew(ctx, req, old); ok {
			return s, nil
		}
	}
	cred, now, err := c.issue(ctx, req)
	if err != nil {
		return nil, err
	}
	ev := audit.LeaseEvent{Event: audit.LeaseIssue, LeaseID: cred.ID, Credential: c.name, Subject: cred.Subject, Provider: cred.Kind, ExpiresAt: cred.ExpiresAt}
	if old != nil {
		ev.Event, ev.Replaces = audit.LeaseRefresh, old.cred.ID
	}
	if old != nil {
		c.metrics.refresh.Inc()
	} else {
		c.metrics.issue.Inc()
	}
	if err := m.cfg.Audit.RecordLease(ctx, ev); err != nil {
		c.release(cred.Lease, "its issue could not be recorded in the audit log")
		return nil, &Error{Credential: c.name, Reason: reasonAuditIssue, Err: err}
	}
	return &served{cred: cred, k: key{subject: req.Identity.Subject, ttl: req.TTL}, refreshAt: c.refreshPoint(now, cred.ExpiresAt)}, nil
}

// issue asks the provider for a new credential, fills in and caps its
// lease, and stores the lease when the provider revokes — all while the
// sweep of leftovers waits, so that it never takes a lease created
// upstream and not yet stored for one. It returns the time of the issue.
func (c *Credential) issue(ctx context.Context, req providers.Request) (providers.Credential, time.Time, error) {
	m := c.m
	c.issuing.RLock()
	defer c.issuing.RUnlock()
	cred, err := c.p.Credential(ctx, req)
	if err != nil {
		return providers.Credential{}, time.Time{}, &Error{Credential: c.name, Reason: reasonProvider, Err: err}
	}
	now := m.cfg.Now()
	if cred.Credential == "" {
		cred.Credential = c.name
	}
	if cred.Subject == "" {
		cred.Subject = req.Identity.Subject
	}
	if req.TTL > 0 && cred.ExpiresAt.After(now.Add(req.TTL)) {
		cred.ExpiresAt = now.Add(req.TTL)
	}
	if cred.ID == "" || !cred.ExpiresAt.After(now) {
		c.release(cred.Lease, "the provider returned it without a lease id or already expired")
		return providers.Credential{}, now, &Error{Credential: c.name, Reason: reasonUnusable, Err: fmt.Errorf("lease id %q, expiry %s", cred.ID, cred.ExpiresAt.UTC().Format(time.RFC3339))}
	}
	if c.revoker != nil {
		if err := m.cfg.Store.add(ctx, cred.Lease); err != nil {
			c.revokeDirect(cred.Lease, "it could not be recorded in the lease store")
			return providers.Credential{}, now, &Error{Credential: c.name, Reason: reasonStore, Err: err}
		}
		m.poke() // Run learns the new expiry
	}
	return cred, now, nil
}

// renew extends old's lease; ok is false when the provider could not, or
// would not extend it past its current expiry (a maximum lifetime reached).
func (c *Credential) renew(ctx context.Context, req providers.Request, old *served) (*served, bool) {
	m := c.m
	l, err := c.renewer.Renew(ctx, old.cred.Lease, req.TTL)
	if err != nil {
		m.log.Info("lease: renewal failed; issuing a new credential", "credential", c.name, "lease_id", old.cred.ID, "error", err)
		return nil, false
	}
	now := m.cfg.Now()
	if req.TTL > 0 && l.ExpiresAt.After(now.Add(req.TTL)) {
		l.ExpiresAt = now.Add(req.TTL)
	}
	if !l.ExpiresAt.After(old.cred.ExpiresAt) {
		return nil, false
	}
	if c.revoker != nil {
		if err := m.cfg.Store.renewed(ctx, l); err != nil {
			m.log.Warn("lease: renewal not stored; it will be revoked at its earlier expiry", "credential", c.name, "lease_id", l.ID, "error", err)
			return nil, false
		}
	}
	if err := m.cfg.Audit.RecordLease(ctx, audit.LeaseEvent{Event: audit.LeaseRenew, LeaseID: l.ID, Credential: c.name, Subject: old.cred.Subject, Provider: old.cred.Kind, ExpiresAt: l.ExpiresAt}); err != nil {
		m.log.Warn("lease: renewal not recorded; serving it until its earlier expiry", "credential", c.name, "lease_id", l.ID, "error", err)
		return nil, false
	}
	c.mu.Lock()
	old.cred.ExpiresAt = l.ExpiresAt
	old.refreshAt = c.refreshPoint(now, l.ExpiresAt)
	c.mu.Unlock()
	c.metrics.renew.Inc()
	return old, true
}

// refreshPoint is when a credential issued at now is refreshed.
func (c *Credential) refreshPoint(now, expires time.Time) time.Time {
	return now.Add(time.Duration(float64(expires.Sub(now)) * c.m.cfg.RefreshAt))
}

// Settle tells the manager the fate of the decision that obtained l:
// recorded, or not. A credential minted for decisions none of which was
// recorded is taken out of the cache and revoked at once; one that a
// recorded decision handed out stays in service.
func (c *Credential) Settle(l providers.Lease, recorded bool) {
	c.mu.Lock()
	s := c.leases[l.ID]
	if s == nil {
		c.mu.Unlock()
		return
	}
	s.pending--
	if recorded {
		s.recorded = true
	} else {
		s.failed = true
	}
	e := c.cache[s.k]
	current := e != nil && e.cur == s
	release := s.pending == 0 && s.failed && !s.recorded
	if release && current {
		e.cur = nil
	}
	if !s.inUse() && (release || !current) {
		delete(c.leases, l.ID)
	}
	c.mu.Unlock()
	if release {
		c.release(s.cred.Lease, "the decision that obtained it could not be recorded")
	}
}

// Hold says a session (a database connection) uses l until the returned
// function is called, when the session ends. While sessions hold a lease
// it stays known to the manager; once the last has ended, a lease that was
// handed only to sessions and is no longer the cached one (a newer
// credential replaced it, or its cache entry was dropped) is revoked at
// once rather than left alive until it expires. The cached credential is
// kept for the workload's next session: that is what lets a client that
// opens a connection per transaction reuse one credential. A lease
// reaching its expiry is revoked then whether sessions hold it or not.
func (c *Credential) Hold(l providers.Lease) (release func()) {
	c.mu.Lock()
	s := c.leases[l.ID]
	if s != nil {
		s.sessions++
	}
	c.mu.Unlock()
	if s == nil {
		return func() {} // already replaced and forgotten: it expires on its own
	}
	return func() { c.endSession(s) }
}

// endSession is the end of one session holding s.
func (c *Credential) endSession(s *served) {
	c.mu.Lock()
	s.sessions--
	e := c.cache[s.k]
	current := e != nil && e.cur == s
	unused := !s.inUse() && !current
	if unused {
		delete(c.leases, s.cred.ID)
	}
	c.mu.Unlock()
	if unused && !s.kept && s.recorded && c.m.cfg.Now().Before(s.cred.ExpiresAt) {
		c.release(s.cred.Lease, reasonSessionsOver)
	}
}

// release ends a lease that must not stay alive: revoked now through the
// durable queue when the provider can revoke, else left to expire (its
// issue is recorded, or the caller was refused before it).
func (c *Credential) release(l providers.Lease, reason string) {
	m := c.m
	if c.revoker == nil {
		m.log.Warn("lease: credential released but its provider cannot revoke it; it expires on its own",
			"credential", c.name, "lease_id", l.ID, "expires_at", l.ExpiresAt, "reason", reason)
		return
	}
	ctx, cancel := context.WithTimeout(m.base, m.cfg.FetchTimeout)
	defer cancel()
	if err := m.cfg.Store.schedule(ctx, l, m.cfg.Now(), reason); err != nil {
		c.revokeDirect(l, reason)
		return
	}
	m.poke()
}

// revokeDirect revokes a lease the store could not take, on a goroutine Run
// joins; it is logged, and recorded when the audit log takes it.
func (c *Credential) revokeDirect(l providers.Lease, reason string) {
	m := c.m
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		m.log.Error("lease: a credential that must be revoked was not: the broker is shutting down", "credential", c.name, "lease_id", l.ID, "reason", reason)
		return
	}
	m.fetches.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.fetches.Done()
		ctx, cancel := context.WithTimeout(m.base, m.cfg.FetchTimeout)
		defer cancel()
		if err := c.revoker.Revoke(ctx, l); err != nil {
			m.log.Error("lease: a credential that must be revoked was not", "credential", c.name, "lease_id", l.ID, "reason", reason, "error", err)
			return
		}
		_ = m.cfg.Audit.RecordLease(ctx, audit.LeaseEvent{Event: audit.LeaseRevoke, LeaseID: l.ID, Credential: c.name, Subject: l.Subject, Provider: l.Kind, ExpiresAt: l.ExpiresAt, Attempt: 1, Reason: reason})
	}()
}
