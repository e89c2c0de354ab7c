package redis

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"strconv"
)

// Limits of the client's command stream. The first three are Redis's own
// (PROTO_INLINE_MAX_SIZE, the default proto-max-bulk-len, and INT_MAX
// arguments), so that a command Redis accepts passes; the last two bound
// the commands the listener holds whole to rewrite.
const (
	// MaxInline bounds an inline command's line.
	MaxInline = 64 << 10
	// MaxBulkLen bounds one argument of an array command.
	MaxBulkLen = 512 << 20
	// MaxArgs bounds the arguments of one array command.
	MaxArgs = math.MaxInt32
	// MaxAuthBytes bounds the arguments of an AUTH or HELLO command, in
	// total.
	MaxAuthBytes = 64 << 10
	// MaxAuthArgs bounds the number of arguments of an AUTH or HELLO
	// command.
	MaxAuthArgs = 64
)

// ProtocolError is a client's command stream that cannot be relayed: the
// client is told "-ERR Protocol error: <Reason>", after the replies to the
// commands before it, and the connection is closed, as Redis does.
type ProtocolError struct{ Reason string }

func (e *ProtocolError) Error() string { return "Protocol error: " + e.Reason }

func protocolErr(reason string) error { return &ProtocolError{Reason: reason} }

// login is the issued credential as the listener sends it upstream.
type login struct {
	user []byte // nil: the default user
	pass []byte
}

// auth returns the AUTH command that logs in with l.
func (l login) auth() [][]byte {
	if l.user == nil {
		return [][]byte{[]byte("AUTH"), l.pass}
	}
	return [][]byte{[]byte("AUTH"), l.user, l.pass}
}

// helloUser is the user of a HELLO … AUTH, which always names one.
func (l login) helloUser() []byte {
	if l.user == nil {
		return []byte("default")
	}
	return l.user
}

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

// printable returns b for an error message, or its code when it is not a
// printable ASCII character.
func printable(b byte) string {
	if b >= 0x20 && b < 0x7f {
		return string(b)
	}
	return "\\x" + strconv.FormatUint(uint64(b)|0x100, 16)[1:]
}

// parseInt reads a decimal number as Redis's string2ll does: an optional
// minus sign, no plus sign, no leading zeros, no spaces, within int64.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		v = v*10 + uint64(d-'0')
	}
	switch {
	case !neg && v > math.MaxInt64:
		return 0, false
	case neg && v > math.MaxInt64+1:
		return 0, false
	case neg:
		return -int64(v-1) - 1, true
	}
	return int64(v), true
}

// kind tells the commands the listener rewrites.
type kind int

const (
	plain kind = iota
	authCmd
	helloCmd
)

// kindOf classifies a command by the first bytes of its name (up to six)
// and the name's length l. Redis looks commands up with strcasecmp, which
// ends at a NUL byte, so "AUTH\x00…" may be taken for AUTH: such names are
// treated as AUTH and HELLO too.
func kindOf(name []byte, l int64) kind {
	switch {
	case cEqual(name, l, "auth"):
		return authCmd
	case cEqual(name, l, "hello"):
		return helloCmd
	}
	return plain
}

// cEqual reports whether a string of length l whose first bytes are b
// equals word (lower case) as C's strcasecmp compares: ASCII letters
// without case, up to a NUL byte.
func cEqual(b []byte, l int64, word string) bool {
	n := len(word)
	if l < int64(n) || len(b) < n || (l > int64(n) && (len(b) == n || b[n] != 0)) {
		return false
	}
	for i := 0; i < n; i++ {
		if lower(b[i]) != word[i] {
			return false
		}
	}
	return true
}

// argIs reports whether arg equals word (lower case) as strcasecmp
// compares.
func argIs(arg []byte, word string) bool { return cEqual(arg, int64(len(arg)), word) }

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// rewrite returns the command sent upstream in place of a client's AUTH
// or HELLO (args[0] is the name). The client's user and password never
// leave the listener:
//
//   - AUTH password and AUTH user password become AUTH with the issued
//     credential, whose reply (+OK) reaches the client in its place among
//     the replies; AUTH with another number of arguments becomes a bare
//     AUTH, so the client gets Redis's own arity error there.
//   - HELLO's options are walked as Redis walks them: AUTH user password
//     becomes AUTH with the issued credential (the default user for a
//     password alone), SETNAME name is kept, and at the first other
//     option the command is cut after it, so Redis answers its own syntax
//     error. An AUTH option without both its arguments is cut after AUTH.
//     A protocol version that reads AUTH is cut there too: nothing after an
//     AUTH token is ever forwarded but the issued credential.
func rewrite(k kind, args [][]byte, l login) [][]byte {
	if k == authCmd {
		if len(args) == 2 || len(args) == 3 {
			return l.auth()
		}
		return [][]byte{[]byte("AUTH")}
	}
	out := [][]byte{[]byte("HELLO")}
	if len(args) < 2 {
		return out
	}
	out = append(out, args[1])
	if argIs(args[1], "auth") {
		return out
	}
	for j := 2; j < len(args); j++ {
		more := len(args) - 1 - j
		switch opt := args[j]; {
		case argIs(opt, "auth") && more >= 2:
			out = append(out, []byte("AUTH"), l.helloUser(), l.pass)
			j += 2
		case argIs(opt, "setname") && more >= 1:
			out = append(out, opt, args[j+1])
			j++
		default:
			return append(out, opt)
		}
	}
	return out
}

// splitArgs splits an inline command's line into arguments as Redis's
// sdssplitargs does: blanks separate arguments; "double quotes" take
// \n \r \t \b \a \xHH and \<any> escapes; 'single quotes' take \'; a
// closing quote must be followed by a blank or the end; an unterminated
// quote fails. line holds no NUL byte.
func splitArgs(line []byte) ([][]byte, bool) {
	var args [][]byte
	p := 0
	at := func(i int) byte { // the C string's byte, 0 past its end
		if i < len(line) {
			return line[i]
		}
		return 0
	}
	for {
		for p < len(line) && isSpace(line[p]) {
			p++
		}
		if p >= len(line) {
			return args, true
		}
		cur := []byte{}
		inq, insq := false, false
		for done := false; !done; {
			ch := at(p)
			switch {
			case inq:
				switch {
				case ch == '\\' && at(p+1) == 'x' && isHex(at(p+2)) && isHex(at(p+3)):
					cur = append(cur, unhex(at(p+2))<<4|unhex(at(p+3)))
					p += 3
				case ch == '\\' && at(p+1) != 0:
					p++
					cur = append(cur, unescape(line[p]))
				case ch == '"':
					if n := at(p + 1); n != 0 && !isSpace(n) {
						return nil, false
					}
					done = true
				case ch == 0:
					return nil, false
				default:
					cur = append(cur, ch)
				}
			case insq:
				switch {
				case ch == '\\' && at(p+1) == '\'':
					p++
					cur = append(cur, '\'')
				case ch == '\'':
					if n := at(p + 1); n != 0 && !isSpace(n) {
						return nil, false
					}
					done = true
				case ch == 0:
					return nil, false
				default:
					cur = append(cur, ch)
				}
			default:
				switch ch {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					cur = append(cur, ch)
				}
			}
			if p < len(line) {
				p++
			}
		}
		args = append(args, cur)
	}
}

// isSpace is C's isspace in the C locale.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// unescape is the byte a backslash escape stands for in double quotes.
func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}
