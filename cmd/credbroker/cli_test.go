package main

import (
	"bytes"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// runCLI runs a command in-process and returns stdout, stderr and the exit code.
func runCLI(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	c := &cli{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	code := c.main(args)
	return out.String(), errOut.String(), code
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCheckReportsEveryProblemWithPosition(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"credbroker.yaml": `socket: /tmp/x.sock
socket_mode: "9999"
audit: {path: a.db, colour: blue}
policies: policies.yaml
credentials:
  - {name: demo, static: {file: secrets/demo}}
  - {name: demo, static: {file: secrets/demo}}
  - {name: both, static: {file: secrets/demo, env: X}}
  - {name: api, oauth2: {client_id: x}}
  - {name: missing, static: {file: secrets/none}}
attestors:
  kubernetes: {issuer: https://k}
`,
		"policies.yaml": `policies:
  - name: p
    effect: perhaps
    workloads: [{unix: {uid: 0}}]
    credentials: [demo]
`,
		"secrets/demo": "v",
	})
	cfg := filepath.Join(dir, "credbroker.yaml")
	out, _, code := runCLI("check", "--config", cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	// The unknown key stops the strict decode of that file; fix it and the
	// rest is reported, all at once.
	if !strings.Contains(out, cfg+`:3: unknown key "colour"`) {
		t.Fatalf("no unknown-key problem:\n%s", out)
	}
	os.WriteFile(cfg, bytes.Replace(mustRead(t, cfg), []byte(", colour: blue"), nil, 1), 0o600)
	out, _, code = runCLI("check", "--config", cfg)
	pol := filepath.Join(dir, "policies.yaml")
	for _, want := range []string{
		cfg + `:2: socket_mode "9999"`,
		cfg + `:7: credential "demo" is defined twice (first at ` + cfg + `:6)`,
		cfg + `:8: credential "both": static: exactly one of file, env and fields must be set`,
		cfg + `:9: credential "api": oauth2: `,
		cfg + `:12: `,
		pol + `:3: `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, dir) {
			t.Errorf("line without a file position: %q", line)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckQuickstartAndDirectoryMerge(t *testing.T) {
	out, errOut, code := runCLI("check", "--config", "../../examples/quickstart")
	if code != 0 || !strings.Contains(out, "ok: 1 credentials, 1 policies") {
		t.Fatalf("quickstart: exit %d\n%s%s", code, out, errOut)
	}
	dir := writeFiles(t, map[string]string{
		"10-base.yaml":  "socket: /tmp/a.sock\npolicies: policies.yaml\naudit: {path: a.db}\n",
		"20-creds.yaml": "credentials:\n  - {name: one, static: {env: HOME}}\n",
		"30-more.yaml":  "socket: /tmp/b.sock\ncredentials:\n  - {name: two, static: {env: HOME}}\n",
		"policies.yaml": "policies:\n  - {name: p, effect: allow, workloads: [{unix: {uid: 0}}], credentials: [one, three]}\n",
	})
	out, _, code = runCLI("check", "--config", dir)
	if code != 1 || !strings.Contains(out, filepath.Join(dir, "30-more.yaml")+":1: socket is already set in "+filepath.Join(dir, "10-base.yaml")+":1") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	os.WriteFile(filepath.Join(dir, "30-more.yaml"), []byte("credentials:\n  - {name: two, static: {env: HOME}}\n"), 0o600)
	out, _, code = runCLI("check", "--config", dir)
	if code != 0 || !strings.Contains(out, "ok: 2 credentials, 1 policies") || !strings.Contains(out, `warning: policy "p" names credential "three", which is not configured`) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestExplain(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"credbroker.yaml": "policies: policies.yaml\ncredentials:\n  - {name: demo, static: {env: HOME}}\n  - {name: prod-db, static: {env: HOME}}\n",
		"policies.yaml": `policies:
  - name: ops-reads
    effect: allow
    workloads: [{unix: {uid: 1000}}]
    credentials: ["*"]
    when: 'request.method != "DELETE"'
    ttl: 5m
  - name: no-prod
    effect: deny
    workloads: [{unix: {uid: 1000}}]
    credentials: ["prod-*"]
`,
	})
	cfg := filepath.Join(dir, "credbroker.yaml")
	for _, tt := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--credential", "demo", "--subject", "unix:uid:1000"}, 0,
			[]string{"decision:   allow", "policy:     ops-reads (" + filepath.Join(dir, "policies.yaml") + ":2", "ttl cap:    5m0s"}},
		{[]string{"--credential", "prod-db", "--subject", "unix:uid:1000"}, 3,
			[]string{"decision:   deny", "policy:     no-prod"}},
		{[]string{"--credential", "demo", "--subject", "unix:uid:1001"}, 3,
			[]string{"decision:   deny", "none matched: default deny"}},
		{[]string{"--credential", "demo", "--subject", "unix:uid:1000", "--http-method", "DELETE", "--path", "/x"}, 3,
			[]string{"decision:   deny", "condition"}},
		{[]string{"--credential", "nope", "--subject", "unix:uid:1000"}, 0,
			[]string{"credential \"nope\" is not configured"}},
		{[]string{"--credential", "demo", "--subject", "system:serviceaccount:ns:sa", "--claim", "namespace=ns"}, 3,
			[]string{"decision:   deny"}},
	} {
		out, errOut, code := runCLI(append([]string{"explain", "--config", cfg}, tt.args...)...)
		if code != tt.code {
			t.Errorf("%v: exit %d, want %d\n%s%s", tt.args, code, tt.code, out, errOut)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
	if _, errOut, code := runCLI("explain", "--config", cfg, "--credential", "demo", "--subject", "who?"); code != exitUsage || !strings.Contains(errOut, "cannot tell the identity method") {
		t.Errorf("unknown subject: exit %d %s", code, errOut)
	}
}

func TestGetFormats(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "it's s3cr3t")
	b := e.start()
	out, errOut, code := credbroker(t, "get", "demo", "--socket", e.socket, "--format", "env")
	if code != 0 || !strings.Contains(out, `export DEMO_VALUE='it'\''s s3cr3t'`) || !strings.Contains(out, "export DEMO_EXPIRES_AT=") {
		t.Fatalf("env: exit %d %s %s", code, out, errOut)
	}
	_, errOut, code = credbroker(t, "get", "forbidden", "--socket", e.socket)
	if code != exitDenied || !strings.Contains(errOut, "denied by policy nobody-reads-forbidden (403 denied, decision ") {
		t.Fatalf("denied: exit %d %s", code, errOut)
	}
	b.stop(syscall.SIGTERM)
	_, errOut, code = credbroker(t, "get", "demo", "--socket", e.socket)
	if code != exitUnreachable || !strings.Contains(errOut, "broker at "+e.socket) {
		t.Fatalf("no broker: exit %d %s", code, errOut)
	}
}

// TestAuditVerifyCLI tampers with copies of a real broker's database and
// checks that `credbroker audit verify` names the row, and that a cut-off
// log fails against the checkpoint with only the public key.
func TestAuditVerifyCLI(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	e.decide(10)
	pub := publicKeyFile(t, e.db+".key")
	checkpoint := filepath.Join(e.dir, "checkpoint.json")

	for _, tt := range []struct {
		name, sql, want string
	}{
		{"edited", "UPDATE decisions SET decision = 'deny' WHERE seq = 4", "4"},
		{"deleted", "DELETE FROM decisions WHERE seq = 6", "7"},
		{"cut off", "DELETE FROM decisions WHERE seq > 8", "checkpoint"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cp := filepath.Join(t.TempDir(), "copy.db")
			os.WriteFile(cp, mustRead(t, e.db), 0o600)
			db, err := sql.Open("sqlite", cp)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(tt.sql); err != nil {
				t.Fatal(err)
			}
			db.Close()
			out, errOut, code := credbroker(t, "audit", "verify", "--db", cp, "--checkpoint", checkpoint, "--public-key", pub)
			if code == 0 || !strings.Contains(out+errOut, tt.want) {
				t.Fatalf("exit %d, want a failure naming %q:\n%s%s", code, tt.want, out, errOut)
			}
		})
	}
	if out, errOut, code := credbroker(t, "audit", "verify", "--db", e.db, "--checkpoint", checkpoint, "--public-key", pub); code != 0 {
		t.Fatalf("untouched log: %s %s", out, errOut)
	}
}

// TestCheckRefusesBadAttestorSettings: check asks each attestor's own
// validation, so a symmetric algorithm or an empty audience list is found
// before run would fail on it.
func TestCheckRefusesBadAttestorSettings(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"credbroker.yaml": `policies: policies.yaml
attestors:
  kubernetes: {audiences: [credbroker], jwks_file: jwks.json, allowed_algs: [HS256]}
  github: {audiences: []}
  unix: {tcp_lookup: ebpf}
`,
		"policies.yaml": "policies:\n  - {name: p, effect: allow, workloads: [{unix: {uid: 0}}], credentials: [x]}\n",
	})
	cfg := filepath.Join(dir, "credbroker.yaml")
	out, _, code := runCLI("check", "--config", cfg)
	for _, want := range []string{
		cfg + `:3: attestors.kubernetes: algorithm "HS256" is not allowed`,
		cfg + `:4: attestors.github: audiences are required`,
		cfg + `:5: attestors.unix: unix: tcp_lookup "ebpf" must be auto, bpf or proc`,
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("exit %d, output lacks %q:\n%s", code, want, out)
		}
	}
}
