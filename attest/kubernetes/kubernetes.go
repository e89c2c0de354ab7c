package kubernetes

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/attest/oidc"
)

// DefaultMaxLifetime caps exp - iat of accepted tokens. Kubernetes projects
// tokens for at most 24h unless the cluster extends them.
const DefaultMaxLifetime = 24 * time.Hour

// APIServerAudience is the audience of a service-account token requested
// without one; a token meant for the API server is never accepted here.
const APIServerAudience = "https://kubernetes.default.svc"

// Config configures an Attestor. Zero values take the documented defaults.
type Config struct {
	// Issuer is the cluster's service-account issuer, matched exactly
	// against iss. Required.
	Issuer string
	// Audiences are the broker's audiences; a token must carry one. Required.
	Audiences []string
	// JWKSURL, if set, is where the issuer's keys are fetched (https).
	JWKSURL string
	// JWKSFile, if set, is a JWKS file re-read when it changes. At most one
	// of JWKSURL and JWKSFile; with neither, keys come from OIDC discovery
	// of Issuer.
	JWKSFile string
	// TokenReview, when true, also asks the API server (APIServer) whether
	// the token is still valid — it refuses tokens of deleted pods and
	// service accounts — after the local checks passed.
	TokenReview bool
	// APIServer is the API server's https URL, required with TokenReview.
	APIServer string
	// CAFile is a PEM bundle trusted for the API server and the JWKS; empty
	// means the system roots. Ignored when HTTPClient is set.
	CAFile string
	// BearerTokenFile holds the broker's own token for the TokenReview
	// call, re-read on every call (projected tokens rotate). Required with
	// TokenReview. It also authenticates discovery and JWKS requests, but
	// only to the origin (scheme, host, port) of Issuer or APIServer: a
	// jwks_uri, JWKSURL or redirect elsewhere is fetched without it.
	BearerTokenFile string
	// AllowedAlgs defaults to RS256 and ES256.
	AllowedAlgs []string
	// MaxLifetime caps exp - iat; defaults to DefaultMaxLifetime.
	MaxLifetime time.Duration
	// Leeway is the clock skew tolerated, at most 60s; 0 means 60s.
	Leeway time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// HTTPClient is used for discovery, JWKS and TokenReview; nil means a
	// client with a 10s timeout trusting CAFile.
	HTTPClient *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("issuer is required"))
	}
	errs = append(errs, oidc.CheckSettings(c.Audiences, c.AllowedAlgs, c.MaxLifetime, c.Leeway)...)
	if slices.Contains(c.Audiences, APIServerAudience) {
		errs = append(errs, fmt.Errorf("audience %q is the API server's own; choose one for the broker", APIServerAudience))
	}
	if c.JWKSURL != "" && c.JWKSFile != "" {
		errs = append(errs, errors.New("set at most one of jwks_url and jwks_file"))
	}
	if u, err := url.Parse(c.APIServer); c.APIServer != "" && (err != nil || u.Scheme != "https" || u.Host == "") {
		errs = append(errs, errors.New("api_server must be an https URL"))
	}
	if c.TokenReview {
		if c.APIServer == "" {
			errs = append(errs, errors.New("token_review needs api_server, an https URL"))
		}
		if c.BearerTokenFile == "" {
			errs = append(errs, errors.New("token_review needs bearer_token_file"))
		}
	}
	return errors.Join(errs...)
}

// Attestor verifies Kubernetes projected service-account tokens.
type Attestor struct {
	v         *oidc.Verifier
	audiences []string
	review    bool
	apiServer string
	tokenFile string
	client    *http.Client
	logger    *slog.Logger
}

