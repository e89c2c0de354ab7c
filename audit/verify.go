package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
)

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// Checkpoint is a checkpoint file the log must still reach; "" for none.
	Checkpoint string
	// PublicKey is the trusted key of the signed heads in the log, of
	// checkpoints and of prune anchors: the install's public key (`credbroker
	// audit public-key`), which is all a verifier needs. When nil it is taken
	// from KeyFile if that can be read; without any key the signed heads are
	// not checked and the result says the log was proved self-consistent
	// only. A checkpoint or a pruned log needs a key.
	PublicKey ed25519.PublicKey
	// KeyFile is the install's key file, read only when PublicKey is nil.
	// Default: the database path + ".key".
	KeyFile string
}

// VerifyResult is what Verify walked and, when the log does not verify, the
// first problem it found.
type VerifyResult struct {
	Rows       int64       // rows checked, of every kind
	Decisions  int64       // decision rows among them
	FirstSeq   int64       // seq of the oldest row, 0 when there are none
	HeadSeq    int64       // seq of the newest row (or of the last pruned one), 0 when empty
	HeadHash   string      // hash of that row, 64 zeros when empty
	Anchor     *Anchor     // the prune anchor the chain starts from, nil when never pruned
	Checkpoint *Checkpoint // the checkpoint checked, nil when none was given
	Failure    *Failure    // the first problem, nil when everything verifies

	// KeySource says where the trusted public key came from ("public key
	// given", "key file PATH"), "" when there was none: then signed heads
	// were not checked.
	KeySource string
	// SignedHeads counts the KindSignedHead rows checked.
	SignedHeads int64
	// SignedSeq is the newest row a signed head proves (with the trusted key,
	// every row up to it is as the install wrote it), 0 when none does.
	SignedSeq int64
	// SignedTime is when that head was signed.
	SignedTime time.Time
	// Unsigned counts the rows after the newest signed head: not yet signed.
	Unsigned int64
}

// String summarises the result in one line, as `audit verify` prints it.
func (r *VerifyResult) String() string {
	if r.Failure != nil {
		return fmt.Sprintf("FAILED after %d good rows: %v", r.Rows, r.Failure)
	}
	s := fmt.Sprintf("ok: %d rows verified (%d decisions), head seq %d hash %s", r.Rows, r.Decisions, r.HeadSeq, r.HeadHash)
	switch {
	case r.SignedHeads == 0:
		s += "; self-consistency only: the log holds no signed head, so a rewrite that recomputed every hash would pass"
	case r.KeySource == "":
		s += fmt.Sprintf("; self-consistency only: %d signed heads not checked, give the install's public key (--public-key)", r.SignedHeads)
	default:
		s += fmt.Sprintf("; rows up to seq %d proven by %d signed heads (newest signed %s, %s)",
			r.SignedSeq, r.SignedHeads, r.SignedTime.UTC().Format(timeLayout), r.KeySource)
		if r.Unsigned > 0 {
			s += fmt.Sprintf("; %d rows after it not yet signed", r.Unsigned)
		}
	}
	if r.Anchor != nil {
		s += "; " + r.Anchor.Describe()
	}
	if r.Checkpoint != nil {
		s += fmt.Sprintf("; reaches the checkpoint at seq %d of %s", r.Checkpoint.Seq, r.Checkpoint.Time.UTC().Format(timeLayout))
	}
	return s
}

// Problem classifies a verification failure.
type Problem int

// Problems Verify reports.
const (
	// ProblemEdited: a row's stored hash does not match its contents.
	ProblemEdited Problem = iota + 1
	// ProblemLink: a row does not follow the one before it (seq gap or
	// prev_hash mismatch): rows were deleted, inserted or reordered.
	ProblemLink
	// ProblemAnchor: the prune anchor is forged, or more old rows are gone
	// than it accounts for.
	ProblemAnchor
	// ProblemCheckpoint: the checkpoint's signature does not verify, or the
	// log's row at its seq has a different hash (history rewritten).
	ProblemCheckpoint
	// ProblemTruncated: the log ends before the checkpoint: its newest rows
	// were cut off.
	ProblemTruncated
	// ProblemSignedHead: a signed head in the log does not match the rows
	// before it (they were rewritten after they were signed), or its
	// signature does not verify with the trusted key.
	ProblemSignedHead
)

