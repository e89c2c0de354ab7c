package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Session serves one accepted connection until the client or the
// upstream ends it, or ctx is cancelled; Serve closes conn afterwards. ctx
// is cancelled when the listener's drain ends, and the session must then
// return promptly (Serve also closes conn then, which unblocks its reads
// and writes).
type Session func(ctx context.Context, conn net.Conn)

// Serve accepts connections on ln and serves each with session in its
// own goroutine until ctx ends. Then it closes ln (no new sessions), lets
// the sessions in progress finish for up to drain, cancels and closes
// those still open, waits for every session to return and returns nil,
// or an error saying how many sessions were cut. An accept error other
// than a temporary one ends serving the same way and is returned.
//
// With o.Limit set, at most o.Limit.Max sessions run at once: at the cap
// Serve accepts no more until one ends (callers wait in the kernel's
// backlog), and o.Limit.Metrics, when set, counts the open ones.
func Serve(ctx context.Context, ln net.Listener, drain time.Duration, o Options, session Session) error {
	s := &sessions{conns: map[net.Conn]struct{}{}}
	var slots chan struct{}
	var open prometheus.Gauge
	if o.Limit != nil {
		if o.Limit.Max < 1 {
			ln.Close()
			return fmt.Errorf("listener: %s: the connection cap must be at least 1", o.Limit.Name)
		}
		slots = make(chan struct{}, o.Limit.Max)
		if o.Limit.Metrics != nil {
			open = o.Limit.Metrics.Open(o.Limit.Name)
		}
	}
	sctx, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()

	accepted := make(chan error, 1)
	stop := make(chan struct{})
	go func() { accepted <- s.accept(sctx, stop, ln, slots, open, o.Logger, session) }()
	var acceptErr error
	select {
	case <-ctx.Done():
		close(stop)
		ln.Close()
		acceptErr = <-accepted
	case acceptErr = <-accepted:
		ln.Close()
	}
	if errors.Is(acceptErr, net.ErrClosed) {
		acceptErr = nil
	}

	// Drain: wait for the sessions in progress, up to drain.
	timer := time.NewTimer(drain)
	defer timer.Stop()
	var cutN int
	select {
	case <-s.idle():
	case <-timer.C:
		cutN = s.closeAll()
		cut()
	}
	s.wg.Wait()
	if cutN > 0 {
		return errors.Join(acceptErr, fmt.Errorf("%d sessions still open after the drain timeout (%s) were cut", cutN, drain))
	}
	return acceptErr
}

// sessions tracks the connections being served.
type sessions struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  chan struct{} // closed when conns becomes empty after draining starts
	drain bool
}

// accept runs the accept loop until ln is closed or fails.
func (s *sessions) accept(ctx context.Context, stop <-chan struct{}, ln net.Listener, slots chan struct{}, open prometheus.Gauge, log *slog.Logger, session Session) error {
	var delay time.Duration
	for {
		if slots != nil {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return net.ErrClosed
			}
		}
		c, err := ln.Accept()
		if err != nil {
			if slots != nil {
				<-slots
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of descriptors and the like: back off, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", "error", err, "delay", delay)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-stop:
					t.Stop()
					return err
				}
				continue
			}
			return err
		}
		delay = 0
		s.add(c)
		if open != nil {
			open.Inc()
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.remove(c)
				if open != nil {
					open.Dec()
				}
				if slots != nil {
					<-slots
				}
			}()
			session(ctx, c)
		}()
	}
}

func (s *sessions) add(c net.Conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *sessions) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if s.drain && len(s.conns) == 0 && s.done != nil {
		close(s.done)
		s.done = nil
	}
	s.mu.Unlock()
}

// idle returns a channel closed once no session is open; accepting has
// stopped when it is called.
func (s *sessions) idle() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drain = true
	ch := make(chan struct{})
	if len(s.conns) == 0 {
		close(ch)
		return ch
	}
	s.done = ch
	return ch
}

// closeAll closes every open connection and returns how many there were.
func (s *sessions) closeAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
	return len(s.conns)
}
