//go:build linux

package unix

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A connection from ListenTCP is scanned for once: later attestations
// confirm the held process through its handles, and name the same
// process as a fresh AttestTCP does; with the ids read from the pidfd or,
// as on kernels before 6.13, from /proc/PID/status.
func TestTCPConnHoldsProcess(t *testing.T) { forEachLookup(t, testTCPConnHoldsProcess) }

func testTCPConnHoldsProcess(t *testing.T, lookup string) {
	needRoot(t)
	exe, sum := tcpExe(t)
	ln := listenTCP(t, "127.0.0.1:0")
	for _, statusIDs := range []bool{false, true} {
		t.Run(fmt.Sprintf("status=%v", statusIDs), func(t *testing.T) {
			a := newAttestor(t, Config{TCPLookup: lookup})
			a.noPidfdInfo.Store(statusIDs)
			p := startTCPPeer(t, ln, "", exe, "hold", &syscall.Credential{Uid: 65534, Gid: 65534})
			c := &TCPConn{TCPConn: p.conn, a: a}
			ctx := context.Background()
			before := a.scanned.Load()
			for i := range 3 {
				id, err := a.Attest(ctx, c)
				if err != nil {
					t.Fatalf("attestation %d: %v", i, err)
				}
				checkTCPIdentity(t, id, 65534, 65534, p.cmd.Process.Pid, exe, sum)
			}
			if n := a.scanned.Load() - before; n != 1 {
				t.Errorf("three attestations of one connection scanned /proc %d times, want 1", n)
			}
			fresh, err := a.AttestTCP(ctx, p.conn)
			if err != nil {
				t.Fatal(err)
			}
			checkTCPIdentity(t, fresh, 65534, 65534, p.cmd.Process.Pid, exe, sum)

			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			id, err := a.Attest(ctx, c)
			wantReason(t, id, err, reasonGone)
		})
	}
}

// A held process that changes its uid is attested afresh, and so refused:
// its socket was opened as root, and it now runs only as nobody.
func TestTCPConnSetuid(t *testing.T) { forEachLookup(t, testTCPConnSetuid) }

func testTCPConnSetuid(t *testing.T, lookup string) {
	needRoot(t)
	exe, sum := tcpExe(t)
	ln := listenTCP(t, "127.0.0.1:0")
	for _, statusIDs := range []bool{false, true} {
		t.Run(fmt.Sprintf("status=%v", statusIDs), func(t *testing.T) {
			a := newAttestor(t, Config{TCPLookup: lookup})
			a.noPidfdInfo.Store(statusIDs)
			p := startTCPPeer(t, ln, "", exe, "setuid", &syscall.Credential{Uid: 0, Gid: 0})
			c := &TCPConn{TCPConn: p.conn, a: a}
			t.Cleanup(func() { c.Close() })
			ctx := context.Background()
			id, err := a.Attest(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			checkTCPIdentity(t, id, 0, 0, p.cmd.Process.Pid, exe, sum)
			if _, err := p.conn.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			if line, err := p.out.ReadString('\n'); err != nil || line != "nobody\n" {
				t.Fatalf("helper printed %q, %v", line, err)
			}
			before := a.scanned.Load()
			id, err = a.Attest(ctx, c)
			wantReason(t, id, err, reasonSockUID)
			if n := a.scanned.Load() - before; n != 1 {
				t.Errorf("after the uid changed, /proc was scanned %d times, want 1", n)
			}
		})
	}
}

// When the held process exits after handing its socket to another
// process, the next attestation looks afresh: a process of the same uid
// is named, one of another uid than the socket's creator is refused. The
// identity held for the connection is never carried over to either.
func TestTCPConnHandOver(t *testing.T) { forEachLookup(t, testTCPConnHandOver) }

func testTCPConnHandOver(t *testing.T, lookup string) {
	needRoot(t)
	exe, sum := tcpExe(t)
	a := newAttestor(t, Config{TCPLookup: lookup})
	ln := listenTCP(t, "127.0.0.1:0")
	for _, tc := range []struct {
		name     string
		childUID int
		reason   string // "" for success
	}{
		{"same uid", 0, ""},
		{"another uid", 65534, reasonSockUID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startTCPPeer(t, ln, "", exe, "handoff", &syscall.Credential{Uid: 0, Gid: 0}, envTCPChildUID+"="+strconv.Itoa(tc.childUID))
			c := &TCPConn{TCPConn: p.conn, a: a}
			t.Cleanup(func() { c.Close() })
			ctx := context.Background()

			id, err := a.Attest(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			checkTCPIdentity(t, id, 0, 0, p.cmd.Process.Pid, exe, sum)

			// The helper hands the connection to its child and exits.
			if _, err := p.conn.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			line, err := p.out.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the child's pid: %v", err)
			}
			child, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.cmd.Wait(); err != nil {
				t.Fatalf("handoff helper: %v", err)
			}

			before := a.scanned.Load()
			id, err = a.Attest(ctx, c)
			if n := a.scanned.Load() - before; n != 1 {
				t.Errorf("after the held process exited, /proc was scanned %d times, want 1", n)
			}
			if tc.reason != "" {
				wantReason(t, id, err, tc.reason)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkTCPIdentity(t, id, tc.childUID, tc.childUID, child, exe, sum)
		})
	}
}

// ListenTCP wraps TCP connections, which Attest then holds.
func TestListenTCP(t *testing.T) { forEachLookup(t, testListenTCP) }

func testListenTCP(t *testing.T, lookup string) {
	needRoot(t)
	a := newAttestor(t, Config{TCPLookup: lookup})
	ln := a.ListenTCP(listenTCP(t, "127.0.0.1:0"))
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Error(err)
			close(dialed)
			return
		}
		dialed <- c
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cc, ok := <-dialed; ok {
		defer cc.Close()
	}
	if _, ok := c.(*TCPConn); !ok {
		t.Fatalf("ListenTCP accepted a %T, want *TCPConn", c)
	}
	id, err := a.Attest(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if pid := id.Claims[ClaimPID]; pid != int64(syscall.Getpid()) {
		t.Errorf("pid claim %v, want this process %d", pid, syscall.Getpid())
	}
}

// BenchmarkAttestTCPHeld measures a later attestation of a connection
// from ListenTCP, which re-checks the held process instead of scanning
// /proc (compare BenchmarkAttestTCP).
func BenchmarkAttestTCPHeld(b *testing.B) {
	ln := listenTCP(b, "127.0.0.1:0")
	a := newAttestor(b, Config{})
	p := startTCPPeer(b, ln, "", os.Args[0], "hold", nil)
	c := &TCPConn{TCPConn: p.conn, a: a}
	b.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if _, err := a.Attest(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Attest(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	if a.scanned.Load() != 1 {
		b.Fatalf("%d scans of /proc, want 1", a.scanned.Load())
	}
}
