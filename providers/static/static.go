// Package static provides credentials whose value comes from a file or an
// environment variable: API keys, passwords and tokens managed outside the
// broker. The broker still attests, authorises and audits every issue, and
// gives each one an expiry.
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
	"os"
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

// Config configures one static credential. Exactly one of File and Env is
// set. In the configuration file: static: {file: PATH} or static: {env: VAR}.
type Config struct {
	// File holds the value; re-read when it changes. No default.
	File string `yaml:"file"`
	// Env names the environment variable that holds the value, read once
	// at start. No default.
	Env string `yaml:"env"`

	// Name is the credential's name, used in errors.
	Name string `yaml:"-"`
	// TTL is the lifetime of each issue; default DefaultTTL.
	TTL time.Duration `yaml:"-"`
	// Now returns the current time; default time.Now.
	Now func() time.Time `yaml:"-"`
	// LookupEnv reads the environment; default os.LookupEnv.
	LookupEnv func(string) (string, bool) `yaml:"-"`
}

// Validate reports what is wrong with c, without reading anything.
func (c *Config) Validate() error {
	if (c.File == "") == (c.Env == "") {
		return errors.New("static: exactly one of file and env must be set")
	}
	if c.TTL < 0 {
		return errors.New("static: ttl must be positive")
	}
	return nil
}

// Fields are the data fields of the credential: FieldValue.
func (c *Config) Fields() []string { return Fields }

// Paths are c's file paths, for resolving relative ones.
func (c *Config) Paths() []*string { return []*string{&c.File} }

// Provider serves one static credential.
type Provider struct {
	cfg Config

	mu    sync.Mutex
	stamp fileStamp
	value providers.Secret
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
	p := &Provider{cfg: cfg}
	if cfg.Env != "" {
		v, ok := cfg.LookupEnv(cfg.Env)
		if !ok || v == "" {
			return nil, fmt.Errorf("%w: credential %q: environment variable %s is not set", ErrUnavailable, cfg.Name, cfg.Env)
		}
		p.value = providers.NewSecret([]byte(v))
		return p, nil
	}
	if _, err := p.current(); err != nil {
		return nil, err
	}
	return p, nil
}

// TTL reports the credential's own lifetime.
func (p *Provider) TTL() time.Duration { return p.cfg.TTL }

// Credential returns the value with an expiry of the smaller of the
// credential's TTL and req.TTL.
func (p *Provider) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	if err := ctx.Err(); err != nil {
		return providers.Credential{}, err
	}
	v, err := p.current()
	if err != nil {
		return providers.Credential{}, err
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
		Data: map[string]providers.Secret{FieldValue: v},
	}, nil
}

// current returns the value, re-reading the file when its stamp changed.
func (p *Provider) current() (providers.Secret, error) {
	if p.cfg.File == "" {
		return p.value, nil
	}
	fi, err := os.Stat(p.cfg.File)
	if err != nil {
		return providers.Secret{}, fmt.Errorf("%w: credential %q: %v", ErrUnavailable, p.cfg.Name, err)
	}
	st := stampOf(fi)
	p.mu.Lock()
	defer p.mu.Unlock()
	if st == p.stamp && !p.value.IsZero() {
		return p.value, nil
	}
	b, err := os.ReadFile(p.cfg.File)
	if err != nil {
		return providers.Secret{}, fmt.Errorf("%w: credential %q: %v", ErrUnavailable, p.cfg.Name, err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return providers.Secret{}, fmt.Errorf("%w: credential %q: file %s is empty", ErrUnavailable, p.cfg.Name, p.cfg.File)
	}
	p.stamp, p.value = st, providers.NewSecret(b)
	return p.value, nil
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
