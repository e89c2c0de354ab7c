package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckGitHubRepositoryPinning runs `credbroker check` on github
// selectors: one that pins no repository is a warning that leaves the exit
// code 0; one that matches every repository, even inside all:, is a problem.
func TestCheckGitHubRepositoryPinning(t *testing.T) {
	const (
		unpinned = "github selector does not pin a repository: add repository_id or repository_owner_id, or an exact repository (repository names can be re-registered by someone else after a rename or deletion)"
		every    = "github selector matches every repository: add repository_id or repository_owner_id, or an exact repository"
	)
	tests := []struct {
		name     string
		policies string
		code     int
		want     []string // lines of stdout, with "POL" for the policy file's path
		not      []string
	}{
		{
			name: "pinned",
			policies: `policies:
  - name: deploy
    effect: allow
    workloads:
      - github: {repository_id: 123, ref: refs/heads/main}
      - github: {repository: acme/payments}
    credentials: [demo]
`,
			code: 0,
			want: []string{"ok: 1 credentials, 1 policies"},
			not:  []string{"warning:"},
		},
		{
			name: "warning",
			policies: `policies:
  - name: deploy
    effect: allow
    workloads:
      - unix: {uid: 0}
      - all:
          - unix: {uid: 1}
          - github: {repository: "acme/*"}
      - github:
          repository_owner: acme
    credentials: [demo]
`,
			code: 0,
			want: []string{
				"POL:8: warning: " + unpinned,
				"POL:9: warning: " + unpinned,
				"ok: 1 credentials, 1 policies",
			},
		},
		{
			name: "refusal",
			policies: `policies:
  - name: deploy
    effect: allow
    workloads:
      - github: {repository: "acme/*"}
      - all: [{unix: {uid: 1}}, {github: {ref: refs/heads/main}}]
      - github:
          environment: prod
          repository: "*/*"
    credentials: [demo]
`,
			code: 1,
			want: []string{
				"POL:6: " + every,
				`POL:9: github selector matches every repository (repository "*/*" constrains neither owner nor name): add repository_id or repository_owner_id, or an exact repository`,
			},
			not: []string{"warning:", "ok:"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				"credbroker.yaml": "policies: policies.yaml\ncredentials:\n  - {name: demo, static: {env: HOME}}\n",
				"policies.yaml":   tc.policies,
			})
			out, errOut, code := runCLI("check", "--config", dir)
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s%s", code, tc.code, out, errOut)
			}
			pol := filepath.Join(dir, "policies.yaml")
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			var got []string
			for _, l := range lines {
				if strings.HasPrefix(l, pol+":") || strings.HasPrefix(l, "ok:") {
					got = append(got, l)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got lines %q, want %d lines like %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if w = strings.Replace(w, "POL", pol, 1); !strings.HasPrefix(got[i], w) {
					t.Errorf("line %d = %q, want %q", i, got[i], w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("output contains %q:\n%s", n, out)
				}
			}
		})
	}
}
