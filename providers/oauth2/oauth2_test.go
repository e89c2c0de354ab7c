package oauth2

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/providertest"
)

var epoch = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return epoch }

// Client secrets with characters that form encoding changes, so that the
// redaction of each form a request carries them in is exercised.
const (
	basicSecret = "b4sic+secret/=&CANARY-7f3a"
	postSecret  = "p0st secret%CANARY-91c2"
	audience    = "https://api.partner.example"
)

// fixture is an authorization server with two registered clients:
// "basic-client" (client_secret_basic, scopes orders:read and orders:write,
// audience required, expires_in 300) and "post-client"
// (client_secret_post, scope reports:read, no expires_in).
type fixture struct {
	srv                 *authServer
	basicFile, postFile string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	srv := newAuthServer(t)
	srv.addClient("basic-client", testClient{secret: basicSecret, method: "basic", scopes: []string{"orders:read", "orders:write"}, audiences: []string{audience}, expiresIn: 300})
	srv.addClient("post-client", testClient{secret: postSecret, method: "post", scopes: []string{"reports:read"}})
	dir := t.TempDir()
	return &fixture{
		srv:       srv,
		basicFile: writeFile(t, filepath.Join(dir, "basic-secret"), basicSecret+"\n"),
		postFile:  writeFile(t, filepath.Join(dir, "post-secret"), postSecret+"\n"),
	}
}

func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// basic returns a working configuration of basic-client.
func (f *fixture) basic() Config {
	return Config{
		Name:             "partner-api",
		TokenURL:         f.srv.url("/token"),
		ClientID:         "basic-client",
		ClientSecretFile: f.basicFile,
		Scopes:           []string{"orders:read", "orders:write"},
		Audience:         audience,
		CAFile:           f.srv.caFile,
		Now:              fixedNow,
	}
}

// post returns a working configuration of post-client.
func (f *fixture) post() Config {
	return Config{
		Name:             "reports-api",
		TokenURL:         f.srv.url("/token"),
		ClientID:         "post-client",
		ClientSecretFile: f.postFile,
		Scopes:           []string{"reports:read"},
		AuthStyle:        AuthPost,
		CAFile:           f.srv.caFile,
		Now:              fixedNow,
	}
}

// use calls the protected resource with the credential, as a workload
// given the token does.
func (f *fixture) use(ctx context.Context, c providers.Credential) error {
	pem, err := os.ReadFile(f.srv.caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.url("/resource"), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", string(c.Data[FieldTokenType].Reveal())+" "+string(c.Data[FieldToken].Reveal()))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("resource answered %s", resp.Status)
	}
	return nil
}

var caller = attest.Identity{Method: attest.MethodUnix, Subject: "unix:uid:1000"}

func TestIssue(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		name     string
		cfg      func() Config
		reqTTL   time.Duration
		want     time.Duration
		wantForm url.Values // parameters the server must have received
		noForm   []string   // parameters it must not have received
	}{
		{
			name: "basic: expires_in below the caps",
			cfg: func() Config {
				c := f.basic()
				c.TTL, c.Params = time.Hour, map[string]string{"resource": audience + "/orders"}
				return c
			},
			want: 300 * time.Second,
			wantForm: url.Values{"grant_type": {"client_credentials"}, "scope": {"orders:read orders:write"},
				"audience": {audience}, "resource": {audience + "/orders"}},
			noForm: []string{"client_id", "client_secret"},
		},
		{
			name:   "basic: a request ttl below expires_in wins",
			cfg:    f.basic,
			reqTTL: time.Minute,
			want:   time.Minute,
		},
		{
			name: "basic: a credential ttl below expires_in wins",
			cfg: func() Config {
				c := f.basic()
				c.TTL = 2 * time.Minute
				return c
			},
			reqTTL: time.Hour,
			want:   2 * time.Minute,
		},
		{
			name: "post: no expires_in gets the credential ttl",
			cfg: func() Config {
				c := f.post()
				c.TTL = 10 * time.Minute
				return c
			},
			want:     10 * time.Minute,
			wantForm: url.Values{"client_id": {"post-client"}, "client_secret": {postSecret}, "scope": {"reports:read"}},
			noForm:   []string{"audience"},
		},
		{
			name:   "post: no expires_in gets the request ttl",
			cfg:    f.post,
			reqTTL: 2 * time.Minute,
			want:   2 * time.Minute,
		},
		{
			name: "post: no expires_in and no ttl gets DefaultTTL",
			cfg:  f.post,
			want: DefaultTTL,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg()
			p, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			c, err := p.Credential(ctx, providers.Request{Name: cfg.Name, TTL: tt.reqTTL, Identity: caller})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(c.ID, "oauth2:") || len(c.ID) < len("oauth2:")+32 || c.Kind != Kind || c.Credential != cfg.Name || c.Subject != caller.Subject {
				t.Errorf("lease %+v", c.Lease)
			}
			if got := c.ExpiresAt.Sub(epoch); got != tt.want {
				t.Errorf("lifetime %v, want %v", got, tt.want)
			}
			if len(c.Data) != 2 || c.Data[FieldToken].IsZero() || string(c.Data[FieldTokenType].Reveal()) != "Bearer" {
				t.Errorf("data %v: want a token and token_type Bearer", c.Data)
			}
			if err := f.use(ctx, c); err != nil {
				t.Errorf("the token does not work at the resource: %v", err)
			}
			form, _, _ := f.srv.stats()
			for k, v := range tt.wantForm {
				if got := form[k]; strings.Join(got, ",") != strings.Join(v, ",") {
					t.Errorf("token request %s = %q, want %q", k, got, v)
				}
			}
			for _, k := range tt.noForm {
				if form.Has(k) {
					t.Errorf("token request carries %s", k)
				}
			}
		})
	}
}

