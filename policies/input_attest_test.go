package policies_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/credbroker/credbroker/attest"
	awsattest "github.com/credbroker/credbroker/attest/aws"
	"github.com/credbroker/credbroker/attest/aws/ststest"
	"github.com/credbroker/credbroker/attest/github"
	"github.com/credbroker/credbroker/attest/kubernetes"
	"github.com/credbroker/credbroker/attest/oidc/oidctest"
	"github.com/credbroker/credbroker/attest/spiffe"
	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/policies"
)

// TestInputRoundTripAttestors: the identity every attestor builds from real
// evidence — kernel peer credentials on a Unix socket and on loopback TCP,
// a Kubernetes projected token and a GitHub Actions token from a local OIDC
// issuer, a SPIFFE JWT-SVID and X.509-SVID of a test trust domain, a signed
// sts:GetCallerIdentity request checked by a stand-in STS — and each token
// identity with its unix peer, as the broker records it, comes back from
// DecodeInput(EncodeInput(…)) deeply equal, every number with its Go type.
func TestInputRoundTripAttestors(t *testing.T) {
	ids := map[string]attest.Identity{}
	ids["unix"], ids["unix over tcp"] = unixIdentities(t)
	ids["kubernetes"] = kubernetesIdentity(t)
	ids["github"] = githubIdentity(t)
	ids["spiffe jwt"], ids["spiffe x509"] = spiffeIdentities(t)
	ids["aws assumed role"] = awsIdentity(t, "arn:aws:sts::123456789012:assumed-role/payments/session-1", "AROAEXAMPLEROLEID:session-1", true)
	ids["aws user"] = awsIdentity(t, "arn:aws:iam::123456789012:user/ops/alice", "AIDAEXAMPLEUSERID", false)
	peer := ids["unix"]
	for _, name := range []string{"kubernetes", "github", "spiffe jwt", "aws assumed role"} {
		id := ids[name]
		id.Peer = &peer
		ids[name+" with its peer"] = id
	}
	// The shapes the tests of package policies copy are these.
	if uid, ok := peer.Claims["uid"].(int64); !ok || uid != int64(os.Getuid()) {
		t.Fatalf("the unix attestor's uid claim is %#v, want int64 %d", peer.Claims["uid"], os.Getuid())
	}
	if exp, ok := ids["spiffe jwt"].Claims[spiffe.ClaimExpiry].(int64); !ok || exp == 0 {
		t.Fatalf("the spiffe attestor's expiry claim is %#v, want an int64", ids["spiffe jwt"].Claims[spiffe.ClaimExpiry])
	}
	now := time.Now() // with a monotonic reading and the local zone, as the broker's clock gives it
	for name, id := range ids {
		t.Run(name, func(t *testing.T) {
			in := policies.Input{Identity: id, Request: policies.Request{Channel: "socket", Credential: "demo", Method: "GET", Path: "/v1/credentials/demo"}, Now: now}
			b, err := policies.EncodeInput(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := policies.DecodeInput(b)
			if err != nil {
				t.Fatalf("DecodeInput(%s): %v", b, err)
			}
			if !got.Now.Equal(now) || got.Now.Location() != time.UTC {
				t.Errorf("now = %v, want %v in UTC", got.Now, now)
			}
			got.Now, in.Now = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, in) {
				t.Errorf("stored as %s\ndecoded %#v\n   want %#v", b, got.Identity, in.Identity)
			}
		})
	}
}

// unixIdentities attests this process through the unix attestor, on a
// Unix socket and on a loopback TCP connection.
func unixIdentities(t *testing.T) (socket, tcp attest.Identity) {
	t.Helper()
	a, err := unixattest.New(unixattest.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: path})
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	ln, err := a.Listen(ul)
	if err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if socket, err = a.Attest(context.Background(), server); err != nil {
		t.Fatal(err)
	}

	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	tc, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	ts, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if tcp, err = a.AttestTCP(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	return socket, tcp
}

