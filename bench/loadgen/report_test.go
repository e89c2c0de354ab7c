package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestReportRounds checks the three-target report: medians over rounds,
// errors summed, and the default ratio columns against bare and baseline.
func TestReportRounds(t *testing.T) {
	var in bytes.Buffer
	for _, r := range []Result{
		{Label: "bare", Mode: "closed", Clients: 32, RPS: 40000, P50ms: 0.5},
		{Label: "baseline", Mode: "closed", Clients: 32, RPS: 10000, P50ms: 2},
		{Label: "broker", Mode: "closed", Clients: 32, RPS: 12000, P50ms: 2, Errors: 1},
		{Label: "bare", Mode: "closed", Clients: 32, RPS: 40000, P50ms: 0.5},
		{Label: "baseline", Mode: "closed", Clients: 32, RPS: 10000, P50ms: 2},
		{Label: "broker", Mode: "closed", Clients: 32, RPS: 6000, P50ms: 4, Errors: 2},
		{Label: "bare", Mode: "closed", Clients: 32, RPS: 40000, P50ms: 0.5},
		{Label: "baseline", Mode: "closed", Clients: 32, RPS: 10000, P50ms: 2},
		{Label: "broker", Mode: "closed", Clients: 32, RPS: 15000, P50ms: 1},
	} {
		b, _ := json.Marshal(r)
		in.Write(append(b, '\n'))
	}
	var out bytes.Buffer
	if err := writeReport(&out, &in, nil); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	lines := strings.Split(out.String(), "\n")
	// row returns the fields of the row starting with name.
	row := func(name string) []string {
		for _, l := range lines {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, name+"  ") {
				return strings.Fields(strings.TrimPrefix(l, name))
			}
		}
		t.Fatalf("no row %q", name)
		return nil
	}
	if got, want := strings.Fields(lines[0]), []string{"bare", "baseline", "broker", "baseline/bare", "broker/bare", "broker/baseline"}; !slices.Equal(got, want) {
		t.Errorf("header = %q, want %q", got, want)
	}
	// Medians: broker req/s 12000 of 6000, 12000, 15000; p50 2 of 1, 2, 4.
	for name, want := range map[string][]string{
		"req/s range":                  {"40000–40000", "10000–10000", "6000–15000"},
		"rounds (figures are medians)": {"3", "3", "3"},
		"req/s":                        {"40000", "10000", "12000", "0.25", "0.30", "1.20"},
		"p50 ms":                       {"0.500", "2.000", "2.000", "4.00", "4.00", "1.00"},
		"errors":                       {"0", "0", "3"},
	} {
		if got := row(name); !slices.Equal(got, want) {
			t.Errorf("row %q = %q, want %q", name, got, want)
		}
	}
}

func TestReportRatios(t *testing.T) {
	in := `{"label":"bare","mode":"closed","clients":1,"rps":100}
{"label":"broker","mode":"closed","clients":1,"rps":50}
`
	var out bytes.Buffer
	if err := writeReport(&out, strings.NewReader(in), []string{"bare/broker"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "bare/broker") || !strings.Contains(out.String(), "2.00") {
		t.Errorf("report lacks bare/broker 2.00:\n%s", out.String())
	}
	for _, bad := range []string{"broker/baseline", "broker", "/bare"} {
		if err := writeReport(&out, strings.NewReader(in), []string{bad}); err == nil {
			t.Errorf("ratio %q: no error", bad)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1}, 3},
		{[]float64{9, 1, 4}, 4},
		{[]float64{4, 1, 3, 100}, 3.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
