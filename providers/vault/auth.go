package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

// session is a Vault token the provider holds, the client that sends it,
// and what is known of its life. A session is never modified once built:
// a renewal or a new login builds a new one.
type session struct {
	token  []byte      // never logged, never in an error
	client *api.Client // sends token with every request
	// learned is when ttl was learned (login, lookup-self, renew-self).
	learned time.Time
	// ttl is the token's remaining life at learned; 0 when it does not
	// expire (a root token, a token without TTL).
	ttl       time.Duration
	renewable bool
	// stamp identifies the token file the token was read from (token_file
	// only).
	stamp fileStamp
}

func (s *session) expiry() time.Time { return s.learned.Add(s.ttl) }

// fresh reports whether s is used as it is: it does not expire, or less
// than half its TTL has passed.
func (s *session) fresh(now time.Time) bool {
	return s.ttl == 0 || now.Before(s.learned.Add(s.ttl/2))
}

// live reports whether s has not expired.
func (s *session) live(now time.Time) bool { return s.ttl == 0 || now.Before(s.expiry()) }

func (p *Provider) newSession(token string, learned time.Time, ttlSeconds int, renewable bool) *session {
	return &session{
		token: []byte(token),
		client: p.base.WithRequestCallbacks(func(r *api.Request) {
			r.ClientToken = token
		}),
		learned:   learned,
		ttl:       time.Duration(ttlSeconds) * time.Second,
		renewable: renewable,
	}
}

// brokerSession returns the broker's own Vault token, lazily keeping it
// alive: a token past half its TTL is renewed (renew-self), and one that
// cannot be renewed, or has expired, is replaced by logging in again (for
// token_file, by the file's next content). A renewal or login that fails
// while the old token is still live falls back to the old token. Callers
// are serialised while the token is checked, so concurrent requests
// trigger one login, not many; a waiting caller honours its ctx.
func (p *Provider) brokerSession(ctx context.Context) (*session, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.sem }()

	if p.cfg.Auth.TokenFile != "" {
		st, err := stat(p.cfg.Auth.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: token_file: %v", ErrAuth, err)
		}
		if p.sess == nil || p.sess.stamp != st {
			s, err := p.readTokenFile(ctx, st)
			if err != nil {
				return nil, err
			}
			p.sess = s
			return s, nil
		}
	}
	now := p.cfg.Now()
	old := p.sess
	if old != nil && old.fresh(now) {
		return old, nil
	}
	if old != nil && old.renewable && old.live(now) {
		s, err := p.renewSelf(ctx, old)
		switch {
		case err == nil && s.expiry().After(old.expiry()):
			p.sess = s
			return s, nil
		case err == nil:
			p.log.Info("vault: the broker's token reached its maximum TTL; logging in again", "credential", p.cfg.Name)
		case ctx.Err() != nil:
			return nil, err
		default:
			p.log.Warn("vault: renewing the broker's token failed; logging in again", "credential", p.cfg.Name, "error", err)
		}
	}
	if p.cfg.Auth.TokenFile != "" {
		if old.live(now) {
			return old, nil
		}
		return nil, fmt.Errorf("%w: the token in token_file has expired and the file has not been replaced", ErrAuth)
	}
	s, err := p.login(ctx, nil)
	if err != nil {
		if old != nil && old.live(now) && ctx.Err() == nil {
			p.log.Warn("vault: logging in failed; using the broker's current token until it expires", "credential", p.cfg.Name, "error", err)
			return old, nil
		}
		return nil, err
	}
	p.sess = s
	p.log.Info("vault: logged in", "credential", p.cfg.Name, "method", p.method(), "ttl", s.ttl)
	return s, nil
}

// dropSession forgets s if it is still the broker's token, so that the next
// request logs in again (Vault refused s: revoked, expired early).
func (p *Provider) dropSession(ctx context.Context, s *session) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-p.sem }()
	if p.sess == s {
		p.sess = nil // token_file: the file is read and looked up again
	}
}

