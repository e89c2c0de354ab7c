//go:build linux

package listener

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// The relay of plain sockets runs the way HAProxy does, not the way
// io.Copy does: a few event loops, one per CPU, each waits in epoll_wait
// on every socket of its sessions and, for each readable one, reads once
// into the loop's buffer and writes that to the session's other socket.
// A byte crosses the broker in three system calls, the wait shared by
// every socket ready at once, with no goroutine woken per message. (Two
// io.Copy goroutines cost a read that finds nothing, a park, a netpoll
// wake-up and the scheduler for every message each way: on pgbench -S
// and redis-benchmark that was most of a session's CPU in the broker.)
//
// A session's sockets leave Go's poller: the loop owns duplicates of
// their descriptors and the net.Conns are closed. While the other
// socket cannot take all that was read, the rest waits in the session
// and its source is not read again until it is written (the loop
// watches the slow socket for room), so a slow reader holds back its
// peer as io.Copy does, through the kernel's buffers.

// loops is how many event loops relay sessions.
var loops = 1

// loopBufSize is the most a loop reads from one socket at a time.
const loopBufSize = 64 << 10

// pollLoops are started on the first relay.
var pollLoops struct {
	once  sync.Once
	loops []*pollLoop
	err   error
	next  atomic.Uint32
}

// testHookPending, when set, is called each time a session keeps bytes
// its peer socket could not take at once.
var testHookPending atomic.Pointer[func()]

// pollLoop relays the sessions given to it on one goroutine.
type pollLoop struct {
	epfd int

	mu       sync.Mutex // guards sessions and next
	sessions map[uint32]*polled
	next     uint32
}

// polled is one session on a loop. Side 0 is the client, side 1 the
// upstream.
type polled struct {
	id      uint32
	fd      [2]int
	pending [2][]byte // pending[i]: read from side i, not yet written to the other side
	watch   [2]uint32 // the events registered for fd[i]

	mu     sync.Mutex // guards closed against cut
	closed bool
	done   chan struct{}
}

// pollRelay relays between client and upstream on an event loop and
// returns when the session ends, as Relay does. It reports false, having
// changed nothing, when either is not a plain TCP or Unix socket or the
// loops cannot run; Relay then copies with io.Copy.
func pollRelay(ctx context.Context, client, upstream net.Conn) bool {
	if !plainSocket(client) || !plainSocket(upstream) {
		return false
	}
	l, err := nextLoop()
	if err != nil {
		return false
	}
	cfd, err := dupSocket(client)
	if err != nil {
		return false
	}
	ufd, err := dupSocket(upstream)
	if err != nil {
		unix.Close(cfd)
		return false
	}
	// From here the loop owns the session: the originals leave Go's
	// poller (closing them removes them from it; the sockets stay open
	// through the duplicates).
	client.Close()
	upstream.Close()
	s := &polled{fd: [2]int{cfd, ufd}, done: make(chan struct{})}
	l.add(s)
	stop := context.AfterFunc(ctx, s.cut)
	<-s.done
	stop()
	return true
}

// plainSocket reports whether c is a TCP or Unix stream socket with
// nothing between it and the kernel.
func plainSocket(c net.Conn) bool {
	switch c := c.(type) {
	case *net.TCPConn:
		return true
	case *net.UnixConn:
		return c.LocalAddr().Network() == "unix"
	}
	return false
}

