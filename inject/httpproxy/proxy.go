package httpproxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/providers"
)

// Server and transport limits.
const (
	// MaxHeaderBytes bounds a request's header block.
	MaxHeaderBytes = 64 << 10
	// ReadHeaderTimeout bounds the time a caller takes to send a request's
	// header block.
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout closes a caller's keep-alive connection idle this long.
	IdleTimeout = 2 * time.Minute
	// DialTimeout bounds connecting to the upstream, TLSHandshakeTimeout
	// its TLS handshake.
	DialTimeout         = 10 * time.Second
	TLSHandshakeTimeout = 10 * time.Second
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// header once the request is sent. Bodies stream without a limit.
	ResponseHeaderTimeout = 2 * time.Minute
	// MaxIdleConnsPerHost is how many idle keep-alive connections to the
	// upstream are pooled.
	MaxIdleConnsPerHost = 64
	// UpstreamIdleTimeout closes a pooled upstream connection idle this
	// long.
	UpstreamIdleTimeout = 90 * time.Second
)

// Log attribute keys.
const (
	keyCredential = "credential"
	keyDecisionID = "decision_id"
	keyError      = "error"
	keyUpstream   = "upstream"
)

// Decider is what the proxy needs of the broker (listener.Decider).
type Decider = listener.Decider

// Option adjusts a Proxy: listener.WithLogger (upstream failures and
// unusable credentials; default slog.Default()) and listener.WithConnLimit
// (Run caps the connections it serves with broker.LimitListener; default
// no cap).
type Option = listener.Option

// Proxy is an HTTP injection listener: a reverse proxy to one upstream
// that adds one credential, decided per request, to every request.
type Proxy struct {
	cred      string
	upstream  *url.URL
	header    string
	tmpl      *headerTemplate // nil when sig is set
	sig       *sigv4          // nil when requests carry the header
	drain     time.Duration
	ambient   bool // Config.AllowAmbient
	decider   Decider
	transport *http.Transport
	rp        *httputil.ReverseProxy
	log       *slog.Logger
	limit     *broker.LimitConfig
}

// New validates cfg and returns a Proxy deciding with d. It reads the TLS
// files; the upstream need not be reachable.
func New(cfg Config, d Decider, opts ...Option) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errors.New("httpproxy: a decider is required")
	}
	u, _ := parseUpstream(cfg.Upstream) // checked by Validate
	var (
		tmpl *headerTemplate
		sig  *sigv4
	)
	if cfg.SigV4 != nil {
		sig = newSigV4(cfg.SigV4)
	} else {
		tmpl, _ = compileTemplate(cfg.headerValue()) // checked by Validate
	}
	tr, err := newTransport(cfg.TLS)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cred:      cfg.Credential,
		upstream:  u,
		header:    cfg.headerName(),
		tmpl:      tmpl,
		sig:       sig,
		drain:     cfg.DrainTimeout.Or(),
		ambient:   cfg.AllowAmbient,
		decider:   d,
		transport: tr,
		log:       slog.Default(),
	}
	o := listener.Apply(opts)
	p.log, p.limit = o.Logger, o.Limit
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    tr,
		BufferPool:   copyBuffers,
		ErrorHandler: p.proxyError,
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// newTransport is the one transport of a listener: TLS 1.2 or later
// verified against the system roots and ca_file, an optional client
// certificate, no proxy from the environment, pooled keep-alive
// connections, bodies passed as they are (no transparent gzip).
func newTransport(c TLSConfig) (*http.Transport, error) {
	tr, err := providers.Transport(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("httpproxy: tls: %w", err)
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("httpproxy: tls: client certificate: %w", err)
		}
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	}
	dialer := &net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	tr.Proxy = nil
	tr.DialContext = dialer.DialContext
	tr.TLSHandshakeTimeout = TLSHandshakeTimeout
	tr.ResponseHeaderTimeout = ResponseHeaderTimeout
	tr.IdleConnTimeout = UpstreamIdleTimeout
	tr.MaxIdleConns = MaxIdleConnsPerHost
	tr.MaxIdleConnsPerHost = MaxIdleConnsPerHost
	tr.DisableCompression = true
	return tr, nil
}

