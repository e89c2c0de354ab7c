//go:build linux

package unix

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/credbroker/credbroker/attest"
	sys "golang.org/x/sys/unix"
)

// Caller-safe reasons of TCP attestation failures.
const (
	reasonNoPeer    = "no process visible to the broker is at the other end of the connection"
	reasonTCPConn   = "the connection is not a TCP connection"
	reasonSockets   = "cannot read the kernel's socket table"
	reasonAmbiguous = "processes that differ hold the other end of the connection"
	reasonSockUID   = "the other end of the connection was opened under another uid than the process holding it"
)

// errHolderGone says that a process found holding the client socket no
// longer does, or no longer exists.
var errHolderGone = errors.New("unix: the process let go of the socket")

// AttestTCP returns the identity of the process at the other end of conn,
// a connection accepted on a TCP listener bound to a loopback address
// (IPv4, IPv6, or a dual-stack listener reached over loopback). The
// identity is the one Attest gives a Unix-socket peer — method unix,
// subject unix:uid:N, claims uid, gid, pid, exe, exe_sha256 and the cgroup
// claims — plus ClaimTransport "tcp", so unix selectors apply unchanged.
// uid and gid are the process's real ids, as Attest reports for a writer.
//
// The process is found from kernel facts only:
//
//  1. The connection's own socket (its inode, by fstat) must be the one
//     the kernel's socket table (NETLINK_SOCK_DIAG, inet_diag, exact
//     lookup) files under the connection's 4-tuple. A connection that was
//     reset, whose 4-tuple a new connection from the same client port may
//     now carry, is refused as gone.
//  2. The client socket is looked up under the mirrored 4-tuple; it must be
//     connected (not SYN_SENT, TIME_WAIT or closed) and still referred to
//     by a file (inode not 0), which gives its inode, its owner's uid and
//     its cookie, a number the kernel never gives another socket.
//  3. Every process whose fd table has socket:[INODE] is a holder, found
//     by a BPF iterator over every task's open files (Config.TCPLookup) or
//     by reading /proc/*/fd. A thread whose fd table is its own (clone
//     without CLONE_FILES) is seen by the iterator only, and refuses the
//     connection when it holds the socket. For each holder, a pidfd is
//     taken, then /proc/PID is opened and its real uid and gid, executable
//     and cgroup are read as Attest reads them, and it is confirmed,
//     through the held /proc/PID directory, that the process still holds
//     the socket.
//  4. Several holders (a fork, a passed descriptor) are accepted only when
//     they would be described alike apart from the pid — same uid, gid,
//     executable and hash, pod and container — and the lowest pid is
//     named; otherwise the connection is refused as ambiguous, since any of
//     them may have written the request. The socket's owner uid (the fsuid
//     that created it) must be the named process's real, effective or
//     filesystem uid: a socket created under one uid and held only by a
//     process of another is refused.
//  5. Then the client socket is looked up again with its cookie (the same
//     socket still has the 4-tuple), the connection's socket again (it
//     still owns its 4-tuple), and a null signal through the pidfd confirms
//     that the named process lived through every read, so a reused pid
//     cannot be mistaken for it.
//
// Nothing is cached per connection (a TCPConn from ListenTCP holds the
// process it named instead): every call finds the holders afresh,
// so a socket passed to another process is attributed to whoever holds it
// at that call, a process that forked since is seen as a second holder,
// and a process that exits is refused at the next call. Finding the
// holders is most of the cost, shared by the calls waiting at once
// (socketHolders). With the BPF iterator a call takes about 0.16 ms with 70
// processes holding 320 files and 0.6 ms with 370 holding 2,100, on two
// cores of a virtual machine (BenchmarkAttestTCP); reading /proc/*/fd, a
// readlink per open file of every process spread over the CPUs, takes 0.8
// and 4.9 ms. Config.Hooks' AfterPeerCred is called with each holder's pid
// once its pidfd is taken.
//
// It returns an *attest.Error wrapping ErrNoPeer when the peer is not a
// process visible here: conn is not between loopback addresses, the
// connection or its client socket is not in this network namespace's
// socket table, or no process of the broker's pid namespace holds the
// client socket (a process in a sibling container that shares the
// network namespace but not the pid namespace). Other failures are
// *attest.Error values too; those about a peer that has gone or changed
// use the reason Attest uses.
//
// A socket that no process holds looks the same as one held in another pid
// namespace: any local process can arrange that by sending its socket over
// a Unix socket (SCM_RIGHTS) and closing its own descriptor while the
// request is attested, and receiving it back for the answer. A listener
// that lets an ambient identity stand in for ErrNoPeer therefore grants
// it to every process that can reach its port. Processes are found by
// their fd tables; reading /proc/*/fd, a thread created without a shared
// file table (clone without CLONE_FILES) is not looked at. AttestTCP needs
// pidfd_open (Linux 5.3) and inet_diag, and uses pidfds whatever
// Config.DisablePidfd says.
func (a *Attestor) AttestTCP(ctx context.Context, conn net.Conn) (attest.Identity, error) {
	id, h, err := a.attestTCP(ctx, conn)
	h.release()
	return id, err
}

