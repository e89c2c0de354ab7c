package httpproxy_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	unixattest "github.com/credbroker/credbroker/attest/unix"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/bindingtest"
	"github.com/credbroker/credbroker/inject/httpproxy"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers/static"
)

// credential is the name of the credential the listener injects.
const credential = "partner"

// testPolicies lets this test's processes (uid self) use the credential
// over http, and denies curl by the digest of its executable (CURL_SHA).
const testPolicies = `policies:
  - name: apps-call-partner
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [partner]
    when: 'request.channel == "http"'
  - name: no-curl
    effect: deny
    workloads: [{unix: {exe_sha256: CURL_SHA}}]
    credentials: [partner]
`

// harness is a real broker (unix attestor, compiled policies, static
// provider holding a canary token, audit log running) behind an HTTP
// injection listener on a Unix socket wrapped by the unix attestor, and a
// local HTTPS upstream trusted through tls.ca_file.
type harness struct {
	canary     string
	secretFile string
	db         string
	logs       *logtest.Buffer
	upstream   *httptest.Server
	upConns    atomic.Int64 // new TCP connections the upstream accepted
	record     *bindingtest.Upstream
	sink       *bindingtest.Sink
	caFile     string
	broker     *broker.Broker
	socket     string
	client     *http.Client
	runErr     chan error
	stop       context.CancelFunc
}

// newHarness starts everything; handler, when set, serves the upstream's
// paths outside the corpus's; cfg adjusts the listener's configuration.
func newHarness(tb testing.TB, handler http.Handler, adjust func(*httpproxy.Config), opts ...httpproxy.Option) *harness {
	tb.Helper()
	dir := tb.TempDir()
	h := &harness{canary: "canary-" + rand.Text(), db: filepath.Join(dir, "audit.db"), logs: &logtest.Buffer{}}
	h.secretFile = filepath.Join(dir, "partner")
	secret := h.secretFile
	if err := os.WriteFile(secret, []byte(h.canary+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(testPolicies, "CURL_SHA", curlDigest(tb)))}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	alog, err := audit.Open(ctx, audit.Config{Path: h.db})
	if err != nil {
		tb.Fatal(err)
	}
	auditDone := make(chan error, 1)
	go func() { auditDone <- alog.Run(ctx) }()
	peer, err := unixattest.New(unixattest.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	prov, err := static.New(static.Config{Name: credential, File: secret, TTL: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	h.broker, err = broker.New(broker.Config{
		Peer:        peer,
		Credentials: map[string]broker.Provider{credential: prov},
		Kinds:       map[string]string{credential: static.Kind},
		Policies:    set,
		Audit:       alog,
		Logger:      h.logs.Logger(),
	})
	if err != nil {
		tb.Fatal(err)
	}

	h.sink = bindingtest.NewSink(tb)
	h.record = bindingtest.NewUpstream(h.sink)
	h.upstream = httptest.NewUnstartedServer(h.record.Wrap(handler))
	h.upstream.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			h.upConns.Add(1)
		}
	}
	h.upstream.StartTLS()
	h.caFile = filepath.Join(dir, "upstream-ca.pem")
	if err := os.WriteFile(h.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.upstream.Certificate().Raw}), 0o600); err != nil {
		tb.Fatal(err)
	}

	sockDir, err := os.MkdirTemp("", "cbhp-")
	if err != nil {
		tb.Fatal(err)
	}
	h.socket = filepath.Join(sockDir, "s")
	cfg := httpproxy.Config{
		Listen:     "unix://" + h.socket,
		Upstream:   h.upstream.URL,
		Credential: credential,
		Header:     httpproxy.HeaderConfig{Value: "Bearer {{.value}}"},
		TLS:        httpproxy.TLSConfig{CAFile: h.caFile},
	}
	if adjust != nil {
		adjust(&cfg)
	}
	p, err := httpproxy.New(cfg, h.broker, append([]httpproxy.Option{listener.WithLogger(h.logs.Logger())}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := broker.ListenUnix(h.socket, 0o600, -1)
	if err != nil {
		tb.Fatal(err)
	}
	pln, err := peer.Listen(ln)
	if err != nil {
		tb.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	h.stop = stop
	h.runErr = make(chan error, 1)
	go func() { h.runErr <- p.Run(runCtx, pln) }()
	h.client = &http.Client{
		Transport: &http.Transport{DialContext: h.dial, MaxIdleConnsPerHost: 64},
		// Redirects reach the test as the listener returned them.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	tb.Cleanup(func() {
		h.client.CloseIdleConnections()
		stop()
		if err := <-h.runErr; err != nil {
			tb.Errorf("Run: %v", err)
		}
		h.upstream.Close()
		cancel()
		<-auditDone
		alog.Close()
		os.RemoveAll(sockDir)
	})
	return h
}

// dial connects to the listener's socket.
func (h *harness) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", h.socket)
}

