package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// Errors a KeySet's VerifySignature wraps, so that the Verifier can tell the
// caller which check refused a token. Any other error means the keys could
// not be obtained.
var (
	// ErrUnknownKey: the key set holds no key for the token's kid, or the
	// token has no kid and the set holds several keys.
	ErrUnknownKey = errors.New("oidc: unknown signing key")
	// ErrBadSignature: the signature does not verify with the kid's key.
	ErrBadSignature = errors.New("oidc: bad signature")
	// ErrAlgMismatch: the token's alg is not an allowed asymmetric algorithm
	// or differs from the alg its key is published for.
	ErrAlgMismatch = errors.New("oidc: algorithm not allowed for the signing key")
)

// KeySet supplies an issuer's public verification keys. Its method set is
// go-oidc's oidc.KeySet, so a KeySet is handed to go-oidc's IDTokenVerifier
// as it is; VerifySignature wraps ErrUnknownKey, ErrBadSignature or
// ErrAlgMismatch when the token, rather than the key source, is at fault.
type KeySet interface {
	// VerifySignature verifies the compact JWS jwt with the key its kid
	// names (the only key of the set when there is no kid) and returns the
	// verified payload.
	VerifySignature(ctx context.Context, jwt string) ([]byte, error)
}

var (
	_ gooidc.KeySet = KeySet(nil)
	_ KeySet        = gooidc.KeySet(nil)
)

// joseAlgs are allowedAlgs as go-jose algorithms.
var joseAlgs = func() []jose.SignatureAlgorithm {
	algs := make([]jose.SignatureAlgorithm, len(allowedAlgs))
	for i, a := range allowedAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	return algs
}()