// attestTCP is AttestTCP, returning on success the named holder still
// held, which the caller must release.
func (a *Attestor) attestTCP(ctx context.Context, conn net.Conn) (attest.Identity, *tcpHolder, error) {
	id, h, err := a.findTCPHolder(ctx, conn)
	if err != nil {
		id, err = a.refuse(h.peer(), err)
		return id, nil, err
	}
	return id, h, nil
}

// findTCPHolder does the work of attestTCP. On failure it returns the
// holder, released, whose ids go in the record, or nil.
func (a *Attestor) findTCPHolder(ctx context.Context, conn net.Conn) (attest.Identity, *tcpHolder, error) {
	if err := ctx.Err(); err != nil {
		return attest.Identity{}, nil, fail(reasonCancelled, err)
	}
	local, lok := tcpAddrPort(conn.LocalAddr())
	remote, rok := tcpAddrPort(conn.RemoteAddr())
	sc, sok := conn.(syscall.Conn)
	if !lok || !rok || !sok {
		return attest.Identity{}, nil, fail(reasonTCPConn, fmt.Errorf("unix: connection of type %T", conn))
	}
	if !local.Addr().Unmap().IsLoopback() || !remote.Addr().Unmap().IsLoopback() {
		return attest.Identity{}, nil, noPeer("connection %v -> %v is not between loopback addresses", remote, local)
	}
	srvIno, _, err := tcpSocketState(sc)
	if err != nil {
		return attest.Identity{}, nil, fail(reasonCred, err)
	}
	d, err := openInetDiag()
	if err != nil {
		return attest.Identity{}, nil, fail(reasonSockets, err)
	}
	defer d.close()
	srv := tuple{src: local, dst: remote}
	cli := tuple{src: remote, dst: local}
	if err := checkServerSocket(d, sc, srv, srvIno); err != nil {
		return attest.Identity{}, nil, err
	}
	cs, err := d.lookup(cli, noCookie)
	switch {
	case errors.Is(err, errDiagNotFound):
		if _, state, serr := tcpSocketState(sc); serr == nil && state == tcpClose {
			return attest.Identity{}, nil, fail(reasonGone, errors.New("unix: the connection was closed by its peer"))
		}
		return attest.Identity{}, nil, noPeer("the client socket %v -> %v is not in this network namespace's socket table", remote, local)
	case err != nil:
		return attest.Identity{}, nil, fail(reasonSockets, err)
	case !connectedState(cs.state):
		return attest.Identity{}, nil, fail(reasonGone, fmt.Errorf("unix: the client socket is in TCP state %d", cs.state))
	case cs.inode == 0:
		return attest.Identity{}, nil, fail(reasonGone, errors.New("unix: no file refers to the client socket any more"))
	}

	pids, err := a.socketHolders(ctx, cs.inode)
	if err != nil {
		if ctx.Err() != nil {
			return attest.Identity{}, nil, fail(reasonCancelled, err)
		}
		if errors.Is(err, errThreadFiles) {
			return attest.Identity{}, nil, fail(reasonAmbiguous, err)
		}
		return attest.Identity{}, nil, fail(reasonFiles, err)
	}
	if len(pids) == 0 {
		return attest.Identity{}, nil, noPeer("no process in the broker's pid namespace holds socket inode %d", cs.inode)
	}
	holders := make([]*tcpHolder, 0, len(pids))
	var named *tcpHolder // kept on success
	defer func() {
		for _, h := range holders {
			if h != named {
				h.release()
			}
		}
	}()
	for _, pid := range pids {
		h, err := a.takeHolder(ctx, pid, cs.inode)
		if errors.Is(err, errHolderGone) {
			continue
		}
		if err != nil {
			return attest.Identity{}, h.released(), err
		}
		holders = append(holders, h)
	}
	if len(holders) == 0 {
		return attest.Identity{}, nil, fail(reasonGone, fmt.Errorf("unix: every process that held socket inode %d let go of it", cs.inode))
	}
	h, err := chooseHolder(holders)
	if err != nil {
		return attest.Identity{}, h.released(), err
	}
	if !h.mayOwn(cs.uid) {
		return attest.Identity{}, h.released(), fail(reasonSockUID, fmt.Errorf("unix: socket owned by uid %d, held by pid %d of uids %v", cs.uid, h.pid, h.uids))
	}

	// Re-check: the same client socket still has the 4-tuple, the
	// connection still owns its own, and the named process lived through
	// every read.
	again, err := d.lookup(cli, cs.cookie)
	switch {
	case errors.Is(err, errDiagNotFound):
		return attest.Identity{}, h.released(), fail(reasonGone, errors.New("unix: the client socket was replaced during attestation"))
	case err != nil:
		return attest.Identity{}, h.released(), fail(reasonSockets, err)
	case again.inode != cs.inode:
		return attest.Identity{}, h.released(), fail(reasonGone, fmt.Errorf("unix: the client socket's inode changed from %d to %d", cs.inode, again.inode))
	}
	if err := checkServerSocket(d, sc, srv, srvIno); err != nil {
		return attest.Identity{}, h.released(), err
	}
	if err := pidfdAlive(h.pidfd); err != nil {
		return attest.Identity{}, h.released(), fail(reasonGone, err)
	}
	h.ino = cs.inode
	named = h
	return a.tcpIdentity(h, &h.facts), h, nil
}

