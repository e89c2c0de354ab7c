package mysql

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
)

// TLS modes of the upstream connection (tls.mode), as libpq's sslmode and
// MySQL's ssl-mode (DISABLED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY) name
// them; see listener.UpstreamTLS.
const (
	// ModeDisable connects without TLS.
	ModeDisable = listener.ModeDisable
	// ModeRequire encrypts without verifying the server's certificate.
	ModeRequire = listener.ModeRequire
	// ModeVerifyCA verifies the certificate's chain, not its name.
	ModeVerifyCA = listener.ModeVerifyCA
	// ModeVerifyFull verifies the chain and the name: the default.
	ModeVerifyFull = listener.ModeVerifyFull
)

// The credential's data fields the listener logs in upstream with: those
// of the postgres and vault providers' database credentials.
const (
	FieldUsername = "username"
	FieldPassword = "password"
)

// DefaultServerVersion is the version the listener announces to clients
// when server_version is empty: a MySQL 8.0 server, marked as the broker.
const DefaultServerVersion = "8.0.0-credbroker"

// maxServerVersion bounds server_version (MySQL's own is under 60 bytes).
const maxServerVersion = 100

// Config configures one MySQL / MariaDB injection listener. In the
// configuration file, under listeners:
//
//   - mysql: {listen: 127.0.0.1:3306, upstream: db.internal:3306, credential: orders-db,
//     tls: {mode: verify-full, ca_file: /etc/credbroker/db-ca.pem}}
type Config struct {
	// Listen is where applications connect: host:port with a loopback
	// host, or unix:///absolute/path (mysql --socket=PATH). Required; the
	// listener itself is made by the caller (see Network).
	Listen string `yaml:"listen"`
	// Upstream is the MySQL or MariaDB server's host:port. Required.
	Upstream string `yaml:"upstream"`
	// Credential names the configured credential whose username and
	// password fields log in upstream. Required.
	Credential string `yaml:"credential"`
	// TLS configures the connection to the upstream; default mode
	// verify-full against the system roots.
	TLS TLSConfig `yaml:"tls"`
	// ListenerTLS, when set, lets clients switch to TLS with the listener
	// (the listener advertises CLIENT_SSL); default unset: clients speak
	// in the clear on the loopback or Unix socket, and a client that
	// insists on TLS (ssl-mode=REQUIRED) cannot connect.
	ListenerTLS ListenerTLSConfig `yaml:"listener_tls"`
	// ServerVersion is the version string the listener announces in its
	// greeting. The listener greets a client before it connects upstream,
	// so it cannot pass the upstream's own; set it to what the upstream
	// reports (SELECT VERSION(); MariaDB's with the "5.5.5-" prefix its
	// greeting carries, such as 5.5.5-10.11.6-MariaDB) when a client
	// adapts to the version — MySQL Connector/J picks
	// @@transaction_isolation or @@tx_isolation by it. Default
	// DefaultServerVersion.
	ServerVersion string `yaml:"server_version"`
	// DrainTimeout is how long sessions in progress may go on when the
	// listener stops; default broker.DefaultDrainTimeout. Sessions still
	// open then are cut.
	DrainTimeout broker.DrainTimeout `yaml:"drain_timeout"`
	// AllowAmbient lets the broker's ambient identity stand in for a
	// caller whose process it cannot see (a TCP caller in another network
	// or pid namespace); any process that can reach the listener then gets
	// that identity. Default false: such callers are refused.
	AllowAmbient bool `yaml:"allow_ambient"`
}

// TLSConfig configures TLS to the upstream; an empty mode is
// verify-full. cert_file and key_file serve accounts that REQUIRE X509.
type TLSConfig = listener.UpstreamTLS

// ListenerTLSConfig is the certificate the listener presents to clients
// that ask for TLS. Both or neither.
type ListenerTLSConfig = listener.ServerTLS

// serverVersion returns the announced version, with the default.
func (c *Config) serverVersion() string {
	if c.ServerVersion == "" {
		return DefaultServerVersion
	}
	return c.ServerVersion
}

// Paths returns the file-path fields, for the loader to resolve relative
// to the config file. A unix:// listen path is not among them: it is part
// of an address.
func (c *Config) Paths() []*string {
	return append(c.TLS.Paths(), c.ListenerTLS.Paths()...)
}

// Fields returns the credential data fields the listener uses: username
// and password.
func (c *Config) Fields() []string { return []string{FieldUsername, FieldPassword} }

// Network returns the network and address to listen on: ("unix", path)
// for unix:///path, else ("tcp", host:port).
func (c *Config) Network() (network, address string) { return listener.Network(c.Listen) }

// Validate reports every problem with c. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("mysql: "+format, args...))
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
	for _, p := range c.TLS.Problems(ModeVerifyFull) {
		bad("tls: %s", p)
	}
	for _, p := range c.ListenerTLS.Problems() {
		bad("listener_tls: %s", p)
	}
	if err := checkServerVersion(c.ServerVersion); err != nil {
		bad("server_version: %v", err)
	}
	if c.DrainTimeout < 0 {
		bad("drain_timeout must not be negative")
	}
	return errors.Join(errs...)
}

// checkUpstream accepts host:port with a non-empty host and a port number.
func checkUpstream(s string) error {
	if s == "" {
		return errors.New("required (host:port of the MySQL or MariaDB server)")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want host:port", s)
	}
	if host == "" || strings.ContainsAny(host, " \t\r\n\x00/") {
		return fmt.Errorf("%q: want a host name or address before the port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a port number", port)
	}
	return nil
}

// checkServerVersion accepts printable ASCII that starts with a digit, as
// clients parse a version's leading numbers; empty means the default.
func checkServerVersion(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > maxServerVersion {
		return fmt.Errorf("longer than %d bytes", maxServerVersion)
	}
	if v[0] < '0' || v[0] > '9' {
		return fmt.Errorf("%q: want a version that starts with its number, such as 8.0.36 or 5.5.5-10.11.6-MariaDB", v)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return fmt.Errorf("%q: only printable ASCII", v)
		}
	}
	return nil
}
