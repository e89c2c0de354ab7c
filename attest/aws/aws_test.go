package aws

import (
	"github.com/credbroker/credbroker/attest/aws/ststest"

	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/credbroker/credbroker/attest"
)

const (
	testServerID = "credbroker.test"
	testAccount  = "123456789012"
	roleARN      = "arn:aws:sts::123456789012:assumed-role/payments/session-1"
	userARN      = "arn:aws:iam::123456789012:user/ops/alice"
)

var t0 = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

type env struct {
	sts               *ststest.STS
	a                 *Attestor
	now               atomic.Pointer[time.Time]
	logs              *syncBuffer
	id, secret, token string
	creds             credentials.StaticCredentialsProvider
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newEnv starts a fake STS holding a random key for arn and an Attestor
// pointed at it, with the clock at t0.
func newEnv(t testing.TB, arn, userID string, session bool) *env {
	e := &env{sts: ststest.New(t), logs: &syncBuffer{}}
	e.id, e.secret, e.token = e.sts.AddKey(arn, userID, testAccount, session)
	e.creds = credentials.NewStaticCredentialsProvider(e.id, e.secret, e.token)
	now := t0
	e.now.Store(&now)
	a, err := New(Config{
		ServerID:    testServerID,
		STSEndpoint: e.sts.Server.URL,
		HTTPClient:  e.sts.Server.Client(),
		Now:         func() time.Time { return *e.now.Load() },
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	return e
}

func (e *env) sign(t testing.TB, at time.Time) Request {
	t.Helper()
	r, err := Sign(context.Background(), e.creds, testServerID, "", e.sts.Server.URL, at)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// signCustom signs like Sign but lets edit change the request before signing.
func (e *env) signCustom(t testing.TB, edit func(*http.Request)) Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.sts.Server.URL+"/", strings.NewReader(getCallerIdentityBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set(ServerIDHeader, testServerID)
	edit(req)
	c, _ := e.creds.Retrieve(context.Background())
	sum := sha256.Sum256([]byte(getCallerIdentityBody))
	if err := v4.NewSigner().SignHTTP(context.Background(), c, req, hex.EncodeToString(sum[:]), "sts", "us-east-1", t0); err != nil {
		t.Fatal(err)
	}
	return Request{Method: "POST", URL: e.sts.Server.URL + "/", Headers: req.Header.Clone(), Body: getCallerIdentityBody}
}

func signature(r Request) string {
	a := http.Header(r.Headers).Get("Authorization")
	_, sig, _ := strings.Cut(a, "Signature=")
	return sig
}

// viaJSON sends r through the socket API encoding and ParseRequest.
func viaJSON(t testing.TB, r Request) Request {
	t.Helper()
	body, err := json.Marshal(map[string]any{"aws_iam": r})
	if err != nil {
		t.Fatal(err)
	}
	var outer struct {
		AWSIAM json.RawMessage `json:"aws_iam"`
	}
	if err := json.Unmarshal(body, &outer); err != nil {
		t.Fatal(err)
	}
	got, err := ParseRequest(outer.AWSIAM)
	if err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	return got
}

func TestAttestHappyPath(t *testing.T) {
	for _, tc := range []struct {
		name, arn, userID string
		session           bool
		want              attest.Identity
	}{
		{
			name: "assumed role", arn: roleARN, userID: "AROAEXAMPLEROLEID:session-1", session: true,
			want: attest.Identity{Method: "aws", Subject: "arn:aws:iam::123456789012:role/payments", Claims: map[string]any{
				"account": testAccount, "role_name": "payments", "session_name": "session-1",
				"principal_id": "AROAEXAMPLEROLEID:session-1", "arn": roleARN,
			}},
		},
		{
			name: "iam user", arn: userARN, userID: "AIDAEXAMPLEUSERID",
			want: attest.Identity{Method: "aws", Subject: userARN, Claims: map[string]any{
				"account": testAccount, "user_name": "alice", "principal_id": "AIDAEXAMPLEUSERID", "arn": userARN,
			}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.arn, tc.userID, tc.session)
			r := viaJSON(t, e.sign(t, t0.Add(-time.Minute)))
			// An unsigned header the caller adds is never forwarded.
			r.Headers["X-Forwarded-Host"] = []string{"evil.example"}
			id, err := e.a.Attest(context.Background(), r)
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if !reflect.DeepEqual(id, tc.want) {
				t.Errorf("identity = %#v\nwant %#v", id, tc.want)
			}
			if h := e.sts.LastHeader(); h.Get("X-Forwarded-Host") != "" || h.Get(ServerIDHeader) != testServerID {
				t.Errorf("STS received headers %v", h)
			}
			if !strings.Contains(e.logs.String(), "aws attestor: attested") {
				t.Errorf("no debug log line: %q", e.logs.String())
			}
			checkNoSecrets(t, e.logs.String(), e, signature(r))
		})
	}
}

func checkNoSecrets(t *testing.T, s string, e *env, sig string) {
	t.Helper()
	for what, secret := range map[string]string{"secret key": e.secret, "session token": e.token, "signature": sig} {
		if secret != "" && strings.Contains(s, secret) {
			t.Errorf("%q contains the %s", s, what)
		}
	}
}

func TestAttestRefuses(t *testing.T) {
	type tc struct {
		name   string
		req    func(*testing.T, *env) Request
		setup  func(*testing.T, *env)
		want   string
		noCall bool // STS must not be called
	}
	signed := func(edit func(*Request)) func(*testing.T, *env) Request {
		return func(t *testing.T, e *env) Request {
			r := e.sign(t, t0)
			edit(&r)
			return r
		}
	}
	stsAnswers := func(status int, body string) func(*testing.T, *env) {
		return func(t *testing.T, e *env) {
			e.sts.SetOverride(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(status)
				w.Write([]byte(body))
			})
		}
	}
	goodXML := fmt.Sprintf(ststest.OKXML, roleARN, "AROAX:session-1", testAccount)
	cases := []tc{
		{name: "missing server-id header", want: reasonServerID, noCall: true,
			req: func(t *testing.T, e *env) Request {
				return e.signCustom(t, func(r *http.Request) { r.Header.Del(ServerIDHeader) })
			}},
		{name: "server-id present but unsigned", want: reasonServerID, noCall: true,
			req: func(t *testing.T, e *env) Request {
				r := e.signCustom(t, func(r *http.Request) { r.Header.Del(ServerIDHeader) })
				r.Headers[ServerIDHeader] = []string{testServerID}
				return r
			}},
		{name: "wrong server-id", want: reasonWrongServerID, noCall: true,
			req: func(t *testing.T, e *env) Request {
				r, err := Sign(context.Background(), e.creds, "other-broker", "", e.sts.Server.URL, t0)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}},
		{name: "server-id twice", want: reasonWrongServerID, noCall: true,
			req: func(t *testing.T, e *env) Request {
				return e.signCustom(t, func(r *http.Request) { r.Header.Add(ServerIDHeader, "x") })
			}},
		{name: "another host", want: reasonHost, noCall: true,
			req: signed(func(r *Request) { r.URL = "https://evil.example/" })},
		{name: "another port", want: reasonHost, noCall: true,
			req: signed(func(r *Request) { r.URL = strings.Replace(r.URL, "127.0.0.1:", "127.0.0.1:1", 1) })},
		{name: "http scheme", want: reasonHost, noCall: true,
			req: signed(func(r *Request) { r.URL = strings.Replace(r.URL, "https:", "http:", 1) })},
		{name: "path", want: reasonHost, noCall: true,
			req: signed(func(r *Request) { r.URL += "x" })},
		{name: "query", want: reasonHost, noCall: true,
			req: signed(func(r *Request) { r.URL += "?Action=AssumeRole" })},
		{name: "userinfo", want: reasonHost, noCall: true,
			req: signed(func(r *Request) { r.URL = strings.Replace(r.URL, "https://", "https://u:p@", 1) })},
		{name: "another action", want: reasonAction, noCall: true,
			req: signed(func(r *Request) { r.Body = "Action=AssumeRole&Version=2011-06-15&RoleArn=x" })},
		{name: "extra body parameters", want: reasonExtraBody, noCall: true,
			req: signed(func(r *Request) { r.Body += "&Foo=bar" })},
		{name: "reordered body", want: reasonExtraBody, noCall: true,
			req: signed(func(r *Request) { r.Body = "Version=2011-06-15&Action=GetCallerIdentity" })},
		{name: "GET", want: reasonMethod, noCall: true,
			req: signed(func(r *Request) { r.Method = "GET" })},
		{name: "stale date", want: reasonStale, noCall: true,
			req: func(t *testing.T, e *env) Request { return e.sign(t, t0.Add(-DefaultMaxAge-time.Second)) }},
		{name: "future date", want: reasonStale, noCall: true,
			req: func(t *testing.T, e *env) Request { return e.sign(t, t0.Add(maxFutureSkew+time.Second)) }},
		{name: "unsigned date", want: reasonDate, noCall: true,
			req: signed(func(r *Request) {
				a := r.Headers["Authorization"][0]
				r.Headers["Authorization"] = []string{strings.Replace(a, ";x-amz-date", "", 1)}
			})},
		{name: "another region", want: reasonRegion, noCall: true,
			req: func(t *testing.T, e *env) Request {
				r, err := Sign(context.Background(), e.creds, testServerID, "eu-west-1", e.sts.Server.URL, t0)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}},
		{name: "no authorization", want: reasonAuthz, noCall: true,
			req: signed(func(r *Request) { delete(r.Headers, "Authorization") })},
		{name: "signed header missing", want: reasonSignedMissing, noCall: true,
			req: signed(func(r *Request) { delete(r.Headers, "Content-Type") })},
		{name: "replay of an accepted request", want: reasonReplay,
			req: func(t *testing.T, e *env) Request {
				r := e.sign(t, t0)
				if _, err := e.a.Attest(context.Background(), r); err != nil {
					t.Fatalf("first Attest: %v", err)
				}
				e.sts.Calls.Store(0)
				e.now.Store(ptr(t0.Add(DefaultMaxAge))) // still within MaxAge
				return r
			}, noCall: true},
		{name: "tampered signature", want: reasonRejected + ": SignatureDoesNotMatch",
			req: signed(func(r *Request) {
				a := r.Headers["Authorization"][0]
				last := a[len(a)-1]
				flip := byte('0')
				if last == '0' {
					flip = '1'
				}
				r.Headers["Authorization"] = []string{a[:len(a)-1] + string(flip)}
			})},
		{name: "tampered signed header", want: reasonRejected + ": SignatureDoesNotMatch",
			req: signed(func(r *Request) { r.Headers[NonceHeader] = []string{"00"} })},
		{name: "STS redirect refused and not followed", want: reasonRedirect,
			req: signed(func(*Request) {}),
			setup: func(t *testing.T, e *env) {
				var hits atomic.Int64
				target := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					hits.Add(1)
					fmt.Fprintf(w, ststest.OKXML, roleARN, "AROAX:s", testAccount)
				}))
				t.Cleanup(func() {
					target.Close()
					if hits.Load() != 0 {
						t.Error("redirect was followed")
					}
				})
				e.sts.SetOverride(func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, target.URL+"/", http.StatusFound)
				})
			}},
		{name: "STS 500", want: reasonUnavailable, req: signed(func(*Request) {}),
			setup: stsAnswers(500, "")},
		{name: "malformed XML", want: reasonMalformed, req: signed(func(*Request) {}),
			setup: stsAnswers(200, "<GetCallerIdentityResponse")},
		{name: "XML with an extra element", want: reasonMalformed, req: signed(func(*Request) {}),
			setup: stsAnswers(200, strings.Replace(goodXML, "<Account>", "<Extra>x</Extra><Account>", 1))},
		{name: "XML with two Arns", want: reasonMalformed, req: signed(func(*Request) {}),
			setup: stsAnswers(200, strings.Replace(goodXML, "<Account>", "<Arn>arn:aws:iam::123456789012:role/admin</Arn><Account>", 1))},
		{name: "oversized XML", want: reasonMalformed, req: signed(func(*Request) {}),
			setup: stsAnswers(200, strings.Replace(goodXML, "</GetCallerIdentityResponse>", strings.Repeat(" ", maxSTSResponse)+"</GetCallerIdentityResponse>", 1))},
		{name: "root principal", want: reasonPrincipal, req: signed(func(*Request) {}),
			setup: stsAnswers(200, fmt.Sprintf(ststest.OKXML, "arn:aws:iam::123456789012:root", "123456789012", testAccount))},
	}
	var errs []string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, roleARN, "AROAX:session-1", true)
			if c.setup != nil {
				c.setup(t, e)
			}
			r := c.req(t, e)
			calls := e.sts.Calls.Load()
			_, err := e.a.Attest(context.Background(), r)
			var ae *attest.Error
			if !errors.As(err, &ae) || !errors.Is(err, attest.ErrFailed) {
				t.Fatalf("err = %v, want *attest.Error", err)
			}
			if ae.Reason != c.want || ae.Method != attest.MethodAWS {
				t.Errorf("reason = %q, want %q (err %v)", ae.Reason, c.want, err)
			}
			if c.noCall && e.sts.Calls.Load() != calls {
				t.Error("STS was called")
			}
			checkNoSecrets(t, err.Error(), e, signature(r))
			checkNoSecrets(t, e.logs.String(), e, signature(r))
			errs = append(errs, err.Error())
		})
	}
	if len(errs) != len(cases) {
		t.Errorf("only %d of %d cases produced an error", len(errs), len(cases))
	}
}

