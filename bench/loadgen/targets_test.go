package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// jsonl encodes results as a file of -json results.
func jsonl(t *testing.T, rs []Result) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	for _, r := range rs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	return &b
}

// squeeze returns the lines of s with their runs of spaces made single.
func squeeze(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}

// fabricated is three rounds of every scenario of make bench: bare, the
// fsync floor and the broker, with figures chosen so that each target's
// median is on a known side of its limit.
func fabricated() []Result {
	const pid = 4242 // a server was watched: CPU and RSS are measured
	var rs []Result
	for i := range 3 {
		pick := func(v ...float64) float64 { return v[i] }
		rs = append(rs,
			// 32 clients: req/s median 15000 ≥ 0.35 × 40000 = 14000; CPU median
			// 45 ≤ 50; RSS the most 42000 KiB = 41.0 MiB > 40.
			Result{Label: "bare", Mode: "closed", Clients: 32, RPS: 40000, P50ms: 0.5, ServerPID: pid, ServerCPUusPerReq: 20, ServerRSSPeakKB: 14000},
			Result{Label: "broker", Mode: "closed", Clients: 32, RPS: pick(15000, 12000, 16000), P50ms: 2, ServerPID: pid,
				ServerCPUusPerReq: pick(45, 60, 40), ServerRSSPeakKB: int64(pick(30000, 42000, 35000))},
			// 1 client: p50 median 0.45 > bare 0.1 + 1.5 × fsync 0.2 = 0.4.
			Result{Label: "bare", Mode: "closed", Clients: 1, RPS: 8000, P50ms: pick(0.1, 0.2, 0.1), P99ms: 1, ServerPID: pid, ServerCPUusPerReq: 80},
			Result{Label: "fsync", Mode: "closed", Clients: 1, RPS: 5000, P50ms: pick(0.2, 0.2, 0.3), P99ms: 2, ServerCPUusPerReq: 100, Sync: "fsync", WriteSize: 4120, Syncs: 5000},
			Result{Label: "broker", Mode: "closed", Clients: 1, RPS: 2000, P50ms: pick(0.5, 0.45, 0.3), P99ms: 4, ServerPID: pid, ServerCPUusPerReq: 360},
			// 1000 req/s: CPU median 190 ≤ 200.
			Result{Label: "bare", Mode: "open", Clients: 256, Rate: 1000, RPS: 1000, P50ms: 0.2, ServerPID: pid, ServerCPUusPerReq: 90},
			Result{Label: "fsync", Mode: "open", Clients: 1, Rate: 1000, RPS: 1000, P50ms: 0.3, ServerCPUusPerReq: 110, Sync: "fsync", WriteSize: 4120, Syncs: 990},
			Result{Label: "broker", Mode: "open", Clients: 256, Rate: 1000, RPS: 1000, P50ms: 1, ServerPID: pid, ServerCPUusPerReq: pick(150, 250, 190)},
		)
	}
	return rs
}

