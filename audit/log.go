package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultBusyTimeout        = time.Second
	DefaultMaxBatch           = 256
	DefaultGroupWait          = 500 * time.Microsecond
	DefaultCheckpointInterval = 5 * time.Second
)

// Attribute keys of this package's log lines.
const (
	logKeyPath   = "path"
	logKeySeq    = "seq"
	logKeyRows   = "rows"
	logKeyFailed = "failed_batches"
	logKeyFile   = "file"
	logKeyError  = "error"
)

// Config configures a Log. Zero fields take the documented defaults.
type Config struct {
	// Path is the database file, created (mode 0600) when missing. It is
	// always in WAL mode with synchronous=FULL. Required.
	Path string
	// KeyFile holds the per-install keys: the HMAC key of fingerprints and
	// the Ed25519 key of checkpoints and prune anchors. Default Path+".key";
	// created (mode 0600) when missing.
	KeyFile string
	// BusyTimeout is how long a commit waits for a lock another connection
	// holds before failing with ErrUnavailable. Default 1s.
	BusyTimeout time.Duration
	// MaxBatch is the most records committed in one transaction. Default 256.
	MaxBatch int
	// GroupWait is the longest the writer holds a commit open for records
	// announced with Expect but not yet appended, so that concurrent
	// decisions share one transaction and one fsync. A lone caller never
	// waits. Default 500µs; negative turns waiting off.
	GroupWait time.Duration
	// Checkpoint configures signed checkpoints of the chain head.
	Checkpoint CheckpointConfig
	// Now is the clock for records without a time and for checkpoints.
	// Default time.Now.
	Now func() time.Time
	// Logger receives operational events (never record contents). Default:
	// discard.
	Logger *slog.Logger
}