// tcpIdentity is the identity of holder h with facts f.
func (a *Attestor) tcpIdentity(h *tcpHolder, f *procFacts) attest.Identity {
	p := h.peer()
	id := a.identity(&p, f)
	id.Claims[ClaimTransport] = TransportTCP
	return id
}

// noPeer returns a failure wrapping ErrNoPeer.
func noPeer(format string, args ...any) *attest.Error {
	return fail(reasonNoPeer, fmt.Errorf("%w: "+format, append([]any{ErrNoPeer}, args...)...))
}

// tcpAddrPort returns the address of a TCP endpoint.
func tcpAddrPort(addr net.Addr) (netip.AddrPort, bool) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return ap, ap.IsValid()
}

// connectedState reports whether a TCP state is one of a socket that
// completed its handshake and may still carry what its process writes.
func connectedState(state uint8) bool {
	switch state {
	case tcpEstablished, tcpFinWait1, tcpFinWait2, tcpCloseWait, tcpLastAck, tcpClosing:
		return true
	}
	return false
}

// tcpSocketState returns the inode and TCP state of the connection's own
// socket, without duplicating its descriptor.
func tcpSocketState(sc syscall.Conn) (ino uint64, state uint8, err error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("unix: raw connection: %w", err)
	}
	var st sys.Stat_t
	var info *sys.TCPInfo
	var statErr, infoErr error
	if err := rc.Control(func(fd uintptr) {
		statErr = sys.Fstat(int(fd), &st)
		info, infoErr = sys.GetsockoptTCPInfo(int(fd), sys.IPPROTO_TCP, sys.TCP_INFO)
	}); err != nil {
		return 0, 0, fmt.Errorf("unix: raw connection: %w", err)
	}
	if statErr != nil {
		return 0, 0, fmt.Errorf("unix: fstat socket: %w", statErr)
	}
	if infoErr != nil {
		return 0, 0, fmt.Errorf("unix: TCP_INFO: %w", infoErr)
	}
	return uint64(st.Ino), info.State, nil
}

