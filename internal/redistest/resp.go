package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Reply is one RESP2 or RESP3 reply as a test sees it.
type Reply struct {
	// Type is the reply's type byte: '+' simple string, '-' error, ':'
	// integer, '$' bulk string, '*' array, and the RESP3 types '_' null,
	// '#' boolean, ',' double, '(' big number, '!' bulk error, '='
	// verbatim string, '%' map, '~' set, '>' push, '|' attribute.
	Type byte
	// Str is the text of a string, error, double, big number or boolean
	// ("t" or "f") reply; for a verbatim string, without its format.
	Str string
	// Int is an integer reply's value.
	Int int64
	// Nil is set for a null bulk string or array, and the RESP3 null.
	Nil bool
	// Elems are an aggregate's elements; a map's keys and values
	// alternate.
	Elems []Reply
}

// IsError reports whether r is an error reply.
func (r Reply) IsError() bool { return r.Type == '-' || r.Type == '!' }

// String renders r compactly, for failure messages.
func (r Reply) String() string {
	switch {
	case r.Nil:
		return "(nil)"
	case r.Type == ':':
		return strconv.FormatInt(r.Int, 10)
	case len(r.Elems) > 0 || r.Type == '*' || r.Type == '%' || r.Type == '~' || r.Type == '>':
		parts := make([]string, len(r.Elems))
		for i, e := range r.Elems {
			parts[i] = e.String()
		}
		return string(r.Type) + "[" + strings.Join(parts, " ") + "]"
	}
	return string(r.Type) + strconv.Quote(r.Str)
}

// Map returns a map reply (or a RESP2 array of alternating keys and
// values) as a Go map of its string keys.
func (r Reply) Map() map[string]Reply {
	m := map[string]Reply{}
	for i := 0; i+1 < len(r.Elems); i += 2 {
		m[r.Elems[i].Str] = r.Elems[i+1]
	}
	return m
}

// maxReply bounds what ReadReply allocates for one string and the
// elements of one aggregate: replies come from the test's own server, but
// a bug must not make a test allocate without bound.
const maxReply = 64 << 20

// ReadReply reads one reply from r.
func ReadReply(r *bufio.Reader) (Reply, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return Reply{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return Reply{}, fmt.Errorf("redistest: malformed reply line %q", line)
	}
	t, body := line[0], line[1:len(line)-2]
	rep := Reply{Type: t}
	switch t {
	case '+', '-', ',', '(':
		rep.Str = body
	case '#':
		rep.Str = body
	case '_':
		rep.Nil = true
	case ':':
		if rep.Int, err = strconv.ParseInt(body, 10, 64); err != nil {
			return Reply{}, fmt.Errorf("redistest: integer reply %q", body)
		}
	case '$', '!', '=':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxReply {
			return Reply{}, fmt.Errorf("redistest: bulk length %q", body)
		}
		if n == -1 {
			rep.Nil = true
			return rep, nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return Reply{}, err
		}
		rep.Str = string(b[:n])
		if t == '=' && len(rep.Str) >= 4 {
			rep.Str = rep.Str[4:] // "txt:"
		}
	case '*', '%', '~', '>', '|':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxReply/2 {
			return Reply{}, fmt.Errorf("redistest: aggregate length %q", body)
		}
		if n == -1 {
			rep.Nil = true
			return rep, nil
		}
		if t == '%' || t == '|' {
			n *= 2
		}
		rep.Elems = make([]Reply, n)
		for i := range rep.Elems {
			if rep.Elems[i], err = ReadReply(r); err != nil {
				return Reply{}, err
			}
		}
		if t == '|' {
			// An attribute precedes the reply it describes.
			return ReadReply(r)
		}
	default:
		return Reply{}, fmt.Errorf("redistest: unknown reply type %q", line)
	}
	return rep, nil
}

// Encode returns args as a RESP array of bulk strings, as clients send
// commands.
func Encode(args ...string) []byte {
	b := make([]byte, 0, 16+16*len(args))
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, "\r\n"...)
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, "\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

// Conn is a minimal Redis client connection for tests. It records every
// byte it reads, so a test can look for what must never reach a client.
type Conn struct {
	net.Conn
	r    *bufio.Reader
	seen *recorder
}

// recorder keeps what was read through it.
type recorder struct {
	r   io.Reader
	buf []byte
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.buf = append(c.buf, p[:n]...)
	return n, err
}

// ioTimeout bounds each exchange of a test client: a hang guard only.
const ioTimeout = time.Minute

// NewConn wraps an open connection.
func NewConn(c net.Conn) *Conn {
	rec := &recorder{r: c}
	return &Conn{Conn: c, r: bufio.NewReader(rec), seen: rec}
}

// Dial connects to a Redis server (or a listener in front of one) on
// network ("tcp" or "unix") at addr; t.Cleanup closes the connection.
func Dial(t testing.TB, network, addr string) *Conn {
	t.Helper()
	c, err := net.DialTimeout(network, addr, ioTimeout)
	if err != nil {
		t.Fatalf("redistest: dial %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return NewConn(c)
}

// Send writes raw bytes: one or more commands, or anything else.
func (c *Conn) Send(b []byte) error {
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := c.Write(b)
	return err
}

// Receive reads one reply.
func (c *Conn) Receive() (Reply, error) {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	return ReadReply(c.r)
}

// Do sends one command and reads its reply. An error reply is a Reply,
// not an error.
func (c *Conn) Do(args ...string) (Reply, error) {
	if err := c.Send(Encode(args...)); err != nil {
		return Reply{}, err
	}
	return c.Receive()
}

// MustDo is Do failing the test on an I/O error or an error reply.
func (c *Conn) MustDo(t testing.TB, args ...string) Reply {
	t.Helper()
	r, err := c.Do(args...)
	if err != nil {
		t.Fatalf("redistest: %s: %v", strings.Join(args, " "), err)
	}
	if r.IsError() {
		t.Fatalf("redistest: %s: %s", strings.Join(args, " "), r.Str)
	}
	return r
}

// Received returns every byte read from the connection so far.
func (c *Conn) Received() []byte { return c.seen.buf }

// ReadLine reads one raw line, such as a MONITOR entry.
func (c *Conn) ReadLine() (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	s, err := c.r.ReadString('\n')
	if err != nil {
		return s, err
	}
	return strings.TrimSuffix(s, "\r\n"), nil
}

// ReadToEOF reads until the peer closes the connection and returns what
// was read.
func (c *Conn) ReadToEOF() ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	return io.ReadAll(c.r)
}
