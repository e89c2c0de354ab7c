package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
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
	DefaultSignInterval       = time.Second
	DefaultProbeInterval      = 250 * time.Millisecond
)

// Attribute keys of this package's log lines.
const (
	logKeyPath   = "path"
	logKeySeq    = "seq"
	logKeyRows   = "rows"
	logKeyFailed = "failed_batches"
	logKeyFile   = "file"
	logKeyError  = "error"
	logKeyFirst  = "first_seq"
	logKeyLast   = "last_seq"
	logKeyIDs    = "decision_ids"
)

// Config configures a Log. Zero fields take the documented defaults.
type Config struct {
	// Path is the database file, created (mode 0600) when missing at Open
	// and never afterwards. It is always in WAL mode with synchronous=FULL.
	// Required.
	Path string
	// KeyFile holds the per-install keys: the HMAC key of fingerprints and
	// the Ed25519 key of signed heads, checkpoints and prune anchors.
	// Default Path+".key". It is created (mode 0600) only together with a
	// new, empty log; it must be owned by the running user and give group
	// and others no access.
	KeyFile string
	// HeadFile records the newest chain head this install signed, so that a
	// log whose newest rows were removed is refused at Open. Default: beside
	// the key file, named after the database with ".head" (audit.db.head).
	HeadFile string
	// AcceptRewind lets Open continue with a log that ends before (or no
	// longer holds) the head this install signed. The override is logged and
	// recorded in the log as a KindOverride row.
	AcceptRewind bool
	// SignInterval is how often the chain head is signed into the log (a
	// KindSignedHead row) while rows are being written; one is also written
	// when Run returns. Default 1s; negative signs only when Run returns.
	SignInterval time.Duration
	// ProbeInterval is how often a failed store is probed with a small write
	// so that Healthy turns nil as soon as the store is writable again, and
	// how often a healthy one checks that its files are still in place.
	// Default 250ms.
	ProbeInterval time.Duration
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
	// MinRetention is the retention floor: Open stores it in the database,
	// and Prune refuses (unless forced) to delete rows newer than this. A
	// store without one gets DefaultMinRetention. Default 24h.
	MinRetention time.Duration
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
	if c.BusyTimeout < 0 || c.MaxBatch < 0 || c.Checkpoint.Interval < 0 || c.ProbeInterval < 0 {
		errs = append(errs, errors.New("busy timeout, max batch, checkpoint and probe intervals must not be negative"))
	}
	if c.MinRetention < 0 {
		errs = append(errs, errors.New("min retention must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("audit: config: %w", err)
	}
	if c.KeyFile == "" {
		c.KeyFile = c.Path + ".key"
	}
	if c.MinRetention == 0 {
		c.MinRetention = DefaultMinRetention
	}
	if c.HeadFile == "" {
		c.HeadFile = filepath.Join(filepath.Dir(c.KeyFile), filepath.Base(c.Path)+".head")
	}
	if c.SignInterval == 0 {
		c.SignInterval = DefaultSignInterval
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
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
// returns once it is committed; records queued together share a commit.
// Methods are safe for concurrent use.
//
// Commits are led: an Append that finds no commit under way commits its
// record itself, on its own goroutine, so a lone decision pays for no
// hand-off between goroutines. Records appended while a commit is under
// way wait for the next one, which Run leads, so that they share it. Run
// also signs heads, writes checkpoints and probes a failed store; whoever
// uses the writer holds wmu.
type Log struct {
	cfg    Config
	logger *slog.Logger
	keys   *keys
	w      *writer // Open's until Run starts, then the holder of wmu's
	wmu    sync.Mutex
	health atomic.Pointer[error] // result of the last commit; nil when it succeeded

	// expected counts announced records (Expect) not yet withdrawn: the
	// writer holds a commit up to GroupWait while more are on their way.
	expected atomic.Int64

	qmu       sync.Mutex
	pending   []*request    // appended, not yet taken into a commit, oldest first
	leading   bool          // a commit of pending records is under way or handed to Run
	accepting bool          // Run is running: an Append may lead a commit
	refusing  bool          // Run is stopping or stopped: Append refuses
	arrived   chan struct{} // 1-buffered: a record was appended while a commit was led
	kick      chan struct{} // 1-buffered: Run is to lead the next commit

	mu      sync.Mutex
	running bool          // Run was called
	closed  bool          // Close was called
	quit    chan struct{} // closed by Close
	stopped chan struct{} // closed when the writer has finished

	// signTicks counts the sign ticks Run handled (tests wait on it).
	signTicks atomic.Int64

	// The writer's state, guarded by wmu.
	batch        []*request  // the requests being committed, reused
	rows         []*row      // their rows, reused
	wait         *time.Timer // GroupWait, stopped when not waiting
	files        *fileWriter // while Run runs
	headOnDisk   bool        // the head file exists
	floor        int64       // the newest head signed before: never sign one behind it
	lastSigned   *Checkpoint // the newest head signed by this Log, nil before the first
	checkpointed int64       // seq of the last checkpoint file written, -1 before the first
	failures     int         // failed commits since the last successful one
	lastFailure  string      // the error of the last failed commit
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
// the schema to the current version and loads the chain head. It refuses a
// log that does not belong to the key file, a non-empty log without its key
// file, a key file others can read, and a log that ends before (or was
// rewritten below) the newest head this install signed, unless
// cfg.AcceptRewind. Call Run to start committing and Close when done.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	for _, p := range []string{cfg.KeyFile, cfg.HeadFile, cfg.Checkpoint.File} {
		removeStaleTemps(p)
	}
	w, err := newWriter(cfg.Path, cfg.BusyTimeout, cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrUnavailable, cfg.Path, err)
	}
	l := &Log{
		cfg: cfg, logger: cfg.Logger, w: w,
		arrived: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		batch:   make([]*request, 0, cfg.MaxBatch),
		wait:    stoppedTimer(),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),

		checkpointed: -1,
	}
	w.onUndelivered = l.logUndelivered
	if err := l.open(); err != nil {
		w.close()
		return nil, err
	}
	cfg.Logger.Info("audit log open", logKeyPath, cfg.Path, logKeySeq, w.head.seq)
	return l, nil
}

// open loads the keys that belong to the log and checks the log against the
// newest head this install signed.
func (l *Log) open() error {
	cfg, w := l.cfg, l.w
	k, err := l.loadKeys()
	if err != nil {
		return err
	}
	l.keys = k
	if err := pinKey(w.db, k.public()); err != nil {
		return fmt.Errorf("audit: key file %s: %w", cfg.KeyFile, err)
	}
	if err := storeMinRetention(w.db, cfg.MinRetention); err != nil {
		return fmt.Errorf("audit: open %s: %w", cfg.Path, err)
	}
	hf, err := readHeadFile(cfg.HeadFile)
	if err != nil {
		return fmt.Errorf("audit: head file: %w", err)
	}
	if hf != nil {
		l.floor, l.headOnDisk = hf.Seq, true
	}
	p, err := checkSignedHead(w.db, hf, k.public(), cfg.HeadFile, w.head)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", cfg.Path, err)
	}
	if p == nil {
		return nil
	}
	if !cfg.AcceptRewind {
		return fmt.Errorf("%w: %s: %s", ErrRewound, cfg.Path, p.msg)
	}
	l.logger.Warn("audit log accepted by operator override although it does not reach its signed head",
		logKeyPath, cfg.Path, logKeyError, p.msg)
	ev, err := newEvent(KindOverride, "operator override: "+p.msg, cfg.Now(), p.details)
	if err == nil {
		err = w.write([]*row{ev})
	}
	if err != nil {
		return fmt.Errorf("%w: recording the override: %w", ErrUnavailable, err)
	}
	l.floor = 0
	return l.sign()
}

