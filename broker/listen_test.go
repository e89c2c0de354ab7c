//go:build linux

package broker_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/broker/brokertest"
)

// Users of the tests that need another uid than root's.
const (
	nobodyUID = 65534 // another user, who owns a directory
	testGID   = 4711  // a group without a name, given write access or the socket
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: acts as other users and chowns to other groups")
	}
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
			return filepath.Join(brokertest.Dir(t, 0, 0, 0o755), "a", "b", "s")
		}},
		{name: "group and mode", mode: 0o660, gid: testGID, setup: func(t *testing.T) string {
			return filepath.Join(brokertest.Dir(t, 0, 0, 0o755), "s")
		}},
		{name: "stale socket is replaced", mode: 0o600, gid: -1, setup: func(t *testing.T) string {
			p := filepath.Join(brokertest.Dir(t, 0, 0, 0o755), "s")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
			return p
		}},
		{name: "group-writable directory", mode: 0o660, gid: testGID, setup: func(t *testing.T) string {
			return filepath.Join(brokertest.Dir(t, 0, testGID, 0o770), "s")
		}},
		{name: "world-writable directory with the sticky bit", mode: 0o666, gid: -1, setup: func(t *testing.T) string {
			return filepath.Join(brokertest.Dir(t, 0, 0, 0o777|os.ModeSticky), "s")
		}},
		{name: "live socket", mode: 0o600, gid: -1, refused: "another process is listening", setup: func(t *testing.T) string {
			p := filepath.Join(brokertest.Dir(t, 0, 0, 0o755), "s")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return p
		}},
		{name: "regular file", mode: 0o600, gid: -1, refused: "is not a socket", setup: func(t *testing.T) string {
			p := filepath.Join(brokertest.Dir(t, 0, 0, 0o755), "s")
			if err := os.WriteFile(p, []byte(file), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{name: "link to a stale socket", mode: 0o600, gid: -1, refused: "is not a socket", setup: func(t *testing.T) string {
			dir := brokertest.Dir(t, 0, 0, 0o755)
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
			return filepath.Join(brokertest.Dir(t, 0, 0, 0o777), "s")
		}},
		{name: "directory of another user", mode: 0o600, gid: -1, refused: "owned by uid 65534", setup: func(t *testing.T) string {
			return filepath.Join(brokertest.Dir(t, nobodyUID, 0, 0o755), "s")
		}},
		{name: "path too long to connect to", mode: 0o600, gid: -1, refused: "longer than a Unix socket address allows", setup: func(t *testing.T) string {
			return filepath.Join(brokertest.Dir(t, 0, 0, 0o755), strings.Repeat("x", 100))
		}},
		{name: "mode beyond permission bits", mode: 0o600 | os.ModeSetgid, gid: -1, refused: "permission bits only", setup: func(t *testing.T) string {
			return filepath.Join(brokertest.Dir(t, 0, 0, 0o755), "s")
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
// swaps every name it sees there for a link to a file of root's
// (brokertest.StartSwapper). The file must stay as it was, and every socket
// must come out with its mode and group.
func TestListenUnixHostileDirectory(t *testing.T) {
	requireRoot(t)
	const starts = 400
	target := brokertest.NewRootFile(t)
	dir := brokertest.Dir(t, 0, testGID, 0o770)
	path := filepath.Join(dir, "broker.sock")
	sw := brokertest.StartSwapper(t, brokertest.SwapperConfig{Dir: dir, Group: testGID, Target: target.Path, Spare: filepath.Base(path)})
	defer target.Check(t) // also when a check below fails
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
	swapped := sw.Stop()
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

func TestDrainTimeout(t *testing.T) {
	var d broker.DrainTimeout
	if d.Or() != broker.DefaultDrainTimeout {
		t.Errorf("zero: %v, want the default", d.Or())
	}
	if err := d.UnmarshalText([]byte("15s")); err != nil || d.Or() != 15*time.Second {
		t.Errorf("15s: %v %v", d, err)
	}
	if err := d.UnmarshalText([]byte("-1s")); err == nil {
		t.Error("negative duration accepted")
	}
}
