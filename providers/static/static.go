// Package static provides credentials whose value comes from a file or an
// environment variable: API keys, passwords and tokens managed outside the
// broker. The broker still attests, authorises and audits every issue, and
// gives each one an expiry.
//
// A credential is one value (field "value": static: {file: …} or {env: …})
// or several named fields each from its own file or variable, such as the
// username and password a database listener logs in with:
//
//	static: {fields: {username: {env: DB_USER}, password: {file: secrets/db-pw}}}
//
// A file-backed credential is re-read when the file changes (size, mtime or
// inode), so a rotated secret is served from the next request on; one
// trailing newline is trimmed. An environment-backed credential is read once
// at start.
package static

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/credbroker/credbroker/providers"
)

// Kind is the provider kind reported in replies and audit rows.
const Kind = "static"

// FieldValue is the one field of a static credential.
const FieldValue = "value"

// Fields are the data fields of every static credential.
var Fields = []string{FieldValue}

// DefaultTTL is the lifetime of an issued credential when Config.TTL is zero.
const DefaultTTL = time.Hour

// ErrUnavailable is wrapped by every failure to produce the value.
var ErrUnavailable = errors.New("static: credential value unavailable")

// Config configures one static credential. Exactly one of File, Env and
// FieldSources is set. In the configuration file: static: {file: PATH},
// static: {env: VAR} or static: {fields: {NAME: {file: PATH}, …}}.
type Config struct {
	// File holds the value; re-read when it changes. No default.
	File string `yaml:"file"`
	// Env names the environment variable that holds the value, read once
	// at start. No default.
	Env string `yaml:"env"`
	// FieldSources are named fields, each from a file or a variable as
	// File and Env are, instead of the one field "value".
	FieldSources map[string]*Source `yaml:"fields"`

	// Name is the credential's name, used in errors.
	Name string `yaml:"-"`
	// TTL is the lifetime of each issue; default DefaultTTL.
	TTL time.Duration `yaml:"-"`
	// Now returns the current time; default time.Now.
	Now func() time.Time `yaml:"-"`
	// LookupEnv reads the environment; default os.LookupEnv.
	LookupEnv func(string) (string, bool) `yaml:"-"`
}

// Source is where one field's value comes from: exactly one of File and
// Env.
type Source struct {
	// File holds the field's value; re-read when it changes.
	File string `yaml:"file"`
	// Env names the environment variable holding the field's value, read
	// once at start.
	Env string `yaml:"env"`
}

// MaxFieldName bounds a field name.
const MaxFieldName = 64

// Validate reports what is wrong with c, without reading anything.
func (c *Config) Validate() error {
	var errs []error
	switch {
	case c.FieldSources != nil && (c.File != "" || c.Env != ""):
		errs = append(errs, errors.New("static: set fields, or one of file and env, not both"))
	case c.FieldSources != nil:
		if len(c.FieldSources) == 0 {
			errs = append(errs, errors.New("static: fields is empty"))
		}
		for _, name := range slices.Sorted(maps.Keys(c.FieldSources)) {
			src := c.FieldSources[name]
			if !validFieldName(name) {
				errs = append(errs, fmt.Errorf("static: field name %.80q: use 1 to %d of a-z 0-9 _, starting with a letter", name, MaxFieldName))
			}
			if src == nil || (src.File == "") == (src.Env == "") {
				errs = append(errs, fmt.Errorf("static: field %.80q: exactly one of file and env must be set", name))
			}
		}
	case (c.File == "") == (c.Env == ""):
		errs = append(errs, errors.New("static: exactly one of file, env and fields must be set"))
	}
	if c.TTL < 0 {
		errs = append(errs, errors.New("static: ttl must be positive"))
	}
	return errors.Join(errs...)
}

