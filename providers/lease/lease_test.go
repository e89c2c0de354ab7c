package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/providers"
)

// The tests drive the manager with a fake clock, the real audit log, and a
// provider double that counts its calls and can be made to fail: the real
// providers are tested against their real upstreams in their own packages,
// and with the manager end to end in cmd/credbroker.

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// fake is a provider whose credentials live ttl, issued with ids fake:1,
// fake:2, …; it revokes (and renews, when renew is set) on request.
type fake struct {
	clock *clock
	ttl   time.Duration

	mu       sync.Mutex
	issued   int
	down     error         // Credential and Revoke fail with it
	gate     chan struct{} // when set, Credential waits for it to close
	entered  chan struct{} // when set, Credential signals each call
	revoked  []string
	renewTo  time.Duration // when set, Renew extends to now + renewTo
	renewals int
	owned    []providers.Lease
}

func (f *fake) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	f.mu.Lock()
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return providers.Credential{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return providers.Credential{}, f.down
	}
	f.issued++
	ttl := f.ttl
	if req.TTL > 0 && req.TTL < ttl {
		ttl = req.TTL
	}
	return providers.Credential{
		Lease: providers.Lease{ID: fmt.Sprintf("fake:%d", f.issued), Credential: req.Name, Subject: req.Identity.Subject, Kind: "fake", ExpiresAt: f.clock.Now().Add(ttl)},
		Data:  map[string]providers.Secret{"password": providers.NewSecret([]byte(fmt.Sprintf("secret-%d", f.issued)))},
	}, nil
}

func (f *fake) Revoke(ctx context.Context, l providers.Lease) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return f.down
	}
	if !slices.Contains(f.revoked, l.ID) {
		f.revoked = append(f.revoked, l.ID)
	}
	return nil
}

func (f *fake) calls() int { f.mu.Lock(); defer f.mu.Unlock(); return f.issued }

func (f *fake) revokedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.revoked)
}

func (f *fake) setDown(err error) { f.mu.Lock(); f.down = err; f.mu.Unlock() }

// renewing is a fake that is also a Renewer.
type renewing struct{ *fake }

func (r renewing) Renew(ctx context.Context, l providers.Lease, ttl time.Duration) (providers.Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return providers.Lease{}, r.down
	}
	r.renewals++
	l.ExpiresAt = r.clock.Now().Add(r.renewTo)
	return l, nil
}

// sweeping is a fake that is also a Sweeper.
type sweeping struct{ *fake }

func (s sweeping) Owned(ctx context.Context) ([]providers.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != nil {
		return nil, s.down
	}
	return slices.Clone(s.owned), nil
}

// failingAudit is the real audit log, made to refuse on demand.
type failingAudit struct {
	*audit.Log
	fail atomic.Bool
}

func (a *failingAudit) RecordLease(ctx context.Context, ev audit.LeaseEvent) error {
	if a.fail.Load() {
		return fmt.Errorf("%w: injected", audit.ErrUnavailable)
	}
	return a.Log.RecordLease(ctx, ev)
}

type env struct {
	t     *testing.T
	clock *clock
	dir   string
	store *Store
	audit *failingAudit
	db    string
	m     *Manager
}

var epoch = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{t: epoch}, dir: t.TempDir()}
	e.db = filepath.Join(e.dir, "audit.db")
	l, err := audit.Open(context.Background(), audit.Config{Path: e.db, Now: e.clock.Now, SignInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		l.Close()
	})
	e.audit = &failingAudit{Log: l}
	e.open()
	return e
}

