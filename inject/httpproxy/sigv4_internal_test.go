package httpproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/providers"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// Test keys of the SigV4 tests.
const (
	testKeyID   = "ASIATESTKEYID0000001"
	testSecret  = "test-secret-access-key-canary"
	testToken   = "test-session-token-canary"
	testService = "sts"
	testRegion  = "eu-west-3"
)

// grantDecider grants every request an aws_sts credential with data,
// counting its calls.
type grantDecider struct {
	data    map[string]providers.Secret
	calls   atomic.Int64
	invalid atomic.Int64 // calls refused as invalid, as the broker does
}

func (d *grantDecider) Decide(_ context.Context, req *broker.Request) (*broker.Grant, error) {
	d.calls.Add(1)
	if req.Invalid != nil {
		d.invalid.Add(1)
		return nil, &broker.Error{Kind: broker.KindBadRequest, Message: req.Invalid.Error(), DecisionID: "d-1"}
	}
	return &broker.Grant{DecisionID: "d-1", Name: "s3", Credential: providers.Credential{Data: d.data}}, nil
}

func awsData(id, secret, token string) map[string]providers.Secret {
	return map[string]providers.Secret{
		awsprov.FieldAccessKeyID:     providers.NewSecret([]byte(id)),
		awsprov.FieldSecretAccessKey: providers.NewSecret([]byte(secret)),
		awsprov.FieldSessionToken:    providers.NewSecret([]byte(token)),
	}
}

// verifySigV4 checks r's SigV4 signature as an AWS service does: it
// rebuilds the request from the headers r's Authorization says are
// signed, hashes the body it received (or, for S3, takes
// X-Amz-Content-Sha256), signs that with secret at X-Amz-Date, and
// compares. It stands in for an AWS service other than S3, which MinIO
// is not.
func verifySigV4(r *http.Request, body []byte, secret, service, region string) error {
	auth := r.Header.Values("Authorization")
	if len(auth) != 1 {
		return fmt.Errorf("%d Authorization headers", len(auth))
	}
	rest, ok := strings.CutPrefix(auth[0], "AWS4-HMAC-SHA256 ")
	if !ok {
		return fmt.Errorf("not SigV4: %q", auth[0])
	}
	fields := map[string]string{}
	for _, f := range strings.Split(rest, ", ") {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	id, _, _ := strings.Cut(fields["Credential"], "/")
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return fmt.Errorf("X-Amz-Date: %v", err)
	}
	hash := r.Header.Get("X-Amz-Content-Sha256")
	if service != "s3" {
		sum := sha256.Sum256(body)
		hash = hex.EncodeToString(sum[:])
	}
	re, err := http.NewRequest(r.Method, "http://"+r.Host+r.RequestURI, nil)
	if err != nil {
		return err
	}
	re.ContentLength = int64(len(body))
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		if h != "host" && h != "content-length" {
			re.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	creds := aws.Credentials{AccessKeyID: id, SecretAccessKey: secret, SessionToken: r.Header.Get("X-Amz-Security-Token")}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = service == "s3" })
	if err := signer.SignHTTP(context.Background(), creds, re, hash, service, region, when); err != nil {
		return err
	}
	if got, want := auth[0], re.Header.Get("Authorization"); got != want {
		return fmt.Errorf("signature does not match:\n got %s\nwant %s", got, want)
	}
	return nil
}

