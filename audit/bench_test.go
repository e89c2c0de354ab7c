package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAppend measures the writer with many concurrent appenders and
// realistic records, reporting committed rows per second.
func BenchmarkAppend(b *testing.B) {
	l := startLog(b, Config{Path: filepath.Join(b.TempDir(), "audit.db"), Logger: discard()})
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	b.SetParallelism(512) // 512 × GOMAXPROCS appenders: full batches, more being prepared
	b.ResetTimer()
	defer reportCPU(b)()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := l.Append(context.Background(), testRecord(i, at)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
}

// BenchmarkWriter measures the group-commit writer alone: batches of
// DefaultMaxBatch prepared rows, each committed with an fsync.
func BenchmarkWriter(b *testing.B) {
	w, err := newWriter(filepath.Join(b.TempDir(), "audit.db"), time.Second, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	defer w.close()
	batch := make([]*row, DefaultMaxBatch)
	for i := range batch {
		rw, err := newRow(testRecord(i, t0))
		if err != nil {
			b.Fatal(err)
		}
		batch[i] = rw
	}
	defer reportCPU(b)()
	start := time.Now()
	for n := 0; n < b.N; n += len(batch) {
		if err := w.write(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
}

// BenchmarkCommit measures the record stage of a decision: one commit of
// one row (a lone decision) or of 32 (decisions that arrived together),
// each with its fsync, through the Log as the broker uses it. It reports
// CPU time and rows per commit, so that the cost of the transaction itself
// shows apart from the disk.
func BenchmarkCommit(b *testing.B) {
	for _, n := range []int{1, 32} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			l := startLog(b, Config{Path: filepath.Join(b.TempDir(), "audit.db"), Logger: discard()})
			at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
			recs := make([]*Record, n)
			errs := make(chan error, n)
			b.ResetTimer()
			defer reportCPU(b)()
			for i := 0; b.Loop(); i++ {
				// Announced together, so that the n share one commit.
				dones := make([]func(), n)
				for j := range recs {
					dones[j] = l.Expect()
					recs[j] = testRecord(i*n+j, at)
				}
				for j, r := range recs {
					go func() { errs <- l.Append(context.Background(), r); dones[j]() }()
				}
				for range recs {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// benchRows is the size of the query and verify benchmarks' database.
const benchRows = 1_000_000

// benchStart is when the benchmark database's day of decisions starts.
var benchStart = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

// benchDB returns a database of benchRows valid rows spread evenly over 24
// hours: 60% Kubernetes subjects (100 namespaces × 5 service accounts), 20%
// unix uids, 10% SPIFFE IDs, 10% GitHub subjects. It is built once by
// direct batched inserts and cached in os.TempDir(), keyed by schema version.
func benchDB(b *testing.B) string {
	b.Helper()
	path := filepath.Join(os.TempDir(), fmt.Sprintf("credbroker-audit-bench-v%d-%d.db", schemaVersion, benchRows))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	b.Logf("building %s (once)", path)
	tmp := path + ".building"
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(tmp + suffix)
	}
	w, err := newWriter(tmp, time.Second, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.db.exec("PRAGMA synchronous = OFF"); err != nil {
		b.Fatal(err)
	}
	step := 24 * time.Hour / benchRows
	batch := make([]*row, 0, 10000)
	for i := range benchRows {
		r := testRecord(i, benchStart.Add(time.Duration(i)*step))
		r.Subject, r.Attestor = benchSubject(i)
		r.Input = json.RawMessage(benchInput)
		if i%7 == 0 {
			r.Decision, r.Policy, r.ExpiresAt, r.Fingerprint, r.LeaseID = DecisionDeny, "", time.Time{}, "", ""
		}
		rw, err := newRow(r)
		if err != nil {
			b.Fatal(err)
		}
		if batch = append(batch, rw); len(batch) == cap(batch) || i == benchRows-1 {
			if err := w.write(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	// Everything into the database file, so that it is the whole
	// database: its WAL and shared memory files are then removed, not left
	// behind under the temporary name.
	if v, _, err := w.db.queryRow("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil || v[0] != int64(0) {
		b.Fatalf("checkpoint: %v %v", v, err)
	}
	if err := w.close(); err != nil {
		b.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(tmp + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			b.Fatal(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	return path
}

// benchInput is a canonical policy input of about 400 bytes.
var benchInput = func() string {
	s, err := canonicalObject([]byte(testInput))
	if err != nil {
		panic(err)
	}
	return s
}()

// benchSubject returns the subject and attestor of benchmark row i.
func benchSubject(i int) (subject, attestor string) {
	switch k := (i * 7919) % 100; {
	case k < 60:
		return fmt.Sprintf("system:serviceaccount:ns-%03d:sa-%d", k*7%100, i%5), "kubernetes"
	case k < 80:
		return fmt.Sprintf("unix:uid:%d", 1000+i%50), "unix"
	case k < 90:
		return fmt.Sprintf("spiffe://prod.example.org/ns/ns-%03d/sa/sa-%d", i%100, i%5), "spiffe"
	default:
		return fmt.Sprintf("repo:acme/service-%d:ref:refs/heads/main", i%40), "github"
	}
}

// benchSubjectOf returns the subject of benchmark row i.
func benchSubjectOf(i int) string {
	s, _ := benchSubject(i)
	return s
}

// BenchmarkQuery1M queries one hour of a 1,000,000-row day.
func BenchmarkQuery1M(b *testing.B) {
	path := benchDB(b)
	hour := Filter{Since: benchStart.Add(12 * time.Hour), Until: benchStart.Add(13 * time.Hour)}
	with := func(workload string) Filter { f := hour; f.Workload = workload; return f }
	cases := []struct {
		name string
		f    Filter
	}{
		{"glob-namespace", with("system:serviceaccount:ns-042:*")},
		{"glob-no-prefix", with("*:sa-3")},
		{"exact-subject", with(benchSubjectOf(benchRows / 2))},
		{"glob-all-kubernetes", with("system:serviceaccount:*")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var n int
			defer reportCPU(b)()
			for b.Loop() {
				n = 0
				if err := Query(context.Background(), path, c.f, func(*Record) error { n++; return nil }); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "rows")
		})
	}
}

// BenchmarkVerify1M verifies a 1,000,000-row chain.
func BenchmarkVerify1M(b *testing.B) {
	path := benchDB(b)
	defer reportCPU(b)()
	for b.Loop() {
		res, err := Verify(context.Background(), path, VerifyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res.Rows != benchRows {
			b.Fatalf("verified %d rows, want %d", res.Rows, benchRows)
		}
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// reportCPU reports the process's CPU time per operation, which, unlike
// ns/op, other load on the machine barely changes. Call the result when done.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64((cpuTime()-start).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	}
}

// cpuTime returns the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
