//go:build unix

package brokertest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// NobodyUID is the uid the attacker runs as: nobody's.
const NobodyUID = 65534

// attackerPkg is the attacker's source, built by import path so that it
// builds from any package's directory in the module.
const attackerPkg = "github.com/credbroker/credbroker/broker/brokertest/testdata/symlinkswap"

// rootFileContent is what a RootFile holds.
const rootFileContent = "root's own file\n"

// RootFile is a file of root's, mode 0600, in a directory of root's: the
// target of the attacker's links, which nothing may change.
type RootFile struct {
	// Path is where the file is.
	Path string

	want os.FileInfo // its stat when made
}

// NewRootFile makes a RootFile in a temporary directory of the test's.
func NewRootFile(t testing.TB) *RootFile {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(p, []byte(rootFileContent), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return &RootFile{Path: p, want: fi}
}

// Check fails the test if the file is not the one NewRootFile made, with
// its mode, owner, group and content: fatally if it is gone, otherwise with
// t.Errorf. Deferred, it checks also when the test fails before it.
func (f *RootFile) Check(t testing.TB) {
	t.Helper()
	fi, err := os.Stat(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	st, wst := fi.Sys().(*syscall.Stat_t), f.want.Sys().(*syscall.Stat_t)
	if fi.Mode() != f.want.Mode() || st.Uid != wst.Uid || st.Gid != wst.Gid || !os.SameFile(fi, f.want) {
		t.Errorf("target changed: mode %v uid %d gid %d, was %v uid %d gid %d", fi.Mode(), st.Uid, st.Gid, f.want.Mode(), wst.Uid, wst.Gid)
	}
	if b, _ := os.ReadFile(f.Path); string(b) != rootFileContent {
		t.Errorf("target now holds %q", b)
	}
}

// SwapperConfig says what the attacker attacks.
type SwapperConfig struct {
	// Dir is the directory it swaps entries in.
	Dir string
	// Group is a gid that can write Dir, given to the attacker as a
	// supplementary group; its own uid and gid are NobodyUID.
	Group int
	// Target is the file its links point to, usually a RootFile's Path.
	Target string
	// Spare is the one name in Dir it leaves alone: the socket's, so that
	// the test can check the socket.
	Spare string
}

// Swapper is a running attacker (testdata/symlinkswap).
type Swapper struct {
	cmd     *exec.Cmd
	swapped chan []string
}

// StartSwapper builds the attacker with go build into a directory other
// users can enter, runs it as NobodyUID with write access to c.Dir through
// c.Group, and waits until it is ready. It is killed when the test ends, if
// Stop has not killed it before.
func StartSwapper(t testing.TB, c SwapperConfig) *Swapper {
	t.Helper()
	bin := buildAttacker(t)
	cmd := exec.Command(bin, c.Dir, c.Target, c.Spare)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: NobodyUID, Gid: NobodyUID, Groups: []uint32{uint32(c.Group)}}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	s := &Swapper{cmd: cmd, swapped: make(chan []string, 1)}
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
		t.Fatalf("the attacker did not start: %s", stderr.String())
	}
	return s
}

// Stop kills the attacker and returns the names it swapped, in order.
func (s *Swapper) Stop() []string {
	_ = s.cmd.Process.Kill()
	names := <-s.swapped
	_ = s.cmd.Wait()
	return names
}

// Dir makes a fresh directory with the given owner and mode, for a socket
// or for a program that other users run, and removes it when the test
// ends; uid or gid -1 keeps that one. Its path is short, as socket paths
// are limited.
func Dir(t testing.TB, uid, gid int, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cbt-")
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

// buildAttacker builds the attacker from source into a directory that
// other users can enter, so that it can run as one, and returns its path.
func buildAttacker(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(Dir(t, 0, 0, 0o755), "symlinkswap")
	if out, err := exec.Command("go", "build", "-o", bin, attackerPkg).CombinedOutput(); err != nil {
		t.Fatalf("building the attacker: %v\n%s", err, out)
	}
	return bin
}
