package vault

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/vaulttest"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/providertest"
)

// The tests run against a real Vault dev server (internal/vaulttest), and
// the database secrets engine against a real PostgreSQL (internal/pgtest).

const kvReadPolicy = `path "secret/data/*" { capabilities = ["read"] }`

// fixture is one Vault dev server with a KV v2 secret at secret/stripe.
type fixture struct {
	srv  *vaulttest.Server
	root *api.Client
	dir  string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	srv := vaulttest.Start(t)
	f := &fixture{srv: srv, root: srv.Client, dir: t.TempDir()}
	f.putPolicy(t, "kv-read", kvReadPolicy)
	f.putKV(t, "stripe", map[string]any{"key": "sk_live_first1", "other": "x"})
	return f
}

func (f *fixture) putPolicy(t testing.TB, name, rules string) {
	t.Helper()
	if err := f.root.Sys().PutPolicyWithContext(context.Background(), name, rules); err != nil {
		t.Fatalf("policy %s: %v", name, err)
	}
}

func (f *fixture) putKV(t testing.TB, path string, data map[string]any) {
	t.Helper()
	if _, err := f.root.KVv2("secret").Put(context.Background(), path, data); err != nil {
		t.Fatalf("kv put %s: %v", path, err)
	}
}

func (f *fixture) write(t testing.TB, path string, data map[string]any) *api.Secret {
	t.Helper()
	sec, err := f.root.Logical().WriteWithContext(context.Background(), path, data)
	if err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return sec
}

func (f *fixture) enableAuth(t testing.TB, mount, typ string) {
	t.Helper()
	if err := f.root.Sys().EnableAuthWithOptionsWithContext(context.Background(), mount, &api.EnableAuthOptions{Type: typ}); err != nil {
		t.Fatalf("enable auth %s: %v", typ, err)
	}
}

// token creates a token with policies and ttl.
func (f *fixture) token(t testing.TB, ttl string, policies ...string) string {
	t.Helper()
	sec, err := f.root.Auth().Token().CreateWithContext(context.Background(), &api.TokenCreateRequest{Policies: policies, TTL: ttl})
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	return sec.Auth.ClientToken
}

// file writes content to a new file in the fixture's directory, replacing
// it by a rename (as Vault Agent and Kubernetes do).
func (f *fixture) file(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path+".new", []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	return path
}

