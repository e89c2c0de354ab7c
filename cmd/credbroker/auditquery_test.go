package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// queryBroker starts a broker on e2ePolicies and returns a function that
// requests a credential and returns the decision id of the answer.
func queryBroker(t *testing.T) (*env, *brokerProc, func(name string, status int) string) {
	t.Helper()
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	b := e.start()
	c := socketClient(e.socket)
	request := func(name string, status int) string {
		t.Helper()
		r := call(t, c, "GET", "/v1/credentials/"+url.PathEscape(name), nil, nil)
		if r.Status != status {
			t.Fatalf("GET %s: status %d, want %d: %s", name, r.Status, status, r.Body)
		}
		if r.Status == http.StatusOK {
			return r.OK.DecisionID
		}
		return r.Err.Error.DecisionID
	}
	return e, b, request
}

// follower is a running `credbroker audit query --follow`.
type follower struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	errs  *syncBuffer
	done  chan struct{}
}

// startFollow runs `credbroker audit query --follow` with args and reads
// its lines as they come.
func startFollow(t *testing.T, args ...string) *follower {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"audit", "query", "--follow"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	f := &follower{t: t, cmd: cmd, lines: make(chan string, 1000), errs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = f.errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
		close(f.lines)
	}()
	go func() { _ = cmd.Wait(); close(f.done) }()
	t.Cleanup(func() {
		select {
		case <-f.done:
		default:
			_ = cmd.Process.Kill()
			<-f.done
		}
	})
	return f
}

// expect waits for the next lines and checks that they are the rows with
// these decision ids, in this order.
func (f *follower) expect(ids ...string) {
	f.t.Helper()
	var got []string
	timeout := time.After(hangBound)
	for len(got) < len(ids) {
		select {
		case line, ok := <-f.lines:
			if !ok {
				f.t.Fatalf("audit query --follow ended after %v, want %v; stderr: %s", got, ids, f.errs)
			}
			var r auditRow
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				f.t.Fatalf("line %q: %v", line, err)
			}
			got = append(got, r.DecisionID)
		case <-timeout:
			f.t.Fatalf("audit query --follow printed %v in %v, want %v; stderr: %s", got, hangBound, ids, f.errs)
		}
	}
	if !slices.Equal(got, ids) {
		f.t.Fatalf("audit query --follow printed %v, want %v", got, ids)
	}
}

// stop signals the follower and returns its exit code and whatever it
// printed after the rows already read.
func (f *follower) stop(sig syscall.Signal) (int, []string) {
	f.t.Helper()
	_ = f.cmd.Process.Signal(sig)
	select {
	case <-f.done:
	case <-time.After(hangBound):
		f.t.Fatalf("audit query --follow did not exit after %v", sig)
	}
	var rest []string
	for line := range f.lines {
		rest = append(rest, line)
	}
	return f.cmd.ProcessState.ExitCode(), rest
}

// TestAuditQueryFollow: `audit query --follow` on a live broker's log
// prints the rows already written, then each row written after it started,
// in the order they were written, each once, and exits 0 on SIGINT and
// SIGTERM.
func TestAuditQueryFollow(t *testing.T) {
	e, b, request := queryBroker(t)
	before := []string{request("demo", 200), request("forbidden", 403)}

	all := startFollow(t, "--db", e.db)
	demo := startFollow(t, "--db", e.db, "--credential", "demo", "--format", "json")
	all.expect(before...)
	demo.expect(before[0])

	// Written after both started: the first answer proves both read the
	// log before these requests.
	var after, demoAfter []string
	for i := range 12 {
		name, status := "demo", 200
		switch i % 3 {
		case 1:
			name, status = "forbidden", 403
		case 2:
			name, status = "unlisted", 403
		}
		id := request(name, status)
		after = append(after, id)
		if name == "demo" {
			demoAfter = append(demoAfter, id)
		}
	}
	all.expect(after...)
	demo.expect(demoAfter...)

	// Nothing twice: the next line is the next row.
	last := request("demo", 200)
	all.expect(last)
	demo.expect(last)

	for _, x := range []struct {
		f   *follower
		sig syscall.Signal
	}{{all, syscall.SIGINT}, {demo, syscall.SIGTERM}} {
		code, rest := x.f.stop(x.sig)
		if code != 0 || len(rest) != 0 {
			t.Errorf("after %v: exit %d, lines %q, stderr %s; want exit 0 and nothing more", x.sig, code, rest, x.f.errs)
		}
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("broker exit %d:\n%s", code, b.logs)
	}
}

