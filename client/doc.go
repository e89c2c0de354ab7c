// Package client is the Go client of credbroker's socket API: an
// application asks the broker beside it for a credential by name and gets
// back its fields, its expiry and the audit decision that granted it.
//
//	c := client.New("") // $CREDBROKER_SOCKET, else DefaultSocket
//	cred, err := c.Get(ctx, "orders-db")
//	switch {
//	case errors.Is(err, client.ErrDenied):
//		// no policy lets this workload have it: the message names why
//	case errors.Is(err, client.ErrUnreachable):
//		// no broker listens on the socket
//	case err != nil:
//		// ...
//	}
//	db.Connect(cred.Data["username"], cred.Data["password"])
//
// The broker attests the calling process itself, from the kernel's peer
// credentials on the socket, so a plain Get carries no evidence. Callers
// identified by a token instead (Kubernetes, SPIFFE, GitHub Actions) add
// WithTokenFile or WithToken; callers proving an AWS IAM identity add
// WithAWSIAM.
//
// # Errors
//
// A refusal by the broker is an *Error carrying the broker's code, message,
// HTTP status and the id of the audit decision that recorded it. Branch on
// it with errors.Is and the sentinels ErrDenied, ErrUnauthenticated,
// ErrNotFound, ErrBadRequest and ErrUnavailable. ErrUnreachable means no
// broker answered on the socket at all: its message names the socket path.
//
// # Long-running applications
//
// A credential expires. Client.Source fetches one and then keeps it fresh:
// it asks the broker again once half of the remaining lifetime has passed
// (RefreshAt changes the fraction), retries a failed refresh with jittered
// exponential backoff, and never lets the credential expire without
// reporting it (OnRefreshError, Source.Err). Current returns the newest
// credential; Changes delivers each one whose fields differ from the one
// before, which is when an application must reconnect.
//
//	src, err := c.Source(ctx, "orders-db")
//	if err != nil { ... }
//	for cred := range src.Changes() { // closed when ctx ends
//		pool.Reconnect(cred.Data["username"], cred.Data["password"])
//	}
//
// # Secrets
//
// The values in Credential.Data are secrets. A Credential never prints
// them: String, GoString, Format (every verb), LogValue and MarshalJSON
// show the field names only. Read Data where the value is used.
//
// The package depends on the standard library only.
package client