func ptr[T any](v T) *T { return &v }

// A signature refused by STS is not remembered, and one accepted is
// refused again until it is stale anyway.
func TestReplayWindow(t *testing.T) {
	e := newEnv(t, roleARN, "AROAX:s", true)
	r := e.sign(t, t0)
	e.sts.SetOverride(func(w http.ResponseWriter, _ *http.Request) { ststest.WriteError(w, 503, "ServiceUnavailable", "") })
	if _, err := e.a.Attest(context.Background(), r); err == nil {
		t.Fatal("want an error while STS is down")
	}
	e.sts.SetOverride(nil)
	if _, err := e.a.Attest(context.Background(), r); err != nil {
		t.Fatalf("retry after STS failure: %v", err)
	}
	e.now.Store(ptr(t0.Add(DefaultMaxAge + time.Second)))
	_, err := e.a.Attest(context.Background(), r)
	var ae *attest.Error
	if !errors.As(err, &ae) || ae.Reason != reasonStale {
		t.Fatalf("after MaxAge: %v, want stale", err)
	}
	// Two requests signed in the same second differ (nonce) and both pass.
	e.now.Store(ptr(t0))
	for range 2 {
		if _, err := e.a.Attest(context.Background(), e.sign(t, t0)); err != nil {
			t.Fatalf("same-second request: %v", err)
		}
	}
}