// Handler returns the proxy's handler. It expects its server to keep the
// caller's connection with broker.ConnContext; the checks on raw header
// lines (request smuggling) need Run, which serves it on connections it
// follows.
func (p *Proxy) Handler() http.Handler { return http.HandlerFunc(p.serve) }

// Run serves the proxy on ln until ctx ends, then stops accepting and lets
// requests in flight finish for up to the drain timeout. It returns nil
// after a clean drain. The caller makes ln (and, for a Unix socket, wraps
// it with the unix attestor's Listen so each request's sender can be
// attested); Run closes it. Run wraps each accepted connection to follow
// its raw bytes (the smuggling checks); the broker still attests the
// connection beneath, through broker.ConnContext. A *tls.Conn accepted
// from a TLS listener is wrapped too, so requests on it carry no
// Request.TLS: a listener attesting client certificates needs the raw
// check moved beneath TLS first.
func (p *Proxy) Run(ctx context.Context, ln net.Listener) error {
	srv := p.server()
	l := ln
	if p.limit != nil {
		var err error
		if l, err = broker.LimitListener(ln, srv, *p.limit); err != nil {
			ln.Close()
			return fmt.Errorf("httpproxy: %w", err)
		}
	}
	err := broker.Serve(ctx, srv, rawListener{l}, p.drain)
	p.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("httpproxy: %w", err)
	}
	return nil
}

// server is the HTTP/1 server Run serves with.
func (p *Proxy) server() *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Server{
		Handler:                      p.Handler(),
		ConnContext:                  connContext,
		Protocols:                    &protos,
		DisableGeneralOptionsHandler: true,
		MaxHeaderBytes:               MaxHeaderBytes,
		ReadHeaderTimeout:            ReadHeaderTimeout,
		IdleTimeout:                  IdleTimeout,
		ErrorLog:                     slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
}

// injection is what a decided request carries to rewrite: the header
// value, or with SigV4 the signing keys and payload hash.
type injection struct {
	value       string
	creds       aws.Credentials
	payloadHash string
	decisionID  string
}

type injectionKey struct{}

// serve decides the request, and forwards it with the credential. What
// must not be forwarded (a broken framing, CONNECT, an upgrade, a request
// SigV4 cannot sign as sent) is refused, but still decided as an invalid
// request: the caller is attested and the refusal recorded, like any
// other request.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	status, msg := p.refusal(r)
	req := &broker.Request{
		Credential: p.cred,
		Channel:    broker.ChannelHTTP,
		Method:     r.Method,
		Path:       r.URL.Path,
		Host:       p.upstream.Host,
		Conn:       broker.RequestConn(r),

		AmbientIfNoPeer: p.ambient,
	}
	if status != 0 {
		req.Invalid = &broker.Error{Kind: broker.KindBadRequest, Message: msg}
	}
	g, err := p.decider.Decide(r.Context(), req)
	if status != 0 {
		w.Header().Set("Connection", "close")
		var e *broker.Error
		if errors.As(err, &e) && e.Kind != broker.KindBadRequest {
			broker.WriteRefusal(w, err) // not attested, say: that comes first
			return
		}
		id := ""
		if e != nil {
			id = e.DecisionID
		} else if g != nil {
			id = g.DecisionID // Decide grants no invalid request; refused anyway
		}
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		}
		writeError(w, status, codeOf(status), msg, id)
		return
	}
	if err != nil {
		broker.WriteRefusal(w, err)
		return
	}
	var inj *injection
	if p.sig != nil {
		if inj = p.signing(w, r, g); inj == nil {
			return
		}
	} else if inj = p.injectHeader(w, g); inj == nil {
		return
	}
	ctx := context.WithValue(r.Context(), injectionKey{}, inj)
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// injectHeader renders the header value from g's credential, or answers
// 502 and returns nil.
func (p *Proxy) injectHeader(w http.ResponseWriter, g *broker.Grant) *injection {
	value, err := p.tmpl.render(func(field string) ([]byte, bool) {
		s, ok := g.Credential.Data[field]
		if !ok {
			return nil, false
		}
		return s.Reveal(), true
	})
	if err != nil {
		p.log.Warn("credential cannot be injected", keyCredential, p.cred, keyDecisionID, g.DecisionID, keyError, err)
		writeError(w, http.StatusBadGateway, "bad_gateway", fmt.Sprintf("credential %q cannot be sent in header %s: %v", p.cred, p.header, err), g.DecisionID)
		return nil
	}
	return &injection{value: value, decisionID: g.DecisionID}
}

