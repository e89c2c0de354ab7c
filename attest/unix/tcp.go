package unix

import (
	"fmt"

	"github.com/credbroker/credbroker/attest"
)

// ErrNoPeer says that a TCP connection has no peer process the broker can
// see: the connection is not between loopback addresses, its client socket
// is not in the socket table of the broker's network namespace, or no
// process visible in the broker's pid namespace holds it. AttestTCP returns
// it wrapped in an *attest.Error, so errors.Is(err, attest.ErrFailed)
// holds too, and errors.Is(err, attest.ErrNoPeer). The listener decides
// whether an ambient identity may then
// stand in; a peer that was seen and has gone is a different failure and
// never ErrNoPeer.
var ErrNoPeer = fmt.Errorf("unix: %w", attest.ErrNoPeer)

// ClaimTransport names the transport a unix identity was attested over. It
// is set, to TransportTCP, only on identities from AttestTCP: unix
// selectors do not read it, so policies written for Unix-socket callers
// match TCP callers unchanged, and a CEL condition can still tell them
// apart.
const ClaimTransport = "transport"

// TransportTCP is the value of ClaimTransport for a TCP loopback caller.
const TransportTCP = "tcp"
