package policies

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
)

const decisionPolicies = `
	policies:
	  - name: payments-can-charge
	    effect: allow
	    workloads:
	      - kubernetes: {namespace: payments, service_account: payment-processor}
	      - unix: {uid: 1001}
	    credentials: [stripe-live, "orders-*"]
	    ttl: 15m
	  - name: payments-read-anything
	    effect: allow
	    workloads: [{kubernetes: {namespace: payments}}]
	    credentials: ["*"]
	  - name: no-orders-admin
	    effect: deny
	    workloads: [{kubernetes: {namespace: payments}}]
	    credentials: [orders-admin]
	  - name: no-http-writes
	    effect: deny
	    workloads: [{unix: {uid: 1001}}]
	    credentials: ["*"]
	    when: 'request.channel == "http" && request.method != "GET"'
`

func TestDecisions(t *testing.T) {
	s := mustCompile(t, decisionPolicies)
	tests := []struct {
		name string
		in   Input
		want Decision
	}{
		{
			name: "first allow in load order decides, with its ttl",
			in:   input(idK8s, "stripe-live"),
			want: Decision{Effect: Allow, Policy: "payments-can-charge", Reason: "allowed by policy payments-can-charge", TTL: 15 * time.Minute},
		},
		{
			name: "later allow when the first does not match",
			in:   input(idK8s, "partner-api"),
			want: Decision{Effect: Allow, Policy: "payments-read-anything", Reason: "allowed by policy payments-read-anything"},
		},
		{
			name: "deny wins over an earlier allow",
			in:   input(idK8s, "orders-admin"),
			want: Decision{Effect: Deny, Policy: "no-orders-admin", Reason: "denied by policy no-orders-admin"},
		},
		{
			name: "deny with a true condition",
			in:   Input{Identity: idUnix, Request: Request{Channel: "http", Credential: "stripe-live", Method: "POST"}, Now: testNow},
			want: Decision{Effect: Deny, Policy: "no-http-writes", Reason: "denied by policy no-http-writes"},
		},
		{
			name: "deny with a false condition does not apply",
			in:   Input{Identity: idUnix, Request: Request{Channel: "http", Credential: "stripe-live", Method: "GET"}, Now: testNow},
			want: Decision{Effect: Allow, Policy: "payments-can-charge", Reason: "allowed by policy payments-can-charge", TTL: 15 * time.Minute},
		},
		{
			name: "default deny",
			in:   input(idUnix, "partner-api"),
			want: Decision{Effect: Deny, Reason: "no policy allows unix:uid:1001 to read partner-api"},
		},
		{
			name: "default deny for an unknown workload",
			in:   input(idAWS, "stripe-live"),
			want: Decision{Effect: Deny, Reason: "no policy allows arn:aws:iam::123456789012:role/payments-api to read stripe-live"},
		},
		{
			name: "default deny for an unidentified caller",
			in:   input(attest.Identity{}, "stripe-live"),
			want: Decision{Effect: Deny, Reason: "no policy allows an unidentified caller to read stripe-live"},
		},
	}
	versions := map[string]string{}
	for _, p := range s.Policies() {
		versions[p.Name] = p.Version
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.Version = versions[tc.want.Policy]
			if tc.want.Policy == "" {
				tc.want.Version = s.Version()
			}
			if got := s.Evaluate(tc.in); got != tc.want {
				t.Errorf("Evaluate:\n got %+v\nwant %+v", got, tc.want)
			}
			if got := s.Explain(tc.in).Decision; got != tc.want {
				t.Errorf("Explain:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestLoadOrderAcrossFiles(t *testing.T) {
	a := File{Name: "a.yaml", Data: []byte("policies:\n  - {name: short, effect: allow, workloads: [{unix: {uid: 1001}}], credentials: [x], ttl: 5m}\n")}
	b := File{Name: "b.yaml", Data: []byte("policies:\n  - {name: long, effect: allow, workloads: [{unix: {uid: 1001}}], credentials: [x], ttl: 1h}\n")}
	for _, tc := range []struct {
		files  []File
		policy string
		ttl    time.Duration
	}{
		{[]File{a, b}, "short", 5 * time.Minute},
		{[]File{b, a}, "long", time.Hour},
	} {
		s, err := Compile(tc.files)
		if err != nil {
			t.Fatal(err)
		}
		if d := s.Evaluate(input(idUnix, "x")); d.Policy != tc.policy || d.TTL != tc.ttl {
			t.Errorf("files %s, %s: %+v", tc.files[0].Name, tc.files[1].Name, d)
		}
	}
}

func TestVersions(t *testing.T) {
	base := mustCompile(t, `
		policies:
		  - name: a
		    effect: allow
		    workloads: [{unix: {uid: 1001, gid: 1001}}]
		    credentials: [x]
		    ttl: 1h
		  - {name: b, effect: deny, workloads: [{unix: {uid: 0}}], credentials: ["*"]}
	`)
	// Same content, other formatting, key order, comments and file name.
	same, err := Compile([]File{{Name: "other.yaml", Data: []byte(`
# the same policies
policies:
  - effect: allow   # comment
    name: a
    ttl: 60m
    credentials:
      - x
    workloads:
      - unix:
          gid: 1001
          uid: 0x3E9
  - name: b
    effect: deny
    workloads: [{unix: {uid: 0}}]
    credentials: ["*"]
`)}})
	if err != nil {
		t.Fatal(err)
	}
	if base.Version() != same.Version() {
		t.Errorf("reformatting changed the version: %s → %s", base.Version(), same.Version())
	}
	changed := mustCompile(t, `
		policies:
		  - name: a
		    effect: allow
		    workloads: [{unix: {uid: 1001, gid: 1001}}]
		    credentials: [x]
		    ttl: 2h
		  - {name: b, effect: deny, workloads: [{unix: {uid: 0}}], credentials: ["*"]}
	`)
	bp, cp := base.Policies(), changed.Policies()
	if bp[0].Version == cp[0].Version {
		t.Errorf("changing the ttl kept policy a's version %s", bp[0].Version)
	}
	if bp[1].Version != cp[1].Version {
		t.Errorf("policy b's version changed with policy a: %s → %s", bp[1].Version, cp[1].Version)
	}
	if base.Version() == changed.Version() {
		t.Errorf("set version did not change")
	}
	reordered := mustCompile(t, `
		policies:
		  - {name: b, effect: deny, workloads: [{unix: {uid: 0}}], credentials: ["*"]}
		  - {name: a, effect: allow, workloads: [{unix: {uid: 1001, gid: 1001}}], credentials: [x], ttl: 1h}
	`)
	if reordered.Version() == base.Version() {
		t.Errorf("load order is not part of the set version")
	}
	empty, _ := Compile(nil)
	var nilSet *Set
	if empty.Version() != nilSet.Version() || len(empty.Version()) != versionLen {
		t.Errorf("empty versions %q, %q", empty.Version(), nilSet.Version())
	}
}

func TestNilSetDenies(t *testing.T) {
	var s *Set
	d := s.Evaluate(input(idUnix, "x"))
	if d.Effect != Deny || d.Policy != "" || d.Version == "" {
		t.Errorf("nil Set: %+v", d)
	}
	if s.Len() != 0 || s.Policies() != nil || len(s.Explain(input(idUnix, "x")).Trace) != 0 {
		t.Errorf("nil Set is not empty")
	}
}

func TestExplain(t *testing.T) {
	s := mustCompile(t, decisionPolicies)
	in := Input{Identity: idUnix, Request: Request{Channel: "http", Credential: "orders-db", Method: "POST"}, Now: testNow}
	ex := s.Explain(in)
	want := []Step{
		{Policy: "payments-can-charge", Effect: Allow, File: "test.yaml", Line: 2, Matched: true,
			Why: `workload: entry at line 6 matches; credential: "orders-db" matches "orders-*"; condition: none`},
		{Policy: "payments-read-anything", Effect: Allow, File: "test.yaml", Line: 9, Matched: false,
			Why: `workload: no entry matches (line 11: kubernetes: identity method is "unix"); credential: "orders-db" matches "*"; condition: none`},
		{Policy: "no-orders-admin", Effect: Deny, File: "test.yaml", Line: 13, Matched: false,
			Why: `workload: no entry matches (line 15: kubernetes: identity method is "unix"); credential: "orders-db" is not among "orders-admin"; condition: none`},
		{Policy: "no-http-writes", Effect: Deny, File: "test.yaml", Line: 17, Matched: true,
			Why: `workload: entry at line 19 matches; credential: "orders-db" matches "*"; condition: true`},
	}
	if len(ex.Trace) != len(want) {
		t.Fatalf("trace has %d steps, want %d", len(ex.Trace), len(want))
	}
	for i := range want {
		if ex.Trace[i] != want[i] {
			t.Errorf("step %d:\n got %+v\nwant %+v", i, ex.Trace[i], want[i])
		}
	}
	if ex.Decision != s.Evaluate(in) || ex.Policy != "no-http-writes" {
		t.Errorf("decision %+v", ex.Decision)
	}
}

func TestExplainMismatches(t *testing.T) {
	s := mustCompile(t, `
		policies:
		  - name: p
		    effect: allow
		    workloads:
		      - unix: {uid: 1000, exe: "/opt/*", pod_uid: abc}
		      - all: [{kubernetes: {namespace: payments}}, {unix: {gid: 0}}]
		      - spiffe: {id: "spiffe://example.org/*"}
		    credentials: [a, "b-*"]
		    when: identity.claims.nope == 1
	`)
	tests := []struct {
		id   attest.Identity
		cred string
		want string
	}{
		{idUnix, "c", `workload: no entry matches (line 5: unix: uid is 1001, want 1000, exe "/usr/bin/payments" does not match "/opt/*", pod_uid: claim "pod_uid" is absent; ` +
			`line 6: all: kubernetes: identity method is "unix"; line 7: spiffe: identity method is "unix"); credential: "c" is not among "a", "b-*"; condition: not evaluated`},
		{idK8s, "b-1", `workload: no entry matches (line 5: unix: identity method is "kubernetes" and it has no unix peer; ` +
			`line 6: all: unix: identity method is "kubernetes" and it has no unix peer; line 7: spiffe: identity method is "kubernetes"); credential: "b-1" matches "b-*"; condition: not evaluated`},
		{idK8sWithPeer, "a", `workload: no entry matches (line 5: unix: uid is 1001, want 1000, exe "/usr/bin/payments" does not match "/opt/*", pod_uid: claim "pod_uid" is absent; ` +
			`line 6: all: unix: gid is 1001, want 0; line 7: spiffe: identity method is "kubernetes"); credential: "a" matches "a"; condition: not evaluated`},
		{idSPIFFE, "a", `workload: no entry matches (line 5: unix: identity method is "spiffe" and it has no unix peer; line 6: all: kubernetes: identity method is "spiffe"; ` +
			`line 7: spiffe: id "spiffe://prod.example.org/ns/payments/sa/api" does not match "spiffe://example.org/*"); credential: "a" matches "a"; condition: not evaluated`},
		{attest.Identity{Method: "spiffe", Subject: "spiffe://example.org/x"}, "a",
			`workload: entry at line 7 matches; credential: "a" matches "a"; condition: failed to evaluate, so the allow does not apply: no such key: nope`},
	}
	for _, tc := range tests {
		ex := s.Explain(input(tc.id, tc.cred))
		if got := ex.Trace[0].Why; got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.id.Subject, got, tc.want)
		}
		if ex.Trace[0].Matched || ex.Effect != Deny {
			t.Errorf("%s: matched", tc.id.Subject)
		}
	}
}

func TestEvaluateConcurrent(t *testing.T) {
	s := mustCompile(t, decisionPolicies)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				in := Input{Identity: idUnix, Request: Request{Channel: "http", Credential: "stripe-live", Method: "GET"}, Now: testNow}
				if (g+i)%2 == 0 {
					in.Request.Method = "POST"
				}
				d := s.Evaluate(in)
				if want := in.Request.Method == "GET"; (d.Effect == Allow) != want {
					t.Errorf("%s: %+v", in.Request.Method, d)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestPolicies(t *testing.T) {
	s := mustCompile(t, decisionPolicies)
	ps := s.Policies()
	if len(ps) != 4 || ps[0].Name != "payments-can-charge" || ps[0].TTL != 15*time.Minute ||
		strings.Join(ps[0].Credentials, ",") != "stripe-live,orders-*" || ps[3].When == "" || ps[3].Line != 17 {
		t.Errorf("Policies() = %+v", ps)
	}
}