// --follow refuses what cannot follow, and a log replaced under it ends it
// with exit 1 and a message.
func TestAuditQueryFollowRefusals(t *testing.T) {
	db := filepath.Join(t.TempDir(), "audit.db")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "csv"}, "--follow: prints JSON lines; leave out --format csv"},
		{[]string{"--limit", "5"}, "--follow: and --limit do not go together"},
		{[]string{"--until", "1h"}, "--follow: and --until do not go together"},
		{[]string{"--count-by", "decision"}, "--follow: and --count-by do not go together"},
		{[]string{"--decision-id", "x"}, "--follow: and --decision-id do not go together"},
		{[]string{"--columns", "time"}, "--follow: and --columns do not go together"},
	} {
		_, errOut, code := credbroker(t, append([]string{"audit", "query", "--db", db, "--follow"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("--follow %q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, exitUsage, tc.want)
		}
	}

	e, b, request := queryBroker(t)
	id := request("demo", 200)
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("broker exit %d:\n%s", code, b.logs)
	}
	f := startFollow(t, "--db", e.db)
	f.expect(id)
	other := filepath.Join(e.dir, "other.db")
	if err := os.WriteFile(other, mustRead(t, e.db), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, e.db); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.done:
	case <-time.After(hangBound):
		t.Fatal("audit query --follow went on after its log was replaced")
	}
	if code := f.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(f.errs.String(), "the log no longer continues the rows already read: the file at "+e.db+" was replaced or removed") {
		t.Errorf("log replaced: exit %d, stderr %s", code, f.errs)
	}
}

// TestAuditQueryCountBy counts a live broker's decisions by keys, in each
// format, largest group first.
func TestAuditQueryCountBy(t *testing.T) {
	e, _, request := queryBroker(t)
	for range 3 {
		request("demo", 200)
	}
	request("forbidden", 403)
	request("forbidden", 403)
	request("unlisted", 403)
	request("-bad", 400)

	out, errOut, code := credbroker(t, "audit", "query", "--db", e.db, "--count-by", "credential,decision")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || strings.Join(strings.Fields(lines[0]), " ") != "CREDENTIAL DECISION COUNT" ||
		strings.Join(strings.Fields(lines[1]), " ") != "demo allow 3" || strings.Join(strings.Fields(lines[2]), " ") != "forbidden deny 2" {
		t.Errorf("table:\n%s", out)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Join(strings.Fields(l), " ") == "unlisted deny 1" }) ||
		!slices.ContainsFunc(lines, func(l string) bool { return strings.Join(strings.Fields(l), " ") == "-bad error 1" }) {
		t.Errorf("table lacks the groups of one:\n%s", out)
	}

	out, _, code = credbroker(t, "audit", "query", "--db", e.db, "--count-by", "decision, policy", "--format", "json", "--limit", "2")
	wantJSON := `{"decision":"allow","policy":"root-reads-demo","count":3}` + "\n" + `{"decision":"deny","policy":"nobody-reads-forbidden","count":2}` + "\n"
	if code != 0 || out != wantJSON {
		t.Errorf("json, top 2: exit %d\n%s\nwant\n%s", code, out, wantJSON)
	}

	out, _, code = credbroker(t, "audit", "query", "--db", e.db, "--count-by", "credential", "--decision", "error", "--format", "csv")
	if code != 0 || out != "credential,count\n'-bad,1\n" {
		t.Errorf("csv: exit %d\n%s", code, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--count-by", "workload,secret"}, `--count-by: audit: cannot count by "secret": want one or more of workload, credential, policy, decision, channel`},
		{[]string{"--count-by", "decision,decision"}, `count by "decision" twice`},
		{[]string{"--count-by", "decision", "--columns", "time"}, "--count-by: and --columns do not go together"},
	} {
		_, errOut, code := credbroker(t, append([]string{"audit", "query", "--db", e.db}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, exitUsage, tc.want)
		}
	}
}

