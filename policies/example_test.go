package policies_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/policies"
)

func ExampleCompile() {
	_, err := policies.Compile([]policies.File{{Name: "policies/payments.yaml", Data: []byte(`
policies:
  - name: payments-can-charge
    effect: allow
    workload: [{kubernetes: {namespace: payments}}]
    credentials: [stripe-live]
    ttl: 15 minutes
`)}})
	var problems policies.Problems
	if errors.As(err, &problems) {
		for _, p := range problems {
			fmt.Println(p)
		}
	}
	// Output:
	// policies/payments.yaml:3: missing required key "workloads" in policy
	// policies/payments.yaml:5: unknown key "workload" in policy
	// policies/payments.yaml:7: ttl "15 minutes" is not a duration such as 15m or 1h
}

func ExampleSet_Evaluate() {
	set, err := policies.Compile([]policies.File{{Name: "payments.yaml", Data: []byte(`
policies:
  - name: payments-can-charge
    effect: allow
    workloads:
      - kubernetes: {namespace: payments, service_account: payment-processor}
    credentials: [stripe-live]
    when: 'request.method == "POST" && request.path.startsWith("/v1/charges")'
    ttl: 15m
  - name: nobody-on-weekends
    effect: deny
    workloads: [{kubernetes: {namespace: payments}}]
    credentials: ["*"]
    when: now.getDayOfWeek() == 0 || now.getDayOfWeek() == 6
`)}})
	if err != nil {
		fmt.Println(err)
		return
	}
	in := policies.Input{
		Identity: attest.Identity{
			Method:  attest.MethodKubernetes,
			Subject: "system:serviceaccount:payments:payment-processor",
			Claims:  map[string]any{"namespace": "payments", "service_account": "payment-processor"},
		},
		Request: policies.Request{Channel: "http", Credential: "stripe-live", Method: "POST", Path: "/v1/charges", Host: "api.stripe.com"},
		Now:     time.Date(2026, 3, 11, 10, 0, 0, 0, time.UTC), // a Wednesday
	}
	d := set.Evaluate(in)
	fmt.Println(d.Effect, d.Reason, d.TTL)

	in.Request.Method = "GET"
	fmt.Println(set.Evaluate(in).Reason)

	in.Now = time.Date(2026, 3, 14, 10, 0, 0, 0, time.UTC) // a Saturday
	in.Request.Method = "POST"
	fmt.Println(set.Evaluate(in).Reason)
	// Output:
	// allow allowed by policy payments-can-charge 15m0s
	// no policy allows system:serviceaccount:payments:payment-processor to read stripe-live
	// denied by policy nobody-on-weekends
}

func ExampleSet_Explain() {
	set, _ := policies.Compile([]policies.File{{Name: "demo.yaml", Data: []byte(`
policies:
  - name: ops-can-read-demo
    effect: allow
    workloads: [{unix: {uid: 1001}}, {unix: {gid: 10}}]
    credentials: [demo]
`)}})
	ex := set.Explain(policies.Input{
		Identity: attest.Identity{Method: attest.MethodUnix, Subject: "unix:uid:1000", Claims: map[string]any{"uid": int64(1000), "gid": int64(1000)}},
		Request:  policies.Request{Channel: "socket", Credential: "demo"},
	})
	fmt.Println(ex.Reason)
	for _, step := range ex.Trace {
		fmt.Printf("%s:%d %s matched=%v: %s\n", step.File, step.Line, step.Policy, step.Matched, step.Why)
	}
	// Output:
	// no policy allows unix:uid:1000 to read demo
	// demo.yaml:3 ops-can-read-demo matched=false: workload: no entry matches (line 5: unix: uid is 1000, want 1001; line 5: unix: gid is 1000, want 10); credential: "demo" matches "demo"; condition: none
}

func ExampleSet_Warnings() {
	set, err := policies.Compile([]policies.File{{Name: "deploy.yaml", Data: []byte(`
policies:
  - name: deploy
    effect: allow
    workloads:
      - github: {repository: "acme/*", ref: refs/heads/main}
      - github: {repository_owner_id: 1234, environment: prod}
    credentials: [deploy-key]
`)}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, w := range set.Warnings() {
		fmt.Println(w)
	}
	// Output:
	// deploy.yaml:6: github selector does not pin a repository: add repository_id or repository_owner_id, or an exact repository (repository names can be re-registered by someone else after a rename or deletion)
}

// A `**` segment matches every segment below; `*` stays within one.
func ExampleSet_Evaluate_doubleStar() {
	set, err := policies.Compile([]policies.File{{Name: "spiffe.yaml", Data: []byte(`
policies:
  - name: payments
    effect: allow
    workloads: [{spiffe: {id: "spiffe://prod.example.org/ns/payments/**"}}]
    credentials: [stripe-live]
`)}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, id := range []string{"spiffe://prod.example.org/ns/payments/sa/api", "spiffe://prod.example.org/ns/payments"} {
		d := set.Evaluate(policies.Input{
			Identity: attest.Identity{Method: attest.MethodSPIFFE, Subject: id},
			Request:  policies.Request{Channel: "socket", Credential: "stripe-live"},
		})
		fmt.Println(id, d.Effect)
	}
	// Output:
	// spiffe://prod.example.org/ns/payments/sa/api allow
	// spiffe://prod.example.org/ns/payments deny
}

// Compiling for a broker that runs as another user: `uid: self` is that
// user's uid, and the version covers it.
func ExampleCompileOptions_Compile() {
	files := []policies.File{{Name: "self.yaml", Data: []byte(`
policies:
  - name: broker-user-reads-demo
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [demo]
`)}}
	a, _ := policies.CompileOptions{Self: &policies.Self{UID: 1000, GID: 1000}}.Compile(files)
	b, _ := policies.CompileOptions{Self: &policies.Self{UID: 1001, GID: 1001}}.Compile(files)
	fmt.Println("same version:", a.Version() == b.Version())
	in := policies.Input{
		Identity: attest.Identity{Method: attest.MethodUnix, Subject: "unix:uid:1000", Claims: map[string]any{"uid": int64(1000)}},
		Request:  policies.Request{Channel: "socket", Credential: "demo"},
	}
	fmt.Println(a.Evaluate(in).Effect, b.Evaluate(in).Effect)
	// Output:
	// same version: false
	// allow deny
}
