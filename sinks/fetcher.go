package sinks

import (
	"context"

	"github.com/credbroker/credbroker/client"
)

// Fetcher obtains a credential by name. *client.Client is one: it asks the
// broker's socket API as the render process itself, which the broker
// attests, authorises and audits like any caller. Errors are logged, so
// they must not hold secrets (client's never do).
type Fetcher interface {
	Get(ctx context.Context, name string) (*client.Credential, error)
}

// FetcherFunc is a function that is a Fetcher.
type FetcherFunc func(ctx context.Context, name string) (*client.Credential, error)

// Get calls f.
func (f FetcherFunc) Get(ctx context.Context, name string) (*client.Credential, error) {
	return f(ctx, name)
}

var _ Fetcher = (*client.Client)(nil)
