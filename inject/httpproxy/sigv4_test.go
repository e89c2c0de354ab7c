package httpproxy_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/httpproxy"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/miniotest"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// s3Credential is the name of the aws_sts credential the SigV4 listener
// signs with.
const s3Credential = "app-s3"

// s3Policies lets this test's processes (uid self: root, over TCP
// loopback, attested from the kernel's socket table) use the credential
// over http.
const s3Policies = `policies:
  - name: app-uses-s3
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [app-s3]
    when: 'request.channel == "http"'
`

// minioRole is the role ARN sent to MinIO's STS, which ignores it: the
// temporary keys inherit the root user's policies.
const minioRole = "arn:aws:iam::123456789012:role/minio-assume"

// Dummy keys the unmodified S3 client signs with.
const (
	dummyKeyID  = "AKIADUMMYDUMMYDUMMY0"
	dummySecret = "dummy-secret-key-the-listener-replaces"
)

// recording is a broker.Provider that keeps what it issued, so that the
// test can look for the issued secret key and session token in the logs.
type recording struct {
	broker.Provider
	mu     sync.Mutex
	issued []providers.Credential
}

func (r *recording) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	c, err := r.Provider.Credential(ctx, req)
	if err == nil {
		r.mu.Lock()
		r.issued = append(r.issued, c)
		r.mu.Unlock()
	}
	return c, err
}

// secrets returns every issued secret key and session token.
func (r *recording) secrets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.issued {
		out = append(out, string(c.Data[awsprov.FieldSecretAccessKey].Reveal()), string(c.Data[awsprov.FieldSessionToken].Reveal()))
	}
	return out
}

// s3Harness is a real broker (unix attestor, policies, the aws_sts
// provider assuming a role at a real MinIO, an audit log) behind a SigV4
// listener on TCP loopback whose upstream is that MinIO.
type s3Harness struct {
	minio *miniotest.Server
	url   string // the listener, http://127.0.0.1:PORT
	db    string
	logs  *logtest.Buffer
	prov  *recording
}

