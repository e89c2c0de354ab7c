package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	awsattest "github.com/credbroker/credbroker/attest/aws"
	githubattest "github.com/credbroker/credbroker/attest/github"
	k8sattest "github.com/credbroker/credbroker/attest/kubernetes"
	spiffeattest "github.com/credbroker/credbroker/attest/spiffe"
	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit/fleet"
	"github.com/credbroker/credbroker/broker"
)

// Defaults of the configuration file.
const (
	defaultSocket     = "/run/credbroker/broker.sock"
	defaultSocketMode = "0660"
	defaultAdmin      = "127.0.0.1:9901"
	defaultAuditPath  = "/var/lib/credbroker/audit.db"

	// defaultMaxConnections caps each listener's open connections; an idle
	// one holds about 18 KiB (see tuneGC).
	defaultMaxConnections = 1024
	// adminMaxConnections caps the admin listener's: scrapers and probes
	// need a handful.
	adminMaxConnections = 16

	defaultKubernetesIssuer = "https://kubernetes.default.svc"

	// leasesSuffix names the lease store beside the audit database.
	leasesSuffix = ".leases"
)

// Config is credbroker's configuration file (or directory of files).
// Unknown keys are errors. Relative paths are relative to the file that
// names them.
type Config struct {
	// Socket is the socket API's path; default /run/credbroker/broker.sock.
	Socket string `yaml:"socket"`
	// SocketMode is the socket's permission bits, octal; default "0660".
	SocketMode string `yaml:"socket_mode"`
	// SocketGroup is the group the socket is given, a name or a numeric
	// gid: with socket_mode 0660 its members may connect. A name must be in
	// /etc/group (the binary is static: no NSS); a gid need not be named.
	// Default none: the socket keeps the broker's group.
	SocketGroup string `yaml:"socket_group"`
	// MaxConnections caps the open connections of each listener serving the
	// socket API (the socket, the mTLS listener); default 1024, at least 1.
	// At the cap callers wait in the kernel's backlog, and the longest-idle
	// connection is closed to admit one. The admin listener has its own
	// cap of 16.
	MaxConnections *int `yaml:"max_connections"`
	// Admin is the loopback address of /healthz, /readyz and /metrics;
	// default 127.0.0.1:9901, "" turns it off.
	Admin *string `yaml:"admin"`
	// DrainTimeout is how long requests in flight on the socket API's Unix
	// socket and on the admin listener may finish at shutdown; default
	// 30s. Each entry of listeners has its own drain_timeout.
	DrainTimeout broker.DrainTimeout `yaml:"drain_timeout"`
	// Audit configures the decision log.
	Audit AuditConfig `yaml:"audit"`
	// Policies is a policy file or a directory of them.
	Policies string `yaml:"policies"`
	// Attestors configures token-based attestation; unix is always on.
	Attestors AttestorsConfig `yaml:"attestors"`
	// Credentials are the credentials the broker can issue.
	Credentials []CredentialConfig `yaml:"credentials"`
	// Leases configures the lease manager of minted credentials.
	Leases LeasesConfig `yaml:"leases"`
	// Listeners are injection listeners, each one key of listenerKinds.
	Listeners []ListenerConfig `yaml:"listeners"`
	// Log configures the broker's own log.
	Log LogConfig `yaml:"log"`

	// sources maps a key path ("credentials.0.ttl") to "file:line", for
	// validation messages.
	sources map[string]string
	// Files lists the configuration files read, in order.
	Files []string `yaml:"-"`
}

// AuditConfig configures the decision log.
type AuditConfig struct {
	// Path of the SQLite database; default /var/lib/credbroker/audit.db.
	Path string `yaml:"path"`
	// KeyFile holds the per-install HMAC and Ed25519 keys; default Path+".key".
	// Created only together with a new, empty log; must be owned by the
	// broker's user with mode 0600 (or stricter).
	KeyFile string `yaml:"key_file"`
	// HeadFile records the newest chain head the broker signed; default
	// beside the key file, the database's name + ".head".
	HeadFile string `yaml:"head_file"`
	// BusyTimeout is how long a decision waits for a locked store before it
	// is refused; default 1s.
	BusyTimeout Duration `yaml:"busy_timeout"`
	// MinRetention is the retention floor: `audit prune` refuses, without
	// --force, to delete decisions newer than this. The broker stores it in
	// the database when it opens the log, so the prune command honours it
	// without the configuration. Default (and when 0) 24h.
	MinRetention Duration `yaml:"min_retention"`
	// Checkpoint writes signed checkpoints of the chain head for shipping
	// off the host.
	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	// Forward also sends the log to a fleet's central store; default off.
	Forward ForwardConfig `yaml:"forward"`
}

