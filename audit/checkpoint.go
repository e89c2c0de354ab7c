package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// checkpointDomain separates checkpoint signatures from every other use of
// the key.
const checkpointDomain = "credbroker audit checkpoint v1\x00"

// maxCheckpointSize bounds how much of a checkpoint file is read.
const maxCheckpointSize = 64 << 10

// Checkpoint is a signed statement of the chain head: the row at Seq had hash
// Hash at Time. Shipped off the host, it lets Verify detect that the newest
// rows were cut off. Its file is one JSON object:
//
//	{"seq":…,"hash":"hex","time":"RFC 3339","public_key":"base64","signature":"base64"}
//
// The signature is Ed25519 over a domain-separated binary encoding of seq,
// hash and time. PublicKey says which key signed; a verifier must still pin
// the key it trusts.
type Checkpoint struct {
	Seq       int64             `json:"seq"`
	Hash      string            `json:"hash"`
	Time      time.Time         `json:"time"`
	PublicKey ed25519.PublicKey `json:"public_key"`
	Signature []byte            `json:"signature"`
}

// signCheckpoint returns a checkpoint of head signed by key.
func signCheckpoint(head chainHead, at time.Time, key ed25519.PrivateKey) (*Checkpoint, error) {
	cp := &Checkpoint{Seq: head.seq, Hash: head.hashHex(), Time: at.UTC()}
	msg, err := cp.message()
	if err != nil {
		return nil, err
	}
	cp.PublicKey = key.Public().(ed25519.PublicKey)
	cp.Signature = ed25519.Sign(key, msg)
	return cp, nil
}

// message is the byte string the signature covers.
func (cp *Checkpoint) message() ([]byte, error) {
	h, err := parseHash(cp.Hash)
	if err != nil {
		return nil, err
	}
	t, err := unixNano("time", cp.Time)
	if err != nil {
		return nil, fmt.Errorf("time %s is outside 1678–2262", cp.Time)
	}
	b := append([]byte(checkpointDomain), binary.BigEndian.AppendUint64(nil, uint64(cp.Seq))...)
	b = append(b, h[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(t)), nil
}

// Verify checks the signature with pub, the key the verifier trusts; the
// key embedded in the checkpoint is not trusted.
func (cp *Checkpoint) Verify(pub ed25519.PublicKey) error {
	msg, err := cp.message()
	if err != nil {
		return fmt.Errorf("audit: checkpoint: %w", err)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, msg, cp.Signature) {
		return errors.New("audit: checkpoint: signature does not verify with the trusted public key")
	}
	return nil
}

// ParseCheckpoint parses a checkpoint file strictly: every field present and
// well-formed, no unknown fields, nothing after the object. It does not check
// the signature; call Verify with the trusted key.
func ParseCheckpoint(data []byte) (*Checkpoint, error) {
	var raw struct {
		Seq       *int64     `json:"seq"`
		Hash      *string    `json:"hash"`
		Time      *time.Time `json:"time"`
		PublicKey []byte     `json:"public_key"`
		Signature []byte     `json:"signature"`
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&raw); err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("audit: checkpoint: data after the object")
	}
	switch {
	case raw.Seq == nil || raw.Hash == nil || raw.Time == nil:
		return nil, errors.New("audit: checkpoint: seq, hash and time are required")
	case *raw.Seq < 0:
		return nil, fmt.Errorf("audit: checkpoint: negative seq %d", *raw.Seq)
	case len(raw.PublicKey) != ed25519.PublicKeySize:
		return nil, fmt.Errorf("audit: checkpoint: public_key is %d bytes, want %d", len(raw.PublicKey), ed25519.PublicKeySize)
	case len(raw.Signature) != ed25519.SignatureSize:
		return nil, fmt.Errorf("audit: checkpoint: signature is %d bytes, want %d", len(raw.Signature), ed25519.SignatureSize)
	}
	cp := &Checkpoint{Seq: *raw.Seq, Hash: *raw.Hash, Time: *raw.Time, PublicKey: raw.PublicKey, Signature: raw.Signature}
	if _, err := cp.message(); err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	return cp, nil
}

// ReadCheckpoint reads and parses a checkpoint file.
func ReadCheckpoint(path string) (*Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCheckpointSize+1))
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint %s: %w", path, err)
	}
	if len(data) > maxCheckpointSize {
		return nil, fmt.Errorf("audit: checkpoint %s: larger than %d bytes", path, maxCheckpointSize)
	}
	cp, err := ParseCheckpoint(data)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return cp, nil
}

// marshal encodes cp as its file: one JSON object and a newline.
func (cp *Checkpoint) marshal() ([]byte, error) {
	data, err := json.Marshal(cp)
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// writeCheckpoint writes cp to path atomically, mode 0644.
func writeCheckpoint(path string, cp *Checkpoint) error {
	data, err := cp.marshal()
	if err != nil {
		return err
	}
	return replaceFile(path, data, 0o644)
}
