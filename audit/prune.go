package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Domains separating prune anchor signatures from every other use of the
// key: v1 anchors (written before the removed range was recorded) cover the
// seq and the link; v2 anchors also cover the range.
const (
	anchorDomainV1 = "credbroker audit prune anchor v1\x00"
	anchorDomainV2 = "credbroker audit prune anchor v2\x00"
)

// AnchorVersion is the version of the anchors Prune writes.
const AnchorVersion = 2

// Defaults of PruneOptions.
const (
	// DefaultPruneBatch keeps each transaction's hold on the write lock to
	// about 6 ms (rarely over 20 ms) on a 2-core machine with a 1.5 GB log,
	// so that a live writer waits at most a few tens of ms (see docs/audit.md,
	// "Pruning").
	DefaultPruneBatch   = 500
	DefaultPruneTimeout = 5 * time.Second
)

// yieldFor returns how long Prune leaves the write lock free after a batch
// that held it for hold. A writer that waited through the batch retries on
// SQLite's busy schedule (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100
// ms apart), which never leaves it asleep for longer than it has already
// waited plus 5 ms, nor for longer than 100 ms: a gap that long is sure to
// let it in, so a live writer is held up by one batch at most. Without the gap
// Prune takes the lock back within microseconds and starves the writer
// until its BusyTimeout fails the decision.
func yieldFor(hold time.Duration) time.Duration {
	return min(hold+5*time.Millisecond, 100*time.Millisecond)
}

// Anchor is what Prune leaves in the database, signed with the install's
// key: the oldest retained row is Seq and links to PrevHash (when every row
// was pruned, Seq is the next row to be written). Verify starts the chain
// from it.
//
// Version 2 anchors also record what was removed, over every prune so far:
// Rows rows, the last Rows before Seq, with times from Oldest to Newest
// (the times of the rows, not of the prunes); Before is the cut-off the
// latest prune was asked for and PrunedAt when it ran; Forced is set once
// any prune was forced below the retention floor, and stays set. Rows is
// Seq−1 unless the log was first pruned by a release that wrote version 1
// anchors (Version 0 here, with only Seq, PrevHash and Signature), which
// did not record the removed range.
type Anchor struct {
	Version   int       `json:"version,omitempty"`
	Seq       int64     `json:"seq"`
	PrevHash  string    `json:"prev_hash"`
	Rows      int64     `json:"rows,omitempty"`
	Oldest    time.Time `json:"oldest,omitzero"`
	Newest    time.Time `json:"newest,omitzero"`
	Before    time.Time `json:"before,omitzero"`
	PrunedAt  time.Time `json:"pruned_at,omitzero"`
	Forced    bool      `json:"forced,omitempty"`
	Signature []byte    `json:"signature"`
}

// message is the byte string the anchor's signature covers: the domain of
// its version, then fixed-width big-endian fields (seq, the 32-byte hash
// and, from version 2, rows, the four times in Unix ns and forced as one
// byte).
func (a *Anchor) message() ([]byte, error) {
	h, err := parseHash(a.PrevHash)
	if err != nil {
		return nil, err
	}
	switch a.Version {
	case 0:
		b := binary.BigEndian.AppendUint64([]byte(anchorDomainV1), uint64(a.Seq))
		return append(b, h[:]...), nil
	case AnchorVersion:
	default:
		return nil, errUnknownVersion(a.Version)
	}
	b := binary.BigEndian.AppendUint64([]byte(anchorDomainV2), uint64(a.Seq))
	b = append(b, h[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Rows))
	for _, t := range []struct {
		name string
		t    time.Time
	}{{"oldest", a.Oldest}, {"newest", a.Newest}, {"before", a.Before}, {"pruned_at", a.PrunedAt}} {
		if t.t.IsZero() || t.t.Before(minTime) || t.t.After(maxTime) {
			return nil, fmt.Errorf("%s %s is missing or outside 1678–2262", t.name, t.t.Format(time.RFC3339Nano))
		}
		b = binary.BigEndian.AppendUint64(b, uint64(t.t.UnixNano()))
	}
	forced := byte(0)
	if a.Forced {
		forced = 1
	}
	return append(b, forced), nil
}

