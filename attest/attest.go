// Package attest defines the verified identity of a caller and the errors
// attestors return. Each attestation method lives in its own sub-package
// (unix, and later kubernetes, spiffe, github, aws); the broker turns the
// evidence a caller brings — kernel peer credentials, a bearer token, a
// signed AWS request — into an Identity through them.
//
// An Identity is built only from evidence the attestor verified itself:
// peer credentials read from the kernel, or claims of a token whose
// signature was checked. Nothing the caller merely says ends up in it.
package attest

import (
	"errors"
	"fmt"
)

// Attestation methods, as they appear in Identity.Method, in policies and in
// the audit log.
const (
	MethodUnix       = "unix"
	MethodKubernetes = "kubernetes"
	MethodSPIFFE     = "spiffe"
	MethodGitHub     = "github"
	MethodAWS        = "aws"
)

// Methods lists every attestation method in a stable order.
var Methods = []string{MethodUnix, MethodKubernetes, MethodSPIFFE, MethodGitHub, MethodAWS}

// Identity is a verified caller.
//
// Claims hold JSON-compatible values only (string, bool, int64, float64,
// []any, map[string]any) so that policies, CEL conditions and the audit log
// all see the same thing. Unix identities use int64 for uid, gid and pid.
type Identity struct {
	// Method is the attestation method that produced the identity.
	Method string `json:"method"`
	// Subject names the workload in the platform's own convention, such as
	// "unix:uid:1000" or "system:serviceaccount:payments:api".
	Subject string `json:"subject"`
	// Claims are the verified attributes policies select on.
	Claims map[string]any `json:"claims,omitempty"`
	// Peer is the kernel-attested process behind a token-bearing caller on
	// the Unix socket; nil when Method is unix or the channel has no peer.
	Peer *Identity `json:"peer,omitempty"`
}

// ErrFailed is the sentinel every attestation failure wraps: the caller could
// not prove who it is.
var ErrFailed = errors.New("attestation failed")

// ErrNoPeer is wrapped by a failure to attest a connection that has no peer
// the broker can see (a TCP connection from another network or pid
// namespace): a listener may let an ambient identity stand in for it, where
// it would never for a peer that was seen and failed.
var ErrNoPeer = errors.New("no peer process visible to the broker")

// Error is an attestation failure. Reason is safe to show the caller and to
// store in the audit log: it says what was wrong (expired, wrong audience,
// peer exited) and never contains a token, a signature or a secret. Err
// carries internal detail for logs.
type Error struct {
	Method string
	Reason string
	Err    error
}

// Failf returns an *Error for method with a caller-safe reason.
func Failf(method, format string, args ...any) *Error {
	return &Error{Method: method, Reason: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("attest: %s: %s: %v", e.Method, e.Reason, e.Err)
	}
	return fmt.Sprintf("attest: %s: %s", e.Method, e.Reason)
}

// Unwrap lets errors.Is match both ErrFailed and the underlying cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrFailed, e.Err}
	}
	return []error{ErrFailed}
}
