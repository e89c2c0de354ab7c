package aws

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/attest/oidc/oidctest"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/ststest"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/providertest"
)

// awsSTS is the AWS STS stand-in (internal/ststest) with the broker's own
// IAM user, whose long-term key signs AssumeRole, and roles to assume.
type awsSTS struct {
	*ststest.STS
	brokerARN      string
	keyID, secret  string
	role           string // trusts the broker
	externalRole   string // trusts the broker with ExternalId "payments-broker"
	webRole        string // trusts the OIDC issuer below
	issuerKey      *oidctest.Key
	issuer         string
	otherUserRole  string // trusts another user only
	shortRole      string // MaxSessionDuration 1h
	base           awssdk.CredentialsProvider
	wrongSecretKey awssdk.CredentialsProvider
}

const (
	testExternalID = "payments-broker"
	testAudience   = "sts.amazonaws.com"
)

func startAWSSTS(t testing.TB) *awsSTS {
	t.Helper()
	s := &awsSTS{STS: ststest.New(t, ststest.Config{})}
	s.brokerARN, s.keyID, s.secret = s.AddUser("credbroker")
	other, _, _ := s.AddUser("someone-else")
	s.role = s.AddRole(ststest.Role{Name: "payments", Principals: []string{s.brokerARN}, MaxSessionDuration: 12 * time.Hour})
	s.externalRole = s.AddRole(ststest.Role{Name: "partner", Principals: []string{s.brokerARN}, ExternalID: testExternalID})
	s.otherUserRole = s.AddRole(ststest.Role{Name: "not-ours", Principals: []string{other}})
	s.shortRole = s.AddRole(ststest.Role{Name: "short", Principals: []string{s.brokerARN}})
	s.issuer = "https://oidc.cluster.example.org"
	s.issuerKey = oidctest.NewRSAKey(t, "cluster-key-1")
	s.TrustOIDC(s.issuer, testAudience, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{s.issuerKey.JWK()}})
	s.webRole = s.AddRole(ststest.Role{Name: "ci-deploy", WebIdentityIssuer: s.issuer})
	s.base = credentials.NewStaticCredentialsProvider(s.keyID, s.secret, "")
	s.wrongSecretKey = credentials.NewStaticCredentialsProvider(s.keyID, strings.ToLower(s.secret[:20])+s.secret[20:]+"x", "")
	return s
}

