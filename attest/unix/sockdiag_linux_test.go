//go:build linux

package unix

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	sys "golang.org/x/sys/unix"
)

// diagAnswer builds the kernel's answer to an inet_diag exact lookup, as
// linux/inet_diag.h lays it out, followed by extra (attributes).
func diagAnswer(seq uint32, family, state uint8, t tuple, uid, inode uint32, cookie uint64, extra []byte) []byte {
	b := make([]byte, sizeofNlMsghdr+sizeofInetDiagMsg, sizeofNlMsghdr+sizeofInetDiagMsg+len(extra))
	b = append(b, extra...)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sys.SOCK_DIAG_BY_FAMILY)
	ne.PutUint32(b[8:], seq)
	m := b[sizeofNlMsghdr:]
	m[0], m[1] = family, state
	id := m[4:]
	binary.BigEndian.PutUint16(id[0:], t.src.Port())
	binary.BigEndian.PutUint16(id[2:], t.dst.Port())
	putDiagAddr(id[4:20], family, t.src.Addr())
	putDiagAddr(id[20:36], family, t.dst.Addr())
	ne.PutUint32(id[40:], uint32(cookie))
	ne.PutUint32(id[44:], uint32(cookie>>32))
	ne.PutUint32(m[64:], uid)
	ne.PutUint32(m[68:], inode)
	return b
}

// diagError builds a NLMSG_ERROR answer carrying errno.
func diagError(seq uint32, errno syscall.Errno) []byte {
	b := make([]byte, sizeofNlMsghdr+4+sizeofNlMsghdr)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sys.NLMSG_ERROR)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[16:], uint32(-int32(errno)))
	return b
}

var (
	v4Tuple = tuple{
		src: netip.MustParseAddrPort("127.0.0.1:40000"),
		dst: netip.MustParseAddrPort("127.0.0.1:8081"),
	}
	v6Tuple = tuple{
		src: netip.MustParseAddrPort("[::1]:40001"),
		dst: netip.MustParseAddrPort("[::1]:8081"),
	}
)

type diagCase struct {
	name    string
	in      []byte
	want    diagSock
	wantErr string // substring; "notfound" for errDiagNotFound
}

func diagCases() []diagCase {
	ok4 := diagAnswer(7, sys.AF_INET, tcpEstablished, v4Tuple, 1000, 4242, 0x0102030405060708, nil)
	ok6 := diagAnswer(7, sys.AF_INET6, tcpFinWait2, v6Tuple, 65534, 99, 5, []byte{8, 0, 8, 0, 1, 2, 3, 4})
	mapped := diagAnswer(7, sys.AF_INET6, tcpEstablished, tuple{
		src: netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000"),
		dst: netip.MustParseAddrPort("[::ffff:127.0.0.1]:8081"),
	}, 0, 1, 1, nil)
	badFamily := diagAnswer(7, sys.AF_INET, tcpEstablished, v4Tuple, 0, 1, 1, nil)
	badFamily[sizeofNlMsghdr] = sys.AF_UNIX
	wrongType := append([]byte(nil), ok4...)
	binary.NativeEndian.PutUint16(wrongType[4:], sys.NLMSG_DONE)
	overlong := append([]byte(nil), ok4...)
	binary.NativeEndian.PutUint32(overlong[0:], uint32(len(ok4)+1))
	undersized := append([]byte(nil), ok4...)
	binary.NativeEndian.PutUint32(undersized[0:], 8)
	shortBody := append([]byte(nil), ok4[:sizeofNlMsghdr+40]...)
	binary.NativeEndian.PutUint32(shortBody[0:], uint32(len(shortBody)))
	ack := diagError(7, 0)
	shortErr := diagError(7, sys.EPERM)[:sizeofNlMsghdr+2]
	binary.NativeEndian.PutUint32(shortErr[0:], uint32(len(shortErr)))

	return []diagCase{
		{name: "ipv4", in: ok4, want: diagSock{family: sys.AF_INET, state: tcpEstablished, t: v4Tuple, uid: 1000, inode: 4242, cookie: 0x0102030405060708}},
		{name: "ipv6 with attributes", in: ok6, want: diagSock{family: sys.AF_INET6, state: tcpFinWait2, t: v6Tuple, uid: 65534, inode: 99, cookie: 5}},
		{name: "ipv4-mapped", in: mapped, want: diagSock{family: sys.AF_INET6, state: tcpEstablished, t: v4Tuple, inode: 1, cookie: 1}},
		{name: "no such socket", in: diagError(7, sys.ENOENT), wantErr: "notfound"},
		{name: "other cookie", in: diagError(7, sys.ESTALE), wantErr: "notfound"},
		{name: "kernel error", in: diagError(7, sys.EPERM), wantErr: "operation not permitted"},
		{name: "acknowledgement", in: ack, wantErr: "acknowledgement"},
		{name: "short error", in: shortErr, wantErr: "malformed error"},
		{name: "empty", in: nil, wantErr: "short answer"},
		{name: "length beyond the data", in: overlong, wantErr: "malformed answer"},
		{name: "length below a header", in: undersized, wantErr: "malformed answer"},
		{name: "other request", in: diagAnswer(8, sys.AF_INET, tcpEstablished, v4Tuple, 0, 1, 1, nil), wantErr: "answer to request 8"},
		{name: "other message type", in: wrongType, wantErr: "unexpected message type"},
		{name: "short message", in: shortBody, wantErr: "short message"},
		{name: "other family", in: badFamily, wantErr: "unexpected address family"},
	}
}

