package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPolicyReload changes the policy file under a running broker: a valid
// change applies without restart (on file change and on SIGHUP), an invalid
// one keeps the previous policies in force and is logged.
func TestPolicyReload(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	b := e.start()
	c := socketClient(e.socket)
	waitStatus := func(path string, want int) {
		t.Helper()
		deadline := time.Now().Add(hangBound)
		for {
			r := call(t, c, "GET", path, nil, nil)
			if r.Status == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %d, want %d\n%s", path, r.Status, want, b.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus("/v1/credentials/unlisted", 403)
	// The broker listens before it starts watching the files and handling
	// SIGHUP; it says it is serving once both are started.
	b.waitLog("credbroker serving")

	// A file change that allows "unlisted" applies by itself.
	e.write("policies.yaml", strings.Replace(e2ePolicies, "[demo, other, forbidden]", "[demo, other, forbidden, unlisted]", 1))
	waitStatus("/v1/credentials/unlisted", 200)

	// A broken file is refused; the previous set stays in force.
	e.write("policies.yaml", "policies:\n  - name: broken\n    effect: maybe\n")
	b.waitLog("policy reload failed")
	waitStatus("/v1/credentials/unlisted", 200)

	// SIGHUP reloads too: restore the original file with the same size and
	// mtime trick-free, then signal.
	e.write("policies.yaml", e2ePolicies)
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitStatus("/v1/credentials/unlisted", 403)
	if code := b.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("exit %d after SIGINT", code)
	}
}

func TestAdminEndpoints(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), `admin: ""`, `admin: "127.0.0.1:0"`, 1)), 0o600)
	b := e.start()
	admin := "http://" + adminAddr(t, b)
	call(t, socketClient(e.socket), "GET", "/v1/credentials/demo", nil, nil)
	call(t, socketClient(e.socket), "GET", "/v1/credentials/forbidden", nil, nil)

	if code, body := httpGet(t, admin+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := httpGet(t, admin+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}
	code, metrics := httpGet(t, admin+"/metrics")
	for _, want := range []string{
		`credbroker_decisions_total{channel="socket",result="allow"} 1`,
		`credbroker_decisions_total{channel="socket",result="deny"} 1`,
		`credbroker_decision_duration_seconds_count 2`,
		`credbroker_audit_failures_total 0`,
	} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	b.stop(syscall.SIGTERM)
}

// TestDrainOnShutdown: SIGTERM while requests are in flight lets them finish
// with their audit rows, then exits 0.
func TestDrainOnShutdown(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	b := e.start()
	c := socketClient(e.socket)
	const clients, each = 16, 200
	results := make(chan string, clients*(each+1)) // never blocks a client
	for range clients {
		go func() {
			for range each {
				id, ok := tryGet(t.Context(), c)
				if !ok {
					break
				}
				results <- id
			}
			results <- ""
		}()
	}
	// SIGTERM once credentials are flowing, so that it lands among requests
	// in flight whatever the machine's speed.
	var ids []string
	done := 0
	next := func() {
		if id := <-results; id == "" {
			done++
		} else {
			ids = append(ids, id)
		}
	}
	for len(ids) < clients && done < clients {
		next()
	}
	if done == clients {
		t.Fatalf("every client stopped before shutdown, with %d credentials:\n%s", len(ids), b.logs)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, b.logs)
	}
	for done < clients {
		next()
	}
	rows := auditRows(t, e.db)
	for _, id := range ids {
		if rows[id].Decision != "allow" {
			t.Fatalf("credential %s handed out during shutdown has no audit row", id)
		}
	}
	t.Logf("%d credentials handed out, all audited", len(ids))
}

// TestQuickstartFromREADME runs the README's first command exactly as
// written and checks what it shows: the demo credential fetched over the
// socket API; a request through the http injection listener that reached
// the demo upstream with the credential added, masked in the upstream's
// echo; and the audit rows of both decisions, this run's the last two.
func TestQuickstartFromREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmdline := firstCommand(t, string(readme))
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmdline, err, out)
	}
	const secret = "quickstart-demo-secret-not-for-production"
	var fetched struct {
		Name       string            `json:"name"`
		Data       map[string]string `json:"data"`
		DecisionID string            `json:"decision_id"`
	}
	var upstream, rows []string
	var header []string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, `{"name":`):
			if err := json.Unmarshal([]byte(line), &fetched); err != nil {
				t.Errorf("the socket API's reply %q: %v", line, err)
			}
		case strings.HasPrefix(line, "demo upstream received:") || strings.HasPrefix(line, "  Authorization:"):
			upstream = append(upstream, line)
		case strings.HasPrefix(line, "TIME "):
			header = strings.Fields(line)
		case header != nil && line != "" && line[0] >= '0' && line[0] <= '9':
			// A row begins with its time; under make test, make's own
			// "Leaving directory" lines follow the table.
			rows = append(rows, line)
		}
	}
	if fetched.Name != "demo" || fetched.Data["value"] != secret || fetched.DecisionID == "" {
		t.Errorf("the socket API fetch: %+v\n%s", fetched, out)
	}
	// The listener added the header on the way out; the upstream shows its
	// first characters only.
	if want := []string{"demo upstream received: GET /hello", "  Authorization: Bearer quic******** (41 characters; all but the first 4 masked)"}; !slices.Equal(upstream, want) {
		t.Errorf("the demo upstream answered %q, want %q\n%s", upstream, want, out)
	}
	if len(rows) < 2 {
		t.Fatalf("the audit query shows %d rows, want this run's two:\n%s", len(rows), out)
	}
	self := fmt.Sprintf("unix:uid:%d", os.Getuid())
	for i, want := range []map[string]string{
		{"DECISION": "allow", "CHANNEL": "socket", "SUBJECT": self, "CREDENTIAL": "demo", "PATH": "/v1/credentials/demo", "POLICY": "local-user-reads-demo", "DECISION_ID": fetched.DecisionID},
		{"DECISION": "allow", "CHANNEL": "http", "SUBJECT": self, "CREDENTIAL": "demo", "METHOD": "GET", "PATH": "/hello", "POLICY": "local-user-reads-demo"},
	} {
		f := strings.Fields(rows[len(rows)-2+i])
		if len(f) != len(header) {
			t.Errorf("audit row %q does not match the header %q", f, header)
			continue
		}
		for col, v := range want {
			if j := slices.Index(header, col); j < 0 || f[j] != v {
				t.Errorf("audit row %d of this run: %s is %q, want %q\n%s", i+1, col, f[max(j, 0)], v, out)
			}
		}
	}
	if n := strings.Count(string(out), secret); n != 1 {
		t.Errorf("the secret appears %d times in the output; once, in the socket API's reply, is expected\n%s", n, out)
	}
}

// firstCommand returns the first command of the README's first shell block.
func firstCommand(t *testing.T, readme string) string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "```sh\n")
	if !ok {
		t.Fatal("README has no ```sh block")
	}
	block, _, _ := strings.Cut(rest, "```")
	for _, line := range strings.Split(block, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	t.Fatal("README's first block has no command")
	return ""
}
