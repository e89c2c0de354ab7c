package audit

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkPruneWhileWriting prunes a log while four writers append to it,
// for several batch sizes, and reports how long an Append waited at worst
// (max-wait-ms) and at the 99th percentile, and how fast Prune went. The
// log has $CREDBROKER_PRUNE_BENCH_ROWS rows (default 50,000, about 75 MB);
// the README's figures come from 1,000,000 (1.5 GB), pruning a fifth.
//
//	go test -run '^$' -bench PruneWhileWriting -benchtime 1x ./audit/
func BenchmarkPruneWhileWriting(b *testing.B) {
	rows := 50000
	if s := os.Getenv("CREDBROKER_PRUNE_BENCH_ROWS"); s != "" {
		var err error
		if rows, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	master := filepath.Join(b.TempDir(), "audit.db")
	buildLog(b, master, rows)
	for _, batch := range []int{500, 1000, 2000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			var waits []time.Duration
			var pruned int64
			var took time.Duration
			for range b.N {
				path := filepath.Join(b.TempDir(), "audit.db")
				copyFiles(b, path, master)
				w, n, d := pruneWhileWriting(b, path, batch, rows/5)
				waits, pruned, took = append(waits, w...), pruned+n, took+d
			}
			slices.Sort(waits)
			if len(waits) > 0 {
				b.ReportMetric(float64(waits[len(waits)-1])/1e6, "max-wait-ms")
				b.ReportMetric(float64(waits[len(waits)*99/100])/1e6, "p99-wait-ms")
			}
			b.ReportMetric(float64(pruned)/took.Seconds(), "pruned-rows/s")
		})
	}
}

// buildLog writes rows test records, 1ms apart from t0, to a new log at path.
func buildLog(b *testing.B, path string, rows int) {
	l := startLog(b, Config{Path: path, Logger: discard()})
	const writers = 256
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < rows; i += writers {
				if err := l.Append(context.Background(), testRecord(i, t0.Add(time.Duration(i)*time.Millisecond))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	l.stop(b)
}

// copyFiles copies the database at src with its WAL, key and head files to
// dst.
func copyFiles(b *testing.B, dst, src string) {
	for _, suffix := range []string{"", "-wal", ".key", ".head"} {
		in, err := os.Open(src + suffix)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		out, err := os.OpenFile(dst+suffix, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err == nil {
			_, err = io.Copy(out, in)
		}
		if err == nil { // no write-back of the copy while the benchmark runs
			err = out.Sync()
		}
		in.Close()
		if err == nil {
			err = out.Close()
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// pruneWhileWriting prunes about n rows of the log at path in batches of
// batch while four writers append, and returns how long each Append took,
// how many rows were pruned and how long Prune took.
func pruneWhileWriting(b *testing.B, path string, batch, n int) ([]time.Duration, int64, time.Duration) {
	l := startLog(b, Config{Path: path, Logger: discard()})
	defer l.stop(b)
	stop := make(chan struct{})
	var mu sync.Mutex
	var waits []time.Duration
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				if err := l.Append(context.Background(), testRecord(1e9+w*1e8+i, time.Now())); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				waits = append(waits, time.Since(start))
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		})
	}
	start := time.Now()
	pruned, err := Prune(context.Background(), path, t0.Add(time.Duration(n)*time.Millisecond), PruneOptions{BatchSize: batch})
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
	return waits, pruned, took
}