// signing reads the signing keys from g's credential and the payload hash
// from r (reading a body to sign whole), or answers and returns nil: 502
// for a credential that cannot sign, 413 for a body too large to sign.
func (p *Proxy) signing(w http.ResponseWriter, r *http.Request, g *broker.Grant) *injection {
	creds, err := awsCredentials(g.Credential.Data)
	if err != nil {
		p.log.Warn("credential cannot be injected", keyCredential, p.cred, keyDecisionID, g.DecisionID, keyError, err)
		writeError(w, http.StatusBadGateway, "bad_gateway", fmt.Sprintf("credential %q cannot sign requests: %v", p.cred, err), g.DecisionID)
		return nil
	}
	hash, status, msg := p.sig.payloadHash(r)
	if status != 0 {
		w.Header().Set("Connection", "close")
		writeError(w, status, codeOf(status), msg, g.DecisionID)
		return nil
	}
	return &injection{creds: creds, payloadHash: hash, decisionID: g.DecisionID}
}

// refusal returns the status and message of a request that must not be
// forwarded, or 0.
func (p *Proxy) refusal(r *http.Request) (int, string) {
	if rc, ok := r.Context().Value(rawKey{}).(*rawConn); ok {
		if err := rc.shapeErr(); err != nil {
			// The connection's framing is no longer trusted.
			return http.StatusBadRequest, "request refused: " + err.Error()
		}
	}
	if status, msg := checkRequest(r); status != 0 {
		return status, msg
	}
	if p.sig != nil {
		return p.sig.check(r)
	}
	return 0, ""
}

// checkRequest refuses, before the credential is obtained, what the proxy never
// forwards: HTTP/2 (h2c prior knowledge), CONNECT, protocol upgrades
// (h2c, WebSocket) and targets that are not a path. It returns 0 for a
// request to forward.
func checkRequest(r *http.Request) (int, string) {
	switch {
	case r.ProtoMajor != 1:
		return http.StatusBadRequest, "only HTTP/1.x is served"
	case r.Method == http.MethodConnect:
		return http.StatusMethodNotAllowed, "CONNECT is not served: this listener forwards to its configured upstream only"
	case len(r.Header["Upgrade"]) > 0, len(r.Header["Http2-Settings"]) > 0, headerHasToken(r.Header, "Connection", "upgrade"):
		return http.StatusBadRequest, "protocol upgrades (h2c, WebSocket) are not served"
	case !strings.HasPrefix(r.URL.Path, "/"):
		return http.StatusBadRequest, "the request target must be a path"
	}
	return 0, ""
}

// headerHasToken reports whether a comma-separated header holds token,
// case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// rewrite routes the outgoing request to the upstream, whatever the
// request named (Host header, absolute-form target, user information),
// and sets the credential header on the headers rewriteHeader leaves, or
// with SigV4 signs the outgoing request (see sigv4.sign).
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	inj, _ := pr.In.Context().Value(injectionKey{}).(*injection)
	u := &url.URL{
		Scheme:   p.upstream.Scheme,
		Host:     p.upstream.Host,
		Path:     joinPath(p.upstream.Path, pr.In.URL.Path),
		RawPath:  joinPath(p.upstream.EscapedPath(), pr.In.URL.EscapedPath()),
		RawQuery: pr.Out.URL.RawQuery,
	}
	if u.RawPath == u.Path {
		u.RawPath = ""
	}
	pr.Out.URL = u
	pr.Out.Host = ""
	if p.sig != nil {
		p.signOut(pr, inj)
		return
	}
	value := ""
	if inj != nil {
		value = inj.value
	}
	rewriteHeader(pr.Out.Header, pr.In.Header, p.header, value)
}

