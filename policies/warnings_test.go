package policies

import (
	"fmt"
	"slices"
	"testing"
)

const sha = "9f2c7d1e5b3a4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"

func wantUnpinnedExe(exe string) string {
	return fmt.Sprintf("unix selector matches exe %q without exe_sha256: the path is the one the caller's mount namespace shows, and an unprivileged user can bind-mount any binary over it in a user namespace; add exe_sha256 to the same selector", exe)
}

func wantTokenOnlyDeny(name, methods string) string {
	return fmt.Sprintf("deny policy %q selects only callers that present a token (%s): a caller escapes it by presenting none, and is then attested as its unix peer; add a unix entry (uid, exe_sha256, pod_uid or container_id) for the same workload", name, methods)
}

// warningCases are policies and the warnings Compile gives them. The
// policy starts on line 2 and its workloads key is on line 4; each
// workload entry takes one line from line 5.
var warningCases = []struct {
	name      string
	effect    Effect
	workloads []string
	want      []string
}{
	{name: "exe without exe_sha256", effect: Allow, workloads: []string{`unix: {uid: 1000, exe: /usr/bin/payments}`},
		want: []string{"test.yaml:5: " + wantUnpinnedExe("/usr/bin/payments")}},
	{name: "exe glob without exe_sha256", effect: Allow, workloads: []string{`unix: {exe: "/usr/**"}`},
		want: []string{"test.yaml:5: " + wantUnpinnedExe("/usr/**")}},
	{name: "exe in all, exe_sha256 in another selector", effect: Allow, workloads: []string{`all: [{unix: {exe: /bin/x}}, {unix: {exe_sha256: ` + sha + `}}]`},
		want: []string{"test.yaml:5: " + wantUnpinnedExe("/bin/x")}},
	{name: "exe with exe_sha256", effect: Allow, workloads: []string{`unix: {exe: /usr/bin/payments, exe_sha256: ` + sha + `}`}},
	{name: "exe_sha256 alone", effect: Allow, workloads: []string{`unix: {exe_sha256: ` + sha + `}`}},
	{name: "exe in a deny", effect: Deny, workloads: []string{`unix: {exe: /usr/bin/curl}`},
		want: []string{"test.yaml:5: " + wantUnpinnedExe("/usr/bin/curl")}},

	{name: "deny on a token identity only", effect: Deny, workloads: []string{`kubernetes: {namespace: sandbox}`},
		want: []string{"test.yaml:4: " + wantTokenOnlyDeny("p", "kubernetes")}},
	{name: "deny on every token method", effect: Deny, workloads: []string{
		`kubernetes: {namespace: sandbox}`, `spiffe: {id: "spiffe://td/ns/sandbox/**"}`,
		`github: {repository_id: 1}`, `aws: {account: "123456789012"}`},
		want: []string{"test.yaml:4: " + wantTokenOnlyDeny("p", "kubernetes, spiffe, github, aws")}},
	{name: "deny on a token and its peer", effect: Deny, workloads: []string{`all: [{kubernetes: {namespace: sandbox}}, {unix: {uid: 1000}}]`},
		want: []string{"test.yaml:4: " + wantTokenOnlyDeny("p", "kubernetes")}},
	{name: "deny with a unix entry too", effect: Deny, workloads: []string{`kubernetes: {namespace: sandbox}`, `unix: {uid: 1000}`}},
	{name: "deny with an all of unix entries", effect: Deny, workloads: []string{`spiffe: {trust_domain: td}`, `all: [{unix: {uid: 1000}}, {unix: {gid: 10}}]`}},
	{name: "allow on a token identity", effect: Allow, workloads: []string{`kubernetes: {namespace: sandbox}`}},
}

func TestWarnings(t *testing.T) {
	for _, tc := range warningCases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustCompile(t, warningPolicy(tc.effect, tc.workloads))
			if got := strs(s.Warnings()); !slices.Equal(got, tc.want) {
				t.Errorf("warnings:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func warningPolicy(effect Effect, workloads []string) string {
	doc := fmt.Sprintf("policies:\n  - name: p\n    effect: %s\n    workloads:\n", effect)
	for _, w := range workloads {
		doc += "      - " + w + "\n"
	}
	return doc + "    credentials: [x]\n"
}
