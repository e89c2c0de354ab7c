//go:build linux

package unix

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"

	"github.com/credbroker/credbroker/attest"
	sys "golang.org/x/sys/unix"
)

// ListenTCP wraps a TCP listener so that Attest finds the process behind
// each accepted connection once and then holds it, instead of scanning
// /proc at every request (see TCPConn). Connections that are not TCP pass
// through unwrapped.
func (a *Attestor) ListenTCP(ln net.Listener) net.Listener {
	return &tcpListener{Listener: ln, a: a}
}

type tcpListener struct {
	net.Listener
	a *Attestor
}

// Accept waits for a connection and wraps it in a *TCPConn.
func (l *tcpListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	return &TCPConn{TCPConn: tc, a: l.a}, nil
}

// TCPConn is a connection accepted through ListenTCP. Its first
// attestation is AttestTCP's: the kernel's socket table and a scan of
// /proc/*/fd name the process holding the client socket. That process is
// then held, by a pidfd and its /proc directory, until the connection is
// closed, and each later attestation only confirms through those handles
// that it is still alive, still has the client socket open at the same
// descriptor, and still has the same uids, gids, executable and cgroup
// claims — a few reads instead of a readlink per open file of every
// process. When any of that no longer holds (the process exited, closed
// or moved the descriptor, changed its ids, executed another program),
// the connection is attested afresh, as AttestTCP would, and whoever
// holds the client socket then is named or the request refused.
//
// What the held process does with the socket is its own act: a process
// that forks, or passes the socket to another process (SCM_RIGHTS), while
// it keeps it open, has the requests written by the others attributed to
// itself, as if it had relayed them, which it could equally do. AttestTCP,
// which looks afresh at each call, would see the others as further
// holders, and refuse holders that differ.
type TCPConn struct {
	*net.TCPConn
	a *Attestor

	mu     sync.Mutex
	held   *tcpHolder // the process named by the last full attestation
	closed bool
}

// Close closes the connection and lets go of the held process.
func (c *TCPConn) Close() error {
	c.mu.Lock()
	c.held.release()
	c.held, c.closed = nil, true
	c.mu.Unlock()
	return c.TCPConn.Close()
}

// attestTCPConn attests c through its held process, or afresh.
func (a *Attestor) attestTCPConn(ctx context.Context, c *TCPConn) (attest.Identity, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return a.refuse(peer{}, fail(reasonGone, errors.New("unix: connection closed")))
	}
	if err := ctx.Err(); err != nil {
		return attest.Identity{}, fail(reasonCancelled, err)
	}
	if c.held != nil {
		if id, ok := a.recheckTCP(ctx, c.held); ok {
			return id, nil
		}
		c.held.release()
		c.held = nil
	}
	id, h, err := a.attestTCP(ctx, c.TCPConn)
	c.held = h
	return id, err
}

// recheckTCP confirms, through its handles, that holder h still holds the
// client socket at the descriptor it was found at, with the ids and facts
// it was named with, and returns its identity. It returns false when
// anything differs or cannot be read, and the caller attests afresh.
func (a *Attestor) recheckTCP(ctx context.Context, h *tcpHolder) (attest.Identity, bool) {
	uids, gids, ok := a.pidfdIDs(h)
	if !ok {
		return attest.Identity{}, false
	}
	if hook := a.hooks.AfterPeerCred; hook != nil {
		hook(h.pid)
	}
	var linkBuf [64]byte
	var wantBuf [32]byte
	want := append(strconv.AppendUint(append(wantBuf[:0], "socket:["...), uint64(h.ino), 10), ']')
	n, err := sys.Readlinkat(h.dirfd, "fd/"+h.fd, linkBuf[:])
	if err != nil || !bytes.Equal(linkBuf[:n], want) {
		return attest.Identity{}, false
	}
	if uids != h.uids || gids != h.gids {
		return attest.Identity{}, false
	}
	var f procFacts
	if err := a.readFacts(ctx, h.dirfd, -1, &f); err != nil || f != h.facts {
		return attest.Identity{}, false
	}
	// The reads were of the held process, not of a successor with its pid.
	if pidfdAlive(h.pidfd) != nil {
		return attest.Identity{}, false
	}
	return a.tcpIdentity(h, &f), true
}

// pidfdIDs returns the uids and gids (real, effective, saved, filesystem)
// of the held process: from its pidfd (PIDFD_GET_INFO, Linux 6.13), or,
// on a kernel without it, from /proc/PID/status once its pidfd shows it
// alive. It returns false when the process has exited or cannot be read.
func (a *Attestor) pidfdIDs(h *tcpHolder) (uids, gids [4]uint32, ok bool) {
	if !a.noPidfdInfo.Load() {
		info := sys.PidfdInfo{Mask: sys.PIDFD_INFO_CREDS}
		err := sys.IoctlPidfdInfo(h.pidfd, &info)
		switch {
		case err == nil && info.Mask&sys.PIDFD_INFO_CREDS != 0:
			return [4]uint32{info.Ruid, info.Euid, info.Suid, info.Fsuid},
				[4]uint32{info.Rgid, info.Egid, info.Sgid, info.Fsgid}, true
		case errors.Is(err, sys.ESRCH):
			return uids, gids, false
		case errors.Is(err, sys.ENOTTY), errors.Is(err, sys.EINVAL), err == nil:
			a.noPidfdInfo.Store(true)
		default:
			return uids, gids, false
		}
	}
	if pidfdAlive(h.pidfd) != nil {
		return uids, gids, false
	}
	uids, gids, err := a.readStatusIDs(h.dirfd)
	return uids, gids, err == nil
}

// NetConn returns the connection beneath c, for a listener that has
// attested its caller and now only relays bytes (which the kernel can
// then splice between sockets).
func (c *TCPConn) NetConn() net.Conn { return c.TCPConn }
