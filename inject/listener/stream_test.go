package listener_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
)

// echo serves lines back until the client says "bye" or the connection
// ends; started receives each session's start.
func echo(started chan<- struct{}, running *atomic.Int64, most *atomic.Int64) listener.Session {
	return func(ctx context.Context, c net.Conn) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		started <- struct{}{}
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil || line == "bye\n" {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}
}

func serve(t *testing.T, drain time.Duration, o listener.Options, s listener.Session) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- listener.Serve(ctx, ln, drain, o, s) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})
	return ln.Addr().String(), func() error { stopped = true; cancel(); return <-done }
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A session in progress at shutdown finishes within the drain timeout:
// Serve waits for it and returns nil, and accepts nothing new.
func TestServeDrains(t *testing.T) {
	started := make(chan struct{}, 4)
	var running, most atomic.Int64
	addr, stop := serve(t, time.Hour, listener.Apply(nil), echo(started, &running, &most))
	c := dial(t, addr)
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The session still works while the listener drains.
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
	c.Write([]byte("bye\n"))
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if running.Load() != 0 {
		t.Error("Serve returned with a session running")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("the listener still accepts after Serve returned")
	}
}

// A session still open when the drain timeout ends is cut: its
// connection is closed, Serve waits for it to return and says so.
func TestServeCutsAtDrainTimeout(t *testing.T) {
	started := make(chan struct{}, 4)
	var running, most atomic.Int64
	addr, stop := serve(t, 50*time.Millisecond, listener.Apply(nil), echo(started, &running, &most))
	dial(t, addr)
	<-started
	err := stop()
	if err == nil || !strings.Contains(err.Error(), "1 sessions still open after the drain timeout (50ms) were cut") {
		t.Fatalf("Serve = %v, want the cut session reported", err)
	}
	if running.Load() != 0 {
		t.Error("Serve returned with a session running")
	}
}

// With a cap of one, a second connection is served only once the first
// session ended, and the gauge counts the open session.
func TestServeCap(t *testing.T) {
	started := make(chan struct{}, 4)
	var running, most atomic.Int64
	m := broker.NewConnMetrics(nil)
	o := listener.Apply([]listener.Option{listener.WithConnLimit(broker.LimitConfig{Name: "t", Max: 1, Metrics: m})})
	addr, stop := serve(t, time.Hour, o, echo(started, &running, &most))
	first := dial(t, addr)
	<-started
	second := dial(t, addr) // waits in the backlog
	second.Write([]byte("queued\n"))
	first.Write([]byte("bye\n"))
	<-started
	line, err := bufio.NewReader(second).ReadString('\n')
	if err != nil || line != "queued\n" {
		t.Fatalf("second session echo %q, %v", line, err)
	}
	second.Write([]byte("bye\n"))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if most.Load() != 1 {
		t.Errorf("%d sessions ran at once under a cap of 1", most.Load())
	}
}

// At the cap, shutdown does not wait for a slot.
func TestServeStopsAtCap(t *testing.T) {
	started := make(chan struct{}, 4)
	var running, most atomic.Int64
	o := listener.Apply([]listener.Option{listener.WithConnLimit(broker.LimitConfig{Name: "t", Max: 1})})
	addr, stop := serve(t, time.Hour, o, echo(started, &running, &most))
	c := dial(t, addr)
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	c.Write([]byte("bye\n"))
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// Raw unwraps the attestor's connection wrappers but never TLS.
func TestRaw(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := listener.Raw(wrapped{wrapped{a}}); got != a {
		t.Errorf("Raw = %T, want the pipe", got)
	}
	tc := tls.Client(a, &tls.Config{})
	if got := listener.Raw(wrapped{tc}); got != tc {
		t.Errorf("Raw = %T, want the *tls.Conn kept", got)
	}
}

type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// Relay copies both ways and, when one side ends, closes the other and
// returns.
func TestRelay(t *testing.T) {
	client, clientPeer := net.Pipe()
	upstream, upstreamPeer := net.Pipe()
	done := make(chan struct{})
	go func() { listener.Relay(context.Background(), clientPeer, upstreamPeer); close(done) }()
	go client.Write([]byte("query"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(upstream, buf); err != nil || string(buf) != "query" {
		t.Fatalf("upstream read %q, %v", buf, err)
	}
	go upstream.Write([]byte("reply"))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "reply" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	client.Close()
	<-done
	if _, err := upstream.Read(buf); err == nil {
		t.Error("the upstream is still open after the client ended")
	}
}
