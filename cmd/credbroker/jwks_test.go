package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

// keyHost is a second HTTPS server publishing the issuer's JWKS, as a
// cluster or identity provider may on another host, that records the
// Authorization header of every request.
type keyHost struct {
	srv *httptest.Server
	// demandAuth makes it answer 401 to requests without Authorization.
	demandAuth bool

	mu   sync.Mutex
	auth []string // Authorization per request, "" when absent
}

func newKeyHost(t *testing.T, iss *oidctest.Issuer, demandAuth bool) *keyHost {
	t.Helper()
	k := &keyHost{demandAuth: demandAuth}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		k.mu.Lock()
		k.auth = append(k.auth, a)
		k.mu.Unlock()
		if k.demandAuth && a == "" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(iss.JWKS())
	}))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *keyHost) requests() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.auth...)
}

// TestBrokerTokenStaysWithIssuer runs the broker with a local issuer that
// serves discovery only to the broker's own token (bearer_token_file), as a
// cluster does, and whose discovery document points jwks_uri at another
// server. The token reaches the issuer and never the other server, which is
// asked for the keys without it: a public key host serves them and tokens
// verify; one that demands authentication makes the keys unavailable (401,
// audited), as docs/attestors.md says.
func TestBrokerTokenStaysWithIssuer(t *testing.T) {
	const brokerToken = "broker-own-service-account-token-canary"
	for _, tt := range []struct {
		name       string
		demandAuth bool
		status     int
		reason     string
	}{
		{"public key host", false, 200, ""},
		{"key host demanding authentication", true, 401, "signing keys unavailable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := oidctest.NewRSAKey(t, "k1")
			iss := oidctest.NewIssuer(t, key)
			iss.RequireBearer(brokerToken)
			keys := newKeyHost(t, iss, tt.demandAuth)
			iss.SetJWKSURI(keys.srv.URL + "/openid/v1/jwks")

			e := newEnv(t, tokenPolicies, e2eCredentials())
			e.write("secrets/demo", "s3cr3t")
			// httptest servers share one certificate: this trusts both.
			ca := e.write("ca.pem", string(iss.CAPEM()))
			tokenFile := e.write("broker-token", brokerToken+"\n")
			cfg, _ := os.ReadFile(e.config)
			os.WriteFile(e.config, append(cfg, []byte("attestors:\n  kubernetes: {issuer: \""+iss.URL+"\", audiences: [credbroker], ca_file: "+ca+", bearer_token_file: "+tokenFile+"}\n")...), 0o600)
			b := e.start()

			tok := oidctest.Sign(t, key, k8sClaims(time.Now(), func(c map[string]any) { c["iss"] = iss.URL }), nil)
			r := call(t, socketClient(e.socket), "GET", "/v1/credentials/demo",
				http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer " + tok}}, nil)
			if r.Status != tt.status || !strings.Contains(r.Err.Error.Message, tt.reason) {
				t.Fatalf("decision: %d %s, want %d %q\n%s", r.Status, r.Body, tt.status, tt.reason, b.logs)
			}
			got := keys.requests()
			if len(got) == 0 {
				t.Fatal("the key host was never asked for the keys")
			}
			for _, a := range got {
				if a != "" {
					t.Errorf("the key host received Authorization %q", a)
				}
			}
			files := readAll(t, e.dir)
			b.stop(syscall.SIGTERM)
			for where, text := range map[string]string{"log": b.logs.String(), "db": files["audit.db"], "wal": files["audit.db-wal"]} {
				if strings.Contains(text, brokerToken) {
					t.Errorf("the %s holds the broker's own token", where)
				}
			}
			if tt.status != 200 {
				expectRefusedAgainstPeer(t, auditRows(t, e.db), map[string]string{tt.name: r.Err.Error.DecisionID})
			}
		})
	}
}
