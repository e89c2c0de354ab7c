//go:build !linux

package broker

import "net"

// backlog would show callers waiting to be accepted; it is Linux-only, and
// elsewhere LimitListener caps connections without closing idle ones early.
type backlog struct{}

func newBacklog(net.Listener) *backlog { return nil }

func (*backlog) wait() error { return nil }

func (*backlog) close() {}