// TestErrors checks that every way a token request fails gives an error
// that says what happened and carries no form of the client secret.
func TestErrors(t *testing.T) {
	f := newFixture(t)
	wrongFile := writeFile(t, filepath.Join(t.TempDir(), "wrong"), "not+the/secret")
	down := newAuthServer(t)
	downURL := down.url("/token")
	down.srv.Close()

	for _, tt := range []struct {
		name   string
		cfg    func() Config
		want   []string // substrings of the error
		absent []string // substrings the error must not have
		code   string   // the ResponseError's Code, when one is expected
	}{
		{
			name: "wrong secret, basic",
			cfg:  func() Config { c := f.basic(); c.ClientSecretFile = wrongFile; return c },
			want: []string{`credential "partner-api"`, "token endpoint answered 401 Unauthorized: invalid_client", "Client authentication failed"},
			code: "invalid_client",
		},
		{
			name: "wrong secret, post",
			cfg:  func() Config { c := f.post(); c.ClientSecretFile = wrongFile; return c },
			want: []string{"401 Unauthorized: invalid_client"},
			code: "invalid_client",
		},
		{
			name: "post for a client registered for basic",
			cfg:  func() Config { c := f.basic(); c.AuthStyle = AuthPost; return c },
			want: []string{"401 Unauthorized: invalid_client"},
			code: "invalid_client",
		},
		{
			name: "unknown client",
			cfg:  func() Config { c := f.basic(); c.ClientID = "nobody"; return c },
			want: []string{"401 Unauthorized: invalid_client"},
			code: "invalid_client",
		},
		{
			name: "scope not allowed",
			cfg:  func() Config { c := f.basic(); c.Scopes = []string{"orders:read", "admin"}; return c },
			want: []string{"400 Bad Request: invalid_scope", "scope admin is not allowed"},
			code: "invalid_scope",
		},
		{
			name: "audience not allowed",
			cfg:  func() Config { c := f.basic(); c.Audience = "https://other.example"; return c },
			want: []string{"403 Forbidden: access_denied", "Service not enabled within domain: https://other.example"},
			code: "access_denied",
		},
		{
			name: "audience missing",
			cfg:  func() Config { c := f.basic(); c.Audience = ""; return c },
			want: []string{"403 Forbidden: access_denied"},
			code: "access_denied",
		},
		{
			name:   "server error echoing the request in plain text",
			cfg:    func() Config { c := f.post(); c.TokenURL = f.srv.url("/canned/server-error"); return c },
			want:   []string{"token endpoint answered 500 Internal Server Error"},
			absent: []string{"internal error handling", "grant_type"},
		},
		{
			name: "error description echoing the body",
			cfg:  func() Config { c := f.post(); c.TokenURL = f.srv.url("/canned/echo-error"); return c },
			want: []string{"400 Bad Request: invalid_request", "could not parse", redacted},
			code: "invalid_request",
		},
		{
			name: "error description echoing the Authorization header",
			cfg:  func() Config { c := f.basic(); c.TokenURL = f.srv.url("/canned/echo-error"); return c },
			want: []string{"400 Bad Request: invalid_request", "Basic " + redacted},
			code: "invalid_request",
		},
		{
			name:   "control characters and a long description",
			cfg:    func() Config { c := f.basic(); c.TokenURL = f.srv.url("/canned/hostile-error"); return c },
			want:   []string{"invalid_request?[31m?", `"bad??request? xxxx`, `xxx..."`},
			absent: []string{"\x1b", "\r", "\n", "\x00", strings.Repeat("x", maxDescriptionLen+1)},
		},
		{
			name: "form-encoded error",
			cfg:  func() Config { c := f.post(); c.TokenURL = f.srv.url("/canned/form-error"); return c },
			want: []string{"400 Bad Request: invalid_client", "unknown client"},
			code: "invalid_client",
		},
		{
			name: "error in a 200 answer",
			cfg:  func() Config { c := f.basic(); c.TokenURL = f.srv.url("/canned/error-in-200"); return c },
			want: []string{"200 OK: invalid_scope", "no scopes for you"},
			code: "invalid_scope",
		},
		{
			name:   "not JSON",
			cfg:    func() Config { c := f.post(); c.TokenURL = f.srv.url("/canned/not-json"); return c },
			want:   []string{"token endpoint answered: the response is not a token response"},
			absent: []string{"welcome", "html"},
		},
		{
			name:   "expires_in not a number, echoing the request",
			cfg:    func() Config { c := f.post(); c.TokenURL = f.srv.url("/canned/bad-expires"); return c },
			want:   []string{"the response is not a token response"},
			absent: []string{"soon", "tok-"},
		},
		{
			name: "no access_token",
			cfg:  func() Config { c := f.basic(); c.TokenURL = f.srv.url("/canned/no-token"); return c },
			want: []string{"the response has no access_token"},
		},
		{
			name:   "already expired",
			cfg:    func() Config { c := f.basic(); c.TokenURL = f.srv.url("/canned/expired"); return c },
			want:   []string{"already expired"},
			absent: []string{"expired-token"},
		},
		{
			name:   "token unfit for a header",
			cfg:    func() Config { c := f.basic(); c.TokenURL = f.srv.url("/canned/header-injection"); return c },
			want:   []string{"outside printable ASCII"},
			absent: []string{"Injected"},
		},
		{
			name: "redirect to another host",
			cfg:  func() Config { c := f.post(); c.TokenURL = f.srv.url("/canned/redirect-other"); return c },
			want: []string{"token endpoint " + f.srv.url("/canned/redirect-other"), "refused a redirect from 127.0.0.1"},
		},
		{
			name: "redirect loop",
			cfg:  func() Config { c := f.basic(); c.TokenURL = f.srv.url("/canned/redirect-loop"); return c },
			want: []string{"stopped after 3 redirects"},
		},
		{
			name: "endpoint down",
			cfg:  func() Config { c := f.basic(); c.TokenURL = downURL; return c },
			want: []string{"token endpoint " + downURL, "connection refused"},
		},
		{
			name: "certificate not trusted without ca_file",
			cfg:  func() Config { c := f.basic(); c.CAFile = ""; return c },
			want: []string{"certificate signed by unknown authority"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg()
			p, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Credential(context.Background(), providers.Request{Name: cfg.Name, Identity: caller})
			if err == nil {
				t.Fatal("issued a credential")
			}
			msg := err.Error()
			t.Log(msg)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q", w)
				}
			}
			for _, a := range append(tt.absent, leakForms(cfg.ClientID)...) {
				if strings.Contains(msg, a) {
					t.Errorf("error carries %q", a)
				}
			}
			if len(msg) > 600 {
				t.Errorf("error is %d bytes long", len(msg))
			}
			if !strings.HasPrefix(msg, "oauth2: ") {
				t.Error("error lacks the package prefix")
			}
			var re *ResponseError
			if errors.As(err, &re) != (tt.code != "") && tt.code != "" {
				t.Errorf("error is not a *ResponseError")
			}
			if tt.code != "" && re != nil && re.Code != tt.code {
				t.Errorf("code %q, want %q", re.Code, tt.code)
			}
		})
	}
	if _, _, hits := f.srv.stats(); hits != 0 {
		t.Errorf("the other host got %d requests", hits)
	}
}

