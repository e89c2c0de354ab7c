package policies

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// conditionCases are `when` expressions evaluated for an allow policy whose
// workload and credential match. errs marks conditions that fail to
// evaluate. The fuzz targets are seeded from them.
var conditionCases = []struct {
	name string
	when string
	in   Input
	want bool
	errs bool
}{
	{"request method and path", `request.method == "POST" && request.path.startsWith("/v1/charges")`,
		Input{Identity: idK8s, Request: Request{Channel: "http", Credential: "x", Method: "POST", Path: "/v1/charges/ch_1", Host: "api.stripe.com"}}, true, false},
	{"request method differs", `request.method == "POST" && request.path.startsWith("/v1/charges")`,
		Input{Identity: idK8s, Request: Request{Channel: "http", Credential: "x", Method: "GET", Path: "/v1/charges"}}, false, false},
	{"request host and channel", `request.channel == "http" && request.host.endsWith(".stripe.com")`,
		Input{Identity: idK8s, Request: Request{Channel: "http", Credential: "x", Host: "api.stripe.com"}}, true, false},
	{"request credential", `request.credential == "x"`, input(idK8s, "x"), true, false},
	{"regexp on path", `request.path.matches("^/v1/(charges|refunds)$")`,
		Input{Identity: idK8s, Request: Request{Credential: "x", Path: "/v1/refunds"}}, true, false},
	{"claim string", `identity.claims.namespace == "payments"`, input(idK8s, "x"), true, false},
	{"claim list", `"credbroker" in identity.claims.audience`, input(idK8s, "x"), true, false},
	{"claim int64", `identity.claims.uid == 1001 && identity.claims.gid < 2000`, input(idUnix, "x"), true, false},
	{"claim float64 compares with int", `identity.claims.uid >= 1000`, input(attest.Identity{Method: "unix", Claims: map[string]any{"uid": float64(1001)}}, "x"), true, false},
	{"subject and method", `identity.method == "kubernetes" && identity.subject.startsWith("system:serviceaccount:payments:")`, input(idK8s, "x"), true, false},
	{"has claim", `has(identity.claims.environment) && identity.claims.environment == "prod"`, input(idGitHub, "x"), true, false},
	{"has claim absent", `has(identity.claims.environment)`, input(idK8s, "x"), false, false},
	{"peer present", `has(identity.peer) && identity.peer.claims.uid == 1001`, input(idK8sWithPeer, "x"), true, false},
	{"peer absent", `has(identity.peer)`, input(idK8s, "x"), false, false},
	{"now before", `now < timestamp("2027-01-01T00:00:00Z")`, input(idK8s, "x"), true, false},
	{"now after", `now > timestamp("2027-01-01T00:00:00Z")`, input(idK8s, "x"), false, false},
	{"office hours", `now.getHours("Europe/London") >= 9 && now.getHours("Europe/London") < 17`, input(idK8s, "x"), true, false},
	{"weekday", `now.getDayOfWeek() != 0`, input(idK8s, "x"), true, false},
	{"missing claim errors", `identity.claims.nope == "x"`, input(idK8s, "x"), false, true},
	{"missing peer errors", `identity.peer.claims.uid == 1001`, input(idK8s, "x"), false, true},
	{"division by zero errors", `1 / (size(request.path) - size(request.path)) == 1`, input(idK8s, "x"), false, true},
	{"claim of wrong type errors", `identity.claims.namespace + 1 == 2`, input(idK8s, "x"), false, true},
	{"cost limit", expensive, input(idK8s, "x"), false, true},
}

// expensive is a condition whose cost exceeds CostLimit at run time.
var expensive = func() string {
	nums := make([]string, 100)
	for i := range nums {
		nums[i] = fmt.Sprint(i)
	}
	l := "[" + strings.Join(nums, ",") + "]"
	return fmt.Sprintf(`%s.all(a, %s.all(b, %s.all(c, request.path + request.path != "x")))`, l, l, l)
}()

// slow is a condition under the cost limit that takes many comprehension
// iterations, for interrupting.
var slow = func() string {
	nums := make([]string, 100)
	for i := range nums {
		nums[i] = fmt.Sprint(i)
	}
	l := "[" + strings.Join(nums, ",") + "]"
	return fmt.Sprintf(`%s.all(a, %s.all(b, a >= 0))`, l, l)
}()

func conditionPolicy(effect Effect, when string) string {
	return fmt.Sprintf("policies:\n  - name: cond\n    effect: %s\n    workloads: [{unix: {uid: 1001}}, {kubernetes: {namespace: payments}}, {github: {repository: acme/payments}}]\n    credentials: [x]\n    when: %q\n", effect, when)
}

func TestConditions(t *testing.T) {
	for _, tc := range conditionCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in.Now.IsZero() {
				tc.in.Now = testNow
			}
			for _, effect := range []Effect{Allow, Deny} {
				s := mustCompile(t, conditionPolicy(effect, tc.when))
				d := s.Evaluate(tc.in)
				// An erroring allow does not match; an erroring deny does.
				want := tc.want || (tc.errs && effect == Deny)
				if got := d.Policy == "cond"; got != want {
					t.Errorf("%s: matched = %v, want %v (%s)", effect, got, want, d.Reason)
				}
				if tc.errs && effect == Deny && !strings.Contains(d.Reason, "condition failed to evaluate, so the deny applies: ") {
					t.Errorf("deny reason %q does not name the error", d.Reason)
				}
				if ex := s.Explain(tc.in); ex.Decision != d {
					t.Errorf("Explain decision %+v, Evaluate %+v", ex.Decision, d)
				}
			}
		})
	}
}

