//go:build linux

package unix

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	sys "golang.org/x/sys/unix"
)

// Environment of the TCP helper processes: the test binary re-executed
// with -test.run=^TestTCPHelperProcess$.
const (
	envTCPHelper    = "CREDBROKER_UNIX_TEST_TCP_HELPER"    // hold | reset | exit | fork | setuid | handoff | holdfd
	envTCPAddr      = "CREDBROKER_UNIX_TEST_TCP_ADDR"      // host:port to dial
	envTCPLocalPort = "CREDBROKER_UNIX_TEST_TCP_LPORT"     // source port to bind, with SO_REUSEADDR
	envTCPChildUID  = "CREDBROKER_UNIX_TEST_TCP_CHILD_UID" // fork: uid (and gid) of the child
	envTCPScenario  = "CREDBROKER_UNIX_TEST_TCP_SCENARIO"  // pidns: see TestAttestTCPPidNamespace
	envTCPLookup    = "CREDBROKER_UNIX_TEST_TCP_LOOKUP"    // pidns: Config.TCPLookup
)

// TestTCPHelperProcess is not a test: it is the body of the TCP helper
// processes the other tests start. Run directly, it does nothing.
func TestTCPHelperProcess(t *testing.T) {
	mode := os.Getenv(envTCPHelper)
	if mode == "" {
		return
	}
	if err := tcpHelper(mode); err != nil {
		fmt.Fprintln(os.Stderr, "tcp helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// tcpHelper connects to envTCPAddr and then:
//
//	hold:   holds the connection until the other end closes it;
//	reset:  waits for one byte, then resets the connection (SO_LINGER 0)
//	        and exits, freeing its 4-tuple at once;
//	exit:   exits at once (a graceful close);
//	fork:   starts a holdfd child (as envTCPChildUID when set) sharing the
//	        connection, prints the child's pid, and holds it too;
//	setuid: waits for one byte, then sets its uid and gid to 65534, prints
//	        a line and holds the connection;
//	handoff: waits for one byte, then starts a holdfd child as fork does,
//	        prints its pid and exits, leaving the connection to the child;
//	holdfd: (no connect) holds the connection passed as fd 3;
//	pidns:  (no connect) see tcpHelperPidns;
//	lookup: (no connect) see tcpHelperLookup.
func tcpHelper(mode string) error {
	switch mode {
	case "pidns":
		return tcpHelperPidns()
	case "lookup":
		return tcpHelperLookup()
	}
	if mode == "holdfd" {
		conn, err := net.FileConn(os.NewFile(3, "conn"))
		if err != nil {
			return err
		}
		return holdUntilEOF(conn)
	}
	addr := os.Getenv(envTCPAddr)
	d := net.Dialer{Timeout: helperTimeout}
	if p := os.Getenv(envTCPLocalPort); p != "" {
		port, err := strconv.Atoi(p)
		if err != nil {
			return err
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return err
		}
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(host), Port: port}
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = sys.SetsockoptInt(int(fd), sys.SOL_SOCKET, sys.SO_REUSEADDR, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	conn := c.(*net.TCPConn)
	switch mode {
	case "hold":
		return holdUntilEOF(conn)
	case "exit":
		return nil
	case "reset":
		conn.SetReadDeadline(time.Now().Add(helperTimeout))
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			return err
		}
		if err := conn.SetLinger(0); err != nil {
			return err
		}
		return conn.Close()
	case "fork":
		child, err := startHoldfd(conn)
		if err != nil {
			return err
		}
		fmt.Println(child.Process.Pid)
		herr := holdUntilEOF(conn)
		if err := child.Wait(); err != nil {
			return err
		}
		return herr
	case "setuid":
		conn.SetReadDeadline(time.Now().Add(helperTimeout))
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			return err
		}
		if err := syscall.Setgid(65534); err != nil {
			return err
		}
		if err := syscall.Setuid(65534); err != nil {
			return err
		}
		fmt.Println("nobody")
		return holdUntilEOF(conn)
	case "handoff":
		conn.SetReadDeadline(time.Now().Add(helperTimeout))
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			return err
		}
		child, err := startHoldfd(conn)
		if err != nil {
			return err
		}
		fmt.Println(child.Process.Pid)
		return nil // the child holds the connection on
	}
	return fmt.Errorf("unknown %s %q", envTCPHelper, mode)
}

// startHoldfd starts a holdfd helper (as envTCPChildUID when set) with a
// copy of conn.
func startHoldfd(conn *net.TCPConn) (*exec.Cmd, error) {
	f, err := conn.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := tcpHelperCommand("holdfd")
	cmd.ExtraFiles = []*os.File{f}
	if s := os.Getenv(envTCPChildUID); s != "" {
		uid, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

func holdUntilEOF(conn net.Conn) error {
	conn.SetReadDeadline(time.Now().Add(helperTimeout))
	_, err := io.Copy(io.Discard, conn)
	return err
}

// tcpHelperCommand re-executes the running binary as a TCP helper.
func tcpHelperCommand(mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestTCPHelperProcess$", "-test.timeout="+helperTimeout.String())
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), append([]string{envTCPHelper + "=" + mode, "GORACE=" + gorace}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// tcpPeer is a helper process connected to a test listener.
type tcpPeer struct {
	cmd  *exec.Cmd
	conn *net.TCPConn // the accepted end
	out  *bufio.Reader
}

// startTCPPeer starts exe (the test binary, or a copy other users can run)
// as a TCP helper in mode, connecting to ln as cred (nil: as the test
// runs), and accepts its connection. Cleanup closes the connection and
// waits for the helper, which exits on EOF.
func startTCPPeer(t testing.TB, ln *net.TCPListener, dial, exe, mode string, cred *syscall.Credential, env ...string) *tcpPeer {
	t.Helper()
	if dial == "" {
		dial = ln.Addr().String()
	}
	cmd := tcpHelperCommand(mode, append(env, envTCPAddr+"="+dial)...)
	cmd.Path, cmd.Args[0] = exe, exe
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &tcpPeer{cmd: cmd, out: bufio.NewReader(out)}
	ln.SetDeadline(time.Now().Add(helperTimeout))
	p.conn, err = ln.AcceptTCP()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.conn.Close()
		if cmd.ProcessState == nil {
			io.Copy(io.Discard, p.out)
			if err := cmd.Wait(); err != nil {
				t.Errorf("tcp helper %s: %v", mode, err)
			}
		}
	})
	return p
}

// listenTCP listens on addr ("127.0.0.1:0", "[::1]:0", "[::]:0").
func listenTCP(t testing.TB, addr string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// selfTCP connects this process to ln and returns the accepted end;
// cleanup closes both ends.
func selfTCP(t testing.TB, ln net.Listener) net.Conn {
	t.Helper()
	_, server := selfTCPPair(t, ln)
	return server
}

// selfTCPPair connects this process to ln and returns both ends; cleanup
// closes them.
func selfTCPPair(t testing.TB, ln net.Listener) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// checkTCPIdentity checks an identity from AttestTCP: a unix identity of
// the wanted process with the transport claim.
func checkTCPIdentity(t *testing.T, id attest.Identity, uid, gid, pid int, exe, sum string) {
	t.Helper()
	if got := id.Claims[ClaimTransport]; got != TransportTCP {
		t.Errorf("claim %s = %#v, want %q", ClaimTransport, got, TransportTCP)
	}
	id.Claims = maps.Clone(id.Claims)
	delete(id.Claims, ClaimTransport)
	checkIdentity(t, id, uid, gid, pid, exe, sum)
}

// wantReason checks that err is an attestation failure with reason.
func wantReason(t *testing.T, id attest.Identity, err error, reason string) {
	t.Helper()
	var ae *attest.Error
	if !errors.As(err, &ae) || !errors.Is(err, attest.ErrFailed) {
		t.Fatalf("AttestTCP = %+v, %v; want an *attest.Error (%s)", id, err, reason)
	}
	if ae.Reason != reason {
		t.Fatalf("reason = %q (%v), want %q", ae.Reason, err, reason)
	}
	if ae.Method != attest.MethodUnix {
		t.Errorf("method = %q", ae.Method)
	}
	if id.Subject != "" {
		t.Errorf("a refused attestation named subject %q", id.Subject)
	}
}

// tcpExe copies the test binary into a directory other users can reach.
func tcpExe(t *testing.T) (exe, sum string) {
	t.Helper()
	exe = filepath.Join(sharedDir(t), "tcppeer")
	copyExe(t, exe, nil)
	return exe, fileSHA256(t, exe)
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("this test needs root, to run peers as other uids and read their /proc entries")
	}
}

// Processes of two uids connect to one listener and are told apart, over
// IPv4, IPv6 and a dual-stack listener reached at an IPv4 address (an
// IPv6 socket with IPv4-mapped addresses).
func TestAttestTCPTwoUIDs(t *testing.T) { forEachLookup(t, testAttestTCPTwoUIDs) }

func testAttestTCPTwoUIDs(t *testing.T, lookup string) {
	needRoot(t)
	exe, sum := tcpExe(t)
	a := newAttestor(t, Config{TCPLookup: lookup})
	for _, tc := range []struct {
		name, listen, dial string
	}{
		{"ipv4", "127.0.0.1:0", ""},
		{"ipv6", "[::1]:0", ""},
		{"dual-stack", "[::]:0", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenTCP(t, tc.listen)
			dial := ""
			if tc.dial != "" {
				dial = net.JoinHostPort(tc.dial, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
			}
			for _, u := range []struct{ uid, gid uint32 }{{0, 0}, {65534, 65533}} {
				p := startTCPPeer(t, ln, dial, exe, "hold", &syscall.Credential{Uid: u.uid, Gid: u.gid})
				id, err := a.AttestTCP(context.Background(), p.conn)
				if err != nil {
					t.Fatalf("uid %d: %v", u.uid, err)
				}
				checkTCPIdentity(t, id, int(u.uid), int(u.gid), p.cmd.Process.Pid, exe, sum)
			}
		})
	}
}

// A client connects from port P and resets; then this process binds P and
// connects to the same listener, so the two connections have one 4-tuple.
// The second is attested as this process, and the first, attested again
// after its process died, is refused rather than named after the second.
// P is bound again as soon as the kernel lets go of the reset socket; if
// another socket took P meanwhile, the scenario starts over.
func TestAttestTCPPortReuse(t *testing.T) { forEachLookup(t, testAttestTCPPortReuse) }

func testAttestTCPPortReuse(t *testing.T, lookup string) {
	needRoot(t)
	exe, sum := tcpExe(t)
	self := selfExe(t)
	selfSum := fileSHA256(t, self)
	a := newAttestor(t, Config{TCPLookup: lookup})
	ln := listenTCP(t, "127.0.0.1:0")

	for attempt := 1; ; attempt++ {
		first := startTCPPeer(t, ln, "", exe, "reset", &syscall.Credential{Uid: 65534, Gid: 65534})
		id, err := a.AttestTCP(context.Background(), first.conn)
		if err != nil {
			t.Fatal(err)
		}
		checkTCPIdentity(t, id, 65534, 65534, first.cmd.Process.Pid, exe, sum)
		from := first.conn.RemoteAddr().(*net.TCPAddr)

		// Tell it to reset, and wait for the reset and its exit.
		if _, err := first.conn.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		first.conn.SetReadDeadline(time.Now().Add(helperTimeout))
		if _, err := io.Copy(io.Discard, first.conn); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading the first connection: %v, want ECONNRESET", err)
		}
		if err := first.cmd.Wait(); err != nil {
			t.Fatalf("first helper: %v", err)
		}

		d := net.Dialer{Timeout: helperTimeout, LocalAddr: from, Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = sys.SetsockoptInt(int(fd), sys.SOL_SOCKET, sys.SO_REUSEADDR, 1) }); err != nil {
				return err
			}
			return serr
		}}
		// The port is free once the kernel has let go of the reset socket,
		// which may be a moment after the helper's exit.
		var client net.Conn
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			client, err = d.Dial("tcp", ln.Addr().String())
			if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
				break
			}
		}
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 3 {
			t.Logf("attempt %d: port %d is still taken after the reset (%v); starting over", attempt, from.Port, err)
			continue
		}
		if err != nil {
			t.Fatalf("connecting from the first connection's address %v: %v", from, err)
		}
		defer client.Close()
		ln.SetDeadline(time.Now().Add(helperTimeout))
		second, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		if got := second.RemoteAddr().String(); got != first.conn.RemoteAddr().String() {
			t.Fatalf("second connection from %s, want the first's %s", got, first.conn.RemoteAddr())
		}
		id, err = a.AttestTCP(context.Background(), second)
		if err != nil {
			t.Fatal(err)
		}
		checkTCPIdentity(t, id, os.Getuid(), os.Getgid(), os.Getpid(), self, selfSum)

		id, err = a.AttestTCP(context.Background(), first.conn)
		wantReason(t, id, err, reasonGone)
		if errors.Is(err, ErrNoPeer) {
			t.Errorf("a peer that exited is reported as ErrNoPeer: %v", err)
		}
		if pid, ok := id.Claims[ClaimPID]; ok {
			t.Errorf("the stale attestation carries pid %v", pid)
		}
		return
	}
}

