package oauth2

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/credbroker/credbroker/providers"
	xoauth2 "golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// requestTimeout bounds one request to an endpoint when the caller's
// context has no earlier deadline.
const requestTimeout = 30 * time.Second

// maxRedirects bounds the same-host redirects followed per request.
const maxRedirects = 3

// Provider issues access tokens for one OAuth 2.0 client.
type Provider struct {
	cfg                     Config
	log                     *slog.Logger
	client                  *http.Client
	tokenURL, revocationURL string // for errors: scheme, host and path only
	params                  url.Values

	mu     sync.Mutex
	issued map[string]issuedToken // by lease id; only with a revocation endpoint
}

// issuedToken is what Revoke needs of a token it issued.
type issuedToken struct {
	token     providers.Secret
	expiresAt time.Time
}

// Issuer is what Open returns: a *Provider, or a *RevokingProvider when
// the configuration names a revocation endpoint.
type Issuer interface {
	Credential(ctx context.Context, req providers.Request) (providers.Credential, error)
}

// Open builds the provider cfg describes: NewRevoking when RevocationURL is
// set, so that the result is a providers.Revoker exactly when its tokens
// can be revoked, else New.
func Open(cfg Config) (Issuer, error) {
	if cfg.RevocationURL != "" {
		return NewRevoking(cfg)
	}
	return New(cfg)
}

// New validates cfg, reads the client secret file and ca_file once so that
// a missing file fails at start, and builds the HTTP client. It does not
// contact the authorization server. A configuration with a RevocationURL
// is refused: NewRevoking builds it.
func New(cfg Config) (*Provider, error) {
	if cfg.RevocationURL != "" {
		return nil, errors.New("oauth2: revocation_url is set: build the provider with NewRevoking or Open")
	}
	return newProvider(cfg)
}

// RevokingProvider is a Provider whose tokens are revoked at an RFC 7009
// revocation endpoint. It remembers each token it issued until the token
// expires or is revoked.
type RevokingProvider struct {
	*Provider
}

var _ providers.Revoker = (*RevokingProvider)(nil)

// NewRevoking is New for a configuration with a RevocationURL, which it
// requires.
func NewRevoking(cfg Config) (*RevokingProvider, error) {
	if cfg.RevocationURL == "" {
		return nil, errors.New("oauth2: NewRevoking needs revocation_url")
	}
	p, err := newProvider(cfg)
	if err != nil {
		return nil, err
	}
	return &RevokingProvider{p}, nil
}

