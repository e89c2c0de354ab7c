package main

import (
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

	"github.com/credbroker/credbroker/broker/brokertest"
)

// Users of the tests that need another uid than root's.
const (
	nobodyUID = 65534 // a client
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
// root's (brokertest.StartSwapper). The file must stay as it was, and
// each time the socket must come out with its mode and group.
func TestSocketInHostileDirectory(t *testing.T) {
	requireRoot(t)
	const starts = 25
	e := newEnv(t, e2ePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t-value\n")
	appendConfig(t, e, fmt.Sprintf("socket_mode: \"0660\"\nsocket_group: %d\n", testGID))
	target := brokertest.NewRootFile(t)
	dir := brokertest.Dir(t, 0, testGID, 0o770)
	e.socket = filepath.Join(dir, "broker.sock")
	sw := brokertest.StartSwapper(t, brokertest.SwapperConfig{Dir: dir, Group: testGID, Target: target.Path, Spare: filepath.Base(e.socket)})
	defer target.Check(t) // also when a check below fails
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
	swapped := sw.Stop()
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

// sharedBinary copies the credbroker binary where other users can run it.
func sharedBinary(t *testing.T) string {
	t.Helper()
	dir := brokertest.Dir(t, 0, 0, 0o755)
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
