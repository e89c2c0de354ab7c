package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/credbroker/credbroker/internal/jsonappend"
	"github.com/credbroker/credbroker/providers"
)

// Limits of the socket API. A request over them is refused before it is
// read whole.
const (
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes = 64 << 10
	// MaxHeaderBytes bounds a request's header block.
	MaxHeaderBytes = 16 << 10
)

// RequestHeader must be present, with value "1", on every socket API
// request: a browser or an SSRF-able proxy cannot be made to add it.
const RequestHeader = "Credbroker-Request"

type connKey struct{}

// NewSocketServer returns the HTTP server of the socket API, ready for
// Serve on a listener from ListenUnix, or on a TLS listener that requires
// client certificates (the mTLS listener), either of them possibly wrapped
// by LimitListener. Each request's connection is kept in its context so the
// handler can attest the peer.
func (b *Broker) NewSocketServer(errLog *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           b.Handler(),
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(errLog.Handler(), slog.LevelWarn),
		ConnContext:       ConnContext,
	}
}

// ConnContext is the ConnContext of an http.Server whose callers the broker
// attests (the socket API, injection listeners): it keeps each request's
// connection in its context, for RequestConn.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, unlimited(c))
}

// RequestConn returns the connection r arrived on, as ConnContext kept it
// (unwrapped from LimitListener), or nil.
func RequestConn(r *http.Request) net.Conn {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	return c
}

// WriteRefusal writes a refusal from Decide as the socket API does: JSON
// {"error":{"code","message","decision_id"}} with the matching status.
func WriteRefusal(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Kind: KindUnavailable, Message: "internal error", Err: err}
	}
	status, code := statusOf(e.Kind)
	writeError(w, status, code, e.Message, e.DecisionID)
}

// Handler serves the socket API:
//
//	GET|POST /v1/credentials/{name}   with header Credbroker-Request: 1
//
// Any other request (another path, another method, HEAD included) is a
// refusal, decided and recorded like any other: the caller is attested and
// gets the JSON error shape.
func (b *Broker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/credentials/{name}", b.serveCredential)
	mux.HandleFunc("POST /v1/credentials/{name}", b.serveCredential)
	// GET patterns also match HEAD, whose reply has no body: a HEAD must
	// not obtain a credential nobody can read.
	mux.HandleFunc("HEAD /v1/credentials/{name}", b.serveUnrouted)
	mux.HandleFunc("/", b.serveUnrouted)
	return mux
}

// errUnrouted is the refusal of a request no route of the API matches.
var errUnrouted = &Error{Kind: KindNotFound, Message: "unknown endpoint; use GET or POST /v1/credentials/{name}"}

// credentialBody is the optional JSON body of a credential request. Unknown
// fields are refused.
type credentialBody struct {
	AWSIAM json.RawMessage `json:"aws_iam,omitempty"`
}

// reply is the success body of the socket API, as appendReply writes it.
type reply struct {
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Data       map[string]string `json:"data"`
	ExpiresAt  time.Time         `json:"expires_at"`
	LeaseID    string            `json:"lease_id"`
	DecisionID string            `json:"decision_id"`
}

func (b *Broker) serveCredential(w http.ResponseWriter, r *http.Request) {
	req := b.request(r, r.PathValue("name"))
	body, err := decodeCredentialRequest(w, r)
	if err == nil {
		req.AWSIAM = body.AWSIAM
		req.Bearer, err = bearerToken(r.Header.Get("Authorization"))
	}
	req.Invalid = err
	b.serve(w, r, req)
}

// serveUnrouted refuses, and records, a request no route matches.
func (b *Broker) serveUnrouted(w http.ResponseWriter, r *http.Request) {
	req := b.request(r, "")
	req.Invalid = errUnrouted
	b.serve(w, r, req)
}

// request is the broker's view of r, for credential name.
func (b *Broker) request(r *http.Request, name string) *Request {
	req := &Request{
		Credential: name,
		Channel:    ChannelSocket,
		Method:     r.Method,
		Path:       r.URL.Path,
	}
	if r.TLS != nil {
		req.Channel, req.PeerCerts = ChannelMTLS, r.TLS.PeerCertificates
	} else {
		req.Conn = RequestConn(r)
	}
	return req
}

// serve decides req and writes the reply.
func (b *Broker) serve(w http.ResponseWriter, r *http.Request, req *Request) {
	g, err := b.Decide(r.Context(), req)
	if err != nil {
		WriteRefusal(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, http.StatusOK, appendReply(make([]byte, 0, 512), g))
}

// appendReply appends the success body for g: the JSON of reply, with the
// credential's fields in name order, written directly.
func appendReply(b []byte, g *Grant) []byte {
	c := &g.Credential
	b = append(b, `{"name":`...)
	b = jsonappend.String(b, g.Name)
	b = append(b, `,"kind":`...)
	b = jsonappend.String(b, c.Kind)
	b = append(b, `,"data":{`...)
	b, _ = jsonappend.Members(b, c.Data, func(b []byte, _ string, v providers.Secret) ([]byte, error) {
		return jsonappend.String(b, string(v.Reveal())), nil
	})
	b = append(b, `},"expires_at":"`...)
	b = c.ExpiresAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","lease_id":`...)
	b = jsonappend.String(b, c.ID)
	b = append(b, `,"decision_id":`...)
	b = jsonappend.String(b, g.DecisionID)
	return append(b, '}')
}

// decodeCredentialRequest checks the request header and decodes the body;
// an error is a caller-safe description of what is wrong.
func decodeCredentialRequest(w http.ResponseWriter, r *http.Request) (credentialBody, error) {
	if r.Header.Get(RequestHeader) != "1" {
		return credentialBody{}, fmt.Errorf("missing header %s: 1", RequestHeader)
	}
	if r.ContentLength > MaxBodyBytes {
		return credentialBody{}, fmt.Errorf("request body over %d bytes", MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return credentialBody{}, fmt.Errorf("request body over %d bytes", MaxBodyBytes)
		}
		return credentialBody{}, errors.New("request body could not be read")
	}
	return parseCredentialBody(body)
}

// parseCredentialBody decodes the optional JSON body strictly.
func parseCredentialBody(body []byte) (credentialBody, error) {
	var cb credentialBody
	if len(bytes.TrimSpace(body)) == 0 {
		return cb, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cb); err != nil {
		return credentialBody{}, fmt.Errorf("malformed JSON body: %s", describeJSONError(err))
	}
	if dec.More() {
		return credentialBody{}, errors.New("malformed JSON body: more than one JSON value")
	}
	if string(cb.AWSIAM) == "null" {
		cb.AWSIAM = nil
	}
	return cb, nil
}

// describeJSONError gives a caller-safe summary of a decoding error: its
// position and kind, never the offending bytes themselves.
func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected end of input"
	default:
		// json's unknown-field error quotes the field name, which the caller
		// chose; keep only that it was unknown.
		return "unknown field or invalid value (accepted: aws_iam)"
	}
}

func statusOf(k Kind) (int, string) {
	switch k {
	case KindBadRequest:
		return http.StatusBadRequest, "bad_request"
	case KindUnauthenticated:
		return http.StatusUnauthorized, "unauthenticated"
	case KindDenied:
		return http.StatusForbidden, "denied"
	case KindNotFound:
		return http.StatusNotFound, "not_found"
	default:
		return http.StatusServiceUnavailable, "unavailable"
	}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	DecisionID string `json:"decision_id,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg, decisionID string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg, DecisionID: decisionID}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"reply not encodable"}}`)
	}
	writeBody(w, status, b)
}

// writeBody writes the JSON body b, and a new line, with status.
func writeBody(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
