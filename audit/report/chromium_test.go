package report

import (
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/internal/chromiumtest"
)

// TestChromiumRendersReport writes the report of a log written through
// audit.Log, opens it in headless Chromium and checks that it loads
// without a console message (no script, CSS, SVG or policy error, no load
// attempted), that the document is complete, and that the DOM the browser
// built shows the log's counts, with the hostile values as text. It then
// prints the report to PDF, as an auditor does.
func TestChromiumRendersReport(t *testing.T) {
	rep := buildFromLog(t, writeLog(t))
	path := filepath.Join(t.TempDir(), "report.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteHTML(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	page := chromiumtest.Load(t, path)
	if len(page.Console) > 0 {
		t.Errorf("the page logged on the console:\n%s", strings.Join(page.Console, "\n"))
	}
	dom := page.DOM
	if !strings.Contains(dom, `<footer id="end">`) {
		t.Fatalf("the DOM ends before the footer:\n%s", dom)
	}
	if n := strings.Count(dom, "<script"); n != 0 {
		t.Errorf("the DOM has %d script elements", n)
	}
	for id, want := range map[string]string{
		"count-total": "12", "count-allow": "6", "count-deny": "4", "count-error": "2",
		"integrity-status": "verified", "window": "2025-03-10 00:00:00 UTC to 2025-03-12 00:00:00 UTC (2 days)",
	} {
		if got := textOf(t, dom, id); got != want {
			t.Errorf("#%s shows %q, want %q", id, got, want)
		}
	}
	checkTable(t, dom, "timeline-table", [][]string{
		{"Hour", "Decisions", "Allowed", "Denied", "Errors"},
		{"2025-03-10 00:00–01:00 UTC", "4", "3", "1", "0"},
		{"2025-03-10 05:00–06:00 UTC", "4", "2", "1", "1"},
		{"2025-03-11 06:00–07:00 UTC", "3", "1", "2", "0"},
		{"2025-03-11 07:00–08:00 UTC", "1", "0", "0", "1"},
		{"All", "12", "6", "4", "2"},
	})
	quotedBidi := `"spiffe://prod/ns/pay\u202egnp.exe"`
	checkTable(t, dom, "workloads-table", [][]string{
		{"Workload", "Decisions", "Share", "Allowed", "Denied", "Errors"},
		{alice, "4", "33.3 %", "4", "0", "0"},
		{bob, "3", "25.0 %", "2", "1", "0"},
		{"no subject: attestation failed", "2", "16.7 %", "0", "0", "2"},
		{quotedBidi, "2", "16.7 %", "0", "2", "0"},
		{scripted, "1", "8.3 %", "0", "1", "0"},
	})
	checkTable(t, dom, "credentials-table", [][]string{
		{"Credential", "Decisions", "Share", "Allowed", "Denied", "Errors"},
		{"demo", "8", "66.7 %", "3", "3", "2"},
		{"orders-db", "3", "25.0 %", "3", "0", "0"},
		{hostileCr, "1", "8.3 %", "0", "1", "0"},
	})
	checkTable(t, dom, "reasons-table", [][]string{
		{"Outcome", "Reason", "Decisions", "Last seen", "Example decision"},
		{"denied", `"no policy allows spiffe://prod/ns/pay\u202egnp.exe to read demo"`, "2", "2025-03-11 06:02:00 UTC", "d012"},
		{"error", "kubernetes: token expired", "2", "2025-03-11 07:00:00 UTC", "d013"},
		{"denied", "denied by policy no-prod", "1", "2025-03-10 05:00:02 UTC", "d008"},
		{"denied", "no policy allows " + scripted + " to read demo", "1", "2025-03-10 00:55:00 UTC", "d005"},
	})
	checkTable(t, dom, "policies-table", [][]string{
		{"Policy", "Version", "First seen", "Last seen", "Decisions", "Allowed", "Denied", "Change"},
		{"policy set (default deny)", "set1set1set1", "2025-03-10 00:55:00 UTC", "2025-03-10 00:55:00 UTC", "1", "0", "1", "first in window"},
		{"policy set (default deny)", "set2set2set2", "2025-03-11 06:01:00 UTC", "2025-03-11 06:02:00 UTC", "2", "0", "2", "replaced set1set1set1"},
		{"dev", "v1aaaaaaaaaa", "2025-03-10 00:05:00 UTC", "2025-03-10 00:50:00 UTC", "3", "3", "0", "first in window"},
		{"dev", "v2bbbbbbbbbb", "2025-03-11 06:00:00 UTC", "2025-03-11 06:00:00 UTC", "1", "1", "0", "replaced v1aaaaaaaaaa"},
		{"no-prod", "noprodv1nopr", "2025-03-10 05:00:02 UTC", "2025-03-10 05:00:02 UTC", "1", "0", "1", "first in window"},
		{"orders", "ordersv1ordr", "2025-03-10 05:00:00 UTC", "2025-03-10 05:00:01 UTC", "2", "2", "0", "first in window"},
	})
	checkTable(t, dom, "leases-table", [][]string{{"Event", "Rows"}, {"issue", "2"}, {"revoke", "1"}})
	// The chart: one group per hour, a bar segment per outcome present.
	if n := strings.Count(dom, `<rect class="allow"`); n != 3 {
		t.Errorf("%d allow segments in the chart, want 3 (hours 0, 5, 30)", n)
	}
	if n := strings.Count(dom, "<g><title>"); n != 48 {
		t.Errorf("%d bars in the chart, want 48", n)
	}
	if !strings.Contains(dom, "<title>2025-03-10 05:00–06:00 UTC: 4 decisions (2 allowed, 1 denied, 1 errors)</title>") {
		t.Error("the bar of hour 5 lacks its text alternative")
	}

	pdf := chromiumtest.PrintPDF(t, path)
	if n := chromiumtest.PDFPages(pdf); n < 2 || n > 6 {
		t.Errorf("the report prints on %d pages, want 2 to 6", n)
	}
}

// textOf returns the text of the element with the given id in dom.
func textOf(t *testing.T, dom, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>(.*?)</`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no element #%s in the DOM", id)
	}
	return text(m[1])
}

var (
	rowPattern  = regexp.MustCompile(`(?s)<tr>(.*?)</tr>`)
	cellPattern = regexp.MustCompile(`(?s)<t[hd][^>]*>(.*?)</t[hd]>`)
	tagPattern  = regexp.MustCompile(`<[^>]*>`)
)

// checkTable compares the text of the cells of the table with the given
// id, row by row, header included, with want.
func checkTable(t *testing.T, dom, id string, want [][]string) {
	t.Helper()
	start := strings.Index(dom, `<table id="`+id+`"`)
	if start < 0 {
		t.Errorf("no table #%s in the DOM", id)
		return
	}
	end := strings.Index(dom[start:], "</table>")
	var got [][]string
	for _, row := range rowPattern.FindAllStringSubmatch(dom[start:start+end], -1) {
		var cells []string
		for _, c := range cellPattern.FindAllStringSubmatch(row[1], -1) {
			cells = append(cells, text(c[1]))
		}
		got = append(got, cells)
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("table #%s shows\n%q\nwant\n%q", id, got, want)
	}
}

// text is the text of an HTML fragment: tags dropped, references decoded,
// white space collapsed.
func text(fragment string) string {
	return strings.Join(strings.Fields(html.UnescapeString(tagPattern.ReplaceAllString(fragment, ""))), " ")
}
