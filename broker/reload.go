package broker

import (
	"context"
	"log/slog"
	"time"

	"github.com/credbroker/credbroker/policies"
)

// Reloader keeps the broker's policy set current: it reloads when Trigger
// fires (SIGHUP) and when the policy files' stamp changes. A load that fails
// keeps the previous set in force and is logged.
type Reloader struct {
	// Broker receives the new set.
	Broker *Broker
	// Load reads and compiles the policy files.
	Load func() (*policies.Set, error)
	// Stamp summarises the policy files (names, sizes, mtimes) cheaply; a
	// change triggers a reload.
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
			last = r.Stamp()
			r.reload(log, "signal")
		case <-t.C:
			if s := r.Stamp(); s != last {
				last = s
				r.reload(log, "file change")
			}
		}
	}
}

func (r *Reloader) reload(log *slog.Logger, why string) {
	set, err := r.Load()
	if err != nil {
		r.Broker.metrics.reloads.WithLabelValues("error").Inc()
		log.Error("policy reload failed; keeping the previous policies", keyReason, why, keyError, err)
		return
	}
	r.Broker.SetPolicies(set)
	r.Broker.metrics.reloads.WithLabelValues("ok").Inc()
	log.Info("policies reloaded", keyReason, why, keyVersion, set.Version(), "policies", set.Len())
}
