package redis

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// This file holds the reference the scanner is tested against: the same
// framing as a pull reader over a bufio.Reader, one command at a time,
// written the plain way. FuzzScanner checks that both give the same
// commands upstream and the same verdict for any stream, however it is
// split.

// commandReader reads the client's commands one at a time and writes each
// to the upstream, as it is or rewritten. Only the command name is looked
// at: the arguments of every command but AUTH and HELLO stream through as
// they are read, whatever their size. AUTH and HELLO are read whole
// (bounded by MaxAuthBytes and MaxAuthArgs) and rewritten to log in with
// the issued credential (see rewrite). Inline commands are split as Redis
// splits them and sent as arrays.
//
// Where the stream's framing is concerned it follows Redis's parser
// (networking.c, processMultibulkBuffer and processInlineBuffer) so that
// both see the same commands, and refuses what it would have to guess at:
// a count or length line not ended by CRLF, a bulk string not followed by
// CRLF, an inline line with a NUL byte. A refusal is a *ProtocolError.
type commandReader struct {
	r     *bufio.Reader
	w     *bufio.Writer
	login login
	line  []byte // an inline command being read
	num   [24]byte
}

// next relays one command. It returns io.EOF when the client's stream
// ends between commands, io.ErrUnexpectedEOF inside one.
func (c *commandReader) next() error {
	b, err := c.r.Peek(1)
	if err != nil {
		return err
	}
	if b[0] != '*' {
		return c.inline()
	}
	n, err := c.header('*')
	if err != nil {
		return err
	}
	if n <= 0 {
		return nil // Redis ignores an empty array
	}
	if n > MaxArgs {
		return protocolErr("invalid multibulk length")
	}
	l, err := c.bulkHeader()
	if err != nil {
		return err
	}
	name, err := c.r.Peek(int(min(l, 6)))
	if err != nil {
		return unexpected(err)
	}
	if k := kindOf(name, l); k != plain {
		args, err := c.hold(n, l)
		if err != nil {
			return err
		}
		return c.write(rewrite(k, args, c.login))
	}
	c.writeHeader('*', n)
	c.writeHeader('$', l)
	if err := c.copyBulk(l); err != nil {
		return err
	}
	for i := int64(1); i < n; i++ {
		l, err := c.bulkHeader()
		if err != nil {
			return err
		}
		c.writeHeader('$', l)
		if err := c.copyBulk(l); err != nil {
			return err
		}
	}
	return nil
}

// inline relays an inline command: a line split into arguments.
func (c *commandReader) inline() error {
	c.line = c.line[:0]
	for {
		frag, err := c.r.ReadSlice('\n')
		if len(c.line)+len(frag) > MaxInline+2 {
			return protocolErr("too big inline request")
		}
		c.line = append(c.line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return unexpected(err)
		}
	}
	line := c.line[:len(c.line)-1]
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if bytes.IndexByte(line, 0) >= 0 {
		// Redis reads the line as a C string and would stall on it.
		return protocolErr("NUL byte in an inline request")
	}
	args, ok := splitArgs(line)
	if !ok {
		return protocolErr("unbalanced quotes in request")
	}
	if len(args) == 0 {
		return nil
	}
	if k := kindOf(args[0], int64(len(args[0]))); k != plain {
		args = rewrite(k, args, c.login)
	}
	return c.write(args)
}

// header reads a count or length line: prefix, a number as Redis's
// string2ll reads it, CRLF.
func (c *commandReader) header(prefix byte) (int64, error) {
	line, err := c.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		if prefix == '*' {
			return 0, protocolErr("too big mbulk count string")
		}
		return 0, protocolErr("too big bulk count string")
	case err != nil:
		return 0, unexpected(err)
	}
	if line[0] != prefix {
		return 0, protocolErr("expected '" + string(prefix) + "', got '" + printable(line[0]) + "'")
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, protocolErr("a count line must end with CRLF")
	}
	n, ok := parseInt(line[1 : len(line)-2])
	if !ok {
		if prefix == '*' {
			return 0, protocolErr("invalid multibulk length")
		}
		return 0, protocolErr("invalid bulk length")
	}
	return n, nil
}

// bulkHeader reads an argument's length line and checks the length.
func (c *commandReader) bulkHeader() (int64, error) {
	l, err := c.header('$')
	if err != nil {
		return 0, err
	}
	if l < 0 || l > MaxBulkLen {
		return 0, protocolErr("invalid bulk length")
	}
	return l, nil
}

// hold reads the rest of an AUTH or HELLO command of n arguments, the
// first l bytes long, whose header has been read.
func (c *commandReader) hold(n, l int64) ([][]byte, error) {
	if n > MaxAuthArgs {
		return nil, protocolErr("AUTH or HELLO with more than " + strconv.Itoa(MaxAuthArgs) + " arguments")
	}
	args := make([][]byte, 0, n)
	budget := int64(MaxAuthBytes)
	for i := int64(0); i < n; i++ {
		if i > 0 {
			var err error
			if l, err = c.bulkHeader(); err != nil {
				return nil, err
			}
		}
		if budget -= l; budget < 0 {
			return nil, protocolErr("AUTH or HELLO arguments longer than " + strconv.Itoa(MaxAuthBytes) + " bytes")
		}
		a := make([]byte, l)
		if _, err := io.ReadFull(c.r, a); err != nil {
			return nil, unexpected(err)
		}
		if err := c.crlf(false); err != nil {
			return nil, err
		}
		args = append(args, a)
	}
	return args, nil
}

// copyBulk copies an argument's n bytes and the CRLF after them.
func (c *commandReader) copyBulk(n int64) error {
	for n > 0 {
		if c.r.Buffered() == 0 {
			if _, err := c.r.Peek(1); err != nil {
				return unexpected(err)
			}
		}
		k := int(min(int64(c.r.Buffered()), n))
		b, _ := c.r.Peek(k)
		if _, err := c.w.Write(b); err != nil {
			return err
		}
		_, _ = c.r.Discard(k)
		n -= int64(k)
	}
	return c.crlf(true)
}

// crlf reads the CRLF after a bulk string, and writes it when relaying.
// Redis skips those two bytes unread; a client that sends anything else
// is refused rather than guessed at.
func (c *commandReader) crlf(relay bool) error {
	b, err := c.r.Peek(2)
	if err != nil {
		return unexpected(err)
	}
	if b[0] != '\r' || b[1] != '\n' {
		return protocolErr("a bulk string must be followed by CRLF")
	}
	_, _ = c.r.Discard(2)
	if relay {
		_, err = c.w.WriteString("\r\n")
	}
	return err
}

// writeHeader writes a count or length line.
func (c *commandReader) writeHeader(prefix byte, n int64) {
	b := append(c.num[:0], prefix)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, '\r', '\n')
	_, _ = c.w.Write(b) // a failed write shows at the next flush
}

// write writes args as a RESP array.
func (c *commandReader) write(args [][]byte) error {
	c.writeHeader('*', int64(len(args)))
	for _, a := range args {
		c.writeHeader('$', int64(len(a)))
		_, _ = c.w.Write(a)
		_, _ = c.w.WriteString("\r\n")
	}
	return nil
}

// unexpected turns an end of stream inside a command into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
