package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The policies every end-to-end test starts from: root (the test runs as
// root) may read "demo" and "other", never "forbidden".
const e2ePolicies = `policies:
  - name: root-reads-demo
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [demo, other, forbidden]
    ttl: 10m
  - name: nobody-reads-forbidden
    effect: deny
    workloads: [{unix: {uid: 0}}]
    credentials: [forbidden]
`

// e2eCredentials are the credentials every end-to-end test starts from, all
// read from secrets/demo.
func e2eCredentials() string {
	return `  - {name: demo, ttl: 1h, static: {file: secrets/demo}}
  - {name: other, ttl: 5m, static: {file: secrets/demo}}
  - {name: forbidden, static: {file: secrets/demo}}
  - {name: unlisted, static: {file: secrets/demo}}
`
}

// expectExpiry checks that a credential issued between before and after
// expires ttl after its issue, however long the request took.
func expectExpiry(t *testing.T, expires, before, after time.Time, ttl time.Duration) {
	t.Helper()
	if expires.Before(before.Add(ttl)) || expires.After(after.Add(ttl)) {
		t.Errorf("expires at %v, want %v after the request (between %v and %v)", expires, ttl, before.Add(ttl), after.Add(ttl))
	}
}

func TestSocketAPIEndToEnd(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	b := e.start()
	c := socketClient(e.socket)

	tests := []struct {
		name       string
		method     string
		path       string
		header     http.Header
		body       string
		status     int
		code       string
		decision   string
		policy     string
		msgContain string
	}{
		{name: "allowed", method: "GET", path: "/v1/credentials/demo", status: 200, decision: "allow", policy: "root-reads-demo"},
		{name: "allowed by POST", method: "POST", path: "/v1/credentials/demo", body: `{}`, status: 200, decision: "allow", policy: "root-reads-demo"},
		{name: "denied by default", method: "GET", path: "/v1/credentials/unlisted", status: 403, code: "denied", decision: "deny", policy: "", msgContain: "unlisted"},
		{name: "denied by a deny rule", method: "GET", path: "/v1/credentials/forbidden", status: 403, code: "denied", decision: "deny", policy: "nobody-reads-forbidden"},
		{name: "unknown credential", method: "GET", path: "/v1/credentials/nope", status: 404, code: "not_found", decision: "error", msgContain: `"nope"`},
		{name: "missing header", method: "GET", path: "/v1/credentials/demo", header: http.Header{}, status: 400, code: "bad_request", decision: "error", msgContain: "Credbroker-Request"},
		{name: "wrong header value", method: "GET", path: "/v1/credentials/demo", header: http.Header{"Credbroker-Request": {"yes"}}, status: 400, code: "bad_request", decision: "error"},
		{name: "malformed body", method: "POST", path: "/v1/credentials/demo", body: `{"aws_iam": `, status: 400, code: "bad_request", decision: "error", msgContain: "malformed JSON"},
		{name: "unknown body field", method: "POST", path: "/v1/credentials/demo", body: `{"password": "x"}`, status: 400, code: "bad_request", decision: "error", msgContain: "unknown field"},
		{name: "bearer token without a token attestor", method: "GET", path: "/v1/credentials/demo", header: http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer e30.e30.c2ln"}}, status: 401, code: "unauthenticated", decision: "error", msgContain: "no token attestor is configured"},
		{name: "aws evidence without the aws attestor", method: "POST", path: "/v1/credentials/demo", body: `{"aws_iam": {}}`, status: 401, code: "unauthenticated", decision: "error", msgContain: "aws attestor is not configured"},
		{name: "not a bearer scheme", method: "GET", path: "/v1/credentials/demo", header: http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Basic dXNlcjpwdw=="}}, status: 400, code: "bad_request", decision: "error", msgContain: "Bearer <token>"},
		{name: "oversized body", method: "POST", path: "/v1/credentials/demo", body: `{"aws_iam": "` + strings.Repeat("A", 70<<10) + `"}`, status: 400, code: "bad_request", decision: "error", msgContain: "over 65536 bytes"},
	}
	ids := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			before := time.Now()
			r := call(t, c, tt.method, tt.path, tt.header, body)
			after := time.Now()
			if r.Status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tt.status, r.Body)
			}
			if tt.status == 200 {
				if r.OK.Data["value"] != "s3cr3t-value" || r.OK.Kind != "static" || r.OK.Name == "" || r.OK.LeaseID == "" || r.OK.DecisionID == "" {
					t.Fatalf("reply %s", r.Body)
				}
				// The policy's 10m ttl caps the credential's 1h.
				expectExpiry(t, r.OK.ExpiresAt, before, after, 10*time.Minute)
				ids[tt.name] = r.OK.DecisionID
				return
			}
			if r.Err.Error.Code != tt.code || r.Err.Error.DecisionID == "" {
				t.Fatalf("error body %s, want code %s with a decision id", r.Body, tt.code)
			}
			if !strings.Contains(r.Err.Error.Message, tt.msgContain) {
				t.Errorf("message %q does not mention %q", r.Err.Error.Message, tt.msgContain)
			}
			ids[tt.name] = r.Err.Error.DecisionID
		})
	}

	// The credential's own TTL applies when it is shorter than the policy's.
	before := time.Now()
	r := call(t, c, "GET", "/v1/credentials/other", nil, nil)
	if r.Status != 200 {
		t.Errorf("other: status %d", r.Status)
	}
	expectExpiry(t, r.OK.ExpiresAt, before, time.Now(), 5*time.Minute)

	rows := auditRows(t, e.db)
	for _, tt := range tests {
		row, ok := rows[ids[tt.name]]
		if !ok {
			t.Errorf("%s: no audit row for decision %q", tt.name, ids[tt.name])
			continue
		}
		if row.Decision != tt.decision || row.Policy != tt.policy {
			t.Errorf("%s: audit row decision=%q policy=%q, want %q %q", tt.name, row.Decision, row.Policy, tt.decision, tt.policy)
		}
		if row.Subject != "unix:uid:0" || row.Channel != "socket" || row.PeerPID != int64(os.Getpid()) {
			t.Errorf("%s: audit row subject=%q channel=%q peer_pid=%d", tt.name, row.Subject, row.Channel, row.PeerPID)
		}
		if tt.decision == "allow" && (!strings.HasPrefix(row.Fingerprint, "hmac-sha256:") || row.LeaseID == "") {
			t.Errorf("%s: allow row without fingerprint or lease: %+v", tt.name, row)
		}
		// A decision that got past attestation keeps the policy input.
		if tt.code != "unauthenticated" && !strings.Contains(string(row.Input), `"uid":0`) {
			t.Errorf("%s: policy input %s lacks the identity", tt.name, row.Input)
		}
	}
	if out, errOut, code := credbroker(t, "audit", "verify", "--db", e.db); code != 0 {
		t.Fatalf("audit verify: %s %s", out, errOut)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, b.logs)
	}
	if _, err := os.Lstat(e.socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
}

