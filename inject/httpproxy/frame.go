package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"

	"github.com/credbroker/credbroker/broker"
)

// Go's HTTP/1 server accepts some request shapes that a proxy in front of
// the broker, or the upstream behind it, may frame differently — the stuff
// of request smuggling — and hides them from the handler: with both
// Content-Length and Transfer-Encoding it drops Content-Length; it merges
// identical duplicate Content-Length lines; it joins obs-fold continuation
// lines; it accepts bare LF line ends; on HTTP/1.0 it ignores
// Transfer-Encoding and frames by Content-Length. The framer follows the
// raw bytes of a connection as the server reads them, request by request,
// and refuses every such shape.
//
// It frames each request the way Go does when the shape is unambiguous —
// one Content-Length, or Transfer-Encoding: chunked on HTTP/1.1, or
// neither — and gives up on the connection (a sticky error) at anything
// else, so it never disagrees with the server about where a request ends:
// once it errs, every later request on the connection is refused and the
// connection closed. It sees request N's header block before the server
// can hand request N to the handler; with pipelining it may already have
// seen a bad request N+1, and then request N is refused too.

// Framer limits.
const (
	// maxKeep is how much of a line the framer keeps: enough for any
	// Content-Length or Transfer-Encoding line it accepts.
	maxKeep = 256
	// maxChunkLine bounds a chunk-size line, as Go's chunked reader does.
	maxChunkLine = 4096
	// maxHeaderBlock bounds a header block (or trailer), above the
	// server's MaxHeaderBytes and its slack, so the server refuses first.
	maxHeaderBlock = MaxHeaderBytes + 8<<10
)

// Framer states.
const (
	stHeader    = iota // reading a header block's lines
	stBody             // skipping remaining bytes of a Content-Length body
	stChunkSize        // reading a chunk-size line
	stChunkData        // skipping remaining bytes of a chunk
	stChunkCRLF        // reading the CRLF after a chunk
	stTrailer          // reading trailer lines after the last chunk
	stBad              // given up
)

// Framer errors: caller-safe descriptions of a refused shape.
var (
	errBareLF      = errors.New("a line ends in a bare LF or CR; use CRLF")
	errObsFold     = errors.New("a header line is folded (obs-fold); send each header on one line")
	errRequestLine = errors.New("the request line is not METHOD TARGET HTTP/1.1 or HTTP/1.0")
	errHeaderLine  = errors.New("a header line is not NAME: VALUE")
	errTooLong     = errors.New("the header block is too long")
	errDupLength   = errors.New("more than one Content-Length")
	errBadLength   = errors.New("Content-Length is not a number")
	errLengthAndTE = errors.New("both Content-Length and Transfer-Encoding")
	errDupTE       = errors.New("more than one Transfer-Encoding")
	errBadTE       = errors.New("Transfer-Encoding other than chunked")
	errTE10        = errors.New("Transfer-Encoding on an HTTP/1.0 request")
	errChunk       = errors.New("malformed chunked body")
)

// framer follows one connection's request stream. Its zero value expects a
// request line.
type framer struct {
	state int
	err   error

	// the line being read
	line   []byte // its first maxKeep bytes
	lineN  int    // its length so far
	sawCR  bool   // its last byte was CR
	tail   [9]byte
	blockN int // bytes of the header block or trailer so far

	// the header block being read
	first   bool // the next line is the request line (set by reset)
	http11  bool
	blocks  int // header blocks framed
	nCL     int
	nTE     int
	length  int64
	remain  int64 // body or chunk bytes left
	crlfIdx int   // bytes of the CRLF after a chunk seen
}

func newFramer() *framer {
	f := &framer{line: make([]byte, 0, maxKeep)}
	f.reset()
	return f
}

// reset prepares for the next request's header block.
func (f *framer) reset() {
	f.state, f.first, f.http11, f.nCL, f.nTE, f.length, f.blockN = stHeader, true, false, 0, 0, 0, 0
}

// fail gives up on the connection.
func (f *framer) fail(err error) {
	f.state, f.err = stBad, err
}

// write feeds bytes the server read.
func (f *framer) write(p []byte) {
	for len(p) > 0 && f.state != stBad {
		switch f.state {
		case stBody, stChunkData:
			n := int64(len(p))
			if n > f.remain {
				n = f.remain
			}
			f.remain -= n
			p = p[n:]
			if f.remain == 0 {
				if f.state == stBody {
					f.reset()
				} else {
					f.state, f.crlfIdx = stChunkCRLF, 0
				}
			}
		case stChunkCRLF:
			if p[0] != "\r\n"[f.crlfIdx] {
				f.fail(errChunk)
				return
			}
			p = p[1:]
			if f.crlfIdx++; f.crlfIdx == 2 {
				f.state = stChunkSize
			}
		default: // line states
			i := bytes.IndexAny(p, "\r\n")
			if i < 0 {
				f.addToLine(p)
				p = p[:0]
				continue
			}
			f.addToLine(p[:i])
			c := p[i]
			p = p[i+1:]
			if f.state == stBad {
				return
			}
			if c == '\r' {
				if f.sawCR {
					f.fail(errBareLF)
					return
				}
				f.sawCR = true
				continue
			}
			if !f.sawCR {
				f.fail(errBareLF)
				return
			}
			f.endLine()
		}
	}
}

