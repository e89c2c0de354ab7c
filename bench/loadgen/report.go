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
// scenario (mode, clients, rate) with one column per label and the ratio of
// every other label to the baseline: "bare" when present, else the first
// label seen. Ratios are other/baseline for every row, so for req/s below 1
// means slower and for latencies above 1 means slower.
func writeReport(w io.Writer, r io.Reader) error {
	type key struct {
		mode          string
		clients, rate int
	}
	var (
		labels []string
		keys   []key
		byKey  = map[key]map[string]*Result{}
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
			byKey[k] = map[string]*Result{}
			keys = append(keys, k)
		}
		byKey[k][res.Label] = res
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
	base, others := labels[0], labels[1:]

	var t table
	head := append([]string{""}, labels...)
	for _, l := range others {
		head = append(head, l+"/"+base)
	}
	t.add(head...)

	type row struct {
		name  string
		get   func(*Result) float64
		prec  int
		ratio bool
		open  bool // open loop only
	}
	rows := []row{
		{"req/s", func(r *Result) float64 { return r.RPS }, 0, true, false},
		{"errors", func(r *Result) float64 { return float64(r.Errors) }, 0, false, false},
		{"p50 ms", func(r *Result) float64 { return r.P50ms }, 3, true, false},
		{"p90 ms", func(r *Result) float64 { return r.P90ms }, 3, true, false},
		{"p99 ms", func(r *Result) float64 { return r.P99ms }, 3, true, false},
		{"p99.9 ms", func(r *Result) float64 { return r.P999ms }, 3, true, false},
		{"max ms", func(r *Result) float64 { return r.MaxMs }, 3, true, false},
		{"late", func(r *Result) float64 { return float64(r.Late) }, 0, false, true},
		{"dropped", func(r *Result) float64 { return float64(r.Dropped) }, 0, false, true},
		{"connections used", func(r *Result) float64 { return float64(r.Conns) }, 0, false, false},
		{"server CPU µs/req", func(r *Result) float64 { return r.ServerCPUusPerReq }, 1, true, false},
		{"server peak RSS MiB", func(r *Result) float64 { return float64(r.ServerRSSPeakKB) / 1024 }, 1, true, false},
		{"client CPU cores", func(r *Result) float64 { return r.ClientCPUS / max(r.DurationS, 1e-9) }, 2, false, false},
	}
	for _, k := range keys {
		if k.mode == "open" {
			t.add(fmt.Sprintf("open loop %d req/s (≤%d conns)", k.rate, k.clients))
		} else {
			t.add(fmt.Sprintf("closed loop %d client(s)", k.clients))
		}
		results := byKey[k]
		for _, rw := range rows {
			if rw.open && k.mode != "open" {
				continue
			}
			cells := []string{"  " + rw.name}
			for _, l := range labels {
				if res := results[l]; res != nil {
					cells = append(cells, fmt.Sprintf("%.*f", rw.prec, rw.get(res)))
				} else {
					cells = append(cells, "-")
				}
			}
			for _, l := range others {
				b, o := results[base], results[l]
				if !rw.ratio || b == nil || o == nil || rw.get(b) == 0 {
					cells = append(cells, "")
					continue
				}
				cells = append(cells, fmt.Sprintf("%.2f", rw.get(o)/rw.get(b)))
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
		for i, c := range r {
			pad := 0
			if len(r) > 1 {
				pad = width[i] - utf8.RuneCountInString(c)
			}
			switch {
			case i == 0:
				b.WriteString(c)
				b.WriteString(strings.Repeat(" ", pad))
			default:
				b.WriteString("  ")
				b.WriteString(strings.Repeat(" ", pad))
				b.WriteString(c)
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
