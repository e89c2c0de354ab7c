package policies

import (
	"fmt"
	"os"
	"path"
	"testing"

	"github.com/credbroker/credbroker/attest"
)

// Identities of every method, as their attestors build them. Only unix has
// an attestor today; the others stand in for the kubernetes, spiffe,
// github and aws attestors that come later.
var (
	idUnix        = unixID(1001, 1001, "/usr/bin/payments")
	idK8s         = k8sID("payments", "payment-processor", "api-7d9f")
	idK8sWithPeer = func() attest.Identity {
		id := k8sID("payments", "payment-processor", "api-7d9f")
		peer := unixID(1001, 1001, "/usr/bin/payments")
		id.Peer = &peer
		return id
	}()
	idSPIFFE = attest.Identity{
		Method:  attest.MethodSPIFFE,
		Subject: "spiffe://prod.example.org/ns/payments/sa/api",
		Claims:  map[string]any{"trust_domain": "prod.example.org", "path": "/ns/payments/sa/api"},
	}
	idGitHub = attest.Identity{
		Method:  attest.MethodGitHub,
		Subject: "repo:acme/payments:environment:prod",
		Claims: map[string]any{
			"repository": "acme/payments", "repository_id": "1", "repository_owner": "acme",
			"repository_owner_id": "1234", "ref": "refs/heads/main", "environment": "prod",
			"workflow_ref":     "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
			"job_workflow_ref": "acme/ci/.github/workflows/release.yml@refs/tags/v1",
			"event_name":       "push", "run_id": "42",
		},
	}
	idAWS = attest.Identity{
		Method:  attest.MethodAWS,
		Subject: "arn:aws:iam::123456789012:role/payments-api",
		Claims: map[string]any{
			"account": "123456789012", "role_name": "payments-api",
			"session_name": "i-0abc", "principal_id": "AROAEXAMPLE:i-0abc",
		},
	}
)

