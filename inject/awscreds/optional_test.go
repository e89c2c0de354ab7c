package awscreds_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
)

// processPolicies allows the credential to processes of this test's uid,
// on their process alone, as an ECS task's policy names its app's uid.
const processPolicies = `policies:
  - name: app-process-reads-s3
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [payments-s3]
    when: 'request.channel == "aws"'
    ttl: 15m
`

// TestTokenOptional: with token: optional, an unmodified SDK given only
// AWS_CONTAINER_CREDENTIALS_FULL_URI (no token) gets credentials when its
// process is allowed, and the decision names the process; a process of
// another uid without a token is denied; an Authorization header that is
// present is still verified — a bad one is refused even from an allowed
// process, never taken for an absent one.
func TestTokenOptional(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatalf("this test runs curl as nobody, which needs root; running as uid %d", os.Getuid())
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl, the other callers of this test, is not installed: %v", err)
	}
	h := newHarnessWith(t, "optional", processPolicies)

	// The SDK, with no token, from this process.
	isolate(t, h.url+"/creds", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatalf("the SDK's credential chain without a token: %v", err)
	}
	if got.Source != "CredentialsEndpointProvider" || got.AccessKeyID == h.minio.RootUser || got.SessionToken == "" || !got.CanExpire {
		t.Fatalf("credentials from %q, want the endpoint's temporary credentials", got.Source)
	}
	rows := h.decisions(t)
	if len(rows) != 1 {
		t.Fatalf("%d decision rows, want 1", len(rows))
	}
	if r := rows[0]; r.Decision != audit.DecisionAllow || r.Policy != "app-process-reads-s3" || r.Attestor != "unix" ||
		r.PeerUID != int64(os.Getuid()) || r.PeerPID != int64(os.Getpid()) || r.Channel != broker.ChannelAWS || r.LeaseID == "" {
		t.Errorf("decision row %+v, want an allow on this process's unix identity", r)
	}

	run := func(uid int, auth string) (status, body string) { return curlAs(t, curl, h.url+"/creds", uid, auth) }
	last := func() audit.Record {
		rows := h.decisions(t)
		return rows[len(rows)-1]
	}

	if status, body := run(65534, ""); status != "403" || !strings.Contains(body, `"code":"denied"`) {
		t.Errorf("nobody without a token: %s %s, want 403 denied", status, body)
	} else if r := last(); r.Decision != audit.DecisionDeny || r.Attestor != "unix" || r.PeerUID != 65534 {
		t.Errorf("nobody's decision row %+v, want a deny of uid 65534", r)
	}

	other := oidctest.NewRSAKey(t, "k1") // a key no issuer published
	for _, tc := range []struct {
		name, auth, status, code, reason string
	}{
		{"a token no issuer signed", token(t, other, "payments", "api"), "401", "unauthenticated", "kubernetes"},
		{"not a token", "hello world", "400", "bad_request", "Authorization"},
	} {
		status, body := run(os.Getuid(), tc.auth)
		if status != tc.status || !strings.Contains(body, `"code":"`+tc.code+`"`) {
			t.Errorf("%s from an allowed process: %s %s, want %s %s", tc.name, status, body, tc.status, tc.code)
			continue
		}
		if r := last(); r.Decision != audit.DecisionError || !strings.Contains(r.Reason, tc.reason) || r.LeaseID != "" {
			t.Errorf("%s: decision row %+v, want an error naming %q", tc.name, r, tc.reason)
		}
	}
	if n := len(h.decisions(t)); n != 4 {
		t.Errorf("%d decision rows, want 4 (one per request)", n)
	}
	if strings.Contains(h.logs.String(), got.SecretAccessKey) {
		t.Error("the secret access key is in the logs")
	}
}