// TestAuditQueryColumns chooses the table's columns; the caller's
// executable and peer come from the attested claims.
func TestAuditQueryColumns(t *testing.T) {
	e, _, request := queryBroker(t)
	id := request("demo", 200)
	denied := request("unlisted", 403)
	me := thisProcess(t)

	out, errOut, code := credbroker(t, "audit", "query", "--db", e.db, "--columns", "decision_id,exe,peer,lease,expiry,fingerprint,policy_version,policy_set_version")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "DECISION_ID EXE PEER LEASE_ID EXPIRES_AT FINGERPRINT POLICY_VERSION POLICY_SET_VERSION" {
		t.Fatalf("table:\n%s", out)
	}
	peer := fmt.Sprintf("pid=%d uid=%d", me.pid, me.uid)
	allow, deny := lines[1], lines[2]
	if !strings.HasPrefix(allow, id+" ") || !strings.Contains(allow, " "+me.exe+" ") || !strings.Contains(allow, peer) ||
		!strings.Contains(allow, "hmac-sha256:") || !strings.HasSuffix(allow, " -") {
		t.Errorf("allow row: %q", allow)
	}
	f := strings.Fields(deny)
	// decision_id exe pid=… uid=… lease expiry fingerprint policy_version policy_set_version
	if len(f) != 9 || f[0] != denied || f[1] != me.exe || f[4] != "-" || f[5] != "-" || f[6] != "-" || f[7] != "-" || len(f[8]) != 12 {
		t.Errorf("default deny row: %q", f)
	}

	// The default columns are unchanged.
	out, _, _ = credbroker(t, "audit", "query", "--db", e.db)
	if h := strings.Join(strings.Fields(strings.SplitN(out, "\n", 2)[0]), " "); h != "TIME DECISION SUBJECT CREDENTIAL DATABASE UPSTREAM_USER POLICY REASON DECISION_ID" {
		t.Errorf("default header %q", h)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--columns", "time,password"}, `--columns: audit: no column "password": want one or more of time, seq, kind, decision, decision_id`},
		{[]string{"--columns", "time", "--format", "json"}, "--columns: chooses the table's columns; --format json has every field"},
	} {
		_, errOut, code := credbroker(t, append([]string{"audit", "query", "--db", e.db}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, exitUsage, tc.want)
		}
	}
}