// TestAttestTCPHolders covers sockets held by two processes: alike (the
// lowest pid is named) and of different uids (refused).
func TestAttestTCPHolders(t *testing.T) { forEachLookup(t, testAttestTCPHolders) }

func testAttestTCPHolders(t *testing.T, lookup string) {
	needRoot(t)
	exe, sum := tcpExe(t)
	a := newAttestor(t, Config{TCPLookup: lookup})
	ln := listenTCP(t, "127.0.0.1:0")
	for _, tc := range []struct {
		name     string
		childUID string
		reason   string // "" for success
	}{
		{"same uid", "0", ""},
		{"different uids", "65534", reasonAmbiguous},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startTCPPeer(t, ln, "", exe, "fork", &syscall.Credential{Uid: 0, Gid: 0}, envTCPChildUID+"="+tc.childUID)
			line, err := p.out.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the child's pid: %v", err)
			}
			child, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				t.Fatal(err)
			}
			id, err := a.AttestTCP(context.Background(), p.conn)
			if tc.reason != "" {
				wantReason(t, id, err, tc.reason)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkTCPIdentity(t, id, 0, 0, min(child, p.cmd.Process.Pid), exe, sum)
		})
	}
}

// TestAttestTCPRefusals covers connections whose peer cannot be named.
func TestAttestTCPRefusals(t *testing.T) { forEachLookup(t, testAttestTCPRefusals) }

