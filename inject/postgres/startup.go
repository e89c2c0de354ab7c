package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxStartupLen bounds a startup packet, its length word included:
// PostgreSQL's own MAX_STARTUP_PACKET_LENGTH.
const MaxStartupLen = 10000

// Request codes of the startup packets that are not a StartupMessage.
const (
	codeCancel   = 80877102 // CancelRequest
	codeSSL      = 80877103 // SSLRequest
	codeGSSENC   = 80877104 // GSSENCRequest
	protocol30   = 3 << 16  // protocol 3.0
	maxCancelKey = 256      // protocol 3.2's longest cancel secret
)

// SQLSTATE codes the listener answers with.
const (
	codeProtocolViolation = "08P01" // protocol_violation
	codeNotSupported      = "0A000" // feature_not_supported
	codeAuthorization     = "28000" // invalid_authorization_specification
	codeConnectionFailure = "08006" // connection_failure
)

// packetKind is what a startup packet asks for.
type packetKind int

const (
	packetStartup packetKind = iota + 1
	packetSSL
	packetGSSENC
	packetCancel
)

// param is one startup parameter, in the order the client sent it.
type param struct{ name, value string }

// packet is one startup packet read from a client.
type packet struct {
	kind packetKind
	// minor is the requested minor protocol version of a StartupMessage
	// (major 3).
	minor uint16
	// params are a StartupMessage's parameters, in order, without
	// repeats (a later value replaces an earlier one, as PostgreSQL does).
	params []param
	// pid and secret are a CancelRequest's key.
	pid    uint32
	secret []byte
}

// get returns the value of the startup parameter name.
func (p *packet) get(name string) (string, bool) {
	for _, pr := range p.params {
		if pr.name == name {
			return pr.value, true
		}
	}
	return "", false
}

// startupError is a startup packet the listener refuses: the client is
// told Message under the SQLSTATE Code, then the connection is closed.
type startupError struct {
	Code    string
	Message string
}

func (e *startupError) Error() string { return "postgres: " + e.Message }

func protocolViolation(format string, args ...any) *startupError {
	return &startupError{Code: codeProtocolViolation, Message: fmt.Sprintf(format, args...)}
}

// readPacket reads one startup packet from r: a length word (counting
// itself) bounded by MaxStartupLen before anything is allocated, then the
// body, which it decodes. A packet that is not protocol 3 or does not
// parse is a *startupError; a connection that ends is io.EOF (before any
// byte) or io.ErrUnexpectedEOF.
func readPacket(r io.Reader) (*packet, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > MaxStartupLen {
		return nil, protocolViolation("invalid length of startup packet: %d bytes (PostgreSQL allows 8 to %d)", int32(n), MaxStartupLen)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return parsePacket(body)
}

// parsePacket decodes a startup packet's body (after its length word).
func parsePacket(body []byte) (*packet, error) {
	code := binary.BigEndian.Uint32(body)
	rest := body[4:]
	switch code {
	case codeSSL, codeGSSENC:
		if len(rest) != 0 {
			return nil, protocolViolation("invalid length of SSLRequest or GSSENCRequest: %d bytes", len(body)+4)
		}
		if code == codeSSL {
			return &packet{kind: packetSSL}, nil
		}
		return &packet{kind: packetGSSENC}, nil
	case codeCancel:
		if len(rest) < 8 || len(rest) > 4+maxCancelKey {
			return nil, protocolViolation("invalid length of CancelRequest: %d bytes", len(body)+4)
		}
		return &packet{kind: packetCancel, pid: binary.BigEndian.Uint32(rest), secret: bytes.Clone(rest[4:])}, nil
	}
	if major := code >> 16; major != 3 {
		return nil, &startupError{Code: codeNotSupported, Message: fmt.Sprintf("unsupported frontend protocol %d.%d: the credential broker supports 3.0", major, code&0xffff)}
	}
	params, err := parseParams(rest)
	if err != nil {
		return nil, err
	}
	return &packet{kind: packetStartup, minor: uint16(code), params: params}, nil
}

// parseParams decodes a StartupMessage's parameters: NUL-terminated name
// and value pairs, ended by an empty name.
func parseParams(b []byte) ([]param, error) {
	var params []param
	for {
		name, rest, ok := cstring(b)
		if !ok {
			return nil, protocolViolation("invalid startup packet layout: expected terminator as last byte")
		}
		if name == "" {
			if len(rest) != 0 {
				return nil, protocolViolation("invalid startup packet layout: %d bytes after the terminator", len(rest))
			}
			return params, nil
		}
		value, rest, ok := cstring(rest)
		if !ok {
			return nil, protocolViolation("invalid startup packet layout: parameter %q has no value", bounded(name))
		}
		params = setParam(params, name, value)
		b = rest
	}
}

// setParam sets name to value in params, replacing an earlier value.
func setParam(params []param, name, value string) []param {
	for i := range params {
		if params[i].name == name {
			params[i].value = value
			return params
		}
	}
	return append(params, param{name, value})
}

// cstring splits b after its first NUL.
func cstring(b []byte) (s string, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

// bounded shortens what a client sent for a message or a log line.
func bounded(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}
