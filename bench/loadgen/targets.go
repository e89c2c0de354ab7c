package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// The socket API's targets (issue 14). Each is checked against figures of
// the same run: medians over its rounds, like the table.
const (
	// The 1-client p50 stays within the bare server's p50 plus this many
	// fsync-floor p50s.
	targetP50Fsyncs = 1.5
	// Server CPU per request in the open loop at targetCPURate req/s, and
	// at saturation (the closed loop with the most clients), in µs.
	targetCPURate  = 1000
	targetCPUOpen  = 200.0
	targetCPUSatur = 50.0
	// Req/s at saturation stays at least this share of the bare server's.
	targetRPSShare = 0.35
	// Peak VmRSS at saturation, the most over the rounds, in MiB.
	targetRSSMiB = 40.0
	// The fewest rounds the targets are meant to be read from.
	targetRounds = 3
)

// target is one line of the targets section.
type target struct {
	name, measured, limit string
	verdict               string // PASS, FAIL or n/a
	// vsDurable compares the measured figure with the durable server's in
	// the same scenario, for information: "<name> <figure> = <ratio> ×
	// durable <figure>", or "n/a: <reason>".
	vsDurable string
}

// vsDurablePrefix begins the informational line under each target when
// the results have durable-server runs.
const vsDurablePrefix = "vs durable floor: "