// provider builds a provider against the stand-in; cfg's RoleARN and
// Credentials default to the broker's role and key.
func (s *awsSTS) provider(t testing.TB, cfg Config) *Provider {
	t.Helper()
	if cfg.RoleARN == "" {
		cfg.RoleARN = s.role
	}
	if cfg.Credentials == nil && !cfg.WebIdentity {
		cfg.Credentials = s.base
	}
	cfg.Endpoint = s.URL
	cfg.HTTPClient = s.Client()
	if cfg.Name == "" {
		cfg.Name = "payments-aws"
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// token returns a web identity token from the trusted issuer.
func (s *awsSTS) token(t testing.TB, key *oidctest.Key, sub string, exp time.Time) providers.Secret {
	t.Helper()
	return providers.NewSecret([]byte(oidctest.Sign(t, key, map[string]any{
		"iss": s.issuer, "sub": sub, "aud": testAudience,
		"iat": time.Now().Add(-time.Minute).Unix(), "exp": exp.Unix(),
	}, nil)))
}

// callerARN calls GetCallerIdentity with the issued credential, with or
// without its session token, and returns the ARN STS names.
func (s *awsSTS) callerARN(ctx context.Context, c providers.Credential, withToken bool) (string, error) {
	token := ""
	if withToken {
		token = string(c.Data[FieldSessionToken].Reveal())
	}
	client := sts.New(sts.Options{
		Region:       s.Region,
		BaseEndpoint: awssdk.String(s.URL),
		HTTPClient:   s.Client(),
		Credentials:  credentials.NewStaticCredentialsProvider(string(c.Data[FieldAccessKeyID].Reveal()), string(c.Data[FieldSecretAccessKey].Reveal()), token),
	})
	out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", err
	}
	return awssdk.ToString(out.Arn), nil
}

var (
	unixIdentity = attest.Identity{Method: attest.MethodUnix, Subject: "unix:uid:4242", Claims: map[string]any{"uid": int64(4242)}}
	ciIdentity   = attest.Identity{Method: attest.MethodGitHub, Subject: "repo:acme/payments:ref:refs/heads/main", Claims: map[string]any{"repository": "acme/payments"}}
)

func TestAssumeRoleAgainstAWSSTS(t *testing.T) {
	s := startAWSSTS(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name         string
		cfg          Config
		id           attest.Identity
		ttl          time.Duration
		wantDuration int
		wantCap      time.Duration
		wantSession  string
		wantTags     map[string]string
		wantSource   string
		wantExternal string
	}{
		{name: "a cap under 15 minutes asks for 900s and reports the cap", id: unixIdentity, ttl: 2 * time.Minute,
			wantDuration: 900, wantCap: 2 * time.Minute, wantSession: "unix-uid-4242"},
		{name: "a 30 minute cap asks for 1800s", id: unixIdentity, ttl: 30 * time.Minute,
			wantDuration: 1800, wantCap: 30 * time.Minute, wantSession: "unix-uid-4242"},
		{name: "no request cap: the credential's ttl", cfg: Config{TTL: 3 * time.Hour}, id: unixIdentity,
			wantDuration: 3 * 3600, wantCap: 3 * time.Hour, wantSession: "unix-uid-4242"},
		{name: "a request cap above the credential's ttl does not extend it", cfg: Config{TTL: 20 * time.Minute}, id: unixIdentity, ttl: time.Hour,
			wantDuration: 1200, wantCap: 20 * time.Minute, wantSession: "unix-uid-4242"},
		{name: "an odd cap is rounded up to a whole second", id: unixIdentity, ttl: 1000*time.Second + time.Millisecond,
			wantDuration: 1001, wantCap: 1000*time.Second + time.Millisecond, wantSession: "unix-uid-4242"},
		{
			name: "session tags, source identity and external id from the caller's claims",
			cfg: Config{
				RoleARN:        s.externalRole,
				ExternalID:     testExternalID,
				SessionTags:    map[string]string{"namespace": "namespace", "workload": ClaimSubject, "pod": "pod_name", "uid": "uid"},
				SourceIdentity: ClaimSubject,
			},
			id: k8sIdentity, ttl: 15 * time.Minute,
			wantDuration: 900, wantCap: 15 * time.Minute, wantSession: "system-serviceaccount-payments-api",
			wantTags:     map[string]string{"namespace": "payments", "workload": "system:serviceaccount:payments:api", "pod": "api-7d9f_x", "uid": "1001"},
			wantSource:   "system-serviceaccount-payments-api",
			wantExternal: testExternalID,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := s.provider(t, tt.cfg)
			before := time.Now()
			c, err := p.Credential(ctx, providers.Request{Name: "payments-aws", TTL: tt.ttl, Identity: tt.id})
			if err != nil {
				t.Fatal(err)
			}
			calls := s.Calls()
			call := calls[len(calls)-1]
			if call.Action != "AssumeRole" || call.Caller != s.brokerARN || call.RoleARN != p.cfg.RoleARN {
				t.Errorf("STS saw %+v", call)
			}
			if call.DurationSeconds != tt.wantDuration || call.RoleSessionName != tt.wantSession ||
				call.SourceIdentity != tt.wantSource || call.ExternalID != tt.wantExternal || !sameMap(call.Tags, tt.wantTags) {
				t.Errorf("STS saw duration %d, session %q, source %q, external id %q, tags %v;\nwant %d, %q, %q, %q, %v",
					call.DurationSeconds, call.RoleSessionName, call.SourceIdentity, call.ExternalID, call.Tags,
					tt.wantDuration, tt.wantSession, tt.wantSource, tt.wantExternal, tt.wantTags)
			}
			if string(c.Data[FieldAccessKeyID].Reveal()) != call.AccessKeyID {
				t.Errorf("access key id %q, STS issued %q", c.Data[FieldAccessKeyID].Reveal(), call.AccessKeyID)
			}
			// The reported expiry is the start plus the cap, or STS's when
			// that is earlier (STS states it in whole seconds).
			if c.ExpiresAt.After(call.Expiration) || c.ExpiresAt.Before(minTime(call.Expiration, before.Add(tt.wantCap))) || c.ExpiresAt.After(time.Now().Add(tt.wantCap)) {
				t.Errorf("expiry %v; want the start plus %v, and not after STS's %v", c.ExpiresAt, tt.wantCap, call.Expiration)
			}
			if c.Kind != Kind || !strings.HasPrefix(c.ID, "aws_sts:") || strings.Contains(c.ID, call.AccessKeyID) || c.Subject != tt.id.Subject || c.Credential != "payments-aws" {
				t.Errorf("lease %+v", c.Lease)
			}
			// The credentials are real: STS knows them, as the role's session…
			arn, err := s.callerARN(ctx, c, true)
			want := "arn:aws:sts::" + s.Account + ":assumed-role/" + p.cfg.RoleARN[strings.LastIndex(p.cfg.RoleARN, "/")+1:] + "/" + tt.wantSession
			if err != nil || arn != want {
				t.Errorf("GetCallerIdentity with the issued credentials: %q, %v; want %q", arn, err, want)
			}
			// …and only with their session token.
			if _, err := s.callerARN(ctx, c, false); err == nil || !strings.Contains(err.Error(), "InvalidClientTokenId") {
				t.Errorf("GetCallerIdentity without the session token: %v, want InvalidClientTokenId", err)
			}
		})
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestFailuresAgainstAWSSTS checks that every failure keeps STS's code and
// message, and carries no key or token.
func TestFailuresAgainstAWSSTS(t *testing.T) {
	s := startAWSSTS(t)
	down := ststest.New(t, ststest.Config{})
	downURL := down.URL
	down.Close()
	goodToken := s.token(t, s.issuerKey, "repo:acme/payments:ref:refs/heads/main", time.Now().Add(5*time.Minute))
	forger := oidctest.NewRSAKey(t, "cluster-key-1") // same kid, another key
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		cfg      Config
		id       attest.Identity
		token    providers.Secret
		ttl      time.Duration
		endpoint string
		wantCode string // STS's error code, when STS refused
		wantIs   error
		want     string // in the error text
	}{
		{name: "wrong external id", cfg: Config{RoleARN: s.externalRole, ExternalID: "someone-elses"}, wantCode: "AccessDenied", want: "is not authorized to perform: sts:AssumeRole on resource: " + s.externalRole},
		{name: "no external id", cfg: Config{RoleARN: s.externalRole}, wantCode: "AccessDenied"},
		{name: "a role that does not trust the broker", cfg: Config{RoleARN: s.otherUserRole}, wantCode: "AccessDenied"},
		{name: "a role that does not exist", cfg: Config{RoleARN: s.RoleARN("nope")}, wantCode: "AccessDenied"},
		{name: "a wrong secret key", cfg: Config{Credentials: s.wrongSecretKey}, wantCode: "SignatureDoesNotMatch"},
		{name: "an unknown access key", cfg: Config{Credentials: credentials.NewStaticCredentialsProvider("AKIAUNKNOWNUNKNOWN00", s.secret, "")}, wantCode: "InvalidClientTokenId"},
		{name: "a session longer than the role allows", cfg: Config{RoleARN: s.shortRole, TTL: 2 * time.Hour}, ttl: 2 * time.Hour, wantCode: "ValidationError", want: "MaxSessionDuration"},
		{name: "a missing claim fails before STS", cfg: Config{SessionTags: map[string]string{"repo": "repository"}}, wantIs: ErrClaim, want: `session tag "repo"`},
		{name: "a missing source identity claim", cfg: Config{SourceIdentity: "repository"}, wantIs: ErrClaim, want: "source_identity"},
		{name: "STS down", endpoint: downURL, want: "connect"},
		{name: "web identity without a token", cfg: Config{RoleARN: s.webRole, WebIdentity: true}, id: ciIdentity, wantIs: ErrNoToken},
		{name: "web identity token signed by another key", cfg: Config{RoleARN: s.webRole, WebIdentity: true}, id: ciIdentity,
			token: s.token(t, forger, "repo:acme/payments:ref:refs/heads/main", time.Now().Add(5*time.Minute)), wantCode: "InvalidIdentityToken"},
		{name: "expired web identity token", cfg: Config{RoleARN: s.webRole, WebIdentity: true}, id: ciIdentity,
			token: s.token(t, s.issuerKey, "repo:acme/payments:ref:refs/heads/main", time.Now().Add(-time.Minute)), wantCode: "ExpiredTokenException"},
		{name: "web identity for a role that trusts no OIDC provider", cfg: Config{RoleARN: s.role, WebIdentity: true}, id: ciIdentity, token: goodToken, wantCode: "AccessDenied"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			tt.cfg.Logger = logs.Logger()
			p := s.provider(t, tt.cfg)
			if tt.endpoint != "" {
				p = mustNew(t, Config{RoleARN: s.role, Endpoint: tt.endpoint, HTTPClient: s.Client(), Credentials: s.base})
			}
			id := tt.id
			if id.Subject == "" {
				id = unixIdentity
			}
			if tt.ttl == 0 {
				tt.ttl = 15 * time.Minute
			}
			calls := len(s.Calls())
			_, err := p.Credential(ctx, providers.Request{Name: "payments-aws", TTL: tt.ttl, Identity: id, Token: tt.token})
			if err == nil {
				t.Fatal("issued")
			}
			var stsErr *Error
			if tt.wantCode != "" && (!errors.As(err, &stsErr) || stsErr.Code != tt.wantCode || stsErr.Message == "") {
				t.Errorf("error %v, want STS code %s with its message", err, tt.wantCode)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), `aws: credential "payments-aws": `) {
				t.Errorf("error %q, want it to start with the credential and contain %q", err, tt.want)
			}
			for _, secret := range []string{s.secret, string(tt.token.Reveal()), string(goodToken.Reveal())} {
				if secret != "" && (strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret)) {
					t.Errorf("the error or log carries a secret: %v", err)
				}
			}
			if len(s.Calls()) != calls {
				t.Errorf("STS issued credentials for a failed request")
			}
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		p := s.provider(t, Config{})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := p.Credential(cctx, providers.Request{Name: "x", Identity: unixIdentity}); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v does not wrap context.Canceled", err)
		}
	})
}

