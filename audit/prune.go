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
	"time"
)

// anchorDomain separates prune anchor signatures from every other use of the key.
const anchorDomain = "credbroker audit prune anchor v1\x00"

// Defaults of PruneOptions.
const (
	DefaultPruneBatch   = 10000
	DefaultPruneTimeout = 5 * time.Second
)

// Anchor is what Prune leaves in the database, signed with the install's
// key: the oldest retained row is Seq and links to PrevHash (when every row
// was pruned, Seq is the next row to be written). Verify starts the chain
// from it.
type Anchor struct {
	Seq       int64  `json:"seq"`
	PrevHash  string `json:"prev_hash"`
	Signature []byte `json:"signature"`
}

// message is the byte string the anchor's signature covers.
func (a *Anchor) message() ([]byte, error) {
	h, err := parseHash(a.PrevHash)
	if err != nil {
		return nil, err
	}
	b := binary.BigEndian.AppendUint64([]byte(anchorDomain), uint64(a.Seq))
	return append(b, h[:]...), nil
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

// parseAnchor parses a stored anchor strictly.
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
	if _, err := a.message(); err != nil {
		return nil, fmt.Errorf("prune anchor: %w", err)
	}
	return a, nil
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
	// writer is never blocked for long. Default 10,000.
	BatchSize int
	// BusyTimeout is how long each transaction waits for the writer's lock.
	// Default 5s.
	BusyTimeout time.Duration
}

// Prune deletes the rows older than before and returns how many it deleted.
// It deletes the longest run of oldest rows (by seq) whose times are all
// earlier than before, so the retained chain has no holes: an old row that
// follows a newer one is kept. Each transaction also replaces the signed
// prune anchor, so Verify passes from the oldest retained row, and fails when
// more rows are missing than the anchor accounts for. Run `audit verify`
// first: rows Prune deletes can no longer show tampering.
//
// Prune works on a live database. Each transaction holds the write lock
// while it deletes BatchSize rows, so keep a batch well within the Log's
// BusyTimeout. Freed space is reused, not returned to the file system.
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
	keep, err := firstKept(c, before)
	if err != nil {
		return 0, withError("prune", path, err)
	}
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, withError("prune", path, err)
		}
		n, err := pruneBatch(c, k, keep, int64(opts.BatchSize))
		total += n
		if err != nil {
			return total, withError("prune", path, err)
		}
		if n == 0 {
			return total, nil
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
	return o
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

// pruneBatch deletes up to batch of the oldest rows before keep and moves
// the anchor past them, in one transaction. It returns 0 when none is left.
func pruneBatch(c *conn, k *keys, keep, batch int64) (n int64, err error) {
	if err := c.exec("BEGIN IMMEDIATE"); err != nil {
		return 0, err
	}
	defer func() {
		if err != nil || n == 0 {
			c.exec("ROLLBACK")
		}
	}()
	v, _, err := c.queryRow("SELECT min(seq) FROM decisions")
	if err != nil {
		return 0, err
	}
	oldest, ok := v[0].(int64)
	if !ok || oldest >= keep {
		return 0, nil
	}
	end := min(oldest+batch, keep)
	prev, ok, err := c.queryRow("SELECT hash FROM decisions WHERE seq = ?", end-1)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("row %d is missing; run audit verify", end-1)
	}
	prevHash, _ := prev[0].(string)
	a := &Anchor{Seq: end, PrevHash: prevHash}
	msg, err := a.message()
	if err != nil {
		return 0, fmt.Errorf("row %d: %w", end-1, err)
	}
	a.Signature = ed25519.Sign(k.sign, msg)
	anchor, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	if n, err = c.execCount("DELETE FROM decisions WHERE seq < ?", end); err != nil {
		return 0, err
	}
	if err := setMeta(c, metaPruneAnchor, string(anchor)); err != nil {
		return 0, err
	}
	if err := c.exec("COMMIT"); err != nil {
		return 0, err
	}
	return n, nil
}