// checkServerSocket confirms that the kernel files the connection's own
// socket, of inode ino, under its 4-tuple srv. A 4-tuple names at most one
// live socket, so the client socket filed under the mirrored 4-tuple is
// then this connection's other end.
func checkServerSocket(d *inetDiag, sc syscall.Conn, srv tuple, ino uint64) error {
	s, err := d.lookup(srv, noCookie)
	switch {
	case errors.Is(err, errDiagNotFound):
		if _, state, serr := tcpSocketState(sc); serr == nil && state == tcpClose {
			return fail(reasonGone, errors.New("unix: the connection was closed by its peer"))
		}
		return noPeer("the connection %v -> %v is not in this network namespace's socket table", srv.dst, srv.src)
	case err != nil:
		return fail(reasonSockets, err)
	case uint64(s.inode) != ino:
		return fail(reasonGone, fmt.Errorf("unix: the connection's 4-tuple belongs to socket inode %d, not to the connection's %d", s.inode, ino))
	}
	return nil
}

// tcpHolder is a process found holding the client socket, held by a pidfd
// and its /proc directory while it is attested.
type tcpHolder struct {
	pid          int32
	pidfd, dirfd int
	fd           string    // the holder's descriptor of the client socket
	ino          uint32    // the client socket's inode
	uids, gids   [4]uint32 // real, effective, saved, filesystem
	facts        procFacts
}

// peer returns the ids the holder is described by; the zero peer for nil.
func (h *tcpHolder) peer() peer {
	if h == nil {
		return peer{pidfd: -1}
	}
	return peer{pid: h.pid, uid: h.uids[0], gid: h.gids[0], pidfd: -1}
}

// mayOwn reports whether a socket owned by uid may have been created by
// the holder under its present ids.
func (h *tcpHolder) mayOwn(uid uint32) bool {
	return uid == h.uids[0] || uid == h.uids[1] || uid == h.uids[3]
}

// released releases h and returns it, for the record of its ids.
func (h *tcpHolder) released() *tcpHolder {
	h.release()
	return h
}

// release closes the holder's handles; it may be called more than once,
// and on nil.
func (h *tcpHolder) release() {
	if h == nil {
		return
	}
	if h.dirfd >= 0 {
		sys.Close(h.dirfd)
		h.dirfd = -1
	}
	if h.pidfd >= 0 {
		sys.Close(h.pidfd)
		h.pidfd = -1
	}
}

