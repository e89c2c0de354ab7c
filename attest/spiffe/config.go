package spiffe

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Claim names of a spiffe Identity.
const (
	ClaimTrustDomain = "trust_domain" // string, e.g. "example.org"
	ClaimPath        = "path"         // string, the SPIFFE ID's path, e.g. "/ns/payments/sa/api"
	ClaimAudience    = "audience"     // []any of string, JWT-SVIDs only
	ClaimExpiry      = "expiry"       // int64 unix seconds, JWT-SVIDs only
)

// MaxTokenSize is the largest JWT-SVID Attest parses; longer tokens are
// refused before any parsing.
const MaxTokenSize = 16 << 10

// Log attribute keys.
const (
	logKeySource      = "source"
	logKeyTrustDomain = "trust_domain"
	logKeyError       = "error"
	logKeyJWTKeys     = "jwt_authorities"
	logKeyX509CAs     = "x509_authorities"
)

// Config configures an Attestor. Exactly one of BundleFile and WorkloadAPI
// must be set.
type Config struct {
	// TrustDomain is the only trust domain whose SVIDs are accepted, such as
	// "example.org" (a "spiffe://example.org" form is accepted too).
	// Required.
	TrustDomain string
	// Audiences are the broker's own audiences; a JWT-SVID must name at
	// least one of them in its aud claim. Required.
	Audiences []string
	// BundleFile is a SPIFFE bundle in JWKS format (as written by
	// "spire-server bundle show -format spiffe") holding the trust domain's
	// X.509 and JWT authorities. It is re-read when its size, modification
	// time or inode changes; if a re-read fails the last good bundle stays in
	// use. No default.
	BundleFile string
	// WorkloadAPI is the address of the SPIFFE Workload API, such as
	// "unix:///run/spire/agent.sock". Bundles (and the broker's own X.509-SVID
	// for TLSConfig) are streamed from it and kept current as they rotate.
	// No default.
	WorkloadAPI string
	// Now is the clock for expiry checks. Default time.Now.
	Now func() time.Time
	// Logger receives the attestor's own logs. Default: discard.
	Logger *slog.Logger
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.TrustDomain == "" {
		errs = append(errs, errors.New("spiffe: trust_domain is required"))
	} else if _, err := parseTrustDomain(c.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("spiffe: trust_domain %q: %w", c.TrustDomain, err))
	}
	if len(c.Audiences) == 0 {
		errs = append(errs, errors.New("spiffe: audiences is required"))
	}
	for i, aud := range c.Audiences {
		if aud == "" {
			errs = append(errs, fmt.Errorf("spiffe: audiences[%d] is empty", i))
		}
	}
	switch {
	case c.BundleFile == "" && c.WorkloadAPI == "":
		errs = append(errs, errors.New("spiffe: one of bundle_file and workload_api is required"))
	case c.BundleFile != "" && c.WorkloadAPI != "":
		errs = append(errs, errors.New("spiffe: bundle_file and workload_api are mutually exclusive"))
	case c.BundleFile != "" && !filepath.IsAbs(c.BundleFile):
		// Relative paths are resolved by the config loader; by here they are absolute.
		errs = append(errs, fmt.Errorf("spiffe: bundle_file %q must be an absolute path", c.BundleFile))
	case c.WorkloadAPI != "":
		if u, err := url.Parse(c.WorkloadAPI); err != nil || (u.Scheme != "unix" && u.Scheme != "tcp") {
			errs = append(errs, fmt.Errorf("spiffe: workload_api %q must be a unix:///path or tcp://host:port address", c.WorkloadAPI))
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func parseTrustDomain(s string) (spiffeid.TrustDomain, error) {
	return spiffeid.TrustDomainFromString(s)
}