// verifyWith verifies jwt, signed with one of the asymmetric allowedAlgs,
// with the key lookup returns for its kid.
func verifyWith(ctx context.Context, jwt string, lookup func(context.Context, string) (*jose.JSONWebKey, error)) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, joseAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: not a compact JWS with one asymmetric signature", ErrBadSignature)
	}
	// The key comes from the set by kid only, never from the header.
	h := jws.Signatures[0].Protected
	key, err := lookup(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != h.Algorithm {
		return nil, ErrAlgMismatch
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return payload, nil
}

// Defaults of RemoteKeys.
const (
	// DefaultKeysMaxAge is how long fetched keys are used before the next
	// verification refetches them; it bounds how long a key removed from the
	// issuer's JWKS is still accepted.
	DefaultKeysMaxAge = 5 * time.Minute
	// DefaultRefetchInterval is the least time between two fetches, so that
	// tokens with made-up key ids cannot make the broker hammer the issuer.
	DefaultRefetchInterval = 10 * time.Second
	// maxDocumentSize caps discovery documents and JWKS.
	maxDocumentSize = 1 << 20
)

// RemoteConfig configures RemoteKeys.
type RemoteConfig struct {
	// Issuer is used for OIDC discovery when JWKSURL is empty: the keys are
	// read from the jwks_uri of Issuer/.well-known/openid-configuration,
	// whose issuer must equal Issuer exactly.
	Issuer string
	// JWKSURL, when set, is fetched directly. It must be https.
	JWKSURL string
	// HTTPClient makes the requests; nil means a client with a 10s timeout.
	HTTPClient *http.Client
	// Header is added to the requests sent to the origin (scheme, host and
	// port) of Issuer and to HeaderOrigins — for example the broker's own
	// Authorization header for a Kubernetes API server; nil for none. A
	// request to any other origin goes without it: a jwks_uri or JWKSURL
	// elsewhere, and every redirect that leaves those origins. Header is
	// called only for a request that carries it.
	Header func() (http.Header, error)
	// HeaderOrigins are further https URLs whose origins receive Header
	// (the configured API server); paths are ignored.
	HeaderOrigins []string
	// MaxAge defaults to DefaultKeysMaxAge.
	MaxAge time.Duration
	// RefetchInterval defaults to DefaultRefetchInterval.
	RefetchInterval time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// RemoteKeys is a KeySet fetched over HTTPS, by OIDC discovery or from a
// JWKS URL. Keys are fetched on first use; an unknown kid triggers a
// refetch (rate-limited), so an issuer's new key is picked up without a
// restart, and keys older than MaxAge are refetched, so a removed key stops
// verifying. When a refetch fails, the previous keys stay in use and the
// failure is logged.
type RemoteKeys struct {
	cfg   RemoteConfig
	sem   chan struct{} // one fetch at a time
	state atomic.Pointer[keyState]
	jwks  atomic.Pointer[string] // discovered JWKS URL
	// headerOrigins are the origins that receive cfg.Header; client is
	// cfg.HTTPClient, with a CheckRedirect that strips the header from a
	// redirect to any other origin when there is a header.
	headerOrigins map[string]bool
	client        *http.Client
}

type keyState struct {
	keys      []jose.JSONWebKey
	fetched   time.Time // last successful fetch
	attempted time.Time // last attempt, successful or not
}

var _ KeySet = (*RemoteKeys)(nil)

// NewRemoteKeys validates cfg and returns RemoteKeys. It does no I/O.
func NewRemoteKeys(cfg RemoteConfig) (*RemoteKeys, error) {
	if cfg.JWKSURL == "" && cfg.Issuer == "" {
		return nil, errors.New("oidc: remote keys need an issuer or a JWKS URL")
	}
	for _, u := range []string{cfg.JWKSURL, cfg.Issuer} {
		if u == "" {
			continue
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "https" || pu.Host == "" {
			return nil, fmt.Errorf("oidc: %q is not an https URL", u)
		}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultKeysMaxAge
	}
	if cfg.RefetchInterval <= 0 {
		cfg.RefetchInterval = DefaultRefetchInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &RemoteKeys{cfg: cfg, sem: make(chan struct{}, 1), client: cfg.HTTPClient}
	if cfg.Header != nil {
		r.headerOrigins = map[string]bool{}
		for _, u := range append([]string{cfg.Issuer}, cfg.HeaderOrigins...) {
			if u == "" {
				continue
			}
			o, err := origin(u)
			if err != nil || !strings.HasPrefix(o, "https://") {
				return nil, fmt.Errorf("oidc: header origin %q is not an https URL", u)
			}
			r.headerOrigins[o] = true
		}
		r.client = r.headerClient()
	}
	if cfg.JWKSURL != "" {
		r.jwks.Store(&cfg.JWKSURL)
	}
	return r, nil
}

// VerifySignature implements KeySet and go-oidc's oidc.KeySet.
func (r *RemoteKeys) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	return verifyWith(ctx, jwt, r.Key)
}

// Key returns the key with id kid (the only key when kid is empty),
// fetching the keys when they are missing or older than MaxAge, or when kid
// is unknown and the last fetch is older than RefetchInterval.
func (r *RemoteKeys) Key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	st := r.state.Load()
	now := r.cfg.Now()
	if st != nil && now.Sub(st.fetched) < r.cfg.MaxAge {
		if k, err := find(st.keys, kid); err == nil || now.Sub(st.attempted) < r.cfg.RefetchInterval {
			return k, err
		}
	}
	st, err := r.refresh(ctx, st)
	if st == nil {
		return nil, err
	}
	return find(st.keys, kid)
}

// refresh fetches the keys unless another caller did since old was read, or
// the last attempt is too recent. It returns the state to use, which may be
// the previous one when the fetch failed.
func (r *RemoteKeys) refresh(ctx context.Context, old *keyState) (*keyState, error) {
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	case <-ctx.Done():
		return old, ctx.Err()
	}
	cur := r.state.Load()
	if cur != old {
		return cur, nil
	}
	now := r.cfg.Now()
	if cur != nil && now.Sub(cur.attempted) < r.cfg.RefetchInterval {
		return cur, nil
	}
	keys, err := r.fetch(ctx)
	if err != nil {
		if cur == nil {
			return nil, err
		}
		r.cfg.Logger.WarnContext(ctx, "oidc: refetching signing keys failed; keeping the previous keys", "error", err)
		next := &keyState{keys: cur.keys, fetched: cur.fetched, attempted: now}
		r.state.Store(next)
		return next, nil
	}
	next := &keyState{keys: keys, fetched: now, attempted: now}
	r.state.Store(next)
	return next, nil
}

func (r *RemoteKeys) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	jwksURL := ""
	if p := r.jwks.Load(); p != nil {
		jwksURL = *p
	} else {
		var err error
		if jwksURL, err = r.discover(ctx); err != nil {
			return nil, err
		}
		r.jwks.Store(&jwksURL)
	}
	body, err := r.get(ctx, jwksURL)
	if err != nil {
		return nil, err
	}
	return ParseJWKS(body)
}

func (r *RemoteKeys) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(r.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	body, err := r.get(ctx, u)
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("oidc: discovery document %s: %w", u, err)
	}
	if doc.Issuer != r.cfg.Issuer {
		return "", fmt.Errorf("oidc: discovery document %s names issuer %q, want %q", u, doc.Issuer, r.cfg.Issuer)
	}
	pu, err := url.Parse(doc.JWKSURI)
	if err != nil || pu.Scheme != "https" || pu.Host == "" {
		return "", fmt.Errorf("oidc: discovery document %s: jwks_uri %q is not an https URL", u, doc.JWKSURI)
	}
	return doc.JWKSURI, nil
}

