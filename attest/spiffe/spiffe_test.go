package spiffe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/credbroker/credbroker/attest"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{TrustDomain: "example.org", Audiences: []string{"credbroker"}, BundleFile: "/etc/bundle.json"}
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // substrings of the joined error; none means valid
	}{
		{"bundle file", func(*Config) {}, nil},
		{"workload api", func(c *Config) { c.BundleFile, c.WorkloadAPI = "", "unix:///run/spire/agent.sock" }, nil},
		{"spiffe:// trust domain", func(c *Config) { c.TrustDomain = "spiffe://example.org" }, nil},
		{"everything missing", func(c *Config) { *c = Config{} },
			[]string{"trust_domain is required", "audiences is required", "one of bundle_file and workload_api"}},
		{"bad trust domain", func(c *Config) { c.TrustDomain = "Example Org" }, []string{`trust_domain "Example Org"`}},
		{"empty audience", func(c *Config) { c.Audiences = []string{""} }, []string{"audiences[0] is empty"}},
		{"both sources", func(c *Config) { c.WorkloadAPI = "unix:///a.sock" }, []string{"mutually exclusive"}},
		{"relative bundle", func(c *Config) { c.BundleFile = "bundle.json" }, []string{"absolute path"}},
		{"bad address", func(c *Config) { c.BundleFile, c.WorkloadAPI = "", "/run/agent.sock" }, []string{"unix:///path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestNewFailsClosed(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.json")
	writeFileAtomic(t, empty, []byte(`{"keys":[]}`))
	garbage := filepath.Join(dir, "garbage.json")
	writeFileAtomic(t, garbage, []byte(`not json`))
	for _, path := range []string{filepath.Join(dir, "missing.json"), empty, garbage} {
		_, err := New(context.Background(), Config{TrustDomain: "example.org", Audiences: []string{"a"}, BundleFile: path})
		if err == nil {
			t.Errorf("New(bundle_file %s) = nil error, want one", filepath.Base(path))
		}
	}
}

func TestRunBundleFile(t *testing.T) {
	f := newFileFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.a.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v after cancel, want nil", err)
	}
}

