package policies

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// problemCases are invalid documents and the exact problems Compile reports.
// The fuzz target FuzzCompile is seeded from them.
var problemCases = []struct {
	name  string
	files []File
	want  []string
}{
	{
		name: "unknown key in policy",
		files: []File{{Name: "p.yaml", Data: []byte(`policies:
  - name: a
    effect: allow
    workload: [{unix: {uid: 1}}]
    workloads: [{unix: {uid: 1}}]
    credentials: [demo]
`)}},
		want: []string{`p.yaml:4: unknown key "workload" in policy`},
	},
	{
		name: "all problems at once",
		files: []File{{Name: "p.yaml", Data: []byte(`policies:
  - name: "bad name"
    effect: permit
    workloads: []
    credentials: "demo"
    ttl: soon
  - effect: deny
    workloads: [{unix: {uid: -1}}]
    credentials: ["[oops"]
    ttl: 5m
`)}},
		want: []string{
			`p.yaml:2: name "bad name" must be at most 128 letters, digits, '.', '_' or '-', starting with a letter or digit`,
			`p.yaml:3: effect must be "allow" or "deny", not "permit"`,
			`p.yaml:4: workloads must not be empty`,
			`p.yaml:5: credentials must be a list, not a string`,
			`p.yaml:6: ttl "soon" is not a duration such as 15m or 1h`,
			`p.yaml:7: missing required key "name" in policy`,
			`p.yaml:8: uid must be an integer from 0 to 4294967295 or "self", not "-1"`,
			`p.yaml:9: bad credential glob "[oops": syntax error in pattern`,
			`p.yaml:10: ttl applies only to allow policies`,
		},
	},
	{
		name: "duplicate names across files",
		files: []File{
			{Name: "a.yaml", Data: []byte("policies:\n  - {name: dup, effect: allow, workloads: [{unix: {uid: 1}}], credentials: [x]}\n")},
			{Name: "b.yaml", Data: []byte("policies:\n\n  - name: dup\n    effect: allow\n    workloads: [{unix: {uid: 2}}]\n    credentials: [x]\n")},
		},
		want: []string{`b.yaml:3: duplicate policy name "dup" (first defined at a.yaml:2)`},
	},
	{
		name: "problems sorted by file order then line",
		files: []File{
			{Name: "z.yaml", Data: []byte("policies:\n  - {name: a, effect: allow, workloads: [{unix: {uid: 1}}], credentials: [x], extra: 1}\n")},
			{Name: "a.yaml", Data: []byte("policies: {}\n")},
		},
		want: []string{
			`z.yaml:2: unknown key "extra" in policy`,
			`a.yaml:1: policies must be a list, not a mapping`,
		},
	},
	{
		name: "workload entries",
		files: []File{{Name: "w.yaml", Data: []byte(`policies:
  - name: w
    effect: allow
    workloads:
      - {}
      - unix: {uid: 1}
        kubernetes: {namespace: x}
      - k8s: {namespace: x}
      - kubernetes: {}
      - kubernetes: {namespace: x, ns: y}
      - spiffe: {id: "spiffe://td/[x"}
      - spiffe: {id: "example.org/x"}
      - aws: {role_arn: "role/x"}
      - unix: {exe: "bin/sh"}
      - unix: {exe_sha256: "9f2c"}
      - unix: {uid: "1000"}
      - github: {ref: "refs/heads/*"}
      - all: []
      - all: [{unix: {gid: 1}}, {github: {repository: 7}}]
      - kubernetes: [namespace]
      - "unix"
    credentials: [x]
`)}},
		want: []string{
			`w.yaml:5: workload entry has no method (want one of unix, kubernetes, spiffe, github, aws, all)`,
			`w.yaml:6: workload entry has 2 methods (unix, kubernetes); use one per entry, or all: to require several`,
			`w.yaml:8: unknown key "k8s" in workload entry (want one of unix, kubernetes, spiffe, github, aws, all)`,
			`w.yaml:9: empty kubernetes selector: name at least one of namespace, service_account, pod_name, pod_uid`,
			`w.yaml:10: unknown key "ns" in kubernetes selector (want namespace, service_account, pod_name, pod_uid)`,
			`w.yaml:11: bad glob "spiffe://td/[x" in id: syntax error in pattern`,
			`w.yaml:12: id "example.org/x" must start with "spiffe://"`,
			`w.yaml:13: role_arn "role/x" must start with "arn:"`,
			`w.yaml:14: exe "bin/sh" must start with "/"`,
			`w.yaml:15: exe_sha256 must be 64 hexadecimal digits, not "9f2c"`,
			`w.yaml:16: uid must be an integer from 0 to 4294967295 or "self", not "1000"`,
			`w.yaml:17: ref is matched exactly and cannot be a glob: "refs/heads/*"`,
			`w.yaml:18: all must not be empty`,
			`w.yaml:20: kubernetes selector must be a mapping, not a list`,
			`w.yaml:21: workload entry must be a mapping, not a string`,
		},
	},
	{
		name: "github selectors matching every repository",
		files: []File{{Name: "g.yaml", Data: []byte(`policies:
  - name: g
    effect: allow
    workloads:
      - github: {ref: refs/heads/main}
      - all: [{unix: {uid: 1}}, {github: {repository: "*/*"}}]
      - github: {repository: "*/*", repository_owner_id: 1234}
    credentials: [x]
`)}},
		want: []string{
			`g.yaml:5: github selector matches every repository: add repository_id or repository_owner_id, or an exact repository`,
			`g.yaml:6: github selector matches every repository (repository "*/*" constrains neither owner nor name): add repository_id or repository_owner_id, or an exact repository`,
		},
	},
	{
		name: "conditions",
		files: []File{{Name: "c.yaml", Data: []byte(`policies:
  - name: c1
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: 'req.method == "GET"'
  - name: c2
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: 'request.path'
  - name: c3
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: |
      request.method == "GET" &&
        request.methd == "POST"
  - name: c4
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: identity.claims.admin
  - name: c5
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: ""
  - name: c6
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: 'identity.peer.subjct == "x"'
  - name: c7
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: 'request.method == 1'
  - name: c8
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: 'request.path.matches("[")'
  - name: c9
    effect: allow
    workloads: [{unix: {uid: 1}}]
    credentials: [x]
    when: 'request.method == "GET" &&'
`)}},
		want: []string{
			`c.yaml:6: when: undeclared reference to 'req' (expression column 1)`,
			`c.yaml:11: when: must be a boolean expression, not string`,
			`c.yaml:18: when: request has no field "methd" (fields: channel, credential, database, host, method, path, user) (expression column 10)`,
			"c.yaml:23: when: must be a boolean expression, not dyn (compare explicitly, for example `... == true`)",
			`c.yaml:28: when must not be empty`,
			`c.yaml:33: when: identity.peer has no field "subjct" (fields: claims, method, peer, subject) (expression column 14)`,
			`c.yaml:38: when: found no matching overload for '_==_' applied to '(string, int)' (expression column 16)`,
			"c.yaml:43: when: error parsing regexp: missing closing ]: `[`",
			`c.yaml:48: when: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} (expression column 27)`,
		},
	},
	{
		name: "types and required keys",
		files: []File{{Name: "t.yaml", Data: []byte(`policies:
  - name: [a]
    effect: allow
    workloads: {unix: {uid: 1}}
    credentials: [demo, ""]
    when: [x]
    ttl: -5m
  - name: b
    name: c
    effect: Allow
    workloads: [{unix: {uid: 1}}]
    credentials: [demo]
    ttl: 0s
  - just a string
  - {}
`)}},
		want: []string{
			`t.yaml:2: name must be a string, not a list`,
			`t.yaml:4: workloads must be a list, not a mapping`,
			`t.yaml:5: credential name must not be empty`,
			`t.yaml:6: when must be a CEL expression string, not a list`,
			`t.yaml:7: ttl must be positive, not -5m`,
			`t.yaml:9: duplicate key "name" in policy`,
			`t.yaml:10: effect must be "allow" or "deny", not "Allow"`,
			`t.yaml:13: ttl must be positive, not 0s`,
			`t.yaml:14: policy must be a mapping, not a string`,
			`t.yaml:15: missing required key "name" in policy`,
			`t.yaml:15: missing required key "effect" in policy`,
			`t.yaml:15: missing required key "workloads" in policy`,
			`t.yaml:15: missing required key "credentials" in policy`,
		},
	},
	{
		name: "document shape",
		files: []File{
			{Name: "syntax.yaml", Data: []byte("policies:\n  - name: a\n    x: y: z\n")},
			{Name: "list.yaml", Data: []byte("- name: a\n")},
			{Name: "keys.yaml", Data: []byte("policy: []\n")},
			{Name: "multi.yaml", Data: []byte("policies: []\n---\nversion: 2\npolicies: []\n")},
		},
		want: []string{
			`syntax.yaml:3: invalid YAML: mapping values are not allowed in this context`,
			`list.yaml:1: policy document must be a mapping, not a list`,
			`keys.yaml:1: unknown key "policy" in policy document`,
			`keys.yaml:1: missing key "policies" in policy document`,
			`multi.yaml:3: unknown key "version" in policy document`,
		},
	},
}

