package awscreds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
	"github.com/credbroker/credbroker/providers"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// Server limits.
const (
	// MaxHeaderBytes bounds a request's header block: room for a bearer
	// token of the broker's largest (16 KiB) and the SDK's other headers.
	MaxHeaderBytes = 64 << 10
	// ReadHeaderTimeout bounds the time a caller takes to send a request's
	// header block.
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout closes a caller's keep-alive connection idle this long.
	IdleTimeout = 2 * time.Minute
)

// Log attribute keys.
const (
	keyCredential = "credential"
	keyDecisionID = "decision_id"
	keyError      = "error"
)

// Decider is what the endpoint needs of the broker (listener.Decider).
type Decider = listener.Decider

// Option adjusts an Endpoint: listener.WithLogger (credentials that
// cannot be served, server errors; default slog.Default()) and
// listener.WithConnLimit (Run caps the connections it serves with
// broker.LimitListener; default no cap).
type Option = listener.Option

// Endpoint is an AWS container-credentials endpoint serving one
// credential, decided per request.
type Endpoint struct {
	cred string
	// tokenOptional: a request without an Authorization header is decided
	// on its process alone.
	tokenOptional bool
	drain         time.Duration
	decider       Decider
	log           *slog.Logger
	limit         *broker.LimitConfig
}

// New validates cfg and returns an Endpoint deciding with d.
func New(cfg Config, d Decider, opts ...Option) (*Endpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errors.New("awscreds: a decider is required")
	}
	o := listener.Apply(opts)
	e := &Endpoint{cred: cfg.Credential, tokenOptional: cfg.Token == TokenOptional, drain: cfg.DrainTimeout.Or(), decider: d, log: o.Logger, limit: o.Limit}
	return e, nil
}

// Handler returns the endpoint's handler. It expects its server to keep
// the caller's connection with broker.ConnContext, as Run's does.
func (e *Endpoint) Handler() http.Handler { return http.HandlerFunc(e.serve) }

// Run serves the endpoint on ln until ctx ends, then stops accepting and
// lets requests in flight finish for up to the drain timeout. It returns
// nil after a clean drain. The caller makes ln, a TCP listener on a
// loopback address (the broker attests each caller from the kernel's
// socket table); Run closes it.
func (e *Endpoint) Run(ctx context.Context, ln net.Listener) error {
	srv := e.server()
	l := ln
	if e.limit != nil {
		var err error
		if l, err = broker.LimitListener(ln, srv, *e.limit); err != nil {
			ln.Close()
			return fmt.Errorf("awscreds: %w", err)
		}
	}
	if err := broker.Serve(ctx, srv, l, e.drain); err != nil {
		return fmt.Errorf("awscreds: %w", err)
	}
	return nil
}

// server is the HTTP/1 server Run serves with.
func (e *Endpoint) server() *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Server{
		Handler:                      e.Handler(),
		ConnContext:                  broker.ConnContext,
		Protocols:                    &protos,
		DisableGeneralOptionsHandler: true,
		MaxHeaderBytes:               MaxHeaderBytes,
		ReadHeaderTimeout:            ReadHeaderTimeout,
		IdleTimeout:                  IdleTimeout,
		ErrorLog:                     slog.NewLogLogger(e.log.Handler(), slog.LevelWarn),
	}
}

// Refusals decided before the credential is looked at. Their messages are
// shown to the caller.
var (
	errMethod = &broker.Error{Kind: broker.KindBadRequest, Message: "only GET is served: the AWS SDKs fetch container credentials with GET"}
	errTwice  = &broker.Error{Kind: broker.KindBadRequest, Message: "more than one Authorization header"}
)