func TestAttestJWTSVID(t *testing.T) {
	f := newFileFixture(t)
	c := claims(workloadID.String())
	tok := f.key.sign(t, c)
	id, err := f.a.Attest(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Method != attest.MethodSPIFFE || id.Subject != "spiffe://example.org/ns/payments/sa/api" {
		t.Errorf("identity = %+v", id)
	}
	want := map[string]any{
		ClaimTrustDomain: "example.org",
		ClaimPath:        "/ns/payments/sa/api",
		ClaimAudience:    []any{testAudience},
	}
	for k, v := range want {
		got, _ := json.Marshal(id.Claims[k])
		w, _ := json.Marshal(v)
		if string(got) != string(w) {
			t.Errorf("claim %s = %s, want %s", k, got, w)
		}
	}
	if _, ok := id.Claims[ClaimAudience].([]any); !ok {
		t.Errorf("audience claim is %T, want []any", id.Claims[ClaimAudience])
	}
	if exp, ok := id.Claims[ClaimExpiry].(int64); !ok || exp != c["exp"].(int64) {
		t.Errorf("expiry claim = %#v, want int64 %d", id.Claims[ClaimExpiry], c["exp"])
	}

	// The configured clock applies too: an hour and two minutes later the
	// same token has expired.
	f.a.now = func() time.Time { return time.Now().Add(time.Hour + 2*time.Minute) }
	if _, err := f.a.Attest(context.Background(), tok); reasonOf(err) != ReasonTokenExpired {
		t.Errorf("Attest at Now+1h2m: %v, want %q", err, ReasonTokenExpired)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.a.Attest(ctx, tok); reasonOf(err) != ReasonCancelled {
		t.Errorf("Attest(cancelled ctx): %v, want %q", err, ReasonCancelled)
	}
}

func reasonOf(err error) string {
	var ae *attest.Error
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

// b64 encodes a JWS segment.
func b64(v any) string {
	data, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(data)
}

type badToken struct {
	name  string
	token string
	want  string // Reason
}

// badTokens is the table of JWT-SVIDs Attest must refuse, for f's bundle.
func badTokens(t testing.TB, f *fileFixture) []badToken {
	good := f.key.sign(t, claims(workloadID.String()))
	with := func(mod func(map[string]any)) string {
		c := claims(workloadID.String())
		mod(c)
		return f.key.sign(t, c)
	}

	// HS256 keyed with the bundle's public key: the classic confusion attack.
	pub, err := x509.MarshalPKIXPublicKey(f.key.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", f.key.kid))
	if err != nil {
		t.Fatal(err)
	}
	hsTok, err := jwt.Signed(hs).Claims(claims(workloadID.String())).Serialize()
	if err != nil {
		t.Fatal(err)
	}

	parts := strings.Split(good, ".")
	return []badToken{
		{"alg none", b64(map[string]string{"alg": "none", "kid": f.key.kid, "typ": "JWT"}) + "." + parts[1] + ".", ReasonUnsupportedAlg},
		{"HS256 with the public key as secret", hsTok, ReasonUnsupportedAlg},
		{"wrong audience", with(func(c map[string]any) { c["aud"] = []string{"someone-else"} }), ReasonWrongAudience},
		{"empty audience", with(func(c map[string]any) { c["aud"] = []string{} }), ReasonWrongAudience},
		{"no audience", with(func(c map[string]any) { delete(c, "aud") }), ReasonWrongAudience},
		{"expired", with(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), ReasonTokenExpired},
		{"not yet valid", with(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() }), ReasonTokenNotYetValid},
		{"no expiry", with(func(c map[string]any) { delete(c, "exp") }), ReasonNoExpiry},
		{"unknown kid", newJWTKey(t, "key-unknown").sign(t, claims(workloadID.String())), ReasonUnknownKey},
		{"known kid, other key", jwtKey{kid: f.key.kid, key: newECKey(t)}.sign(t, claims(workloadID.String())), ReasonBadSignature},
		{"no kid", jwtKey{key: f.key.key}.sign(t, claims(workloadID.String())), ReasonNoKeyID},
		{"another trust domain", f.key.sign(t, claims("spiffe://evil.org/ns/payments/sa/api")), "trust domain evil.org is not trusted"},
		{"subject not a SPIFFE ID", with(func(c map[string]any) { c["sub"] = "system:serviceaccount:payments:api" }), ReasonNoSubject},
		{"typ not JWT", b64(map[string]string{"alg": "ES256", "kid": f.key.kid, "typ": "at+jwt"}) + "." + parts[1] + "." + parts[2], ReasonBadType},
		{"signature from another token", parts[0] + "." + b64(claims(brokerID.String())) + "." + parts[2], ReasonBadSignature},
		{"truncated", good[:strings.LastIndexByte(good, '.')-5], ReasonMalformedToken},
		{"truncated signature", good[:len(good)-10], ReasonBadSignature},
		{"two parts", parts[0] + "." + parts[1], ReasonMalformedToken},
		{"1 MiB token", parts[0] + "." + strings.Repeat("A", 1<<20) + "." + parts[2], ReasonTokenTooLarge + " (over 16384 bytes)"},
		{"garbage", "not-a-jwt-at-all", ReasonMalformedToken},
		{"garbage with dots", "%%%.***.$$$", ReasonMalformedToken},
		{"empty", "", ReasonNoToken},
	}
}

func TestAttestRefuses(t *testing.T) {
	f := newFileFixture(t)
	for _, tt := range badTokens(t, f) {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.a.Attest(context.Background(), tt.token)
			checkRefused(t, id, err, tt.token, tt.want)
		})
	}
}

func checkRefused(t *testing.T, id attest.Identity, err error, token, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted as %+v", id)
	}
	var ae *attest.Error
	if !errors.As(err, &ae) || !errors.Is(err, attest.ErrFailed) || ae.Method != attest.MethodSPIFFE {
		t.Fatalf("error %v (%T) is not an *attest.Error for spiffe", err, err)
	}
	if want != "" && ae.Reason != want {
		t.Errorf("reason = %q, want %q (detail: %v)", ae.Reason, want, ae.Err)
	}
	if len(token) >= 16 {
		if strings.Contains(ae.Reason, token) || strings.Contains(err.Error(), token) {
			t.Errorf("error leaks the token: %v", err)
		}
		// Nor any of its signature.
		if i := strings.LastIndexByte(token, '.'); i >= 0 && len(token)-i > 16 && strings.Contains(err.Error(), token[i+1:]) {
			t.Errorf("error leaks the signature: %v", err)
		}
	}
	if id.Method != "" || id.Subject != "" {
		t.Errorf("identity not zero on failure: %+v", id)
	}
}

