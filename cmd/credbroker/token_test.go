package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

// The cluster's service-account issuer, as the kubelet names it in the
// projected tokens this test signs. The signing keys reach the broker as
// the JWKS file a cluster admin exports from the API server's
// /openid/v1/jwks (jwks_file mode).
const testIssuer = "https://kubernetes.default.svc.cluster.local"

const tokenPolicies = `policies:
  - name: payments-api-in-its-pod
    effect: allow
    workloads:
      - all: [{kubernetes: {namespace: payments, service_account: api}}, {unix: {uid: 0}}]
    credentials: [demo]
    when: 'identity.claims.pod_name.startsWith("api-") && identity.peer.claims.uid == 0'
  - name: root-reads-other
    effect: allow
    workloads: [{unix: {uid: 0}}]
    credentials: [other]
`

func k8sClaims(now time.Time, mutate func(map[string]any)) map[string]any {
	c := map[string]any{
		"aud": []any{"credbroker"}, "iss": testIssuer, "sub": "system:serviceaccount:payments:api",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      "payments",
			"pod":            map[string]any{"name": "api-5d8f7c9b7-abcde", "uid": "0f9e8d7c-6b5a-4321-8fed-cba987654321"},
			"serviceaccount": map[string]any{"name": "api", "uid": "11111111-2222-3333-4444-555555555555"},
		},
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

// TestKubernetesTokenEndToEnd presents projected service-account tokens
// over the socket: the identity combines the token with the kernel's peer
// credentials, a bad token is refused with a reason and audited against
// the process that sent it, and no token reaches the audit log.
func TestKubernetesTokenEndToEnd(t *testing.T) {
	key := oidctest.NewRSAKey(t, "k1")
	e := newEnv(t, tokenPolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	jwks := e.write("jwks.json", string(jwksOf(t, key)))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, append(cfg, []byte("attestors:\n  kubernetes: {issuer: "+testIssuer+", audiences: [credbroker], jwks_file: "+jwks+"}\n")...), 0o600)
	b := e.start()
	c := socketClient(e.socket)
	now := time.Now()
	bearer := func(tok string) http.Header {
		return http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer " + tok}}
	}

	good := oidctest.Sign(t, key, k8sClaims(now, nil), nil)
	r := call(t, c, "GET", "/v1/credentials/demo", bearer(good), nil)
	if r.Status != 200 {
		t.Fatalf("good token: %d %s", r.Status, r.Body)
	}
	// The peer alone does not satisfy the all: selector.
	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 403 {
		t.Fatalf("no token: %d %s", r.Status, r.Body)
	}
	// A unix selector matches the peer behind a token too: presenting a
	// token never takes away what the process could get without one.
	if r := call(t, c, "GET", "/v1/credentials/other", bearer(good), nil); r.Status != 200 {
		t.Fatalf("token for other: %d %s", r.Status, r.Body)
	}

	bad := []struct{ name, token, reason string }{
		{"expired", oidctest.Sign(t, key, k8sClaims(now, func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		}), nil), "expired"},
		{"wrong audience", oidctest.Sign(t, key, k8sClaims(now, func(c map[string]any) { c["aud"] = []any{"https://kubernetes.default.svc"} }), nil), "audience"},
		{"unknown issuer", oidctest.Sign(t, key, k8sClaims(now, func(c map[string]any) { c["iss"] = "https://evil.example" }), nil), "unknown issuer"},
		{"bad signature", good[:len(good)-8] + "AAAAAAAA", "signature"},
		{"unknown key", oidctest.Sign(t, oidctest.NewRSAKey(t, "k2"), k8sClaims(now, nil), nil), "key"},
	}
	ids := map[string]string{}
	for _, tt := range bad {
		r := call(t, c, "GET", "/v1/credentials/demo", bearer(tt.token), nil)
		if r.Status != 401 || !strings.Contains(r.Err.Error.Message, tt.reason) {
			t.Errorf("%s: %d %s, want 401 mentioning %q", tt.name, r.Status, r.Body, tt.reason)
		}
		ids[tt.name] = r.Err.Error.DecisionID
	}

	// Key rotation: the cluster publishes a new key; tokens it signs verify
	// without a restart.
	next := oidctest.NewRSAKey(t, "k3")
	tmp := jwks + ".new"
	os.WriteFile(tmp, jwksOf(t, key, next), 0o600)
	os.Rename(tmp, jwks)
	rotated := oidctest.Sign(t, next, k8sClaims(now, nil), nil)
	if r := call(t, c, "GET", "/v1/credentials/demo", bearer(rotated), nil); r.Status != 200 {
		t.Fatalf("token of the rotated key: %d %s", r.Status, r.Body)
	}
	files := readAll(t, e.dir)
	b.stop(syscall.SIGTERM)

	rows := auditRows(t, e.db)
	row := rows[r.OK.DecisionID]
	if row.Subject != "system:serviceaccount:payments:api" || row.PeerPID != int64(os.Getpid()) ||
		!strings.Contains(string(row.Input), `"subject":"unix:uid:0"`) || row.Policy != "payments-api-in-its-pod" {
		t.Errorf("allow row: %+v\ninput %s", row, row.Input)
	}
	expectRefusedAgainstPeer(t, rows, ids)
	expectNoTokenSignatures(t, b.logs.String(), files, good, rotated, bad[0].token)
}

// TestAmbientToken: a per-pod sidecar attests callers that present nothing
// with the pod's own projected token, re-read when the kubelet rotates it.
func TestAmbientToken(t *testing.T) {
	key := oidctest.NewRSAKey(t, "k1")
	e := newEnv(t, tokenPolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	jwks := e.write("jwks.json", string(jwksOf(t, key)))
	tokenFile := e.write("token", "not yet a token")
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, append(cfg, []byte("attestors:\n  kubernetes: {issuer: "+testIssuer+", audiences: [credbroker], jwks_file: "+jwks+"}\n  ambient: {token_file: "+tokenFile+"}\n")...), 0o600)
	b := e.start()
	c := socketClient(e.socket)
	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 401 {
		t.Fatalf("malformed ambient token: %d %s", r.Status, r.Body)
	}
	tmp := filepath.Join(e.dir, "token.new")
	os.WriteFile(tmp, []byte(oidctest.Sign(t, key, k8sClaims(time.Now(), nil), nil)+"\n"), 0o600)
	os.Rename(tmp, tokenFile)
	out, errOut, code := credbroker(t, "get", "demo", "--socket", e.socket)
	if code != 0 || !strings.Contains(out, "s3cr3t") {
		t.Fatalf("after the kubelet wrote the token: %d %s %s", code, out, errOut)
	}
	b.stop(syscall.SIGTERM)
}

// jwksOf returns the JWKS document publishing keys.
func jwksOf(t *testing.T, keys ...*oidctest.Key) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, k.JWK())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