// loadKeys reads the key file, or creates it when the log is new and empty.
func (l *Log) loadKeys() (*keys, error) {
	path := l.cfg.KeyFile
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		empty, err := isEmpty(l.w.db)
		if err != nil {
			return nil, fmt.Errorf("audit: open %s: %w", l.cfg.Path, err)
		}
		if !empty {
			return nil, fmt.Errorf("audit: key file %s is missing, and the log %s is not empty: restore the key file that belongs to it (new keys would make its signatures and fingerprints unverifiable)", path, l.cfg.Path)
		}
		l.logger.Info("audit keys created", logKeyFile, path)
		return createKeys(path)
	}
	if err := checkKeyFile(path); err != nil {
		return nil, err
	}
	return readKeys(path)
}

// isEmpty reports whether the log has no row and was never pruned.
func isEmpty(c *conn) (bool, error) {
	head, _, err := loadHead(c)
	return head.seq == 0, err
}

// pinKey stores the public key in a log that has none (a new or migrated
// one) and refuses a key file whose key is not the stored one.
func pinKey(c *conn, pub ed25519.PublicKey) error {
	want := base64.StdEncoding.EncodeToString(pub)
	stored, ok, err := getMeta(c, metaPublicKey)
	switch {
	case err != nil:
		return err
	case !ok:
		return setMeta(c, metaPublicKey, want)
	case stored != want:
		return fmt.Errorf("it belongs to another log: this log was created with public key %s, the key file's is %s", stored, want)
	}
	return nil
}

