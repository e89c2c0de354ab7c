package unix

import "errors"

// ErrNoPeer says that a TCP connection has no peer process the broker can
// see: the connection is not between loopback addresses, its client socket
// is not in the socket table of the broker's network namespace, or no
// process visible in the broker's pid namespace holds it. AttestTCP returns
// it wrapped in an *attest.Error, so errors.Is(err, attest.ErrFailed)
// holds too. The listener decides whether an ambient identity may then
// stand in; a peer that was seen and has gone is a different failure and
// never ErrNoPeer.
var ErrNoPeer = errors.New("unix: no peer process visible to the broker")

// ClaimTransport names the transport a unix identity was attested over. It
// is set, to TransportTCP, only on identities from AttestTCP: unix
// selectors do not read it, so policies written for Unix-socket callers
// match TCP callers unchanged, and a CEL condition can still tell them
// apart.
const ClaimTransport = "transport"

// TransportTCP is the value of ClaimTransport for a TCP loopback caller.
const TransportTCP = "tcp"
