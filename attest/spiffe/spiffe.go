package spiffe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/credbroker/credbroker/attest"
)

// Attestor verifies JWT-SVIDs and X.509-SVIDs of one trust domain. It is safe
// for concurrent use.
type Attestor struct {
	td        spiffeid.TrustDomain
	audiences []string
	now       func() time.Time
	log       *slog.Logger

	// bundles answers for a.td only; both sources below are wrapped in it.
	bundles trustDomainOnly

	// Workload API mode only.
	client  *workloadapi.Client
	apiSrc  *workloadapi.BundleSource
	svidSrc *workloadapi.X509Source

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and returns an Attestor with the trust domain's bundle
// loaded. With BundleFile the file must hold a valid bundle now. With
// WorkloadAPI, New connects and blocks until the first X.509 context (the
// broker's own X.509-SVID and bundles) and the first JWT bundles have
// arrived, or ctx is done. It fails closed: no Attestor without a bundle.
func New(ctx context.Context, cfg Config) (*Attestor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	td, _ := parseTrustDomain(cfg.TrustDomain) // checked by Validate
	a := &Attestor{
		td:        td,
		audiences: append([]string(nil), cfg.Audiences...),
		now:       cfg.Now,
		log:       cfg.Logger,
	}
	if cfg.BundleFile != "" {
		src, err := newFileSource(td, cfg.BundleFile, cfg.Logger)
		if err != nil {
			return nil, err
		}
		a.bundles = trustDomainOnly{td: td, jwt: src, x509: src}
		return a, nil
	}
	if err := a.connect(ctx, cfg.WorkloadAPI); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Attestor) connect(ctx context.Context, addr string) error {
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr), workloadapi.WithLogger(workloadLogger{a.log}))
	if err != nil {
		return fmt.Errorf("spiffe: workload api %s: %w", addr, err)
	}
	bundles, err := workloadapi.NewBundleSource(ctx, workloadapi.WithClient(client))
	if err != nil {
		client.Close()
		return fmt.Errorf("spiffe: workload api %s: waiting for bundles: %w", addr, err)
	}
	svids, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(client))
	if err != nil {
		bundles.Close()
		client.Close()
		return fmt.Errorf("spiffe: workload api %s: waiting for the broker's x509-svid: %w", addr, err)
	}
	if _, err := bundles.GetJWTBundleForTrustDomain(a.td); err != nil {
		svids.Close()
		bundles.Close()
		client.Close()
		return fmt.Errorf("spiffe: workload api %s: no JWT bundle for trust domain %s: %w", addr, a.td, err)
	}
	a.client, a.apiSrc, a.svidSrc = client, bundles, svids
	a.bundles = trustDomainOnly{td: a.td, jwt: bundles, x509: bundles}
	return nil
}

// Run keeps the bundle sources current until ctx is done, then returns nil.
// With WorkloadAPI the go-spiffe sources stream updates on their own
// goroutines (started by New, stopped by Close) and Run logs each update;
// with BundleFile the file is re-read lazily on use, so Run only waits.
func (a *Attestor) Run(ctx context.Context) error {
	if a.apiSrc == nil {
		<-ctx.Done()
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.apiSrc.Updated():
			attrs := []any{slog.String(logKeySource, "workload_api"), slog.String(logKeyTrustDomain, a.td.Name())}
			if b, err := a.apiSrc.GetJWTBundleForTrustDomain(a.td); err == nil {
				attrs = append(attrs, slog.Int(logKeyJWTKeys, len(b.JWTAuthorities())))
			}
			if b, err := a.apiSrc.GetX509BundleForTrustDomain(a.td); err == nil {
				attrs = append(attrs, slog.Int(logKeyX509CAs, len(b.X509Authorities())))
			}
			a.log.InfoContext(ctx, "spiffe: bundle updated", attrs...)
		}
	}
}

// Close stops the Workload API streams; later calls return the first
// call's result. It is a no-op in bundle-file mode. Attest and
// AttestCertificate fail after Close in Workload API mode.
func (a *Attestor) Close() error {
	if a.client == nil {
		return nil
	}
	a.closeOnce.Do(func() {
		a.closeErr = errors.Join(a.svidSrc.Close(), a.apiSrc.Close(), a.client.Close())
	})
	return a.closeErr
}

// TLSConfig returns a server-side configuration for an mTLS listener that
// requires a client certificate and accepts only X.509-SVIDs that chain to
// the trust domain's current X.509 bundle and name a member of it. The
// listener should still pass the verified peer chain to AttestCertificate to
// get the Identity (which also applies Config.Now).
//
// With WorkloadAPI the server presents the broker's own X.509-SVID, rotated
// as the agent renews it. With only BundleFile there is no server identity:
// the returned config has no certificate, and the caller must set
// Certificates or GetCertificate (for example a certificate issued to the
// broker by the same SPIRE server) before using it.
func (a *Attestor) TLSConfig() *tls.Config {
	authorize := tlsconfig.AuthorizeMemberOf(a.td)
	if a.svidSrc != nil {
		return tlsconfig.MTLSServerConfig(a.svidSrc, a.bundles, authorize)
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS12,
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: tlsconfig.VerifyPeerCertificate(a.bundles, authorize),
	}
}

// trustDomainOnly narrows bundle sources to a single trust domain, so that
// federated bundles a Workload API may also deliver are never used.
type trustDomainOnly struct {
	td   spiffeid.TrustDomain
	jwt  jwtbundle.Source
	x509 x509bundle.Source
}

var (
	_ jwtbundle.Source  = trustDomainOnly{}
	_ x509bundle.Source = trustDomainOnly{}
)

func (s trustDomainOnly) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	if td != s.td {
		return nil, fmt.Errorf("spiffe: trust domain %s is not trusted", td)
	}
	return s.jwt.GetJWTBundleForTrustDomain(td)
}

func (s trustDomainOnly) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.td {
		return nil, fmt.Errorf("spiffe: trust domain %s is not trusted", td)
	}
	return s.x509.GetX509BundleForTrustDomain(td)
}

// workloadLogger adapts slog to go-spiffe's logger interface.
type workloadLogger struct{ l *slog.Logger }

func (w workloadLogger) Debugf(format string, args ...any) {
	w.l.Debug("spiffe: workload api: " + fmt.Sprintf(format, args...))
}
func (w workloadLogger) Infof(format string, args ...any) {
	w.l.Info("spiffe: workload api: " + fmt.Sprintf(format, args...))
}
func (w workloadLogger) Warnf(format string, args ...any) {
	w.l.Warn("spiffe: workload api: " + fmt.Sprintf(format, args...))
}
func (w workloadLogger) Errorf(format string, args ...any) {
	w.l.Error("spiffe: workload api: " + fmt.Sprintf(format, args...))
}

// failf is attest.Failf for this method with the internal cause attached.
func failf(cause error, format string, args ...any) *attest.Error {
	e := attest.Failf(attest.MethodSPIFFE, format, args...)
	e.Err = cause
	return e
}