// String describes p in words.
func (p Problem) String() string {
	switch p {
	case ProblemEdited:
		return "row edited"
	case ProblemLink:
		return "rows deleted, inserted or reordered"
	case ProblemAnchor:
		return "prune anchor forged or rows deleted beyond it"
	case ProblemCheckpoint:
		return "checkpoint does not match"
	case ProblemTruncated:
		return "newest rows cut off"
	case ProblemSignedHead:
		return "signed head does not match"
	}
	return fmt.Sprintf("problem %d", int(p))
}

// Failure is the first row (or anchor, or checkpoint) that does not verify.
// It wraps ErrTampered.
type Failure struct {
	Seq        int64   // the row that fails
	DecisionID string  // its decision id, "" when the row is missing
	Problem    Problem // what kind of failure
	Detail     string  // what exactly is wrong
}

// Error describes the failure.
func (f *Failure) Error() string {
	id := ""
	if f.DecisionID != "" {
		id = fmt.Sprintf(" (decision %s)", f.DecisionID)
	}
	return fmt.Sprintf("%v: seq %d%s: %v: %s", ErrTampered, f.Seq, id, f.Problem, f.Detail)
}

// Unwrap returns ErrTampered.
func (f *Failure) Unwrap() error {
	return ErrTampered
}

// Verify walks the chain of the database at path in seq order, from the
// first row (or the prune anchor) to the newest, recomputing each row's hash
// and checking it links to the row before. With a checkpoint it also checks
// the checkpoint's signature and that the log still holds its row with the
// same hash. When the log does not verify, the result's Failure names the
// first row that fails and the error is that *Failure (wrapping ErrTampered);
// other errors mean Verify could not run. The database is opened read-only
// and may be live.
func Verify(ctx context.Context, path string, opts VerifyOptions) (*VerifyResult, error) {
	c, err := openDatabase(path, modeReadOnly, readBusyTimeout)
	if err != nil {
		return nil, err
	}
	defer c.close()
	if err := c.beginRead(); err != nil {
		return nil, withError("verify", path, err)
	}
	v := &verifier{c: c, res: &VerifyResult{}, next: 1, prevHash: zeroHashHex}
	if err := v.start(path, opts); err != nil {
		return nil, err
	}
	v.pub, v.res.KeySource = headKey(path, opts)
	if v.res.Failure == nil {
		err := eachRow(ctx, c, verifyQuery(c), nil, v.row)
		if err != nil && !errors.As(err, new(*Failure)) {
			return nil, withError("verify", path, err)
		}
	}
	if v.res.Failure == nil {
		v.finish()
	}
	if v.res.Failure != nil {
		return v.res, v.res.Failure
	}
	return v.res, nil
}

// zeroHashHex is the prev_hash of the first row ever written.
var zeroHashHex = strings.Repeat("0", 2*sha256.Size)

// rowHashFunction is the SQL function that hashes a row inside SQLite, so
// that Verify reads five values per row instead of every column: with
// SQLite's per-call locking, that halves its time.
const rowHashFunction = "credbroker_audit_row_hash"

// verifyQuery selects, in seq order, what Verify checks of each row: seq,
// decision id, prev_hash, hash, the recomputed hash, the kind, and the input
// of signed heads.
func verifyQuery(c *conn) string {
	kind, input := "kind", "CASE WHEN kind = '"+KindSignedHead+"' THEN input END"
	if c.version == 1 {
		kind, input = "'"+KindDecision+"'", "NULL"
	}
	return "SELECT seq, decision_id, prev_hash, hash, " + rowHashFunction + "(" + c.selectColumns() + "), " +
		kind + ", " + input + " FROM decisions ORDER BY seq"
}

// hasherPool holds hashers for rowHashSQL.
var hasherPool = sync.Pool{New: func() any { return new(hasher) }}

// rowHashSQL computes the hash of the row given as its columns (in columns
// order) from its own seq and prev_hash. It returns NULL for a row it cannot
// hash (a value of the wrong type, a malformed prev_hash); Verify then reads
// the row to say why.
func rowHashSQL(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	var rw row
	if rw.scan(args) != nil {
		return nil, nil
	}
	prev, err := parseHash(rw.prevHash)
	if err != nil {
		return nil, nil
	}
	h := hasherPool.Get().(*hasher)
	defer hasherPool.Put(h)
	sum := h.sum(rw.seq, &prev, &rw)
	return sum[:], nil
}

// verifier is the state of one walk along the chain.
type verifier struct {
	c        *conn
	res      *VerifyResult
	pub      ed25519.PublicKey // the trusted key of signed heads, nil when none
	lastHead int64             // the row the previous signed head signed
	cp       *Checkpoint
	next     int64  // seq the next row must have
	prevHash string // hash the next row must link to
}

