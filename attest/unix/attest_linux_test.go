//go:build linux

package unix

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// Environment of helper processes: the test binary re-executed with
// -test.run=^TestHelperProcess$.
const (
	envHelper   = "CREDBROKER_UNIX_TEST_HELPER"   // connect | holdfd | pidns
	envSocket   = "CREDBROKER_UNIX_TEST_SOCKET"   // socket path
	envHold     = "CREDBROKER_UNIX_TEST_HOLD"     // connect: exit | hold | handoff
	envScenario = "CREDBROKER_UNIX_TEST_SCENARIO" // pidns: see pidnsScenarios
	envNoPidfd  = "CREDBROKER_UNIX_TEST_NOPIDFD"  // pidns: "1" for the start-time fallback
)

// helperTimeout bounds every helper process, so that none outlives a failed
// test for long.
const helperTimeout = 30 * time.Second

// modes are the two ways an Attestor confirms the peer.
var modes = []struct {
	name    string
	noPidfd bool
}{
	{"pidfd", false},
	{"start-time", true},
}

// TestHelperProcess is not a test: it is the body of the helper processes
// the other tests start. Run directly, it does nothing.
func TestHelperProcess(t *testing.T) {
	var err error
	switch os.Getenv(envHelper) {
	case "":
		return
	case "connect":
		err = helperConnect()
	case "holdfd":
		err = helperHoldFD()
	case "pidns":
		err = helperPidns()
	case "sender":
		err = helperSender()
	case "write":
		err = helperWrite()
	default:
		err = fmt.Errorf("unknown helper %q", os.Getenv(envHelper))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// helperConnect connects to the socket, then exits at once, holds the
// connection until the other end closes it, or hands it to a process of its
// own and exits.
func helperConnect() error {
	conn, err := net.Dial("unix", os.Getenv(envSocket))
	if err != nil {
		return err
	}
	switch os.Getenv(envHold) {
	case "exit":
		return nil
	case "hold":
		conn.SetReadDeadline(time.Now().Add(helperTimeout))
		io.Copy(io.Discard, conn)
		return nil
	case "handoff":
		f, err := conn.(*net.UnixConn).File()
		if err != nil {
			return err
		}
		cmd := helperCommand(context.Background(), "holdfd")
		cmd.ExtraFiles = []*os.File{f}
		return cmd.Start() // and exit, leaving the connection to the new process
	}
	return fmt.Errorf("unknown %s %q", envHold, os.Getenv(envHold))
}

// helperHoldFD holds the connection passed as fd 3 until it is closed.
func helperHoldFD() error {
	conn, err := net.FileConn(os.NewFile(3, "conn"))
	if err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(helperTimeout))
	io.Copy(io.Discard, conn)
	return nil
}

// helperCommand re-executes the test binary as a helper.
func helperCommand(ctx context.Context, mode string, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.timeout="+helperTimeout.String())
	// Race-enabled binaries otherwise sleep a second when they exit 0.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), append([]string{envHelper + "=" + mode, "GORACE=" + gorace}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// listen returns a listener on a fresh socket in dir.
func listen(t *testing.T, dir string) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: filepath.Join(dir, "broker.sock")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// selfPair returns both ends of a connection from the test process to
// itself: the accepted server end first.
func selfPair(t testing.TB) (server, client *net.UnixConn) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: filepath.Join(t.TempDir(), "s.sock")})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialUnix("unix", nil, ln.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func newAttestor(t testing.TB, cfg Config) *Attestor {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func selfExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// checkIdentity compares id with the wanted kernel facts.
func checkIdentity(t *testing.T, id attest.Identity, uid, gid, pid int, exe, sum string) {
	t.Helper()
	if id.Method != attest.MethodUnix {
		t.Errorf("Method = %q, want %q", id.Method, attest.MethodUnix)
	}
	if want := "unix:uid:" + strconv.Itoa(uid); id.Subject != want {
		t.Errorf("Subject = %q, want %q", id.Subject, want)
	}
	want := map[string]any{
		ClaimUID: int64(uid), ClaimGID: int64(gid), ClaimPID: int64(pid),
		ClaimExe: exe, ClaimExeSHA256: sum,
	}
	for k, v := range want {
		if id.Claims[k] != v {
			t.Errorf("claim %s = %#v, want %#v", k, id.Claims[k], v)
		}
	}
	// The test processes run outside Kubernetes and containers here, so
	// there is nothing more; parseCgroup's tests cover the rest.
	for k := range id.Claims {
		if _, ok := want[k]; !ok && k != ClaimPodUID && k != ClaimContainerID {
			t.Errorf("unexpected claim %s = %#v", k, id.Claims[k])
		}
	}
}

func TestNewProbesKernel(t *testing.T) {
	a := newAttestor(t, Config{})
	if a.noPidfd.Load() {
		t.Fatal("this kernel (Linux >= 6.5) supports SO_PEERPIDFD, but New chose the fallback")
	}
	if b := newAttestor(t, Config{DisablePidfd: true}); !b.noPidfd.Load() {
		t.Fatal("DisablePidfd did not select the fallback")
	}
	if _, err := New(Config{ProcRoot: "/nonexistent"}); err == nil || !strings.HasPrefix(err.Error(), "unix: ") {
		t.Errorf("New with a missing procfs: error = %v", err)
	}
	if _, err := New(Config{HashCacheSize: -1}); err == nil {
		t.Error("New accepted a negative cache size")
	}
}

func TestAttestSelf(t *testing.T) {
	exe := selfExe(t)
	sum := fileSHA256(t, exe)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			a := newAttestor(t, Config{DisablePidfd: m.noPidfd})
			server, _ := selfPair(t)
			id, err := a.Attest(context.Background(), a.newConn(server))
			if err != nil {
				t.Fatal(err)
			}
			checkIdentity(t, id, os.Getuid(), os.Getgid(), os.Getpid(), exe, sum)
		})
	}
}