// addToLine adds bytes (no CR or LF) to the line being read.
func (f *framer) addToLine(p []byte) {
	if len(p) == 0 {
		return
	}
	if f.sawCR {
		f.fail(errBareLF)
		return
	}
	if room := maxKeep - len(f.line); room > 0 {
		f.line = append(f.line, p[:min(room, len(p))]...)
	}
	for _, c := range p[max(0, len(p)-len(f.tail)):] {
		copy(f.tail[:], f.tail[1:])
		f.tail[len(f.tail)-1] = c
	}
	f.lineN += len(p)
	switch f.state {
	case stChunkSize:
		if f.lineN > maxChunkLine {
			f.fail(errChunk)
		}
	default:
		if f.blockN+f.lineN > maxHeaderBlock {
			f.fail(errTooLong)
		}
	}
}

// endLine handles the line just ended by CRLF.
func (f *framer) endLine() {
	line, n := f.line, f.lineN
	truncated := n > len(line)
	f.blockN += n + 2
	defer func() { f.line, f.lineN, f.sawCR, f.tail = f.line[:0], 0, false, [9]byte{} }()
	switch f.state {
	case stHeader:
		f.headerLine(line, n, truncated)
	case stChunkSize:
		f.chunkSize(line, truncated)
	case stTrailer:
		switch {
		case n == 0:
			f.reset()
		case line[0] == ' ' || line[0] == '\t':
			f.fail(errObsFold)
		}
	}
	if f.blockN > maxHeaderBlock && f.state != stBad {
		f.fail(errTooLong)
	}
}

// headerLine handles one line of a header block.
func (f *framer) headerLine(line []byte, n int, truncated bool) {
	if f.first {
		f.first = false
		tail := string(f.tail[max(0, len(f.tail)-n):])
		switch {
		case n == 0 || bytes.IndexByte(line, ' ') <= 0:
			f.fail(errRequestLine)
		case strings.HasSuffix(tail, " HTTP/1.1"):
			f.http11 = true
		case strings.HasSuffix(tail, " HTTP/1.0"):
		default:
			f.fail(errRequestLine)
		}
		return
	}
	if n == 0 {
		f.endBlock()
		return
	}
	if line[0] == ' ' || line[0] == '\t' {
		f.fail(errObsFold)
		return
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		f.fail(errHeaderLine)
		return
	}
	name := string(line[:colon])
	if !isToken(name) {
		f.fail(errHeaderLine)
		return
	}
	value := strings.Trim(string(line[colon+1:]), " \t")
	switch {
	case strings.EqualFold(name, "Content-Length"):
		f.nCL++
		if truncated || !isDigits(value) || len(value) > 18 {
			f.fail(errBadLength)
			return
		}
		f.length = 0
		for i := 0; i < len(value); i++ {
			f.length = f.length*10 + int64(value[i]-'0')
		}
	case strings.EqualFold(name, "Transfer-Encoding"):
		f.nTE++
		if truncated || !strings.EqualFold(value, "chunked") {
			f.fail(errBadTE)
		}
	}
}

// endBlock decides a request's framing at the end of its header block.
func (f *framer) endBlock() {
	f.blocks++
	switch {
	case f.nCL > 1:
		f.fail(errDupLength)
	case f.nTE > 1:
		f.fail(errDupTE)
	case f.nCL > 0 && f.nTE > 0:
		f.fail(errLengthAndTE)
	case f.nTE > 0 && !f.http11:
		f.fail(errTE10)
	case f.nTE > 0:
		f.state = stChunkSize
	case f.length > 0:
		f.state, f.remain = stBody, f.length
	default:
		f.reset()
	}
}

// chunkSize handles a chunk-size line: 1 to 15 hex digits, then an
// optional extension after ';'.
func (f *framer) chunkSize(line []byte, truncated bool) {
	size := line
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		size = line[:i]
	} else if truncated {
		f.fail(errChunk)
		return
	}
	if len(size) == 0 || len(size) > 15 {
		f.fail(errChunk)
		return
	}
	var v int64
	for _, c := range size {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			f.fail(errChunk)
			return
		}
		v = v<<4 | int64(d)
	}
	if v == 0 {
		f.state, f.blockN = stTrailer, 0
		return
	}
	f.state, f.remain = stChunkData, v
}

// isDigits reports whether s is one or more ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// rawConn is an accepted connection whose bytes a framer follows.
type rawConn struct {
	net.Conn
	mu sync.Mutex
	f  *framer
}

// Read reads from the connection and feeds the framer.
func (c *rawConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.f.write(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

// NetConn returns the connection beneath, as *tls.Conn does (LimitListener
// finds its own connection through it).
func (c *rawConn) NetConn() net.Conn { return c.Conn }

// shapeErr returns the framer's sticky error: the smuggling shape seen on
// this connection, if any.
func (c *rawConn) shapeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.err
}

// rawListener wraps each accepted connection in a rawConn.
type rawListener struct{ net.Listener }

func (l rawListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, f: newFramer()}, nil
}

type rawKey struct{}

// connContext is the server's ConnContext: broker.ConnContext on the
// connection beneath the rawConn, so the broker attests the caller's own
// connection, and the rawConn kept for the handler.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if rc, ok := c.(*rawConn); ok {
		ctx = context.WithValue(ctx, rawKey{}, rc)
		c = rc.Conn
	}
	return broker.ConnContext(ctx, c)
}
