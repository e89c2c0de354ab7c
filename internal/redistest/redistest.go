// Package redistest starts throwaway Redis servers for tests, and has a
// minimal RESP client to talk to them.
//
//	srv := redistest.Start(t, redistest.Options{
//		Users: []string{"app on >" + pw + " ~* &* +@all"},
//		TLS:   true,
//	})
//	admin := srv.Admin(t)                   // authenticated as the admin user
//	admin.MustDo(t, "INFO", "commandstats")
//	c := redistest.Dial(t, "tcp", srv.Addr) // unauthenticated
//
// Each server is a redis-server process of its own, the test binary's
// child, configured by a generated file: bound to 127.0.0.1 on a free port,
// a Unix socket in its own directory, no persistence (save "", no AOF),
// ACL users from Options.Users, an admin user with a random password, and
// the default user disabled unless Options.Users gives a rule for it — so
// an unauthenticated connection can do nothing. With Options.TLS it also
// listens with TLS on a second port, with a CA, a server certificate (for
// localhost and 127.0.0.1) and a client certificate generated for the
// server (TLSFiles).
//
// Readiness is the server's own "Ready to accept connections" log line,
// never a sleep. t.Cleanup kills the server (SIGKILL: there is nothing to
// save) and removes its files; the server is also killed should the test
// binary die (Pdeathsig).
//
// redis-server (Redis 6 or later, built with TLS for Options.TLS) must be
// on PATH; Debian: apt-get install redis-server redis-tools.
package redistest

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// AdminUser is the name of every server's admin user, allowed every
// command and key.
const AdminUser = "redistest-admin"

// startTimeout bounds how long a server may take to become ready.
// Generous: the machine running the tests may be busy.
const startTimeout = 2 * time.Minute

// Options configure a server.
type Options struct {
	// Users are ACL rules, one user each, as written after "user" in
	// redis.conf: "app on >secret ~* &* +@all". The default user is
	// disabled ("default off") unless one of them starts with "default ".
	Users []string
	// TLS adds a TLS port (Server.TLSAddr) with generated certificates.
	TLS bool
	// TLSAuthClients makes the TLS port require a client certificate
	// signed by the generated CA (TLSFiles.ClientCertFile).
	TLSAuthClients bool
}

// Server is one running throwaway Redis server.
type Server struct {
	// Addr is the plain TCP address, 127.0.0.1:PORT.
	Addr string
	// Socket is the path of the server's Unix socket.
	Socket string
	// TLSAddr is the TLS address, 127.0.0.1:PORT, with Options.TLS.
	TLSAddr string
	// TLS are the generated certificates, with Options.TLS.
	TLS TLSFiles
	// AdminPassword is the password of AdminUser, random per server.
	AdminPassword string
	// Dir holds the server's configuration, socket and log.
	Dir string

	log  *lockedFile
	proc *exec.Cmd
	done chan struct{}
}