// ForwardConfig configures forwarding of the audit log, which never holds
// up a decision (see docs/audit-fleet.md).
type ForwardConfig struct {
	// Postgres forwards rows, checkpoints and prune anchors to a fleet
	// store on PostgreSQL: {dsn_file: …}; absent, nothing is forwarded.
	Postgres *fleet.Config `yaml:"postgres"`
}

// CheckpointConfig configures signed checkpoints.
type CheckpointConfig struct {
	// File receives the latest checkpoint; "" turns checkpoints off.
	File string `yaml:"file"`
	// Interval between checkpoints; default 5s.
	Interval Duration `yaml:"interval"`
}

// AttestorsConfig configures the attestors: unix is always on, the others
// when their section is present.
type AttestorsConfig struct {
	Unix       *UnixConfig       `yaml:"unix"`
	Kubernetes *KubernetesConfig `yaml:"kubernetes"`
	SPIFFE     *SPIFFEConfig     `yaml:"spiffe"`
	GitHub     *GitHubConfig     `yaml:"github"`
	AWS        *AWSConfig        `yaml:"aws"`
	Ambient    *AmbientConfig    `yaml:"ambient"`
	// TokenCacheTTL is how long a verified bearer token's identity is
	// reused (never past its exp); 0s turns the cache off. Default 30s, or
	// 5s with kubernetes token_review, which allows at most 5s; at most 5m.
	TokenCacheTTL *Duration `yaml:"token_cache_ttl"`
}

// UnixConfig tunes the unix attestor, which attests every caller on the
// socket from kernel credentials.
type UnixConfig struct {
	// MaxExeBytes is the largest executable the attestor hashes for
	// exe_sha256; a caller running a larger one is refused with that reason.
	// Default 512 MiB.
	MaxExeBytes int64 `yaml:"max_exe_bytes"`
	// HashConcurrency is how many executables are hashed at once (first
	// sight of a file; later requests use the cache). Default 2.
	HashConcurrency int `yaml:"hash_concurrency"`
	// TCPLookup is how a TCP listener's caller is found among the
	// processes: bpf with a BPF iterator over every open file (needs
	// CAP_BPF and CAP_PERFMON, and a kernel with BTF; the broker refuses to
	// start without them), proc by reading /proc/*/fd (a readlink per open
	// file of every process, each connection), or auto, the iterator when
	// it loads and /proc otherwise. Default auto.
	TCPLookup string `yaml:"tcp_lookup"`
}

// KubernetesConfig verifies projected service-account tokens.
type KubernetesConfig struct {
	// Issuer is the cluster's service-account issuer, matched exactly.
	// Default https://kubernetes.default.svc.
	Issuer string `yaml:"issuer"`
	// Audiences the token must carry one of (the broker's own). Required.
	Audiences []string `yaml:"audiences"`
	// JWKSURL or JWKSFile give the signing keys; neither means OIDC
	// discovery of Issuer.
	JWKSURL  string `yaml:"jwks_url"`
	JWKSFile string `yaml:"jwks_file"`
	// TokenReview also asks the API server (APIServer, with CAFile and
	// BearerTokenFile) to confirm each token. BearerTokenFile, the broker's
	// own service-account token, also authenticates discovery and JWKS
	// requests, which clusters serve to service accounts only by default —
	// sent only to the origins of Issuer and APIServer (https); a jwks_uri
	// elsewhere is fetched without it.
	TokenReview     bool   `yaml:"token_review"`
	APIServer       string `yaml:"api_server"`
	CAFile          string `yaml:"ca_file"`
	BearerTokenFile string `yaml:"bearer_token_file"`
	// AllowedAlgs default RS256, ES256.
	AllowedAlgs []string `yaml:"allowed_algs"`
	// MaxLifetime caps exp - iat; default 24h.
	MaxLifetime Duration `yaml:"max_lifetime"`
}

