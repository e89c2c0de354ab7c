package main

// The relay mode (-relay): the gorelay target of scripts/bench-http.sh,
// the floor of what any Go relay built on the standard library costs. It
// is built the way the broker's http injection listener (inject/httpproxy)
// is built — net/http/httputil.ReverseProxy with a Rewrite func, a pooled
// keep-alive http.Transport, an HTTP/1 http.Server with the same limits —
// minus the broker's work: no attestation, no policy, no audit, no checks
// on the raw request. What the broker costs over it is its per-request
// decision; what it costs over HAProxy is Go's net/http itself.

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// The relay's server and transport limits: inject/httpproxy's.
const (
	relayMaxHeaderBytes        = 64 << 10
	relayReadHeaderTimeout     = 10 * time.Second
	relayIdleTimeout           = 2 * time.Minute
	relayDialTimeout           = 10 * time.Second
	relayResponseHeaderTimeout = 2 * time.Minute
	relayMaxIdleConnsPerHost   = 64
	relayUpstreamIdleTimeout   = 90 * time.Second
)

// Relay is a reverse proxy to one upstream that replaces the caller's
// Authorization (and Proxy-Authorization) with "Bearer <token>".
type Relay struct {
	upstream  *url.URL
	auth      string
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	errorLog  *log.Logger

	// relayed counts the requests rewritten and sent upstream, failed
	// those the upstream did not answer (502), abandoned those whose
	// caller went away first.
	relayed, failed, abandoned atomic.Int64
}

// NewRelay returns a Relay to upstream, an http:// or https:// URL with a
// host and at most a base path, setting "Authorization: Bearer <token>".
// A nil errorLog logs upstream failures to the standard logger.
func NewRelay(upstream, token string, errorLog *log.Logger) (*Relay, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("relay upstream: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("relay upstream %q: want http://HOST:PORT[/base]", upstream)
	}
	if token == "" {
		return nil, errors.New("relay: a token is required")
	}
	dialer := &net.Dialer{Timeout: relayDialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil, // none from the environment
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          relayMaxIdleConnsPerHost,
		MaxIdleConnsPerHost:   relayMaxIdleConnsPerHost,
		IdleConnTimeout:       relayUpstreamIdleTimeout,
		ResponseHeaderTimeout: relayResponseHeaderTimeout,
		DisableCompression:    true,
	}
	if errorLog == nil {
		errorLog = log.Default()
	}
	r := &Relay{upstream: u, auth: "Bearer " + token, transport: tr, errorLog: errorLog}
	r.proxy = &httputil.ReverseProxy{
		Rewrite:      r.rewrite,
		Transport:    tr,
		ErrorHandler: r.proxyError,
		ErrorLog:     errorLog,
		BufferPool:   &buffers{},
		// FlushInterval: 0, the default, as in inject/httpproxy.
	}
	return r, nil
}

// rewrite sends the request to the upstream with the relay's credential.
// ReverseProxy has already removed the hop-by-hop headers from pr.Out.
func (r *Relay) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(r.upstream)
	h := pr.Out.Header
	h.Del("Authorization")
	h.Del("Proxy-Authorization")
	h.Set("Authorization", r.auth)
	r.relayed.Add(1)
}

// proxyError answers 502 to a request the upstream did not answer.
func (r *Relay) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	if req.Context().Err() != nil {
		r.abandoned.Add(1) // the caller is gone; nobody reads the reply
	} else {
		r.failed.Add(1)
		r.errorLog.Printf("relay: %s %s: %v", req.Method, req.URL.Path, err)
	}
	w.WriteHeader(http.StatusBadGateway)
}

// Handler is the relay's handler.
func (r *Relay) Handler() http.Handler { return r.proxy }

// Server is the HTTP/1 server to serve the relay with: inject/httpproxy's
// settings.
func (r *Relay) Server() *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Server{
		Handler:                      r.proxy,
		Protocols:                    &protos,
		DisableGeneralOptionsHandler: true,
		MaxHeaderBytes:               relayMaxHeaderBytes,
		ReadHeaderTimeout:            relayReadHeaderTimeout,
		IdleTimeout:                  relayIdleTimeout,
		ErrorLog:                     r.errorLog,
	}
}

// Close closes the pooled upstream connections.
func (r *Relay) Close() { r.transport.CloseIdleConnections() }

// Summary is the line printed at exit.
func (r *Relay) Summary() string {
	return fmt.Sprintf("httpbench: relay: %d requests relayed, %d failed (502), %d abandoned by their caller",
		r.relayed.Load(), r.failed.Load(), r.abandoned.Load())
}

// buffers lends the proxy its 32 KiB copy buffers, as inject/httpproxy's
// pool does, instead of one allocated per request.
type buffers struct{ pool sync.Pool }

func (b *buffers) Get() []byte {
	if p, ok := b.pool.Get().(*[]byte); ok {
		return *p
	}
	return make([]byte, 32<<10)
}

func (b *buffers) Put(buf []byte) { b.pool.Put(&buf) }
