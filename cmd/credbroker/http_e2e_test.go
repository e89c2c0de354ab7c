package main

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// httpPolicies let root (the test) call the partner API through the
// listener; nobody is not allowed.
const httpPolicies = `policies:
  - name: root-calls-partner
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [partner-api]
`

// TestHTTPListenerPerCaller runs an http injection listener on TCP
// loopback in front of a local HTTPS upstream and calls it from two
// processes of different uids: the allowed one's request reaches the
// upstream with the credential injected exactly once, the other gets the
// socket API's JSON 403 and the upstream sees nothing; each request is a
// decision row on channel http.
func TestHTTPListenerPerCaller(t *testing.T) {
	var mu sync.Mutex
	var got []string
	upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+strings.Join(r.Header.Values("Authorization"), "|"))
		mu.Unlock()
		w.Write([]byte("pong"))
	}))
	defer upstream.Close()
	e := newEnv(t, httpPolicies, `  - {name: partner-api, static: {file: secrets/partner}}
listeners:
  - http: {listen: "127.0.0.1:0", upstream: `+upstream.URL+`, credential: partner-api,
           header: {name: Authorization, value: "Bearer {{.value}}"}, tls: {ca_file: upstream-ca.pem}}
`)
	e.write("secrets/partner", "s3cr3t-partner-token")
	e.write("upstream-ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.Certificate().Raw})))
	if out, _, code := credbroker(t, "check", "--config", e.config); code != 0 {
		t.Fatalf("check: %s", out)
	}
	b := e.start()
	addr := logAddr(t, b, "http listening")

	curl := func(uid uint32) (string, string) {
		t.Helper()
		cmd := exec.Command("curl", "-sS", "-H", "Authorization: Bearer forged", "-w", "\n%{http_code}", "http://"+addr+"/v1/ping")
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl as uid %d: %v: %s", uid, err, out)
		}
		text := strings.TrimSpace(string(out))
		i := strings.LastIndex(text, "\n")
		return text[i+1:], strings.TrimSpace(text[:max(i, 0)])
	}
	if code, body := curl(0); code != "200" || body != "pong" {
		t.Fatalf("root: %s %s\n%s", code, body, b.logs)
	}
	if code, body := curl(65534); code != "403" || !strings.Contains(body, `"code":"denied"`) {
		t.Fatalf("nobody: %s %s", code, body)
	}
	mu.Lock()
	if len(got) != 1 || got[0] != "GET /v1/ping Bearer s3cr3t-partner-token" {
		t.Errorf("the upstream saw %q, want one request with the injected header only", got)
	}
	mu.Unlock()

	rows := auditRows(t, e.db)
	var decisions []string
	for _, r := range rows {
		if r.Channel == "http" {
			decisions = append(decisions, r.Decision+" "+r.Subject+" "+r.TargetHost+" "+r.Method+" "+r.Path)
		}
	}
	host := strings.TrimPrefix(upstream.URL, "https://")
	for _, want := range []string{"allow unix:uid:0 " + host + " GET /v1/ping", "deny unix:uid:65534 " + host + " GET /v1/ping"} {
		if !contains(decisions, want) {
			t.Errorf("no decision row %q in %q", want, decisions)
		}
	}
	if strings.Contains(b.logs.String(), "s3cr3t-partner-token") {
		t.Error("the credential is in the broker's log")
	}
}

// TestHTTPListenerFieldsChecked: check refuses a listener whose header
// template names a field its credential's provider does not yield, at the
// listener's line.
func TestHTTPListenerFieldsChecked(t *testing.T) {
	e := newEnv(t, httpPolicies, `  - {name: partner-api, static: {file: secrets/partner}}
listeners:
  - http: {listen: "127.0.0.1:0", upstream: https://api.example.com, credential: partner-api, header: {value: "Bearer {{.token}}"}}
  - http: {listen: "127.0.0.1:0", upstream: https://api.example.com, credential: nowhere}
  - aws_credentials: {listen: "127.0.0.1:0", credential: partner-api}
`)
	e.write("secrets/partner", "v")
	out, _, code := credbroker(t, "check", "--config", e.config)
	cfg := filepath.Join(e.dir, "credbroker.yaml")
	for _, want := range []string{
		cfg + `:9: listener http: needs field "token" of credential "partner-api", whose static provider yields value`,
		cfg + `:10: listener http: credential "nowhere" is not configured`,
		cfg + `:11: listener aws_credentials: needs field "access_key_id" of credential "partner-api", whose static provider yields value`,
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("check (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
}

// TestAWSCredentialsListenerWired starts the broker with an aws_credentials
// listener: it answers on its address, and a caller without the token the
// AWS SDKs send is refused with 401 and recorded on channel aws. (The SDK
// round trip against MinIO is inject/awscreds's TestSDKListsBucket.)
func TestAWSCredentialsListenerWired(t *testing.T) {
	e := newEnv(t, httpPolicies, `  - {name: payments-aws, aws_sts: {role_arn: "arn:aws:iam::123456789012:role/payments", endpoint: "http://127.0.0.1:1"}}
listeners:
  - aws_credentials: {listen: "127.0.0.1:0", credential: payments-aws}
`)
	if out, _, code := credbroker(t, "check", "--config", e.config); code != 0 {
		t.Fatalf("check: %s", out)
	}
	b := e.start()
	addr := logAddr(t, b, "aws_credentials listening")
	resp, err := http.Get("http://" + addr + "/creds")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", resp.StatusCode)
	}
	found := false
	for _, r := range auditRows(t, e.db) {
		found = found || r.Channel == "aws" && r.Decision == "error" && r.Path == "/creds"
	}
	if !found {
		t.Error("no refusal recorded on channel aws")
	}
}

// TestListenerDrainTimeout: at SIGTERM a listener lets its requests in
// flight finish for its own drain_timeout, then cuts them and says so;
// the run reports the cut request as a failure.
func TestListenerDrainTimeout(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.Write([]byte("late"))
	}))
	defer upstream.Close()
	defer close(release) // before the upstream closes: it waits for its handler
	e := newEnv(t, httpPolicies, `  - {name: partner-api, static: {file: secrets/partner}}
listeners:
  - http: {listen: "127.0.0.1:0", upstream: `+upstream.URL+`, credential: partner-api,
           header: {value: "Bearer {{.value}}"}, tls: {ca_file: upstream-ca.pem}, drain_timeout: 300ms}
drain_timeout: 45s
`)
	e.write("secrets/partner", "s3cr3t-partner-token")
	e.write("upstream-ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.Certificate().Raw})))
	if out, _, code := credbroker(t, "check", "--config", e.config); code != 0 {
		t.Fatalf("check: %s", out)
	}
	b := e.start()
	addr := logAddr(t, b, "http listening")
	replied := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		replied <- err
	}()
	<-arrived
	code := b.stop(syscall.SIGTERM)
	if err := <-replied; err == nil {
		t.Error("the request cut at the drain timeout was answered")
	}
	logs := b.logs.String()
	if want := "requests still in flight after the drain timeout (300ms) were cut"; !strings.Contains(logs, want) {
		t.Errorf("the log lacks %q:\n%s", want, logs)
	}
	if code == 0 {
		t.Errorf("exit 0 after cutting a request in flight:\n%s", logs)
	}
}