// SPIFFEConfig verifies JWT-SVIDs.
type SPIFFEConfig struct {
	// TrustDomain is the only trust domain whose SVIDs are accepted, such
	// as example.org. Required.
	TrustDomain string `yaml:"trust_domain"`
	// Audiences are the broker's own: a JWT-SVID must name at least one of
	// them in its aud claim. Required.
	Audiences []string `yaml:"audiences"`
	// BundleFile (a JWKS-format SPIFFE bundle) or WorkloadAPI
	// ("unix:///run/spire/agent.sock") supplies the trust bundle.
	BundleFile  string `yaml:"bundle_file"`
	WorkloadAPI string `yaml:"workload_api"`
	// MTLSListen serves the socket API on this TCP address to callers
	// presenting an X.509-SVID of the trust domain. The broker's own
	// certificate is its SVID from the Workload API, or MTLSCertFile and
	// MTLSKeyFile with a bundle file.
	MTLSListen   string `yaml:"mtls_listen"`
	MTLSCertFile string `yaml:"mtls_cert_file"`
	MTLSKeyFile  string `yaml:"mtls_key_file"`
}

// GitHubConfig verifies GitHub Actions OIDC tokens.
type GitHubConfig struct {
	// Issuer defaults to https://token.actions.githubusercontent.com;
	// override for GitHub Enterprise Server.
	Issuer string `yaml:"issuer"`
	// Audiences are the broker's own: a token must carry one of them (the
	// audience the workflow asks for). Required.
	Audiences []string `yaml:"audiences"`
	// JWKSURL, when set, is fetched for the signing keys instead of OIDC
	// discovery of Issuer; default discovery.
	JWKSURL string `yaml:"jwks_url"`
	// MaxLifetime caps exp - iat; default 1h.
	MaxLifetime Duration `yaml:"max_lifetime"`
}

// AWSConfig configures AWS IAM attestation.
type AWSConfig struct {
	// ServerID is the value callers sign into their Credbroker-Server-Id
	// header, binding their request to this broker. Required.
	ServerID string `yaml:"server_id"`
	// STSEndpoint is the STS root the broker sends requests to; default
	// https://sts.amazonaws.com.
	STSEndpoint string `yaml:"sts_endpoint"`
	// Region is the signing region; default us-east-1.
	Region string `yaml:"region"`
	// ReplayDB is the SQLite file keeping the signatures accepted within
	// their validity window (as SHA-256 hashes), so that a signed request
	// cannot be replayed after a restart; default the audit database's
	// path + ".aws-replay".
	ReplayDB string `yaml:"replay_db"`
}

// AmbientConfig attests callers that present no evidence of their own with
// a token file the broker reads (a per-pod sidecar's projected token).
type AmbientConfig struct {
	// TokenFile holds the token; re-read when its size or modification
	// time changes, as the kubelet rotates a projected token. Required.
	TokenFile string `yaml:"token_file"`
}

// LeasesConfig configures the lease manager, which caches, refreshes,
// records and revokes the credentials providers mint.
type LeasesConfig struct {
	// Store is the SQLite file of revocable leases and pending revocations
	// (the broker's own state, not the audit log); default the audit
	// database's path + ".leases".
	Store string `yaml:"store"`
	// RefreshAt is the fraction of a credential's lifetime after which the
	// next request starts a refresh, in (0, 1); default 0.5.
	RefreshAt float64 `yaml:"refresh_at"`
}

// LogConfig configures the broker's log.
type LogConfig struct {
	// Level is debug, info, warn or error; default info.
	Level string `yaml:"level"`
	// Format is json or text; default json.
	Format string `yaml:"format"`
}

