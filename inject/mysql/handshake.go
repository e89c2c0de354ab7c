package mysql

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Handshake constants.
const (
	protocolVersion = 10
	scrambleLen     = 20
	// sslRequestLen is the payload length of an SSLRequest: capabilities,
	// max packet size, character set and 23 bytes of filler.
	sslRequestLen = 32
	// defaultCharset is the collation the listener's greeting names:
	// utf8mb4_general_ci, known to MySQL 5.5+ and MariaDB 5.5+. The client
	// names its own in its response, and that one is sent upstream.
	defaultCharset = 45
	// statusAutocommit is SERVER_STATUS_AUTOCOMMIT, the greeting's status.
	statusAutocommit = 0x0002
)

// Bounds on the fields of a client's handshake response.
const (
	maxUserLen     = 256 // 80 characters in MariaDB, 32 in MySQL, up to 4 bytes each
	maxDatabaseLen = 256 // 64 characters
	maxPluginLen   = 64
)

// Authentication plugins.
const (
	pluginNative        = "mysql_native_password"
	pluginCachingSHA2   = "caching_sha2_password"
	pluginSHA256        = "sha256_password"
	pluginEd25519       = "client_ed25519"
	pluginClearPassword = "mysql_clear_password"
)

// greeting is a server's initial handshake packet (protocol 10): the
// listener's to the client, or the upstream's to the listener.
type greeting struct {
	version  string
	connID   uint32
	scramble []byte // auth-plugin-data, without its trailing NUL
	caps     uint32
	charset  byte
	status   uint16
	plugin   string
}

// encode returns the greeting's payload. The scramble must be 20 bytes.
func (g *greeting) encode() []byte {
	b := []byte{protocolVersion}
	b = append(b, g.version...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, g.connID)
	b = append(b, g.scramble[:8]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.caps))
	b = append(b, g.charset)
	b = binary.LittleEndian.AppendUint16(b, g.status)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.caps>>16))
	b = append(b, byte(len(g.scramble)+1))
	b = append(b, make([]byte, 10)...)
	b = append(b, g.scramble[8:]...)
	b = append(b, 0)
	b = append(b, g.plugin...)
	return append(b, 0)
}

// parseGreeting decodes the upstream's initial handshake packet. An ERR
// packet in its place (too many connections, a blocked host) is returned
// as a *sqlError.
func parseGreeting(p []byte) (*greeting, error) {
	if len(p) == 0 {
		return nil, errors.New("an empty greeting")
	}
	if p[0] == pktERR {
		return nil, parseErr(p)
	}
	if p[0] != protocolVersion {
		return nil, fmt.Errorf("protocol version %d: want 10 (MySQL 3.21 or later)", p[0])
	}
	r := reader{b: p[1:]}
	version, err := r.nulString()
	if err != nil {
		return nil, fmt.Errorf("greeting: server version: %w", err)
	}
	g := &greeting{version: string(clean(version))}
	if g.connID, err = r.uint32(); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	part1, err := r.bytes(8)
	if err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	g.scramble = append([]byte(nil), part1...)
	if _, err := r.byte(); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	lo, err := r.uint16()
	if err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	g.caps = uint32(lo)
	if r.empty() {
		return g, nil // a 4.0 server: Validate of the capabilities refuses it
	}
	if g.charset, err = r.byte(); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if g.status, err = r.uint16(); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	hi, err := r.uint16()
	if err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	g.caps |= uint32(hi) << 16
	dataLen, err := r.byte()
	if err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if _, err := r.bytes(10); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if g.caps&capSecureConnection != 0 {
		// The rest of the scramble: max(13, len-8) bytes, the last a NUL.
		n := max(13, int(dataLen)-8)
		part2, err := r.bytes(n)
		if err != nil {
			return nil, fmt.Errorf("greeting: scramble: %w", err)
		}
		if part2[len(part2)-1] == 0 {
			part2 = part2[:len(part2)-1]
		}
		g.scramble = append(g.scramble, part2...)
	}
	if g.caps&capPluginAuth != 0 {
		g.plugin = string(clean(r.nulOrRest()))
	}
	return g, nil
}

// clientHello is what a client's HandshakeResponse41 (or SSLRequest)
// carries, less its authentication response, which the listener never
// uses.
type clientHello struct {
	caps      uint32
	maxPacket uint32
	charset   byte
	user      string
	database  string
	plugin    string
	attrs     []byte // the connection attributes' key-value block; nil without
}

// errPre41 refuses a client of the protocol before MySQL 4.1.
var errPre41 = errors.New("the client speaks the protocol of MySQL before 4.1 (no CLIENT_PROTOCOL_41): use a client library from MySQL 4.1 / MariaDB 5.1 or later")

