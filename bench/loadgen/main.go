// Command loadgen measures an HTTP/1.1 service on a Unix socket — the
// credbroker socket API — and serves the bare net/http baseline it is
// compared with.
//
// Closed loop, c workers each with its own keep-alive connection sending
// back to back:
//
//	loadgen -socket /run/credbroker/broker.sock -c 32 -d 10s
//
// Open loop, requests scheduled at a fixed rate whatever the replies do,
// latency measured from the scheduled time (no coordinated omission):
//
//	loadgen -socket /run/credbroker/broker.sock -rate 5000 -d 10s
//
// Bare baseline, a fixed JSON reply of N bytes until SIGTERM:
//
//	loadgen -serve-bare /tmp/bare.sock -reply-size 212
//
// Durable floor, the bare server committing one record per request before
// it replies (a 4120-byte write into a preallocated file in DIR, then
// fsync, one request at a time), the floor of one decision committed
// alone; the file is removed at exit:
//
//	loadgen -serve-bare /tmp/durable.sock -reply-size 212 -durable /var/lib/credbroker
//
// Fsync floor, the cost of one durable small write on the filesystem of
// DIR as the audit writer's SQLite makes it (a 4120-byte WAL frame written
// into a preallocated file, then fsync), back to back or at a fixed rate:
//
//	loadgen -fsync-floor /var/lib/credbroker -d 5s
//	loadgen -fsync-floor /var/lib/credbroker -d 5s -rate 1000
//
// Summary of a file of -json results, bare against broker (and a baseline
// broker, when the file has one), medians when a target ran several rounds:
//
//	loadgen -report results.jsonl
//	loadgen -report results.jsonl -ratios broker/bare,broker/baseline
//
// A run prints one human-readable line (to stderr when -json prints the
// JSON object to stdout). Percentiles are of successful (200) replies;
// every other status and every transport error is an error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := mainErr(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func mainErr(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.StringVar(&cfg.Socket, "socket", "", "Unix socket of the target")
	fs.StringVar(&cfg.Path, "path", "/v1/credentials/demo", "request path")
	fs.IntVar(&cfg.Clients, "c", 32, "closed loop: workers, one connection each")
	fs.IntVar(&cfg.Rate, "rate", 0, "open loop: requests per second (0 = closed loop)")
	fs.IntVar(&cfg.MaxConns, "max-conns", 256, "open loop: most workers (connections) in use at once")
	fs.DurationVar(&cfg.Duration, "d", 10*time.Second, "measured duration")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unrecorded warm-up before the measured duration")
	fs.DurationVar(&cfg.Grace, "grace", 5*time.Second, "time after the duration for outstanding requests to finish")
	fs.DurationVar(&cfg.Late, "late", time.Millisecond, "open loop: a request starting this long after its scheduled time is late")
	fs.IntVar(&cfg.WatchPID, "watch-pid", 0, "server PID whose CPU time and RSS to sample from /proc")
	fs.StringVar(&cfg.Label, "label", "", "name of the target in the output (bare, broker, …)")
	cfg.Header = http.Header{}
	fs.Func("H", "extra request header `Name: value` (repeatable)", func(s string) error {
		name, value, ok := strings.Cut(s, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return errors.New("want Name: value")
		}
		cfg.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
		return nil
	})
	asJSON := fs.Bool("json", false, "print the result as a JSON object on stdout (the text line goes to stderr)")
	bare := fs.String("serve-bare", "", "serve the bare baseline on this Unix socket until SIGTERM")
	replySize := fs.Int("reply-size", 200, "bare server: reply body size in bytes")
	durable := fs.String("durable", "", "with -serve-bare: before each reply, write one record into a preallocated file in this `directory` and fsync it (the durable floor)")
	report := fs.String("report", "", "print a bare/broker comparison of a file of -json results")
	var floor FloorConfig
	fs.StringVar(&floor.Dir, "fsync-floor", "", "measure the fsync floor in this `directory` (the audit database's) instead of a server")
	fs.IntVar(&floor.WriteSize, "write-size", defaultWriteSize, "fsync floor and -durable: bytes per write (a WAL frame: 24-byte header and 4096-byte page)")
	fs.Int64Var(&floor.Prealloc, "prealloc", defaultPrealloc, "fsync floor and -durable: bytes of the preallocated file the writes wrap around in")
	fs.StringVar(&floor.Sync, "sync", "fsync", "fsync floor and -durable: fsync or fdatasync after each write")
	var ratios []string
	fs.Func("ratios", "with -report: ratio columns, comma-separated `num/den` labels or floor (default: each server/floor, or /bare without an fsync floor, and each label/baseline when there is one)", func(s string) error {
		for r := range strings.SplitSeq(s, ",") {
			if r = strings.TrimSpace(r); r != "" {
				ratios = append(ratios, r)
			}
		}
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	switch {
	case *durable != "" && *bare == "":
		return errors.New("-durable applies to -serve-bare only")
	case *bare != "":
		if floor.Dir != "" {
			return errors.New("-fsync-floor and -serve-bare are separate runs")
		}
		if _, err := bareBody(*replySize); err != nil {
			return err
		}
		if *durable == "" {
			ln, err := listenUnix(*bare)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "loadgen: bare server on %s, %d-byte replies\n", *bare, *replySize)
			return serveBare(ctx, ln, *replySize)
		}
		// Flags are checked as given: a zero is not a default here.
		if err := floor.Records.check(); err != nil {
			return err
		}
		// The file is ready before the socket appears.
		d, err := newDurableLog(DurableConfig{Dir: *durable, Records: floor.Records})
		if err != nil {
			return err
		}
		ln, err := listenUnix(*bare)
		if err != nil {
			return errors.Join(err, d.remove())
		}
		fmt.Fprintf(stderr, "loadgen: durable server on %s, %d-byte replies\n", *bare, *replySize)
		return serveDurable(ctx, ln, *replySize, d, stderr)
	case floor.Dir != "":
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, name := range []string{"socket", "watch-pid", "max-conns", "H"} {
			if set[name] {
				return fmt.Errorf("-%s does not apply to -fsync-floor", name)
			}
		}
		if err := floor.Records.check(); err != nil {
			return err
		}
		if set["c"] && cfg.Clients != 1 {
			return errors.New("-fsync-floor runs one writer: -c must be 1 (or -rate for the open loop)")
		}
		floor.Rate, floor.Warmup, floor.Duration, floor.Late, floor.Label = cfg.Rate, cfg.Warmup, cfg.Duration, cfg.Late, cfg.Label
		res, err := runFloor(ctx, floor)
		if err != nil {
			return err
		}
		return writeResult(stdout, stderr, res, *asJSON)
	case *report != "":
		f, err := os.Open(*report)
		if err != nil {
			return err
		}
		defer f.Close()
		return writeReport(stdout, f, ratios)
	}

	res, err := run(ctx, cfg)
	if err != nil {
		return err
	}
	return writeResult(stdout, stderr, res, *asJSON)
}

