package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// MaxUpstreamMessage bounds a message the upstream sends before
// ReadyForQuery (authentication requests, parameters, notices, errors).
const MaxUpstreamMessage = 1 << 20

// upstreamConn is one connection to the upstream.
type upstreamConn struct {
	conn net.Conn // *net.TCPConn, or *tls.Conn over it
	// r reads the startup phase's messages; what it holds beyond
	// ReadyForQuery is handed to the client before the relay.
	r       *bufio.Reader
	tls     bool
	binding []byte // tls-server-end-point hash; nil when none
	addr    string // the address dialed, for cancel requests
}

// dial connects to addr and, unless the mode is disable, negotiates TLS
// (SSLRequest, then the handshake). The one byte answering SSLRequest is
// read straight from the socket, so no byte the server sent before the
// handshake can be taken for a TLS record's content.
func (l *Listener) dial(ctx context.Context, addr string) (*upstreamConn, error) {
	d := net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	u := &upstreamConn{conn: c, addr: c.RemoteAddr().String()}
	if l.upTLS == nil {
		u.r = bufio.NewReader(c)
		return u, nil
	}
	req, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	var answer [1]byte
	if _, err := io.ReadFull(c, answer[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("reading the answer to SSLRequest: %w", err)
	}
	if answer[0] != 'S' {
		c.Close()
		return nil, fmt.Errorf("the upstream does not accept TLS (it answered %q to SSLRequest): enable ssl on the server, or set tls.mode disable", answer[0])
	}
	tc := tls.Client(c, l.upTLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	u.conn, u.r, u.tls = tc, bufio.NewReader(tc), true
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		u.binding = endpointHash(certs[0])
	}
	return u, nil
}

// readMessage reads one message from r: its type, its body, and the
// whole message as sent. The length is bounded by max before anything is
// allocated.
func readMessage(r io.Reader, max int) (typ byte, body, raw []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, nil, err
	}
	n := int64(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 || n-4 > int64(max) {
		return 0, nil, nil, fmt.Errorf("message %q of length %d: not between 4 and %d", hdr[0], n, max+4)
	}
	raw = make([]byte, 1+n)
	copy(raw, hdr[:])
	if _, err := io.ReadFull(r, raw[5:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, nil, err
	}
	return hdr[0], raw[5:], raw, nil
}

// upstreamError is an ErrorResponse the upstream sent during the startup,
// with the password redacted.
type upstreamError struct {
	resp pgproto3.ErrorResponse
	// authed reports that the upstream had accepted the login before it
	// failed (an unknown database, a connection limit).
	authed bool
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("postgres: the upstream refused the session: %s (SQLSTATE %s)", e.resp.Message, e.resp.Code)
}

// handshake is the upstream's startup after the StartupMessage was sent:
// it answers the authentication requests, then passes what the server
// says to the client until ReadyForQuery, with the password redacted
// wherever it might appear and the BackendKeyData replaced by the broker's.
type handshake struct {
	up       io.Reader // the upstream's messages
	upw      io.Writer // to the upstream
	client   io.Writer // to the client, flushed by the caller
	auth     *authenticator
	password []byte
	// key registers the upstream's cancel key and returns the client's
	// key in its place.
	key func(pid uint32, secret []byte) (clientSecret []byte)

	authed bool
}

// run returns nil once ReadyForQuery was passed to the client; an
// *upstreamError when the server refused, an *authError when the broker
// did, or the I/O error.
func (h *handshake) run() error {
	for {
		typ, body, raw, err := readMessage(h.up, MaxUpstreamMessage)
		if err != nil {
			return err
		}
		switch typ {
		case 'R':
			if h.authed {
				return authFailf("authentication request after AuthenticationOk")
			}
			reply, done, err := h.auth.step(body)
			if err != nil {
				return err
			}
			if reply != nil {
				if _, err := h.upw.Write(reply); err != nil {
					return err
				}
			}
			if done {
				h.authed = true
				ok, _ := (&pgproto3.AuthenticationOk{}).Encode(nil)
				if _, err := h.client.Write(ok); err != nil {
					return err
				}
			}
		case 'E':
			e := &upstreamError{authed: h.authed}
			if err := e.resp.Decode(redact(body, h.password)); err != nil {
				return authFailf("malformed ErrorResponse from the upstream")
			}
			return e
		case 'N', 'S':
			if err := h.forward(typ, body, raw); err != nil {
				return err
			}
		case 'K':
			if !h.authed || len(body) < 8 || len(body) > 4+maxCancelKey {
				return authFailf("unexpected BackendKeyData from the upstream")
			}
			pid := binary.BigEndian.Uint32(body)
			k, _ := (&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: h.key(pid, body[4:])}).Encode(nil)
			if _, err := h.client.Write(k); err != nil {
				return err
			}
		case 'v':
			// NegotiateProtocolVersion: the broker asks for 3.0 without
			// options, which every server speaks; nothing to pass on.
		case 'Z':
			if !h.authed || len(body) != 1 {
				return authFailf("unexpected ReadyForQuery from the upstream")
			}
			_, err := h.client.Write(raw)
			return err
		default:
			return authFailf("unexpected message %q from the upstream during the startup", typ)
		}
	}
}

// forward passes a message to the client, the password redacted.
func (h *handshake) forward(typ byte, body, raw []byte) error {
	if r := redact(body, h.password); len(r) != len(body) {
		raw = binary.BigEndian.AppendUint32([]byte{typ}, uint32(len(r)+4))
		raw = append(raw, r...)
	}
	_, err := h.client.Write(raw)
	return err
}

// startupParams returns the StartupMessage sent upstream: the client's
// parameters but user (the issued one replaces it), replication (refused
// before) and protocol options (_pq_.*, declined), and database set.
func startupParams(p *packet, user, database string) map[string]string {
	out := map[string]string{"user": user, "database": database}
	for _, pr := range p.params {
		switch {
		case pr.name == "user", pr.name == "database", pr.name == "replication", strings.HasPrefix(pr.name, "_pq_."):
			continue
		}
		out[pr.name] = pr.value
	}
	return out
}