// sharedDir returns a directory other users can enter, for sockets and
// executables used by processes running as another uid.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "credbroker-unix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyExe copies the test binary to path (via a temporary file and rename,
// so an existing file is replaced by a new inode), appending extra.
func copyExe(t *testing.T, path string, extra []byte) {
	t.Helper()
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmp := path + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Write(extra); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startPeer starts exe as a helper that connects to ln and holds the
// connection, and returns the accepted connection.
func startPeer(t *testing.T, ln *net.UnixListener, exe string, cred *syscall.Credential) (*exec.Cmd, *net.UnixConn) {
	t.Helper()
	cmd := helperCommand(context.Background(), "connect", envSocket+"="+ln.Addr().String(), envHold+"=hold")
	cmd.Path, cmd.Args[0] = exe, exe
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ln.SetDeadline(time.Now().Add(helperTimeout))
	conn, err := ln.AcceptUnix()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close() // the helper exits on EOF
		if cmd.ProcessState == nil {
			if err := cmd.Wait(); err != nil {
				t.Errorf("peer helper: %v", err)
			}
		}
	})
	return cmd, conn
}

func TestAttestOtherUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root, to run a peer as another uid")
	}
	dir := sharedDir(t)
	exe := filepath.Join(dir, "peer")
	copyExe(t, exe, nil)
	sum := fileSHA256(t, exe)
	ln := listen(t, dir)
	if err := os.Chmod(ln.Addr().String(), 0o777); err != nil {
		t.Fatal(err)
	}
	const uid, gid = 65534, 65533
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			a := newAttestor(t, Config{DisablePidfd: m.noPidfd})
			cmd, conn := startPeer(t, ln, exe, &syscall.Credential{Uid: uid, Gid: gid})
			id, err := a.Attest(context.Background(), a.newConn(conn))
			if err != nil {
				t.Fatal(err)
			}
			checkIdentity(t, id, uid, gid, cmd.Process.Pid, exe, sum)
		})
	}
}