// Duration is a time.Duration written as a Go duration string ("15m").
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("invalid duration %q (use a positive Go duration such as 90s, 15m, 1h)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// ConfigError is one problem in the configuration, with its position.
type ConfigError struct {
	Pos     string // file:line, or file
	Message string
}

func (e ConfigError) Error() string { return e.Pos + ": " + e.Message }

// LoadConfig reads a configuration file, or every *.yaml and *.yml file of a
// directory in name order. Scalar keys may be set in one file only;
// credentials and listeners accumulate. All problems are reported at once;
// with problems, the Config returned (nil only when no file could be found)
// holds what could be decoded, so that validation can report more.
func LoadConfig(path string) (*Config, error) {
	files, err := configFiles(path)
	if err != nil {
		return nil, err
	}
	cfg := &Config{sources: map[string]string{}, Files: files}
	var errs []error
	for _, f := range files {
		errs = append(errs, cfg.merge(f)...)
	}
	return cfg, errors.Join(errs...)
}

// configFiles lists the files of a config path. A directory's files that do
// not look like broker configuration (no top-level broker key) are skipped,
// so that the policies may sit in the same directory.
func configFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, _ := filepath.Glob(filepath.Join(path, pat))
		files = append(files, m...)
	}
	sort.Strings(files)
	var cfgs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if !isPolicyDocument(b) {
			cfgs = append(cfgs, f)
		}
	}
	if len(cfgs) == 0 {
		return nil, fmt.Errorf("config: no configuration files (*.yaml, *.yml) in %s", path)
	}
	return cfgs, nil
}

// isPolicyDocument reports whether a YAML document's only top-level key is
// "policies" holding a list — a policy file, not broker configuration.
func isPolicyDocument(b []byte) bool {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || len(doc.Content) == 0 {
		return false
	}
	m := doc.Content[0]
	return m.Kind == yaml.MappingNode && len(m.Content) == 2 &&
		m.Content[0].Value == "policies" && m.Content[1].Kind == yaml.SequenceNode
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// merge decodes one file strictly into cfg.
func (cfg *Config) merge(file string) []error {
	b, err := os.ReadFile(file)
	if err != nil {
		return []error{fmt.Errorf("config: %w", err)}
	}
	var one Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&one); err != nil && !errors.Is(err, io.EOF) {
		return yamlErrors(file, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root)
	src := map[string]string{}
	if len(root.Content) > 0 {
		indexPositions(file, "", root.Content[0], src)
	}
	dir := filepath.Dir(file)
	one.resolvePaths(dir)

	var errs []error
	base := len(cfg.Credentials)
	for i := range one.Credentials {
		for k, v := range src {
			if rest, ok := strings.CutPrefix(k, fmt.Sprintf("credentials.%d", i)); ok {
				cfg.sources[fmt.Sprintf("credentials.%d%s", base+i, rest)] = v
			}
		}
	}
	for i := range one.Listeners {
		for k, v := range src {
			if rest, ok := strings.CutPrefix(k, fmt.Sprintf("listeners.%d", i)); ok {
				cfg.sources[fmt.Sprintf("listeners.%d%s", len(cfg.Listeners)+i, rest)] = v
			}
		}
	}
	return append(errs, cfg.mergeValue(reflect.ValueOf(cfg).Elem(), reflect.ValueOf(&one).Elem(), "", src)...)
}

// mergeValue moves what one file set (src) into the merged configuration
// (dst), field by field through the yaml keys, so that no field of the
// configuration can be dropped by the merge: lists are appended (one
// file's credentials after another's); a section or value set in two
// files is an error naming the first; structs are merged key by key.
func (cfg *Config) mergeValue(dst, src reflect.Value, key string, pos map[string]string) []error {
	switch src.Kind() {
	case reflect.Struct:
		var errs []error
		t := src.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue // not a key of the file
			}
			k := name
			if key != "" {
				k = key + "." + name
			}
			errs = append(errs, cfg.mergeValue(dst.Field(i), src.Field(i), k, pos)...)
		}
		return errs
	case reflect.Slice:
		dst.Set(reflect.AppendSlice(dst, src))
		return nil
	}
	if src.IsZero() {
		return nil
	}
	if !dst.IsZero() {
		return []error{ConfigError{pos[key], key + " is already set in " + cfg.sources[key]}}
	}
	dst.Set(src)
	cfg.sources[key] = pos[key]
	return nil
}

