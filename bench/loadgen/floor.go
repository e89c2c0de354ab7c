package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
)

// FloorConfig describes one fsync-floor run: the cost of committing one
// small write durably on the filesystem of Dir, as the audit writer's
// SQLite does it in WAL mode with synchronous=FULL (one frame — a 24-byte
// header and a 4096-byte page — appended to a WAL that is reused from its
// start, then fsync).
type FloorConfig struct {
	// Dir is where the temporary file goes: the directory of the audit
	// database, so that the floor is measured on the same filesystem.
	Dir string
	// Rate, when > 0, selects the open loop: records per second, scheduled
	// at fixed intervals, latency measured from the scheduled time. Records
	// that come due while a write and sync are in flight are committed
	// together by the next write and sync, as the audit writer commits
	// every decision waiting for it in one transaction. With Rate 0 the
	// writes and syncs run back to back (closed loop, one writer).
	Rate int
	// Warmup runs before Duration and is not recorded.
	Warmup time.Duration
	// Duration is the measured window. Required.
	Duration time.Duration
	// Late is the open-loop lateness threshold: a record whose write starts
	// more than Late after its scheduled time is counted as late.
	Late time.Duration
	// Records says how each record is written and synced.
	Records
	// Label names the run in the output, default "fsync".
	Label string
}

// Records describes the records the fsync floor and the durable server
// commit: each one pwrite and one sync, into a preallocated file.
type Records struct {
	// WriteSize is the size of each record (one pwrite), default 4120: a
	// WAL frame.
	WriteSize int
	// Prealloc is the size of the file, written and synced once before the
	// first record; the records advance through it and wrap at its end, so
	// that they never grow the file. Default 4 MiB.
	Prealloc int64
	// Sync is "fsync" (the default, what SQLite calls on Linux) or
	// "fdatasync".
	Sync string
}

const (
	defaultWriteSize = 24 + 4096 // a WAL frame: frame header and one page
	defaultPrealloc  = 4 << 20
)

// withDefaults returns r with its zero fields set to their defaults.
func (r Records) withDefaults() Records {
	r.WriteSize = cmp.Or(r.WriteSize, defaultWriteSize)
	r.Prealloc = cmp.Or(r.Prealloc, defaultPrealloc)
	r.Sync = cmp.Or(r.Sync, "fsync")
	return r
}

// check reports what is wrong with r, in the flags' names.
func (r Records) check() error {
	var errs []error
	if r.WriteSize < 1 {
		errs = append(errs, errors.New("-write-size must be at least 1"))
	}
	if r.Prealloc < int64(r.WriteSize) {
		errs = append(errs, fmt.Errorf("-prealloc %d is smaller than -write-size %d", r.Prealloc, r.WriteSize))
	}
	if r.Sync != "fsync" && r.Sync != "fdatasync" {
		errs = append(errs, fmt.Errorf("-sync %q: want fsync or fdatasync", r.Sync))
	}
	return errors.Join(errs...)
}

// create checks r and creates its preallocated file in dir, named after
// pattern (see os.CreateTemp).
func (r Records) create(dir, pattern string) (*floorFile, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	syncFn, err := syncFunc(r.Sync)
	if err != nil {
		return nil, err
	}
	return newFloorFile(dir, pattern, r.WriteSize, r.Prealloc, syncFn)
}

func (c *FloorConfig) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("-fsync-floor: a directory is required"))
	}
	if c.Duration <= 0 {
		errs = append(errs, errors.New("-d must be positive"))
	}
	if c.Warmup < 0 || c.Late < 0 {
		errs = append(errs, errors.New("-warmup and -late must not be negative"))
	}
	if c.Rate < 0 {
		errs = append(errs, errors.New("-rate must not be negative"))
	}
	return errors.Join(append(errs, c.Records.check())...)
}

// floorFile is the preallocated file and the position of the next write.
type floorFile struct {
	f       *os.File
	sync    func(*os.File) error
	writeAt func(b []byte, off int64) (int, error) // f.WriteAt; tests replace it
	buf     []byte
	off     int64
	size    int64
	n       uint64
}

// newFloorFile creates a temporary file in dir (named after pattern, as
// os.CreateTemp), preallocates it by writing prealloc bytes and syncing
// them once, and returns it ready for commits of writeSize bytes each made
// durable by sync. Preallocating by writing, as a WAL is written once and
// then reused from its start after each checkpoint, means that the
// measured writes never extend the file or allocate blocks.
func newFloorFile(dir, pattern string, writeSize int, prealloc int64, sync func(*os.File) error) (ff *floorFile, err error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close(), os.Remove(f.Name()))
		}
	}()
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i*7 + 1)
	}
	for off := int64(0); off < prealloc; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk[:min(int64(len(chunk)), prealloc-off)], off); err != nil {
			return nil, fmt.Errorf("preallocate: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("preallocate: %w", err)
	}
	ff = &floorFile{f: f, sync: sync, writeAt: f.WriteAt, buf: make([]byte, writeSize), size: prealloc}
	for i := range ff.buf {
		ff.buf[i] = chunk[i%len(chunk)]
	}
	return ff, nil
}

