package sinks

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
)

// Credential is one issue of a credential, as the socket API returns it.
// It never prints its data: String, Format and LogValue show the name,
// kind, field names and expiry only.
type Credential struct {
	Name       string
	Kind       string
	Data       map[string]string
	ExpiresAt  time.Time
	LeaseID    string
	DecisionID string
}

// String describes c without its values.
func (c Credential) String() string {
	return fmt.Sprintf("credential %s (%s; fields %s; expires %s; decision %s)", c.Name, c.Kind,
		strings.Join(slices.Sorted(maps.Keys(c.Data)), ", "), c.ExpiresAt.UTC().Format(time.RFC3339), c.DecisionID)
}

// Format prints String under every verb, so that %v, %+v, %#v and %q never
// show a value.
func (c Credential) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue is c in slog output, without its values.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", c.Name), slog.String("kind", c.Kind),
		slog.String("fields", strings.Join(slices.Sorted(maps.Keys(c.Data)), ",")),
		slog.Time("expires_at", c.ExpiresAt), slog.String("decision_id", c.DecisionID))
}

// Fetcher obtains a credential by name: the broker's socket API, asked by
// the render process itself, which the broker attests and authorises.
// Errors must not hold secrets; they are logged.
type Fetcher interface {
	Get(ctx context.Context, name string) (Credential, error)
}

// FetcherFunc is a function that is a Fetcher.
type FetcherFunc func(ctx context.Context, name string) (Credential, error)

// Get calls f.
func (f FetcherFunc) Get(ctx context.Context, name string) (Credential, error) { return f(ctx, name) }
