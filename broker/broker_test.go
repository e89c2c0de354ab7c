package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	k8sattest "github.com/credbroker/credbroker/attest/kubernetes"
	"github.com/credbroker/credbroker/attest/oidc/oidctest"
	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/lease"
	"github.com/credbroker/credbroker/providers/static"
)

const testPolicies = `policies:
  - name: self-reads-demo
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [demo]
    when: 'request.channel == "socket"'
    ttl: 10m
  - name: payments-reads-demo
    effect: allow
    workloads: [{all: [{kubernetes: {namespace: payments}}, {unix: {uid: self}}]}]
    credentials: [demo]
  - name: never-prod
    effect: deny
    workloads: [{unix: {uid: self}}]
    credentials: ["prod-*"]
`

// harness is a broker wired with the real unix attestor, real policies, a
// real static provider and a real audit log, serving a real Unix socket.
type harness struct {
	broker *broker.Broker
	peer   *unixattest.Attestor
	reg    *prometheus.Registry
	log    *audit.Log
	db     string
	socket string
	client *http.Client
}

func newHarness(tb testing.TB, tokens ...broker.TokenRoute) *harness {
	return newHarnessCache(tb, 0, tokens...)
}

// newHarnessCache is newHarness with a token cache TTL (negative: off).
func newHarnessCache(tb testing.TB, cacheTTL time.Duration, tokens ...broker.TokenRoute) *harness {
	tb.Helper()
	return newHarnessWith(tb, cacheTTL, nil, tokens...)
}

// demoProvider makes demo's provider from the static one and the harness
// (its audit log open).
type demoProvider func(tb testing.TB, plain broker.Provider, h *harness) broker.Provider