// writeTargets prints, for every label but bare, the fsync floor's and
// durable, one line per target: the measured figure, the limit with how it
// was computed from the same run's figures, and PASS, FAIL or n/a (when a
// figure the target needs is missing from the results). When the results
// have durable-server runs, each target line is followed by an
// informational one, "vs durable floor: …", that gives the same figure
// over the durable server's: how far the label is from what the machine
// allows for one decision committed alone. It has no limit and no verdict.
func writeTargets(w io.Writer, rs *results) error {
	servers := rs.servers()
	if len(servers) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("\ntargets (limits computed from this run's figures; CPU per decision: the server's user + system time per request)\n")
	if rs.durable {
		b.WriteString("(" + strings.TrimSuffix(vsDurablePrefix, " ") + " the same figure over the durable server's, a bare request with one write and fsync: for information, no limit)\n")
	}
	for _, l := range servers {
		ts, rounds := rs.targets(l)
		pass, fail := 0, 0
		for _, t := range ts {
			switch t.verdict {
			case "PASS":
				pass++
			case "FAIL":
				fail++
			}
		}
		note := ""
		switch {
		case rounds == 0:
		case rounds < targetRounds:
			note = fmt.Sprintf(", medians of %d round(s): fewer than %d, indicative only", rounds, targetRounds)
		default:
			note = fmt.Sprintf(", medians of %d rounds", rounds)
		}
		fmt.Fprintf(&b, "%s: %d of %d targets met, %d missed, %d n/a%s\n", l, pass, len(ts), fail, len(ts)-pass-fail, note)
		var wName, wMeas, wLimit int
		for _, t := range ts {
			wName = max(wName, utf8.RuneCountInString(t.name))
			wMeas = max(wMeas, utf8.RuneCountInString(t.measured))
			wLimit = max(wLimit, utf8.RuneCountInString(t.limit))
		}
		for _, t := range ts {
			line := "  " + pad(t.name, wName) + "  " + strings.Repeat(" ", wMeas-utf8.RuneCountInString(t.measured)) + t.measured +
				"  " + pad(t.limit, wLimit) + "  " + t.verdict
			b.WriteString(strings.TrimRight(line, " ") + "\n")
			if rs.durable {
				b.WriteString("    " + vsDurablePrefix + t.vsDurable + "\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func pad(s string, width int) string {
	return s + strings.Repeat(" ", width-utf8.RuneCountInString(s))
}

// targets returns label l's target lines and the fewest rounds any of
// their figures was a median of (0 when none was measured).
func (rs *results) targets(l string) ([]target, int) {
	missing := func(label string, k scenario, what string) string {
		return fmt.Sprintf("n/a: no %s result%s in %s", label, what, k)
	}
	rounds := 0
	// med returns the median of get over label's results in k that have
	// the figure (has), and their number.
	med := func(k scenario, label string, get func(*Result) float64, has func(*Result) bool) (float64, int) {
		var vs []float64
		for _, r := range rs.byKey[k][label] {
			if has == nil || has(r) {
				vs = append(vs, get(r))
			}
		}
		if len(vs) == 0 {
			return 0, 0
		}
		return median(vs), len(vs)
	}
	// fig is med that notes the number in rounds.
	fig := func(k scenario, label string, get func(*Result) float64, has func(*Result) bool) (float64, bool) {
		v, n := med(k, label, get, has)
		if n == 0 {
			return 0, false
		}
		if rounds == 0 || n < rounds {
			rounds = n
		}
		return v, true
	}
	// vs is a target's vsDurable: the label's figure v (when okV) over the
	// durable server's median of get in k, each shown with format.
	vs := func(name string, k scenario, v float64, okV bool, get func(*Result) float64, has func(*Result) bool, what, format string) string {
		d, n := med(k, durableLabel, get, has)
		switch {
		case !okV:
			return missing(l, k, what)
		case n == 0:
			return missing(durableLabel, k, what)
		case !durableIsFloor(k, rs.byKey[k][durableLabel]):
			return "n/a: decisions " + map[bool]string{true: "share commits", false: "queue"}[k.mode == "closed"] +
				" in " + k.String() + ", where the durable server commits one at a time; the floor there is bare's"
		}
		return vsText(name, v, d, format)
	}
	hasCPU := func(r *Result) bool { return r.ServerPID != 0 || r.Sync != "" }
	cpu := func(r *Result) float64 { return r.ServerCPUusPerReq }
	var ts []target

	// 1 client p50 ≤ bare p50 + 1.5 × fsync p50.
	one := scenario{"closed", 1, 0}
	p50 := func(r *Result) float64 { return r.P50ms }
	t := target{name: "1 client p50", measured: "n/a", verdict: "n/a"}
	v, okV := fig(one, l, p50, nil)
	if okV {
		t.measured = fmt.Sprintf("%.3f ms", v)
	}
	bare, okB := fig(one, "bare", p50, nil)
	fs, okF := 0.0, false
	if rs.fsync != "" {
		fs, okF = fig(one, rs.fsync, p50, nil)
	}
	switch {
	case !okB:
		t.limit = missing("bare", one, "")
	case !okF:
		t.limit = missing("fsync-floor", one, "")
	default:
		limit := bare + targetP50Fsyncs*fs
		t.limit = fmt.Sprintf("≤ bare %.3f + %.1f × fsync %.3f = %.3f ms", bare, targetP50Fsyncs, fs, limit)
		if !okV {
			t.limit = missing(l, one, "")
		} else {
			t.verdict = verdict(v <= limit)
		}
	}
	t.vsDurable = vs(t.name, one, v, okV, p50, nil, "", "%.3f ms")
	ts = append(ts, t)

	// CPU per request at 1,000 req/s, open loop.
	open := scenario{"open", 0, targetCPURate}
	t = target{name: fmt.Sprintf("CPU per decision, open loop %d req/s", targetCPURate), measured: "n/a", verdict: "n/a",
		limit: fmt.Sprintf("≤ %.1f µs", targetCPUOpen)}
	v, okV = fig(open, l, cpu, hasCPU)
	if okV {
		t.measured = fmt.Sprintf("%.1f µs", v)
		t.verdict = verdict(v <= targetCPUOpen)
	} else {
		t.limit = missing(l, open, " with server CPU")
	}
	t.vsDurable = vs(t.name, open, v, okV, cpu, hasCPU, " with server CPU", "%.1f µs")
	ts = append(ts, t)

	// Saturation: the closed loop with the most clients (32 in make bench).
	var satur scenario
	for _, k := range rs.keys {
		if k.mode == "closed" && k.clients > max(1, satur.clients) && len(rs.byKey[k][l]) > 0 {
			satur = k
		}
	}
	if satur.mode == "" {
		for _, name := range []string{"CPU per decision", "req/s", "peak RSS"} {
			why := fmt.Sprintf("n/a: no %s result in a closed loop of more than 1 client", l)
			ts = append(ts, target{name: name + ", closed loop N clients", measured: "n/a", limit: why, verdict: "n/a", vsDurable: why})
		}
		return ts, rounds
	}
	name := fmt.Sprintf(", closed loop %d clients", satur.clients)

	t = target{name: "CPU per decision" + name, measured: "n/a", verdict: "n/a", limit: fmt.Sprintf("≤ %.1f µs", targetCPUSatur)}
	v, okV = fig(satur, l, cpu, hasCPU)
	if okV {
		t.measured = fmt.Sprintf("%.1f µs", v)
		t.verdict = verdict(v <= targetCPUSatur)
	} else {
		t.limit = missing(l, satur, " with server CPU")
	}
	t.vsDurable = vs(t.name, satur, v, okV, cpu, hasCPU, " with server CPU", "%.1f µs")
	ts = append(ts, t)

	rps := func(r *Result) float64 { return r.RPS }
	t = target{name: "req/s" + name, verdict: "n/a"}
	v, _ = fig(satur, l, rps, nil)
	if bare, ok := fig(satur, "bare", rps, nil); ok && bare > 0 {
		limit := targetRPSShare * bare
		t.measured = fmt.Sprintf("%.0f (%.2f × bare)", v, v/bare)
		t.limit = fmt.Sprintf("≥ %.2f × bare %.0f = %.0f", targetRPSShare, bare, limit)
		t.verdict = verdict(v >= limit)
	} else {
		t.measured = fmt.Sprintf("%.0f", v)
		t.limit = missing("bare", satur, "")
	}
	t.vsDurable = vs(t.name, satur, v, true, rps, nil, "", "%.0f")
	ts = append(ts, t)

	// Peak RSS: the most over the rounds, a ceiling's worst case.
	t = target{name: "peak RSS" + name, measured: "n/a", verdict: "n/a", limit: fmt.Sprintf("≤ %.1f MiB", targetRSSMiB)}
	// peaks returns label's peak RSS samples in MiB, one per round.
	peaks := func(label string) []float64 {
		var ps []float64
		for _, r := range rs.byKey[satur][label] {
			if r.ServerRSSPeakKB > 0 {
				ps = append(ps, float64(r.ServerRSSPeakKB)/1024)
			}
		}
		return ps
	}
	if peaks := peaks(l); len(peaks) > 0 {
		v := slices.Max(peaks)
		t.measured = fmt.Sprintf("%.1f MiB", v)
		if len(peaks) > 1 {
			t.measured = fmt.Sprintf("%.1f MiB (most of %d)", v, len(peaks))
		}
		t.verdict = verdict(v <= targetRSSMiB)
	} else {
		t.limit = missing(l, satur, " with server RSS")
	}
	switch own, dur := peaks(l), peaks(durableLabel); {
	case len(own) == 0:
		t.vsDurable = missing(l, satur, " with server RSS")
	case len(dur) == 0:
		t.vsDurable = missing(durableLabel, satur, " with server RSS")
	default:
		t.vsDurable = vsText(t.name, slices.Max(own), slices.Max(dur), "%.1f MiB")
	}
	ts = append(ts, t)
	return ts, rounds
}

// vsText renders a vs-durable comparison: "<name> <v> = <v/d> × durable <d>",
// v and d shown with format.
func vsText(name string, v, d float64, format string) string {
	if d <= 0 {
		return fmt.Sprintf("n/a: the durable server's figure is %s", fmt.Sprintf(format, d))
	}
	return fmt.Sprintf("%s %s = %.2f × durable %s", name, fmt.Sprintf(format, v), v/d, fmt.Sprintf(format, d))
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}
