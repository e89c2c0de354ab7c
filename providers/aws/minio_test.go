package aws

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/miniotest"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/providertest"
)

// minioRole is the role ARN sent to MinIO, whose AssumeRole ignores it:
// the temporary credentials inherit the signing user's policies.
const minioRole = "arn:aws:iam::123456789012:role/minio-assume"

// minioProvider builds a provider that assumes a role at m with creds.
func minioProvider(t testing.TB, m *miniotest.Server, creds awssdk.CredentialsProvider, logger *slog.Logger) *Provider {
	t.Helper()
	return mustNew(t, Config{Name: "minio-s3", RoleARN: minioRole, Region: miniotest.Region, Endpoint: m.URL, Credentials: creds, Logger: logger})
}

func sdkCreds(c providers.Credential, withToken bool) awssdk.Credentials {
	out := awssdk.Credentials{
		AccessKeyID:     string(c.Data[FieldAccessKeyID].Reveal()),
		SecretAccessKey: string(c.Data[FieldSecretAccessKey].Reveal()),
	}
	if withToken {
		out.SessionToken = string(c.Data[FieldSessionToken].Reveal())
	}
	return out
}

func randomBucket() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "credbroker-" + hex.EncodeToString(b)
}

// useOnS3 proves c works on MinIO's S3: it creates a bucket, puts an
// object and reads it back, each request signed with c.
func useOnS3(ctx context.Context, m *miniotest.Server, c providers.Credential) error {
	creds := sdkCreds(c, true)
	bucket := randomBucket()
	body := []byte("issued by credbroker " + bucket)
	for _, step := range []struct {
		method, path string
		body         []byte
	}{
		{"PUT", "/" + bucket, nil},
		{"PUT", "/" + bucket + "/hello.txt", body},
		{"GET", "/" + bucket + "/hello.txt", nil},
	} {
		status, got, err := m.Do(ctx, creds, step.method, step.path, step.body)
		if err != nil {
			return err
		}
		if status != 200 {
			return fmt.Errorf("%s %s: status %d: %s", step.method, step.path, status, s3Code(got))
		}
		if step.method == "GET" && !bytes.Equal(got, body) {
			return fmt.Errorf("GET %s: read %q, wrote %q", step.path, got, body)
		}
	}
	return nil
}

// s3Code returns the Code element of an S3 error body.
func s3Code(b []byte) string {
	_, rest, ok := strings.Cut(string(b), "<Code>")
	code, _, _ := strings.Cut(rest, "</Code>")
	if !ok {
		return "(no error code)"
	}
	return code
}

