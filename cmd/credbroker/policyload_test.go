package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The policies of the symlink and ConfigMap tests: root may read demo,
// forbidden and unlisted, unless a deny policy says otherwise.
const (
	rootReads = `policies:
  - name: root-reads
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [demo, forbidden, unlisted]
`
	rootDeniedForbidden = `policies:
  - name: root-denied
    effect: deny
    workloads: [{unix: {uid: 0}}]
    credentials: [forbidden]
`
	// rootDeniedUnlisted has the size of rootDeniedForbidden, so that a
	// swap between them keeps every size and mtime.
	rootDeniedUnlisted = `policies:
  - name: root-denied
    effect: deny
    workloads: [{unix: {uid: 0}}]
    credentials: [unlisted ]
`
)

// setConfig replaces old with new in the environment's configuration.
func (e *env) setConfig(old, new string) {
	e.t.Helper()
	b, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		e.t.Fatalf("configuration lacks %q", old)
	}
	e.write(filepath.Base(e.config), strings.Replace(string(b), old, new, 1))
}

// symlink makes link point at target, failing the test otherwise.
func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// writeConfigMap updates dir as the kubelet updates a ConfigMap volume:
// the files go into a new timestamped directory ..<stamp>, a link
// ..data_tmp to it is renamed over ..data, each key is a link
// name -> ..data/name, and the previous timestamped directory is removed.
// Every file gets mtime, so that an update may keep every size and mtime.
func writeConfigMap(t *testing.T, dir, stamp string, mtime time.Time, files map[string]string) {
	t.Helper()
	ts := filepath.Join(dir, ".."+stamp)
	if err := os.MkdirAll(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(ts, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	symlink(t, ".."+stamp, filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
			symlink(t, filepath.Join("..data", name), filepath.Join(dir, name))
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// logLines decodes the broker's JSON log lines whose message starts with
// msg.
func logLines(t *testing.T, logs, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if s, _ := m["msg"].(string); strings.HasPrefix(s, msg) {
			out = append(out, m)
		}
	}
	return out
}

// waitLogLines waits until the broker has logged n lines whose message
// starts with msg, and returns them.
func (b *brokerProc) waitLogLines(msg string, n int) []map[string]any {
	b.t.Helper()
	deadline := time.Now().Add(hangBound)
	for {
		if lines := logLines(b.t, b.logs.String(), msg); len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("fewer than %d %q lines in the broker's log after %v:\n%s", n, msg, hangBound, b.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectStatuses fetches each credential and checks the reply's status.
func expectStatuses(t *testing.T, b *brokerProc, want map[string]int) {
	t.Helper()
	c := socketClient(b.socket)
	for name, status := range want {
		if r := call(t, c, "GET", "/v1/credentials/"+name, nil, nil); r.Status != status {
			t.Errorf("%s: status %d, want %d: %s\n%s", name, r.Status, status, r.Body, b.logs)
		}
	}
}

// TestSymlinkedPolicyApplies: a deny policy delivered as a symbolic link
// in the policy directory applies (it used to be skipped, and the
// credential it denies was handed out).
func TestSymlinkedPolicyApplies(t *testing.T) {
	e := newEnv(t, "", e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	e.write("policies/allow.yaml", rootReads)
	real := e.write("elsewhere/deny.yaml", rootDeniedForbidden)
	symlink(t, real, filepath.Join(e.dir, "policies", "deny.yaml"))
	e.setConfig("policies: policies.yaml", "policies: policies")

	out, _, code := credbroker(t, "check", "--config", e.config)
	if code != 0 || !strings.Contains(out, "2 policies") {
		t.Errorf("check: exit %d, want 0 and 2 policies:\n%s", code, out)
	}
	b := e.start()
	c := socketClient(e.socket)
	r := call(t, c, "GET", "/v1/credentials/forbidden", nil, nil)
	if r.Status != 403 {
		t.Fatalf("forbidden: status %d, want 403: %s", r.Status, r.Body)
	}
	expectStatuses(t, b, map[string]int{"demo": 200})
	b.stop(syscall.SIGTERM)
	if row := auditRows(t, e.db)[r.Err.Error.DecisionID]; row.Decision != "deny" || row.Policy != "root-denied" {
		t.Errorf("audit row %+v, want a deny by root-denied", row)
	}
}

// TestConfigMapPolicies: a policy directory laid out as a Kubernetes
// ConfigMap volume loads each policy once, `check` says so, and swapping
// ..data to a new timestamped directory — the same names, sizes and mtimes,
// another deny policy — is picked up by the running broker.
func TestConfigMapPolicies(t *testing.T) {
	e := newEnv(t, "", e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	dir := filepath.Join(e.dir, "policies")
	mtime := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	writeConfigMap(t, dir, "2026_11_29_10_00_00.000000001", mtime, map[string]string{
		"allow.yaml": rootReads, "deny.yaml": rootDeniedForbidden,
	})
	e.setConfig("policies: policies.yaml", "policies: policies")

	out, _, code := credbroker(t, "check", "--config", e.config)
	if code != 0 || !strings.Contains(out, "ok: 4 credentials, 2 policies") {
		t.Errorf("check: exit %d, want 0 and 2 policies:\n%s", code, out)
	}
	b := e.start()
	expectStatuses(t, b, map[string]int{"demo": 200, "forbidden": 403, "unlisted": 200})
	b.waitLog("credbroker serving") // the reloader is watching

	if len(rootDeniedUnlisted) != len(rootDeniedForbidden) {
		t.Fatal("the swapped deny policy must keep the size")
	}
	writeConfigMap(t, dir, "2026_11_29_10_05_00.000000002", mtime, map[string]string{
		"allow.yaml": rootReads, "deny.yaml": rootDeniedUnlisted,
	})
	lines := b.waitLogLines("policies reloaded", 1)
	if lines[0]["policies"] != float64(2) {
		t.Errorf("reloaded %v, want 2 policies", lines[0])
	}
	expectStatuses(t, b, map[string]int{"demo": 200, "forbidden": 200, "unlisted": 403})
	if failed := logLines(t, b.logs.String(), "policy reload"); len(failed) > 0 {
		t.Errorf("the swap logged %v", failed)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d:\n%s", code, b.logs)
	}
}

// TestConfigMapConfigAndPolicies: the whole configuration, policies
// included, delivered as one ConfigMap volume checks and runs.
func TestConfigMapConfigAndPolicies(t *testing.T) {
	e := newEnv(t, "", e2eCredentials())
	secret := e.write("secrets/demo", "s3cr3t")
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfg), "policies: policies.yaml", "policies: .", 1)
	text = strings.ReplaceAll(text, "secrets/demo", secret)
	dir := filepath.Join(e.dir, "configmap")
	writeConfigMap(t, dir, "2026_11_29_10_00_00.000000001", time.Now(), map[string]string{
		"credbroker.yaml": text, "allow.yaml": rootReads, "deny.yaml": rootDeniedForbidden,
	})
	e.config = dir

	out, _, code := credbroker(t, "check", "--config", dir)
	if code != 0 || !strings.Contains(out, "ok: 4 credentials, 2 policies") {
		t.Errorf("check: exit %d, want 0 and 2 policies:\n%s", code, out)
	}
	b := e.start()
	expectStatuses(t, b, map[string]int{"demo": 200, "forbidden": 403})
	b.stop(syscall.SIGTERM)
}

// TestPolicyFileProblems: a policy entry that does not lead to a regular
// file is an error naming the file, from `check` and at start.
func TestPolicyFileProblems(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  []string // "name: message" lines, name relative to the policy directory
	}{
		{"symlink loop", func(t *testing.T, dir string) {
			symlink(t, "b.yaml", filepath.Join(dir, "a.yaml"))
			symlink(t, "a.yaml", filepath.Join(dir, "b.yaml"))
		}, []string{"a.yaml: symbolic link loop", "b.yaml: symbolic link loop"}},
		{"symlink to a directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			symlink(t, "sub", filepath.Join(dir, "sub.yaml"))
		}, []string{"sub.yaml: symbolic link to a directory, not to a regular file"}},
		{"symlink to a missing file", func(t *testing.T, dir string) {
			symlink(t, "..data/gone.yaml", filepath.Join(dir, "gone.yaml"))
		}, []string{"gone.yaml: symbolic link to a missing file"}},
		{"directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "d.yml"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, []string{"d.yml: not a regular file but a directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "", e2eCredentials())
			e.write("secrets/demo", "s3cr3t")
			e.write("policies/allow.yaml", rootReads)
			dir := filepath.Join(e.dir, "policies")
			tc.setup(t, dir)
			e.setConfig("policies: policies.yaml", "policies: policies")

			out, _, code := credbroker(t, "check", "--config", e.config)
			if code != 1 {
				t.Errorf("check: exit %d, want 1:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, filepath.Join(dir, w)+"\n") {
					t.Errorf("check lacks %q:\n%s", filepath.Join(dir, w), out)
				}
			}
			_, errOut, code := credbroker(t, "run", "--config", e.config)
			if code == 0 || !strings.Contains(errOut, filepath.Join(dir, tc.want[0])) {
				t.Errorf("run: exit %d, want a refusal naming %q:\n%s", code, tc.want[0], errOut)
			}
		})
	}
}

// TestEmptyPolicyReloadRefused: a policy file emptied, or truncated to a
// document with no policies, is refused at error level and the previous
// policies stay in force; so is a policy directory emptied.
func TestEmptyPolicyReloadRefused(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	b := e.start()
	b.waitLog("credbroker serving")
	want := map[string]int{"demo": 200, "forbidden": 403, "unlisted": 403}
	expectStatuses(t, b, want)
	for i, content := range []string{"", "policies:\n", "policies: []\n"} {
		e.write("policies.yaml", content)
		line := b.waitLogLines("policy reload refused", i+1)[i]
		if line["level"] != "ERROR" || line["policies"] != float64(2) {
			t.Errorf("after writing %q: %v, want an error keeping 2 policies", content, line)
		}
		expectStatuses(t, b, want)
	}
	if ok := logLines(t, b.logs.String(), "policies reloaded"); len(ok) > 0 {
		t.Errorf("an empty set was loaded: %v", ok)
	}
	b.stop(syscall.SIGTERM)

	// A directory emptied.
	e = newEnv(t, "", e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	only := e.write("policies/only.yaml", e2ePolicies)
	e.setConfig("policies: policies.yaml", "policies: policies")
	b = e.start()
	b.waitLog("credbroker serving")
	if err := os.Remove(only); err != nil {
		t.Fatal(err)
	}
	line := b.waitLogLines("policy reload failed", 1)[0]
	if line["level"] != "ERROR" || !strings.Contains(line["error"].(string), "no policy files") {
		t.Errorf("after emptying the directory: %v, want an error", line)
	}
	expectStatuses(t, b, want)
	b.stop(syscall.SIGTERM)
}

// TestStartWithoutPolicies: a broker started with no policies warns, and
// /readyz says it is not ready until a policy arrives.
func TestStartWithoutPolicies(t *testing.T) {
	e := newEnv(t, "policies: []\n", e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	e.setConfig(`admin: ""`, `admin: "127.0.0.1:0"`)
	b := e.start()
	admin := "http://" + adminAddr(t, b)
	if line := b.waitLogLines("no policies loaded", 1)[0]; line["level"] != "WARN" {
		t.Errorf("start without policies: %v, want a warning", line)
	}
	code, body := httpGet(t, admin+"/readyz")
	if code != 503 || !strings.Contains(body, "policies: broker: no policies in force; every request is denied") {
		t.Errorf("/readyz without policies: %d %q, want 503 naming the policies", code, body)
	}
	expectStatuses(t, b, map[string]int{"demo": 403})

	b.waitLog("credbroker serving")
	e.write("policies.yaml", e2ePolicies)
	b.waitLogLines("policies reloaded", 1)
	if code, body := httpGet(t, admin+"/readyz"); code != 200 {
		t.Errorf("/readyz with policies: %d %q, want 200", code, body)
	}
	expectStatuses(t, b, map[string]int{"demo": 200})
	b.stop(syscall.SIGTERM)
}