func TestWebIdentityAgainstAWSSTS(t *testing.T) {
	s := startAWSSTS(t)
	ctx := context.Background()
	p := s.provider(t, Config{RoleARN: s.webRole, WebIdentity: true})
	tok := s.token(t, s.issuerKey, ciIdentity.Subject, time.Now().Add(10*time.Minute))
	c, err := p.Credential(ctx, providers.Request{Name: "ci-deploy", TTL: 10 * time.Minute, Identity: ciIdentity, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	calls := s.Calls()
	call := calls[len(calls)-1]
	if call.Action != "AssumeRoleWithWebIdentity" || call.Caller != s.issuer+"#"+ciIdentity.Subject ||
		call.RoleSessionName != "repo-acme-payments-ref-refs-heads-main" || call.DurationSeconds != 900 {
		t.Errorf("STS saw %+v", call)
	}
	arn, err := s.callerARN(ctx, c, true)
	if want := "arn:aws:sts::" + s.Account + ":assumed-role/ci-deploy/repo-acme-payments-ref-refs-heads-main"; err != nil || arn != want {
		t.Errorf("GetCallerIdentity: %q, %v; want %q", arn, err, want)
	}
	if _, err := s.callerARN(ctx, c, false); err == nil {
		t.Error("the issued credentials work without their session token")
	}
}

func TestNewNeedsNoUpstream(t *testing.T) {
	// No STS at this address: New still succeeds, the first issue fails.
	p, err := New(Config{Name: "x", RoleARN: "arn:aws:iam::123456789012:role/x", Endpoint: "http://127.0.0.1:1", Credentials: credentials.NewStaticCredentialsProvider("AKIAEXAMPLEEXAMPLE00", "secret-key-canary", "")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Credential(context.Background(), providers.Request{Name: "x", Identity: unixIdentity}); err == nil || strings.Contains(err.Error(), "secret-key-canary") {
		t.Fatalf("error %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want []string // every one must be reported
	}{
		{"minimal", Config{RoleARN: "arn:aws:iam::123456789012:role/payments"}, nil},
		{"full", Config{RoleARN: "arn:aws-cn:iam::123456789012:role/team/a/payments", Region: "cn-north-1", Endpoint: "https://sts.cn-north-1.amazonaws.com.cn",
			SessionTags: map[string]string{"ns": "namespace"}, SourceIdentity: ClaimSubject, ExternalID: "x:y/z"}, nil},
		{"loopback http", Config{RoleARN: "arn:aws:iam::123456789012:role/payments", Endpoint: "http://127.0.0.1:9000"}, nil},
		{"web identity", Config{RoleARN: "arn:aws:iam::123456789012:role/ci", WebIdentity: true}, nil},
		{"no role", Config{}, []string{"role_arn is required"}},
		{"everything wrong at once", Config{
			Name:        "payments-aws",
			RoleARN:     "arn:aws:iam::123456789012:user/alice",
			Region:      "US East",
			Endpoint:    "http://sts.example.org",
			SessionTags: map[string]string{"aws:x": "a", "Env": "b", "env": "c", "bad,key": "d", "nothing": ""},
			ExternalID:  "a",
			TTL:         -time.Second,
		}, []string{`aws: credential "payments-aws": `, "resource is not role/", `region "US East"`, "plain http only to a loopback host",
			`key "aws:x" starts with "aws:"`, `keys "Env" and "env" differ only in case`, `key "bad,key" may hold only`, `key "nothing" names no claim`,
			"external_id must be", "ttl must be positive"}},
		{"web identity with assume-role options", Config{RoleARN: "arn:aws:iam::123456789012:role/ci", WebIdentity: true,
			SessionTags: map[string]string{"a": "b"}, SourceIdentity: "sub", ExternalID: "xx"},
			[]string{"session_tags does not apply", "source_identity does not apply", "external_id does not apply"}},
		{"ARN shapes", Config{RoleARN: "arn:aws:iam:us-east-1:123456789012:role/x"}, []string{"IAM ARNs have no region"}},
		{"short account", Config{RoleARN: "arn:aws:iam::1234:role/x"}, []string{"account is not 12 digits"}},
		{"sts service", Config{RoleARN: "arn:aws:sts::123456789012:assumed-role/x/y"}, []string{"service is not iam"}},
		{"bad role name", Config{RoleARN: "arn:aws:iam::123456789012:role/a b"}, []string{"role name must be"}},
		{"empty path segment", Config{RoleARN: "arn:aws:iam::123456789012:role//x"}, []string{"path segments"}},
		{"endpoint with a path", Config{RoleARN: "arn:aws:iam::123456789012:role/x", Endpoint: "https://sts.amazonaws.com/x?y"}, []string{"no path or query"}},
		{"too many tags", Config{RoleARN: "arn:aws:iam::123456789012:role/x", SessionTags: manyTags(51)}, []string{"51 tags, AWS allows at most 50"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("valid")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.cfg.ExternalID != "" && len(tt.cfg.ExternalID) > 1 && strings.Contains(err.Error(), tt.cfg.ExternalID) {
				t.Errorf("error %q shows the external id", err)
			}
			if _, nerr := New(tt.cfg); nerr == nil {
				t.Error("New accepted what Validate refuses")
			}
		})
	}
	var c Config
	if got := c.Fields(); len(got) != 3 || got[0] != FieldAccessKeyID || got[1] != FieldSecretAccessKey || got[2] != FieldSessionToken {
		t.Errorf("Fields() = %v", got)
	}
	if c.Paths() != nil {
		t.Errorf("Paths() = %v, want none", c.Paths())
	}
}

func manyTags(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m["k"+strings.Repeat("x", i)] = "v"
	}
	return m
}

func TestDurationSeconds(t *testing.T) {
	for _, tt := range []struct {
		ttl  time.Duration
		want int32
	}{
		{time.Second, 900}, {15 * time.Minute, 900}, {15*time.Minute + 1, 901}, {time.Hour, 3600},
		{12 * time.Hour, 43200}, {48 * time.Hour, 43200},
	} {
		if got := durationSeconds(tt.ttl); got != tt.want {
			t.Errorf("durationSeconds(%v) = %d, want %d", tt.ttl, got, tt.want)
		}
	}
}

var printableCases = []struct {
	in      string
	limit   int
	secrets []string
	want    string
}{
	{"Access denied", 512, nil, "Access denied"},
	{"token abcdef123 is bad", 512, []string{"abcdef123"}, "token [redacted] is bad"},
	{"short ab stays", 512, []string{"ab"}, "short ab stays"},
	{"line\nbreak\x00\xff", 512, nil, "line break  "},
	{"0123456789", 4, nil, "0123…"},
	{"at the cut: xxxxSECRETKEY", 16, []string{"SECRETKEY"}, "at the cut: xxxx…"},
}

func TestPrintable(t *testing.T) {
	for _, tt := range printableCases {
		if got := printable(tt.in, tt.limit, tt.secrets); got != tt.want {
			t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzPrintable feeds STS error messages (which an STS, or something
// answering in its place, chooses freely) through the sanitiser: the result
// is valid UTF-8 without control characters, bounded, and never shows a key
// or token (secrets drawn from the base64 and JWT alphabets they use).
func FuzzPrintable(f *testing.F) {
	for _, tt := range printableCases {
		secret := "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
		if len(tt.secrets) > 0 {
			secret = tt.secrets[0]
		}
		f.Add(tt.in, secret)
	}
	f.Fuzz(func(t *testing.T, msg, secret string) {
		out := printable(msg, 512, []string{secret})
		if !utf8.ValidString(out) || len(out) > 512+len("…") || strings.ContainsFunc(out, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("printable(%q) = %q", msg, out)
		}
		realistic := len(secret) >= 6 && !strings.Contains(secret, "redacted") &&
			strings.Trim(secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=._-") == ""
		if realistic && strings.Contains(out, secret) {
			t.Fatalf("printable(%q) = %q shows the secret %q", msg, out, secret)
		}
	})
}

// TestConformanceAWSSTS runs the provider suite against the AWS STS
// stand-in: Use proves the issued credentials with GetCallerIdentity.
func TestConformanceAWSSTS(t *testing.T) {
	s := startAWSSTS(t)
	var logs logtest.Buffer
	logger := logs.Logger()
	providertest.Run(t, providertest.Case{
		Kind:     Kind,
		Fields:   (&Config{}).Fields(),
		Provider: s.provider(t, Config{Logger: logger}),
		Failing:  s.provider(t, Config{Logger: logger, Credentials: s.wrongSecretKey}),
		Canary:   s.secret,
		Logs:     logs.String,
		Use: func(ctx context.Context, c providers.Credential) error {
			_, err := s.callerARN(ctx, c, true)
			return err
		},
	})
	if !strings.Contains(logs.String(), "aws_sts: issued") {
		t.Errorf("no issue was logged:\n%s", logs.String())
	}
}

func mustNew(t testing.TB, cfg Config) *Provider {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPing checks the start-up probe against the AWS STS stand-in: the
// broker's key passes, a wrong secret key and an STS that is down fail
// without the key in the message, and web identity has nothing to check.
func TestPing(t *testing.T) {
	s := startAWSSTS(t)
	ctx := context.Background()
	if err := s.provider(t, Config{}).Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := s.provider(t, Config{Credentials: s.wrongSecretKey}).Ping(ctx); err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") || strings.Contains(err.Error(), s.secret) {
		t.Errorf("a wrong secret key: %v", err)
	}
	if err := s.provider(t, Config{RoleARN: s.webRole, WebIdentity: true}).Ping(ctx); err != nil {
		t.Errorf("web identity: %v", err)
	}
	down := ststest.New(t, ststest.Config{})
	p := mustNew(t, Config{Name: "payments-aws", RoleARN: s.role, Credentials: s.base, Endpoint: down.URL, HTTPClient: down.Client()})
	down.Close()
	if err := p.Ping(ctx); err == nil || strings.Contains(err.Error(), s.secret) {
		t.Errorf("STS down: %v", err)
	}
}
