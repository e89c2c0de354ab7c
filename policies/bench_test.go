package policies

import (
	"fmt"
	"strings"
	"testing"
)

// benchPolicies is 20 policies: 17 for other workloads, a deny with a
// condition that is evaluated and false, an allow with a condition that
// decides, and a catch-all allow behind it.
func benchPolicies(tb testing.TB) *Set {
	var b strings.Builder
	b.WriteString("policies:\n")
	for i := range 17 {
		fmt.Fprintf(&b, `  - name: team-%d
    effect: allow
    workloads:
      - kubernetes: {namespace: team-%d, service_account: api}
      - unix: {uid: %d, exe: "/opt/team-%d/*"}
    credentials: [team-%d-db, "team-%d-*"]
    when: 'request.method == "GET"'
    ttl: 1h
`, i, i, 2000+i, i, i, i)
	}
	b.WriteString(`  - name: no-writes-at-night
    effect: deny
    workloads: [{kubernetes: {namespace: payments}}]
    credentials: ["*"]
    when: 'now.getHours() < 6 && request.method != "GET"'
  - name: payments-can-charge
    effect: allow
    workloads:
      - kubernetes: {namespace: payments, service_account: payment-processor, pod_name: "api-*"}
      - all: [{kubernetes: {namespace: payments}}, {unix: {exe: "/usr/bin/*"}}]
    credentials: [stripe-live, "orders-*"]
    when: 'request.method == "POST" && request.path.startsWith("/v1/charges") && identity.claims.namespace == "payments"'
    ttl: 15m
  - name: payments-read
    effect: allow
    workloads: [{kubernetes: {namespace: payments}}]
    credentials: ["*"]
`)
	s, err := Compile([]File{{Name: "bench.yaml", Data: []byte(b.String())}})
	if err != nil {
		tb.Fatal(err)
	}
	if s.Len() != 20 {
		tb.Fatalf("%d policies", s.Len())
	}
	return s
}

func BenchmarkEvaluate(b *testing.B) {
	s := benchPolicies(b)
	charge := Input{Identity: idK8s, Request: Request{Channel: "http", Credential: "stripe-live", Method: "POST", Path: "/v1/charges", Host: "api.stripe.com"}, Now: testNow}
	other := charge
	other.Identity = unixID(1000, 1000, "/bin/sh")
	team := Input{Identity: unixID(2005, 0, "/opt/team-5/api"), Request: Request{Channel: "socket", Credential: "team-5-db", Method: "GET"}, Now: testNow}
	for _, bc := range []struct {
		name   string
		in     Input
		policy string
	}{
		{"cel-allow", charge, "payments-can-charge"},
		{"one-cel", team, "team-5"},
		{"default-deny", other, ""},
	} {
		if d := s.Evaluate(bc.in); d.Policy != bc.policy {
			b.Fatalf("%s: %+v", bc.name, d)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Evaluate(bc.in)
			}
		})
	}
	b.Run("cel-allow-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Evaluate(charge)
			}
		})
	})
}

func BenchmarkExplain(b *testing.B) {
	s := benchPolicies(b)
	in := Input{Identity: idK8s, Request: Request{Channel: "http", Credential: "stripe-live", Method: "POST", Path: "/v1/charges"}, Now: testNow}
	b.ReportAllocs()
	for b.Loop() {
		s.Explain(in)
	}
}

func BenchmarkCompile(b *testing.B) {
	var b2 strings.Builder
	b2.WriteString("policies:\n")
	for i := range 20 {
		fmt.Fprintf(&b2, "  - {name: p%d, effect: allow, workloads: [{kubernetes: {namespace: n%d}}], credentials: [c%d], when: 'request.method == \"GET\" && identity.claims.namespace == \"n%d\"'}\n", i, i, i, i)
	}
	files := []File{{Name: "p.yaml", Data: []byte(b2.String())}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(files); err != nil {
			b.Fatal(err)
		}
	}
}