// resolvePaths makes the file's relative paths relative to its directory.
func (cfg *Config) resolvePaths(dir string) {
	for _, p := range []*string{&cfg.Socket, &cfg.Policies, &cfg.Audit.Path, &cfg.Leases.Store, &cfg.Audit.KeyFile, &cfg.Audit.HeadFile, &cfg.Audit.Checkpoint.File} {
		*p = resolve(dir, *p)
	}
	if a := cfg.Attestors.Ambient; a != nil {
		a.TokenFile = resolve(dir, a.TokenFile)
	}
	if p := cfg.Audit.Forward.Postgres; p != nil {
		for _, path := range p.Paths() {
			*path = resolve(dir, *path)
		}
	}
	if a := cfg.Attestors.AWS; a != nil {
		a.ReplayDB = resolve(dir, a.ReplayDB)
	}
	if k := cfg.Attestors.Kubernetes; k != nil {
		for _, p := range []*string{&k.JWKSFile, &k.CAFile, &k.BearerTokenFile} {
			*p = resolve(dir, *p)
		}
	}
	if sp := cfg.Attestors.SPIFFE; sp != nil {
		for _, p := range []*string{&sp.BundleFile, &sp.MTLSCertFile, &sp.MTLSKeyFile} {
			*p = resolve(dir, *p)
		}
	}
	for i := range cfg.Listeners {
		if l := cfg.Listeners[i].Listener; l != nil {
			for _, path := range l.Paths() {
				*path = resolve(dir, *path)
			}
		}
	}
	for i := range cfg.Credentials {
		if p := cfg.Credentials[i].Provider; p != nil {
			for _, path := range p.Paths() {
				*path = resolve(dir, *path)
			}
		}
	}
}

func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// yamlErrors turns yaml.v3's decoding errors into file:line messages.
func yamlErrors(file string, err error) []error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			return []error{ConfigError{file + ":" + m[1], m[2]}}
		}
		return []error{ConfigError{file, msg}}
	}
	var errs []error
	for _, e := range te.Errors {
		if m := yamlLine.FindStringSubmatch(e); m != nil {
			errs = append(errs, ConfigError{file + ":" + m[1], friendlyYAML(m[2])})
		} else {
			errs = append(errs, ConfigError{file, e})
		}
	}
	return errs
}

var unknownField = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

// friendlyYAML rewrites yaml.v3's type-centred messages in the config's terms.
func friendlyYAML(msg string) string {
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("unknown key %q", m[1])
	}
	return strings.ReplaceAll(msg, "main.", "")
}

// indexPositions records "file:line" for every key path under n.
func indexPositions(file, prefix string, n *yaml.Node, out map[string]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			out[p] = fmt.Sprintf("%s:%d", file, k.Line)
			indexPositions(file, p, n.Content[i+1], out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := prefix + "." + strconv.Itoa(i)
			out[p] = fmt.Sprintf("%s:%d", file, c.Line)
			indexPositions(file, p, c, out)
		}
	}
}

