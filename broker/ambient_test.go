package broker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers/static"
)

// unseenPeer stands for a TCP caller the broker cannot see — in another
// network or pid namespace — as attest/unix's AttestTCP reports it for
// real (TestAttestTCP's pid namespace case): a failure wrapping
// attest.ErrNoPeer.
type unseenPeer struct{}

func (unseenPeer) Attest(context.Context, net.Conn) (attest.Identity, error) {
	return attest.Identity{}, &attest.Error{Method: attest.MethodUnix, Reason: "no peer process visible", Err: attest.ErrNoPeer}
}

// TestAmbientIfNoPeer: a listener that allows it lets the ambient identity
// stand in for a caller the broker cannot see; without that, or for a
// caller that was seen and failed, the request is refused; and a policy
// that also requires the caller's process is not satisfied by the ambient
// identity alone.
func TestAmbientIfNoPeer(t *testing.T) {
	route, token := kubernetesRoute(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "demo")
	if err := os.WriteFile(secret, []byte("s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := policies.Compile([]policies.File{{Name: "p.yaml", Data: []byte(`policies:
  - name: payments-pod
    effect: allow
    workloads: [{kubernetes: {namespace: payments}}]
    credentials: [demo]
  - name: payments-process
    effect: allow
    workloads: [{all: [{kubernetes: {namespace: payments}}, {unix: {uid: 0}}]}]
    credentials: [process-bound]
`)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log, err := audit.Open(ctx, audit.Config{Path: filepath.Join(dir, "audit.db")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- log.Run(ctx) }()
	defer func() { cancel(); <-done; log.Close() }()
	demo, err := static.New(static.Config{Name: "demo", File: secret, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{
		Peer: unseenPeer{}, Tokens: []broker.TokenRoute{route},
		Ambient:     func() (string, error) { return token, nil },
		Credentials: map[string]broker.Provider{"demo": demo, "process-bound": demo},
		Policies:    set, Audit: log, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	for _, tt := range []struct {
		name, credential string
		allow            bool
		kind             broker.Kind
	}{
		{"allowed to stand in", "demo", true, 0},
		{"not allowed to stand in", "demo", false, broker.KindUnauthenticated},
		{"a policy that needs the process", "process-bound", true, broker.KindDenied},
	} {
		g, err := b.Decide(ctx, &broker.Request{Credential: tt.credential, Channel: broker.ChannelHTTP, Conn: server, AmbientIfNoPeer: tt.allow})
		var e *broker.Error
		switch {
		case tt.kind == 0 && (err != nil || g.Credential.Subject != "system:serviceaccount:payments:api"):
			t.Errorf("%s: %v, grant %+v", tt.name, err, g)
		case tt.kind != 0 && (!errors.As(err, &e) || e.Kind != tt.kind):
			t.Errorf("%s: %v, want kind %d", tt.name, err, tt.kind)
		}
	}
}