// dupSocket returns a close-on-exec duplicate of c's descriptor. It
// shares c's open file, which Go made non-blocking.
func dupSocket(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// nextLoop returns the loop for the next session, starting the loops
// (one per CPU the process may use) on first use.
func nextLoop() (*pollLoop, error) {
	p := &pollLoops
	p.once.Do(func() {
		for range loops {
			epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
			if err != nil {
				p.err = err
				return
			}
			l := &pollLoop{epfd: epfd, sessions: map[uint32]*polled{}}
			p.loops = append(p.loops, l)
			go l.run()
		}
	})
	if len(p.loops) == 0 {
		return nil, p.err
	}
	return p.loops[p.next.Add(1)%uint32(len(p.loops))], nil
}

// add registers s's sockets, both watched for reading. It holds l.mu
// throughout, so that the loop sees s only whole.
func (l *pollLoop) add(s *polled) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		l.next++
		if _, used := l.sessions[l.next]; !used {
			break
		}
	}
	s.id = l.next
	l.sessions[s.id] = s
	for i, fd := range s.fd {
		s.watch[i] = unix.EPOLLIN
		ev := unix.EpollEvent{Events: s.watch[i], Fd: int32(s.id), Pad: int32(i)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			l.end(s)
			return
		}
	}
}

// run waits for ready sockets and relays what they hold, forever.
func (l *pollLoop) run() {
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, loopBufSize)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			continue // EINTR; nothing else is possible with a valid epfd
		}
		l.mu.Lock()
		for _, ev := range events[:n] {
			if s := l.sessions[uint32(ev.Fd)]; s != nil {
				l.handle(s, int(ev.Pad), ev.Events, buf)
			}
		}
		l.mu.Unlock()
	}
}

// handle serves one event of side i of s. l.mu is held.
func (l *pollLoop) handle(s *polled, i int, events uint32, buf []byte) {
	if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		// Reset, or shut both ways (the session was cut): over.
		l.end(s)
		return
	}
	o := 1 - i
	if events&unix.EPOLLOUT != 0 && len(s.pending[o]) > 0 {
		// Room on side i for what side o sent.
		n, err := unix.Write(s.fd[i], s.pending[o])
		if err != nil && !retry(err) {
			l.end(s)
			return
		}
		if n > 0 {
			s.pending[o] = s.pending[o][n:]
		}
		if len(s.pending[o]) == 0 {
			s.pending[o] = nil
		}
	}
	if events&unix.EPOLLIN != 0 && len(s.pending[i]) == 0 {
		n, err := unix.Read(s.fd[i], buf)
		switch {
		case n > 0:
			w, err := unix.Write(s.fd[o], buf[:n])
			if err != nil {
				if !retry(err) {
					l.end(s)
					return
				}
				w = 0
			}
			if w < n {
				s.pending[i] = append([]byte(nil), buf[w:n]...)
				if hook := testHookPending.Load(); hook != nil {
					(*hook)()
				}
			}
		case err != nil && retry(err):
		default: // the end of side i's stream, or an error
			l.end(s)
			return
		}
	}
	l.rewatch(s)
}

// retry reports whether a read or write that failed with err may succeed
// later.
func retry(err error) bool {
	return err == unix.EAGAIN || err == unix.EINTR
}

// rewatch registers for each side the events s waits for now: reading
// while nothing it sent is waiting, room while something for it is.
func (l *pollLoop) rewatch(s *polled) {
	for i, fd := range s.fd {
		var want uint32
		if len(s.pending[i]) == 0 {
			want |= unix.EPOLLIN
		}
		if len(s.pending[1-i]) > 0 {
			want |= unix.EPOLLOUT
		}
		if want == s.watch[i] {
			continue
		}
		s.watch[i] = want
		ev := unix.EpollEvent{Events: want, Fd: int32(s.id), Pad: int32(i)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
			l.end(s)
			return
		}
	}
}

// end closes s's sockets and lets its Relay return. l.mu is held.
func (l *pollLoop) end(s *polled) {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, fd := range s.fd {
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
			unix.Close(fd)
		}
		s.pending = [2][]byte{}
		close(s.done)
	}
	s.mu.Unlock()
	delete(l.sessions, s.id)
}

// cut ends the session from outside its loop: both sockets are shut
// down, which the loop sees as a hang-up and ends the session.
func (s *polled) cut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, fd := range s.fd {
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
	}
}
