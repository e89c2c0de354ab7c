package httpproxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/providers"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// Defaults of Config.
const (
	// DefaultHeaderName is the header a listener sets when header.name is
	// empty.
	DefaultHeaderName = "Authorization"
	// DefaultHeaderValue is the header's template when header.value is
	// empty: a bearer token from the credential's token field.
	DefaultHeaderValue = "Bearer {{.token}}"
)

// Config configures one HTTP injection listener. In the configuration file,
// under listeners:
//
//   - http: {listen: 127.0.0.1:8081, upstream: https://api.example.com, credential: partner-api,
//     header: {name: Authorization, value: "Bearer {{.token}}"},
//     tls: {ca_file: …, cert_file: …, key_file: …}, drain_timeout: 10s}
//
// or, signing every request with AWS Signature Version 4 instead of
// setting a header:
//
//   - http: {listen: 127.0.0.1:9000, upstream: https://s3.us-east-1.amazonaws.com,
//     credential: app-s3, sigv4: {service: s3, region: us-east-1}}
type Config struct {
	// Listen is where the app connects: host:port with a loopback host
	// (127.0.0.1, [::1], localhost), or unix:///absolute/path. Required;
	// the listener itself is made by the caller (see Network).
	Listen string `yaml:"listen"`
	// Upstream is the one server requests are sent to: an https URL, or
	// http to a loopback host only, with no user information, query or
	// fragment. Its path, if any, is the base every request path is
	// appended to. Required.
	Upstream string `yaml:"upstream"`
	// Credential names the configured credential injected into every
	// request. Required.
	Credential string `yaml:"credential"`
	// Header is the header carrying the credential; default
	// Authorization: Bearer {{.token}} when SigV4 is absent. Not with
	// SigV4.
	Header HeaderConfig `yaml:"header"`
	// SigV4, when present, signs every request with AWS Signature Version
	// 4 and the credential's access_key_id, secret_access_key and
	// session_token fields (an aws_sts credential) instead of setting a
	// header; default absent. Not with Header.
	SigV4 *SigV4Config `yaml:"sigv4"`
	// TLS configures the connection to the upstream; default: verified
	// against the system roots, no client certificate.
	TLS TLSConfig `yaml:"tls"`
	// DrainTimeout is how long requests in flight may finish when the
	// listener stops; default broker.DefaultDrainTimeout.
	DrainTimeout broker.DrainTimeout `yaml:"drain_timeout"`
	// AllowAmbient lets the broker's ambient identity (attestors.ambient)
	// stand in for a caller whose process it cannot see — a TCP caller in
	// another network or pid namespace, such as an app container of a pod
	// without a shared process namespace. Any process that can reach the
	// listener then gets that identity. Default false: such callers are
	// refused.
	AllowAmbient bool `yaml:"allow_ambient"`
}

// HeaderConfig is the header a listener sets on every request it forwards.
//
// Value is a text/template over the credential's data fields, of a
// restricted form: literal text, {{.field}}, and two functions —
// {{base64 ARG}} (standard base64 of ARG) and {{basic USER PASS}} (the
// base64 of "USER:PASS", as HTTP Basic authentication sends it), whose
// arguments are fields or quoted strings. So basic authentication from a
// credential with username and password fields is
//
//	header: {name: Authorization, value: "Basic {{basic .username .password}}"}
//
// and an API key sent as the Basic user name with an empty password is
// "Basic {{basic .token \"\"}}". A rendered value holding a control
// character (CR, LF, NUL, …) is refused, never sent.
type HeaderConfig struct {
	// Name is the header's name; default DefaultHeaderName. Not a
	// hop-by-hop header, Host or Content-Length.
	Name string `yaml:"name"`
	// Value is the header's template; default DefaultHeaderValue.
	Value string `yaml:"value"`
}

