package mysql

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// MaxHandshakePacket bounds every packet the listener reads itself — the
// client's handshake response and the upstream's greeting and
// authentication packets — before it allocates for it. Commands and
// results are relayed, never read whole.
const MaxHandshakePacket = 64 << 10

// maxPayload is the largest payload one packet can carry; a longer one
// continues in the next packet. No handshake packet comes near it.
const maxPayload = 1<<24 - 1

// First bytes of the server's packets during the handshake.
const (
	pktOK         = 0x00
	pktMoreData   = 0x01 // AuthMoreData
	pktAuthSwitch = 0xfe // AuthSwitchRequest
	pktERR        = 0xff
)

// errTooLarge is returned for a packet longer than MaxHandshakePacket.
var errTooLarge = fmt.Errorf("a handshake packet is longer than %d bytes", MaxHandshakePacket)

// readPacket reads one packet from r: its sequence id and payload. It
// reads exactly the packet's bytes (no read-ahead), so that after the
// handshake the connection holds nothing that the relay would miss. A
// payload longer than limit is refused before anything is allocated.
func readPacket(r io.Reader, limit int) (seq byte, payload []byte, err error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	if n > limit {
		return h[3], nil, errTooLarge
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return h[3], nil, fmt.Errorf("a packet ended early: %w", noEOF(err))
	}
	return h[3], payload, nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writePacket writes payload as one packet with sequence id seq, in one
// write.
func writePacket(w io.Writer, seq byte, payload []byte) error {
	if len(payload) >= maxPayload {
		return errors.New("a handshake packet is too long")
	}
	b := make([]byte, 4, 4+len(payload))
	b[0], b[1], b[2], b[3] = byte(len(payload)), byte(len(payload)>>8), byte(len(payload)>>16), seq
	_, err := w.Write(append(b, payload...))
	return err
}

// appendLenenc appends n as a length-encoded integer.
func appendLenenc(b []byte, n uint64) []byte {
	switch {
	case n < 251:
		return append(b, byte(n))
	case n < 1<<16:
		return append(b, 0xfc, byte(n), byte(n>>8))
	case n < 1<<24:
		return append(b, 0xfd, byte(n), byte(n>>8), byte(n>>16))
	default:
		return binary.LittleEndian.AppendUint64(append(b, 0xfe), n)
	}
}

// reader takes fields off the front of a packet's payload; every method
// fails rather than read past its end.
type reader struct{ b []byte }

var errShort = errors.New("the packet ends early")

func (r *reader) empty() bool { return len(r.b) == 0 }

func (r *reader) byte() (byte, error) {
	if len(r.b) < 1 {
		return 0, errShort
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func (r *reader) bytes(n int) ([]byte, error) {
	if n < 0 || len(r.b) < n {
		return nil, errShort
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, nil
}

func (r *reader) uint16() (uint16, error) {
	b, err := r.bytes(2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (r *reader) uint32() (uint32, error) {
	b, err := r.bytes(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// nulString reads a NUL-terminated string; the NUL is consumed.
func (r *reader) nulString() ([]byte, error) {
	for i, c := range r.b {
		if c == 0 {
			v := r.b[:i:i]
			r.b = r.b[i+1:]
			return v, nil
		}
	}
	return nil, errors.New("a string has no terminating NUL")
}

// nulOrRest reads a NUL-terminated string, or the rest of the packet when
// it has no NUL (as some clients send their last field).
func (r *reader) nulOrRest() []byte {
	if v, err := r.nulString(); err == nil {
		return v
	}
	v := r.b
	r.b = nil
	return v
}

// lenenc reads a length-encoded integer.
func (r *reader) lenenc() (uint64, error) {
	c, err := r.byte()
	if err != nil {
		return 0, err
	}
	var n int
	switch c {
	case 0xfc:
		n = 2
	case 0xfd:
		n = 3
	case 0xfe:
		n = 8
	case 0xfb, 0xff:
		return 0, fmt.Errorf("0x%02x is not a length", c)
	default:
		return uint64(c), nil
	}
	b, err := r.bytes(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// lenencBytes reads a length-encoded string.
func (r *reader) lenencBytes() ([]byte, error) {
	n, err := r.lenenc()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.b)) {
		return nil, errShort
	}
	return r.bytes(int(n))
}

// MySQL error codes and SQLSTATEs the listener answers with; see doc.go.
const (
	codeAccessDenied = 1045 // ER_ACCESS_DENIED_ERROR
	codeHandshake    = 1043 // ER_HANDSHAKE_ERROR
	codeUnknown      = 1105 // ER_UNKNOWN_ERROR

	stateAccessDenied = "28000"
	stateHandshake    = "08S01"
	stateUnavailable  = "08004" // the server rejected the connection
	stateGeneral      = "HY000"
)

// maxErrMessage is how much of an error message clients show
// (MYSQL_ERRMSG_SIZE).
const maxErrMessage = 512

// sqlError is an ERR packet's content.
type sqlError struct {
	Code    uint16
	State   string
	Message string
}

func (e *sqlError) Error() string { return fmt.Sprintf("%d (%s): %s", e.Code, e.State, e.Message) }

// errPacket encodes e as an ERR packet's payload (the 4.1 form, with the
// SQLSTATE), its message cut to what clients show.
func errPacket(e *sqlError) []byte {
	msg := e.Message
	if len(msg) > maxErrMessage {
		msg = msg[:maxErrMessage]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
	}
	state := e.State
	if len(state) != 5 {
		state = stateGeneral
	}
	b := []byte{pktERR, byte(e.Code), byte(e.Code >> 8), '#'}
	b = append(b, state...)
	return append(b, msg...)
}

// parseErr decodes an ERR packet's payload (0xff first). A message that is
// not valid UTF-8 has its bad bytes replaced.
func parseErr(p []byte) *sqlError {
	r := reader{b: p[1:]}
	code, err := r.uint16()
	if err != nil {
		return &sqlError{Code: codeUnknown, State: stateGeneral, Message: "a malformed error packet"}
	}
	e := &sqlError{Code: code, State: stateGeneral}
	if len(r.b) >= 6 && r.b[0] == '#' {
		e.State = string(r.b[1:6])
		r.b = r.b[6:]
	}
	e.Message = string(clean(r.b))
	return e
}

// clean returns b as valid UTF-8 without control characters, at most
// maxErrMessage bytes, for messages that came from a peer and go to a log
// or another peer.
func clean(b []byte) []byte {
	if len(b) > maxErrMessage {
		b = b[:maxErrMessage]
	}
	out := make([]byte, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}