// validFieldName accepts a lowercase identifier.
func validFieldName(s string) bool {
	if s == "" || len(s) > MaxFieldName || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Fields are the data fields of the credential: the names of
// FieldSources, sorted, or FieldValue.
func (c *Config) Fields() []string {
	if c.FieldSources != nil {
		return slices.Sorted(maps.Keys(c.FieldSources))
	}
	return Fields
}

// Paths are c's file paths, for resolving relative ones.
func (c *Config) Paths() []*string {
	if c.FieldSources == nil {
		return []*string{&c.File}
	}
	var ps []*string
	for _, name := range slices.Sorted(maps.Keys(c.FieldSources)) {
		if src := c.FieldSources[name]; src != nil {
			ps = append(ps, &src.File)
		}
	}
	return ps
}

// Provider serves one static credential.
type Provider struct {
	cfg    Config
	fields map[string]*value
}

// value is one field's value and where it comes from.
type value struct {
	name      string // the credential's, for errors
	field     string
	file, env string
	mu        sync.Mutex
	stamp     fileStamp
	cur       providers.Secret
}

type fileStamp struct {
	size, mtime int64
	ino, dev    uint64
}

// New validates cfg and reads the value once, so a missing file or variable
// is reported at start rather than on the first request.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("credential %q: %w", cfg.Name, err)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LookupEnv == nil {
		cfg.LookupEnv = os.LookupEnv
	}
	p := &Provider{cfg: cfg, fields: map[string]*value{}}
	if cfg.FieldSources == nil {
		p.fields[FieldValue] = &value{name: cfg.Name, field: FieldValue, file: cfg.File, env: cfg.Env}
	}
	for name, src := range cfg.FieldSources {
		p.fields[name] = &value{name: cfg.Name, field: name, file: src.File, env: src.Env}
	}
	for _, v := range p.fields {
		if err := v.load(cfg.LookupEnv); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// load reads the value first: once and for all from the environment, or
// from the file, which current re-reads when it changes.
func (v *value) load(lookup func(string) (string, bool)) error {
	if v.env == "" {
		_, err := v.current()
		return err
	}
	s, ok := lookup(v.env)
	if !ok || s == "" {
		return fmt.Errorf("%w: credential %q: %s: environment variable %s is not set", ErrUnavailable, v.name, v.field, v.env)
	}
	v.cur = providers.NewSecret([]byte(s))
	return nil
}

// TTL reports the credential's own lifetime.
func (p *Provider) TTL() time.Duration { return p.cfg.TTL }

// Credential returns the value with an expiry of the smaller of the
// credential's TTL and req.TTL.
func (p *Provider) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	if err := ctx.Err(); err != nil {
		return providers.Credential{}, err
	}
	data := make(map[string]providers.Secret, len(p.fields))
	for name, v := range p.fields {
		s, err := v.current()
		if err != nil {
			return providers.Credential{}, err
		}
		data[name] = s
	}
	ttl := p.cfg.TTL
	if req.TTL > 0 && req.TTL < ttl {
		ttl = req.TTL
	}
	return providers.Credential{
		Lease: providers.Lease{
			ID:         newLeaseID(),
			Credential: req.Name,
			Subject:    req.Identity.Subject,
			Kind:       Kind,
			ExpiresAt:  p.cfg.Now().Add(ttl),
		},
		Data: data,
	}, nil
}

// current returns the value, re-reading the file when its stamp changed.
func (v *value) current() (providers.Secret, error) {
	if v.file == "" {
		return v.cur, nil
	}
	fi, err := os.Stat(v.file)
	if err != nil {
		return providers.Secret{}, fmt.Errorf("%w: credential %q: %s: %v", ErrUnavailable, v.name, v.field, err)
	}
	st := stampOf(fi)
	v.mu.Lock()
	defer v.mu.Unlock()
	if st == v.stamp && !v.cur.IsZero() {
		return v.cur, nil
	}
	b, err := os.ReadFile(v.file)
	if err != nil {
		return providers.Secret{}, fmt.Errorf("%w: credential %q: %s: %v", ErrUnavailable, v.name, v.field, err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return providers.Secret{}, fmt.Errorf("%w: credential %q: %s: file %s is empty", ErrUnavailable, v.name, v.field, v.file)
	}
	v.stamp, v.cur = st, providers.NewSecret(b)
	return v.cur, nil
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino, st.dev = sys.Ino, uint64(sys.Dev)
	}
	return st
}

func newLeaseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "static-" + hex.EncodeToString(b[:])
}