// pos returns the position of a key path, falling back to its parents and
// then to the first file.
func (cfg *Config) pos(key string) string {
	for k := key; k != ""; {
		if p, ok := cfg.sources[k]; ok {
			return p
		}
		i := strings.LastIndex(k, ".")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	if len(cfg.Files) > 0 {
		return cfg.Files[0]
	}
	return "config"
}

// applyDefaults fills unset fields.
func (cfg *Config) applyDefaults() {
	if cfg.Socket == "" {
		cfg.Socket = defaultSocket
	}
	if cfg.SocketMode == "" {
		cfg.SocketMode = defaultSocketMode
	}
	if cfg.Admin == nil {
		a := defaultAdmin
		cfg.Admin = &a
	}
	if cfg.MaxConnections == nil {
		n := defaultMaxConnections
		cfg.MaxConnections = &n
	}
	if cfg.Audit.Path == "" {
		cfg.Audit.Path = defaultAuditPath
	}
	if a := cfg.Attestors.AWS; a != nil && a.ReplayDB == "" {
		a.ReplayDB = defaultReplayDB(cfg.Audit.Path)
	}
	if sp := cfg.Attestors.SPIFFE; sp != nil && sp.MTLSListen != "" {
		// The deprecated key is a socket_api listener (check warns).
		cfg.Listeners = append(cfg.Listeners, ListenerConfig{Kind: "socket_api", Listener: &broker.SocketAPIConfig{
			Listen: sp.MTLSListen, CertFile: sp.MTLSCertFile, KeyFile: sp.MTLSKeyFile,
		}})
		cfg.sources[fmt.Sprintf("listeners.%d.socket_api", len(cfg.Listeners)-1)] = cfg.pos("attestors.spiffe.mtls_listen")
	}
	if cfg.Leases.Store == "" {
		cfg.Leases.Store = cfg.Audit.Path + leasesSuffix
	}
	if cfg.Log.Level == "" {
		cfg.Log.Level = "info"
	}
	if cfg.Log.Format == "" {
		cfg.Log.Format = "json"
	}
}

// Validate reports every problem of the configuration at once.
func (cfg *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, ConfigError{cfg.pos(key), fmt.Sprintf(format, args...)})
	}
	mode, modeErr := cfg.socketMode()
	if modeErr != nil {
		bad("socket_mode", "%v", modeErr)
	}
	if _, err := cfg.socketGID(); err != nil {
		bad("socket_group", "%v", err)
	} else if cfg.SocketGroup != "" && modeErr == nil && mode&0o020 == 0 {
		bad("socket_group", "socket_group %q: socket_mode %q does not let the group connect (connecting needs write permission); use \"0660\"", cfg.SocketGroup, cfg.SocketMode)
	}
	if cfg.Policies == "" {
		bad("policies", "policies is required: a policy file or directory")
	}
	if n := cfg.MaxConnections; n != nil && *n < 1 {
		bad("max_connections", "max_connections %d: must be at least 1 (default %d)", *n, defaultMaxConnections)
	}
	switch cfg.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		bad("log.level", "log level %q: use debug, info, warn or error", cfg.Log.Level)
	}
	switch cfg.Log.Format {
	case "", "json", "text":
	default:
		bad("log.format", "log format %q: use json or text", cfg.Log.Format)
	}
	attestors := map[string]interface{ Validate() error }{
		"attestors.unix":       cfg.Attestors.Unix.config(nil),
		"attestors.kubernetes": cfg.Attestors.Kubernetes.config(), "attestors.github": cfg.Attestors.GitHub.config(),
		"attestors.spiffe": cfg.Attestors.SPIFFE.config(), "attestors.aws": cfg.Attestors.AWS.config(),
	}
	for _, key := range sortedKeys(attestors) {
		if _, set := cfg.sources[key]; set {
			if err := attestors[key].Validate(); err != nil {
				bad(key, "%s: %v", key, err)
			}
		}
	}
	if a := cfg.Attestors.Ambient; a != nil && a.TokenFile == "" {
		bad("attestors.ambient", "attestors.ambient needs token_file")
	}
	if p := cfg.Audit.Forward.Postgres; p != nil {
		if err := p.Validate(); err != nil {
			for _, e := range unjoin(err) {
				bad("audit.forward.postgres", "audit.forward.postgres: %v", e)
			}
		}
	}
	if r := cfg.Leases.RefreshAt; r < 0 || r >= 1 {
		bad("leases.refresh_at", "leases.refresh_at %v: use a fraction of the lifetime between 0 and 1 (default 0.5)", r)
	}
	if msg := cfg.Attestors.tokenCacheProblem(); msg != "" {
		bad("attestors.token_cache_ttl", "%s", msg)
	}
	seen := map[string]int{}
	for i, c := range cfg.Credentials {
		key := fmt.Sprintf("credentials.%d", i)
		switch {
		case c.Name == "":
			bad(key, "credential without a name")
		case !validName(c.Name):
			bad(key+".name", "credential name %q: use letters, digits, '.', '_' and '-'", c.Name)
		}
		if j, dup := seen[c.Name]; dup && c.Name != "" {
			bad(key+".name", "credential %q is defined twice (first at %s)", c.Name, cfg.pos(fmt.Sprintf("credentials.%d", j)))
		}
		seen[c.Name] = i
		if c.TTL < 0 {
			bad(key+".ttl", "credential %q: ttl must be positive", c.Name)
		}
		if c.Provider == nil {
			bad(key, "credential %q has no provider: give one of %s (for example static: {file: …})", c.Name, providerKeys())
			continue
		}
		if err := c.Provider.Validate(); err != nil {
			for _, e := range unjoin(err) {
				bad(key+"."+c.Kind, "credential %q: %v", c.Name, e)
			}
		}
	}
	cfg.validateListeners(bad)
	return errors.Join(errs...)
}

