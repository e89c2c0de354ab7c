package aws

import (
	"sync"
	"time"
)

type reserveResult int

const (
	reserveOK reserveResult = iota
	reserveReplay
	reserveFull
)

// replayCache remembers signatures until the moment after which their
// X-Amz-Date is too old to be accepted anyway. It never forgets an unexpired
// entry to make room: when full it refuses.
type replayCache struct {
	mu        sync.Mutex
	max       int
	entries   map[string]time.Time // signature → expiry
	nextSweep time.Time
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, entries: make(map[string]time.Time)}
}

// reserve records sig until expiry unless it is already present (replay) or
// the cache holds max unexpired entries (full).
func (c *replayCache) reserve(sig string, expiry, now time.Time) reserveResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.entries[sig]; ok && now.Before(exp) {
		return reserveReplay
	}
	if len(c.entries) >= c.max || now.After(c.nextSweep) {
		c.sweep(now)
	}
	if len(c.entries) >= c.max {
		return reserveFull
	}
	c.entries[sig] = expiry
	return reserveOK
}

// sweep drops expired entries. Its cost is spread: it runs when the cache is
// full or at most about once a minute.
func (c *replayCache) sweep(now time.Time) {
	for sig, exp := range c.entries {
		if !now.Before(exp) {
			delete(c.entries, sig)
		}
	}
	c.nextSweep = now.Add(time.Minute)
}

func (c *replayCache) release(sig string) {
	c.mu.Lock()
	delete(c.entries, sig)
	c.mu.Unlock()
}