// open (re)opens the store and a new manager on it, as a restart does.
func (e *env) open() {
	e.t.Helper()
	if e.store != nil {
		e.store.Close()
	}
	s, err := OpenStore(context.Background(), filepath.Join(e.dir, "leases.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Close() })
	e.store = s
	m, err := New(Config{Store: s, Audit: e.audit, Now: e.clock.Now, Logger: discard()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.m = m
}

func (e *env) add(name string, p Provider) *Credential {
	e.t.Helper()
	c, err := e.m.Add(name, p)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func req(subject string, ttl time.Duration) providers.Request {
	return providers.Request{TTL: ttl, Identity: attest.Identity{Method: "unix", Subject: subject}}
}

func (e *env) get(c *Credential, r providers.Request) providers.Credential {
	e.t.Helper()
	cr, err := c.Credential(context.Background(), r)
	if err != nil {
		e.t.Fatal(err)
	}
	return cr
}

// settle waits for any refresh under way on c.
func settle(c *Credential) {
	c.mu.Lock()
	var fs []*flight
	for _, e := range c.cache {
		if e.flight != nil {
			fs = append(fs, e.flight)
		}
	}
	c.mu.Unlock()
	for _, f := range fs {
		<-f.done
	}
}

// events lists the audit log's lease rows as "event lease [attempt]".
func (e *env) events() []string {
	e.t.Helper()
	var out []string
	err := audit.Query(context.Background(), e.db, audit.Filter{Kind: audit.KindLease}, func(r *audit.Record) error {
		out = append(out, r.Decision+" "+r.LeaseID)
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) stored() []string {
	e.t.Helper()
	rows, err := e.store.all(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, r.ID+" "+r.state)
	}
	return out
}

func TestCacheAndSingleflight(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: time.Hour, gate: make(chan struct{}), entered: make(chan struct{}, 64)}
	c := e.add("db", f)
	const n = 16
	got := make(chan providers.Credential, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			cr, err := c.Credential(context.Background(), req("unix:uid:1", 10*time.Minute))
			if err != nil {
				t.Error(err)
			}
			got <- cr
		})
	}
	<-f.entered // the one upstream call is under way
	close(f.gate)
	wg.Wait()
	close(got)
	for cr := range got {
		if cr.ID != "fake:1" {
			t.Errorf("concurrent requests got lease %q, want the one issue fake:1", cr.ID)
		}
	}
	if f.calls() != 1 {
		t.Fatalf("%d upstream calls for one key, want 1", f.calls())
	}
	f.mu.Lock()
	f.entered = nil
	f.mu.Unlock()
	for _, tt := range []struct {
		r    providers.Request
		want string
	}{
		{req("unix:uid:1", 10*time.Minute), "fake:1"}, // cached
		{req("unix:uid:2", 10*time.Minute), "fake:2"}, // another workload
		{req("unix:uid:1", 5*time.Minute), "fake:3"},  // another policy cap
		{req("unix:uid:2", 10*time.Minute), "fake:2"},
	} {
		if cr := e.get(c, tt.r); cr.ID != tt.want || cr.Subject != tt.r.Identity.Subject || cr.Credential != "db" {
			t.Errorf("%s cap %v: lease %+v, want %s", tt.r.Identity.Subject, tt.r.TTL, cr.Lease, tt.want)
		}
	}
	if got, want := e.events(), []string{"issue fake:1", "issue fake:2", "issue fake:3"}; !slices.Equal(got, want) {
		t.Errorf("lifecycle rows %q, want %q", got, want)
	}
	mt := e.m.metrics
	// The concurrent requests that found the issue under way are misses,
	// those that came after it hits: how many of each depends on timing.
	miss, hit := testutil.ToFloat64(mt.requests.WithLabelValues("db", "miss")), testutil.ToFloat64(mt.requests.WithLabelValues("db", "hit"))
	if issued := testutil.ToFloat64(mt.events.WithLabelValues("db", "issue")); miss+hit != n+4 || miss < 3 || hit < 2 || issued != 3 {
		t.Errorf("metrics: %v misses, %v hits, %v issues; want %d requests, at least 3 misses and 2 hits, 3 issues", miss, hit, issued, n+4)
	}
}

func TestRefreshAheadAndOutage(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: time.Hour}
	c := e.add("db", f)
	r := req("unix:uid:1", 10*time.Minute)
	if cr := e.get(c, r); cr.ID != "fake:1" || !cr.ExpiresAt.Equal(epoch.Add(10*time.Minute)) {
		t.Fatalf("first issue: %+v", cr.Lease)
	}
	e.clock.Advance(4 * time.Minute) // before half the lifetime
	if cr := e.get(c, r); cr.ID != "fake:1" {
		t.Fatalf("before the refresh point: %q", cr.ID)
	}
	e.clock.Advance(time.Minute + time.Second) // past half
	if cr := e.get(c, r); cr.ID != "fake:1" {
		t.Fatalf("the request that starts a refresh gets the current credential, got %q", cr.ID)
	}
	settle(c)
	if cr := e.get(c, r); cr.ID != "fake:2" || !cr.ExpiresAt.Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("after the refresh: %+v", cr.Lease)
	}
	if got := e.events(); !slices.Equal(got, []string{"issue fake:1", "refresh fake:2"}) {
		t.Errorf("lifecycle rows %q", got)
	}

	// An outage shorter than the remaining lifetime is invisible.
	f.setDown(errors.New("connection refused"))
	refreshed := e.clock.Now()
	e.clock.Advance(5*time.Minute + time.Second)
	for range 3 {
		if cr := e.get(c, r); cr.ID != "fake:2" {
			t.Fatalf("during the outage: %q", cr.ID)
		}
		settle(c)
	}
	// A longer one is an error that says so, and nothing expired is served.
	e.clock.Set(refreshed.Add(10 * time.Minute))
	_, err := c.Credential(context.Background(), r)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("past expiry with the provider down: %v", err)
	}
	f.setDown(nil)
	if cr := e.get(c, r); cr.ID != "fake:3" {
		t.Fatalf("after the outage: %q", cr.ID)
	}
}

