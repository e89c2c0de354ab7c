package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const spiffePolicies = `policies:
  - name: payments-workloads
    effect: allow
    workloads: [{spiffe: {id: "spiffe://example.org/ns/payments/*"}}]
    credentials: [demo]
    when: 'identity.claims.trust_domain == "example.org" && identity.peer.claims.uid == 0'
`

// svidKey is a JWT authority of the trust domain, standing in for a SPIRE
// server's JWT signing key.
type svidKey struct {
	kid string
	key *ecdsa.PrivateKey
}

func newSVIDKey(t *testing.T, kid string) svidKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return svidKey{kid: kid, key: k}
}

// sign returns a JWT-SVID of claims signed the way a SPIRE server signs
// them: ES256, the authority's kid, typ JWT.
func (k svidKey) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.key, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func svidClaims(now time.Time, mutate func(map[string]any)) map[string]any {
	c := map[string]any{
		"sub": "spiffe://example.org/ns/payments/api", "aud": []any{"credbroker"},
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

// spiffeBundle returns a JWKS-format SPIFFE bundle of example.org holding
// keys as its JWT authorities, as "spire-server bundle show -format spiffe"
// prints it.
func spiffeBundle(t *testing.T, keys ...svidKey) string {
	t.Helper()
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString("example.org"))
	for _, k := range keys {
		if err := b.AddJWTAuthority(k.kid, k.key.Public()); err != nil {
			t.Fatal(err)
		}
	}
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestSPIFFEJWTSVIDEndToEnd presents JWT-SVIDs over the socket: the SPIFFE
// ID is the subject, the process that presented it is recorded, bad SVIDs
// are refused with a reason and audited against that process, a bundle
// rotated on disk takes effect without a restart, and no token reaches the
// log or the audit database.
func TestSPIFFEJWTSVIDEndToEnd(t *testing.T) {
	key := newSVIDKey(t, "jwt-1")
	e := newEnv(t, spiffePolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	bundle := e.write("bundle.jwks", spiffeBundle(t, key))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, append(cfg, []byte("attestors:\n  spiffe: {trust_domain: example.org, audiences: [credbroker], bundle_file: "+bundle+"}\n")...), 0o600)
	b := e.start()
	c := socketClient(e.socket)
	now := time.Now()
	bearer := func(tok string) http.Header {
		return http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer " + tok}}
	}

	good := key.sign(t, svidClaims(now, nil))
	r := call(t, c, "GET", "/v1/credentials/demo", bearer(good), nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), "s3cr3t") {
		t.Fatalf("good SVID: %d %s\n%s", r.Status, r.Body, b.logs)
	}
	// The peer alone is not a SPIFFE identity.
	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 403 {
		t.Fatalf("no SVID: %d %s", r.Status, r.Body)
	}
	// A valid SVID of a workload outside the selected path is denied, not
	// refused: it attests, and the policy says no.
	billing := key.sign(t, svidClaims(now, func(c map[string]any) { c["sub"] = "spiffe://example.org/ns/billing/api" }))
	denied := call(t, c, "GET", "/v1/credentials/demo", bearer(billing), nil)
	if denied.Status != 403 {
		t.Fatalf("SVID of another namespace: %d %s", denied.Status, denied.Body)
	}

	bad := []struct{ name, token, reason string }{
		{"expired", key.sign(t, svidClaims(now, func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		})), "token expired"},
		{"wrong audience", key.sign(t, svidClaims(now, func(c map[string]any) { c["aud"] = []any{"someone-else"} })), "wrong audience"},
		{"another trust domain", key.sign(t, svidClaims(now, func(c map[string]any) { c["sub"] = "spiffe://evil.org/ns/payments/api" })), "trust domain evil.org is not trusted"},
		{"unknown key", newSVIDKey(t, "jwt-1").sign(t, svidClaims(now, nil)), "invalid signature"},
		{"unknown kid", newSVIDKey(t, "jwt-9").sign(t, svidClaims(now, nil)), "unknown signing key"},
		{"bad signature", good[:len(good)-8] + "AAAAAAAA", "invalid signature"},
	}
	ids := map[string]string{}
	for _, tt := range bad {
		r := call(t, c, "GET", "/v1/credentials/demo", bearer(tt.token), nil)
		if r.Status != 401 || !strings.Contains(r.Err.Error.Message, tt.reason) {
			t.Errorf("%s: %d %s, want 401 mentioning %q", tt.name, r.Status, r.Body, tt.reason)
		}
		ids[tt.name] = r.Err.Error.DecisionID
	}

	// Rotation: the bundle file is replaced (write, rename) by one holding
	// only a new authority. SVIDs of the new key verify without a restart;
	// fresh SVIDs of the removed key no longer do.
	next := newSVIDKey(t, "jwt-2")
	tmp := bundle + ".new"
	os.WriteFile(tmp, []byte(spiffeBundle(t, next)), 0o600)
	os.Rename(tmp, bundle)
	rotated := next.sign(t, svidClaims(now, nil))
	rr := call(t, c, "GET", "/v1/credentials/demo", bearer(rotated), nil)
	if rr.Status != 200 {
		t.Fatalf("SVID of the rotated key: %d %s\n%s", rr.Status, rr.Body, b.logs)
	}
	retired := key.sign(t, svidClaims(now, nil))
	if r := call(t, c, "GET", "/v1/credentials/demo", bearer(retired), nil); r.Status != 401 || !strings.Contains(r.Err.Error.Message, "unknown signing key") {
		t.Errorf("SVID of the removed key: %d %s, want 401 unknown signing key", r.Status, r.Body)
	}
	files := readAll(t, e.dir)
	b.stop(syscall.SIGTERM)

	rows := auditRows(t, e.db)
	for _, id := range []string{r.OK.DecisionID, rr.OK.DecisionID} {
		row := rows[id]
		if row.Decision != "allow" || row.Subject != "spiffe://example.org/ns/payments/api" || row.Attestor != "spiffe" ||
			row.PeerPID != int64(os.Getpid()) || row.Policy != "payments-workloads" ||
			!strings.Contains(string(row.Input), `"subject":"unix:uid:0"`) {
			t.Errorf("allow row: %+v\ninput %s", row, row.Input)
		}
	}
	if row := rows[denied.Err.Error.DecisionID]; row.Decision != "deny" || row.Subject != "spiffe://example.org/ns/billing/api" || row.PeerPID != int64(os.Getpid()) {
		t.Errorf("deny row: %+v", row)
	}
	expectRefusedAgainstPeer(t, rows, ids)
	expectNoTokenSignatures(t, b.logs.String(), files, good, billing, rotated, retired, bad[0].token, bad[2].token)
}
