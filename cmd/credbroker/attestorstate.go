package main

import (
	"fmt"
	"time"

	"github.com/credbroker/credbroker/broker"
)

// replayDBSuffix names the AWS attestor's replay database by default: the
// audit database's path with this suffix, beside it in the broker's state.
const replayDBSuffix = ".aws-replay"

// defaultReplayDB is attestors.aws.replay_db when it is not set.
func defaultReplayDB(auditPath string) string { return auditPath + replayDBSuffix }

// tokenReview reports whether a token attestor asks its issuer about each
// token online (kubernetes token_review), so that revocation takes effect.
func (a *AttestorsConfig) tokenReview() bool {
	return a.Kubernetes != nil && a.Kubernetes.TokenReview
}

// tokenCacheTTL is broker.Config.TokenCacheTTL for the configuration:
// attestors.token_cache_ttl, 0 meaning off (negative to the broker); unset,
// broker.DefaultTokenCacheTTL, or broker.ReviewedTokenCacheTTL with
// token_review.
func (a *AttestorsConfig) tokenCacheTTL() time.Duration {
	switch {
	case a.TokenCacheTTL != nil && *a.TokenCacheTTL == 0:
		return -1
	case a.TokenCacheTTL != nil:
		return time.Duration(*a.TokenCacheTTL)
	case a.tokenReview():
		return broker.ReviewedTokenCacheTTL
	default:
		return broker.DefaultTokenCacheTTL
	}
}

// tokenCacheProblem says what is wrong with attestors.token_cache_ttl, or "".
func (a *AttestorsConfig) tokenCacheProblem() string {
	if a.TokenCacheTTL == nil {
		return ""
	}
	ttl := time.Duration(*a.TokenCacheTTL)
	switch {
	case ttl > broker.MaxTokenCacheTTL:
		return fmt.Sprintf("token_cache_ttl %s: at most %s (0s turns the cache off)", ttl, broker.MaxTokenCacheTTL)
	case ttl > broker.ReviewedTokenCacheTTL && a.tokenReview():
		return fmt.Sprintf("token_cache_ttl %s: at most %s with kubernetes token_review, so that a revoked token stops working quickly (0s turns the cache off)", ttl, broker.ReviewedTokenCacheTTL)
	}
	return ""
}
