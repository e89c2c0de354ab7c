//go:build linux

package listener

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The relay of plain sockets runs the way HAProxy does, not the way
// io.Copy does: a few event loops, one per CPU (loopCount), each waits in
// epoll_wait on every socket of its sessions and, for each readable one,
// reads once into the loop's buffer and writes that to the session's
// other socket.
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

// loopCount returns how many event loops relay sessions: a loop per P
// the runtime had, as HAProxy runs a thread per CPU; once they run, the
// runtime gets one P more. A single loop on two
// CPUs was the thread every peer's wake-up landed on: a socket write
// wakes its reader onto the writer's CPU (the kernel's sync wake-up),
// and a loop that is always busy has had more than its share of that
// CPU, so the reader preempts it at once, takes one message and sleeps
// again, and the next write does the same (`perf sched` under
// redis-benchmark: the loop preempted 13,000 times a second, asleep
// 1,500; redis-server woken twice as often as behind HAProxy). With a
// loop per CPU each sleeps when its sessions are idle, as HAProxy's
// threads do, and the peers' wake-ups spread over the CPUs. But a busy loop
// keeps its P through its raw system calls, so the loops would leave
// nothing for the broker's other goroutines (accepting, attesting,
// logging in, the audit log) until the runtime's monitor took a P back:
// the runtime gets one P beyond the loops. Setting GOMAXPROCS stops the
// runtime from following a later change of the container's CPU limit; a
// broker restarted under the new limit picks it up.
func loopCount() int {
	return max(1, runtime.GOMAXPROCS(0))
}

// loopCPUs returns the CPU each of n loops is bound to: the CPUs the
// process may run on, in order, when there are exactly n of them, and
// nil otherwise (a CPU limit below the CPUs it may use, or a GOMAXPROCS
// set lower, leaves the loops to the kernel: bound, they would crowd
// CPUs other work is given).
// Unbound, the kernel tends to put a woken loop on the CPU of the peer
// that woke it: under pgbench -S the broker's two busiest threads were
// last on the same CPU in half of the samples (the bound loops never),
// where they wait behind each other and the peers they have just woken.
// Bound, each CPU has its loop: in alternating runs pgbench -S went from
// about HAProxy's rate to a fifth above it (bench/README.md); for Redis
// see bindThread.
func loopCPUs(n int) []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil || set.Count() != n {
		return nil
	}
	cpus := make([]int, 0, n)
	for c := 0; len(cpus) < n && c < 8*int(unsafe.Sizeof(set)); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// bindThread binds the calling goroutine to its thread and the thread to
// cpu, and makes the thread SCHED_BATCH: woken, it does not preempt what
// runs on its CPU but waits for it to sleep or use up its slice. A bound
// loop that preempted the peer which had just woken it (redis-server
// writing replies to fifty sockets, the first write waking the loop on
// the same CPU) broke its run of replies (redis-server woken 0.09–0.11
// times per request against HAProxy's 0.07–0.10); waiting, the loop
// takes them together and the peer keeps its CPU (A/B runs,
// bench/README.md: bound alone, Redis 0.93–0.96 × HAProxy; bound and
// SCHED_BATCH, 1.07–1.10).
// Neither needs a privilege; a failure leaves the thread as it was,
// which only costs speed.
func bindThread(cpu int) {
	runtime.LockOSThread()
	var one unix.CPUSet
	one.Set(cpu)
	_ = unix.SchedSetaffinity(0, &one) // 0: the calling thread
	batch := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_BATCH}
	_ = unix.SchedSetAttr(0, &batch, 0)
}

// loopBufSize is the most a loop reads from one socket at a time.
const loopBufSize = 64 << 10

// pollLoops are started on the first relay.
var pollLoops struct {
	once  sync.Once
	loops []*pollLoop
	err   error
	next  atomic.Uint32
}

// testHookWait, when set, is called by each loop before each wait that
// may block with its timeout in milliseconds (-1 for none).
var testHookWait atomic.Pointer[func(l *pollLoop, timeout int)]

// testHookAdd, when set, is called with the loop each session is given to.
var testHookAdd atomic.Pointer[func(l *pollLoop)]

// testHookPending, when set, is called each time a session keeps bytes
// its peer socket could not take at once.
var testHookPending atomic.Pointer[func()]

// pollLoop relays the sessions given to it on one goroutine.
type pollLoop struct {
	epfd int
	cpu  int          // the CPU its thread is bound to (loopCPUs), or -1
	tid  atomic.Int32 // that thread, once bound (for tests)

	mu       sync.Mutex // guards sessions and next
	sessions map[uint32]*polled
	next     uint32
	obuf     []byte // a filter's output, reused
}

