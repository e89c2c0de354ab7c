package mysql

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{Listen: "127.0.0.1:3306", Upstream: "db.internal:3306", Credential: "orders-db"}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		adjust func(*Config)
		want   []string // substrings of the error; none: valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"unix listen", func(c *Config) { c.Listen = "unix:///run/app/mysqld.sock" }, nil},
		{"ipv6 upstream", func(c *Config) { c.Upstream = "[2001:db8::1]:3306" }, nil},
		{"verify-full with files", func(c *Config) {
			c.TLS = TLSConfig{Mode: ModeVerifyFull, CAFile: "ca.pem", ServerName: "db", CertFile: "c.pem", KeyFile: "k.pem"}
		}, nil},
		{"verify-ca", func(c *Config) { c.TLS = TLSConfig{Mode: ModeVerifyCA, CAFile: "ca.pem"} }, nil},
		{"require", func(c *Config) { c.TLS = TLSConfig{Mode: ModeRequire} }, nil},
		{"disable", func(c *Config) { c.TLS = TLSConfig{Mode: ModeDisable} }, nil},
		{"listener tls", func(c *Config) { c.ListenerTLS = ListenerTLSConfig{CertFile: "c.pem", KeyFile: "k.pem"} }, nil},
		{"mariadb version", func(c *Config) { c.ServerVersion = "5.5.5-10.11.6-MariaDB" }, nil},
		{"everything missing", func(c *Config) { *c = Config{} }, []string{"listen: required", "upstream: required", "credential is required"}},
		{"everything wrong at once", func(c *Config) {
			*c = Config{Listen: "0.0.0.0:3306", Upstream: "db", Credential: "-x", TLS: TLSConfig{Mode: "on", CertFile: "c.pem"},
				ListenerTLS: ListenerTLSConfig{KeyFile: "k.pem"}, ServerVersion: "MySQL", DrainTimeout: -1}
		}, []string{"not a loopback address", `"db": want host:port`, "not a credential name", `tls: mode "on"`,
			"tls: cert_file and key_file", "listener_tls: cert_file and key_file", "server_version", "drain_timeout"}},
		{"upstream without host", func(c *Config) { c.Upstream = ":3306" }, []string{"want a host name"}},
		{"upstream port", func(c *Config) { c.Upstream = "db:0" }, []string{"not a port number"}},
		{"disable with files", func(c *Config) { c.TLS = TLSConfig{Mode: ModeDisable, CAFile: "ca.pem"} }, []string{"with mode disable"}},
		{"require with a CA", func(c *Config) { c.TLS = TLSConfig{Mode: ModeRequire, CAFile: "ca.pem"} }, []string{"not used with mode require"}},
		{"server name with a slash", func(c *Config) { c.TLS.ServerName = "db/x" }, []string{"not a host name"}},
		{"relative unix path", func(c *Config) { c.Listen = "unix://run/mysqld.sock" }, []string{"clean absolute path"}},
		{"version too long", func(c *Config) { c.ServerVersion = "8" + strings.Repeat(".0", 60) }, []string{"longer than"}},
		{"version with a NUL", func(c *Config) { c.ServerVersion = "8.0\x00" }, []string{"printable ASCII"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.adjust(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("invalid config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "mysql: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestConfigAccessors(t *testing.T) {
	c := validConfig()
	c.Listen = "unix:///run/app/mysqld.sock"
	if n, a := c.Network(); n != "unix" || a != "/run/app/mysqld.sock" {
		t.Errorf("Network: %s %s", n, a)
	}
	if f := c.Fields(); !slices.Equal(f, []string{"username", "password"}) {
		t.Errorf("Fields: %v", f)
	}
	c.TLS = TLSConfig{CAFile: "a", CertFile: "b", KeyFile: "c"}
	c.ListenerTLS = ListenerTLSConfig{CertFile: "d", KeyFile: "e"}
	var got []string
	for _, p := range c.Paths() {
		got = append(got, *p)
	}
	if !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Errorf("Paths: %v", got)
	}
	if c.serverVersion() != DefaultServerVersion || c.DrainTimeout.Or() != 10*time.Second {
		t.Error("defaults")
	}
	if _, err := New(c, nil); err == nil {
		t.Error("New without a decider")
	}
	if _, err := New(Config{}, fixedDecider{}); err == nil {
		t.Error("New with an invalid config")
	}
}
