package audit

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
)

// metaSignedSeq is the seq of the head the newest signed_head row signs,
// kept in the same transaction as that row: a log whose rows end before it
// was cut short, even when the head file is gone too.
const metaSignedSeq = "signed_seq"

// rewindProblem is why a log no longer reaches the head this install
// signed: it is refused at start-up unless the operator accepts it.
type rewindProblem struct {
	msg     string
	details rewind
}

// checkSignedHead compares the log, whose head is head, with the newest head
// this install signed: the head file hf (nil when there is none) and the
// seq stored with the newest signed_head row. It returns a problem when the
// log ends before that head or no longer holds it.
func checkSignedHead(db *conn, hf *Checkpoint, pub ed25519.PublicKey, headFile string, head chainHead) (*rewindProblem, error) {
	stored, hasStored, err := getMeta(db, metaSignedSeq)
	if err != nil {
		return nil, err
	}
	storedSeq, _ := strconv.ParseInt(stored, 10, 64)
	p := &rewindProblem{details: rewind{Override: "accept-rewind", LogSeq: head.seq, LogHash: head.hashHex()}}
	if hf == nil {
		if !hasStored {
			return nil, nil // a new log, or one written before heads were signed
		}
		p.details.Problem, p.details.SignedSeq = "head file missing", storedSeq
		p.msg = fmt.Sprintf("the log holds heads signed up to seq %d but the record of the newest, %s, is missing", storedSeq, headFile)
		if head.seq < storedSeq {
			p.msg += fmt.Sprintf(", and the log ends at seq %d, before it", head.seq)
		}
		return p, nil
	}
	p.details.SignedSeq, p.details.SignedHash, p.details.SignedTime = hf.Seq, hf.Hash, hf.Time
	if err := hf.Verify(pub); err != nil {
		p.details.Problem = "head file not signed by this install"
		p.msg = fmt.Sprintf("the head file %s is not signed by this install's key", headFile)
		return p, nil
	}
	signed := max(hf.Seq, storedSeq)
	if head.seq < signed {
		p.details.Problem = "truncated"
		p.msg = fmt.Sprintf("the log ends at seq %d, before seq %d, the head this install signed at %s: its newest rows were removed",
			head.seq, signed, hf.Time.UTC().Format(timeLayout))
		return p, nil
	}
	v, ok, err := db.queryRow("SELECT hash FROM decisions WHERE seq = ?", hf.Seq)
	if err != nil {
		return nil, err
	}
	if ok && v[0] != hf.Hash {
		p.details.Problem = "rewritten"
		p.msg = fmt.Sprintf("row %d no longer has the hash this install signed at %s: the log was rewritten",
			hf.Seq, hf.Time.UTC().Format(timeLayout))
		return p, nil
	}
	return nil, nil
}

// readHeadFile reads the head file: nil when it does not exist.
func readHeadFile(path string) (*Checkpoint, error) {
	cp, err := ReadCheckpoint(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return cp, err
}

// writeHeadFile replaces the head file with cp (mode 0600), durably.
func writeHeadFile(path string, cp *Checkpoint) error {
	data, err := cp.marshal()
	if err != nil {
		return err
	}
	return replaceFile(path, data, 0o600)
}
