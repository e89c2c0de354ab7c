package policies

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// FuzzCompile checks that arbitrary policy YAML never panics and yields
// either a Set or Problems positioned in the file.
func FuzzCompile(f *testing.F) {
	for _, tc := range problemCases {
		for _, file := range tc.files {
			f.Add(file.Data)
		}
	}
	for _, tc := range selectorCases {
		f.Add(fmt.Appendf(nil, "policies:\n  - name: p\n    effect: allow\n    workloads:\n      - %s\n    credentials: [x]\n", tc.workload))
	}
	for _, tc := range githubCases {
		f.Add(fmt.Appendf(nil, "policies:\n  - name: p\n    effect: allow\n    workloads:\n      - %s\n    credentials: [x]\n", tc.workload))
	}
	for _, tc := range conditionCases[:5] {
		f.Add([]byte(conditionPolicy(Deny, tc.when)))
	}
	for _, tc := range globCases {
		f.Add(fmt.Appendf(nil, "policies:\n  - name: p\n    effect: allow\n    workloads:\n      - spiffe: {id: %q}\n      - unix: {exe: %q}\n    credentials: [%q]\n", tc.glob, tc.glob, tc.glob))
	}
	for _, tc := range warningCases {
		f.Add([]byte(warningPolicy(tc.effect, tc.workloads)))
	}
	f.Add([]byte(dedent(selfPolicy)))
	f.Add([]byte(dedent(decisionPolicies)))
	f.Add([]byte("a: &a [x, *a]\npolicies: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Compile([]File{{Name: "f.yaml", Data: data}})
		if err != nil {
			if s != nil {
				t.Fatalf("Set and error together")
			}
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %v (%T) is not Problems", err, err)
			}
			// YAML also breaks lines at CR, NEL, LS and PS.
			lines := 2
			for _, sep := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
				lines += bytes.Count(data, []byte(sep))
			}
			for _, p := range ps {
				if p.File != "f.yaml" || p.Message == "" || p.Line < 0 || p.Line > lines {
					t.Fatalf("bad problem %+v in a %d-line file", p, lines)
				}
			}
			return
		}
		if len(s.Version()) != versionLen {
			t.Fatalf("version %q", s.Version())
		}
		for _, w := range s.Warnings() {
			if w.File != "f.yaml" || w.Message == "" || w.Line <= 0 {
				t.Fatalf("bad warning %+v", w)
			}
		}
		for _, id := range []attest.Identity{idUnix, idK8sWithPeer, idGitHub, {}} {
			in := input(id, "x")
			if d, ex := s.Evaluate(in), s.Explain(in); d != ex.Decision || len(ex.Trace) != s.Len() {
				t.Fatalf("Evaluate %+v, Explain %+v", d, ex.Decision)
			}
		}
	})
}

// fuzzPolicies is the fixed Set FuzzEvaluate evaluates against.
const fuzzPolicies = `
policies:
  - name: by-claims
    effect: allow
    workloads:
      - kubernetes: {namespace: payments, pod_name: "api-*"}
      - github: {repository: "acme/*", repository_owner_id: "1234"}
      - all: [{spiffe: {trust_domain: example.org}}, {unix: {uid: 1001}}]
    credentials: ["orders-*", stripe-live]
    when: 'request.method in ["GET", "POST"] && request.path.startsWith("/v1/") && (identity.claims.namespace == "payments" || identity.claims.repository.endsWith("/payments"))'
    ttl: 10m
  - name: by-peer
    effect: allow
    workloads: [{unix: {exe: "/usr/bin/*"}}]
    credentials: ["*"]
    when: 'has(identity.peer) ? identity.peer.claims.uid >= 1000 : identity.claims.uid < 100'
  - name: no-night
    effect: deny
    workloads: [{unix: {gid: 0}}, {kubernetes: {namespace: kube-system}}]
    credentials: ["*"]
    when: 'now.getHours() < 6 || request.host.matches("^[0-9.]+$") || size(identity.claims) > 20'
  - name: block-evil
    effect: deny
    workloads: [{aws: {role_arn: "arn:aws:iam::*:role/*"}}]
    credentials: ["*"]
    when: 'identity.claims.account.startsWith("6") && identity.claims.role_name != request.credential'
`

