package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/credbroker/credbroker/policies"
)

// ErrNoPolicies is the /readyz failure of a broker whose policy set in force
// has no policies: it denies every request.
var ErrNoPolicies = errors.New("broker: no policies in force; every request is denied")

// PoliciesHealth is the /readyz check of the policy set in force: it
// returns an error wrapping ErrNoPolicies while the set has no policies,
// nil otherwise.
func (b *Broker) PoliciesHealth() error {
	if set := b.Policies(); set.Len() == 0 {
		return fmt.Errorf("%w (policy set version %s)", ErrNoPolicies, set.Version())
	}
	return nil
}

// maxLoadAttempts bounds how often one reload reads the policy files again
// because their stamp changed while they were being read.
const maxLoadAttempts = 3

// Reloader keeps the broker's policy set current: it reloads when Trigger
// fires (SIGHUP) and when the policy files' stamp changes. A load that fails
// keeps the previous set in force and is logged at error. So does a load
// that would replace a set that has policies with one that has none (a file
// emptied or truncated yet still valid): that is far more often an accident
// than an intent, and a broker without policies denies every request. A set
// that was empty from the start may be replaced by another empty one.
type Reloader struct {
	// Broker receives the new set.
	Broker *Broker
	// Load reads and compiles the policy files.
	Load func() (*policies.Set, error)
	// Stamp summarises the policy files cheaply (names, the files they
	// resolve to, sizes, mtimes); a change triggers a reload. When the stamp
	// taken after a load differs from the one taken before it, the files
	// changed while they were read, and the set may mix old and new files
	// (a ConfigMap's ..data swapped between two reads); they are read again,
	// up to maxLoadAttempts times in all.
	Stamp func() string
	// Trigger forces a reload, e.g. on SIGHUP.
	Trigger <-chan struct{}
	// Initial is the stamp of the files the broker's current set was loaded
	// from, taken before loading them, so that an edit made before Run
	// starts is still seen; "" means Stamp() when Run starts.
	Initial string
	// Interval between stamp checks; default 1s.
	Interval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Run watches until ctx is done, then returns nil.
func (r *Reloader) Run(ctx context.Context) error {
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	interval := r.Interval
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	last := r.Initial
	if last == "" {
		last = r.Stamp()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.Trigger:
			last = r.reload(log, "signal", r.Stamp())
		case <-t.C:
			if s := r.Stamp(); s != last {
				last = r.reload(log, "file change", s)
			}
		}
	}
}

// reload loads the policy files, whose stamp taken just before is stamp,
// and puts the new set in force unless the load failed or the set would
// leave the broker without policies. It returns the stamp taken before the
// last load: when the files kept changing through every attempt, that
// stamp is already stale, so the next check reloads again.
func (r *Reloader) reload(log *slog.Logger, why, stamp string) string {
	var set *policies.Set
	var err error
	for attempt := 1; ; attempt++ {
		set, err = r.Load()
		after := r.Stamp()
		if after == stamp || attempt == maxLoadAttempts {
			break
		}
		stamp = after
	}
	if err != nil {
		r.Broker.metrics.reloads.WithLabelValues("error").Inc()
		log.Error("policy reload failed; keeping the previous policies", keyReason, why, keyError, err)
		return stamp
	}
	if cur := r.Broker.Policies(); set.Len() == 0 && cur.Len() > 0 {
		r.Broker.metrics.reloads.WithLabelValues("error").Inc()
		log.Error("policy reload refused: the new policy set has no policies; keeping the previous policies",
			keyReason, why, keySetVersion, cur.Version(), keyPolicies, cur.Len())
		return stamp
	}
	r.Broker.SetPolicies(set)
	r.Broker.metrics.reloads.WithLabelValues("ok").Inc()
	log.Info("policies reloaded", keyReason, why, keySetVersion, set.Version(), keyPolicies, set.Len())
	return stamp
}