func TestExeHashCache(t *testing.T) {
	dir := sharedDir(t)
	exe := filepath.Join(dir, "peer")
	copyExe(t, exe, nil)
	ln := listen(t, dir)
	a := newAttestor(t, Config{})
	ctx := context.Background()

	_, conn1 := startPeer(t, ln, exe, nil)
	id, err := a.Attest(ctx, a.newConn(conn1))
	if err != nil {
		t.Fatal(err)
	}
	sum1 := fileSHA256(t, exe)
	if id.Claims[ClaimExeSHA256] != sum1 {
		t.Fatalf("exe_sha256 = %v, want %s", id.Claims[ClaimExeSHA256], sum1)
	}
	if n := a.hashed.Load(); n != 1 {
		t.Fatalf("hashed %d executables after the first Attest, want 1", n)
	}
	for range 3 {
		if _, err := a.Attest(ctx, a.newConn(conn1)); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.hashed.Load(); n != 1 {
		t.Fatalf("hashed %d times after repeated Attest of one executable, want 1", n)
	}

	// Replace the file with other content (a new inode, as deployments do).
	copyExe(t, exe, []byte("credbroker-different-content"))
	sum2 := fileSHA256(t, exe)
	if sum2 == sum1 {
		t.Fatal("replacement has the same hash")
	}
	_, conn2 := startPeer(t, ln, exe, nil)
	id, err = a.Attest(ctx, a.newConn(conn2))
	if err != nil {
		t.Fatal(err)
	}
	if id.Claims[ClaimExeSHA256] != sum2 {
		t.Fatalf("after replacement exe_sha256 = %v, want %s", id.Claims[ClaimExeSHA256], sum2)
	}
	if n := a.hashed.Load(); n != 2 {
		t.Fatalf("hashed %d times after the executable was replaced, want 2", n)
	}
	// The first peer still runs the old, now unlinked file: still its own
	// hash. Unlinking changed the inode's ctime, so it is hashed once more.
	for range 2 {
		id, err = a.Attest(ctx, a.newConn(conn1))
		if err != nil {
			t.Fatal(err)
		}
		if id.Claims[ClaimExeSHA256] != sum1 {
			t.Fatalf("old peer: exe_sha256 = %v, want %s", id.Claims[ClaimExeSHA256], sum1)
		}
	}
	if n := a.hashed.Load(); n != 3 {
		t.Fatalf("hashed %d times, want 3", n)
	}
	if want := exe + " (deleted)"; id.Claims[ClaimExe] != want {
		t.Errorf("old peer: exe = %v, want %q", id.Claims[ClaimExe], want)
	}
}

// TestExeHashCacheInPlaceRewrite rewrites an executable in place, keeping
// its inode, size and modification time, as its owner can: the change time
// still differs, so the new content is hashed.
func TestExeHashCacheInPlaceRewrite(t *testing.T) {
	dir := sharedDir(t)
	exe := filepath.Join(dir, "peer")
	copyExe(t, exe, []byte("AAAA"))
	ln := listen(t, dir)
	a := newAttestor(t, Config{})
	ctx := context.Background()

	cmd, conn := startPeer(t, ln, exe, nil)
	id, err := a.Attest(ctx, a.newConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	sum1 := fileSHA256(t, exe)
	if id.Claims[ClaimExeSHA256] != sum1 {
		t.Fatalf("exe_sha256 = %v, want %s", id.Claims[ClaimExeSHA256], sum1)
	}
	conn.Close()
	if err := cmd.Wait(); err != nil { // a running executable cannot be written
		t.Fatal(err)
	}

	before, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(exe, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("BBBB"), before.Size()-4); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(exe, before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() || !os.SameFile(before, after) {
		t.Fatal("rewrite changed the inode, size or modification time")
	}
	sum2 := fileSHA256(t, exe)

	_, conn2 := startPeer(t, ln, exe, nil)
	id, err = a.Attest(ctx, a.newConn(conn2))
	if err != nil {
		t.Fatal(err)
	}
	if id.Claims[ClaimExeSHA256] != sum2 || a.hashed.Load() != 2 {
		t.Fatalf("after in-place rewrite: exe_sha256 = %v (want %s), hashed %d (want 2)", id.Claims[ClaimExeSHA256], sum2, a.hashed.Load())
	}
}

func TestAttestRefusals(t *testing.T) {
	a := newAttestor(t, Config{})
	server, _ := selfPair(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Attest(ctx, a.newConn(server)); !errors.Is(err, attest.ErrFailed) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: error = %v", err)
	}
	if _, err := a.Attest(context.Background(), nil); !errors.Is(err, attest.ErrFailed) {
		t.Errorf("nil conn: error = %v", err)
	}
	closed, _ := selfPair(t)
	closed.Close()
	_, err := a.Attest(context.Background(), a.newConn(closed))
	var ae *attest.Error
	if !errors.As(err, &ae) || ae.Method != attest.MethodUnix || !strings.Contains(err.Error(), "unix: ") {
		t.Errorf("closed conn: error = %v", err)
	}
}

// TestAttestClosesDescriptors checks that no pidfd, /proc handle or netlink
// socket is left open: Attest opens none it does not close, and what a
// connection holds of its peer is released when it is closed.
func TestAttestClosesDescriptors(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			a := newAttestor(t, Config{DisablePidfd: m.noPidfd})
			attestOnce := func() {
				server, client := selfPair(t)
				conn := a.newConn(server)
				for range 3 {
					if _, err := a.Attest(context.Background(), conn); err != nil {
						t.Fatal(err)
					}
				}
				conn.Close()
				client.Close()
			}
			attestOnce()
			before := openFDs(t)
			for range 20 {
				attestOnce()
			}
			if after := openFDs(t); after != before {
				t.Errorf("open descriptors went from %d to %d over 20 connections", before, after)
			}
		})
	}
}