// FuzzEvaluate checks that arbitrary claim values and request strings never
// panic and always get the same decision.
func FuzzEvaluate(f *testing.F) {
	f.Add("kubernetes", "payments", "api-1", int64(1001), 1001.0, "GET", "/v1/x", "api.example.com", "orders-db", int64(0))
	f.Add("unix", "x", "/usr/bin/x", int64(0), 0.5, "POST", "/", "10.0.0.1", "stripe-live", int64(3600))
	f.Add("github", "acme/payments", "1234", int64(-1), -1e300, "", "", "", "", int64(-1))
	f.Add("aws", "arn:aws:iam::6:role/x", "6", int64(1<<62), 1e308, "DELETE", "/v1/\x00", "\xff", "*", int64(1<<40))
	f.Add("spiffe", "example.org", "spiffe://example.org/x", int64(1001), 3.0, "GET", "/v1/", "h", "orders-", int64(86399))
	for _, tc := range conditionCases {
		f.Add(tc.in.Identity.Method, tc.in.Request.Path, tc.in.Identity.Subject, int64(1001), 1.5, tc.in.Request.Method, tc.in.Request.Path, tc.in.Request.Host, tc.in.Request.Credential, int64(0))
	}
	s, err := Compile([]File{{Name: "fuzz.yaml", Data: []byte(fuzzPolicies)}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, str1, str2 string, num int64, float float64, reqMethod, path, host, cred string, secs int64) {
		claims := map[string]any{
			"namespace": str1, "pod_name": str2, "repository": str1, "repository_owner_id": str2,
			"trust_domain": str1, "uid": num, "gid": float, "exe": str2, "account": str2,
			"role_name": str1, "list": []any{str1, num, float, true}, "nested": map[string]any{"k": str2},
		}
		id := attest.Identity{Method: method, Subject: str2, Claims: claims}
		if num%2 == 0 {
			peer := attest.Identity{Method: attest.MethodUnix, Subject: str1, Claims: map[string]any{"uid": num, "exe": str2, "gid": int64(0)}}
			id.Peer = &peer
		}
		in := Input{
			Identity: id,
			Request:  Request{Channel: "http", Credential: cred, Method: reqMethod, Path: path, Host: host},
			Now:      testNow.Add(time.Duration(secs%(1<<40)) * time.Second),
		}
		d1 := s.Evaluate(in)
		d2 := s.Evaluate(in)
		ex := s.Explain(in)
		if d1 != d2 || d1 != ex.Decision {
			t.Fatalf("nondeterministic: %+v, %+v, %+v", d1, d2, ex.Decision)
		}
		if d1.Effect != Allow && d1.Effect != Deny || d1.Reason == "" || d1.Version == "" {
			t.Fatalf("bad decision %+v", d1)
		}
		if d1.Effect == Allow && d1.Policy == "" {
			t.Fatalf("allow without a policy: %+v", d1)
		}
	})
}

// FuzzCondition checks that arbitrary expressions compile or are rejected
// cleanly, and that evaluation stays within CostLimit.
func FuzzCondition(f *testing.F) {
	for _, tc := range conditionCases {
		f.Add(tc.when, tc.in.Request.Path)
	}
	f.Add(slow, "/")
	f.Add(`"a" + "b" == "ab"`, "")
	f.Add(`request.path.matches("(a+)+$")`, strings.Repeat("a", 64)+"!")
	f.Add(`[1, 2, 3].map(x, [x, x]).size() == 3`, "")
	f.Add(`request.path.size() > 1000000`, "")
	f.Add(`req.`, "")
	f.Add(`identity.claims.x.y.z == dyn(1)`, "")
	env, err := conditionEnv()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, expr, path string) {
		if len(expr) > 2*MaxConditionLength {
			return
		}
		c, issues := compileCondition(env, expr)
		if c == nil {
			if len(issues) == 0 {
				t.Fatalf("rejected without a problem")
			}
			for _, is := range issues {
				if is.line < 1 || is.message == "" {
					t.Fatalf("bad issue %+v", is)
				}
			}
			return
		}
		in := Input{Identity: idK8sWithPeer, Request: Request{Channel: "http", Credential: "x", Method: "GET", Path: path}, Now: testNow}
		act := func() *activation { a := newActivation().(*activation); a.in = in; return a }
		out, det, err := c.prg.Eval(act())
		if err != nil {
			return // an evaluation error: the policy fails closed
		}
		if cost := det.ActualCost(); cost == nil || *cost > CostLimit {
			t.Fatalf("cost %v beyond the limit, result %v", cost, out)
		}
		ok1, err1 := c.eval(context.Background(), act())
		ok2, err2 := c.eval(context.Background(), act())
		if ok1 != ok2 || (err1 == nil) != (err2 == nil) {
			t.Fatalf("nondeterministic: %v %v, %v %v", ok1, err1, ok2, err2)
		}
	})
}