// kubernetesIdentity attests a projected service-account token, shaped as
// the kubelet issues it, signed by a local issuer the attestor discovers.
func kubernetesIdentity(t *testing.T) attest.Identity {
	t.Helper()
	key := oidctest.NewRSAKey(t, "k1")
	iss := oidctest.NewIssuer(t, key)
	a, err := kubernetes.New(context.Background(), kubernetes.Config{Issuer: iss.URL, Audiences: []string{"credbroker"}, HTTPClient: iss.Client(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := oidctest.Sign(t, key, map[string]any{
		"aud": []any{"credbroker", "vault"}, "iss": iss.URL, "sub": "system:serviceaccount:payments:api",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      "payments",
			"pod":            map[string]any{"name": "api-5d8f7c9b7-abcde", "uid": "0f9e8d7c-6b5a-4321-8fed-cba987654321"},
			"serviceaccount": map[string]any{"name": "api", "uid": "11111111-2222-3333-4444-555555555555"},
		},
	}, nil)
	id, err := a.Attest(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// githubIdentity attests a GitHub Actions OIDC token, shaped as GitHub
// documents it, from a local issuer standing in for
// token.actions.githubusercontent.com.
func githubIdentity(t *testing.T) attest.Identity {
	t.Helper()
	key := oidctest.NewRSAKey(t, "gh")
	iss := oidctest.NewIssuer(t, key)
	a, err := github.New(context.Background(), github.Config{Issuer: iss.URL, Audiences: []string{"credbroker"}, HTTPClient: iss.Client(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := oidctest.Sign(t, key, map[string]any{
		"sub": "repo:acme/payments:environment:prod", "aud": "credbroker", "iss": iss.URL,
		"environment": "prod", "ref": "refs/heads/main", "ref_type": "branch", "sha": "ffac537e6cbbf934b08745a378932722df287a53",
		"repository": "acme/payments", "repository_id": "74", "repository_owner": "acme", "repository_owner_id": "65",
		"run_id": "987654321", "actor": "octocat", "event_name": "push",
		"workflow_ref":     "acme/payments/.github/workflows/ci.yml@refs/heads/main",
		"job_workflow_ref": "acme/automation/.github/workflows/deploy.yml@refs/heads/main",
		"nbf":              now.Add(-5 * time.Second).Unix(), "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(),
	}, nil)
	id, err := a.Attest(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// spiffeIdentities attests a JWT-SVID and an X.509-SVID of a test trust
// domain whose bundle (a CA and a JWT key, as a SPIRE server publishes
// them) the attestor reads from a file.
func spiffeIdentities(t *testing.T) (jwtID, x509ID attest.Identity) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	workload := spiffeid.RequireFromPath(td, "/ns/payments/sa/api")
	caKey, jwtKey := newECKey(t), newECKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"SPIFFE test CA"}}, URIs: []*url.URL{td.ID().URL()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	ca := createCert(t, caTmpl, caTmpl, caKey, caKey)
	bundle := spiffebundle.New(td)
	bundle.AddX509Authority(ca)
	if err := bundle.AddJWTAuthority("key-1", jwtKey.Public()); err != nil {
		t.Fatal(err)
	}
	data, err := bundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bundle.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := spiffe.New(context.Background(), spiffe.Config{TrustDomain: "example.org", Audiences: []string{"credbroker"}, BundleFile: path, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })

	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: jwtKey, KeyID: "key-1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(map[string]any{"sub": workload.String(), "aud": []string{"credbroker"}, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if jwtID, err = a.Attest(context.Background(), tok); err != nil {
		t.Fatal(err)
	}

	leafKey := newECKey(t)
	leaf := createCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), URIs: []*url.URL{workload.URL()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, leafKey, caKey)
	if x509ID, err = a.AttestCertificate([]*x509.Certificate{leaf}); err != nil {
		t.Fatal(err)
	}
	return jwtID, x509ID
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func createCert(t *testing.T, tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// awsIdentity attests a signed sts:GetCallerIdentity request, passed
// through JSON as the socket API receives it, which a stand-in STS checks
// and answers for principal arn.
func awsIdentity(t *testing.T, arn, userID string, session bool) attest.Identity {
	t.Helper()
	sts := ststest.New(t)
	keyID, secret, token := sts.AddKey(arn, userID, "123456789012", session)
	a, err := awsattest.New(awsattest.Config{ServerID: "credbroker.test", STSEndpoint: sts.Server.URL, HTTPClient: sts.Server.Client(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := awsattest.Sign(context.Background(), credentials.NewStaticCredentialsProvider(keyID, secret, token), "credbroker.test", "us-east-1", sts.Server.URL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(signed)
	if err != nil {
		t.Fatal(err)
	}
	var r awsattest.Request
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	id, err := a.Attest(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
