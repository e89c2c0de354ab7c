package client

import "time"

// Test seams for the external tests: the clock a Source waits on and its
// jitter.

// Clock is the clock interface a test implements.
type Clock = clock

// WithClock makes a Source wait on c.
func WithClock(c Clock) SourceOption { return func(cfg *sourceConfig) { cfg.clock = c } }

// WithJitter replaces the Source's random jitter.
func WithJitter(f func(time.Duration) time.Duration) SourceOption {
	return func(cfg *sourceConfig) { cfg.jitter = f }
}

// ParseReply is parseReply, for the fuzz target.
var ParseReply = parseReply