// leased puts demo's provider under a lease manager: it then mints a
// credential once per workload and serves cached hits.
func leased(tb testing.TB, plain broker.Provider, h *harness) broker.Provider {
	store, err := lease.OpenStore(context.Background(), filepath.Join(tb.TempDir(), "leases.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	m, err := lease.New(lease.Config{Store: store, Audit: h.log, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	p, err := m.Add("demo", plain)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// newHarnessWith is newHarness with a token cache TTL and, when demo is
// set, demo's provider made by it.
func newHarnessWith(tb testing.TB, cacheTTL time.Duration, demoOf demoProvider, tokens ...broker.TokenRoute) *harness {
	tb.Helper()
	dir := tb.TempDir()
	secret := filepath.Join(dir, "demo")
	if err := os.WriteFile(secret, []byte("s3cr3t\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(testPolicies)}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{db: filepath.Join(dir, "audit.db"), reg: prometheus.NewRegistry()}
	h.log, err = audit.Open(ctx, audit.Config{Path: h.db})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.log.Run(ctx) }()
	peer, err := unixattest.New(unixattest.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	h.peer = peer
	plain, err := static.New(static.Config{Name: "demo", File: secret, TTL: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	var demo broker.Provider = plain
	if demoOf != nil {
		demo = demoOf(tb, plain, h)
	}
	h.broker, err = broker.New(broker.Config{
		Peer:          peer,
		Tokens:        tokens,
		TokenCacheTTL: cacheTTL,
		Credentials:   map[string]broker.Provider{"demo": demo, "prod-db": plain},
		Kinds:         map[string]string{"demo": static.Kind, "prod-db": static.Kind},
		Policies:      set,
		Audit:         h.log,
		Registerer:    h.reg,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "cbt-")
	if err != nil {
		tb.Fatal(err)
	}
	h.socket = filepath.Join(sockDir, "s")
	ln, err := broker.ListenUnix(h.socket, 0o600, -1)
	if err != nil {
		tb.Fatal(err)
	}
	pln, err := peer.Listen(ln)
	if err != nil {
		tb.Fatal(err)
	}
	srv := h.broker.NewSocketServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	go func() { _ = srv.Serve(pln) }()
	h.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", h.socket)
		},
		MaxIdleConnsPerHost: 256,
	}}
	tb.Cleanup(func() {
		srv.Close()
		ln.Close()
		cancel()
		<-done
		h.log.Close()
		os.RemoveAll(sockDir)
	})
	return h
}

func (h *harness) get(tb testing.TB, name string) (int, string) {
	req, _ := http.NewRequest("GET", "http://credbroker/v1/credentials/"+name, nil)
	req.Header.Set(broker.RequestHeader, "1")
	resp, err := h.client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPipelineLeased checks a provider under the lease manager: decisions
// for one workload share one issued credential, recorded once as a lease
// issue, and each decision still has its own row naming the lease.
func TestPipelineLeased(t *testing.T) {
	h := newHarnessWith(t, 0, leased)
	var leases []string
	for range 3 {
		code, body := h.get(t, "demo")
		var r struct {
			LeaseID string `json:"lease_id"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &r) != nil {
			t.Fatalf("%d %s", code, body)
		}
		leases = append(leases, r.LeaseID)
	}
	if leases[0] == "" || leases[1] != leases[0] || leases[2] != leases[0] {
		t.Fatalf("leases %q, want one cached credential", leases)
	}
	var rows []string
	err := audit.Query(context.Background(), h.db, audit.Filter{Lease: leases[0]}, func(r *audit.Record) error {
		rows = append(rows, r.Kind+" "+r.Decision)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows, ",") != "decision allow,lease issue,decision allow,decision allow" {
		t.Errorf("rows of the lease: %q", rows)
	}
}

// tokenRecorder is a provider that keeps the token it was given.
type tokenRecorder struct {
	broker.Provider
	tokens chan string
}

func (r tokenRecorder) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	r.tokens <- string(req.Token.Reveal())
	return r.Provider.Credential(ctx, req)
}

// TestProviderGetsVerifiedToken checks that a provider is given the bearer
// token the caller was attested by (for Vault's pass_caller_token and AWS
// web identity), and no token when the caller presented none.
func TestProviderGetsVerifiedToken(t *testing.T) {
	route, token := kubernetesRoute(t)
	tokens := make(chan string, 1)
	h := newHarnessWith(t, 0, func(_ testing.TB, plain broker.Provider, _ *harness) broker.Provider {
		return tokenRecorder{plain, tokens}
	}, route)
	for _, tt := range []struct {
		name, bearer string
	}{{"bearer token", token}, {"peer credentials only", ""}} {
		req, _ := http.NewRequest("GET", "http://credbroker/v1/credentials/demo", nil)
		req.Header.Set(broker.RequestHeader, "1")
		if tt.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tt.bearer)
		}
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", tt.name, resp.StatusCode)
		}
		if got := <-tokens; got != tt.bearer {
			t.Errorf("%s: the provider got token %q, want %q", tt.name, got, tt.bearer)
		}
	}
}

func TestPipeline(t *testing.T) {
	h := newHarness(t)
	for _, tt := range []struct {
		name   string
		status int
		want   string
	}{
		{"demo", 200, `"value":"s3cr3t"`},
		{"prod-db", 403, `denied by policy never-prod`},
		{"missing", 404, `no credential named \"missing\"`},
	} {
		status, body := h.get(t, tt.name)
		if status != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("%s: %d %s, want %d %s", tt.name, status, body, tt.status, tt.want)
		}
	}
	res, err := audit.Verify(context.Background(), h.db, audit.VerifyOptions{})
	if err != nil || res.Decisions != 3 {
		t.Fatalf("verify: %v %+v", err, res)
	}
}

// TestNoGrantWithoutRecord: once the audit log is closed nothing can be
// committed, and Decide hands out nothing.
func TestNoGrantWithoutRecord(t *testing.T) {
	h := newHarness(t)
	if status, _ := h.get(t, "demo"); status != 200 {
		t.Fatalf("status %d", status)
	}
	h.log.Close()
	status, body := h.get(t, "demo")
	if status != 503 || strings.Contains(body, "s3cr3t") {
		t.Fatalf("after the log closed: %d %s", status, body)
	}
	var e *broker.Error
	_, err := h.broker.Decide(context.Background(), &broker.Request{Credential: "demo", Channel: broker.ChannelSocket})
	if !errors.As(err, &e) || e.Kind != broker.KindUnavailable {
		t.Fatalf("Decide: %v", err)
	}
	if n := h.metric(t, "credbroker_audit_failures_total"); n != 2 {
		t.Errorf("credbroker_audit_failures_total = %v after 2 refusals by a closed store, want 2", n)
	}
}

// TestCallerGoneIsNotAStoreFailure: a caller that hangs up while its record
// is on its way is refused, but the store did not fail, and
// credbroker_audit_failures_total says so.
func TestCallerGoneIsNotAStoreFailure(t *testing.T) {
	h := newHarness(t)
	if status, _ := h.get(t, "demo"); status != 200 {
		t.Fatalf("status %d", status)
	}
	for range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := h.broker.Decide(ctx, &broker.Request{Credential: "demo", Channel: broker.ChannelSocket})
		var e *broker.Error
		if err != nil && (!errors.As(err, &e) || e.Kind != broker.KindUnavailable && e.Kind != broker.KindUnauthenticated) {
			t.Fatalf("Decide with the caller gone: %v", err)
		}
	}
	if n := h.metric(t, "credbroker_audit_failures_total"); n != 0 {
		t.Errorf("credbroker_audit_failures_total = %v, want 0: the store never failed", n)
	}
}

// metric returns the value of a counter without labels.
func (h *harness) metric(tb testing.TB, name string) float64 {
	tb.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	tb.Fatalf("no metric %s", name)
	return 0
}

// BenchmarkSocketAPI measures whole decisions — HTTP over the Unix socket,
// attestation, policy with a CEL condition, static provider, committed
// audit record — from 32 parallel clients: by peer credentials alone, and
// with a Kubernetes service-account token on top (warm key cache), so the
// two rates can be compared in one run.
func BenchmarkSocketAPI(b *testing.B) {
	b.Run("unix", func(b *testing.B) { benchSocketAPI(b, newHarness(b), "") })
	// A cached hit of the lease manager: what every minting provider costs
	// once its credential is issued (the provider is not called).
	b.Run("unix-leased", func(b *testing.B) { benchSocketAPI(b, newHarnessWith(b, 0, leased), "") })
	b.Run("kubernetes-token", func(b *testing.B) {
		route, token := kubernetesRoute(b)
		benchSocketAPI(b, newHarness(b, route), token)
	})
	b.Run("kubernetes-token-uncached", func(b *testing.B) {
		route, token := kubernetesRoute(b)
		benchSocketAPI(b, newHarnessCache(b, -1, route), token)
	})
}

func benchSocketAPI(b *testing.B, h *harness, token string) {
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0))) // 32 clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest("GET", "http://credbroker/v1/credentials/demo", nil)
		req.Header.Set(broker.RequestHeader, "1")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for pb.Next() {
			resp, err := h.client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// kubernetesRoute returns a Kubernetes attestor reading its keys from a
// JWKS file (as exported from a cluster's /openid/v1/jwks) and a projected
// token it accepts.
func kubernetesRoute(tb testing.TB) (broker.TokenRoute, string) {
	key := oidctest.NewRSAKey(tb, "k1")
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key.JWK()}})
	if err != nil {
		tb.Fatal(err)
	}
	file := filepath.Join(tb.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwks, 0o600); err != nil {
		tb.Fatal(err)
	}
	const issuer = "https://kubernetes.default.svc.cluster.local"
	att, err := k8sattest.New(context.Background(), k8sattest.Config{Issuer: issuer, Audiences: []string{"credbroker"}, JWKSFile: file})
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	token := oidctest.Sign(tb, key, map[string]any{
		"iss": issuer, "aud": []any{"credbroker"}, "sub": "system:serviceaccount:payments:api",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{"namespace": "payments", "serviceaccount": map[string]any{"name": "api"}},
	}, nil)
	return broker.TokenRoute{Method: "kubernetes", Issuer: issuer, Attestor: att}, token
}

// TestReloaderStopsAndKeepsGoodSet: the reloader swaps in a new set on a
// trigger, keeps the old one when loading fails, and its goroutine ends
// with its context.
func TestReloaderStopsAndKeepsGoodSet(t *testing.T) {
	h := newHarness(t)
	before := runtime.NumGoroutine()
	good, err := policies.Compile([]policies.File{{Name: "q.yaml", Data: []byte(strings.Replace(testPolicies, "[demo]", "[demo, prod-db]", 1))}})
	if err != nil {
		t.Fatal(err)
	}
	next := make(chan *policies.Set, 1)
	trigger := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- (&broker.Reloader{
			Broker: h.broker,
			Load: func() (*policies.Set, error) {
				select {
				case s := <-next:
					return s, nil
				default:
					return nil, errors.New("bad file")
				}
			},
			Stamp:   func() string { return "same" },
			Trigger: trigger,
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		}).Run(ctx)
	}()
	next <- good
	trigger <- struct{}{}
	trigger <- struct{}{} // nothing queued: this load fails
	trigger <- struct{}{} // accepted once the failed reload is done
	if h.broker.Policies() != good {
		t.Fatal("a failed reload replaced the policy set")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); runtime.NumGoroutine() > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after the reloader stopped, %d before", n, before)
	}
}
