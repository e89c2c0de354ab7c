package redis

import (
	"bytes"
	"io"
	"strconv"
)

// scanner is the client's command stream on its way upstream, fed as it
// arrives: Feed takes whatever bytes the client sent and returns what goes
// upstream for them. Only the command name is looked at: the arguments of
// every command but AUTH and HELLO stream through as they arrive, whatever
// their size. AUTH and HELLO are held whole (bounded by MaxAuthBytes and
// MaxAuthArgs) and rewritten to log in with the issued credential (see
// rewrite). Inline commands are split as Redis splits them and sent as
// arrays.
//
// Where the stream's framing is concerned it follows Redis's parser
// (networking.c, processMultibulkBuffer and processInlineBuffer) so that
// both see the same commands, and refuses what it would have to guess at:
// a count or length line not ended by CRLF or longer than bufSize, a bulk
// string not followed by CRLF, an inline line with a NUL byte. A refusal
// is a *ProtocolError; the scanner takes nothing more after one.
//
// Feeding a stream in one piece or split anywhere gives the same output
// and the same verdict.
type scanner struct {
	login login
	st    scanState
	err   error // the refusal, once there is one

	line  []byte   // the count, length or inline line being read
	n     int64    // arguments of the array command being read
	i     int64    // which of them is being read (0: the name)
	l     int64    // its length
	left  int64    // its bytes still to come
	crlf  [2]byte  // the CRLF after it, as read so far
	ncrlf int      // how many bytes of crlf have been read
	kind  kind     // plain, or the command being held to be rewritten
	args  [][]byte // the held command's arguments, the last one being read
	spent int64    // bytes of the held command's arguments so far

	commands int // commands read whole, those ignored included

	// refused, when set, is told of a refusal as soon as it is found
	// (before the client is told).
	refused func(*ProtocolError)
}

// scanState is where in the stream the scanner is.
type scanState int

const (
	atCommand scanState = iota // between commands
	inCount                    // an array's count line: *N
	inLength                   // an argument's length line: $L
	inName                     // the first bytes of an array command's name
	inArg                      // an argument's bytes
	inCRLF                     // the CRLF after an argument
	inInline                   // an inline command's line
)

// namePeek is how many bytes of a command's name tell AUTH and HELLO.
const namePeek = 6

// Feed appends to out what goes upstream for in, the client's next bytes,
// and returns it with the refusal, if in holds one: out then holds what
// the commands before it sent.
func (s *scanner) Feed(out, in []byte) ([]byte, error) {
	if s.err != nil {
		return out, s.err
	}
	for len(in) > 0 {
		var err error
		switch s.st {
		case atCommand:
			if in[0] == '*' {
				s.st = inCount
			} else {
				s.st = inInline
			}
			s.line = s.line[:0]
		case inCount, inLength:
			var line []byte
			if line, in, err = s.takeLine(in); err == nil && line != nil {
				out, err = s.header(out, line)
			}
		case inName:
			k := min(int64(len(in)), min(s.l, namePeek)-int64(len(s.line)))
			s.line = append(s.line, in[:k]...)
			in = in[k:]
			if int64(len(s.line)) == min(s.l, namePeek) {
				out, err = s.name(out)
			}
		case inArg:
			k := min(int64(len(in)), s.left)
			if s.kind == plain {
				out = append(out, in[:k]...)
			} else {
				last := len(s.args) - 1
				s.args[last] = append(s.args[last], in[:k]...)
			}
			in = in[k:]
			if s.left -= k; s.left == 0 {
				s.st, s.ncrlf = inCRLF, 0
			}
		case inCRLF:
			k := copy(s.crlf[s.ncrlf:], in)
			in = in[k:]
			if s.ncrlf += k; s.ncrlf == 2 {
				out, err = s.argEnd(out)
			}
		case inInline:
			var line []byte
			if line, in, err = s.takeInline(in); err == nil && line != nil {
				out, err = s.inline(out, line)
			}
		}
		if err != nil {
			return out, s.refuse(err)
		}
		// An argument of length 0 has no bytes to wait for.
		if s.st == inName && s.l == 0 {
			if out, err = s.name(out); err != nil {
				return out, s.refuse(err)
			}
		}
		if s.st == inArg && s.left == 0 {
			s.st, s.ncrlf = inCRLF, 0
		}
	}
	return out, nil
}

// End is the client's stream ending: io.EOF between commands,
// io.ErrUnexpectedEOF inside one, or the refusal already returned.
func (s *scanner) End() error {
	switch {
	case s.err != nil:
		return s.err
	case s.st == atCommand:
		return io.EOF
	}
	return io.ErrUnexpectedEOF
}

