package spiffe

import (
	"crypto/x509"
	"errors"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/credbroker/credbroker/attest"
)

// AttestCertificate verifies the certificate chain an mTLS client presented
// (leaf first, as in tls.ConnectionState.PeerCertificates): the leaf is an
// X.509-SVID whose SPIFFE ID is in the trust domain, it is valid at
// Config.Now, and it chains to the trust domain's current X.509 bundle. The
// Identity's Subject is the SPIFFE ID.
func (a *Attestor) AttestCertificate(chain []*x509.Certificate) (attest.Identity, error) {
	if len(chain) == 0 || chain[0] == nil {
		return attest.Identity{}, failf(nil, ReasonNoCertificate)
	}
	leaf := chain[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return attest.Identity{}, failf(err, ReasonNoSPIFFEID)
	}
	if id.TrustDomain() != a.td {
		return attest.Identity{}, failf(nil, reasonUntrustedTDPattern, id.TrustDomain().Name())
	}
	now := a.now()
	switch {
	case leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return attest.Identity{}, failf(nil, ReasonNotLeaf)
	case now.After(leaf.NotAfter):
		return attest.Identity{}, failf(nil, ReasonCertExpired)
	case now.Before(leaf.NotBefore):
		return attest.Identity{}, failf(nil, ReasonCertNotYetValid)
	}
	if _, _, err := x509svid.Verify(chain, a.bundles, x509svid.WithTime(now)); err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			// An intermediate expired.
			return attest.Identity{}, failf(err, ReasonCertExpired)
		}
		return attest.Identity{}, failf(err, ReasonCertNotSigned)
	}
	return attest.Identity{
		Method:  attest.MethodSPIFFE,
		Subject: id.String(),
		Claims: map[string]any{
			ClaimTrustDomain: id.TrustDomain().Name(),
			ClaimPath:        id.Path(),
		},
	}, nil
}