func TestReportTargets(t *testing.T) {
	var out bytes.Buffer
	if err := writeReport(&out, jsonl(t, fabricated()), nil); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	lines := squeeze(out.String())
	// The targets: limits from the same medians, PASS or FAIL.
	for _, want := range []string{
		"broker: 3 of 5 targets met, 2 missed, 0 n/a, medians of 3 rounds",
		"1 client p50 0.450 ms ≤ bare 0.100 + 1.5 × fsync 0.200 = 0.400 ms FAIL",
		"CPU per decision, open loop 1000 req/s 190.0 µs ≤ 200.0 µs PASS",
		"CPU per decision, closed loop 32 clients 45.0 µs ≤ 50.0 µs PASS",
		"req/s, closed loop 32 clients 15000 (0.38 × bare) ≥ 0.35 × bare 40000 = 14000 PASS",
		"peak RSS, closed loop 32 clients 41.0 MiB (most of 3) ≤ 40.0 MiB FAIL",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %q", want)
		}
	}
	// The table: the floor column and each figure's ratio to it.
	if got, want := strings.Fields(lines[0]), []string{"bare", "fsync", "broker", "floor", "broker/floor"}; !slices.Equal(got, want) {
		t.Errorf("header = %q, want %q", got, want)
	}
	scenarioRows := func(heading string) []string {
		i := slices.Index(lines, heading)
		if i < 0 {
			t.Fatalf("no scenario %q", heading)
		}
		var rows []string
		for _, l := range lines[i+1:] {
			if !strings.Contains(l, " ") || strings.HasPrefix(l, "requests sent") {
				break
			}
			rows = append(rows, l)
		}
		return rows
	}
	for heading, want := range map[string][]string{
		// 1 client: req/s of bare and fsync one after the other,
		// 1/(1/8000 + 1/5000) = 3077; p50 bare + fsync; p99 the larger;
		// CPU bare + fsync.
		"closed loop 1 client(s)": {
			"req/s 8000 5000 2000 3077 0.65",
			"p50 ms 0.100 0.200 0.450 0.300 1.50",
			"p99 ms 1.000 2.000 4.000 2.000 2.00",
			"server CPU µs/req 80.0 100.0 360.0 180.0 2.00",
			"connections used 0 - 0",
		},
		// 32 clients: no fsync floor, so the floor is bare's.
		"closed loop 32 client(s)": {
			"req/s 40000 - 15000 40000 0.38",
			"server CPU µs/req 20.0 - 45.0 20.0 2.25",
			"server peak RSS MiB 13.7 - 34.2 13.7 2.50",
		},
		// The fsync floor's open loop joins the broker's at the same rate.
		"open loop 1000 req/s (≤256 conns)": {
			"p50 ms 0.200 0.300 1.000 0.500 2.00",
			"server CPU µs/req 90.0 110.0 190.0 200.0 0.95",
		},
	} {
		rows := scenarioRows(heading)
		for _, w := range want {
			if !slices.Contains(rows, w) {
				t.Errorf("%s: no row %q in %q", heading, w, rows)
			}
		}
	}
}

// A target whose figures were not measured reads n/a; the report does not
// fail, and without an fsync floor the ratios are to bare, as before.
func TestReportTargetsMissing(t *testing.T) {
	in := jsonl(t, []Result{
		{Label: "bare", Mode: "closed", Clients: 1, RPS: 8000, P50ms: 0.1},
		{Label: "broker", Mode: "closed", Clients: 1, RPS: 2000, P50ms: 0.5, ServerPID: 1, ServerCPUusPerReq: 300},
		{Label: "broker", Mode: "open", Clients: 256, Rate: 5000, RPS: 5000, ServerPID: 1, ServerCPUusPerReq: 100},
	})
	var out bytes.Buffer
	if err := writeReport(&out, in, nil); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	lines := squeeze(out.String())
	if got, want := strings.Fields(lines[0]), []string{"bare", "broker", "broker/bare"}; !slices.Equal(got, want) {
		t.Errorf("header = %q, want %q", got, want)
	}
	for _, want := range []string{
		"broker: 0 of 5 targets met, 0 missed, 5 n/a, medians of 1 round(s): fewer than 3, indicative only",
		"1 client p50 0.500 ms n/a: no fsync-floor result in closed loop 1 client(s) n/a",
		"CPU per decision, open loop 1000 req/s n/a n/a: no broker result with server CPU in open loop 1000 req/s n/a",
		"CPU per decision, closed loop N clients n/a n/a: no broker result in a closed loop of more than 1 client n/a",
		"req/s, closed loop N clients n/a n/a: no broker result in a closed loop of more than 1 client n/a",
		"peak RSS, closed loop N clients n/a n/a: no broker result in a closed loop of more than 1 client n/a",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %q", want)
		}
	}

	// Only the bare server: no targets section at all.
	out.Reset()
	if err := writeReport(&out, jsonl(t, []Result{{Label: "bare", Mode: "closed", Clients: 1, RPS: 1}}), nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "targets") {
		t.Errorf("targets without a server:\n%s", out.String())
	}
}

// The floor column's name cannot also be a label, and ratios may name it.
func TestReportFloorColumn(t *testing.T) {
	in := func() *bytes.Buffer { return jsonl(t, fabricated()) }
	var out bytes.Buffer
	if err := writeReport(&out, in(), []string{"broker/bare", "broker/floor", "fsync/bare"}); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Fields(squeeze(out.String())[0]), []string{"bare", "fsync", "broker", "floor", "broker/bare", "broker/floor", "fsync/bare"}; !slices.Equal(got, want) {
		t.Errorf("header = %q, want %q", got, want)
	}
	rs := fabricated()
	rs[0].Label = "floor"
	if err := writeReport(&out, jsonl(t, rs), nil); err == nil || !strings.Contains(err.Error(), `label "floor"`) {
		t.Errorf("a result labelled floor: %v, want an error", err)
	}
}