// TestAttestAfterClose: a closed connection holds nothing of its peer and
// is refused.
func TestAttestAfterClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			a := newAttestor(t, Config{DisablePidfd: m.noPidfd})
			server, _ := selfPair(t)
			conn := a.newConn(server)
			if _, err := a.Attest(context.Background(), conn); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if _, err := a.Attest(context.Background(), conn); !errors.Is(err, attest.ErrFailed) {
				t.Fatalf("Attest after Close = %v, want a refusal", err)
			}
		})
	}
}

// TestAttestConcurrent exercises the cache and the buffer pool under -race.
func TestAttestConcurrent(t *testing.T) {
	a := newAttestor(t, Config{HashCacheSize: 1})
	server, _ := selfPair(t)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for range 20 {
				if _, err = a.Attest(context.Background(), a.newConn(server)); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// pidnsResult is what helperPidns reports on stdout.
type pidnsResult struct {
	ChildPID       int    `json:"child_pid"`
	ReplacementPID int    `json:"replacement_pid,omitempty"`
	NaiveExe       string `json:"naive_exe,omitempty"` // /proc/CHILD/exe read by pid just before Attest
	Accepted       bool   `json:"accepted"`
	IdentityPID    int64  `json:"identity_pid,omitempty"`
	IdentityExe    string `json:"identity_exe,omitempty"`
	SelfExe        string `json:"self_exe"`
	Error          string `json:"error,omitempty"`
	Failed         bool   `json:"failed"` // errors.Is(err, attest.ErrFailed)
	Reason         string `json:"reason,omitempty"`
}

const resultPrefix = "PIDNS-RESULT: "

// pidnsScenarios are the situations TestPIDReuse runs in a fresh pid
// namespace, each with both modes.
var pidnsScenarios = []struct {
	name     string
	accepted bool
	replaced bool // the pid is taken by a replacement process
}{
	// The peer connects and stays: the positive control.
	{name: "alive", accepted: true},
	// The peer connects and exits before Attest; nobody reuses the pid.
	{name: "exited"},
	// The peer connects and exits before Attest; its pid is reused.
	{name: "replaced", replaced: true},
	// The peer connects, hands the connection to a process of its own and
	// exits before Attest; its pid is reused. The connection is still open
	// on the peer's side, so only the process behind it tells.
	{name: "handoff", replaced: true},
	// The peer is killed and its pid reused inside Attest, after the peer
	// credentials were taken and before /proc was read.
	{name: "window", replaced: true},
}

// TestPIDReuse shows that a peer which exits, or whose pid another process
// takes, before attestation completes is refused, with SO_PEERPIDFD and with
// the start-time fallback. Each case runs in a new pid namespace, where the
// helper is pid 1 and, as root, picks the next pid through ns_last_pid.
func TestPIDReuse(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root, to create pid namespaces")
	}
	for _, sc := range pidnsScenarios {
		for _, m := range modes {
			t.Run(sc.name+"/"+m.name, func(t *testing.T) {
				res := runPidns(t, sc.name, m.noPidfd)
				if sc.replaced {
					if res.ReplacementPID != res.ChildPID {
						t.Fatalf("replacement got pid %d, peer had %d: the pid was not reused", res.ReplacementPID, res.ChildPID)
					}
					if !strings.HasSuffix(res.NaiveExe, "/sleep") {
						t.Fatalf("/proc/%d/exe read by pid is %q, want the replacement sleep: the race was not set up", res.ChildPID, res.NaiveExe)
					}
				}
				if sc.accepted {
					if !res.Accepted {
						t.Fatalf("live peer refused: %s", res.Error)
					}
					if res.IdentityPID != int64(res.ChildPID) || res.IdentityExe != res.SelfExe {
						t.Fatalf("identity pid %d exe %q, want pid %d exe %q", res.IdentityPID, res.IdentityExe, res.ChildPID, res.SelfExe)
					}
					return
				}
				if res.Accepted {
					t.Fatalf("peer that exited was accepted as pid %d running %q", res.IdentityPID, res.IdentityExe)
				}
				if !res.Failed || res.Reason != reasonGone {
					t.Fatalf("refusal: failed=%v reason=%q error=%q; want an attest.ErrFailed with reason %q", res.Failed, res.Reason, res.Error, reasonGone)
				}
				t.Logf("refused: %s", res.Error)
			})
		}
	}
}

// runPidns runs helperPidns in new pid and mount namespaces. When the
// helper could not set the race up (another task took the pid the
// replacement needed), which says nothing of the attestor, the scenario
// runs once more.
func runPidns(t *testing.T, scenario string, noPidfd bool) pidnsResult {
	t.Helper()
	res, setup := runPidnsOnce(t, scenario, noPidfd)
	if setup == "" {
		return res
	}
	t.Logf("pid namespace helper could not set up the race, running it again: %s", setup)
	if res, setup = runPidnsOnce(t, scenario, noPidfd); setup != "" {
		t.Fatalf("pid namespace helper could not set up the race twice: %s", setup)
	}
	return res
}

// runPidnsOnce runs helperPidns once; setup is the helper's error when it
// failed to set up the scenario.
func runPidnsOnce(t *testing.T, scenario string, noPidfd bool) (res pidnsResult, setup string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	cmd := helperCommand(ctx, "pidns", envSocket+"="+filepath.Join(dir, "broker.sock"), envScenario+"="+scenario, envNoPidfd+"="+strconv.FormatBool(noPidfd))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if strings.Contains(stderr.String(), pidSetupFailed) {
			return pidnsResult{}, strings.TrimSpace(stderr.String())
		}
		t.Fatalf("pid namespace helper: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), resultPrefix); ok {
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				t.Fatal(err)
			}
			t.Logf("helper result: %s", line)
			return res, ""
		}
	}
	t.Fatalf("pid namespace helper printed no result\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	return pidnsResult{}, ""
}