// takeHolder takes a pidfd for pid, reads its ids, executable and cgroup,
// and confirms it holds the socket of inode ino. It returns errHolderGone
// when the process no longer exists or no longer holds the socket. With
// any other error it returns the holder, already released, for its ids;
// without error the holder must be released.
func (a *Attestor) takeHolder(ctx context.Context, pid int32, ino uint32) (*tcpHolder, error) {
	h := &tcpHolder{pid: pid, pidfd: -1, dirfd: -1}
	ok := false
	defer func() {
		if !ok {
			h.release()
		}
	}()
	var err error
	if h.pidfd, err = sys.PidfdOpen(int(pid), 0); err != nil {
		if errors.Is(err, sys.ESRCH) {
			return nil, errHolderGone
		}
		return nil, fail(reasonProc, fmt.Errorf("unix: pidfd_open %d: %w", pid, err))
	}
	if h.dirfd, err = a.openProcDir(pid); err != nil {
		if errors.Is(err, sys.ENOENT) {
			return nil, errHolderGone
		}
		return nil, fail(reasonProc, err)
	}
	if hook := a.hooks.AfterPeerCred; hook != nil {
		hook(pid)
	}
	h.uids, h.gids, err = a.readStatusIDs(h.dirfd)
	if err == nil {
		err = a.readFacts(ctx, h.dirfd, -1, &h.facts)
	}
	if err == nil {
		if h.fd, err = socketFD(h.dirfd, uint64(ino)); err != nil {
			err = fail(reasonFiles, err)
		}
	}
	if aliveErr := pidfdAlive(h.pidfd); aliveErr != nil {
		return nil, errHolderGone
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fail(reasonCancelled, err)
		}
		return h, err // released, for the caller's record of its ids
	}
	if h.fd == "" {
		return nil, errHolderGone
	}
	ok = true
	return h, nil
}

// readStatusIDs reads the uids and gids of the process of dirfd from
// /proc/PID/status.
func (a *Attestor) readStatusIDs(dirfd int) (uids, gids [4]uint32, err error) {
	bp := a.bufs.Get().(*[]byte)
	defer a.bufs.Put(bp)
	b, err := readProcFile(dirfd, "status", *bp)
	if err != nil {
		return uids, gids, fail(reasonProc, err)
	}
	if uids, gids, err = parseStatusIDs(b); err != nil {
		return uids, gids, fail(reasonProc, err)
	}
	return uids, gids, nil
}

// chooseHolder names one of several holders of the client socket: the one
// with the lowest pid, provided every holder would be described alike
// apart from its pid. Any of them may have written the request, so
// holders that differ are refused rather than one picked.
func chooseHolder(hs []*tcpHolder) (*tcpHolder, error) {
	slices.SortFunc(hs, func(x, y *tcpHolder) int { return int(x.pid) - int(y.pid) })
	first := hs[0]
	for _, h := range hs[1:] {
		if h.uids[0] != first.uids[0] || h.gids[0] != first.gids[0] ||
			h.facts.exe != first.facts.exe || h.facts.exeSHA256 != first.facts.exeSHA256 ||
			h.facts.podUID != first.facts.podUID || h.facts.containerID != first.facts.containerID {
			return first, fail(reasonAmbiguous, fmt.Errorf("unix: pid %d (uid %d, %s) and pid %d (uid %d, %s) hold the socket", first.pid, first.uids[0], first.facts.exe, h.pid, h.uids[0], h.facts.exe))
		}
	}
	return first, nil
}

