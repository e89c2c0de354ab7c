package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one load run.
type Config struct {
	// Socket is the Unix socket the target listens on. Required.
	Socket string
	// Path is the request path, default /v1/credentials/demo.
	Path string
	// Header is sent with every request (the runner adds Credbroker-Request: 1).
	Header http.Header
	// Clients is the number of closed-loop workers, each with its own
	// connection. Ignored when Rate > 0.
	Clients int
	// Rate, when > 0, selects the open loop: requests per second, scheduled
	// at fixed intervals whatever the replies do.
	Rate int
	// MaxConns bounds the open loop's worker pool, one connection each.
	MaxConns int
	// Warmup runs before Duration and is not recorded.
	Warmup time.Duration
	// Duration is the measured window. Required.
	Duration time.Duration
	// Grace is how long after the window outstanding requests may finish
	// before they are cancelled (and counted as errors or dropped).
	Grace time.Duration
	// Late is the open-loop lateness threshold: a request that starts more
	// than Late after its scheduled time is counted as late.
	Late time.Duration
	// WatchPID, when > 0, is the server process whose CPU time and resident
	// memory are sampled from /proc during the window.
	WatchPID int
	// Label names the target in the output (for example bare or broker).
	Label string
}

func (c *Config) validate() error {
	var errs []error
	if c.Socket == "" {
		errs = append(errs, errors.New("-socket is required"))
	}
	if c.Duration <= 0 {
		errs = append(errs, errors.New("-d must be positive"))
	}
	if c.Warmup < 0 || c.Grace < 0 || c.Late < 0 {
		errs = append(errs, errors.New("-warmup, -grace and -late must not be negative"))
	}
	if c.Rate < 0 {
		errs = append(errs, errors.New("-rate must not be negative"))
	}
	if c.Rate == 0 && c.Clients < 1 {
		errs = append(errs, errors.New("-c must be at least 1"))
	}
	if c.Rate > 0 && c.MaxConns < 1 {
		errs = append(errs, errors.New("-max-conns must be at least 1"))
	}
	return errors.Join(errs...)
}

