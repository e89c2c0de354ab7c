// Package chromiumtest opens pages in headless Chromium for tests: the DOM
// the browser built, the console messages it logged while loading (script
// and CSS errors, malformed SVG attributes, Content Security Policy
// violations, failed loads), and the page printed to PDF.
//
//	page := chromiumtest.Load(t, "/tmp/report.html")
//	if len(page.Console) > 0 { t.Errorf("console: %q", page.Console) }
//	if !strings.Contains(page.DOM, `id="count-total">12<`) { … }
//	pdf := chromiumtest.PrintPDF(t, "/tmp/report.html")
//
// Each call runs one chromium process (Debian's package "chromium", or the
// binary $CHROMIUM names) with a profile of its own in a temporary
// directory, in a process group of its own that is killed when the call
// returns, so no renderer outlives it. A missing chromium fails the test:
// scripts/test.sh installs it.
package chromiumtest

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Page is a page as headless Chromium loaded it.
type Page struct {
	// DOM is the serialised document after the load event, as
	// --dump-dom prints it.
	DOM string
	// Console holds the console messages the page produced while loading,
	// each with its source: errors, warnings and blocked actions.
	Console []string
}

// timeout bounds one chromium run; generous, for a busy machine.
const timeout = 2 * time.Minute

// Load opens the HTML file at path and returns the loaded page.
func Load(t testing.TB, path string) *Page {
	t.Helper()
	out, logs := run(t, path, "--dump-dom")
	if !strings.Contains(out, "</html>") {
		t.Fatalf("chromium printed no complete document for %s:\n%s", path, logs)
	}
	return &Page{DOM: out, Console: consoleMessages(logs)}
}

// PrintPDF prints the HTML file at path to PDF, as a reader's "Save as
// PDF" does (A4 unless the page says otherwise, no header or footer), and
// returns the PDF.
func PrintPDF(t testing.TB, path string) []byte {
	t.Helper()
	pdf := filepath.Join(t.TempDir(), "page.pdf")
	_, logs := run(t, path, "--no-pdf-header-footer", "--print-to-pdf="+pdf)
	b, err := os.ReadFile(pdf)
	if err != nil || !bytes.HasPrefix(b, []byte("%PDF-")) {
		t.Fatalf("chromium printed no PDF of %s (%v):\n%s", path, err, logs)
	}
	return b
}

// pageCount matches the page count of a PDF's page tree.
var pageCount = regexp.MustCompile(`/Type\s*/Pages\b[^>]*?/Count\s+(\d+)`)

// PDFPages returns the number of pages of a PDF Chromium printed, 0 when
// it names none.
func PDFPages(pdf []byte) int {
	m := pageCount.FindSubmatch(pdf)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// binary returns the chromium to run, failing the test when there is none.
func binary(t testing.TB) string {
	t.Helper()
	name := os.Getenv("CHROMIUM")
	if name == "" {
		name = "chromium"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("chromiumtest: %v: install Debian's chromium (apt-get install chromium; scripts/test.sh does), or set $CHROMIUM to a Chromium binary", err)
	}
	return p
}

// run runs headless chromium on the file at path with extra flags, and
// returns its stdout and its log (stderr).
func run(t testing.TB, path string, extra ...string) (stdout, logs string) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	profile := t.TempDir()
	args := append([]string{
		"--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
		"--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile, "--enable-logging=stderr", "--v=0",
	}, extra...)
	args = append(args, (&url.URL{Scheme: "file", Path: abs}).String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(os.Environ(), "HOME="+profile) // Chromium writes caches under $HOME
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // renderers and helpers it left, if any
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("chromium did not finish %s within %v:\n%s", path, timeout, errb.String())
	}
	if err != nil {
		t.Fatalf("chromium on %s: %v:\n%s", path, err, errb.String())
	}
	return out.String(), errb.String()
}

// consoleLine matches a console message in Chromium's log:
// [pid:tid:time:INFO:CONSOLE:1] "message", source: file:///… (1)
// (older releases write CONSOLE(1)).
var consoleLine = regexp.MustCompile(`:CONSOLE[:(]\d*\)?\] (.*)$`)

// consoleMessages returns the console messages of a chromium log.
func consoleMessages(logs string) []string {
	var msgs []string
	for line := range strings.SplitSeq(logs, "\n") {
		if m := consoleLine.FindStringSubmatch(line); m != nil {
			msgs = append(msgs, m[1])
		}
	}
	return msgs
}
