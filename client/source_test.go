package client_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credbroker/credbroker/client"
)

// fakeClock is the clock a Source waits on in these tests: each wait is
// handed to the test, which moves the time and wakes the Source, so no test
// depends on how fast the machine runs.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan fakeWait
}

type fakeWait struct {
	d time.Duration
	c chan time.Time
}

var _ client.Clock = (*fakeClock)(nil)

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, waits: make(chan fakeWait, 1)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	f.waits <- fakeWait{d, c}
	return c
}

// next returns the Source's next wait, once it waits.
func (f *fakeClock) next(t *testing.T) fakeWait {
	t.Helper()
	select {
	case w := <-f.waits:
		return w
	case <-time.After(hangBound):
		t.Fatal("the Source never waited")
		return fakeWait{}
	}
}

// fireAt sets the time to now and ends the wait w.
func (f *fakeClock) fireAt(w fakeWait, now time.Time) {
	f.mu.Lock()
	f.now = now
	f.mu.Unlock()
	w.c <- now
}

func noJitter(d time.Duration) time.Duration { return d }

const rotatingPolicies = `policies:
  - name: root-reads
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [rotating]
    ttl: 10m
  - name: root-reads-short
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [short]
    ttl: 2s
`

const rotatingCredentials = `  - {name: rotating, static: {file: secrets/value}}
  - {name: short, static: {file: secrets/value}}
`

// TestSourceRefreshes: the Source asks again after half the remaining
// life; a refresh that yields the same value under a new lease updates
// Current without a change, a rotated value is a change; the Source stops
// with its context, leaving no goroutine behind.
func TestSourceRefreshes(t *testing.T) {
	b := newBroker(t, rotatingPolicies, rotatingCredentials, map[string]string{"secrets/value": "first"})
	goroutines := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	clk := newFakeClock(start)
	c := client.New(b.socket)
	src, err := c.Source(ctx, "rotating", client.WithClock(clk), client.WithJitter(noJitter))
	if err != nil {
		t.Fatal(err)
	}
	first := src.Current()
	if first.Data["value"] != "first" {
		t.Fatalf("first credential %v", first)
	}
	w := clk.next(t)
	if want := time.Duration(float64(first.ExpiresAt.Sub(start)) * client.DefaultRefreshAt); w.d != want || w.d < 5*time.Minute {
		t.Fatalf("first wait %v, want half the 10m life: %v", w.d, want)
	}

	clk.fireAt(w, start.Add(w.d))
	w = clk.next(t)
	same := src.Current()
	if same.LeaseID == first.LeaseID || same.Data["value"] != "first" {
		t.Fatalf("after a refresh: %v, want a new lease of the same value", same)
	}
	select {
	case cred := <-src.Changes():
		t.Fatalf("a new lease of the same value is a change: %v", cred)
	default:
	}

	rotate(t, b.dir+"/secrets/value", "second")
	clk.fireAt(w, clk.Now().Add(w.d))
	w = clk.next(t)
	select {
	case cred := <-src.Changes():
		if cred.Data["value"] != "second" || src.Current() != cred {
			t.Fatalf("change %v (value %q), current %v", cred, cred.Data["value"], src.Current())
		}
	default:
		t.Fatal("a rotated value is no change")
	}
	if src.Err() != nil {
		t.Errorf("Err after successes: %v", src.Err())
	}

	cancel()
	<-src.Done()
	if _, open := <-src.Changes(); open {
		t.Error("Changes still open after the Source stopped")
	}
	c.CloseIdleConnections()
	waitGoroutines(t, goroutines)
}

// TestSourceFailsAndRecovers: with the broker gone, each failed refresh is
// reported, retried after a doubling wait cut short at the expiry; at the
// expiry the error says the credential expired; once the broker is back the
// next refresh succeeds and clears the error.
func TestSourceFailsAndRecovers(t *testing.T) {
	b := newBroker(t, rotatingPolicies, rotatingCredentials, map[string]string{"secrets/value": "v"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := newFakeClock(time.Now())
	errs := make(chan error, 10)
	src, err := client.New(b.socket).Source(ctx, "short", client.WithClock(clk), client.WithJitter(noJitter),
		client.OnRefreshError(func(err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	first := src.Current()
	exp := first.ExpiresAt
	w := clk.next(t)
	b.stop()

	steps := []struct {
		at       time.Time
		wantWait time.Duration
		expired  bool
	}{
		{at: exp.Add(-1500 * time.Millisecond), wantWait: client.MinBackoff},     // 1s, within the 1.5s left
		{at: exp.Add(-500 * time.Millisecond), wantWait: 500 * time.Millisecond}, // 2s, cut to the 0.5s left
		{at: exp, wantWait: 4 * client.MinBackoff, expired: true},                // expired: say so, back off 4s
		{at: exp.Add(4 * time.Second), wantWait: 8 * client.MinBackoff, expired: true},
	}
	for i, s := range steps {
		clk.fireAt(w, s.at)
		w = clk.next(t)
		err := <-errs
		if !errors.Is(err, client.ErrUnreachable) || errors.Is(err, client.ErrExpired) != s.expired || !errors.Is(src.Err(), client.ErrUnreachable) {
			t.Fatalf("failure %d: %v (Err %v), want unreachable, expired %v", i+1, err, src.Err(), s.expired)
		}
		if want := map[bool]string{false: "refreshing \"short\" failed (attempt ", true: "credential \"short\" expired at "}[s.expired]; !strings.Contains(err.Error(), want) ||
			!strings.Contains(err.Error(), "cannot reach the broker at "+b.socket) {
			t.Errorf("failure %d: %q, want %q and the cause", i+1, err, want)
		}
		if w.d != s.wantWait {
			t.Errorf("failure %d: retry after %v, want %v", i+1, w.d, s.wantWait)
		}
	}
	if src.Current() != first {
		t.Errorf("Current changed without a refresh: %v", src.Current())
	}

	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	clk.fireAt(w, exp.Add(12*time.Second))
	w = clk.next(t)
	if src.Err() != nil || src.Current().LeaseID == first.LeaseID {
		t.Fatalf("after the broker came back: Err %v, current %v", src.Err(), src.Current())
	}
	if len(errs) != 0 {
		t.Errorf("a success reported a failure: %v", <-errs)
	}
	if w.d < 100*time.Millisecond {
		t.Errorf("next refresh after %v: a credential near its end must not make the Source spin", w.d)
	}
}

// TestSourceRealClock: with the real clock, a 2-second credential is
// replaced before it expires.
func TestSourceRealClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	src, err := client.New(shared.socket).Source(ctx, "short")
	if err != nil {
		t.Fatal(err)
	}
	first := src.Current()
	for src.Current() == first {
		select {
		case <-ctx.Done():
			t.Fatal("no refresh within the hang bound")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if next := src.Current(); !next.ExpiresAt.After(first.ExpiresAt) || src.Err() != nil {
		t.Errorf("next %v after %v, Err %v", next, first, src.Err())
	}
	cancel()
	<-src.Done()
}

func TestSourceRefusals(t *testing.T) {
	ctx := ctxT(t)
	if _, err := client.New(shared.socket).Source(ctx, "forbidden"); !errors.Is(err, client.ErrDenied) {
		t.Errorf("a denied first fetch: %v", err)
	}
	for _, f := range []float64{0, 1, -0.5, 2} {
		if _, err := client.New(shared.socket).Source(ctx, "demo", client.RefreshAt(f)); err == nil {
			t.Errorf("RefreshAt(%v) accepted", f)
		}
	}
}

// waitGoroutines waits until no more than n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(hangBound); runtime.NumGoroutine() > n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
	}
}
