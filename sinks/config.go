package sinks

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

// Defaults and limits of a sink.
const (
	// DefaultMode is the permission of a rendered file when Config.Mode is
	// empty: readable and writable by its owner only.
	DefaultMode = "0600"
	// MaxTemplateBytes bounds a template, inline or in template_file.
	MaxTemplateBytes = 64 << 10
	// MaxFileBytes bounds a rendered file; a template that renders more
	// fails, and the file keeps its previous content.
	MaxFileBytes = 1 << 20
	// maxNameLen bounds a credential name, as the broker does.
	maxNameLen = 128
	// maxIDLen bounds an owner or group name.
	maxIDLen = 256
)

// Config is one sink: a file rendered from one credential. In
// credbroker render's configuration file, under sinks:
//
//	sinks:
//	  - credential: orders-db
//	    path: /run/app/db.env               # relative: to the configuration file
//	    template: "PGPASSWORD={{.password}}\n"  # or template_file: db.env.tmpl
//	    mode: "0640"                        # default "0600"
//	    owner: app                          # default: the render process's user
//	    group: app                          # default: the render process's group
//	    on_change: [systemctl, reload, app] # default: none
type Config struct {
	// Credential names the credential the file is rendered from. Required.
	Credential string `yaml:"credential"`
	// Path is the file written. It is replaced atomically (a temporary
	// file in the same directory, renamed over it), so the directory must
	// exist and be writable; a symbolic link at Path is replaced, not
	// followed. Absolute once loaded (relative paths in the configuration
	// file are resolved against the file). Required.
	Path string `yaml:"path"`
	// Template is the file's content as a text/template (see the package
	// documentation for its data and functions). One of Template and
	// TemplateFile is required.
	Template string `yaml:"template"`
	// TemplateFile holds the template instead; read once, by New.
	TemplateFile string `yaml:"template_file"`
	// Mode is the file's permission bits, octal; default DefaultMode. The
	// file has these bits from its creation on, whatever the umask.
	Mode string `yaml:"mode"`
	// Owner is the file's user, a name (looked up in /etc/passwd by New)
	// or a numeric uid; default the render process's user. Another user
	// than the process's own needs root (CAP_CHOWN).
	Owner string `yaml:"owner"`
	// Group is the file's group, a name (from /etc/group) or a numeric
	// gid; default the render process's group (or the directory's, if it
	// is set-group-ID).
	Group string `yaml:"group"`
	// OnChange is a command run after each change of the file's content:
	// an argument list, run without a shell (["systemctl", "reload",
	// "app"]; write ["sh", "-c", "…"] to want one). A name without a slash
	// is looked up in PATH; a relative path with a slash is resolved
	// against the configuration file. See the package documentation for
	// its environment. Default none.
	OnChange []string `yaml:"on_change"`
}

// FieldError is one problem with one key of a Config, so that a loader can
// point at the key's line.
type FieldError struct {
	// Key is the configuration key: "mode", "template", …
	Key string
	// Message says what is wrong and what to write instead.
	Message string
}

func (e *FieldError) Error() string { return "sinks: " + e.Key + ": " + e.Message }

// Paths returns the file-path fields, for the loader to resolve relative to
// the configuration file: path, template_file, and on_change's command when
// it is a path with a slash (a bare name is looked up in PATH).
func (c *Config) Paths() []*string {
	ps := []*string{&c.Path, &c.TemplateFile}
	if len(c.OnChange) > 0 && strings.Contains(c.OnChange[0], "/") {
		ps = append(ps, &c.OnChange[0])
	}
	return ps
}

// Validate reports every problem with c at once, as *FieldError values
// joined. It does no I/O: template_file is read, and owner and group names
// are looked up, by New.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Message: fmt.Sprintf(format, args...)})
	}
	switch {
	case c.Credential == "":
		bad("credential", "credential is required: the name of the credential the file is rendered from")
	case !validName(c.Credential):
		bad("credential", "%.140q is not a credential name (1 to %d of A-Z a-z 0-9 . _ -, starting with a letter or digit)", c.Credential, maxNameLen)
	}
	if msg := pathProblem(c.Path); msg != "" {
		bad("path", "%s", msg)
	}
	switch {
	case c.Template != "" && c.TemplateFile != "":
		bad("template", "template and template_file are alternatives: set one")
	case c.Template == "" && c.TemplateFile == "":
		bad("template", "template (inline text) or template_file is required")
	case c.Template != "":
		if _, err := parseTemplate("template", c.Template); err != nil {
			bad("template", "%v", err)
		}
	case !filepath.IsAbs(c.TemplateFile):
		bad("template_file", "%q is not an absolute path", c.TemplateFile)
	}
	if _, err := c.mode(); err != nil {
		bad("mode", "%v", err)
	}
	if msg := idProblem(c.Owner); msg != "" {
		bad("owner", "%s", msg)
	}
	if msg := idProblem(c.Group); msg != "" {
		bad("group", "%s", msg)
	}
	if msg := commandProblem(c.OnChange); msg != "" {
		bad("on_change", "%s", msg)
	}
	return errors.Join(errs...)
}

// mode returns the configured permission bits, or DefaultMode's.
func (c *Config) mode() (os.FileMode, error) {
	s := c.Mode
	if s == "" {
		s = DefaultMode
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%.40q: use octal permission bits such as \"0600\" or \"0640\" (no set-id or sticky bits)", c.Mode)
	}
	return os.FileMode(m), nil
}

func pathProblem(p string) string {
	switch base := filepath.Base(p); {
	case p == "":
		return "path is required: the file to write"
	case !filepath.IsAbs(p):
		return fmt.Sprintf("%q is not an absolute path", p)
	case strings.HasSuffix(p, "/") || base == "." || base == ".." || base == "/":
		return fmt.Sprintf("%q names a directory; give a file's path", p)
	}
	return ""
}

// idProblem checks the shape of an owner or group: a numeric id, or a
// name as useradd accepts them.
func idProblem(s string) string {
	if s == "" {
		return ""
	}
	if id, err := strconv.ParseUint(s, 10, 32); err == nil {
		if id == math.MaxUint32 {
			return fmt.Sprintf("%d is not a usable id", id)
		}
		return ""
	}
	if len(s) > maxIDLen || s[0] == '-' {
		return fmt.Sprintf("%.40q is not a user or group name, nor a numeric id", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '$' && i == len(s)-1) {
			return fmt.Sprintf("%.40q is not a user or group name, nor a numeric id", s)
		}
	}
	return ""
}

func commandProblem(argv []string) string {
	if argv == nil {
		return ""
	}
	if len(argv) == 0 || argv[0] == "" {
		return `give the command as a list: [systemctl, reload, app]`
	}
	for _, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return "an argument holds a NUL byte"
		}
	}
	if strings.Contains(argv[0], "/") && !filepath.IsAbs(argv[0]) {
		return fmt.Sprintf("command %q is a relative path; give an absolute one, or a name looked up in PATH", argv[0])
	}
	return ""
}

// validName is the broker's rule for credential names (broker.ValidName,
// which this package does not import: it is the client side).
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// parseTemplate parses text as a sink template: missing keys are errors,
// the package's functions are available.
func parseTemplate(name, text string) (*template.Template, error) {
	if len(text) > MaxTemplateBytes {
		return nil, fmt.Errorf("template is over %d bytes", MaxTemplateBytes)
	}
	return template.New(name).Option("missingkey=error").Funcs(funcs).Parse(text)
}
