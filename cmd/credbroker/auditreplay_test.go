package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
	"github.com/credbroker/credbroker/audit/replay"
)

// replayPolicies is the policy set A the broker decides under: this
// process (as itself, not as a token's peer) reads demo and other but never
// forbidden; payments' api reads demo and gone from a pod of this uid;
// shop's web reads other.
func replayPolicies(uid int) string {
	return fmt.Sprintf(`policies:
  - name: local-reads-demo
    effect: allow
    workloads: [{unix: {uid: %[1]d}}]
    credentials: [demo, other]
    when: 'identity.method == "unix"'
  - name: nobody-reads-forbidden
    effect: deny
    workloads: [{unix: {uid: %[1]d}}]
    credentials: [forbidden]
  - name: payments-reads-demo
    effect: allow
    workloads:
      - all: [{kubernetes: {namespace: payments, service_account: api}}, {unix: {uid: %[1]d}}]
    credentials: [demo, gone]
    when: 'identity.claims.pod_name.startsWith("api-") && identity.peer.claims.uid == %[1]d && identity.peer.claims.pid > 0'
  - name: shop-reads-other
    effect: allow
    workloads: [{kubernetes: {namespace: shop}}]
    credentials: [other]
`, uid)
}

// TestAuditReplay: a log a running broker wrote under policy set A —
// several workloads and credentials, allows, denies by a policy and by
// default, a failed attestation, an unknown credential, a provider failure
// after an allow — replayed under A changes nothing (exit 0); under B,
// which drops shop's allow and payments' gone and lets shop read demo,
// exactly those decisions are reported, grouped, with their ids (exit 9,
// or 0 with --allow-changes); under C, which only adds an allow, the
// deny→allow changes are reported and the exit is 0.
func TestAuditReplay(t *testing.T) {
	uid := os.Getuid()
	setA := replayPolicies(uid)
	e := newEnv(t, setA, e2eCredentials()+"  - {name: gone, static: {file: secrets/gone}}\n")
	e.write("secrets/demo", "s3cr3t-value")
	e.write("secrets/gone", "soon gone")
	key := oidctest.NewRSAKey(t, "k1")
	jwks := e.write("jwks.json", string(jwksOf(t, key)))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, append(cfg, []byte("attestors:\n  kubernetes: {issuer: "+testIssuer+", audiences: [credbroker], jwks_file: "+jwks+"}\n")...), 0o600)
	b := e.start()
	os.Remove(filepath.Join(e.dir, "secrets/gone")) // read at start: now its provider fails
	c := socketClient(e.socket)
	now := time.Now()
	payments := oidctest.Sign(t, key, k8sClaims(now, nil), nil)
	shop := oidctest.Sign(t, key, k8sClaims(now, func(c map[string]any) {
		c["sub"] = "system:serviceaccount:shop:web"
		c["kubernetes.io"] = map[string]any{
			"namespace":      "shop",
			"pod":            map[string]any{"name": "web-7c9b7-xyz", "uid": "1f9e8d7c-6b5a-4321-8fed-cba987654321"},
			"serviceaccount": map[string]any{"name": "web", "uid": "21111111-2222-3333-4444-555555555555"},
		}
	}), nil)
	expired := oidctest.Sign(t, key, k8sClaims(now, func(c map[string]any) {
		c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	}), nil)

	// ids collects each request's decision id under a name.
	ids := map[string][]string{}
	request := func(name, token, cred string, status int) {
		t.Helper()
		h := http.Header{"Credbroker-Request": {"1"}}
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		r := call(t, c, "GET", "/v1/credentials/"+cred, h, nil)
		id := r.OK.DecisionID
		if r.Status != 200 {
			id = r.Err.Error.DecisionID
		}
		if r.Status != status || id == "" {
			t.Fatalf("%s: %d %s, want %d with a decision id", name, r.Status, r.Body, status)
		}
		ids[name] = append(ids[name], id)
	}
	request("local demo", "", "demo", 200)
	request("local demo", "", "demo", 200)
	request("local other", "", "other", 200)
	request("local forbidden", "", "forbidden", 403)
	request("local unlisted", "", "unlisted", 403)
	request("payments demo", payments, "demo", 200)
	request("payments demo", payments, "demo", 200)
	request("payments other", payments, "other", 403) // local-reads-demo is for the process itself
	for range 4 {
		request("shop other", shop, "other", 200)
	}
	request("shop demo", shop, "demo", 403)
	request("expired token", expired, "demo", 401)
	request("unknown credential", "", "nope", 404)
	request("payments gone", payments, "gone", 503)

	rows := auditRows(t, e.db)
	if r := rows[ids["payments gone"][0]]; r.Decision != "error" || r.Policy != "payments-reads-demo" {
		t.Fatalf("the provider failure after an allow: %+v", r)
	}
	if r := rows[ids["expired token"][0]]; r.Decision != "error" || len(r.Input) != 0 {
		t.Fatalf("the failed attestation: %+v", r)
	}

	// Under A, with the broker still writing its log: nothing changes.
	policiesA := e.write("replay/a.yaml", setA)
	out, errOut, code := credbroker(t, "audit", "replay", "--db", e.db, "--policies", policiesA)
	if code != 0 || errOut != "" {
		t.Fatalf("replay under A: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.HasPrefix(out, "replayed 16 decisions from ") || !strings.Contains(out, " to now under "+policiesA+" (policy set ") {
		t.Errorf("replay under A: first line of\n%s", out)
	}
	expectRows(t, "replay under A", out,
		[]string{"compared", "14", "including 1 error rows whose policy had allowed, compared as allows"},
		[]string{"unchanged", "14"}, []string{"allow → deny", "0"}, []string{"deny → allow", "0"},
		[]string{"no stored input", "1", "attestation failed: no identity to evaluate"},
		[]string{"not evaluated", "1", "refused before any policy: malformed or unknown credential, malformed request"},
		[]string{"undecodable input", "0", "not compared"},
		[]string{"no decision would change"})
	repA := replayJSON(t, 0, "--db", e.db, "--policies", policiesA, "--since", "")
	if repA.Decisions != 16 || repA.Compared != 14 || repA.ComparedErrors != 1 || repA.Unchanged != 14 || repA.NoInput != 1 || repA.NotEvaluated != 1 ||
		repA.Undecodable != 0 || repA.AllowToDeny != 0 || repA.DenyToAllow != 0 || len(repA.Changes) != 0 {
		t.Errorf("replay under A: %+v", repA)
	}

	// Under B: shop loses other, payments loses gone, shop gains demo.
	setB := strings.Replace(setA, "    credentials: [demo, gone]\n", "    credentials: [demo]\n", 1)
	setB = strings.Replace(setB, "  - name: shop-reads-other\n    effect: allow\n    workloads: [{kubernetes: {namespace: shop}}]\n    credentials: [other]\n",
		"  - name: shop-reads-demo\n    effect: allow\n    workloads: [{kubernetes: {namespace: shop}}]\n    credentials: [demo]\n", 1)
	if setB == setA || strings.Contains(setB, "shop-reads-other") || strings.Contains(setB, "gone") {
		t.Fatalf("set B is not what the test means:\n%s", setB)
	}
	policiesB := e.write("replay/b/policies.yaml", setB)
	rep := replayJSON(t, exitAllowDenied, "--db", e.db, "--policies", filepath.Dir(policiesB))
	want := []replay.Group{
		{Change: replay.AllowToDeny, Credential: "other", Subject: "system:serviceaccount:shop:web", Policy: "shop-reads-other", Count: 4,
			Examples: ids["shop other"][:3], Reason: "no policy allows system:serviceaccount:shop:web to read other"},
		{Change: replay.AllowToDeny, Credential: "gone", Subject: "system:serviceaccount:payments:api", Policy: "payments-reads-demo", Count: 1,
			Examples: ids["payments gone"], Reason: "no policy allows system:serviceaccount:payments:api to read gone"},
		{Change: replay.DenyToAllow, Credential: "demo", Subject: "system:serviceaccount:shop:web", Policy: "shop-reads-demo", Count: 1,
			Examples: ids["shop demo"], Reason: "allowed by policy shop-reads-demo"},
	}
	for i := range rep.Changes {
		if rep.Changes[i].First.IsZero() || rep.Changes[i].Last.Before(rep.Changes[i].First) {
			t.Errorf("group %d: first %v, last %v", i, rep.Changes[i].First, rep.Changes[i].Last)
		}
		rep.Changes[i].First, rep.Changes[i].Last = time.Time{}, time.Time{}
	}
	if !reflect.DeepEqual(rep.Changes, want) {
		t.Errorf("replay under B:\n%+v\nwant\n%+v", rep.Changes, want)
	}
	if rep.Decisions != 16 || rep.Compared != 14 || rep.Unchanged != 8 || rep.AllowToDeny != 5 || rep.DenyToAllow != 1 {
		t.Errorf("replay under B: %+v", rep)
	}
	out, errOut, code = credbroker(t, "audit", "replay", "--db", e.db, "--policies", policiesB)
	if code != exitAllowDenied || !strings.Contains(errOut, "5 recorded allows would be denied under "+policiesB+" (exit 9; --allow-changes accepts them)") {
		t.Errorf("replay under B: exit %d, stderr %q", code, errOut)
	}
	expectRows(t, "replay under B", out,
		[]string{"CHANGE", "COUNT", "CREDENTIAL", "WORKLOAD", "POLICY", "EXAMPLES", "PROPOSED REASON"},
		[]string{"allow → deny", "4", "other", "system:serviceaccount:shop:web", "shop-reads-other", strings.Join(ids["shop other"][:3], ","), "no policy allows system:serviceaccount:shop:web to read other"},
		[]string{"allow → deny", "1", "gone", "system:serviceaccount:payments:api", "payments-reads-demo", ids["payments gone"][0], "no policy allows system:serviceaccount:payments:api to read gone"},
		[]string{"deny → allow", "1", "demo", "system:serviceaccount:shop:web", "shop-reads-demo", ids["shop demo"][0], "allowed by policy shop-reads-demo"},
		[]string{"unchanged", "8"}, []string{"allow → deny", "5"}, []string{"deny → allow", "1"})
	if strings.Contains(out, ids["shop other"][3]) {
		t.Errorf("a fourth example listed:\n%s", out)
	}
	if out, errOut, code := credbroker(t, "audit", "replay", "--db", e.db, "--policies", policiesB, "--allow-changes"); code != 0 || errOut != "" || !strings.Contains(out, "shop-reads-other") {
		t.Errorf("replay under B with --allow-changes: exit %d\n%s%s", code, out, errOut)
	}

	// Under C, A plus shop's demo: only deny→allow, exit 0.
	setC := setA + "  - name: shop-reads-demo\n    effect: allow\n    workloads: [{kubernetes: {namespace: shop}}]\n    credentials: [demo]\n"
	repC := replayJSON(t, 0, "--db", e.db, "--policies", e.write("replay/c.yaml", setC))
	if repC.AllowToDeny != 0 || repC.DenyToAllow != 1 || len(repC.Changes) != 1 || !reflect.DeepEqual(repC.Changes[0].Examples, ids["shop demo"]) {
		t.Errorf("replay under C: %+v", repC)
	}

	// A window before the log: nothing to replay.
	if rep := replayJSON(t, 0, "--db", e.db, "--policies", policiesB, "--until", now.Add(-time.Hour).Format(time.RFC3339)); rep.Decisions != 0 {
		t.Errorf("a window before the log: %+v", rep)
	}
	b.stop(syscall.SIGTERM)

	// The same rows read the same from the stopped broker's log.
	if rep := replayJSON(t, exitAllowDenied, "--db", e.db, "--policies", policiesB); rep.Decisions != 16 || rep.AllowToDeny != 5 {
		t.Errorf("after the broker stopped: %+v", rep)
	}
}

// expectRows checks that out has, for each row, a line made of exactly its
// cells, separated by white space.
func expectRows(t *testing.T, what, out string, rows ...[]string) {
	t.Helper()
	for _, cells := range rows {
		quoted := make([]string, len(cells))
		for i, c := range cells {
			quoted[i] = regexp.QuoteMeta(c)
		}
		if !regexp.MustCompile(`(?m)^\s*` + strings.Join(quoted, `\s+`) + `\s*$`).MatchString(out) {
			t.Errorf("%s: no line %q in\n%s", what, cells, out)
		}
	}
}

// replayJSON runs `audit replay --format json` and decodes its document,
// expecting exit code want.
func replayJSON(t *testing.T, want int, args ...string) replay.Report {
	t.Helper()
	out, errOut, code := credbroker(t, append([]string{"audit", "replay", "--format", "json"}, args...)...)
	if code != want {
		t.Fatalf("audit replay %v: exit %d, want %d\n%s%s", args, code, want, out, errOut)
	}
	var rep replay.Report
	d := json.NewDecoder(strings.NewReader(out))
	d.DisallowUnknownFields()
	if err := d.Decode(&rep); err != nil || d.More() {
		t.Fatalf("audit replay --format json: not one document (%v):\n%s", err, out)
	}
	return rep
}

// TestAuditReplayRefuses: mistakes on the command line exit 2, policies
// that do not compile or a log that cannot be read exit 1, each with what
// is wrong.
func TestAuditReplayRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(replayPolicies(0)), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("policies:\n  - name: p\n    effect: maybe\n    workloads: [{unix: {uid: 0}}]\n    credentials: [demo]\n"), 0o600)
	db := filepath.Join(dir, "none.db")
	for _, tt := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no policies", []string{"--db", db}, exitUsage, "--policies: is required"},
		{"an argument", []string{"--policies", good, "extra"}, exitUsage, "audit replay takes no arguments"},
		{"a bad format", []string{"--policies", good, "--format", "csv"}, exitUsage, `--format: "csv": use table or json`},
		{"a bad since", []string{"--policies", good, "--since", "last week"}, exitUsage, "--since"},
		{"an unknown flag", []string{"--policy", good}, exitUsage, "unknown flag --policy"},
		{"policies with a problem", []string{"--db", db, "--policies", bad}, 1, bad + ":3: "},
		{"no such policies", []string{"--db", db, "--policies", filepath.Join(dir, "none.yaml")}, 1, "none.yaml: no such file or directory"},
		{"no such log", []string{"--db", db, "--policies", good}, 1, "none.db"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := credbroker(t, append([]string{"audit", "replay"}, tt.args...)...)
			if code != tt.code || !strings.Contains(errOut, tt.msg) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d with %q", code, out, errOut, tt.code, tt.msg)
			}
		})
	}
}
