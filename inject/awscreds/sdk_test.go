package awscreds_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	jose "github.com/go-jose/go-jose/v4"

	k8sattest "github.com/credbroker/credbroker/attest/kubernetes"
	"github.com/credbroker/credbroker/attest/oidc/oidctest"
	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/awscreds"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/miniotest"
	"github.com/credbroker/credbroker/policies"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// credential is the name of the credential the endpoint serves.
const credential = "payments-s3"

// issuer is the Kubernetes cluster's service-account token issuer.
const issuer = "https://kubernetes.default.svc.cluster.local"

// testPolicies lets the payments/api service account have the credential
// over the AWS endpoint only when its token is presented by a process of
// this test's uid (self): both pieces of evidence are required.
const testPolicies = `policies:
  - name: payments-api-reads-s3
    effect: allow
    workloads: [{all: [{kubernetes: {namespace: payments, service_account: api}}, {unix: {uid: self}}]}]
    credentials: [payments-s3]
    when: 'request.channel == "aws"'
    ttl: 15m
`

// minioRole is the role ARN sent to MinIO, whose AssumeRole ignores it:
// the temporary credentials inherit the signing user's policies.
const minioRole = "arn:aws:iam::123456789012:role/minio-assume"

// harness is a real broker — the unix attestor (TCP loopback callers from
// the kernel's socket table), a Kubernetes token attestor over a JWKS file,
// compiled policies, the aws_sts provider against a real MinIO's STS, a
// running audit log — behind the endpoint on a TCP loopback listener.
type harness struct {
	minio  *miniotest.Server
	key    *oidctest.Key // the cluster's signing key
	db     string
	logs   *logtest.Buffer
	url    string // http://127.0.0.1:PORT
	dir    string
	runErr chan error
}

func newHarness(tb testing.TB, opts ...awscreds.Option) *harness {
	tb.Helper()
	return newHarnessWith(tb, awscreds.TokenRequired, testPolicies, opts...)
}

