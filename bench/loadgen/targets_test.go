package main

import (
	"bytes"
	"encoding/json"
	"os"
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

// scenarioRows returns the rows of the scenario under heading, of the
// squeezed lines of a report.
func scenarioRows(t *testing.T, lines []string, heading string) []string {
	t.Helper()
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
		rows := scenarioRows(t, lines, heading)
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

// withDurable adds to rs (fabricated's three rounds) the durable server's
// results in the scenarios of ks ("32", "1", "1000"), watched (with CPU
// and RSS) when watched.
func withDurable(rs []Result, watched bool, ks ...string) []Result {
	pid, w := 0, 0.0
	if watched {
		pid, w = 4343, 1
	}
	for i := range 3 {
		// Unwatched, the server's CPU and RSS are not measured: 0.
		pick := func(v ...float64) float64 { return v[i] }
		server := func(v ...float64) float64 { return w * v[i] }
		for _, k := range ks {
			switch k {
			case "32":
				rs = append(rs, Result{Label: "durable", Mode: "closed", Clients: 32, RPS: pick(4000, 3900, 4100), P50ms: 6, P99ms: 20,
					ServerPID: pid, ServerCPUusPerReq: server(150, 150, 150), ServerRSSPeakKB: int64(server(14000, 13000, 12000))})
			case "1":
				rs = append(rs, Result{Label: "durable", Mode: "closed", Clients: 1, RPS: 2300, P50ms: pick(0.36, 0.4, 0.3), P99ms: 1.5,
					ServerPID: pid, ServerCPUusPerReq: server(280, 290, 270)})
			case "1000":
				rs = append(rs, Result{Label: "durable", Mode: "open", Clients: 256, Rate: 1000, RPS: 1000, P50ms: 0.6,
					ServerPID: pid, ServerCPUusPerReq: server(300, 300, 300)})
			}
		}
	}
	return rs
}

// targetLines returns the lines of the targets section of report, as
// printed.
func targetLines(t *testing.T, report string) []string {
	t.Helper()
	_, tail, ok := strings.Cut(report, "\ntargets (")
	if !ok {
		t.Fatalf("no targets section:\n%s", report)
	}
	return strings.Split(strings.TrimSuffix("targets ("+tail, "\n"), "\n")
}

// Results without durable runs (older files) report exactly as before the
// durable server existed.
func TestReportWithoutDurableUnchanged(t *testing.T) {
	want, err := os.ReadFile("testdata/report-without-durable.golden")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := writeReport(&out, jsonl(t, fabricated()), nil); err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("report of results without durable runs changed:\n%s\nwant:\n%s", out.String(), want)
	}
}

// With the durable server in every scenario, its figures are the floor of
// req/s, latencies and server CPU; the target lines stay as they were, each
// followed by its figure over the durable server's.
func TestReportDurable(t *testing.T) {
	var out bytes.Buffer
	if err := writeReport(&out, jsonl(t, withDurable(fabricated(), true, "32", "1", "1000")), nil); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	lines := squeeze(out.String())
	if got, want := strings.Fields(lines[0]), []string{"bare", "fsync", "durable", "broker", "floor", "broker/floor"}; !slices.Equal(got, want) {
		t.Errorf("header = %q, want %q", got, want)
	}
	for heading, want := range map[string][]string{
		// The floor is the durable server's req/s, latencies and CPU where
		// decisions commit one at a time (1 client, an open loop it keeps up
		// with); at 32 clients, where decisions share commits, it is bare's
		// (and the fsync floor's, not run there). RSS is always bare's.
		"closed loop 32 client(s)": {
			"req/s 40000 - 4000 15000 40000 0.38",
			"p50 ms 0.500 - 6.000 2.000 0.500 4.00",
			"p99 ms 0.000 - 20.000 0.000 0.000",
			"server CPU µs/req 20.0 - 150.0 45.0 20.0 2.25",
			"server peak RSS MiB 13.7 - 12.7 34.2 13.7 2.50",
			"connections used 0 - 0 0",
		},
		"closed loop 1 client(s)": {
			"req/s 8000 5000 2300 2000 2300 0.87",
			"p50 ms 0.100 0.200 0.360 0.450 0.360 1.25",
			"p99 ms 1.000 2.000 1.500 4.000 1.500 2.67",
			"server CPU µs/req 80.0 100.0 280.0 360.0 280.0 1.29",
		},
		"open loop 1000 req/s (≤256 conns)": {
			"req/s 1000 1000 1000 1000 1000 1.00",
			"p50 ms 0.200 0.300 0.600 1.000 0.600 1.67",
			"server CPU µs/req 90.0 110.0 300.0 190.0 300.0 0.63",
		},
	} {
		rows := scenarioRows(t, lines, heading)
		for _, w := range want {
			if !slices.Contains(rows, w) {
				t.Errorf("%s: no row %q in %q", heading, w, rows)
			}
		}
	}

	// Every line of the targets section as it was, verbatim, in order, and
	// after each target its line against the durable floor.
	old, err := os.ReadFile("testdata/report-without-durable.golden")
	if err != nil {
		t.Fatal(err)
	}
	got := targetLines(t, out.String())
	var kept []string
	for _, l := range got {
		if !strings.Contains(l, vsDurablePrefix) {
			kept = append(kept, l)
		}
	}
	if want := targetLines(t, string(old)); !slices.Equal(kept, want) {
		t.Errorf("target lines changed:\n%s\nwant:\n%s", strings.Join(kept, "\n"), strings.Join(want, "\n"))
	}
	for i, want := range []string{
		"targets (limits computed from this run's figures; CPU per decision: the server's user + system time per request)",
		"(vs durable floor: the same figure over the durable server's, a bare request with one write and fsync: for information, no limit)",
		"broker: 3 of 5 targets met, 2 missed, 0 n/a, medians of 3 rounds",
		"  1 client p50                                          0.450 ms  ≤ bare 0.100 + 1.5 × fsync 0.200 = 0.400 ms  FAIL",
		"    vs durable floor: 1 client p50 0.450 ms = 1.25 × durable 0.360 ms",
		"  CPU per decision, open loop 1000 req/s                190.0 µs  ≤ 200.0 µs                                   PASS",
		"    vs durable floor: CPU per decision, open loop 1000 req/s 190.0 µs = 0.63 × durable 300.0 µs",
		"  CPU per decision, closed loop 32 clients               45.0 µs  ≤ 50.0 µs                                    PASS",
		"    vs durable floor: n/a: decisions share commits in closed loop 32 client(s), where the durable server commits one at a time; the floor there is bare's",
		"  req/s, closed loop 32 clients              15000 (0.38 × bare)  ≥ 0.35 × bare 40000 = 14000                  PASS",
		"    vs durable floor: n/a: decisions share commits in closed loop 32 client(s), where the durable server commits one at a time; the floor there is bare's",
		"  peak RSS, closed loop 32 clients          41.0 MiB (most of 3)  ≤ 40.0 MiB                                   FAIL",
		// The most over the rounds of each, as the target reads it.
		"    vs durable floor: peak RSS, closed loop 32 clients 41.0 MiB = 3.00 × durable 13.7 MiB",
	} {
		if i >= len(got) || got[i] != want {
			t.Errorf("targets line %d = %q, want %q", i, at(got, i), want)
		}
	}
	if len(got) != 13 {
		t.Errorf("targets section has %d lines, want 13:\n%s", len(got), strings.Join(got, "\n"))
	}
}

func at(ls []string, i int) string {
	if i < len(ls) {
		return ls[i]
	}
	return "(none)"
}

// Where the durable server did not run, or was not watched, the floor is
// bare and the fsync floor's as before and its lines read n/a.
func TestReportDurableMissing(t *testing.T) {
	for _, c := range []struct {
		name       string
		rs         []Result
		rows       map[string][]string
		vsDurables []string
	}{
		{
			name: "1 client only",
			rs:   withDurable(fabricated(), true, "1"),
			rows: map[string][]string{
				"closed loop 1 client(s)": {"p50 ms 0.100 0.200 0.360 0.450 0.360 1.25"},
				// No durable run here: bare + fsync, bare at 32 clients.
				"open loop 1000 req/s (≤256 conns)": {"server CPU µs/req 90.0 110.0 - 190.0 200.0 0.95"},
				"closed loop 32 client(s)":          {"req/s 40000 - - 15000 40000 0.38"},
			},
			vsDurables: []string{
				"vs durable floor: 1 client p50 0.450 ms = 1.25 × durable 0.360 ms",
				"vs durable floor: n/a: no durable result with server CPU in open loop 1000 req/s",
				"vs durable floor: n/a: no durable result with server CPU in closed loop 32 client(s)",
				"vs durable floor: n/a: no durable result in closed loop 32 client(s)",
				"vs durable floor: n/a: no durable result with server RSS in closed loop 32 client(s)",
			},
		},
		{
			name: "not watched",
			rs:   withDurable(fabricated(), false, "32", "1", "1000"),
			rows: map[string][]string{
				// The durable server's CPU was not measured: the floor is
				// bare + fsync; its latencies still are the floor.
				"closed loop 1 client(s)": {
					"server CPU µs/req 80.0 100.0 0.0 360.0 180.0 2.00",
					"p50 ms 0.100 0.200 0.360 0.450 0.360 1.25",
				},
			},
			vsDurables: []string{
				"vs durable floor: 1 client p50 0.450 ms = 1.25 × durable 0.360 ms",
				"vs durable floor: n/a: no durable result with server CPU in open loop 1000 req/s",
				"vs durable floor: n/a: no durable result with server CPU in closed loop 32 client(s)",
				"vs durable floor: n/a: decisions share commits in closed loop 32 client(s), where the durable server commits one at a time; the floor there is bare's",
				"vs durable floor: n/a: no durable result with server RSS in closed loop 32 client(s)",
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writeReport(&out, jsonl(t, c.rs), nil); err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + out.String())
			lines := squeeze(out.String())
			for heading, want := range c.rows {
				rows := scenarioRows(t, lines, heading)
				for _, w := range want {
					if !slices.Contains(rows, w) {
						t.Errorf("%s: no row %q in %q", heading, w, rows)
					}
				}
			}
			var vs []string
			for _, l := range squeeze(strings.Join(targetLines(t, out.String()), "\n")) {
				if strings.HasPrefix(l, vsDurablePrefix) {
					vs = append(vs, l)
				}
			}
			if !slices.Equal(vs, c.vsDurables) {
				t.Errorf("vs durable lines:\n%s\nwant:\n%s", strings.Join(vs, "\n"), strings.Join(c.vsDurables, "\n"))
			}
		})
	}

	// A broker without the 32-client scenario: its lines are n/a too.
	in := jsonl(t, []Result{
		{Label: "bare", Mode: "closed", Clients: 1, RPS: 8000, P50ms: 0.1},
		{Label: "durable", Mode: "closed", Clients: 1, RPS: 2000, P50ms: 0.4, ServerPID: 1, ServerCPUusPerReq: 250},
		{Label: "broker", Mode: "closed", Clients: 1, RPS: 2000, P50ms: 0.5, ServerPID: 1, ServerCPUusPerReq: 300},
	})
	var out bytes.Buffer
	if err := writeReport(&out, in, nil); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	lines := squeeze(out.String())
	// No fsync floor, but a floor column: the durable server's.
	if got, want := strings.Fields(lines[0]), []string{"bare", "durable", "broker", "floor", "broker/floor"}; !slices.Equal(got, want) {
		t.Errorf("header = %q, want %q", got, want)
	}
	for _, want := range []string{
		"p50 ms 0.100 0.400 0.500 0.400 1.25",
		"1 client p50 0.500 ms n/a: no fsync-floor result in closed loop 1 client(s) n/a",
		"vs durable floor: 1 client p50 0.500 ms = 1.25 × durable 0.400 ms",
		"vs durable floor: n/a: no broker result with server CPU in open loop 1000 req/s",
		"vs durable floor: n/a: no broker result in a closed loop of more than 1 client",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %q", want)
		}
	}
}