// takeLine reads a count or length line into s.line: the whole line once
// it has arrived (nil until then) and the rest of in. A line that reaches
// bufSize bytes without its LF is refused.
func (s *scanner) takeLine(in []byte) (line, rest []byte, err error) {
	room := bufSize - len(s.line)
	if j := bytes.IndexByte(in, '\n'); j >= 0 && j < room {
		s.line = append(s.line, in[:j+1]...)
		return s.line, in[j+1:], nil
	}
	if len(in) >= room {
		if s.st == inCount {
			return nil, nil, protocolErr("too big mbulk count string")
		}
		return nil, nil, protocolErr("too big bulk count string")
	}
	s.line = append(s.line, in...)
	return nil, nil, nil
}

// takeInline reads an inline line into s.line, as takeLine does, refusing
// one longer than MaxInline (with its CRLF).
func (s *scanner) takeInline(in []byte) (line, rest []byte, err error) {
	j := bytes.IndexByte(in, '\n')
	k := len(in)
	if j >= 0 {
		k = j + 1
	}
	if len(s.line)+k > MaxInline+2 {
		return nil, nil, protocolErr("too big inline request")
	}
	s.line = append(s.line, in[:k]...)
	if j < 0 {
		return nil, nil, nil
	}
	return s.line, in[k:], nil
}

// header takes a complete count or length line.
func (s *scanner) header(out, line []byte) ([]byte, error) {
	defer func() { s.line = s.line[:0] }()
	if s.st == inCount {
		n, err := parseHeader(line, '*')
		switch {
		case err != nil:
			return out, err
		case n <= 0:
			s.st = atCommand // Redis ignores an empty array
			s.commands++
			return out, nil
		case n > MaxArgs:
			return out, protocolErr("invalid multibulk length")
		}
		s.n, s.i, s.st = n, 0, inLength
		return out, nil
	}
	l, err := parseBulkLength(line)
	if err != nil {
		return out, err
	}
	s.l, s.left = l, l
	switch {
	case s.i == 0:
		s.st = inName // s.line, emptied, takes the name's first bytes
		return out, nil
	case s.kind == plain:
		out = appendHeader(out, '$', l)
	default:
		if err := s.spend(l); err != nil {
			return out, err
		}
		s.args = append(s.args, make([]byte, 0, l))
	}
	s.st = inArg
	return out, nil
}

// name takes the first bytes of a command's name: a plain command's
// headers and those bytes go upstream, AUTH and HELLO are held.
func (s *scanner) name(out []byte) ([]byte, error) {
	name := s.line
	s.kind = kindOf(name, s.l)
	s.left = s.l - int64(len(name))
	s.st = inArg
	if s.kind == plain {
		out = appendHeader(out, '*', s.n)
		out = appendHeader(out, '$', s.l)
		return append(out, name...), nil
	}
	if s.n > MaxAuthArgs {
		return out, protocolErr("AUTH or HELLO with more than " + strconv.Itoa(MaxAuthArgs) + " arguments")
	}
	s.spent = 0
	if err := s.spend(s.l); err != nil {
		return out, err
	}
	arg := make([]byte, 0, s.l)
	s.args = append(s.args[:0], append(arg, name...))
	return out, nil
}

// spend counts an argument of length l against the held command's budget.
func (s *scanner) spend(l int64) error {
	if s.spent += l; s.spent > MaxAuthBytes {
		return protocolErr("AUTH or HELLO arguments longer than " + strconv.Itoa(MaxAuthBytes) + " bytes")
	}
	return nil
}

// argEnd takes the CRLF after an argument, and ends the command after its
// last one.
func (s *scanner) argEnd(out []byte) ([]byte, error) {
	if s.crlf != [2]byte{'\r', '\n'} {
		return out, protocolErr("a bulk string must be followed by CRLF")
	}
	if s.kind == plain {
		out = append(out, '\r', '\n')
	}
	if s.i++; s.i < s.n {
		s.st = inLength
		s.line = s.line[:0]
		return out, nil
	}
	s.st = atCommand
	s.commands++
	if s.kind != plain {
		out = appendCommand(out, rewrite(s.kind, s.args, s.login))
		s.args = s.args[:0]
		s.kind = plain
	}
	return out, nil
}

// inline takes a complete inline line.
func (s *scanner) inline(out, line []byte) ([]byte, error) {
	s.st = atCommand
	s.commands++
	args, err := inlineArgs(line)
	if err != nil || len(args) == 0 {
		return out, err
	}
	if k := kindOf(args[0], int64(len(args[0]))); k != plain {
		args = rewrite(k, args, s.login)
	}
	return appendCommand(out, args), nil
}

// Refusal is what the client is sent for err, a refusal of its stream,
// after the replies to the commands before it.
func (s *scanner) Refusal(err error) []byte {
	if pe, ok := err.(*ProtocolError); ok {
		return []byte("-ERR " + pe.Error() + "\r\n")
	}
	return nil
}

// refuse records err, the stream's refusal, and tells s.refused.
func (s *scanner) refuse(err error) error {
	s.err = err
	if pe, ok := err.(*ProtocolError); ok && s.refused != nil {
		s.refused(pe)
	}
	return err
}
