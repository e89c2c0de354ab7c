package report

import (
	"bufio"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
)

// style is the page's whole style sheet, inlined into its <style> element.
//
//go:embed style.css
var style string

// pageTemplate is the page; it reads a page value.
//
//go:embed report.html.tmpl
var pageTemplate string

// contentSecurityPolicy forbids the page every script, every load and
// every style but its own sheet, named by its hash: should a value ever
// escape the escaping, it can run nothing and fetch nothing.
var contentSecurityPolicy = func() string {
	sum := sha256.Sum256([]byte(style))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; img-src 'none'; base-uri 'none'; form-action 'none'"
}()

// tmpl is the parsed page template.
var tmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"printable": printable,
	"quoted":    quoted,
	"time":      formatTime,
	"num":       anyNumber,
	"pct":       percent,
	"px":        func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"period":    periodLabel,
	"stepName":  stepName,
	"title":     func(s string) string { return strings.ToUpper(s[:1]) + s[1:] },
	"ranking":   newRankingTable,
	"statusClass": func(s Status) string {
		switch s {
		case Verified:
			return "ok"
		case Failed:
			return "fail"
		}
		return "warn"
	},
}).Parse(pageTemplate))

// rankingTable is what the "ranking" template reads: one top table.
type rankingTable struct {
	ID, Noun string
	// Missing is what an empty name stands for, "" to show it as "none".
	Missing string
	Caption string
	Ranking Ranking
	Total   int64 // every decision of the window, of which shares are taken
}

// newRankingTable describes the top table of r.
func newRankingTable(id, noun, missing string, r Ranking, total int64) rankingTable {
	caption := fmt.Sprintf("The %d %ss with the most decisions, of %s; shares are of all %s decisions in the window.",
		len(r.Top), strings.ToLower(noun), number(int64(r.Distinct)), number(total))
	if r.OtherNames == 0 {
		caption = fmt.Sprintf("Every %s, by decisions; shares are of all %s decisions in the window.", strings.ToLower(noun), number(total))
	}
	return rankingTable{ID: id, Noun: noun, Missing: missing, Caption: caption, Ranking: r, Total: total}
}

// anyNumber is number for the integers a template holds.
func anyNumber(v any) (string, error) {
	switch n := v.(type) {
	case int:
		return number(int64(n)), nil
	case int64:
		return number(n), nil
	}
	return "", fmt.Errorf("report: num: %T is not an integer", v)
}

// page is what the template reads: the report and what is derived from it
// for display.
type page struct {
	*Report
	CSS    template.CSS
	CSP    string
	Chart  *chart
	Window string   // the window's length in words
	Busy   []Bucket // the timeline's buckets with decisions
}

// WriteHTML writes the report as one self-contained HTML document.
func (r *Report) WriteHTML(w io.Writer) error {
	p := &page{Report: r, CSS: template.CSS(style), CSP: contentSecurityPolicy, Chart: newChart(r), Window: span(r.Until.Sub(r.Since))}
	for _, b := range r.Timeline {
		if b.Total() > 0 {
			p.Busy = append(p.Busy, b)
		}
	}
	bw := bufio.NewWriter(w)
	if err := tmpl.Execute(bw, p); err != nil {
		return fmt.Errorf("report: writing the page: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("report: writing the page: %w", err)
	}
	return nil
}

// percent writes n as a share of total: "12.5 %", "—" when total is 0.
func percent(n, total int64) string {
	if total == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f %%", float64(n)*100/float64(total))
}

// span writes a window's length in days and hours: "30 days", "2 days 3
// hours", "45 minutes".
func span(d time.Duration) string {
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	days, hours := d/(24*time.Hour), d%(24*time.Hour)/time.Hour
	var parts []string
	if days > 0 {
		parts = append(parts, plural(int64(days), "day"))
	}
	if hours > 0 {
		parts = append(parts, plural(int64(hours), "hour"))
	}
	return strings.Join(parts, " ")
}

// plural writes "1 day", "2 days".
func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return number(n) + " " + unit + "s"
}