func testAttestTCPRefusals(t *testing.T, lookup string) {
	needRoot(t)
	exe, _ := tcpExe(t)
	ln := listenTCP(t, "127.0.0.1:0")

	t.Run("not tcp", func(t *testing.T) {
		a := newAttestor(t, Config{TCPLookup: lookup})
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		id, err := a.AttestTCP(context.Background(), c1)
		wantReason(t, id, err, reasonTCPConn)
	})
	t.Run("cancelled", func(t *testing.T) {
		a := newAttestor(t, Config{TCPLookup: lookup})
		p := startTCPPeer(t, ln, "", exe, "hold", nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		id, err := a.AttestTCP(ctx, p.conn)
		wantReason(t, id, err, reasonCancelled)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v does not wrap context.Canceled", err)
		}
	})
	t.Run("peer exited", func(t *testing.T) {
		a := newAttestor(t, Config{TCPLookup: lookup})
		p := startTCPPeer(t, ln, "", exe, "exit", nil)
		// EOF: the helper closed its end, so no file refers to it.
		p.conn.SetReadDeadline(time.Now().Add(helperTimeout))
		if _, err := io.Copy(io.Discard, p.conn); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		id, err := a.AttestTCP(context.Background(), p.conn)
		wantReason(t, id, err, reasonGone)
	})
	t.Run("peer killed during attestation", func(t *testing.T) {
		var p *tcpPeer
		a := newAttestor(t, Config{TCPLookup: lookup, Hooks: Hooks{AfterPeerCred: func(pid int32) {
			if int(pid) == p.cmd.Process.Pid {
				p.cmd.Process.Kill()
				p.cmd.Wait()
			}
		}}})
		p = startTCPPeer(t, ln, "", exe, "hold", nil)
		id, err := a.AttestTCP(context.Background(), p.conn)
		wantReason(t, id, err, reasonGone)
	})
	// A limitation, pinned: a socket in flight in a Unix socket's queue
	// (SCM_RIGHTS) is held by no process, like one held in another pid
	// namespace.
	t.Run("socket in flight", func(t *testing.T) {
		a := newAttestor(t, Config{TCPLookup: lookup})
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		f, err := client.(*net.TCPConn).File()
		client.Close()
		if err != nil {
			t.Fatal(err)
		}
		pair, err := sys.Socketpair(sys.AF_UNIX, sys.SOCK_STREAM|sys.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer sys.Close(pair[0])
		defer sys.Close(pair[1])
		err = sys.Sendmsg(pair[0], []byte{0}, sys.UnixRights(int(f.Fd())), nil, 0)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		id, err := a.AttestTCP(context.Background(), server)
		wantReason(t, id, err, reasonNoPeer)
		if !errors.Is(err, ErrNoPeer) {
			t.Errorf("error %v does not wrap ErrNoPeer", err)
		}
	})
	t.Run("not loopback", func(t *testing.T) {
		a := newAttestor(t, Config{TCPLookup: lookup})
		addr := nonLoopbackAddr(t)
		ln := listenTCP(t, net.JoinHostPort(addr.String(), "0"))
		id, err := a.AttestTCP(context.Background(), selfTCP(t, ln))
		wantReason(t, id, err, reasonNoPeer)
		if !errors.Is(err, ErrNoPeer) {
			t.Errorf("error %v does not wrap ErrNoPeer", err)
		}
	})
}

// tcpPidnsResult is what tcpHelperPidns reports.
type tcpPidnsResult struct {
	ChildPID       int    `json:"child_pid,omitempty"`
	ReplacementPID int    `json:"replacement_pid,omitempty"`
	IdentityPID    int64  `json:"identity_pid,omitempty"`
	Reason         string `json:"reason,omitempty"`
	NoPeer         bool   `json:"no_peer,omitempty"`
	Error          string `json:"error,omitempty"`
}

// TestAttestTCPPidNamespace runs the attestor as pid 1 of a new pid
// namespace (with its own /proc) sharing the network namespace, as a
// sidecar container does without a shared process namespace.
func TestAttestTCPPidNamespace(t *testing.T) { forEachLookup(t, testAttestTCPPidNamespace) }

func testAttestTCPPidNamespace(t *testing.T, lookup string) {
	needRoot(t)
	for _, tc := range []struct {
		scenario string
		check    func(t *testing.T, r tcpPidnsResult)
	}{
		// The client is the test process, outside the namespace.
		{"invisible", func(t *testing.T, r tcpPidnsResult) {
			if !r.NoPeer || r.Reason != reasonNoPeer {
				t.Fatalf("a client in a parent pid namespace: %+v, want ErrNoPeer", r)
			}
		}},
		// The client is a child inside the namespace.
		{"visible", func(t *testing.T, r tcpPidnsResult) {
			if r.Error != "" || r.IdentityPID != int64(r.ChildPID) {
				t.Fatalf("a client in the namespace: %+v, want pid %d", r, r.ChildPID)
			}
		}},
		// The child is killed once its pidfd is taken and its pid given to
		// another process before /proc is read.
		{"window", func(t *testing.T, r tcpPidnsResult) {
			if r.ReplacementPID != r.ChildPID {
				t.Fatalf("replacement has pid %d, the client had %d: the race was not set up", r.ReplacementPID, r.ChildPID)
			}
			if r.Reason != reasonGone || r.IdentityPID != 0 {
				t.Fatalf("a client replaced during attestation: %+v, want reason %q", r, reasonGone)
			}
		}},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			r, setup := runTCPPidns(t, tc.scenario, lookup)
			if setup != "" {
				t.Logf("the helper could not set the race up, running it again: %s", setup)
				if r, setup = runTCPPidns(t, tc.scenario, lookup); setup != "" {
					t.Fatalf("the helper could not set the race up twice: %s", setup)
				}
			}
			t.Logf("result: %+v", r)
			tc.check(t, r)
		})
	}
}

