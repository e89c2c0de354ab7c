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
