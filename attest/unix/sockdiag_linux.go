//go:build linux

package unix

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	sys "golang.org/x/sys/unix"
)

// From linux/inet_diag.h and linux/tcp_states.h.
const (
	sizeofInetDiagReqV2 = 56 // family, protocol, ext, pad, states, sockid
	sizeofInetDiagMsg   = 72 // family, state, timer, retrans, sockid, expires, rqueue, wqueue, uid, inode
	sizeofInetDiagReq   = sizeofNlMsghdr + sizeofInetDiagReqV2

	tcpEstablished = 1
	tcpSynSent     = 2
	tcpSynRecv     = 3
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpTimeWait    = 6
	tcpClose       = 7
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpListen      = 10
	tcpClosing     = 11
)

// errDiagNotFound is what the kernel says when no socket has the asked
// 4-tuple (ENOENT), or the one that has it is not the socket of the asked
// cookie (ESTALE).
var errDiagNotFound = errors.New("unix: inet_diag: no such socket")

// tuple is one end of a TCP connection as the kernel's socket table keys
// it: that end's own address first.
type tuple struct {
	src, dst netip.AddrPort
}

// family returns the address family to ask inet_diag with: AF_INET for
// IPv4 and IPv4-mapped addresses (the kernel finds an IPv6 socket carrying
// mapped addresses under them too), else AF_INET6.
func (t tuple) family() uint8 {
	if t.src.Addr().Unmap().Is4() && t.dst.Addr().Unmap().Is4() {
		return sys.AF_INET
	}
	return sys.AF_INET6
}

// diagSock is the kernel's answer about one TCP socket.
type diagSock struct {
	family uint8
	state  uint8
	t      tuple
	uid    uint32 // owner of the socket: the fsuid of the process that created it
	inode  uint32 // 0 once no file refers to it (closed, orphaned, TIME_WAIT)
	cookie uint64 // never reused while the system runs
}

// noCookie asks about whichever socket has the 4-tuple.
const noCookie = ^uint64(0)

// encodeInetDiagReq writes into req an exact-lookup SOCK_DIAG_BY_FAMILY
// request for the TCP socket whose own end is t.src and whose other end is
// t.dst; with a cookie other than noCookie the kernel answers ESTALE when
// that 4-tuple belongs to another socket.
func encodeInetDiagReq(req *[sizeofInetDiagReq]byte, seq uint32, t tuple, cookie uint64) {
	*req = [sizeofInetDiagReq]byte{}
	ne := binary.NativeEndian
	be := binary.BigEndian
	ne.PutUint32(req[0:], sizeofInetDiagReq)       // nlmsg_len
	ne.PutUint16(req[4:], sys.SOCK_DIAG_BY_FAMILY) // nlmsg_type
	ne.PutUint16(req[6:], sys.NLM_F_REQUEST)       // nlmsg_flags: exact lookup, no dump
	ne.PutUint32(req[8:], seq)                     // nlmsg_seq
	r := req[sizeofNlMsghdr:]
	fam := t.family()
	r[0] = fam                      // sdiag_family
	r[1] = sys.IPPROTO_TCP          // sdiag_protocol
	ne.PutUint32(r[4:], ^uint32(0)) // idiag_states: all
	id := r[8:]
	be.PutUint16(id[0:], t.src.Port()) // idiag_sport
	be.PutUint16(id[2:], t.dst.Port()) // idiag_dport
	putDiagAddr(id[4:20], fam, t.src.Addr())
	putDiagAddr(id[20:36], fam, t.dst.Addr())
	// idiag_if stays 0: any interface.
	ne.PutUint32(id[40:], uint32(cookie)) // idiag_cookie[0]
	ne.PutUint32(id[44:], uint32(cookie>>32))
}

// putDiagAddr writes a in the kernel's layout for family: four bytes for
// AF_INET, sixteen for AF_INET6.
func putDiagAddr(b []byte, family uint8, a netip.Addr) {
	if family == sys.AF_INET {
		v4 := a.Unmap().As4()
		copy(b, v4[:])
		return
	}
	v6 := a.As16()
	copy(b, v6[:])
}

