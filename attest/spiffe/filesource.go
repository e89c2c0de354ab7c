package spiffe

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// fileSource serves the bundle in a JWKS-format SPIFFE bundle file. Each
// lookup stats the file and re-reads it when its identity, size or
// modification time changed (an atomic rename by the writer is the safe way
// to replace it). A file that fails to load leaves the previous bundle in
// use and is logged once.
type fileSource struct {
	td   spiffeid.TrustDomain
	path string
	log  *slog.Logger

	cur atomic.Pointer[fileBundle]

	mu     sync.Mutex  // serialises reloads
	failed os.FileInfo // last version that failed to load, to log it once
}

type fileBundle struct {
	info os.FileInfo
	jwt  *jwtbundle.Bundle
	x509 *x509bundle.Bundle
}

var (
	_ jwtbundle.Source  = (*fileSource)(nil)
	_ x509bundle.Source = (*fileSource)(nil)
)

func newFileSource(td spiffeid.TrustDomain, path string, log *slog.Logger) (*fileSource, error) {
	s := &fileSource{td: td, path: path, log: log}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("spiffe: bundle_file: %w", err)
	}
	b, err := loadBundle(td, path, info)
	if err != nil {
		return nil, err
	}
	s.cur.Store(b)
	return s, nil
}

func loadBundle(td spiffeid.TrustDomain, path string, info os.FileInfo) (*fileBundle, error) {
	b, err := spiffebundle.Load(td, path)
	if err != nil {
		return nil, fmt.Errorf("spiffe: bundle_file %s: %w", path, err)
	}
	if b.Empty() {
		return nil, fmt.Errorf("spiffe: bundle_file %s: no X.509 or JWT authorities", path)
	}
	return &fileBundle{info: info, jwt: b.JWTBundle(), x509: b.X509Bundle()}, nil
}

// current returns the bundle, re-reading the file first if it changed.
func (s *fileSource) current() *fileBundle {
	cur := s.cur.Load()
	info, err := os.Stat(s.path)
	if err != nil || sameVersion(cur.info, info) {
		// A missing file (mid-replacement, or deleted) keeps the last bundle.
		return cur
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur = s.cur.Load(); sameVersion(cur.info, info) {
		return cur // another caller reloaded it
	}
	if s.failed != nil && sameVersion(s.failed, info) {
		return cur
	}
	next, err := loadBundle(s.td, s.path, info)
	if err != nil {
		s.failed = info
		s.log.Warn("spiffe: bundle file changed but does not load; keeping the previous bundle",
			slog.String(logKeySource, s.path), slog.String(logKeyError, err.Error()))
		return cur
	}
	s.failed = nil
	s.cur.Store(next)
	s.log.Info("spiffe: bundle updated",
		slog.String(logKeySource, s.path), slog.String(logKeyTrustDomain, s.td.Name()),
		slog.Int(logKeyJWTKeys, len(next.jwt.JWTAuthorities())),
		slog.Int(logKeyX509CAs, len(next.x509.X509Authorities())))
	return next
}

func sameVersion(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

func (s *fileSource) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	if td != s.td {
		return nil, fmt.Errorf("spiffe: no bundle for trust domain %s", td)
	}
	return s.current().jwt, nil
}

func (s *fileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.td {
		return nil, fmt.Errorf("spiffe: no bundle for trust domain %s", td)
	}
	return s.current().x509, nil
}
