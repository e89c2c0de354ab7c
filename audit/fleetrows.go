package audit

import (
	"context"
	"crypto/ed25519"
	"database/sql/driver"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// This file gives stores that keep copies of logs elsewhere — a fleet's
// central store (package audit/fleet) — what they need of a log without
// copying its logic: rows in their stored form (StoredRow), read in seq
// order from a live log (Feed), turned into Records exactly as Query does,
// and verified by the same hash, link and signed-head checks as Verify
// (ChainCheck).

// StoredRow is one row of a log in its stored form, column for column: the
// values a row's hash is computed from. A copy that keeps these values
// byte for byte verifies exactly as the log does, and reads back as the
// same Record. Claims and Input are canonical JSON objects, "" when there
// are none; times are Unix nanoseconds.
type StoredRow struct {
	Seq           int64
	Kind          string // KindDecision or an event kind
	Time          int64  // Unix ns
	DecisionID    string
	Decision      string
	Reason        string
	Policy        string
	PolicyVersion string
	Attestor      string
	Subject       string
	Claims        string // canonical JSON object, "" when there are none
	PeerPID       int64
	PeerUID       int64
	Credential    string
	Provider      string
	Channel       string
	TargetHost    string
	Method        string
	Path          string
	LeaseID       string
	ExpiresAt     int64 // Unix ns; meaningful only when HasExpiry
	HasExpiry     bool
	Fingerprint   string
	Latency       int64  // ns
	Input         string // canonical JSON object, "" when there is none
	PrevHash      string
	Hash          string
	Database      string // "" in rows of schemas before 4
	UpstreamUser  string // "" in rows of schemas before 4
}

// storedRow returns rw in its exported form.
func storedRow(rw *row) *StoredRow {
	return &StoredRow{
		Seq: rw.seq, Kind: rw.kind, Time: rw.time, DecisionID: rw.decisionID, Decision: rw.decision,
		Reason: rw.reason, Policy: rw.policy, PolicyVersion: rw.policyVersion, Attestor: rw.attestor,
		Subject: rw.subject, Claims: rw.claims, PeerPID: rw.peerPID, PeerUID: rw.peerUID,
		Credential: rw.credential, Provider: rw.provider, Channel: rw.channel, TargetHost: rw.targetHost,
		Method: rw.method, Path: rw.path, LeaseID: rw.leaseID, ExpiresAt: rw.expiresAt,
		HasExpiry: rw.hasExpiry, Fingerprint: rw.fingerprint, Latency: rw.latency, Input: rw.input,
		PrevHash: rw.prevHash, Hash: rw.hash, Database: rw.database, UpstreamUser: rw.upstreamUser,
	}
}

// row returns s in the package's internal form.
func (s *StoredRow) row() row {
	return row{
		seq: s.Seq, kind: s.Kind, time: s.Time, decisionID: s.DecisionID, decision: s.Decision,
		reason: s.Reason, policy: s.Policy, policyVersion: s.PolicyVersion, attestor: s.Attestor,
		subject: s.Subject, claims: s.Claims, peerPID: s.PeerPID, peerUID: s.PeerUID,
		credential: s.Credential, provider: s.Provider, channel: s.Channel, targetHost: s.TargetHost,
		method: s.Method, path: s.Path, leaseID: s.LeaseID, expiresAt: s.ExpiresAt,
		hasExpiry: s.HasExpiry, fingerprint: s.Fingerprint, latency: s.Latency, input: s.Input,
		prevHash: s.PrevHash, hash: s.Hash, database: s.Database, upstreamUser: s.UpstreamUser,
	}
}

// Record returns the row as Query returns it (Install and Host empty).
func (s *StoredRow) Record() (*Record, error) {
	rw := s.row()
	return rw.record()
}

// SumHash recomputes the row's hash from its seq, its PrevHash and its
// other columns, as Verify does; compare it with Hash. It fails when
// PrevHash is not a hex SHA-256.
func (s *StoredRow) SumHash() (string, error) {
	prev, err := parseHash(s.PrevHash)
	if err != nil {
		return "", fmt.Errorf("audit: seq %d: prev_hash: %w", s.Seq, err)
	}
	rw := s.row()
	var h hasher
	sum := h.sum(s.Seq, &prev, &rw)
	return hex.EncodeToString(sum[:]), nil
}

// Feed reads a log's rows in seq order for copying them elsewhere, such as
// a fleet's central store. It holds one read-only connection to a live log
// (WAL lets it read beside the writer, which it never holds up); each call
// reads one consistent snapshot. Keep a Feed open only while reading: the
// writer's WAL cannot be reset past a snapshot still being read.
type Feed struct {
	c    *conn
	path string
}

// OpenFeed opens the log at path read-only. It refuses a file that is not
// an audit log of a schema this package reads.
func OpenFeed(path string) (*Feed, error) {
	c, err := openDatabase(path, modeReadOnly, readBusyTimeout)
	if err != nil {
		return nil, err
	}
	return &Feed{c: c, path: path}, nil
}

// FeedState is where a log's chain starts and ends, and whose it is.
type FeedState struct {
	// PublicKey is the install's Ed25519 key the log records (the key of
	// its signed heads, checkpoints and prune anchors); nil for a log no
	// broker has opened yet.
	PublicKey ed25519.PublicKey
	// FirstSeq and HeadSeq are the oldest and newest rows' seqs, 0 when the
	// log holds no row.
	FirstSeq, HeadSeq int64
	// Anchor is the signed prune anchor the chain starts from, nil when the
	// log was never pruned.
	Anchor *Anchor
}

// State reads the log's public key, its first and newest seq and its prune
// anchor, from one snapshot.
func (f *Feed) State(ctx context.Context) (*FeedState, error) {
	if err := ctx.Err(); err != nil {
		return nil, withError("feed", f.path, err)
	}
	if err := f.c.beginRead(); err != nil {
		return nil, withError("feed", f.path, err)
	}
	defer f.c.exec("ROLLBACK")
	st := &FeedState{}
	pub, ok, err := getMeta(f.c, metaPublicKey)
	if err != nil {
		return nil, withError("feed", f.path, err)
	}
	if ok {
		raw, err := base64.StdEncoding.DecodeString(pub)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, withError("feed", f.path, fmt.Errorf("meta %s is not a base64 Ed25519 public key", metaPublicKey))
		}
		st.PublicKey = ed25519.PublicKey(raw)
	}
	v, _, err := f.c.queryRow("SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM decisions")
	if err != nil {
		return nil, withError("feed", f.path, err)
	}
	st.FirstSeq, _ = v[0].(int64)
	st.HeadSeq, _ = v[1].(int64)
	if st.Anchor, err = readAnchor(f.c); err != nil {
		return nil, withError("feed", f.path, err)
	}
	return st, nil
}