func TestNeverServesExpired(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: -time.Second}
	c := e.add("db", f)
	if _, err := c.Credential(context.Background(), req("unix:uid:1", 0)); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "already expired") {
		t.Fatalf("a provider returning an expired credential: %v", err)
	}
}

func TestSettle(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: time.Hour}
	c := e.add("db", f)
	ctx := context.Background()

	// A fresh credential whose decision was not recorded is revoked, and
	// the next request gets a new one.
	cr := e.get(c, req("unix:uid:1", 0))
	c.Settle(cr.Lease, false)
	e.m.step(ctx)
	if got := f.revokedIDs(); !slices.Equal(got, []string{"fake:1"}) {
		t.Fatalf("revoked %q after an unrecorded decision, want fake:1", got)
	}
	if cr := e.get(c, req("unix:uid:1", 0)); cr.ID != "fake:2" {
		t.Fatalf("after the release: %q", cr.ID)
	}

	// One that a recorded decision handed out stays, whatever later
	// decisions do.
	c.Settle(providers.Lease{ID: "fake:2"}, true)
	cr = e.get(c, req("unix:uid:1", 0))
	c.Settle(cr.Lease, false)
	e.m.step(ctx)
	if got := f.revokedIDs(); len(got) != 1 {
		t.Fatalf("a recorded credential was revoked: %q", got)
	}

	// Two decisions share a fresh credential: it is released only when
	// neither was recorded.
	a, b := e.get(c, req("unix:uid:3", 0)), e.get(c, req("unix:uid:3", 0))
	c.Settle(a.Lease, false)
	e.m.step(ctx)
	if got := f.revokedIDs(); len(got) != 1 {
		t.Fatalf("released while another decision was pending: %q", got)
	}
	c.Settle(b.Lease, false)
	e.m.step(ctx)
	if got := f.revokedIDs(); !slices.Equal(got, []string{"fake:1", "fake:3"}) {
		t.Fatalf("revoked %q, want fake:1 and fake:3", got)
	}
	if got := e.events(); !slices.Contains(got, "revoke fake:3") {
		t.Errorf("lifecycle rows %q lack the revocation", got)
	}
}