func TestBundleFileRotation(t *testing.T) {
	f := newFileFixture(t)
	next := newJWTKey(t, "key-2")
	tok := next.sign(t, claims(workloadID.String()))
	if _, err := f.a.Attest(context.Background(), tok); reasonOf(err) != ReasonUnknownKey {
		t.Fatalf("token of a key not yet in the bundle: %v, want %q", err, ReasonUnknownKey)
	}

	// The operator replaces the bundle: key-2 in, key-1 out.
	writeBundle(t, f.path, testTD, []*testCA{f.ca}, []jwtKey{next})
	if _, err := f.a.Attest(context.Background(), tok); err != nil {
		t.Fatalf("token of the new key after the file was replaced: %v", err)
	}
	old := f.key.sign(t, claims(workloadID.String()))
	if _, err := f.a.Attest(context.Background(), old); reasonOf(err) != ReasonUnknownKey {
		t.Errorf("token of the removed key: %v, want %q", err, ReasonUnknownKey)
	}
	if !strings.Contains(f.logs.String(), "spiffe: bundle updated") {
		t.Errorf("no update logged; logs:\n%s", f.logs)
	}

	// A broken replacement keeps the last good bundle, and says so once.
	writeFileAtomic(t, f.path, []byte(`{"keys": [`))
	for range 3 {
		if _, err := f.a.Attest(context.Background(), tok); err != nil {
			t.Fatalf("after a broken bundle file: %v, want the previous bundle kept", err)
		}
	}
	if n := strings.Count(f.logs.String(), "does not load"); n != 1 {
		t.Errorf("broken file logged %d times, want once; logs:\n%s", n, f.logs)
	}
	// So does a deleted one.
	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Attest(context.Background(), tok); err != nil {
		t.Fatalf("after the bundle file was removed: %v, want the previous bundle kept", err)
	}
}

func TestAttestCertificate(t *testing.T) {
	f := newFileFixture(t)
	svid := f.ca.issue(t, workloadID, time.Now().Add(time.Hour))
	id, err := f.a.AttestCertificate(svid.Certificates)
	if err != nil {
		t.Fatal(err)
	}
	if id.Method != attest.MethodSPIFFE || id.Subject != workloadID.String() ||
		id.Claims[ClaimTrustDomain] != "example.org" || id.Claims[ClaimPath] != "/ns/payments/sa/api" {
		t.Errorf("identity = %+v", id)
	}

	otherCA := newCA(t, testTD)
	evilCA := newCA(t, otherTD)
	noSAN := f.ca.issue(t, workloadID, time.Now().Add(time.Hour))
	noSAN.Certificates[0].URIs = nil
	expired := f.ca.issue(t, workloadID, time.Now().Add(time.Minute))
	tests := []struct {
		name  string
		chain []*x509.Certificate
		now   time.Time
		want  string
	}{
		{"another CA of the same trust domain name", otherCA.issue(t, workloadID, time.Now().Add(time.Hour)).Certificates, time.Time{}, ReasonCertNotSigned},
		{"another trust domain", evilCA.issue(t, otherTD.ID(), time.Now().Add(time.Hour)).Certificates, time.Time{}, "trust domain evil.org is not trusted"},
		{"the CA itself", []*x509.Certificate{f.ca.cert}, time.Time{}, ReasonNotLeaf},
		{"no URI SAN", noSAN.Certificates, time.Time{}, ReasonNoSPIFFEID},
		{"expired at Now", expired.Certificates, time.Now().Add(2 * time.Minute), ReasonCertExpired},
		{"no chain", nil, time.Time{}, ReasonNoCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.a.now = time.Now
			if !tt.now.IsZero() {
				f.a.now = func() time.Time { return tt.now }
			}
			id, err := f.a.AttestCertificate(tt.chain)
			checkRefused(t, id, err, "", tt.want)
		})
	}
}

// mtlsHandshake runs one TLS connection through serverCfg with the client's
// config and returns what the server attested, or the server's handshake
// error.
func mtlsHandshake(t *testing.T, a *Attestor, serverCfg, clientCfg *tls.Config) (attest.Identity, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		id  attest.Identity
		err error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.HandshakeContext(context.Background()); err != nil {
			done <- result{err: err}
			return
		}
		id, err := a.AttestCertificate(tc.ConnectionState().PeerCertificates)
		tc.Write([]byte("ok"))
		done <- result{id, err}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), clientCfg)
	if err == nil {
		buf := make([]byte, 2)
		conn.Read(buf) // with TLS 1.3 the server's verdict on our certificate arrives here
		conn.Close()
	}
	r := <-done
	return r.id, r.err
}