// Rows calls fn with each row after seq after, in seq order, up to limit
// rows (0: all), stopping at fn's first error, which it returns. The
// StoredRow passed to fn is fn's to keep.
func (f *Feed) Rows(ctx context.Context, after int64, limit int, fn func(*StoredRow) error) error {
	q := "SELECT " + f.c.selectColumns() + " FROM decisions WHERE seq > ? ORDER BY seq"
	args := []any{after}
	if limit > 0 {
		q += " LIMIT ?"
		args = append(args, int64(limit))
	}
	var rw row
	err := eachRow(ctx, f.c, q, args, func(values []driver.Value) error {
		if err := rw.scan(values); err != nil {
			return fmt.Errorf("seq %v: %w", values[0], err)
		}
		return fn(storedRow(&rw))
	})
	if err != nil {
		return withError("feed", f.path, err)
	}
	return nil
}

// Close releases the connection.
func (f *Feed) Close() error {
	return f.c.close()
}

// ParseAnchor parses a prune anchor in its stored form (the JSON of
// Anchor) strictly, as Verify reads it from a log; check its signature with
// Verify.
func ParseAnchor(data []byte) (*Anchor, error) {
	a, err := parseAnchor(string(data))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return a, nil
}

// Verify checks the anchor's signature with pub, the key the verifier
// trusts.
func (a *Anchor) Verify(pub ed25519.PublicKey) error {
	if err := a.verify(pub); err != nil {
		return fmt.Errorf("audit: prune anchor: %w", err)
	}
	return nil
}

