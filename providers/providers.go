// Package providers defines the credentials the broker hands out, the
// secret type that carries their values, and the contract every credential
// source meets. Each source is a sub-package (static, postgres, vault, aws,
// oauth2); the lease manager (providers/lease) wraps the ones that mint
// short-lived credentials with caching, refresh and revocation, and
// providers/providertest is the conformance suite every source passes.
//
// A provider issues with Credential. What else it can do is stated by the
// optional interfaces it implements, checked by type assertion:
//
//   - Revoker: end a lease before its expiry (drop a PostgreSQL role,
//     revoke a Vault lease);
//   - Renewer: extend a lease without issuing a new credential;
//   - Sweeper: list the leases it finds upstream that this install owns, so
//     that leftovers of a run that ended without revoking them are cleaned;
//   - Pinger: check, without issuing anything, that the upstream answers and
//     accepts the broker's own credentials, so that a broker reports an
//     unreachable upstream at start.
package providers

import (
	"context"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// Lease identifies one issued credential through its lifetime. It carries
// no secret: lease ids name what the provider needs to revoke or renew
// (a role name, a Vault lease id), and are recorded in the audit log.
type Lease struct {
	// ID is unique per issue, prefixed by the provider kind.
	ID string
	// Credential is the configured credential name.
	Credential string
	// Subject is the workload subject the credential was issued for.
	Subject string
	// Kind names the provider family, such as "static" or "postgres".
	Kind string
	// ExpiresAt is when the credential stops being valid; never zero.
	ExpiresAt time.Time
}

// Credential is one issued credential: its lease and its fields.
type Credential struct {
	Lease
	// Data holds the credential's fields, named by the provider's field
	// constants (for a static credential, "value").
	Data map[string]Secret
}

// Request is what a provider is asked for.
type Request struct {
	// Name is the configured credential name.
	Name string
	// TTL caps the credential's lifetime (the policy's ttl); zero means the
	// credential's own TTL applies.
	TTL time.Duration
	// Identity is the verified caller, for providers that scope credentials
	// to it.
	Identity attest.Identity
	// Token is the caller's own bearer token, set only when the broker has
	// verified it (Identity came from it): providers that pass the
	// workload's token upstream (Vault JWT auth, AWS web identity) use it.
	Token Secret
	// Session says the credential is asked for a session (a database
	// connection) that holds it until it ends, rather than handed to the
	// caller to keep: a lease manager may revoke a credential only
	// sessions used once the last has ended and a newer one is cached.
	Session bool
}

// Revoker is a provider whose leases can be ended before their expiry.
// Revoke must be idempotent: a lease already gone (revoked, expired and
// cleaned, never created) is revoked without error.
type Revoker interface {
	Revoke(ctx context.Context, lease Lease) error
}

// Renewer is a provider whose leases can be extended. Renew returns the
// lease with its new expiry, which may be earlier than asked for (a maximum
// lifetime reached); the credential's fields do not change.
type Renewer interface {
	Renew(ctx context.Context, lease Lease, ttl time.Duration) (Lease, error)
}

// Sweeper is a provider that can list the leases this install owns upstream
// (for PostgreSQL, the roles it created), so that those no longer tracked
// are revoked at start.
type Sweeper interface {
	Owned(ctx context.Context) ([]Lease, error)
}

// Pinger is a provider that can check its upstream without issuing a
// credential: reachable, and accepting the broker's own credentials.
type Pinger interface {
	Ping(ctx context.Context) error
}
