//go:build !linux

package unix

import (
	"context"
	"net"

	"github.com/credbroker/credbroker/attest"
)

// AttestTCP always fails on this platform: finding the process behind a
// TCP connection needs Linux's sock_diag and /proc.
func (a *Attestor) AttestTCP(ctx context.Context, conn net.Conn) (attest.Identity, error) {
	return attest.Identity{}, &attest.Error{Method: attest.MethodUnix, Reason: "tcp peer attestation is supported on linux only", Err: errUnsupported}
}

// ListenTCP returns ln: on this platform TCP callers cannot be attested.
func (a *Attestor) ListenTCP(ln net.Listener) net.Listener { return ln }