// TestAuditQueryDecisionID shows one decision whole: every field, the
// input, what was recorded, and with --policies the input re-evaluated
// explain-style under other policies.
func TestAuditQueryDecisionID(t *testing.T) {
	e, _, request := queryBroker(t)
	request("demo", 200)
	id := request("unlisted", 403)
	request("demo", 200)

	out, errOut, code := credbroker(t, "audit", "query", "--db", e.db, "--decision-id", id)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, w := range []string{
		"decision_id         " + id + "\n",
		"decision            deny\n",
		"reason              no policy allows unix:uid:0 to read unlisted\n",
		"policy              -\n",
		"policy_version      -\n",
		"policy_set_version  ",
		"subject             unix:uid:0\n",
		"exe                 " + thisProcess(t).exe + "\n",
		"credential          unlisted\n",
		"input\n  {\n    \"identity\": {\n",
		"\"credential\": \"unlisted\"",
		"as recorded (give --policies FILE|DIR to re-evaluate the input and see why each policy matched):\n  deny: no policy matched, default deny under policy set version ",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}

	// Under policies that allow it now: the trace says why.
	proposed := e.write("proposed.yaml", `policies:
  - name: root-reads-anything
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: ["*"]
`)
	out, errOut, code = credbroker(t, "audit", "query", "--db", e.db, "--decision-id", id, "--policies", proposed)
	if code != 0 {
		t.Fatalf("--policies: exit %d: %s", code, errOut)
	}
	for _, w := range []string{
		"re-evaluated at its time (",
		"decision:   allow\npolicy:     root-reads-anything (" + proposed + ":2; policy version ",
		"policy set: 1 policies, policy set version ",
		"trace:\n  allow  root-reads-anything",
		"changed:    recorded deny, allow under " + proposed,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("--policies output lacks %q:\n%s", w, out)
		}
	}

	out, _, code = credbroker(t, "audit", "query", "--db", e.db, "--decision-id", id, "--policies", proposed, "--format", "json")
	var doc struct {
		Record      auditRow `json:"record"`
		Reevaluated struct {
			Effect           string `json:"effect"`
			Policy           string `json:"policy"`
			PolicyVersion    string `json:"policy_version"`
			PolicySetVersion string `json:"policy_set_version"`
		} `json:"reevaluated"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 0 {
		t.Fatalf("json: exit %d, %v:\n%s", code, err, out)
	}
	if doc.Record.DecisionID != id || doc.Record.Decision != "deny" || len(doc.Record.Input) == 0 ||
		doc.Reevaluated.Effect != "allow" || doc.Reevaluated.Policy != "root-reads-anything" || len(doc.Reevaluated.PolicyVersion) != 12 || len(doc.Reevaluated.PolicySetVersion) != 12 {
		t.Errorf("json: %+v", doc)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--decision-id", "0123456789abcdef0123456789abcdef"}, 1, `no row has decision id "0123456789abcdef0123456789abcdef"`},
		{[]string{"--decision-id", id, "--format", "csv"}, exitUsage, "--decision-id: shows one decision as text or JSON"},
		{[]string{"--policies", proposed}, exitUsage, "--policies: re-evaluates one decision: give --decision-id too"},
		{[]string{"--decision-id", id, "--policies", filepath.Join(e.dir, "none.yaml")}, 1, "none.yaml"},
	} {
		_, errOut, code := credbroker(t, append([]string{"audit", "query", "--db", e.db}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

// TestAuditQueryCSVFormulas: caller-chosen text that a spreadsheet would
// run as a formula — here credential names, which the broker records as
// asked even when it refuses them — is escaped in CSV; numeric columns
// stay numbers.
func TestAuditQueryCSVFormulas(t *testing.T) {
	e, _, request := queryBroker(t)
	hostile := []string{"=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1+1)", "\t=1", "'quoted"}
	for _, name := range hostile {
		request(name, 400)
	}
	out, errOut, code := credbroker(t, "audit", "query", "--db", e.db, "--format", "csv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != len(hostile)+1 {
		t.Fatalf("csv: %v\n%s", err, out)
	}
	col := func(name string) int { return slices.Index(recs[0], name) }
	numeric := map[string]bool{"seq": true, "peer_pid": true, "peer_uid": true, "latency_ms": true}
	for i, name := range hostile {
		row := recs[i+1]
		if got := row[col("credential")]; got != "'"+name {
			t.Errorf("credential %q written as %q, want it behind an apostrophe", name, got)
		}
		for j, c := range row {
			if c == "" || numeric[recs[0][j]] {
				continue
			}
			if strings.ContainsRune("=+-@\t\r", rune(c[0])) {
				t.Errorf("row %d, %s begins with a formula character: %q", i+1, recs[0][j], c)
			}
		}
		if _, err := strconv.ParseInt(row[col("peer_uid")], 10, 64); err != nil || row[col("peer_uid")] != strconv.Itoa(os.Getuid()) {
			t.Errorf("peer_uid %q, want the number %d", row[col("peer_uid")], os.Getuid())
		}
	}
}