// readTokenFile reads the broker's token from token_file and asks Vault
// for its TTL (lookup-self).
func (p *Provider) readTokenFile(ctx context.Context, st fileStamp) (*session, error) {
	tok, err := readSecretFile(p.cfg.Auth.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("%w: token_file: %v", ErrAuth, err)
	}
	now := p.cfg.Now()
	s := p.newSession(string(tok), now, 0, false)
	const path = "auth/token/lookup-self"
	sec, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, requestError("lookup-self", path, err, ErrAuth, tok)
	}
	if sec == nil {
		return nil, &Error{Op: "lookup-self", Path: path, Detail: "Vault's answer is empty", kind: ErrAuth}
	}
	ttl, err := sec.TokenTTL()
	if err != nil {
		return nil, &Error{Op: "lookup-self", Path: path, Detail: "Vault's answer has no usable ttl", kind: ErrAuth}
	}
	renewable, _ := sec.TokenIsRenewable()
	s = p.newSession(string(tok), now, int(ttl/time.Second), renewable)
	s.stamp = st
	return s, nil
}

// renewSelf extends s by its default increment.
func (p *Provider) renewSelf(ctx context.Context, s *session) (*session, error) {
	const path = "auth/token/renew-self"
	now := p.cfg.Now()
	sec, err := s.client.Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil {
		return nil, requestError("renew-self", path, err, nil, s.token)
	}
	if sec == nil || sec.Auth == nil {
		return nil, &Error{Op: "renew-self", Path: path, Detail: "Vault's answer has no auth section"}
	}
	ns := p.newSession(string(s.token), now, sec.Auth.LeaseDuration, sec.Auth.Renewable)
	ns.stamp = s.stamp
	return ns, nil
}

// login logs in with the configured auth method and returns the new
// token's session. With jwt.pass_caller_token, callerJWT is the caller's
// verified token.
func (p *Provider) login(ctx context.Context, callerJWT []byte) (*session, error) {
	a := p.cfg.Auth
	var (
		mount  string
		body   map[string]any
		secret []byte
	)
	switch {
	case a.Kubernetes != nil:
		b, err := readSecretFile(orDefault(a.Kubernetes.TokenFile, DefaultKubernetesTokenFile))
		if err != nil {
			return nil, fmt.Errorf("%w: auth.kubernetes.token_file: %v", ErrAuth, err)
		}
		mount, secret = orDefault(a.Kubernetes.Mount, DefaultKubernetesMount), b
		body = map[string]any{"role": a.Kubernetes.Role, "jwt": string(b)}
	case a.AppRole != nil:
		b, err := readSecretFile(a.AppRole.SecretIDFile)
		if err != nil {
			return nil, fmt.Errorf("%w: auth.approle.secret_id_file: %v", ErrAuth, err)
		}
		mount, secret = orDefault(a.AppRole.Mount, DefaultAppRoleMount), b
		body = map[string]any{"role_id": a.AppRole.RoleID, "secret_id": string(b)}
	case a.JWT != nil && a.JWT.PassCallerToken:
		if len(callerJWT) == 0 {
			return nil, ErrNoCallerToken
		}
		mount, secret = orDefault(a.JWT.Mount, DefaultJWTMount), callerJWT
		body = map[string]any{"role": a.JWT.Role, "jwt": string(callerJWT)}
	case a.JWT != nil:
		b, err := readSecretFile(a.JWT.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: auth.jwt.token_file: %v", ErrAuth, err)
		}
		mount, secret = orDefault(a.JWT.Mount, DefaultJWTMount), b
		body = map[string]any{"role": a.JWT.Role, "jwt": string(b)}
	default:
		return nil, fmt.Errorf("%w: no login method configured", ErrAuth)
	}
	path := "auth/" + mount + "/login"
	now := p.cfg.Now()
	sec, err := p.base.Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		return nil, requestError("login", path, err, ErrAuth, secret)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, &Error{Op: "login", Path: path, Detail: "Vault's answer has no token", kind: ErrAuth}
	}
	return p.newSession(sec.Auth.ClientToken, now, sec.Auth.LeaseDuration, sec.Auth.Renewable), nil
}

// method names the configured auth method, for logs.
func (p *Provider) method() string {
	a := p.cfg.Auth
	switch {
	case a.TokenFile != "":
		return "token_file"
	case a.Kubernetes != nil:
		return "kubernetes"
	case a.AppRole != nil:
		return "approle"
	case a.JWT != nil:
		return "jwt"
	}
	return ""
}

// fileStamp identifies a file's content without reading it.
type fileStamp struct {
	size, mtime int64
	ino, dev    uint64
}

func stat(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino, st.dev = sys.Ino, uint64(sys.Dev)
	}
	return st, nil
}

// readSecretFile reads a token or secret id, trimming one trailing newline.
// Its errors name the file, never its content.
func readSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, errors.New(path + " is empty")
	}
	return b, nil
}
