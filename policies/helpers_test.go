package policies

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// testNow is the fixed time of test inputs.
var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// mustCompile compiles one file named "test.yaml".
func mustCompile(t testing.TB, doc string) *Set {
	t.Helper()
	s, err := Compile([]File{{Name: "test.yaml", Data: []byte(dedent(doc))}})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

// dedent removes the common leading tabs of a raw-string document so that
// tests can indent YAML with the code; YAML itself must use spaces.
func dedent(s string) string {
	s = strings.TrimPrefix(s, "\n")
	lines := strings.Split(s, "\n")
	prefix := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, "\t"))
		if prefix < 0 || n < prefix {
			prefix = n
		}
	}
	for i, l := range lines {
		switch {
		case strings.TrimSpace(l) == "":
			lines[i] = ""
		case prefix > 0:
			lines[i] = l[prefix:]
		}
	}
	return strings.Join(lines, "\n")
}

func unixID(uid, gid int64, exe string) attest.Identity {
	return attest.Identity{
		Method:  attest.MethodUnix,
		Subject: "unix:uid:" + strconv.FormatInt(uid, 10),
		Claims: map[string]any{
			"uid": uid, "gid": gid, "pid": int64(4242), "exe": exe,
			"exe_sha256": "9f2c7d1e5b3a4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d",
		},
	}
}

func k8sID(ns, sa, pod string) attest.Identity {
	return attest.Identity{
		Method:  attest.MethodKubernetes,
		Subject: "system:serviceaccount:" + ns + ":" + sa,
		Claims: map[string]any{
			"namespace": ns, "service_account": sa, "pod_name": pod,
			"pod_uid": "0b9f5c8e-1111-2222-3333-444455556666", "audience": []any{"credbroker"},
		},
	}
}

func input(id attest.Identity, cred string) Input {
	return Input{Identity: id, Request: Request{Channel: "socket", Credential: cred}, Now: testNow}
}
