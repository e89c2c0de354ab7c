package listener_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credbroker/credbroker/inject/listener"
)

// serverName is the name the test server's certificate is issued for.
const serverName = "db.test"

// pki is a CA with a server and a client certificate, and a second CA
// that issued neither; each as PEM files in a temporary directory.
type pki struct {
	caFile, otherCAFile    string
	serverCert, serverKey  string
	clientCert, clientKey  string
	roots                  *x509.CertPool
	serverPair, clientPair tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey := newCA(t, "credbroker test CA")
	other, _ := newCA(t, "another CA")
	p := &pki{
		caFile:      writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw),
		otherCAFile: writePEM(t, dir, "other-ca.pem", "CERTIFICATE", other.Raw),
		roots:       x509.NewCertPool(),
	}
	p.roots.AddCert(caCert)
	p.serverCert, p.serverKey, p.serverPair = issue(t, dir, "server", caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: serverName},
		DNSNames:    []string{serverName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.clientCert, p.clientKey, p.clientPair = issue(t, dir, "client", caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "credbroker"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

func template() *x509.Certificate {
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		panic(err)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
}

func newCA(t *testing.T, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := template()
	tmpl.Subject = pkix.Name{CommonName: cn}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// issue signs leaf with the CA and writes NAME.pem and NAME.key.
func issue(t *testing.T, dir, name string, ca *x509.Certificate, caKey crypto.Signer, leaf *x509.Certificate) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := template()
	tmpl.Subject, tmpl.DNSNames, tmpl.IPAddresses, tmpl.ExtKeyUsage = leaf.Subject, leaf.DNSNames, leaf.IPAddresses, leaf.ExtKeyUsage
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writePEM(t, dir, name+".pem", "CERTIFICATE", der)
	keyFile = writePEM(t, dir, name+".key", "PRIVATE KEY", keyDER)
	pair, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tlsServer serves TLS with cfg on loopback: after each handshake it
// writes 'C' when the client presented a certificate and '-' when it did
// not, then closes. It returns the address.
func tlsServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(30 * time.Second))
				if tc.Handshake() != nil {
					return
				}
				answer := []byte("-")
				if len(tc.ConnectionState().PeerCertificates) > 0 {
					answer = []byte("C")
				}
				tc.Write(answer)
			})
		}
	})
	return ln.Addr().String()
}

// handshake connects to addr with cfg and returns what the server says
// of the client certificate.
func handshake(t *testing.T, addr string, cfg *tls.Config) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(tc)
	return string(b), err
}

