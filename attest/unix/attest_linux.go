//go:build linux

package unix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/credbroker/credbroker/attest"
	sys "golang.org/x/sys/unix"
)

// Caller-safe reasons of attestation failures.
const (
	reasonGone      = "peer process exited or was replaced during attestation"
	reasonCred      = "cannot read the peer's credentials from the kernel"
	reasonPidNS     = "peer process is not visible in the broker's pid namespace"
	reasonExe       = "cannot read the peer's executable"
	reasonCgroup    = "cannot read the peer's cgroup"
	reasonFiles     = "cannot read the peer's open files"
	reasonProc      = "cannot read the peer's process information"
	reasonCancelled = "attestation cancelled"
	reasonSender    = "the request was not written by the process that opened the connection"
	reasonExec      = "the peer process has executed another program since it connected"
	reasonListener  = "the connection was not accepted through the attestor's listener"
)

// Attestor attests the peers of Unix-domain socket connections from kernel
// facts. It is safe for concurrent use.
type Attestor struct {
	procRoot string
	hooks    Hooks
	log      *slog.Logger
	cache    *hashCache
	bufs     sync.Pool // of *[]byte, for /proc reads

	// noPidfd is set when SO_PEERPIDFD is disabled or the kernel lacks it;
	// Attest then uses the start-time fallback.
	noPidfd atomic.Bool
	// maxExe bounds the size of an executable that is hashed; hashing
	// admits hashSlots executables at a time.
	maxExe    int64
	hashSlots chan struct{}
	// hashed counts executables read and hashed (cache misses).
	hashed atomic.Uint64
	// scans shares searches for the holders of TCP sockets, made with
	// the BPF iterator bpf when it is not nil and in /proc/*/fd otherwise
	// (scanHolders); scanned counts them; testHookScan, when set, is
	// called before each with the number of sockets it looks for.
	scans        holderScans
	scanned      atomic.Uint64
	testHookScan func(sockets int)
	bpf          *bpfHolders
	// noPidfdInfo is set once the kernel refuses PIDFD_GET_INFO; the ids
	// of a held TCP peer are then read from /proc/PID/status.
	noPidfdInfo atomic.Bool
}

// New validates cfg, probes the kernel for SO_PEERPIDFD (and, when that is
// unavailable or disabled, for unix sock_diag) and returns an Attestor. It
// fails when the kernel offers neither, since peers could then not be
// attested without the pid-reuse race.
func New(cfg Config) (*Attestor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Attestor{
		procRoot:  cfg.ProcRoot,
		hooks:     cfg.Hooks,
		log:       cfg.Logger,
		cache:     newHashCache(cfg.HashCacheSize),
		maxExe:    cfg.MaxExeBytes,
		hashSlots: make(chan struct{}, cfg.HashConcurrency),
	}
	a.bufs.New = func() any { b := make([]byte, 4096); return &b }

	// SO_PEERCRED gives pids in the broker's pid namespace; /proc/PID must
	// name the same processes.
	self, err := os.Readlink(cfg.ProcRoot + "/self")
	if err != nil {
		return nil, fmt.Errorf("unix: procfs not readable at %s: %w", cfg.ProcRoot, err)
	}
	if self != strconv.Itoa(os.Getpid()) {
		return nil, fmt.Errorf("unix: procfs at %s belongs to another pid namespace (self is %q, pid is %d)", cfg.ProcRoot, self, os.Getpid())
	}
	usePidfd := !cfg.DisablePidfd
	if usePidfd {
		ok, err := probePidfd()
		if err != nil {
			return nil, fmt.Errorf("unix: probing SO_PEERPIDFD: %w", err)
		}
		usePidfd = ok
	}
	mode := "pidfd"
	if !usePidfd {
		mode = "start-time"
		if err := probeSockDiag(); err != nil {
			return nil, fmt.Errorf("unix: the kernel offers neither SO_PEERPIDFD nor unix sock_diag, so peers cannot be attested safely: %w", err)
		}
	}
	a.noPidfd.Store(!usePidfd)
	lookup := TCPLookupProc
	if cfg.TCPLookup != TCPLookupProc {
		b, err := sharedBPFHolders()
		switch {
		case err == nil:
			a.bpf, lookup = b, TCPLookupBPF
		case cfg.TCPLookup == TCPLookupBPF:
			return nil, fmt.Errorf("unix: tcp_lookup %s: %w", TCPLookupBPF, err)
		default:
			a.log.Info("unix attestor: TCP callers are found by reading /proc/*/fd: the BPF iterator is not available", logKeyError, err)
		}
	}
	a.log.Info("unix attestor ready", logKeyMode, mode, logKeyTCPLookup, lookup)
	return a, nil
}

