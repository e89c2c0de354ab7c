package redis

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
)

// Defaults of Config.
const (
	// DefaultUsernameField is the credential field holding the ACL user
	// when username_field is empty.
	DefaultUsernameField = "username"
	// DefaultPasswordField is the credential field holding the password
	// when password_field is empty.
	DefaultPasswordField = "password"
)

// TLS modes of the upstream connection (tls.mode), as libpq's sslmode
// names them.
const (
	// ModeDisable connects without TLS.
	ModeDisable = "disable"
	// ModeRequire connects with TLS without verifying the server's
	// certificate: the link is encrypted, the server is not authenticated.
	ModeRequire = "require"
	// ModeVerifyCA verifies the server's certificate chain against ca_file
	// (or the system roots) but not the name it is issued for.
	ModeVerifyCA = "verify-ca"
	// ModeVerifyFull verifies the chain and that the certificate is issued
	// for server_name (default: the upstream's host). The default.
	ModeVerifyFull = "verify-full"
)

// Config configures one Redis injection listener. In the configuration
// file, under listeners:
//
//   - redis: {listen: 127.0.0.1:6380, upstream: cache.internal:6379, credential: cache,
//     tls: {mode: verify-full, ca_file: …}, drain_timeout: 30s}
type Config struct {
	// Listen is where the app connects: host:port with a loopback host
	// (127.0.0.1, [::1], localhost), or unix:///absolute/path. Required;
	// the listener itself is made by the caller (see Network).
	Listen string `yaml:"listen"`
	// Upstream is the Redis server: host:port, or unix:///absolute/path
	// for its Unix socket. Required.
	Upstream string `yaml:"upstream"`
	// Credential names the configured credential the listener logs in
	// with. Required.
	Credential string `yaml:"credential"`
	// UsernameField is the credential's field holding the ACL user to log
	// in as; default DefaultUsernameField. It is optional in the
	// credential: when the credential has no such field, the listener logs
	// in as the default user with the password alone (AUTH password).
	UsernameField string `yaml:"username_field"`
	// PasswordField is the credential's field holding the password;
	// default DefaultPasswordField. A static credential's one field is
	// "value": set password_field: value to log in as the default user
	// with it.
	PasswordField string `yaml:"password_field"`
	// TLS, when present, connects to the upstream with TLS; its mode
	// defaults to verify-full. Default absent: no TLS.
	TLS *TLSConfig `yaml:"tls"`
	// DrainTimeout is how long sessions in progress may go on when the
	// listener stops; default broker.DefaultDrainTimeout.
	DrainTimeout broker.DrainTimeout `yaml:"drain_timeout"`
	// AllowAmbient lets the broker's ambient identity (attestors.ambient)
	// stand in for a caller whose process it cannot see — a TCP caller in
	// another network or pid namespace. Any process that can reach the
	// listener then gets that identity. Default false: such callers are
	// refused.
	AllowAmbient bool `yaml:"allow_ambient"`
}

