package broker

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultLogInterval is how often a repeated failure is logged: once when
// it first happens, then at most once per interval with how many times it
// happened since.
const DefaultLogInterval = 10 * time.Second

// maxCauses bounds how many distinct causes are tracked at once; more are
// counted together.
const maxCauses = 64

// rateLog logs one line per distinct cause per interval, with a count of
// the occurrences it held back, so that an outage that refuses thousands of
// requests a second leaves a readable log: the first occurrence at once,
// then one line per interval while it lasts, then a last count.
type rateLog struct {
	log       *slog.Logger
	interval  time.Duration
	now       func() time.Time
	afterFunc func(time.Duration, func()) *time.Timer

	mu     sync.Mutex
	causes map[string]*cause
}

// cause is the state of one distinct cause.
type cause struct {
	attrs   []any       // of the first occurrence held back
	held    int         // occurrences held back since the last line
	timer   *time.Timer // flushes held occurrences at the end of the interval
	lastLog time.Time
}

// newRateLog returns a rateLog on the real clock: its intervals are timers.
func newRateLog(log *slog.Logger, interval time.Duration) *rateLog {
	return &rateLog{log: log, interval: interval, now: time.Now, afterFunc: time.AfterFunc, causes: map[string]*cause{}}
}

// Warn logs msg with attrs, unless a line with the same key was logged less
// than an interval ago: then the occurrence is counted, and the count is
// logged when the interval ends.
func (r *rateLog) Warn(key, msg string, attrs ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.causes[key]
	if c == nil {
		if len(r.causes) >= maxCauses {
			key = "other causes"
			if c = r.causes[key]; c != nil {
				r.hold(key, c, msg, attrs)
				return
			}
		}
		c = &cause{}
		r.causes[key] = c
	}
	if now := r.now(); c.held == 0 && now.Sub(c.lastLog) >= r.interval {
		c.lastLog = now
		r.log.Warn(msg, attrs...)
		return
	}
	r.hold(key, c, msg, attrs)
}

// hold counts an occurrence and makes sure the count is logged when the
// interval since the last line ends.
func (r *rateLog) hold(key string, c *cause, msg string, attrs []any) {
	if c.held == 0 {
		c.attrs = attrs
	}
	c.held++
	if c.timer != nil {
		return
	}
	wait := max(c.lastLog.Add(r.interval).Sub(r.now()), 0)
	c.timer = r.afterFunc(wait, func() { r.flush(key, msg) })
}

// flush logs the occurrences of key held back in the interval that ended.
func (r *rateLog) flush(key, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.causes[key]
	if c == nil {
		return
	}
	c.timer = nil
	if c.held == 0 {
		delete(r.causes, key)
		return
	}
	attrs := append(append([]any{}, c.attrs...), keyRepeated, c.held, keyInterval, r.interval.String())
	r.log.Warn(msg, attrs...)
	c.held, c.lastLog = 0, r.now()
	// Forget the cause once an interval passes without it, so that the next
	// occurrence is logged at once.
	c.timer = r.afterFunc(r.interval, func() { r.flush(key, msg) })
}