func newProvider(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.AuthStyle == "" {
		cfg.AuthStyle = AuthBasic
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Provider{
		cfg:           cfg,
		log:           log.With("credential", cfg.Name, "kind", Kind),
		tokenURL:      displayURL(cfg.TokenURL),
		revocationURL: displayURL(cfg.RevocationURL),
		params:        url.Values{},
		issued:        map[string]issuedToken{},
	}
	if cfg.Audience != "" {
		p.params.Set("audience", cfg.Audience)
	}
	for k, v := range cfg.Params {
		p.params.Set(k, v)
	}
	if _, err := p.clientSecret(); err != nil {
		return nil, err
	}
	tr := cfg.Transport
	if tr == nil {
		var err error
		if tr, err = providers.Transport(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("oauth2: credential %q: %w", cfg.Name, err)
		}
	}
	p.client = &http.Client{Transport: tr, CheckRedirect: sameOrigin, Timeout: requestTimeout}
	return p, nil
}

// Ping checks that the token endpoint answers over a connection the
// provider trusts (TLS verified), without authenticating: any HTTP answer
// will do (a token endpoint answers a GET with 405 or 400). Nothing is
// issued and the client secret is not sent.
func (p *Provider) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.TokenURL, nil)
	if err != nil {
		return fmt.Errorf("oauth2: credential %q: ping: %s: not a URL", p.cfg.Name, p.tokenURL)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("oauth2: credential %q: ping: token endpoint %s: %w", p.cfg.Name, p.tokenURL, errors.Unwrap(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return nil
}

// sameOrigin follows a redirect only to the scheme and host of the
// original request: a token request carries the client secret, which must
// not reach another host.
func sameOrigin(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) {
		return fmt.Errorf("refused a redirect from %s to another host or scheme", first.Host)
	}
	if len(via) > maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	return nil
}

// Credential requests a token from the token endpoint. Its expiry is the
// server's expires_in capped at req.TTL (when set) and the credential's
// TTL.
func (p *Provider) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	if err := ctx.Err(); err != nil {
		return providers.Credential{}, p.errorf("%w", err)
	}
	secret, err := p.clientSecret()
	if err != nil {
		return providers.Credential{}, err
	}
	cc := clientcredentials.Config{
		ClientID:       p.cfg.ClientID,
		ClientSecret:   string(secret),
		TokenURL:       p.cfg.TokenURL,
		Scopes:         p.cfg.Scopes,
		EndpointParams: p.params,
		AuthStyle:      xoauth2.AuthStyleInHeader,
	}
	if p.cfg.AuthStyle == AuthPost {
		cc.AuthStyle = xoauth2.AuthStyleInParams
	}
	tok, err := cc.Token(context.WithValue(ctx, xoauth2.HTTPClient, p.client))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			// The caller gave up: whatever the library made of an answer
			// cut short (a body that does not parse), the request was
			// cancelled.
			return providers.Credential{}, p.errorf("token endpoint %s: %w", p.tokenURL, cerr)
		}
		return providers.Credential{}, p.tokenError(err, secret)
	}
	// The library turned expires_in into an expiry on the real clock as it
	// read the response; measured back, to the whole seconds the server
	// sent, it is the token's lifetime.
	var lifetime time.Duration
	if !tok.Expiry.IsZero() {
		if lifetime = time.Until(tok.Expiry).Round(time.Second); lifetime <= 0 {
			return providers.Credential{}, p.errorf("%w", &ResponseError{Endpoint: "token", Problem: "the token has already expired (expires_in is not positive)"})
		}
	}
	tokenType := tok.Type()
	if !isVSChars(tok.AccessToken) || !isVSChars(tokenType) {
		return providers.Credential{}, p.errorf("%w", &ResponseError{Endpoint: "token", Problem: "the access token or token type has characters outside printable ASCII"})
	}
	now := p.cfg.Now()
	expiresAt := now.Add(p.lifetime(req.TTL, lifetime))
	lease := providers.Lease{
		ID:         Kind + ":" + randomHex(),
		Credential: req.Name,
		Subject:    req.Identity.Subject,
		Kind:       Kind,
		ExpiresAt:  expiresAt,
	}
	token := providers.NewSecret([]byte(tok.AccessToken))
	if p.cfg.RevocationURL != "" {
		p.remember(now, lease.ID, issuedToken{token: token, expiresAt: expiresAt})
	}
	p.log.DebugContext(ctx, "oauth2 token issued", "lease", lease.ID, "expires_at", expiresAt, "server_lifetime", lifetime)
	return providers.Credential{
		Lease: lease,
		Data: map[string]providers.Secret{
			FieldToken:     token,
			FieldTokenType: providers.NewSecret([]byte(tokenType)),
		},
	}, nil
}

// lifetime is the server's lifetime (zero: not stated) capped at the
// request's TTL (zero: none) and the credential's.
func (p *Provider) lifetime(reqTTL, server time.Duration) time.Duration {
	d := p.cfg.TTL
	if reqTTL > 0 && reqTTL < d {
		d = reqTTL
	}
	if server > 0 && server < d {
		d = server
	}
	return d
}