// ProbeBPF reports why TCP callers' processes cannot be found with the BPF
// iterator here (Config.TCPLookup), or nil when they can. It loads the
// iterator, once per process, as New does.
func ProbeBPF() error {
	_, err := sharedBPFHolders()
	return err
}

// sharedBPFHolders loads the BPF iterator once per process: every Attestor
// may use it, one lookup at a time.
var sharedBPFHolders = sync.OnceValues(func() (*bpfHolders, error) { return loadBPFHolders() })

// fail returns an attestation failure with a caller-safe reason and internal
// detail.
func fail(reason string, err error) *attest.Error {
	return &attest.Error{Method: attest.MethodUnix, Reason: reason, Err: err}
}

// peer holds what was taken from the connection's socket.
type peer struct {
	pid      int32
	uid, gid uint32
	pidfd    int    // -1 unless the pidfd path is used
	sockIno  uint64 // inode of our end, for the fallback
}

// Attest returns the identity of the process that wrote the request read
// so far from conn, which must come from a Listener, or be a TCP loopback
// connection (attested by AttestTCP, from the kernel's socket table, or,
// from ListenTCP, through the process found at its first attestation).
// Its claims come only
// from the kernel: the writer's credentials attached to each read
// (SCM_CREDENTIALS), SO_PEERCRED, /proc/PID/exe and
// /proc/PID/cgroup. It refuses a connection any byte of which was written
// by a process other than the one that connected, and one whose connecting
// process has executed another program since the connection was accepted.
// uid and gid are the writer's real ids; before any byte is read, those
// the kernel recorded at connect time.
//
// A failure is an *attest.Error, so errors.Is(err, attest.ErrFailed) holds;
// a peer that exited, or whose pid was taken over by another process,
// before the reads were confirmed is refused. With a failure, the returned
// Identity holds the uid, gid and pid the kernel reported, when known, for
// the record; it attests nothing.
func (a *Attestor) Attest(ctx context.Context, conn net.Conn) (attest.Identity, error) {
	switch tc := conn.(type) {
	case *TCPConn:
		return a.attestTCPConn(ctx, tc)
	case *net.TCPConn:
		return a.AttestTCP(ctx, conn)
	}
	c, ok := conn.(*Conn)
	if !ok || c == nil {
		return attest.Identity{}, fail(reasonListener, fmt.Errorf("unix: connection of type %T", conn))
	}
	if err := ctx.Err(); err != nil {
		return attest.Identity{}, fail(reasonCancelled, err)
	}
	if c.proc != nil {
		return a.attestHeld(ctx, c)
	}
	p, err := a.takePeer(c.UnixConn)
	if err != nil {
		return a.refuse(p, err)
	}
	s := c.senderState()
	if s.seen {
		p.uid, p.gid = s.uid, s.gid
	}
	switch {
	case c.origin.err != nil:
		err = c.origin.err
	case s.foreign != nil:
		err = fail(reasonSender, s.foreign)
	}
	if err != nil {
		if p.pidfd >= 0 {
			sys.Close(p.pidfd)
		}
		return a.refuse(p, err)
	}
	var id attest.Identity
	var f procFacts
	if p.pidfd >= 0 {
		defer sys.Close(p.pidfd)
		id, err = a.attestPidfd(ctx, &p, &f)
	} else {
		id, err = a.attestStartTime(ctx, &p, &f)
	}
	if err == nil && f.start != c.origin.start {
		err = fail(reasonGone, fmt.Errorf("unix: pid %d started at %d, the connecting process at %d", p.pid, f.start, c.origin.start))
	}
	if err == nil && f.exeID != c.origin.exe {
		err = fail(reasonExec, fmt.Errorf("unix: pid %d: executable changed from %d:%d to %d:%d", p.pid, c.origin.exe.dev, c.origin.exe.ino, f.exeID.dev, f.exeID.ino))
	}
	if err != nil {
		return a.refuse(p, err)
	}
	return id, nil
}