// helperPidns is pid 1 of a new pid namespace. It mounts a procfs of its
// own, lets a peer connect, sets up the scenario and attests the
// connection.
func helperPidns() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("pid namespace helper is pid %d, not 1", os.Getpid())
	}
	// Keep the mounts below out of the parent's mount namespace.
	if err := sys.Mount("", "/", "", sys.MS_REC|sys.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := sys.Mount("proc", "/proc", "proc", sys.MS_NOSUID|sys.MS_NODEV|sys.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc: %w", err)
	}
	scenario := os.Getenv(envScenario)
	noPidfd, _ := strconv.ParseBool(os.Getenv(envNoPidfd))
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	res := pidnsResult{SelfExe: self}

	var peer, replacement *exec.Cmd
	defer func() {
		for _, c := range []*exec.Cmd{peer, replacement} {
			if c != nil && c.ProcessState == nil {
				c.Process.Kill()
				c.Wait()
			}
		}
	}()
	var hookErr error
	cfg := Config{DisablePidfd: noPidfd}
	if scenario == "window" {
		cfg.Hooks.AfterPeerCred = func(pid int32) {
			if int(pid) != peer.Process.Pid {
				hookErr = fmt.Errorf("hook got pid %d, peer is %d", pid, peer.Process.Pid)
				return
			}
			peer.Process.Kill()
			peer.Wait()
			replacement, hookErr = takePID(peer.Process.Pid, sleep)
			if hookErr == nil {
				res.NaiveExe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			}
		}
	}
	a, err := New(cfg)
	if err != nil {
		return err
	}

	ln, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: os.Getenv(envSocket)})
	if err != nil {
		return err
	}
	defer ln.Close()
	hold := map[string]string{"alive": "hold", "exited": "exit", "replaced": "exit", "handoff": "handoff", "window": "hold"}[scenario]
	if hold == "" {
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	peer = helperCommand(context.Background(), "connect", envSocket+"="+os.Getenv(envSocket), envHold+"="+hold)
	if err := peer.Start(); err != nil {
		return err
	}
	res.ChildPID = peer.Process.Pid
	ln.SetDeadline(time.Now().Add(helperTimeout))
	conn, err := ln.AcceptUnix()
	if err != nil {
		return err
	}
	defer conn.Close()

	switch scenario {
	case "exited", "replaced", "handoff":
		if err := peer.Wait(); err != nil {
			return fmt.Errorf("peer: %w", err)
		}
		if scenario != "exited" {
			if replacement, err = takePID(res.ChildPID, sleep); err != nil {
				return err
			}
			res.NaiveExe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", res.ChildPID))
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	id, err := a.Attest(ctx, a.newConn(conn))
	if hookErr != nil {
		return hookErr
	}
	if replacement != nil {
		res.ReplacementPID = replacement.Process.Pid
	}
	if err == nil {
		res.Accepted = true
		res.IdentityPID, _ = id.Claims[ClaimPID].(int64)
		res.IdentityExe, _ = id.Claims[ClaimExe].(string)
	} else {
		res.Error = err.Error()
		res.Failed = errors.Is(err, attest.ErrFailed)
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

// pidSetupFailed starts the error of a helper that could not give the
// replacement process the pid it needs.
const pidSetupFailed = "pid setup: "

// takePID starts exe so that it gets pid, which must be free, by setting the
// namespace's last allocated pid just below it. Threads take pids too, so a
// thread started at the wrong moment (the helper's, or one of the Go
// runtime threads of a peer's child) can take it first; that is retried,
// and reported if the pid is lost for good.
func takePID(pid int, exe string) (*exec.Cmd, error) {
	for range 10 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			return nil, fmt.Errorf("set ns_last_pid: %w", err)
		}
		cmd := exec.Command(exe, "60")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		if cmd.Process.Pid == pid {
			return cmd, nil
		}
		cmd.Process.Kill()
		cmd.Wait()
		if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			var holder []string
			for line := range strings.Lines(string(status)) {
				if strings.HasPrefix(line, "Name:") || strings.HasPrefix(line, "Tgid:") {
					holder = append(holder, strings.Join(strings.Fields(line), " "))
				}
			}
			return nil, fmt.Errorf("%spid %d was taken by another task (%s)", pidSetupFailed, pid, strings.Join(holder, ", "))
		}
	}
	return nil, fmt.Errorf("%scould not obtain pid %d", pidSetupFailed, pid)
}

func BenchmarkAttest(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			a := newAttestor(b, Config{DisablePidfd: m.noPidfd})
			server, _ := selfPair(b)
			conn := a.newConn(server)
			ctx := context.Background()
			if _, err := a.Attest(ctx, conn); err != nil { // warm the cache
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Attest(ctx, conn); err != nil {
					b.Fatal(err)
				}
			}
			if a.hashed.Load() != 1 {
				b.Fatalf("hashed %d times, want 1", a.hashed.Load())
			}
		})
	}
}