// TLSConfig configures TLS to the upstream.
type TLSConfig struct {
	// CAFile holds PEM certificates trusted for the upstream in addition
	// to the system roots; default none.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile hold a PEM client certificate and its key,
	// presented to the upstream; default none. Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// headerName returns the configured header name or the default; "" when
// requests are signed with SigV4.
func (c *Config) headerName() string {
	if c.SigV4 != nil {
		return ""
	}
	if c.Header.Name == "" {
		return DefaultHeaderName
	}
	return http.CanonicalHeaderKey(c.Header.Name)
}

// headerValue returns the configured header template or the default; ""
// when requests are signed with SigV4.
func (c *Config) headerValue() string {
	if c.SigV4 != nil {
		return ""
	}
	if c.Header.Value == "" {
		return DefaultHeaderValue
	}
	return c.Header.Value
}

// Paths returns the file-path fields, for the loader to resolve relative to
// the config file. A unix:// listen path is not among them: it is part of
// an address.
func (c *Config) Paths() []*string {
	return []*string{&c.TLS.CAFile, &c.TLS.CertFile, &c.TLS.KeyFile}
}

// Fields returns the credential data fields the listener uses, so that
// the loader can check them against the credential's provider: with SigV4,
// the aws_sts fields (access_key_id, secret_access_key, session_token);
// else those the header template uses, in order of first use. An
// unparsable template uses none (Validate reports it).
func (c *Config) Fields() []string {
	if c.SigV4 != nil {
		return []string{awsprov.FieldAccessKeyID, awsprov.FieldSecretAccessKey, awsprov.FieldSessionToken}
	}
	t, err := compileTemplate(c.headerValue())
	if err != nil {
		return nil
	}
	return t.fields
}

// Network returns the network and address to listen on: ("unix", path)
// for unix:///path, else ("tcp", host:port).
func (c *Config) Network() (network, address string) { return listener.Network(c.Listen) }

// Validate reports every problem with c. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("httpproxy: "+format, args...))
	}
	if err := listener.CheckListen(c.Listen); err != nil {
		bad("listen: %v", err)
	}
	if c.Upstream == "" {
		bad("upstream is required")
	} else if _, err := parseUpstream(c.Upstream); err != nil {
		bad("upstream: %v", err)
	}
	switch {
	case c.Credential == "":
		bad("credential is required")
	case !broker.ValidName(c.Credential):
		bad("credential %q is not a credential name", c.Credential)
	}
	switch {
	case c.SigV4 != nil && (c.Header != HeaderConfig{}):
		bad("header and sigv4 are alternatives: a listener either sets a header or signs requests, so set one")
	case c.SigV4 != nil:
		for _, p := range c.SigV4.problems() {
			bad("sigv4: %s", p)
		}
	default:
		if err := checkHeaderName(c.headerName()); err != nil {
			bad("header.name: %v", err)
		}
		if _, err := compileTemplate(c.headerValue()); err != nil {
			bad("header.value: %v", err)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls: cert_file and key_file go together")
	}
	if c.DrainTimeout < 0 {
		bad("drain_timeout must not be negative")
	}
	return errors.Join(errs...)
}

// parseUpstream parses the upstream URL: providers.ParseEndpoint's rule,
// and no query.
func parseUpstream(raw string) (*url.URL, error) {
	u, err := providers.ParseEndpoint(raw)
	if err != nil {
		return nil, err
	}
	if u.RawQuery != "" || u.ForceQuery {
		return nil, errors.New("must not have a query")
	}
	if u.Opaque != "" {
		return nil, errors.New("must be an absolute URL with a host")
	}
	return u, nil
}

// forbiddenHeaders are the names header.name may not take: hop-by-hop
// headers, which do not reach the upstream, and the ones that frame the
// request.
var forbiddenHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Http2-Settings", "Host", "Content-Length",
}

// checkHeaderName accepts an HTTP token that is not a forbidden header.
func checkHeaderName(name string) error {
	if !isToken(name) {
		return fmt.Errorf("%q is not a header name", name)
	}
	for _, f := range forbiddenHeaders {
		if strings.EqualFold(name, f) {
			return fmt.Errorf("%s cannot carry the credential: it is hop-by-hop or frames the request", f)
		}
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

// isTchar reports whether c may appear in a token.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
