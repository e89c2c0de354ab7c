// Package miniotest starts a real MinIO server for tests: an S3 service
// with an AWS-compatible STS (AssumeRole with a user's keys), on a free
// loopback port, with its data in a temporary directory and random root
// credentials. The server stops, and its directory is removed, when the
// test ends.
//
// The binary is built from the Go module proxy by scripts/peers/minio.sh
// into $CREDBROKER_PEERS/minio-VERSION/minio (CREDBROKER_PEERS defaults to
// ${XDG_CACHE_HOME:-$HOME/.cache}/credbroker-peers); scripts/test.sh runs the
// script before the tests, and Start runs it itself when the binary is
// missing, so `go test` of one package works on its own (the first build
// takes several minutes).
//
// Usage:
//
//	m := miniotest.Start(t)
//	status, body, err := m.Do(ctx, m.Root(), "PUT", "/bucket", nil)
package miniotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Version is the MinIO version scripts/peers/minio.sh builds.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Region is the region MinIO is started with, and signs for.
const Region = "us-east-1"

// Server is a running MinIO.
type Server struct {
	// URL is the S3 and STS endpoint, http://127.0.0.1:PORT.
	URL string
	// RootUser and RootPassword are the root credentials (access key id and
	// secret access key).
	RootUser, RootPassword string

	client *http.Client
}

// Root returns the root credentials as SDK credentials.
func (s *Server) Root() awssdk.Credentials {
	return awssdk.Credentials{AccessKeyID: s.RootUser, SecretAccessKey: s.RootPassword, Source: "miniotest"}
}

// Binary returns the path of the MinIO binary the peer script builds.
func Binary() string {
	peers := os.Getenv("CREDBROKER_PEERS")
	if peers == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		peers = filepath.Join(cache, "credbroker-peers")
	}
	return filepath.Join(peers, "minio-"+Version, "minio")
}

// Start starts MinIO and waits until it answers its liveness endpoint and
// its STS issues credentials; it fails the test when MinIO cannot be built
// or started, or is not ready within two minutes.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := ensureBinary(t)
	dir := t.TempDir()
	s := &Server{
		RootUser:     "minioroot" + randHex(6),
		RootPassword: randHex(20),
		client:       &http.Client{Timeout: 30 * time.Second},
	}
	addr, console := freePort(t), freePort(t)
	s.URL = "http://" + addr

	var out lockedBuffer
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console,
		"--certs-dir", filepath.Join(dir, "certs"), filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.RootUser,
		"MINIO_ROOT_PASSWORD="+s.RootPassword,
		"MINIO_REGION="+Region,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
		"HOME="+dir,
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("miniotest: starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// Liveness says the listener is up; IAM, which STS and temporary
	// credentials need, initialises after it (STS answers 503 until then),
	// so readiness is an AssumeRole that STS accepts.
	for _, probe := range []struct {
		what string
		ok   func(context.Context) bool
	}{
		{"answer /minio/health/live", func(ctx context.Context) bool { return s.answers(ctx, "/minio/health/live") }},
		{"accept an STS AssumeRole", s.stsReady},
	} {
		for !probe.ok(ctx) {
			select {
			case err := <-exited:
				exited <- err // for Cleanup
				t.Fatalf("miniotest: minio exited before it would %s (%v); its output:\n%s", probe.what, err, out.String())
			case <-ctx.Done():
				t.Fatalf("miniotest: minio at %s did not %s within 2 minutes; its output:\n%s", s.URL, probe.what, out.String())
			case <-tick.C:
			}
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("miniotest: minio output:\n%s", out.String())
		}
	})
	return s
}

func (s *Server) answers(ctx context.Context, path string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	if err != nil {
		return false
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stsReady sends an AssumeRole signed by the root user and reports whether
// STS issued credentials (which then expire unused).
func (s *Server) stsReady(ctx context.Context) bool {
	body := "Action=AssumeRole&Version=2011-06-15&DurationSeconds=900"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/", strings.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(ctx, s.Root(), req, hex.EncodeToString(sum[:]), "sts", Region, time.Now()); err != nil {
		return false
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Do sends an S3 request to path (/bucket or /bucket/key), signed with
// creds by the SDK's SigV4 signer, and returns the status and body. A
// session token in creds travels as X-Amz-Security-Token.
func (s *Server) Do(ctx context.Context, creds awssdk.Credentials, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("miniotest: %w", err)
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hash, "s3", Region, time.Now()); err != nil {
		return 0, nil, fmt.Errorf("miniotest: signing: %w", err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("miniotest: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// ensureBinary returns the MinIO binary, running scripts/peers/minio.sh
// when it is missing.
func ensureBinary(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	script, err := findScript()
	if err != nil {
		t.Fatalf("miniotest: %s is missing and %v", bin, err)
	}
	t.Logf("miniotest: %s is missing; building it with %s (several minutes)", bin, script)
	cmd := exec.Command("bash", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("miniotest: %s failed: %v\n%s", script, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("miniotest: %s ran but %s is still missing:\n%s", script, bin, out)
	}
	return bin
}

// findScript looks for scripts/peers/minio.sh from the working directory
// (a package directory under go test) up to the module root.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "peers", "minio.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return "", errors.New("scripts/peers/minio.sh is not in the module")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/peers/minio.sh not found above the working directory")
		}
		dir = parent
	}
}

// freePort returns a loopback address with a port free at the time of the
// call.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("miniotest: %v", err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// lockedBuffer collects the server's output from its two streams.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