// newHarnessWith is newHarness with the endpoint's token setting and the
// broker's policies.
func newHarnessWith(tb testing.TB, tokenMode, policyYAML string, opts ...awscreds.Option) *harness {
	tb.Helper()
	h := &harness{minio: miniotest.Start(tb), dir: tb.TempDir(), logs: &logtest.Buffer{}}
	h.db = filepath.Join(h.dir, "audit.db")

	h.key = oidctest.NewRSAKey(tb, "k1")
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{h.key.JWK()}})
	if err != nil {
		tb.Fatal(err)
	}
	jwksFile := filepath.Join(h.dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		tb.Fatal(err)
	}
	k8s, err := k8sattest.New(context.Background(), k8sattest.Config{Issuer: issuer, Audiences: []string{"credbroker"}, JWKSFile: jwksFile})
	if err != nil {
		tb.Fatal(err)
	}
	peer, err := unixattest.New(unixattest.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(policyYAML)}})
	if err != nil {
		tb.Fatal(err)
	}
	prov, err := awsprov.New(awsprov.Config{
		Name: credential, RoleARN: minioRole, Region: miniotest.Region, Endpoint: h.minio.URL, TTL: time.Hour,
		Credentials: credentials.NewStaticCredentialsProvider(h.minio.RootUser, h.minio.RootPassword, ""),
		Logger:      h.logs.Logger(),
	})
	if err != nil {
		tb.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	alog, err := audit.Open(ctx, audit.Config{Path: h.db})
	if err != nil {
		tb.Fatal(err)
	}
	auditDone := make(chan error, 1)
	go func() { auditDone <- alog.Run(ctx) }()
	b, err := broker.New(broker.Config{
		Peer:        peer,
		Tokens:      []broker.TokenRoute{{Method: "kubernetes", Issuer: issuer, Attestor: k8s}},
		Credentials: map[string]broker.Provider{credential: prov},
		Kinds:       map[string]string{credential: awsprov.Kind},
		Policies:    set,
		Audit:       alog,
		Logger:      h.logs.Logger(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := awscreds.New(awscreds.Config{Listen: "127.0.0.1:0", Credential: credential, Token: tokenMode}, b, append([]awscreds.Option{listener.WithLogger(h.logs.Logger())}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	h.url = "http://" + ln.Addr().String()
	runCtx, stop := context.WithCancel(context.Background())
	h.runErr = make(chan error, 1)
	go func() { h.runErr <- e.Run(runCtx, ln) }()
	tb.Cleanup(func() {
		stop()
		if err := <-h.runErr; err != nil {
			tb.Errorf("Run: %v", err)
		}
		cancel()
		<-auditDone
		alog.Close()
	})
	return h
}

// token signs a projected service-account token for namespace/name with
// key, valid for an hour.
func token(tb testing.TB, key *oidctest.Key, namespace, name string) string {
	now := time.Now()
	return oidctest.Sign(tb, key, map[string]any{
		"iss": issuer, "aud": []any{"credbroker"}, "sub": "system:serviceaccount:" + namespace + ":" + name,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{"namespace": namespace, "serviceaccount": map[string]any{"name": name}},
	}, nil)
}

// tokenFile writes tok where AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE will
// point, as the kubelet writes a projected token (no trailing new line).
func (h *harness) tokenFile(tb testing.TB, tok string) string {
	tb.Helper()
	f, err := os.CreateTemp(h.dir, "token-")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(tok); err != nil {
		tb.Fatal(err)
	}
	return f.Name()
}

// isolate leaves the SDK no source of credentials but the container
// endpoint at fullURI, authorised by tokenFile ("" for none): every other
// credential variable empty, the shared files empty.
func isolate(t *testing.T, fullURI, tokenFile string) {
	t.Helper()
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY", "AWS_SECRET_KEY",
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_ENDPOINT_URL",
		"AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE",
	} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_CONFIG_FILE", empty)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", fullURI)
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokenFile)
}

// decisions returns the decision rows of the credential, oldest first.
func (h *harness) decisions(tb testing.TB) []audit.Record {
	tb.Helper()
	var rows []audit.Record
	err := audit.Query(context.Background(), h.db, audit.Filter{Credential: credential, Kind: audit.KindDecision}, func(r *audit.Record) error {
		rows = append(rows, *r)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rows
}

// TestSDKListsBucket is the acceptance test: an aws-sdk-go-v2
// program configured only by AWS_CONTAINER_CREDENTIALS_FULL_URI and
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE obtains credentials the broker
// issued (AssumeRole at MinIO's STS) and uses them on MinIO's S3, which
// verifies their signatures.
func TestSDKListsBucket(t *testing.T) {
	h := newHarness(t)
	isolate(t, h.url+"/creds", h.tokenFile(t, token(t, h.key, "payments", "api")))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatalf("the SDK's credential chain: %v", err)
	}
	t.Logf("first fetch through the endpoint (decision, AssumeRole at MinIO, audit commit): %v", time.Since(start))
	if got.Source != "CredentialsEndpointProvider" || got.AccessKeyID == h.minio.RootUser || got.SessionToken == "" || !got.CanExpire {
		t.Fatalf("credentials from %q (temporary: %v, expiring: %v), want the endpoint's temporary credentials", got.Source, got.SessionToken != "", got.CanExpire)
	}

	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = awssdk.String(h.minio.URL)
		o.UsePathStyle = true
	})
	bucket := fmt.Sprintf("credbroker-aws-%d", time.Now().UnixNano())
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("CreateBucket with the broker's credentials: %v", err)
	}
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: awssdk.String("hello.txt"), Body: strings.NewReader("hello")}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	buckets, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
	if err != nil {
		t.Fatalf("ListBuckets: %v", err)
	}
	found := false
	for _, b := range buckets.Buckets {
		found = found || awssdk.ToString(b.Name) == bucket
	}
	if !found {
		t.Errorf("ListBuckets does not list %s", bucket)
	}
	objs, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket})
	if err != nil {
		t.Fatalf("ListObjectsV2: %v", err)
	}
	if len(objs.Contents) != 1 || awssdk.ToString(objs.Contents[0].Key) != "hello.txt" {
		t.Errorf("ListObjectsV2 lists %d objects, want hello.txt", len(objs.Contents))
	}

	// The SDK cached the credentials: one decision, allowed on both pieces
	// of evidence, for this process.
	rows := h.decisions(t)
	if len(rows) != 1 {
		t.Fatalf("%d decision rows, want 1 (the SDK caches what it fetched)", len(rows))
	}
	r := rows[0]
	if r.Decision != audit.DecisionAllow || r.Policy != "payments-api-reads-s3" || r.Channel != broker.ChannelAWS ||
		r.Attestor != "kubernetes" || r.Subject != "system:serviceaccount:payments:api" ||
		r.PeerUID != int64(os.Getuid()) || r.PeerPID != int64(os.Getpid()) ||
		r.Method != http.MethodGet || r.Path != "/creds" || r.TargetHost != "" ||
		!strings.HasPrefix(r.LeaseID, awsprov.Kind+":") || r.Provider != awsprov.Kind {
		t.Errorf("decision row %+v", r)
	}
	// The lease runs for the policy's ttl, from its issue, which comes a
	// moment after the decision began (the row's time); the SDK's cache (an
	// expiry window of five minutes) refreshes ahead of the Expiration it
	// read.
	if d := r.ExpiresAt.Sub(r.Time); d <= 14*time.Minute || d > 15*time.Minute+r.Latency {
		t.Errorf("the lease runs %v, want the policy's 15m", d)
	}
	if !got.Expires.Before(r.ExpiresAt) {
		t.Errorf("the SDK keeps the credentials until %v, past their expiry %v", got.Expires, r.ExpiresAt)
	}

	// No secret in the logs or the audit database.
	db, err := os.ReadFile(h.db)
	if err != nil {
		t.Fatal(err)
	}
	logs := h.logs.String()
	for name, secret := range map[string]string{"secret access key": got.SecretAccessKey, "session token": got.SessionToken, "MinIO root password": h.minio.RootPassword} {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s is in the logs", name)
		}
		if bytes.Contains(db, []byte(secret)) {
			t.Errorf("the %s is in the audit database", name)
		}
	}
}

