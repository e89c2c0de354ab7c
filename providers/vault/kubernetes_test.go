package vault

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/credbroker/credbroker/providers"
)

// kubeAPI stands for the Kubernetes API server in Vault's kubernetes auth:
// it signs projected service account tokens (ES256, the real claims
// layout) and answers the TokenReview API
// (POST /apis/authentication.k8s.io/v1/tokenreviews) by verifying a
// token's signature with its key, as kube-apiserver does. A real cluster
// cannot run here.
type kubeAPI struct {
	srv    *httptest.Server
	key    *ecdsa.PrivateKey
	signer jose.Signer
}

const kubeIssuer = "https://kubernetes.default.svc.cluster.local"

func newKubeAPI(t testing.TB) *kubeAPI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	k := &kubeAPI{key: key, signer: signer}
	k.srv = httptest.NewServer(http.HandlerFunc(k.tokenReview))
	t.Cleanup(k.srv.Close)
	return k
}

type saClaims struct {
	jwt.Claims
	// Aud is always an array, as kube-apiserver writes it (jwt.Claims
	// writes a single audience as a string).
	Aud        []string `json:"aud"`
	Kubernetes struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// token signs a projected service account token for namespace/name.
func (k *kubeAPI) token(t testing.TB, namespace, name string) string {
	t.Helper()
	now := time.Now()
	var c saClaims
	c.Issuer, c.Subject = kubeIssuer, "system:serviceaccount:"+namespace+":"+name
	c.Aud = []string{kubeIssuer}
	c.IssuedAt, c.NotBefore, c.Expiry = jwt.NewNumericDate(now), jwt.NewNumericDate(now), jwt.NewNumericDate(now.Add(time.Hour))
	c.Kubernetes.Namespace = namespace
	c.Kubernetes.ServiceAccount.Name, c.Kubernetes.ServiceAccount.UID = name, "uid-"+namespace+"-"+name
	s, err := jwt.Signed(k.signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (k *kubeAPI) publicPEM(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (k *kubeAPI) tokenReview(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.NotFound(w, r)
		return
	}
	var review struct {
		Spec struct {
			Token string `json:"token"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	status := map[string]any{"authenticated": false}
	if tok, err := jwt.ParseSigned(review.Spec.Token, []jose.SignatureAlgorithm{jose.ES256}); err == nil {
		var c saClaims
		if err := tok.Claims(&k.key.PublicKey, &c); err == nil && c.ValidateWithLeeway(jwt.Expected{Issuer: kubeIssuer, Time: time.Now()}, time.Minute) == nil {
			status = map[string]any{
				"authenticated": true,
				"user":          map[string]any{"username": c.Subject, "uid": c.Kubernetes.ServiceAccount.UID},
				"audiences":     c.Aud,
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"apiVersion": "authentication.k8s.io/v1",
		"kind":       "TokenReview",
		"status":     status,
	})
}

// TestKubernetesAuth logs the broker in with its service account token
// through Vault's kubernetes auth method, mounted at a path of its own: a
// bound service account reads the secret, another is refused.
func TestKubernetesAuth(t *testing.T) {
	f := newFixture(t)
	k := newKubeAPI(t)
	f.enableAuth(t, "k8s", "kubernetes")
	f.write(t, "auth/k8s/config", map[string]any{
		"kubernetes_host":      k.srv.URL,
		"pem_keys":             []string{k.publicPEM(t)},
		"disable_local_ca_jwt": true,
	})
	f.write(t, "auth/k8s/role/broker", map[string]any{
		"bound_service_account_names":      []string{"credbroker"},
		"bound_service_account_namespaces": []string{"platform"},
		"token_policies":                   []string{"kv-read"},
		"token_ttl":                        "20m",
	})
	for _, tt := range []struct {
		name      string
		namespace string
		sa        string
		wantErr   bool
	}{
		{"the bound service account", "platform", "credbroker", false},
		{"another service account", "platform", "intruder", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			saToken := k.token(t, tt.namespace, tt.sa)
			p := mustNew(t, Config{
				Address: f.srv.Addr,
				Auth:    Auth{Kubernetes: &KubernetesAuth{Role: "broker", Mount: "k8s", TokenFile: f.file(t, "sa-token-"+tt.sa, saToken)}},
				KV:      &KV{Path: "stripe", Field: "key"},
				Name:    "stripe",
			})
			cr, err := p.Credential(context.Background(), providers.Request{Name: "stripe", Identity: caller})
			if tt.wantErr {
				if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "auth/k8s/login") || strings.Contains(err.Error(), saToken) {
					t.Fatalf("error %v, want a refused login without the token", err)
				}
				return
			}
			if err != nil || string(cr.Data[FieldValue].Reveal()) != "sk_live_first1" {
				t.Fatalf("got %q, %v", cr.Data[FieldValue].Reveal(), err)
			}
			if p.sess == nil || p.sess.ttl != 20*time.Minute {
				t.Errorf("session %+v, want the role's 20m TTL", p.sess)
			}
		})
	}
}
