package broker

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// Lifetimes of the token cache.
const (
	// DefaultTokenCacheTTL is how long a verified bearer token's identity
	// is reused without verifying the token again.
	DefaultTokenCacheTTL = 30 * time.Second
	// ReviewedTokenCacheTTL is the longest a token that its issuer is asked
	// about online (a Kubernetes TokenReview) should be reused: a token
	// the issuer revoked — its pod or service account deleted — stops
	// working within it.
	ReviewedTokenCacheTTL = 5 * time.Second
	// MaxTokenCacheTTL caps any TTL: keys an issuer removed stop verifying
	// after oidc.DefaultKeysMaxAge (5m), and a cached identity should not
	// outlive them.
	MaxTokenCacheTTL = 5 * time.Minute
)

// maxCachedTokens bounds the token cache.
const maxCachedTokens = 4096

// tokenCache remembers the identities of verified bearer tokens, keyed by
// the token's SHA-256 (the token itself is not kept), until the earlier of
// the cache TTL and the token's own expiry. Only successes are cached.
// A workload presents the same projected token many times between
// rotations; the cache saves a signature verification (and a TokenReview
// call) on each repeat.
type tokenCache struct {
	ttl time.Duration

	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedToken
}

type cachedToken struct {
	id    attest.Identity
	until time.Time
}

// newTokenCache returns a cache of ttl (0: DefaultTokenCacheTTL, at most
// MaxTokenCacheTTL), or nil — no caching — for a negative ttl.
func newTokenCache(ttl time.Duration) *tokenCache {
	if ttl == 0 {
		ttl = DefaultTokenCacheTTL
	}
	if ttl < 0 {
		return nil
	}
	ttl = min(ttl, MaxTokenCacheTTL)
	return &tokenCache{ttl: ttl, entries: map[[sha256.Size]byte]cachedToken{}}
}

// get returns the identity of token if it was verified recently.
func (c *tokenCache) get(token string, now time.Time) (attest.Identity, bool) {
	if c == nil {
		return attest.Identity{}, false
	}
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.until) {
		return attest.Identity{}, false
	}
	return e.id, true
}

// put remembers a verified token until the earlier of the TTL and exp
// (zero exp: the TTL alone).
func (c *tokenCache) put(token string, id attest.Identity, now, exp time.Time) {
	if c == nil {
		return
	}
	until := now.Add(c.ttl)
	if !exp.IsZero() && exp.Before(until) {
		until = exp
	}
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCachedTokens {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxCachedTokens {
			clear(c.entries)
		}
	}
	c.entries[key] = cachedToken{id: id, until: until}
}