// start reads the prune anchor and the checkpoint, checks their signatures
// and sets where the chain starts.
func (v *verifier) start(path string, opts VerifyOptions) error {
	stored, pruned, err := getMeta(v.c, metaPruneAnchor)
	if err != nil {
		return withError("verify", path, err)
	}
	if opts.Checkpoint != "" {
		if v.cp, err = ReadCheckpoint(opts.Checkpoint); err != nil {
			return err
		}
		v.res.Checkpoint = v.cp
	}
	if !pruned && v.cp == nil {
		return nil
	}
	pub, err := trustedKey(path, opts)
	if err != nil {
		return err
	}
	if pruned && !v.startFromAnchor(stored, pub) {
		return nil
	}
	if v.cp != nil {
		return v.checkCheckpointSignature(path, pub)
	}
	return nil
}

// startFromAnchor starts the chain from a verified prune anchor, reporting
// false (and a Failure) when the anchor does not verify.
func (v *verifier) startFromAnchor(stored string, pub ed25519.PublicKey) bool {
	a, err := parseAnchor(stored)
	if err == nil {
		v.res.Anchor = a
		err = a.verify(pub)
	}
	if err != nil {
		seq := int64(0)
		if a != nil {
			seq = a.Seq
		}
		v.fail(seq, "", ProblemAnchor, err.Error())
		return false
	}
	v.next, v.prevHash = a.Seq, a.PrevHash
	return true
}

// checkCheckpointSignature checks the checkpoint's signature, and its hash
// when it names the row just before the chain's start.
func (v *verifier) checkCheckpointSignature(path string, pub ed25519.PublicKey) error {
	if err := v.cp.Verify(pub); err != nil {
		detail := "signature does not verify with the trusted public key"
		if !bytes.Equal(v.cp.PublicKey, pub) {
			detail += " (it names a different key)"
		}
		v.fail(v.cp.Seq, "", ProblemCheckpoint, detail)
		return nil
	}
	switch {
	case v.cp.Seq < v.next-1:
		return fmt.Errorf("audit: verify %s: checkpoint seq %d was pruned (the log starts at seq %d); verify against a newer checkpoint", path, v.cp.Seq, v.next)
	case v.cp.Seq == v.next-1:
		v.checkCheckpoint(v.cp.Seq, "", v.prevHash)
	}
	return nil
}

// headKey returns the key to check signed heads with and where it came
// from: opts.PublicKey, else the key file's when it can be read, else none.
func headKey(path string, opts VerifyOptions) (ed25519.PublicKey, string) {
	if opts.PublicKey != nil {
		return opts.PublicKey, "public key given"
	}
	keyFile := opts.KeyFile
	if keyFile == "" {
		keyFile = path + ".key"
	}
	if pub, err := PublicKeyFromFile(keyFile); err == nil {
		return pub, "key file " + keyFile
	}
	return nil, ""
}

// trustedKey returns opts.PublicKey, else the public key of the key file.
func trustedKey(path string, opts VerifyOptions) (ed25519.PublicKey, error) {
	if opts.PublicKey != nil {
		if len(opts.PublicKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("audit: verify: public key is %d bytes, want %d", len(opts.PublicKey), ed25519.PublicKeySize)
		}
		return opts.PublicKey, nil
	}
	keyFile := opts.KeyFile
	if keyFile == "" {
		keyFile = path + ".key"
	}
	pub, err := PublicKeyFromFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit: verify: a public key is needed to check the checkpoint or prune anchor, and %s does not exist", keyFile)
	}
	return pub, err
}

// row checks one row of verifyQuery; it returns the Failure that stops
// the walk.
func (v *verifier) row(values []driver.Value) error {
	seq, _ := values[0].(int64)
	id, _ := values[1].(string)
	prevHash, _ := values[2].(string)
	hash, _ := values[3].(string)
	if err := v.link(seq, id, prevHash); err != nil {
		return err
	}
	sum, ok := values[4].([]byte)
	if !ok || len(sum) != sha256.Size {
		return v.fail(seq, id, ProblemEdited, v.unhashable(seq))
	}
	var enc [2 * sha256.Size]byte
	hex.Encode(enc[:], sum)
	if string(enc[:]) != hash {
		return v.fail(seq, id, ProblemEdited, "stored hash does not match the row's contents")
	}
	kind, _ := values[5].(string)
	if kind == KindSignedHead {
		input, _ := values[6].(string)
		if err := v.signedHead(seq, id, prevHash, input); err != nil {
			return err
		}
	}
	if v.res.Rows == 0 {
		v.res.FirstSeq = seq
	}
	v.res.Rows++
	if kind == KindDecision {
		v.res.Decisions++
	}
	if kind == KindSignedHead {
		v.res.Unsigned = 0
	} else {
		v.res.Unsigned++
	}
	v.next, v.prevHash = seq+1, hash
	if v.cp != nil && seq == v.cp.Seq {
		return v.checkCheckpoint(seq, id, hash)
	}
	return nil
}

