package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// testCA issues X.509-SVIDs for a trust domain, standing in for the SPIRE
// server's CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// issue returns a leaf for a SPIFFE ID (client) or for 127.0.0.1 (server).
func (ca *testCA) issue(t *testing.T, spiffeID string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if spiffeID != "" {
		u, _ := url.Parse(spiffeID)
		tmpl.URIs = []*url.URL{u}
	}
	if server {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// bundle is the trust domain's SPIFFE bundle (JWKS format) with ca as its
// X.509 authority.
func (ca *testCA) bundle(t *testing.T) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: ca.cert.PublicKey, Certificates: []*x509.Certificate{ca.cert}, Use: "x509-svid",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMTLSListener serves the socket API on a TCP listener to callers
// presenting X.509-SVIDs: the SPIFFE ID in the certificate is the identity,
// a certificate from another CA fails the handshake, and decisions are
// audited on the mtls channel. The listener is configured under listeners:
// as a socket_api listener, or with the deprecated attestors.spiffe keys,
// which check warns about.
func TestMTLSListener(t *testing.T) {
	for _, tt := range []struct {
		name     string
		config   func(bundle, cert, key string) string
		warnings int
	}{
		{"socket_api listener", func(bundle, cert, key string) string {
			return "attestors:\n  spiffe: {trust_domain: example.org, audiences: [credbroker], bundle_file: " + bundle + "}\n" +
				"listeners:\n  - socket_api: {listen: \"127.0.0.1:0\", cert_file: " + cert + ", key_file: " + key + "}\n"
		}, 0},
		{"deprecated mtls_listen", func(bundle, cert, key string) string {
			return "attestors:\n  spiffe: {trust_domain: example.org, audiences: [credbroker], bundle_file: " + bundle +
				", mtls_listen: \"127.0.0.1:0\", mtls_cert_file: " + cert + ", mtls_key_file: " + key + "}\n"
		}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) { testMTLSListener(t, tt.config, tt.warnings) })
	}
}

func testMTLSListener(t *testing.T, config func(bundle, cert, key string) string, warnings int) {
	ca := newTestCA(t, "example.org")
	e := newEnv(t, `policies:
  - name: payments-over-mtls
    effect: allow
    workloads: [{spiffe: {id: "spiffe://example.org/ns/payments/sa/*", trust_domain: example.org}}]
    credentials: [demo]
    when: 'request.channel == "mtls"'
`, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	bundle := e.write("bundle.jwks", string(ca.bundle(t)))
	server := ca.issue(t, "spiffe://example.org/credbroker", true)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate[0]})
	keyDER, _ := x509.MarshalPKCS8PrivateKey(server.PrivateKey)
	certFile := e.write("server.pem", string(certPEM))
	keyFile := e.write("server.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, append(cfg, []byte(config(bundle, certFile, keyFile))...), 0o600)
	out, _, code := credbroker(t, "check", "--config", e.config)
	if code != 0 || strings.Count(out, "warning: attestors.spiffe.mtls_listen is deprecated") != warnings {
		t.Fatalf("check: exit %d, want %d deprecation warnings:\n%s", code, warnings, out)
	}
	b := e.start()
	addr := logAddr(t, b, "mtls listening")

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	get := func(client tls.Certificate) (int, string, error) {
		c := &http.Client{Timeout: hangBound, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, Certificates: []tls.Certificate{client},
		}}}
		req, _ := http.NewRequest("GET", "https://"+addr+"/v1/credentials/demo", nil)
		req.Header.Set("Credbroker-Request", "1")
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	status, body, err := get(ca.issue(t, "spiffe://example.org/ns/payments/sa/api", false))
	if err != nil || status != 200 || !strings.Contains(body, "s3cr3t") {
		t.Fatalf("payments SVID: %d %s %v\n%s", status, body, err, b.logs)
	}
	if status, body, _ := get(ca.issue(t, "spiffe://example.org/ns/orders/sa/api", false)); status != 403 {
		t.Fatalf("orders SVID: %d %s", status, body)
	}
	if _, _, err := get(newTestCA(t, "evil").issue(t, "spiffe://example.org/ns/payments/sa/api", false)); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	b.stop(syscall.SIGTERM)
	var rows []auditRow
	for _, r := range auditRows(t, e.db) {
		rows = append(rows, r)
	}
	if len(rows) != 2 {
		t.Fatalf("%d audit rows, want 2 (the failed handshake never reaches a decision)", len(rows))
	}
	for _, r := range rows {
		if r.Channel != "mtls" || !strings.HasPrefix(r.Subject, "spiffe://example.org/ns/") {
			t.Errorf("audit row %+v", r)
		}
	}
}

// logAddr finds the address a "<what> … addr=…" log line names.
func logAddr(t *testing.T, b *brokerProc, what string) string {
	t.Helper()
	re := regexp.MustCompile(what + `.*addr=?"?:?"?([0-9.]+:[0-9]+)`)
	deadline := time.Now().Add(hangBound)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(b.logs.String()); m != nil {
			return m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %q address in log:\n%s", what, b.logs)
	return ""
}
