package postgres

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Kind is the provider kind reported in replies, leases and audit rows.
const Kind = "postgres"

// The data fields of every issued credential.
const (
	// FieldUsername is the issued login role's name.
	FieldUsername = "username"
	// FieldPassword is the issued role's password.
	FieldPassword = "password"
	// FieldHost is the host applications connect to.
	FieldHost = "host"
	// FieldPort is the port applications connect to, in decimal.
	FieldPort = "port"
	// FieldDatabase is the database applications connect to.
	FieldDatabase = "database"
)

// DefaultTTL is the lifetime of an issued role when Config.TTL is zero.
const DefaultTTL = time.Hour

// DefaultRolePrefix begins the name of every issued role when
// Config.RolePrefix is empty.
const DefaultRolePrefix = "credbroker_"

// DefaultAdminConnections is the number of admin connections when
// Config.AdminConnections is zero.
const DefaultAdminConnections = 2

// maxIdentifier is PostgreSQL's identifier length limit (NAMEDATALEN-1).
const maxIdentifier = 63

// maxPrefix bounds RolePrefix so that every name keeps room for its
// random suffix and some of the subject.
const maxPrefix = maxIdentifier - 1 - suffixLen - 8

// Config configures one PostgreSQL credential: short-lived login roles
// created by the broker through an admin connection.
type Config struct {
	// AdminDSNFile holds a libpq URL or key=value DSN of a role with
	// CREATEROLE, read at each (re)connect so that it can be rotated.
	// Required.
	AdminDSNFile string `yaml:"admin_dsn_file"`
	// Grant are the roles each issued role becomes a member of (and so has
	// the privileges of); default none.
	Grant []string `yaml:"grant"`
	// Database is the database issued credentials name, and the one the
	// admin connection uses (objects left by issued roles are reassigned
	// there); default the DSN's database.
	Database string `yaml:"database"`
	// Host is the host applications are told to connect to; default the
	// DSN's host.
	Host string `yaml:"host"`
	// Port is the port applications are told to connect to; default the
	// DSN's port.
	Port int `yaml:"port"`
	// RolePrefix begins every issued role's name; default
	// DefaultRolePrefix. Lowercase letters, digits and underscores,
	// starting with a letter or underscore.
	RolePrefix string `yaml:"role_prefix"`
	// ReassignTo receives the objects an issued role owns when it is
	// revoked; default the admin role.
	ReassignTo string `yaml:"reassign_to"`
	// ConnectionLimit caps the concurrent sessions of each issued role;
	// default 0, no limit.
	ConnectionLimit int `yaml:"connection_limit"`
	// AdminConnections is how many admin connections issue and revoke
	// at once; default DefaultAdminConnections.
	AdminConnections int `yaml:"admin_connections"`

	// Name is the credential's name, used in errors, logs and leases.
	Name string `yaml:"-"`
	// TTL is the lifetime of each issued role; default DefaultTTL.
	TTL time.Duration `yaml:"-"`
	// InstallID identifies this broker install; every issued role carries
	// it in its comment, so that Owned lists this install's roles only.
	// Required.
	InstallID string `yaml:"-"`
	// Now returns the current time; default time.Now.
	Now func() time.Time `yaml:"-"`
	// Logger receives the provider's log lines; default none.
	Logger *slog.Logger `yaml:"-"`
}

// Fields returns the data fields every issued credential carries.
func (c *Config) Fields() []string {
	return []string{FieldUsername, FieldPassword, FieldHost, FieldPort, FieldDatabase}
}

// Paths returns the file-path fields, for the loader to resolve relative to
// the config file.
func (c *Config) Paths() []*string { return []*string{&c.AdminDSNFile} }

// Validate reports every problem with c. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("postgres: "+format, args...))
	}
	if c.AdminDSNFile == "" {
		bad("admin_dsn_file is required")
	}
	for i, g := range c.Grant {
		if err := checkIdentifier(g); err != nil {
			bad("grant[%d]: %v", i, err)
		}
	}
	if c.Database != "" {
		if err := checkIdentifier(c.Database); err != nil {
			bad("database: %v", err)
		}
	}
	if c.ReassignTo != "" {
		if err := checkIdentifier(c.ReassignTo); err != nil {
			bad("reassign_to: %v", err)
		}
	}
	if strings.ContainsAny(c.Host, "\x00 \t\r\n") {
		bad("host %q: contains a space, control character or NUL", c.Host)
	}
	if c.Port < 0 || c.Port > 65535 {
		bad("port %d: not between 1 and 65535", c.Port)
	}
	if c.RolePrefix != "" {
		if err := checkPrefix(c.RolePrefix); err != nil {
			bad("role_prefix: %v", err)
		}
	}
	if c.ConnectionLimit < 0 {
		bad("connection_limit %d: must not be negative (0 is no limit)", c.ConnectionLimit)
	}
	if c.AdminConnections < 0 {
		bad("admin_connections %d: must not be negative", c.AdminConnections)
	}
	if c.TTL < 0 {
		bad("ttl %v: must not be negative", c.TTL)
	}
	// The install id is the broker's to set, after the file is read: New
	// requires it, Validate (of the file's keys) checks only its form.
	if c.InstallID != "" && !isInstallID(c.InstallID) {
		bad("install id %q: want 1 to 64 letters, digits, '.', '_' or '-'", c.InstallID)
	}
	return errors.Join(errs...)
}

// checkIdentifier accepts any name PostgreSQL can hold: quoted, every
// identifier is valid except an empty one, one with NUL, or one longer than
// 63 bytes (which PostgreSQL would silently truncate).
func checkIdentifier(s string) error {
	switch {
	case s == "":
		return errors.New("empty name")
	case len(s) > maxIdentifier:
		return fmt.Errorf("%q is longer than %d bytes", s, maxIdentifier)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%q contains NUL", s)
	}
	return nil
}

func checkPrefix(p string) error {
	if len(p) > maxPrefix {
		return fmt.Errorf("%q is longer than %d bytes", p, maxPrefix)
	}
	for i := 0; i < len(p); i++ {
		ch := p[i]
		if !(ch >= 'a' && ch <= 'z' || ch == '_' || i > 0 && ch >= '0' && ch <= '9') {
			return fmt.Errorf("%q: want lowercase letters, digits and underscores, starting with a letter or underscore", p)
		}
	}
	return nil
}

func isInstallID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}
