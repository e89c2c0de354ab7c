package mariadbtest

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func open(t *testing.T, cfg *mysql.Config) (*sql.DB, error) {
	t.Helper()
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return db, db.PingContext(ctx)
}

// TestServer starts a server, logs in over TCP with an account the test
// made, checks root cannot log in over TCP, and that the server is gone
// after cleanup.
func TestServer(t *testing.T) {
	var pid int
	t.Run("lifecycle", func(t *testing.T) {
		s := Start(t)
		pid = s.cmd.Process.Pid
		if !strings.Contains(s.Version, "MariaDB") {
			t.Errorf("version %q", s.Version)
		}
		s.Exec(t, "CREATE DATABASE shop", "CREATE USER app@'%' IDENTIFIED BY 'app-pw'", "GRANT ALL ON shop.* TO app@'%'")
		cfg, _ := mysql.ParseDSN(s.DSN("app", "app-pw", "shop"))
		db, err := open(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var cur string
		if err := db.QueryRow("SELECT DATABASE()").Scan(&cur); err != nil || cur != "shop" {
			t.Errorf("database %q, %v", cur, err)
		}
		for _, tc := range []struct{ user, pw string }{{"app", "wrong"}, {"root", ""}, {"root", s.RootPassword}} {
			cfg, _ := mysql.ParseDSN(s.DSN(tc.user, tc.pw, ""))
			_, err := open(t, cfg)
			var me *mysql.MySQLError
			if !errors.As(err, &me) || me.Number != 1045 {
				t.Errorf("%s over TCP: %v, want 1045", tc.user, err)
			}
		}
	})
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("mariadbd %d still exists after cleanup: %v", pid, err)
	}
}

// TestTLS connects with TLS verified against the server's CA, with a
// client certificate for an account that requires one.
func TestTLS(t *testing.T) {
	s := Start(t, WithTLS())
	s.Exec(t, "CREATE USER x@'%' IDENTIFIED BY 'x-pw' REQUIRE X509")
	cfg, _ := mysql.ParseDSN(s.DSN("x", "x-pw", ""))
	tc := s.TLSConfig(t, "127.0.0.1")
	cfg.TLS = tc
	if _, err := open(t, cfg); err == nil {
		t.Fatal("logged in without the client certificate an account requires")
	}
	certFile, keyFile := s.ClientCert(t, "x")
	cert, err := tlsKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := cfg.Clone()
	tc2 := tc.Clone()
	tc2.Certificates = cert
	cfg2.TLS = tc2
	db, err := open(t, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	var cipher string
	if err := db.QueryRow("SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'").Scan(&cipher); err != nil || cipher == "" {
		t.Errorf("Ssl_cipher %q, %v", cipher, err)
	}
	bad := s.TLSConfig(t, "db.example.com")
	cfg3 := cfg2.Clone()
	bad.Certificates = cert
	cfg3.TLS = bad
	if _, err := open(t, cfg3); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a wrong server name: %v, want a certificate error", err)
	}
}

func tlsKeyPair(certFile, keyFile string) ([]tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	return []tls.Certificate{c}, err
}