func TestCompileProblems(t *testing.T) {
	for _, tc := range problemCases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compile(tc.files)
			if s != nil {
				t.Errorf("Compile returned a Set along with problems")
			}
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Compile error = %v (%T), want Problems", err, err)
			}
			got := make([]string, len(ps))
			for i, p := range ps {
				got[i] = p.Error()
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if err.Error() != strings.Join(tc.want, "\n") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestCompileValid(t *testing.T) {
	tests := []struct {
		name  string
		files []File
		len   int
	}{
		{"no files", nil, 0},
		{"empty file", []File{{Name: "e.yaml"}}, 0},
		{"comments only", []File{{Name: "e.yaml", Data: []byte("# nothing yet\n")}}, 0},
		{"empty list", []File{{Name: "e.yaml", Data: []byte("policies: []\n")}}, 0},
		{"null list", []File{{Name: "e.yaml", Data: []byte("policies:\n")}}, 0},
		{"several documents", []File{{Name: "m.yaml", Data: []byte(`
policies:
  - {name: a, effect: allow, workloads: [{unix: {uid: 1}}], credentials: [x]}
---
policies:
  - {name: b, effect: deny, workloads: [{unix: {uid: 2}}], credentials: ["*"]}
`)}}, 2},
		{"anchors and aliases", []File{{Name: "a.yaml", Data: []byte(`
policies:
  - name: a
    effect: allow
    workloads: &payments
      - kubernetes: {namespace: payments}
      - unix: {uid: 1001, exe: "/usr/bin/*"}
    credentials: &creds [stripe-live, "orders-*"]
  - name: b
    effect: deny
    workloads: *payments
    credentials: *creds
    when: request.channel == "http"
`)}}, 2},
		{"numbers as strings", []File{{Name: "n.yaml", Data: []byte(`
policies:
  - name: 42
    effect: allow
    workloads:
      - github: {repository_id: 123, repository_owner_id: 1234}
      - aws: {account: 123456789012, role_arn: "arn:aws:iam::123456789012:role/*"}
    credentials: [7]
    ttl: 1h30m
`)}}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compile(tc.files)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if s.Len() != tc.len {
				t.Errorf("Len() = %d, want %d", s.Len(), tc.len)
			}
			if len(s.Version()) != versionLen {
				t.Errorf("Version() = %q", s.Version())
			}
		})
	}
}