// approle enables AppRole with a role "broker" of the given policies and
// token TTLs, and returns its role id and a file holding a secret id.
func (f *fixture) approle(t testing.TB, ttl, maxTTL string, policies ...string) (roleID, secretIDFile, secretID string) {
	t.Helper()
	f.enableAuth(t, "approle", "approle")
	f.write(t, "auth/approle/role/broker", map[string]any{"token_policies": policies, "token_ttl": ttl, "token_max_ttl": maxTTL})
	sec, err := f.root.Logical().ReadWithContext(context.Background(), "auth/approle/role/broker/role-id")
	if err != nil {
		t.Fatal(err)
	}
	roleID = sec.Data["role_id"].(string)
	secretID = f.write(t, "auth/approle/role/broker/secret-id", nil).Data["secret_id"].(string)
	return roleID, f.file(t, "secret-id", secretID), secretID
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var caller = attest.Identity{Method: attest.MethodUnix, Subject: "unix:uid:1000"}

func mustNew(t testing.TB, cfg Config) *Provider {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func issue(t testing.TB, p *Provider, req providers.Request) providers.Credential {
	t.Helper()
	cr, err := p.Credential(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

// closedAddress is a loopback address nothing listens on.
func closedAddress(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// TestKVTokenFile reads one field of a KV v2 secret with a token from a
// file: the expiry cap, renewal while the version is current, a new
// version, a rotated token file, a revoked token, a missing field.
func TestKVTokenFile(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var log logtest.Buffer
	clk := &clock{now: time.Now()}
	tokenFile := f.file(t, "token", f.token(t, "1h", "kv-read"))
	p := mustNew(t, Config{
		Address: f.srv.Addr,
		Auth:    Auth{TokenFile: tokenFile},
		KV:      &KV{Path: "stripe", Field: "key"},
		Name:    "stripe",
		TTL:     time.Hour,
		Now:     clk.Now,
		Logger:  log.Logger(),
	})

	for _, tt := range []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"the credential's ttl when the policy sets none", 0, time.Hour},
		{"a shorter policy ttl wins", 10 * time.Minute, 10 * time.Minute},
		{"a longer policy ttl does not extend", 3 * time.Hour, time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cr := issue(t, p, providers.Request{Name: "stripe", TTL: tt.ttl, Identity: caller})
			if got := string(cr.Data[FieldValue].Reveal()); got != "sk_live_first1" || len(cr.Data) != 1 {
				t.Errorf("data %v (value %q)", cr.Data, got)
			}
			if !strings.HasPrefix(cr.ID, "vault:kv:v1:") || cr.Kind != Kind || cr.Credential != "stripe" || cr.Subject != caller.Subject {
				t.Errorf("lease %+v", cr.Lease)
			}
			if want := clk.Now().Add(tt.want); !cr.ExpiresAt.Equal(want) {
				t.Errorf("expiry %v, want %v", cr.ExpiresAt, want)
			}
		})
	}

	cr := issue(t, p, providers.Request{Name: "stripe", TTL: 10 * time.Minute})
	clk.advance(5 * time.Minute)
	renewed, err := p.Renew(ctx, cr.Lease, 10*time.Minute)
	if err != nil || !renewed.ExpiresAt.Equal(clk.Now().Add(10*time.Minute)) || renewed.ID != cr.ID {
		t.Fatalf("renew while the version is current: %+v, %v", renewed, err)
	}

	f.putKV(t, "stripe", map[string]any{"key": "sk_live_second"})
	if _, err := p.Renew(ctx, cr.Lease, 10*time.Minute); !errors.Is(err, ErrNotRenewable) || !strings.Contains(err.Error(), "version 2, issued 1") {
		t.Fatalf("renew after a new version: %v, want ErrNotRenewable", err)
	}
	if got := issue(t, p, providers.Request{Name: "stripe"}); string(got.Data[FieldValue].Reveal()) != "sk_live_second" || !strings.HasPrefix(got.ID, "vault:kv:v2:") {
		t.Fatalf("after a new version: %q, %s", got.Data[FieldValue].Reveal(), got.ID)
	}
	if err := p.Revoke(ctx, cr.Lease); err != nil {
		t.Fatalf("revoking a KV lease: %v", err)
	}

	// A rotated token file is read from the next request on.
	old, _ := os.ReadFile(tokenFile)
	newToken := f.token(t, "1h", "kv-read")
	f.file(t, "token", newToken)
	if err := f.root.Auth().Token().RevokeTreeWithContext(ctx, strings.TrimSpace(string(old))); err != nil {
		t.Fatal(err)
	}
	issue(t, p, providers.Request{Name: "stripe"})
	if got := string(p.sess.token); got != newToken {
		t.Error("the rotated token file was not read")
	}

	// A token revoked behind the broker's back, its file not replaced:
	// Vault refuses, and the error says so without the token.
	if err := f.root.Auth().Token().RevokeTreeWithContext(ctx, newToken); err != nil {
		t.Fatal(err)
	}
	_, err = p.Credential(ctx, providers.Request{Name: "stripe"})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), newToken) {
		t.Fatalf("revoked token: %v", err)
	}

	// A missing field names the field, not the secret's values.
	f.file(t, "token", f.token(t, "1h", "kv-read"))
	missing := mustNew(t, Config{Address: f.srv.Addr, Auth: Auth{TokenFile: tokenFile}, KV: &KV{Path: "stripe", Field: "nope"}, Name: "stripe"})
	_, err = missing.Credential(ctx, providers.Request{Name: "stripe"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `no field "nope"`) || strings.Contains(err.Error(), "sk_live") {
		t.Fatalf("missing field: %v", err)
	}
	absent := mustNew(t, Config{Address: f.srv.Addr, Auth: Auth{TokenFile: tokenFile}, KV: &KV{Path: "absent", Field: "key"}, Name: "absent"})
	if _, err := absent.Credential(ctx, providers.Request{Name: "absent"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent secret: %v", err)
	}

	for _, secret := range []string{string(old), newToken, "sk_live"} {
		if strings.Contains(log.String(), strings.TrimSpace(secret)) {
			t.Errorf("the log carries a secret: %s", log.String())
		}
	}
}

// TestAppRoleTokenLifecycle: the broker's own token from an AppRole login
// is used while fresh, renewed (renew-self) past half its TTL, replaced by
// a new login when Vault refuses it or it has expired, and a refused login
// is an error without the secret id.
func TestAppRoleTokenLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	roleID, secretIDFile, secretID := f.approle(t, "1h", "24h", "kv-read")
	var log logtest.Buffer
	clk := &clock{now: time.Now()}
	p := mustNew(t, Config{
		Address: f.srv.Addr,
		Auth:    Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: secretIDFile}},
		KV:      &KV{Path: "stripe", Field: "key"},
		Name:    "stripe",
		Now:     clk.Now,
		Logger:  log.Logger(),
	})
	req := providers.Request{Name: "stripe", Identity: caller}

	issue(t, p, req)
	first := p.sess
	if first == nil || first.ttl != time.Hour || !first.renewable {
		t.Fatalf("after login: %+v", first)
	}
	for _, tt := range []struct {
		name    string
		advance time.Duration
		revoke  bool // revoke the current token in Vault first
		want    string
	}{
		{"fresh: used as it is", 10 * time.Minute, false, "same"},
		{"past half its TTL: renewed", 25 * time.Minute, false, "renewed"},
		{"revoked behind the broker's back: logged in again", 0, true, "login"},
		{"expired by the clock: logged in again", 2 * time.Hour, false, "login"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := p.sess
			if tt.revoke {
				if err := f.root.Auth().Token().RevokeTreeWithContext(ctx, string(before.token)); err != nil {
					t.Fatal(err)
				}
			}
			clk.advance(tt.advance)
			if got := issue(t, p, req); string(got.Data[FieldValue].Reveal()) != "sk_live_first1" {
				t.Fatalf("value %q", got.Data[FieldValue].Reveal())
			}
			after := p.sess
			var got string
			switch {
			case after == before:
				got = "same"
			case bytes.Equal(after.token, before.token):
				got = "renewed"
				if !after.learned.Equal(clk.Now()) || after.ttl <= 0 {
					t.Errorf("renewed session %+v", after)
				}
			default:
				got = "login"
			}
			if got != tt.want {
				t.Errorf("the token was %s, want %s", got, tt.want)
			}
		})
	}

	// A secret id Vault refuses: the error is Vault's, without the secret.
	f.file(t, "secret-id", "not-the-secret-id-"+secretID[:4])
	clk.advance(48 * time.Hour)
	_, err := p.Credential(ctx, req)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "auth/approle/login") || strings.Contains(err.Error(), "not-the-secret-id") {
		t.Fatalf("refused login: %v", err)
	}
	if strings.Contains(log.String(), secretID) || !strings.Contains(log.String(), "logged in") {
		t.Errorf("log: %s", log.String())
	}
}

