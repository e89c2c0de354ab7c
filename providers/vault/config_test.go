package vault

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/credbroker/credbroker/providers"
)

func kvConfig() Config {
	return Config{
		Address: "http://127.0.0.1:8200",
		Auth:    Auth{TokenFile: "/run/vault/token"},
		KV:      &KV{Path: "stripe", Field: "key"},
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name   string
		modify func(*Config)
		want   []string // every one must be reported; none means valid
	}{
		{"kv with token_file", func(*Config) {}, nil},
		{"dynamic with approle", func(c *Config) {
			c.Auth = Auth{AppRole: &AppRoleAuth{RoleID: "r", SecretIDFile: "s"}}
			c.KV, c.Dynamic = nil, &Dynamic{Path: "database/creds/ro"}
		}, nil},
		{"jwt passing the caller's token", func(c *Config) {
			c.Auth = Auth{JWT: &JWTAuth{Role: "w", PassCallerToken: true}}
		}, nil},
		{"kubernetes with defaults", func(c *Config) { c.Auth = Auth{Kubernetes: &KubernetesAuth{Role: "b"}} }, nil},
		{"https anywhere", func(c *Config) { c.Address = "https://vault.example.com:8200" }, nil},
		{"everything missing", func(c *Config) { *c = Config{} }, []string{
			"address is required", "exactly one of token_file, kubernetes, approle and jwt", "exactly one of kv and dynamic",
		}},
		{"http to a remote host", func(c *Config) { c.Address = "http://vault.example.com:8200" }, []string{"plain http only to a loopback host"}},
		{"user information in the address", func(c *Config) { c.Address = "https://u:pw@vault:8200" }, []string{"must not carry user information"}},
		{"two auth methods", func(c *Config) { c.Auth.AppRole = &AppRoleAuth{RoleID: "r", SecretIDFile: "s"} }, []string{"(2 are)"}},
		{"approle without its fields", func(c *Config) { c.Auth = Auth{AppRole: &AppRoleAuth{}} }, []string{"role_id is required", "secret_id_file is required"}},
		{"jwt with both token sources", func(c *Config) {
			c.Auth = Auth{JWT: &JWTAuth{Role: "w", TokenFile: "t", PassCallerToken: true}}
		}, []string{"exactly one of token_file and pass_caller_token"}},
		{"jwt with neither token source, no role", func(c *Config) { c.Auth = Auth{JWT: &JWTAuth{}} }, []string{
			"auth.jwt.role is required", "exactly one of token_file and pass_caller_token",
		}},
		{"kubernetes without a role, bad mount", func(c *Config) { c.Auth = Auth{Kubernetes: &KubernetesAuth{Mount: "/k8s"}} }, []string{
			"auth.kubernetes.role is required", "auth.kubernetes.mount: must not begin or end with a slash",
		}},
		{"kv and dynamic", func(c *Config) { c.Dynamic = &Dynamic{Path: "database/creds/ro"} }, []string{"exactly one of kv and dynamic"}},
		{"kv without path and field", func(c *Config) { c.KV = &KV{} }, []string{"kv.path is required", "kv.field is required"}},
		{"kv path escaping", func(c *Config) { c.KV.Path = "../sys/raw" }, []string{"kv.path: must not have empty, '.' or '..' segments"}},
		{"kv path with a query", func(c *Config) { c.KV.Path = "a?list=true" }, []string{"kv.path: must be printable ASCII"}},
		{"dynamic fields", func(c *Config) {
			c.KV, c.Dynamic = nil, &Dynamic{Path: "database/creds/ro", Fields: []string{"username", "", "username"}}
		}, []string{"dynamic.fields[1] is empty", `dynamic.fields[2]: "username" is listed twice`}},
		{"negative ttl, ca_file with a transport", func(c *Config) {
			c.TTL, c.CAFile, c.Transport = -time.Second, "ca.pem", http.DefaultTransport
		}, []string{"ttl must not be negative", "ca_file cannot be combined"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := kvConfig()
			tt.modify(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("invalid config accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not report %q", err, w)
				}
			}
			if _, nerr := New(c); nerr == nil {
				t.Error("New accepted what Validate refused")
			}
		})
	}
}

func TestFieldsAndPaths(t *testing.T) {
	c := kvConfig()
	if got := c.Fields(); !slices.Equal(got, []string{FieldValue}) {
		t.Errorf("kv fields %v", got)
	}
	c.KV, c.Dynamic = nil, &Dynamic{Path: "database/creds/ro"}
	if got := c.Fields(); !slices.Equal(got, []string{FieldUsername, FieldPassword}) {
		t.Errorf("dynamic default fields %v", got)
	}
	c.Dynamic.Fields = []string{"access_key", "secret_key", "security_token"}
	if got := c.Fields(); !slices.Equal(got, c.Dynamic.Fields) {
		t.Errorf("dynamic fields %v", got)
	}

	c = Config{CAFile: "ca", Auth: Auth{
		TokenFile:  "tok",
		Kubernetes: &KubernetesAuth{TokenFile: "sa"},
		AppRole:    &AppRoleAuth{SecretIDFile: "sid"},
		JWT:        &JWTAuth{TokenFile: "jwt"},
	}}
	var got []string
	for _, p := range c.Paths() {
		got = append(got, *p)
		*p = "/abs/" + *p
	}
	if !slices.Equal(got, []string{"ca", "tok", "sa", "sid", "jwt"}) {
		t.Errorf("paths %v", got)
	}
	if c.CAFile != "/abs/ca" || c.Auth.AppRole.SecretIDFile != "/abs/sid" || c.Auth.JWT.TokenFile != "/abs/jwt" {
		t.Errorf("Paths does not point into the config: %+v", c)
	}
}

