package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// hangGuard bounds every wait on the relay; the tests never wait for a
// duration, only for an event within it.
const hangGuard = 10 * time.Second

// echoServer is the test upstream: it echoes each connection's bytes back
// until the connection ends, then closes it and reports it on ended.
type echoServer struct {
	ln    net.Listener
	ended chan struct{} // one value per connection that ended
	conns chan net.Conn // each connection accepted
	wg    sync.WaitGroup
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln, ended: make(chan struct{}, 64), conns: make(chan net.Conn, 64)}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
			s.wg.Go(func() {
				_, _ = io.Copy(c, c)
				c.Close()
				s.ended <- struct{}{}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		for len(s.conns) > 0 {
			(<-s.conns).Close()
		}
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

// startRelay serves a Relay to upstream on a new loopback listener; the
// returned stop cancels it and reports Serve's result.
func startRelay(t *testing.T, upstream string) (r *Relay, addr string, logs *syncBuffer, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs = new(syncBuffer)
	r = &Relay{Upstream: upstream, Log: log.New(logs, "", 0)}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, ln) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-served:
			case <-time.After(hangGuard):
				result = errors.New("Serve did not return after cancellation")
			}
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return r, ln.Addr().String(), logs, stop
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	return c
}

// exchange writes msg to c while reading as many bytes back, and says
// why unless the same bytes came back.
func exchange(c net.Conn, msg []byte) error {
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		wrote <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading the echo of %d bytes: %w", len(msg), err)
	}
	if err := <-wrote; err != nil {
		return fmt.Errorf("writing %d bytes: %w", len(msg), err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("the echo of %d bytes differs from what was sent", len(msg))
	}
	return nil
}

func mustExchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := exchange(c, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// waitEOF fails unless c's next read reports the end of the stream
// (EOF, or a reset) before the hang guard.
func waitEOF(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(hangGuard))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("%s: read %d byte(s), want the end of the stream", what, n)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("%s: still open after %v", what, hangGuard)
	}
}

func waitEnded(t *testing.T, s *echoServer, what string) {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(hangGuard):
		t.Fatalf("%s: the upstream's connection still open after %v", what, hangGuard)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRelayExchanges: request-reply exchanges of every size, small
// messages as a database client sends and a megabyte larger than any
// socket buffer, come back intact, on several connections at once
// without crossing.
func TestRelayExchanges(t *testing.T) {
	up := newEchoServer(t)
	r, addr, _, _ := startRelay(t, up.addr())
	const clients = 4
	sizes := []int{1, 5, 100, 16 << 10, 1 << 20}
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for i := range clients {
		c := dial(t, addr)
		msgs := make([][]byte, len(sizes))
		for k, n := range sizes {
			msgs[k] = randomBytes(t, n)
			msgs[k][0] = byte(i) // each connection's own bytes
		}
		wg.Go(func() {
			for _, msg := range msgs {
				if err := exchange(c, msg); err != nil {
					errs <- fmt.Sprintf("client %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := r.Relayed(); got != clients {
		t.Errorf("Relayed() = %d, want %d", got, clients)
	}
}

// TestClientCloseClosesUpstream: when the client closes, the relay closes
// the upstream's connection, after relaying what was sent before.
func TestClientCloseClosesUpstream(t *testing.T) {
	up := newEchoServer(t)
	_, addr, _, _ := startRelay(t, up.addr())
	c := dial(t, addr)
	mustExchange(t, c, "SELECT 1")
	c.Close()
	waitEnded(t, up, "client closed")
}

// TestUpstreamCloseClosesClient: when the upstream closes, the client's
// connection ends.
func TestUpstreamCloseClosesClient(t *testing.T) {
	up := newEchoServer(t)
	_, addr, _, _ := startRelay(t, up.addr())
	c := dial(t, addr)
	mustExchange(t, c, "PING\r\n")
	var sc net.Conn
	select {
	case sc = <-up.conns:
	case <-time.After(hangGuard):
		t.Fatal("the upstream accepted no connection")
	}
	sc.Close()
	waitEOF(t, c, "upstream closed")
}

// TestUpstreamDown: a connection whose upstream refuses is closed at
// once, counted and logged.
func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	r, addr, logs, stop := startRelay(t, down)
	c := dial(t, addr)
	waitEOF(t, c, "upstream down")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if r.DialFailed() != 1 || r.Relayed() != 0 {
		t.Errorf("DialFailed() = %d, Relayed() = %d, want 1 and 0", r.DialFailed(), r.Relayed())
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("log %q does not say the upstream refused", logs.String())
	}
}

// TestServeCutsSessionsOnCancel: cancelling Serve's context stops
// accepting, ends the sessions still open on both sides, and Serve returns
// nil only once they have ended.
func TestServeCutsSessionsOnCancel(t *testing.T) {
	up := newEchoServer(t)
	_, addr, _, stop := startRelay(t, up.addr())
	c := dial(t, addr)
	mustExchange(t, c, "held open")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	waitEOF(t, c, "after cancel")
	waitEnded(t, up, "after cancel")
	if c2, err := net.DialTimeout("tcp", addr, hangGuard); err == nil {
		c2.Close()
		t.Error("the relay still accepts after cancellation")
	}
}

// TestRun: the command prints its address, writes it to -addr-file,
// relays, and at cancellation returns nil and prints its counts.
func TestRun(t *testing.T) {
	up := newEchoServer(t)
	addrFile := filepath.Join(t.TempDir(), "addr")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	stderr := new(syncBuffer)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-upstream", up.addr(), "-addr-file", addrFile}, outW, stderr)
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the address line: %v (stderr %q)", err, stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	var addr, upstream string
	if _, err := fmt.Sscanf(line, "tcprelay: listening on %s relaying to %s", &addr, &upstream); err != nil {
		t.Fatalf("address line %q: %v", line, err)
	}
	addr = strings.TrimSuffix(addr, ",")
	if upstream != up.addr() {
		t.Errorf("address line %q names upstream %q, want %q", line, upstream, up.addr())
	}
	b, err := os.ReadFile(addrFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != addr {
		t.Errorf("-addr-file holds %q, the address line says %q", got, addr)
	}
	c := dial(t, addr)
	mustExchange(t, c, "through the command")
	c.Close()
	waitEnded(t, up, "client closed")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("run did not return after cancellation")
	}
	if want := "1 connections relayed, 0 closed"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", stderr.String(), want)
	}
}

// TestRunFlags: bad flags are refused with what to fix, before listening.
func TestRunFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-upstream is required"},
		{[]string{"-upstream", "localhost"}, "want host:port"},
		{[]string{"-upstream", ":5432"}, "want host:port"},
		{[]string{"-upstream", "127.0.0.1:1", "extra"}, "unexpected arguments"},
		{[]string{"-upstream", "127.0.0.1:1", "-listen", "127.0.0.1:notaport"}, "listen"},
		{[]string{"-upstream", "127.0.0.1:1", "-addr-file", "/nonexistent/dir/addr"}, "nonexistent"},
		{[]string{"-nosuchflag"}, "flag provided but not defined"},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the relay's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
