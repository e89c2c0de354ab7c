package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startServer serves h on a fresh Unix socket until the test ends. The
// directory comes from os.MkdirTemp rather than t.TempDir because a socket
// path must stay under 108 bytes.
func startServer(t *testing.T, serve func(ctx context.Context, path string) error) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loadgen")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	ready := make(chan struct{})
	go func() { errc <- serve(ctx, path); close(ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	for deadline := time.Now().Add(hangBound); time.Now().Before(deadline); {
		if _, err := os.Stat(path); err == nil {
			return path
		}
		select {
		case <-ready:
			t.Fatalf("server exited early")
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("socket %s did not appear in %v", path, hangBound)
	return ""
}

// hangBound bounds every wait of these tests for an event, and the grace a
// run gives its outstanding requests: long enough that a loaded machine is
// slow rather than failing, so only a hang reaches it.
const hangBound = time.Minute

// measure runs cfg until a run's window measured what enough asks for, and
// returns that run. A window is a span of wall-clock time, and a loaded
// machine may not schedule a client (or the memory sampler) inside it at
// all; that says nothing about the code, so the run is repeated, up to
// hangBound. Every run gets hangBound of grace, so a request started in
// the window always finishes and is counted.
func measure(t *testing.T, cfg Config, enough func(*Result) bool) *Result {
	t.Helper()
	cfg.Grace = hangBound
	deadline := time.Now().Add(hangBound)
	for {
		res, err := run(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if enough(res) {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("no run measured enough in %v; the last: %+v", hangBound, res)
		}
		t.Logf("the window measured too little (a loaded machine?), running again: %s", formatLine(res))
	}
}

func startBare(t *testing.T, size int) string {
	return startServer(t, func(ctx context.Context, path string) error {
		ln, err := listenUnix(path)
		if err != nil {
			return err
		}
		return serveBare(ctx, ln, size)
	})
}

func TestRunAgainstBare(t *testing.T) {
	sock := startBare(t, 212)
	before := runtime.NumGoroutine()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"closed", Config{Clients: 4}},
		{"closed single", Config{Clients: 1}},
		{"open", Config{Rate: 2000, MaxConns: 64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Socket, cfg.Duration, cfg.Warmup, cfg.Late = sock, 300*time.Millisecond, 50*time.Millisecond, time.Millisecond
			cfg.WatchPID = os.Getpid()
			// Every client sent in the window and the sampler ran in it.
			res := measure(t, cfg, func(r *Result) bool {
				return r.OK > 0 && r.ServerPID != 0 && (cfg.Rate > 0 || r.Conns == int64(cfg.Clients))
			})
			t.Log(formatLine(res))
			if res.OK == 0 || res.Errors != 0 || res.Dropped != 0 {
				t.Fatalf("ok=%d errors=%d dropped=%d (first error %q), want ok>0 and no errors", res.OK, res.Errors, res.Dropped, res.FirstError)
			}
			if !(0 < res.P50ms && res.P50ms <= res.P90ms && res.P90ms <= res.P99ms && res.P99ms <= res.P999ms && res.P999ms <= res.MaxMs) {
				t.Fatalf("percentiles out of order: %+v", res)
			}
			if res.TotalRequests < res.OK {
				t.Fatalf("total_requests=%d < ok=%d", res.TotalRequests, res.OK)
			}
			// VmHWM is updated lazily by the kernel and may trail a VmRSS sample.
			if res.ServerPID == 0 || res.ServerRSSPeakKB == 0 || res.ServerHWMKB == 0 {
				t.Fatalf("server memory not sampled: %+v", res)
			}
			switch cfg.Rate {
			case 0:
				if res.Conns != int64(cfg.Clients) {
					t.Fatalf("conns=%d, want one per client (%d)", res.Conns, cfg.Clients)
				}
			default:
				// The open loop sends every request it scheduled in the
				// window, however late: 600 of them, on any machine.
				if want := int64(cfg.Rate) * int64(cfg.Duration) / int64(time.Second); res.OK != want {
					t.Fatalf("open loop ok=%d, want %d", res.OK, want)
				}
			}
		})
	}
	// Every worker and connection goroutine is gone.
	deadline := time.Now().Add(hangBound)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: %d before, %d after", before, n)
	}
}

// A reply other than 200 is an error, never a success, and a refused
// connection is a transport error.
func TestErrorsAreNotSuccesses(t *testing.T) {
	sock := startServer(t, func(ctx context.Context, path string) error {
		ln, err := listenUnix(path)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Credbroker-Request") != "1" {
				http.Error(w, "missing header", http.StatusBadRequest)
				return
			}
			http.Error(w, `{"error":{"code":"denied"}}`, http.StatusForbidden)
		})}
		go func() { <-ctx.Done(); srv.Close() }()
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			return err
		}
		return nil
	})
	for _, cfg := range []Config{{Clients: 2}, {Rate: 500, MaxConns: 8}} {
		cfg.Socket, cfg.Duration = sock, 100*time.Millisecond
		res := measure(t, cfg, func(r *Result) bool { return r.OK+r.Errors > 0 })
		if res.OK != 0 || res.Errors == 0 || res.StatusErrors["403"] != res.Errors || res.P50ms != 0 {
			t.Fatalf("%s: ok=%d errors=%d by status=%v p50=%v, want only 403 errors", res.Mode, res.OK, res.Errors, res.StatusErrors, res.P50ms)
		}
	}

	res := measure(t, Config{Socket: filepath.Join(filepath.Dir(sock), "none.sock"), Clients: 1, Duration: 50 * time.Millisecond},
		func(r *Result) bool { return r.OK+r.Errors > 0 })
	if res.OK != 0 || res.TransportErrors == 0 || res.TransportErrors != res.Errors || res.FirstError == "" {
		t.Fatalf("no server: %+v, want transport errors only", res)
	}
}