// TestNewDoesNoIO: New succeeds with a Vault that is not there and a
// token file not yet written; the first Credential call reports both.
func TestNewDoesNoIO(t *testing.T) {
	c := kvConfig()
	c.Address = "http://127.0.0.1:1"
	c.Auth.TokenFile = t.TempDir() + "/not-yet"
	p, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Credential(context.Background(), providers.Request{Name: "x"})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "not-yet") {
		t.Fatalf("error %v, want ErrAuth naming the token file", err)
	}
}

// TestRequestErrorRedacts: Vault's messages are kept, bounded and reduced
// to printable ASCII, and the secrets the request carried are removed.
func TestRequestErrorRedacts(t *testing.T) {
	const token = "hvs.CAESIJ-canary-token"
	for _, tt := range []struct {
		name string
		err  error
		want []string
	}{
		{"vault's messages", &api.ResponseError{HTTPMethod: "PUT", URL: "http://v/v1/auth/approle/login", StatusCode: 400,
			Errors: []string{"invalid role or secret ID", "token " + token + " echoed\x1b[31m"}},
			[]string{"login auth/approle/login: Vault answered 400 Bad Request: invalid role or secret ID; token [redacted] echoed [31m"}},
		{"a raw body", &api.ResponseError{StatusCode: 502, RawError: true, Errors: []string{"<html>" + token + "</html>"}},
			[]string{"Vault answered 502 Bad Gateway: a response that is not Vault's JSON"}},
		{"many messages", &api.ResponseError{StatusCode: 500, Errors: []string{"a", "b", "c", "d", "e", "f"}},
			[]string{"a; b; c; d; (2 more)"}},
		{"a network error", errors.New("dial tcp 127.0.0.1:1: connect: connection refused " + token),
			[]string{"connection refused [redacted]"}},
		{"cancelled", context.Canceled, []string{"login auth/approle/login: cancelled"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := requestError("login", "auth/approle/login", tt.err, ErrAuth, []byte(token))
			msg := e.Error()
			if strings.Contains(msg, token) || strings.Contains(msg, "<html>") || strings.Contains(msg, "\x1b") {
				t.Errorf("error carries a secret or raw bytes: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if !errors.Is(e, ErrAuth) {
				t.Error("sentinel lost")
			}
			if errors.Is(tt.err, context.Canceled) != errors.Is(e, context.Canceled) {
				t.Error("context.Canceled not kept for errors.Is")
			}
		})
	}
}

// TestClientIsolation: a stand-in for a Vault standby that redirects every
// request elsewhere, with VAULT_* variables set in the environment. The
// provider sends its own token (never VAULT_TOKEN) and namespace (never
// VAULT_NAMESPACE), sends no token with a login, and follows no redirect,
// so the other host never sees a token.
func TestClientIsolation(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	var mu sync.Mutex
	seen := map[string]http.Header{}
	standby := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer standby.Close()
	t.Setenv("VAULT_TOKEN", "env-token-canary")
	t.Setenv("VAULT_NAMESPACE", "env-namespace")
	t.Setenv("VAULT_HEADERS", `{"X-Env-Header":"env"}`)

	dir := t.TempDir()
	tokenFile, secretIDFile := filepath.Join(dir, "token"), filepath.Join(dir, "secret-id")
	os.WriteFile(tokenFile, []byte("file-token\n"), 0o600)
	os.WriteFile(secretIDFile, []byte("secret-id\n"), 0o600)
	for _, tt := range []struct {
		name      string
		auth      Auth
		path      string
		wantToken string
	}{
		{"token_file", Auth{TokenFile: tokenFile}, "/v1/auth/token/lookup-self", "file-token"},
		{"approle login", Auth{AppRole: &AppRoleAuth{RoleID: "r", SecretIDFile: secretIDFile}}, "/v1/auth/approle/login", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(Config{Address: standby.URL, Auth: tt.auth, KV: &KV{Path: "x", Field: "y"}, Namespace: "team-a", Name: "iso"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Credential(context.Background(), providers.Request{Name: "iso"}); err == nil {
				t.Fatal("a redirecting server issued a credential")
			}
			mu.Lock()
			h, ok := seen[tt.path]
			mu.Unlock()
			if !ok {
				t.Fatalf("no request to %s", tt.path)
			}
			if got := h.Get("X-Vault-Token"); got != tt.wantToken {
				t.Errorf("X-Vault-Token %q, want %q", got, tt.wantToken)
			}
			if got := h.Get("X-Vault-Namespace"); got != "team-a" {
				t.Errorf("X-Vault-Namespace %q, want the configured one", got)
			}
			if h.Get("X-Env-Header") != "" || h.Get("X-Vault-Request") != "true" {
				t.Errorf("headers %v: VAULT_HEADERS applied, or X-Vault-Request missing", h)
			}
		})
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("%d requests followed the redirect to another host", n)
	}
}
