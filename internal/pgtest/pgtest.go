// Package pgtest starts throwaway PostgreSQL servers for tests.
//
//	srv := pgtest.Start(t)           // stopped and deleted by t.Cleanup
//	srv.Exec(t, `CREATE ROLE app LOGIN PASSWORD 'pw'`)
//	conn, err := pgx.Connect(ctx, srv.DSN("app", "pw", "postgres"))
//
// Each server is a cluster of its own: a data directory copied from a
// template made once by initdb (kept under os.TempDir, shared by every test
// binary of the same PostgreSQL version and run-as user, like a build
// cache), a postmaster listening on 127.0.0.1 on a free port with its Unix
// socket inside the data directory, and a superuser "postgres" whose random
// password is set at each Start. Passwords are stored and checked as
// SCRAM-SHA-256 (password_encryption = scram-sha-256; pg_hba.conf allows
// only scram-sha-256, from 127.0.0.1 and the socket). Durability settings
// are off (fsync, full_page_writes): a crash loses the cluster, which is
// what a throwaway cluster is for.
//
// PostgreSQL refuses to run as root: when the test runs as root, initdb and
// postgres run as the user "postgres" if it exists, else "nobody", in
// directories that user owns. The postmaster is the test binary's own child,
// killed with SIGQUIT (PostgreSQL's immediate shutdown) if the test binary
// dies, so no server outlives its test. Readiness is the postmaster's own
// "ready to accept connections" log line, never a sleep.
//
// StartWith starts a cluster with Options: TLS with a certificate the test
// made, and pg_hba.conf lines of its own before the default ones (md5 or
// cleartext logins, TLS-only logins):
//
//	srv := pgtest.StartWith(t, pgtest.Options{
//		TLS: &pgtest.TLS{CertPEM: cert, KeyPEM: key},
//		HBA: []string{"hostssl all app 127.0.0.1/32 scram-sha-256", "host all legacy 127.0.0.1/32 md5"},
//	})
//
// The binaries initdb and postgres (PostgreSQL 15 or later) must be on PATH;
// when they are not, Start fails the test saying what to install.
package pgtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// SuperUser is the name of every server's superuser.
const SuperUser = "postgres"

// templatePassword is the superuser's password in the template cluster,
// replaced by a random one at each Start before the server is handed out.
const templatePassword = "pgtest-template-password"

// startTimeout bounds how long a postmaster may take to become ready, and
// a shutdown to finish. Generous: the machine running the tests may be busy.
const startTimeout = 2 * time.Minute

// Server is one running throwaway PostgreSQL cluster.
type Server struct {
	// Host is the address the server listens on, "127.0.0.1".
	Host string
	// Port is the server's TCP port; it does not change across Restart.
	Port int
	// SuperUser is the superuser's name, "postgres".
	SuperUser string
	// SuperPassword is the superuser's password, random per Start.
	SuperPassword string
	// Dir is the cluster's data directory; the Unix socket is in it.
	Dir string

	bins binaries
	args []string            // the options' extra postgres arguments
	cred *syscall.Credential // nil when the test does not run as root
	root string              // the temporary directory holding Dir and the log
	log  string              // the server log file, kept across restarts

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of the postmaster.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	err  error         // cmd.Wait's result, set before done is closed
}

// Options adjust a cluster StartWith starts; the zero Options is Start's.
type Options struct {
	// TLS, when set, turns TLS on (ssl = on) with its certificate and key.
	TLS *TLS
	// HBA are pg_hba.conf lines placed before the default ones, which
	// allow scram-sha-256 logins from 127.0.0.1 and the Unix socket: the
	// first line matching a connection decides its method, so
	// "host all legacy 127.0.0.1/32 md5" makes the role legacy log in with
	// md5, and "hostnossl all app 127.0.0.1/32 reject" keeps app off
	// connections without TLS.
	HBA []string
}

// TLS is the server's certificate chain and key, PEM-encoded.
type TLS struct {
	CertPEM, KeyPEM []byte
}

