package postgres

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := Config{AdminDSNFile: "admin.dsn", InstallID: "0a1b2c"}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want []string // every problem reported
	}{
		{"minimal", func(*Config) {}, nil},
		{"everything set", func(c *Config) {
			c.Grant, c.Database, c.Host, c.Port = []string{"orders_rw", "Mixed Case"}, "orders", "db.internal", 5432
			c.RolePrefix, c.ReassignTo, c.ConnectionLimit, c.AdminConnections = "app_", "orders_owner", 5, 4
		}, nil},
		{"nothing set", func(c *Config) { *c = Config{} }, []string{"admin_dsn_file is required"}},
		{"all at once", func(c *Config) {
			c.Grant = []string{"", strings.Repeat("g", 64), "nul\x00"}
			c.Database, c.ReassignTo, c.Host, c.Port = strings.Repeat("d", 64), "", "a b", 70000
			c.RolePrefix, c.ConnectionLimit, c.AdminConnections, c.TTL, c.InstallID = "Bad-", -1, -1, -1, "it's"
		}, []string{"grant[0]: empty name", "grant[1]", "grant[2]", "database:", "host", "port 70000", "role_prefix:",
			"connection_limit -1", "admin_connections -1", "ttl -1ns", `install id "it's"`}},
		{"prefix too long", func(c *Config) { c.RolePrefix = strings.Repeat("p", maxPrefix+1) }, []string{"role_prefix:"}},
		{"prefix starting with a digit", func(c *Config) { c.RolePrefix = "1x" }, []string{"role_prefix:"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("%d problems reported, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "postgres: ") {
					t.Errorf("%q lacks the package prefix", l)
				}
			}
		})
	}
}

func TestFieldsAndPaths(t *testing.T) {
	c := Config{AdminDSNFile: "admin.dsn"}
	if got := c.Fields(); !slices.Equal(got, []string{"username", "password", "host", "port", "database"}) {
		t.Errorf("fields %v", got)
	}
	paths := c.Paths()
	if len(paths) != 1 || *paths[0] != "admin.dsn" {
		t.Fatalf("paths %v", paths)
	}
	*paths[0] = "/etc/credbroker/admin.dsn"
	if c.AdminDSNFile != "/etc/credbroker/admin.dsn" {
		t.Error("Paths does not point into the config")
	}
}

// TestNewReadsTheDSNFile: New fails closed on a missing, empty or
// malformed DSN file, and never echoes the file's content.
func TestNewReadsTheDSNFile(t *testing.T) {
	dir := t.TempDir()
	const secret = "CANARY-dsn-pw-7f3a"
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tt := range []struct {
		name, file, want string
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"empty", write("empty", "\n"), "is empty"},
		{"bad URL", write("url", "postgres://admin:"+secret+"@db.internal:notaport/x"), "does not hold a valid"},
		{"bad key=value", write("kv", "host=db password='"+secret), "does not hold a valid"},
		{"bad option", write("opt", "postgres://admin:"+secret+"@db/x?sslmode=sometimes"), "does not hold a valid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Name: "orders-db", AdminDSNFile: tt.file, InstallID: "i"})
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), secret) {
				t.Fatalf("error %v, want %q and no secret", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), `postgres: credential "orders-db": `) {
				t.Errorf("error %q lacks the prefix", err)
			}
		})
	}
	// A good file, pointing at nothing that listens: New does not connect.
	if _, err := New(Config{Name: "orders-db", AdminDSNFile: write("good", "postgres://admin:"+secret+"@127.0.0.1:1/x"), InstallID: "i"}); err != nil {
		t.Fatalf("New needs the server: %v", err)
	}
}