func TestConditionErrorReasons(t *testing.T) {
	s := mustCompile(t, conditionPolicy(Deny, `identity.claims.nope == "x"`))
	d := s.Evaluate(input(idK8s, "x"))
	if want := "denied by policy cond: condition failed to evaluate, so the deny applies: no such key: nope"; d.Reason != want {
		t.Errorf("reason = %q, want %q", d.Reason, want)
	}
	s = mustCompile(t, conditionPolicy(Deny, expensive))
	d = s.Evaluate(input(idK8s, "x"))
	if d.Effect != Deny || !strings.Contains(d.Reason, "cost limit exceeded") {
		t.Errorf("cost limit: %+v", d)
	}
}

func TestConditionInterrupt(t *testing.T) {
	s := mustCompile(t, conditionPolicy(Allow, slow))
	if d := s.Evaluate(input(idK8s, "x")); d.Effect != Allow {
		t.Fatalf("slow condition under the cost limit: %+v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d := s.EvaluateContext(ctx, input(idK8s, "x")); d.Effect != Deny {
		t.Errorf("allow with interrupted condition: %+v", d)
	}
	s = mustCompile(t, conditionPolicy(Deny, "!("+slow+")"))
	d := s.EvaluateContext(ctx, input(idK8s, "x"))
	if d.Effect != Deny || d.Policy != "cond" || !strings.Contains(d.Reason, "context canceled") {
		t.Errorf("deny with interrupted condition: %+v", d)
	}
	if ex := s.ExplainContext(ctx, input(idK8s, "x")); ex.Decision != d {
		t.Errorf("ExplainContext = %+v, want %+v", ex.Decision, d)
	}
	if d := s.EvaluateContext(context.Background(), input(idK8s, "x")); d.Policy != "" {
		t.Errorf("deny with false condition matched: %+v", d)
	}
}

func TestConditionZeroNow(t *testing.T) {
	s := mustCompile(t, conditionPolicy(Allow, `now > timestamp("2025-01-01T00:00:00Z")`))
	in := input(idK8s, "x")
	in.Now = time.Time{}
	if d := s.Evaluate(in); d.Effect != Allow {
		t.Errorf("zero Now is not the current time: %+v", d)
	}
}

func TestConditionSharedAcrossPolicies(t *testing.T) {
	// The same expression in several policies compiles once and each
	// evaluation sees its own input.
	var b strings.Builder
	b.WriteString("policies:\n")
	for i := range 3 {
		fmt.Fprintf(&b, "  - {name: p%d, effect: allow, workloads: [{unix: {uid: %d}}], credentials: [x], when: 'identity.claims.uid == %d && request.method == \"GET\"'}\n", i, 1000+i, 1000+i)
	}
	s := mustCompile(t, b.String())
	for i := range 3 {
		in := input(unixID(int64(1000+i), 0, "/bin/x"), "x")
		in.Request.Method = "GET"
		if d := s.Evaluate(in); d.Policy != fmt.Sprintf("p%d", i) {
			t.Errorf("uid %d: %+v", 1000+i, d)
		}
	}
}

func TestInputDocument(t *testing.T) {
	in := Input{Identity: idK8sWithPeer, Request: Request{Channel: "http", Credential: "x", Method: "GET", Path: "/", Host: "h"}, Now: testNow}
	var s *Set
	doc := s.Input(in)
	got, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"identity":{"claims":{"audience":["credbroker"],"namespace":"payments","pod_name":"api-7d9f","pod_uid":"0b9f5c8e-1111-2222-3333-444455556666","service_account":"payment-processor"},"method":"kubernetes","peer":{"claims":{"exe":"/usr/bin/payments","exe_sha256":"9f2c7d1e5b3a4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d","gid":1001,"pid":4242,"uid":1001},"method":"unix","subject":"unix:uid:1001"},"subject":"system:serviceaccount:payments:payment-processor"},"now":"2026-03-14T15:09:26Z","request":{"channel":"http","credential":"x","host":"h","method":"GET","path":"/"}}`
	if string(got) != want {
		t.Errorf("input document:\n%s\nwant:\n%s", got, want)
	}
}

// Database listeners' request fields are visible to conditions and
// recorded only where set.
func TestDatabaseRequestFields(t *testing.T) {
	s := mustCompile(t, `policies:
  - {name: orders-only, effect: allow, workloads: [{unix: {uid: 1000}}], credentials: [x], when: 'request.database == "orders" && request.user != "postgres"'}
`)
	in := input(unixID(1000, 0, "/bin/x"), "x")
	in.Request.Channel = "postgres"
	for _, tc := range []struct {
		database, user, policy string
	}{
		{"orders", "app", "orders-only"},
		{"orders", "postgres", ""},
		{"billing", "app", ""},
	} {
		in.Request.Database, in.Request.User = tc.database, tc.user
		if d := s.Evaluate(in); d.Policy != tc.policy {
			t.Errorf("database %q user %q: %+v, want policy %q", tc.database, tc.user, d, tc.policy)
		}
	}
	doc := s.Input(in)["request"].(map[string]string)
	if doc["database"] != "billing" || doc["user"] != "app" {
		t.Errorf("recorded request %v", doc)
	}
}