func TestOversizedHeaderRefused(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "v")
	e.start()
	h := http.Header{"Credbroker-Request": {"1"}, "X-Big": {strings.Repeat("x", 64<<10)}}
	r := call(t, socketClient(e.socket), "GET", "/v1/credentials/demo", h, nil)
	if r.Status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", r.Status)
	}
}

func TestSocketCreation(t *testing.T) {
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "v")

	t.Run("stale socket is replaced", func(t *testing.T) {
		ln, err := net.Listen("unix", e.socket)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close() // leaves a socket file nobody listens on
		b := e.start()
		fi, err := os.Stat(e.socket)
		if err != nil || fi.Mode().Perm() != 0o660 {
			t.Fatalf("socket mode %v, %v; want 0660", fi.Mode(), err)
		}
		t.Run("live socket is not replaced", func(t *testing.T) {
			_, errOut, code := credbroker(t, "run", "--config", e.config)
			if code == 0 || !strings.Contains(errOut, "another process is listening") {
				t.Fatalf("second broker: exit %d: %s", code, errOut)
			}
		})
		b.stop(syscall.SIGINT)
	})
	t.Run("a regular file is not replaced", func(t *testing.T) {
		if err := os.WriteFile(e.socket, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(e.socket)
		_, errOut, code := credbroker(t, "run", "--config", e.config)
		if code == 0 || !strings.Contains(errOut, "not a socket") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
	t.Run("flags override the file", func(t *testing.T) {
		sock := filepath.Join(filepath.Dir(e.socket), "other.sock")
		db := filepath.Join(e.dir, "other.db")
		b := (&env{t: t, dir: e.dir, socket: sock, config: e.config}).start("--socket", sock, "--audit-db", db)
		if r := call(t, socketClient(sock), "GET", "/v1/credentials/demo", nil, nil); r.Status != 200 {
			t.Fatalf("status %d", r.Status)
		}
		if len(auditRows(t, db)) != 1 {
			t.Fatal("decision not recorded in --audit-db")
		}
		b.stop(syscall.SIGTERM)
	})
}
