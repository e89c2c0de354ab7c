package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/credbroker/credbroker/broker"
)

// group runs the broker's long-lived pieces — the audit writer, the lease
// manager, the reloader, every listener — each a Run(ctx) function, in
// stages: a stage starts after the ones before it and stops before them.
// Stopping cancels the newest stage, waits for every member of it, then the
// next, so listeners drain while the lease manager and the audit writer
// still run, and no goroutine a member started outlives stop. A member that
// returns before it is asked to (with an error or without) fails the group:
// Failed is closed and stop reports why.
type group struct {
	stages []*stage
	failed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	errs   []error
}

// stage is one set of members started and stopped together.
type stage struct {
	g      *group
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newGroup() *group { return &group{failed: make(chan struct{})} }

// stage begins a new stage, stopped before every stage begun earlier.
func (g *group) stage(name string) *stage {
	ctx, cancel := context.WithCancel(context.Background())
	s := &stage{g: g, name: name, ctx: ctx, cancel: cancel}
	g.stages = append(g.stages, s)
	return s
}

// run starts a member of the stage.
func (s *stage) run(name string, member func(ctx context.Context) error) {
	s.wg.Go(func() {
		err := member(s.ctx)
		stopping := s.ctx.Err() != nil
		switch {
		case err != nil:
			s.g.fail(fmt.Errorf("%s: %w", name, err), !stopping)
		case !stopping:
			s.g.fail(fmt.Errorf("%s: stopped by itself", name), true)
		}
	})
}

// fail records err; early failures close Failed.
func (g *group) fail(err error, early bool) {
	g.mu.Lock()
	g.errs = append(g.errs, err)
	g.mu.Unlock()
	if early {
		g.once.Do(func() { close(g.failed) })
	}
}

// Failed is closed when a member stopped before it was asked to.
func (g *group) Failed() <-chan struct{} { return g.failed }

// stop stops the stages newest first, each joined before the next is
// cancelled, and returns what the members reported.
func (g *group) stop() error {
	for i := len(g.stages) - 1; i >= 0; i-- {
		s := g.stages[i]
		s.cancel()
		s.wg.Wait()
	}
	g.stages = nil
	g.mu.Lock()
	defer g.mu.Unlock()
	return errors.Join(g.errs...)
}

// serveHTTP is a member serving srv on ln until its context ends, then
// draining in-flight requests for up to drain (broker.Serve).
func serveHTTP(srv *http.Server, ln net.Listener, drain time.Duration) func(context.Context) error {
	return func(ctx context.Context) error { return broker.Serve(ctx, srv, ln, drain) }
}
