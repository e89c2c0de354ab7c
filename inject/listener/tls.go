package listener

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLS modes of a listener's upstream connection (tls.mode), as libpq's
// sslmode and MySQL's ssl-mode (DISABLED, REQUIRED, VERIFY_CA,
// VERIFY_IDENTITY) name them.
const (
	// ModeDisable connects without TLS.
	ModeDisable = "disable"
	// ModeRequire encrypts without verifying the server's certificate:
	// the link is encrypted, the server is not authenticated.
	ModeRequire = "require"
	// ModeVerifyCA encrypts and verifies the certificate's chain, not the
	// name it is issued for.
	ModeVerifyCA = "verify-ca"
	// ModeVerifyFull encrypts and verifies the chain and that the
	// certificate is issued for the server name.
	ModeVerifyFull = "verify-full"
)

// UpstreamTLS configures TLS from a listener to its upstream: the tls
// block of the postgres, mysql and redis listeners. Each listener chooses
// the mode that applies when Mode is empty.
type UpstreamTLS struct {
	// Mode is disable, require, verify-ca or verify-full; empty means the
	// listener's default (verify-full for all of them).
	Mode string `yaml:"mode"`
	// CAFile holds the PEM certificates the upstream's chain is verified
	// against, instead of the system roots; verify-ca and verify-full
	// only. Default: the system roots.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name sent in SNI and, with verify-full, checked
	// against the certificate; default the upstream's host.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile hold a PEM client certificate and its key,
	// presented to the upstream (for accounts or servers that require
	// one); default none. Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// ModeOr returns t's mode, or defaultMode when t leaves it empty.
func (t UpstreamTLS) ModeOr(defaultMode string) string {
	if t.Mode == "" {
		return defaultMode
	}
	return t.Mode
}

// Problems reports every problem with t, defaultMode standing in for an
// empty mode. Each names the field within the block; the caller prefixes
// the block's own name (tls: …). It does no I/O.
func (t UpstreamTLS) Problems(defaultMode string) []string {
	var out []string
	switch t.ModeOr(defaultMode) {
	case ModeDisable:
		if t.CAFile != "" || t.ServerName != "" || t.CertFile != "" || t.KeyFile != "" {
			out = append(out, "with mode disable the upstream connection has no TLS: remove ca_file, server_name, cert_file and key_file, or choose require, verify-ca or verify-full")
		}
	case ModeRequire:
		if t.CAFile != "" {
			out = append(out, "ca_file is not used with mode require, which does not verify the upstream's certificate: choose verify-ca or verify-full")
		}
	case ModeVerifyCA, ModeVerifyFull:
	default:
		out = append(out, fmt.Sprintf("mode %q: want disable, require, verify-ca or verify-full", t.Mode))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		out = append(out, "cert_file and key_file go together")
	}
	if strings.ContainsAny(t.ServerName, " \t\r\n\x00/") {
		out = append(out, fmt.Sprintf("server_name %q is not a host name", t.ServerName))
	}
	return out
}

// Paths returns t's file-path fields (ca_file, cert_file, key_file), for
// the loader to resolve relative to the config file.
func (t *UpstreamTLS) Paths() []*string {
	return []*string{&t.CAFile, &t.CertFile, &t.KeyFile}
}

// Client returns the client TLS configuration for the upstream at host,
// or nil for mode disable; defaultMode stands in for an empty mode. It is
// TLS 1.2 or later, with SNI for server_name (default host, which may be
// empty); require skips verification, verify-ca verifies the chain
// against ca_file (else the system roots) but not the name, verify-full
// both. It reads the CA and client certificate files.
func (t UpstreamTLS) Client(host, defaultMode string) (*tls.Config, error) {
	mode := t.ModeOr(defaultMode)
	if mode == ModeDisable {
		return nil, nil
	}
	name := t.ServerName
	if name == "" {
		name = host
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	var roots *x509.CertPool // nil: the system roots
	if t.CAFile != "" {
		b, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", t.CAFile)
		}
	}
	switch mode {
	case ModeRequire:
		tc.InsecureSkipVerify = true // encrypted, not authenticated: what require means
	case ModeVerifyCA:
		// Go verifies the chain and the name together; verify-ca checks
		// the chain itself and no name.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, roots) }
	case ModeVerifyFull:
		tc.RootCAs = roots
	}
	return tc, nil
}

// verifyChain verifies the peer's certificate chain against roots (nil:
// the system roots) for server authentication, whatever name it is issued
// for: verify-ca.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("verify-ca: the upstream presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("verify-ca: %w", err)
	}
	return nil
}

// ServerTLS is the certificate a listener presents to clients that ask
// for TLS: the listener_tls block. Both or neither; neither means the
// listener offers no TLS.
type ServerTLS struct {
	// CertFile and KeyFile hold the listener's PEM certificate (chain)
	// and its key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Problems reports every problem with s; the caller prefixes the block's
// name (listener_tls: …). It does no I/O.
func (s ServerTLS) Problems() []string {
	if (s.CertFile == "") != (s.KeyFile == "") {
		return []string{"cert_file and key_file go together"}
	}
	return nil
}

// Paths returns s's file-path fields (cert_file, key_file), for the
// loader to resolve relative to the config file.
func (s *ServerTLS) Paths() []*string {
	return []*string{&s.CertFile, &s.KeyFile}
}

// Server returns the server TLS configuration (TLS 1.2 or later, s's
// certificate), or nil when s is unset. It reads the certificate and key
// files.
func (s ServerTLS) Server() (*tls.Config, error) {
	if s.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}
