package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

// caller is this test process as the unix attestor sees it over the
// socket, and the explain flags that describe it.
type caller struct {
	uid, gid, pid int
	exe, sha      string
}

func thisProcess(t *testing.T) caller {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return caller{uid: os.Getuid(), gid: os.Getgid(), pid: os.Getpid(), exe: exe, sha: hex.EncodeToString(sum[:])}
}

// claims are the flags (--claim or --peer-claim) for the claims the unix
// attestor gives this process.
func (c caller) claims(flag string) []string {
	return []string{
		flag, "uid=" + strconv.Itoa(c.uid), flag, "gid=" + strconv.Itoa(c.gid), flag, "pid=" + strconv.Itoa(c.pid),
		flag, "exe=" + c.exe, flag, "exe_sha256=" + c.sha,
	}
}

// explained is the part of `explain --json` the tests compare: the
// deciding policy's version (none for a default deny) and the policy set's.
type explained struct {
	Effect        string `json:"effect"`
	Policy        string `json:"policy"`
	PolicyVersion string `json:"policy_version"`
	SetVersion    string `json:"policy_set_version"`
	Reason        string `json:"reason"`
	Trace         []struct {
		Policy        string `json:"policy"`
		PolicyVersion string `json:"policy_version"`
	} `json:"trace"`
}

// recordedVersion is the version an audit row records for the decision
// explain made: the deciding policy's, or the policy set's for a default
// deny.
func (ex explained) recordedVersion() string {
	if ex.Policy == "" {
		return ex.SetVersion
	}
	return ex.PolicyVersion
}

func explainJSON(t *testing.T, args ...string) (explained, int) {
	t.Helper()
	out, errOut, code := credbroker(t, append([]string{"explain", "--json"}, args...)...)
	var ex explained
	if code != 0 && code != 3 {
		t.Fatalf("explain %q: exit %d: %s", args, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &ex); err != nil {
		t.Fatalf("explain %q: %v: %s", args, err, out)
	}
	return ex, code
}

// decisionRow is an audit row's decision, with the version of the policy
// that made it, or of the policy set for a default deny.
type decisionRow struct {
	DecisionID    string `json:"decision_id"`
	Decision      string `json:"decision"`
	Policy        string `json:"policy"`
	PolicyVersion string `json:"policy_version"`
	SetVersion    string `json:"policy_set_version"`
}

// version is the one version hash the row records.
func (r decisionRow) version() string { return r.PolicyVersion + r.SetVersion }

func decisionRows(t *testing.T, db string) map[string]decisionRow {
	t.Helper()
	out, errOut, code := credbroker(t, "audit", "query", "--db", db, "--format", "json")
	if code != 0 {
		t.Fatalf("audit query: exit %d: %s", code, errOut)
	}
	rows := map[string]decisionRow{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r decisionRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit query line %q: %v", sc.Text(), err)
		}
		rows[r.DecisionID] = r
	}
	return rows
}

// agreementPolicies covers `uid: self` (alone, as a token caller's peer,
// and as gid), conditions on request.method and request.path, a deny, a
// `**` glob, exact executables and the default deny. %[1]s is this test's
// executable, %[2]s its SHA-256, %[3]s a directory two levels above it.
const agreementPolicies = `policies:
  - name: no-posts-of-secret
    effect: deny
    workloads: [{unix: {uid: self}}]
    credentials: [secret]
    when: 'request.method == "POST"'
  - name: self-reads-demo
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [demo]
  - name: this-test-gets-secret
    effect: allow
    workloads: [{unix: {exe: %[1]q, exe_sha256: %[2]s}}]
    credentials: [secret]
    when: 'request.method == "GET" && request.path == "/v1/credentials/secret"'
  - name: tools-below-the-build-dir
    effect: allow
    workloads: [{unix: {exe: "%[3]s/**", exe_sha256: %[2]s, gid: self}}]
    credentials: [tools]
  - name: api-pod-beside-the-broker
    effect: allow
    workloads: [{all: [{kubernetes: {namespace: payments}}, {unix: {uid: self}}]}]
    credentials: [payments]
    when: 'identity.claims.pod_name.startsWith("api-") && request.path.endsWith("/payments")'
  - name: someone-else
    effect: allow
    workloads: [{unix: {uid: 4242}}]
    credentials: [other]
`

