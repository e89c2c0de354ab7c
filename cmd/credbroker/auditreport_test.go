package main

import (
	"database/sql"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/credbroker/credbroker/internal/chromiumtest"
)

// TestAuditReportBinary has a running broker decide requests, then writes
// `credbroker audit report` of its log with the binary and opens the file
// in headless Chromium: it loads without a console message and shows the
// decisions the broker made, and the log verifies. After a row is edited
// the report is still written, says FAILED with the verifier's message,
// and the command exits 1.
func TestAuditReportBinary(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	b := e.start()
	c := socketClient(e.socket)
	for _, req := range []struct {
		credential string
		status     int
	}{{"demo", 200}, {"demo", 200}, {"demo", 200}, {"other", 200}, {"forbidden", 403}, {"forbidden", 403}, {"unlisted", 403}, {"nope", 404}} {
		if r := call(t, c, "GET", "/v1/credentials/"+req.credential, nil, nil); r.Status != req.status {
			t.Fatalf("%s: status %d, want %d: %s", req.credential, r.Status, req.status, r.Body)
		}
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("broker exit %d:\n%s", code, b.logs)
	}

	out := filepath.Join(t.TempDir(), "report.html")
	stdout, stderr, code := credbroker(t, "audit", "report", "--db", e.db, "--since", "1h", "--output", out)
	if code != 0 || stderr != "" {
		t.Fatalf("audit report: exit %d, stderr %q", code, stderr)
	}
	if want := "wrote " + out + ": 8 decisions (4 allowed, 3 denied, 1 errors) from "; !strings.HasPrefix(stdout, want) || !strings.HasSuffix(stdout, "; integrity: verified\n") {
		t.Errorf("stdout %q, want %q… verified", stdout, want)
	}
	if secret, _ := os.ReadFile(out); strings.Contains(string(secret), "s3cr3t") {
		t.Error("the report holds the secret")
	}
	page := chromiumtest.Load(t, out)
	if len(page.Console) > 0 {
		t.Errorf("the report logged on the console:\n%s", strings.Join(page.Console, "\n"))
	}
	for id, want := range map[string]string{
		"count-total": "8", "count-allow": "4", "count-deny": "3", "count-error": "1", "integrity-status": "verified",
	} {
		if got := elementText(t, page.DOM, id); got != want {
			t.Errorf("#%s shows %q, want %q", id, got, want)
		}
	}
	for _, row := range []string{
		// workload, decisions, share, allowed, denied, errors
		`<th scope="row">unix:uid:0</th><td class="n">8</td><td class="n">100.0 %</td><td class="n">4</td><td class="n">3</td><td class="n">1</td>`,
		`<th scope="row">demo</th><td class="n">3</td><td class="n">37.5 %</td><td class="n">3</td><td class="n">0</td><td class="n">0</td>`,
		`<th scope="row">forbidden</th><td class="n">2</td><td class="n">25.0 %</td><td class="n">0</td><td class="n">2</td><td class="n">0</td>`,
		`<th scope="row">nope</th><td class="n">1</td><td class="n">12.5 %</td><td class="n">0</td><td class="n">0</td><td class="n">1</td>`,
		`<th scope="row">root-reads-demo</th>`,
		`<th scope="row">nobody-reads-forbidden</th>`,
		`<th scope="row"><span class="none">policy set (default deny)</span></th>`,
	} {
		if !strings.Contains(page.DOM, row) {
			t.Errorf("the report lacks %s", row)
		}
	}
	src := elementText(t, page.DOM, "source")
	if abs, _ := filepath.Abs(e.db); !strings.HasPrefix(src, "audit log "+abs+" on host ") {
		t.Errorf("source %q, want the log's path and the host", src)
	}

	// The HTML on stdout, the summary on stderr.
	stdout, stderr, code = credbroker(t, "audit", "report", "--db", e.db, "--since", "1h", "--output", "-")
	if code != 0 || !strings.HasPrefix(stdout, "<!DOCTYPE html>") || !strings.HasPrefix(stderr, "wrote -: 8 decisions") {
		t.Errorf("--output -: exit %d, stderr %q, stdout %.40q", code, stderr, stdout)
	}

	db, err := sql.Open("sqlite", e.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE decisions SET reason = 'nothing to see' WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, stderr, code = credbroker(t, "audit", "report", "--db", e.db, "--since", "1h", "--output", out)
	if code != 1 || !strings.Contains(stderr, "the log does not verify, as the report says: audit: log does not verify: seq 2") {
		t.Errorf("after an edit: exit %d, stderr %q; want 1 and the failure", code, stderr)
	}
	page = chromiumtest.Load(t, out)
	if len(page.Console) > 0 {
		t.Errorf("the report logged on the console:\n%s", strings.Join(page.Console, "\n"))
	}
	if got := elementText(t, page.DOM, "integrity-status"); got != "FAILED" {
		t.Errorf("#integrity-status shows %q after an edit, want FAILED", got)
	}
	if got := elementText(t, page.DOM, "integrity-summary"); !strings.Contains(got, "seq 2") || !strings.Contains(got, "row edited") {
		t.Errorf("#integrity-summary %q does not name the edited row", got)
	}
}

// TestAuditReportUsage checks the mistakes audit report refuses before
// reading anything, and a log that is not there.
func TestAuditReportUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--db", filepath.Join(dir, "a.db")}, exitUsage, "--output: is required"},
		{[]string{"--output", filepath.Join(dir, "r.html"), "--since", "1h", "--until", "2h"}, exitUsage, "is not before the window's end"},
		{[]string{"--output", filepath.Join(dir, "r.html"), "--since", "yesterday"}, exitUsage, `--since: audit: time "yesterday"`},
		{[]string{"--output", filepath.Join(dir, "r.html"), "--top", "0"}, exitUsage, "--top: 0: want 1 or more"},
		{[]string{"--output", filepath.Join(dir, "r.html"), "--db", filepath.Join(dir, "missing.db")}, 1, "missing.db"},
	} {
		_, stderr, code := runCLI(append([]string{"audit", "report"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "r.html")); !os.IsNotExist(err) {
		t.Errorf("a refused report left a file: %v", err)
	}
}

// elementText returns the text of the element with the given id.
func elementText(t *testing.T, dom, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>(.*?)</`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no element #%s in the report", id)
	}
	return html.UnescapeString(m[1])
}