// ChainCheck verifies a copy of one install's rows, handed to it one at a
// time in seq order, with exactly the checks Verify makes of a log: each
// row's hash, its link to the row before (no seq missing, prev_hash equal
// to the previous row's hash), and each signed head (it signs the row
// before it, with the trusted key). A copy may start from a signed prune
// anchor (Resume) rather than from seq 1.
type ChainCheck struct {
	v verifier
	h hasher
}

// NewChainCheck returns a check of a chain signed with pub. With pub nil the
// signed heads' signatures are not checked (their seqs and hashes are).
func NewChainCheck(pub ed25519.PublicKey) *ChainCheck {
	c := &ChainCheck{v: verifier{res: &VerifyResult{}, next: 1, prevHash: zeroHashHex, pub: pub}}
	if pub != nil {
		c.v.res.KeySource = "public key given"
	}
	return c
}

// Resume continues the chain from a, a signed prune anchor: the next row
// must be a.Seq, linking to a.PrevHash. Before the first row it makes the
// anchor the chain's start (VerifyResult.Anchor); later it bridges rows
// pruned from the log before the copy received them. It returns the
// *Failure (ProblemAnchor) when the anchor's signature does not verify or
// it does not lie ahead of the chain.
func (c *ChainCheck) Resume(a *Anchor) error {
	v := &c.v
	if v.res.Failure != nil {
		return v.res.Failure
	}
	if a.Seq < v.next {
		return v.fail(a.Seq, "", ProblemAnchor, fmt.Sprintf("the anchor at seq %d lies behind the chain, which is at seq %d", a.Seq, v.next))
	}
	if v.pub != nil {
		if err := a.verify(v.pub); err != nil {
			return v.fail(a.Seq, "", ProblemAnchor, err.Error())
		}
	}
	if v.res.Rows == 0 {
		v.res.Anchor = a
	}
	v.next, v.prevHash = a.Seq, a.PrevHash
	return nil
}

// Add checks the next row. It returns the *Failure (wrapping ErrTampered)
// of the first row that does not verify; once one has, every later Add
// returns it too.
func (c *ChainCheck) Add(r *StoredRow) error {
	v := &c.v
	if v.res.Failure != nil {
		return v.res.Failure
	}
	prev, err := parseHash(r.PrevHash)
	if err != nil {
		if lerr := v.link(r.Seq, r.DecisionID, r.PrevHash); lerr != nil {
			return lerr
		}
		return v.fail(r.Seq, r.DecisionID, ProblemEdited, "prev_hash: "+err.Error())
	}
	rw := r.row()
	sum := c.h.sum(r.Seq, &prev, &rw)
	var input any
	if r.Kind == KindSignedHead {
		input = r.Input
	}
	if err := v.row([]driver.Value{r.Seq, r.DecisionID, r.PrevHash, r.Hash, sum[:], r.Kind, input}); err != nil {
		return err
	}
	return nil
}

// Next returns the seq the next row must have.
func (c *ChainCheck) Next() int64 {
	return c.v.next
}

// Result ends the check and returns what it walked: rows, signed heads,
// the head, and the first failure, if any.
func (c *ChainCheck) Result() *VerifyResult {
	if c.v.res.Failure == nil {
		c.v.finish()
	}
	return c.v.res
}