// url is a URL the listener serves; its host is never used.
func (h *harness) url(path string) string { return "http://proxy" + path }

// curlDigest is the sha256 of the curl executable, the denied caller.
func curlDigest(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		tb.Fatalf("curl, the denied caller of these tests, is not installed: %v", err)
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// errorBody is the JSON error shape.
type errorBody struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		DecisionID string `json:"decision_id"`
	} `json:"error"`
}

func decodeError(tb testing.TB, b []byte) errorBody {
	tb.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" {
		tb.Fatalf("not the JSON error shape: %q (%v)", b, err)
	}
	return e
}

// TestInjects checks the header the upstream receives: the credential,
// exactly once, in place of the client's own credentials, at the path and
// query the client asked for.
func TestInjects(t *testing.T) {
	type seen struct {
		auth   []string
		amz    bool
		uri    string
		host   string
		header http.Header
	}
	got := make(chan seen, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		amz := false
		for k := range r.Header {
			amz = amz || strings.HasPrefix(k, "X-Amz-")
		}
		got <- seen{auth: r.Header.Values("Authorization"), amz: amz, uri: r.RequestURI, host: r.Host, header: r.Header.Clone()}
		w.Header().Set("X-Upstream", "yes")
		io.WriteString(w, "hello")
	})
	h := newHarness(t, mux, nil)
	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
	}{
		{"plain GET", "GET", "/v1/things?limit=2&x=%2F", nil},
		{"client credentials replaced", "POST", "/v1/items", map[string]string{
			"Authorization": "Bearer mine", "Proxy-Authorization": "Basic bWU6cHc=", "X-Amz-Date": "20260101T000000Z",
			"X-Amz-Security-Token": "tok", "X-Keep": "kept",
		}},
		{"Connection names the credential header", "GET", "/v1/conn", map[string]string{"Connection": "Authorization, X-Drop", "X-Drop": "gone"}},
		{"escaped path kept", "GET", "/v1/a%2Fb/c", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, h.url(tc.path), strings.NewReader("body"))
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "hello" || resp.Header.Get("X-Upstream") != "yes" {
				t.Fatalf("status %d, body %q, X-Upstream %q", resp.StatusCode, b, resp.Header.Get("X-Upstream"))
			}
			s := <-got
			if len(s.auth) != 1 || s.auth[0] != "Bearer "+h.canary {
				t.Errorf("Authorization at the upstream: %d value(s), want exactly the injected one", len(s.auth))
			}
			if s.amz {
				t.Error("an X-Amz-* header reached the upstream")
			}
			if s.uri != tc.path {
				t.Errorf("upstream request target %q, want %q", s.uri, tc.path)
			}
			if want := h.upstream.Listener.Addr().String(); s.host != want {
				t.Errorf("upstream Host %q, want %q", s.host, want)
			}
			if v := s.header.Get("Proxy-Authorization"); v != "" {
				t.Error("Proxy-Authorization reached the upstream")
			}
			if tc.headers["X-Keep"] != "" && s.header.Get("X-Keep") != "kept" {
				t.Error("an ordinary header was dropped")
			}
			if s.header.Get("X-Drop") != "" {
				t.Error("a header named in Connection reached the upstream")
			}
		})
	}
	if strings.Contains(h.logs.String(), h.canary) {
		t.Error("the secret is in the log")
	}
}

// TestDeniedCaller checks a caller the policy denies — curl, by the
// digest of its executable, a real other process attested by the kernel —
// gets the JSON 403 and the upstream sees nothing.
func TestDeniedCaller(t *testing.T) {
	h := newHarness(t, nil, nil)
	out, err := exec.Command("curl", "-sS", "--unix-socket", h.socket, "-H", "Authorization: Bearer mine",
		"-w", "\n%{http_code}", "http://proxy/v1/denied").Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	o := strings.TrimSpace(string(out))
	i := strings.LastIndexByte(o, '\n')
	body, code := strings.TrimSpace(o[:max(i, 0)]), o[i+1:]
	if code != "403" {
		t.Fatalf("status %s, body %s", code, body)
	}
	e := decodeError(t, []byte(body))
	if e.Error.Code != "denied" || e.Error.DecisionID == "" {
		t.Errorf("error %+v, want code denied with a decision id", e.Error)
	}
	if n := len(h.record.Requests()); n != 0 {
		t.Errorf("the upstream received %d request(s)", n)
	}
	if strings.Contains(body, h.canary) {
		t.Error("the refusal holds the secret")
	}
	rows := auditRows(t, h)
	if len(rows) != 1 || rows[0].Decision != audit.DecisionDeny || rows[0].Policy != "no-curl" {
		t.Fatalf("audit rows %+v, want one deny by no-curl", rows)
	}
}