// runTCPPidns runs tcpHelperPidns for scenario; for "invisible" it dials
// the address the helper prints.
func runTCPPidns(t *testing.T, scenario, lookup string) (res tcpPidnsResult, setup string) {
	t.Helper()
	cmd := tcpHelperCommand("pidns", envTCPScenario+"="+scenario, envTCPLookup+"="+lookup)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	r := bufio.NewReader(out)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			cmd.Wait()
			if strings.Contains(stderr.String(), pidSetupFailed) {
				return res, strings.TrimSpace(stderr.String())
			}
			t.Fatalf("pid namespace helper printed no result: %v\nstderr:\n%s", err, stderr.String())
		}
		if addr, ok := strings.CutPrefix(strings.TrimSpace(line), "addr "); ok {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			continue
		}
		if js, ok := strings.CutPrefix(strings.TrimSpace(line), resultPrefix); ok {
			if err := json.Unmarshal([]byte(js), &res); err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, r)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("pid namespace helper: %v\nstderr:\n%s", err, stderr.String())
			}
			return res, ""
		}
	}
}

// tcpHelperPidns is pid 1 of a new pid namespace with a procfs of its own.
// It listens on TCP loopback, lets a client connect (the test process, or
// a child of its own), and attests the connection.
func tcpHelperPidns() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("pid namespace helper is pid %d, not 1", os.Getpid())
	}
	if err := sys.Mount("", "/", "", sys.MS_REC|sys.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := sys.Mount("proc", "/proc", "proc", sys.MS_NOSUID|sys.MS_NODEV|sys.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc: %w", err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return err
	}
	scenario := os.Getenv(envTCPScenario)
	var res tcpPidnsResult
	var child, replacement *exec.Cmd
	defer func() {
		for _, c := range []*exec.Cmd{child, replacement} {
			if c != nil && c.ProcessState == nil {
				c.Process.Kill()
				c.Wait()
			}
		}
	}()
	var hookErr error
	cfg := Config{TCPLookup: os.Getenv(envTCPLookup)}
	if scenario == "window" {
		cfg.Hooks.AfterPeerCred = func(pid int32) {
			if int(pid) != child.Process.Pid {
				return
			}
			child.Process.Kill()
			child.Wait()
			replacement, hookErr = takePID(child.Process.Pid, sleep)
		}
	}
	a, err := New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer ln.Close()
	switch scenario {
	case "invisible":
		fmt.Printf("addr %s\n", ln.Addr())
	case "visible", "window":
		child = tcpHelperCommand("hold", envTCPAddr+"="+ln.Addr().String())
		if err := child.Start(); err != nil {
			return err
		}
		res.ChildPID = child.Process.Pid
	default:
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	ln.SetDeadline(time.Now().Add(helperTimeout))
	conn, err := ln.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	id, err := a.AttestTCP(context.Background(), conn)
	if hookErr != nil {
		return hookErr
	}
	if replacement != nil {
		res.ReplacementPID = replacement.Process.Pid
	}
	res.IdentityPID, _ = id.Claims[ClaimPID].(int64)
	if err != nil {
		res.Error = err.Error()
		res.NoPeer = errors.Is(err, ErrNoPeer)
		var ae *attest.Error
		if errors.As(err, &ae) {
			res.Reason = ae.Reason
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Printf("%s%s\n", resultPrefix, b)
	return nil
}

// nonLoopbackAddr returns an address of an interface that is up and not
// loopback.
func nonLoopbackAddr(t *testing.T) net.IP {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
				return ipn.IP
			}
		}
	}
	t.Fatal("this test needs a network interface with a non-loopback address, to connect from one")
	return nil
}

