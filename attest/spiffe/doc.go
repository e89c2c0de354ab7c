// Package spiffe attests SPIFFE workloads: a JWT-SVID presented as a bearer
// token, or an X.509-SVID presented as an mTLS client certificate.
//
// # Contract
//
// An Attestor trusts exactly one trust domain (Config.TrustDomain) and takes
// its authorities from one source:
//
//   - Config.BundleFile, a SPIFFE bundle in JWKS format with both X.509 and
//     JWT authorities. The file is stat'ed on every lookup and re-read when
//     it changes; replace it atomically (write, then rename). A version that
//     does not load is logged once and the previous bundle stays in use.
//   - Config.WorkloadAPI, the SPIFFE Workload API of a local SPIRE agent.
//     New blocks until the first bundles (and the broker's own X.509-SVID)
//     arrive; afterwards go-spiffe streams keep them current as the trust
//     domain rotates its keys, until Close.
//
// Attest accepts a JWT-SVID only if it is at most MaxTokenSize bytes, is
// signed (RS*, ES* or PS*) by a JWT authority of the current bundle under the
// token's kid, has a SPIFFE ID of the trust domain as its subject, names one
// of Config.Audiences, and is within its validity at Config.Now (and at the
// wall clock, which go-spiffe checks). AttestCertificate accepts a chain whose
// leaf is an X.509-SVID of the trust domain, valid at Config.Now, that chains
// to the current X.509 bundle. SVIDs of any other trust domain are refused
// ("trust domain NAME is not trusted"), even if the Workload API also
// delivers federated bundles.
//
// The Identity has Method "spiffe", Subject the SPIFFE ID
// ("spiffe://example.org/ns/payments/sa/api") and claims trust_domain and
// path; JWT-SVIDs add audience ([]any of string) and expiry (int64 unix
// seconds). Every failure is an *attest.Error whose Reason is one of the
// Reason constants (or the untrusted trust domain message), says what to fix,
// and never contains the token; Err carries go-spiffe's detail for logs.
//
// TLSConfig gives an mTLS listener a server configuration that requires and
// verifies client X.509-SVIDs of the trust domain; with only a bundle file
// the caller supplies the server certificate.
//
// # Usage
//
//	a, err := spiffe.New(ctx, spiffe.Config{
//		TrustDomain: "example.org",
//		Audiences:   []string{"credbroker"},
//		WorkloadAPI: "unix:///run/spire/agent.sock",
//		Logger:      logger,
//	})
//	if err != nil {
//		return err
//	}
//	defer a.Close()
//	go a.Run(ctx)
//	id, err := a.Attest(ctx, bearerToken)
package spiffe