// parseClientHello decodes a client's HandshakeResponse41, or the prefix
// an SSLRequest is (sslRequest true: the client asks to switch to TLS
// before it sends the rest). Every length is checked against the packet
// before use; the fields are bounded and must be UTF-8.
func parseClientHello(p []byte) (h *clientHello, sslRequest bool, err error) {
	r := reader{b: p}
	caps, err := r.uint32()
	if err != nil {
		return nil, false, errors.New("the handshake response is shorter than its capability flags")
	}
	if caps&capProtocol41 == 0 {
		return nil, false, errPre41
	}
	h = &clientHello{caps: caps}
	if h.maxPacket, err = r.uint32(); err != nil {
		return nil, false, fmt.Errorf("handshake response: %w", err)
	}
	if h.charset, err = r.byte(); err != nil {
		return nil, false, fmt.Errorf("handshake response: %w", err)
	}
	if _, err := r.bytes(23); err != nil {
		return nil, false, fmt.Errorf("handshake response: %w", err)
	}
	if r.empty() {
		if caps&capSSL == 0 {
			return nil, false, errors.New("the handshake response ends after its header, and does not ask for TLS")
		}
		return h, true, nil
	}
	user, err := r.nulString()
	if err != nil {
		return nil, false, fmt.Errorf("handshake response: user name: %w", err)
	}
	if h.user, err = text("user name", user, maxUserLen); err != nil {
		return nil, false, err
	}
	if err := skipAuthResponse(&r, caps); err != nil {
		return nil, false, fmt.Errorf("handshake response: authentication data: %w", err)
	}
	if caps&capConnectWithDB != 0 && !r.empty() {
		if h.database, err = text("database name", r.nulOrRest(), maxDatabaseLen); err != nil {
			return nil, false, err
		}
	}
	if caps&capPluginAuth != 0 && !r.empty() {
		if h.plugin, err = text("authentication plugin name", r.nulOrRest(), maxPluginLen); err != nil {
			return nil, false, err
		}
	}
	if caps&capConnectAttrs != 0 && !r.empty() {
		if h.attrs, err = readAttrs(&r); err != nil {
			return nil, false, fmt.Errorf("handshake response: connection attributes: %w", err)
		}
	}
	return h, false, nil
}

// skipAuthResponse steps over the authentication response, in the form
// the client's flags say.
func skipAuthResponse(r *reader, caps uint32) error {
	var err error
	switch {
	case caps&capPluginAuthLenenc != 0:
		_, err = r.lenencBytes()
	case caps&capSecureConnection != 0:
		var n byte
		if n, err = r.byte(); err == nil {
			_, err = r.bytes(int(n))
		}
	default:
		_, err = r.nulString()
	}
	return err
}

// readAttrs reads the connection attributes: a length, then that many
// bytes of length-encoded key and value strings, each checked.
func readAttrs(r *reader) ([]byte, error) {
	block, err := r.lenencBytes()
	if err != nil {
		return nil, err
	}
	ar := reader{b: block}
	for !ar.empty() {
		if _, err := ar.lenencBytes(); err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		if _, err := ar.lenencBytes(); err != nil {
			return nil, fmt.Errorf("value: %w", err)
		}
	}
	return block, nil
}

// text returns b as a string if it is UTF-8 without control characters
// and at most limit bytes.
func text(what string, b []byte, limit int) (string, error) {
	if len(b) > limit {
		return "", fmt.Errorf("the %s is longer than %d bytes", what, limit)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("the %s is not UTF-8", what)
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("the %s has a control character", what)
		}
	}
	return string(b), nil
}

// response is the listener's HandshakeResponse41 to the upstream.
type response struct {
	caps      uint32
	maxPacket uint32
	charset   byte
	user      []byte
	auth      []byte
	database  string
	plugin    string
	attrs     []byte
}

// header returns the response's first 32 bytes: alone, they are the
// SSLRequest.
func (r *response) header() []byte {
	b := binary.LittleEndian.AppendUint32(nil, r.caps)
	b = binary.LittleEndian.AppendUint32(b, r.maxPacket)
	b = append(b, r.charset)
	return append(b, make([]byte, 23)...)
}

// encode returns the whole response's payload.
func (r *response) encode() []byte {
	b := append(r.header(), r.user...)
	b = append(b, 0)
	if r.caps&capPluginAuthLenenc != 0 {
		b = appendLenenc(b, uint64(len(r.auth)))
	} else {
		b = append(b, byte(len(r.auth)))
	}
	b = append(b, r.auth...)
	if r.caps&capConnectWithDB != 0 {
		b = append(b, r.database...)
		b = append(b, 0)
	}
	if r.caps&capPluginAuth != 0 {
		b = append(b, r.plugin...)
		b = append(b, 0)
	}
	if r.caps&capConnectAttrs != 0 {
		b = appendLenenc(b, uint64(len(r.attrs)))
		b = append(b, r.attrs...)
	}
	return b
}
