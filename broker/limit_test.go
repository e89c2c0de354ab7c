package broker

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// hangBound only bounds waits for events, so that a hang fails instead of
// blocking the suite; the tests never sleep for a fixed time.
const hangBound = time.Minute

// limitHarness is a LimitListener on a real Unix socket with its metrics.
type limitHarness struct {
	t      *testing.T
	path   string
	reg    *prometheus.Registry
	ln     *limitListener
	waited chan struct{} // a caller waited at the cap with nothing idle
}

// newLimitHarness listens on a fresh Unix socket and limits it to max
// connections of srv (nil: none known).
func newLimitHarness(t *testing.T, max int, srv *http.Server) *limitHarness {
	t.Helper()
	dir, err := os.MkdirTemp("", "cbl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &limitHarness{t: t, path: filepath.Join(dir, "s"), reg: prometheus.NewRegistry(), waited: make(chan struct{}, 1)}
	inner, err := net.ListenUnix("unix", &net.UnixAddr{Name: h.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	inner.SetUnlinkOnClose(false) // so that a dial after Close shows whether anything still listens
	ln, err := LimitListener(inner, srv, LimitConfig{Name: ListenerSocket, Max: max, Metrics: NewConnMetrics(h.reg)})
	if err != nil {
		t.Fatal(err)
	}
	h.ln = ln.(*limitListener)
	h.ln.onWait = func() {
		select {
		case h.waited <- struct{}{}:
		default:
		}
	}
	t.Cleanup(func() { h.ln.Close() })
	return h
}

func (h *limitHarness) dial() net.Conn {
	h.t.Helper()
	c, err := net.Dial("unix", h.path)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// metric reads a metric of the socket listener from the registry.
func (h *limitHarness) metric(name string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == ListenerSocket {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	h.t.Fatalf("no metric %s", name)
	return 0
}

// waitForWaiter waits until the listener holds a caller back at the cap
// with no idle connection to close.
func (h *limitHarness) waitForWaiter() {
	h.t.Helper()
	select {
	case <-h.waited:
	case <-time.After(hangBound):
		h.t.Fatal("no caller was held at the cap")
	}
}

// checkLeaks fails the test if it leaves goroutines behind once every
// later cleanup has run.
func checkLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(hangBound)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestLimitListenerCapsOpenConnections: ten callers against a cap of three;
// never more than three are accepted and open, and each waiting caller is
// admitted when an accepted connection closes. No states are known here
// (no server runs), so nothing counts as idle and nothing is closed early.
func TestLimitListenerCapsOpenConnections(t *testing.T) {
	checkLeaks(t)
	const limit, callers = 3, 10
	h := newLimitHarness(t, limit, &http.Server{})
	var (
		mu               sync.Mutex
		accepted, closed int
		peak             float64
	)
	conns := make(chan net.Conn)
	go func() {
		defer close(conns)
		for {
			c, err := h.ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			if open := accepted - closed; open > limit {
				t.Errorf("%d connections accepted and open, cap %d", open, limit)
			}
			peak = max(peak, h.metric("credbroker_connections"))
			mu.Unlock()
			conns <- c
		}
	}()
	clients := make(map[string]net.Conn)
	for i := range callers {
		c := h.dial()
		fmt.Fprintf(c, "caller-%d\n", i)
		clients[fmt.Sprintf("caller-%d", i)] = c
	}
	var held []net.Conn
	admitted := map[string]bool{}
	for len(admitted) < callers {
		var c net.Conn
		select {
		case c = <-conns:
		case <-time.After(hangBound):
			t.Fatalf("%d of %d callers admitted", len(admitted), callers)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		admitted[line[:len(line)-1]] = true
		held = append(held, c)
		if len(held) == limit && len(admitted) < callers {
			h.waitForWaiter() // the others wait in the backlog
			mu.Lock()
			closed++
			held[0].Close()
			mu.Unlock()
			held = held[1:]
		}
	}
	if peak > limit {
		t.Errorf("credbroker_connections reached %v, cap %d", peak, limit)
	}
	if got := h.metric("credbroker_connections"); got != limit {
		t.Errorf("credbroker_connections = %v, want %d", got, limit)
	}
	if got := h.metric("credbroker_idle_connections_closed_total"); got != 0 {
		t.Errorf("%v connections closed early with no state known", got)
	}
	h.ln.Close()
	for range conns {
	}
	for _, c := range held {
		c.Close()
	}
}

// TestLimitListenerDoubleCloseCountsOnce: a connection closed twice (by
// the server and by the listener, say) gives back one slot.
func TestLimitListenerDoubleCloseCountsOnce(t *testing.T) {
	checkLeaks(t)
	h := newLimitHarness(t, 1, nil)
	h.dial()
	c, err := h.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if got := h.metric("credbroker_connections"); got != 0 {
		t.Fatalf("credbroker_connections = %v after a double close, want 0", got)
	}
	h.dial()
	h.dial()
	c, err = h.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	h.ln.mu.Lock()
	n := h.ln.n
	h.ln.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d slots taken with one connection open, want 1", n)
	}
	next := make(chan error, 1)
	go func() {
		c, err := h.ln.Accept()
		if err == nil {
			c.Close()
		}
		next <- err
	}()
	c.Close()
	c.Close()
	select {
	case err := <-next:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangBound):
		t.Fatal("the waiting caller was not admitted")
	}
	if got := h.metric("credbroker_connections"); got != 0 {
		t.Fatalf("credbroker_connections = %v, want 0", got)
	}
}

// httpHarness serves HTTP through a LimitListener. GET /slow blocks until
// release is closed; anything else answers at once.
type httpHarness struct {
	*limitHarness
	srv     *http.Server
	idle    chan struct{} // one per connection the server reports idle
	entered chan struct{} // one per request that reached /slow
	release chan struct{}
	once    sync.Once
	served  chan error
}

// releaseSlow lets every /slow request finish.
func (h *httpHarness) releaseSlow() { h.once.Do(func() { close(h.release) }) }

func newHTTPHarness(t *testing.T, max int) *httpHarness {
	t.Helper()
	h := &httpHarness{idle: make(chan struct{}, 64), entered: make(chan struct{}, 64), release: make(chan struct{})}
	h.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				h.entered <- struct{}{}
				<-h.release
			}
			io.WriteString(w, "ok "+r.URL.Path)
		}),
		// Called after the limiter's own hook.
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateIdle {
				h.idle <- struct{}{}
			}
		},
	}
	h.limitHarness = newLimitHarness(t, max, h.srv)
	h.served = make(chan error, 1)
	go func() { h.served <- h.srv.Serve(h.ln) }()
	t.Cleanup(func() {
		h.releaseSlow()
		h.srv.Close()
		if err := <-h.served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return h
}

// client is one keep-alive connection speaking HTTP/1.1 by hand.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (h *httpHarness) connect() *client {
	c := h.dial()
	return &client{t: h.t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(path string) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one response and returns its body.
func (c *client) reply() string {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(hangBound))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	return string(b)
}

func (c *client) get(path string) string {
	c.t.Helper()
	c.send(path)
	return c.reply()
}

// closedByPeer waits until the server closes the connection.
func (c *client) closedByPeer() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(hangBound))
	if _, err := c.br.ReadByte(); err != io.EOF {
		c.t.Fatalf("read %v, want EOF: the connection should have been closed", err)
	}
}

