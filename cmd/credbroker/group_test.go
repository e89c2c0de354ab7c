package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/internal/pgtest"
)

// TestServeJoinsEveryGoroutine runs the broker in this process, serves a
// request, stops it, and expects every goroutine it started to be gone:
// listeners, reloader, signal relay, lease manager, upstream checks, audit
// writer — with a static credential, and with a PostgreSQL one (the lease
// manager running).
func TestServeJoinsEveryGoroutine(t *testing.T) {
	pg := pgtest.Start(t)
	// os/signal starts one goroutine for the process at the first Notify,
	// which lives on: start it before counting.
	warm := make(chan os.Signal, 1)
	signal.Notify(warm, syscall.SIGHUP)
	signal.Stop(warm)
	for _, tt := range []struct {
		name, credential, credentials string
	}{
		{"static", "demo", e2eCredentials()},
		{"postgres", "orders-db", "  - {name: orders-db, postgres: {admin_dsn_file: secrets/pg-admin}}\n"},
		{"http listener", "demo", e2eCredentials() + "listeners:\n  - http: {listen: \"127.0.0.1:0\", upstream: https://127.0.0.1:1, credential: demo, header: {value: \"{{.value}}\"}}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, strings.Replace(e2ePolicies, "[demo, other, forbidden]", "[demo, other, forbidden, orders-db]", 1), tt.credentials)
			e.write("secrets/demo", "s3cr3t")
			e.write("secrets/pg-admin", pg.AdminDSN())
			lc, err := loadAll(e.config, nil, func(cfg *Config) { a := "127.0.0.1:0"; cfg.Admin = &a })
			if err != nil {
				t.Fatal(err)
			}
			before := runtime.NumGoroutine()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- serve(ctx, lc, slog.New(slog.DiscardHandler)) }()
			deadline := time.Now().Add(hangBound)
			for {
				conn, err := net.Dial("unix", e.socket)
				if err == nil {
					conn.Close()
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the broker never listened: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			c := socketClient(e.socket)
			if r := call(t, c, "GET", "/v1/credentials/"+tt.credential, nil, nil); r.Status != http.StatusOK {
				t.Fatalf("status %d %s", r.Status, r.Body)
			}
			c.CloseIdleConnections()
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("serve: %v", err)
			}
			for n := runtime.NumGoroutine(); n > before; n = runtime.NumGoroutine() {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("%d goroutines after serve returned, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestGroupStopsInReverse checks the group's contract: stages stop newest
// first, each joined before the next is cancelled, and a member that stops
// by itself fails the group with its error.
func TestGroupStopsInReverse(t *testing.T) {
	g := newGroup()
	var order []string
	stopped := make(chan string, 3)
	member := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			<-ctx.Done()
			stopped <- name
			return nil
		}
	}
	g.stage("first").run("audit", member("audit"))
	g.stage("second").run("leases", member("leases"))
	failing := errors.New("listen: address in use")
	g.stage("third").run("listener", func(context.Context) error { return failing })
	<-g.Failed()
	err := g.stop()
	close(stopped)
	for name := range stopped {
		order = append(order, name)
	}
	if strings.Join(order, ",") != "leases,audit" {
		t.Errorf("stopped in order %q, want leases then audit", order)
	}
	if !errors.Is(err, failing) || !strings.Contains(err.Error(), "listener: listen: address in use") {
		t.Errorf("stop: %v", err)
	}
}