// TestExplainAgreesWithRun makes requests of a running broker as this test
// process, whose uid, gid, pid and executable are known, and runs explain
// with the claims the broker attests for it: each pair must agree on the
// effect, the deciding policy and its version. Explain's defaults stand in
// for the socket API's GET and path, and for the broker's uid.
func TestExplainAgreesWithRun(t *testing.T) {
	me := thisProcess(t)
	key := oidctest.NewRSAKey(t, "k1")
	credentials := ""
	for _, name := range []string{"demo", "secret", "tools", "payments", "other"} {
		credentials += fmt.Sprintf("  - {name: %s, static: {file: secrets/demo}}\n", name)
	}
	e := newEnv(t, fmt.Sprintf(agreementPolicies, me.exe, me.sha, filepath.Dir(filepath.Dir(me.exe))), credentials)
	e.write("secrets/demo", "s3cr3t")
	jwks := e.write("jwks.json", string(jwksOf(t, key)))
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	e.write("credbroker.yaml", string(cfg)+"attestors:\n  kubernetes: {issuer: "+testIssuer+", audiences: [credbroker], jwks_file: "+jwks+"}\n")
	e.start()
	c := socketClient(e.socket)
	token := oidctest.Sign(t, key, k8sClaims(time.Now(), nil), nil)

	unixCaller := append([]string{"--subject", "unix:uid:" + strconv.Itoa(me.uid)}, me.claims("--claim")...)
	tokenCaller := append([]string{
		"--subject", "system:serviceaccount:payments:api", "--claim", "namespace=payments",
		"--claim", "service_account=api", "--claim", "pod_name=api-5d8f7c9b7-abcde",
	}, me.claims("--peer-claim")...)

	tests := []struct {
		name, method, credential string
		token                    bool
		effect, policy           string
	}{
		{"uid self", "GET", "demo", false, "allow", "self-reads-demo"},
		{"uid self, POST", "POST", "demo", false, "allow", "self-reads-demo"},
		{"condition on method and path", "GET", "secret", false, "allow", "this-test-gets-secret"},
		{"deny", "POST", "secret", false, "deny", "no-posts-of-secret"},
		{"double-star glob and gid self", "GET", "tools", false, "allow", "tools-below-the-build-dir"},
		{"default deny", "GET", "other", false, "deny", ""},
		{"token caller with the broker's uid as peer", "GET", "payments", true, "allow", "api-pod-beside-the-broker"},
		{"token caller, POST", "POST", "payments", true, "allow", "api-pod-beside-the-broker"},
		{"token caller whose peer matches a unix selector", "GET", "secret", true, "allow", "this-test-gets-secret"},
		{"token caller whose peer matches a deny", "POST", "secret", true, "deny", "no-posts-of-secret"},
		{"token caller, default deny", "GET", "other", true, "deny", ""},
	}
	ids := make([]string, len(tests))
	for i, tc := range tests {
		header := http.Header{"Credbroker-Request": {"1"}}
		if tc.token {
			header.Set("Authorization", "Bearer "+token)
		}
		r := call(t, c, tc.method, "/v1/credentials/"+tc.credential, header, nil)
		ids[i] = r.OK.DecisionID + r.Err.Error.DecisionID
		if want := map[string]int{"allow": 200, "deny": 403}[tc.effect]; r.Status != want {
			t.Errorf("%s: broker answered %d %s, want %d", tc.name, r.Status, r.Body, want)
		}
	}
	rows := decisionRows(t, e.db)
	for i, tc := range tests {
		args := []string{"--config", e.config, "--credential", tc.credential}
		if tc.method != "GET" { // GET is explain's default, as the socket API's
			args = append(args, "--http-method", tc.method)
		}
		if tc.token {
			args = append(args, tokenCaller...)
		} else {
			args = append(args, unixCaller...)
		}
		ex, code := explainJSON(t, args...)
		row, ok := rows[ids[i]]
		switch {
		case !ok:
			t.Errorf("%s: no audit row for decision %q", tc.name, ids[i])
		case row.Decision != ex.Effect || row.Policy != ex.Policy || row.version() != ex.recordedVersion():
			t.Errorf("%s: broker decided %s by %q (version %s), explain %s by %q (version %s): %s",
				tc.name, row.Decision, row.Policy, row.version(), ex.Effect, ex.Policy, ex.recordedVersion(), ex.Reason)
		case (row.Policy == "") != (row.PolicyVersion == "") || (row.Policy == "") == (row.SetVersion == ""):
			t.Errorf("%s: row by %q has policy_version %q and policy_set_version %q: want the one that fits", tc.name, row.Policy, row.PolicyVersion, row.SetVersion)
		}
		for _, s := range ex.Trace {
			if s.Policy == ex.Policy && s.PolicyVersion != ex.PolicyVersion || len(s.PolicyVersion) != 12 {
				t.Errorf("%s: trace step %s has policy_version %q (decision's %q)", tc.name, s.Policy, s.PolicyVersion, ex.PolicyVersion)
			}
		}
		if ex.Effect != tc.effect || ex.Policy != tc.policy {
			t.Errorf("%s: explain decided %s by %q, want %s by %q: %s", tc.name, ex.Effect, ex.Policy, tc.effect, tc.policy, ex.Reason)
		}
		if want := map[string]int{"allow": 0, "deny": 3}[tc.effect]; code != want {
			t.Errorf("%s: explain exit %d, want %d", tc.name, code, want)
		}
	}
}