func (cfg *Config) socketMode() (os.FileMode, error) {
	m, err := strconv.ParseUint(cfg.SocketMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("socket_mode %q: use octal permission bits such as \"0660\"", cfg.SocketMode)
	}
	return os.FileMode(m), nil
}

// socketGID is the socket_group's gid, or -1 when it is not set.
func (cfg *Config) socketGID() (int, error) {
	if cfg.SocketGroup == "" {
		return -1, nil
	}
	id := cfg.SocketGroup
	if _, err := strconv.Atoi(id); err != nil {
		g, err := user.LookupGroup(cfg.SocketGroup)
		if err != nil {
			return 0, fmt.Errorf("socket_group %q: no such group in /etc/group (a numeric gid needs none)", cfg.SocketGroup)
		}
		id = g.Gid
	}
	gid, err := strconv.ParseUint(id, 10, 32)
	if err != nil || gid == math.MaxUint32 {
		return 0, fmt.Errorf("socket_group %q: not a group name or a gid", cfg.SocketGroup)
	}
	return int(gid), nil
}

// validName is the rule for credential names, which the socket API
// enforces too.
func validName(s string) bool { return broker.ValidName(s) }

// unjoin splits an errors.Join into its errors, one message each.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The attestor sections as their packages' configurations. Each is nil-safe
// so that Validate can ask every section.

func (k *KubernetesConfig) config() *k8sattest.Config {
	if k == nil {
		return &k8sattest.Config{}
	}
	issuer := k.Issuer
	if issuer == "" {
		issuer = defaultKubernetesIssuer
	}
	return &k8sattest.Config{
		Issuer: issuer, Audiences: k.Audiences, JWKSURL: k.JWKSURL, JWKSFile: k.JWKSFile,
		TokenReview: k.TokenReview, APIServer: k.APIServer, CAFile: k.CAFile, BearerTokenFile: k.BearerTokenFile,
		AllowedAlgs: k.AllowedAlgs, MaxLifetime: time.Duration(k.MaxLifetime),
	}
}

func (g *GitHubConfig) config() *githubattest.Config {
	if g == nil {
		return &githubattest.Config{}
	}
	return &githubattest.Config{Issuer: g.Issuer, Audiences: g.Audiences, JWKSURL: g.JWKSURL, MaxLifetime: time.Duration(g.MaxLifetime)}
}

func (u *UnixConfig) config(log *slog.Logger) unixattest.Config {
	if u == nil {
		return unixattest.Config{Logger: log}
	}
	return unixattest.Config{MaxExeBytes: u.MaxExeBytes, HashConcurrency: u.HashConcurrency, TCPLookup: u.TCPLookup, Logger: log}
}

func (sp *SPIFFEConfig) config() spiffeattest.Config {
	if sp == nil {
		return spiffeattest.Config{}
	}
	return spiffeattest.Config{TrustDomain: sp.TrustDomain, Audiences: sp.Audiences, BundleFile: sp.BundleFile, WorkloadAPI: sp.WorkloadAPI}
}

func (a *AWSConfig) config() awsattest.Config {
	if a == nil {
		return awsattest.Config{}
	}
	return awsattest.Config{ServerID: a.ServerID, STSEndpoint: a.STSEndpoint, Region: a.Region}
}