// sigv4Proxy is a SigV4 listener for service in front of upstream.
func sigv4Proxy(t *testing.T, upstream, service string, d Decider) *Proxy {
	t.Helper()
	p, err := New(Config{Listen: "127.0.0.1:1", Upstream: upstream, Credential: "s3",
		SigV4: &SigV4Config{Service: service, Region: testRegion}}, d)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSigV4Service signs requests for a service other than S3 against a
// local server that verifies SigV4 as AWS does (the AWS STS, DynamoDB, …
// stand-in): bodies are read whole and their hash signed, up to
// MaxSignedBody; larger ones are refused with 413 and never sent.
func TestSigV4Service(t *testing.T) {
	type seen struct {
		err    error
		length int64
		token  string
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{verifySigV4(r, b, testSecret, testService, testRegion), r.ContentLength, r.Header.Get("X-Amz-Security-Token")}
	}))
	defer up.Close()
	d := &grantDecider{data: awsData(testKeyID, testSecret, testToken)}
	srv := httptest.NewServer(sigv4Proxy(t, up.URL+"/base", testService, d).Handler())
	defer srv.Close()
	form := "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx"
	tests := []struct {
		name    string
		method  string
		target  string
		body    io.Reader
		chunked bool
		headers map[string]string
		status  int
	}{
		{"form post", "POST", "/", strings.NewReader(form), false, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 200},
		{"no body, query", "GET", "/x/a%20b?Action=GetCallerIdentity&Version=2011-06-15", nil, false, nil, 200},
		{"client signature replaced", "POST", "/", strings.NewReader(form), false, map[string]string{
			"Authorization": "AWS4-HMAC-SHA256 Credential=AKIADUMMY/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00",
			"X-Amz-Date":    "20200101T000000Z", "X-Amz-Security-Token": "client-token", "X-Amz-Content-Sha256": strings.Repeat("0", 64),
		}, 200},
		{"chunked body is sent with a length", "POST", "/", strings.NewReader(form), true, nil, 200},
		{"the largest body", "PUT", "/big", bytes.NewReader(make([]byte, MaxSignedBody)), false, nil, 200},
		{"too large, announced", "PUT", "/big", bytes.NewReader(make([]byte, MaxSignedBody+1)), false, nil, 413},
		{"too large, chunked", "PUT", "/big", bytes.NewReader(make([]byte, MaxSignedBody+1)), true, nil, 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if tc.chunked && body != nil {
				body = io.MultiReader(body) // hides the length
			}
			req, _ := http.NewRequest(tc.method, srv.URL+tc.target, body)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.status != 200 {
				if !strings.Contains(string(b), `"code":"too_large"`) {
					t.Errorf("refusal %s", b)
				}
				return
			}
			s := <-got
			if s.err != nil {
				t.Fatalf("the upstream refuses the signature: %v", s.err)
			}
			if s.token != testToken {
				t.Errorf("session token %q at the upstream", s.token)
			}
			if tc.chunked && s.length < 0 {
				t.Error("a buffered body was sent chunked")
			}
		})
	}
	select {
	case s := <-got:
		t.Errorf("a refused request reached the upstream: %+v", s)
	default:
	}
}