func TestBareBody(t *testing.T) {
	for _, size := range []int{minReplySize, 212, 4096} {
		b, err := bareBody(size)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != size || !json.Valid(b) || b[len(b)-1] != '\n' {
			t.Fatalf("bareBody(%d) = %q (%d bytes)", size, b, len(b))
		}
	}
	if _, err := bareBody(minReplySize - 1); err == nil {
		t.Fatal("bareBody accepted a size too small for a JSON object")
	}
}

// The bare server's reply is the requested size with the broker's headers.
func TestBareReply(t *testing.T) {
	sock := startBare(t, 200)
	measure(t, Config{Socket: sock, Clients: 1, Duration: 10 * time.Millisecond}, func(r *Result) bool { return r.OK > 0 })
	if _, err := listenUnix(sock); err == nil || !strings.Contains(err.Error(), "already answering") {
		t.Fatalf("listenUnix on a live socket: %v, want refusal", err)
	}
	w, err := newWorker(t.Context(), &Config{Socket: sock, Path: "/anything"}, new(atomic.Int64))
	if err != nil {
		t.Fatal(err)
	}
	defer w.tr.CloseIdleConnections()
	resp, err := w.tr.RoundTrip(w.req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if len(body) != 200 || resp.ContentLength != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("reply: %d bytes, headers %v", len(body), resp.Header)
	}
}

func TestHist(t *testing.T) {
	var h hist
	for i := 1; i <= 100000; i++ { // 1µs … 100ms, uniform
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 50 * time.Millisecond},
		{0.9, 90 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{0.999, 99900 * time.Microsecond},
		{1, 100 * time.Millisecond},
	} {
		got := h.quantile(tc.q)
		if got < tc.want || float64(got) > float64(tc.want)*(1+1.0/histHalf) {
			t.Errorf("quantile(%v) = %v, want %v within %.1f%%", tc.q, got, tc.want, 100.0/histHalf)
		}
	}
	if h.max != uint64(100*time.Millisecond) || h.n != 100000 {
		t.Errorf("max=%d n=%d", h.max, h.n)
	}
	for v := uint64(0); v < 1<<20; v += 7 {
		i := histIndex(v)
		if v > histUpper(i) || (i > 0 && v <= histUpper(i-1)) {
			t.Fatalf("value %d in bucket %d [%d, %d]", v, i, histUpper(i-1)+1, histUpper(i))
		}
	}
	if histIndex(1<<62) != histBuckets-1 {
		t.Error("huge values do not clamp to the last bucket")
	}
}

func TestReport(t *testing.T) {
	var in bytes.Buffer
	for _, r := range []Result{
		{Label: "bare", Mode: "closed", Clients: 32, RPS: 40000, P50ms: 0.5, P99ms: 2, MaxMs: 5, TotalRequests: 10},
		{Label: "broker", Mode: "closed", Clients: 32, RPS: 10000, P50ms: 2, P99ms: 8, MaxMs: 20, TotalRequests: 5},
		{Label: "broker", Mode: "open", Clients: 256, Rate: 5000, RPS: 5000, Late: 3, TotalRequests: 7},
	} {
		b, _ := json.Marshal(r)
		in.Write(append(b, '\n'))
	}
	var out bytes.Buffer
	if err := writeReport(&out, &in, nil); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"broker/bare", "closed loop 32 client(s)", "open loop 5000 req/s", "0.25", "4.00", "12"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
