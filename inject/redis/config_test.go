package redis_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/inject/redis"
)

func valid() redis.Config {
	return redis.Config{Listen: "127.0.0.1:6380", Upstream: "cache.internal:6379", Credential: "cache"}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		adjust func(*redis.Config)
		want   []string // substrings of the error; none means valid
	}{
		{"minimal", func(*redis.Config) {}, nil},
		{"unix listen and upstream", func(c *redis.Config) {
			c.Listen, c.Upstream = "unix:///run/app/redis.sock", "unix:///run/redis/redis.sock"
		}, nil},
		{"tls block, default mode", func(c *redis.Config) { c.TLS = &redis.TLSConfig{CAFile: "/ca.pem"} }, nil},
		{"every mode", func(c *redis.Config) { c.TLS = &redis.TLSConfig{Mode: "verify-ca", ServerName: "x"} }, nil},
		{"everything missing", func(c *redis.Config) { *c = redis.Config{} }, []string{
			"redis: listen: required", "redis: upstream: required", "redis: credential is required"}},
		{"listen not loopback", func(c *redis.Config) { c.Listen = "0.0.0.0:6380" }, []string{"not a loopback address"}},
		{"relative unix listen", func(c *redis.Config) { c.Listen = "unix://run/x.sock" }, []string{"clean absolute path"}},
		{"upstream without port", func(c *redis.Config) { c.Upstream = "cache.internal" }, []string{"upstream: want host:port"}},
		{"upstream port 0", func(c *redis.Config) { c.Upstream = "cache:0" }, []string{`port "0" is not a port number`}},
		{"upstream no host", func(c *redis.Config) { c.Upstream = ":6379" }, []string{"the host is empty"}},
		{"upstream relative socket", func(c *redis.Config) { c.Upstream = "unix://redis.sock" }, []string{"upstream: a unix:// address needs a clean absolute path"}},
		{"bad credential name", func(c *redis.Config) { c.Credential = "-x" }, []string{`credential "-x" is not a credential name`}},
		{"same fields", func(c *redis.Config) { c.UsernameField, c.PasswordField = "value", "value" }, []string{"name the same field"}},
		{"unknown mode", func(c *redis.Config) { c.TLS = &redis.TLSConfig{Mode: "prefer"} }, []string{`tls: mode "prefer": want disable, require, verify-ca or verify-full`}},
		{"cert without key", func(c *redis.Config) { c.TLS = &redis.TLSConfig{CertFile: "/c.pem"} }, []string{"cert_file and key_file go together"}},
		{"disable with files", func(c *redis.Config) { c.TLS = &redis.TLSConfig{Mode: "disable", CAFile: "/ca.pem"} }, []string{"tls: with mode disable"}},
		{"require with a CA", func(c *redis.Config) { c.TLS = &redis.TLSConfig{Mode: "require", CAFile: "/ca.pem"} }, []string{"tls: ca_file is not used with mode require"}},
		{"verify-full to a socket", func(c *redis.Config) {
			c.Upstream, c.TLS = "unix:///run/redis.sock", &redis.TLSConfig{}
		}, []string{"needs server_name"}},
		{"negative drain", func(c *redis.Config) { c.DrainTimeout = -1 }, []string{"drain_timeout must not be negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.adjust(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, nerr := redis.New(c, nopDecider{}); nerr == nil {
				t.Error("New accepted it")
			}
		})
	}
}

func TestFieldsPathsNetwork(t *testing.T) {
	c := valid()
	if got := c.Fields(); !slices.Equal(got, []string{"password"}) {
		t.Errorf("Fields = %v, want [password]", got)
	}
	c.PasswordField = "value"
	if got := c.Fields(); !slices.Equal(got, []string{"value"}) {
		t.Errorf("Fields = %v, want [value]", got)
	}
	if p := c.Paths(); len(p) != 0 {
		t.Errorf("Paths without tls = %v", p)
	}
	c.TLS = &redis.TLSConfig{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}
	ps := c.Paths()
	for _, p := range ps {
		*p = filepath.Join("/etc/credbroker", *p)
	}
	if c.TLS.CAFile != "/etc/credbroker/ca.pem" || c.TLS.CertFile != "/etc/credbroker/c.pem" || c.TLS.KeyFile != "/etc/credbroker/k.pem" {
		t.Errorf("Paths do not point at the fields: %+v", c.TLS)
	}
	if n, a := c.Network(); n != "tcp" || a != "127.0.0.1:6380" {
		t.Errorf("Network = %s %s", n, a)
	}
	c.Listen = "unix:///run/app/r.sock"
	if n, a := c.Network(); n != "unix" || a != "/run/app/r.sock" {
		t.Errorf("Network = %s %s", n, a)
	}
}

// New reads the TLS files and says which one fails.
func TestNewTLSFiles(t *testing.T) {
	c := valid()
	c.TLS = &redis.TLSConfig{CAFile: filepath.Join(t.TempDir(), "missing.pem")}
	if _, err := redis.New(c, nopDecider{}); err == nil || !strings.Contains(err.Error(), "redis: tls: ca_file") {
		t.Errorf("New = %v, want the ca_file named", err)
	}
	c = valid()
	if _, err := redis.New(c, nil); err == nil {
		t.Error("New accepted a nil decider")
	}
}
