// Package providers defines the credentials the broker hands out and the
// secret type that carries their values. Each credential source is a
// sub-package (static, and later postgres, vault, aws, oauth2); the broker
// declares the narrow interface it needs from them.
package providers

import (
	"time"

	"github.com/credbroker/credbroker/attest"
)

// Credential is one issued credential.
type Credential struct {
	// Kind names the provider family, such as "static" or "postgres".
	Kind string
	// Data holds the credential's fields (for a static credential, "value").
	Data map[string]Secret
	// ExpiresAt is when the credential stops being valid; never zero.
	ExpiresAt time.Time
	// LeaseID identifies the issue for revocation and for the audit log.
	LeaseID string
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
}
