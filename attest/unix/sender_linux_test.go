//go:build linux

package unix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	sys "golang.org/x/sys/unix"
)

// envAct tells a "sender" helper what to do once the test has accepted its
// connection and written "g".
const envAct = "CREDBROKER_UNIX_TEST_ACT" // self | handoff | exec | setuid | setuid-mixed | rights

// helperSender connects, waits for the go-ahead, then writes "req" in the
// way envAct names.
func helperSender() error {
	c, err := net.Dial("unix", os.Getenv(envSocket))
	if err != nil {
		return err
	}
	conn := c.(*net.UnixConn)
	conn.SetDeadline(time.Now().Add(helperTimeout))
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		return fmt.Errorf("waiting for the go-ahead: %w", err)
	}
	switch act := os.Getenv(envAct); act {
	case "self":
		_, err = conn.Write([]byte("req"))
	case "handoff":
		// A child of our own writes the request on our connection.
		f, ferr := conn.File()
		if ferr != nil {
			return ferr
		}
		cmd := helperCommand(context.Background(), "write")
		cmd.ExtraFiles = []*os.File{f}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("child: %w", err)
		}
	case "exec":
		// Write as ourselves, then become another program that keeps the
		// connection.
		if _, err := conn.Write([]byte("req")); err != nil {
			return err
		}
		rc, _ := conn.SyscallConn()
		var fd int
		rc.Control(func(s uintptr) { fd = int(s) })
		if _, err := sys.FcntlInt(uintptr(fd), sys.F_SETFD, 0); err != nil {
			return err
		}
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			return err
		}
		return syscall.Exec(sleep, []string{"sleep", "30"}, os.Environ())
	case "setuid":
		if err := syscall.Setuid(65534); err != nil {
			return err
		}
		_, err = conn.Write([]byte("req"))
	case "setuid-mixed":
		if _, err := conn.Write([]byte("r")); err != nil {
			return err
		}
		if err := syscall.Setuid(65534); err != nil {
			return err
		}
		_, err = conn.Write([]byte("eq"))
	case "rights":
		_, _, err = conn.WriteMsgUnix([]byte("req"), sys.UnixRights(0), nil)
	default:
		return fmt.Errorf("unknown %s %q", envAct, act)
	}
	if err != nil {
		return err
	}
	io.Copy(io.Discard, conn) // until the test closes its end
	return nil
}

// helperWrite writes "req" on the connection passed as fd 3.
func helperWrite() error {
	conn, err := net.FileConn(os.NewFile(3, "conn"))
	if err != nil {
		return err
	}
	_, err = conn.Write([]byte("req"))
	return err
}

// sendAndRead starts a sender helper with act, accepts its connection
// through l, lets it write and reads what it wrote.
func sendAndRead(t *testing.T, l *Listener, act string) (*Conn, *exec.Cmd) {
	t.Helper()
	cmd := helperCommand(context.Background(), "sender", envSocket+"="+l.Addr().String(), envAct+"="+act)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	l.SetDeadline(time.Now().Add(helperTimeout))
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn := nc.(*Conn)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(helperTimeout))
	if _, err := conn.Write([]byte("g")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "req" {
		t.Fatalf("read %q, %v; want \"req\"", got, err)
	}
	return conn, cmd
}

func senderListener(t *testing.T, a *Attestor) *Listener {
	t.Helper()
	l, err := a.Listen(listen(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSenderIsAttested(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root, for helpers that drop to another uid")
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			a := newAttestor(t, Config{DisablePidfd: m.noPidfd})
			l := senderListener(t, a)
			tests := []struct {
				act    string
				reason string // "" means attested
				uid    int64
			}{
				{act: "self", uid: 0},
				{act: "setuid", uid: 65534}, // attested as the sender
				{act: "handoff", reason: reasonSender},
				{act: "setuid-mixed", reason: reasonSender},
				{act: "rights", reason: reasonSender},
			}
			for _, tc := range tests {
				t.Run(tc.act, func(t *testing.T) {
					conn, cmd := sendAndRead(t, l, tc.act)
					id, err := a.Attest(context.Background(), conn)
					if tc.reason != "" {
						var ae *attest.Error
						if !errors.As(err, &ae) || ae.Reason != tc.reason {
							t.Fatalf("Attest = %v, want refusal %q", err, tc.reason)
						}
						// What the kernel reported is kept for the record.
						if pid, _ := id.Claims[ClaimPID].(int64); pid != int64(cmd.Process.Pid) {
							t.Errorf("refusal carries pid %v, want %d", id.Claims[ClaimPID], cmd.Process.Pid)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					if id.Claims[ClaimUID] != tc.uid || id.Claims[ClaimPID] != int64(cmd.Process.Pid) {
						t.Errorf("claims %v, want uid %d pid %d", id.Claims, tc.uid, cmd.Process.Pid)
					}
				})
			}
		})
	}
}

// TestSenderExec: a process that writes its request and then executes
// another program is not attested as that program.
func TestSenderExec(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	sleep, _ = filepath.EvalSymlinks(sleep)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			a := newAttestor(t, Config{DisablePidfd: m.noPidfd})
			l := senderListener(t, a)
			conn, cmd := sendAndRead(t, l, "exec")
			// Wait for the exec to have happened.
			exe := fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)
			for deadline := time.Now().Add(helperTimeout); ; {
				if got, _ := os.Readlink(exe); got == sleep {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("helper did not exec %s", sleep)
				}
				time.Sleep(time.Millisecond)
			}
			_, err := a.Attest(context.Background(), conn)
			var ae *attest.Error
			if !errors.As(err, &ae) || ae.Reason != reasonExec {
				t.Fatalf("Attest = %v, want refusal %q", err, reasonExec)
			}
		})
	}
}