func TestAuditFailureReleases(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: time.Hour}
	c := e.add("db", f)
	e.audit.fail.Store(true)
	_, err := c.Credential(context.Background(), req("unix:uid:1", 0))
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "audit log cannot record its issue") {
		t.Fatalf("issue with the audit log down: %v", err)
	}
	e.audit.fail.Store(false)
	e.m.step(context.Background())
	if got := f.revokedIDs(); !slices.Equal(got, []string{"fake:1"}) {
		t.Fatalf("a credential whose issue was not recorded was not revoked: %q", got)
	}
	if got := e.events(); !slices.Equal(got, []string{"revoke fake:1"}) {
		t.Errorf("lifecycle rows %q", got)
	}
	if got := e.stored(); len(got) != 0 {
		t.Errorf("store still holds %q", got)
	}
}

// TestRevocationOutage keeps the provider down for 30 minutes after its
// lease expired: revocation is retried with backoff, failures recorded at
// attempts 1, 2, 4, 8, …, and once it is back nothing is left.
func TestRevocationOutage(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: 10 * time.Minute}
	c := e.add("db", f)
	ctx := context.Background()
	cr := e.get(c, req("unix:uid:1", 0))
	c.Settle(cr.Lease, true)
	if next := e.m.step(ctx); !next.Equal(cr.ExpiresAt) {
		t.Fatalf("next due %v, want the expiry %v", next, cr.ExpiresAt)
	}
	e.clock.Set(cr.ExpiresAt)
	f.setDown(errors.New("database is down"))
	attempts := 0
	for e.clock.Now().Before(cr.ExpiresAt.Add(30 * time.Minute)) {
		next := e.m.step(ctx)
		attempts++
		if !next.After(e.clock.Now()) || next.Sub(e.clock.Now()) > DefaultRetryMax {
			t.Fatalf("attempt %d: next due %v from %v", attempts, next, e.clock.Now())
		}
		e.clock.Set(next)
	}
	f.setDown(nil)
	e.m.step(ctx)
	if got := f.revokedIDs(); !slices.Equal(got, []string{"fake:1"}) {
		t.Fatalf("revoked %q after the outage", got)
	}
	if got := e.stored(); len(got) != 0 {
		t.Errorf("store still holds %q", got)
	}
	var failed, revoked int
	for _, ev := range e.events() {
		switch {
		case strings.HasPrefix(ev, "revoke_failed "):
			failed++
		case strings.HasPrefix(ev, "revoke "):
			revoked++
		}
	}
	if attempts < 30 || revoked != 1 || failed < 5 || failed > 7 {
		t.Errorf("%d failed attempts gave %d revoke_failed rows and %d revoke rows", attempts, failed, revoked)
	}
	mt := e.m.metrics
	if ok, bad := testutil.ToFloat64(mt.revocations.WithLabelValues("ok")), testutil.ToFloat64(mt.revocations.WithLabelValues("failed")); ok != 1 || bad != float64(attempts) {
		t.Errorf("metrics: %v revocations ok, %v failed; want 1 and %d", ok, bad, attempts)
	}
}

// TestRestart stops a manager with leases outstanding and starts another on
// the same store: the tracked lease is revoked at its expiry, and one the
// provider finds upstream but the store never held is revoked at once.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: 10 * time.Minute}
	c := e.add("db", f)
	cr := e.get(c, req("unix:uid:1", 0))
	c.Settle(cr.Lease, true)

	e.open() // the broker was killed; a new one starts on the same files
	f.owned = []providers.Lease{cr.Lease, {ID: "fake:orphan", Kind: "fake", ExpiresAt: epoch.Add(time.Hour)}}
	e.add("db", sweeping{f})
	e.m.step(context.Background())
	if got := f.revokedIDs(); !slices.Equal(got, []string{"fake:orphan"}) {
		t.Fatalf("at start: revoked %q, want the leftover only", got)
	}
	e.clock.Set(cr.ExpiresAt)
	e.m.step(context.Background())
	if got := f.revokedIDs(); !slices.Equal(got, []string{"fake:orphan", "fake:1"}) {
		t.Fatalf("at expiry: revoked %q", got)
	}
	if got := e.stored(); len(got) != 0 {
		t.Errorf("store still holds %q", got)
	}
}

