// Package vaulttest starts throwaway Vault dev servers for tests.
//
//	srv := vaulttest.Start(t)   // stopped by t.Cleanup
//	srv.Client.KVv2("secret").Put(ctx, "stripe", map[string]any{"key": "sk_test"})
//	p, err := vault.New(vault.Config{Address: srv.Addr, …})
//
// The server is the upstream Vault (v1.21.0) built from the Go module proxy
// by scripts/peers/vault.sh from the nested module internal/vaulttest/server
// into $CREDBROKER_PEERS/vault-1.21.0/vault (CREDBROKER_PEERS defaults to
// ${XDG_CACHE_HOME:-$HOME/.cache}/credbroker-peers). scripts/test.sh builds
// it before the tests; when it is missing, Start runs the script itself, so
// `go test` of one package works on its own (the first build is a long
// compile).
//
// Each Start runs "vault server -dev" in memory: unsealed, a KV v2 engine at
// secret/, a root token of the test's own, listening on a free 127.0.0.1
// port, with HOME in a temporary directory and no VAULT_* variable from the
// test's environment. Readiness is /v1/sys/health answering 200, never a
// sleep. The server is the test binary's own child (killed if the test
// binary dies) and t.Cleanup stops it and waits for it: no process is left
// behind.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/credbroker/credbroker/internal/logtest"
)

// Version is the Vault release the peer script builds.
const Version = "1.21.0"

// startTimeout bounds how long a dev server may take to answer its health
// endpoint, and a shutdown to finish. Generous: the machine may be busy.
const startTimeout = 2 * time.Minute

// Server is one running Vault dev server.
type Server struct {
	// Addr is the API address, such as http://127.0.0.1:41234.
	Addr string
	// RootToken is the dev server's root token, random per Start.
	RootToken string
	// Client is an API client for Addr carrying RootToken.
	Client *api.Client

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	out  *logtest.Buffer
}

// Start starts a new Vault dev server for this test. t.Cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	var s *Server
	// A port found free may be taken by someone else before Vault binds
	// it; such a start is retried on another port.
	for attempt := 1; ; attempt++ {
		s, err = start(bin, home)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 5 {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// Output returns what the server printed so far.
func (s *Server) Output() string { return s.out.String() }

var errPortTaken = errors.New("vaulttest: port taken")

func start(bin, home string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{
		Addr:      "http://" + listen,
		RootToken: "root-" + rand.Text(),
		done:      make(chan struct{}),
		out:       &logtest.Buffer{},
	}
	s.cmd = exec.Command(bin, "server", "-dev",
		"-dev-listen-address="+listen,
		"-dev-root-token-id="+s.RootToken,
		"-dev-no-store-token",
		"-log-level=warn",
	)
	s.cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin", "VAULT_DISABLE_USER_LOCKOUT=true"}
	s.cmd.Dir = home
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// The server dies with the test binary should it exit without running
	// its cleanups.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("vaulttest: starting %s: %v", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	if err := s.waitHealthy(); err != nil {
		_ = s.stop()
		if strings.Contains(s.Output(), "address already in use") {
			return nil, fmt.Errorf("%w: %d", errPortTaken, port)
		}
		return nil, err
	}
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		_ = s.stop()
		return nil, fmt.Errorf("vaulttest: %v", err)
	}
	c.SetToken(s.RootToken)
	s.Client = c
	return s, nil
}

// waitHealthy returns once /v1/sys/health answers 200 (initialised,
// unsealed, active), or the server exits, or startTimeout passes.
func (s *Server) waitHealthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-s.done:
			return fmt.Errorf("vaulttest: vault exited before answering /v1/sys/health (%v); its output:\n%s", s.cmd.ProcessState, tail(s.Output()))
		case <-ctx.Done():
			return fmt.Errorf("vaulttest: vault not healthy after %v; its output:\n%s", startTimeout, tail(s.Output()))
		}
	}
}

// stop ends the server with SIGTERM, then SIGKILL to its process group if
// it has not exited within startTimeout, and waits for it.
func (s *Server) stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-s.done:
		return nil
	case <-timer.C:
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		return fmt.Errorf("vaulttest: vault did not stop within %v; killed", startTimeout)
	}
}

// Binary returns the path of the Vault server binary, building it with
// scripts/peers/vault.sh when it is missing.
func Binary() (string, error) {
	peers := os.Getenv("CREDBROKER_PEERS")
	if peers == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("vaulttest: no CREDBROKER_PEERS, XDG_CACHE_HOME or HOME: %v", err)
			}
			cache = filepath.Join(home, ".cache")
		}
		peers = filepath.Join(cache, "credbroker-peers")
	}
	bin := filepath.Join(peers, "vault-"+Version, "vault")
	if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("vaulttest: cannot locate scripts/peers/vault.sh")
	}
	script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "peers", "vault.sh")
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "CREDBROKER_PEERS="+peers)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("vaulttest: building the Vault test peer with %s failed (%v):\n%s", script, err, tail(out.String()))
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("vaulttest: %s did not produce %s:\n%s", script, bin, tail(out.String()))
	}
	return bin, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("vaulttest: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string) string {
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}
