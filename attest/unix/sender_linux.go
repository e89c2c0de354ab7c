//go:build linux

package unix

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	sys "golang.org/x/sys/unix"
)

// Listener accepts connections whose every read tells who wrote the bytes.
// Serve the socket API on it: Attest refuses connections that did not come
// through one.
type Listener struct {
	*net.UnixListener
	a *Attestor
}

// Listen turns on SO_PASSCRED on ln, so that the kernel attaches the
// writer's credentials to every write into an accepted connection, and
// returns a listener whose connections record them. The kernel never
// merges bytes of two writers into one read.
//
// The writer is compared with the connecting process by pid. That is
// exact: Attest confirms through the connecting process's pidfd that it is
// still alive, so it held its pid at every moment since it connected, and
// no other process can have written under that pid meanwhile. (SO_PASSPIDFD
// would say the same at the cost of a new descriptor per read, about 5 µs
// measured.)
func (a *Attestor) Listen(ln *net.UnixListener) (*Listener, error) {
	if err := passCreds(ln); err != nil {
		return nil, fmt.Errorf("unix: listener: %w", err)
	}
	return &Listener{UnixListener: ln, a: a}, nil
}

// Accept waits for a connection and notes the process that connected: its
// pid and its executable at this moment.
func (l *Listener) Accept() (net.Conn, error) {
	uc, err := l.UnixListener.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return l.a.newConn(uc), nil
}

// passCreds sets SO_PASSCRED on the socket of c. Connections inherit it
// from their listener from connect(2) on, so that even bytes written before
// the broker accepts carry their writer's credentials.
func passCreds(c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = sys.SetsockoptInt(int(fd), sys.SOL_SOCKET, sys.SO_PASSCRED, 1)
	}); err != nil {
		return err
	}
	return serr
}

// origin is the process that connected, as found at accept.
type origin struct {
	pid   int32
	exe   exeID
	start uint64 // start time, without pidfds (the fallback mode); else 0
	err   error  // why the origin could not be established
}

// exeID identifies an executable file, to tell an execve(2) of another
// file.
type exeID struct{ dev, ino uint64 }

// Conn is a connection accepted through a Listener. Its reads record who
// wrote the bytes; Attest refuses it once any byte came from a process
// other than the one that connected, or without the kernel saying who wrote
// it.
type Conn struct {
	*net.UnixConn
	a      *Attestor
	origin origin
	proc   *procHandle // with a pidfd: the connecting process, held until Close

	readMu sync.Mutex // serialises reads, which share oob
	oob    [128]byte

	mu     sync.Mutex
	sender sender
}

// sender is what the reads so far established about the writer.
type sender struct {
	seen     bool   // a byte was read
	uid, gid uint32 // real uid and gid of the writer, from SCM_CREDENTIALS
	// foreign is the first reason the bytes cannot be attributed to the
	// connecting process; it is never cleared.
	foreign error
}

// NetConn returns the connection beneath c, for a listener that has
// attested the caller and now only relays bytes: reads through it are not
// attributed to their sender, so a listener deciding per request must keep
// reading through c.
func (c *Conn) NetConn() net.Conn { return c.UnixConn }

// newConn wraps an accepted connection and establishes its origin.
func (a *Attestor) newConn(uc *net.UnixConn) *Conn {
	c := &Conn{UnixConn: uc, a: a}
	// Inherited from the listener on Linux; set again for a connection
	// accepted elsewhere. Failure shows as reads without credentials.
	_ = passCreds(uc)
	c.origin, c.proc = a.findOrigin(uc)
	return c
}