func (r *RemoteKeys) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if r.cfg.Header != nil {
		if r.sendsHeader(req.URL) {
			h, err := r.cfg.Header()
			if err != nil {
				return nil, fmt.Errorf("oidc: request header for %s: %w", u, err)
			}
			for k, vs := range h {
				req.Header[k] = vs
			}
		} else {
			r.cfg.Logger.DebugContext(ctx, "oidc: fetching without the configured header: not the issuer's origin nor a header origin", "url", u)
		}
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("oidc: fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("oidc: reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("oidc: fetching %s: %s", u, resp.Status)
	}
	if len(body) > maxDocumentSize {
		return nil, fmt.Errorf("oidc: %s is larger than %d bytes", u, maxDocumentSize)
	}
	return body, nil
}

// maxRedirects is how many redirects a key fetch follows, as http.Client
// does by default.
const maxRedirects = 10

// headerClient returns a copy of the HTTP client whose redirects to an
// origin that may not receive Header carry no header but Accept. (net/http
// alone forwards Authorization to the same domain and its subdomains, on
// any port and scheme.)
func (r *RemoteKeys) headerClient() *http.Client {
	c := *r.cfg.HTTPClient
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if !r.sendsHeader(req.URL) {
			req.Header = http.Header{"Accept": req.Header.Values("Accept")}
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("oidc: stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	return &c
}

// sendsHeader reports whether a request to u carries Header.
func (r *RemoteKeys) sendsHeader(u *url.URL) bool {
	o, err := origin(u.String())
	return err == nil && r.headerOrigins[o]
}

// origin returns the origin of an http(s) URL as "scheme://host:port",
// lowercased, with the scheme's default port made explicit.
func origin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return "", fmt.Errorf("%q is not an http(s) URL", raw)
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[scheme]
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port), nil
}

// ParseJWKS parses a JSON Web Key Set and keeps the public signing keys
// (RSA, ECDSA, Ed25519) whose use is "sig" or unset. Keys it cannot parse
// and symmetric or private keys are skipped; a set with no usable key is an
// error.
func ParseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("oidc: JWKS: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if k.UnmarshalJSON(raw) != nil || (k.Use != "" && k.Use != "sig") {
			continue
		}
		switch k.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("oidc: JWKS holds no public signing key")
	}
	return keys, nil
}

func find(keys []jose.JSONWebKey, kid string) (*jose.JSONWebKey, error) {
	if kid == "" {
		if len(keys) == 1 {
			return &keys[0], nil
		}
		return nil, ErrUnknownKey
	}
	for i := range keys {
		if keys[i].KeyID == kid {
			return &keys[i], nil
		}
	}
	return nil, ErrUnknownKey
}

// FileKeys is a KeySet read from a JWKS file. The file is stat'ed on every
// lookup and re-read when its size or modification time changed, so a
// rotated key file takes effect without a restart. When a re-read fails the
// previous keys stay in use and the failure is logged.
type FileKeys struct {
	path   string
	logger *slog.Logger
	mu     sync.Mutex
	keys   []jose.JSONWebKey
	size   int64
	mtime  time.Time
}

var _ KeySet = (*FileKeys)(nil)

// NewFileKeys reads the JWKS at path; an unreadable or empty set is an error.
func NewFileKeys(path string, logger *slog.Logger) (*FileKeys, error) {
	if logger == nil {
		logger = slog.Default()
	}
	f := &FileKeys{path: path, logger: logger}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FileKeys) load() error {
	fi, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("oidc: %w", err)
	}
	if fi.Size() > maxDocumentSize {
		return fmt.Errorf("oidc: %s is larger than %d bytes", f.path, maxDocumentSize)
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("oidc: %w", err)
	}
	keys, err := ParseJWKS(data)
	if err != nil {
		return fmt.Errorf("%w (in %s)", err, f.path)
	}
	f.keys, f.size, f.mtime = keys, fi.Size(), fi.ModTime()
	return nil
}

// VerifySignature implements KeySet and go-oidc's oidc.KeySet.
func (f *FileKeys) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	return verifyWith(ctx, jwt, f.Key)
}

// Key returns the key with id kid (the only key when kid is empty),
// re-reading the file first when it changed.
func (f *FileKeys) Key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fi, err := os.Stat(f.path); err == nil && (fi.Size() != f.size || !fi.ModTime().Equal(f.mtime)) {
		if err := f.load(); err != nil {
			f.logger.WarnContext(ctx, "oidc: re-reading JWKS file failed; keeping the previous keys", "error", err)
		}
	}
	return find(f.keys, kid)
}
