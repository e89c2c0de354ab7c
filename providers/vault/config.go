package vault

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/credbroker/credbroker/providers"
)

// Kind is the provider kind reported in replies and audit rows.
const Kind = "vault"

// The data fields of an issued credential.
const (
	// FieldValue is the one field of a KV credential: the configured field
	// of the KV v2 secret.
	FieldValue = "value"
	// FieldUsername and FieldPassword are the default fields of a dynamic
	// credential (what database/creds/<role> returns).
	FieldUsername = "username"
	FieldPassword = "password"
)

// Defaults.
const (
	// DefaultTTL is the credential's lifetime cap when Config.TTL is zero.
	DefaultTTL = time.Hour
	// DefaultKVMount is where the KV v2 engine is mounted when kv.mount is
	// empty (Vault's own default).
	DefaultKVMount = "secret"
	// DefaultKubernetesMount, DefaultAppRoleMount and DefaultJWTMount are
	// the auth methods' mount paths when auth.*.mount is empty (Vault's
	// own defaults).
	DefaultKubernetesMount = "kubernetes"
	DefaultAppRoleMount    = "approle"
	DefaultJWTMount        = "jwt"
	// DefaultKubernetesTokenFile is the projected service account token
	// read by Kubernetes auth when auth.kubernetes.token_file is empty.
	DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	// DefaultTimeout bounds one request to Vault.
	DefaultTimeout = 30 * time.Second
)

// Config configures one Vault credential: where Vault is, how the broker
// logs in, and what it reads. Exactly one auth method, and exactly one of
// KV and Dynamic, are set.
type Config struct {
	// Address is Vault's API address, such as https://vault.internal:8200.
	// Required; https, or http to a loopback host.
	Address string `yaml:"address"`
	// Auth is how the broker (or, with jwt.pass_caller_token, the caller)
	// logs in to Vault. Required.
	Auth Auth `yaml:"auth"`
	// KV reads one field of a KV v2 secret; default none.
	KV *KV `yaml:"kv"`
	// Dynamic reads a path that issues leased credentials; default none.
	Dynamic *Dynamic `yaml:"dynamic"`
	// Namespace is the Vault Enterprise namespace of every request; default
	// none (the root namespace).
	Namespace string `yaml:"namespace"`
	// CAFile holds PEM certificates trusted for Vault in addition to the
	// system roots; default none.
	CAFile string `yaml:"ca_file"`

	// Name is the credential's name, used in errors and logs.
	Name string `yaml:"-"`
	// TTL caps each issued credential's lifetime; default DefaultTTL.
	TTL time.Duration `yaml:"-"`
	// Transport sends the requests; default an http.Transport trusting the
	// system roots and CAFile. When set, CAFile must be empty.
	Transport http.RoundTripper `yaml:"-"`
	// Now returns the current time; default time.Now.
	Now func() time.Time `yaml:"-"`
	// Logger receives the provider's log lines; default none.
	Logger *slog.Logger `yaml:"-"`
}

// Auth is how the provider logs in to Vault: exactly one method is set.
type Auth struct {
	// TokenFile holds a Vault token (written by Vault Agent, an operator,
	// an init container); re-read when the file changes. Default none.
	TokenFile string `yaml:"token_file"`
	// Kubernetes logs in with a Kubernetes service account token; default
	// none.
	Kubernetes *KubernetesAuth `yaml:"kubernetes"`
	// AppRole logs in with a role id and a secret id; default none.
	AppRole *AppRoleAuth `yaml:"approle"`
	// JWT logs in with a JWT, the broker's own or the caller's; default
	// none.
	JWT *JWTAuth `yaml:"jwt"`
}

// KubernetesAuth is Vault's kubernetes auth method.
type KubernetesAuth struct {
	// Role is the Vault role to log in as. Required.
	Role string `yaml:"role"`
	// TokenFile holds the service account token, re-read at every login;
	// default DefaultKubernetesTokenFile.
	TokenFile string `yaml:"token_file"`
	// Mount is the auth method's mount path; default
	// DefaultKubernetesMount.
	Mount string `yaml:"mount"`
}

// AppRoleAuth is Vault's approle auth method.
type AppRoleAuth struct {
	// RoleID is the role's id (not a secret). Required.
	RoleID string `yaml:"role_id"`
	// SecretIDFile holds the secret id, re-read at every login. Required.
	SecretIDFile string `yaml:"secret_id_file"`
	// Mount is the auth method's mount path; default DefaultAppRoleMount.
	Mount string `yaml:"mount"`
}

// JWTAuth is Vault's jwt auth method. Exactly one of TokenFile and
// PassCallerToken is set.
type JWTAuth struct {
	// Role is the Vault role to log in as. Required.
	Role string `yaml:"role"`
	// Mount is the auth method's mount path; default DefaultJWTMount.
	Mount string `yaml:"mount"`
	// TokenFile holds the broker's own JWT, re-read at every login;
	// default none.
	TokenFile string `yaml:"token_file"`
	// PassCallerToken logs in with the caller's verified bearer token
	// (providers.Request.Token) at every request, so Vault's own role
	// bindings, claim mappings and templated policies see the workload
	// rather than the broker; default false.
	PassCallerToken bool `yaml:"pass_caller_token"`
}