// attestHeld attests a connection whose process is held through the
// handles taken at accept: the facts that cannot change while that process
// holds the connection (its pid, its credentials at connect time, the
// process itself) are not read again, and what can change (its executable,
// its cgroup, whether it is still alive) is read through those handles.
func (a *Attestor) attestHeld(ctx context.Context, c *Conn) (attest.Identity, error) {
	h := c.proc
	h.mu.RLock()
	defer h.mu.RUnlock()
	p := peer{pid: c.origin.pid, uid: h.uid, gid: h.gid, pidfd: -1}
	if h.released {
		return a.refuse(p, fail(reasonCred, errors.New("unix: connection closed")))
	}
	s := c.senderState()
	if s.seen {
		p.uid, p.gid = s.uid, s.gid
	}
	if s.foreign != nil {
		return a.refuse(p, fail(reasonSender, s.foreign))
	}
	if hook := a.hooks.AfterPeerCred; hook != nil {
		hook(p.pid)
	}
	var f procFacts
	err := a.readFacts(ctx, h.dirfd, h.cgroupfd, &f)
	// Confirm even when a read failed: a gone peer is reported as such.
	if err := pidfdAlive(h.pidfd); err != nil {
		return a.refuse(p, fail(reasonGone, err))
	}
	if err == nil && f.exeID != c.origin.exe {
		err = fail(reasonExec, fmt.Errorf("unix: pid %d: executable changed from %d:%d to %d:%d", p.pid, c.origin.exe.dev, c.origin.exe.ino, f.exeID.dev, f.exeID.ino))
	}
	if err != nil {
		return a.refuse(p, err)
	}
	return a.identity(&p, &f), nil
}

// refuse logs a failure at debug level (the caller logs and audits it too)
// and returns it, with the peer's kernel-reported ids when known.
func (a *Attestor) refuse(p peer, err error) (attest.Identity, error) {
	if a.log.Enabled(context.Background(), slog.LevelDebug) {
		var ae *attest.Error
		reason := ""
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		a.log.Debug("unix attestation refused", logKeyPID, p.pid, logKeyReason, reason, logKeyError, err)
	}
	if p.pid <= 0 {
		return attest.Identity{}, err
	}
	return attest.Identity{Method: attest.MethodUnix, Claims: map[string]any{
		ClaimUID: int64(p.uid), ClaimGID: int64(p.gid), ClaimPID: int64(p.pid),
	}}, err
}

// takePeer reads the peer credentials and, when available, the peer's pidfd
// from conn's socket, without duplicating the descriptor.
func (a *Attestor) takePeer(conn *net.UnixConn) (peer, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return peer{}, fail(reasonCred, fmt.Errorf("unix: raw connection: %w", err))
	}
	usePidfd := !a.noPidfd.Load()
	p := peer{pidfd: -1}
	var cred *sys.Ucred
	var credErr, pidfdErr, statErr error
	ctrlErr := rc.Control(func(fd uintptr) {
		cred, credErr = sys.GetsockoptUcred(int(fd), sys.SOL_SOCKET, sys.SO_PEERCRED)
		if credErr != nil {
			return
		}
		if usePidfd {
			pidfd, err := sys.GetsockoptInt(int(fd), sys.SOL_SOCKET, sys.SO_PEERPIDFD)
			if err == nil {
				p.pidfd = pidfd
				return
			}
			pidfdErr = err
			if !errors.Is(err, sys.ENOPROTOOPT) {
				return
			}
		}
		var st sys.Stat_t
		statErr = sys.Fstat(int(fd), &st)
		p.sockIno = st.Ino
	})
	switch {
	case ctrlErr != nil:
		return peer{}, fail(reasonCred, fmt.Errorf("unix: raw connection: %w", ctrlErr))
	case credErr != nil:
		return peer{}, fail(reasonCred, fmt.Errorf("unix: SO_PEERCRED: %w", credErr))
	}
	p.pid, p.uid, p.gid = cred.Pid, cred.Uid, cred.Gid
	if pidfdErr != nil {
		switch {
		case errors.Is(pidfdErr, sys.ENOPROTOOPT):
			// A kernel without SO_PEERPIDFD after all: remember it.
			if !a.noPidfd.Swap(true) {
				a.log.Warn("unix attestor: kernel lacks SO_PEERPIDFD, using the start-time fallback", logKeyError, pidfdErr)
			}
		case errors.Is(pidfdErr, sys.ESRCH), errors.Is(pidfdErr, sys.EINVAL):
			// Kernels 6.5 to 6.15 refuse a pidfd for a reaped peer with EINVAL.
			return p, fail(reasonGone, fmt.Errorf("unix: SO_PEERPIDFD: %w", pidfdErr))
		default:
			return p, fail(reasonCred, fmt.Errorf("unix: SO_PEERPIDFD: %w", pidfdErr))
		}
	}
	if statErr != nil {
		return p, fail(reasonCred, fmt.Errorf("unix: fstat socket: %w", statErr))
	}
	if p.pid <= 0 {
		if p.pidfd >= 0 {
			sys.Close(p.pidfd)
			p.pidfd = -1
		}
		return p, fail(reasonPidNS, fmt.Errorf("unix: SO_PEERCRED pid %d", p.pid))
	}
	return p, nil
}

