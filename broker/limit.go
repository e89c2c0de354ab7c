package broker

import (
	"container/list"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Listener names: the label values of the connection metrics.
const (
	ListenerSocket = "socket" // the socket API's Unix socket
	ListenerMTLS   = "mtls"   // the socket API on the mTLS listener
	ListenerAdmin  = "admin"  // /healthz, /readyz, /metrics
	ListenerHTTP   = "http"   // HTTP injection listeners
	ListenerAWS    = "aws"    // the AWS container-credentials endpoint

	ListenerPostgres = "postgres" // PostgreSQL injection listeners
	ListenerMySQL    = "mysql"    // MySQL / MariaDB injection listeners
	ListenerRedis    = "redis"    // Redis injection listeners
)

// ConnMetrics are the connection metrics of a process's listeners:
//
//	credbroker_connections{listener}                    connections holding a slot (gauge)
//	credbroker_idle_connections_closed_total{listener}  idle connections closed to admit a waiting caller
//
// Create one per registry and share it between the listeners.
type ConnMetrics struct {
	open    *prometheus.GaugeVec
	evicted *prometheus.CounterVec
}

// NewConnMetrics creates the connection metrics and registers them with
// reg; nil reg means they are kept but not exported.
func NewConnMetrics(reg prometheus.Registerer) *ConnMetrics {
	m := &ConnMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "credbroker_connections",
			Help: "Connections held on each listener (socket, mtls, admin): accepted, and not yet closed and finished with by the server.",
		}, []string{"listener"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credbroker_idle_connections_closed_total",
			Help: "Idle connections closed, at the listener's connection cap, to admit a waiting caller.",
		}, []string{"listener"}),
	}
	if reg != nil {
		reg.MustRegister(m.open, m.evicted)
	}
	return m
}

// LimitConfig configures LimitListener.
type LimitConfig struct {
	// Name labels the listener's metrics: ListenerSocket, ListenerMTLS,
	// ListenerAdmin or ListenerHTTP. Required.
	Name string
	// Max is how many connections may hold a slot at once (see
	// LimitListener); at least 1.
	Max int
	// Metrics receives the listener's gauge and counter; nil means the
	// numbers are kept but not exported.
	Metrics *ConnMetrics
}

// LimitListener caps the connections srv serves from ln at cfg.Max, so
// that the memory and goroutines they hold are bounded by configuration,
// not by whoever connects.
//
// At the cap the returned listener stops accepting: callers wait in the
// kernel's listen backlog until a slot frees. So that idle keep-alive
// connections cannot hold every slot for ever, when a caller is waiting in
// the backlog at the cap, the connection idle the longest is closed to make
// room. A connection is idle while srv waits for its first request or its
// next one (http.StateNew, http.StateIdle); one whose request is being
// served (http.StateActive) is never closed, and a caller then waits until
// a connection closes or goes idle.
//
// A slot is taken from Accept until the connection is closed and srv has
// finished with it (http.StateClosed, or http.StateHijacked and closed), so
// the goroutines srv runs for the listener's connections number at most
// cfg.Max, also while idle ones are being closed to admit others. A
// connection closed twice (by srv and by the listener) gives back one slot.
//
// LimitListener learns the states from srv.ConnState, which it sets (calling
// any hook already there afterwards); srv must serve the returned listener.
// srv nil means no state is known: a slot is freed when its connection is
// closed, and nothing is closed early. Seeing the backlog needs a listener
// with a file descriptor (a *net.UnixListener or *net.TCPListener) on
// Linux; with any other the cap holds but idle connections are not closed
// early.
//
// For TLS, limit the TCP listener and wrap the result in tls.NewListener,
// so that srv still sees *tls.Conn (Request.TLS). Accepted connections
// implement NetConn, as *tls.Conn does, to reach the connection beneath.
//
// An idle connection chosen for closing may be receiving a new request at
// that instant; its client sees the connection closed before any reply,
// as with any server's idle timeout (Go's http.Transport retries such an
// idempotent request on a new connection).
func LimitListener(ln net.Listener, srv *http.Server, cfg LimitConfig) (net.Listener, error) {
	switch {
	case ln == nil:
		return nil, errors.New("broker: limit listener: no listener")
	case cfg.Name == "":
		return nil, errors.New("broker: limit listener: no name")
	case cfg.Max < 1:
		return nil, fmt.Errorf("broker: limit listener %s: max connections %d, want at least 1", cfg.Name, cfg.Max)
	}
	m := cfg.Metrics
	if m == nil {
		m = NewConnMetrics(nil)
	}
	l := &limitListener{
		Listener: ln,
		max:      cfg.Max,
		open:     m.open.WithLabelValues(cfg.Name),
		evicted:  m.evicted.WithLabelValues(cfg.Name),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if srv != nil {
		l.backlog = newBacklog(ln)
		next := srv.ConnState
		srv.ConnState = func(c net.Conn, s http.ConnState) {
			l.connState(c, s)
			if next != nil {
				next(c, s)
			}
		}
	}
	return l, nil
}

var (
	_ net.Listener = (*limitListener)(nil)
	_ net.Conn     = (*limitConn)(nil)
)

// limitListener is the listener LimitListener returns.
type limitListener struct {
	net.Listener
	max     int
	open    prometheus.Gauge
	evicted prometheus.Counter
	// backlog shows callers waiting to be accepted; nil when it cannot be
	// seen (or no states are known), and then no connection is closed early.
	backlog *backlog
	// onWait, when set (by tests), is called when a caller waits at the cap
	// and no connection is idle.
	onWait func()

	mu      sync.Mutex
	n       int       // slots taken: connections not yet released, and an Accept under way
	closing int       // connections closed that srv has not finished with
	idle    list.List // of *limitConn, idle the longest first
	closed  bool

	wake      chan struct{} // 1-buffered: a slot freed or a connection went idle
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
}

// limitConn is an accepted connection.
type limitConn struct {
	net.Conn
	l *limitListener

	// guarded by l.mu
	idleAt   *list.Element // in l.idle while idle
	serving  bool          // srv has it: from StateNew to StateClosed or StateHijacked
	closed   bool
	released bool // its slot is given back
}

// Accept waits for a free slot, closing the longest-idle connection when a
// caller waits at the cap, then accepts.
func (l *limitListener) Accept() (net.Conn, error) {
	if err := l.acquire(); err != nil {
		return nil, err
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.mu.Lock()
		l.n--
		l.mu.Unlock()
		return nil, err
	}
	l.open.Inc()
	return &limitConn{Conn: c, l: l}, nil
}

// acquire takes a slot, waiting at the cap.
func (l *limitListener) acquire() error {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return net.ErrClosed
		}
		if l.n < l.max {
			l.n++
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		if l.backlog == nil {
			if err := l.waitWake(); err != nil {
				return err
			}
			continue
		}
		// At the cap: nothing to do until a caller is waiting.
		if err := l.backlog.wait(); err != nil {
			if l.isClosed() {
				return net.ErrClosed
			}
			return fmt.Errorf("broker: waiting for callers: %w", err)
		}
		l.mu.Lock()
		if l.n < l.max {
			l.n++
			l.mu.Unlock()
			return nil
		}
		var victim *limitConn
		if e := l.idle.Front(); e != nil && l.closing == 0 {
			victim = l.idle.Remove(e).(*limitConn)
			victim.idleAt = nil
		}
		waitIdle := victim == nil && l.closing == 0
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Inc()
			_ = victim.Close() // its slot frees once srv has finished with it
			continue
		}
		// A closed connection's slot is about to free, or every connection
		// is mid-request: wait until a slot frees or a connection goes idle.
		if waitIdle && l.onWait != nil {
			l.onWait()
		}
		if err := l.waitWake(); err != nil {
			return err
		}
	}
}

