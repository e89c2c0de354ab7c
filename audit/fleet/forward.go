package fleet

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/credbroker/credbroker/audit"
)

// Defaults of Config.
const (
	DefaultBatchSize    = 500
	MaxBatchSize        = 5000
	DefaultPollInterval = 500 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	// minBackoff is the first wait after a failure.
	minBackoff = 250 * time.Millisecond
	// connectTimeout bounds connecting to the store and each batch.
	connectTimeout = 15 * time.Second
)

// Interval is a duration written as a Go duration string ("500ms") in the
// configuration file.
type Interval time.Duration

// UnmarshalText parses a positive Go duration.
func (d *Interval) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil || v <= 0 {
		return fmt.Errorf("invalid duration %q (use a positive Go duration such as 500ms, 2s, 1m)", b)
	}
	*d = Interval(v)
	return nil
}

// Config configures a Forwarder. In the configuration file:
//
//	audit:
//	  path: /var/lib/credbroker/audit.db
//	  forward: {postgres: {dsn_file: /etc/credbroker/fleet.dsn}}
type Config struct {
	// DSNFile holds the fleet store's connection string (see ReadDSN),
	// read at each connection, so that a rotated password is picked up.
	// Required.
	DSNFile string `yaml:"dsn_file"`
	// Host names this broker in the store's rows; default the host name.
	Host string `yaml:"host"`
	// CursorFile keeps how far forwarding got; default the audit database's
	// path + ".forward".
	CursorFile string `yaml:"cursor_file"`
	// BatchSize is the most rows sent in one transaction; default 500, at
	// most 5000.
	BatchSize int `yaml:"batch_size"`
	// PollInterval is how often the log is checked for new rows once every
	// row was sent; default 500ms.
	PollInterval Interval `yaml:"poll_interval"`
	// MaxBackoff caps the wait between attempts while the store fails
	// (jittered, doubling from 250ms); default 30s.
	MaxBackoff Interval `yaml:"max_backoff"`

	// Source is the audit log's path (audit.path). Required.
	Source string `yaml:"-"`
	// Logger receives operational events, never row contents nor the DSN;
	// default discard.
	Logger *slog.Logger `yaml:"-"`
	// Registerer receives the forwarder's metrics; nil for none.
	Registerer prometheus.Registerer `yaml:"-"`
	// Now is the clock of lag; default time.Now.
	Now func() time.Time `yaml:"-"`
}

// Paths returns the file-path fields, for the loader to resolve relative to
// the configuration file.
func (c *Config) Paths() []*string {
	return []*string{&c.DSNFile, &c.CursorFile}
}

// Validate reports every problem of c at once; it does no I/O.
func (c *Config) Validate() error {
	var errs []error
	if c.DSNFile == "" {
		errs = append(errs, errors.New("dsn_file is required: a file holding the fleet store's postgres:// URL"))
	}
	if c.Host != "" && !storable(c.Host) {
		errs = append(errs, errors.New("host must be valid UTF-8 without NUL characters"))
	}
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("batch_size %d: want 1 to %d (default %d)", c.BatchSize, MaxBatchSize, DefaultBatchSize))
	}
	return errors.Join(errs...)
}

