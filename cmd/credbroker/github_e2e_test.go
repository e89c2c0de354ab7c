package main

import (
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest/oidc"
	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

const githubPolicies = `policies:
  - name: payments-main
    effect: allow
    workloads: [{github: {repository: acme/payments, repository_owner_id: "1234", ref: refs/heads/main}}]
    credentials: [demo]
    when: 'identity.claims.ref == "refs/heads/main"'
`

// actionsClaims returns the claims of a push-triggered job's token as
// GitHub sends them (ids are strings), for issuer iss, valid for 5 minutes.
func actionsClaims(iss string, now time.Time, mutate func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss": iss, "aud": "credbroker", "sub": "repo:acme/payments:ref:refs/heads/main",
		"iat": now.Unix(), "nbf": now.Add(-5 * time.Second).Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"jti":                 "3f0e5b1c-7d2a-4c8e-9b6f-1a2b3c4d5e6f",
		"repository":          "acme/payments",
		"repository_id":       "5678",
		"repository_owner":    "acme",
		"repository_owner_id": "1234",
		"ref":                 "refs/heads/main",
		"ref_type":            "branch",
		"sha":                 "0123456789abcdef0123456789abcdef01234567",
		"environment":         "prod",
		"workflow_ref":        "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
		"job_workflow_ref":    "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
		"event_name":          "push",
		"run_id":              "9876543210",
		"actor":               "octocat",
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

// TestGitHubActionsTokenEndToEnd presents GitHub Actions OIDC tokens over
// the socket. GitHub's token.actions.githubusercontent.com is stood in for
// by a local TLS issuer (real RSA keys, JWKS over HTTPS) that the broker
// trusts through SSL_CERT_FILE. The workflow's subject is recorded with the
// process that presented the token, another repository is denied, bad
// tokens are refused with a reason, the issuer's key rotation is picked up
// without a restart, and no token reaches the log or the audit database.
func TestGitHubActionsTokenEndToEnd(t *testing.T) {
	key := oidctest.NewRSAKey(t, "cc413527-173f-5a05-976e-9c52b1d7b431")
	iss := oidctest.NewIssuer(t, key)
	e := newEnv(t, githubPolicies, e2eCredentials())
	e.write("secrets/demo", "s3cr3t")
	ca := e.write("issuer-ca.pem", string(iss.CAPEM()))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, append(cfg, []byte("attestors:\n  github: {issuer: \""+iss.URL+"\", audiences: [credbroker], jwks_url: \""+iss.URL+oidctest.JWKSPath+"\"}\n")...), 0o600)
	e.env = []string{"SSL_CERT_FILE=" + ca}
	b := e.start()
	c := socketClient(e.socket)
	now := time.Now()
	bearer := func(tok string) http.Header {
		return http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer " + tok}}
	}

	good := oidctest.Sign(t, key, actionsClaims(iss.URL, now, nil), nil)
	// Keys made before the first fetch, so that generating them does not
	// stretch the refetch interval checked below.
	attacker, unknown := oidctest.NewRSAKey(t, key.ID), oidctest.NewRSAKey(t, "no-such-key")
	firstCall := time.Now() // the first fetch is after this
	r := call(t, c, "GET", "/v1/credentials/demo", bearer(good), nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), "s3cr3t") {
		t.Fatalf("good token: %d %s\n%s", r.Status, r.Body, b.logs)
	}
	// The keys were fetched just now (lastFetch bounds it from above); the
	// next unknown kid may refetch them once oidc.DefaultRefetchInterval has
	// passed.
	lastFetch := time.Now()
	if n := iss.JWKSRequests.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times for the first token, want 1", n)
	}
	// The peer alone is not a workflow.
	if r := call(t, c, "GET", "/v1/credentials/demo", nil, nil); r.Status != 403 {
		t.Fatalf("no token: %d %s", r.Status, r.Body)
	}
	// Any repository can get a token from GitHub's issuer: a valid token of
	// another repository attests, and the policy denies it.
	other := oidctest.Sign(t, key, actionsClaims(iss.URL, now, func(c map[string]any) {
		c["sub"], c["repository"], c["repository_id"] = "repo:acme/other:ref:refs/heads/main", "acme/other", "5679"
		c["workflow_ref"] = "acme/other/.github/workflows/deploy.yml@refs/heads/main"
	}), nil)
	denied := call(t, c, "GET", "/v1/credentials/demo", bearer(other), nil)
	if denied.Status != 403 || denied.Err.Error.Code == "" {
		t.Fatalf("token of another repository: %d %s", denied.Status, denied.Body)
	}

	bad := []struct{ name, token, reason string }{
		{"expired", oidctest.Sign(t, key, actionsClaims(iss.URL, now, func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-20*time.Minute).Unix(), now.Add(-20*time.Minute).Unix(), now.Add(-10*time.Minute).Unix()
		}), nil), "token expired"},
		{"wrong audience", oidctest.Sign(t, key, actionsClaims(iss.URL, now, func(c map[string]any) { c["aud"] = "https://github.com/acme" }), nil), "wrong audience"},
		{"unknown issuer", oidctest.Sign(t, key, actionsClaims("https://token.actions.githubusercontent.com", now, nil), nil), "unknown issuer"},
		{"bad signature", good[:len(good)-8] + "AAAAAAAA", "bad signature"},
		{"attacker key with the real kid", oidctest.Sign(t, attacker, actionsClaims(iss.URL, now, nil), nil), "bad signature"},
		{"unknown key", oidctest.Sign(t, unknown, actionsClaims(iss.URL, now, nil), nil), "unknown signing key"},
	}
	ids := map[string]string{}
	for _, tt := range bad {
		r := call(t, c, "GET", "/v1/credentials/demo", bearer(tt.token), nil)
		if r.Status != 401 || !strings.Contains(r.Err.Error.Message, tt.reason) {
			t.Errorf("%s: %d %s, want 401 mentioning %q", tt.name, r.Status, r.Body, tt.reason)
		}
		ids[tt.name] = r.Err.Error.DecisionID
	}
	// Made-up key ids do not make the broker hammer the issuer: within the
	// refetch interval of the first fetch, the unknown kid fetched nothing.
	// Where the requests above took longer than the interval (a loaded
	// machine), the broker may have refetched, once.
	fetches := iss.JWKSRequests.Load()
	if within := time.Since(firstCall) < oidc.DefaultRefetchInterval; within && fetches != 1 {
		t.Errorf("JWKS fetched %d times after an unknown kid within the refetch interval, want 1", fetches)
	} else if !within {
		t.Logf("the requests took over %v; JWKS fetched %d times", oidc.DefaultRefetchInterval, fetches)
		if fetches > 2 {
			t.Errorf("JWKS fetched %d times for one unknown kid, want at most 2", fetches)
		}
		lastFetch = time.Now()
	}

	// Rotation: GitHub publishes a new key and drops the old one. Once the
	// refetch interval has passed, the first token of the new kid makes the
	// broker refetch the JWKS, without a restart.
	next := oidctest.NewRSAKey(t, "a7c0b6e2-5f4d-4b8a-9c3e-2d1f0e9a8b7c")
	iss.Publish(next)
	time.Sleep(time.Until(lastFetch.Add(oidc.DefaultRefetchInterval + 500*time.Millisecond)))
	rotated := oidctest.Sign(t, next, actionsClaims(iss.URL, time.Now(), nil), nil)
	rr := call(t, c, "GET", "/v1/credentials/demo", bearer(rotated), nil)
	if rr.Status != 200 {
		t.Fatalf("token of the rotated key: %d %s\n%s", rr.Status, rr.Body, b.logs)
	}
	if n := iss.JWKSRequests.Load(); n != fetches+1 {
		t.Errorf("JWKS fetched %d times after the rotation, want %d", n, fetches+1)
	}
	// A fresh token of the dropped key no longer verifies.
	retired := oidctest.Sign(t, key, actionsClaims(iss.URL, time.Now(), func(c map[string]any) { c["jti"] = "retired" }), nil)
	if r := call(t, c, "GET", "/v1/credentials/demo", bearer(retired), nil); r.Status != 401 || !strings.Contains(r.Err.Error.Message, "unknown signing key") {
		t.Errorf("token of the dropped key: %d %s, want 401 unknown signing key", r.Status, r.Body)
	}
	files := readAll(t, e.dir)
	b.stop(syscall.SIGTERM)

	rows := auditRows(t, e.db)
	for _, id := range []string{r.OK.DecisionID, rr.OK.DecisionID} {
		row := rows[id]
		if row.Decision != "allow" || row.Subject != "repo:acme/payments:ref:refs/heads/main" || row.Attestor != "github" ||
			row.PeerPID != int64(os.Getpid()) || row.Policy != "payments-main" ||
			!strings.Contains(string(row.Input), `"subject":"unix:uid:0"`) || !strings.Contains(string(row.Input), `"repository_owner_id":"1234"`) {
			t.Errorf("allow row: %+v\ninput %s", row, row.Input)
		}
	}
	if row := rows[denied.Err.Error.DecisionID]; row.Decision != "deny" || row.Subject != "repo:acme/other:ref:refs/heads/main" ||
		row.Attestor != "github" || row.PeerPID != int64(os.Getpid()) {
		t.Errorf("deny row: %+v", row)
	}
	expectRefusedAgainstPeer(t, rows, ids)
	expectNoTokenSignatures(t, b.logs.String(), files, good, other, rotated, retired, bad[0].token, bad[1].token)

	// explain dry-runs the same decision from the claims alone.
	out, errOut, code := credbroker(t, "explain", "--config", e.config, "--credential", "demo",
		"--subject", "repo:acme/payments:ref:refs/heads/main", "--attestor", "github",
		"--claim", "repository=acme/payments", "--claim", "repository_owner_id=1234", "--claim", "ref=refs/heads/main")
	if code != 0 || !strings.Contains(out, "policy:     payments-main") {
		t.Errorf("explain: exit %d\n%s%s", code, out, errOut)
	}
}