func (h *httpHarness) waitIdle() {
	h.t.Helper()
	select {
	case <-h.idle:
	case <-time.After(hangBound):
		h.t.Fatal("no connection went idle")
	}
}

// TestLimitListenerClosesLongestIdle: at the cap, a new caller is admitted
// by closing the connection idle the longest; the other stays usable.
func TestLimitListenerClosesLongestIdle(t *testing.T) {
	checkLeaks(t)
	h := newHTTPHarness(t, 2)
	a := h.connect()
	if got := a.get("/a"); got != "ok /a" {
		t.Fatalf("a: %q", got)
	}
	h.waitIdle()
	b := h.connect()
	if got := b.get("/b"); got != "ok /b" {
		t.Fatalf("b: %q", got)
	}
	h.waitIdle()

	c := h.connect()
	if got := c.get("/c"); got != "ok /c" {
		t.Fatalf("c: %q", got)
	}
	a.closedByPeer()
	if got := b.get("/b2"); got != "ok /b2" {
		t.Fatalf("b after c was admitted: %q", got)
	}
	if got := h.metric("credbroker_idle_connections_closed_total"); got != 1 {
		t.Errorf("idle connections closed = %v, want 1", got)
	}
	if got := h.metric("credbroker_connections"); got != 2 {
		t.Errorf("credbroker_connections = %v, want 2 (closed by both the server and the limiter, counted once)", got)
	}
}