// selectorCases pair one workload entry with an identity.
var selectorCases = []struct {
	name     string
	workload string
	id       attest.Identity
	want     bool
}{
	// unix
	{"unix uid", `unix: {uid: 1001}`, idUnix, true},
	{"unix uid differs", `unix: {uid: 1000}`, idUnix, false},
	{"unix uid and gid", `unix: {uid: 1001, gid: 1001}`, idUnix, true},
	{"unix gid differs", `unix: {uid: 1001, gid: 0}`, idUnix, false},
	{"unix exe glob", `unix: {exe: "/usr/bin/*"}`, idUnix, true},
	{"unix exe glob does not cross /", `unix: {exe: "/usr/*"}`, idUnix, false},
	{"unix exe exact", `unix: {exe: /usr/bin/payments}`, idUnix, true},
	{"unix exe class", `unix: {exe: "/usr/bin/[op]ayments"}`, idUnix, true},
	{"unix exe_sha256", `unix: {exe_sha256: 9f2c7d1e5b3a4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d}`, idUnix, true},
	{"unix exe_sha256 upper case", `unix: {exe_sha256: 9F2C7D1E5B3A4C6D8E0F1A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D7E8F9A0B1C2D}`, idUnix, true},
	{"unix exe_sha256 differs", `unix: {exe_sha256: 0000000000000000000000000000000000000000000000000000000000000000}`, idUnix, false},
	{"unix pod_uid absent", `unix: {pod_uid: 0b9f5c8e-1111-2222-3333-444455556666}`, idUnix, false},
	{"unix against kubernetes identity without peer", `unix: {uid: 1001}`, idK8s, false},
	{"unix against peer of kubernetes identity", `unix: {uid: 1001, exe: "/usr/bin/*"}`, idK8sWithPeer, true},
	{"unix against peer, uid differs", `unix: {uid: 0}`, idK8sWithPeer, false},
	{"unix uid claim as float64 (JSON round trip)", `unix: {uid: 1001}`, attest.Identity{Method: "unix", Claims: map[string]any{"uid": float64(1001)}}, true},
	{"unix uid claim as string never matches", `unix: {uid: 1001}`, attest.Identity{Method: "unix", Claims: map[string]any{"uid": "1001"}}, false},
	{"unix uid claim fractional", `unix: {uid: 1001}`, attest.Identity{Method: "unix", Claims: map[string]any{"uid": 1001.5}}, false},

	// kubernetes
	{"kubernetes namespace", `kubernetes: {namespace: payments}`, idK8s, true},
	{"kubernetes namespace and service account", `kubernetes: {namespace: payments, service_account: payment-processor}`, idK8s, true},
	{"kubernetes service account differs", `kubernetes: {namespace: payments, service_account: default}`, idK8s, false},
	{"kubernetes pod_name glob", `kubernetes: {pod_name: "api-*"}`, idK8s, true},
	{"kubernetes pod_name glob differs", `kubernetes: {pod_name: "worker-*"}`, idK8s, false},
	{"kubernetes pod_uid", `kubernetes: {pod_uid: 0b9f5c8e-1111-2222-3333-444455556666}`, idK8s, true},
	{"kubernetes namespace is case-sensitive", `kubernetes: {namespace: Payments}`, idK8s, false},
	{"kubernetes against unix identity", `kubernetes: {namespace: payments}`, idUnix, false},
	{"kubernetes against unix peer is not matched", `kubernetes: {namespace: payments}`, *idK8sWithPeer.Peer, false},

	// spiffe
	{"spiffe id glob", `spiffe: {id: "spiffe://prod.example.org/ns/payments/sa/*"}`, idSPIFFE, true},
	{"spiffe id exact", `spiffe: {id: "spiffe://prod.example.org/ns/payments/sa/api"}`, idSPIFFE, true},
	{"spiffe id other namespace", `spiffe: {id: "spiffe://prod.example.org/ns/orders/sa/*"}`, idSPIFFE, false},
	{"spiffe trust domain", `spiffe: {trust_domain: prod.example.org}`, idSPIFFE, true},
	{"spiffe trust domain differs", `spiffe: {trust_domain: example.org}`, idSPIFFE, false},
	{"spiffe against kubernetes", `spiffe: {id: "spiffe://*"}`, idK8s, false},

	// github
	{"github repository", `github: {repository: acme/payments}`, idGitHub, true},
	{"github repository glob", `github: {repository: "acme/*"}`, idGitHub, true},
	{"github repository glob differs", `github: {repository: "other/*"}`, idGitHub, false},
	{"github every key", `github: {repository: acme/payments, repository_id: "1", repository_owner: acme, repository_owner_id: 1234, ref: refs/heads/main, environment: prod, workflow_ref: "acme/payments/.github/workflows/deploy.yml@refs/heads/main", job_workflow_ref: "acme/ci/.github/workflows/release.yml@refs/tags/v1", event_name: push}`, idGitHub, true},
	{"github ref differs", `github: {repository: acme/payments, ref: refs/heads/dev}`, idGitHub, false},
	{"github environment absent", `github: {repository: acme/payments, environment: prod}`, attest.Identity{Method: "github", Claims: map[string]any{"repository": "acme/payments"}}, false},
	{"github numeric id claim", `github: {repository_owner_id: "1234"}`, attest.Identity{Method: "github", Claims: map[string]any{"repository_owner_id": float64(1234)}}, true},
	{"github numeric id claim differs", `github: {repository_owner_id: "1234"}`, attest.Identity{Method: "github", Claims: map[string]any{"repository_owner_id": int64(12345)}}, false},

	// aws
	{"aws role_arn glob", `aws: {role_arn: "arn:aws:iam::123456789012:role/payments-*"}`, idAWS, true},
	{"aws role_arn glob differs", `aws: {role_arn: "arn:aws:iam::123456789012:role/orders-*"}`, idAWS, false},
	{"aws account", `aws: {account: "123456789012"}`, idAWS, true},
	{"aws account unquoted", `aws: {account: 123456789012}`, idAWS, true},
	{"aws account differs", `aws: {account: "210987654321"}`, idAWS, false},
	{"aws role_name", `aws: {role_name: payments-api, account: "123456789012"}`, idAWS, true},

	// all
	{"all token and process", `all: [{kubernetes: {namespace: payments}}, {unix: {exe_sha256: 9f2c7d1e5b3a4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d}}]`, idK8sWithPeer, true},
	{"all without peer", `all: [{kubernetes: {namespace: payments}}, {unix: {uid: 1001}}]`, idK8s, false},
	{"all one differs", `all: [{kubernetes: {namespace: payments}}, {unix: {uid: 0}}]`, idK8sWithPeer, false},
	{"all nested", `all: [{all: [{kubernetes: {namespace: payments}}]}, {unix: {gid: 1001}}]`, idK8sWithPeer, true},
	{"all of two methods never both", `all: [{kubernetes: {namespace: payments}}, {spiffe: {trust_domain: prod.example.org}}]`, idK8s, false},

	// self: the uid and gid of the process compiling the policies
	{"uid self", `unix: {uid: self}`, attest.Identity{Method: "unix", Claims: map[string]any{"uid": int64(os.Getuid())}}, true},
	{"uid self differs", `unix: {uid: self}`, attest.Identity{Method: "unix", Claims: map[string]any{"uid": int64(os.Getuid() + 1)}}, false},
	{"gid self", `unix: {gid: self}`, attest.Identity{Method: "unix", Claims: map[string]any{"gid": int64(os.Getgid())}}, true},

	// unattested
	{"empty identity", `unix: {uid: 0}`, attest.Identity{}, false},
}

