package policies

import (
	"os"
	"testing"

	"github.com/credbroker/credbroker/attest"
)

const selfPolicy = `
	policies:
	  - name: broker-user
	    effect: allow
	    workloads: [{unix: {uid: self, gid: self}}]
	    credentials: [demo]
`

func compileFor(t *testing.T, self *Self, doc string) *Set {
	t.Helper()
	s, err := CompileOptions{Self: self}.Compile([]File{{Name: "self.yaml", Data: []byte(dedent(doc))}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSelf checks that `uid: self` and `gid: self` stand for the ids in
// CompileOptions.Self, and that the version pins them: the same file for
// brokers under different users has different versions, and `self` has
// the version of the number it resolves to.
func TestSelf(t *testing.T) {
	a := compileFor(t, &Self{UID: 1000, GID: 100}, selfPolicy)
	b := compileFor(t, &Self{UID: 1001, GID: 100}, selfPolicy)
	c := compileFor(t, &Self{UID: 1000, GID: 101}, selfPolicy)
	numbers := compileFor(t, nil, `
		policies:
		  - name: broker-user
		    effect: allow
		    workloads: [{unix: {uid: 1000, gid: 100}}]
		    credentials: [demo]
	`)
	if a.Version() == b.Version() || a.Version() == c.Version() {
		t.Errorf("versions %s, %s, %s: the resolved ids are not pinned", a.Version(), b.Version(), c.Version())
	}
	if a.Version() != numbers.Version() || a.Policies()[0].Version != numbers.Policies()[0].Version {
		t.Errorf("uid: self under 1000 has version %s, uid: 1000 %s", a.Version(), numbers.Version())
	}
	in := input(unixID(1000, 100, "/bin/x"), "demo")
	for set, want := range map[*Set]Effect{a: Allow, b: Deny, c: Deny} {
		if d := set.Evaluate(in); d.Effect != want {
			t.Errorf("version %s: %s, want %s", set.Version(), d.Effect, want)
		}
	}
	// A token caller's peer is the broker's user.
	k8s := k8sID("payments", "api", "api-1")
	peer := unixID(1000, 100, "/bin/x")
	k8s.Peer = &peer
	if d := a.Evaluate(input(k8s, "demo")); d.Effect != Allow {
		t.Errorf("token caller with the broker's uid as peer: %s", d.Reason)
	}
}

// TestSelfDefault checks that without CompileOptions.Self, `self` is the
// uid and gid of the process calling Compile.
func TestSelfDefault(t *testing.T) {
	own := &Self{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if got, want := compileFor(t, nil, selfPolicy).Version(), compileFor(t, own, selfPolicy).Version(); got != want {
		t.Errorf("version %s without Self, %s with this process's ids", got, want)
	}
	s := mustCompile(t, selfPolicy)
	id := attest.Identity{Method: attest.MethodUnix, Claims: map[string]any{"uid": int64(os.Getuid()), "gid": int64(os.Getgid())}}
	if d := s.Evaluate(input(id, "demo")); d.Effect != Allow {
		t.Errorf("this process: %s", d.Reason)
	}
}