// socketHolders returns the pids, in the order /proc lists them, of the
// processes whose open files include the socket of inode ino. A process
// whose open files cannot be read for lack of permission is an error, not
// a process skipped: it might hold the socket.
//
// Finding holders is most of what attesting a TCP peer costs (a pass of
// the BPF iterator, or a readlink per open file of every process), and
// connections that arrive together wait for it together: so one scan looks
// for the sockets of every attestation waiting when it starts
// (holderScans). Each waiter's answer still comes from a scan that started
// after it asked.
func (a *Attestor) socketHolders(ctx context.Context, ino uint32) ([]int32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &a.scans
	s.mu.Lock()
	sc := s.next
	if sc == nil {
		sc = &holderScan{want: map[uint32][]int32{}, done: make(chan struct{})}
		s.next = sc
	}
	sc.want[ino] = nil
	if !s.running {
		s.running = true
		go a.runScans()
	}
	s.mu.Unlock()
	select {
	case <-sc.done:
		return sc.want[ino], sc.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// holderScans queues the sockets whose holders are looked for: the
// requests made while a scan runs wait for the next one, which looks for
// all of them.
type holderScans struct {
	mu      sync.Mutex
	next    *holderScan // the scan that requests join, not started; nil when none has
	running bool        // runScans is running
}

// holderScan is one scan of /proc/*/fd for the holders of the sockets in
// want. Once done is closed, want and err are the answer and no longer
// change.
type holderScan struct {
	want map[uint32][]int32 // socket inode -> the pids holding it
	err  error
	done chan struct{}
}

// runScans runs the scans requested until none is waiting.
func (a *Attestor) runScans() {
	s := &a.scans
	for {
		s.mu.Lock()
		sc := s.next
		s.next = nil
		if sc == nil {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if hook := a.testHookScan; hook != nil {
			hook(len(sc.want))
		}
		if a.bpf != nil {
			sc.err = a.bpf.lookup(sc.want)
		} else {
			sc.err = a.scanHolders(sc.want)
		}
		a.scanned.Add(1)
		close(sc.done)
	}
}

// scanHolders fills want, for each socket inode in it, with the pids of the
// processes that hold it, in the order /proc lists them. The processes are
// shared among scanWorkers goroutines, each taking the next process not
// yet taken: a connection waits for the scan, and a CPU left idle by the
// others cuts the wait.
func (a *Attestor) scanHolders(want map[uint32][]int32) error {
	procfd, err := sys.Open(a.procRoot, sys.O_RDONLY|sys.O_DIRECTORY|sys.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix: open %s: %w", a.procRoot, err)
	}
	defer sys.Close(procfd)
	var procs []procEntry
	dents := make([]byte, 16<<10)
	for {
		n, err := getdents(procfd, dents)
		if err != nil {
			return fmt.Errorf("unix: read %s: %w", a.procRoot, err)
		}
		if n == 0 {
			break
		}
		for buf := dents[:n]; len(buf) > 0; {
			name, rest, ok := nextDirent(buf)
			if !ok {
				return fmt.Errorf("unix: read %s: malformed directory entry", a.procRoot)
			}
			buf = rest
			if pid, ok := parsePid(name); ok {
				procs = append(procs, procEntry{pid: pid, fdPath: string(name) + "/fd"})
			}
		}
	}

	var (
		next   atomic.Int64 // the index of the next process to read
		failed atomic.Bool  // a worker met an error: the others stop
		wg     sync.WaitGroup
	)
	for range min(scanWorkers(), len(procs)) {
		wg.Go(func() {
			s := fdScan{procfd: procfd, want: want, dents: make([]byte, 8<<10)}
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(procs) {
					return
				}
				p := &procs[i]
				if p.held, p.err = s.collect(p.fdPath); p.err != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	for i := range procs {
		p := &procs[i]
		if p.err != nil {
			return fmt.Errorf("unix: pid %d: %w", p.pid, p.err)
		}
		for _, ino := range p.held {
			want[ino] = append(want[ino], p.pid)
		}
	}
	return nil
}

// scanWorkers is the number of goroutines that share a scan of /proc.
func scanWorkers() int {
	return min(runtime.GOMAXPROCS(0), 4)
}

// procEntry is one process of a scan of /proc/*/fd and what was found in
// its open files.
type procEntry struct {
	pid    int32
	fdPath string   // "PID/fd", under /proc
	held   []uint32 // the wanted sockets it holds
	err    error
}

// fdScan holds one scanning goroutine's buffers; want is only read.
type fdScan struct {
	procfd int
	want   map[uint32][]int32
	dents  []byte // of /proc/PID/fd
	link   [64]byte
}

// collect returns the wanted sockets that the process of /proc/PID/fd
// (fdPath, under procfd) has among its open files; a process that is gone
// holds nothing.
func (s *fdScan) collect(fdPath string) (held []uint32, err error) {
	fdDir, err := sys.Openat(s.procfd, fdPath, sys.O_RDONLY|sys.O_DIRECTORY|sys.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, sys.ENOENT), errors.Is(err, sys.ESRCH):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("open fd directory: %w", err)
	}
	defer sys.Close(fdDir)
	for {
		n, err := getdents(fdDir, s.dents)
		switch {
		case errors.Is(err, sys.ENOENT), errors.Is(err, sys.ESRCH):
			return nil, nil // exited while listed
		case err != nil:
			return nil, fmt.Errorf("read fd directory: %w", err)
		case n == 0:
			return held, nil
		}
		for buf := s.dents[:n]; len(buf) > 0; {
			name, rest, ok := nextDirent(buf)
			if !ok {
				return nil, errors.New("read fd directory: malformed directory entry")
			}
			buf = rest
			if len(name) == 0 || name[0] == '.' {
				continue
			}
			m, err := sys.Readlinkat(fdDir, string(name), s.link[:])
			if err != nil {
				continue // closed meanwhile
			}
			ino, ok := socketLinkInode(s.link[:m])
			if _, wanted := s.want[ino]; !ok || !wanted || slices.Contains(held, ino) {
				continue // not looked for, or already found under another fd
			}
			if held = append(held, ino); len(held) == len(s.want) {
				return held, nil // it holds every socket looked for
			}
		}
	}
}

// socketLinkInode returns the inode of a descriptor's link "socket:[INODE]".
func socketLinkInode(link []byte) (uint32, bool) {
	rest, ok := bytes.CutPrefix(link, []byte("socket:["))
	if !ok || len(rest) < 2 || rest[len(rest)-1] != ']' {
		return 0, false
	}
	v, err := parseUint(rest[:len(rest)-1])
	if err != nil || v > uint64(^uint32(0)) {
		return 0, false
	}
	return uint32(v), true
}

// getdents reads directory entries, retrying on EINTR.
func getdents(fd int, buf []byte) (int, error) {
	for {
		n, err := sys.Getdents(fd, buf)
		if errors.Is(err, sys.EINTR) {
			continue
		}
		return n, err
	}
}

// nextDirent splits the first linux_dirent64 off buf and returns its name.
func nextDirent(buf []byte) (name, rest []byte, ok bool) {
	const nameOff = 19 // d_ino, d_off, d_reclen, d_type
	if len(buf) < nameOff {
		return nil, nil, false
	}
	reclen := int(binary.NativeEndian.Uint16(buf[16:]))
	if reclen <= nameOff || reclen > len(buf) {
		return nil, nil, false
	}
	name = buf[nameOff:reclen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return name, buf[reclen:], true
}

// parsePid parses a /proc entry name that is a pid.
func parsePid(b []byte) (int32, bool) {
	if len(b) == 0 || len(b) > 10 || b[0] == '0' {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if v > 1<<31-1 {
		return 0, false
	}
	return int32(v), true
}

var errStatusFormat = errors.New("unix: malformed /proc/PID/status")

// parseStatusIDs returns the real, effective, saved and filesystem uids
// and gids from the Uid: and Gid: lines of /proc/PID/status.
func parseStatusIDs(b []byte) (uids, gids [4]uint32, err error) {
	var haveUID, haveGID bool
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		var dst *[4]uint32
		switch {
		case bytes.HasPrefix(line, []byte("Uid:")):
			dst, haveUID = &uids, true
		case bytes.HasPrefix(line, []byte("Gid:")):
			dst, haveGID = &gids, true
		default:
			continue
		}
		fields := bytes.Fields(line[4:])
		if len(fields) != 4 {
			return uids, gids, errStatusFormat
		}
		for i, f := range fields {
			v, err := parseUint(f)
			if err != nil || v > uint64(^uint32(0)) {
				return uids, gids, errStatusFormat
			}
			dst[i] = uint32(v)
		}
	}
	if !haveUID || !haveGID {
		return uids, gids, errStatusFormat
	}
	return uids, gids, nil
}