// TestSenderNeedsListener: a connection that did not come through a
// Listener has no per-read credentials and is refused.
func TestSenderNeedsListener(t *testing.T) {
	a := newAttestor(t, Config{})
	server, _ := selfPair(t)
	_, err := a.Attest(context.Background(), server)
	var ae *attest.Error
	if !errors.As(err, &ae) || ae.Reason != reasonListener {
		t.Fatalf("Attest = %v, want refusal %q", err, reasonListener)
	}
}

// TestSenderEarlyWrite: bytes written before the broker accepted the
// connection still carry the writer's credentials (the listener's
// SO_PASSCRED applies from connect).
func TestSenderEarlyWrite(t *testing.T) {
	a := newAttestor(t, Config{})
	l := senderListener(t, a)
	client, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := io.ReadFull(nc, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(context.Background(), nc); err != nil {
		t.Fatal(err)
	}
}

// TestSenderReadsCloseDescriptors: descriptors a peer passes are closed,
// and the pidfd of each read too.
func TestSenderReadsCloseDescriptors(t *testing.T) {
	a := newAttestor(t, Config{})
	l := senderListener(t, a)
	client, err := net.DialUnix("unix", nil, l.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	before := openFDs(t)
	buf := make([]byte, 4)
	for i := 0; i < 50; i++ {
		if _, _, err := client.WriteMsgUnix([]byte("data"), sys.UnixRights(0, 1, 2), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(nc, buf); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("open descriptors went from %d to %d", before, after)
	}
	if _, err := a.Attest(context.Background(), nc); err == nil {
		t.Error("a connection that passed descriptors was attested")
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestExeSizeLimit: an executable over the limit is refused at once,
// before it is read.
func TestExeSizeLimit(t *testing.T) {
	dir := sharedDir(t)
	exe := filepath.Join(dir, "big")
	copyExe(t, exe, nil)
	// Grow it sparsely past the limit: free to create, costly to hash.
	fi, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	a := newAttestor(t, Config{MaxExeBytes: fi.Size() + 1})
	ln, err := a.Listen(listen(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(exe, fi.Size()+1<<30); err != nil {
		t.Fatal(err)
	}
	_, conn := startPeer(t, ln.UnixListener, exe, nil)
	_, err = a.Attest(context.Background(), a.newConn(conn))
	var ae *attest.Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Reason, "hashing limit") {
		t.Fatalf("Attest = %v, want the size-limit refusal", err)
	}
	if n := a.hashed.Load(); n != 0 {
		t.Errorf("hashed %d executables, want none", n)
	}
}

// BenchmarkSenderRead is the cost per read of recording the writer: a
// write and a read through a Conn, against the same through the plain
// connection.
func BenchmarkSenderRead(b *testing.B) {
	req := []byte("GET /v1/credentials/demo HTTP/1.1\r\nHost: credbroker\r\nCredbroker-Request: 1\r\n\r\n")
	for _, wrap := range []bool{false, true} {
		name := "plain"
		if wrap {
			name = "sender"
		}
		b.Run(name, func(b *testing.B) {
			a := newAttestor(b, Config{})
			l, err := a.Listen(func() *net.UnixListener {
				ln, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: filepath.Join(b.TempDir(), "s")})
				if err != nil {
					b.Fatal(err)
				}
				return ln
			}())
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			client, err := net.Dial("unix", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			var server net.Conn
			if wrap {
				server, err = l.Accept()
			} else {
				server, err = l.AcceptUnix()
			}
			if err != nil {
				b.Fatal(err)
			}
			defer server.Close()
			buf := make([]byte, 4096)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(server, buf[:len(req)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHashConcurrency: hashing waits for a free slot, as long as the
// request lets it, and a cache hit needs none.
func TestHashConcurrency(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	// The request is given up once attestation is under way, before the
	// executable is hashed: the wait for a slot must notice.
	a := newAttestor(t, Config{HashConcurrency: 1, Hooks: Hooks{AfterPeerCred: func(int32) { cancel() }}})
	server, _ := selfPair(t)
	conn := a.newConn(server)
	a.hashSlots <- struct{}{} // another hash in progress
	_, err := a.Attest(ctx, conn)
	var ae *attest.Error
	if !errors.As(err, &ae) || ae.Reason != reasonCancelled {
		t.Fatalf("Attest = %v, want it cancelled while waiting for a slot", err)
	}
	<-a.hashSlots
	if _, err := a.Attest(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	a.hashSlots <- struct{}{} // the slot is taken again: the cache needs none
	defer func() { <-a.hashSlots }()
	if _, err := a.Attest(context.Background(), conn); err != nil {
		t.Fatalf("a cache hit waited for a slot: %v", err)
	}
}

// BenchmarkNewConn is the cost per accepted connection of noting its
// origin (the connecting process's pid and executable, confirmed through
// its pidfd or start time) and, with a pidfd, of opening the handles
// Attest reads it through, and closing them again.
func BenchmarkNewConn(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			a := newAttestor(b, Config{DisablePidfd: m.noPidfd})
			server, _ := selfPair(b)
			b.ReportAllocs()
			for b.Loop() {
				c := a.newConn(server)
				if c.origin.err != nil {
					b.Fatal(c.origin.err)
				}
				c.release()
			}
		})
	}
}
