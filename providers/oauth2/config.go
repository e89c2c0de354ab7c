package oauth2

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
const Kind = "oauth2"

// The data fields of an issued credential.
const (
	// FieldToken is the access token.
	FieldToken = "token"
	// FieldTokenType is the token type, "Bearer" unless the server says
	// otherwise.
	FieldTokenType = "token_type"
)

// DefaultTTL is the credential's lifetime cap when Config.TTL is zero.
const DefaultTTL = time.Hour

// Client authentication styles (RFC 6749 §2.3.1).
const (
	// AuthBasic sends client_id and client_secret in an HTTP Basic
	// Authorization header (client_secret_basic).
	AuthBasic = "basic"
	// AuthPost sends them as form parameters (client_secret_post).
	AuthPost = "post"
)

// Config configures one OAuth 2.0 client credentials credential.
type Config struct {
	// TokenURL is the authorization server's token endpoint. Required;
	// https, or http to a loopback host.
	TokenURL string `yaml:"token_url"`
	// ClientID identifies the broker to the authorization server. Required.
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret, read at every token request
	// (one trailing newline trimmed). Required.
	ClientSecretFile string `yaml:"client_secret_file"`
	// Scopes are asked for in the scope parameter; default none, which
	// leaves the choice to the server.
	Scopes []string `yaml:"scopes"`
	// Audience is sent as the audience parameter (Auth0, Okta); default
	// none.
	Audience string `yaml:"audience"`
	// Params are extra form parameters of the token request (resource,
	// organization, …); default none. They may not override grant_type,
	// client_id, client_secret, scope or audience.
	Params map[string]string `yaml:"params"`
	// AuthStyle is how the client authenticates: AuthBasic or AuthPost;
	// default AuthBasic.
	AuthStyle string `yaml:"auth_style"`
	// CAFile holds PEM certificates trusted for the token and revocation
	// endpoints in addition to the system roots; default none.
	CAFile string `yaml:"ca_file"`
	// RevocationURL is the RFC 7009 revocation endpoint; default none, in
	// which case issued tokens live until their expiry. Same scheme rules
	// as TokenURL.
	RevocationURL string `yaml:"revocation_url"`

	// Name is the credential's name, used in errors and logs.
	Name string `yaml:"-"`
	// TTL caps each issued token's lifetime; default DefaultTTL.
	TTL time.Duration `yaml:"-"`
	// Transport sends the requests; default an http.Transport trusting the
	// system roots and CAFile. When set, CAFile must be empty: the
	// transport decides what it trusts.
	Transport http.RoundTripper `yaml:"-"`
	// Now returns the current time; default time.Now.
	Now func() time.Time `yaml:"-"`
	// Logger receives the provider's log lines; default none.
	Logger *slog.Logger `yaml:"-"`
}

// Fields returns the data fields every issued credential carries.
func (c *Config) Fields() []string { return []string{FieldToken, FieldTokenType} }

// Paths returns the file-path fields, for the loader to resolve relative to
// the config file.
func (c *Config) Paths() []*string { return []*string{&c.ClientSecretFile, &c.CAFile} }

// Validate reports every problem with c. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("oauth2: "+format, args...))
	}
	if c.TokenURL == "" {
		bad("token_url is required")
	} else if err := checkEndpoint(c.TokenURL); err != nil {
		bad("token_url: %v", err)
	}
	if c.RevocationURL != "" {
		if err := checkEndpoint(c.RevocationURL); err != nil {
			bad("revocation_url: %v", err)
		}
	}
	if c.ClientID == "" {
		bad("client_id is required")
	}
	if c.ClientSecretFile == "" {
		bad("client_secret_file is required")
	}
	for i, s := range c.Scopes {
		if !isScopeToken(s) {
			bad("scopes[%d]: %q is not a scope (printable ASCII without spaces, quotes or backslashes)", i, s)
		}
	}
	for k := range c.Params {
		switch {
		case k == "":
			bad("params: an empty parameter name")
		case reserved(k):
			bad("params: %q is set by the provider and cannot be overridden", k)
		}
	}
	switch c.AuthStyle {
	case "", AuthBasic, AuthPost:
	default:
		bad("auth_style: %q is neither %q nor %q", c.AuthStyle, AuthBasic, AuthPost)
	}
	if c.CAFile != "" && c.Transport != nil {
		bad("ca_file cannot be combined with a custom transport")
	}
	if c.TTL < 0 {
		bad("ttl must not be negative")
	}
	return errors.Join(errs...)
}

// checkEndpoint accepts what providers.ParseEndpoint accepts. Its errors
// do not repeat the URL, which might carry a password.
func checkEndpoint(raw string) error {
	_, err := providers.ParseEndpoint(raw)
	return err
}

// isScopeToken reports whether s is an RFC 6749 §3.3 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func isScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if b := s[i]; b < 0x21 || b > 0x7e || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

// reserved reports whether k is a form parameter the provider sets itself,
// which params may not override (compared without case, in case a server
// is lenient about it).
func reserved(k string) bool {
	switch strings.ToLower(k) {
	case "grant_type", "client_id", "client_secret", "scope", "audience":
		return true
	}
	return false
}