// findOrigin takes the connecting process's pid from the socket, and the
// identity of its executable from /proc, confirming afterwards through its
// pidfd that the process read was the one that connected. With a pidfd it
// also returns the handles that Attest reads the process through for the
// life of the connection.
func (a *Attestor) findOrigin(uc *net.UnixConn) (origin, *procHandle) {
	p, err := a.takePeer(uc)
	if err != nil {
		return origin{err: err}, nil
	}
	o := origin{pid: p.pid}
	h := &procHandle{pidfd: p.pidfd, dirfd: -1, cgroupfd: -1, uid: p.uid, gid: p.gid}
	kept := false
	defer func() {
		if !kept {
			h.release()
		}
	}()
	if h.dirfd, err = a.openProcDir(p.pid); err != nil {
		return origin{err: fail(reasonGone, err)}, nil
	}
	if p.pidfd < 0 {
		// Without a pidfd, the start time tells this process from a later
		// holder of its pid.
		if o.start, err = a.startTime(h.dirfd); err != nil {
			return origin{err: fail(reasonGone, err)}, nil
		}
	}
	var st sys.Stat_t
	if err := sys.Fstatat(h.dirfd, "exe", &st, 0); err != nil {
		return origin{err: fail(reasonExe, fmt.Errorf("unix: stat exe: %w", err))}, nil
	}
	o.exe = exeID{dev: st.Dev, ino: st.Ino}
	if p.pidfd < 0 {
		return o, nil
	}
	// Opened now, read from the start at each Attest: one read instead of
	// an open, a read and a close per request.
	if h.cgroupfd, err = sys.Openat(h.dirfd, "cgroup", sys.O_RDONLY|sys.O_CLOEXEC, 0); err != nil {
		return origin{err: fail(reasonCgroup, fmt.Errorf("unix: open cgroup: %w", err))}, nil
	}
	if err := pidfdAlive(p.pidfd); err != nil {
		return origin{err: fail(reasonGone, err)}, nil
	}
	kept = true
	return o, h
}

// procHandle holds, for the life of a connection, what stays true while
// the process that connected holds it: its credentials at connect time, a
// pidfd for it and its /proc directory, which reads through fail once that
// process is gone, whoever takes its pid next.
type procHandle struct {
	mu                     sync.RWMutex // read-held while the descriptors are used; Close write-locks
	pidfd, dirfd, cgroupfd int          // -1 once released
	uid, gid               uint32       // SO_PEERCRED
	released               bool
}

// release closes the handle's descriptors; later Attest calls refuse.
func (h *procHandle) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, fd := range []*int{&h.pidfd, &h.dirfd, &h.cgroupfd} {
		if *fd >= 0 {
			sys.Close(*fd)
			*fd = -1
		}
	}
	h.released = true
}

// Close closes the connection and releases what it holds of the peer.
func (c *Conn) Close() error {
	c.release()
	return c.UnixConn.Close()
}

// release lets go of the peer's handles without closing the connection.
func (c *Conn) release() {
	if c.proc != nil {
		c.proc.release()
	}
}

// Read reads from the connection and records who wrote what was read.
func (c *Conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	n, oobn, flags, _, err := c.UnixConn.ReadMsgUnix(b, c.oob[:])
	if n > 0 || oobn > 0 || flags&sys.MSG_CTRUNC != 0 {
		c.note(c.oob[:oobn], flags, n)
	}
	return n, err
}

// note checks the control data of one read of n bytes against the
// connecting process, and closes every descriptor it carried.
func (c *Conn) note(oob []byte, flags, n int) {
	ctl, perr := parseControl(oob)
	if ctl.pidfd >= 0 {
		// Not asked for; whoever enabled SO_PASSPIDFD, close it.
		sys.Close(ctl.pidfd)
	}
	for _, fd := range ctl.rights {
		sys.Close(fd)
	}
	var why error
	switch {
	case perr != nil:
		why = perr
	case flags&sys.MSG_CTRUNC != 0:
		why = errors.New("unix: control data truncated")
	case len(ctl.rights) > 0:
		why = fmt.Errorf("unix: the peer passed %d file descriptors", len(ctl.rights))
	case n == 0:
	case !ctl.hasCreds || ctl.pid == 0:
		why = errors.New("unix: bytes without the writer's credentials")
	case ctl.pid != c.origin.pid:
		why = fmt.Errorf("unix: bytes written by pid %d on a connection made by pid %d", ctl.pid, c.origin.pid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.sender
	switch {
	case s.foreign != nil:
	case why != nil:
		s.foreign = why
	case n == 0:
	case !s.seen:
		s.seen, s.uid, s.gid = true, ctl.uid, ctl.gid
	case s.uid != ctl.uid || s.gid != ctl.gid:
		s.foreign = fmt.Errorf("unix: writer's credentials changed from uid %d gid %d to uid %d gid %d", s.uid, s.gid, ctl.uid, ctl.gid)
	}
}

// senderState returns what the reads so far established.
func (c *Conn) senderState() sender {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sender
}
