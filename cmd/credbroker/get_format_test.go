package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
)

const awsKeysPolicies = `policies:
  - name: root-reads
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [awskeys, userkeys, demo]
    ttl: 10m
`

// awsKeysCredentials: awskeys has the three fields of an aws_sts
// credential, userkeys a long-term key pair without a session token.
const awsKeysCredentials = `  - name: awskeys
    static: {fields: {access_key_id: {file: secrets/akid}, secret_access_key: {file: secrets/sak}, session_token: {file: secrets/st}}}
  - name: userkeys
    static: {fields: {access_key_id: {file: secrets/akid}, secret_access_key: {file: secrets/sak}}}
  - {name: demo, static: {file: secrets/sak}}
`

const (
	testAKID  = "ASIATESTKEYID0000001"
	testSAK   = "CANARY-secret-access-key-9f8e7d"
	testToken = "CANARY-session-token-1a2b3c"
)

// TestGetAWSProcess: the AWS SDK for Go v2, given a shared config file
// whose profile runs `credbroker get NAME --format aws-process` as its
// credential_process, obtains the credential's keys and its expiry.
func TestGetAWSProcess(t *testing.T) {
	e := newEnv(t, awsKeysPolicies, awsKeysCredentials)
	e.write("secrets/akid", testAKID)
	e.write("secrets/sak", testSAK)
	e.write("secrets/st", testToken)
	e.start()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, tt := range []struct{ credential, token string }{{"awskeys", testToken}, {"userkeys", ""}} {
		t.Run(tt.credential, func(t *testing.T) {
			config := e.write("aws-config-"+tt.credential, fmt.Sprintf("[profile broker]\nregion = us-east-1\ncredential_process = %s get %s --socket %s --format aws-process\n",
				binPath, tt.credential, e.socket))
			ctx, cancel := context.WithTimeout(context.Background(), hangBound)
			defer cancel()
			before := time.Now()
			cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithSharedConfigFiles([]string{config}),
				awsconfig.WithSharedCredentialsFiles([]string{e.dir + "/no-credentials"}), awsconfig.WithSharedConfigProfile("broker"))
			if err != nil {
				t.Fatal(err)
			}
			creds, err := cfg.Credentials.Retrieve(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if creds.AccessKeyID != testAKID || creds.SecretAccessKey != testSAK || creds.SessionToken != tt.token {
				t.Errorf("the SDK got %s / %s / %s", creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
			}
			// Expiration is RFC 3339 to the second; the policy caps the life at 10m.
			if !creds.CanExpire || creds.Expires.Before(before.Add(10*time.Minute).Truncate(time.Second)) || creds.Expires.After(time.Now().Add(10*time.Minute)) {
				t.Errorf("expires %v (can expire %v), want 10m from the request", creds.Expires, creds.CanExpire)
			}
		})
	}

	out, errOut, code := credbroker(t, "get", "demo", "--socket", e.socket, "--format", "aws-process")
	want := `credbroker: --format aws-process: credential "demo" (kind static, fields value) has no access_key_id field: it needs access_key_id and secret_access_key, and session_token for temporary keys, as aws_sts credentials carry`
	if code != 1 || out != "" || strings.TrimSpace(errOut) != want || strings.Contains(errOut, testSAK) {
		t.Errorf("a credential without keys: exit %d %q\n%s\nwant %s", code, out, errOut, want)
	}
}

// TestGetJSON: --format json prints the socket API's reply with the values
// (the client's Credential redacts them in its own JSON).
func TestGetJSON(t *testing.T) {
	e := newEnv(t, awsKeysPolicies, awsKeysCredentials)
	e.write("secrets/akid", testAKID)
	e.write("secrets/sak", testSAK)
	e.write("secrets/st", "<&>")
	e.start()
	out, errOut, code := credbroker(t, "get", "awskeys", "--socket", e.socket)
	if code != 0 {
		t.Fatalf("exit %d %s", code, errOut)
	}
	direct := call(t, socketClient(e.socket), "GET", "/v1/credentials/awskeys", nil, nil)
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || !strings.HasSuffix(out, "}\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("output %q: %v", out, err)
	}
	var want map[string]any
	json.Unmarshal(direct.Body, &want)
	for _, k := range []string{"name", "kind"} {
		if got[k] != want[k] {
			t.Errorf("%s: %v, the API says %v", k, got[k], want[k])
		}
	}
	if exp, _ := got["expires_at"].(string); !strings.HasSuffix(exp, "Z") {
		t.Errorf("expires_at %q, want UTC as the API writes it", exp)
	} else if _, err := time.Parse(time.RFC3339Nano, exp); err != nil {
		t.Error(err)
	}
	data, _ := got["data"].(map[string]any)
	if data["secret_access_key"] != testSAK || data["session_token"] != "<&>" || got["lease_id"] == "" || got["decision_id"] == "" {
		t.Errorf("output %s", out)
	}
	if !strings.HasPrefix(out, `{"name":"awskeys","kind":"static","data":{"access_key_id":`) {
		t.Errorf("fields out of the API's order: %s", out)
	}
}