// TestExplainFlags checks explain's request defaults and the flags that
// change them, --at, --peer-claim, --broker-uid and the refusal of the
// removed --method.
func TestExplainFlags(t *testing.T) {
	uid := strconv.Itoa(os.Getuid())
	e := newEnv(t, `policies:
  - name: get-demo-over-the-api
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [demo]
    when: 'request.method == "GET" && request.path == "/v1/credentials/demo"'
  - name: in-2001
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [old]
    when: 'now.getFullYear() == 2001'
`, "  - {name: demo, static: {file: secrets/demo}}\n  - {name: old, static: {file: secrets/demo}}\n")
	e.write("secrets/demo", "s3cr3t")
	base := []string{"--config", e.config, "--subject", "unix:uid:" + uid}
	run := func(extra ...string) explained {
		ex, _ := explainJSON(t, append(append([]string(nil), base...), extra...)...)
		return ex
	}
	defaultVersion := ""
	for _, tc := range []struct {
		name   string
		args   []string
		effect string
	}{
		{"socket API defaults", []string{"--credential", "demo"}, "allow"},
		{"mtls channel has the same defaults", []string{"--credential", "demo", "--channel", "mtls"}, "allow"},
		{"--http-method", []string{"--credential", "demo", "--http-method", "POST"}, "deny"},
		{"--path", []string{"--credential", "demo", "--path", "/v1/credentials/other"}, "deny"},
		{"no defaults off the socket API", []string{"--credential", "demo", "--channel", "http"}, "deny"},
		{"now", []string{"--credential", "old"}, "deny"},
		{"--at", []string{"--credential", "old", "--at", "2001-06-01T12:00:00Z"}, "allow"},
		{"--at with an offset", []string{"--credential", "old", "--at", "2002-01-01T00:30:00+01:00"}, "allow"},
		{"--broker-uid of another user", []string{"--credential", "demo", "--broker-uid", strconv.Itoa(os.Getuid() + 1)}, "deny"},
		{"token caller with this uid as peer", []string{"--credential", "demo", "--subject", "spiffe://td/x", "--peer-claim", "uid=" + uid}, "allow"},
		{"token caller without a peer", []string{"--credential", "demo", "--subject", "spiffe://td/x"}, "deny"},
	} {
		ex := run(tc.args...)
		if ex.Effect != tc.effect {
			t.Errorf("%s: %s (%s), want %s", tc.name, ex.Effect, ex.Reason, tc.effect)
		}
		if tc.name == "now" {
			defaultVersion = ex.SetVersion
		}
		if tc.name == "--broker-uid of another user" && ex.SetVersion == defaultVersion {
			t.Errorf("--broker-uid: policy set version %s, the same as for this user", ex.SetVersion)
		}
	}

	// check reports the policy set version for the broker's uid too.
	version := func(args ...string) string {
		out, errOut, code := credbroker(t, append([]string{"check", "--config", e.config}, args...)...)
		if code != 0 {
			t.Fatalf("check %q: exit %d: %s%s", args, code, out, errOut)
		}
		_, after, _ := strings.Cut(out, "(policy set version ")
		v, _, _ := strings.Cut(after, ")")
		return v
	}
	if own, other := version(), version("--broker-uid", strconv.Itoa(os.Getuid()+1)); own != defaultVersion || other == own {
		t.Errorf("check: version %s for this uid (explain: %s), %s for another", own, defaultVersion, other)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--credential", "demo", "--method", "GET"}, "--method is gone, it meant both the identity method and request.method: use --http-method GET for request.method"},
		{[]string{"--credential", "demo", "--method=kubernetes"}, "use --attestor kubernetes for the identity method"},
		{[]string{"--credential", "old", "--at", "2001-06-01"}, `--at "2001-06-01" is not an RFC 3339 time`},
		{[]string{"--credential", "demo", "--subject", "spiffe://td/x", "--peer-claim", "gid=0"}, "--peer-claim needs uid=N"},
		{[]string{"--credential", "demo", "--peer-claim", "uid=0"}, "a unix identity has none"},
		{[]string{"--credential", "demo", "--attestor", "GET"}, `--attestor "GET": want one of unix, kubernetes, spiffe, github, aws`},
	} {
		_, errOut, code := credbroker(t, append(append([]string{"explain"}, base...), tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("explain %q: exit %d, stderr %q, want %d and %q", tc.args, code, errOut, exitUsage, tc.want)
		}
	}
}

// TestCheckWarnsAboutEvadableSelectors runs `credbroker check` on an exe
// selector without exe_sha256 and a deny that only a token identity
// triggers: both are warnings, and check still passes.
func TestCheckWarnsAboutEvadableSelectors(t *testing.T) {
	e := newEnv(t, `policies:
  - name: tools
    effect: allow
    workloads:
      - unix: {exe: "/usr/**"}
      - unix: {exe: /usr/bin/payments, exe_sha256: 9f2c7d1e5b3a4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d}
    credentials: [demo]
  - name: no-sandbox
    effect: deny
    workloads:
      - kubernetes: {namespace: sandbox}
      - spiffe: {id: "spiffe://td/ns/sandbox/**"}
    credentials: ["*"]
  - name: no-sandbox-peer
    effect: deny
    workloads:
      - kubernetes: {namespace: sandbox}
      - unix: {uid: 4242}
    credentials: ["*"]
`, "  - {name: demo, static: {file: secrets/demo}}\n")
	e.write("secrets/demo", "s3cr3t")
	out, errOut, code := credbroker(t, "check", "--config", e.config)
	pol := filepath.Join(e.dir, "policies.yaml")
	want := []string{
		pol + `:5: warning: unix selector matches exe "/usr/**" without exe_sha256: the path is the one the caller's mount namespace shows, and an unprivileged user can bind-mount any binary over it in a user namespace; add exe_sha256 to the same selector`,
		pol + `:10: warning: deny policy "no-sandbox" selects only callers that present a token (kubernetes, spiffe): a caller escapes it by presenting none, and is then attested as its unix peer; add a unix entry (uid, exe_sha256, pod_uid or container_id) for the same workload`,
		"ok: 1 credentials, 3 policies (policy set version ",
		"  EFFECT  POLICY",
		"  allow   tools ",
		"  deny    no-sandbox ",
		"  deny    no-sandbox-peer ",
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != len(want) {
		t.Fatalf("check: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, lines[i], w)
		}
	}
}