// TestAttestTCPSelf attests a connection from the test process itself, and
// checks that attestations, successful or not, leave no descriptor open.
func TestAttestTCPSelf(t *testing.T) { forEachLookup(t, testAttestTCPSelf) }

func testAttestTCPSelf(t *testing.T, lookup string) {
	exe := selfExe(t)
	sum := fileSHA256(t, exe)
	a := newAttestor(t, Config{TCPLookup: lookup})
	ln := listenTCP(t, "[::1]:0")
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
	// Reset: the connection's peer is gone, and the 4-tuple free.
	gone, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	goneServer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer goneServer.Close()
	gone.(*net.TCPConn).SetLinger(0)
	gone.Close()
	goneServer.SetReadDeadline(time.Now().Add(helperTimeout))
	if _, err := io.Copy(io.Discard, goneServer); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading a reset connection: %v", err)
	}

	id, err := a.AttestTCP(context.Background(), server) // warm up
	if err != nil {
		t.Fatal(err)
	}
	checkTCPIdentity(t, id, os.Getuid(), os.Getgid(), os.Getpid(), exe, sum)
	// Refused after the holder is taken: its executable is over the limit.
	small := newAttestor(t, Config{TCPLookup: lookup, MaxExeBytes: 1})
	if _, err := small.AttestTCP(context.Background(), server); err == nil {
		t.Fatal("an executable over the limit was accepted")
	}
	before := openFDs(t)
	for range 20 {
		if _, err := a.AttestTCP(context.Background(), server); err != nil {
			t.Fatal(err)
		}
		id, err := a.AttestTCP(context.Background(), goneServer)
		wantReason(t, id, err, reasonGone)
		id, err = small.AttestTCP(context.Background(), server)
		wantReason(t, id, err, small.tooLarge())
	}
	if after := openFDs(t); after != before {
		t.Errorf("open descriptors: %d before, %d after", before, after)
	}
}

