package postgres_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/postgres"
)

func validConfig() postgres.Config {
	return postgres.Config{Listen: "unix:///run/credbroker/pg/.s.PGSQL.5432", Upstream: "db.internal:5432", Credential: "orders-db"}
}

// TestValidate: every problem is reported at once, each saying what to
// fix; the defaults pass.
func TestValidate(t *testing.T) {
	ok := []func(*postgres.Config){
		func(c *postgres.Config) {},
		func(c *postgres.Config) { c.Listen = "127.0.0.1:6432" },
		func(c *postgres.Config) { c.Upstream = "[::1]:5432" },
		func(c *postgres.Config) { c.TLS = postgres.TLSConfig{Mode: "disable"} },
		func(c *postgres.Config) { c.TLS = postgres.TLSConfig{Mode: "require", ServerName: "db"} },
		func(c *postgres.Config) {
			c.TLS = postgres.TLSConfig{Mode: "verify-ca", CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}
		},
		func(c *postgres.Config) {
			c.ListenerTLS = postgres.ListenerTLSConfig{CertFile: "l.pem", KeyFile: "l.key"}
		},
	}
	for i, adjust := range ok {
		c := validConfig()
		adjust(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("config %d: %v", i, err)
		}
	}
	for _, tt := range []struct {
		name   string
		adjust func(*postgres.Config)
		want   []string
	}{
		{"empty", func(c *postgres.Config) { *c = postgres.Config{} }, []string{"listen: required", "upstream: required", "credential is required"}},
		{"remote listen", func(c *postgres.Config) { c.Listen = "0.0.0.0:5432" }, []string{"not a loopback address"}},
		{"relative socket", func(c *postgres.Config) { c.Listen = "unix://pg.sock" }, []string{"clean absolute path"}},
		{"upstream without port", func(c *postgres.Config) { c.Upstream = "db.internal" }, []string{"want host:port"}},
		{"upstream port", func(c *postgres.Config) { c.Upstream = "db:0" }, []string{`port "0" is not a port number`}},
		{"upstream URL", func(c *postgres.Config) { c.Upstream = "postgres://db:5432" }, []string{"upstream"}},
		{"credential name", func(c *postgres.Config) { c.Credential = "a b" }, []string{`credential "a b" is not a credential name`}},
		{"mode", func(c *postgres.Config) { c.TLS.Mode = "prefer" }, []string{`tls: mode "prefer": want disable, require, verify-ca or verify-full`}},
		{"disable with files", func(c *postgres.Config) { c.TLS = postgres.TLSConfig{Mode: "disable", CAFile: "ca.pem"} }, []string{"with mode disable"}},
		{"require with ca", func(c *postgres.Config) { c.TLS = postgres.TLSConfig{Mode: "require", CAFile: "ca.pem"} }, []string{"ca_file is not used with mode require"}},
		{"half a client certificate", func(c *postgres.Config) { c.TLS.CertFile = "c.pem" }, []string{"tls: cert_file and key_file go together"}},
		{"half a listener certificate", func(c *postgres.Config) { c.ListenerTLS.KeyFile = "k.pem" }, []string{"listener_tls: cert_file and key_file go together"}},
		{"drain", func(c *postgres.Config) { c.DrainTimeout = -1 }, []string{"drain_timeout must not be negative"}},
		{"several", func(c *postgres.Config) { c.Upstream = ""; c.TLS.Mode = "x"; c.DrainTimeout = -1 }, []string{"upstream: required", "tls: mode", "drain_timeout"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.adjust(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "postgres: ") {
					t.Errorf("line %q is not prefixed", line)
				}
			}
			if _, nerr := postgres.New(c, nil); nerr == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

// TestConfigAccessors: the fields the loader checks, the paths it
// resolves, and where to listen.
func TestConfigAccessors(t *testing.T) {
	c := validConfig()
	if got := c.Fields(); !slices.Equal(got, []string{"username", "password"}) {
		t.Errorf("Fields %v", got)
	}
	if n := len(c.Paths()); n != 5 {
		t.Errorf("%d paths", n)
	}
	if n, a := c.Network(); n != "unix" || a != "/run/credbroker/pg/.s.PGSQL.5432" {
		t.Errorf("Network %s %s", n, a)
	}
	c.Listen = "127.0.0.1:6432"
	if n, a := c.Network(); n != "tcp" || a != "127.0.0.1:6432" {
		t.Errorf("Network %s %s", n, a)
	}
	c.TLS.CAFile = "/nonexistent/ca.pem"
	if _, err := postgres.New(c, nil); err == nil || !strings.Contains(err.Error(), "decider") {
		t.Errorf("New without a decider: %v", err)
	}
	if _, err := postgres.New(c, refuseAll{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/ca.pem") {
		t.Errorf("New with a missing ca_file: %v", err)
	}
}

// refuseAll is a decider that refuses everything.
type refuseAll struct{}

func (refuseAll) Decide(context.Context, *broker.Request) (*broker.Grant, error) {
	return nil, &broker.Error{Kind: broker.KindDenied, Message: "no"}
}
