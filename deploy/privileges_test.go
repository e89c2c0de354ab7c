package deploy

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// runningBroker is a `credbroker run` started by a test.
type runningBroker struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // its exit, once done is closed

	mu  sync.Mutex
	log strings.Builder // its standard error so far
}

// logged returns what the broker wrote to its standard error so far.
func (b *runningBroker) logged() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// startBroker starts cmd, a `credbroker run`, and returns once the broker
// logs "credbroker serving". The broker is killed at the test's end if it
// is still running.
func startBroker(t *testing.T, cmd *exec.Cmd) *runningBroker {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &runningBroker{cmd: cmd, done: make(chan struct{})}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		var once bool
		for sc.Scan() {
			b.mu.Lock()
			b.log.WriteString(sc.Text() + "\n")
			b.mu.Unlock()
			var line struct{ Msg string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "credbroker serving" && !once {
				once = true
				close(serving)
			}
		}
		b.err = cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-b.done
	})
	select {
	case <-serving:
		return b
	case <-b.done:
		t.Fatalf("the broker exited before serving: %v\n%s", b.err, b.logged())
	case <-time.After(60 * time.Second):
		t.Fatal("the broker did not log \"credbroker serving\" within 60s")
	}
	return nil
}

// stop sends SIGTERM and waits for the broker to exit.
func (b *runningBroker) stop(t *testing.T) error {
	t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.done:
		return b.err
	case <-time.After(60 * time.Second):
		t.Fatal("the broker did not stop within 60s of SIGTERM")
	}
	return nil
}

// The caller's user in TestDeployedPrivileges: the app's in both examples.
const (
	callerUID = 1000
	callerGID = 1000
)

// TestDeployedPrivileges runs the broker as root confined to the
// capabilities each example grants it — the Kubernetes sidecar's
// securityContext, the ECS task definition's linuxParameters — and checks
// that it attests a caller of another uid (the apps' 1000), on the socket
// API and on a TCP listener, as a pod's or task's broker must. It also
// checks that fewer capabilities do not suffice: without a DAC capability
// the broker cannot find a TCP caller among other users' open files, and
// without CAP_SYS_PTRACE it cannot read their executables. It needs root,
// as the suite runs, to start processes under other users and
// capabilities.
func TestDeployedPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("this test runs the broker as root with chosen capabilities and a caller as uid %d, which needs root; running as uid %d", callerUID, os.Geteuid())
	}
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (scripts/test.sh installs it)", tool, err)
		}
	}

	// The capabilities the examples grant.
	b := findKubeBroker(t, renderKube(t, kubeDir+"/overlays/sidecar"))
	var kubeCaps []string
	for _, c := range b.container.SecurityContext.Capabilities.Add {
		kubeCaps = append(kubeCaps, string(c))
	}
	if drop := b.container.SecurityContext.Capabilities.Drop; len(drop) != 1 || drop[0] != corev1.Capability("ALL") {
		t.Fatalf("the sidecar's broker drops %v, not ALL: this test would not run it with what it holds", drop)
	}
	ecsCaps := effectiveCaps(readECSExample(t).broker)

	// Every file the caller runs must be reachable by uid 1000.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "credbroker")
	if err := os.Rename(credbrokerBinary(t), bin); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name                string
		caps                []string
		wantSocket, wantTCP bool
		checkSocket         bool // false where the kernel decides (pidfds from Linux 6.5 need no fd listing)
	}{
		{name: "kubernetes sidecar " + strings.Join(kubeCaps, ","), caps: kubeCaps, wantSocket: true, wantTCP: true, checkSocket: true},
		{name: "ecs " + strings.Join(ecsCaps, ","), caps: ecsCaps, wantSocket: true, wantTCP: true, checkSocket: true},
		{name: "SYS_PTRACE alone", caps: []string{"SYS_PTRACE"}, wantTCP: false},
		{name: "DAC_READ_SEARCH alone", caps: []string{"DAC_READ_SEARCH"}, wantSocket: false, wantTCP: false, checkSocket: true},
		{name: "no capability", caps: nil, wantSocket: false, wantTCP: false, checkSocket: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socketOK, tcpOK := attestAsConfined(t, bin, dir, tc.caps)
			if tc.checkSocket && socketOK != tc.wantSocket {
				t.Errorf("socket API caller of uid %d attested: %v, want %v", callerUID, socketOK, tc.wantSocket)
			}
			if tcpOK != tc.wantTCP {
				t.Errorf("TCP listener caller of uid %d attested: %v, want %v", callerUID, tcpOK, tc.wantTCP)
			}
		})
	}
}