// leakForms are the forms of both clients' secrets a leak would show.
func leakForms(clientID string) []string {
	var out []string
	for _, s := range []string{basicSecret, postSecret} {
		out = append(out, secretForms(clientID, []byte(s))...)
	}
	return append(out, "CANARY")
}

func TestRedirectSameHost(t *testing.T) {
	f := newFixture(t)
	for _, cfg := range []Config{f.basic(), f.post()} {
		cfg.TokenURL = f.srv.url("/canned/redirect-same")
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := p.Credential(context.Background(), providers.Request{Name: cfg.Name, Identity: caller})
		if err != nil {
			t.Fatalf("%s: %v", cfg.ClientID, err)
		}
		if err := f.use(context.Background(), c); err != nil {
			t.Errorf("%s: %v", cfg.ClientID, err)
		}
	}
}

// TestSecretRotation rotates the client secret at the server, then in the
// file: the provider fails in between and works again without a restart.
func TestSecretRotation(t *testing.T) {
	f := newFixture(t)
	cfg := f.basic()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	issue := func() error {
		_, err := p.Credential(context.Background(), providers.Request{Name: cfg.Name, Identity: caller})
		return err
	}
	if err := issue(); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	const rotated = "rotated-secret-CANARY-55e0"
	f.srv.rotate("basic-client", rotated)
	err = issue()
	var re *ResponseError
	if !errors.As(err, &re) || re.Code != "invalid_client" {
		t.Fatalf("with the old secret: %v, want invalid_client", err)
	}
	next := cfg.ClientSecretFile + ".new"
	writeFile(t, next, rotated+"\n")
	if err := os.Rename(next, cfg.ClientSecretFile); err != nil {
		t.Fatal(err)
	}
	if err := issue(); err != nil {
		t.Fatalf("after rotating the file: %v", err)
	}

	// A vanished or emptied file is an error naming the file.
	writeFile(t, cfg.ClientSecretFile, "\n")
	if err := issue(); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty file: %v", err)
	}
	os.Remove(cfg.ClientSecretFile)
	if err := issue(); err == nil || !strings.Contains(err.Error(), "client_secret_file") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("removed file: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, cfg := range []Config{f.basic(), f.post()} {
		t.Run(cfg.ClientID, func(t *testing.T) {
			cfg.RevocationURL = f.srv.url("/revoke")
			p, err := NewRevoking(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c, err := p.Credential(ctx, providers.Request{Name: cfg.Name, Identity: caller})
			if err != nil {
				t.Fatal(err)
			}
			kept, err := p.Credential(ctx, providers.Request{Name: cfg.Name, Identity: caller})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Revoke(ctx, c.Lease); err != nil {
				t.Fatal(err)
			}
			if err := f.use(ctx, c); err == nil {
				t.Error("the revoked token still works")
			}
			if err := f.use(ctx, kept); err != nil {
				t.Errorf("revoking one token ended another: %v", err)
			}
			if err := p.Revoke(ctx, c.Lease); err != nil {
				t.Errorf("second revoke: %v", err)
			}
		})
	}
}

func TestRevokeErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cfg := f.basic()
	cfg.RevocationURL = f.srv.url("/canned/revoke-unavailable")
	now := epoch
	cfg.Now = func() time.Time { return now }
	p, err := NewRevoking(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Credential(ctx, providers.Request{Name: cfg.Name, Identity: caller})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Revoke(ctx, c.Lease)
	if err == nil || !strings.Contains(err.Error(), "revocation endpoint answered 503 Service Unavailable: temporarily_unavailable") {
		t.Fatalf("revoke at a failing endpoint: %v", err)
	}
	for _, a := range append(leakForms(cfg.ClientID), string(c.Data[FieldToken].Reveal())) {
		if strings.Contains(err.Error(), a) {
			t.Errorf("error carries %q: %v", a, err)
		}
	}
	if !strings.Contains(err.Error(), c.ID) {
		t.Errorf("error does not name the lease: %v", err)
	}
	// A lease it does not know, or one that has expired, needs no request:
	// the endpoint, which always fails, is not asked.
	if err := p.Revoke(ctx, providers.Lease{ID: "oauth2:unknown", Kind: Kind}); err != nil {
		t.Errorf("unknown lease: %v", err)
	}
	now = c.ExpiresAt
	if err := p.Revoke(ctx, c.Lease); err != nil {
		t.Errorf("expired lease: %v", err)
	}
}

