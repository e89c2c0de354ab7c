package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binPath is the credbroker binary built once for the end-to-end tests.
var binPath string

func TestMain(m *testing.M) {
	if mode := os.Getenv(envSenderHelper); mode != "" {
		os.Exit(senderHelper(mode))
	}
	dir, err := os.MkdirTemp("", "credbroker-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "credbroker")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building credbroker:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hangBound is how long the tests wait for an event (a broker listening, a
// log line, a reply, an exit) before calling it a hang. Tests wait for the
// event itself; this only bounds the wait, generously, so that a loaded
// machine is slow rather than failing.
const hangBound = time.Minute

// env is one broker's files in a temporary directory.
type env struct {
	t      *testing.T
	dir    string
	socket string
	db     string
	config string
	env    []string // extra environment of the broker process
	wrap   []string // a command the broker runs under (prlimit …), if any
}

// newEnv writes a configuration with the given policies and credentials
// (YAML fragments) into a fresh directory. Socket paths stay short: Unix
// socket paths are limited to 108 bytes.
func newEnv(t *testing.T, policies, credentials string) *env {
	t.Helper()
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("/tmp", "cb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	e := &env{t: t, dir: dir, socket: filepath.Join(sockDir, "s"), db: filepath.Join(dir, "audit.db"), config: filepath.Join(dir, "credbroker.yaml")}
	e.write("policies.yaml", policies)
	e.write("credbroker.yaml", fmt.Sprintf(`socket: %s
admin: ""
audit: {path: %s, checkpoint: {file: %s, interval: 1s}}
policies: policies.yaml
log: {level: debug}
credentials:
%s`, e.socket, e.db, filepath.Join(dir, "checkpoint.json"), credentials))
	return e
}

func (e *env) write(name, content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// brokerProc is a running credbroker child process.
type brokerProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *syncBuffer
	done   chan struct{}
	socket string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs `credbroker run` with extra arguments and waits until the
// socket answers. The deadline only catches a broker that never listens: a
// loaded machine may take seconds to start one.
func (e *env) start(extra ...string) *brokerProc {
	e.t.Helper()
	args := append([]string{"run", "--config", e.config}, extra...)
	cmd := exec.Command(binPath, args...)
	if len(e.wrap) > 0 {
		cmd = exec.Command(e.wrap[0], append(append(e.wrap[1:len(e.wrap):len(e.wrap)], binPath), args...)...)
	}
	cmd.Env = append(os.Environ(), e.env...)
	b := &brokerProc{t: e.t, cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{}), socket: e.socket}
	cmd.Stdout, cmd.Stderr = b.logs, b.logs
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(b.done) }()
	e.t.Cleanup(func() {
		if b.running() {
			_ = cmd.Process.Kill()
			<-b.done
		}
	})
	deadline := time.Now().Add(hangBound)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", e.socket); err == nil {
			c.Close()
			return b
		}
		if !b.running() {
			e.t.Fatalf("broker exited at start:\n%s", b.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("broker did not listen on %s:\n%s", e.socket, b.logs)
	return nil
}

func (b *brokerProc) running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// waitLog waits until the broker has logged s.
func (b *brokerProc) waitLog(s string) {
	b.t.Helper()
	deadline := time.Now().Add(hangBound)
	for !strings.Contains(b.logs.String(), s) {
		if time.Now().After(deadline) {
			b.t.Fatalf("no %q in the broker's log after %v:\n%s", s, hangBound, b.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for exit, returning the exit code.
func (b *brokerProc) stop(sig syscall.Signal) int {
	b.t.Helper()
	_ = b.cmd.Process.Signal(sig)
	select {
	case <-b.done:
	case <-time.After(hangBound):
		b.t.Fatalf("broker did not exit after %v:\n%s", sig, b.logs)
	}
	return b.cmd.ProcessState.ExitCode()
}

// client speaks the socket API.
func socketClient(socket string) *http.Client {
	return &http.Client{
		Timeout: hangBound,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			MaxIdleConnsPerHost: 64,
		},
	}
}

// apiReply is a decoded socket API answer.
type apiReply struct {
	Status int
	Body   []byte
	OK     struct {
		Name       string            `json:"name"`
		Kind       string            `json:"kind"`
		Data       map[string]string `json:"data"`
		ExpiresAt  time.Time         `json:"expires_at"`
		LeaseID    string            `json:"lease_id"`
		DecisionID string            `json:"decision_id"`
	}
	Err struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			DecisionID string `json:"decision_id"`
		} `json:"error"`
	}
}

// call makes one socket API request. header nil means the usual
// Credbroker-Request: 1.
func call(t *testing.T, c *http.Client, method, path string, header http.Header, body io.Reader) apiReply {
	t.Helper()
	req, err := http.NewRequest(method, "http://credbroker"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if header == nil {
		header = http.Header{"Credbroker-Request": {"1"}}
	}
	req.Header = header
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var r apiReply
	r.Status = resp.StatusCode
	r.Body, _ = io.ReadAll(resp.Body)
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &r.OK); err != nil {
			t.Fatalf("decoding %s: %v", r.Body, err)
		}
	} else if len(r.Body) > 0 && r.Body[0] == '{' {
		if err := json.Unmarshal(r.Body, &r.Err); err != nil {
			t.Fatalf("decoding %s: %v", r.Body, err)
		}
	}
	return r
}

// credbroker runs the binary to completion and returns stdout, stderr and
// the exit code.
func credbroker(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return credbrokerEnv(t, nil, args...)
}

// credbrokerEnv is credbroker with extra environment.
func credbrokerEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("credbroker %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// auditRow is the part of an audit record the tests check.
type auditRow struct {
	Seq          int64           `json:"seq"`
	DecisionID   string          `json:"decision_id"`
	Decision     string          `json:"decision"`
	Reason       string          `json:"reason"`
	Policy       string          `json:"policy"`
	Attestor     string          `json:"attestor"`
	Subject      string          `json:"subject"`
	Credential   string          `json:"credential"`
	Channel      string          `json:"channel"`
	TargetHost   string          `json:"target_host"`
	Database     string          `json:"database"`
	UpstreamUser string          `json:"upstream_user"`
	Method       string          `json:"method"`
	Path         string          `json:"path"`
	Fingerprint  string          `json:"fingerprint"`
	LeaseID      string          `json:"lease_id"`
	PeerPID      int64           `json:"peer_pid"`
	Input        json.RawMessage `json:"input"`
}

// auditRows reads every row through `credbroker audit query --format json`.
func auditRows(t *testing.T, db string) map[string]auditRow {
	t.Helper()
	out, errOut, code := credbroker(t, "audit", "query", "--db", db, "--format", "json")
	if code != 0 {
		t.Fatalf("audit query: exit %d: %s", code, errOut)
	}
	rows := map[string]auditRow{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r auditRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit query line %q: %v", sc.Text(), err)
		}
		rows[r.DecisionID] = r
	}
	return rows
}

// expectRefusedAgainstPeer checks that each refused decision of ids is an
// error row recorded against the peer (this test process, root) with a
// reason.
func expectRefusedAgainstPeer(t *testing.T, rows map[string]auditRow, ids map[string]string) {
	t.Helper()
	for name, id := range ids {
		row := rows[id]
		if row.Decision != "error" || row.Subject != "unix:uid:0" || row.Reason == "" || row.PeerPID != int64(os.Getpid()) {
			t.Errorf("%s: audit row %+v, want an error recorded against the peer", name, row)
		}
	}
}

// expectNoTokenSignatures checks that no token's signature reached the
// broker's log, the audit database or its WAL.
func expectNoTokenSignatures(t *testing.T, logs string, files map[string]string, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		sig := tok[strings.LastIndex(tok, ".")+1:]
		for where, text := range map[string]string{"log": logs, "db": files["audit.db"], "wal": files["audit.db-wal"]} {
			if strings.Contains(text, sig) {
				t.Errorf("the %s holds a token signature", where)
			}
		}
	}
}
