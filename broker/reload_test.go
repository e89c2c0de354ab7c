package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/policies"
)

// logBuffer collects a reloader's JSON log lines while it runs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines decodes every line logged so far.
func (l *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// compileSet compiles one policy document, failing the test on problems.
func compileSet(t *testing.T, doc string) *policies.Set {
	t.Helper()
	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(doc)}})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// runReloader runs r until the test ends and checks that Run returns nil
// once its context is cancelled.
func runReloader(t *testing.T, r *broker.Reloader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

// TestReloaderRefusesEmptySet: a reload from a set with policies to one
// without is refused at error level and counted as a failed reload; the
// previous set stays in force and ready. A broker already without policies
// takes another empty set, and a set with policies makes it ready.
func TestReloaderRefusesEmptySet(t *testing.T) {
	h := newHarness(t)
	initial := h.broker.Policies()
	empty := compileSet(t, "")
	good := compileSet(t, testPolicies)
	next := make(chan *policies.Set)
	trigger := make(chan struct{})
	logs := &logBuffer{}
	runReloader(t, &broker.Reloader{
		Broker: h.broker,
		Load: func() (*policies.Set, error) {
			set, ok := <-next
			if !ok {
				return nil, errors.New("the test is over")
			}
			return set, nil
		},
		Stamp:    func() string { return "same" },
		Trigger:  trigger,
		Interval: time.Hour,
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
	})
	// reload runs one reload to completion: the second trigger is taken
	// only once the reloader is back waiting, and the load it starts
	// blocks until the next call.
	first := true
	reload := func(set *policies.Set) {
		t.Helper()
		if first {
			trigger <- struct{}{}
			first = false
		}
		next <- set
		trigger <- struct{}{}
	}

	reload(empty)
	if h.broker.Policies() != initial {
		t.Fatal("an empty set replaced a set with policies")
	}
	if err := h.broker.PoliciesHealth(); err != nil {
		t.Errorf("PoliciesHealth after the refusal: %v", err)
	}
	lines := logs.lines(t)
	if len(lines) != 1 || lines[0]["level"] != "ERROR" || !strings.Contains(lines[0]["msg"].(string), "refused") ||
		lines[0]["policy_set_version"] != initial.Version() || lines[0]["policies"] != float64(initial.Len()) {
		t.Errorf("log after the refusal: %v, want one error naming the kept version and its %d policies", lines, initial.Len())
	}
	if n := reloads(t, h, "error"); n != 1 {
		t.Errorf("credbroker_policy_reloads_total{result=error} = %v, want 1", n)
	}

	// A broker without policies is not ready, and may take another empty
	// set: nothing is lost.
	h.broker.SetPolicies(empty)
	if err := h.broker.PoliciesHealth(); !errors.Is(err, broker.ErrNoPolicies) {
		t.Errorf("PoliciesHealth without policies: %v, want ErrNoPolicies", err)
	}
	again := compileSet(t, "policies: []\n")
	reload(again)
	if h.broker.Policies() != again {
		t.Error("an empty set did not replace an empty set")
	}
	reload(good)
	if h.broker.Policies() != good {
		t.Error("a set with policies did not replace an empty set")
	}
	if err := h.broker.PoliciesHealth(); err != nil {
		t.Errorf("PoliciesHealth with policies: %v", err)
	}
	if n := reloads(t, h, "ok"); n != 2 {
		t.Errorf("credbroker_policy_reloads_total{result=ok} = %v, want 2", n)
	}
	close(next) // ends the load the last trigger started
}

// TestReloaderReadsAgainWhileFilesChange: when the stamp changes while the
// files are read, the set read may mix old and new files, so they are read
// again, up to three times; when they are still changing, the last set is
// put in force and the next check reloads.
func TestReloaderReadsAgainWhileFilesChange(t *testing.T) {
	h := newHarness(t)
	var sets []*policies.Set
	for range 4 {
		sets = append(sets, compileSet(t, testPolicies))
	}
	// The stamps seen in turn: "1" before the first load, then a new one
	// after each of the three loads, then "4" for good.
	var mu sync.Mutex
	stamps := []string{"1", "2", "3", "4"}
	stamp := func() string {
		mu.Lock()
		defer mu.Unlock()
		s := stamps[0]
		if len(stamps) > 1 {
			stamps = stamps[1:]
		}
		return s
	}
	var loads atomic.Int32
	logs := &logBuffer{}
	runReloader(t, &broker.Reloader{
		Broker: h.broker,
		Load: func() (*policies.Set, error) {
			n := loads.Add(1)
			if int(n) > len(sets) {
				return nil, errors.New("loaded more often than the files changed")
			}
			return sets[n-1], nil
		},
		Stamp:    stamp,
		Initial:  "0",
		Interval: time.Millisecond,
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
	})
	// Two sets are put in force: the third load's, then the fourth's.
	reloaded := func() (n int) {
		for _, l := range logs.lines(t) {
			if l["msg"] != "policies reloaded" {
				t.Fatalf("unexpected log line %v", l)
			}
			n++
		}
		return n
	}
	deadline := time.Now().Add(time.Minute)
	for reloaded() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the fourth load never came into force; %d loads, log %v", loads.Load(), logs.lines(t))
		}
		time.Sleep(time.Millisecond)
	}
	if h.broker.Policies() != sets[3] {
		t.Error("the fourth load is not in force")
	}
	if n := loads.Load(); n != 4 {
		t.Errorf("%d loads, want 4: three while the files changed, one after", n)
	}
}

// reloads returns credbroker_policy_reloads_total for result.
func reloads(t *testing.T, h *harness, result string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "credbroker_policy_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no credbroker_policy_reloads_total{result=%q}", result)
	return 0
}
