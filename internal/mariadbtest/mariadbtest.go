// Package mariadbtest starts throwaway MariaDB servers for tests.
//
//	srv := mariadbtest.Start(t)                   // stopped and deleted by t.Cleanup
//	srv.Exec(t, "CREATE USER app@'%' IDENTIFIED BY 'pw'")
//	db, err := sql.Open("mysql", srv.DSN("app", "pw", ""))
//
// Each server is a data directory of its own, made by mariadb-install-db
// (about a second), and a mariadbd listening on 127.0.0.1 on a free port,
// with its Unix socket in its directory. The only account with
// privileges is root@localhost, reachable over the Unix socket only (the
// root accounts for 127.0.0.1, ::1 and the host name that
// mariadb-install-db makes are dropped), with a random password set at
// each Start; so a test that logs in over TCP does so with an account it
// made. Durability is off (innodb_flush_log_at_trx_commit=0, no doublewrite
// buffer): a crash loses the server, which is what a throwaway server is
// for.
//
// With TLS, the server has a certificate for 127.0.0.1, ::1 and
// localhost issued by a CA made for it (CAFile), and ClientCert issues
// client certificates from the same CA, for accounts that REQUIRE X509.
//
// mariadbd refuses to run as root unless told to: when the test runs as
// root it is started with --user=root (the data directory is the test's
// own, in a temporary directory). It is the test binary's own child,
// killed if the test binary dies (Pdeathsig), and stopped with SIGTERM then
// waited for at cleanup, so no server outlives its test. Readiness is the
// server's own "ready for connections" log line, never a sleep.
//
// The programs mariadbd and mariadb-install-db (MariaDB 10.4 or later) must
// be installed; when they are not, Start fails the test saying what to
// install.
package mariadbtest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
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

	"github.com/go-sql-driver/mysql"
)

// startTimeout bounds how long a server may take to become ready, and a
// shutdown to finish. Generous: the machine running the tests may be busy.
const startTimeout = 2 * time.Minute

// Server is one running throwaway MariaDB server.
type Server struct {
	// Host is the address the server listens on, "127.0.0.1".
	Host string
	// Port is the server's TCP port.
	Port int
	// Socket is the server's Unix socket.
	Socket string
	// RootPassword is root@localhost's password, random per Start.
	RootPassword string
	// Dir holds the data directory, the socket, the log and, with TLS, the
	// certificates.
	Dir string
	// CAFile is the PEM certificate of the CA that issued the server's
	// certificate (and ClientCert's); empty without TLS.
	CAFile string
	// CertFile and KeyFile are the server's certificate (for 127.0.0.1,
	// ::1 and localhost) and key, issued by CAFile; empty without TLS. A
	// test may present them from a server of its own.
	CertFile, KeyFile string
	// Version is the server's version string, as SELECT VERSION() returns
	// it.
	Version string

	tls  *authority // nil without TLS
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has been waited for
	once sync.Once
}

// Option adjusts a server before it starts.
type Option func(*options)

type options struct{ tls bool }

// WithTLS gives the server a certificate from a CA made for it, so that
// clients can connect with TLS and verify it against CAFile.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// Start starts a new throwaway server for this test. t.Cleanup stops it and
// removes its files; no process is left behind.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	bins, err := findBinaries()
	if err != nil {
		t.Fatal(err)
	}
	// A short directory name: the socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "mdbt-")
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	s := &Server{
		Host:   "127.0.0.1",
		Socket: filepath.Join(dir, "mysqld.sock"),
		Dir:    dir,
		log:    filepath.Join(dir, "mariadbd.log"),
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
		_ = os.RemoveAll(dir)
	})
	if err := s.install(bins); err != nil {
		t.Fatal(err)
	}
	var extra []string
	if o.tls {
		if s.tls, err = newAuthority(dir); err != nil {
			t.Fatalf("mariadbtest: %v", err)
		}
		s.CAFile, s.CertFile, s.KeyFile = s.tls.caFile, s.tls.certFile, s.tls.keyFile
		extra = []string{"--ssl-ca=" + s.tls.caFile, "--ssl-cert=" + s.tls.certFile, "--ssl-key=" + s.tls.keyFile}
	}
	// A port found free may be taken by someone else before the server
	// binds it; such a start is retried on another port.
	for attempt := 1; ; attempt++ {
		if s.Port, err = freePort(); err != nil {
			t.Fatalf("mariadbtest: %v", err)
		}
		err = s.start(bins, extra)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 5 {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	s.secure(t)
	return s
}

// Addr is the server's TCP address, host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// DSN returns a go-sql-driver/mysql DSN for user with password on database
// (may be empty) over TCP, without TLS.
func (s *Server) DSN(user, password, database string) string {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "tcp", s.Addr(), database
	return c.FormatDSN()
}

// Admin returns a pool of root connections over the Unix socket, closed by
// t.Cleanup.
func (s *Server) Admin(t testing.TB) *sql.DB {
	t.Helper()
	db, err := s.admin(s.RootPassword)
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func (s *Server) admin(password string) (*sql.DB, error) {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr = "root", password, "unix", s.Socket
	c.MultiStatements = true
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}

// Exec runs each statement as root and fails the test on the first error.
func (s *Server) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	db := s.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("mariadbtest: %s: %v", q, err)
		}
	}
}