// signOut signs the outgoing request. Signing cannot fail with keys that
// awsCredentials accepted; if it did, the request leaves unsigned, which
// the upstream refuses, and the failure is logged.
func (p *Proxy) signOut(pr *httputil.ProxyRequest, inj *injection) {
	if inj == nil {
		stripHeader(pr.Out.Header, pr.In.Header, "")
		return
	}
	if err := p.sig.sign(pr.Out.Context(), pr.Out, pr.In.Header, inj.creds, inj.payloadHash); err != nil {
		stripHeader(pr.Out.Header, pr.In.Header, "")
		p.log.Warn("request sent unsigned", keyCredential, p.cred, keyDecisionID, inj.decisionID, keyError, err)
	}
}

// joinPath appends a request path to the upstream's base path.
func joinPath(base, path string) string {
	return strings.TrimSuffix(base, "/") + path
}

// rewriteHeader removes from out every header the caller must not send
// the upstream — headers named in in's Connection header (hop-by-hop),
// Authorization, Proxy-*, X-Amz-*, and any copy of the credential header —
// then sets the credential header to value, once. Removal comes first, so
// that Connection: Authorization cannot remove the credential.
func rewriteHeader(out, in http.Header, name, value string) {
	stripHeader(out, in, name)
	out[name] = []string{value}
}

// stripHeader removes from out the headers in's Connection header names,
// Authorization, Connection, Upgrade, Http2-Settings, Proxy-*, X-Amz-* and
// any spelling of name (when not empty).
func stripHeader(out, in http.Header, name string) {
	for _, v := range in["Connection"] {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				delete(out, http.CanonicalHeaderKey(t))
			}
		}
	}
	for k := range out {
		switch ck := http.CanonicalHeaderKey(k); {
		case ck == "Authorization", ck == "Connection", ck == "Upgrade", ck == "Http2-Settings",
			strings.HasPrefix(ck, "Proxy-"), strings.HasPrefix(ck, "X-Amz-"), name != "" && strings.EqualFold(ck, name):
			delete(out, k)
		}
	}
}

// proxyError answers a failed upstream exchange: 502 in the broker's JSON
// error shape. The cause goes to the log; it never carries the credential,
// which travels in a header only.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	id := ""
	if inj, ok := r.Context().Value(injectionKey{}).(*injection); ok {
		id = inj.decisionID
	}
	if r.Context().Err() != nil {
		p.log.Debug("caller went away before the upstream answered", keyCredential, p.cred, keyDecisionID, id)
	} else {
		p.log.Warn("upstream request failed", keyCredential, p.cred, keyDecisionID, id, keyUpstream, p.upstream.Host, keyError, err)
	}
	writeError(w, http.StatusBadGateway, "bad_gateway", "the upstream "+p.upstream.Host+" could not be reached or failed; the broker's log has the cause", id)
}

// codeOf is the JSON error code of a status the proxy answers itself.
func codeOf(status int) string {
	switch status {
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusBadGateway:
		return "bad_gateway"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	default:
		return "bad_request"
	}
}

// writeError writes the broker's JSON error shape:
// {"error":{"code","message","decision_id"}}.
func writeError(w http.ResponseWriter, status int, code, msg, decisionID string) {
	type detail struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		DecisionID string `json:"decision_id,omitempty"`
	}
	b, _ := json.Marshal(struct {
		Error detail `json:"error"`
	}{detail{code, msg, decisionID}}) // strings always encode
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
