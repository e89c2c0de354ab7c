package postgres

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	pgprov "github.com/credbroker/credbroker/providers/postgres"
)

// TLS modes of the upstream connection (tls.mode), as libpq's sslmode
// names them; see listener.UpstreamTLS.
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

// The credential's data fields the listener logs in upstream with.
const (
	FieldUsername = pgprov.FieldUsername
	FieldPassword = pgprov.FieldPassword
)

// Config configures one PostgreSQL injection listener. In the
// configuration file, under listeners:
//
//   - postgres: {listen: unix:///run/credbroker/pg/.s.PGSQL.5432, upstream: db.internal:5432,
//     credential: orders-db, tls: {mode: verify-full, ca_file: /etc/credbroker/db-ca.pem}}
type Config struct {
	// Listen is where applications connect: host:port with a loopback
	// host, or unix:///absolute/path — name the socket .s.PGSQL.PORT so
	// that libpq finds it with host=DIRECTORY (psql -h DIRECTORY).
	// Required; the listener itself is made by the caller (see Network).
	Listen string `yaml:"listen"`
	// Upstream is the PostgreSQL server's host:port. Required.
	Upstream string `yaml:"upstream"`
	// Credential names the configured credential whose username and
	// password fields log in upstream. Required.
	Credential string `yaml:"credential"`
	// TLS configures the connection to the upstream; default mode
	// verify-full against the system roots.
	TLS TLSConfig `yaml:"tls"`
	// ListenerTLS, when set, lets clients negotiate TLS with the listener
	// (SSLRequest answered S); default unset: SSLRequest is answered N and
	// clients speak in the clear on the loopback or Unix socket.
	ListenerTLS ListenerTLSConfig `yaml:"listener_tls"`
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
// verify-full.
type TLSConfig = listener.UpstreamTLS

// ListenerTLSConfig is the certificate the listener presents to clients
// that ask for TLS. Both or neither.
type ListenerTLSConfig = listener.ServerTLS

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
		errs = append(errs, fmt.Errorf("postgres: "+format, args...))
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
	if c.DrainTimeout < 0 {
		bad("drain_timeout must not be negative")
	}
	return errors.Join(errs...)
}

// checkUpstream accepts host:port with a non-empty host and a port number.
func checkUpstream(s string) error {
	if s == "" {
		return errors.New("required (host:port of the PostgreSQL server)")
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