// TestMinIO assumes a role at a real MinIO (its STS, signed with the root
// user's keys, which MinIO's AssumeRole accepts) and uses the temporary
// credentials on its S3.
func TestMinIO(t *testing.T) {
	m := miniotest.Start(t)
	ctx := context.Background()
	root := credentials.NewStaticCredentialsProvider(m.RootUser, m.RootPassword, "")
	p := minioProvider(t, m, root, nil)

	c, err := p.Credential(ctx, providers.Request{Name: "minio-s3", TTL: 10 * time.Minute, Identity: unixIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if err := useOnS3(ctx, m, c); err != nil {
		t.Fatalf("the issued credentials do not work on S3: %v", err)
	}
	if !c.ExpiresAt.After(time.Now().Add(9*time.Minute)) || c.ExpiresAt.After(time.Now().Add(10*time.Minute)) {
		t.Errorf("expiry %v, want ten minutes from the issue", c.ExpiresAt)
	}

	t.Run("the session token is required", func(t *testing.T) {
		bucket := randomBucket()
		if status, body, err := m.Do(ctx, sdkCreds(c, true), "PUT", "/"+bucket, nil); err != nil || status != 200 {
			t.Fatalf("with the token: %d %s %v", status, s3Code(body), err)
		}
		status, body, err := m.Do(ctx, sdkCreds(c, false), "GET", "/"+bucket, nil)
		if err != nil || status != 403 {
			t.Fatalf("without the token: status %d (%s), %v; want 403", status, s3Code(body), err)
		}
		t.Logf("without the session token MinIO answers %d %s", status, s3Code(body))
		forged := sdkCreds(c, true)
		forged.SessionToken = forged.SessionToken[:len(forged.SessionToken)-4] + "AAAA"
		if status, body, _ := m.Do(ctx, forged, "GET", "/"+bucket, nil); status != 403 {
			t.Errorf("with an altered token: status %d (%s), want 403", status, s3Code(body))
		}
	})

	t.Run("a wrong secret key", func(t *testing.T) {
		bad := minioProvider(t, m, credentials.NewStaticCredentialsProvider(m.RootUser, m.RootPassword+"x", ""), nil)
		_, err := bad.Credential(ctx, providers.Request{Name: "minio-s3", Identity: unixIdentity})
		var stsErr *Error
		if !errors.As(err, &stsErr) || stsErr.Code != "AccessDenied" || strings.Contains(err.Error(), m.RootPassword) {
			t.Fatalf("error %v, want STS's AccessDenied without the secret key", err)
		}
		t.Logf("MinIO refuses: %v", err)
	})

	t.Run("temporary credentials cannot assume again", func(t *testing.T) {
		chained := minioProvider(t, m, credentials.NewStaticCredentialsProvider(string(c.Data[FieldAccessKeyID].Reveal()), string(c.Data[FieldSecretAccessKey].Reveal()), string(c.Data[FieldSessionToken].Reveal())), nil)
		_, err := chained.Credential(ctx, providers.Request{Name: "minio-s3", Identity: unixIdentity})
		var stsErr *Error
		if !errors.As(err, &stsErr) || strings.Contains(err.Error(), string(c.Data[FieldSessionToken].Reveal())) {
			t.Fatalf("error %v, want STS's refusal without the session token", err)
		}
	})
}

// TestConformanceMinIO runs the provider suite against MinIO: the canary is
// the root user's secret key, Use a signed S3 round trip, and Failing the
// same provider signing with a wrong secret key.
func TestConformanceMinIO(t *testing.T) {
	m := miniotest.Start(t)
	var logs logtest.Buffer
	logger := logs.Logger()
	providertest.Run(t, providertest.Case{
		Kind:     Kind,
		Fields:   (&Config{}).Fields(),
		Provider: minioProvider(t, m, credentials.NewStaticCredentialsProvider(m.RootUser, m.RootPassword, ""), logger),
		Failing:  minioProvider(t, m, credentials.NewStaticCredentialsProvider(m.RootUser, "not-"+m.RootPassword, ""), logger),
		Canary:   m.RootPassword,
		Logs:     logs.String,
		Use: func(ctx context.Context, c providers.Credential) error {
			return useOnS3(ctx, m, c)
		},
	})
}

// BenchmarkIssue measures one issue — the latency the lease manager sees
// on a cache miss — against MinIO's STS (plain HTTP on loopback) and the
// AWS STS stand-in (HTTPS on loopback, with session tags, a source
// identity and an external id): warm, with the connection kept alive
// across iterations, and cold, with a new provider and connection (and,
// for the stand-in, a TLS handshake) per issue, as at the first issue
// after start.
func BenchmarkIssue(b *testing.B) {
	ctx := context.Background()
	req := providers.Request{Name: "bench", TTL: 15 * time.Minute, Identity: k8sIdentity}
	b.Run("minio", func(b *testing.B) {
		m := miniotest.Start(b)
		p := minioProvider(b, m, credentials.NewStaticCredentialsProvider(m.RootUser, m.RootPassword, ""), nil)
		for b.Loop() {
			if _, err := p.Credential(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Cold: a new provider per issue, so each pays for a new connection, as
	// the first issue after start does.
	b.Run("minio-cold", func(b *testing.B) {
		m := miniotest.Start(b)
		root := credentials.NewStaticCredentialsProvider(m.RootUser, m.RootPassword, "")
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			p := minioProvider(b, m, root, nil)
			b.StartTimer()
			if _, err := p.Credential(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("aws-sts-standin-cold", func(b *testing.B) {
		s := startAWSSTS(b)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s.Client().CloseIdleConnections()
			p := s.provider(b, Config{})
			b.StartTimer()
			if _, err := p.Credential(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("aws-sts-standin", func(b *testing.B) {
		s := startAWSSTS(b)
		p := s.provider(b, Config{RoleARN: s.externalRole, ExternalID: testExternalID,
			SessionTags: map[string]string{"namespace": "namespace", "workload": ClaimSubject}, SourceIdentity: ClaimSubject})
		for b.Loop() {
			if _, err := p.Credential(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
