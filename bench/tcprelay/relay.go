package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultDialTimeout bounds connecting to the upstream when
// Relay.DialTimeout is zero: the broker's database listeners' bound.
const DefaultDialTimeout = 10 * time.Second

// Relay relays every connection it accepts to one upstream TCP address.
type Relay struct {
	// Upstream is the host:port every connection is relayed to.
	Upstream string
	// DialTimeout bounds connecting to Upstream (DefaultDialTimeout when
	// zero).
	DialTimeout time.Duration
	// Log receives a line per connection whose upstream could not be
	// dialled; nil logs nothing.
	Log *log.Logger

	relayed, dialFailed atomic.Int64
}

// Relayed returns how many connections were relayed (their upstream
// dialled).
func (r *Relay) Relayed() int64 { return r.relayed.Load() }

// DialFailed returns how many connections were closed because their
// upstream could not be dialled.
func (r *Relay) DialFailed() int64 { return r.dialFailed.Load() }

// Serve accepts connections on ln and relays each to r.Upstream until ctx
// ends; then it closes ln, cuts the sessions still open and returns nil
// once every session has ended. An accept error ends it the same way and
// is returned.
func (r *Relay) Serve(ctx context.Context, ln net.Listener) error {
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()
	sessions, cut := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			cut()
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		wg.Go(func() { r.serveConn(sessions, c) })
	}
}

// serveConn dials the upstream for client and relays between them; it
// closes client when the upstream cannot be dialled.
func (r *Relay) serveConn(ctx context.Context, client net.Conn) {
	timeout := r.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	// The broker's postgres listener dials its upstream so.
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	up, err := d.DialContext(ctx, "tcp", r.Upstream)
	if err != nil {
		r.dialFailed.Add(1)
		if r.Log != nil {
			r.Log.Printf("connection from %s closed: %v", client.RemoteAddr(), err)
		}
		client.Close()
		return
	}
	r.relayed.Add(1)
	relay(ctx, client, up)
}

// relay copies bytes both ways between client and upstream until either
// side ends or ctx is cancelled; then it closes both and returns once both
// copies have stopped. It is inject/listener.Relay without the unwrapping
// of the attestor's connection wrappers, which a plain accepted
// connection does not have.
func relay(ctx context.Context, client, upstream net.Conn) {
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
		copyStream(upstream, client)
		closeBoth()
	}()
	copyStream(client, upstream)
	closeBoth()
	<-done
}

// copyStream copies src to dst with io.Copy: between two *net.TCPConn it
// reaches dst's ReadFrom, where the kernel splices the bytes.
func copyStream(dst io.Writer, src io.Reader) {
	_, _ = io.Copy(dst, src)
}