// Log returns the server's log so far.
func (s *Server) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	return string(b)
}

// ClientCert issues a client certificate with common name cn from the
// server's CA and returns the PEM files of the certificate and its key.
// The server must have been started WithTLS.
func (s *Server) ClientCert(t testing.TB, cn string) (certFile, keyFile string) {
	t.Helper()
	if s.tls == nil {
		t.Fatal("mariadbtest: ClientCert needs a server started WithTLS")
	}
	certFile, keyFile, err := s.tls.issue(cn, true)
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	return certFile, keyFile
}

// install makes the data directory with mariadb-install-db.
func (s *Server) install(bins binaries) error {
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(s.Dir, "data"),
		"--auth-root-authentication-method=normal", "--skip-test-db",
		"--innodb-log-file-size=4M", "--innodb-data-file-path=ibdata1:4M:autoextend",
		// The default, /tmp, is shared, and installs running at once
		// collide on their temporary tables' names there.
		"--tmpdir=" + s.Dir}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	cmd := exec.Command(bins.install, args...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mariadbtest: mariadb-install-db: %v: %s", err, out)
	}
	return nil
}

var errPortTaken = errors.New("mariadbtest: port taken")

// start runs mariadbd and returns once it accepts connections.
func (s *Server) start(bins binaries, extra []string) error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("mariadbtest: %v", err)
	}
	args := []string{"--no-defaults",
		"--datadir=" + filepath.Join(s.Dir, "data"),
		"--socket=" + s.Socket,
		"--pid-file=" + filepath.Join(s.Dir, "mariadbd.pid"),
		"--tmpdir=" + s.Dir,
		"--bind-address=" + s.Host,
		"--port=" + strconv.Itoa(s.Port),
		"--skip-name-resolve",
		"--skip-log-bin",
		"--lc-messages=en_US",
		"--max-connections=100",
		"--innodb-buffer-pool-size=32M",
		"--innodb-log-file-size=4M",
		"--innodb-flush-log-at-trx-commit=0",
		"--skip-innodb-doublewrite",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	cmd := exec.Command(bins.server, append(args, extra...)...)
	cmd.Dir = s.Dir
	// Should the test binary die without running its cleanups, the server
	// goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return fmt.Errorf("mariadbtest: %v", err)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("mariadbtest: starting mariadbd: %v", err)
	}
	done := make(chan struct{})
	ready := make(chan struct{})
	taken := make(chan struct{}, 1)
	// The log is copied line by line by a goroutine that owns the log file
	// until the server exits; the readiness line is what start waits for.
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			_, _ = io.WriteString(logf, line+"\n")
			if strings.Contains(line, "ready for connections") {
				once.Do(func() { close(ready) })
			}
			if strings.Contains(line, "Address already in use") {
				select {
				case taken <- struct{}{}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	var waited error
	go func() {
		<-copied // Wait closes the pipe: read it all first
		waited = cmd.Wait()
		close(done)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		s.cmd, s.done = cmd, done
		return nil
	case <-done:
		select {
		case <-taken:
			return fmt.Errorf("%w: %d", errPortTaken, s.Port)
		default:
		}
		return fmt.Errorf("mariadbtest: mariadbd exited before accepting connections (%v); its log:\n%s", waited, s.tail())
	case <-timer.C:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("mariadbtest: mariadbd not ready after %v; its log:\n%s", startTimeout, s.tail())
	}
}

// secure drops every root account but root@localhost, gives it a random
// password and reads the server's version.
func (s *Server) secure(t testing.TB) {
	t.Helper()
	db, err := s.admin("")
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT User, Host FROM mysql.user WHERE User = 'root' AND Host <> 'localhost'")
	if err != nil {
		t.Fatalf("mariadbtest: listing root accounts: %v", err)
	}
	var drop []string
	for rows.Next() {
		var user, host string
		if err := rows.Scan(&user, &host); err != nil {
			t.Fatalf("mariadbtest: %v", err)
		}
		drop = append(drop, "DROP USER "+quote(user)+"@"+quote(host))
	}
	rows.Close()
	pw := rand.Text()
	for _, q := range append(drop, "ALTER USER root@localhost IDENTIFIED BY "+quote(pw)) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("mariadbtest: %s: %v", q, err)
		}
	}
	s.RootPassword = pw
	if err := s.Admin(t).QueryRowContext(ctx, "SELECT VERSION()").Scan(&s.Version); err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
}

