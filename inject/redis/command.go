package redis

import (
	"bytes"
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

// parseHeader reads a complete count or length line (ending in LF):
// prefix, a number as Redis's string2ll reads it, CRLF.
func parseHeader(line []byte, prefix byte) (int64, error) {
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

// parseBulkLength reads an argument's complete length line and checks the
// length.
func parseBulkLength(line []byte) (int64, error) {
	l, err := parseHeader(line, '$')
	if err != nil {
		return 0, err
	}
	if l < 0 || l > MaxBulkLen {
		return 0, protocolErr("invalid bulk length")
	}
	return l, nil
}

// inlineArgs splits a complete inline line (ending in LF) into its
// arguments.
func inlineArgs(line []byte) ([][]byte, error) {
	line = line[:len(line)-1]
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if bytes.IndexByte(line, 0) >= 0 {
		// Redis reads the line as a C string and would stall on it.
		return nil, protocolErr("NUL byte in an inline request")
	}
	args, ok := splitArgs(line)
	if !ok {
		return nil, protocolErr("unbalanced quotes in request")
	}
	return args, nil
}

// appendHeader appends a count or length line.
func appendHeader(b []byte, prefix byte, n int64) []byte {
	b = append(b, prefix)
	b = strconv.AppendInt(b, n, 10)
	return append(b, '\r', '\n')
}

// appendCommand appends args as a RESP array.
func appendCommand(b []byte, args [][]byte) []byte {
	b = appendHeader(b, '*', int64(len(args)))
	for _, a := range args {
		b = appendHeader(b, '$', int64(len(a)))
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
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
