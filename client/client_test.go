package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/client"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	t.Cleanup(cancel)
	return ctx
}

func TestGet(t *testing.T) {
	before := time.Now()
	cred, err := client.New(shared.socket).Get(ctxT(t), "demo")
	if err != nil {
		t.Fatal(err)
	}
	if cred.Name != "demo" || cred.Kind != "static" || cred.Data["value"] != sharedSecret || cred.LeaseID == "" || cred.DecisionID == "" {
		t.Fatalf("got %#v (value %q)", cred, cred.Data["value"])
	}
	// The policy's 10 minutes cap the static credential's hour.
	if exp := cred.ExpiresAt; exp.Before(before.Add(10*time.Minute)) || exp.After(time.Now().Add(10*time.Minute)) {
		t.Errorf("expires at %v, want 10m after the request", exp)
	}
}

// TestNewSocket: an empty path means $CREDBROKER_SOCKET (set by TestMain),
// else DefaultSocket.
func TestNewSocket(t *testing.T) {
	if got := client.New("").Socket(); got != shared.socket {
		t.Errorf("with %s set: %s", client.SocketEnv, got)
	}
	t.Setenv(client.SocketEnv, "")
	if got := client.New("").Socket(); got != client.DefaultSocket {
		t.Errorf("without: %s", got)
	}
	if got := client.New("/x.sock").Socket(); got != "/x.sock" {
		t.Errorf("given: %s", got)
	}
}

// TestRefusals maps each refusal of the real broker to its sentinel, with
// the broker's code, status, message and decision id.
func TestRefusals(t *testing.T) {
	sentinels := []error{client.ErrDenied, client.ErrUnauthenticated, client.ErrNotFound, client.ErrBadRequest, client.ErrUnavailable, client.ErrUnreachable}
	badToken := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(badToken, []byte("e30.e30.c2ln\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, credential string
		opts             []client.Option
		want             error
		status           int
		code, message    string
	}{
		{name: "denied by a rule", credential: "forbidden", want: client.ErrDenied, status: 403, code: "denied", message: "denied by policy nobody-reads-forbidden"},
		{name: "not configured", credential: "nope", want: client.ErrNotFound, status: 404, code: "not_found", message: `"nope"`},
		{name: "bad name", credential: "no such/name!", want: client.ErrBadRequest, status: 400, code: "bad_request", message: "credential name"},
		{name: "bad token", credential: "demo", opts: []client.Option{client.WithTokenFile(badToken)}, want: client.ErrUnauthenticated, status: 401, code: "unauthenticated", message: "token"},
		{name: "aws evidence without the aws attestor", credential: "demo", want: client.ErrUnauthenticated, status: 401, code: "unauthenticated", message: "aws",
			opts: []client.Option{client.WithAWSIAM(func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil })}},
		{name: "provider failed", credential: "gone", want: client.ErrUnavailable, status: 503, code: "unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.New(shared.socket, tt.opts...).Get(ctxT(t), tt.credential)
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want an *Error", err, err)
			}
			if e.Status != tt.status || e.Code != tt.code || e.DecisionID == "" || !strings.Contains(e.Message, tt.message) {
				t.Errorf("error %+v, want status %d, code %s, a decision id and a message with %q", e, tt.status, tt.code, tt.message)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, !(s == tt.want))
				}
			}
			if strings.Contains(err.Error(), sharedSecret) {
				t.Errorf("the error holds the secret: %v", err)
			}
		})
	}
}

// TestUnreachable: a socket path with no file, and one whose file nobody
// listens on, are ErrUnreachable, named in the message with the way to
// name another.
func TestUnreachable(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "cbc-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	stale := filepath.Join(dir, "stale")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	for path, cause := range map[string]string{filepath.Join(dir, "missing"): "no such file or directory", stale: "connection refused"} {
		_, err := client.New(path).Get(ctxT(t), "demo")
		if !errors.Is(err, client.ErrUnreachable) || errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("%s: %v, want ErrUnreachable only", path, err)
		}
		for _, want := range []string{"cannot reach the broker at " + path + ": connect: " + cause, "--socket", "$CREDBROKER_SOCKET"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q lacks %q", err, want)
			}
		}
	}
}

