package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// backlog waits for callers queued in a listening socket's backlog without
// accepting them. A listener's own RawConn cannot wait for readability, so
// backlog waits on a duplicate of its descriptor through the runtime's poller
// and confirms each wake-up with a zero-timeout poll(2): readable means a
// connection is waiting to be accepted.
type backlog struct {
	f  *os.File
	rc syscall.RawConn
}

// newBacklog returns nil when ln has no descriptor to watch.
func newBacklog(ln net.Listener) *backlog {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return nil
	}
	f := os.NewFile(uintptr(dup), "listener backlog")
	frc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	return &backlog{f: f, rc: frc}
}

// wait returns once a caller waits to be accepted, or with an error once
// the backlog is closed.
func (b *backlog) wait() error {
	var perr error
	err := b.rc.Read(func(fd uintptr) bool {
		for {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 0)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				perr = err
				return true
			case n == 0:
				return false // nobody waiting: sleep until the socket is readable
			case pfd[0].Revents&unix.POLLIN == 0:
				perr = fmt.Errorf("poll: listening socket reports events %#x", pfd[0].Revents)
				return true
			default:
				return true
			}
		}
	})
	if err != nil {
		return err
	}
	return perr
}

func (b *backlog) close() { _ = b.f.Close() }