// TestSDKRefused: callers lacking either piece of evidence get no
// credentials — the SDK's Retrieve fails with the endpoint's reason — and
// each refusal is a decision row.
func TestSDKRefused(t *testing.T) {
	h := newHarness(t)
	other := oidctest.NewRSAKey(t, "k1") // same kid, a key the cluster never published
	for _, tc := range []struct {
		name     string
		token    string // "" for no token file
		status   string // in the SDK's error
		decision string
		reason   string // in the row's reason
	}{
		{"no token", "", "unauthenticated", audit.DecisionError, "no Authorization header"},
		{"a token signed by another key", token(t, other, "payments", "api"), "unauthenticated", audit.DecisionError, "kubernetes"},
		{"another namespace's token", token(t, h.key, "billing", "api"), "denied", audit.DecisionDeny, ""},
		{"not a token", "hello world", "bad_request", audit.DecisionError, "Authorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := ""
			if tc.token != "" {
				file = h.tokenFile(t, tc.token)
			}
			isolate(t, h.url+"/creds", file)
			before := len(h.decisions(t))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := cfg.Credentials.Retrieve(ctx)
			if err == nil {
				t.Fatalf("the SDK got credentials from %q", got.Source)
			}
			if !strings.Contains(err.Error(), tc.status) {
				t.Errorf("the SDK's error %q does not say %q", err, tc.status)
			}
			t.Logf("the SDK says: %v", err)
			rows := h.decisions(t)[before:]
			if len(rows) != 1 {
				t.Fatalf("%d new decision rows, want 1", len(rows))
			}
			r := rows[0]
			if r.Decision != tc.decision || !strings.Contains(r.Reason, tc.reason) || r.Channel != broker.ChannelAWS ||
				r.PeerUID != int64(os.Getuid()) || r.LeaseID != "" {
				t.Errorf("decision row %+v, want %s with reason containing %q", r, tc.decision, tc.reason)
			}
			if tc.token != "" && strings.Contains(h.logs.String(), tc.token) {
				t.Error("the token is in the logs")
			}
		})
	}
}

// TestOtherUIDDenied: the right service-account token presented by a
// process of another uid (nobody, running curl) is denied — the caller's
// process identity counts as well as its token.
func TestOtherUIDDenied(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatalf("this test runs curl as nobody, which needs root; running as uid %d", os.Getuid())
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl, the other-uid caller of this test, is not installed: %v", err)
	}
	h := newHarness(t)
	tok := token(t, h.key, "payments", "api")
	run := func(uid uint32) (string, string) { return curlAs(t, curl, h.url+"/creds", int(uid), tok) }
	status, body := run(65534)
	if status != "403" || !strings.Contains(body, `"code":"denied"`) {
		t.Fatalf("curl as nobody: %s %s, want 403 denied", status, body)
	}
	rows := h.decisions(t)
	if len(rows) != 1 || rows[0].Decision != audit.DecisionDeny || rows[0].PeerUID != 65534 || rows[0].Subject != "system:serviceaccount:payments:api" {
		t.Fatalf("decision rows %+v, want one deny of payments:api from uid 65534", rows)
	}
	// The same token from this test's uid is allowed.
	if status, body := run(uint32(os.Getuid())); status != "200" || !strings.Contains(body, `"AccessKeyId"`) {
		t.Fatalf("curl as uid %d: %s, want 200 with credentials", os.Getuid(), status)
	}
}

