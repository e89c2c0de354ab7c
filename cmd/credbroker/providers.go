package main

import (
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/credbroker/credbroker/providers/aws"
	"github.com/credbroker/credbroker/providers/lease"
	"github.com/credbroker/credbroker/providers/oauth2"
	"github.com/credbroker/credbroker/providers/postgres"
	"github.com/credbroker/credbroker/providers/static"
	"github.com/credbroker/credbroker/providers/vault"
)

// providerConfig is what every provider package's Config is: validated
// without I/O, declaring the data fields its credentials carry, naming its
// file paths (resolved relative to the file that names them).
type providerConfig interface {
	Validate() error
	Fields() []string
	Paths() []*string
}

// buildContext is what the broker gives every provider beyond its own
// section.
type buildContext struct {
	name      string        // the credential's name
	ttl       time.Duration // the credential's ttl (0: the provider's default)
	installID string        // this install, for providers that mark what they create upstream
	log       *slog.Logger
}

// providerKind is one entry of providerKinds: how to make a provider's
// config and, from it, the provider.
type providerKind struct {
	newConfig func() providerConfig
	build     func(providerConfig, buildContext) (lease.Provider, error)
	// managed providers mint credentials: the lease manager caches,
	// refreshes, records and revokes them. A static value is served as it
	// is, with a lease label per issue.
	managed bool
}

// kindOf turns a provider package's Config type and New into a table
// entry.
func kindOf[C any, P interface {
	*C
	providerConfig
}](build func(*C, buildContext) (lease.Provider, error), managed bool) providerKind {
	return providerKind{
		newConfig: func() providerConfig { return P(new(C)) },
		build:     func(c providerConfig, b buildContext) (lease.Provider, error) { return build((*C)(c.(P)), b) },
		managed:   managed,
	}
}

// providerKinds maps each credential's provider key to its package. Adding
// a provider adds one entry here: its Config is decoded strictly from the
// YAML, validated, and built.
var providerKinds = map[string]providerKind{
	"static": kindOf(func(c *static.Config, b buildContext) (lease.Provider, error) {
		c.Name, c.TTL = b.name, b.ttl
		return static.New(*c)
	}, false),
	"postgres": kindOf(func(c *postgres.Config, b buildContext) (lease.Provider, error) {
		c.Name, c.TTL, c.InstallID, c.Logger = b.name, b.ttl, b.installID, b.log
		return postgres.New(*c)
	}, true),
	"vault": kindOf(func(c *vault.Config, b buildContext) (lease.Provider, error) {
		c.Name, c.TTL, c.Logger = b.name, b.ttl, b.log
		return vault.New(*c)
	}, true),
	"aws_sts": kindOf(func(c *aws.Config, b buildContext) (lease.Provider, error) {
		c.Name, c.TTL, c.Logger = b.name, b.ttl, b.log
		return aws.New(*c)
	}, true),
	"oauth2": kindOf(func(c *oauth2.Config, b buildContext) (lease.Provider, error) {
		c.Name, c.TTL, c.Logger = b.name, b.ttl, b.log
		return oauth2.Open(*c)
	}, true),
}

// providerKeys lists the provider keys, for messages.
func providerKeys() string {
	keys := sortedKeys(providerKinds)
	return strings.Join(keys, ", ")
}

// CredentialConfig is one credential: its name, ttl, and exactly one
// provider section, a key of providerKinds.
type CredentialConfig struct {
	// Name is what callers ask for.
	Name string
	// TTL of each issue; default 1h (the provider's). A policy's ttl can
	// shorten it.
	TTL Duration
	// Kind is the provider key ("static", "postgres", …).
	Kind string
	// Provider is the provider's own configuration.
	Provider providerConfig
}

// UnmarshalYAML decodes a credential: name and ttl, then the provider
// section into its package's Config, strictly (unknown keys are errors, as
// everywhere in the file).
func (c *CredentialConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a credential is a mapping: {name: …, <provider>: {…}}", n.Line)}}
	}
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "name":
			err = v.Decode(&c.Name)
		case "ttl":
			err = v.Decode(&c.TTL)
		default:
			kind, ok := providerKinds[k.Value]
			switch {
			case !ok:
				errs = append(errs, fmt.Sprintf("line %d: unknown key %q (a credential has name, ttl and one provider: %s)", k.Line, k.Value, providerKeys()))
				continue
			case c.Provider != nil:
				errs = append(errs, fmt.Sprintf("line %d: a credential has one provider; %s is already given", k.Line, c.Kind))
				continue
			}
			c.Kind, c.Provider = k.Value, kind.newConfig()
			errs = append(errs, strictKeys(v, reflect.TypeOf(c.Provider))...)
			err = v.Decode(c.Provider)
		}
		if err != nil {
			var te *yaml.TypeError
			if ok := asTypeError(err, &te); ok {
				errs = append(errs, te.Errors...)
			} else {
				errs = append(errs, fmt.Sprintf("line %d: %v", v.Line, err))
			}
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

func asTypeError(err error, te **yaml.TypeError) bool {
	t, ok := err.(*yaml.TypeError)
	*te = t
	return ok
}

// strictKeys reports the keys of n that t (a struct, or pointer, slice or
// map of structs) has no yaml field for, recursively: a misspelt key
// under a provider is an error, never silently ignored.
func strictKeys(n *yaml.Node, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		var errs []string
		for _, c := range n.Content {
			errs = append(errs, strictKeys(c, t.Elem())...)
		}
		return errs
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var errs []string
		for i := 1; i < len(n.Content); i += 2 {
			errs = append(errs, strictKeys(n.Content[i], t.Elem())...)
		}
		return errs
	case reflect.Struct:
	default:
		return nil
	}
	if n.Kind != yaml.MappingNode || reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return nil
	}
	fields := yamlFields(t)
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		ft, ok := fields[k.Value]
		if !ok {
			errs = append(errs, fmt.Sprintf("line %d: unknown key %q (known: %s)", k.Line, k.Value, strings.Join(slices.Sorted(maps.Keys(fields)), ", ")))
			continue
		}
		errs = append(errs, strictKeys(n.Content[i+1], ft)...)
	}
	return errs
}

// yamlFields maps the yaml keys of struct t to their types, inlined
// structs included.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" || !f.IsExported():
			continue
		case strings.Contains(opts, "inline"):
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			for k, v := range yamlFields(ft) {
				out[k] = v
			}
			continue
		case name == "":
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}
