package broker_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/policies"
)

// stageRequest is what a socket API client sends for the demo credential;
// each held connection has read it, so that attestation sees its writer.
const stageRequest = "GET /v1/credentials/demo HTTP/1.1\r\nHost: credbroker\r\nCredbroker-Request: 1\r\n\r\n"

// BenchmarkDecisionStages measures each stage of a decision apart, on the
// harness's broker (the unix attestor, the test policies with a CEL
// condition, a static provider, an audit log in a temporary directory), so
// that a regression shows in the stage it is in:
//
//   - attest: the unix attestor's Attest on a connection accepted through
//     its Listener and held open, as the broker attests every request;
//   - evaluate: the policy set's Evaluate on the input the broker builds
//     for that identity (allowed by the policy with the CEL condition);
//   - record: one Append of the decision record the broker wrote, alone,
//     so one row per commit with its fsync;
//   - decide: Broker.Decide end to end without HTTP, one caller;
//   - decide-parallel: Decide from 32 callers, each on its own connection,
//     so that commits are shared.
//
// Each reports ns/op, allocations and the process's CPU time (user +
// system, every goroutine, the audit writer's included) per operation.
// Afterwards the log must verify and hold one decision row per Append and
// Decide.
func BenchmarkDecisionStages(b *testing.B) {
	h := newHarness(b)
	conns := acceptHeld(b, h, 32)
	conn := conns[0]
	ctx := context.Background()
	decideReq := func(c net.Conn) *broker.Request {
		return &broker.Request{Credential: "demo", Channel: broker.ChannelSocket, Method: "GET", Path: "/v1/credentials/demo", Conn: c}
	}

	// The broker's own record of one decision, read back from the log: the
	// record stage appends copies of it.
	g, err := h.broker.Decide(ctx, decideReq(conn))
	if err != nil {
		b.Fatal(err)
	}
	var rec *audit.Record
	if err := audit.Query(ctx, h.db, audit.Filter{}, func(r *audit.Record) error {
		if r.DecisionID == g.DecisionID {
			rec = r
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if rec == nil || rec.Decision != audit.DecisionAllow || rec.Policy != "self-reads-demo" {
		b.Fatalf("the broker's record of decision %s: %+v", g.DecisionID, rec)
	}
	var decisions atomic.Int64 // rows written, checked at the end
	decisions.Add(1)

	b.Run("attest", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			if _, err := h.peer.Attest(ctx, conn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("evaluate", func(b *testing.B) {
		id, err := h.peer.Attest(ctx, conn)
		if err != nil {
			b.Fatal(err)
		}
		// As Decide builds it.
		in := policies.Input{
			Identity: id,
			Request:  policies.Request{Channel: broker.ChannelSocket, Credential: "demo", Method: "GET", Path: "/v1/credentials/demo"},
			Now:      time.Now(),
		}
		set := h.broker.Policies()
		if d := set.Evaluate(in); d.Effect != policies.Allow || d.Policy != "self-reads-demo" {
			b.Fatalf("evaluate: %+v, want an allow by self-reads-demo", d)
		}
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			if d := set.Evaluate(in); d.Effect != policies.Allow {
				b.Fatalf("evaluate: %+v", d)
			}
		}
	})

	b.Run("record", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for i := 0; b.Loop(); i++ {
			r := *rec
			r.Seq, r.PrevHash, r.Hash = 0, "", ""
			r.Time = time.Now().UTC()
			r.DecisionID = fmt.Sprintf("%s%08x", rec.DecisionID[:24], i)
			// As Decide does: announced, then appended.
			done := h.log.Expect()
			err := h.log.Append(ctx, &r)
			done()
			if err != nil {
				b.Fatal(err)
			}
			decisions.Add(1)
		}
	})

	b.Run("decide", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			g, err := h.broker.Decide(ctx, decideReq(conn))
			decisions.Add(1)
			if err != nil {
				b.Fatal(err)
			}
			if g.Name != "demo" {
				b.Fatalf("granted %q, want demo", g.Name)
			}
		}
	})

	b.Run("decide-parallel", func(b *testing.B) {
		parallelism := max(1, len(conns)/runtime.GOMAXPROCS(0))
		b.SetParallelism(parallelism) // 32 callers
		var next atomic.Int64
		b.ReportAllocs()
		defer reportCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			// Each caller holds its own connection, as the socket API's
			// clients do; with more goroutines than connections (GOMAXPROCS
			// not dividing 32) some share one.
			c := conns[int(next.Add(1)-1)%len(conns)]
			for pb.Next() {
				g, err := h.broker.Decide(ctx, decideReq(c))
				decisions.Add(1)
				if err != nil {
					b.Error(err)
					return
				}
				if g.Name != "demo" {
					b.Errorf("granted %q, want demo", g.Name)
					return
				}
			}
		})
	})

	res, err := audit.Verify(ctx, h.db, audit.VerifyOptions{})
	switch {
	case err != nil:
		b.Fatal(err)
	case res.Failure != nil:
		b.Fatalf("verify: %v", res)
	case res.Decisions != decisions.Load():
		b.Fatalf("the log holds %d decision rows, want %d", res.Decisions, decisions.Load())
	}
}

// acceptHeld returns n connections to this process accepted through h's
// attestor's Listener, each of which has read one socket API request, as
// the broker has read a request before it attests it. They are closed
// when the benchmark ends.
func acceptHeld(tb testing.TB, h *harness, n int) []net.Conn {
	tb.Helper()
	// A short path: sun_path holds 108 bytes, less than a test's TempDir.
	dir, err := os.MkdirTemp("", "cbs-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s")
	ln, err := broker.ListenUnix(path, 0o600, -1)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	pln, err := h.peer.Listen(ln)
	if err != nil {
		tb.Fatal(err)
	}
	conns := make([]net.Conn, n)
	for i := range conns {
		client, err := net.Dial("unix", path)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { client.Close() })
		server, err := pln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { server.Close() })
		if _, err := io.WriteString(client, stageRequest); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(server, make([]byte, len(stageRequest))); err != nil {
			tb.Fatal(err)
		}
		if _, err := h.peer.Attest(context.Background(), server); err != nil {
			tb.Fatal(err)
		}
		conns[i] = server
	}
	return conns
}

// reportCPU reports the process's CPU time (user + system, from getrusage)
// per operation, which, unlike ns/op, other load on the machine barely
// changes. Call the result when done.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
	}
}

// cpuTime returns the user and system CPU time of the process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