func TestReplayCacheFull(t *testing.T) {
	c := newReplayCache(2)
	ctx := context.Background()
	a, b, k := replayKey("a"), replayKey("b"), replayKey("c")
	if c.Reserve(ctx, a, t0.Add(time.Minute), t0) != nil || c.Reserve(ctx, b, t0.Add(2*time.Minute), t0) != nil {
		t.Fatal("reserve failed")
	}
	if got := c.Reserve(ctx, a, t0.Add(time.Minute), t0); got != ErrReplay {
		t.Errorf("reserve(a) again = %v, want replay", got)
	}
	if got := c.Reserve(ctx, k, t0.Add(time.Minute), t0); got != ErrReplayFull {
		t.Errorf("reserve(c) = %v, want full", got)
	}
	if got := c.Reserve(ctx, k, t0.Add(2*time.Minute), t0.Add(time.Minute)); got != nil {
		t.Errorf("reserve(c) after a expired = %v, want ok", got)
	}
}

// failingStore stands for a replay store whose disk refuses writes.
type failingStore struct{ err error }

func (f failingStore) Reserve(context.Context, ReplayKey, time.Time, time.Time) error { return f.err }
func (f failingStore) Release(context.Context, ReplayKey) error                       { return f.err }

// A signature the store cannot record is refused before STS sees it.
func TestReplayStoreFailureRefuses(t *testing.T) {
	e := newEnv(t, roleARN, "AROAX:s", true)
	a, err := New(Config{
		ServerID: testServerID, STSEndpoint: e.sts.Server.URL, HTTPClient: e.sts.Server.Client(),
		Now: func() time.Time { return t0 }, Replay: failingStore{errors.New("disk I/O error")},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := e.sign(t, t0)
	_, err = a.Attest(context.Background(), r)
	var ae *attest.Error
	if !errors.As(err, &ae) || ae.Reason != reasonReplayStore {
		t.Fatalf("Attest = %v, want %q", err, reasonReplayStore)
	}
	if strings.Contains(err.Error(), signature(r)) {
		t.Error("the error holds the signature")
	}
	if n := e.sts.Calls.Load(); n != 0 {
		t.Errorf("STS called %d times", n)
	}
}

func TestConcurrentReplay(t *testing.T) {
	e := newEnv(t, roleARN, "AROAX:s", true)
	r := e.sign(t, t0)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := e.a.Attest(context.Background(), r); err == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Errorf("%d concurrent submissions of one signature passed, want 1", ok.Load())
	}
}

func TestParseRequestRefuses(t *testing.T) {
	good := `{"method":"POST","url":"https://sts.amazonaws.com/","headers":{"X-Amz-Date":["20260102T150405Z"]},"body":"Action=GetCallerIdentity&Version=2011-06-15"}`
	if _, err := ParseRequest([]byte(good)); err != nil {
		t.Fatalf("good request: %v", err)
	}
	for name, raw := range parseRequestBad() {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRequest([]byte(raw))
			var ae *attest.Error
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want *attest.Error", err)
			}
			want := "malformed aws_iam request"
			if name == "oversized" {
				want = "aws_iam request larger than 16 KiB"
			}
			if ae.Reason != want {
				t.Errorf("reason = %q, want %q", ae.Reason, want)
			}
			if strings.Contains(err.Error(), "deadbeef") {
				t.Errorf("error repeats the input: %v", err)
			}
		})
	}
}