// KV reads one field of a KV v2 secret.
type KV struct {
	// Mount is the KV v2 engine's mount path; default DefaultKVMount.
	Mount string `yaml:"mount"`
	// Path is the secret's path under the mount. Required.
	Path string `yaml:"path"`
	// Field is the secret's field served as FieldValue. Required.
	Field string `yaml:"field"`
}

// Dynamic reads a path that returns a leased secret, such as
// database/creds/<role>.
type Dynamic struct {
	// Path is read for each issue. Required.
	Path string `yaml:"path"`
	// Fields are the response's data fields served; default
	// [username, password].
	Fields []string `yaml:"fields"`
}

// Fields returns the data fields every issued credential carries.
func (c *Config) Fields() []string {
	switch {
	case c.KV != nil:
		return []string{FieldValue}
	case c.Dynamic != nil && len(c.Dynamic.Fields) > 0:
		return append([]string(nil), c.Dynamic.Fields...)
	case c.Dynamic != nil:
		return []string{FieldUsername, FieldPassword}
	}
	return nil
}

// Paths returns the file-path fields, for the loader to resolve relative to
// the config file.
func (c *Config) Paths() []*string {
	out := []*string{&c.CAFile, &c.Auth.TokenFile}
	if k := c.Auth.Kubernetes; k != nil {
		out = append(out, &k.TokenFile)
	}
	if a := c.Auth.AppRole; a != nil {
		out = append(out, &a.SecretIDFile)
	}
	if j := c.Auth.JWT; j != nil {
		out = append(out, &j.TokenFile)
	}
	return out
}

// Validate reports every problem with c. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("vault: "+format, args...))
	}
	if c.Address == "" {
		bad("address is required")
	} else if err := checkAddress(c.Address); err != nil {
		bad("address: %v", err)
	}

	a := c.Auth
	methods := 0
	if a.TokenFile != "" {
		methods++
	}
	if k := a.Kubernetes; k != nil {
		methods++
		if k.Role == "" {
			bad("auth.kubernetes.role is required")
		}
		checkMount(bad, "auth.kubernetes.mount", k.Mount)
	}
	if ar := a.AppRole; ar != nil {
		methods++
		if ar.RoleID == "" {
			bad("auth.approle.role_id is required")
		}
		if ar.SecretIDFile == "" {
			bad("auth.approle.secret_id_file is required")
		}
		checkMount(bad, "auth.approle.mount", ar.Mount)
	}
	if j := a.JWT; j != nil {
		methods++
		if j.Role == "" {
			bad("auth.jwt.role is required")
		}
		if (j.TokenFile == "") == !j.PassCallerToken {
			bad("auth.jwt: exactly one of token_file and pass_caller_token must be set")
		}
		checkMount(bad, "auth.jwt.mount", j.Mount)
	}
	if methods != 1 {
		bad("auth: exactly one of token_file, kubernetes, approle and jwt must be set (%d are)", methods)
	}

	switch {
	case (c.KV == nil) == (c.Dynamic == nil):
		bad("exactly one of kv and dynamic must be set")
	case c.KV != nil:
		checkMount(bad, "kv.mount", c.KV.Mount)
		if c.KV.Path == "" {
			bad("kv.path is required")
		} else if err := checkPath(c.KV.Path); err != nil {
			bad("kv.path: %v", err)
		}
		if c.KV.Field == "" {
			bad("kv.field is required")
		}
	case c.Dynamic != nil:
		if c.Dynamic.Path == "" {
			bad("dynamic.path is required")
		} else if err := checkPath(c.Dynamic.Path); err != nil {
			bad("dynamic.path: %v", err)
		}
		seen := map[string]bool{}
		for i, f := range c.Dynamic.Fields {
			switch {
			case f == "":
				bad("dynamic.fields[%d] is empty", i)
			case seen[f]:
				bad("dynamic.fields[%d]: %q is listed twice", i, f)
			}
			seen[f] = true
		}
	}
	if c.Namespace != "" {
		if err := checkPath(c.Namespace); err != nil {
			bad("namespace: %v", err)
		}
	}
	if c.CAFile != "" && c.Transport != nil {
		bad("ca_file cannot be combined with a custom transport")
	}
	if c.TTL < 0 {
		bad("ttl must not be negative")
	}
	return errors.Join(errs...)
}

// checkAddress accepts what providers.ParseEndpoint accepts, without a
// query: a Vault token is sent with every request. Its errors do not repeat
// the address.
func checkAddress(raw string) error {
	u, err := providers.ParseEndpoint(raw)
	if err != nil {
		return err
	}
	if u.RawQuery != "" {
		return errors.New("must not have a query")
	}
	return nil
}

func checkMount(bad func(string, ...any), key, mount string) {
	if mount == "" {
		return
	}
	if err := checkPath(mount); err != nil {
		bad("%s: %v", key, err)
	}
}

// checkPath accepts a relative Vault path: segments separated by single
// slashes, none "." or "..", no query or fragment characters, printable
// ASCII.
func checkPath(p string) error {
	if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return errors.New("must not begin or end with a slash")
	}
	for _, r := range p {
		if r <= ' ' || r > '~' || r == '?' || r == '#' || r == '%' || r == '\\' {
			return errors.New("must be printable ASCII without spaces, '?', '#', '%' or '\\'")
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errors.New("must not have empty, '.' or '..' segments")
		}
	}
	return nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
