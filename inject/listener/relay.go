package listener

import (
	"context"
	"io"
	"net"
	"sync"
)

// Relay copies bytes both ways between client and upstream until either
// side ends or ctx is cancelled; then it closes both and returns once both
// copies have stopped. It looks at nothing it copies. client is unwrapped
// with Raw first, so that between two plain TCP or Unix connections
// io.Copy lets the kernel splice the bytes (a buffered read and write was
// no faster on pgbench -S).
func Relay(ctx context.Context, client, upstream net.Conn) {
	client = Raw(client)
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
