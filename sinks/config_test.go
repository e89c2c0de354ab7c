package sinks

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/broker"
)

func validConfig() Config {
	return Config{Credential: "orders-db", Path: "/run/app/db.env", Template: "PGPASSWORD={{.password}}\n"}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		keys   []string // the keys of the problems, in order
		msg    string   // part of the message
	}{
		{name: "minimal", change: func(*Config) {}},
		{name: "everything", change: func(c *Config) {
			c.Mode, c.Owner, c.Group, c.OnChange = "0640", "app", "1000", []string{"systemctl", "reload", "app"}
		}},
		{name: "template file", change: func(c *Config) { c.Template, c.TemplateFile = "", "/etc/app/db.env.tmpl" }},
		{name: "mode without leading zero", change: func(c *Config) { c.Mode = "640" }},
		{name: "absolute command", change: func(c *Config) { c.OnChange = []string{"/usr/local/bin/reload"} }},
		{name: "no credential", change: func(c *Config) { c.Credential = "" }, keys: []string{"credential"}, msg: "credential is required"},
		{name: "bad credential name", change: func(c *Config) { c.Credential = "../db" }, keys: []string{"credential"}, msg: "not a credential name"},
		{name: "no path", change: func(c *Config) { c.Path = "" }, keys: []string{"path"}, msg: "path is required"},
		{name: "relative path", change: func(c *Config) { c.Path = "db.env" }, keys: []string{"path"}, msg: "not an absolute path"},
		{name: "directory path", change: func(c *Config) { c.Path = "/run/app/" }, keys: []string{"path"}, msg: "names a directory"},
		{name: "root path", change: func(c *Config) { c.Path = "/" }, keys: []string{"path"}, msg: "names a directory"},
		{name: "no template", change: func(c *Config) { c.Template = "" }, keys: []string{"template"}, msg: "template_file is required"},
		{name: "both templates", change: func(c *Config) { c.TemplateFile = "/t" }, keys: []string{"template"}, msg: "alternatives"},
		{name: "relative template file", change: func(c *Config) { c.Template, c.TemplateFile = "", "t.tmpl" }, keys: []string{"template_file"}, msg: "not an absolute path"},
		{name: "unparsable template", change: func(c *Config) { c.Template = "PGPASSWORD={{.password}" }, keys: []string{"template"}, msg: "template:1:"},
		{name: "unknown function", change: func(c *Config) { c.Template = "{{env .password}}" }, keys: []string{"template"}, msg: `function "env" not defined`},
		{name: "template too large", change: func(c *Config) { c.Template = strings.Repeat("x", MaxTemplateBytes+1) }, keys: []string{"template"}, msg: "over 65536 bytes"},
		{name: "mode not octal", change: func(c *Config) { c.Mode = "rw-------" }, keys: []string{"mode"}, msg: "octal permission bits"},
		{name: "mode with set-id bits", change: func(c *Config) { c.Mode = "4755" }, keys: []string{"mode"}, msg: "no set-id"},
		{name: "bad owner", change: func(c *Config) { c.Owner = "app:app" }, keys: []string{"owner"}, msg: "not a user or group name"},
		{name: "bad group", change: func(c *Config) { c.Group = "-g" }, keys: []string{"group"}, msg: "not a user or group name"},
		{name: "id -1", change: func(c *Config) { c.Group = "4294967295" }, keys: []string{"group"}, msg: "not a usable id"},
		{name: "empty command", change: func(c *Config) { c.OnChange = []string{} }, keys: []string{"on_change"}, msg: "as a list"},
		{name: "empty command name", change: func(c *Config) { c.OnChange = []string{"", "x"} }, keys: []string{"on_change"}, msg: "as a list"},
		{name: "relative command path", change: func(c *Config) { c.OnChange = []string{"./reload.sh"} }, keys: []string{"on_change"}, msg: "relative path"},
		{name: "NUL in an argument", change: func(c *Config) { c.OnChange = []string{"kill", "-HUP\x00"} }, keys: []string{"on_change"}, msg: "NUL"},
		{name: "every problem at once", change: func(c *Config) {
			*c = Config{Mode: "9", Owner: "a b", OnChange: []string{""}}
		}, keys: []string{"credential", "path", "template", "mode", "owner", "on_change"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			var keys []string
			var problems []error
			if err != nil {
				problems = unjoin(err)
			}
			for _, e := range problems {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("problem %v is not a *FieldError", e)
				}
				if !strings.HasPrefix(fe.Error(), "sinks: "+fe.Key+": ") {
					t.Errorf("message %q does not name its key", fe.Error())
				}
				keys = append(keys, fe.Key)
			}
			if !slices.Equal(keys, tt.keys) {
				t.Fatalf("Validate() = %v, want problems with %v", err, tt.keys)
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Validate() = %v, want %q in it", err, tt.msg)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	c := Config{Path: "db.env", TemplateFile: "db.tmpl", OnChange: []string{"bin/reload", "bin/x"}}
	for _, p := range c.Paths() {
		*p = "/etc/app/" + *p
	}
	want := Config{Path: "/etc/app/db.env", TemplateFile: "/etc/app/db.tmpl", OnChange: []string{"/etc/app/bin/reload", "bin/x"}}
	if !slices.Equal(c.OnChange, want.OnChange) || c.Path != want.Path || c.TemplateFile != want.TemplateFile {
		t.Errorf("resolved %+v, want %+v", c, want)
	}
	// A command name without a slash is looked up in PATH, not resolved.
	c = Config{OnChange: []string{"systemctl", "reload", "app"}}
	if n := len(c.Paths()); n != 2 {
		t.Errorf("Paths() has %d entries for a bare command name, want path and template_file only", n)
	}
}

// TestValidName keeps this package's copy of the rule in step with the
// broker's, which the socket API enforces.
func TestValidName(t *testing.T) {
	for _, s := range []string{"", "a", "demo", "orders-db", "a.b_c-d", "9lives", ".hidden", "-x", "_x", "a/b", "a b", "ü",
		strings.Repeat("a", 128), strings.Repeat("a", 129), "a\x00"} {
		if got, want := validName(s), broker.ValidName(s); got != want {
			t.Errorf("validName(%q) = %v, broker.ValidName = %v", s, got, want)
		}
	}
}