// attestPidfd reads /proc/PID and then confirms through the pidfd that the
// process that connected is still there, hence was the one read.
func (a *Attestor) attestPidfd(ctx context.Context, p *peer, facts *procFacts) (attest.Identity, error) {
	if h := a.hooks.AfterPeerCred; h != nil {
		h(p.pid)
	}
	dirfd, err := a.openProcDir(p.pid)
	if err == nil {
		defer sys.Close(dirfd)
		err = a.readFacts(ctx, dirfd, -1, facts)
	} else {
		err = fail(reasonProc, err)
	}
	// Confirm even when a read failed: a gone peer is reported as such.
	if err := pidfdAlive(p.pidfd); err != nil {
		return attest.Identity{}, fail(reasonGone, err)
	}
	if err != nil {
		return attest.Identity{}, err
	}
	return a.identity(p, facts), nil
}

// pidfdAlive reports whether the process behind pidfd still exists. A null
// signal reaches a live process or a zombie, which still holds its pid;
// EPERM, from lacking the right to signal it, also means it exists.
func pidfdAlive(pidfd int) error {
	err := sys.PidfdSendSignal(pidfd, 0, nil, 0)
	if err == nil || errors.Is(err, sys.EPERM) {
		return nil
	}
	return fmt.Errorf("unix: pidfd_send_signal: %w", err)
}

// attestStartTime is the fallback for kernels without SO_PEERPIDFD. The
// /proc/PID handle opened first is tied to one process; the start time read
// through it before and after, and the requirement that the process holds
// the connection's other end, tie that process to the connection.
func (a *Attestor) attestStartTime(ctx context.Context, p *peer, facts *procFacts) (attest.Identity, error) {
	peerIno, err := peerInode(p.sockIno)
	if err != nil {
		return attest.Identity{}, fail(reasonCred, err)
	}
	if peerIno == 0 {
		return attest.Identity{}, fail(reasonGone, errors.New("unix: peer closed its end of the connection"))
	}
	dirfd, err := a.openProcDir(p.pid)
	if err != nil {
		if errors.Is(err, sys.ENOENT) {
			return attest.Identity{}, fail(reasonGone, err)
		}
		return attest.Identity{}, fail(reasonProc, err)
	}
	defer sys.Close(dirfd)
	before, err := a.startTime(dirfd)
	if err != nil {
		if errors.Is(err, sys.ESRCH) || errors.Is(err, sys.ENOENT) {
			return attest.Identity{}, fail(reasonGone, err)
		}
		return attest.Identity{}, fail(reasonProc, err)
	}
	facts.start = before
	if h := a.hooks.AfterPeerCred; h != nil {
		h(p.pid)
	}
	readErr := a.readFacts(ctx, dirfd, -1, facts)
	var holds bool
	var holdsErr error
	if readErr == nil {
		holds, holdsErr = holdsSocket(dirfd, peerIno)
	}
	after, err := a.startTime(dirfd)
	switch {
	case err != nil:
		return attest.Identity{}, fail(reasonGone, err)
	case after != before:
		return attest.Identity{}, fail(reasonGone, fmt.Errorf("unix: start time of pid %d changed from %d to %d", p.pid, before, after))
	case readErr != nil:
		return attest.Identity{}, readErr
	case holdsErr != nil:
		return attest.Identity{}, fail(reasonFiles, holdsErr)
	case !holds:
		return attest.Identity{}, fail(reasonGone, fmt.Errorf("unix: pid %d does not hold the peer socket (inode %d)", p.pid, peerIno))
	}
	return a.identity(p, facts), nil
}

