//go:build linux

package broker_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/credbroker/credbroker/broker"
)

// Users of the tests that need another uid than root's.
const (
	nobodyUID = 65534 // the attacker
	testGID   = 4711  // a group without a name, given write access or the socket
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: acts as other users and chowns to other groups")
	}
}

// socketDir makes a fresh directory for a socket, with the given owner and
// mode; -1 keeps the owner.
func socketDir(t *testing.T, uid, gid int, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cbl-") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// socketProblem reports what is wrong with the socket at path: not a
// socket, another mode or group than asked for, or not accepting
// connections on ln.
func socketProblem(path string, ln *net.UnixListener, mode os.FileMode, gid int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != mode {
		return fmt.Errorf("%s: mode %v, want a socket with %v", path, fi.Mode(), mode)
	}
	if st := fi.Sys().(*syscall.Stat_t); gid != -1 && int(st.Gid) != gid {
		return fmt.Errorf("%s: group %d, want %d", path, st.Gid, gid)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("dialling the socket: %w", err)
	}
	c.Close()
	a, err := ln.Accept()
	if err != nil {
		return err
	}
	return a.Close()
}

func TestListenUnix(t *testing.T) {
	requireRoot(t)
	const file = "not a socket"
	for _, tc := range []struct {
		name string
		// setup prepares the socket's directory and returns the socket path.
		setup func(t *testing.T) string
		mode  os.FileMode
		gid   int
		// refused is part of the error when ListenUnix must refuse.
		refused string
	}{
		{name: "missing directory is created", mode: 0o600, gid: -1, setup: func(t *testing.T) string {
			return filepath.Join(socketDir(t, 0, 0, 0o755), "a", "b", "s")
		}},
		{name: "group and mode", mode: 0o660, gid: testGID, setup: func(t *testing.T) string {
			return filepath.Join(socketDir(t, 0, 0, 0o755), "s")
		}},
		{name: "stale socket is replaced", mode: 0o600, gid: -1, setup: func(t *testing.T) string {
			p := filepath.Join(socketDir(t, 0, 0, 0o755), "s")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
			return p
		}},
		{name: "group-writable directory", mode: 0o660, gid: testGID, setup: func(t *testing.T) string {
			return filepath.Join(socketDir(t, 0, testGID, 0o770), "s")
		}},
		{name: "world-writable directory with the sticky bit", mode: 0o666, gid: -1, setup: func(t *testing.T) string {
			return filepath.Join(socketDir(t, 0, 0, 0o777|os.ModeSticky), "s")
		}},
		{name: "live socket", mode: 0o600, gid: -1, refused: "another process is listening", setup: func(t *testing.T) string {
			p := filepath.Join(socketDir(t, 0, 0, 0o755), "s")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return p
		}},
		{name: "regular file", mode: 0o600, gid: -1, refused: "is not a socket", setup: func(t *testing.T) string {
			p := filepath.Join(socketDir(t, 0, 0, 0o755), "s")
			if err := os.WriteFile(p, []byte(file), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{name: "link to a stale socket", mode: 0o600, gid: -1, refused: "is not a socket", setup: func(t *testing.T) string {
			dir := socketDir(t, 0, 0, 0o755)
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "real"), Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
			p := filepath.Join(dir, "s")
			if err := os.Symlink("real", p); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{name: "world-writable directory without the sticky bit", mode: 0o600, gid: -1, refused: "no sticky bit", setup: func(t *testing.T) string {
			return filepath.Join(socketDir(t, 0, 0, 0o777), "s")
		}},
		{name: "directory of another user", mode: 0o600, gid: -1, refused: "owned by uid 65534", setup: func(t *testing.T) string {
			return filepath.Join(socketDir(t, nobodyUID, 0, 0o755), "s")
		}},
		{name: "path too long to connect to", mode: 0o600, gid: -1, refused: "longer than a Unix socket address allows", setup: func(t *testing.T) string {
			return filepath.Join(socketDir(t, 0, 0, 0o755), strings.Repeat("x", 100))
		}},
		{name: "mode beyond permission bits", mode: 0o600 | os.ModeSetgid, gid: -1, refused: "permission bits only", setup: func(t *testing.T) string {
			return filepath.Join(socketDir(t, 0, 0, 0o755), "s")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.setup(t)
			before, _ := os.Lstat(path)
			ln, err := broker.ListenUnix(path, tc.mode, tc.gid)
			if tc.refused != "" {
				if err == nil {
					ln.Close()
					t.Fatalf("ListenUnix succeeded, want it to refuse with %q", tc.refused)
				}
				if !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("error %q, want %q", err, tc.refused)
				}
				if after, _ := os.Lstat(path); before != nil && (after == nil || !os.SameFile(before, after) || after.Mode() != before.Mode()) {
					t.Errorf("what was at %s changed: %v, then %v", path, before, after)
				}
				if before != nil && before.Mode().IsRegular() {
					if b, _ := os.ReadFile(path); string(b) != file {
						t.Errorf("the file at %s now holds %q", path, b)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := socketProblem(path, ln, tc.mode, tc.gid); err != nil {
				t.Error(err)
			}
			entries, err := os.ReadDir(filepath.Dir(path))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() != filepath.Base(path) && e.Name() != "real" {
					t.Errorf("%s left behind", e.Name())
				}
			}
		})
	}
}

// TestListenUnixHostileDirectory creates the socket hundreds of times in a
// directory that an attacker, another user, can write, while the attacker
// swaps every name it sees there for a link to a file of root's. The file
// must stay as it was, and every socket must come out with its mode and
// group.
func TestListenUnixHostileDirectory(t *testing.T) {
	requireRoot(t)
	const starts = 400
	target, want := rootFile(t)
	dir := socketDir(t, 0, testGID, 0o770)
	path := filepath.Join(dir, "broker.sock")
	sw := startSwapper(t, buildSwapper(t, "testdata/symlinkswap"), dir, target, filepath.Base(path))
	defer checkRootFile(t, target, want) // also when a check below fails
	var failed []error
	for range starts {
		ln, err := broker.ListenUnix(path, 0o660, testGID)
		if err == nil {
			err = socketProblem(path, ln, 0o660, testGID)
			ln.Close()
			_ = os.Remove(path)
		}
		if err != nil {
			failed = append(failed, err)
		}
	}
	swapped := sw.stop()
	if len(failed) > 0 {
		t.Errorf("%d of %d starts failed or made a wrong socket, the first: %v", len(failed), starts, failed[0])
	}
	private := 0
	for _, name := range swapped {
		if strings.HasPrefix(name, ".broker.sock.") {
			private++
		}
	}
	t.Logf("%d starts; the attacker swapped %d entries, %d of them private directories", starts, len(swapped), private)
	if private == 0 {
		t.Error("the attacker never got at a private directory, so the test proved nothing")
	}
}

// rootFile makes a file of root's, mode 0600, in a directory of root's, and
// returns its path and its stat.
func rootFile(t *testing.T) (string, os.FileInfo) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(p, []byte("root's own file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, fi
}

// checkRootFile checks that nothing changed the file rootFile made.
func checkRootFile(t *testing.T, p string, want os.FileInfo) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st, wst := fi.Sys().(*syscall.Stat_t), want.Sys().(*syscall.Stat_t)
	if fi.Mode() != want.Mode() || st.Uid != wst.Uid || st.Gid != wst.Gid || !os.SameFile(fi, want) {
		t.Errorf("target changed: mode %v uid %d gid %d, was %v uid %d gid %d", fi.Mode(), st.Uid, st.Gid, want.Mode(), wst.Uid, wst.Gid)
	}
	if b, _ := os.ReadFile(p); string(b) != "root's own file\n" {
		t.Errorf("target now holds %q", b)
	}
}

// buildSwapper builds the attacker program from src into a directory that
// other users can enter, so that it can run as one.
func buildSwapper(t *testing.T, src string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cbswap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "symlinkswap")
	out, err := exec.Command("go", "build", "-o", bin, "./"+src).CombinedOutput()
	if err != nil {
		t.Fatalf("building %s: %v\n%s", src, err, out)
	}
	return bin
}

// swapper is a running attacker.
type swapper struct {
	t       *testing.T
	cmd     *exec.Cmd
	stderr  *bytes.Buffer
	swapped chan []string
}

// startSwapper runs the attacker as nobody with write access to dir
// through testGID, and waits until it is ready.
func startSwapper(t *testing.T, bin, dir, target, spare string) *swapper {
	t.Helper()
	cmd := exec.Command(bin, dir, target, spare)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID, Groups: []uint32{testGID}}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &swapper{t: t, cmd: cmd, stderr: &bytes.Buffer{}, swapped: make(chan []string, 1)}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	ready := make(chan bool, 1)
	go func() {
		var names []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "swapped "); ok {
				names = append(names, name)
			} else if sc.Text() == "ready" {
				ready <- true
			}
		}
		close(ready)
		s.swapped <- names
	}()
	if !<-ready {
		_ = cmd.Wait()
		t.Fatalf("the attacker did not start: %s", s.stderr)
	}
	return s
}

// stop kills the attacker and returns the names it swapped.
func (s *swapper) stop() []string {
	_ = s.cmd.Process.Kill()
	names := <-s.swapped
	_ = s.cmd.Wait()
	return names
}