// verify checks the anchor's signature with pub.
func (a *Anchor) verify(pub ed25519.PublicKey) error {
	msg, err := a.message()
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, msg, a.Signature) {
		return errors.New("signature does not verify with the trusted public key")
	}
	return nil
}

// Describe says in words where the chain starts and what was pruned, as
// `audit verify` reports it.
func (a *Anchor) Describe() string {
	start := fmt.Sprintf("the chain starts at the signed anchor at seq %d", a.Seq)
	if a.Version == 0 {
		return fmt.Sprintf("pruned: rows 1 to %d removed, by a release that did not record their times; %s", a.Seq-1, start)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pruned: %d %s removed", a.Seq-1, plural(a.Seq-1, "row"))
	if unrecorded := a.Seq - 1 - a.Rows; unrecorded > 0 {
		fmt.Fprintf(&b, " (rows 1 to %d by a release that did not record their times)", unrecorded)
	}
	fmt.Fprintf(&b, ", seq %d to %d with times from %s to %s; last cut-off %s, pruned at %s",
		a.Seq-a.Rows, a.Seq-1, a.Oldest.UTC().Format(timeLayout), a.Newest.UTC().Format(timeLayout),
		a.Before.UTC().Format(timeLayout), a.PrunedAt.UTC().Format(timeLayout))
	if a.Forced {
		b.WriteString("; forced below the retention floor")
	}
	b.WriteString("; " + start)
	return b.String()
}

// plural returns word, with an s unless n is 1.
func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// parseAnchor parses a stored anchor strictly: no unknown fields, nothing
// after the object, and exactly the fields of its version, well-formed.
func parseAnchor(s string) (*Anchor, error) {
	d := json.NewDecoder(bytes.NewReader([]byte(s)))
	d.DisallowUnknownFields()
	a := &Anchor{}
	if err := d.Decode(a); err != nil {
		return nil, fmt.Errorf("prune anchor: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("prune anchor: data after the object")
	}
	if a.Seq < 1 {
		return nil, fmt.Errorf("prune anchor: seq %d, want 1 or more", a.Seq)
	}
	if err := a.checkFields(); err != nil {
		return nil, fmt.Errorf("prune anchor: %w", err)
	}
	if _, err := a.message(); err != nil {
		return nil, fmt.Errorf("prune anchor: %w", err)
	}
	return a, nil
}

// checkFields checks that a has the fields of its version and that they
// agree with each other.
func (a *Anchor) checkFields() error {
	switch a.Version {
	case 0:
		if a.Rows != 0 || !a.Oldest.IsZero() || !a.Newest.IsZero() || !a.Before.IsZero() || !a.PrunedAt.IsZero() || a.Forced {
			return errors.New("a version 1 anchor (no version field) with fields of version 2")
		}
		return nil
	case AnchorVersion:
	default:
		return errUnknownVersion(a.Version)
	}
	switch {
	case a.Rows < 1 || a.Rows > a.Seq-1:
		return fmt.Errorf("rows %d, want 1 to seq−1 (%d)", a.Rows, a.Seq-1)
	case a.Newest.Before(a.Oldest):
		return errors.New("newest is before oldest")
	}
	return nil
}

// errUnknownVersion reports an anchor version this program cannot read.
func errUnknownVersion(v int) error {
	return fmt.Errorf("unknown version %d (version 1 anchors have no version field; this program reads them and writes version %d)", v, AnchorVersion)
}

// readAnchor returns the stored prune anchor, nil when the log was never pruned.
func readAnchor(c *conn) (*Anchor, error) {
	s, ok, err := getMeta(c, metaPruneAnchor)
	if err != nil || !ok {
		return nil, err
	}
	return parseAnchor(s)
}

// PruneOptions configures Prune. Zero fields take the documented defaults.
type PruneOptions struct {
	// KeyFile signs the prune anchor. Default: the database path + ".key".
	KeyFile string
	// BatchSize is the most rows deleted per transaction, so that a live
	// writer is never blocked for long: each transaction holds the write
	// lock while it deletes them. Larger batches prune faster and block
	// longer. Default 500.
	BatchSize int
	// BusyTimeout is how long each transaction waits for the writer's lock.
	// Default 5s.
	BusyTimeout time.Duration
	// Force prunes even when the cut-off is within the retention floor (see
	// Prune). The anchor then records that a prune was forced.
	Force bool
	// Now is the clock the retention floor is measured from. Default
	// time.Now.
	Now func() time.Time
}

// Prune deletes the rows older than before and returns how many it deleted.
// It deletes the longest run of oldest rows (by seq) whose times are all
// earlier than before, so the retained chain has no holes: an old row that
// follows a newer one is kept. Each transaction also replaces the signed
// prune anchor, so Verify passes from the oldest retained row, fails when
// more rows are missing than the anchor accounts for, and reports how many
// rows were removed and the range of their times. Run `audit verify` first:
// rows Prune deletes can no longer show tampering. (Prune does refuse to go
// on when rows beyond the anchor are already missing, rather than sign over
// the gap.)
//
// Prune refuses, with a *RetentionError, a cut-off later than the retention
// floor: Now minus the min retention the broker stored in the database
// (Config.MinRetention), or DefaultMinRetention when none is stored. With
// Force it prunes anyway, and the anchor records it for good.
//
// Prune works on a live database. Each transaction holds the write lock
// while it deletes BatchSize rows, so keep a batch well within the Log's
// BusyTimeout; between transactions Prune leaves the lock free for as long
// as the batch held it, plus 5 ms, so that a writer that waited gets it.
// Freed space is reused, not returned to the file system.
func Prune(ctx context.Context, path string, before time.Time, opts PruneOptions) (int64, error) {
	opts = opts.withDefaults(path)
	k, err := readKeys(opts.KeyFile)
	if err != nil {
		return 0, err
	}
	c, err := openDatabase(path, modeReadWrite, opts.BusyTimeout)
	if err != nil {
		return 0, err
	}
	defer c.close()
	// Copy deleted pages into the database after each batch, while the lock
	// is free, rather than leave it to whichever commit fills the WAL:
	// that might be the broker's, which would then wait for it.
	if err := c.exec("PRAGMA wal_autocheckpoint = 0"); err != nil {
		return 0, withError("prune", path, err)
	}
	now := opts.Now()
	forced, err := checkRetention(c, before, now, opts.Force)
	if err != nil {
		return 0, withError("prune", path, err)
	}
	keep, err := firstKept(c, before)
	if err != nil {
		return 0, withError("prune", path, err)
	}
	p := &pruner{c: c, key: k.sign, keep: keep, batch: int64(opts.BatchSize),
		before: instant(before), at: instant(now), forced: forced}
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, withError("prune", path, err)
		}
		n, hold, more, err := p.step()
		total += n
		if err != nil {
			return total, withError("prune", path, err)
		}
		if n > 0 {
			// A busy or failed checkpoint leaves the pages to the broker's.
			_ = c.exec("PRAGMA wal_checkpoint(PASSIVE)")
		}
		if !more {
			return total, nil
		}
		if err := sleep(ctx, yieldFor(hold)); err != nil {
			return total, withError("prune", path, err)
		}
	}
}

