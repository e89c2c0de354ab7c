package broker

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTimers stands in for time.AfterFunc: a test fires the timers itself.
type fakeTimers struct {
	mu      sync.Mutex
	now     time.Time
	pending []func()
}

func (f *fakeTimers) afterFunc(d time.Duration, fn func()) *time.Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = append(f.pending, fn)
	return time.NewTimer(time.Hour) // never read; only its being non-nil matters
}

// fire advances the clock by d and runs the timers pending until then.
func (f *fakeTimers) fire(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	fns := f.pending
	f.pending = nil
	f.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (f *fakeTimers) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// logLines decodes the JSON log lines in buf.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	buf.Reset()
	return out
}

// TestRateLog: an outage refusing many requests logs the first at once, then
// one line per interval per cause with the count held back, and forgets a
// cause an interval after it stops.
func TestRateLog(t *testing.T) {
	var buf bytes.Buffer
	ft := &fakeTimers{now: time.Unix(1_700_000_000, 0)}
	r := newRateLog(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second)
	r.now, r.afterFunc = ft.clock, ft.afterFunc

	for range 5000 {
		r.Warn("disk full", "refused", "error", "disk full")
	}
	r.Warn("locked", "refused", "error", "locked")
	lines := logLines(t, &buf)
	if len(lines) != 2 || lines[0]["error"] != "disk full" || lines[1]["error"] != "locked" {
		t.Fatalf("after 5,000 refusals of one cause and 1 of another: %v", lines)
	}

	ft.fire(10 * time.Second) // the interval ends: the held-back count of "disk full"
	lines = logLines(t, &buf)
	if len(lines) != 1 || lines[0]["error"] != "disk full" || lines[0][keyRepeated] != 4999.0 {
		t.Fatalf("at the end of the interval: %v", lines)
	}

	for range 300 {
		r.Warn("disk full", "refused", "error", "disk full")
	}
	if lines = logLines(t, &buf); len(lines) != 0 {
		t.Fatalf("within the next interval, lines were logged at once: %v", lines)
	}
	ft.fire(10 * time.Second)
	if lines = logLines(t, &buf); len(lines) != 1 || lines[0][keyRepeated] != 300.0 {
		t.Fatalf("second interval: %v", lines)
	}

	ft.fire(10 * time.Second) // an interval without the cause: forgotten
	if lines = logLines(t, &buf); len(lines) != 0 {
		t.Fatalf("a quiet interval logged: %v", lines)
	}
	r.Warn("disk full", "refused", "error", "disk full")
	if lines = logLines(t, &buf); len(lines) != 1 || lines[0][keyRepeated] != nil {
		t.Fatalf("a new outage after a quiet interval: %v", lines)
	}
}

// TestRateLogBoundsCauses: causes beyond maxCauses are counted together.
func TestRateLogBoundsCauses(t *testing.T) {
	var buf bytes.Buffer
	ft := &fakeTimers{now: time.Unix(1_700_000_000, 0)}
	r := newRateLog(slog.New(slog.NewJSONHandler(&buf, nil)), time.Second)
	r.now, r.afterFunc = ft.clock, ft.afterFunc
	for i := range 1000 {
		r.Warn(strings.Repeat("x", i), "refused")
	}
	if n := len(logLines(t, &buf)); n != maxCauses+1 {
		t.Fatalf("%d lines for 1,000 distinct causes, want %d", n, maxCauses+1)
	}
	if len(r.causes) > maxCauses+1 {
		t.Fatalf("%d causes tracked", len(r.causes))
	}
}
