package spiffe

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// spireAgent stands in for the SPIRE agent's SPIFFE Workload API
// (spiffe/workload.proto, the API go-spiffe's workloadapi client speaks) on a
// real Unix socket. Like the real agent it requires the
// "workload.spiffe.io: true" security header, streams the current X.509
// context and JWT bundles on FetchX509SVID / FetchX509Bundles /
// FetchJWTBundles, and pushes a new message on every stream whenever the
// trust domain's authorities rotate. It issues one X.509-SVID (the broker's)
// and no JWT-SVIDs; when noIdentity is set it answers PermissionDenied, as
// SPIRE does for a workload with no registration entry.
type spireAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	td spiffeid.TrustDomain

	mu         sync.Mutex
	svid       *x509svid.SVID
	cas        []*x509.Certificate
	jwtKeys    []jwtKey
	noIdentity bool
	changed    chan struct{} // closed and replaced on every rotation
}

// startSPIREAgent serves the agent on a fresh Unix socket and returns its
// Workload API address ("unix:///…").
func startSPIREAgent(t testing.TB, agent *spireAgent) string {
	t.Helper()
	agent.changed = make(chan struct{})
	// Unix socket paths are limited to 108 bytes; t.TempDir() can exceed it.
	dir, err := os.MkdirTemp("", "spire-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, agent)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return "unix://" + sock
}

// rotate replaces the trust domain's authorities and pushes them to every
// open stream.
func (s *spireAgent) rotate(cas []*x509.Certificate, keys []jwtKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cas != nil {
		s.cas = cas
	}
	if keys != nil {
		s.jwtKeys = keys
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func checkSecurityHeader(ctx context.Context) error {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md["workload.spiffe.io"]) != 1 || md["workload.spiffe.io"][0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func (s *spireAgent) x509Bundle() []byte {
	var der []byte
	for _, c := range s.cas {
		der = append(der, c.Raw...)
	}
	return der
}

// serve sends build()'s message now and after every rotation until the
// client goes away.
func serve[T any](s *spireAgent, ctx context.Context, send func(*T) error, build func() (*T, error)) error {
	if err := checkSecurityHeader(ctx); err != nil {
		return err
	}
	for {
		s.mu.Lock()
		changed := s.changed
		msg, err := build()
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if err := send(msg); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *spireAgent) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	return serve(s, stream.Context(), stream.Send, func() (*workload.X509SVIDResponse, error) {
		if s.noIdentity {
			return nil, status.Error(codes.PermissionDenied, "no identity issued")
		}
		key, err := x509.MarshalPKCS8PrivateKey(s.svid.PrivateKey)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		var chain []byte
		for _, c := range s.svid.Certificates {
			chain = append(chain, c.Raw...)
		}
		return &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
			SpiffeId:    s.svid.ID.String(),
			X509Svid:    chain,
			X509SvidKey: key,
			Bundle:      s.x509Bundle(),
		}}}, nil
	})
}

func (s *spireAgent) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return serve(s, stream.Context(), stream.Send, func() (*workload.X509BundlesResponse, error) {
		if s.noIdentity {
			return nil, status.Error(codes.PermissionDenied, "no identity issued")
		}
		return &workload.X509BundlesResponse{Bundles: map[string][]byte{s.td.IDString(): s.x509Bundle()}}, nil
	})
}

func (s *spireAgent) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return serve(s, stream.Context(), stream.Send, func() (*workload.JWTBundlesResponse, error) {
		if s.noIdentity {
			return nil, status.Error(codes.PermissionDenied, "no identity issued")
		}
		jwks, err := jwtbundle.FromJWTAuthorities(s.td, jwtAuthorities(s.jwtKeys...)).Marshal()
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &workload.JWTBundlesResponse{Bundles: map[string][]byte{s.td.IDString(): jwks}}, nil
	})
}
