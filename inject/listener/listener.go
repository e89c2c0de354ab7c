// Package listener holds what every injection listener shares: the
// Decider it asks, its options (logger, connection cap), the rule for its
// listen address, and, for listeners of connection-oriented protocols
// (PostgreSQL, MySQL, Redis), the accept-serve-drain loop (Serve), the
// byte relay of a decided session (Relay), and the TLS settings of the
// upstream leg (UpstreamTLS: disable, require, verify-ca, verify-full) and
// of the client leg (ServerTLS).
//
// A listener package exports a Config (Validate without I/O, Paths,
// Fields, and Listen for the address), New(cfg, decider, opts...) and
// Run(ctx, ln) error, which serves until ctx ends, drains for the
// configured drain_timeout and returns nil.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/providers"
)

// Decider is what a listener needs of the broker: attest the caller,
// evaluate policy, obtain the credential and record the decision.
// *broker.Broker is one; a refusal is a *broker.Error.
type Decider interface {
	Decide(ctx context.Context, req *broker.Request) (*broker.Grant, error)
}

var _ Decider = (*broker.Broker)(nil)

// Options are the settings a listener takes besides its Config.
type Options struct {
	// Logger receives the listener's own log; default slog.Default().
	Logger *slog.Logger
	// Limit, when set, caps the connections the listener serves.
	Limit *broker.LimitConfig
}

// Option adjusts Options.
type Option func(*Options)

// WithLogger sets the listener's logger.
func WithLogger(l *slog.Logger) Option {
	return func(o *Options) {
		if l != nil {
			o.Logger = l
		}
	}
}

// WithConnLimit caps the connections the listener serves.
func WithConnLimit(cfg broker.LimitConfig) Option {
	return func(o *Options) { o.Limit = &cfg }
}

// Apply returns the Options opts set, with defaults.
func Apply(opts []Option) Options {
	o := Options{Logger: slog.Default()}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// UnixScheme prefixes a listen address that is a Unix socket path.
const UnixScheme = "unix://"

// CheckListen accepts a loopback host:port or unix:///absolute/path: an
// injection listener hands out the use of a credential, so it must not be
// reachable from other machines.
func CheckListen(s string) error {
	if s == "" {
		return errors.New("required (127.0.0.1:PORT or unix:///path)")
	}
	if p, ok := strings.CutPrefix(s, UnixScheme); ok {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return errors.New("a unix:// address needs a clean absolute path (unix:///run/app/api.sock)")
		}
		return nil
	}
	return CheckLoopback(s)
}

// CheckLoopback accepts a loopback host:port.
func CheckLoopback(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port or unix:///path")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a port number", port)
	}
	if !providers.IsLoopback(host) {
		return fmt.Errorf("host %q is not a loopback address: an injection listener must not be reachable from other machines", host)
	}
	return nil
}

// Network returns the network and address to listen on for a listen
// setting: ("unix", path) for unix:///path, else ("tcp", host:port).
func Network(listen string) (network, address string) {
	if p, ok := strings.CutPrefix(listen, UnixScheme); ok {
		return "unix", p
	}
	return "tcp", listen
}

// Raw returns the connection beneath the wrappers of c that expose it
// (NetConn, as the unix attestor's connections do), for a listener that
// has made its decision and now only relays bytes: between two plain TCP
// or Unix connections the kernel splices them. A *tls.Conn is never
// unwrapped: its bytes must go through TLS.
func Raw(c net.Conn) net.Conn {
	for {
		if _, ok := c.(*tls.Conn); ok {
			return c
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = w.NetConn()
	}
}