// waitWake waits until a slot frees or a connection goes idle, or l is
// closed.
func (l *limitListener) waitWake() error {
	select {
	case <-l.wake:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

func (l *limitListener) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *limitListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close closes the listener and unblocks Accept. Connections already
// accepted stay open.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.done)
		l.closeErr = l.Listener.Close()
		if l.backlog != nil {
			l.backlog.close()
		}
	})
	return l.closeErr
}

// connState is srv.ConnState: it keeps the list of idle connections and
// frees the slots of closed connections srv has finished with.
func (l *limitListener) connState(nc net.Conn, s http.ConnState) {
	c := findLimitConn(nc)
	if c == nil || c.l != l {
		return
	}
	l.mu.Lock()
	if c.released {
		l.mu.Unlock()
		return
	}
	wake, freed := false, false
	switch s {
	case http.StateNew, http.StateIdle:
		c.serving = true
		if !c.closed && c.idleAt == nil {
			c.idleAt = l.idle.PushBack(c)
			wake = true
		}
	case http.StateActive:
		l.notIdle(c)
	case http.StateClosed, http.StateHijacked:
		l.notIdle(c)
		c.serving = false
		if c.closed {
			l.closing--
			freed = l.releaseLocked(c)
		}
	}
	l.mu.Unlock()
	if freed {
		l.open.Dec()
	}
	if wake || freed {
		l.signal()
	}
}

// notIdle takes c off the idle list; l.mu is held.
func (l *limitListener) notIdle(c *limitConn) {
	if c.idleAt != nil {
		l.idle.Remove(c.idleAt)
		c.idleAt = nil
	}
}

// releaseLocked gives back c's slot, once; l.mu is held.
func (l *limitListener) releaseLocked(c *limitConn) bool {
	if c.released {
		return false
	}
	c.released = true
	l.n--
	return true
}

// Close closes the connection. Its slot is given back now, or, while srv
// still has it, once srv has finished with it.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	l := c.l
	l.mu.Lock()
	freed := false
	if !c.closed {
		c.closed = true
		l.notIdle(c)
		if c.serving {
			l.closing++
		} else {
			freed = l.releaseLocked(c)
		}
	}
	l.mu.Unlock()
	if freed {
		l.open.Dec()
		l.signal()
	}
	return err
}

// NetConn returns the accepted connection beneath, as (*tls.Conn).NetConn
// does.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// CloseWrite shuts down the writing side when the connection beneath can,
// so that http.Server still flushes a final reply before closing.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// findLimitConn finds the *limitConn in a chain of wrappers (such as a
// *tls.Conn) that expose NetConn.
func findLimitConn(c net.Conn) *limitConn {
	for c != nil {
		if lc, ok := c.(*limitConn); ok {
			return lc
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}

// unlimited returns the connection LimitListener accepted beneath c, or c
// itself. Other wrappers, such as *tls.Conn, are left alone.
func unlimited(c net.Conn) net.Conn {
	if lc, ok := c.(*limitConn); ok {
		return lc.Conn
	}
	return c
}

// Open returns the gauge of connections held on the named listener, for
// listeners that cap their connections themselves (stream listeners).
func (m *ConnMetrics) Open(listener string) prometheus.Gauge {
	return m.open.WithLabelValues(listener)
}
