package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/credbroker/credbroker/providers"
)

// Provider issues one Vault credential.
type Provider struct {
	cfg    Config
	fields []string
	base   *api.Client // sends no token
	log    *slog.Logger

	// sem is held while the broker's token is checked, renewed or
	// replaced; it guards sess.
	sem  chan struct{}
	sess *session

	// callers holds, with pass_caller_token and dynamic, the caller's
	// Vault token each outstanding lease was issued under (Vault revokes a
	// token's leases with it, and the broker has no token of its own to
	// renew or revoke them with), until that token expires.
	mu      sync.Mutex
	callers map[string]callerLease
}

type callerLease struct {
	s     *session
	until time.Time // the caller token's expiry; zero when it has none
}

var (
	_ providers.Renewer = (*Provider)(nil)
	_ providers.Revoker = (*Provider)(nil)
)

// New validates cfg and builds the provider. It reads ca_file, but
// contacts neither Vault nor the auth method's files: a Vault that is down,
// or a token file not yet written, is reported by the first Credential
// call, so other credentials keep being served.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
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
	base, err := newClient(&cfg)
	if err != nil {
		return nil, err
	}
	return &Provider{
		cfg:     cfg,
		fields:  cfg.Fields(),
		base:    base,
		log:     log,
		sem:     make(chan struct{}, 1),
		callers: map[string]callerLease{},
	}, nil
}

// newClient builds a Vault API client from cfg alone: the VAULT_*
// environment variables the library reads by default (VAULT_TOKEN,
// VAULT_NAMESPACE, VAULT_HEADERS, VAULT_SKIP_VERIFY, VAULT_CACERT, …) are
// overridden or unused, so what the broker does is what its config says.
// The client retries nothing (the lease manager decides when to try
// again) and follows no redirect (a Vault token goes to the configured
// address only).
func newClient(cfg *Config) (*api.Client, error) {
	rt := cfg.Transport
	if rt == nil {
		t, err := providers.Transport(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("vault: %w", err)
		}
		rt = t
	}
	c, err := api.NewClient(&api.Config{
		Address: cfg.Address,
		// Redirects are not followed, by net/http or by the library: a
		// Vault token goes only to the configured address.
		HttpClient: &http.Client{
			Transport:     rt,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		DisableRedirects: true,
		MaxRetries:       0,
		Timeout:          DefaultTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("vault: address: %w", err)
	}
	c.ClearToken()
	// Replaces the headers from VAULT_HEADERS and VAULT_NAMESPACE; the
	// namespace is a header too, so it is set after.
	c.SetHeaders(http.Header{api.RequestHeaderName: {"true"}})
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	return c, nil
}

// TTL reports the credential's own lifetime cap.
func (p *Provider) TTL() time.Duration { return p.cfg.TTL }

func (p *Provider) passCaller() bool {
	return p.cfg.Auth.JWT != nil && p.cfg.Auth.JWT.PassCallerToken
}

// Ping checks that Vault answers and takes the broker's own token (logging
// in, or renewing it, as a request would), reading no secret. With
// pass_caller_token the broker has no token of its own: it checks that
// Vault answers.
func (p *Provider) Ping(ctx context.Context) error {
	if p.passCaller() {
		if _, err := p.base.Sys().HealthWithContext(ctx); err != nil {
			return fmt.Errorf("vault: credential %q: ping: %w", p.cfg.Name, err)
		}
		return nil
	}
	if _, err := p.brokerSession(ctx); err != nil {
		return fmt.Errorf("vault: credential %q: ping: %w", p.cfg.Name, err)
	}
	return nil
}

// Credential reads the secret: for kv, one field of a KV v2 secret; for
// dynamic, a new leased secret. Its expiry is capped at the smaller of the
// credential's TTL and req.TTL.
func (p *Provider) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	cr, err := p.credential(ctx, req)
	if err != nil {
		return providers.Credential{}, fmt.Errorf("vault: credential %q: %w", p.cfg.Name, err)
	}
	return cr, nil
}

func (p *Provider) credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	if err := ctx.Err(); err != nil {
		return providers.Credential{}, err
	}
	now := p.cfg.Now()
	ttl := p.cfg.TTL
	if req.TTL > 0 && req.TTL < ttl {
		ttl = req.TTL
	}
	lease := providers.Lease{Credential: req.Name, Subject: req.Identity.Subject, Kind: Kind}

	if p.passCaller() {
		if req.Token.IsZero() {
			return providers.Credential{}, ErrNoCallerToken
		}
		s, err := p.login(ctx, req.Token.Reveal())
		if err != nil {
			return providers.Credential{}, err
		}
		cr, err := p.issue(ctx, s, lease, now, ttl)
		if err != nil || p.cfg.KV != nil {
			// The caller's token served this one read; a dynamic
			// lease lives as long as its token, so only that token is
			// kept.
			p.revokeToken(ctx, s)
			return cr, err
		}
		p.rememberCaller(cr.ID, s, now)
		return cr, nil
	}

	for attempt := 0; ; attempt++ {
		s, err := p.brokerSession(ctx)
		if err != nil {
			return providers.Credential{}, err
		}
		cr, err := p.issue(ctx, s, lease, now, ttl)
		if err != nil && status(err) == http.StatusForbidden && attempt == 0 && ctx.Err() == nil {
			// The token may have been revoked or expired early: log in
			// (or re-read the token file) once more.
			p.dropSession(ctx, s)
			continue
		}
		return cr, err
	}
}

