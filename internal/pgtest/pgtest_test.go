package pgtest

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func connect(t *testing.T, dsn string) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return pgx.Connect(ctx, dsn)
}

// TestServer starts a cluster, logs in over TCP with SCRAM-SHA-256, and
// stops and restarts it on the same port with the same data.
func TestServer(t *testing.T) {
	var pid int
	var dir string
	t.Run("lifecycle", func(t *testing.T) {
		s := Start(t)
		pid, dir = s.proc.cmd.Process.Pid, s.Dir
		s.Exec(t, `CREATE ROLE app LOGIN PASSWORD 'app-pw'`)
		s.Exec(t, `CREATE TABLE kept (v int)`)
		s.Exec(t, `INSERT INTO kept VALUES ($1)`, 42)
		s.Exec(t, `GRANT SELECT ON kept TO app`)

		ctx := context.Background()
		conn, err := connect(t, s.DSN("app", "app-pw", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		var method, stored string
		if err := conn.QueryRow(ctx, `SELECT current_setting('password_encryption')`).Scan(&method); err != nil || method != "scram-sha-256" {
			t.Errorf("password_encryption %q, %v", method, err)
		}
		admin := s.Conn(t)
		if err := admin.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = 'app'`).Scan(&stored); err != nil || !strings.HasPrefix(stored, "SCRAM-SHA-256$") {
			t.Errorf("stored password %q, %v: want a SCRAM-SHA-256 verifier", stored, err)
		}
		conn.Close(ctx)

		for _, tt := range []struct {
			name, dsn string
			code      string // SQLSTATE of the refusal
		}{
			{"wrong password", s.DSN("app", "nope", "postgres"), "28P01"},
			{"template password", s.DSN(SuperUser, templatePassword, "postgres"), "28P01"},
			{"unknown user", s.DSN("nobody-here", "x", "postgres"), "28P01"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := connect(t, tt.dsn)
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != tt.code {
					t.Fatalf("error %v, want SQLSTATE %s", err, tt.code)
				}
			})
		}

		port := s.Port
		s.Stop(t)
		if _, err := connect(t, s.AdminDSN()); err == nil {
			t.Fatal("connected to a stopped server")
		}
		s.Stop(t) // stopping twice is fine
		s.Restart(t)
		if s.Port != port {
			t.Fatalf("port %d after restart, was %d", s.Port, port)
		}
		conn, err = connect(t, s.DSN("app", "app-pw", "postgres"))
		if err != nil {
			t.Fatalf("after restart: %v", err)
		}
		defer conn.Close(ctx)
		var v int
		if err := conn.QueryRow(ctx, `SELECT v FROM kept`).Scan(&v); err != nil || v != 42 {
			t.Fatalf("after restart: %d, %v", v, err)
		}
		if !strings.Contains(s.Log(t), "ready to accept connections") {
			t.Error("the server log lacks the readiness line")
		}
	})
	// The subtest's cleanups have run: no process, no files.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postmaster %d still exists after cleanup (kill: %v)", pid, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory %s still exists after cleanup: %v", dir, err)
	}
}

// TestServersAreSeparate starts two clusters at once: different ports and
// superuser passwords, and a role made in one is absent from the other.
func TestServersAreSeparate(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Port == b.Port || a.SuperPassword == b.SuperPassword {
		t.Fatalf("servers share port %d/%d or password", a.Port, b.Port)
	}
	a.Exec(t, `CREATE ROLE only_in_a`)
	var n int
	if err := b.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM pg_roles WHERE rolname = 'only_in_a'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("role of a seen in b: %d, %v", n, err)
	}
	if _, err := connect(t, b.DSN(SuperUser, a.SuperPassword, "postgres")); err == nil {
		t.Fatal("a's superuser password opens b")
	}
}

// TestMissingBinaries: without PostgreSQL on PATH the failure says what to
// install.
func TestMissingBinaries(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := findBinaries()
	if err == nil || !strings.Contains(err.Error(), "initdb and postgres not found") || !strings.Contains(err.Error(), "apt-get install postgresql-15") {
		t.Fatalf("error %v", err)
	}
}

// TestOptions starts a cluster with TLS and pg_hba.conf lines of the
// test's own: a role refused without TLS logs in over verified TLS, and a
// role whose password is stored as md5 logs in with md5.
func TestOptions(t *testing.T) {
	srvTLS, ca := NewTLS(t, "127.0.0.1")
	s := StartWith(t, Options{
		TLS: srvTLS,
		HBA: []string{
			"hostnossl all tlsonly 127.0.0.1/32 reject",
			"host all legacy 127.0.0.1/32 md5",
		},
	})
	s.Exec(t, `CREATE ROLE tlsonly LOGIN PASSWORD 'tls-pw'`)
	s.Exec(t, `SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'legacy-pw'`)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if _, err := connect(t, s.DSN("tlsonly", "tls-pw", "postgres")); err == nil || !strings.Contains(err.Error(), "28000") {
		t.Errorf("tlsonly without TLS: %v, want SQLSTATE 28000", err)
	}
	conn, err := connect(t, strings.Replace(s.DSN("tlsonly", "tls-pw", "postgres"), "sslmode=disable", "sslmode=verify-full&sslrootcert="+url.QueryEscape(caFile), 1))
	if err != nil {
		t.Fatalf("tlsonly over verified TLS: %v", err)
	}
	var ssl bool
	if err := conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		t.Errorf("pg_stat_ssl.ssl %v, %v", ssl, err)
	}
	conn.Close(ctx)

	conn, err = connect(t, s.DSN("legacy", "legacy-pw", "postgres"))
	if err != nil {
		t.Fatalf("legacy with md5: %v", err)
	}
	conn.Close(ctx)
	var stored string
	if err := s.Conn(t).QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = 'legacy'`).Scan(&stored); err != nil || !strings.HasPrefix(stored, "md5") {
		t.Errorf("legacy's stored password %q, %v: want an md5 hash", stored, err)
	}
	if _, err := connect(t, s.DSN("legacy", "wrong", "postgres")); err == nil {
		t.Error("legacy logged in with a wrong password")
	}
}
