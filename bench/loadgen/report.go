package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// floorLabel is the name of the report's computed floor column, so no
// result may carry it as its label.
const floorLabel = "floor"

// durableLabel labels the durable server's runs (loadgen -serve-bare
// -durable): the bare server committing one record per request, the
// measured floor of a decision.
const durableLabel = "durable"

// scenario identifies the runs that are compared with each other: the
// closed loop by its clients, the open loop by its rate (whatever its
// connection limit, so that the fsync floor, which has none, joins it).
type scenario struct {
	mode          string
	clients, rate int
}

func (k scenario) String() string {
	if k.mode == "open" {
		return fmt.Sprintf("open loop %d req/s", k.rate)
	}
	return fmt.Sprintf("closed loop %d client(s)", k.clients)
}

// results holds a file of -json results by scenario and label.
type results struct {
	labels  []string // bare first, then the fsync floor's, durable, then in order of appearance
	fsync   string   // the label of the fsync-floor runs, "" when there are none
	durable bool     // there are durable-server runs
	keys    []scenario
	byKey   map[scenario]map[string][]*Result
	conns   map[scenario]int // open loop: the largest connection limit
	total   map[string]int64
}

func readResults(r io.Reader) (*results, error) {
	rs := &results{byKey: map[scenario]map[string][]*Result{}, conns: map[scenario]int{}, total: map[string]int64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		res := new(Result)
		if err := json.Unmarshal(sc.Bytes(), res); err != nil {
			return nil, fmt.Errorf("report: line %d: %w", n, err)
		}
		if res.Label == floorLabel {
			return nil, fmt.Errorf("report: line %d: label %q is the report's floor column; label the fsync-floor runs fsync", n, floorLabel)
		}
		if !slices.Contains(rs.labels, res.Label) {
			rs.labels = append(rs.labels, res.Label)
		}
		if res.Label == durableLabel {
			if res.Sync != "" {
				return nil, fmt.Errorf("report: line %d: label %q is the durable server's; label the fsync-floor runs fsync", n, durableLabel)
			}
			rs.durable = true
		}
		if res.Sync != "" && rs.fsync == "" {
			rs.fsync = res.Label
		}
		k := scenario{res.Mode, res.Clients, res.Rate}
		if k.mode == "open" {
			k.clients = 0
		}
		if rs.byKey[k] == nil {
			rs.byKey[k] = map[string][]*Result{}
			rs.keys = append(rs.keys, k)
		}
		rs.byKey[k][res.Label] = append(rs.byKey[k][res.Label], res)
		if res.Mode == "open" && res.Sync == "" {
			rs.conns[k] = max(rs.conns[k], res.Clients)
		}
		rs.total[res.Label] += res.TotalRequests
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if len(rs.labels) == 0 {
		return nil, errors.New("report: no results")
	}
	first := []string{"bare", rs.fsync, durableLabel}
	slices.SortStableFunc(rs.labels, func(a, b string) int {
		ia, ib := slices.Index(first, a), slices.Index(first, b)
		if ia < 0 {
			ia = len(first)
		}
		if ib < 0 {
			ib = len(first)
		}
		return ia - ib
	})
	return rs, nil
}

// servers returns the labels compared with the floor: all but bare, the
// fsync floor's and durable.
func (rs *results) servers() []string {
	var ls []string
	for _, l := range rs.labels {
		if l != "bare" && l != rs.fsync && l != durableLabel {
			ls = append(ls, l)
		}
	}
	return ls
}

// hasFloor says whether the report has a floor column: there are
// fsync-floor or durable results.
func (rs *results) hasFloor() bool { return rs.fsync != "" || rs.durable }

// floorKind says what a row's floor is, the figure a server is compared with.
type floorKind int

// Every kind but floorNone and floorBare is the durable server's figure
// when it ran in the scenario (and, for a watched row, was watched), and
// else combines bare's and the fsync floor's as said.
const (
	floorNone floorKind = iota // no floor: the row has no ratios
	floorBare                  // the bare server's figure (peak RSS)
	floorSum                   // bare plus the fsync floor's, when measured (p50, CPU)
	floorTail                  // the larger of bare's and the fsync floor's (tail latencies)
	floorRate                  // closed loop: bare and fsync one after the other, 1/(1/bare + 1/fsync)
)

// row is one figure of the table.
type row struct {
	name  string
	get   func(*Result) float64
	agg   func([]float64) float64
	prec  int
	floor floorKind
	open  bool // open loop only
	noFS  bool // means nothing for the fsync floor: shown as "-"
	// watched: a server's figure, measured only when loadgen watched its
	// process (-watch-pid), so a result without server_pid does not have it.
	watched bool
}

var rows = []row{
	{name: "req/s", get: func(r *Result) float64 { return r.RPS }, agg: median, floor: floorRate},
	{name: "errors", get: func(r *Result) float64 { return float64(r.Errors) }, agg: sum},
	{name: "p50 ms", get: func(r *Result) float64 { return r.P50ms }, agg: median, prec: 3, floor: floorSum},
	{name: "p90 ms", get: func(r *Result) float64 { return r.P90ms }, agg: median, prec: 3, floor: floorTail},
	{name: "p99 ms", get: func(r *Result) float64 { return r.P99ms }, agg: median, prec: 3, floor: floorTail},
	{name: "p99.9 ms", get: func(r *Result) float64 { return r.P999ms }, agg: median, prec: 3, floor: floorTail},
	{name: "max ms", get: func(r *Result) float64 { return r.MaxMs }, agg: median, prec: 3, floor: floorTail},
	{name: "late", get: func(r *Result) float64 { return float64(r.Late) }, agg: median, open: true},
	{name: "dropped", get: func(r *Result) float64 { return float64(r.Dropped) }, agg: sum, open: true},
	{name: "connections used", get: func(r *Result) float64 { return float64(r.Conns) }, agg: slices.Max[[]float64], noFS: true},
	{name: "server CPU µs/req", get: func(r *Result) float64 { return r.ServerCPUusPerReq }, agg: median, prec: 1, floor: floorSum, watched: true},
	{name: "server peak RSS MiB", get: func(r *Result) float64 { return float64(r.ServerRSSPeakKB) / 1024 }, agg: median, prec: 1, floor: floorBare, noFS: true, watched: true},
	{name: "client CPU cores", get: func(r *Result) float64 { return r.ClientCPUS / max(r.DurationS, 1e-9) }, agg: median, prec: 2, noFS: true},
}

// figure aggregates one row's figure over a label's rounds; ok is false
// when the label has no result in the scenario.
func figure(results []*Result, rw row) (v float64, ok bool) {
	if len(results) == 0 {
		return 0, false
	}
	vs := make([]float64, len(results))
	for i, res := range results {
		vs[i] = rw.get(res)
	}
	return rw.agg(vs), true
}

// floorOf returns a row's floor in scenario k (see floorKind).
func (rs *results) floorOf(k scenario, rw row) (float64, bool) {
	if rw.floor == floorNone {
		return 0, false
	}
	if rw.floor != floorBare && durableIsFloor(k, rs.byKey[k][durableLabel]) {
		durable := rs.byKey[k][durableLabel]
		if rw.watched {
			durable = slices.DeleteFunc(slices.Clone(durable), func(r *Result) bool { return r.ServerPID == 0 })
		}
		if v, ok := figure(durable, rw); ok {
			return v, true
		}
	}
	bare, ok := figure(rs.byKey[k]["bare"], rw)
	if !ok {
		return 0, false
	}
	fs, okFS := 0.0, false
	if rs.fsync != "" {
		fs, okFS = figure(rs.byKey[k][rs.fsync], rw)
	}
	switch {
	case rw.floor == floorSum && okFS:
		return bare + fs, true
	case rw.floor == floorTail && okFS:
		return max(bare, fs), true
	case rw.floor == floorRate && okFS && k.mode == "closed" && bare > 0 && fs > 0:
		return 1 / (1/bare + 1/fs), true
	}
	return bare, true
}

// durableIsFloor reports whether the durable server's results in scenario
// k are a floor for a decision: it commits one request at a time, which is
// the least a lone decision costs (one client; an open loop it kept up
// with), but not what decisions that arrive together cost, since they
// share one commit (several clients; an open loop it fell behind, where it
// measures its own queue). Elsewhere the floor is bare's and the fsync
// floor's figures combined.
func durableIsFloor(k scenario, durable []*Result) bool {
	switch k.mode {
	case "closed":
		return k.clients == 1
	case "open":
		for _, r := range durable {
			if r.Dropped > 0 || r.Late*20 > r.OK { // more than 5% late
				return false
			}
		}
		return true
	}
	return false
}

// writeReport reads -json results, one object a line, and prints each
// scenario (mode, clients, rate) with one column per label and one per
// ratio, then the targets (see writeTargets). Labels keep their order of
// first appearance, except that "bare", when present, comes first, the
// fsync floor's label (the results with a "sync" field) second, and
// "durable" (the durable server's) third.
//
// A label may have several results per scenario (rounds of the same run):
// each figure is then the median over the rounds, except errors and dropped
// (summed, so that no failure is hidden) and connections used (the most),
// and a "rounds" row and a req/s range row are added.
//
// When there are fsync-floor or durable results, a "floor" column gives
// each figure's floor, what the server is compared with. Where the durable
// server ran in the scenario, its req/s, latencies (p50 … max) and server
// CPU per request (when its process was watched) are the floor: it is one
// bare request and one commit measured as they run together, one decision
// committed alone. Elsewhere
// (results from before the durable server, or a scenario it did not run
// in) the floor is the bare server's figure, combined with the fsync
// floor's where that was measured in the scenario: the p50 and CPU per
// request are summed (a decision is a request and a commit); tail
// latencies (p90 … max) are the larger of the two, as tails of separate
// runs do not add but neither part can be faster than itself; the closed
// loop's req/s is that of the two one after the other, 1/(1/bare +
// 1/fsync). Req/s in the open loop and every figure of a scenario without
// an fsync run are then the bare server's. Peak RSS is always the bare
// server's.
//
// ratios lists the ratio columns as "label/label" (numerator/denominator,
// either may be "floor" when there is a floor column); when empty, every
// label but bare, the fsync floor's and durable is divided by the floor
// (or by the first label when there is no floor column), and when a label
// "baseline" is present every other such label is also divided by
// "baseline". A ratio is of the two columns' figures, so for req/s below 1
// means slower and for latencies above 1 means slower.
func writeReport(w io.Writer, r io.Reader, ratios []string) error {
	rs, err := readResults(r)
	if err != nil {
		return err
	}
	labels := rs.labels
	cols := labels
	if rs.hasFloor() {
		cols = append(slices.Clip(labels), floorLabel)
	}
	pairs, err := ratioPairs(rs, cols, ratios)
	if err != nil {
		return err
	}

	var t table
	head := append([]string{""}, cols...)
	for _, p := range pairs {
		head = append(head, p[0]+"/"+p[1])
	}
	t.add(head...)

	for _, k := range rs.keys {
		if c := rs.conns[k]; c > 0 {
			t.add(fmt.Sprintf("%s (≤%d conns)", k, c))
		} else {
			t.add(k.String())
		}
		results := rs.byKey[k]
		several := false
		for _, byLabel := range results {
			several = several || len(byLabel) > 1
		}
		if several {
			cells := []string{"  rounds (figures are medians)"}
			for _, l := range labels {
				if n := len(results[l]); n > 0 {
					cells = append(cells, fmt.Sprint(n))
				} else {
					cells = append(cells, "-")
				}
			}
			t.add(cells...)
			cells = []string{"  req/s range"}
			for _, l := range labels {
				if len(results[l]) == 0 {
					cells = append(cells, "-")
					continue
				}
				rps := make([]float64, len(results[l]))
				for i, res := range results[l] {
					rps[i] = res.RPS
				}
				cells = append(cells, fmt.Sprintf("%.0f–%.0f", slices.Min(rps), slices.Max(rps)))
			}
			t.add(cells...)
		}
		// value returns a column's figure: a label's, or the floor.
		value := func(col string, rw row) (float64, bool) {
			if col == floorLabel && rs.hasFloor() {
				return rs.floorOf(k, rw)
			}
			if col == rs.fsync && rw.noFS {
				return 0, false
			}
			return figure(results[col], rw)
		}
		for _, rw := range rows {
			if rw.open && k.mode != "open" {
				continue
			}
			cells := []string{"  " + rw.name}
			for _, c := range cols {
				if v, ok := value(c, rw); ok {
					cells = append(cells, fmt.Sprintf("%.*f", rw.prec, v))
				} else if c == floorLabel {
					cells = append(cells, "")
				} else {
					cells = append(cells, "-")
				}
			}
			for _, p := range pairs {
				num, okN := value(p[0], rw)
				den, okD := value(p[1], rw)
				if rw.floor == floorNone || !okN || !okD || den == 0 {
					cells = append(cells, "")
					continue
				}
				cells = append(cells, fmt.Sprintf("%.2f", num/den))
			}
			t.add(cells...)
		}
	}
	cells := []string{"requests sent, all runs incl. warm-up"}
	for _, l := range labels {
		cells = append(cells, fmt.Sprint(rs.total[l]))
	}
	t.add(cells...)
	if err := t.write(w); err != nil {
		return err
	}
	return writeTargets(w, rs)
}

// ratioPairs returns the ratio columns as [numerator, denominator] pairs
// of cols (the labels, and the floor column when there is one): the parsed
// ratios, or the default described at writeReport.
func ratioPairs(rs *results, cols, ratios []string) ([][2]string, error) {
	var pairs [][2]string
	if len(ratios) == 0 {
		base := rs.labels[0]
		if rs.hasFloor() {
			base = floorLabel
		}
		var num []string
		for _, l := range rs.labels[1:] {
			if l != rs.fsync && l != durableLabel {
				num = append(num, l)
			}
		}
		for _, l := range num {
			pairs = append(pairs, [2]string{l, base})
		}
		if slices.Contains(num, "baseline") {
			for _, l := range num {
				if l != "baseline" {
					pairs = append(pairs, [2]string{l, "baseline"})
				}
			}
		}
		return pairs, nil
	}
	var errs []error
	for _, s := range ratios {
		num, den, ok := strings.Cut(s, "/")
		switch {
		case !ok || num == "" || den == "":
			errs = append(errs, fmt.Errorf("report: ratio %q: want label/label", s))
		case !slices.Contains(cols, num) || !slices.Contains(cols, den):
			errs = append(errs, fmt.Errorf("report: ratio %q: the columns are %s", s, strings.Join(cols, ", ")))
		default:
			pairs = append(pairs, [2]string{num, den})
		}
	}
	return pairs, errors.Join(errs...)
}

// median returns the median of vs (the mean of the middle two when their
// number is even); vs is reordered.
func median(vs []float64) float64 {
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// sum returns the sum of vs.
func sum(vs []float64) float64 {
	var s float64
	for _, v := range vs {
		s += v
	}
	return s
}

// table prints rows with the first column left-aligned and the others
// right-aligned; a row of one cell is a section heading.
type table struct{ rows [][]string }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	var width []int
	for _, r := range t.rows {
		if len(r) == 1 {
			continue
		}
		for i, c := range r {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		var line strings.Builder
		for i, c := range r {
			pad := 0
			if len(r) > 1 {
				pad = width[i] - utf8.RuneCountInString(c)
			}
			switch {
			case i == 0:
				line.WriteString(c)
				line.WriteString(strings.Repeat(" ", pad))
			default:
				line.WriteString("  ")
				line.WriteString(strings.Repeat(" ", pad))
				line.WriteString(c)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
