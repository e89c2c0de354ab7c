package main

import (
	"context"
	"database/sql"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/audit/fleet"
	"github.com/credbroker/credbroker/internal/chromiumtest"
	"github.com/credbroker/credbroker/internal/pgtest"
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

// TestAuditReportFleet forwards a running broker's log to a fleet store on
// a real PostgreSQL, then writes the report of the store with --fleet and
// of one install with --install: the same counts as the log's own report,
// the installs table naming the host, each install verified, and the page
// loading in headless Chromium without a console message.
func TestAuditReportFleet(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.AdminDSN()
	if err := fleet.Init(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	b := e.start()
	c := socketClient(e.socket)
	for _, name := range []string{"demo", "demo", "forbidden", "nope"} {
		call(t, c, "GET", "/v1/credentials/"+name, nil, nil)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("broker exit %d:\n%s", code, b.logs)
	}

	// Forward the log and wait until the store holds its newest row.
	fwd, err := fleet.NewForwarder(fleet.Config{DSNFile: e.write("fleet.dsn", dsn), Source: e.db, Host: "host-a"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	var head int64
	if err := audit.OpenFile(e.db).Query(ctx, audit.Filter{Kind: audit.KindAll}, func(r *audit.Record) error { head = max(head, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	store, err := fleet.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var install string
	for deadline := time.Now().Add(hangBound); ; time.Sleep(20 * time.Millisecond) {
		var stored int64
		if err := store.Query(ctx, audit.Filter{Kind: audit.KindAll}, func(r *audit.Record) error {
			stored, install = max(stored, r.Seq), r.Install
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if stored == head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store holds rows up to seq %d after %v, want %d", stored, hangBound, head)
		}
	}
	store.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(t.TempDir(), "fleet.html")
	for _, args := range [][]string{
		{"--fleet", dsn},
		{"--dsn-file", filepath.Join(e.dir, "fleet.dsn"), "--install", install},
	} {
		stdout, stderr, code := credbroker(t, append([]string{"audit", "report", "--since", "1h", "--output", out}, args...)...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, ": 4 decisions (2 allowed, 1 denied, 1 errors) from ") || !strings.HasSuffix(stdout, "; integrity: verified\n") {
			t.Fatalf("audit report %s: exit %d, stdout %q, stderr %q", args[0], code, stdout, stderr)
		}
		page := chromiumtest.Load(t, out)
		if len(page.Console) > 0 {
			t.Errorf("the report logged on the console:\n%s", strings.Join(page.Console, "\n"))
		}
		for id, want := range map[string]string{"count-total": "4", "count-allow": "2", "count-deny": "1", "count-error": "1", "integrity-status": "verified"} {
			if got := elementText(t, page.DOM, id); got != want {
				t.Errorf("%s: #%s shows %q, want %q", args[0], id, got, want)
			}
		}
		src := elementText(t, page.DOM, "source")
		if !strings.HasPrefix(src, "fleet store, database ") || strings.Contains(src, "password") || (args[0] == "--dsn-file") != strings.HasSuffix(src, ", install "+install) {
			t.Errorf("%s: source %q", args[0], src)
		}
		if strings.Contains(page.DOM, dsn) {
			t.Errorf("%s: the report holds the DSN, password and all", args[0])
		}
		for _, want := range []string{
			`<th scope="row" class="mono">` + install + `</th><td>host-a</td>`,
			`<th scope="row" class="nw">Install ` + install[:16] + `…</th><td>install ` + install + ` (host host-a): ok: `,
		} {
			if !strings.Contains(page.DOM, want) {
				t.Errorf("%s: the report lacks %s", args[0], want)
			}
		}
	}

	for _, tc := range []struct{ args []string }{
		{[]string{"--fleet", dsn, "--public-key", "k.pub"}},
		{[]string{"--fleet", dsn, "--db", e.db}},
		{[]string{"--install", install}},
	} {
		_, stderr, code := runCLI(append([]string{"audit", "report", "--output", out}, tc.args...)...)
		if code != exitUsage || strings.Contains(stderr, dsn) {
			t.Errorf("%q: exit %d, stderr %q; want a usage error without the DSN", tc.args[2:], code, stderr)
		}
	}
}