// serve decides the request and answers with the credential in the
// container-credentials format. Every request is a decision, recorded by
// the broker, refusals included.
func (e *Endpoint) serve(w http.ResponseWriter, r *http.Request) {
	req := &broker.Request{
		Credential: e.cred,
		Channel:    broker.ChannelAWS,
		Method:     r.Method,
		Path:       r.URL.Path,
		Conn:       broker.RequestConn(r),
	}
	switch auth := r.Header.Values("Authorization"); {
	case r.Method != http.MethodGet:
		req.Invalid = errMethod
	case len(auth) > 1:
		req.Invalid = errTwice
	case len(auth) == 0 && e.tokenOptional:
		// Decided on the caller's process, attested from its connection.
	default:
		var v string
		if len(auth) == 1 {
			v = auth[0]
		}
		req.Bearer, req.Invalid = parseAuthorization(v)
	}
	g, err := e.decider.Decide(r.Context(), req)
	if err != nil {
		writeRefusal(w, err)
		return
	}
	body, err := appendCredentials(make([]byte, 0, 1024), g.Credential)
	if err != nil {
		e.log.Warn("credential cannot be served as AWS credentials", keyCredential, e.cred, keyDecisionID, g.DecisionID, keyError, err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("credential %q cannot be served as AWS credentials: %v", e.cred, err), g.DecisionID)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, http.StatusOK, body)
}

// credentialsBody is the answer of a container-credentials endpoint, as
// aws-sdk-go-v2's credentials/endpointcreds (and the other SDKs) read it.
type credentialsBody struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"` // RFC 3339, UTC, whole seconds
}

// appendCredentials appends the container-credentials body of c. It fails,
// naming the field but never a value, when c lacks a field or an expiry.
func appendCredentials(b []byte, c providers.Credential) ([]byte, error) {
	field := func(name string) (string, error) {
		s, ok := c.Data[name]
		if !ok || len(s.Reveal()) == 0 {
			return "", fmt.Errorf("its provider yielded no %s", name)
		}
		return string(s.Reveal()), nil
	}
	var body credentialsBody
	var errs []error
	var err error
	if body.AccessKeyID, err = field(awsprov.FieldAccessKeyID); err != nil {
		errs = append(errs, err)
	}
	if body.SecretAccessKey, err = field(awsprov.FieldSecretAccessKey); err != nil {
		errs = append(errs, err)
	}
	if body.Token, err = field(awsprov.FieldSessionToken); err != nil {
		errs = append(errs, err)
	}
	if c.ExpiresAt.IsZero() {
		// Without an Expiration the SDKs would keep the keys for ever.
		errs = append(errs, errors.New("it has no expiry"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Whole seconds, rounded down: the SDK refreshes no later than the
	// credential expires.
	body.Expiration = c.ExpiresAt.UTC().Truncate(time.Second).Format(time.RFC3339)
	j, err := json.Marshal(&body)
	if err != nil {
		// Strings always encode; the error names no value regardless.
		return nil, errors.New("the answer could not be encoded")
	}
	return append(b, j...), nil
}

// errorBody is the endpoint's error: the socket API's error object, with
// its code and message also at the top level, where the AWS SDKs read an
// endpoint's error ({"code","message"}), so that the program's error says
// why it was refused.
type errorBody struct {
	Code    string      `json:"code"`
	Message string      `json:"message"`
	Error   errorDetail `json:"error"`
}

type errorDetail struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	DecisionID string `json:"decision_id,omitempty"`
}

// writeRefusal writes a refusal from Decide with broker.WriteRefusal's
// status, code and message, in errorBody's shape.
func writeRefusal(w http.ResponseWriter, err error) {
	var c capture
	broker.WriteRefusal(&c, err)
	var refusal struct {
		Error errorDetail `json:"error"`
	}
	if json.Unmarshal(c.body.Bytes(), &refusal) != nil || refusal.Error.Code == "" {
		refusal.Error = errorDetail{Code: "unavailable", Message: "internal error"}
	}
	writeError(w, c.status, refusal.Error.Code, refusal.Error.Message, refusal.Error.DecisionID)
}

// writeError writes errorBody with status.
func writeError(w http.ResponseWriter, status int, code, msg, decisionID string) {
	d := errorDetail{Code: code, Message: msg, DecisionID: decisionID}
	b, _ := json.Marshal(errorBody{Code: code, Message: msg, Error: d}) // strings always encode
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, status, b)
}

// writeBody writes the JSON body b, and a new line, with status.
func writeBody(w http.ResponseWriter, status int, b []byte) {
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// capture is a ResponseWriter keeping what broker.WriteRefusal writes.
type capture struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *capture) Header() http.Header {
	if c.header == nil {
		c.header = http.Header{}
	}
	return c.header
}

func (c *capture) WriteHeader(status int) { c.status = status }

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(p)
}