// tokenError turns a failed token request into an error that names the
// endpoint and carries neither the response body nor the client secret.
func (p *Provider) tokenError(err error, secret []byte) error {
	var re *xoauth2.RetrieveError
	var ue *url.Error
	switch {
	case errors.As(err, &re):
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		return p.errorf("%w", newResponseError("token", status, re.ErrorCode, re.ErrorDescription, secretForms(p.cfg.ClientID, secret)))
	case errors.As(err, &ue):
		// ue.URL may be a redirect's target, chosen by the server: name the
		// configured endpoint instead.
		return p.errorf("token endpoint %s: %w", p.tokenURL, ue.Err)
	case err.Error() == "oauth2: server response missing access_token":
		// The library has no sentinel for it; should its wording change,
		// the case below still gives a safe, if vaguer, message.
		return p.errorf("%w", &ResponseError{Endpoint: "token", Problem: "the response has no access_token"})
	default:
		// The library's parse errors may quote the body.
		return p.errorf("%w", &ResponseError{Endpoint: "token", Problem: "the response is not a token response"})
	}
}

// Revoke revokes the lease's token at the revocation endpoint (RFC 7009).
// A lease this provider does not hold a token for (already revoked,
// expired, issued by another process) is revoked without a request.
func (r *RevokingProvider) Revoke(ctx context.Context, lease providers.Lease) error {
	p := r.Provider
	if err := ctx.Err(); err != nil {
		return p.errorf("revoke %s: %w", lease.ID, err)
	}
	p.mu.Lock()
	it, ok := p.issued[lease.ID]
	p.mu.Unlock()
	if !ok || !p.cfg.Now().Before(it.expiresAt) {
		p.forget(lease.ID)
		return nil
	}
	secret, err := p.clientSecret()
	if err != nil {
		return err
	}
	form := url.Values{"token": {string(it.token.Reveal())}, "token_type_hint": {"access_token"}}
	if p.cfg.AuthStyle == AuthPost {
		form.Set("client_id", p.cfg.ClientID)
		form.Set("client_secret", string(secret))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return p.errorf("revoke %s: revocation endpoint %s: %v", lease.ID, p.revocationURL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if p.cfg.AuthStyle == AuthBasic {
		// RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(string(secret)))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return p.errorf("revoke %s: revocation endpoint %s: %w", lease.ID, p.revocationURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return p.errorf("revoke %s: revocation endpoint %s: reading the response: %w", lease.ID, p.revocationURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		code, desc := parseErrorBody(resp.Header.Get("Content-Type"), body)
		// The server may echo the request, which carries the token too.
		redact := append(secretForms(p.cfg.ClientID, secret), form.Get("token"), url.QueryEscape(form.Get("token")))
		return p.errorf("revoke %s: %w", lease.ID, newResponseError("revocation", resp.StatusCode, code, desc, redact))
	}
	p.forget(lease.ID)
	p.log.DebugContext(ctx, "oauth2 token revoked", "lease", lease.ID)
	return nil
}

// remember records an issued token for Revoke, dropping expired ones.
func (p *Provider) remember(now time.Time, id string, it issuedToken) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range p.issued {
		if !now.Before(v.expiresAt) {
			delete(p.issued, k)
		}
	}
	p.issued[id] = it
}

func (p *Provider) forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.issued, id)
}

// clientSecret reads the client secret file.
func (p *Provider) clientSecret() ([]byte, error) {
	b, err := os.ReadFile(p.cfg.ClientSecretFile)
	if err != nil {
		return nil, p.errorf("client_secret_file: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, p.errorf("client_secret_file %s is empty", p.cfg.ClientSecretFile)
	}
	return b, nil
}

func (p *Provider) errorf(format string, args ...any) error {
	return fmt.Errorf("oauth2: credential %q: "+format, append([]any{p.cfg.Name}, args...)...)
}

// displayURL is raw without query or fragment, for errors.
func displayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// isVSChars reports whether s is non-empty and all %x20-7E (RFC 6749
// Appendix A's VSCHAR), so that it can go into an HTTP header.
func isVSChars(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
