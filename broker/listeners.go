package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// SocketAPIConfig is a listener serving the socket API on TCP with mutual
// TLS, beyond the broker's own Unix socket: callers present an X.509-SVID
// and are attested by the spiffe attestor, which must be configured. In the
// configuration file:
//
//	listeners:
//	  - socket_api: {listen: 0.0.0.0:8443}                          # the broker's SVID from the Workload API
//	  - socket_api: {listen: 0.0.0.0:8443, cert_file: …, key_file: …}  # with a bundle_file
type SocketAPIConfig struct {
	// Listen is the TCP address, host:port. Required.
	Listen string `yaml:"listen"`
	// CertFile and KeyFile hold the server's certificate and key; default
	// (both empty) the broker's own SVID from the SPIFFE Workload API.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// DrainTimeout is how long requests in flight may finish when the
	// listener stops; default DefaultDrainTimeout.
	DrainTimeout DrainTimeout `yaml:"drain_timeout"`
}

// Validate reports what is wrong with c, without I/O.
func (c *SocketAPIConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, errors.New("listen must be host:port"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file go together"))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, errors.New("drain_timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Paths are c's file paths, for resolving relative ones.
func (c *SocketAPIConfig) Paths() []*string { return []*string{&c.CertFile, &c.KeyFile} }

// Network returns the TCP address to listen on.
func (c *SocketAPIConfig) Network() (network, address string) { return "tcp", c.Listen }

// Fields is empty: the socket API hands credentials out whole.
func (c *SocketAPIConfig) Fields() []string { return nil }

// Serve serves srv on ln until ctx ends, then lets requests in flight
// finish for up to drain and returns nil; requests still running then are
// cut and reported. An error from serving before ctx ended is returned as
// it is. Every listener of the broker runs this way.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	err := srv.Shutdown(dctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("requests still in flight after the drain timeout (%s) were cut: %w", drain, err)
	}
	<-served // http.ErrServerClosed
	return err
}

// DefaultDrainTimeout is how long a listener lets requests in flight
// finish when it stops, unless its configuration says otherwise.
const DefaultDrainTimeout = 10 * time.Second

// DrainTimeout is a listener's drain_timeout: a non-negative Go duration
// ("10s"); zero means DefaultDrainTimeout.
type DrainTimeout time.Duration

// UnmarshalText parses a non-negative Go duration string.
func (d *DrainTimeout) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil || v < 0 {
		return fmt.Errorf("invalid duration %q (use a positive Go duration such as 10s or 1m)", b)
	}
	*d = DrainTimeout(v)
	return nil
}

// Or returns d, or DefaultDrainTimeout when d is zero.
func (d DrainTimeout) Or() time.Duration {
	if d == 0 {
		return DefaultDrainTimeout
	}
	return time.Duration(d)
}