// Result is one run's outcome. The first fields are the stable machine
// interface; latencies are of successful (200) replies only.
type Result struct {
	Mode      string  `json:"mode"` // closed or open
	Clients   int     `json:"clients"`
	Rate      int     `json:"rate"`
	DurationS float64 `json:"duration_s"` // window start to the later of its end and the last reply
	OK        int64   `json:"ok"`
	Errors    int64   `json:"errors"` // non-200 replies plus transport errors
	RPS       float64 `json:"rps"`    // ok / duration_s
	P50ms     float64 `json:"p50_ms"`
	P90ms     float64 `json:"p90_ms"`
	P99ms     float64 `json:"p99_ms"`
	P999ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`

	Label           string           `json:"label,omitempty"`
	MeanMs          float64          `json:"mean_ms"`
	StatusErrors    map[string]int64 `json:"status_errors,omitempty"` // by HTTP status
	TransportErrors int64            `json:"transport_errors"`
	FirstError      string           `json:"first_error,omitempty"`
	Late            int64            `json:"late"`    // open loop: started > late_ms after schedule
	Dropped         int64            `json:"dropped"` // open loop: never sent before the grace ran out
	LateMs          float64          `json:"late_ms,omitempty"`
	Conns           int64            `json:"conns"`          // connections dialled
	TotalRequests   int64            `json:"total_requests"` // including warmup
	WarmupErrors    int64            `json:"warmup_errors"`
	WarmupError     string           `json:"warmup_error,omitempty"` // the first
	ClientCPUS      float64          `json:"client_cpu_s"`           // this process, during the window

	ServerPID         int     `json:"server_pid,omitempty"`
	ServerCPUS        float64 `json:"server_cpu_s,omitempty"`
	ServerCPUusPerReq float64 `json:"server_cpu_us_per_req,omitempty"`
	ServerRSSPeakKB   int64   `json:"server_rss_peak_kb,omitempty"` // VmRSS, sampled every 100ms
	ServerHWMKB       int64   `json:"server_hwm_kb,omitempty"`      // VmHWM at the end

	// An fsync-floor run (loadgen -fsync-floor) sets these. Its ok counts
	// records committed, and its own CPU time is in server_cpu_s and
	// server_cpu_us_per_req (and client_cpu_s).
	Sync      string `json:"sync,omitempty"`       // fsync or fdatasync
	WriteSize int    `json:"write_size,omitempty"` // bytes per write
	Syncs     int64  `json:"syncs,omitempty"`      // writes and syncs in the window; < ok when records shared one
	FS        string `json:"fs,omitempty"`         // filesystem type of the directory
}

// worker owns one connection (its own Transport) and its own counters and
// histogram, so the hot path shares nothing with other workers.
type worker struct {
	tr  *http.Transport
	req *http.Request

	h            hist
	ok           int64
	statusErrs   map[int]int64
	transportErr int64
	firstErr     error
	late         int64
	total        int64
	warmupErrs   int64
	warmupErr    string
	last         time.Time
}

func newWorker(ctx context.Context, cfg *Config, dials *atomic.Int64) (*worker, error) {
	socket := cfg.Socket
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		DisableCompression:  true,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost"+cfg.Path, nil)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if cfg.Header != nil {
		req.Header = cfg.Header.Clone()
	}
	return &worker{tr: tr, req: req}, nil
}

// do sends the worker's request and drains the reply. The request is
// reused: it has no body and is not touched again until the reply's body
// is closed, which is when net/http allows reuse.
func (w *worker) do() (int, error) {
	w.total++
	resp, err := w.tr.RoundTrip(w.req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// count records one finished request of the measured window.
func (w *worker) count(status int, err error, lat time.Duration, done time.Time) {
	w.last = done
	switch {
	case err != nil:
		w.transportErr++
		if w.firstErr == nil {
			w.firstErr = err
		}
	case status != http.StatusOK:
		if w.statusErrs == nil {
			w.statusErrs = make(map[int]int64)
		}
		w.statusErrs[status]++
	default:
		w.ok++
		w.h.record(lat)
	}
}

// countWarmup records a warm-up request's failure, which is not part of
// the result but may explain it (a refused connection, a wrong path).
func (w *worker) countWarmup(status int, err error) {
	if err == nil && status == http.StatusOK {
		return
	}
	w.warmupErrs++
	if w.warmupErr == "" {
		if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		w.warmupErr = err.Error()
	}
}

// errPause is how long a worker waits after a transport error, so that a
// dead socket does not turn the load generator into a busy loop.
const errPause = time.Millisecond

// run performs one closed- or open-loop run against cfg.Socket.
func run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Path == "" {
		cfg.Path = "/v1/credentials/demo"
	}
	cfg.Header = cfg.Header.Clone()
	if cfg.Header == nil {
		cfg.Header = http.Header{}
	}
	cfg.Header.Set("Credbroker-Request", "1")
	if err := cfg.validate(); err != nil {
		return nil, err
	}

	n := cfg.Clients
	if cfg.Rate > 0 {
		n = cfg.MaxConns
	}
	// The hard deadline cancels whatever is still outstanding once the
	// window and its grace are over.
	base := time.Now()
	measureStart := base.Add(cfg.Warmup)
	end := measureStart.Add(cfg.Duration)
	hardCtx, cancel := context.WithDeadline(ctx, end.Add(cfg.Grace))
	defer cancel()

	var dials atomic.Int64
	workers := make([]*worker, n)
	for i := range workers {
		w, err := newWorker(hardCtx, &cfg, &dials)
		if err != nil {
			return nil, err
		}
		workers[i] = w
	}
	defer func() {
		for _, w := range workers {
			w.tr.CloseIdleConnections()
		}
	}()

	mon := startMonitor(hardCtx, measureStart, cfg.WatchPID)
	var dropped int64
	if cfg.Rate > 0 {
		dropped = openLoop(hardCtx, cancel, &cfg, workers, base, measureStart, end)
	} else {
		closedLoop(hardCtx, workers, measureStart, end)
	}
	usage := mon.stop()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("run interrupted: %w", err)
	}

	res := &Result{Mode: "closed", Clients: cfg.Clients, Label: cfg.Label, Dropped: dropped, Conns: dials.Load()}
	if cfg.Rate > 0 {
		res.Mode, res.Clients, res.Rate = "open", cfg.MaxConns, cfg.Rate
		res.LateMs = ms(cfg.Late)
	}
	var h hist
	last := end
	for _, w := range workers {
		h.merge(&w.h)
		res.OK += w.ok
		res.TransportErrors += w.transportErr
		res.Late += w.late
		res.TotalRequests += w.total
		res.WarmupErrors += w.warmupErrs
		if res.WarmupError == "" {
			res.WarmupError = w.warmupErr
		}
		for st, c := range w.statusErrs {
			if res.StatusErrors == nil {
				res.StatusErrors = make(map[string]int64)
			}
			res.StatusErrors[strconv.Itoa(st)] += c
			res.Errors += c
		}
		if w.firstErr != nil && res.FirstError == "" {
			res.FirstError = w.firstErr.Error()
		}
		if w.last.After(last) {
			last = w.last
		}
	}
	res.Errors += res.TransportErrors
	window := last.Sub(measureStart)
	res.DurationS = window.Seconds()
	res.RPS = float64(res.OK) / window.Seconds()
	res.P50ms, res.P90ms, res.P99ms = ms(h.quantile(0.50)), ms(h.quantile(0.90)), ms(h.quantile(0.99))
	res.P999ms, res.MaxMs, res.MeanMs = ms(h.quantile(0.999)), ms(time.Duration(h.max)), ms(h.mean())
	usage.fill(res)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// closedLoop runs every worker back to back until end: send, wait for the
// reply, send again. Requests started before measureStart are not counted.
func closedLoop(ctx context.Context, workers []*worker, measureStart, end time.Time) {
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				status, err := w.do()
				t1 := time.Now()
				if t0.Before(measureStart) {
					w.countWarmup(status, err)
				} else {
					w.count(status, err, t1.Sub(t0), t1)
				}
				if err != nil {
					time.Sleep(errPause)
				}
			}
		})
	}
	wg.Wait()
}

// dispatcher hands scheduled requests to idle workers, most recently idle
// first, so the open loop uses as few connections as the load needs; when
// every worker is busy, requests wait in the backlog and the wait counts
// towards their latency.
type dispatcher struct {
	mu      sync.Mutex
	idle    []*olWorker
	backlog []int64 // scheduled offsets from base, nanoseconds
	head    int
}

type olWorker struct {
	*worker
	assign chan int64
}

// openLoop schedules cfg.Rate requests per second from base until end and
// waits for them until ctx's deadline. Latency is measured from each
// request's scheduled time, so a slow reply cannot hide the requests that
// should have been sent meanwhile (coordinated omission). It returns how
// many measured requests were never sent.
func openLoop(ctx context.Context, cancel context.CancelFunc, cfg *Config, workers []*worker, base, measureStart, end time.Time) (dropped int64) {
	warmupNs := int64(measureStart.Sub(base))
	rate := int64(cfg.Rate)
	total := int64(end.Sub(base)) * rate / int64(time.Second)
	schedAt := func(i int64) int64 { return i * int64(time.Second) / rate }

	d := &dispatcher{backlog: make([]int64, 0, min(total, 1<<20))}
	var outstanding, running sync.WaitGroup
	ows := make([]*olWorker, len(workers))
	for i, w := range workers {
		ow := &olWorker{worker: w, assign: make(chan int64, 1)}
		ows[len(ows)-1-i] = ow
		running.Go(func() {
			for sched := range ow.assign {
				for {
					start := base.Add(time.Duration(sched))
					t0 := time.Now()
					status, err := ow.do()
					t1 := time.Now()
					if sched < warmupNs {
						ow.countWarmup(status, err)
					} else {
						if t0.Sub(start) > cfg.Late {
							ow.late++
						}
						ow.count(status, err, t1.Sub(start), t1)
					}
					outstanding.Done()
					d.mu.Lock()
					if d.head < len(d.backlog) {
						sched = d.backlog[d.head]
						d.head++
						d.mu.Unlock()
						continue
					}
					d.idle = append(d.idle, ow)
					d.mu.Unlock()
					break
				}
			}
		})
	}
	d.idle = append(d.idle, ows...)

	// The scheduler emits every request whose time has come in one batch,
	// with its exact scheduled time, so that a late wake-up delays requests
	// (and is charged to their latency) but never drops or thins them.
	sched := make(chan struct{})
	go func() {
		defer close(sched)
		lockPreciseThread()
		for i := int64(0); i < total && ctx.Err() == nil; {
			due := min(int64(time.Since(base))*rate/int64(time.Second)+1, total)
			for ; i < due; i++ {
				outstanding.Add(1)
				sched := schedAt(i)
				d.mu.Lock()
				if k := len(d.idle); k > 0 {
					ow := d.idle[k-1]
					d.idle = d.idle[:k-1]
					d.mu.Unlock()
					ow.assign <- sched
					continue
				}
				d.backlog = append(d.backlog, sched)
				d.mu.Unlock()
			}
			if i < total {
				// Sleep in slices of at most 10ms to notice cancellation.
				preciseSleep(min(time.Until(base.Add(time.Duration(schedAt(i)))), 10*time.Millisecond))
			}
		}
	}()
	<-sched

	done := make(chan struct{})
	go func() { outstanding.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// Out of time: in-flight requests fail on the cancelled context;
		// what is still in the backlog was never sent.
		cancel()
		d.mu.Lock()
		for _, sched := range d.backlog[d.head:] {
			if sched >= warmupNs {
				dropped++
			}
			outstanding.Done()
		}
		d.head = len(d.backlog)
		d.mu.Unlock()
		<-done
	}
	for _, ow := range ows {
		close(ow.assign)
	}
	running.Wait()
	return dropped
}

// monitor samples this process's CPU time and, when a server PID is given,
// the server's CPU time and resident memory over the measured window.
type monitor struct {
	pid                int
	stopc, donec       chan struct{}
	startSelf, endSelf time.Duration
	startSrv, endSrv   time.Duration
	srvErr             error
	rssPeak, hwm       int64
}

func startMonitor(ctx context.Context, measureStart time.Time, pid int) *monitor {
	m := &monitor{pid: pid, stopc: make(chan struct{}), donec: make(chan struct{})}
	go func() {
		defer close(m.donec)
		select {
		case <-time.After(time.Until(measureStart)):
		case <-m.stopc:
			return
		case <-ctx.Done():
			return
		}
		m.startSelf, _ = procCPU("self")
		if pid <= 0 {
			<-m.stopc
			m.endSelf, _ = procCPU("self")
			return
		}
		spid := strconv.Itoa(pid)
		m.startSrv, m.srvErr = procCPU(spid)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
	sample:
		for {
			if rss, _, err := procMem(spid); err == nil {
				m.rssPeak = max(m.rssPeak, rss)
			}
			select {
			case <-tick.C:
			case <-m.stopc:
				break sample
			}
		}
		m.endSelf, _ = procCPU("self")
		var err error
		m.endSrv, err = procCPU(spid)
		m.srvErr = errors.Join(m.srvErr, err)
		var rss int64
		rss, m.hwm, err = procMem(spid)
		m.srvErr = errors.Join(m.srvErr, err)
		m.rssPeak = max(m.rssPeak, rss)
	}()
	return m
}

func (m *monitor) stop() *monitor {
	close(m.stopc)
	<-m.donec
	return m
}

func (m *monitor) fill(r *Result) {
	r.ClientCPUS = (m.endSelf - m.startSelf).Seconds()
	if m.pid <= 0 || m.srvErr != nil {
		return
	}
	r.ServerPID = m.pid
	r.ServerCPUS = (m.endSrv - m.startSrv).Seconds()
	if r.OK+r.Errors > 0 {
		r.ServerCPUusPerReq = r.ServerCPUS * 1e6 / float64(r.OK+r.Errors)
	}
	r.ServerRSSPeakKB, r.ServerHWMKB = m.rssPeak, m.hwm
}

// sortedKeys returns m's keys in order, for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
