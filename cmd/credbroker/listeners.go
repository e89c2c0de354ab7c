package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/awscreds"
	"github.com/credbroker/credbroker/inject/httpproxy"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/inject/mysql"
	"github.com/credbroker/credbroker/inject/postgres"
	"github.com/credbroker/credbroker/inject/redis"
)

// listenerConfig is what every listener package's Config is: validated
// without I/O, naming its file paths, stating the data fields it needs
// from its credential, and its address.
type listenerConfig interface {
	Validate() error
	Paths() []*string
	Fields() []string
	Network() (network, address string)
}

// runner is a built listener: it serves on ln until ctx ends, then drains.
type runner interface {
	Run(ctx context.Context, ln net.Listener) error
}

// listenerKind is one entry of listenerKinds.
type listenerKind struct {
	newConfig  func() listenerConfig
	credential func(listenerConfig) string // the credential it injects
	// build makes the listener; nil for socket_api, which run builds
	// itself (it serves the whole socket API over the spiffe attestor's TLS).
	build func(c listenerConfig, d listener.Decider, opts ...listener.Option) (runner, error)
	// conns names its connections in the connection metrics and caps.
	conns string
}

// listenerKindOf turns a listener package's Config type and constructor
// into a table entry; credential reads the name of the credential it
// injects.
func listenerKindOf[C any, P interface {
	*C
	listenerConfig
}, R runner](credential func(*C) string, build func(C, listener.Decider, ...listener.Option) (R, error), conns string) listenerKind {
	return listenerKind{
		newConfig:  func() listenerConfig { return P(new(C)) },
		credential: func(c listenerConfig) string { return credential((*C)(c.(P))) },
		build: func(c listenerConfig, d listener.Decider, opts ...listener.Option) (runner, error) {
			return build(*(*C)(c.(P)), d, opts...)
		},
		conns: conns,
	}
}

// listenerKinds maps each listener key to its package. Adding a listener
// adds one entry here.
var listenerKinds = map[string]listenerKind{
	"socket_api": {
		newConfig:  func() listenerConfig { return new(broker.SocketAPIConfig) },
		credential: func(listenerConfig) string { return "" },
		conns:      broker.ListenerMTLS,
	},
	"http":            listenerKindOf(func(c *httpproxy.Config) string { return c.Credential }, httpproxy.New, broker.ListenerHTTP),
	"aws_credentials": listenerKindOf(func(c *awscreds.Config) string { return c.Credential }, awscreds.New, broker.ListenerAWS),
	"postgres":        listenerKindOf(func(c *postgres.Config) string { return c.Credential }, postgres.New, broker.ListenerPostgres),
	"redis":           listenerKindOf(func(c *redis.Config) string { return c.Credential }, redis.New, broker.ListenerRedis),
	"mysql":           listenerKindOf(func(c *mysql.Config) string { return c.Credential }, mysql.New, broker.ListenerMySQL),
}

// ListenerConfig is one injection listener: exactly one key of
// listenerKinds.
type ListenerConfig struct {
	// Kind is the listener key ("http", …).
	Kind string
	// Listener is the listener package's own configuration.
	Listener listenerConfig
}

// UnmarshalYAML decodes a listener strictly into its package's Config.
func (l *ListenerConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a listener is one key: %s", n.Line, listenerKeys())}}
	}
	k, v := n.Content[0], n.Content[1]
	kind, ok := listenerKinds[k.Value]
	if !ok {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: unknown listener %q (this version has: %s)", k.Line, k.Value, listenerKeys())}}
	}
	l.Kind, l.Listener = k.Value, kind.newConfig()
	errs := strictKeys(v, reflect.TypeOf(l.Listener))
	if err := v.Decode(l.Listener); err != nil {
		var te *yaml.TypeError
		if asTypeError(err, &te) {
			errs = append(errs, te.Errors...)
		} else {
			errs = append(errs, fmt.Sprintf("line %d: %v", v.Line, err))
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// listenerKeys lists the listener keys, for messages.
func listenerKeys() string {
	if len(listenerKinds) == 0 {
		return "none"
	}
	return strings.Join(sortedKeys(listenerKinds), ", ")
}

// validateListeners reports, for each listener, its own problems, a
// credential that is not configured, and data fields it needs that the
// credential's provider does not yield.
func (cfg *Config) validateListeners(bad func(key, format string, args ...any)) {
	byName := map[string]*CredentialConfig{}
	for i := range cfg.Credentials {
		byName[cfg.Credentials[i].Name] = &cfg.Credentials[i]
	}
	for i, l := range cfg.Listeners {
		if l.Listener == nil {
			continue
		}
		key := fmt.Sprintf("listeners.%d.%s", i, l.Kind)
		if err := l.Listener.Validate(); err != nil {
			for _, e := range unjoin(err) {
				bad(key, "listener %s: %v", l.Kind, e)
			}
		}
		if sa, ok := l.Listener.(*broker.SocketAPIConfig); ok {
			switch sp := cfg.Attestors.SPIFFE; {
			case sp == nil:
				bad(key, "listener socket_api: callers are attested by their SVID: configure attestors.spiffe")
			case sa.CertFile == "" && sp.WorkloadAPI == "":
				bad(key, "listener socket_api: with a bundle_file the listener needs cert_file and key_file (with workload_api the broker serves its own SVID)")
			}
		}
		name := listenerKinds[l.Kind].credential(l.Listener)
		c, ok := byName[name]
		switch {
		case name == "":
			continue
		case !ok:
			bad(key+".credential", "listener %s: credential %q is not configured", l.Kind, name)
			continue
		case c.Provider == nil:
			continue // reported with the credential
		}
		have := c.Provider.Fields()
		for _, f := range l.Listener.Fields() {
			if !slices.Contains(have, f) {
				bad(key, "listener %s: needs field %q of credential %q, whose %s provider yields %s", l.Kind, f, name, c.Kind, strings.Join(have, ", "))
			}
		}
	}
}

// listen opens an injection listener's address: a TCP loopback address,
// whose callers the unix attestor finds once per connection and then holds
// (unixattest.Attestor.ListenTCP), or a Unix socket made as the socket API's is (mode, group, refusing to
// replace a live one), whose connections the unix attestor tracks so that
// the writer of each request is the one attested. The returned function
// closes and removes what listen made.
func listen(network, address string, cfg *Config, peer *unixattest.Attestor) (net.Listener, func(), error) {
	if network == "tcp" {
		ln, err := net.Listen("tcp", address)
		if err != nil {
			return nil, nil, err
		}
		// The process behind each connection is found once, then held.
		return peer.ListenTCP(ln), func() { ln.Close() }, nil
	}
	mode, _ := cfg.socketMode()
	gid, _ := cfg.socketGID() // both checked by Validate
	ln, err := broker.ListenUnix(address, mode, gid)
	if err != nil {
		return nil, nil, err
	}
	ours, _ := os.Lstat(address)
	remove := func() { removeSocket(address, ln, ours) }
	pln, err := peer.Listen(ln)
	if err != nil {
		remove()
		return nil, nil, err
	}
	return pln, remove, nil
}
