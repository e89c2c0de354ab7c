//go:build linux

package unix

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	sys "golang.org/x/sys/unix"
)

// From linux/unix_diag.h and linux/inet_diag.h.
const (
	udiagShowPeer     = 0x4
	unixDiagPeer      = 2
	sizeofNlMsghdr    = 16
	sizeofUnixDiagReq = 24
	sizeofUnixDiagMsg = 16
	diagNoCookie      = ^uint32(0)
)

// peerInode asks the kernel (unix sock_diag) for the inode of the other end
// of the Unix socket with inode ino. It returns 0 when that end has been
// closed or the socket has no peer.
func peerInode(ino uint64) (uint64, error) {
	if ino == 0 || ino > uint64(^uint32(0)) {
		return 0, fmt.Errorf("unix: sock_diag: socket inode %d out of range", ino)
	}
	s, err := sys.Socket(sys.AF_NETLINK, sys.SOCK_DGRAM|sys.SOCK_CLOEXEC, sys.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("unix: sock_diag: %w", err)
	}
	defer sys.Close(s)

	var req [sizeofNlMsghdr + sizeofUnixDiagReq]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))        // nlmsg_len
	ne.PutUint16(req[4:], sys.SOCK_DIAG_BY_FAMILY) // nlmsg_type
	ne.PutUint16(req[6:], sys.NLM_F_REQUEST)       // nlmsg_flags
	ne.PutUint32(req[8:], 1)                       // nlmsg_seq
	req[16] = sys.AF_UNIX                          // sdiag_family
	ne.PutUint32(req[20:], ^uint32(0))             // udiag_states: all
	ne.PutUint32(req[24:], uint32(ino))            // udiag_ino
	ne.PutUint32(req[28:], udiagShowPeer)          // udiag_show
	ne.PutUint32(req[32:], diagNoCookie)           // udiag_cookie
	ne.PutUint32(req[36:], diagNoCookie)
	if err := sys.Sendto(s, req[:], 0, &sys.SockaddrNetlink{Family: sys.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("unix: sock_diag: send: %w", err)
	}
	var resp [1024]byte
	for {
		n, _, err := sys.Recvfrom(s, resp[:], 0)
		if errors.Is(err, sys.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("unix: sock_diag: receive: %w", err)
		}
		return parseDiagPeer(resp[:n], uint32(ino))
	}
}

// parseDiagPeer extracts UNIX_DIAG_PEER from a sock_diag answer about ino.
func parseDiagPeer(b []byte, ino uint32) (uint64, error) {
	ne := binary.NativeEndian
	if len(b) < sizeofNlMsghdr {
		return 0, errors.New("unix: sock_diag: short answer")
	}
	l := int(ne.Uint32(b[0:]))
	if l < sizeofNlMsghdr || l > len(b) {
		return 0, errors.New("unix: sock_diag: malformed answer")
	}
	body := b[sizeofNlMsghdr:l]
	switch typ := ne.Uint16(b[4:]); typ {
	case sys.NLMSG_ERROR:
		if len(body) < 4 {
			return 0, errors.New("unix: sock_diag: malformed error")
		}
		return 0, fmt.Errorf("unix: sock_diag: %w", sys.Errno(-int32(ne.Uint32(body))))
	case sys.SOCK_DIAG_BY_FAMILY:
	default:
		return 0, fmt.Errorf("unix: sock_diag: unexpected message type %d", typ)
	}
	if len(body) < sizeofUnixDiagMsg {
		return 0, errors.New("unix: sock_diag: short message")
	}
	if got := ne.Uint32(body[4:]); got != ino {
		return 0, fmt.Errorf("unix: sock_diag: answer about inode %d, asked about %d", got, ino)
	}
	for attrs := body[sizeofUnixDiagMsg:]; len(attrs) >= 4; {
		al := int(ne.Uint16(attrs[0:]))
		if al < 4 || al > len(attrs) {
			return 0, errors.New("unix: sock_diag: malformed attribute")
		}
		if ne.Uint16(attrs[2:]) == unixDiagPeer && al >= 8 {
			return uint64(ne.Uint32(attrs[4:])), nil
		}
		al = (al + 3) &^ 3
		if al >= len(attrs) {
			break
		}
		attrs = attrs[al:]
	}
	return 0, nil
}

// probeSockDiag checks that unix sock_diag answers, on a socket pair.
func probeSockDiag() error {
	fds, err := sys.Socketpair(sys.AF_UNIX, sys.SOCK_STREAM|sys.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer sys.Close(fds[0])
	defer sys.Close(fds[1])
	var a, b sys.Stat_t
	if err := sys.Fstat(fds[0], &a); err != nil {
		return err
	}
	if err := sys.Fstat(fds[1], &b); err != nil {
		return err
	}
	peer, err := peerInode(uint64(a.Ino))
	if err != nil {
		return err
	}
	if peer != uint64(b.Ino) {
		return fmt.Errorf("unix: sock_diag: peer inode %d, want %d", peer, b.Ino)
	}
	return nil
}

// holdsSocket reports whether the process of dirfd has the socket with inode
// ino among its open files.
func holdsSocket(dirfd int, ino uint64) (bool, error) {
	fd, err := socketFD(dirfd, ino)
	return fd != "", err
}

// socketFD returns the name of a descriptor by which the process of dirfd
// has the socket with inode ino open, or "" if it has none.
func socketFD(dirfd int, ino uint64) (string, error) {
	fdDir, err := sys.Openat(dirfd, "fd", sys.O_RDONLY|sys.O_DIRECTORY|sys.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("unix: open fd directory: %w", err)
	}
	defer sys.Close(fdDir)
	var wantBuf [32]byte
	want := append(strconv.AppendUint(append(wantBuf[:0], "socket:["...), ino, 10), ']')
	var link [64]byte
	dents := make([]byte, 8192)
	names := make([]string, 0, 64)
	for {
		n, err := sys.Getdents(fdDir, dents)
		if errors.Is(err, sys.EINTR) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("unix: read fd directory: %w", err)
		}
		if n <= 0 {
			return "", nil
		}
		for buf := dents[:n]; len(buf) > 0; {
			var consumed int
			consumed, _, names = sys.ParseDirent(buf, -1, names[:0])
			buf = buf[consumed:]
			for _, name := range names {
				m, err := sys.Readlinkat(fdDir, name, link[:])
				if err != nil {
					continue // closed meanwhile
				}
				if bytes.Equal(link[:m], want) {
					return name, nil
				}
			}
			if consumed == 0 {
				break
			}
		}
	}
}