// Start starts a new throwaway cluster for this test. t.Cleanup stops it and
// removes its files; no process is left behind.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts a new throwaway cluster with opts, as Start does.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bins, err := findBinaries()
	if err != nil {
		t.Fatal(err)
	}
	cred, owner, err := runAs()
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := template(bins, cred, owner)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s := &Server{
		Host:      "127.0.0.1",
		SuperUser: SuperUser,
		Dir:       filepath.Join(root, "data"),
		bins:      bins,
		cred:      cred,
		root:      root,
		log:       filepath.Join(root, "postgres.log"),
	}
	t.Cleanup(func() {
		s.stop()
		_ = os.RemoveAll(root)
	})
	if err := chown(root, cred); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// cp -a keeps the template's owner and modes (the data directory must be
	// 0700 and owned by the server's user).
	if out, err := exec.Command("cp", "-a", filepath.Join(tmpl, "data"), s.Dir).CombinedOutput(); err != nil {
		t.Fatalf("pgtest: copying the template cluster: %v: %s", err, out)
	}
	if err := s.apply(opts); err != nil {
		t.Fatal(err)
	}
	// A port found free may be taken by someone else before the postmaster
	// binds it; such a start is retried on another port.
	for attempt := 1; ; attempt++ {
		if s.Port, err = freePort(); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		err = s.start()
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 5 {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	// Give this cluster a superuser password of its own.
	s.SuperPassword = templatePassword
	pw := rand.Text()
	s.Exec(t, "ALTER ROLE "+pgx.Identifier{SuperUser}.Sanitize()+" PASSWORD "+quoteLiteral(pw))
	s.SuperPassword = pw
	return s
}

// apply writes what opts ask for into the cluster's directories: the
// pg_hba.conf lines, the TLS certificate and key (owned by the server's
// user, the key 0600 as PostgreSQL requires).
func (s *Server) apply(opts Options) error {
	if len(opts.HBA) > 0 {
		hba := filepath.Join(s.Dir, "pg_hba.conf")
		old, err := os.ReadFile(hba)
		if err != nil {
			return fmt.Errorf("pgtest: %v", err)
		}
		lines := "# pgtest: the test's own lines first\n" + strings.Join(opts.HBA, "\n") + "\n"
		if err := os.WriteFile(hba, append([]byte(lines), old...), 0o600); err != nil {
			return fmt.Errorf("pgtest: %v", err)
		}
		if err := chown(hba, s.cred); err != nil {
			return fmt.Errorf("pgtest: %v", err)
		}
	}
	if opts.TLS != nil {
		cert, key := filepath.Join(s.root, "server.crt"), filepath.Join(s.root, "server.key")
		for _, f := range []struct {
			path string
			pem  []byte
		}{{cert, opts.TLS.CertPEM}, {key, opts.TLS.KeyPEM}} {
			if err := os.WriteFile(f.path, f.pem, 0o600); err != nil {
				return fmt.Errorf("pgtest: %v", err)
			}
			if err := chown(f.path, s.cred); err != nil {
				return fmt.Errorf("pgtest: %v", err)
			}
		}
		s.args = append(s.args, "-c", "ssl=on", "-c", "ssl_cert_file="+cert, "-c", "ssl_key_file="+key)
	}
	return nil
}

// DSN returns a libpq URL for user on database over TCP, without TLS.
func (s *Server) DSN(user, password, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(s.Host, strconv.Itoa(s.Port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// AdminDSN returns the superuser's DSN for the database "postgres".
func (s *Server) AdminDSN() string {
	return s.DSN(s.SuperUser, s.SuperPassword, "postgres")
}

// Conn returns a new superuser connection to the database "postgres",
// closed by t.Cleanup.
func (s *Server) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.AdminDSN())
	if err != nil {
		t.Fatalf("pgtest: connecting as the superuser: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// Exec runs sql with args as the superuser on the database "postgres", and
// fails the test on error.
func (s *Server) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.AdminDSN())
	if err != nil {
		t.Fatalf("pgtest: connecting as the superuser: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// Log returns the server's log so far, across restarts.
func (s *Server) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return string(b)
}

// Stop shuts the server down (for outage tests) and waits until it has
// exited. Restart brings it back with the same data on the same port.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
}

// Restart starts a stopped server again, with its data and on its port.
// A running server is stopped first.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

var errPortTaken = errors.New("pgtest: port taken")

// start runs the postmaster and returns once it accepts connections.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("pgtest: server already running")
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %v", err)
	}
	cmd := exec.Command(s.bins.postgres, "-D", s.Dir,
		"-c", "listen_addresses="+s.Host,
		"-c", "port="+strconv.Itoa(s.Port),
		"-c", "unix_socket_directories="+s.Dir,
		"-c", "password_encryption=scram-sha-256",
		"-c", "lc_messages=C",
		"-c", "max_connections=60",
		"-c", "shared_buffers=16MB",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "logging_collector=off",
	)
	cmd.Args = append(cmd.Args, s.args...)
	// SIGQUIT is the postmaster's immediate shutdown: should the test
	// binary die without running its cleanups, the cluster goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	cmd.Dir = s.root
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return fmt.Errorf("pgtest: %v", err)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pgtest: starting postgres: %v", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	taken := make(chan struct{}, 1)
	// The log is copied line by line, by a goroutine that owns the log
	// file until the postmaster exits; the postmaster's readiness line is
	// the event start waits for.
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			_, _ = io.WriteString(logf, line+"\n")
			if strings.Contains(line, "database system is ready to accept connections") {
				once.Do(func() { close(ready) })
			}
			if strings.Contains(line, "could not bind") || strings.Contains(line, "Address already in use") {
				select {
				case taken <- struct{}{}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		<-copied // Wait closes the pipe: read it all first
		p.err = cmd.Wait()
		close(p.done)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		s.proc = p
		return nil
	case <-p.done:
		tail := s.tail()
		select {
		case <-taken:
			return fmt.Errorf("%w: %d", errPortTaken, s.Port)
		default:
		}
		return fmt.Errorf("pgtest: postgres exited before accepting connections (%v); its log:\n%s", p.err, tail)
	case <-timer.C:
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGQUIT)
		<-p.done
		return fmt.Errorf("pgtest: postgres not ready after %v; its log:\n%s", startTimeout, s.tail())
	}
}

// stop shuts the postmaster down with a fast shutdown (sessions are ended,
// the data is checkpointed) and waits for it to exit.
func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGINT)
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("pgtest: postgres did not shut down within %v; killed", startTimeout)
	}
}

