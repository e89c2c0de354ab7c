package chromiumtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writePage(t *testing.T, html string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "page.html")
	if err := os.WriteFile(p, []byte(html), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoad checks that a clean page loads with no console message and
// that the DOM is the one the browser built (attributes quoted, text
// escaped), and that a page with a malformed SVG attribute, a script the
// page's policy blocks and an image it may not load is reported on the
// console, once each.
func TestLoad(t *testing.T) {
	clean := Load(t, writePage(t, `<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>t</title></head>
<body><p id=a>1 &lt; 2</p><svg viewBox="0 0 10 10"><rect width=5 height=5 /></svg></body></html>`))
	if len(clean.Console) != 0 {
		t.Errorf("console of a clean page: %q", clean.Console)
	}
	if !strings.Contains(clean.DOM, `<p id="a">1 &lt; 2</p>`) {
		t.Errorf("DOM:\n%s", clean.DOM)
	}

	broken := Load(t, writePage(t, `<!DOCTYPE html><html lang=en><head><meta charset=utf-8>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'"><title>t</title></head>
<body><svg><rect width=5 height="5/"></rect></svg><img src="http://192.0.2.1/x.png" alt=""><script>document.title = "ran"</script></body></html>`))
	want := []string{`<rect> attribute height`, `Loading the image 'http://192.0.2.1/x.png' violates`, `Executing inline script violates`}
	for _, w := range want {
		if !slices.ContainsFunc(broken.Console, func(m string) bool { return strings.Contains(m, w) }) {
			t.Errorf("no console message with %q in %q", w, broken.Console)
		}
	}
	if len(broken.Console) != len(want) {
		t.Errorf("%d console messages, want %d: %q", len(broken.Console), len(want), broken.Console)
	}
	if !strings.Contains(broken.DOM, "<title>t</title>") {
		t.Errorf("the blocked script ran: %s", broken.DOM)
	}
}

// TestPrintPDF prints a page that forces a page break and counts two pages.
func TestPrintPDF(t *testing.T) {
	pdf := PrintPDF(t, writePage(t, `<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>t</title></head>
<body><p>one</p><p style="break-before: page">two</p></body></html>`))
	if n := PDFPages(pdf); n != 2 {
		t.Errorf("%d pages, want 2", n)
	}
}

// TestConsoleMessages checks the parsing of Chromium's log lines, both
// formats, and that other lines are not taken for console messages.
func TestConsoleMessages(t *testing.T) {
	logs := `[1:1:1130/065149.089034:INFO:CONSOLE:1] "a", source: file:///x (1)
[1:1:1130/065149.089034:ERROR:dbus/bus.cc:405] Failed to connect to the bus
[1:1:1130/065149.089034:INFO:CONSOLE(12)] "b", source: file:///x (12)
/usr/bin/chromium: 9: [: 1: unexpected operator`
	if got := consoleMessages(logs); !slices.Equal(got, []string{`"a", source: file:///x (1)`, `"b", source: file:///x (12)`}) {
		t.Errorf("consoleMessages = %q", got)
	}
}