// CheckpointConfig configures the signed checkpoints Run writes.
type CheckpointConfig struct {
	// File receives the latest checkpoint, replaced atomically (mode 0644).
	// "" turns checkpoints off.
	File string
	// Interval is how often the checkpoint is rewritten while the head
	// moves; one is also written when Run returns. Default 5s.
	Interval time.Duration
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("path is required"))
	}
	if c.BusyTimeout < 0 || c.MaxBatch < 0 || c.Checkpoint.Interval < 0 {
		errs = append(errs, errors.New("busy timeout, max batch and checkpoint interval must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("audit: config: %w", err)
	}
	if c.KeyFile == "" {
		c.KeyFile = c.Path + ".key"
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = DefaultBusyTimeout
	}
	if c.GroupWait == 0 {
		c.GroupWait = DefaultGroupWait
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.Checkpoint.Interval == 0 {
		c.Checkpoint.Interval = DefaultCheckpointInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Log is the writer side of an audit database: Append queues a record and
// returns once it is committed; Run is the single goroutine that commits
// queued records in groups. Methods are safe for concurrent use.
type Log struct {
	cfg    Config
	logger *slog.Logger
	keys   *keys
	w      *writer // Open's until Run starts, then Run's alone
	queue  chan *request
	health atomic.Pointer[error] // result of the last commit; nil when it succeeded

	// expected counts announced records (Expect) not yet withdrawn: the
	// writer holds a commit up to GroupWait while more are on their way.
	expected atomic.Int64

	mu       sync.Mutex
	running  bool          // Run was called
	closed   bool          // Close was called
	quit     chan struct{} // closed by Close
	stopping chan struct{} // closed when the writer stops taking records
	stopped  chan struct{} // closed when the writer has finished

	// Run's own state.
	checkpointed int64  // seq of the last checkpoint written, -1 before the first
	failures     int    // failed commits since the last successful one
	lastFailure  string // the error of the last failed commit
}

// request is one queued record and, once done is closed, its outcome.
type request struct {
	row  *row
	err  error
	done chan struct{}
}

// errStopped is returned by Append once the writer has stopped.
var errStopped = fmt.Errorf("%w: the log is not running", ErrUnavailable)

// Open opens (creating if needed) the database and key file of cfg, brings
// the schema to the current version and loads the chain head. Call Run to
// start committing and Close when done.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	k, err := loadOrCreateKeys(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(cfg.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		cfg.Logger.Warn("audit key file is readable by others", logKeyFile, cfg.KeyFile)
	}
	w, err := newWriter(cfg.Path, cfg.BusyTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrUnavailable, cfg.Path, err)
	}
	cfg.Logger.Info("audit log open", logKeyPath, cfg.Path, logKeySeq, w.head.seq)
	return &Log{
		cfg: cfg, logger: cfg.Logger, keys: k, w: w,
		queue:    make(chan *request, 4*cfg.MaxBatch),
		quit:     make(chan struct{}),
		stopping: make(chan struct{}),
		stopped:  make(chan struct{}),

		checkpointed: -1,
	}, nil
}

// Append records r, blocking until its row is committed to disk
// (synchronous=FULL). It sets r.Time to Now when zero, and r.Seq, r.PrevHash
// and r.Hash once committed. The error wraps ErrInvalidRecord when r is
// malformed and ErrUnavailable when the row was not committed: the store
// failed, the writer is not running, or ctx ended first (the row may then
// still be committed later, recording a decision that was not acted on). In
// every error case the decision must not be acted on.
func (l *Log) Append(ctx context.Context, r *Record) error {
	if r.Time.IsZero() {
		r.Time = l.cfg.Now()
	}
	rw, err := newRow(r)
	if err != nil {
		return err
	}
	req := &request{row: rw, done: make(chan struct{})}
	select {
	case <-l.stopping:
		return errStopped
	default:
	}
	select {
	case l.queue <- req:
	case <-l.stopping:
		return errStopped
	case <-ctx.Done():
		return fmt.Errorf("%w: append: %w", ErrUnavailable, context.Cause(ctx))
	}
	select {
	case <-req.done:
	case <-ctx.Done():
		return fmt.Errorf("%w: append: waiting for commit: %w", ErrUnavailable, context.Cause(ctx))
	case <-l.stopped:
		select {
		case <-req.done: // committed by the final drain
		default:
			return errStopped
		}
	}
	if req.err != nil {
		return req.err
	}
	r.Seq, r.PrevHash, r.Hash = rw.seq, rw.prevHash, rw.hash
	return nil
}

// Fingerprint returns "hmac-sha256:" and the hex HMAC-SHA256 of secret under
// this install's key: stable for one key file, unrelated across installs,
// and useless for recovering the secret.
func (l *Log) Fingerprint(secret []byte) string {
	return l.keys.fingerprint(secret)
}

// PublicKey returns the Ed25519 key that verifies this log's checkpoints
// and prune anchors.
func (l *Log) PublicKey() ed25519.PublicKey {
	return l.keys.public()
}

// Healthy returns nil when the last commit succeeded or none was tried yet,
// the commit's error (wrapping ErrUnavailable) when it failed, and an
// ErrUnavailable error once Run has returned.
func (l *Log) Healthy() error {
	select {
	case <-l.stopped:
		return errStopped
	default:
	}
	if err := l.health.Load(); err != nil {
		return *err
	}
	return nil
}

// Run is the writer: it commits queued records in groups of up to MaxBatch
// per transaction and writes checkpoints every Checkpoint.Interval. When ctx
// is done or Close is called it commits what is already queued, writes a
// final checkpoint and returns nil. Run may be called once.
func (l *Log) Run(ctx context.Context) error {
	if err := l.start(); err != nil {
		return err
	}
	defer close(l.stopped)
	var tick <-chan time.Time
	if l.cfg.Checkpoint.File != "" {
		t := time.NewTicker(l.cfg.Checkpoint.Interval)
		defer t.Stop()
		tick = t.C
	}
	batch := make([]*request, 0, l.cfg.MaxBatch)
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	for {
		select {
		case req := <-l.queue:
			l.commit(l.gather(append(batch[:0], req), wait))
		case <-tick:
			l.checkpoint(false)
		case <-ctx.Done():
			l.shutdown(batch)
			return nil
		case <-l.quit:
			l.shutdown(batch)
			return nil
		}
	}
}

// start marks the Log as running.
func (l *Log) start() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return errors.New("audit: run: log is closed")
	case l.running:
		return errors.New("audit: run: already called")
	}
	l.running = true
	return nil
}