// The durable server's results cannot be fsync-floor results, and ratios
// may name it.
func TestReportDurableLabel(t *testing.T) {
	rs := withDurable(fabricated(), true, "1")
	var out bytes.Buffer
	if err := writeReport(&out, jsonl(t, rs), []string{"broker/durable", "durable/floor"}); err != nil {
		t.Fatal(err)
	}
	lines := squeeze(out.String())
	if got, want := strings.Fields(lines[0]), []string{"bare", "fsync", "durable", "broker", "floor", "broker/durable", "durable/floor"}; !slices.Equal(got, want) {
		t.Errorf("header = %q, want %q", got, want)
	}
	if rows := scenarioRows(t, lines, "closed loop 1 client(s)"); !slices.Contains(rows, "p50 ms 0.100 0.200 0.360 0.450 0.360 1.25 1.00") {
		t.Errorf("1 client rows %q lack p50 with broker/durable 1.25, durable/floor 1.00", rows)
	}
	rs = fabricated()
	rs[3].Label = "durable" // an fsync-floor result
	if err := writeReport(&out, jsonl(t, rs), nil); err == nil || !strings.Contains(err.Error(), `label "durable"`) {
		t.Errorf("an fsync-floor result labelled durable: %v, want an error", err)
	}
}

// TestDurableIsFloor: the durable server's figures are a decision's floor
// only where decisions commit one at a time and it kept up.
func TestDurableIsFloor(t *testing.T) {
	kept := []*Result{{OK: 5000, Late: 10}, {OK: 5000, Late: 250}}
	behind := []*Result{{OK: 5000, Late: 10}, {OK: 5000, Late: 251}}
	dropped := []*Result{{OK: 5000, Dropped: 1}}
	for _, tc := range []struct {
		k       scenario
		durable []*Result
		want    bool
	}{
		{scenario{mode: "closed", clients: 1}, kept, true},
		{scenario{mode: "closed", clients: 32}, kept, false},
		{scenario{mode: "open", rate: 1000}, kept, true},
		{scenario{mode: "open", rate: 5000}, behind, false},
		{scenario{mode: "open", rate: 5000}, dropped, false},
	} {
		if got := durableIsFloor(tc.k, tc.durable); got != tc.want {
			t.Errorf("durableIsFloor(%v, late %d…) = %v, want %v", tc.k, tc.durable[len(tc.durable)-1].Late, got, tc.want)
		}
	}
}