// attestAsConfined runs a broker as root holding only caps (its bounding,
// permitted and effective sets; no new privileges, as
// allowPrivilegeEscalation: false), in the socket's group as the examples'
// brokers are, and asks it for a credential as uid 1000: once with
// credbroker get over the socket API, once with curl through an http
// listener that adds the credential to the request. It reports whether
// each was served.
func attestAsConfined(t *testing.T, bin, parent string, caps []string) (socketOK, tcpOK bool) {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "broker")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The audit directory is a volume in the examples: there when the
	// broker starts.
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 16)
	rand.Read(secret)
	value := hex.EncodeToString(secret)

	var mu sync.Mutex
	var got []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	defer upstream.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()

	config := fmt.Sprintf(`socket: %s/sock/broker.sock
socket_mode: "0660"
socket_group: "%d"
admin: ""
audit: {path: %s/state/audit.db}
policies: policies.yaml
credentials:
  - {name: demo, static: {env: DEMO_VALUE}}
listeners:
  - http: {listen: %s, upstream: %s, credential: demo, header: {name: Authorization, value: "Bearer {{.value}}"}}
`, dir, callerGID, dir, listen, upstream.URL)
	policies := fmt.Sprintf(`policies:
  - name: the-app
    effect: allow
    workloads: [{unix: {uid: %d}}]
    credentials: [demo]
`, callerUID)
	for name, content := range map[string]string{"credbroker.yaml": config, "policies.yaml": policies} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + strings.ToLower(c)
	}
	run := exec.Command("setpriv", "--groups", strconv.Itoa(callerGID), "--inh-caps=-all", "--bounding-set="+bounding, "--no-new-privs",
		bin, "run", "--config", filepath.Join(dir, "credbroker.yaml"))
	run.Env = append(os.Environ(), "DEMO_VALUE="+value)
	broker := startBroker(t, run)

	asCaller := func(name string, args ...string) ([]byte, error) {
		return exec.Command("setpriv", append([]string{
			"--reuid", strconv.Itoa(callerUID), "--regid", strconv.Itoa(callerGID), "--groups", strconv.Itoa(callerGID),
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", name}, args...)...).CombinedOutput()
	}
	out, err := asCaller(bin, "get", "demo", "--socket", filepath.Join(dir, "sock", "broker.sock"))
	socketOK = err == nil && strings.Contains(string(out), value)
	if err != nil && !strings.Contains(string(out), "401") && !strings.Contains(string(out), "unauthenticated") {
		t.Errorf("credbroker get as uid %d failed otherwise than by attestation: %v\n%s", callerUID, err, out)
	}

	out, err = asCaller("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://"+listen+"/x")
	if err != nil {
		t.Fatalf("curl as uid %d: %v\n%s", callerUID, err, out)
	}
	mu.Lock()
	reached := slices.Contains(got, "Bearer "+value)
	mu.Unlock()
	tcpOK = string(out) == "200" && reached
	if !tcpOK && string(out) != "401" {
		t.Errorf("curl through the http listener as uid %d: status %s, want 200 or 401 (attestation refused)", callerUID, out)
	}

	if err := broker.stop(t); err != nil {
		t.Errorf("the broker's exit: %v", err)
	}
	return socketOK, tcpOK
}
