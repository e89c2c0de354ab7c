//go:build linux

package unix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/credbroker/credbroker/attest"
	sys "golang.org/x/sys/unix"
)

// forEachLookup runs test once with each way of finding a socket's
// holders. The BPF iterator must load here: the suite runs as root on a
// kernel with BTF, and an attestor silently back on /proc would leave the
// iterator untested.
func forEachLookup(t *testing.T, test func(t *testing.T, lookup string)) {
	for _, lookup := range []string{TCPLookupBPF, TCPLookupProc} {
		t.Run(lookup, func(t *testing.T) { test(t, lookup) })
	}
}

// socketInode returns the inode of the socket of c.
func socketInode(t *testing.T, c syscall.Conn) uint32 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st sys.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = sys.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return uint32(st.Ino)
}

// The iterator finds the same holders as the scan of /proc/*/fd: this
// process for the sockets of its own connections (both ends), a helper for
// its client socket, and this process and a child for a socket the child
// inherited, in pid order; a socket nobody holds any more has none.
func TestBPFHoldersMatchScan(t *testing.T) {
	a := newAttestor(t, Config{TCPLookup: TCPLookupBPF})
	if a.bpf == nil {
		t.Fatal("tcp_lookup bpf gave an attestor without the iterator")
	}
	ln := listenTCP(t, "127.0.0.1:0")
	want := map[uint32][]int32{}
	self := int32(os.Getpid())
	for range 3 {
		server := selfTCP(t, ln).(*net.TCPConn)
		want[socketInode(t, server)] = []int32{self}
	}
	client, _ := selfTCPPair(t, ln)
	f, err := client.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "600")
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	f.Close()
	shared := socketInode(t, client.(*net.TCPConn))
	want[shared] = []int32{self, int32(child.Process.Pid)}
	if child.Process.Pid < int(self) {
		want[shared] = []int32{int32(child.Process.Pid), self}
	}
	helper := startTCPPeer(t, ln, "", selfExe(t), "hold", nil)
	want[helper.clientInode(t)] = []int32{int32(helper.cmd.Process.Pid)}
	gone := selfTCP(t, ln)
	goneIno := socketInode(t, gone.(*net.TCPConn))
	gone.Close()
	want[goneIno] = nil

	ask := func() map[uint32][]int32 {
		m := map[uint32][]int32{}
		for ino := range want {
			m[ino] = nil
		}
		return m
	}
	got := ask()
	if err := a.bpf.lookup(got); err != nil {
		t.Fatal(err)
	}
	scanned := ask()
	if err := a.scanHolders(scanned); err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got, scanned, slices.Equal) {
		t.Errorf("the iterator found %v, the scan of /proc %v", got, scanned)
	}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("the iterator found %v, want %v", got, want)
	}
	// More sockets than one pass of the iterator looks for.
	many := ask()
	for i := range uint32(bpfMaxWanted + 10) {
		if _, ok := many[i+1]; !ok {
			many[i+1] = nil
		}
	}
	if err := a.bpf.lookup(many); err != nil {
		t.Fatal(err)
	}
	for ino, pids := range want {
		if !slices.Equal(many[ino], pids) {
			t.Errorf("looking for %d sockets, inode %d is held by %v, want %v", len(many), ino, many[ino], pids)
		}
	}
}

// A thread whose file table is its own (it called unshare(CLONE_FILES))
// holds a copy of every descriptor of the process, the client socket
// included. The iterator sees it, and the connection is refused as held by
// holders that may differ: /proc/PID describes the process, not that
// thread's copy. (The scan of /proc/*/fd does not see such threads, as
// AttestTCP's documentation says.)
func TestAttestTCPThreadFiles(t *testing.T) {
	a := newAttestor(t, Config{TCPLookup: TCPLookupBPF})
	ln := listenTCP(t, "127.0.0.1:0")
	server := selfTCP(t, ln)
	if _, err := a.AttestTCP(context.Background(), server); err != nil {
		t.Fatalf("before the thread unshared its files: %v", err)
	}

	ready := make(chan error)
	done := make(chan struct{})
	defer close(done)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		ready <- sys.Unshare(sys.CLONE_FILES)
		<-done
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	_, err := a.AttestTCP(context.Background(), server)
	var ae *attest.Error
	if !errors.As(err, &ae) || ae.Reason != reasonAmbiguous || !errors.Is(err, errThreadFiles) {
		t.Fatalf("with a thread holding its own copy of the socket: %v, want reason %q", err, reasonAmbiguous)
	}
}

// clientInode returns the inode of the helper's end of its connection,
// from the kernel's socket table.
func (p *tcpPeer) clientInode(t *testing.T) uint32 {
	t.Helper()
	d, err := openInetDiag()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	local, _ := tcpAddrPort(p.conn.LocalAddr())
	remote, _ := tcpAddrPort(p.conn.RemoteAddr())
	s, err := d.lookup(tuple{src: remote, dst: local}, noCookie)
	if err != nil {
		t.Fatal(err)
	}
	return s.inode
}

// tcpHelperLookup creates an Attestor with the TCPLookup of envTCPLookup
// and prints the lookup it uses ("bpf" or "proc") followed by its logs, or
// "error" and New's error.
func tcpHelperLookup() error {
	var logs strings.Builder
	a, err := New(Config{TCPLookup: os.Getenv(envTCPLookup), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		fmt.Printf("error %v\n", err)
		return nil
	}
	used := TCPLookupProc
	if a.bpf != nil {
		used = TCPLookupBPF
	}
	fmt.Printf("%s\n%s", used, logs.String())
	return nil
}

// Without CAP_BPF (a helper running as nobody), tcp_lookup auto falls back
// to /proc and says why, and bpf refuses to start; as root, auto loads the
// iterator and proc does not.
func TestTCPLookupFallback(t *testing.T) {
	needRoot(t)
	exe, _ := tcpExe(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, tc := range []struct {
		lookup string
		cred   *syscall.Credential
		want   []string
	}{
		{TCPLookupAuto, nil, []string{"bpf\n", "tcp_lookup=bpf"}},
		{TCPLookupProc, nil, []string{"proc\n", "tcp_lookup=proc"}},
		{TCPLookupAuto, nobody, []string{"proc\n", "the BPF iterator is not available", "operation not permitted", "tcp_lookup=proc"}},
		{TCPLookupBPF, nobody, []string{"error unix: tcp_lookup bpf: ", "operation not permitted"}},
	} {
		who := "root"
		if tc.cred != nil {
			who = "nobody"
		}
		t.Run(tc.lookup+"/"+who, func(t *testing.T) {
			cmd := tcpHelperCommand("lookup", envTCPLookup+"="+tc.lookup)
			cmd.Path, cmd.Args[0] = exe, exe
			if tc.cred != nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tc.cred}
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if !strings.HasPrefix(string(out), tc.want[0]) {
				t.Errorf("output does not start with %q:\n%s", tc.want[0], out)
			}
		})
	}
}