// procFacts are what is read from /proc/PID.
type procFacts struct {
	exe, exeSHA256      string
	exeID               exeID
	start               uint64 // start time, read in the fallback mode only
	podUID, containerID string
}

// identity builds the Identity of p.
func (a *Attestor) identity(p *peer, f *procFacts) attest.Identity {
	n := 5
	if f.podUID != "" {
		n++
	}
	if f.containerID != "" {
		n++
	}
	claims := make(map[string]any, n)
	claims[ClaimUID] = int64(p.uid)
	claims[ClaimGID] = int64(p.gid)
	claims[ClaimPID] = int64(p.pid)
	claims[ClaimExe] = f.exe
	claims[ClaimExeSHA256] = f.exeSHA256
	if f.podUID != "" {
		claims[ClaimPodUID] = f.podUID
	}
	if f.containerID != "" {
		claims[ClaimContainerID] = f.containerID
	}
	var sb [32]byte
	subject := strconv.AppendUint(append(sb[:0], "unix:uid:"...), uint64(p.uid), 10)
	return attest.Identity{Method: attest.MethodUnix, Subject: string(subject), Claims: claims}
}

// openProcDir opens /proc/PID. The handle stays bound to the process that
// had the pid at this moment: reads through it fail once that process is
// gone, whoever gets the pid next.
func (a *Attestor) openProcDir(pid int32) (int, error) {
	var pb [96]byte
	path := strconv.AppendInt(append(append(pb[:0], a.procRoot...), '/'), int64(pid), 10)
	fd, err := sys.Open(string(path), sys.O_RDONLY|sys.O_DIRECTORY|sys.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("unix: open %s: %w", path, err)
	}
	return fd, nil
}

// readFacts reads the executable, its hash and the cgroup of the process of
// dirfd; the cgroup through cgroupfd, the process's open cgroup file, when
// it is not -1.
func (a *Attestor) readFacts(ctx context.Context, dirfd, cgroupfd int, f *procFacts) error {
	bp := a.bufs.Get().(*[]byte)
	defer a.bufs.Put(bp)
	buf := *bp

	// Stat through the magic link: on a cache hit the file is not opened.
	var st sys.Stat_t
	if err := sys.Fstatat(dirfd, "exe", &st, 0); err != nil {
		return fail(reasonExe, fmt.Errorf("unix: stat exe: %w", err))
	}
	n, err := sys.Readlinkat(dirfd, "exe", buf)
	if err != nil {
		return fail(reasonExe, fmt.Errorf("unix: readlink exe: %w", err))
	}
	if n >= len(buf) {
		return fail(reasonExe, errors.New("unix: readlink exe: path too long"))
	}
	f.exe = string(buf[:n])
	f.exeID = exeID{dev: st.Dev, ino: st.Ino}
	if f.exeSHA256, err = a.exeHash(ctx, dirfd, &st); err != nil {
		return err
	}

	var b []byte
	if cgroupfd >= 0 {
		b, err = readFrom(cgroupfd, "cgroup", buf)
	} else {
		b, err = readProcFile(dirfd, "cgroup", buf)
	}
	if cap(b) > cap(buf) && cap(b) <= 64<<10 {
		*bp = b[:cap(b)]
	}
	if err != nil {
		return fail(reasonCgroup, err)
	}
	if f.podUID, f.containerID, err = parseCgroup(b); err != nil {
		return fail(reasonCgroup, err)
	}
	return nil
}

// startTime reads the start time of the process of dirfd.
func (a *Attestor) startTime(dirfd int) (uint64, error) {
	bp := a.bufs.Get().(*[]byte)
	defer a.bufs.Put(bp)
	b, err := readProcFile(dirfd, "stat", *bp)
	if err != nil {
		return 0, err
	}
	return parseStartTime(b)
}

// readProcFile reads dirfd/name into buf, growing it as needed.
func readProcFile(dirfd int, name string, buf []byte) ([]byte, error) {
	fd, err := sys.Openat(dirfd, name, sys.O_RDONLY|sys.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unix: open %s: %w", name, err)
	}
	defer sys.Close(fd)
	return readFrom(fd, name, buf)
}