// auditRows returns the decision rows of the credential.
func auditRows(tb testing.TB, h *harness) []audit.Record {
	tb.Helper()
	var rows []audit.Record
	err := audit.Query(context.Background(), h.db, audit.Filter{Credential: credential, Kind: audit.KindDecision}, func(r *audit.Record) error {
		rows = append(rows, *r)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rows
}

// TestAuditRows checks every proxied request has its committed decision
// row: channel http, the upstream's host, the method and the path.
func TestAuditRows(t *testing.T) {
	h := newHarness(t, nil, nil)
	reqs := []struct{ method, path string }{
		{"GET", "/a"}, {"POST", "/b/c"}, {"PUT", "/d?q=1"}, {"DELETE", "/e"}, {"PATCH", "/bindingtest/ok"},
	}
	for _, r := range reqs {
		req, _ := http.NewRequest(r.method, h.url(r.path), nil)
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: status %d", r.method, r.path, resp.StatusCode)
		}
	}
	rows := auditRows(t, h)
	if len(rows) != len(reqs) {
		t.Fatalf("%d audit rows for %d requests", len(rows), len(reqs))
	}
	host := h.upstream.Listener.Addr().String()
	for i, r := range reqs {
		row := rows[i]
		path, _, _ := strings.Cut(r.path, "?")
		if row.Channel != broker.ChannelHTTP || row.TargetHost != host || row.Method != r.method || row.Path != path ||
			row.Decision != audit.DecisionAllow || row.Policy != "apps-call-partner" || row.Fingerprint == "" {
			t.Errorf("row %d: channel %q host %q method %q path %q decision %q policy %q; want http %q %q %q allow",
				i, row.Channel, row.TargetHost, row.Method, row.Path, row.Decision, row.Policy, host, r.method, path)
		}
	}
	b, err := os.ReadFile(h.db)
	if err != nil {
		t.Fatal(err)
	}
	wal, _ := os.ReadFile(h.db + "-wal")
	if strings.Contains(string(b)+string(wal), h.canary) {
		t.Error("the secret is in the audit database")
	}
}

// streamSize is the size of the streamed upload and download.
const streamSize = 50 << 20

// payload is a deterministic stream of n pseudo-random bytes.
func payload(seed uint64, n int64) io.Reader {
	return io.LimitReader(&prngReader{r: mrand.NewChaCha8([32]byte{byte(seed)})}, n)
}

type prngReader struct{ r *mrand.ChaCha8 }

func (p *prngReader) Read(b []byte) (int, error) { return p.r.Read(b) }

// TestStreaming sends 50 MB up and 50 MB down, hashing both ends. Each
// side waits, after its first megabyte, until the other side has received
// it: a proxy buffering either body whole would never get there.
func TestStreaming(t *testing.T) {
	upFirst := make(chan struct{})   // the upstream has read the upload's first MB
	downFirst := make(chan struct{}) // the client has read the download's first MB
	upHash := make(chan string, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /upload", func(w http.ResponseWriter, r *http.Request) {
		hash := sha256.New()
		if _, err := io.CopyN(hash, r.Body, 1<<20); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		close(upFirst)
		n, err := io.Copy(hash, r.Body)
		if err != nil || n+1<<20 != streamSize {
			http.Error(w, fmt.Sprintf("read %d: %v", n, err), 500)
			return
		}
		upHash <- hex.EncodeToString(hash.Sum(nil))
	})
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(streamSize))
		src := payload(2, streamSize)
		if _, err := io.CopyN(w, src, 1<<20); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-downFirst:
		case <-r.Context().Done():
			return
		}
		io.Copy(w, src)
	})
	h := newHarness(t, mux, nil)
	wantHash := func(seed uint64) string {
		s := sha256.New()
		io.Copy(s, payload(seed, streamSize))
		return hex.EncodeToString(s.Sum(nil))
	}

	t.Run("upload", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			src := payload(1, streamSize)
			if _, err := io.CopyN(pw, src, 1<<20); err != nil {
				pw.CloseWithError(err)
				return
			}
			select {
			case <-upFirst:
			case <-time.After(time.Minute):
				pw.CloseWithError(errors.New("the upstream never saw the first megabyte: the upload is buffered"))
				return
			}
			_, err := io.Copy(pw, src)
			pw.CloseWithError(err)
		}()
		req, _ := http.NewRequest("PUT", h.url("/upload"), pr)
		req.ContentLength = streamSize
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got, want := <-upHash, wantHash(1); got != want {
			t.Errorf("upload arrived with sha256 %s, sent %s", got, want)
		}
	})
	t.Run("download", func(t *testing.T) {
		resp, err := h.client.Get(h.url("/download"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		hash := sha256.New()
		if _, err := io.CopyN(hash, resp.Body, 1<<20); err != nil {
			t.Fatalf("first megabyte: %v", err)
		}
		close(downFirst)
		n, err := io.Copy(hash, resp.Body)
		if err != nil || n+1<<20 != streamSize {
			t.Fatalf("read %d more bytes: %v", n, err)
		}
		if got, want := hex.EncodeToString(hash.Sum(nil)), wantHash(2); got != want {
			t.Errorf("download arrived with sha256 %s, sent %s", got, want)
		}
	})
}

// TestKeepAlive checks that requests through the listener reuse pooled
// upstream connections: sequential requests, one connection; parallel
// ones, far fewer connections than requests.
func TestKeepAlive(t *testing.T) {
	h := newHarness(t, nil, nil)
	get := func() error {
		resp, err := h.client.Get(h.url(bindingtest.PathOK))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	for range 20 {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.upConns.Load(); n != 1 {
		t.Errorf("20 sequential requests opened %d upstream connections, want 1", n)
	}
	const parallel = 8
	var wg sync.WaitGroup
	errs := make(chan error, parallel*10)
	for range parallel {
		wg.Go(func() {
			for range 10 {
				if err := get(); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A request may dial while another's connection is on its way back
	// to the pool, so the bound is loose: connections are reused, not
	// opened per request.
	if n := h.upConns.Load() - 1; n > parallel*10/2 {
		t.Errorf("%d parallel callers making 10 requests each opened %d upstream connections", parallel, n)
	}
}

// TestBindingCorpus runs the shared destination-binding attacks.
func TestBindingCorpus(t *testing.T) {
	h := newHarness(t, nil, nil)
	bindingtest.Run(t, bindingtest.Target{
		Dial:         func(ctx context.Context) (net.Conn, error) { return h.dial(ctx, "", "") },
		Secret:       h.canary,
		Header:       "Authorization",
		Value:        "Bearer " + h.canary,
		UpstreamHost: h.upstream.Listener.Addr().String(),
		Upstream:     h.record,
		Sink:         h.sink,
	})
	if strings.Contains(h.logs.String(), h.canary) {
		t.Error("the secret is in the log")
	}
}

// TestUpstreamDown checks an unreachable upstream gives 502 in the JSON
// error shape, without the secret, the decision still recorded.
func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + ln.Addr().String()
	ln.Close()
	h := newHarness(t, nil, func(c *httpproxy.Config) { c.Upstream = down })
	resp, err := h.client.Get(h.url("/x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, body %q", resp.StatusCode, b)
	}
	e := decodeError(t, b)
	if e.Error.Code != "bad_gateway" || e.Error.DecisionID == "" {
		t.Errorf("error %+v", e.Error)
	}
	if strings.Contains(string(b), h.canary) || strings.Contains(h.logs.String(), h.canary) {
		t.Error("the secret is in the reply or the log")
	}
	if !strings.Contains(h.logs.String(), "upstream request failed") {
		t.Errorf("the failure is not logged: %s", h.logs.String())
	}
}

// TestUnusableValue checks a credential value that would split the
// header (CR LF in it) is refused with 502, never sent.
func TestUnusableValue(t *testing.T) {
	h := newHarness(t, nil, nil)
	// The static provider re-reads its file when it changes.
	if err := os.WriteFile(h.secretFile, []byte(h.canary+"\r\nX-Injected: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := h.client.Get(h.url(bindingtest.PathOK))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, body %q", resp.StatusCode, b)
	}
	if e := decodeError(t, b); e.Error.Code != "bad_gateway" {
		t.Errorf("error %+v", e.Error)
	}
	if n := len(h.record.Requests()); n != 0 {
		t.Errorf("the upstream received %d request(s)", n)
	}
	if strings.Contains(string(b), h.canary) || strings.Contains(h.logs.String(), h.canary) {
		t.Error("the secret is in the reply or the log")
	}
}

// TestDrain checks Run lets a request in flight finish after its context
// ends, and returns nil.
func TestDrain(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	})
	h := newHarness(t, mux, nil)
	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := h.client.Get(h.url("/slow"))
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{resp.StatusCode, string(b), err}
	}()
	<-entered
	h.stop()
	select {
	case err := <-h.runErr:
		t.Fatalf("Run returned with a request in flight: %v", err)
	default:
	}
	close(release)
	r := <-res
	if r.err != nil || r.status != 200 || r.body != "done" {
		t.Fatalf("in-flight request: %d %q %v", r.status, r.body, r.err)
	}
	if err := <-h.runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	h.runErr <- nil // for the cleanup
}

// BenchmarkProxy measures requests per second through the listener (a
// decision, its committed audit row, the injected header, an HTTPS
// upstream over pooled keep-alive connections) against the same requests
// sent straight to the upstream, in the same run: 32 parallel callers,
// keep-alive on both sides.
func BenchmarkProxy(b *testing.B) {
	h := newHarness(b, nil, nil)
	direct := h.upstream.Client()
	direct.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	run := func(b *testing.B, c *http.Client, url string) {
		b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := c.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	}
	b.Run("direct", func(b *testing.B) { run(b, direct, h.upstream.URL+bindingtest.PathOK) })
	b.Run("proxy", func(b *testing.B) { run(b, h.client, h.url(bindingtest.PathOK)) })
}

// TestNoGoroutineLeft checks that once Run has returned and the harness
// is stopped, no goroutine of the listener (server connections, upstream
// transport, framer) is left.
func TestNoGoroutineLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("serve", func(t *testing.T) {
		h := newHarness(t, nil, nil)
		for _, path := range []string{bindingtest.PathOK, bindingtest.PathRedirect, "/x"} {
			resp, err := h.client.Get(h.url(path))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

// TestConnLimit checks the listener under broker.LimitListener: callers
// are still attested through the limiter's and the framer's wrappers, and
// the connection gauge counts the listener's connections.
func TestConnLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, nil, nil, listener.WithConnLimit(broker.LimitConfig{Name: "http", Max: 2, Metrics: broker.NewConnMetrics(reg)}))
	for range 3 {
		resp, err := h.client.Get(h.url(bindingtest.PathOK))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if got := connGauge(t, reg); got != 1 {
		t.Errorf("credbroker_connections{listener=http} = %v, want 1 (one keep-alive connection)", got)
	}
}

// connGauge returns the connection gauge of the http listener.
func connGauge(tb testing.TB, reg *prometheus.Registry) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "credbroker_connections" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "listener" && l.GetValue() == "http" {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	tb.Fatal("no credbroker_connections{listener=http}")
	return 0
}

// TestRefusalsRecorded checks that requests refused before they could be
// forwarded — a CONNECT, an h2c upgrade, an obs-fold header — are still
// decisions: the caller is attested, the refusal is an error row with its
// reason, the answer names that decision, and nothing reaches the
// upstream.
func TestRefusalsRecorded(t *testing.T) {
	h := newHarness(t, nil, nil)
	for _, tc := range []struct {
		name, raw string
		status    int
		reason    string
	}{
		{"connect", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405, "CONNECT is not served"},
		{"h2c upgrade", "GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n", 400, "protocol upgrades"},
		{"obs-fold", "GET /b HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n b\r\n\r\n", 400, "request refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(auditRows(t, h))
			c, err := h.dial(t.Context(), "", "")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			e := decodeError(t, body)
			rows := auditRows(t, h)
			if len(rows) != before+1 {
				t.Fatalf("%d new audit rows, want 1", len(rows)-before)
			}
			row := rows[len(rows)-1]
			if row.Decision != audit.DecisionError || !strings.Contains(row.Reason, tc.reason) ||
				row.DecisionID != e.Error.DecisionID || row.Channel != broker.ChannelHTTP || row.Subject == "" {
				t.Errorf("row %s %q id %s channel %s subject %q; answer %+v", row.Decision, row.Reason, row.DecisionID, row.Channel, row.Subject, e.Error)
			}
		})
	}
	if n := len(h.record.Requests()); n != 0 {
		t.Errorf("the upstream received %d request(s)", n)
	}
}