func TestParseInetDiag(t *testing.T) {
	for _, tc := range diagCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseInetDiag(tc.in, 7)
			switch {
			case tc.wantErr == "notfound":
				if !errors.Is(err, errDiagNotFound) {
					t.Fatalf("error = %v, want errDiagNotFound", err)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, errDiagNotFound) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want:
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseInetDiag: any answer parses or fails without panicking, and a
// parsed one has addresses of its family.
func FuzzParseInetDiag(f *testing.F) {
	for _, tc := range diagCases() {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseInetDiag(b, 7)
		if err != nil {
			return
		}
		if !s.t.src.Addr().IsValid() || !s.t.dst.Addr().IsValid() {
			t.Fatalf("invalid address in %+v", s)
		}
		if s.family == sys.AF_INET && (!s.t.src.Addr().Is4() || !s.t.dst.Addr().Is4()) {
			t.Fatalf("AF_INET answer with %v -> %v", s.t.src, s.t.dst)
		}
		if s.family != sys.AF_INET && s.family != sys.AF_INET6 {
			t.Fatalf("family %d accepted", s.family)
		}
	})
}

func TestEncodeInetDiagReq(t *testing.T) {
	ne := binary.NativeEndian
	for _, tc := range []struct {
		name   string
		t      tuple
		family uint8
		src    []byte
	}{
		{"ipv4", v4Tuple, sys.AF_INET, []byte{127, 0, 0, 1}},
		{"ipv4-mapped", tuple{src: netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000"), dst: netip.MustParseAddrPort("[::ffff:127.0.0.1]:8081")}, sys.AF_INET, []byte{127, 0, 0, 1}},
		{"ipv6", v6Tuple, sys.AF_INET6, net.IPv6loopback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var req [sizeofInetDiagReq]byte
			encodeInetDiagReq(&req, 9, tc.t, 0x1122334455667788)
			if ne.Uint32(req[0:]) != sizeofInetDiagReq || ne.Uint16(req[4:]) != sys.SOCK_DIAG_BY_FAMILY ||
				ne.Uint16(req[6:]) != sys.NLM_F_REQUEST || ne.Uint32(req[8:]) != 9 {
				t.Fatalf("header % x", req[:16])
			}
			r := req[sizeofNlMsghdr:]
			if r[0] != tc.family || r[1] != sys.IPPROTO_TCP || ne.Uint32(r[4:]) != ^uint32(0) {
				t.Fatalf("request % x", r[:8])
			}
			id := r[8:]
			if binary.BigEndian.Uint16(id[0:]) != tc.t.src.Port() || binary.BigEndian.Uint16(id[2:]) != tc.t.dst.Port() {
				t.Fatalf("ports % x", id[:4])
			}
			if string(id[4:4+len(tc.src)]) != string(tc.src) {
				t.Fatalf("source address % x, want % x", id[4:20], tc.src)
			}
			if ne.Uint32(id[40:]) != 0x55667788 || ne.Uint32(id[44:]) != 0x11223344 {
				t.Fatalf("cookie % x", id[40:48])
			}
		})
	}
}

// TestInetDiagLookup asks the kernel about both ends of a connection of
// the test process: inode and uid as fstat and the process say, and a
// lookup with another cookie finds nothing.
func TestInetDiagLookup(t *testing.T) {
	ln := listenTCP(t, "127.0.0.1:0")
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	d, err := openInetDiag()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	for _, c := range []net.Conn{client, server} {
		ino, state, err := tcpSocketState(c.(syscall.Conn))
		if err != nil {
			t.Fatal(err)
		}
		if state != tcpEstablished {
			t.Errorf("state %d", state)
		}
		local, _ := tcpAddrPort(c.LocalAddr())
		remote, _ := tcpAddrPort(c.RemoteAddr())
		s, err := d.lookup(tuple{src: local, dst: remote}, noCookie)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(s.inode) != ino || s.uid != uint32(os.Geteuid()) || s.state != tcpEstablished {
			t.Errorf("lookup %v: %+v, want inode %d uid %d", local, s, ino, os.Geteuid())
		}
		if again, err := d.lookup(tuple{src: local, dst: remote}, s.cookie); err != nil || again.inode != s.inode {
			t.Errorf("lookup with its cookie: %+v, %v", again, err)
		}
		if _, err := d.lookup(tuple{src: local, dst: remote}, s.cookie+1); !errors.Is(err, errDiagNotFound) {
			t.Errorf("lookup with another cookie: %v, want errDiagNotFound", err)
		}
	}
}

func statusCases() []struct {
	name       string
	in         string
	uids, gids [4]uint32
	ok         bool
} {
	return []struct {
		name       string
		in         string
		uids, gids [4]uint32
		ok         bool
	}{
		{"typical", "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t7\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nFDSize:\t64\n",
			[4]uint32{1000, 1000, 1000, 1000}, [4]uint32{100, 100, 100, 100}, true},
		{"setuid", "Uid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000", [4]uint32{1000, 0, 0, 0}, [4]uint32{1000, 1000, 1000, 1000}, true},
		{"largest id", "Uid:\t4294967295\t0\t0\t0\nGid:\t0\t0\t0\t0\n", [4]uint32{^uint32(0), 0, 0, 0}, [4]uint32{}, true},
		{"id too large", "Uid:\t4294967296\t0\t0\t0\nGid:\t0\t0\t0\t0\n", [4]uint32{}, [4]uint32{}, false},
		{"no gid", "Uid:\t0\t0\t0\t0\n", [4]uint32{}, [4]uint32{}, false},
		{"three fields", "Uid:\t0\t0\t0\nGid:\t0\t0\t0\t0\n", [4]uint32{}, [4]uint32{}, false},
		{"not a number", "Uid:\t0\t0\t-1\t0\nGid:\t0\t0\t0\t0\n", [4]uint32{}, [4]uint32{}, false},
		{"empty", "", [4]uint32{}, [4]uint32{}, false},
	}
}

func TestParseStatusIDs(t *testing.T) {
	for _, tc := range statusCases() {
		t.Run(tc.name, func(t *testing.T) {
			uids, gids, err := parseStatusIDs([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("error = %v, want ok %v", err, tc.ok)
			}
			if tc.ok && (uids != tc.uids || gids != tc.gids) {
				t.Fatalf("uids %v gids %v, want %v %v", uids, gids, tc.uids, tc.gids)
			}
		})
	}
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	uids, gids, err := parseStatusIDs(self)
	if err != nil || uids[0] != uint32(os.Getuid()) || uids[1] != uint32(os.Geteuid()) || gids[0] != uint32(os.Getgid()) {
		t.Fatalf("own status: %v %v %v", uids, gids, err)
	}
}

// FuzzParseStatusIDs: any status parses or fails without panicking.
func FuzzParseStatusIDs(f *testing.F) {
	for _, tc := range statusCases() {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		parseStatusIDs(b)
	})
}

// FuzzNextDirent: any directory buffer is split without panicking, and
// always advances.
func FuzzNextDirent(f *testing.F) {
	entry := func(name string) []byte {
		reclen := (19 + len(name) + 1 + 7) &^ 7
		b := make([]byte, reclen)
		binary.NativeEndian.PutUint16(b[16:], uint16(reclen))
		copy(b[19:], name)
		return b
	}
	f.Add(append(entry("1"), entry("self")...))
	f.Add(entry("4194304"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			name, rest, ok := nextDirent(b)
			if !ok {
				return
			}
			if len(rest) >= len(b) || len(name) > len(b) {
				t.Fatalf("no progress: %d of %d left", len(rest), len(b))
			}
			parsePid(name)
			b = rest
		}
	})
}
