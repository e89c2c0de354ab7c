package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultSocket is the socket API's path when neither the caller nor
// $CREDBROKER_SOCKET names one; it is also the broker's own default.
const DefaultSocket = "/run/credbroker/broker.sock"

// SocketEnv is the environment variable that names the socket when New is
// given none.
const SocketEnv = "CREDBROKER_SOCKET"

// Limits of what the client reads and sends.
const (
	// MaxReplyBytes bounds a reply from the broker; a longer one is an
	// error, not read whole.
	MaxReplyBytes = 1 << 20
	// MaxTokenBytes bounds a bearer token: the broker refuses header blocks
	// over 16 KiB.
	MaxTokenBytes = 16 << 10
)

// requestHeader must be on every socket API request (broker.RequestHeader).
const requestHeader = "Credbroker-Request"

// Client asks one broker for credentials. It is safe for concurrent use;
// its connections to the broker are kept open between requests.
type Client struct {
	socket string
	hc     *http.Client
	token  func(context.Context) (string, error)
	awsIAM func(context.Context) (json.RawMessage, error)
}

// Option configures a Client.
type Option func(*Client)

// WithToken presents a bearer token as evidence of the caller's identity:
// token is called for every request, so a token that rotates is read anew.
func WithToken(token func(ctx context.Context) (string, error)) Option {
	return func(c *Client) { c.token = token }
}

// WithTokenFile presents the token in the file at path as evidence, read
// for every request (Kubernetes rewrites projected tokens in place).
// Surrounding white space is ignored; an empty file is an error.
func WithTokenFile(path string) Option {
	return WithToken(func(context.Context) (string, error) { return readToken(path) })
}

// WithAWSIAM proves an AWS IAM identity: sign is called for every request
// and returns the JSON of a signed sts:GetCallerIdentity request, as
// attest/aws.Sign builds it; the client sends it as the body's "aws_iam".
// A signature is good for one request, so it must not be cached.
func WithAWSIAM(sign func(ctx context.Context) (json.RawMessage, error)) Option {
	return func(c *Client) { c.awsIAM = sign }
}

// New returns a client of the broker listening on the Unix socket at path;
// an empty path means $CREDBROKER_SOCKET, else DefaultSocket. New does not
// connect: the first request does.
func New(socket string, opts ...Option) *Client {
	if socket == "" {
		socket = os.Getenv(SocketEnv)
	}
	if socket == "" {
		socket = DefaultSocket
	}
	c := &Client{socket: socket}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext:         c.dial,
		MaxIdleConnsPerHost: 4,
		// Under the broker's 2-minute idle timeout, so that a request is
		// not sent on a connection the broker is closing.
		IdleConnTimeout:    90 * time.Second,
		DisableCompression: true,
	}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Socket returns the path of the socket the client connects to.
func (c *Client) Socket() string { return c.socket }

// CloseIdleConnections closes the client's idle connections to the broker.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// dialError marks a failure to connect, as opposed to one on a connection.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, &dialError{err}
	}
	return conn, nil
}

// Get asks the broker for the credential name. A refusal is an *Error that
// matches one of the sentinels with errors.Is; a socket nobody listens on
// is ErrUnreachable. ctx bounds the whole request.
func (c *Client) Get(ctx context.Context, name string) (*Credential, error) {
	if name == "" {
		return nil, &Error{Code: CodeBadRequest, Message: "empty credential name"}
	}
	req, err := c.newRequest(ctx, name)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: broker at %s: reading its reply: %v", ErrUnavailable, c.socket, err)
	}
	if len(body) > MaxReplyBytes {
		return nil, fmt.Errorf("credbroker: broker at %s: reply over %d bytes", c.socket, MaxReplyBytes)
	}
	return parseReply(resp.StatusCode, body)
}

// newRequest builds the socket API request for name: a GET, or a POST
// when there is evidence to send in the body.
func (c *Client) newRequest(ctx context.Context, name string) (*http.Request, error) {
	method, body := http.MethodGet, []byte(nil)
	if c.awsIAM != nil {
		signed, err := c.awsIAM(ctx)
		if err != nil {
			return nil, fmt.Errorf("credbroker: aws identity: %w", err)
		}
		if body, err = json.Marshal(map[string]json.RawMessage{"aws_iam": signed}); err != nil {
			return nil, fmt.Errorf("credbroker: aws identity: %w", err)
		}
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://credbroker/v1/credentials/"+url.PathEscape(name), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("credbroker: %w", err)
	}
	req.Header.Set(requestHeader, "1")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != nil {
		tok, err := c.token(ctx)
		if err != nil {
			return nil, fmt.Errorf("credbroker: bearer token: %w", err)
		}
		if len(tok) > MaxTokenBytes || strings.ContainsAny(tok, "\r\n") {
			return nil, fmt.Errorf("credbroker: bearer token: over %d bytes or spanning lines", MaxTokenBytes)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return req, nil
}

// transportError describes a request that got no reply: ErrUnreachable
// when the socket could not be connected to, ErrUnavailable when the
// connection failed later, the context's error when it ended first.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("credbroker: broker at %s: %w", c.socket, ctx.Err())
	}
	var de *dialError
	if errors.As(err, &de) {
		return fmt.Errorf("%w at %s: %w; is it running, and is that its socket? (credbroker's --socket flag or $%s names another)",
			ErrUnreachable, c.socket, dialCause(de.err), SocketEnv)
	}
	return fmt.Errorf("%w: broker at %s: %w", ErrUnavailable, c.socket, errors.Unwrap(err))
}

// dialCause strips what a dial error repeats ("dial unix PATH: "), keeping
// the system call and its error ("connect: no such file or directory").
func dialCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// readToken reads a bearer token file, bounded.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxTokenBytes+1))
	if err != nil {
		return "", err
	}
	if len(b) > MaxTokenBytes {
		return "", fmt.Errorf("token file %s is over %d bytes", path, MaxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}
