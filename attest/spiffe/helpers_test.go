package spiffe

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	testTD       = spiffeid.RequireTrustDomainFromString("example.org")
	otherTD      = spiffeid.RequireTrustDomainFromString("evil.org")
	workloadID   = spiffeid.RequireFromPath(testTD, "/ns/payments/sa/api")
	brokerID     = spiffeid.RequireFromPath(testTD, "/credbroker")
	testAudience = "credbroker"
)

// testCA is an X.509 authority of a trust domain, standing in for a SPIRE
// server's CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t testing.TB, td spiffeid.TrustDomain) *testCA {
	t.Helper()
	key := newECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"SPIFFE test CA"}},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// issue returns an X.509-SVID for id signed by the CA.
func (ca *testCA) issue(t testing.TB, id spiffeid.ID, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key := newECKey(t)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		URIs:         []*url.URL{id.URL()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// jwtKey is a JWT authority of a trust domain.
type jwtKey struct {
	kid string
	key *ecdsa.PrivateKey
}

func newJWTKey(t testing.TB, kid string) jwtKey {
	return jwtKey{kid: kid, key: newECKey(t)}
}

// claims returns valid JWT-SVID claims for sub, expiring in an hour.
func claims(sub string) map[string]any {
	now := time.Now()
	return map[string]any{
		"sub": sub,
		"aud": []string{testAudience},
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(),
	}
}

// sign signs c as a JWT-SVID with k, the way a SPIRE server does (ES256, kid,
// typ JWT).
func (k jwtKey) sign(t testing.TB, c map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.key, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// writeBundle writes a JWKS-format SPIFFE bundle atomically (write, rename),
// as an operator or a bundle-sync job would.
func writeBundle(t testing.TB, path string, td spiffeid.TrustDomain, cas []*testCA, keys []jwtKey) {
	t.Helper()
	b := spiffebundle.New(td)
	for _, ca := range cas {
		b.AddX509Authority(ca.cert)
	}
	for _, k := range keys {
		if err := b.AddJWTAuthority(k.kid, k.key.Public()); err != nil {
			t.Fatal(err)
		}
	}
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeFileAtomic(t, path, data)
}

func writeFileAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func jwtAuthorities(keys ...jwtKey) map[string]crypto.PublicKey {
	m := make(map[string]crypto.PublicKey, len(keys))
	for _, k := range keys {
		m[k.kid] = k.key.Public()
	}
	return m
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fileFixture is an Attestor in bundle-file mode with one CA and one JWT key.
type fileFixture struct {
	a    *Attestor
	path string
	ca   *testCA
	key  jwtKey
	logs *logBuffer
}

func newFileFixture(t testing.TB) *fileFixture {
	t.Helper()
	f := &fileFixture{
		path: filepath.Join(t.TempDir(), "bundle.json"),
		ca:   newCA(t, testTD),
		key:  newJWTKey(t, "key-1"),
		logs: &logBuffer{},
	}
	writeBundle(t, f.path, testTD, []*testCA{f.ca}, []jwtKey{f.key})
	a, err := New(context.Background(), Config{
		TrustDomain: testTD.Name(),
		Audiences:   []string{testAudience},
		BundleFile:  f.path,
		Logger:      f.logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	f.a = a
	return f
}