// issue reads the secret with s's token.
func (p *Provider) issue(ctx context.Context, s *session, lease providers.Lease, now time.Time, ttl time.Duration) (providers.Credential, error) {
	if kv := p.cfg.KV; kv != nil {
		v, version, err := p.readKV(ctx, s)
		if err != nil {
			return providers.Credential{}, err
		}
		lease.ID = kvLeaseID(version)
		lease.ExpiresAt = now.Add(ttl)
		return providers.Credential{Lease: lease, Data: map[string]providers.Secret{FieldValue: v}}, nil
	}
	path := p.cfg.Dynamic.Path
	sec, err := s.client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return providers.Credential{}, requestError("read", path, err, nil, s.token)
	}
	data, err := dynamicValues(sec, p.fields)
	if err != nil {
		if sec != nil && sec.LeaseID != "" {
			// Issued but unusable: do not leave it alive.
			if rerr := s.client.Sys().RevokeWithContext(ctx, sec.LeaseID); rerr != nil {
				p.log.Warn("vault: revoking an unusable lease failed", "credential", p.cfg.Name, "lease", Kind+":"+sec.LeaseID, "error", requestError("revoke", "sys/leases/revoke", rerr, nil, s.token))
			}
		}
		return providers.Credential{}, fmt.Errorf("read %s: %w", path, err)
	}
	lease.ID = Kind + ":" + sec.LeaseID
	lease.ExpiresAt = now.Add(ttl)
	if d := time.Duration(sec.LeaseDuration) * time.Second; d > 0 && d < ttl {
		lease.ExpiresAt = now.Add(d)
	}
	return providers.Credential{Lease: lease, Data: data}, nil
}

// readKV reads the configured field of the KV v2 secret and its version.
func (p *Provider) readKV(ctx context.Context, s *session) (providers.Secret, int64, error) {
	kv := p.cfg.KV
	path := orDefault(kv.Mount, DefaultKVMount) + "/data/" + kv.Path
	sec, err := s.client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return providers.Secret{}, 0, requestError("read", path, err, nil, s.token)
	}
	v, version, err := kvValue(sec, kv.Field)
	if err != nil {
		return providers.Secret{}, 0, fmt.Errorf("read %s: %w", path, err)
	}
	return v, version, nil
}

