package audit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 890123456, time.UTC)

func TestAppendConcurrentGroupCommit(t *testing.T) {
	tests := []struct {
		name              string
		goroutines, perGo int
		maxBatch          int
	}{
		{"one writer", 1, 50, 0},
		{"many writers default batch", 64, 40, 0},
		{"many writers tiny batch", 32, 20, 3},
		{"batch over one insert statement", 200, 5, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := startLog(t, Config{MaxBatch: tt.maxBatch})
			var (
				mu   sync.Mutex
				seqs = map[int64]string{}
				wg   sync.WaitGroup
			)
			for g := range tt.goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range tt.perGo {
						r := testRecord(g*tt.perGo+i, t0)
						if err := l.Append(context.Background(), r); err != nil {
							t.Errorf("Append: %v", err)
							return
						}
						if r.Seq == 0 || len(r.Hash) != 64 || len(r.PrevHash) != 64 {
							t.Errorf("Append left seq %d hash %q prev %q", r.Seq, r.Hash, r.PrevHash)
						}
						mu.Lock()
						if other, dup := seqs[r.Seq]; dup {
							t.Errorf("seq %d given to %s and %s", r.Seq, other, r.DecisionID)
						}
						seqs[r.Seq] = r.DecisionID
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			l.stop(t)
			// Every decision got its own seq; the chain holds them and the
			// signed heads written between them (one a second while a slow
			// machine appends, one at the end), nothing else.
			want := int64(tt.goroutines * tt.perGo)
			res, err := Verify(context.Background(), l.cfg.Path, VerifyOptions{})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if int64(len(seqs)) != want || res.Decisions != want || res.Rows != want+res.SignedHeads || res.FirstSeq != 1 || res.Unsigned != 0 {
				t.Errorf("%d seqs returned; Verify = %d rows (%d decisions, %d signed heads), first %d, %d unsigned; want %d decisions from seq 1, all signed",
					len(seqs), res.Rows, res.Decisions, res.SignedHeads, res.FirstSeq, res.Unsigned, want)
			}
			for s := range seqs {
				if s < 1 || s > res.HeadSeq {
					t.Errorf("seq %d returned, outside the log's 1..%d", s, res.HeadSeq)
				}
			}
		})
	}
}