// stop shuts the server down with SIGTERM (a clean shutdown) and waits for
// it to exit; it is killed if it has not within startTimeout.
func (s *Server) stop() error {
	var err error
	s.once.Do(func() {
		if s.cmd == nil {
			return
		}
		_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGTERM)
		timer := time.NewTimer(startTimeout)
		defer timer.Stop()
		select {
		case <-s.done:
		case <-timer.C:
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			err = fmt.Errorf("mariadbtest: mariadbd did not shut down within %v; killed", startTimeout)
		}
	})
	return err
}

// tail returns the end of the server log, for failure messages.
func (s *Server) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// binaries are the MariaDB programs mariadbtest runs.
type binaries struct{ install, server string }

func findBinaries() (binaries, error) {
	var b binaries
	var missing []string
	for _, f := range []struct {
		names []string
		dst   *string
	}{
		{[]string{"mariadb-install-db", "mysql_install_db"}, &b.install},
		{[]string{"mariadbd", "/usr/sbin/mariadbd", "mysqld"}, &b.server},
	} {
		for _, n := range f.names {
			if p, err := exec.LookPath(n); err == nil {
				*f.dst = p
				break
			}
		}
		if *f.dst == "" {
			missing = append(missing, f.names[0])
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("mariadbtest: %s not found: install MariaDB (Debian: apt-get install mariadb-server mariadb-client)", strings.Join(missing, " and "))
	}
	return b, nil
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

// quote quotes s as an SQL string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// authority is a CA made for one server, and the server's certificate.
type authority struct {
	dir                       string
	cert                      *x509.Certificate
	key                       *ecdsa.PrivateKey
	caFile, certFile, keyFile string
}

// newAuthority makes a CA in dir and issues the server's certificate.
func newAuthority(dir string) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "mariadbtest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	a := &authority{dir: dir, key: key, caFile: filepath.Join(dir, "ca.pem")}
	if a.cert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	if err := os.WriteFile(a.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	a.certFile, a.keyFile, err = a.issue("localhost", false)
	return a, err
}

// issue makes a certificate and key signed by the CA, for a client or for
// the server (127.0.0.1, ::1, localhost), and writes them as PEM files.
func (a *authority) issue(cn string, client bool) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	name := "server"
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		name = "client-" + strconv.FormatInt(tmpl.SerialNumber.Int64(), 16)
	} else {
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(a.dir, name+"-cert.pem"), filepath.Join(a.dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	// mariadbd reads its key as the user it runs as: 0600 is enough.
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// TLSConfig returns a client TLS configuration that trusts the server's
// CA and expects serverName (the server's certificate names 127.0.0.1,
// ::1 and localhost). The server must have been started WithTLS.
func (s *Server) TLSConfig(t testing.TB, serverName string) *tls.Config {
	t.Helper()
	if s.tls == nil {
		t.Fatal("mariadbtest: TLSConfig needs a server started WithTLS")
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.tls.cert)
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}