func TestRenew(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: 10 * time.Minute, renewTo: 10 * time.Minute}
	c := e.add("db", renewing{f})
	r := req("unix:uid:1", 0)
	cr := e.get(c, r)
	e.clock.Advance(6 * time.Minute)
	e.get(c, r)
	settle(c)
	if got := e.get(c, r); got.ID != cr.ID || !got.ExpiresAt.Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("after renewal: %+v", got.Lease)
	}
	// A renewal that would not extend the lease (a maximum lifetime
	// reached) gives way to a new issue.
	f.mu.Lock()
	f.renewTo = time.Minute
	f.mu.Unlock()
	e.clock.Advance(6 * time.Minute)
	e.get(c, r)
	settle(c)
	if got := e.get(c, r); got.ID != "fake:2" {
		t.Fatalf("after a renewal that did not extend: %q", got.ID)
	}
	if got := e.events(); !slices.Equal(got, []string{"issue fake:1", "renew fake:1", "refresh fake:2"}) {
		t.Errorf("lifecycle rows %q", got)
	}
}

// TestRunStops checks Run returns nil when cancelled, after the issue under
// way has ended, and that the manager then refuses.
func TestRunStops(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: time.Hour, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := e.add("db", f)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()
	asked := make(chan error, 1)
	go func() {
		_, err := c.Credential(context.Background(), req("unix:uid:1", 0))
		asked <- err
	}()
	<-f.entered
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := <-asked; !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("the issue under way when Run stopped: %v", err)
	}
	if _, err := c.Credential(context.Background(), req("unix:uid:1", 0)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("after Run: %v", err)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestRunWakesForNewLeases runs the manager's loop on a fake timer: a lease
// issued while it sleeps makes it wait for that lease's expiry, and when
// the timer fires the lease is revoked.
func TestRunWakesForNewLeases(t *testing.T) {
	e := newEnv(t)
	type wait struct {
		d    time.Duration
		fire chan time.Time
	}
	waits := make(chan wait)
	m, err := New(Config{Store: e.store, Audit: e.audit, Now: e.clock.Now, Logger: discard(),
		After: func(d time.Duration) <-chan time.Time {
			w := wait{d, make(chan time.Time, 1)}
			waits <- w
			return w.fire
		}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{clock: e.clock, ttl: 30 * time.Second}
	c, err := m.Add("db", f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	if w := <-waits; w.d != idleWake {
		t.Fatalf("with nothing due Run waits %v, want %v", w.d, idleWake)
	}
	cr, err := c.Credential(ctx, req("unix:uid:1", 0))
	if err != nil {
		t.Fatal(err)
	}
	c.Settle(cr.Lease, true)
	w := <-waits
	if w.d != 30*time.Second {
		t.Fatalf("after an issue Run waits %v, want the lease's 30s", w.d)
	}
	e.clock.Set(cr.ExpiresAt)
	w.fire <- cr.ExpiresAt
	<-waits // the loop went round: the lease is revoked
	if got := f.revokedIDs(); !slices.Equal(got, []string{cr.ID}) {
		t.Errorf("revoked %q at expiry", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSessions: sessions share the cached credential (one issue for many
// connections), a credential only sessions used is revoked once its last
// session has ended and a newer one is cached, and one handed to a caller
// that keeps it lives until it expires.
func TestSessions(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: time.Hour}
	c := e.add("db", f)
	ctx := context.Background()
	sess := func(subject string) (providers.Credential, func()) {
		t.Helper()
		r := req(subject, 10*time.Minute)
		r.Session = true
		cr := e.get(c, r)
		c.Settle(cr.Lease, true)
		return cr, c.Hold(cr.Lease)
	}

	// A connection per transaction: one credential for all of them.
	for range 20 {
		cr, release := sess("unix:uid:1")
		if cr.ID != "fake:1" {
			t.Fatalf("session got %q, want the cached fake:1", cr.ID)
		}
		release()
	}
	if got := e.events(); !slices.Equal(got, []string{"issue fake:1"}) {
		t.Fatalf("lifecycle rows %q, want one issue", got)
	}

	// A long session holds fake:1 past the refresh point; the refresh
	// caches fake:2; fake:1 is revoked when that session ends, not before.
	_, long := sess("unix:uid:1")
	e.clock.Advance(5*time.Minute + time.Second)
	_, short := sess("unix:uid:1") // starts the refresh, gets fake:1
	settle(c)
	short()
	e.m.step(ctx)
	if got := f.revokedIDs(); len(got) != 0 {
		t.Fatalf("revoked %q while a session held it", got)
	}
	if cr, release := sess("unix:uid:1"); cr.ID != "fake:2" {
		t.Fatalf("after the refresh: %q", cr.ID)
	} else {
		release()
	}
	long()
	e.m.step(ctx)
	if got := f.revokedIDs(); !slices.Equal(got, []string{"fake:1"}) {
		t.Fatalf("revoked %q once its last session ended, want fake:1", got)
	}

	// A credential also handed to a socket API caller, who keeps it, is
	// not revoked when its sessions end.
	kept := e.get(c, req("unix:uid:2", 10*time.Minute))
	c.Settle(kept.Lease, true)
	_, release := sess("unix:uid:2")
	e.clock.Advance(5*time.Minute + time.Second)
	e.get(c, req("unix:uid:2", 10*time.Minute)) // starts the refresh
	settle(c)
	release()
	e.m.step(ctx)
	if got := f.revokedIDs(); slices.Contains(got, kept.ID) {
		t.Fatalf("revoked %s, which a caller keeps until it expires", kept.ID)
	}
}

// issuingSweeper is a sweeping fake whose issue is seen upstream (Owned
// lists it) before Credential returns: the window in which a real provider
// has created a role that the manager has not stored yet. Credential
// signals created, then waits for gate.
type issuingSweeper struct {
	sweeping
	created chan struct{}
	gate    chan struct{}
	release sync.Once
	ownedAt chan struct{} // closed on the first Owned call
	owned1  sync.Once
}

func (s *issuingSweeper) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	cr, err := s.fake.Credential(ctx, req)
	if err != nil {
		return cr, err
	}
	s.mu.Lock()
	s.owned = append(s.owned, cr.Lease)
	s.mu.Unlock()
	s.created <- struct{}{}
	<-s.gate
	return cr, nil
}

func (s *issuingSweeper) Owned(ctx context.Context) ([]providers.Lease, error) {
	s.owned1.Do(func() { close(s.ownedAt) })
	s.open()
	return s.sweeping.Owned(ctx)
}

func (s *issuingSweeper) open() { s.release.Do(func() { close(s.gate) }) }

// TestSweepSparesIssueInFlight: the sweep at start, which revokes what the
// provider owns and the store does not hold, must not take for a leftover
// a lease being issued — created upstream, not yet stored. The sweep
// waits for the issue under way (testHookSweepWaits fires as it starts
// waiting, and lets the issue finish); a sweep that did not wait would
// list the new lease while the issue is held (Owned lets it go) and
// revoke it.
func TestSweepSparesIssueInFlight(t *testing.T) {
	e := newEnv(t)
	f := &fake{clock: e.clock, ttl: time.Hour}
	p := &issuingSweeper{sweeping: sweeping{f}, created: make(chan struct{}, 1), gate: make(chan struct{}), ownedAt: make(chan struct{})}
	c := e.add("db", p)
	ctx := context.Background()

	got := make(chan error, 1)
	go func() {
		cr, err := c.Credential(ctx, req("unix:uid:1", 0))
		if err == nil {
			c.Settle(cr.Lease, true)
		}
		got <- err
	}()
	<-p.created // upstream has it; the store does not yet

	testHookSweepWaits = p.open
	t.Cleanup(func() { testHookSweepWaits = nil })
	e.m.step(ctx)
	if err := <-got; err != nil {
		t.Fatalf("the issue during the sweep: %v", err)
	}
	<-p.ownedAt
	e.m.step(ctx) // anything the sweep queued is due now
	if got := f.revokedIDs(); len(got) != 0 {
		t.Fatalf("the sweep revoked %q, the lease being issued as it ran", got)
	}
	if got := e.stored(); !slices.Equal(got, []string{"fake:1 active"}) {
		t.Errorf("store holds %q, want fake:1 active", got)
	}
}