// TestConformanceKV runs the provider suite on a KV credential read with
// an AppRole login. The failing provider logs in with the same secret id
// for a role id Vault does not know; the canary is the secret id.
func TestConformanceKV(t *testing.T) {
	f := newFixture(t)
	roleID, secretIDFile, secretID := f.approle(t, "1h", "2h", "kv-read")
	var log logtest.Buffer
	cfg := Config{
		Address: f.srv.Addr,
		Auth:    Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: secretIDFile}},
		KV:      &KV{Path: "stripe", Field: "key"},
		Name:    "conformance",
		Logger:  log.Logger(),
	}
	p := mustNew(t, cfg)
	cfg.Auth.AppRole = &AppRoleAuth{RoleID: "no-such-role", SecretIDFile: secretIDFile}
	failing := mustNew(t, cfg)
	providertest.Run(t, providertest.Case{
		Kind:     Kind,
		Fields:   cfg.Fields(),
		Provider: p,
		Failing:  failing,
		Canary:   secretID,
		Logs:     log.String,
	})
}

// TestPing checks the start-up probe: the broker's token is accepted; an
// AppRole secret id Vault refuses, and a Vault that does not answer, fail
// without a secret in the message.
func TestPing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	good := mustNew(t, Config{Address: f.srv.Addr, Auth: Auth{TokenFile: f.file(t, "token", f.token(t, "1h", "kv-read"))}, KV: &KV{Path: "stripe", Field: "key"}, Name: "stripe"})
	if err := good.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	roleID, _, secretID := f.approle(t, "1h", "2h", "kv-read")
	wrong := mustNew(t, Config{Address: f.srv.Addr, Auth: Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: f.file(t, "wrong-secret-id", "not-"+secretID)}}, KV: &KV{Path: "stripe", Field: "key"}, Name: "stripe"})
	if err := wrong.Ping(ctx); err == nil || strings.Contains(err.Error(), secretID) {
		t.Errorf("a refused secret id: %v", err)
	}
	down := mustNew(t, Config{Address: closedAddress(t), Auth: Auth{TokenFile: f.file(t, "token2", f.token(t, "1h", "kv-read"))}, KV: &KV{Path: "stripe", Field: "key"}, Name: "stripe"})
	if err := down.Ping(ctx); err == nil {
		t.Error("a Vault that does not answer passed the ping")
	}
}
