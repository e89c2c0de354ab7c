package client_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/client"
)

// The tests run against the real broker: TestMain builds cmd/credbroker
// once and starts one shared broker, whose socket it puts in
// $CREDBROKER_SOCKET for the examples; tests that stop or reconfigure a
// broker start their own.

var brokerBin string

// shared is the broker every test may use; see sharedConfig.
var shared *broker

// hangBound only bounds waits for events (a socket answering, a refresh),
// generously, so that a loaded machine is slow rather than failing.
const hangBound = time.Minute

// sharedSecret is the value of "demo" and "short" on the shared broker.
const sharedSecret = "CANARY-client-7d41e9"

// sharedPolicies: root (the tests run as root) may read demo (capped at 10
// minutes), short (2 seconds) and gone; forbidden is denied by a rule.
const sharedPolicies = `policies:
  - name: root-reads-demo
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [demo, gone, forbidden]
    ttl: 10m
  - name: root-reads-short
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [short]
    ttl: 2s
  - name: nobody-reads-forbidden
    effect: deny
    workloads: [{unix: {uid: 0}}]
    credentials: [forbidden]
`

const sharedCredentials = `  - {name: demo, static: {file: secrets/demo}}
  - {name: short, static: {file: secrets/demo}}
  - {name: forbidden, static: {file: secrets/demo}}
  - {name: gone, static: {file: secrets/gone}}
`

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "credbroker-client-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	brokerBin = filepath.Join(dir, "credbroker")
	build := exec.Command("go", "build", "-o", brokerBin, "github.com/credbroker/credbroker/cmd/credbroker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building credbroker:", err)
		return 1
	}
	shared, err = startBroker(filepath.Join(dir, "shared"), sharedPolicies, sharedCredentials,
		map[string]string{"secrets/demo": sharedSecret + "\n", "secrets/gone": "soon gone"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(filepath.Dir(shared.socket))
	defer shared.stop()
	// "gone" was read at start; without its file the broker cannot serve
	// it: a provider failure, 503 unavailable.
	if err := os.Remove(filepath.Join(shared.dir, "secrets/gone")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv(client.SocketEnv, shared.socket)
	return m.Run()
}

// broker is a running `credbroker run`.
type broker struct {
	dir, socket string
	cmd         *exec.Cmd
	logs        *syncBuffer
	done        chan struct{}
}

// startBroker writes a configuration with the given policies and
// credentials (YAML fragments) and files into dir, runs the broker on it
// and waits until its socket answers.
func startBroker(dir, policies, credentials string, files map[string]string) (*broker, error) {
	sockDir, err := os.MkdirTemp("/tmp", "cbc-") // socket paths are limited to 108 bytes
	if err != nil {
		return nil, err
	}
	b := &broker{dir: dir, socket: filepath.Join(sockDir, "s")}
	files["policies.yaml"] = policies
	files["credbroker.yaml"] = fmt.Sprintf(`socket: %s
admin: ""
audit: {path: %s, checkpoint: {file: %s}}
policies: policies.yaml
credentials:
%s`, b.socket, filepath.Join(dir, "audit.db"), filepath.Join(dir, "checkpoint.json"), credentials)
	for name, content := range files {
		if err := writeFile(filepath.Join(dir, name), content); err != nil {
			return nil, err
		}
	}
	return b, b.start()
}

// start runs the broker on its configuration.
func (b *broker) start() error {
	b.cmd = exec.Command(brokerBin, "run", "--config", filepath.Join(b.dir, "credbroker.yaml"))
	b.logs, b.done = &syncBuffer{}, make(chan struct{})
	b.cmd.Stdout, b.cmd.Stderr = b.logs, b.logs
	if err := b.cmd.Start(); err != nil {
		return err
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	for deadline := time.Now().Add(hangBound); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", b.socket); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-b.done:
			return fmt.Errorf("broker exited at start:\n%s", b.logs)
		default:
		}
	}
	b.stop()
	return fmt.Errorf("broker did not listen on %s:\n%s", b.socket, b.logs)
}

// stop ends the broker with SIGTERM and waits for it.
func (b *broker) stop() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(hangBound):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// newBroker is startBroker for one test, stopped at its end.
func newBroker(t *testing.T, policies, credentials string, files map[string]string) *broker {
	t.Helper()
	b, err := startBroker(t.TempDir(), policies, credentials, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.stop(); os.RemoveAll(filepath.Dir(b.socket)) })
	return b
}

// rotate replaces a file as a secret manager would: a new file renamed over
// the old one.
func rotate(t *testing.T, path, content string) {
	t.Helper()
	if err := writeFile(path+".new", content); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o600)
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