// readFrom reads the /proc file open on fd, named name, from its start
// into buf, growing it as needed. The /proc files read here are produced
// whole by a read at offset 0, afresh each time, so an open one can be read
// again; a read that does not fill the buffer has returned the rest of the
// file and no further read is made.
func readFrom(fd int, name string, buf []byte) ([]byte, error) {
	buf = buf[:cap(buf)]
	n := 0
	for {
		if n == len(buf) {
			if n >= 1<<20 {
				return nil, fmt.Errorf("unix: read %s: larger than 1 MiB", name)
			}
			buf = append(buf, make([]byte, len(buf))...)
			buf = buf[:cap(buf)]
		}
		m, err := sys.Pread(fd, buf[n:], int64(n))
		if errors.Is(err, sys.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("unix: read %s: %w", name, err)
		}
		n += m
		if m == 0 || n < len(buf) {
			return buf[:n], nil
		}
	}
}

// exeHash returns the SHA-256 of the executable of the process of dirfd,
// whose identity st describes, from the cache when the identity is known. On
// a miss it opens the executable through /proc/PID/exe, which works even when
// its path has been replaced or deleted, and streams it into the hash.
func (a *Attestor) exeHash(ctx context.Context, dirfd int, st *sys.Stat_t) (string, error) {
	if sum, ok := a.cache.get(statID(st)); ok {
		return sum, nil
	}
	if st.Size > a.maxExe {
		return "", fail(a.tooLarge(), fmt.Errorf("unix: executable of %d bytes", st.Size))
	}
	select {
	case a.hashSlots <- struct{}{}:
		defer func() { <-a.hashSlots }()
	case <-ctx.Done():
		return "", fail(reasonCancelled, ctx.Err())
	}
	fd, err := sys.Openat(dirfd, "exe", sys.O_RDONLY|sys.O_CLOEXEC, 0)
	if err != nil {
		return "", fail(reasonExe, fmt.Errorf("unix: open exe: %w", err))
	}
	defer sys.Close(fd)
	if err := sys.Fstat(fd, st); err != nil {
		return "", fail(reasonExe, fmt.Errorf("unix: fstat exe: %w", err))
	}
	id := statID(st)
	if st.Size > a.maxExe {
		return "", fail(a.tooLarge(), fmt.Errorf("unix: executable of %d bytes", st.Size))
	}
	h := sha256.New()
	// Never read past the limit, even if the file grows meanwhile; growth
	// changes its identity and is refused below.
	r := io.LimitReader(&fdReader{ctx: ctx, fd: fd}, a.maxExe+1)
	if _, err := io.CopyBuffer(h, r, make([]byte, 64<<10)); err != nil {
		if ctx.Err() != nil {
			return "", fail(reasonCancelled, err)
		}
		return "", fail(reasonExe, fmt.Errorf("unix: hash exe: %w", err))
	}
	a.hashed.Add(1)
	if err := sys.Fstat(fd, st); err != nil {
		return "", fail(reasonExe, fmt.Errorf("unix: fstat exe: %w", err))
	}
	if statID(st) != id {
		return "", fail(reasonExe, errors.New("unix: executable changed while it was hashed"))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	a.cache.put(id, sum)
	return sum, nil
}

// tooLarge is the caller-safe reason for an executable over the limit.
func (a *Attestor) tooLarge() string {
	return fmt.Sprintf("the peer's executable is larger than the %d-byte hashing limit (attestors.unix.max_exe_bytes)", a.maxExe)
}

func statID(st *sys.Stat_t) fileID {
	return fileID{
		dev:   uint64(st.Dev),
		ino:   uint64(st.Ino),
		size:  int64(st.Size),
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
	}
}

// fdReader reads a file descriptor it does not own, stopping when ctx is
// done.
type fdReader struct {
	ctx context.Context
	fd  int
}

func (r *fdReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	for {
		n, err := sys.Read(r.fd, p)
		switch {
		case errors.Is(err, sys.EINTR):
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// probePidfd reports whether the kernel supports SO_PEERPIDFD, asking about
// a socket pair whose peer, this process, is certainly alive.
func probePidfd() (bool, error) {
	fds, err := sys.Socketpair(sys.AF_UNIX, sys.SOCK_STREAM|sys.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer sys.Close(fds[0])
	defer sys.Close(fds[1])
	pidfd, err := sys.GetsockoptInt(fds[0], sys.SOL_SOCKET, sys.SO_PEERPIDFD)
	switch {
	case err == nil:
		sys.Close(pidfd)
		return true, nil
	case errors.Is(err, sys.ENOPROTOOPT), errors.Is(err, sys.EINVAL):
		return false, nil
	}
	return false, err
}