// tail returns the end of the server log, for failure messages.
func (s *Server) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// binaries are the PostgreSQL programs pgtest runs.
type binaries struct {
	initdb, postgres string
}

func findBinaries() (binaries, error) {
	var b binaries
	var missing []string
	for _, f := range []struct {
		name string
		dst  *string
	}{{"initdb", &b.initdb}, {"postgres", &b.postgres}} {
		p, err := exec.LookPath(f.name)
		if err != nil {
			missing = append(missing, f.name)
			continue
		}
		*f.dst = p
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("pgtest: %s not found on PATH: install the PostgreSQL 15 server "+
			"(Debian: apt-get install postgresql-15) and put its bin directory on PATH "+
			"(ln -s /usr/lib/postgresql/15/bin/{initdb,pg_ctl,postgres} /usr/local/bin/)", strings.Join(missing, " and "))
	}
	return b, nil
}

// runAs returns the credential to run PostgreSQL's programs with, and the
// name of that user: when the test runs as root, the user "postgres" if it
// exists, else "nobody"; otherwise nil and the current user.
func runAs() (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		return nil, strconv.Itoa(os.Geteuid()), nil
	}
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("pgtest: running as root, and neither the user postgres nor nobody exists to run PostgreSQL as: %v", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, "", fmt.Errorf("pgtest: user %s: %v", u.Username, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, u.Uid, nil
}

func chown(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return os.Chown(path, int(cred.Uid), int(cred.Gid))
}

// template returns the directory holding the template cluster ("data"),
// made by initdb on first use. Its name depends on the server version and
// the user it belongs to, so a new PostgreSQL makes a new template. Test
// binaries running at once may race to make it: each runs initdb into a
// directory of its own and renames it into place; the losers use the
// winner's.
func template(bins binaries, cred *syscall.Credential, owner string) (string, error) {
	out, err := exec.Command(bins.initdb, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("pgtest: %s --version: %v", bins.initdb, err)
	}
	// The hash covers what makes a template: the server version and how
	// this file runs initdb (bump the version tag when that changes).
	sum := sha256.Sum256(append([]byte("pgtest template v1\n"+bins.initdb+"\n"), out...))
	final := filepath.Join(os.TempDir(), "credbroker-pgtest-"+owner+"-"+hex.EncodeToString(sum[:8]))
	const marker = "complete"
	if _, err := os.Stat(filepath.Join(final, marker)); err == nil {
		return final, nil
	}
	tmp, err := os.MkdirTemp("", "credbroker-pgtest-initdb-")
	if err != nil {
		return "", fmt.Errorf("pgtest: %v", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	pwfile := filepath.Join(tmp, "pwfile")
	if err := os.WriteFile(pwfile, []byte(templatePassword+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("pgtest: %v", err)
	}
	if err := errors.Join(chown(tmp, cred), chown(pwfile, cred)); err != nil {
		return "", fmt.Errorf("pgtest: %v", err)
	}
	cmd := exec.Command(bins.initdb, "-D", filepath.Join(tmp, "data"),
		"--username="+SuperUser, "--pwfile="+pwfile,
		"--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
		"--no-sync", "--no-instructions")
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("pgtest: initdb: %v: %s", err, out)
	}
	hba := "# pgtest: password logins only, checked as SCRAM-SHA-256\n" +
		"local all all scram-sha-256\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(tmp, "data", "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return "", fmt.Errorf("pgtest: %v", err)
	}
	if err := errors.Join(
		chown(filepath.Join(tmp, "data", "pg_hba.conf"), cred),
		os.Remove(pwfile),
		os.WriteFile(filepath.Join(tmp, marker), nil, 0o644),
		os.Chmod(tmp, 0o755),
	); err != nil {
		return "", fmt.Errorf("pgtest: %v", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, serr := os.Stat(filepath.Join(final, marker)); serr == nil {
			return final, nil // another test binary won the race
		}
		return "", fmt.Errorf("pgtest: installing the template cluster: %v (remove %s if it is a broken leftover)", err, final)
	}
	return final, nil
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

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