// writeResult prints res as a text line on stdout or, with asJSON, as a
// JSON object on stdout and the text line on stderr.
func writeResult(stdout, stderr io.Writer, res *Result, asJSON bool) error {
	line := formatLine(res)
	if !asJSON {
		_, err := fmt.Fprintln(stdout, line)
		return err
	}
	fmt.Fprintln(stderr, line)
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// formatLine renders a result as one human-readable line.
func formatLine(r *Result) string {
	var b strings.Builder
	if r.Label != "" {
		fmt.Fprintf(&b, "%-8s ", r.Label)
	}
	if r.Mode == "open" {
		fmt.Fprintf(&b, "open rate=%d/s", r.Rate)
	} else {
		fmt.Fprintf(&b, "closed c=%d", r.Clients)
	}
	if r.Sync != "" {
		fmt.Fprintf(&b, " %s %d-byte writes", r.Sync, r.WriteSize)
		if r.FS != "" {
			fmt.Fprintf(&b, " on %s", r.FS)
		}
		fmt.Fprintf(&b, " %.2fs ok=%d syncs=%d rps=%.0f ms: p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f max=%.3f",
			r.DurationS, r.OK, r.Syncs, r.RPS, r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs)
		if r.Mode == "open" {
			fmt.Fprintf(&b, " late=%d", r.Late)
		}
		fmt.Fprintf(&b, " cpu=%.1fµs/req", r.ServerCPUusPerReq)
		return b.String()
	}
	fmt.Fprintf(&b, " %.2fs ok=%d err=%d rps=%.0f ms: p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f max=%.3f",
		r.DurationS, r.OK, r.Errors, r.RPS, r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs)
	if r.Mode == "open" {
		fmt.Fprintf(&b, " late=%d dropped=%d", r.Late, r.Dropped)
	}
	fmt.Fprintf(&b, " conns=%d", r.Conns)
	if r.Mode == "closed" && r.Conns > int64(r.Clients) {
		// net/http drops a connection whose request write it has not seen
		// finish within 50ms: a sign the machine is short of CPU.
		fmt.Fprintf(&b, " (%d replaced)", r.Conns-int64(r.Clients))
	}
	if r.DurationS > 0 {
		fmt.Fprintf(&b, " client_cpu=%.2f cores", r.ClientCPUS/r.DurationS)
	}
	if r.ServerPID > 0 {
		fmt.Fprintf(&b, " server_cpu=%.1fµs/req rss_peak=%.1fMiB", r.ServerCPUusPerReq, float64(r.ServerRSSPeakKB)/1024)
	}
	if r.WarmupErrors > 0 {
		fmt.Fprintf(&b, " warmup_errors=%d (first: %s)", r.WarmupErrors, r.WarmupError)
	}
	if r.Errors > 0 {
		b.WriteString(" errors:")
		for _, st := range sortedKeys(r.StatusErrors) {
			fmt.Fprintf(&b, " %s×%d", st, r.StatusErrors[st])
		}
		if r.TransportErrors > 0 {
			fmt.Fprintf(&b, " transport×%d (first: %s)", r.TransportErrors, r.FirstError)
		}
	}
	return b.String()
}
