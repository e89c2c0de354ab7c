package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Users of the tests that need another uid than root's.
const (
	nobodyUID = 65534 // the attacker, and a client
	testGID   = 4711  // a group without a name, given write access to the socket's directory
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: acts as other users and chowns to other groups")
	}
}

// TestSocketInHostileDirectory starts the broker again and again with its
// socket in a directory that an attacker, another user, can write, while
// the attacker swaps every name it sees there for a link to a file of
// root's (broker/testdata/symlinkswap). The file must stay as it was, and
// each time the socket must come out with its mode and group.
func TestSocketInHostileDirectory(t *testing.T) {
	requireRoot(t)
	const starts = 25
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	appendConfig(t, e, fmt.Sprintf("socket_mode: \"0660\"\nsocket_group: %d\n", testGID))
	target, want := rootFile(t)
	dir := sharedDir(t, 0, testGID, 0o770)
	e.socket = filepath.Join(dir, "broker.sock")
	sw := startSwapper(t, dir, target, filepath.Base(e.socket))
	defer checkRootFile(t, target, want) // also when a check below fails
	for i := range starts {
		b := e.start("--socket", e.socket)
		fi, err := os.Lstat(e.socket)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != testGID {
			t.Fatalf("start %d: socket %v group %d, want a socket with mode 0660 and group %d", i, fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, testGID)
		}
		if code := b.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("start %d: exit %d:\n%s", i, code, b.logs)
		}
	}
	swapped := sw.stop()
	private := 0
	for _, name := range swapped {
		if strings.HasPrefix(name, ".broker.sock.") {
			private++
		}
	}
	t.Logf("%d starts; the attacker swapped %d entries, %d of them private directories", starts, len(swapped), private)
}

// TestSocketGroup gives the socket a group by name: a process in the group
// connects and is served, one outside it is refused by the kernel.
func TestSocketGroup(t *testing.T) {
	requireRoot(t)
	g, err := user.LookupGroup("daemon")
	if err != nil {
		t.Skip("no group daemon in /etc/group")
	}
	gid, _ := strconv.Atoi(g.Gid)
	e := newEnv(t, `policies:
  - name: nobody-reads-demo
    effect: allow
    workloads: [{unix: {uid: 65534}}]
    credentials: [demo]
`, "  - {name: demo, static: {file: secrets/demo}}\n")
	e.write("secrets/demo", "s3cr3t-value\n")
	appendConfig(t, e, "socket_mode: \"0660\"\nsocket_group: daemon\n")
	// The socket's directory (root's, 0700 from newEnv) must let others in.
	if err := os.Chmod(filepath.Dir(e.socket), 0o755); err != nil {
		t.Fatal(err)
	}
	b := e.start()
	fi, err := os.Lstat(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Fatalf("socket %v group %d, want mode 0660 and group %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, gid)
	}
	client := sharedBinary(t)
	get := func(groups ...uint32) (string, string, error) {
		cmd := exec.Command(client, "get", "demo", "--socket", e.socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID, Groups: groups}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	out, errOut, err := get(uint32(gid))
	if err != nil || !strings.Contains(out, "s3cr3t-value") {
		t.Errorf("in the group: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = get()
	if err == nil || !strings.Contains(errOut, "permission denied") {
		t.Errorf("outside the group: %v, want permission denied\n%s%s", err, out, errOut)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d:\n%s", code, b.logs)
	}
}

func TestCheckSocketGroup(t *testing.T) {
	for _, tc := range []struct {
		name, config, problem string
	}{
		{name: "group name", config: "socket_group: daemon\n"},
		{name: "numeric gid without a name", config: "socket_group: 4711\n"},
		{name: "unknown group", config: "socket_group: no-such-group\n", problem: `:1: socket_group "no-such-group": no such group in /etc/group`},
		{name: "not a gid", config: "socket_group: \"-1\"\n", problem: `:1: socket_group "-1": not a group name or a gid`},
		{name: "mode without group access", config: "socket_group: daemon\nsocket_mode: \"0600\"\n", problem: `:1: socket_group "daemon": socket_mode "0600" does not let the group connect`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := user.LookupGroup("daemon"); err != nil && strings.Contains(tc.config, "daemon") {
				t.Skip("no group daemon in /etc/group")
			}
			dir := writeFiles(t, map[string]string{
				"credbroker.yaml": tc.config + "policies: policies.yaml\n",
				"policies.yaml":   "policies: []\n",
			})
			cfg := filepath.Join(dir, "credbroker.yaml")
			out, errOut, code := runCLI("check", "--config", cfg)
			if tc.problem == "" {
				if code != 0 {
					t.Fatalf("exit %d:\n%s%s", code, out, errOut)
				}
				return
			}
			if code != 1 || !strings.Contains(out, cfg+tc.problem) {
				t.Fatalf("exit %d, want 1 and %q:\n%s%s", code, cfg+tc.problem, out, errOut)
			}
		})
	}
}

// appendConfig adds top-level keys to the environment's configuration.
func appendConfig(t *testing.T, e *env, keys string) {
	t.Helper()
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(keys); err != nil {
		t.Fatal(err)
	}
}

// sharedDir makes a fresh directory with the given owner and mode.
func sharedDir(t *testing.T, uid, gid int, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cbh-") // short: socket paths are limited
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

// sharedBinary copies the credbroker binary where other users can run it.
func sharedBinary(t *testing.T) string {
	t.Helper()
	dir := sharedDir(t, 0, 0, 0o755)
	p := filepath.Join(dir, "credbroker")
	src, err := os.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return p
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

// swapper is the attacker of broker/testdata/symlinkswap, running.
type swapper struct {
	cmd     *exec.Cmd
	swapped chan []string
}

// startSwapper builds the attacker and runs it as nobody, with write access
// to dir through testGID, and waits until it is ready.
func startSwapper(t *testing.T, dir, target, spare string) *swapper {
	t.Helper()
	bin := filepath.Join(sharedDir(t, 0, 0, 0o755), "symlinkswap")
	if out, err := exec.Command("go", "build", "-o", bin, "../../broker/testdata/symlinkswap").CombinedOutput(); err != nil {
		t.Fatalf("building the attacker: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, dir, target, spare)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID, Groups: []uint32{testGID}}}
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
	s := &swapper{cmd: cmd, swapped: make(chan []string, 1)}
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

// stop kills the attacker and returns the names it swapped.
func (s *swapper) stop() []string {
	_ = s.cmd.Process.Kill()
	names := <-s.swapped
	_ = s.cmd.Wait()
	return names
}