func TestNewRefusesForeignProcfs(t *testing.T) {
	dir := t.TempDir()
	// A procfs of another pid namespace shows this process under another
	// pid, or not at all.
	if err := os.Symlink(strconv.Itoa(os.Getpid()+1), filepath.Join(dir, "self")); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{ProcRoot: dir})
	if err == nil || !strings.Contains(err.Error(), "another pid namespace") {
		t.Fatalf("New with a foreign procfs: error = %v", err)
	}
}

func TestParseDiagPeer(t *testing.T) {
	msg := func(typ uint16, body []byte) []byte {
		b := make([]byte, sizeofNlMsghdr, sizeofNlMsghdr+len(body))
		binary.NativeEndian.PutUint32(b[0:], uint32(sizeofNlMsghdr+len(body)))
		binary.NativeEndian.PutUint16(b[4:], typ)
		return append(b, body...)
	}
	diag := func(ino uint32, attrs ...[]byte) []byte {
		b := make([]byte, sizeofUnixDiagMsg)
		binary.NativeEndian.PutUint32(b[4:], ino)
		for _, a := range attrs {
			b = append(b, a...)
		}
		return b
	}
	attr := func(typ uint16, val []byte) []byte {
		b := make([]byte, 4, 8+len(val))
		binary.NativeEndian.PutUint16(b[0:], uint16(4+len(val)))
		binary.NativeEndian.PutUint16(b[2:], typ)
		b = append(b, val...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	errno := func(e sys.Errno) []byte { return binary.NativeEndian.AppendUint32(nil, uint32(-int32(e))) }

	tests := []struct {
		name    string
		in      []byte
		want    uint64
		wantErr bool
	}{
		{"peer", msg(sys.SOCK_DIAG_BY_FAMILY, diag(7, attr(1, []byte("name")), attr(unixDiagPeer, u32(9)))), 9, false},
		{"no peer attribute", msg(sys.SOCK_DIAG_BY_FAMILY, diag(7, attr(1, []byte{1}))), 0, false},
		{"orphaned peer", msg(sys.SOCK_DIAG_BY_FAMILY, diag(7, attr(unixDiagPeer, u32(0)))), 0, false},
		{"other inode", msg(sys.SOCK_DIAG_BY_FAMILY, diag(8, attr(unixDiagPeer, u32(9)))), 0, true},
		{"kernel error", msg(sys.NLMSG_ERROR, errno(sys.ENOENT)), 0, true},
		{"short", []byte{1, 2, 3}, 0, true},
		{"length beyond buffer", append(msg(sys.SOCK_DIAG_BY_FAMILY, diag(7))[:sizeofNlMsghdr], 0), 0, true},
		{"short body", msg(sys.SOCK_DIAG_BY_FAMILY, []byte{0, 0}), 0, true},
		{"bad attribute length", msg(sys.SOCK_DIAG_BY_FAMILY, append(diag(7), 2, 0, 2, 0)), 0, true},
		{"unexpected type", msg(99, nil), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDiagPeer(tt.in, 7)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseDiagPeer = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