func TestTLSConfigBundleFile(t *testing.T) {
	f := newFileFixture(t)
	serverSVID := f.ca.issue(t, brokerID, time.Now().Add(time.Hour))
	cert, err := tlsCertificate(serverSVID)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := f.a.TLSConfig()
	if serverCfg.ClientAuth != tls.RequireAnyClientCert || serverCfg.VerifyPeerCertificate == nil {
		t.Fatalf("TLSConfig() does not require and verify client certificates: %+v", serverCfg)
	}
	serverCfg.Certificates = []tls.Certificate{cert} // bundle-file mode: the caller brings the server certificate
	caBundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.ca.cert})

	client := f.ca.issue(t, workloadID, time.Now().Add(time.Hour))
	id, err := mtlsHandshake(t, f.a, serverCfg, tlsconfig.MTLSClientConfig(client, caBundle, tlsconfig.AuthorizeID(brokerID)))
	if err != nil {
		t.Fatalf("mTLS with a client X.509-SVID of the trust domain: %v", err)
	}
	if id.Subject != workloadID.String() {
		t.Errorf("subject = %q, want %q", id.Subject, workloadID)
	}

	stranger := newCA(t, testTD).issue(t, workloadID, time.Now().Add(time.Hour))
	if _, err := mtlsHandshake(t, f.a, serverCfg, tlsconfig.MTLSClientConfig(stranger, caBundle, tlsconfig.AuthorizeID(brokerID))); err == nil {
		t.Error("mTLS with a client certificate from another CA succeeded")
	}
	noCert := tlsconfig.TLSClientConfig(caBundle, tlsconfig.AuthorizeID(brokerID))
	if _, err := mtlsHandshake(t, f.a, serverCfg, noCert); err == nil {
		t.Error("TLS without a client certificate succeeded")
	}
}

func tlsCertificate(s *x509svid.SVID) (tls.Certificate, error) {
	certPEM, keyPEM, err := s.Marshal()
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// workloadAPIFixture is an Attestor fed by a stand-in SPIRE agent.
type workloadAPIFixture struct {
	a     *Attestor
	agent *spireAgent
	ca    *testCA
	key   jwtKey
	logs  *logBuffer
	addr  string
}

func newWorkloadAPIFixture(t *testing.T) *workloadAPIFixture {
	t.Helper()
	ca := newCA(t, testTD)
	f := &workloadAPIFixture{ca: ca, key: newJWTKey(t, "agent-key-1"), logs: &logBuffer{}}
	f.agent = &spireAgent{
		td:      testTD,
		svid:    ca.issue(t, brokerID, time.Now().Add(time.Hour)),
		cas:     []*x509.Certificate{ca.cert},
		jwtKeys: []jwtKey{f.key},
	}
	f.addr = startSPIREAgent(t, f.agent)
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	a, err := New(ctx, Config{
		TrustDomain: testTD.Name(),
		Audiences:   []string{"other", testAudience},
		WorkloadAPI: f.addr,
		Logger:      f.logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	return f
}

// hangBound bounds every wait of these tests for an event: long enough that
// a loaded machine is slow rather than failing, so only a hang reaches it.
const hangBound = time.Minute

// eventually retries check until it returns nil or hangBound passes; the
// Workload API pushes updates asynchronously.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWorkloadAPIRotation(t *testing.T) {
	before := runtime.NumGoroutine()
	f := newWorkloadAPIFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- f.a.Run(ctx) }()

	old := f.key.sign(t, claims(workloadID.String()))
	if _, err := f.a.Attest(ctx, old); err != nil {
		t.Fatalf("token of the agent's first key: %v", err)
	}
	if _, err := f.a.Attest(ctx, f.key.sign(t, claims("spiffe://evil.org/x"))); reasonOf(err) != "trust domain evil.org is not trusted" {
		t.Errorf("other trust domain: %v", err)
	}

	// The trust domain rotates its JWT authority: the agent pushes key-2
	// alongside key-1, then key-2 alone.
	next := newJWTKey(t, "agent-key-2")
	tok := next.sign(t, claims(workloadID.String()))
	if _, err := f.a.Attest(ctx, tok); reasonOf(err) != ReasonUnknownKey {
		t.Fatalf("token of a key not yet pushed: %v, want %q", err, ReasonUnknownKey)
	}
	f.agent.rotate(nil, []jwtKey{f.key, next})
	eventually(t, "token of the pushed key", func() error { _, err := f.a.Attest(ctx, tok); return err })
	f.agent.rotate(nil, []jwtKey{next})
	eventually(t, "token of the retired key", func() error {
		if _, err := f.a.Attest(ctx, old); reasonOf(err) != ReasonUnknownKey {
			return errors.New("still accepted")
		}
		return nil
	})
	if _, err := f.a.Attest(ctx, tok); err != nil {
		t.Fatalf("token of the current key: %v", err)
	}
	eventually(t, "update logged by Run", func() error {
		if !strings.Contains(f.logs.String(), `msg="spiffe: bundle updated" source=workload_api trust_domain=example.org jwt_authorities=1`) {
			return errors.New("not yet; logs:\n" + f.logs.String())
		}
		return nil
	})

	// X.509 authorities rotate too.
	ca2 := newCA(t, testTD)
	client := ca2.issue(t, workloadID, time.Now().Add(time.Hour))
	if _, err := f.a.AttestCertificate(client.Certificates); reasonOf(err) != ReasonCertNotSigned {
		t.Fatalf("SVID of a CA not yet pushed: %v", err)
	}
	f.agent.rotate([]*x509.Certificate{f.ca.cert, ca2.cert}, nil)
	eventually(t, "SVID of the pushed CA", func() error { _, err := f.a.AttestCertificate(client.Certificates); return err })

	cancel()
	if err := <-runDone; err != nil {
		t.Errorf("Run() = %v after cancel, want nil", err)
	}
	if err := f.a.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if err := f.a.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if _, err := f.a.Attest(context.Background(), tok); err == nil {
		t.Error("Attest after Close succeeded")
	}
	// No goroutine outlives Close (the agent's server is stopped at cleanup,
	// so allow for its own).
	eventually(t, "goroutines after Close", func() error {
		if n := runtime.NumGoroutine(); n > before+4 {
			return fmt.Errorf("%d goroutines, %d before New", n, before)
		}
		return nil
	})
}

func TestTLSConfigWorkloadAPI(t *testing.T) {
	f := newWorkloadAPIFixture(t)
	defer f.a.Close()
	caBundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.ca.cert})
	client := f.ca.issue(t, workloadID, time.Now().Add(time.Hour))
	// The client checks that the server presents the broker's SVID from the agent.
	id, err := mtlsHandshake(t, f.a, f.a.TLSConfig(), tlsconfig.MTLSClientConfig(client, caBundle, tlsconfig.AuthorizeID(brokerID)))
	if err != nil {
		t.Fatalf("mTLS through the Workload API config: %v", err)
	}
	if id.Subject != workloadID.String() {
		t.Errorf("subject = %q", id.Subject)
	}
	stranger := newCA(t, testTD).issue(t, workloadID, time.Now().Add(time.Hour))
	if _, err := mtlsHandshake(t, f.a, f.a.TLSConfig(), tlsconfig.MTLSClientConfig(stranger, caBundle, tlsconfig.AuthorizeID(brokerID))); err == nil {
		t.Error("mTLS with a client certificate from another CA succeeded")
	}
}

