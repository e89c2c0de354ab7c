//go:build !linux

package listener

import (
	"context"
	"net"
)

// pollRelay is Linux's; elsewhere Relay copies with io.Copy.
func pollRelay(ctx context.Context, client, upstream net.Conn) bool { return false }

// pollRelayFiltered is Linux's; elsewhere RelayFiltered declines.
func pollRelayFiltered(ctx context.Context, client, upstream net.Conn, f Filter) (bool, error) {
	return false, nil
}