// BenchmarkAttestTCP measures an attestation of a helper's connection with
// the processes the machine runs, and with a few hundred more, finding the
// holder with the BPF iterator and by reading /proc/*/fd.
func BenchmarkAttestTCP(b *testing.B) {
	for _, lookup := range []string{TCPLookupBPF, TCPLookupProc} {
		b.Run(lookup, func(b *testing.B) { benchmarkAttestTCP(b, lookup) })
	}
}

func benchmarkAttestTCP(b *testing.B, lookup string) {
	ln := listenTCP(b, "127.0.0.1:0")
	a := newAttestor(b, Config{TCPLookup: lookup})
	ctx := context.Background()
	run := func(b *testing.B) {
		// A helper per run: it holds its connection for helperTimeout.
		p := startTCPPeer(b, ln, "", os.Args[0], "hold", nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.AttestTCP(ctx, p.conn); err != nil {
				b.Fatal(err)
			}
		}
		procs, fds := countProcs(b)
		b.ReportMetric(float64(procs), "procs")
		b.ReportMetric(float64(fds), "fds")
	}
	b.Run("machine", run)
	b.Run("extra=300", func(b *testing.B) {
		for range 300 {
			cmd := exec.Command("sleep", "600")
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		}
		run(b)
	})
}

// countProcs counts the processes and their open files, which the scan
// of /proc/*/fd reads.
func countProcs(b *testing.B) (procs, fds int) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		if _, ok := parsePid([]byte(e.Name())); ok {
			procs++
			if f, err := os.ReadDir("/proc/" + e.Name() + "/fd"); err == nil {
				fds += len(f)
			}
		}
	}
	return procs, fds
}