// Start starts a new server for this test; t.Cleanup kills it and removes
// its files.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server is not on PATH (Debian: apt-get install redis-server redis-tools): %v", err)
	}
	// Socket paths are short: not under t.TempDir, whose name grows with
	// the test's.
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s := &Server{Dir: dir, Socket: filepath.Join(dir, "redis.sock"), AdminPassword: rand.Text()}
	t.Cleanup(func() {
		s.kill()
		_ = os.RemoveAll(dir)
	})
	if o.TLS {
		if s.TLS, err = writeTLSFiles(dir); err != nil {
			t.Fatalf("redistest: certificates: %v", err)
		}
	}
	// A port found free may be taken by someone else before the server
	// binds it; such a start is retried on other ports.
	for attempt := 1; ; attempt++ {
		err = s.start(bin, o)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 5 {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var errPortTaken = errors.New("redistest: port taken")

// config returns the server's configuration file.
func (s *Server) config(o Options, port, tlsPort int) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("port %d", port)
	line("bind 127.0.0.1")
	line("protected-mode yes")
	line("unixsocket %s", s.Socket)
	line("unixsocketperm 700")
	line("dir %s", s.Dir)
	line(`save ""`)
	line("appendonly no")
	line("daemonize no")
	line(`logfile ""`)
	line("loglevel notice")
	line("databases 16")
	defaultGiven := false
	for _, u := range o.Users {
		defaultGiven = defaultGiven || strings.HasPrefix(u, "default ")
		line("user %s", u)
	}
	if !defaultGiven {
		line("user default off")
	}
	line("user %s on >%s ~* &* +@all", AdminUser, s.AdminPassword)
	if o.TLS {
		line("tls-port %d", tlsPort)
		line("tls-cert-file %s", s.TLS.ServerCertFile)
		line("tls-key-file %s", s.TLS.ServerKeyFile)
		line("tls-ca-cert-file %s", s.TLS.CAFile)
		if o.TLSAuthClients {
			line("tls-auth-clients yes")
		} else {
			line("tls-auth-clients no")
		}
	}
	return b.String()
}

// start runs the server and returns once it accepts connections.
func (s *Server) start(bin string, o Options) error {
	port, err := freePort()
	if err != nil {
		return fmt.Errorf("redistest: %v", err)
	}
	tlsPort := 0
	if o.TLS {
		if tlsPort, err = freePort(); err != nil {
			return fmt.Errorf("redistest: %v", err)
		}
	}
	conf := filepath.Join(s.Dir, "redis.conf")
	if err := os.WriteFile(conf, []byte(s.config(o, port, tlsPort)), 0o600); err != nil {
		return fmt.Errorf("redistest: %v", err)
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("redistest: %v", err)
	}
	s.log = &lockedFile{f: logf, path: logf.Name()}
	cmd := exec.Command(bin, conf)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("redistest: %v", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: starting redis-server: %v", err)
	}
	ready := make(chan struct{})
	var taken bool
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.log.WriteLine(line)
			if strings.Contains(line, "Ready to accept connections") {
				once.Do(func() { close(ready) })
			}
			if strings.Contains(line, "Address already in use") {
				taken = true
			}
		}
	}()
	done := make(chan struct{})
	var waitErr error
	go func() {
		<-copied // Wait closes the pipe: read it all first
		waitErr = cmd.Wait()
		close(done)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		s.proc, s.done = cmd, done
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if o.TLS {
			s.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
		}
		return nil
	case <-done:
		s.log.Close()
		if taken {
			return fmt.Errorf("%w: %d or %d", errPortTaken, port, tlsPort)
		}
		return fmt.Errorf("redistest: redis-server exited before accepting connections (%v); its log:\n%s", waitErr, s.Log())
	case <-timer.C:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		s.log.Close()
		return fmt.Errorf("redistest: redis-server not ready after %v; its log:\n%s", startTimeout, s.Log())
	}
}

// kill ends the server and waits for it.
func (s *Server) kill() {
	if s.proc == nil {
		return
	}
	_ = syscall.Kill(-s.proc.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.proc = nil
	s.log.Close()
}

// Log returns the server's log so far.
func (s *Server) Log() string {
	if s.log == nil {
		return ""
	}
	b, _ := os.ReadFile(s.log.path)
	return string(b)
}

// Admin returns a new connection to the server's plain port, authenticated
// as AdminUser with HELLO 2 (so the admin's own log-in is not counted under
// AUTH in INFO commandstats); t.Cleanup closes it.
func (s *Server) Admin(t testing.TB) *Conn {
	t.Helper()
	c := Dial(t, "tcp", s.Addr)
	r, err := c.Do("HELLO", "2", "AUTH", AdminUser, s.AdminPassword)
	if err != nil || r.IsError() {
		t.Fatalf("redistest: admin log-in: %v %v", r, err)
	}
	return c
}

// Monitor returns an admin connection that has entered MONITOR: each line
// it reads (Conn.ReadLine) is a command the server ran.
func (s *Server) Monitor(t testing.TB) *Conn {
	t.Helper()
	c := s.Admin(t)
	c.MustDo(t, "MONITOR")
	return c
}

// CommandStats returns INFO commandstats as a map from a command ("auth")
// to its fields ("calls", "failed_calls", …).
func (s *Server) CommandStats(t testing.TB, admin *Conn) map[string]map[string]string {
	t.Helper()
	r := admin.MustDo(t, "INFO", "commandstats")
	out := map[string]map[string]string{}
	for _, line := range strings.Split(r.Str, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		cmd, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		fields := map[string]string{}
		for _, kv := range strings.Split(rest, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				fields[k] = v
			}
		}
		out[cmd] = fields
	}
	return out
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedFile is the server's log file, written line by line by the
// goroutine copying its output.
type lockedFile struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

func (l *lockedFile) WriteLine(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		_, _ = l.f.WriteString(s + "\n")
	}
}

func (l *lockedFile) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