// parseInetDiag parses the kernel's answer to an exact-lookup request with
// sequence number seq: one SOCK_DIAG_BY_FAMILY message, or an error.
// Addresses are returned unmapped, so an IPv6 socket carrying IPv4-mapped
// addresses reads like an IPv4 one.
func parseInetDiag(b []byte, seq uint32) (diagSock, error) {
	ne := binary.NativeEndian
	if len(b) < sizeofNlMsghdr {
		return diagSock{}, errors.New("unix: inet_diag: short answer")
	}
	l := int(ne.Uint32(b[0:]))
	if l < sizeofNlMsghdr || l > len(b) {
		return diagSock{}, errors.New("unix: inet_diag: malformed answer")
	}
	if got := ne.Uint32(b[8:]); got != seq {
		return diagSock{}, fmt.Errorf("unix: inet_diag: answer to request %d, asked %d", got, seq)
	}
	body := b[sizeofNlMsghdr:l]
	switch typ := ne.Uint16(b[4:]); typ {
	case sys.NLMSG_ERROR:
		if len(body) < 4 {
			return diagSock{}, errors.New("unix: inet_diag: malformed error")
		}
		errno := -int32(ne.Uint32(body))
		switch {
		case errno <= 0:
			return diagSock{}, errors.New("unix: inet_diag: acknowledgement without an answer")
		case sys.Errno(errno) == sys.ENOENT, sys.Errno(errno) == sys.ESTALE:
			return diagSock{}, errDiagNotFound
		}
		return diagSock{}, fmt.Errorf("unix: inet_diag: %w", sys.Errno(errno))
	case sys.SOCK_DIAG_BY_FAMILY:
	default:
		return diagSock{}, fmt.Errorf("unix: inet_diag: unexpected message type %d", typ)
	}
	if len(body) < sizeofInetDiagMsg {
		return diagSock{}, errors.New("unix: inet_diag: short message")
	}
	var s diagSock
	s.family, s.state = body[0], body[1]
	id := body[4:52]
	src, ok1 := diagAddr(id[4:20], s.family)
	dst, ok2 := diagAddr(id[20:36], s.family)
	if !ok1 || !ok2 {
		return diagSock{}, fmt.Errorf("unix: inet_diag: unexpected address family %d", s.family)
	}
	be := binary.BigEndian
	s.t = tuple{
		src: netip.AddrPortFrom(src, be.Uint16(id[0:])),
		dst: netip.AddrPortFrom(dst, be.Uint16(id[2:])),
	}
	s.cookie = uint64(ne.Uint32(id[40:])) | uint64(ne.Uint32(id[44:]))<<32
	s.uid = ne.Uint32(body[64:])
	s.inode = ne.Uint32(body[68:])
	return s, nil
}

// diagAddr reads an address of family from the kernel's 16-byte field.
func diagAddr(b []byte, family uint8) (netip.Addr, bool) {
	switch family {
	case sys.AF_INET:
		return netip.AddrFrom4([4]byte(b[:4])), true
	case sys.AF_INET6:
		return netip.AddrFrom16([16]byte(b[:16])).Unmap(), true
	}
	return netip.Addr{}, false
}

// sameTuple reports whether two tuples name the same addresses and ports,
// IPv4-mapped IPv6 addresses being equal to their IPv4 forms.
func sameTuple(a, b tuple) bool {
	return unmapAP(a.src) == unmapAP(b.src) && unmapAP(a.dst) == unmapAP(b.dst)
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// inetDiag is a NETLINK_SOCK_DIAG socket for exact TCP lookups; one per
// attestation, not safe for concurrent use.
type inetDiag struct {
	fd  int
	seq uint32
	req [sizeofInetDiagReq]byte
	buf [8192]byte
}

// openInetDiag opens a sock_diag socket in the calling thread's network
// namespace.
func openInetDiag() (*inetDiag, error) {
	fd, err := sys.Socket(sys.AF_NETLINK, sys.SOCK_DGRAM|sys.SOCK_CLOEXEC, sys.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("unix: inet_diag: %w", err)
	}
	// The kernel answers while handling the request; the timeout only
	// bounds a kernel that does not.
	tv := sys.Timeval{Sec: 5}
	if err := sys.SetsockoptTimeval(fd, sys.SOL_SOCKET, sys.SO_RCVTIMEO, &tv); err != nil {
		sys.Close(fd)
		return nil, fmt.Errorf("unix: inet_diag: %w", err)
	}
	return &inetDiag{fd: fd}, nil
}

func (d *inetDiag) close() { sys.Close(d.fd) }

// lookup asks the kernel about the TCP socket whose own end is t.src and
// whose other end is t.dst (and, unless cookie is noCookie, whose cookie is
// cookie). It returns errDiagNotFound when there is none: the kernel says
// so, or answers about another socket (a listener on t.src).
func (d *inetDiag) lookup(t tuple, cookie uint64) (diagSock, error) {
	d.seq++
	encodeInetDiagReq(&d.req, d.seq, t, cookie)
	if err := sys.Sendto(d.fd, d.req[:], 0, &sys.SockaddrNetlink{Family: sys.AF_NETLINK}); err != nil {
		return diagSock{}, fmt.Errorf("unix: inet_diag: send: %w", err)
	}
	for {
		n, _, err := sys.Recvfrom(d.fd, d.buf[:], 0)
		if errors.Is(err, sys.EINTR) {
			continue
		}
		if err != nil {
			return diagSock{}, fmt.Errorf("unix: inet_diag: receive: %w", err)
		}
		if n >= len(d.buf) {
			return diagSock{}, errors.New("unix: inet_diag: answer truncated")
		}
		s, err := parseInetDiag(d.buf[:n], d.seq)
		if err != nil {
			return diagSock{}, err
		}
		if !sameTuple(s.t, t) {
			// With no socket of that 4-tuple the kernel answers with a
			// listener on the local end, if there is one.
			return diagSock{}, fmt.Errorf("%w: the kernel answered about %v->%v (state %d), asked about %v->%v", errDiagNotFound, s.t.src, s.t.dst, s.state, t.src, t.dst)
		}
		if cookie != noCookie && s.cookie != cookie {
			return diagSock{}, errDiagNotFound
		}
		return s, nil
	}
}