// commit writes one record at the next offset, wrapping inside the file,
// and syncs the file. A failed write does not advance the offset.
func (ff *floorFile) commit() error {
	if ff.off+int64(len(ff.buf)) > ff.size {
		ff.off = 0
	}
	// A fresh sequence number in every record, as every WAL frame differs.
	ff.n++
	binary.BigEndian.PutUint64(ff.buf, ff.n)
	if _, err := ff.writeAt(ff.buf, ff.off); err != nil {
		return err
	}
	ff.off += int64(len(ff.buf))
	return ff.sync(ff.f)
}

// remove closes the file and removes it.
func (ff *floorFile) remove() error {
	return errors.Join(ff.f.Close(), os.Remove(ff.f.Name()))
}

// runFloor measures the fsync floor described by cfg. The temporary file
// is removed before it returns, whatever happened.
func runFloor(ctx context.Context, cfg FloorConfig) (res *Result, err error) {
	cfg.Records = cfg.Records.withDefaults()
	cfg.Label = cmp.Or(cfg.Label, "fsync")
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ff, err := cfg.Records.create(cfg.Dir, ".loadgen-fsync-floor-*")
	if err != nil {
		return nil, fmt.Errorf("fsync floor: %w", err)
	}
	defer func() {
		if rerr := ff.remove(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("fsync floor: %w", rerr))
		}
		if err != nil {
			res = nil
		}
	}()

	res = &Result{Mode: "closed", Clients: 1, Label: cfg.Label, Sync: cfg.Sync, WriteSize: cfg.WriteSize, FS: fsType(cfg.Dir)}
	if cfg.Rate > 0 {
		res.Mode, res.Rate, res.LateMs = "open", cfg.Rate, ms(cfg.Late)
	}

	base := time.Now()
	measureStart := base.Add(cfg.Warmup)
	end := measureStart.Add(cfg.Duration)
	var (
		h          hist
		last       = end
		cpu0, cpu1 time.Duration
		started    bool
	)
	// startWindow reads this process's CPU time once, as the first measured
	// write begins.
	startWindow := func() {
		if !started {
			started = true
			cpu0 = selfCPU()
		}
	}
	if cfg.Rate == 0 {
		for ctx.Err() == nil {
			t0 := time.Now()
			if !t0.Before(end) {
				break
			}
			measured := !t0.Before(measureStart)
			if measured {
				startWindow()
			}
			if err := ff.commit(); err != nil {
				return nil, fmt.Errorf("fsync floor: %w", err)
			}
			t1 := time.Now()
			res.TotalRequests++
			if measured {
				h.record(t1.Sub(t0))
				res.OK++
				res.Syncs++
				last = t1
			}
		}
	} else if err := onPreciseThread(func() error {
		rate := int64(cfg.Rate)
		warmupNs := int64(cfg.Warmup)
		total := int64(end.Sub(base)) * rate / int64(time.Second)
		schedAt := func(i int64) int64 { return i * int64(time.Second) / rate }
		for i := int64(0); i < total && ctx.Err() == nil; {
			now := int64(time.Since(base))
			due := min(now*rate/int64(time.Second)+1, total)
			if due <= i {
				preciseSleep(min(time.Duration(schedAt(i)-now), 10*time.Millisecond))
				continue
			}
			// Every record due by now goes into this write and sync.
			measured := schedAt(due-1) >= warmupNs
			if measured {
				startWindow()
			}
			if err := ff.commit(); err != nil {
				return fmt.Errorf("fsync floor: %w", err)
			}
			t1 := time.Now()
			if measured {
				res.Syncs++
				last = t1
			}
			for ; i < due; i++ {
				res.TotalRequests++
				sched := schedAt(i)
				if sched < warmupNs {
					continue
				}
				if time.Duration(now-sched) > cfg.Late {
					res.Late++
				}
				h.record(t1.Sub(base.Add(time.Duration(sched))))
				res.OK++
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	cpu1 = selfCPU()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("run interrupted: %w", err)
	}
	if !started {
		cpu0 = cpu1
	}

	window := last.Sub(measureStart)
	res.DurationS = window.Seconds()
	res.RPS = float64(res.OK) / window.Seconds()
	res.P50ms, res.P90ms, res.P99ms = ms(h.quantile(0.50)), ms(h.quantile(0.90)), ms(h.quantile(0.99))
	res.P999ms, res.MaxMs, res.MeanMs = ms(h.quantile(0.999)), ms(time.Duration(h.max)), ms(h.mean())
	// The writer's CPU is this process's: it goes where the report reads a
	// server's, so that it is compared with the servers' per request.
	res.ClientCPUS = (cpu1 - cpu0).Seconds()
	res.ServerCPUS = res.ClientCPUS
	if res.OK > 0 {
		res.ServerCPUusPerReq = res.ServerCPUS * 1e6 / float64(res.OK)
	}
	return res, nil
}

// onPreciseThread runs fn on a goroutine of its own whose OS thread sleeps
// precisely (see lockPreciseThread); the thread exits with the goroutine.
func onPreciseThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		lockPreciseThread()
		errc <- fn()
	}()
	return <-errc
}
