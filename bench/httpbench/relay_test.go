package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// seen is what the upstream received in one request.
type seen struct {
	auth, proxyAuth []string
	path, query     string
}

// relayFixture starts the upstream (Handler, expecting token) with
// httptest, a Relay to it setting relayToken, and the relay's server in
// front; it records what the upstream received and how many connections
// it accepted.
type relayFixture struct {
	counts Counts
	relay  *Relay
	front  *httptest.Server
	logBuf *bytes.Buffer

	mu    sync.Mutex
	seen  []seen
	conns atomic.Int64
}

func newRelayFixture(t *testing.T, token, relayToken string) *relayFixture {
	t.Helper()
	f := &relayFixture{logBuf: new(bytes.Buffer)}
	h := Handler(Config{ReplySize: 17, Token: token}, &f.counts)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, seen{
			auth:      r.Header.Values("Authorization"),
			proxyAuth: r.Header.Values("Proxy-Authorization"),
			path:      r.URL.Path,
			query:     r.URL.RawQuery,
		})
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	r, err := NewRelay(up.URL, relayToken, log.New(f.logBuf, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	f.relay = r
	f.front = httptest.NewUnstartedServer(nil)
	f.front.Config = r.Server()
	f.front.Start()
	t.Cleanup(func() {
		f.front.Close()
		r.Close()
	})
	return f
}

// get sends a GET through the relay with a forged Authorization and
// Proxy-Authorization and returns the status and body.
func (f *relayFixture) get(t *testing.T, target string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", f.front.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer evil")
	req.Header.Add("Authorization", "Basic ZXZpbDpldmls")
	req.Header.Set("Proxy-Authorization", "Bearer evil-proxy")
	resp, err := f.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// TestRelayReplacesAuthorization: a request carrying a forged
// Authorization reaches the upstream with exactly the relay's token, once,
// and no Proxy-Authorization; path and query pass; the reply comes back.
func TestRelayReplacesAuthorization(t *testing.T) {
	f := newRelayFixture(t, "tok", "tok")
	status, body := f.get(t, "/v1/ping?a=1&b=2")
	if status != http.StatusOK {
		t.Fatalf("status %d (%q), want 200; relay log: %s", status, body, f.logBuf)
	}
	if want := strings.Repeat("x", 17); string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(f.seen))
	}
	s := f.seen[0]
	if len(s.auth) != 1 || s.auth[0] != "Bearer tok" {
		t.Errorf("upstream saw Authorization %q, want exactly [\"Bearer tok\"]", s.auth)
	}
	if len(s.proxyAuth) != 0 {
		t.Errorf("upstream saw Proxy-Authorization %q, want none", s.proxyAuth)
	}
	if s.path != "/v1/ping" || s.query != "a=1&b=2" {
		t.Errorf("upstream saw path %q query %q, want /v1/ping and a=1&b=2", s.path, s.query)
	}
	if got := [3]int64{f.counts.WithHeader.Load(), f.counts.WithoutHeader.Load(), f.counts.Refused.Load()}; got != [3]int64{1, 0, 0} {
		t.Errorf("upstream counts (with, without, refused) = %v, want [1 0 0]", got)
	}
	if got := f.relay.relayed.Load(); got != 1 {
		t.Errorf("relayed %d, want 1", got)
	}
}

// TestRelayWrongToken: the upstream refuses a relay that sets another
// token, and the relay passes the 401 back (what the bench would count as
// a non-2xx reply).
func TestRelayWrongToken(t *testing.T) {
	f := newRelayFixture(t, "tok", "other")
	if status, body := f.get(t, "/v1/ping"); status != http.StatusUnauthorized {
		t.Fatalf("status %d (%q), want 401", status, body)
	}
	if got := f.counts.Refused.Load(); got != 1 {
		t.Errorf("upstream refused %d, want 1", got)
	}
}

// TestRelayReusesUpstreamConnection: requests one after another share one
// pooled upstream connection.
func TestRelayReusesUpstreamConnection(t *testing.T) {
	f := newRelayFixture(t, "tok", "tok")
	for i := 0; i < 5; i++ {
		if status, body := f.get(t, "/v1/ping"); status != http.StatusOK {
			t.Fatalf("request %d: status %d (%q), want 200", i, status, body)
		}
	}
	if got := f.conns.Load(); got != 1 {
		t.Errorf("upstream accepted %d connections for 5 sequential requests, want 1", got)
	}
	if got := f.counts.WithHeader.Load(); got != 5 {
		t.Errorf("upstream saw the token %d times, want 5", got)
	}
}

// TestRelayUpstreamDown: an upstream that cannot be reached is a 502,
// counted and logged.
func TestRelayUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logBuf bytes.Buffer
	r, err := NewRelay("http://"+addr, "tok", log.New(&logBuf, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewUnstartedServer(nil)
	front.Config = r.Server()
	front.Start()
	defer front.Close()
	resp, err := front.Client().Get(front.URL + "/v1/ping")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	if r.failed.Load() != 1 || !strings.Contains(logBuf.String(), "relay: GET /v1/ping") {
		t.Errorf("failed %d, log %q: want 1 and the failure logged", r.failed.Load(), logBuf.String())
	}
	if strings.Contains(logBuf.String(), "tok") {
		t.Errorf("the log holds the token: %q", logBuf.String())
	}
}

// TestRelayFlags: -relay needs a token and a usable URL, and refuses the
// upstream's -reply-size.
func TestRelayFlags(t *testing.T) {
	tokenFile := t.TempDir() + "/token"
	if err := writeAtomic(tokenFile, "tok\n"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-relay", "http://127.0.0.1:1"},
		{"-relay", "127.0.0.1:1", "-token-file", tokenFile},
		{"-relay", "ftp://127.0.0.1:1", "-token-file", tokenFile},
		{"-relay", "http://127.0.0.1:1", "-token-file", tokenFile, "-reply-size", "10"},
	} {
		var stderr bytes.Buffer
		if err := run(context.Background(), args, &stderr); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}