// TestLimitListenerNeverClosesActive: a connection mid-request is never
// closed to make room; the waiting caller is admitted once it goes idle.
func TestLimitListenerNeverClosesActive(t *testing.T) {
	checkLeaks(t)
	h := newHTTPHarness(t, 1)
	a := h.connect()
	a.send("/slow")
	select {
	case <-h.entered:
	case <-time.After(hangBound):
		t.Fatal("/slow never reached")
	}
	c := h.connect()
	c.send("/c")
	h.waitForWaiter() // c waits at the cap, and nothing is idle
	h.releaseSlow()
	if got := a.reply(); got != "ok /slow" {
		t.Fatalf("the active connection's reply: %q", got)
	}
	if got := c.reply(); got != "ok /c" {
		t.Fatalf("c: %q", got)
	}
	a.closedByPeer() // once idle, it made room for c
	if got := h.metric("credbroker_idle_connections_closed_total"); got != 1 {
		t.Errorf("idle connections closed = %v, want 1", got)
	}
}

// TestLimitListenerCloseUnblocksAccept: Close returns a blocked Accept with
// net.ErrClosed, whether it waits for a caller at the cap, waits for room
// with a caller waiting, or waits with no states known; and the socket then
// refuses connections.
func TestLimitListenerCloseUnblocksAccept(t *testing.T) {
	for _, tc := range []struct {
		name   string
		srv    *http.Server
		caller bool // a caller waits at the cap
	}{
		{"nobody waiting", &http.Server{}, false},
		{"caller waiting, nothing idle", &http.Server{}, true},
		{"no states known", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			h := newLimitHarness(t, 1, tc.srv)
			h.dial()
			held, err := h.ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			if tc.caller {
				h.dial()
			}
			done := make(chan error, 1)
			go func() {
				c, err := h.ln.Accept()
				if err == nil {
					c.Close()
				}
				done <- err
			}()
			if tc.caller && tc.srv != nil {
				h.waitForWaiter()
			}
			h.ln.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(hangBound):
				t.Fatal("Close did not unblock Accept")
			}
			if _, err := net.Dial("unix", h.path); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial after Close: %v, want connection refused (the backlog's descriptor must be closed too)", err)
			}
		})
	}
}

// TestLimitListenerTLS: limiting the TCP listener beneath TLS keeps the
// server's TLS (Request.TLS) and still closes idle TLS connections.
func TestLimitListenerTLS(t *testing.T) {
	checkLeaks(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			t.Error("request without TLS state")
		}
		io.WriteString(w, "ok")
	}))
	idle := make(chan struct{}, 4)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateIdle {
			idle <- struct{}{}
		}
	}
	reg := prometheus.NewRegistry()
	ln, err := LimitListener(srv.Listener, srv.Config, LimitConfig{Name: ListenerMTLS, Max: 1, Metrics: NewConnMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.StartTLS()
	defer srv.Close()
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig
	connect := func() *client {
		c, err := tls.Dial("tcp", srv.Listener.Addr().String(), roots)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &client{t: t, c: c, br: bufio.NewReader(c)}
	}
	a := connect()
	if got := a.get("/"); got != "ok" {
		t.Fatalf("a: %q", got)
	}
	select {
	case <-idle:
	case <-time.After(hangBound):
		t.Fatal("a never went idle")
	}
	b := connect()
	if got := b.get("/"); got != "ok" {
		t.Fatalf("b: %q", got)
	}
	a.closedByPeer()
}