func TestCompileAliasBomb(t *testing.T) {
	doc := `
a: &a [{unix: {uid: 1}}, {unix: {uid: 1}}, {unix: {uid: 1}}, {unix: {uid: 1}}, {unix: {uid: 1}}, {unix: {uid: 1}}, {unix: {uid: 1}}, {unix: {uid: 1}}]
policies:
  - name: bomb
    effect: allow
    credentials: [x]
    workloads:
      - all: &b [{all: *a}, {all: *a}, {all: *a}, {all: *a}, {all: *a}, {all: *a}, {all: *a}, {all: *a}]
      - all: &c [{all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}]
      - all: &d [{all: *c}, {all: *c}, {all: *c}, {all: *c}, {all: *c}, {all: *c}, {all: *c}, {all: *c}]
      - all: &e [{all: *d}, {all: *d}, {all: *d}, {all: *d}, {all: *d}, {all: *d}, {all: *d}, {all: *d}]
      - all: &f [{all: *e}, {all: *e}, {all: *e}, {all: *e}, {all: *e}, {all: *e}, {all: *e}, {all: *e}]
      - all: &g [{all: *f}, {all: *f}, {all: *f}, {all: *f}, {all: *f}, {all: *f}, {all: *f}, {all: *f}]
`
	_, err := Compile([]File{{Name: "bomb.yaml", Data: []byte(doc)}})
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Compile error = %v, want Problems", err)
	}
	found := false
	for _, p := range ps {
		found = found || strings.Contains(p.Message, "document too large")
	}
	if !found {
		t.Errorf("problems do not mention the size limit:\n%v", err)
	}
}

func TestProblemFormat(t *testing.T) {
	if got := (Problem{File: "a.yaml", Line: 3, Message: "bad"}).Error(); got != "a.yaml:3: bad" {
		t.Errorf("Error() = %q", got)
	}
	if got := (Problem{File: "a.yaml", Message: "bad"}).Error(); got != "a.yaml: bad" {
		t.Errorf("Error() without line = %q", got)
	}
	var ps error = Problems{{File: "a", Line: 1, Message: "x"}, {File: "b", Line: 2, Message: "y"}}
	var p Problem
	if !errors.As(ps, &p) || p.File != "a" {
		t.Errorf("errors.As(Problems, *Problem) = %v", p)
	}
}
