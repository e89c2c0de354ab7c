package awscreds

import (
	"errors"
	"fmt"
	"strings"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// Config configures one AWS container-credentials endpoint. In the
// configuration file, under listeners:
//
//   - aws_credentials: {listen: 127.0.0.1:9911, credential: payments-aws, token: required, drain_timeout: 10s}
type Config struct {
	// Listen is the TCP address the endpoint serves on: host:port with a
	// loopback host (127.0.0.1, [::1], localhost). The SDKs fetch from
	// AWS_CONTAINER_CREDENTIALS_FULL_URI over plain http only from a
	// loopback (or the ECS/EKS link-local) host, and the broker attests
	// TCP callers only on loopback. Required; the listener itself is made
	// by the caller.
	Listen string `yaml:"listen"`
	// Credential names the configured credential served. Its provider
	// must yield access_key_id, secret_access_key and session_token (as
	// aws_sts does); see Fields. Required.
	Credential string `yaml:"credential"`
	// Token says whether a request must carry a bearer token in its
	// Authorization header: "required" refuses a request without one
	// (401); "optional" decides it on the calling process alone, found
	// from its TCP connection in the kernel's socket table (unix claims:
	// uid, gid, pid, exe), for platforms that give a workload no token to
	// present, such as an ECS task. A header that is present is verified
	// either way. Default required.
	Token string `yaml:"token"`
	// DrainTimeout is how long requests in flight may finish when the
	// endpoint stops; default broker.DefaultDrainTimeout.
	DrainTimeout broker.DrainTimeout `yaml:"drain_timeout"`
}

// The values of Config.Token.
const (
	TokenRequired = "required"
	TokenOptional = "optional"
)

// Fields returns the credential data fields the endpoint serves, for the
// loader to check against the credential's provider: the access key id,
// the secret access key and the session token.
func (c *Config) Fields() []string {
	return []string{awsprov.FieldAccessKeyID, awsprov.FieldSecretAccessKey, awsprov.FieldSessionToken}
}

// Paths returns the file-path fields: none.
func (c *Config) Paths() []*string { return nil }

// Validate reports every problem with c. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("awscreds: "+format, args...))
	}
	if err := checkListen(c.Listen); err != nil {
		bad("listen: %v", err)
	}
	switch {
	case c.Credential == "":
		bad("credential is required")
	case !broker.ValidName(c.Credential):
		bad("credential %q is not a credential name", c.Credential)
	}
	switch c.Token {
	case "", TokenRequired, TokenOptional:
	default:
		bad("token %q: want %s (the default) or %s", c.Token, TokenRequired, TokenOptional)
	}
	if c.DrainTimeout < 0 {
		bad("drain_timeout must not be negative")
	}
	return errors.Join(errs...)
}

// checkListen accepts a loopback host:port.
func checkListen(s string) error {
	if s == "" {
		return errors.New("required (127.0.0.1:PORT)")
	}
	if strings.Contains(s, "://") {
		return errors.New("want host:port, such as 127.0.0.1:9911: the SDKs fetch container credentials over TCP, so a Unix socket or a URL cannot serve")
	}
	if err := listener.CheckLoopback(s); err != nil {
		return fmt.Errorf("%w (the AWS SDKs fetch container credentials over http only from loopback)", err)
	}
	return nil
}

// Network returns the network and address to listen on: always TCP.
func (c *Config) Network() (network, address string) { return "tcp", c.Listen }