// fill adds queued requests to batch, up to its capacity, without waiting.
func (l *Log) fill(batch []*request) []*request {
	for len(batch) < cap(batch) {
		select {
		case req := <-l.queue:
			batch = append(batch, req)
		default:
			return batch
		}
	}
	return batch
}

// Expect announces a record the caller is about to Append, such as a
// decision that has started. While announced records are still on their
// way, the writer holds its next commit open for up to GroupWait so that
// they share it. Call the returned function once the Append has returned
// or will not happen; calling it more than once is harmless.
func (l *Log) Expect() (done func()) {
	l.expected.Add(1)
	var once sync.Once
	return func() { once.Do(func() { l.expected.Add(-1) }) }
}

// gather fills batch with queued requests and, while records announced
// with Expect are still on their way, waits up to GroupWait for them.
func (l *Log) gather(batch []*request, wait *time.Timer) []*request {
	batch = l.fill(batch)
	if l.cfg.GroupWait < 0 || l.expected.Load() <= int64(len(batch)) || len(batch) == cap(batch) {
		return batch
	}
	wait.Reset(l.cfg.GroupWait)
	defer wait.Stop()
	for l.expected.Load() > int64(len(batch)) && len(batch) < cap(batch) {
		select {
		case req := <-l.queue:
			batch = append(batch, req)
		case <-wait.C:
			return l.fill(batch)
		case <-l.quit:
			return batch
		}
	}
	return batch
}

// commit writes batch and tells each waiter the outcome.
func (l *Log) commit(batch []*request) {
	err := l.w.write(batch)
	if err != nil {
		err = fmt.Errorf("%w: commit: %w", ErrUnavailable, err)
	}
	l.setHealth(err, len(batch))
	for _, req := range batch {
		req.err = err
		close(req.done)
	}
}

// setHealth records the outcome of a commit. It logs when the store fails,
// when the cause changes and when it recovers, not every failed batch.
func (l *Log) setHealth(err error, rows int) {
	if err == nil {
		if l.failures > 0 {
			l.logger.Info("audit store recovered", logKeyFailed, l.failures, logKeySeq, l.w.head.seq)
			l.failures, l.lastFailure = 0, ""
		}
		l.health.Store(nil)
		return
	}
	switch msg := err.Error(); {
	case l.failures == 0:
		l.logger.Error("audit store unavailable; decisions fail closed until it recovers",
			logKeyPath, l.cfg.Path, logKeyRows, rows, logKeyError, err)
	case msg != l.lastFailure:
		l.logger.Warn("audit store still unavailable", logKeyRows, rows, logKeyError, err)
	default:
		l.logger.Debug("audit commit failed", logKeyRows, rows, logKeyError, err)
	}
	l.failures++
	l.lastFailure = err.Error()
	l.health.Store(&err)
}

// shutdown stops taking records, commits those already queued and writes a
// final checkpoint.
func (l *Log) shutdown(batch []*request) {
	close(l.stopping)
	for {
		b := l.fill(batch[:0])
		if len(b) == 0 {
			break
		}
		l.commit(b)
	}
	l.checkpoint(true)
}

// checkpoint writes a signed checkpoint of the committed head when the head
// has moved since the last one, or always when final is set.
func (l *Log) checkpoint(final bool) {
	head := l.w.head
	if l.cfg.Checkpoint.File == "" || (!final && head.seq == l.checkpointed) {
		return
	}
	cp, err := signCheckpoint(head, l.cfg.Now(), l.keys.sign)
	if err == nil {
		err = writeCheckpoint(l.cfg.Checkpoint.File, cp)
	}
	if err != nil {
		l.logger.Warn("audit checkpoint not written", logKeyFile, l.cfg.Checkpoint.File, logKeyError, err)
		return
	}
	l.checkpointed = head.seq
}

// Close stops Run if it is running (committing what is queued, as when its
// context ends), then closes the database. Appends after Close fail with
// ErrUnavailable.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.quit)
	running := l.running
	l.mu.Unlock()
	if running {
		<-l.stopped
	} else {
		close(l.stopping)
		close(l.stopped)
	}
	if err := l.w.close(); err != nil {
		return fmt.Errorf("audit: close %s: %w", l.cfg.Path, err)
	}
	return nil
}
