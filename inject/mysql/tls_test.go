package mysql_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/inject/mysql"
	"github.com/credbroker/credbroker/internal/mariadbtest"
)

// TestUpstreamTLS logs in to a MariaDB whose issued user REQUIRE SSL
// (or X509), with each tls.mode: verified against the test CA the session
// is the issued user's over TLS; a wrong name fails verify-full but not
// verify-ca; the system roots do not know the test CA; without TLS the
// server refuses the login and the client gets the server's refusal.
func TestUpstreamTLS(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t, mariadbtest.WithTLS())
	certFile, keyFile := srv.ClientCert(t, "orders-app")
	tests := []struct {
		name    string
		require string // the issued user's REQUIRE clause
		tls     mysql.TLSConfig
		code    uint16 // 0: the session works
		message string
	}{
		{"verify-full", "SSL", mysql.TLSConfig{Mode: mysql.ModeVerifyFull, CAFile: srv.CAFile}, 0, ""},
		{"verify-full is the default", "SSL", mysql.TLSConfig{CAFile: srv.CAFile}, 0, ""},
		{"verify-full by name", "SSL", mysql.TLSConfig{CAFile: srv.CAFile, ServerName: "localhost"}, 0, ""},
		{"verify-ca ignores the name", "SSL", mysql.TLSConfig{Mode: mysql.ModeVerifyCA, CAFile: srv.CAFile, ServerName: "db.example.com"}, 0, ""},
		{"require", "SSL", mysql.TLSConfig{Mode: mysql.ModeRequire}, 0, ""},
		{"client certificate", "X509", mysql.TLSConfig{CAFile: srv.CAFile, CertFile: certFile, KeyFile: keyFile}, 0, ""},
		{"no client certificate", "X509", mysql.TLSConfig{CAFile: srv.CAFile}, 1045, "the upstream refused the issued credential"},
		{"wrong name", "SSL", mysql.TLSConfig{CAFile: srv.CAFile, ServerName: "db.example.com"}, 1105, "certificate is valid for"},
		{"system roots", "SSL", mysql.TLSConfig{}, 1105, "certificate signed by unknown authority"},
		{"verify-ca, system roots", "SSL", mysql.TLSConfig{Mode: mysql.ModeVerifyCA}, 1105, "certificate signed by unknown authority"},
		{"disable", "SSL", mysql.TLSConfig{Mode: mysql.ModeDisable}, 1045, "the upstream refused the issued credential: Access denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, srv, "CREATE USER %s@'%%' IDENTIFIED BY %s REQUIRE "+tc.require, func(c *mysql.Config) { c.TLS = tc.tls })
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := open(t, h.config("app", "shop"))
			var user, cipher string
			err := db.QueryRowContext(ctx, "SELECT CURRENT_USER(), VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'").Scan(&user, &cipher)
			if tc.code == 0 {
				if err != nil || user != h.user+"@%" || cipher == "" {
					t.Fatalf("user %q, cipher %q, %v", user, cipher, err)
				}
				return
			}
			me := mysqlError(t, err)
			if me.Number != tc.code || !strings.Contains(me.Message, tc.message) || !strings.Contains(me.Message, "(decision ") {
				t.Errorf("error %d %s %q, want %d saying %q", me.Number, me.SQLState[:], me.Message, tc.code, tc.message)
			}
			h.checkNoSecret(t)
		})
	}
}

// TestClientTLS serves listener_tls: go-sql-driver and the mariadb client
// switch to TLS with the listener and verify its certificate, and a
// client that does not ask for TLS still connects in the clear.
func TestClientTLS(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t, mariadbtest.WithTLS())
	h := newHarness(t, srv, "", func(c *mysql.Config) {
		c.ListenerTLS = mysql.ListenerTLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name string
		tls  *tls.Config
	}{
		{"TLS, verified", srv.TLSConfig(t, "localhost")},
		{"in the clear", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.config("app", "shop")
			c.Net, c.Addr, c.TLS = "tcp", h.tcp, tc.tls
			var user string
			if err := open(t, c).QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user); err != nil || user != h.user+"@%" {
				t.Fatalf("user %q, %v", user, err)
			}
		})
	}
	t.Run("wrong name", func(t *testing.T) {
		c := h.config("app", "shop")
		c.Net, c.Addr, c.TLS = "tcp", h.tcp, srv.TLSConfig(t, "db.example.com")
		if err := open(t, c).PingContext(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("a client expecting another name: %v, want its certificate check to fail", err)
		}
	})
	t.Run("mariadb --ssl", func(t *testing.T) {
		out, err := mariadbCLI(t, "--protocol=tcp", "--host=127.0.0.1", "--port="+port(h.tcp), "--user=app",
			"--ssl", "--ssl-ca="+srv.CAFile, "--ssl-verify-server-cert", "shop", "--execute", `\s`)
		if err != nil {
			t.Fatalf("mariadb: %v: %s", err, out)
		}
		if !strings.Contains(out, "Cipher in use is") || !strings.Contains(out, "Current database:\tshop") {
			t.Errorf("status without TLS or the database:\n%s", out)
		}
	})
}

// TestAuthPlugins logs in to MariaDB as users of its password plugins:
// mysql_native_password (the greeting's own), and client_ed25519, which
// the server switches to from the greeting's.
func TestAuthPlugins(t *testing.T) {
	t.Parallel()
	srv := mariadbtest.Start(t)
	srv.Exec(t, "INSTALL SONAME 'auth_ed25519'")
	for _, tc := range []struct{ plugin, create string }{
		{"mysql_native_password", "CREATE USER %s@'%%' IDENTIFIED VIA mysql_native_password USING PASSWORD(%s)"},
		{"ed25519", "CREATE USER %s@'%%' IDENTIFIED VIA ed25519 USING PASSWORD(%s)"},
	} {
		t.Run(tc.plugin, func(t *testing.T) {
			h := newHarness(t, srv, tc.create, nil)
			var plugin string
			if err := srv.Admin(t).QueryRow("SELECT plugin FROM mysql.user WHERE User = ?", h.user).Scan(&plugin); err != nil || plugin != tc.plugin {
				t.Fatalf("the issued user's plugin is %q (%v), want %s", plugin, err, tc.plugin)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// Several logins: each has its own nonce.
			for i := 0; i < 20; i++ {
				var user string
				db := open(t, h.config("app", "shop"))
				if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user); err != nil || user != h.user+"@%" {
					t.Fatalf("login %d: user %q, %v", i, user, err)
				}
				db.Close()
			}
			h.prov.setPassword("not-" + h.canary)
			err := open(t, h.config("app", "shop")).PingContext(ctx)
			if me := mysqlError(t, err); me.Number != 1045 {
				t.Errorf("with a wrong password: %v, want the upstream's 1045", me)
			}
		})
	}
}