// Renew extends a lease by ttl. A dynamic lease is renewed in Vault
// (sys/leases/renew with increment ttl), and its new expiry is what Vault
// grants, capped at now+ttl: it may be shorter than asked (the lease's or
// its token's maximum TTL). A KV lease has nothing upstream to extend: it
// is renewed when the secret's current version is still the one issued,
// and ErrNotRenewable (issue again) when the secret changed.
func (p *Provider) Renew(ctx context.Context, lease providers.Lease, ttl time.Duration) (providers.Lease, error) {
	out, err := p.renew(ctx, lease, ttl)
	if err != nil {
		return providers.Lease{}, fmt.Errorf("vault: credential %q: renew lease %s: %w", p.cfg.Name, lease.ID, err)
	}
	return out, nil
}

func (p *Provider) renew(ctx context.Context, lease providers.Lease, ttl time.Duration) (providers.Lease, error) {
	if err := ctx.Err(); err != nil {
		return providers.Lease{}, err
	}
	if ttl <= 0 {
		ttl = p.cfg.TTL
	}
	now := p.cfg.Now()
	if p.cfg.KV != nil {
		version, ok := parseKVLease(lease.ID)
		if !ok {
			return providers.Lease{}, fmt.Errorf("%w: not a KV lease id", ErrNotRenewable)
		}
		if p.passCaller() {
			return providers.Lease{}, fmt.Errorf("%w: a KV read with the caller's token is checked again only by a new issue", ErrNotRenewable)
		}
		s, err := p.brokerSession(ctx)
		if err != nil {
			return providers.Lease{}, err
		}
		_, current, err := p.readKV(ctx, s)
		if err != nil {
			return providers.Lease{}, err
		}
		if current != version {
			return providers.Lease{}, fmt.Errorf("%w: the secret changed (version %d, issued %d)", ErrNotRenewable, current, version)
		}
		lease.ExpiresAt = now.Add(min(ttl, p.cfg.TTL))
		return lease, nil
	}

	id, ok := parseDynamicLease(lease.ID)
	if !ok {
		return providers.Lease{}, fmt.Errorf("%w: not a Vault lease id", ErrNotRenewable)
	}
	var s *session
	if p.passCaller() {
		cl, ok := p.caller(lease.ID)
		if !ok {
			return providers.Lease{}, fmt.Errorf("%w: the caller's Vault token it was issued under is no longer held", ErrNotRenewable)
		}
		s = cl.s
	} else {
		var err error
		if s, err = p.brokerSession(ctx); err != nil {
			return providers.Lease{}, err
		}
	}
	const path = "sys/leases/renew"
	sec, err := s.client.Sys().RenewWithContext(ctx, id, int((ttl+time.Second-1)/time.Second))
	if err != nil {
		e := requestError("renew", path, err, nil, s.token)
		if e.Status == http.StatusBadRequest || e.Status == http.StatusNotFound {
			e.kind = ErrNotRenewable // lease gone, expired, or not renewable
		}
		return providers.Lease{}, e
	}
	if sec == nil || sec.LeaseDuration <= 0 {
		return providers.Lease{}, fmt.Errorf("%w: Vault granted no further time", ErrNotRenewable)
	}
	lease.ExpiresAt = now.Add(min(time.Duration(sec.LeaseDuration)*time.Second, ttl))
	return lease, nil
}

// Revoke ends a lease. A dynamic lease is revoked in Vault
// (sys/leases/revoke; one Vault no longer knows is revoked already). With
// pass_caller_token, the lease is revoked with the caller's token it was
// issued under (synchronously when the caller's Vault policy allows
// sys/leases/revoke), and then that token, which also ends the lease,
// though in the background; a lease whose token is no longer held (issued
// before a restart) ends with that token's TTL. A KV lease has nothing
// upstream to end: revoking it succeeds at once.
func (p *Provider) Revoke(ctx context.Context, lease providers.Lease) error {
	if err := p.revoke(ctx, lease); err != nil {
		return fmt.Errorf("vault: credential %q: revoke lease %s: %w", p.cfg.Name, lease.ID, err)
	}
	return nil
}

