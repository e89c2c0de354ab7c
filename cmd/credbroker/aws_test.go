package main

import (
	"encoding/pem"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/credbroker/credbroker/attest/aws/ststest"
)

// newAWSEnv is a broker environment whose aws attestor sends to a local
// STS (ststest, standing in for AWS STS: it verifies SigV4 itself and
// serves TLS with a CA the broker trusts through SSL_CERT_FILE), with a key
// of the payments role, which alone may read "demo".
func newAWSEnv(t *testing.T) (e *env, sts *ststest.STS, keyID, secret, session string) {
	t.Helper()
	sts = ststest.New(t)
	keyID, secret, session = sts.AddKey("arn:aws:sts::123456789012:assumed-role/payments/i-0abc", "AROAEXAMPLE:i-0abc", "123456789012", true)
	e = newEnv(t, `policies:
  - name: payments-role
    effect: allow
    workloads: [{aws: {role_arn: "arn:aws:iam::123456789012:role/payments"}}]
    credentials: [demo]
`, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	ca := e.write("sts-ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sts.Server.Certificate().Raw})))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, append(cfg, []byte("attestors:\n  aws: {server_id: credbroker.test, sts_endpoint: \""+sts.Server.URL+"\", region: us-east-1}\n")...), 0o600)
	e.env = []string{"SSL_CERT_FILE=" + ca}
	return e, sts, keyID, secret, session
}

// TestAWSEndToEnd: `credbroker get --aws` signs sts:GetCallerIdentity with
// the AWS credential chain (here, environment variables), the broker sends
// it to STS — a local stand-in that verifies SigV4 itself, serving TLS with
// a CA the broker trusts through SSL_CERT_FILE — and the normalised role
// ARN gets the credential.
func TestAWSEndToEnd(t *testing.T) {
	e, sts, keyID, secret, session := newAWSEnv(t)
	b := e.start()

	awsEnv := []string{"AWS_ACCESS_KEY_ID=" + keyID, "AWS_SECRET_ACCESS_KEY=" + secret, "AWS_SESSION_TOKEN=" + session,
		"AWS_REGION=us-east-1", "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_EC2_METADATA_DISABLED=true"}
	get := func(serverID string) (string, string, int) {
		return credbrokerEnv(t, awsEnv, "get", "demo", "--socket", e.socket, "--aws", "--aws-server-id", serverID, "--aws-sts-endpoint", sts.Server.URL)
	}
	for i := range 2 { // the second proves a fresh signature is not a replay
		if out, errOut, code := get("credbroker.test"); code != 0 || !strings.Contains(out, "s3cr3t") {
			t.Fatalf("get --aws #%d: exit %d %s %s\n%s", i, code, out, errOut, b.logs)
		}
	}
	if _, errOut, code := get("another-broker"); code != exitUnauthenticated || !strings.Contains(errOut, "wrong server-id") {
		t.Fatalf("signed for another broker: exit %d %s", code, errOut)
	}
	files := readAll(t, e.dir)
	b.stop(syscall.SIGTERM)
	rows := auditRows(t, e.db)
	allowed := 0
	for _, r := range rows {
		if r.Decision == "allow" && r.Subject == "arn:aws:iam::123456789012:role/payments" {
			allowed++
		}
	}
	if allowed != 2 {
		t.Errorf("%d allow rows for the role, want 2", allowed)
	}
	for where, text := range map[string]string{"log": b.logs.String(), "db": files["audit.db"], "wal": files["audit.db-wal"]} {
		if strings.Contains(text, secret) || strings.Contains(text, session) {
			t.Errorf("the %s holds AWS credentials", where)
		}
	}
}
