package audit

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Kinds of rows. Append writes decisions; the Log writes the others itself,
// in the same chain, so that what happened to the log is as tamper-evident
// as the decisions in it.
const (
	// KindDecision is one decision of the broker (Append).
	KindDecision = "decision"
	// KindSignedHead is the install's Ed25519 signature of the chain head:
	// Input is a Checkpoint of the row just before this one. Anyone holding
	// the public key can prove every row up to it (Verify).
	KindSignedHead = "signed_head"
	// KindUndelivered names rows whose commit reported failure, so their
	// callers were refused, but which the database holds all the same (after
	// an fsync error SQLite may find the transaction on reopen). Input lists
	// their seqs and decision ids: no credential was delivered for them.
	KindUndelivered = "undelivered"
	// KindOverride records an operator's override at start-up, such as
	// accepting a log that ends before the head this install signed.
	KindOverride = "override"
)

// Reasons of the event rows.
const (
	reasonSignedHead  = "chain head signed"
	reasonUndelivered = "commit reported failed; credential not delivered"
)

// undelivered is the Input of a KindUndelivered row.
type undelivered struct {
	FirstSeq    int64    `json:"first_seq"`
	LastSeq     int64    `json:"last_seq"`
	DecisionIDs []string `json:"decision_ids"`
}

// rewind is the Input of a KindOverride row written when the operator
// accepted a log that no longer reaches the head this install signed.
type rewind struct {
	Override   string    `json:"override"` // what was accepted
	Problem    string    `json:"problem"`
	LogSeq     int64     `json:"log_seq"`
	LogHash    string    `json:"log_hash"`
	SignedSeq  int64     `json:"signed_seq"`
	SignedHash string    `json:"signed_hash"`
	SignedTime time.Time `json:"signed_time"`
}

// newEvent returns an event row of kind at time at, with details as its
// input. The writer assigns its seq and hashes.
func newEvent(kind, reason string, at time.Time, details any) (*row, error) {
	raw, err := json.Marshal(details)
	if err != nil {
		return nil, fmt.Errorf("audit: %s event: %w", kind, err)
	}
	input, err := canonicalObject(raw)
	if err != nil {
		return nil, fmt.Errorf("audit: %s event: %w", kind, err)
	}
	t, err := unixNano("time", at)
	if err != nil {
		return nil, err
	}
	return &row{kind: kind, time: t, decisionID: newEventID(at), reason: reason, peerUID: -1, input: input}, nil
}

// newEventID returns a unique id for an event row: 48 bits of Unix
// milliseconds, so ids sort by time, then 80 random bits; 32 hex digits like
// the broker's decision ids.
func newEventID(at time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(at.UnixMilli())<<16)
	rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}