func TestSelectors(t *testing.T) {
	for _, tc := range selectorCases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustCompile(t, fmt.Sprintf("policies:\n  - name: p\n    effect: allow\n    workloads:\n      - %s\n    credentials: [x]\n", tc.workload))
			d := s.Evaluate(input(tc.id, "x"))
			if got := d.Effect == Allow; got != tc.want {
				t.Errorf("matched = %v, want %v (%s)", got, tc.want, d.Reason)
			}
			ex := s.Explain(input(tc.id, "x"))
			if ex.Decision != d {
				t.Errorf("Explain decision %+v, Evaluate %+v", ex.Decision, d)
			}
			if ex.Trace[0].Matched != tc.want {
				t.Errorf("trace matched = %v: %s", ex.Trace[0].Matched, ex.Trace[0].Why)
			}
		})
	}
}

func TestWorkloadsAnyOf(t *testing.T) {
	s := mustCompile(t, `
		policies:
		  - name: payments
		    effect: allow
		    workloads:
		      - kubernetes: {namespace: payments}
		      - spiffe: {id: "spiffe://prod.example.org/ns/payments/*/*"}
		      - unix: {uid: 1001}
		    credentials: [stripe-live]
	`)
	for _, id := range []attest.Identity{idK8s, idSPIFFE, idUnix, idK8sWithPeer} {
		if d := s.Evaluate(input(id, "stripe-live")); d.Effect != Allow {
			t.Errorf("%s: %s", id.Subject, d.Reason)
		}
	}
	for _, id := range []attest.Identity{idGitHub, idAWS, unixID(0, 0, "/bin/sh")} {
		if d := s.Evaluate(input(id, "stripe-live")); d.Effect != Deny {
			t.Errorf("%s: allowed", id.Subject)
		}
	}
}

func TestCredentialGlobs(t *testing.T) {
	s := mustCompile(t, `
		policies:
		  - name: p
		    effect: allow
		    workloads: [{unix: {uid: 1001}}]
		    credentials: [stripe-live, "orders-*", "db-[ab]"]
	`)
	for cred, want := range map[string]bool{
		"stripe-live": true, "stripe-test": false, "orders-db": true, "orders-": true,
		"orders": false, "db-a": true, "db-c": false, "": false, "orders-x/y": false,
	} {
		if got := s.Evaluate(input(idUnix, cred)).Effect == Allow; got != want {
			t.Errorf("credential %q: allowed = %v, want %v", cred, got, want)
		}
	}
}

func TestPatternsAgreeWithPathMatch(t *testing.T) {
	pats := []string{"*", "a*", "*a", "orders-*", "*-db", "a/*", "*/a", "a*b", "[ab]*", "a?", `\*`, "", "a"}
	names := []string{"", "a", "b", "ab", "a/b", "b/a", "orders-db", "orders-", "orders-x/y", "x-db", "a/x-db", "*", "aab", "ba"}
	for _, p := range pats {
		pat, err := newPattern(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			want, _ := path.Match(p, n)
			if got := pat.match(n); got != want {
				t.Errorf("pattern %q on %q: %v, path.Match %v", p, n, got, want)
			}
		}
	}
}