// TestUpstreamTLSClient: each mode against a real TLS server whose
// certificate a generated CA issued for db.test, asking for (not
// requiring) a client certificate.
func TestUpstreamTLSClient(t *testing.T) {
	p := newPKI(t)
	addr := tlsServer(t, &tls.Config{
		Certificates: []tls.Certificate{p.serverPair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    p.roots,
	})
	for _, tt := range []struct {
		name    string
		cfg     listener.UpstreamTLS
		host    string
		want    string // the server's answer: C with a client certificate
		refused string // part of the handshake's error; empty when it works
	}{
		{"verify-full, right name", listener.UpstreamTLS{Mode: listener.ModeVerifyFull, CAFile: p.caFile}, serverName, "-", ""},
		{"verify-full, server_name over host", listener.UpstreamTLS{Mode: listener.ModeVerifyFull, CAFile: p.caFile, ServerName: serverName}, "wrong.test", "-", ""},
		{"verify-full, the IP", listener.UpstreamTLS{Mode: listener.ModeVerifyFull, CAFile: p.caFile}, "127.0.0.1", "-", ""},
		{"verify-full, wrong name", listener.UpstreamTLS{Mode: listener.ModeVerifyFull, CAFile: p.caFile}, "wrong.test", "", "certificate is valid for db.test"},
		{"verify-full, wrong server_name", listener.UpstreamTLS{Mode: listener.ModeVerifyFull, CAFile: p.caFile, ServerName: "wrong.test"}, serverName, "", "certificate is valid for db.test"},
		{"verify-full, other CA", listener.UpstreamTLS{Mode: listener.ModeVerifyFull, CAFile: p.otherCAFile}, serverName, "", "unknown authority"},
		{"verify-full, system roots", listener.UpstreamTLS{Mode: listener.ModeVerifyFull}, serverName, "", "unknown authority"},
		{"default mode is the caller's", listener.UpstreamTLS{CAFile: p.caFile}, "wrong.test", "", "certificate is valid for db.test"},
		{"verify-ca, wrong name", listener.UpstreamTLS{Mode: listener.ModeVerifyCA, CAFile: p.caFile, ServerName: "wrong.test"}, "wrong.test", "-", ""},
		{"verify-ca, other CA", listener.UpstreamTLS{Mode: listener.ModeVerifyCA, CAFile: p.otherCAFile}, serverName, "", "verify-ca: x509: certificate signed by unknown authority"},
		{"verify-ca, system roots", listener.UpstreamTLS{Mode: listener.ModeVerifyCA}, serverName, "", "unknown authority"},
		{"require, anything", listener.UpstreamTLS{Mode: listener.ModeRequire, ServerName: "wrong.test"}, "wrong.test", "-", ""},
		{"client certificate", listener.UpstreamTLS{Mode: listener.ModeVerifyFull, CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}, serverName, "C", ""},
		{"client certificate, verify-ca", listener.UpstreamTLS{Mode: listener.ModeVerifyCA, CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}, "x", "C", ""},
		{"client certificate, require", listener.UpstreamTLS{Mode: listener.ModeRequire, CertFile: p.clientCert, KeyFile: p.clientKey}, "x", "C", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.cfg.Client(tt.host, listener.ModeVerifyFull)
			if err != nil || cfg == nil {
				t.Fatalf("Client = %v, %v", cfg, err)
			}
			if cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion %x", cfg.MinVersion)
			}
			got, err := handshake(t, addr, cfg)
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("handshake: %v; want it refused with %q", err, tt.refused)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("handshake: %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestUpstreamTLSDisable: disable, explicit or as the default, builds no
// configuration and reads no file.
func TestUpstreamTLSDisable(t *testing.T) {
	for _, tt := range []struct {
		cfg  listener.UpstreamTLS
		mode string
	}{
		{listener.UpstreamTLS{Mode: listener.ModeDisable, CAFile: "/nonexistent"}, listener.ModeVerifyFull},
		{listener.UpstreamTLS{}, listener.ModeDisable},
	} {
		if cfg, err := tt.cfg.Client("db", tt.mode); cfg != nil || err != nil {
			t.Errorf("Client(%+v, %s) = %v, %v; want nil, nil", tt.cfg, tt.mode, cfg, err)
		}
	}
}

// TestUpstreamTLSFiles: the file that cannot be used is named.
func TestUpstreamTLSFiles(t *testing.T) {
	p := newPKI(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  listener.UpstreamTLS
		want string
	}{
		{"missing ca_file", listener.UpstreamTLS{CAFile: missing}, "ca_file: open " + missing},
		{"ca_file without PEM", listener.UpstreamTLS{CAFile: notPEM}, "ca_file " + notPEM + ": no PEM certificate in it"},
		{"missing cert_file", listener.UpstreamTLS{CertFile: missing, KeyFile: p.clientKey}, "client certificate: open " + missing},
		{"key of another certificate", listener.UpstreamTLS{CertFile: p.clientCert, KeyFile: p.serverKey}, "client certificate: tls: private key does not match public key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.cfg.Client("db", listener.ModeVerifyFull)
			if err == nil || cfg != nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Client = %v, %v; want an error with %q", cfg, err, tt.want)
			}
		})
	}
}

// TestVerifyCANoCertificate: verify-ca refuses a connection state
// without certificates (which Go's handshake does not let through, so it
// is called directly).
func TestVerifyCANoCertificate(t *testing.T) {
	cfg, err := listener.UpstreamTLS{Mode: listener.ModeVerifyCA}.Client("db", listener.ModeVerifyFull)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.VerifyConnection(tls.ConnectionState{}); err == nil || !strings.Contains(err.Error(), "presented no certificate") {
		t.Errorf("VerifyConnection without certificates: %v", err)
	}
}

// TestUpstreamTLSProblems: each bad combination is reported, all at once,
// and the good ones pass.
func TestUpstreamTLSProblems(t *testing.T) {
	for _, tt := range []struct {
		name        string
		cfg         listener.UpstreamTLS
		defaultMode string
		want        []string
	}{
		{"empty, verify-full default", listener.UpstreamTLS{}, listener.ModeVerifyFull, nil},
		{"empty, disable default", listener.UpstreamTLS{}, listener.ModeDisable, nil},
		{"disable", listener.UpstreamTLS{Mode: "disable"}, listener.ModeVerifyFull, nil},
		{"require with a name and a client certificate", listener.UpstreamTLS{Mode: "require", ServerName: "db", CertFile: "c", KeyFile: "k"}, listener.ModeVerifyFull, nil},
		{"verify-ca, everything", listener.UpstreamTLS{Mode: "verify-ca", CAFile: "ca", ServerName: "db", CertFile: "c", KeyFile: "k"}, listener.ModeVerifyFull, nil},
		{"verify-full, everything", listener.UpstreamTLS{Mode: "verify-full", CAFile: "ca", ServerName: "db", CertFile: "c", KeyFile: "k"}, listener.ModeVerifyFull, nil},
		{"unknown mode", listener.UpstreamTLS{Mode: "prefer"}, listener.ModeVerifyFull,
			[]string{`mode "prefer": want disable, require, verify-ca or verify-full`}},
		{"disable with a CA", listener.UpstreamTLS{Mode: "disable", CAFile: "ca"}, listener.ModeVerifyFull,
			[]string{"with mode disable the upstream connection has no TLS: remove ca_file, server_name, cert_file and key_file, or choose require, verify-ca or verify-full"}},
		{"disable by default with a name", listener.UpstreamTLS{ServerName: "db"}, listener.ModeDisable, []string{"with mode disable"}},
		{"disable with a client certificate", listener.UpstreamTLS{Mode: "disable", CertFile: "c", KeyFile: "k"}, listener.ModeVerifyFull, []string{"with mode disable"}},
		{"require with a CA", listener.UpstreamTLS{Mode: "require", CAFile: "ca"}, listener.ModeVerifyFull,
			[]string{"ca_file is not used with mode require, which does not verify the upstream's certificate: choose verify-ca or verify-full"}},
		{"cert without key", listener.UpstreamTLS{CertFile: "c"}, listener.ModeVerifyFull, []string{"cert_file and key_file go together"}},
		{"key without cert", listener.UpstreamTLS{Mode: "verify-ca", KeyFile: "k"}, listener.ModeVerifyFull, []string{"cert_file and key_file go together"}},
		{"server name with a slash", listener.UpstreamTLS{ServerName: "db/x"}, listener.ModeVerifyFull, []string{`server_name "db/x" is not a host name`}},
		{"server name with a space", listener.UpstreamTLS{ServerName: "db x"}, listener.ModeVerifyFull, []string{`server_name "db x" is not a host name`}},
		{"several", listener.UpstreamTLS{Mode: "on", CertFile: "c", ServerName: "a b"}, listener.ModeVerifyFull,
			[]string{`mode "on"`, "cert_file and key_file go together", "is not a host name"}},
		{"disable, several", listener.UpstreamTLS{Mode: "disable", KeyFile: "k"}, listener.ModeVerifyFull,
			[]string{"with mode disable", "cert_file and key_file go together"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.cfg.Problems(tt.defaultMode)
			if len(got) != len(tt.want) {
				t.Fatalf("Problems = %q; want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d %q lacks %q", i, got[i], w)
				}
			}
		})
	}
}

// TestPaths: the path fields, as pointers the loader rewrites.
func TestPaths(t *testing.T) {
	u := listener.UpstreamTLS{CAFile: "a", CertFile: "b", KeyFile: "c", ServerName: "n"}
	for _, p := range u.Paths() {
		*p = "/etc/" + *p
	}
	if u != (listener.UpstreamTLS{CAFile: "/etc/a", CertFile: "/etc/b", KeyFile: "/etc/c", ServerName: "n"}) {
		t.Errorf("UpstreamTLS after Paths: %+v", u)
	}
	s := listener.ServerTLS{CertFile: "d", KeyFile: "e"}
	var got []string
	for _, p := range s.Paths() {
		*p = "/etc/" + *p
		got = append(got, *p)
	}
	if !slices.Equal(got, []string{"/etc/d", "/etc/e"}) || s != (listener.ServerTLS{CertFile: "/etc/d", KeyFile: "/etc/e"}) {
		t.Errorf("ServerTLS after Paths: %v %+v", got, s)
	}
}

// TestServerTLS: the listener's certificate is what a client verifies;
// unset means no TLS; half a pair is a problem; a bad file an error.
func TestServerTLS(t *testing.T) {
	p := newPKI(t)
	if cfg, err := (listener.ServerTLS{}).Server(); cfg != nil || err != nil {
		t.Errorf("unset Server = %v, %v; want nil, nil", cfg, err)
	}
	if got := (listener.ServerTLS{}).Problems(); got != nil {
		t.Errorf("unset Problems = %q", got)
	}
	if got := (listener.ServerTLS{CertFile: p.serverCert, KeyFile: p.serverKey}).Problems(); got != nil {
		t.Errorf("Problems = %q", got)
	}
	for _, half := range []listener.ServerTLS{{CertFile: "c"}, {KeyFile: "k"}} {
		if got := half.Problems(); len(got) != 1 || got[0] != "cert_file and key_file go together" {
			t.Errorf("Problems(%+v) = %q", half, got)
		}
	}
	if _, err := (listener.ServerTLS{CertFile: p.serverCert, KeyFile: p.clientKey}).Server(); err == nil {
		t.Error("Server accepted a key of another certificate")
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	if _, err := (listener.ServerTLS{CertFile: missing, KeyFile: p.serverKey}).Server(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Server with a missing cert_file: %v", err)
	}

	cfg, err := listener.ServerTLS{CertFile: p.serverCert, KeyFile: p.serverKey}.Server()
	if err != nil || cfg == nil {
		t.Fatalf("Server = %v, %v", cfg, err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x", cfg.MinVersion)
	}
	addr := tlsServer(t, cfg)
	if got, err := handshake(t, addr, &tls.Config{RootCAs: p.roots, ServerName: serverName}); err != nil || got != "-" {
		t.Errorf("verified handshake: %q, %v", got, err)
	}
	if _, err := handshake(t, addr, &tls.Config{RootCAs: p.roots, ServerName: "wrong.test"}); err == nil {
		t.Error("a client checking another name accepted the listener's certificate")
	}
	old := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true}
	if _, err := handshake(t, addr, old); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("a TLS 1.1 client: %v; want the listener to refuse the version", err)
	}
}