func newS3Harness(t *testing.T) *s3Harness {
	t.Helper()
	h := &s3Harness{minio: miniotest.Start(t), db: filepath.Join(t.TempDir(), "audit.db"), logs: &logtest.Buffer{}}
	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(s3Policies)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	alog, err := audit.Open(ctx, audit.Config{Path: h.db})
	if err != nil {
		t.Fatal(err)
	}
	auditDone := make(chan error, 1)
	go func() { auditDone <- alog.Run(ctx) }()
	peer, err := unixattest.New(unixattest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	sts, err := awsprov.New(awsprov.Config{
		Name:        s3Credential,
		RoleARN:     minioRole,
		Region:      miniotest.Region,
		Endpoint:    h.minio.URL,
		Credentials: credentials.NewStaticCredentialsProvider(h.minio.RootUser, h.minio.RootPassword, ""),
		TTL:         15 * time.Minute,
		Logger:      h.logs.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.prov = &recording{Provider: sts}
	b, err := broker.New(broker.Config{
		Peer:        peer,
		Credentials: map[string]broker.Provider{s3Credential: h.prov},
		Kinds:       map[string]string{s3Credential: awsprov.Kind},
		Policies:    set,
		Audit:       alog,
		Logger:      h.logs.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.url = "http://" + ln.Addr().String()
	p, err := httpproxy.New(httpproxy.Config{
		Listen:     ln.Addr().String(),
		Upstream:   h.minio.URL,
		Credential: s3Credential,
		SigV4:      &httpproxy.SigV4Config{Service: "s3", Region: miniotest.Region},
	}, b, listener.WithLogger(h.logs.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
		cancel()
		<-auditDone
		alog.Close()
	})
	return h
}

// s3Client is an unmodified aws-sdk-go-v2 S3 client with dummy keys,
// path-style, at endpoint.
func s3Client(t *testing.T, endpoint string) *s3.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion(miniotest.Region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(dummyKeyID, dummySecret, "")),
		config.WithRetryMaxAttempts(1),
		config.WithLogger(logging.Nop{}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = awssdk.String(endpoint)
		o.UsePathStyle = true
	})
}

// objectSize is the size of the object put and got through the listener.
const objectSize = 8 << 20

// TestSigV4MinIO puts and gets an object through the SigV4 listener with
// an unmodified S3 client holding dummy keys; MinIO verifies every
// signature, made with temporary keys its STS issued to the broker. The
// same client without the listener is refused by MinIO.
func TestSigV4MinIO(t *testing.T) {
	h := newS3Harness(t)
	ctx := context.Background()
	client := s3Client(t, h.url)
	bucket := "credbroker-" + strings.ToLower(rand.Text()[:10])
	const key = "dir/hello world+ünïcode.bin"

	// The body is a file: the SDK reads it once for its checksum (over
	// http:// it sends checksums as headers, not aws-chunked trailers) and
	// then streams it; the listener streams it on, unsigned.
	file := filepath.Join(t.TempDir(), "object")
	src := payload(7, objectSize)
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, sum), src); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := hex.EncodeToString(sum.Sum(nil))

	t.Run("CreateBucket", func(t *testing.T) {
		if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("PutObject", func(t *testing.T) {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: awssdk.String(key), Body: f,
			ContentType: awssdk.String("application/octet-stream")}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("GetObject", func(t *testing.T) {
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: awssdk.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		defer out.Body.Close()
		got := sha256.New()
		n, err := io.Copy(got, out.Body)
		if err != nil || n != objectSize {
			t.Fatalf("read %d bytes: %v", n, err)
		}
		if g := hex.EncodeToString(got.Sum(nil)); g != want {
			t.Errorf("got sha256 %s, put %s", g, want)
		}
	})
	t.Run("GetObject range", func(t *testing.T) {
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: awssdk.String(key), Range: awssdk.String("bytes=10-19")})
		if err != nil {
			t.Fatal(err)
		}
		defer out.Body.Close()
		b, _ := io.ReadAll(out.Body)
		whole, _ := io.ReadAll(io.LimitReader(payload(7, objectSize), 20))
		if string(b) != string(whole[10:20]) {
			t.Errorf("range read %x, want %x", b, whole[10:20])
		}
	})
	t.Run("ListObjectsV2", func(t *testing.T) {
		out, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: awssdk.String("dir/")})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Contents) != 1 || awssdk.ToString(out.Contents[0].Key) != key || awssdk.ToInt64(out.Contents[0].Size) != objectSize {
			t.Errorf("listed %+v, want %q of %d bytes", out.Contents, key, objectSize)
		}
	})
	t.Run("DeleteObject", func(t *testing.T) {
		if _, err := client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: awssdk.String(key)}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("without the listener MinIO refuses the dummy keys", func(t *testing.T) {
		direct := s3Client(t, h.minio.URL)
		_, err := direct.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket})
		var apiErr smithy.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidAccessKeyId" {
			t.Fatalf("error %v, want MinIO's InvalidAccessKeyId", err)
		}
	})
	t.Run("metadata and storage class are signed through", func(t *testing.T) {
		_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: awssdk.String("meta"),
			Body: strings.NewReader("x"), Metadata: map[string]string{"owner": "app"}, Tagging: awssdk.String("team=payments")})
		if err != nil {
			t.Fatal(err)
		}
		head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: awssdk.String("meta")})
		if err != nil {
			t.Fatal(err)
		}
		if head.Metadata["owner"] != "app" || awssdk.ToInt32(head.TagCount) != 1 {
			t.Errorf("stored metadata %v, %d tags; want owner=app and one tag", head.Metadata, awssdk.ToInt32(head.TagCount))
		}
	})
	t.Run("a copy source is refused, not dropped", func(t *testing.T) {
		_, err := client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &bucket, Key: awssdk.String("copy"),
			CopySource: awssdk.String(bucket + "/meta")})
		// The SDK reads S3's XML error shape, not the listener's JSON
		// one, so only the status shows; TestSigV4Refusals reads the
		// message.
		var re interface{ HTTPStatusCode() int }
		if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusBadRequest {
			t.Fatalf("error %v, want the listener's 400", err)
		}
	})

	// Every request is a decision row, the refused one too, with its reason.
	rows, refused := 0, 0
	err = audit.Query(ctx, h.db, audit.Filter{Credential: s3Credential, Kind: audit.KindDecision}, func(r *audit.Record) error {
		switch {
		case r.Channel != broker.ChannelHTTP:
			t.Errorf("row on channel %q: %+v", r.Channel, r)
		case r.Decision == audit.DecisionError && strings.Contains(r.Reason, "X-Amz-Copy-Source") && r.Path == "/"+bucket+"/copy":
			refused++
		case r.Decision != audit.DecisionAllow:
			t.Errorf("row %s %q on %s %s", r.Decision, r.Reason, r.Method, r.Path)
		}
		rows++
		return nil
	})
	if err != nil || rows < 9 || refused != 1 {
		t.Errorf("%d decision rows, %d of the refused request (%v), want one per request through the listener", rows, refused, err)
	}
	logs := h.logs.String()
	secrets := append(h.prov.secrets(), h.minio.RootPassword)
	if len(secrets) < 3 {
		t.Fatal("the provider issued nothing")
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Error("a secret key or session token is in the log")
		}
	}
}