// withDefaults fills in c's defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Source == "" {
		return c, errors.New("audit/fleet: forwarder: the audit log's path is required")
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("audit/fleet: forwarder: %w", err)
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil || !storable(h) {
			return c, fmt.Errorf("audit/fleet: forwarder: the host name cannot be used (%v): set host", err)
		}
		c.Host = h
	}
	if c.CursorFile == "" {
		c.CursorFile = c.Source + ".forward"
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = Interval(DefaultPollInterval)
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = Interval(DefaultMaxBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Forwarder copies an install's audit log to a fleet store: every row
// (decisions, lease lifecycle, signed heads and other events), each signed
// head also as a checkpoint, and the prune anchor. It reads the log
// read-only on a connection of its own, in its own goroutine, so decisions
// never wait for it: the local log stays the source of truth, and neither
// its writes nor its retention depend on the store. A durable cursor says
// how far it got; rows after it are sent again after a crash and ignored by
// the store (idempotent on install and seq), so every row arrives exactly
// once. While the store fails it retries with jittered backoff.
//
// A log that no longer holds the rows the cursor says were sent (cut short
// and restarted with --accept-audit-rewind, or replaced) is sent again from
// its start: the store keeps the rows it received first and adds the new
// checkpoints, which `audit verify --fleet` reports as a fork. Rows pruned
// locally before they were sent are logged and counted, and the signed
// prune anchor sent, so that verify reports the gap as such.
type Forwarder struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	cur     cursor
	cw      cursorWriter
	conn    *pgx.Conn
	scrub   scrubber
	install string // the install registered on conn, "" before
	batch   rowBatch
	cps     checkpointBatch

	announced     bool   // the start after pruned rows was logged
	cursorFailing bool   // the cursor file could not be written last time
	failures      int    // attempts failed since the last success
	lastFailure   string // the last failure's message
}

// NewForwarder validates cfg and returns a Forwarder; Run starts it.
func NewForwarder(cfg Config) (*Forwarder, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Forwarder{
		cfg: cfg, log: cfg.Logger, m: newMetrics(cfg.Registerer),
		cw: cursorWriter{path: cfg.CursorFile, now: cfg.Now},
	}, nil
}

// Run forwards until ctx is done, then returns nil. Nothing stops it
// before: a store that fails is retried, and a cursor file that cannot be
// written is logged (forwarding goes on from the cursor kept in memory; a
// restart then sends rows again, which the store ignores).
func (f *Forwarder) Run(ctx context.Context) error {
	defer f.closeConn()
	removeStaleTemps(f.cfg.CursorFile)
	cur, err := readCursor(f.cfg.CursorFile)
	if err != nil {
		f.log.Warn("audit forwarding: cursor file unreadable; every row is sent again (the store ignores those it has)", "error", err)
	}
	f.cur = cur
	f.log.Info("audit forwarding to the fleet store", "host", f.cfg.Host, "cursor_seq", f.cur.Seq, "batch", f.cfg.BatchSize)
	backoff := time.Duration(0)
	for {
		more, err := f.step(ctx)
		if ctx.Err() != nil {
			if f.cur.Seq > 0 {
				f.writeCursor(true)
			}
			return nil
		}
		var wait time.Duration
		switch {
		case err != nil:
			f.failed(err)
			backoff = min(max(2*backoff, minBackoff), time.Duration(f.cfg.MaxBackoff))
			wait = backoff/2 + rand.N(backoff/2+1) // jitter: half to the whole backoff
		default:
			f.succeeded()
			backoff = 0
			if !more {
				wait = time.Duration(f.cfg.PollInterval)
			}
		}
		f.updateLag(ctx)
		f.sleep(ctx, wait)
	}
}

// sleep waits for d or until ctx is done, refreshing the lag metrics every
// poll interval meanwhile, so that they stay current while the store
// fails.
func (f *Forwarder) sleep(ctx context.Context, d time.Duration) {
	for d > 0 && ctx.Err() == nil {
		step := min(d, time.Duration(f.cfg.PollInterval))
		t := time.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d -= step
		if d > 0 {
			f.updateLag(ctx)
		}
	}
}

// step sends the next batch. more reports that rows remain.
func (f *Forwarder) step(ctx context.Context) (more bool, err error) {
	feed, err := audit.OpenFeed(f.cfg.Source)
	if err != nil {
		return false, fmt.Errorf("reading the audit log: %w", err)
	}
	defer feed.Close()
	st, err := feed.State(ctx)
	if err != nil {
		return false, fmt.Errorf("reading the audit log: %w", err)
	}
	if st.PublicKey == nil {
		return false, nil // no broker has opened the log yet
	}
	install := InstallID(st.PublicKey)
	if f.cur.Install != install {
		if f.cur.Install != "" {
			f.log.Warn("audit forwarding: the audit log belongs to another install than the cursor's (new key file); forwarding it from its start",
				"install", install, "cursor_install", f.cur.Install)
		}
		f.cur = cursor{Install: install}
	}
	if err := f.checkRewind(ctx, feed, st); err != nil {
		return false, err
	}
	if f.cur.Seq == 0 && st.FirstSeq > 1 && !f.announced {
		f.announced = true
		f.log.Info("audit forwarding starts from the log's signed prune anchor: rows before it were pruned before forwarding began",
			"first_seq", st.FirstSeq)
	}
	f.batch.reset()
	f.cps.reset()
	var last audit.StoredRow
	err = feed.Rows(ctx, f.cur.Seq, f.cfg.BatchSize, func(r *audit.StoredRow) error {
		if r.Kind == audit.KindSignedHead {
			if cp, err := audit.ParseCheckpoint([]byte(r.Input)); err == nil {
				f.cps.add(cp)
			}
		}
		last = *r
		f.batch.add(*r)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("reading the audit log: %w", err)
	}
	anchor := st.Anchor
	if anchor != nil && hex.EncodeToString(anchor.Signature) == f.cur.Anchor {
		anchor = nil // sent already
	}
	if f.batch.len() == 0 && anchor == nil {
		return false, nil
	}
	if err := f.send(ctx, st, anchor); err != nil {
		f.closeConn()
		return false, err
	}
	if f.batch.len() > 0 {
		f.cur.Seq, f.cur.Hash = last.Seq, last.Hash
	}
	if anchor != nil {
		f.cur.Anchor = hex.EncodeToString(anchor.Signature)
	}
	f.writeCursor(false)
	return f.batch.len() == f.cfg.BatchSize, nil
}

// checkRewind compares the cursor with the log: a log that ends before the
// cursor, or whose row at the cursor has another hash, was cut short or
// replaced, and is sent again from its start. Rows pruned before they were
// sent are logged and counted.
func (f *Forwarder) checkRewind(ctx context.Context, feed *audit.Feed, st *audit.FeedState) error {
	c := &f.cur
	if c.Seq == 0 {
		return nil
	}
	// The chain runs from first to head; with every row pruned, it is
	// empty just after the anchor.
	first, head := st.FirstSeq, st.HeadSeq
	if first == 0 {
		first, head = 1, 0
		if st.Anchor != nil {
			first, head = st.Anchor.Seq, st.Anchor.Seq-1
		}
	}
	rewound := ""
	switch {
	case c.Seq > head:
		rewound = fmt.Sprintf("the log ends at seq %d, before seq %d, which was forwarded", head, c.Seq)
	case c.Seq >= first:
		var hash string
		err := feed.Rows(ctx, c.Seq-1, 1, func(r *audit.StoredRow) error {
			if r.Seq == c.Seq {
				hash = r.Hash
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading the audit log: %w", err)
		}
		if hash != c.Hash {
			rewound = fmt.Sprintf("the log's row %d is not the one forwarded", c.Seq)
		}
	case c.Seq == first-1 && st.Anchor != nil && st.Anchor.Seq == first && st.Anchor.PrevHash != c.Hash:
		rewound = fmt.Sprintf("the log's prune anchor does not follow row %d as forwarded", c.Seq)
	}
	if rewound != "" {
		f.log.Warn("audit forwarding: the audit log no longer holds the rows forwarded: it was cut short or replaced; forwarding it again from its start — the fleet store keeps the rows it received first, and `audit verify --fleet` reports the difference",
			"problem", rewound, "install", c.Install)
		f.m.rewinds.Inc()
		*c = cursor{Install: c.Install}
		return nil
	}
	if c.Seq < first-1 {
		lost := first - 1 - c.Seq
		f.log.Warn("audit forwarding: rows were pruned from the audit log before they were forwarded; the fleet store will not have them (the signed prune anchor is forwarded, and `audit verify --fleet` reports the gap)",
			"first_lost", c.Seq+1, "last_lost", first-1, "rows", lost)
		f.m.lost.Add(float64(lost))
		c.Seq, c.Hash = first-1, ""
		if st.Anchor != nil && st.Anchor.Seq == first {
			c.Hash = st.Anchor.PrevHash
		}
	}
	return nil
}

// send commits the batch, its checkpoints and anchor in one transaction,
// connecting (and registering the install) first when needed.
func (f *Forwarder) send(ctx context.Context, st *audit.FeedState, anchor *audit.Anchor) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := f.connect(ctx, st); err != nil {
		return err
	}
	tx, err := f.conn.Begin(ctx)
	if err != nil {
		return f.scrub.err(fmt.Errorf("fleet store: %w", err))
	}
	defer tx.Rollback(context.Background())
	sent := f.batch.len()
	if sent > 0 {
		tag, err := tx.Exec(ctx, insertRows, f.batch.args(f.cur.Install, f.cfg.Host)...)
		if err != nil {
			return f.scrub.err(fmt.Errorf("fleet store: inserting rows: %w", err))
		}
		f.m.duplicates.Add(float64(int64(sent) - tag.RowsAffected()))
	}
	if f.cps.len() > 0 {
		if _, err := tx.Exec(ctx, insertCheckpoints, f.cps.args(f.cur.Install, f.cfg.Host)...); err != nil {
			return f.scrub.err(fmt.Errorf("fleet store: inserting checkpoints: %w", err))
		}
	}
	if anchor != nil {
		text, err := anchorJSON(anchor)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, insertAnchor, f.cur.Install, anchor.Seq, text, hex.EncodeToString(anchor.Signature), f.cfg.Host); err != nil {
			return f.scrub.err(fmt.Errorf("fleet store: inserting the prune anchor: %w", err))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return f.scrub.err(fmt.Errorf("fleet store: commit: %w", err))
	}
	f.m.rows.Add(float64(sent))
	f.m.batches.Inc()
	f.m.last.Set(float64(f.cfg.Now().UnixNano()) / 1e9)
	return nil
}

// connect connects to the store when not connected, makes sure its
// schema can take the rows, and registers the install.
func (f *Forwarder) connect(ctx context.Context, st *audit.FeedState) error {
	if f.conn != nil && f.install == f.cur.Install {
		return nil
	}
	if f.conn == nil {
		dsn, err := ReadDSN(f.cfg.DSNFile)
		if err != nil {
			return err
		}
		f.scrub = newScrubber(dsn)
		cfg, err := parseDSN(dsn)
		if err != nil {
			return err
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return f.scrub.err(fmt.Errorf("fleet store: %w", err))
		}
		f.conn = conn
		if err := ensureSchema(ctx, conn); err != nil {
			return f.scrub.err(err)
		}
	}
	_, err := f.conn.Exec(ctx, "INSERT INTO "+tableInstalls+" (install_id, public_key, host) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
		f.cur.Install, base64.StdEncoding.EncodeToString(st.PublicKey), f.cfg.Host)
	if err != nil {
		return f.scrub.err(fmt.Errorf("fleet store: registering the install: %w", err))
	}
	f.install = f.cur.Install
	return nil
}

// writeCursor replaces the cursor file, logging when writing it starts
// failing and when it works again.
func (f *Forwarder) writeCursor(sync bool) {
	err := f.cw.write(f.cur, sync)
	switch {
	case err != nil && !f.cursorFailing:
		f.cursorFailing = true
		f.log.Warn("audit forwarding: the cursor file cannot be written; forwarding goes on, and after a restart rows are sent again (the store ignores those it has)", "error", err)
	case err == nil && f.cursorFailing:
		f.cursorFailing = false
		f.log.Info("audit forwarding: the cursor file is written again", "file", f.cfg.CursorFile)
	}
}

// closeConn drops the connection, so that the next step reconnects.
func (f *Forwarder) closeConn() {
	if f.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = f.conn.Close(ctx)
		cancel()
		f.conn, f.install = nil, ""
	}
}

// failed records a failed attempt: counted always, logged when the store
// starts failing and when the cause changes.
func (f *Forwarder) failed(err error) {
	f.m.failures.Inc()
	msg := err.Error()
	switch {
	case f.failures == 0:
		f.log.Warn("audit forwarding to the fleet store failed; retrying with backoff (decisions are not affected: the local log is written as always)", "error", msg)
	case msg != f.lastFailure:
		f.log.Warn("audit forwarding still failing", "error", msg, "attempts", f.failures+1)
	default:
		f.log.Debug("audit forwarding still failing", "error", msg, "attempts", f.failures+1)
	}
	f.failures++
	f.lastFailure = msg
}

// succeeded records a successful attempt, logging a recovery.
func (f *Forwarder) succeeded() {
	if f.failures > 0 {
		f.log.Info("audit forwarding resumed", "failed_attempts", f.failures, "cursor_seq", f.cur.Seq)
		f.failures, f.lastFailure = 0, ""
	}
}

// updateLag sets the lag metrics: rows not yet forwarded, and the age of
// the oldest of them.
func (f *Forwarder) updateLag(ctx context.Context) {
	feed, err := audit.OpenFeed(f.cfg.Source)
	if err != nil {
		return
	}
	defer feed.Close()
	st, err := feed.State(ctx)
	if err != nil || f.cur.Install == "" {
		return
	}
	behind := max(st.HeadSeq-f.cur.Seq, 0)
	f.m.lagRows.Set(float64(behind))
	age := 0.0
	if behind > 0 {
		_ = feed.Rows(ctx, f.cur.Seq, 1, func(r *audit.StoredRow) error {
			age = max(f.cfg.Now().Sub(time.Unix(0, r.Time)).Seconds(), 0)
			return nil
		})
	}
	f.m.lagSeconds.Set(age)
}