// polled is one session on a loop. Side 0 is the client, side 1 the
// upstream.
type polled struct {
	id      uint32
	fd      [2]int
	pending [2][]byte // pending[i]: read from side i, not yet written to the other side
	watch   [2]uint32 // the events registered for fd[i]

	// With a filter, the client's bytes go upstream through it; once the
	// client's stream has ended cleanly or been refused (inDone), the
	// upstream's writing side is shut when all is written (shut), its
	// replies still flow, and the refusal (ferr) is answered at its end.
	filter Filter
	ferr   error
	inDone bool
	shut   bool

	mu     sync.Mutex // guards closed against cut
	closed bool
	done   chan struct{}
}

// pollRelay relays between client and upstream on an event loop and
// returns when the session ends, as Relay does. It reports false, having
// changed nothing, when either is not a plain TCP or Unix socket or the
// loops cannot run; Relay then copies with io.Copy.
func pollRelay(ctx context.Context, client, upstream net.Conn) bool {
	ok, _ := pollRelayFiltered(ctx, client, upstream, nil)
	return ok
}

// pollRelayFiltered is pollRelay with the client's bytes going upstream
// through f, when f is not nil; it returns f's refusal or unexpected end.
func pollRelayFiltered(ctx context.Context, client, upstream net.Conn, f Filter) (bool, error) {
	if !plainSocket(client) || !plainSocket(upstream) {
		return false, nil
	}
	l, err := nextLoop()
	if err != nil {
		return false, nil
	}
	cfd, err := dupSocket(client)
	if err != nil {
		return false, nil
	}
	ufd, err := dupSocket(upstream)
	if err != nil {
		unix.Close(cfd)
		return false, nil
	}
	// From here the loop owns the session: the originals leave Go's
	// poller (closing them removes them from it; the sockets stay open
	// through the duplicates).
	client.Close()
	upstream.Close()
	s := &polled{fd: [2]int{cfd, ufd}, filter: f, done: make(chan struct{})}
	if hook := testHookAdd.Load(); hook != nil {
		(*hook)(l)
	}
	l.add(s)
	stop := context.AfterFunc(ctx, s.cut)
	<-s.done
	stop()
	return true, s.ferr
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
// (loopCount) on first use.
func nextLoop() (*pollLoop, error) {
	p := &pollLoops
	p.once.Do(func() {
		loops := loopCount()
		cpus := loopCPUs(loops)
		defer func() {
			if len(p.loops) > 0 {
				runtime.GOMAXPROCS(loops + 1)
			}
		}()
		for range loops {
			epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
			if err != nil {
				p.err = err
				return
			}
			l := &pollLoop{epfd: epfd, sessions: map[uint32]*polled{}, cpu: -1}
			if cpus != nil {
				l.cpu = cpus[len(p.loops)]
			}
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
	if l.cpu >= 0 {
		bindThread(l.cpu)
		l.tid.Store(int32(unix.Gettid()))
	}
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, loopBufSize)
	var p pacer
	for {
		// Under load another socket is usually ready already: a poll that
		// cannot block, made without telling the scheduler, finds it
		// cheaper than a wait that may block.
		n, err := pollReady(l.epfd, events)
		if n == 0 && err == nil {
			yield, timeout := p.next(time.Now())
			if yield {
				runtime.Gosched()
			}
			if hook := testHookWait.Load(); hook != nil {
				(*hook)(l, timeout)
			}
			n, err = unix.EpollWait(l.epfd, events, timeout)
		}
		if n <= 0 || err != nil {
			continue // nothing ready, or EINTR: nothing else is possible with a valid epfd
		}
		p.ready = true
		l.mu.Lock()
		for _, ev := range events[:n] {
			if s := l.sessions[uint32(ev.Fd)]; s != nil {
				l.handle(s, int(ev.Pad), ev.Events, buf)
			}
		}
		l.mu.Unlock()
	}
}

// The loop and Go's scheduler. The loop's goroutine spends its life in
// epoll_wait and its read and write calls and never parks, so by itself it
// never passes through the scheduler. The runtime's monitor (sysmon) takes
// the P of a goroutine that has not been through the scheduler for 10 ms
// (the runtime's forcePreemptNS) when it finds it in a system call, and
// after every such take it goes back to checking every 20 µs for a
// millisecond or more. A loop that let that happen lost its P every 10 ms,
// busy or quiet, and kept the monitor waking over a thousand times a
// second: at pgbench -S -R 200 that was more than half of the broker's CPU
// (bench/README.md). So, while sessions have traffic, the loop yields to
// the scheduler when it is about to wait and has not yielded for
// yieldEvery, and no wait outlasts waitBound after its last yield. Once
// nothing has been ready for quietAfter, it waits without limit: the one
// take that follows gives its P back for as long as nothing comes.
const (
	yieldEvery = 4 * time.Millisecond
	waitBound  = 8 * time.Millisecond // under the monitor's 10 ms
	quietAfter = time.Second
)

// A wait starts less than yieldEvery after the last yield, so its timeout
// is at least waitBound - yieldEvery: this fails to compile if that is
// under a millisecond, which would round to a wait of 0, a spin.
const _ = uint64(waitBound - yieldEvery - time.Millisecond)

// pacer decides, before each wait that may block, whether the loop yields
// first and how long the wait may last.
type pacer struct {
	lastYield time.Time
	lastReady time.Time // the first wait after sockets were last ready
	ready     bool      // sockets were ready since the last wait
}

// next returns, for a wait starting at now, whether to yield first and the
// wait's timeout in milliseconds (-1 for none).
func (p *pacer) next(now time.Time) (yield bool, timeout int) {
	if p.ready {
		p.lastReady, p.ready = now, false
	}
	if now.Sub(p.lastReady) >= quietAfter {
		return false, -1
	}
	if now.Sub(p.lastYield) >= yieldEvery {
		p.lastYield, yield = now, true
	}
	return yield, int((waitBound - now.Sub(p.lastYield)) / time.Millisecond)
}

// handle serves one event of side i of s. l.mu is held.
func (l *pollLoop) handle(s *polled, i int, events uint32, buf []byte) {
	if events&unix.EPOLLERR != 0 {
		l.end(s) // reset
		return
	}
	if events&unix.EPOLLHUP != 0 {
		// Shut both ways (by the peer, or by cut): read what is left,
		// then the end of the stream.
		events |= unix.EPOLLIN
	}
	o := 1 - i
	if events&unix.EPOLLOUT != 0 && len(s.pending[o]) > 0 {
		// Room on side i for what side o sent.
		n, err := write(s.fd[i], s.pending[o])
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
	if events&unix.EPOLLIN != 0 && len(s.pending[i]) == 0 && !(i == 0 && s.inDone) {
		n, err := read(s.fd[i], buf)
		switch {
		case n > 0:
			data := buf[:n]
			if i == 0 && s.filter != nil {
				out, ferr := s.filter.Feed(l.obuf[:0], data)
				l.obuf, data = out[:0], out
				if ferr != nil {
					s.ferr, s.inDone = ferr, true
				}
			}
			w, err := write(s.fd[o], data)
			if err != nil {
				if !retry(err) {
					l.end(s)
					return
				}
				w = 0
			}
			if w < len(data) {
				s.pending[i] = append([]byte(nil), data[w:]...)
				if hook := testHookPending.Load(); hook != nil {
					(*hook)()
				}
			}
		case err != nil && retry(err):
		case err == nil && i == 0 && s.filter != nil:
			// The client's stream ended: cleanly between commands, the
			// upstream answers what it was sent; inside one, over.
			if ferr := s.filter.End(); ferr != io.EOF {
				s.ferr = ferr
				l.end(s)
				return
			}
			s.inDone = true
		default: // the end of side i's stream, or an error
			if i == 1 && s.ferr != nil {
				if b := s.filter.Refusal(s.ferr); len(b) > 0 {
					_, _ = unix.Write(s.fd[0], b) // best effort: the session ends
				}
			}
			l.end(s)
			return
		}
	}
	l.rewatch(s)
}

// read, write and pollReady are the loop's system calls on its
// non-blocking sockets and its epoll set: none can block, so they are made
// as raw system calls, which spare the scheduler's bookkeeping around a
// call that might (unix.Read and unix.Write are the same calls with it).
func read(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return rawResult(n, e)
}

func write(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return rawResult(n, e)
}

// pollReady returns the events ready now, without waiting.
func pollReady(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	return rawResult(n, e)
}

func rawResult(n uintptr, e unix.Errno) (int, error) {
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// retry reports whether a read or write that failed with err may succeed
// later.
func retry(err error) bool {
	return err == unix.EAGAIN || err == unix.EINTR
}

// rewatch registers for each side the events s waits for now: reading
// while nothing it sent is waiting (and, for the client with a filter,
// until its stream is done), room while something for it is. A side
// waiting for neither is registered edge-triggered, so that a hang-up it
// cannot act on yet is reported once, not in every wait. With a filter,
// the upstream's writing side is shut once the client is done and all it
// sent is written.
func (l *pollLoop) rewatch(s *polled) {
	if s.inDone && !s.shut && len(s.pending[0]) == 0 {
		s.shut = true
		_ = unix.Shutdown(s.fd[1], unix.SHUT_WR)
	}
	for i, fd := range s.fd {
		var want uint32
		if len(s.pending[i]) == 0 && !(i == 0 && s.inDone) {
			want |= unix.EPOLLIN
		}
		if len(s.pending[1-i]) > 0 {
			want |= unix.EPOLLOUT
		}
		if want == 0 {
			want = unix.EPOLLET
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