// logUndelivered logs rows that were committed although their commit
// reported failure.
func (l *Log) logUndelivered(u undelivered) {
	l.logger.Warn("audit: rows whose commit reported failure were committed after all; recorded as undelivered (their callers were refused)",
		logKeyFirst, u.FirstSeq, logKeyLast, u.LastSeq, logKeyIDs, u.DecisionIDs)
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
	if err := l.submit(ctx, rw); err != nil {
		return err
	}
	r.Seq, r.PrevHash, r.Hash = rw.seq, rw.prevHash, rw.hash
	return nil
}

// submit queues rw for the next commit, leading the commit when none is
// under way, and waits until it is committed.
func (l *Log) submit(ctx context.Context, rw *row) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: append: %w", ErrUnavailable, context.Cause(ctx))
	}
	req := &request{row: rw, done: make(chan struct{})}
	l.qmu.Lock()
	if l.refusing {
		l.qmu.Unlock()
		return errStopped
	}
	l.pending = append(l.pending, req)
	lead := l.accepting && !l.leading
	if lead {
		l.leading = true
	}
	l.qmu.Unlock()
	if lead {
		l.lead()
	} else {
		poke(l.arrived)
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
	return req.err
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

// Healthy returns nil when the store is writable: the last commit or probe
// succeeded (or none was tried yet) and the database and WAL are still the
// files opened at start-up. Otherwise it returns why, wrapping
// ErrUnavailable; an ErrUnavailable error once Run has returned. While the
// store is failing, Run probes it every ProbeInterval, so Healthy turns nil
// as soon as it is writable again, without waiting for a request.
func (l *Log) Healthy() error {
	select {
	case <-l.stopped:
		return errStopped
	default:
	}
	if err := l.health.Load(); err != nil {
		return *err
	}
	if err := l.w.checkFiles(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Run is the writer's own goroutine: it commits the records appended while
// another commit was under way, in groups of up to MaxBatch per
// transaction, signs the chain head into the log every SignInterval while
// rows are written, rewrites the checkpoint file every
// Checkpoint.Interval, and probes a failed store every ProbeInterval. When
// ctx is done or Close is called it commits what is already queued, signs
// the final head and returns nil. Run may be called once; records are
// committed only while it runs.
func (l *Log) Run(ctx context.Context) error {
	if err := l.start(); err != nil {
		return err
	}
	defer close(l.stopped)
	var checkpointTick, signTick <-chan time.Time
	if l.cfg.Checkpoint.File != "" {
		t := time.NewTicker(l.cfg.Checkpoint.Interval)
		defer t.Stop()
		checkpointTick = t.C
	}
	if l.cfg.SignInterval > 0 {
		t := time.NewTicker(l.cfg.SignInterval)
		defer t.Stop()
		signTick = t.C
	}
	probe := time.NewTicker(l.cfg.ProbeInterval)
	defer probe.Stop()
	l.wmu.Lock()
	l.files = l.startFiles()
	l.wmu.Unlock()
	l.qmu.Lock()
	l.accepting = true
	if len(l.pending) > 0 && !l.leading {
		// Appended before Run started: Run leads their commit.
		l.leading = true
		poke(l.kick)
	}
	l.qmu.Unlock()
	for {
		select {
		case <-l.kick:
			if l.commitNext() {
				poke(l.kick)
			}
		case <-signTick:
			l.wmu.Lock()
			if l.health.Load() == nil {
				l.setHealth(l.sign(), 0)
			}
			l.wmu.Unlock()
			l.signTicks.Add(1)
		case <-checkpointTick:
			l.wmu.Lock()
			l.files.post(l.files.checkpoint, l.lastSigned)
			l.wmu.Unlock()
		case <-probe.C:
			l.wmu.Lock()
			l.probe()
			l.wmu.Unlock()
		case <-ctx.Done():
			l.shutdown()
			return nil
		case <-l.quit:
			l.shutdown()
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

// lead commits the next group of pending records on the appending
// goroutine, then hands what was appended meanwhile to Run.
func (l *Log) lead() {
	if l.commitNext() {
		poke(l.kick)
	}
}

// commitNext commits the oldest pending records as one group, waiting for
// announced ones (see gather). It reports whether records remain pending,
// in which case the caller remains the leader and must see that they are
// committed (by poking Run); otherwise the lead is given up.
func (l *Log) commitNext() (more bool) {
	l.wmu.Lock()
	if batch := l.gather(l.take(l.batch[:0])); len(batch) > 0 {
		l.commit(batch)
		clear(batch)
	}
	l.wmu.Unlock()
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if len(l.pending) == 0 {
		l.leading = false
		return false
	}
	return true
}

// take moves pending records to batch, up to its capacity, without waiting.
func (l *Log) take(batch []*request) []*request {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	n := min(len(l.pending), cap(batch)-len(batch))
	batch = append(batch, l.pending[:n]...)
	rest := copy(l.pending, l.pending[n:])
	clear(l.pending[rest:])
	l.pending = l.pending[:rest]
	return batch
}

// poke sends on a 1-buffered channel unless a value is already waiting.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// stoppedTimer returns a timer that is not running.
func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
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

// gather adds to batch the records appended while records announced with
// Expect are still on their way, waiting up to GroupWait for them. A lone
// record never waits.
func (l *Log) gather(batch []*request) []*request {
	if len(batch) == 0 || l.cfg.GroupWait < 0 || l.expected.Load() <= int64(len(batch)) || len(batch) == cap(batch) {
		return batch
	}
	l.wait.Reset(l.cfg.GroupWait)
	defer l.wait.Stop()
	for l.expected.Load() > int64(len(batch)) && len(batch) < cap(batch) {
		select {
		case <-l.arrived:
			batch = l.take(batch)
		case <-l.wait.C:
			return l.take(batch)
		case <-l.quit:
			return batch
		}
	}
	return batch
}

// commit writes batch and tells each waiter the outcome.
func (l *Log) commit(batch []*request) {
	l.rows = l.rows[:0]
	for _, req := range batch {
		l.rows = append(l.rows, req.row)
	}
	err := l.w.write(l.rows)
	if err != nil {
		err = fmt.Errorf("%w: commit: %w", ErrUnavailable, err)
	}
	l.setHealth(err, len(batch))
	for _, req := range batch {
		req.err = err
		close(req.done)
	}
	clear(l.rows)
}

// probe checks, while the store is healthy, that its files are still the
// ones opened; while it is failing, it tries a small write, so that health
// comes back as soon as the store is writable.
func (l *Log) probe() {
	var err error
	if l.health.Load() == nil {
		err = l.w.checkFiles()
	} else {
		err = l.w.probe(l.cfg.Now())
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	l.setHealth(err, 0)
}

// setHealth records the outcome of a commit or probe. It logs when the store
// fails, when the cause changes and when it recovers, not every failed
// batch.
func (l *Log) setHealth(err error, rows int) {
	if err == nil {
		if l.failures > 0 {
			l.logger.Info("audit store recovered", logKeyFailed, l.failures, logKeySeq, l.w.head.seq)
			l.failures, l.lastFailure = 0, ""
		}
		l.health.Store(nil)
		return
	}
	if !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	switch msg := err.Error(); {
	case l.failures == 0:
		l.logger.Error("audit store unavailable; decisions fail closed until it recovers",
			logKeyPath, l.cfg.Path, logKeyRows, rows, logKeyError, err)
	case msg != l.lastFailure:
		l.logger.Warn("audit store still unavailable", logKeyRows, rows, logKeyError, err)
	default:
		l.logger.Debug("audit store still unavailable", logKeyRows, rows, logKeyError, err)
	}
	l.failures++
	l.lastFailure = err.Error()
	l.health.Store(&err)
}

// shutdown stops taking records, commits those already queued, signs the
// final head and writes the head and checkpoint files.
func (l *Log) shutdown() {
	l.qmu.Lock()
	l.refusing, l.accepting = true, false
	l.qmu.Unlock()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.files != nil {
		l.files.stop()
		l.files = nil
	}
	for {
		b := l.take(l.batch[:0])
		if len(b) == 0 {
			break
		}
		l.commit(b)
		clear(b)
	}
	if err := l.sign(); err != nil {
		l.logger.Warn("audit: final chain head not signed", logKeyError, err)
	}
	l.writeCheckpoint(l.lastSigned)
}

// sign signs the committed chain head into the log, unless it is signed
// already: it commits a KindSignedHead row holding the signature and
// records the head in the head file. It never signs a head behind one
// signed before.
//
// The head file is written before the row when there is none yet (so that a
// log with signed heads always has one) or when Run's file writer is not
// running (Open, shutdown); otherwise after the row, by the file writer, so
// that its fsyncs do not hold up commits. Either way it never names a head
// the log does not reach: it may only lag behind the log.
func (l *Log) sign() error {
	w := l.w
	if w.signed || w.head.seq == 0 || w.db == nil && l.health.Load() != nil {
		return nil
	}
	if w.head.seq < l.floor {
		return fmt.Errorf("%w: the head, seq %d, is behind seq %d signed before; refusing to sign it", errRewound, w.head.seq, l.floor)
	}
	cp, err := signCheckpoint(w.head, l.cfg.Now(), l.keys.sign)
	if err != nil {
		return err
	}
	now := !l.headOnDisk || l.files == nil
	if now && l.writeHead(cp) {
		l.headOnDisk = true
	}
	rw, err := newEvent(KindSignedHead, reasonSignedHead, cp.Time, cp)
	if err != nil {
		return err
	}
	if err := w.write([]*row{rw}); err != nil {
		return fmt.Errorf("%w: signing the chain head: %w", ErrUnavailable, err)
	}
	l.floor, l.lastSigned = cp.Seq, cp
	if !now {
		l.files.post(l.files.head, cp)
	}
	return nil
}

// writeHead writes cp to the head file and reports whether it did.
func (l *Log) writeHead(cp *Checkpoint) bool {
	if err := writeHeadFile(l.cfg.HeadFile, cp); err != nil {
		l.logger.Warn("audit head file not written", logKeyFile, l.cfg.HeadFile, logKeyError, err)
		return false
	}
	return true
}

// writeCheckpoint writes cp to the checkpoint file unless it is there
// already.
func (l *Log) writeCheckpoint(cp *Checkpoint) {
	if l.cfg.Checkpoint.File == "" || cp == nil || cp.Seq == l.checkpointed {
		return
	}
	if err := writeCheckpoint(l.cfg.Checkpoint.File, cp); err != nil {
		l.logger.Warn("audit checkpoint not written", logKeyFile, l.cfg.Checkpoint.File, logKeyError, err)
		return
	}
	l.checkpointed = cp.Seq
}

// fileWriter writes the head file and the checkpoint file off the writer's
// goroutine: each write is two fsyncs and a rename, which would otherwise
// hold up the commits queued behind it. Only the newest of each waits.
type fileWriter struct {
	head, checkpoint chan *Checkpoint // 1-buffered; the writer's goroutine is the only sender
	quit, done       chan struct{}
}

// startFiles starts l's file writer.
func (l *Log) startFiles() *fileWriter {
	f := &fileWriter{
		head: make(chan *Checkpoint, 1), checkpoint: make(chan *Checkpoint, 1),
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	go func() {
		defer close(f.done)
		for {
			select {
			case cp := <-f.head:
				l.writeHead(cp)
			case cp := <-f.checkpoint:
				l.writeCheckpoint(cp)
			case <-f.quit:
				select {
				case cp := <-f.head:
					l.writeHead(cp)
				default:
				}
				select {
				case cp := <-f.checkpoint:
					l.writeCheckpoint(cp)
				default:
				}
				return
			}
		}
	}()
	return f
}

// post hands cp to the file writer, replacing one still waiting.
func (f *fileWriter) post(ch chan *Checkpoint, cp *Checkpoint) {
	if cp == nil {
		return
	}
	select {
	case ch <- cp:
		return
	default:
	}
	select {
	case <-ch:
	default:
	}
	ch <- cp
}

// stop writes what is waiting and ends the file writer.
func (f *fileWriter) stop() {
	close(f.quit)
	<-f.done
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
		l.qmu.Lock()
		l.refusing = true
		l.qmu.Unlock()
		close(l.stopped)
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.w.close(); err != nil {
		return fmt.Errorf("audit: close %s: %w", l.cfg.Path, err)
	}
	return nil
}