// withDefaults fills in the defaults of o for the database at path.
func (o PruneOptions) withDefaults(path string) PruneOptions {
	if o.KeyFile == "" {
		o.KeyFile = path + ".key"
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultPruneBatch
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = DefaultPruneTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// instant returns t as a UTC time that an anchor stores exactly: whole
// Unix nanoseconds within 1678–2262, no monotonic reading.
func instant(t time.Time) time.Time {
	return time.Unix(0, clampUnixNano(t)).UTC()
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// firstKept returns the seq of the oldest row to keep: the first, in seq
// order, not older than before, or one past the newest when all are.
func firstKept(c *conn, before time.Time) (int64, error) {
	v, ok, err := c.queryRow("SELECT seq FROM decisions NOT INDEXED WHERE time >= ? ORDER BY seq LIMIT 1", clampUnixNano(before))
	if err != nil {
		return 0, err
	}
	if ok {
		return v[0].(int64), nil
	}
	v, _, err = c.queryRow("SELECT coalesce(max(seq), 0) + 1 FROM decisions")
	if err != nil {
		return 0, err
	}
	return v[0].(int64), nil
}

// pruner deletes the rows before keep, batch rows per transaction.
type pruner struct {
	c      *conn
	key    ed25519.PrivateKey
	keep   int64
	batch  int64
	before time.Time // the cut-off, as the anchor records it
	at     time.Time // when the prune runs, as the anchor records it
	forced bool      // the cut-off is within the retention floor
}

// step deletes up to batch of the oldest rows before keep and moves the
// anchor past them, in one transaction. It returns how many rows it deleted,
// how long it held the write lock, and whether rows before keep remain.
func (p *pruner) step() (n int64, hold time.Duration, more bool, err error) {
	if err := p.c.exec("BEGIN IMMEDIATE"); err != nil {
		return 0, 0, false, err
	}
	start := time.Now()
	n, more, err = p.delete()
	if err == nil && n > 0 {
		err = p.c.exec("COMMIT")
	}
	if err != nil || n == 0 {
		p.c.exec("ROLLBACK")
		n = 0
	}
	return n, time.Since(start), more, err
}

// delete does the work of step inside its transaction.
func (p *pruner) delete() (n int64, more bool, err error) {
	c := p.c
	prev, err := readAnchor(c)
	if err != nil {
		return 0, false, err
	}
	v, _, err := c.queryRow("SELECT min(seq) FROM decisions")
	if err != nil {
		return 0, false, err
	}
	oldest, ok := v[0].(int64)
	if !ok || oldest >= p.keep {
		return 0, false, nil
	}
	want := int64(1)
	if prev != nil {
		want = prev.Seq
	}
	if oldest != want {
		return 0, false, fmt.Errorf("the log starts at seq %d, not %d: rows are missing; run audit verify", oldest, want)
	}
	end := min(oldest+p.batch, p.keep)
	h, ok, err := c.queryRow("SELECT hash FROM decisions WHERE seq = ?", end-1)
	if err != nil {
		return 0, false, err
	}
	if !ok {
		return 0, false, fmt.Errorf("row %d is missing; run audit verify", end-1)
	}
	r, _, err := c.queryRow("SELECT count(*), min(time), max(time) FROM decisions WHERE seq < ?", end)
	if err != nil {
		return 0, false, err
	}
	rows, _ := r[0].(int64)
	first, _ := r[1].(int64)
	last, _ := r[2].(int64)
	hash, _ := h[0].(string)
	a := p.next(prev, hash, end, rows, time.Unix(0, first).UTC(), time.Unix(0, last).UTC())
	msg, err := a.message()
	if err != nil {
		return 0, false, fmt.Errorf("row %d: %w", end-1, err)
	}
	a.Signature = ed25519.Sign(p.key, msg)
	anchor, err := json.Marshal(a)
	if err != nil {
		return 0, false, err
	}
	if n, err = c.execCount("DELETE FROM decisions WHERE seq < ?", end); err != nil {
		return 0, false, err
	}
	if n != rows {
		return 0, false, fmt.Errorf("deleted %d rows, counted %d", n, rows)
	}
	if err := setMeta(c, metaPruneAnchor, string(anchor)); err != nil {
		return 0, false, err
	}
	return n, end < p.keep, nil
}

// next returns the unsigned anchor that follows prev (nil when the log was
// never pruned) once rows more rows, with times from oldest to newest, are
// removed and the chain starts at seq end, linking to hash.
func (p *pruner) next(prev *Anchor, hash string, end, rows int64, oldest, newest time.Time) *Anchor {
	a := &Anchor{Version: AnchorVersion, Seq: end, PrevHash: hash, Rows: rows,
		Oldest: oldest, Newest: newest, Before: p.before, PrunedAt: p.at, Forced: p.forced}
	if prev != nil && prev.Version == AnchorVersion {
		a.Rows += prev.Rows
		a.Oldest = earlier(a.Oldest, prev.Oldest)
		a.Newest = later(a.Newest, prev.Newest)
		a.Forced = a.Forced || prev.Forced
	}
	return a
}

// earlier returns the earlier of a and b.
func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