func (p *Provider) revoke(ctx context.Context, lease providers.Lease) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.cfg.KV != nil {
		return nil
	}
	id, ok := parseDynamicLease(lease.ID)
	if !ok {
		return errors.New("not a Vault lease id")
	}
	if p.passCaller() {
		cl, ok := p.forgetCaller(lease.ID)
		if !ok {
			p.log.Warn("vault: the caller's token of this lease is no longer held; the lease ends with that token's TTL", "credential", p.cfg.Name, "lease", lease.ID)
			return nil
		}
		// The lease first, synchronously, when the caller's policy allows
		// sys/leases/revoke; then the caller's token, which ends the lease
		// in any case (Vault revokes a token's leases in the background).
		if err := cl.s.client.Sys().RevokeWithContext(ctx, id); err != nil {
			e := requestError("revoke", "sys/leases/revoke", err, nil, cl.s.token)
			switch e.Status {
			case http.StatusForbidden:
				p.log.Debug("vault: the caller may not revoke the lease itself; revoking its token, which revokes the lease in the background", "credential", p.cfg.Name, "lease", lease.ID)
			case http.StatusBadRequest: // unknown to Vault: revoked already
			default:
				p.rememberCallerUntil(lease.ID, cl)
				return e
			}
		}
		if err := p.revokeTokenErr(ctx, cl.s); err != nil {
			p.rememberCallerUntil(lease.ID, cl)
			return err
		}
		return nil
	}
	const path = "sys/leases/revoke"
	for attempt := 0; ; attempt++ {
		s, err := p.brokerSession(ctx)
		if err != nil {
			return err
		}
		err = s.client.Sys().RevokeWithContext(ctx, id)
		if err == nil {
			return nil
		}
		err = requestError("revoke", path, err, nil, s.token)
		switch st := status(err); {
		case st == http.StatusBadRequest && ctx.Err() == nil:
			// Vault answers 400 "invalid lease ID" for a lease it does
			// not know: already revoked, or expired and cleaned.
			p.log.Info("vault: the lease is unknown to Vault; treated as revoked", "credential", p.cfg.Name, "lease", lease.ID, "error", err)
			return nil
		case st == http.StatusForbidden && attempt == 0 && ctx.Err() == nil:
			p.dropSession(ctx, s)
			continue
		}
		return err
	}
}

// revokeTimeout bounds the revocation of a caller's token after use, which
// runs even when the request's context has ended.
const revokeTimeout = 10 * time.Second

// revokeToken revokes a caller's token after use, logging a failure: the
// token then ends with its TTL.
func (p *Provider) revokeToken(ctx context.Context, s *session) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if err := p.revokeTokenErr(ctx, s); err != nil {
		p.log.Warn("vault: revoking the caller's Vault token failed; it ends with its TTL", "credential", p.cfg.Name, "error", err)
	}
}

func (p *Provider) revokeTokenErr(ctx context.Context, s *session) error {
	const path = "auth/token/revoke-self"
	err := s.client.Auth().Token().RevokeSelfWithContext(ctx, "")
	if err == nil {
		return nil
	}
	err = requestError("revoke-self", path, err, nil, s.token)
	if status(err) == http.StatusForbidden {
		return nil // the token is gone already: expired or revoked
	}
	return err
}

func (p *Provider) rememberCaller(leaseID string, s *session, now time.Time) {
	cl := callerLease{s: s}
	if s.ttl > 0 {
		cl.until = s.expiry()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.callers {
		if !c.until.IsZero() && !now.Before(c.until) {
			delete(p.callers, id)
		}
	}
	p.callers[leaseID] = cl
}

func (p *Provider) rememberCallerUntil(leaseID string, cl callerLease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.callers[leaseID] = cl
}

func (p *Provider) caller(leaseID string) (callerLease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cl, ok := p.callers[leaseID]
	return cl, ok
}

func (p *Provider) forgetCaller(leaseID string) (callerLease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cl, ok := p.callers[leaseID]
	delete(p.callers, leaseID)
	return cl, ok
}
