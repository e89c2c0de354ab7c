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

// writeReport reads -json results, one object a line, and prints each
// scenario (mode, clients, rate) with one column per label and one per
// ratio. Labels keep their order of first appearance, except that "bare",
// when present, comes first.
//
// A label may have several results per scenario (rounds of the same run):
// each figure is then the median over the rounds, except errors and dropped
// (summed, so that no failure is hidden) and connections used (the most),
// and a "rounds" row and a req/s range row are added.
//
// ratios lists the ratio columns as "label/label" (numerator/denominator);
// when empty, every other label is divided by the first, and when a label
// "baseline" is present every label other than the first and "baseline" is
// also divided by "baseline". A ratio is of the two columns' figures, so for
// req/s below 1 means slower and for latencies above 1 means slower.
func writeReport(w io.Writer, r io.Reader, ratios []string) error {
	type key struct {
		mode          string
		clients, rate int
	}
	var (
		labels []string
		keys   []key
		byKey  = map[key]map[string][]*Result{}
		total  = map[string]int64{}
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		res := new(Result)
		if err := json.Unmarshal(sc.Bytes(), res); err != nil {
			return fmt.Errorf("report: line %d: %w", n, err)
		}
		if !slices.Contains(labels, res.Label) {
			labels = append(labels, res.Label)
		}
		k := key{res.Mode, res.Clients, res.Rate}
		if byKey[k] == nil {
			byKey[k] = map[string][]*Result{}
			keys = append(keys, k)
		}
		byKey[k][res.Label] = append(byKey[k][res.Label], res)
		total[res.Label] += res.TotalRequests
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if len(labels) == 0 {
		return errors.New("report: no results")
	}
	if i := slices.Index(labels, "bare"); i > 0 {
		labels = append(append([]string{"bare"}, labels[:i]...), labels[i+1:]...)
	}
	pairs, err := ratioPairs(labels, ratios)
	if err != nil {
		return err
	}

	var t table
	head := append([]string{""}, labels...)
	for _, p := range pairs {
		head = append(head, p[0]+"/"+p[1])
	}
	t.add(head...)

	type row struct {
		name  string
		get   func(*Result) float64
		agg   func([]float64) float64
		prec  int
		ratio bool
		open  bool // open loop only
	}
	rows := []row{
		{"req/s", func(r *Result) float64 { return r.RPS }, median, 0, true, false},
		{"errors", func(r *Result) float64 { return float64(r.Errors) }, sum, 0, false, false},
		{"p50 ms", func(r *Result) float64 { return r.P50ms }, median, 3, true, false},
		{"p90 ms", func(r *Result) float64 { return r.P90ms }, median, 3, true, false},
		{"p99 ms", func(r *Result) float64 { return r.P99ms }, median, 3, true, false},
		{"p99.9 ms", func(r *Result) float64 { return r.P999ms }, median, 3, true, false},
		{"max ms", func(r *Result) float64 { return r.MaxMs }, median, 3, true, false},
		{"late", func(r *Result) float64 { return float64(r.Late) }, median, 0, false, true},
		{"dropped", func(r *Result) float64 { return float64(r.Dropped) }, sum, 0, false, true},
		{"connections used", func(r *Result) float64 { return float64(r.Conns) }, slices.Max[[]float64], 0, false, false},
		{"server CPU µs/req", func(r *Result) float64 { return r.ServerCPUusPerReq }, median, 1, true, false},
		{"server peak RSS MiB", func(r *Result) float64 { return float64(r.ServerRSSPeakKB) / 1024 }, median, 1, true, false},
		{"client CPU cores", func(r *Result) float64 { return r.ClientCPUS / max(r.DurationS, 1e-9) }, median, 2, false, false},
	}
	// figure aggregates one row's figure over a label's rounds; ok is false
	// when the label has no result in the scenario.
	figure := func(results []*Result, rw row) (v float64, ok bool) {
		if len(results) == 0 {
			return 0, false
		}
		vs := make([]float64, len(results))
		for i, res := range results {
			vs[i] = rw.get(res)
		}
		return rw.agg(vs), true
	}
	for _, k := range keys {
		if k.mode == "open" {
			t.add(fmt.Sprintf("open loop %d req/s (≤%d conns)", k.rate, k.clients))
		} else {
			t.add(fmt.Sprintf("closed loop %d client(s)", k.clients))
		}
		results := byKey[k]
		several := false
		for _, rs := range results {
			several = several || len(rs) > 1
		}
		if several {
			cells := []string{"  rounds (figures are medians)"}
			for _, l := range labels {
				cells = append(cells, fmt.Sprint(len(results[l])))
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
		for _, rw := range rows {
			if rw.open && k.mode != "open" {
				continue
			}
			cells := []string{"  " + rw.name}
			for _, l := range labels {
				if v, ok := figure(results[l], rw); ok {
					cells = append(cells, fmt.Sprintf("%.*f", rw.prec, v))
				} else {
					cells = append(cells, "-")
				}
			}
			for _, p := range pairs {
				num, okN := figure(results[p[0]], rw)
				den, okD := figure(results[p[1]], rw)
				if !rw.ratio || !okN || !okD || den == 0 {
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
		cells = append(cells, fmt.Sprint(total[l]))
	}
	t.add(cells...)
	return t.write(w)
}

// ratioPairs returns the ratio columns as [numerator, denominator] pairs:
// the parsed ratios, or the default described at writeReport.
func ratioPairs(labels, ratios []string) ([][2]string, error) {
	var pairs [][2]string
	if len(ratios) == 0 {
		base := labels[0]
		for _, l := range labels[1:] {
			pairs = append(pairs, [2]string{l, base})
		}
		if base != "baseline" && slices.Contains(labels, "baseline") {
			for _, l := range labels[1:] {
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
		case !slices.Contains(labels, num) || !slices.Contains(labels, den):
			errs = append(errs, fmt.Errorf("report: ratio %q: the results' labels are %s", s, strings.Join(labels, ", ")))
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