// TestConformance runs the provider suite twice: a revoking basic client,
// and a post client without revocation. The failing provider's endpoint
// echoes the request, client secret included, in its error.
func TestConformance(t *testing.T) {
	f := newFixture(t)
	const plainSecret = "CANARYplainSecret0b8e"
	f.srv.addClient("plain-client", testClient{secret: plainSecret, method: "post", expiresIn: 120})
	plain := f.post()
	plain.ClientID, plain.Scopes = "plain-client", nil
	plain.ClientSecretFile = writeFile(t, filepath.Join(t.TempDir(), "plain"), plainSecret)
	for _, tt := range []struct {
		name   string
		cfg    Config
		canary string
	}{
		{"basic, revoking", f.basic(), basicSecret},
		{"post", f.post(), postSecret},
		// A secret that form encoding leaves as is, so that the failing
		// endpoint's echo carries the canary verbatim.
		{"post, plain secret", plain, plainSecret},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logtest.Buffer{}
			build := func(tokenURL string) Issuer {
				cfg := tt.cfg
				cfg.Now = nil
				cfg.TokenURL = tokenURL
				cfg.Logger = logs.Logger()
				if cfg.ClientID == "basic-client" {
					cfg.RevocationURL = f.srv.url("/revoke")
				}
				p, err := Open(cfg)
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			p := build(f.srv.url("/token"))
			if _, ok := p.(providers.Revoker); ok != (tt.cfg.ClientID == "basic-client") {
				t.Fatalf("Open built a %T", p)
			}
			providertest.Run(t, providertest.Case{
				Kind:     Kind,
				Fields:   (&Config{}).Fields(),
				Provider: p,
				Failing:  build(f.srv.url("/canned/echo-error")),
				Canary:   tt.canary,
				Logs:     logs.String,
				Use:      f.use,
				Name:     tt.cfg.Name,
			})
			if !strings.Contains(logs.String(), "oauth2 token issued") {
				t.Errorf("no issue logged: %q", logs.String())
			}
		})
	}
}

// TestContextCancelledDuringRequest cancels while the token endpoint holds
// the request, and while it holds the body of its answer: either way the
// error says the request was cancelled (wraps context.Canceled), not that
// the server answered badly.
func TestContextCancelledDuringRequest(t *testing.T) {
	for _, path := range []string{"/canned/hang", "/canned/hang-body"} {
		t.Run(path, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.basic()
			cfg.TokenURL = f.srv.url(path)
			p, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				<-f.srv.hung
				cancel()
			}()
			_, err = p.Credential(ctx, providers.Request{Name: cfg.Name})
			<-done
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v does not wrap context.Canceled", err)
			}
		})
	}
}

// TestContextCancelledAsAnswered: the caller cancels as the token
// endpoint's answer arrives, and the answer, cut short, does not parse (the
// outcome of the race between a cancelled request and its reply, seen one
// run in a few hundred on a loaded machine in the test above). The error
// still says the request was cancelled.
func TestContextCancelledAsAnswered(t *testing.T) {
	f := newFixture(t)
	cfg := f.basic()
	cfg.CAFile = ""
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		cancel()
		return &http.Response{
			StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader("")), Request: r,
		}, nil
	})
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Credential(ctx, providers.Request{Name: cfg.Name})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v does not wrap context.Canceled", err)
	}
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestTransport: a caller-supplied transport replaces the default one and
// decides what it trusts.
func TestTransport(t *testing.T) {
	f := newFixture(t)
	cfg := f.basic()
	cfg.CAFile = ""
	cfg.Transport = f.srv.srv.Client().Transport // trusts the server's certificate
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Credential(context.Background(), providers.Request{Name: cfg.Name, Identity: caller}); err != nil {
		t.Fatal(err)
	}
}

// TestPing checks the start-up probe: the token endpoint answers over
// verified TLS without being sent the secret; one that is down, or whose
// certificate is not trusted, fails.
func TestPing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	p, err := Open(f.basic())
	if err != nil {
		t.Fatal(err)
	}
	_, before, _ := f.srv.stats()
	if err := p.(providers.Pinger).Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if _, after, _ := f.srv.stats(); after != before {
		t.Errorf("the ping made %d token requests", after-before)
	}
	down := newAuthServer(t)
	downURL := down.url("/token")
	down.srv.Close()
	untrusted := f.basic()
	untrusted.CAFile = ""
	for name, cfg := range map[string]Config{
		"down":      func() Config { c := f.basic(); c.TokenURL = downURL; return c }(),
		"untrusted": untrusted,
	} {
		p, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.(providers.Pinger).Ping(ctx); err == nil {
			t.Errorf("%s: the ping passed", name)
		}
	}
}