// TestSigV4Refusals checks the requests a signing listener refuses before
// any decision, because re-signing them would change what they do, and
// the client headers it drops without refusing.
func TestSigV4Refusals(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := verifySigV4(r, nil, testSecret, "s3", testRegion); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
		}
	}))
	defer up.Close()
	tests := []struct {
		name    string
		service string
		target  string
		headers map[string]string
		length  int64
		status  int
		msg     string // in the refusal
	}{
		{"aws-chunked", "s3", "/b/k", map[string]string{"Content-Encoding": "aws-chunked"}, 0, 400, "aws-chunked"},
		{"aws-chunked among encodings", "s3", "/b/k", map[string]string{"Content-Encoding": "gzip, AWS-Chunked"}, 0, 400, "aws-chunked"},
		{"streaming signed chunks", "s3", "/b/k", map[string]string{"X-Amz-Content-Sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}, 0, 400, "aws-chunked"},
		{"streaming trailer", "s3", "/b/k", map[string]string{"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}, 0, 400, "aws-chunked"},
		{"decoded length", "s3", "/b/k", map[string]string{"X-Amz-Decoded-Content-Length": "5"}, 0, 400, "aws-chunked"},
		{"trailer", "s3", "/b/k", map[string]string{"X-Amz-Trailer": "x-amz-checksum-crc32"}, 0, 400, "aws-chunked"},
		{"copy source", "s3", "/b/k", map[string]string{"X-Amz-Copy-Source": "/other/k"}, 0, 400, "X-Amz-Copy-Source"},
		{"acl", "s3", "/b/k", map[string]string{"X-Amz-Acl": "public-read"}, 0, 400, "X-Amz-Acl"},
		{"grant", "s3", "/b/k", map[string]string{"X-Amz-Grant-Read": "uri=http://acs.amazonaws.com/groups/global/AllUsers"}, 0, 400, "X-Amz-Grant-Read"},
		{"unknown", "s3", "/b/k", map[string]string{"X-Amz-Something-New": "1"}, 0, 400, "X-Amz-Something-New"},
		{"presigned", "s3", "/b/k?X-Amz-Signature=00&X-Amz-Credential=x", nil, 0, 400, "presigned"},
		{"presigned, lowercase", "s3", "/b/k?x-amz-security-token=t", nil, 0, 400, "presigned"},
		{"query does not parse", "s3", "/b/k?a=%zz", nil, 0, 400, "does not parse"},
		{"too large for sts", "sts", "/", nil, MaxSignedBody + 1, 413, "at most"},
		{"signature inputs and checksums dropped", "s3", "/b/k?list-type=2", map[string]string{
			"X-Amz-Date": "20200101T000000Z", "X-Amz-Security-Token": "t", "X-Amz-Content-Sha256": strings.Repeat("a", 64),
			"X-Amz-Checksum-Crc32": "AAAAAA==", "X-Amz-Sdk-Checksum-Algorithm": "CRC32", "X-Amz-Checksum-Mode": "ENABLED",
			"X-Amz-User-Agent": "sdk", "Authorization": "AWS4-HMAC-SHA256 x",
		}, 0, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &grantDecider{data: awsData(testKeyID, testSecret, testToken)}
			h := sigv4Proxy(t, up.URL, tc.service, d).Handler()
			req := httptest.NewRequest("PUT", tc.target, nil)
			req.ContentLength = tc.length
			for k, v := range tc.headers {
				req.Header[k] = []string{v}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status == 200 {
				if d.calls.Load() != 1 {
					t.Errorf("%d decisions", d.calls.Load())
				}
				return
			}
			if d.calls.Load() != 1 || d.invalid.Load() != 1 {
				t.Errorf("the refused request was decided %d times, %d as invalid; want once, as invalid (so it is recorded)", d.calls.Load(), d.invalid.Load())
			}
			if !strings.Contains(rec.Body.String(), `"decision_id":"d-1"`) {
				t.Errorf("refusal %s names no decision", rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tc.msg) || rec.Header().Get("Connection") != "close" {
				t.Errorf("refusal %s (Connection %q), want it to mention %q", rec.Body, rec.Header().Get("Connection"), tc.msg)
			}
		})
	}
}

// TestSigV4ForwardsObjectHeaders checks that the client's X-Amz-* headers
// describing the request's own object or operation reach the upstream and
// are covered by the signature, unless the client made them hop-by-hop.
func TestSigV4ForwardsObjectHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := verifySigV4(r, nil, testSecret, "s3", testRegion); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
		}
		seen <- r.Header.Clone()
	}))
	defer up.Close()
	d := &grantDecider{data: awsData(testKeyID, testSecret, testToken)}
	h := sigv4Proxy(t, up.URL, "s3", d).Handler()
	req := httptest.NewRequest("PUT", "/b/k", nil)
	forwarded := map[string]string{
		"X-Amz-Meta-Owner":                                "app",
		"X-Amz-Server-Side-Encryption":                    "aws:kms",
		"X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id":     "alias/app",
		"X-Amz-Storage-Class":                             "STANDARD_IA",
		"X-Amz-Tagging":                                   "team=payments",
		"X-Amz-Target":                                    "DynamoDB_20120810.GetItem",
		"X-Amz-Expected-Bucket-Owner":                     "123456789012",
		"X-Amz-Server-Side-Encryption-Customer-Algorithm": "AES256",
	}
	for k, v := range forwarded {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Amz-Meta-Hop", "dropped")
	req.Header.Set("Connection", "X-Amz-Meta-Hop")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	got := <-seen
	signed := got.Get("Authorization")
	for k, v := range forwarded {
		if got.Get(k) != v {
			t.Errorf("upstream got %s %q, want %q", k, got.Get(k), v)
		}
		if !strings.Contains(signed, strings.ToLower(k)) {
			t.Errorf("%s is not among the signed headers: %s", k, signed)
		}
	}
	if v := got.Get("X-Amz-Meta-Hop"); v != "" {
		t.Errorf("a hop-by-hop header was forwarded: %q", v)
	}
}

// TestSigV4BadCredential checks a credential that cannot sign — a field
// missing, a control character in the session token — is refused with
// 502 after its decision, without its values in the reply.
func TestSigV4BadCredential(t *testing.T) {
	tests := []struct {
		name string
		data map[string]providers.Secret
		want string
	}{
		{"no access key id", map[string]providers.Secret{awsprov.FieldSecretAccessKey: providers.NewSecret([]byte(testSecret))}, "access_key_id is missing"},
		{"no secret", awsData(testKeyID, "", testToken), "secret_access_key is missing"},
		{"token splits the header", awsData(testKeyID, testSecret, testToken+"\r\nX-Injected: 1"), "session_token holds control characters"},
		{"key id breaks the scope", awsData(testKeyID+"/x", testSecret, testToken), "access_key_id holds characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := sigv4Proxy(t, "https://s3.example.com", "s3", &grantDecider{data: tc.data})
			rec := httptest.NewRecorder()
			p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/b", nil))
			if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("status %d %s, want 502 saying %q", rec.Code, rec.Body, tc.want)
			}
			if strings.Contains(rec.Body.String(), "canary") {
				t.Error("the reply holds a secret")
			}
		})
	}
}

