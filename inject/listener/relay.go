package listener

import (
	"context"
	"io"
	"net"
	"sync"
)

// Relay copies bytes both ways between client and upstream until either
// side ends or ctx is cancelled; then it closes both and returns once
// both directions have stopped. It looks at nothing it copies. client is
// unwrapped with Raw first. Between two plain TCP or Unix sockets on
// Linux the bytes cross on an event loop shared by many sessions (see
// relay_linux.go); through TLS on either leg, two goroutines copy them.
func Relay(ctx context.Context, client, upstream net.Conn) {
	client = Raw(client)
	if pollRelay(ctx, client, upstream) {
		return
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			upstream.Close()
		})
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(upstream, client)
		closeBoth()
	}()
	_, _ = io.Copy(client, upstream)
	closeBoth()
	<-done
}

// Filter rewrites the client's stream on its way upstream, for a
// protocol whose client may send what must not reach the upstream as it
// is (Redis's AUTH). Its methods are called by one goroutine at a time.
type Filter interface {
	// Feed appends to out what goes upstream for in, the client's next
	// bytes, and returns it, with an error when in refuses the stream:
	// out then holds what went before the refusal, and Feed is not called
	// again.
	Feed(out, in []byte) ([]byte, error)
	// End is the client's stream ending: io.EOF for a clean end, any other
	// error for an end inside a message.
	End() error
	// Refusal returns what the client is sent for a refusal err, after
	// the upstream's last reply; nil for nothing.
	Refusal(err error) []byte
}

// RelayFiltered relays as Relay does, the client's bytes going upstream
// through f, on an event loop, when client (unwrapped with Raw) and
// upstream are both plain TCP or Unix sockets on Linux; else it reports
// false, having changed nothing, and the caller relays itself. When the
// client's stream ends cleanly, or f refuses it, the upstream's writing
// side is shut once all it was sent is written, its replies reach the
// client until it closes, then the client is sent f.Refusal (best effort)
// and both are closed. The upstream's end, an end of the client's stream
// inside a message (f.End's error) or ctx ending closes both at once.
// The error is f's refusal or f.End's error, nil after a clean end.
func RelayFiltered(ctx context.Context, client, upstream net.Conn, f Filter) (bool, error) {
	return pollRelayFiltered(ctx, Raw(client), upstream, f)
}
