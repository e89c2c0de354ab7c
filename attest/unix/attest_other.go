//go:build !linux

package unix

import (
	"context"
	"errors"
	"net"

	"github.com/credbroker/credbroker/attest"
)

// errUnsupported is returned on platforms other than Linux.
var errUnsupported = errors.New("unix: peer attestation is supported on linux only")

// Attestor attests the peers of Unix-domain socket connections. On this
// platform it cannot be created.
type Attestor struct{}

// New validates cfg and fails: attestation from kernel peer credentials,
// pidfds and /proc is implemented for Linux only.
func New(cfg Config) (*Attestor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, errUnsupported
}

// ProbeBPF always fails on this platform.
func ProbeBPF() error { return errUnsupported }

// Attest always fails on this platform.
func (a *Attestor) Attest(ctx context.Context, conn net.Conn) (attest.Identity, error) {
	return attest.Identity{}, &attest.Error{Method: attest.MethodUnix, Reason: "unix attestation is not supported on this platform", Err: errUnsupported}
}

// Listener accepts connections for the Attestor. On this platform none
// can be created.
type Listener struct {
	*net.UnixListener
}

// Listen always fails on this platform.
func (a *Attestor) Listen(ln *net.UnixListener) (*Listener, error) {
	return nil, errUnsupported
}