// FuzzSigV4Rewrite checks that, whatever headers and query a client
// sends, a request the listener does not refuse leaves for the upstream
// with exactly one Authorization (SigV4, the granted key id), one
// X-Amz-Date, the granted session token, and no X-Amz-* value of the
// client's; and that the signature verifies.
func FuzzSigV4Rewrite(f *testing.F) {
	f.Add("Authorization", "AWS4-HMAC-SHA256 Credential=AKIADUMMY/x", "X-Amz-Date", "20200101T000000Z", "list-type=2", "/b/k")
	f.Add("x-amz-security-token", "client", "X-Amz-Security-Token", "client2", "", "/b")
	f.Add("Connection", "X-Amz-Date, Authorization", "X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD", "", "/")
	f.Add("X-Amz-Checksum-Crc32", "AAAAAA==", "Content-Encoding", "aws-chunked", "", "/b/k")
	f.Add("X-Amz-Meta-A", "b", "Te", "trailers", "X-Amz-Signature=00", "/b/a%2Fb")
	f.Add("Proxy-Authorization", "Basic x", "Range", "bytes=0-1", "uploads", "/b/k%20k")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, query, path string) {
		// What Go's server hands a handler: a parsed origin-form target,
		// valid header names in canonical form, values without control
		// characters, no Host header.
		u, err := url.ParseRequestURI(path)
		if err != nil || !strings.HasPrefix(path, "/") || strings.Contains(path, "?") || u.Host != "" {
			return
		}
		u.RawQuery = query
		for _, k := range []*string{&k1, &k2} {
			if !isToken(*k) || strings.EqualFold(*k, "Host") {
				return
			}
			*k = http.CanonicalHeaderKey(*k)
		}
		for _, v := range []string{v1, v2} {
			if strings.IndexFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) >= 0 {
				return
			}
		}
		in := &http.Request{Method: "GET", URL: u, Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody}
		in.Header[k1] = append(in.Header[k1], v1)
		in.Header[k2] = append(in.Header[k2], v2)
		in.Header.Add(k1, v2)
		p := sigv4Proxy(t, "https://s3.example.com/base", "s3", nopDecider{})
		when := time.Date(2026, 11, 30, 1, 2, 3, 0, time.UTC)
		p.sig.now = func() time.Time { return when }
		if status, _ := p.sig.check(in); status != 0 {
			return
		}
		creds, err := awsCredentials(awsData(testKeyID, testSecret, testToken))
		if err != nil {
			t.Fatal(err)
		}
		in = in.WithContext(context.WithValue(context.Background(), injectionKey{}, &injection{creds: creds, payloadHash: emptyPayloadHash}))
		out := in.Clone(in.Context())
		p.rewrite(&httputil.ProxyRequest{In: in, Out: out})

		if got := out.Header.Values("Authorization"); len(got) != 1 || !strings.HasPrefix(got[0], "AWS4-HMAC-SHA256 Credential="+testKeyID+"/20261130/"+testRegion+"/s3/aws4_request, ") {
			t.Fatalf("Authorization %q", got)
		}
		want := map[string]string{"X-Amz-Date": "20261130T010203Z", "X-Amz-Security-Token": testToken, "X-Amz-Content-Sha256": emptyPayloadHash}
		for k, vs := range out.Header {
			ck := http.CanonicalHeaderKey(k)
			if ck == "Authorization" && k != ck || strings.HasPrefix(ck, "Proxy-") || ck == "Connection" {
				t.Errorf("client header %q survives", k)
			}
			if !strings.HasPrefix(ck, "X-Amz-") {
				continue
			}
			if forwarded(ck) {
				// The client's own, as sent, and covered by the signature.
				if !slices.Equal(vs, in.Header.Values(k)) {
					t.Errorf("%q = %q at the upstream, the client sent %q", k, vs, in.Header.Values(k))
				}
				if !strings.Contains(out.Header.Get("Authorization"), strings.ToLower(ck)) {
					t.Errorf("%q is forwarded unsigned", k)
				}
				continue
			}
			if w, ok := want[k]; !ok || len(vs) != 1 || vs[0] != w {
				t.Errorf("%q = %q at the upstream", k, vs)
			}
			delete(want, k)
		}
		if len(want) != 0 {
			t.Errorf("missing %v", want)
		}
		for _, k := range []string{"X-Amz-Signature", "X-Amz-Credential"} {
			if out.URL.Query().Has(k) {
				t.Errorf("query parameter %s survives", k)
			}
		}
		// The upstream sees the request as the transport writes it.
		out.Host = out.URL.Host
		out.RequestURI = out.URL.RequestURI()
		if err := verifySigV4(out, nil, testSecret, "s3", testRegion); err != nil {
			t.Fatal(err)
		}
	})
}