// New validates cfg and returns an Attestor. It reads CAFile and JWKSFile
// but makes no network request: remote keys are fetched on first use.
func New(ctx context.Context, cfg Config) (*Attestor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	if len(cfg.AllowedAlgs) == 0 {
		cfg.AllowedAlgs = []string{"RS256", "ES256"}
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		client := &http.Client{Timeout: 10 * time.Second}
		if cfg.CAFile != "" {
			pemData, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("kubernetes: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemData) {
				return nil, fmt.Errorf("kubernetes: %s holds no PEM certificate", cfg.CAFile)
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			client.Transport = tr
		}
		cfg.HTTPClient = client
	}
	var keys oidc.KeySet
	var err error
	if cfg.JWKSFile != "" {
		keys, err = oidc.NewFileKeys(cfg.JWKSFile, cfg.Logger)
	} else {
		keys, err = oidc.NewRemoteKeys(oidc.RemoteConfig{
			Issuer: cfg.Issuer, JWKSURL: cfg.JWKSURL, HTTPClient: cfg.HTTPClient,
			Header: bearerHeader(cfg.BearerTokenFile), HeaderOrigins: headerOrigins(cfg.APIServer),
			Now: cfg.Now, Logger: cfg.Logger,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	v, err := oidc.NewVerifier(oidc.Config{
		Method: attest.MethodKubernetes, Issuer: cfg.Issuer, Audiences: cfg.Audiences,
		Keys: keys, AllowedAlgs: cfg.AllowedAlgs, MaxLifetime: cfg.MaxLifetime,
		Leeway: cfg.Leeway, Now: cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	return &Attestor{
		v: v, audiences: slices.Clone(cfg.Audiences), review: cfg.TokenReview,
		apiServer: strings.TrimSuffix(cfg.APIServer, "/"), tokenFile: cfg.BearerTokenFile,
		client: cfg.HTTPClient, logger: cfg.Logger,
	}, nil
}

// Issuer returns the exact issuer this attestor accepts.
func (a *Attestor) Issuer() string { return a.v.Issuer() }

// Attest verifies token (the raw JWT) and returns the service account's
// identity. Every failure is an *attest.Error.
func (a *Attestor) Attest(ctx context.Context, token string) (attest.Identity, error) {
	t, err := a.v.Verify(ctx, token)
	if err != nil {
		return attest.Identity{}, err
	}
	var k8s struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
		Pod *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
	}
	raw, ok := t.Claims["kubernetes.io"].(map[string]any)
	if !ok {
		return attest.Identity{}, fail("token has no kubernetes.io claim")
	}
	b, _ := json.Marshal(raw)
	if json.Unmarshal(b, &k8s) != nil || k8s.Namespace == "" || k8s.ServiceAccount.Name == "" {
		return attest.Identity{}, fail("token's kubernetes.io claim lacks namespace or service account")
	}
	subject := "system:serviceaccount:" + k8s.Namespace + ":" + k8s.ServiceAccount.Name
	if t.Subject != subject {
		return attest.Identity{}, fail("token subject does not match its kubernetes.io namespace and service account")
	}
	if a.review {
		if err := a.tokenReview(ctx, token, subject); err != nil {
			return attest.Identity{}, err
		}
	}
	aud := make([]any, len(t.Audience))
	for i, s := range t.Audience {
		aud[i] = s
	}
	claims := map[string]any{
		"namespace":       k8s.Namespace,
		"service_account": k8s.ServiceAccount.Name,
		"audience":        aud,
	}
	if k8s.Pod != nil {
		claims["pod_name"] = k8s.Pod.Name
		claims["pod_uid"] = k8s.Pod.UID
	}
	return attest.Identity{Method: attest.MethodKubernetes, Subject: subject, Claims: claims}, nil
}

func fail(format string, args ...any) *attest.Error {
	return attest.Failf(attest.MethodKubernetes, format, args...)
}

// tokenReview asks the API server to authenticate token for our audiences
// (POST /apis/authentication.k8s.io/v1/tokenreviews).
func (a *Attestor) tokenReview(ctx context.Context, token, subject string) error {
	bearer, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return &attest.Error{Method: attest.MethodKubernetes, Reason: "token review unavailable", Err: err}
	}
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "authentication.k8s.io/v1",
		"kind":       "TokenReview",
		"spec":       map[string]any{"token": token, "audiences": a.audiences},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.apiServer+"/apis/authentication.k8s.io/v1/tokenreviews", bytes.NewReader(body))
	if err != nil {
		return &attest.Error{Method: attest.MethodKubernetes, Reason: "token review unavailable", Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(bearer)))
	resp, err := a.client.Do(req)
	if err != nil {
		return &attest.Error{Method: attest.MethodKubernetes, Reason: "token review unavailable", Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &attest.Error{Method: attest.MethodKubernetes, Reason: "token review unavailable", Err: err}
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return &attest.Error{Method: attest.MethodKubernetes, Reason: "token review unavailable", Err: fmt.Errorf("api server answered %s", resp.Status)}
	}
	var tr struct {
		Status struct {
			Authenticated bool `json:"authenticated"`
			User          struct {
				Username string `json:"username"`
			} `json:"user"`
			Audiences []string `json:"audiences"`
			Error     string   `json:"error"`
		} `json:"status"`
	}
	if err := json.Unmarshal(data, &tr); err != nil {
		return &attest.Error{Method: attest.MethodKubernetes, Reason: "token review unavailable", Err: errors.New("api server answer is not a TokenReview")}
	}
	st := tr.Status
	if !st.Authenticated {
		a.logger.DebugContext(ctx, "kubernetes: token review refused the token", "api_error", st.Error)
		return fail("token review: token not authenticated by the API server")
	}
	if !slices.ContainsFunc(st.Audiences, func(s string) bool { return slices.Contains(a.audiences, s) }) {
		return fail("token review: wrong audience")
	}
	if st.User.Username != subject {
		return fail("token review: API server names another service account")
	}
	return nil
}

// bearerHeader authenticates discovery and JWKS requests with the broker's
// own service-account token when one is configured: a cluster serves
// /.well-known/openid-configuration and /openid/v1/jwks to service
// accounts (system:service-account-issuer-discovery), not to anonymous
// callers, unless an admin allowed that. The file is re-read on each fetch,
// as projected tokens rotate. oidc.RemoteKeys sends it only to the issuer
// and headerOrigins.
func bearerHeader(tokenFile string) func() (http.Header, error) {
	if tokenFile == "" {
		return nil
	}
	return func() (http.Header, error) {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: bearer token file: %w", err)
		}
		return http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(b))}}, nil
	}
}

// headerOrigins are the origins besides the issuer's that may receive the
// broker's token: the API server's, when one is configured.
func headerOrigins(apiServer string) []string {
	if apiServer == "" {
		return nil
	}
	return []string{apiServer}
}
