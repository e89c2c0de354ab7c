package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

// adminAddr finds the admin listener's address in the broker's log.
func adminAddr(t *testing.T, b *brokerProc) string {
	t.Helper()
	re := regexp.MustCompile(`admin listening.*addr=?"?:?"?([0-9.]+:[0-9]+)`)
	deadline := time.Now().Add(hangBound)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(b.logs.String()); m != nil {
			return m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no admin address in log:\n%s", b.logs)
	return ""
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCanaryNeverLeaks pushes a canary secret, and a canary bearer token,
// through every path — success and each refusal — and then searches the
// broker's logs, every error body, the metrics, the audit database with its
// WAL and checkpoint, and the audit CLI's output for them.
func TestCanaryNeverLeaks(t *testing.T) {
	const secret = "CANARY-SECRET-7f3a9c"
	const token = "CANARY-TOKEN-52be10"
	e := newEnv(t, e2ePolicies, e2eCredentials()+"  - {name: gone, static: {file: secrets/gone}}\n")
	e.write("secrets/demo", secret+"\n")
	e.write("secrets/gone", secret)
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), `admin: ""`, `admin: "127.0.0.1:0"`, 1)), 0o600)
	// Grant "gone" too, so the provider failure is reached.
	e.write("policies.yaml", strings.Replace(e2ePolicies, "[demo, other, forbidden]", "[demo, other, forbidden, gone]", 1))
	// A kubernetes attestor, so that real verification failures (their
	// causes now logged) are reached with tokens that carry the canary.
	key := oidctest.NewRSAKey(t, "k1")
	jwks := e.write("jwks.json", string(jwksOf(t, key)))
	cfg, _ = os.ReadFile(e.config)
	os.WriteFile(e.config, append(cfg, []byte("attestors:\n  kubernetes: {issuer: "+testIssuer+", audiences: [credbroker], jwks_file: "+jwks+"}\n")...), 0o600)
	now := time.Now()
	canaryClaims := func(mutate func(map[string]any)) map[string]any {
		return k8sClaims(now, func(c map[string]any) {
			c["sub"] = "system:serviceaccount:payments:" + token
			if mutate != nil {
				mutate(c)
			}
		})
	}
	signed := []string{
		oidctest.Sign(t, key, canaryClaims(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() }), nil),
		oidctest.Sign(t, key, canaryClaims(func(c map[string]any) { c["aud"] = []any{token} }), nil),
		oidctest.Sign(t, oidctest.NewRSAKey(t, "k2"), canaryClaims(nil), nil),
	}
	b := e.start()
	admin := adminAddr(t, b)
	c := socketClient(e.socket)

	withToken := http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer " + token}}
	r := call(t, c, "GET", "/v1/credentials/demo", nil, nil)
	if r.Status != 200 || r.OK.Data["value"] != secret {
		t.Fatalf("success path: %d %s", r.Status, r.Body)
	}
	os.Remove(filepath.Join(e.dir, "secrets/gone")) // the provider now fails

	var bodies []string
	for _, req := range []struct {
		method, path string
		header       http.Header
		body         string
	}{
		{"GET", "/v1/credentials/demo", withToken, ""},
		{"GET", "/v1/credentials/demo", http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer a." + token + ".c"}}, ""},
		{"GET", "/v1/credentials/demo", http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Basic " + token}}, ""},
		{"GET", "/v1/credentials/unlisted", nil, ""},
		{"GET", "/v1/credentials/forbidden", nil, ""},
		{"GET", "/v1/credentials/nope", nil, ""},
		{"GET", "/v1/credentials/gone", nil, ""},
		{"GET", "/v1/credentials/demo", http.Header{"Authorization": {"Bearer " + token}}, ""},
		{"POST", "/v1/credentials/demo", withToken, `{"aws_iam": "` + secret + `"`},
		{"POST", "/v1/credentials/demo", withToken, `{"` + secret + `": 1}`},
		{"POST", "/v1/credentials/demo", withToken, `{"aws_iam": {"body": "` + secret + `"}}`},
		{"POST", "/v1/credentials/demo", withToken, strings.Repeat(secret, 5000)},
		{"GET", "/v1/credentials/demo", http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer " + signed[0]}}, ""},
		{"GET", "/v1/credentials/demo", http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer " + signed[1]}}, ""},
		{"GET", "/v1/credentials/demo", http.Header{"Credbroker-Request": {"1"}, "Authorization": {"Bearer " + signed[2]}}, ""},
	} {
		var body io.Reader
		if req.body != "" {
			body = strings.NewReader(req.body)
		}
		r := call(t, c, req.method, req.path, req.header, body)
		if r.Status == 200 {
			t.Fatalf("%s %s: unexpectedly granted", req.method, req.path)
		}
		bodies = append(bodies, string(r.Body))
	}
	if r := call(t, c, "GET", "/v1/credentials/gone", nil, nil); r.Status != 503 {
		t.Fatalf("provider failure: status %d, want 503", r.Status)
	}
	// Each refusal's internal cause is logged: the provider's at warn.
	var causes, warned int
	for _, line := range strings.Split(b.logs.String(), "\n") {
		if strings.Contains(line, `"msg":"decision"`) && strings.Contains(line, `"error":`) {
			causes++
			if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, `"credential":"gone"`) {
				warned++
			}
		}
	}
	if causes < 4 || warned == 0 {
		t.Errorf("%d decision lines with a cause (%d at warn for the provider), want the token and provider failures'", causes, warned)
	}
	_, metrics := httpGet(t, "http://"+admin+"/metrics")
	if !strings.Contains(metrics, `credbroker_decisions_total{channel="socket",result="allow"} 1`) {
		t.Errorf("metrics lack the allow count:\n%s", metrics)
	}
	export, _, _ := credbroker(t, "audit", "export", "--db", e.db)
	query, _, _ := credbroker(t, "audit", "query", "--db", e.db, "--format", "csv")
	files := readAll(t, e.dir) // while running: the WAL holds the newest rows
	b.stop(syscall.SIGTERM)

	places := map[string]string{
		"broker log":   b.logs.String(),
		"error bodies": strings.Join(bodies, "\n"),
		"metrics":      metrics,
		"audit export": export,
		"audit query":  query,
	}
	for name, text := range files {
		places["running: "+name] = text
	}
	for name, text := range readAll(t, e.dir) {
		places["stopped: "+name] = text
	}
	if places["running: audit.db-wal"] == "" || places["stopped: checkpoint.json"] == "" {
		t.Fatalf("expected a WAL while running and a checkpoint after stopping; have %v", len(places))
	}
	for where, text := range places {
		canaries := []string{secret, token}
		for _, tok := range signed {
			canaries = append(canaries, tok, tok[strings.LastIndex(tok, ".")+1:])
		}
		for _, canary := range canaries {
			if strings.Contains(text, canary) {
				t.Errorf("%s leaks %s", where, canary)
			}
		}
	}
	if !strings.Contains(export, "hmac-sha256:") {
		t.Error("the issued secret has no fingerprint in the audit log")
	}
}

// readAll reads the audit database, its WAL and the checkpoint in dir.
func readAll(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range []string{"audit.db", "audit.db-wal", "checkpoint.json"} {
		if raw, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			out[f] = string(raw)
		}
	}
	return out
}