func TestAppendRoundTrip(t *testing.T) {
	l := startLog(t, Config{})
	in := testRecord(1, t0)
	in.Claims["repository_id"] = 123456789012345678 // survives as json.Number
	if err := l.Append(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if in.Seq != 1 || in.PrevHash != zeroHashHex {
		t.Errorf("first row: seq %d prev %s", in.Seq, in.PrevHash)
	}
	var got []*Record
	if err := Query(context.Background(), l.cfg.Path, Filter{}, func(r *Record) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("Query returned %d rows, want 1", len(got))
	}
	r := got[0]
	if !r.Time.Equal(in.Time) || !r.ExpiresAt.Equal(in.ExpiresAt) || r.Latency != in.Latency {
		t.Errorf("times: got %v %v %v, want %v %v %v", r.Time, r.ExpiresAt, r.Latency, in.Time, in.ExpiresAt, in.Latency)
	}
	if r.Hash != in.Hash || r.PrevHash != in.PrevHash || r.Seq != in.Seq {
		t.Errorf("chain fields differ: %+v", r)
	}
	if r.Claims["repository_id"].(interface{ String() string }).String() != "123456789012345678" {
		t.Errorf("large claim = %v", r.Claims["repository_id"])
	}
	if want, _ := reencode([]byte(testInput)); string(r.Input) != want {
		t.Errorf("input = %s, want canonical %s", r.Input, want)
	}
	if r.Subject != in.Subject || r.PeerUID != 1000 || r.Policy != in.Policy {
		t.Errorf("fields differ: %+v", r)
	}
}

func TestAppendDefaultsAndValidation(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := startLog(t, Config{Now: func() time.Time { return now }})
	r := &Record{DecisionID: "d1", Decision: DecisionDeny, PeerUID: -1}
	if err := l.Append(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if !r.Time.Equal(now) {
		t.Errorf("Time = %v, want Now %v", r.Time, now)
	}
	bad := []struct {
		name string
		r    Record
	}{
		{"unknown decision", Record{DecisionID: "x", Decision: "maybe"}},
		{"no decision id", Record{Decision: DecisionAllow}},
		{"time out of range", Record{DecisionID: "x", Decision: DecisionAllow, Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"input not an object", Record{DecisionID: "x", Decision: DecisionAllow, Input: []byte(`[1,2]`)}},
		{"input not JSON", Record{DecisionID: "x", Decision: DecisionAllow, Input: []byte(`{"a":`)}},
		{"claims not JSON", Record{DecisionID: "x", Decision: DecisionAllow, Claims: map[string]any{"c": make(chan int)}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			err := l.Append(context.Background(), &tt.r)
			if !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("Append = %v, want ErrInvalidRecord", err)
			}
		})
	}
}

func TestRestartContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	for run := range 3 {
		l := startLog(t, Config{Path: path})
		recs := appendN(t, l.Log, 5, t0.Add(time.Duration(run)*time.Hour))
		// Each run ends with a signed head: 5 decisions and 1 signed head.
		if want := int64(run*6 + 1); recs[0].Seq != want {
			t.Fatalf("run %d: first seq %d, want %d", run, recs[0].Seq, want)
		}
		l.stop(t)
	}
	res, err := Verify(context.Background(), path, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 18 || res.Decisions != 15 || res.SignedHeads != 3 || res.SignedSeq != 17 || res.Unsigned != 0 {
		t.Errorf("Verify = %d rows, %d decisions, %d signed heads proving up to seq %d, %d unsigned; want 18, 15, 3, 17, 0",
			res.Rows, res.Decisions, res.SignedHeads, res.SignedSeq, res.Unsigned)
	}
}

func TestAppendWithoutRun(t *testing.T) {
	l, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "audit.db")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = l.Append(ctx, testRecord(1, t0))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Append without Run = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(context.Background(), testRecord(2, t0)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Append after Close = %v, want ErrUnavailable", err)
	}
	if err := l.Run(context.Background()); err == nil {
		t.Error("Run after Close succeeded")
	}
	if err := l.Healthy(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Healthy after Close = %v", err)
	}
}

func TestShutdownDrainsQueue(t *testing.T) {
	l := startLog(t, Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- l.Append(context.Background(), testRecord(i, t0))
		}()
	}
	time.Sleep(time.Millisecond)
	l.stop(t)
	wg.Wait()
	close(errs)
	var ok int64
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrUnavailable):
			t.Errorf("Append during shutdown = %v", err)
		}
	}
	res, err := Verify(context.Background(), l.cfg.Path, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Decisions != ok {
		t.Errorf("%d Appends succeeded but the log holds %d decisions", ok, res.Decisions)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	l := startLog(t, Config{Checkpoint: CheckpointConfig{File: filepath.Join(t.TempDir(), "cp.json"), Interval: time.Millisecond}})
	appendN(t, l.Log, 10, t0)
	if _, err := Verify(context.Background(), l.cfg.Path, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := Query(ctx, l.cfg.Path, Filter{}, func(*Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
	cancel()
	l.stop(t)
	deadline := time.Now().Add(time.Minute)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	newer := filepath.Join(dir, "newer.db")
	l := startLog(t, Config{Path: newer})
	l.stop(t)
	sqlExec(t, newer, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
	foreign := filepath.Join(dir, "foreign.db")
	sqlExec(t, foreign, "CREATE TABLE t (x)")

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no path", Config{}, "path is required"},
		{"negative values", Config{Path: filepath.Join(dir, "x.db"), MaxBatch: -1}, "must not be negative"},
		{"newer schema", Config{Path: newer}, "schema version 99 is newer"},
		{"directory missing", Config{Path: filepath.Join(dir, "missing", "a.db"), KeyFile: filepath.Join(dir, "k.key")}, "no such file"},
		{"garbled key file", Config{Path: filepath.Join(dir, "y.db"), KeyFile: foreign}, "key file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(context.Background(), tt.cfg)
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "audit: ") {
				t.Errorf("Open = %v, want an audit: error mentioning %q", err, tt.want)
			}
		})
	}
	for _, path := range []string{newer, foreign} {
		err := Query(context.Background(), path, Filter{}, func(*Record) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "schema version 99") && !strings.Contains(err.Error(), "not a credbroker audit database") {
			t.Errorf("Query(%s) = %v", filepath.Base(path), err)
		}
	}
}

func TestOddPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a?b#c%20d.db")
	l := startLog(t, Config{Path: path})
	appendN(t, l.Log, 2, t0)
	l.stop(t)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at its literal path: %v", err)
	}
	if res, err := Verify(context.Background(), path, VerifyOptions{}); err != nil || res.Decisions != 2 {
		t.Errorf("Verify = %+v, %v", res, err)
	}
}