// TestLocalFailures: what the client refuses before sending, and evidence
// it cannot obtain, are plain errors naming the cause.
func TestLocalFailures(t *testing.T) {
	dir := t.TempDir()
	empty, big := filepath.Join(dir, "empty"), filepath.Join(dir, "big")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	os.WriteFile(big, []byte(strings.Repeat("a", client.MaxTokenBytes+1)), 0o600)
	tests := []struct {
		name, credential string
		opts             []client.Option
		want             string
	}{
		{name: "empty name", want: "empty credential name"},
		{name: "missing token file", opts: []client.Option{client.WithTokenFile(filepath.Join(dir, "none"))}, want: "bearer token: open " + dir + "/none: no such file"},
		{name: "empty token file", opts: []client.Option{client.WithTokenFile(empty)}, want: "is empty"},
		{name: "token file too big", opts: []client.Option{client.WithTokenFile(big)}, want: "over 16384 bytes"},
		{name: "token on two lines", opts: []client.Option{client.WithToken(func(context.Context) (string, error) { return "a\nb", nil })}, want: "spanning lines"},
		{name: "signing failed", opts: []client.Option{client.WithAWSIAM(func(context.Context) (json.RawMessage, error) { return nil, errors.New("no aws credentials") })}, want: "aws identity: no aws credentials"},
	}
	for _, tt := range tests {
		name := tt.credential
		if name == "" && tt.name != "empty name" {
			name = "demo"
		}
		_, err := client.New(shared.socket, tt.opts...).Get(ctxT(t), name)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := client.New(shared.socket).Get(ctxT(t), ""); !errors.Is(err, client.ErrBadRequest) {
		t.Errorf("empty name: %v, want ErrBadRequest", err)
	}
}

// TestMisbehavingPeer: a peer on the socket that is not a broker (a stand-in
// HTTP server) — a reply over the bound, a connection closed without a
// reply, a status the broker does not send — gives bounded errors that
// never quote the body.
func TestMisbehavingPeer(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "cbc-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/credentials/huge":
			w.Write([]byte(`{"name":"huge","data":{"value":"` + strings.Repeat("S", client.MaxReplyBytes) + `"}}`))
		case "/v1/credentials/hangup":
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		case "/v1/credentials/teapot":
			w.WriteHeader(http.StatusTeapot)
			w.Write([]byte("SECRET-IN-BODY"))
		case "/v1/credentials/gateway":
			w.WriteHeader(http.StatusBadGateway)
		case "/v1/credentials/garbled":
			w.Write([]byte(`{"name":"garbled","data":{"value":"SECRET-IN-BODY"}`))
		}
	})}
	go srv.Serve(l)
	defer srv.Close()
	c := client.New(sock)
	for name, want := range map[string]string{
		"huge":    "reply over 1048576 bytes",
		"hangup":  "credbroker: unavailable: broker at " + sock,
		"teapot":  "credbroker: the broker answered 418 I'm a teapot (418 bad_request)",
		"gateway": "credbroker: the broker answered 502 Bad Gateway (502 unavailable)",
		"garbled": "credbroker: malformed reply (",
	} {
		_, err := c.Get(ctxT(t), name)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "SSSS") {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
	if _, err := c.Get(ctxT(t), "hangup"); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("hangup: %v, want ErrUnavailable", err)
	}
}

// TestContextEnds: a request whose context ends is that context's error.
func TestContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := client.New(shared.socket).Get(ctx, "demo")
	if !errors.Is(err, context.Canceled) || errors.Is(err, client.ErrUnreachable) || errors.Is(err, client.ErrUnavailable) {
		t.Errorf("%v, want context.Canceled only", err)
	}
}
