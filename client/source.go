package client

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of a Source.
const (
	// DefaultRefreshAt is the fraction of a credential's remaining
	// lifetime after which a Source asks for the next one.
	DefaultRefreshAt = 0.5
	// MinBackoff and MaxBackoff bound the wait before retrying a failed
	// refresh: it doubles from MinBackoff up to MaxBackoff, each wait drawn
	// at random from its upper half, and never runs past the credential's
	// expiry.
	MinBackoff = time.Second
	MaxBackoff = time.Minute
	// AttemptTimeout bounds each request of a Source, the first included.
	AttemptTimeout = 30 * time.Second
)

// minRefresh is the shortest wait before a refresh, so that a credential
// that arrives nearly expired does not make the Source spin.
const minRefresh = 100 * time.Millisecond

// clock is the time a Source waits on: the real one, or a test's.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// SourceOption configures a Source.
type SourceOption func(*sourceConfig)

type sourceConfig struct {
	refreshAt float64
	onError   func(error)
	clock     clock
	jitter    func(time.Duration) time.Duration // a wait in [d/2, d]
}

// RefreshAt sets the fraction of the remaining lifetime after which the
// next credential is fetched (default DefaultRefreshAt, one half). It must
// be above 0 and below 1.
func RefreshAt(fraction float64) SourceOption {
	return func(c *sourceConfig) { c.refreshAt = fraction }
}

// OnRefreshError has f called, on the Source's goroutine, with every
// failed refresh. Once the current credential has expired the error also
// matches ErrExpired. Keep f short: the next refresh waits for it.
func OnRefreshError(f func(error)) SourceOption {
	return func(c *sourceConfig) { c.onError = f }
}

// Source keeps one credential fresh for a long-running application: see
// Client.Source.
type Source struct {
	c       *Client
	name    string
	cfg     sourceConfig
	cur     atomic.Pointer[Credential]
	changes chan *Credential
	done    chan struct{}

	mu  sync.Mutex
	err error
}

// Source fetches the credential name, returning the broker's refusal if
// there is one, then keeps it fresh on a goroutine of its own until ctx
// ends: it fetches the next credential once the RefreshAt fraction of the
// current one's remaining lifetime has passed, retries failures with
// jittered exponential backoff (MinBackoff doubling to MaxBackoff, never
// past the expiry), and reports every failure to OnRefreshError and Err.
func (c *Client) Source(ctx context.Context, name string, opts ...SourceOption) (*Source, error) {
	cfg := sourceConfig{refreshAt: DefaultRefreshAt, clock: realClock{}, jitter: equalJitter}
	for _, o := range opts {
		o(&cfg)
	}
	if !(cfg.refreshAt > 0 && cfg.refreshAt < 1) {
		return nil, fmt.Errorf("credbroker: RefreshAt(%v): give a fraction above 0 and below 1", cfg.refreshAt)
	}
	s := &Source{c: c, name: name, cfg: cfg, changes: make(chan *Credential, 1), done: make(chan struct{})}
	first, err := s.fetch(ctx)
	if err != nil {
		return nil, err
	}
	s.cur.Store(first)
	go s.run(ctx)
	return s, nil
}

// Current returns the newest credential obtained: after a failed refresh,
// the one before, even once it has expired (Err says so). Callers must not
// modify it.
func (s *Source) Current() *Credential { return s.cur.Load() }

// Changes delivers each new credential whose data differ from the one
// before it (a refresh that yields the same values under a new lease is
// not a change). It holds only the newest: a reader that falls behind gets
// the latest change, not each one. It is closed when the Source stops.
func (s *Source) Changes() <-chan *Credential { return s.changes }

// Done is closed when the Source has stopped, after its context ended.
func (s *Source) Done() <-chan struct{} { return s.done }

// Err returns the last refresh failure, or nil when the last refresh
// succeeded. It matches ErrExpired once the current credential has expired.
func (s *Source) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Source) run(ctx context.Context) {
	defer close(s.done)
	defer close(s.changes)
	wait, failures := s.refreshDelay(s.Current()), 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.clock.After(wait):
		}
		cred, err := s.fetch(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			wait = s.failed(err, failures)
			continue
		}
		failures = 0
		s.setErr(nil)
		if prev := s.cur.Swap(cred); !maps.Equal(prev.Data, cred.Data) {
			s.publish(cred)
		}
		wait = s.refreshDelay(cred)
	}
}

func (s *Source) fetch(ctx context.Context) (*Credential, error) {
	ctx, cancel := context.WithTimeout(ctx, AttemptTimeout)
	defer cancel()
	return s.c.Get(ctx, s.name)
}

// refreshDelay is how long to wait before refreshing cred.
func (s *Source) refreshDelay(cred *Credential) time.Duration {
	d := time.Duration(float64(cred.ExpiresAt.Sub(s.cfg.clock.Now())) * s.cfg.refreshAt)
	return max(d, minRefresh)
}

// failed records a failed refresh (the failures-th in a row) and returns
// the wait before the next attempt.
func (s *Source) failed(err error, failures int) time.Duration {
	cur := s.Current()
	left := cur.ExpiresAt.Sub(s.cfg.clock.Now())
	err = &refreshError{name: s.name, attempt: failures, expired: left <= 0, expiresAt: cur.ExpiresAt, err: err}
	s.setErr(err)
	if s.cfg.onError != nil {
		s.cfg.onError(err)
	}
	wait := s.cfg.jitter(backoff(failures))
	if left > 0 && wait > left {
		wait = left // try once more at the expiry, and say so if it fails
	}
	return wait
}

// backoff is the wait bound after n failures in a row.
func backoff(n int) time.Duration {
	d := MinBackoff
	for i := 1; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// equalJitter draws a wait in [d/2, d].
func equalJitter(d time.Duration) time.Duration {
	half := d / 2
	return half + rand.N(half+1)
}

func (s *Source) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// publish offers cred on Changes, replacing a change not yet read. Only
// run sends, so the send after the drain never blocks.
func (s *Source) publish(cred *Credential) {
	select {
	case <-s.changes:
	default:
	}
	s.changes <- cred
}

// refreshError is a failed refresh; it matches ErrExpired once the current
// credential has expired.
type refreshError struct {
	name      string
	attempt   int
	expired   bool
	expiresAt time.Time
	err       error
}

func (e *refreshError) Error() string {
	cause := strings.TrimPrefix(e.err.Error(), "credbroker: ")
	if e.expired {
		return fmt.Sprintf("credbroker: credential %q expired at %s; refreshing it failed (attempt %d): %s",
			e.name, e.expiresAt.UTC().Format(time.RFC3339), e.attempt, cause)
	}
	return fmt.Sprintf("credbroker: refreshing %q failed (attempt %d; it expires at %s): %s",
		e.name, e.attempt, e.expiresAt.UTC().Format(time.RFC3339), cause)
}

func (e *refreshError) Unwrap() []error {
	if e.expired {
		return []error{ErrExpired, e.err}
	}
	return []error{e.err}
}