func parseRequestBad() map[string]string {
	return map[string]string{
		"oversized":         `{"method":"POST","body":"` + strings.Repeat("a", MaxRequestSize) + `"}`,
		"unknown field":     `{"method":"POST","url":"https://sts.amazonaws.com/","extra":"deadbeef"}`,
		"other case":        `{"Method":"POST"}`,
		"duplicate member":  `{"method":"GET","method":"POST"}`,
		"trailing data":     `{"method":"POST"} {}`,
		"not an object":     `["deadbeef"]`,
		"wrong type":        `{"headers":{"Authorization":"deadbeef"}}`,
		"bad header name":   `{"headers":{"Bad Name":["x"]}}`,
		"CRLF in value":     `{"headers":{"X-A":["a\r\nX-Injected: deadbeef"]}}`,
		"names differ case": `{"headers":{"x-amz-date":["a"],"X-Amz-Date":["b"]}}`,
		"truncated":         `{"method":"POST"`,
		"empty":             ``,
	}
}

func TestIdentityPrincipals(t *testing.T) {
	for _, tc := range []struct {
		arn, account, subject string
	}{
		{"arn:aws:sts::123456789012:assumed-role/payments/s", testAccount, "arn:aws:iam::123456789012:role/payments"},
		{"arn:aws-cn:sts::123456789012:assumed-role/r/s@x.com", testAccount, "arn:aws-cn:iam::123456789012:role/r"},
		{"arn:aws:iam::123456789012:user/alice", testAccount, "arn:aws:iam::123456789012:user/alice"},
		{"arn:aws:iam::123456789012:root", testAccount, ""},
		{"arn:aws:sts::123456789012:federated-user/bob", testAccount, ""},
		{"arn:aws:sts::123456789012:assumed-role/payments/s", "210987654321", ""},
		{"arn:aws:sts::123456789012:assumed-role/payments", testAccount, ""},
		{"arn:aws:sts::123456789012:assumed-role/a/b/c", testAccount, ""},
		{"arn:aws:sts:us-east-1:123456789012:assumed-role/a/b", testAccount, ""},
		{"arn:aws:iam::123456789012:role/payments", testAccount, ""},
	} {
		id, err := callerIdentity{ARN: tc.arn, UserID: "X", Account: tc.account}.identity()
		if tc.subject == "" {
			if err == nil {
				t.Errorf("%s: accepted as %q", tc.arn, id.Subject)
			}
			continue
		}
		if err != nil || id.Subject != tc.subject {
			t.Errorf("%s: subject %q, err %v; want %q", tc.arn, id.Subject, err, tc.subject)
		}
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{ServerID: "x", STSEndpoint: "http://sts.amazonaws.com"},
		{ServerID: "x", STSEndpoint: "https://sts.amazonaws.com/path"},
		{ServerID: "x", MaxAge: time.Hour},
		{ServerID: " x"},
		{ServerID: "x", Region: "US EAST"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := New(Config{ServerID: "x"}); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// BenchmarkAttest measures Attest against the local fake STS; each operation
// includes the HTTPS round trip and the fake's own signature check.
func BenchmarkAttest(b *testing.B) {
	e := newEnv(b, roleARN, "AROAX:s", true)
	a, err := New(Config{
		ServerID: testServerID, STSEndpoint: e.sts.Server.URL, HTTPClient: e.sts.Server.Client(),
		Now: func() time.Time { return t0 }, ReplayCacheSize: b.N + 1,
	})
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]Request, b.N)
	for i := range reqs {
		reqs[i] = e.sign(b, t0)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Attest(context.Background(), reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
}
