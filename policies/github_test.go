package policies

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const (
	wantUnpinned = "github selector does not pin a repository: add repository_id or repository_owner_id, or an exact repository (repository names can be re-registered by someone else after a rename or deletion)"
	wantEvery    = "github selector matches every repository: add repository_id or repository_owner_id, or an exact repository"
)

func wantEveryGlob(glob string) string {
	return fmt.Sprintf("github selector matches every repository (repository %q constrains neither owner nor name): add repository_id or repository_owner_id, or an exact repository", glob)
}

// githubCases are github selectors and what Compile says about them: the
// problems that refuse them, or else the warnings of the compiled Set. The
// workload entry is on line 5 unless the document says otherwise.
var githubCases = []struct {
	name     string
	workload string
	problems []string
	warnings []string
}{
	// pinned: no warning
	{name: "exact repository", workload: `github: {repository: acme/payments}`},
	{name: "repository_id", workload: `github: {repository_id: 123}`},
	{name: "repository_owner_id", workload: `github: {repository_owner_id: 1234, ref: refs/heads/main}`},
	{name: "owner id with every-repository glob", workload: `github: {repository: "*/*", repository_owner_id: 1234}`},
	{name: "glob with repository_id", workload: `github: {repository: "acme/*", repository_id: "123"}`},
	{name: "exact repository inside all", workload: `all: [{github: {repository: acme/payments}}, {unix: {uid: 1}}]`},

	// accepted with a warning
	{name: "repository glob", workload: `github: {repository: "acme/*"}`, warnings: []string{"test.yaml:5: " + wantUnpinned}},
	{name: "repository question mark", workload: `github: {repository: "acme/pay?ents"}`, warnings: []string{"test.yaml:5: " + wantUnpinned}},
	{name: "repository class", workload: `github: {repository: "[ab]cme/payments"}`, warnings: []string{"test.yaml:5: " + wantUnpinned}},
	{name: "owner name only", workload: `github: {repository_owner: acme, ref: refs/heads/main}`, warnings: []string{"test.yaml:5: " + wantUnpinned}},
	{name: "owner name with every-repository glob", workload: `github: {repository_owner: acme, repository: "*/*"}`, warnings: []string{"test.yaml:5: " + wantUnpinned}},
	{name: "name glob in a fixed owner", workload: `github: {repository: "*/payments"}`, warnings: []string{"test.yaml:5: " + wantUnpinned}},
	{name: "glob inside all", workload: `all: [{unix: {uid: 1}}, {github: {repository: "acme/*"}}]`, warnings: []string{"test.yaml:5: " + wantUnpinned}},
	{name: "glob inside nested all", workload: `all: [{all: [{github: {repository_owner: acme}}]}]`, warnings: []string{"test.yaml:5: " + wantUnpinned}},

	// refused
	{name: "no repository key", workload: `github: {ref: refs/heads/main}`, problems: []string{"test.yaml:5: " + wantEvery}},
	{name: "workflow_ref does not count", workload: `github: {workflow_ref: "acme/payments/.github/workflows/deploy.yml@refs/heads/main"}`, problems: []string{"test.yaml:5: " + wantEvery}},
	{name: "star", workload: `github: {repository: "*"}`, problems: []string{"test.yaml:5: " + wantEveryGlob("*")}},
	{name: "star slash star", workload: `github: {repository: "*/*", environment: prod}`, problems: []string{"test.yaml:5: " + wantEveryGlob("*/*")}},
	{name: "double stars", workload: `github: {repository: "**/**"}`, problems: []string{"test.yaml:5: " + wantEveryGlob("**/**")}},
	{name: "no repository key inside all", workload: `all: [{unix: {uid: 1}}, {github: {event_name: push}}]`, problems: []string{"test.yaml:5: " + wantEvery}},
	{name: "star inside nested all", workload: `all: [{all: [{github: {repository: "*/*"}}]}]`, problems: []string{"test.yaml:5: " + wantEveryGlob("*/*")}},
}

func TestGitHubRepositoryPinning(t *testing.T) {
	for _, tc := range githubCases {
		t.Run(tc.name, func(t *testing.T) {
			doc := fmt.Sprintf("policies:\n  - name: p\n    effect: allow\n    workloads:\n      - %s\n    credentials: [x]\n", tc.workload)
			checkGitHub(t, []File{{Name: "test.yaml", Data: []byte(doc)}}, tc.problems, tc.warnings)
		})
	}
}

// TestGitHubRepositoryPositions checks the lines of block-style selectors,
// several files and aliases.
func TestGitHubRepositoryPositions(t *testing.T) {
	refused := `policies:
  - name: r
    effect: allow
    workloads:
      - all:
          - unix: {uid: 1}
          - github:
              environment: prod
      - github:
          ref: refs/heads/main
          repository: "*/*"
    credentials: [x]
`
	warned := `policies:
  - name: w
    effect: allow
    workloads:
      - unix: {uid: 1}
      - &gh
        github:
          repository: "acme/*"
      - all: [*gh, {unix: {uid: 2}}]
      - github: {repository_owner: acme}
    credentials: [x]
`
	checkGitHub(t, []File{{Name: "r.yaml", Data: []byte(refused)}}, []string{
		"r.yaml:7: " + wantEvery,
		"r.yaml:11: " + wantEveryGlob("*/*"),
	}, nil)
	checkGitHub(t, []File{{Name: "w.yaml", Data: []byte(warned)}, {Name: "a.yaml", Data: []byte(strings.Replace(warned, "name: w", "name: v", 1))}}, nil, []string{
		"w.yaml:7: " + wantUnpinned, // once, though the alias repeats it
		"w.yaml:10: " + wantUnpinned,
		"a.yaml:7: " + wantUnpinned,
		"a.yaml:10: " + wantUnpinned,
	})
}

func checkGitHub(t *testing.T, files []File, problems, warnings []string) {
	t.Helper()
	s, err := Compile(files)
	if problems != nil {
		var ps Problems
		if !errors.As(err, &ps) {
			t.Fatalf("Compile error = %v, want problems %q", err, problems)
		}
		if got := strs(ps); !slices.Equal(got, problems) {
			t.Errorf("problems:\n got %q\nwant %q", got, problems)
		}
		if s.Warnings() != nil {
			t.Errorf("nil Set has warnings %v", s.Warnings())
		}
		return
	}
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if got := strs(s.Warnings()); !slices.Equal(got, warnings) {
		t.Errorf("warnings:\n got %q\nwant %q", got, warnings)
	}
}

func strs(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Error())
	}
	return out
}

func TestWarningsAreACopy(t *testing.T) {
	s := mustCompile(t, "policies:\n  - {name: p, effect: allow, workloads: [{github: {repository: \"acme/*\"}}], credentials: [x]}\n")
	s.Warnings()[0].Message = "changed"
	if s.Warnings()[0].Message != wantUnpinned {
		t.Errorf("Warnings shares its slice with the Set")
	}
}