// curlAs fetches url with curl as uid, with an Authorization header when
// auth is not "", and returns the status and the body.
func curlAs(t *testing.T, curl, url string, uid int, auth string) (status, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"-sS", "-o", "-", "-w", "\n%{http_code}"}
	if auth != "" {
		args = append(args, "-H", "Authorization: "+auth)
	}
	cmd := exec.CommandContext(ctx, curl, append(args, url)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("curl as uid %d: %v: %s", uid, err, errOut.String())
	}
	s := out.String()
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		t.Fatalf("curl wrote no status: %q", s)
	}
	return s[i+1:], s[:i]
}

// TestRequestShapes: what the endpoint refuses before a credential is
// obtained, each still a recorded decision, in the JSON error shape with
// the code at the top level. The endpoint runs under broker.LimitListener,
// through which callers are still attested.
func TestRequestShapes(t *testing.T) {
	h := newHarness(t, listener.WithConnLimit(broker.LimitConfig{Name: "aws", Max: 4}))
	tok := token(t, h.key, "payments", "api")
	for _, tc := range []struct {
		name    string
		method  string
		auth    []string
		status  int
		code    string
		creds   bool
		message string
	}{
		{"GET with the bare token", "GET", []string{tok}, 200, "", true, ""},
		{"GET with Bearer", "GET", []string{"Bearer " + tok}, 200, "", true, ""},
		{"GET with bearer, lower case", "GET", []string{"bearer " + tok}, 200, "", true, ""},
		{"POST", "POST", []string{tok}, 400, "bad_request", false, "only GET"},
		{"HEAD", "HEAD", []string{tok}, 400, "", false, ""},
		{"PUT", "PUT", []string{tok}, 400, "bad_request", false, "only GET"},
		{"two Authorization headers", "GET", []string{tok, tok}, 400, "bad_request", false, "more than one"},
		{"Basic", "GET", []string{"Basic dXNlcjpwYXNz"}, 400, "bad_request", false, "token itself"},
		{"no header", "GET", nil, 401, "unauthenticated", false, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"},
		{"Bearer alone", "GET", []string{"Bearer"}, 401, "unauthenticated", false, "no Authorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.decisions(t))
			req, err := http.NewRequest(tc.method, h.url+"/any/path", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header["Authorization"] = tc.auth
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, headers %v, want %d, no-store, JSON", resp.StatusCode, resp.Header, tc.status)
			}
			if tc.creds {
				var c map[string]string
				if err := json.Unmarshal(body, &c); err != nil || c["AccessKeyId"] == "" || c["Token"] == "" {
					t.Errorf("body is not credentials (%v)", err)
				}
			} else if tc.method != "HEAD" {
				var e struct {
					Code, Message string
					Error         struct {
						Code, Message string
						DecisionID    string `json:"decision_id"`
					}
				}
				if err := json.Unmarshal(body, &e); err != nil || e.Code != tc.code || e.Error.Code != tc.code ||
					!strings.Contains(e.Message, tc.message) || e.Message != e.Error.Message || e.Error.DecisionID == "" {
					t.Errorf("error body %s (%v), want code %q and a message containing %q", body, err, tc.code, tc.message)
				}
				if strings.Contains(string(body), tok) {
					t.Error("the error quotes the token")
				}
			}
			rows := h.decisions(t)[before:]
			if len(rows) != 1 || rows[0].Method != tc.method || rows[0].Path != "/any/path" || (rows[0].Decision == audit.DecisionAllow) != tc.creds {
				t.Errorf("decision rows %+v, want one for %s /any/path", rows, tc.method)
			}
		})
	}
}

// BenchmarkFetch measures one fetch as an SDK makes it on a cache miss,
// through aws-sdk-go-v2's endpointcreds provider: attestation of the TCP
// caller from the socket table, verification of the Kubernetes token
// (cached by the broker after the first), policy, AssumeRole at MinIO's
// STS, the audit commit, and the answer.
func BenchmarkFetch(b *testing.B) {
	h := newHarness(b)
	tok := token(b, h.key, "payments", "api")
	p := endpointcreds.New(h.url+"/creds", func(o *endpointcreds.Options) { o.AuthorizationToken = tok })
	ctx := context.Background()
	for b.Loop() {
		if _, err := p.Retrieve(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