// signedHead checks the signed head at seq: it must sign the row just
// before it, with that row's hash, and verify with the trusted key.
func (v *verifier) signedHead(seq int64, id, prevHash, input string) error {
	cp, err := ParseCheckpoint([]byte(input))
	if err != nil {
		return v.fail(seq, id, ProblemSignedHead, "the signed head cannot be read: "+err.Error())
	}
	if cp.Seq != seq-1 || cp.Hash != prevHash {
		from := v.lastHead + 1
		return v.fail(seq, id, ProblemSignedHead, fmt.Sprintf(
			"it signed seq %d with hash %s, but the log's seq %d now hashes to %s: a row from seq %d to %d was rewritten after it was signed",
			cp.Seq, cp.Hash, seq-1, prevHash, from, seq-1))
	}
	if v.pub != nil {
		if err := cp.Verify(v.pub); err != nil {
			return v.fail(seq, id, ProblemSignedHead, "its signature does not verify with the trusted public key: forged, or signed by another install")
		}
		v.res.SignedSeq, v.res.SignedTime = cp.Seq, cp.Time
	}
	v.res.SignedHeads++
	v.lastHead = cp.Seq
	return nil
}

// unhashable says why rowHashSQL could not hash row seq.
func (v *verifier) unhashable(seq int64) string {
	msg := "the row cannot be hashed"
	eachRow(context.Background(), v.c, "SELECT "+v.c.selectColumns()+" FROM decisions WHERE seq = ?", []any{seq}, func(values []driver.Value) error {
		var rw row
		if err := rw.scan(values); err != nil {
			msg = err.Error()
		}
		return nil
	})
	return msg
}

// link checks that row seq directly follows the row before it.
func (v *verifier) link(seq int64, id, prevHash string) error {
	first := v.res.Rows == 0
	switch {
	case seq == v.next:
	case first && v.res.Anchor != nil:
		return v.fail(seq, id, ProblemAnchor,
			fmt.Sprintf("the prune anchor says the log starts at seq %d", v.next))
	case first:
		return v.fail(seq, id, ProblemLink,
			fmt.Sprintf("rows 1 to %d are missing and the log was never pruned", seq-1))
	default:
		return v.fail(seq, id, ProblemLink,
			fmt.Sprintf("expected seq %d after seq %d: rows %d to %d are missing", v.next, v.next-1, v.next, seq-1))
	}
	if prevHash != v.prevHash {
		return v.fail(seq, id, ProblemLink,
			fmt.Sprintf("prev_hash does not match the hash of seq %d", seq-1))
	}
	return nil
}

// checkCheckpoint compares the hash of row seq with the checkpoint's.
func (v *verifier) checkCheckpoint(seq int64, decisionID, hash string) error {
	if hash == v.cp.Hash {
		return nil
	}
	return v.fail(seq, decisionID, ProblemCheckpoint,
		fmt.Sprintf("hash differs from the checkpoint of %s: the log was rewritten up to here", v.cp.Time.Format(timeLayout)))
}

// finish records the head and checks that the log reaches the checkpoint.
func (v *verifier) finish() {
	v.res.HeadSeq, v.res.HeadHash = v.next-1, v.prevHash
	if v.cp != nil && v.cp.Seq > v.res.HeadSeq {
		v.fail(v.cp.Seq, "", ProblemTruncated,
			fmt.Sprintf("the checkpoint of %s is at seq %d but the log ends at seq %d", v.cp.Time.Format(timeLayout), v.cp.Seq, v.res.HeadSeq))
	}
}

// fail records the first failure and returns it.
func (v *verifier) fail(seq int64, decisionID string, p Problem, detail string) *Failure {
	if v.res.Failure == nil {
		v.res.Failure = &Failure{Seq: seq, DecisionID: decisionID, Problem: p, Detail: detail}
	}
	return v.res.Failure
}
