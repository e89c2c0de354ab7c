package aws

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

// Errors a ReplayStore's Reserve returns for a signature it will not record.
// Any other error means the store could not record it, and the request is
// refused all the same.
var (
	// ErrReplay: the signature is recorded and not yet expired.
	ErrReplay = errors.New("aws: signature already used")
	// ErrReplayFull: the store holds its maximum of unexpired signatures.
	ErrReplayFull = errors.New("aws: replay store full")
)

// ReplayKey is what a ReplayStore keeps of a signature: its SHA-256, never
// the signature itself.
type ReplayKey [sha256.Size]byte

// replayKey returns the key of a signature.
func replayKey(signature string) ReplayKey { return sha256.Sum256([]byte(signature)) }

// ReplayStore remembers the signatures Attest has let through until they
// are too old to be accepted anyway, so that each signed request counts
// once. Attest reserves a signature before STS sees it and releases it only
// when STS did not accept it. The in-memory default forgets everything at a
// restart; attest/aws/replaydb keeps them in a file.
type ReplayStore interface {
	// Reserve records key until expiry, atomically: of concurrent calls
	// with one key, one succeeds. It returns ErrReplay when key is
	// recorded with an expiry after now, ErrReplayFull when the store
	// holds its maximum of unexpired keys, and any other error when key
	// could not be recorded.
	Reserve(ctx context.Context, key ReplayKey, expiry, now time.Time) error
	// Release forgets key.
	Release(ctx context.Context, key ReplayKey) error
}

// replayCache is the in-memory ReplayStore. It never forgets an unexpired
// entry to make room: when full it refuses.
type replayCache struct {
	mu        sync.Mutex
	max       int
	entries   map[ReplayKey]time.Time // key → expiry
	nextSweep time.Time
}

var _ ReplayStore = (*replayCache)(nil)

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, entries: make(map[ReplayKey]time.Time)}
}

// Reserve implements ReplayStore.
func (c *replayCache) Reserve(_ context.Context, key ReplayKey, expiry, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.entries[key]; ok && now.Before(exp) {
		return ErrReplay
	}
	if len(c.entries) >= c.max || now.After(c.nextSweep) {
		c.sweep(now)
	}
	if len(c.entries) >= c.max {
		return ErrReplayFull
	}
	c.entries[key] = expiry
	return nil
}

// sweep drops expired entries. Its cost is spread: it runs when the cache is
// full or at most about once a minute.
func (c *replayCache) sweep(now time.Time) {
	for key, exp := range c.entries {
		if !now.Before(exp) {
			delete(c.entries, key)
		}
	}
	c.nextSweep = now.Add(time.Minute)
}

// Release implements ReplayStore.
func (c *replayCache) Release(_ context.Context, key ReplayKey) error {
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
	return nil
}
