package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
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
// names them; see listener.UpstreamTLS.
const (
	// ModeDisable connects without TLS.
	ModeDisable = listener.ModeDisable
	// ModeRequire encrypts without verifying the server's certificate.
	ModeRequire = listener.ModeRequire
	// ModeVerifyCA verifies the certificate's chain against ca_file (or
	// the system roots), not the name it is issued for.
	ModeVerifyCA = listener.ModeVerifyCA
	// ModeVerifyFull verifies the chain and that the certificate is issued
	// for server_name (default: the upstream's host). The default.
	ModeVerifyFull = listener.ModeVerifyFull
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

// TLSConfig configures TLS to the upstream; an empty mode is
// verify-full. server_name is required with verify-full to a unix://
// upstream; cert_file and key_file serve Redis's tls-auth-clients.
type TLSConfig = listener.UpstreamTLS

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
	return c.TLS.Paths()
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

// tlsProblems checks the tls block: the shared rules, and server_name
// with verify-full to a unix:// upstream, which has no host to default to.
func (c *Config) tlsProblems() []string {
	out := c.TLS.Problems(ModeVerifyFull)
	if _, ok := strings.CutPrefix(c.Upstream, listener.UnixScheme); ok && c.TLS.ModeOr(ModeVerifyFull) == ModeVerifyFull && c.TLS.ServerName == "" {
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
// without a tls block or with mode disable. It reads the CA and key files.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.TLS == nil {
		return nil, nil
	}
	host, _, _ := net.SplitHostPort(c.Upstream) // empty for a unix:// upstream
	tc, err := c.TLS.Client(host, ModeVerifyFull)
	if err != nil {
		return nil, fmt.Errorf("redis: tls: %w", err)
	}
	return tc, nil
}