func TestNewWorkloadAPIHonoursContext(t *testing.T) {
	ca := newCA(t, testTD)
	agent := &spireAgent{td: testTD, svid: ca.issue(t, brokerID, time.Now().Add(time.Hour)), noIdentity: true}
	addr := startSPIREAgent(t, agent)
	// Against this agent New can only return by its context ending: it
	// must then return that context's error, and soon (the bound only
	// catches a New that keeps waiting).
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		a, err := New(ctx, Config{TrustDomain: "example.org", Audiences: []string{"a"}, WorkloadAPI: addr})
		if err == nil {
			a.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("New succeeded against an agent that issues no identity")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("New = %v, want the context's DeadlineExceeded", err)
		}
	case <-time.After(hangBound):
		t.Fatalf("New did not return in %v; its context ended after 300ms", hangBound)
	}
}

// The stand-in must refuse calls without the security header, as SPIRE does,
// or it would not prove that the client sends it.
func TestSPIREAgentRequiresSecurityHeader(t *testing.T) {
	ca := newCA(t, testTD)
	agent := &spireAgent{td: testTD, svid: ca.issue(t, brokerID, time.Now().Add(time.Hour)), cas: []*x509.Certificate{ca.cert}}
	addr := startSPIREAgent(t, agent)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509Bundles(context.Background(), &workload.X509BundlesRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("FetchX509Bundles without the header: %v, want InvalidArgument", err)
	}
}

func FuzzAttest(f *testing.F) {
	fx := newFileFixture(f)
	for _, tt := range badTokens(f, fx) {
		f.Add(tt.token)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := fx.a.Attest(context.Background(), token)
		checkRefused(t, id, err, token, "")
	})
}

func BenchmarkAttest(b *testing.B) {
	f := newFileFixture(b)
	tok := f.key.sign(b, claims(workloadID.String()))
	ctx := context.Background()
	if _, err := f.a.Attest(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Attest(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