// TLSConfig configures TLS to the upstream.
type TLSConfig struct {
	// Mode is disable, require, verify-ca or verify-full (see the Mode*
	// constants); default verify-full.
	Mode string `yaml:"mode"`
	// CAFile holds the PEM certificates the upstream's chain is verified
	// against (verify-ca, verify-full); default the system roots.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name the upstream's certificate must be issued
	// for (verify-full) and the SNI sent; default the upstream's host.
	// Required with verify-full to a unix:// upstream.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile hold a PEM client certificate and its key,
	// presented to the upstream (Redis's tls-auth-clients); default none.
	// Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// mode returns the TLS mode in force: disable without a tls block,
// verify-full when the block leaves it empty.
func (c *Config) mode() string {
	switch {
	case c.TLS == nil:
		return ModeDisable
	case c.TLS.Mode == "":
		return ModeVerifyFull
	}
	return c.TLS.Mode
}

func (c *Config) usernameField() string {
	if c.UsernameField == "" {
		return DefaultUsernameField
	}
	return c.UsernameField
}

func (c *Config) passwordField() string {
	if c.PasswordField == "" {
		return DefaultPasswordField
	}
	return c.PasswordField
}

// Paths returns the file-path fields, for the loader to resolve relative to
// the config file. A unix:// address is not among them.
func (c *Config) Paths() []*string {
	if c.TLS == nil {
		return nil
	}
	return []*string{&c.TLS.CAFile, &c.TLS.CertFile, &c.TLS.KeyFile}
}

// Fields returns the credential data fields the listener needs: the
// password field only. The username field is used when the credential has
// it and is not required, so that a credential holding a password alone
// (a static one, with password_field: value) logs in as the default user.
func (c *Config) Fields() []string { return []string{c.passwordField()} }

// Network returns the network and address to listen on: ("unix", path)
// for unix:///path, else ("tcp", host:port).
func (c *Config) Network() (network, address string) { return listener.Network(c.Listen) }

// Validate reports every problem with c. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("redis: "+format, args...))
	}
	if err := listener.CheckListen(c.Listen); err != nil {
		bad("listen: %v", err)
	}
	if err := checkUpstream(c.Upstream); err != nil {
		bad("upstream: %v", err)
	}
	switch {
	case c.Credential == "":
		bad("credential is required")
	case !broker.ValidName(c.Credential):
		bad("credential %q is not a credential name", c.Credential)
	}
	if c.usernameField() == c.passwordField() {
		bad("username_field and password_field name the same field %q", c.passwordField())
	}
	if c.TLS != nil {
		for _, p := range c.tlsProblems() {
			bad("tls: %s", p)
		}
	}
	if c.DrainTimeout < 0 {
		bad("drain_timeout must not be negative")
	}
	return errors.Join(errs...)
}

// tlsProblems checks the tls block.
func (c *Config) tlsProblems() []string {
	t := c.TLS
	var out []string
	mode := c.mode()
	switch mode {
	case ModeDisable, ModeRequire, ModeVerifyCA, ModeVerifyFull:
	default:
		return []string{fmt.Sprintf("mode %q is not one of disable, require, verify-ca, verify-full", t.Mode)}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		out = append(out, "cert_file and key_file go together")
	}
	if mode == ModeDisable && (t.CAFile != "" || t.ServerName != "" || t.CertFile != "" || t.KeyFile != "") {
		out = append(out, "mode disable uses no TLS: remove ca_file, server_name, cert_file and key_file, or choose another mode")
	}
	if mode == ModeRequire && t.CAFile != "" {
		out = append(out, "mode require does not verify the server: ca_file needs verify-ca or verify-full")
	}
	if _, ok := strings.CutPrefix(c.Upstream, listener.UnixScheme); ok && mode == ModeVerifyFull && t.ServerName == "" {
		out = append(out, "verify-full to a unix:// upstream needs server_name, the name its certificate is issued for")
	}
	return out
}

// checkUpstream accepts host:port or unix:///absolute/path.
func checkUpstream(s string) error {
	if s == "" {
		return errors.New("required (host:port or unix:///path)")
	}
	if p, ok := strings.CutPrefix(s, listener.UnixScheme); ok {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return errors.New("a unix:// address needs a clean absolute path (unix:///run/redis/redis.sock)")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port (cache.internal:6379) or unix:///path")
	}
	if host == "" {
		return errors.New("the host is empty")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a port number", port)
	}
	return nil
}

// tlsConfig returns the client TLS configuration for the upstream, or nil
// for mode disable. It reads the CA and key files.
func (c *Config) tlsConfig() (*tls.Config, error) {
	mode := c.mode()
	if mode == ModeDisable {
		return nil, nil
	}
	t := c.TLS
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(c.Upstream); err == nil {
			cfg.ServerName = host
		}
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis: tls: ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis: tls: ca_file %s: no PEM certificate in it", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis: tls: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	switch mode {
	case ModeRequire:
		cfg.InsecureSkipVerify = true
	case ModeVerifyCA:
		// Go verifies the chain and the name together; verify-ca checks
		// the chain itself and no name.
		cfg.InsecureSkipVerify = true
		roots := cfg.RootCAs
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, roots) }
	}
	return cfg, nil
}

// verifyChain verifies the peer's certificate chain against roots (nil:
// the system roots), whatever name it is issued for.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("redis: tls: the upstream presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("redis: tls: verify-ca: %w", err)
	}
	return nil
}
