package redis

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

// testLogin is the issued credential of these tests.
var testLogin = login{user: []byte("issued-user"), pass: []byte("issued-pass")}

// relayAll feeds in to a scanner in pieces of bufN bytes, then ends the
// stream, and returns what it sent upstream and the error it stopped
// with (io.EOF for a clean end).
func relayAll(in []byte, bufN int, lg login) ([]byte, error) {
	sc := &scanner{login: lg}
	var out []byte
	for len(in) > 0 {
		k := min(bufN, len(in))
		var err error
		if out, err = sc.Feed(out, in[:k]); err != nil {
			return out, err
		}
		in = in[k:]
	}
	return out, sc.End()
}

// referenceAll runs the reference reader over in with a read buffer of
// bufSize and returns what it wrote upstream and the error it stopped
// with.
func referenceAll(in []byte, lg login) ([]byte, error) {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	cr := &commandReader{r: bufio.NewReaderSize(bytes.NewReader(in), bufSize), w: w, login: lg}
	var err error
	for err == nil {
		err = cr.next()
	}
	_ = w.Flush()
	return out.Bytes(), err
}

// resp encodes commands as RESP arrays.
func resp(cmds ...[]string) string {
	var b strings.Builder
	for _, c := range cmds {
		b.WriteString("*" + strconv.Itoa(len(c)) + "\r\n")
		for _, a := range c {
			b.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
		}
	}
	return b.String()
}

func cmd(args ...string) []string { return args }

func TestReadCommand(t *testing.T) {
	issued := cmd("AUTH", "issued-user", "issued-pass")
	tests := []struct {
		name string
		in   string
		want string
		err  string // a protocol error's reason; "" means the input ends cleanly
		eof  bool   // ends with io.ErrUnexpectedEOF
	}{
		{"array passes as it is", resp(cmd("SET", "k", "v"), cmd("GET", "k")), resp(cmd("SET", "k", "v"), cmd("GET", "k")), "", false},
		{"empty argument", resp(cmd("SET", "k", "")), resp(cmd("SET", "k", "")), "", false},
		{"binary argument", resp(cmd("SET", "k", "a\r\nb\x00c")), resp(cmd("SET", "k", "a\r\nb\x00c")), "", false},
		{"long name streams", resp(cmd(strings.Repeat("x", 100), "a")), resp(cmd(strings.Repeat("x", 100), "a")), "", false},
		{"empty arrays ignored", "*0\r\n*-1\r\n" + resp(cmd("PING")), resp(cmd("PING")), "", false},
		{"inline", "SET k v\r\nGET k\n", resp(cmd("SET", "k", "v"), cmd("GET", "k")), "", false},
		{"inline quotes", `SET "a b" 'c\'d' "\x41\n"` + "\r\n", resp(cmd("SET", "a b", "c'd", "A\n")), "", false},
		{"inline blank line ignored", "\r\n  \r\nPING\r\n", resp(cmd("PING")), "", false},
		{"AUTH password", resp(cmd("AUTH", "client-pass")), resp(issued), "", false},
		{"AUTH user password", resp(cmd("auth", "intruder", "client-pass")), resp(issued), "", false},
		{"AUTH mixed case inline", "aUtH intruder client-pass\r\n", resp(issued), "", false},
		{"AUTH name with NUL", resp(cmd("AUTH\x00junk", "client-pass")), resp(issued), "", false},
		{"HELLO name with NUL", resp(cmd("hello\x00", "3", "AUTH", "u", "client-pass")), resp(cmd("HELLO", "3", "AUTH", "issued-user", "issued-pass")), "", false},
		{"AUTH wrong arity", resp(cmd("AUTH", "a", "b", "client-pass")), resp(cmd("AUTH")), "", false},
		{"AUTH alone", resp(cmd("AUTH")), resp(cmd("AUTH")), "", false},
		{"AUTHX is not AUTH", resp(cmd("AUTHX", "a")), resp(cmd("AUTHX", "a")), "", false},
		{"HELLO without AUTH", resp(cmd("HELLO", "3")), resp(cmd("HELLO", "3")), "", false},
		{"HELLO alone", resp(cmd("HELLO")), resp(cmd("HELLO")), "", false},
		{"HELLO AUTH SETNAME", resp(cmd("HELLO", "3", "auth", "u", "client-pass", "SETNAME", "app")),
			resp(cmd("HELLO", "3", "AUTH", "issued-user", "issued-pass", "SETNAME", "app")), "", false},
		{"HELLO SETNAME AUTH", resp(cmd("HELLO", "2", "SETNAME", "AUTH", "AUTH", "u", "client-pass")),
			resp(cmd("HELLO", "2", "SETNAME", "AUTH", "AUTH", "issued-user", "issued-pass")), "", false},
		{"HELLO AUTH short", resp(cmd("HELLO", "3", "AUTH", "client-pass")), resp(cmd("HELLO", "3", "AUTH")), "", false},
		{"HELLO unknown option cuts", resp(cmd("HELLO", "3", "FOO", "AUTH", "u", "client-pass")), resp(cmd("HELLO", "3", "FOO")), "", false},
		{"HELLO AUTH as version", resp(cmd("HELLO", "AUTH", "u", "client-pass")), resp(cmd("HELLO", "AUTH")), "", false},
		{"HELLO inline", "HELLO 3 AUTH u client-pass\r\n", resp(cmd("HELLO", "3", "AUTH", "issued-user", "issued-pass")), "", false},
		{"pipeline keeps order", resp(cmd("SET", "a", "1"), cmd("AUTH", "x", "y"), cmd("GET", "a")),
			resp(cmd("SET", "a", "1"), issued, cmd("GET", "a")), "", false},

		{"bulk length too big", "*1\r\n$" + strconv.Itoa(MaxBulkLen+1) + "\r\n", "", "invalid bulk length", false},
		{"bulk length negative", "*1\r\n$-1\r\n", "", "invalid bulk length", false},
		{"bulk length leading zero", "*1\r\n$04\r\nPING\r\n", "", "invalid bulk length", false},
		{"bulk length plus", "*1\r\n$+4\r\nPING\r\n", "", "invalid bulk length", false},
		{"bulk length overflow", "*1\r\n$99999999999999999999\r\n", "", "invalid bulk length", false},
		{"count too big", "*" + strconv.Itoa(math.MaxInt32+1) + "\r\n", "", "invalid multibulk length", false},
		{"count not a number", "*x\r\n", "", "invalid multibulk length", false},
		{"count without CR", "*1\n$4\r\nPING\r\n", "", "a count line must end with CRLF", false},
		{"not a bulk string", "*1\r\n:1\r\n", "", "expected '$', got ':'", false},
		{"no CRLF after bulk", "*1\r\n$4\r\nPINGxx", "", "a bulk string must be followed by CRLF", false},
		{"no CRLF after AUTH argument", "*2\r\n$4\r\nAUTH\r\n$1\r\nab\r\n", "", "a bulk string must be followed by CRLF", false},
		{"inline too long", strings.Repeat("a", MaxInline+10) + "\r\n", "", "too big inline request", false},
		{"inline NUL", "GET a\x00b\r\n", "", "NUL byte in an inline request", false},
		{"unbalanced quotes", "SET \"a b\r\n", "", "unbalanced quotes in request", false},
		{"quote not followed by space", "SET \"a\"b c\r\n", "", "unbalanced quotes in request", false},
		{"AUTH too long", resp(cmd("AUTH", strings.Repeat("p", MaxAuthBytes))), "", "AUTH or HELLO arguments longer than 65536 bytes", false},
		{"AUTH too many arguments", "*65\r\n$4\r\nAUTH\r\n", "", "AUTH or HELLO with more than 64 arguments", false},

		{"partial array", "*2\r\n$3\r\nGET\r\n$1\r", resp(), "", true},
		{"partial bulk", "*2\r\n$3\r\nGET\r\n$10\r\nab", "", "", true},
		{"partial inline", "GET a", "", "", true},
		{"partial AUTH", "*2\r\n$4\r\nAUTH\r\n$5\r\nab", "", "", true},
		{"huge count, no arguments", "*2147483647\r\n$4\r\nPING\r\n", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{16, bufSize} {
				if n < 32 && strings.Contains(tc.name, "overflow") {
					continue // the line does not fit: "too big bulk count string"
				}
				got, err := relayAll([]byte(tc.in), n, testLogin)
				var pe *ProtocolError
				switch {
				case tc.err != "":
					if !errors.As(err, &pe) || pe.Reason != tc.err {
						t.Fatalf("buffer %d: error %v, want protocol error %q", n, err, tc.err)
					}
				case tc.eof:
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("buffer %d: error %v, want unexpected EOF", n, err)
					}
				default:
					if err != io.EOF {
						t.Fatalf("buffer %d: error %v, want EOF", n, err)
					}
					if string(got) != tc.want {
						t.Fatalf("buffer %d: upstream got %q, want %q", n, got, tc.want)
					}
				}
				if tc.err != "" || !tc.eof {
					if bytes.Contains(got, []byte("client-pass")) {
						t.Fatalf("the client's password went upstream: %q", got)
					}
				}
			}
		})
	}
}

// A password-only credential logs in as the default user.
func TestRewritePasswordOnly(t *testing.T) {
	lg := login{pass: []byte("issued-pass")}
	got, _ := relayAll([]byte(resp(cmd("AUTH", "u", "p"), cmd("HELLO", "3", "AUTH", "u", "p"))), bufSize, lg)
	want := resp(cmd("AUTH", "issued-pass"), cmd("HELLO", "3", "AUTH", "default", "issued-pass"))
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseInt(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1": 1, "-1": -1, "9223372036854775807": math.MaxInt64, "-9223372036854775808": math.MinInt64, "512": 512,
	} {
		if got, ok := parseInt([]byte(in)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-", "-0", "00", "01", "+1", " 1", "1 ", "9223372036854775808", "-9223372036854775809", "1a", "12345678901234567890"} {
		if got, ok := parseInt([]byte(in)); ok {
			t.Errorf("parseInt(%q) = %d, want refused", in, got)
		}
	}
}

// refCommands parses a whole client stream as Redis does
// (processMultibulkBuffer, processInlineBuffer), without this package's
// streaming reader: it stops where Redis would fail or wait for more.
func refCommands(in []byte) [][][]byte {
	var cmds [][][]byte
	for len(in) > 0 {
		if in[0] != '*' {
			i := bytes.IndexByte(in, '\n')
			if i < 0 || bytes.IndexByte(in[:i], 0) >= 0 {
				return cmds // Redis waits (strchr stops at a NUL)
			}
			line := bytes.TrimSuffix(in[:i], []byte{'\r'})
			in = in[i+1:]
			args, ok := splitArgs(line)
			if !ok {
				return cmds
			}
			if len(args) > 0 {
				cmds = append(cmds, args)
			}
			continue
		}
		i := bytes.IndexByte(in, '\r')
		if i < 0 || i+1 >= len(in) {
			return cmds
		}
		n, ok := parseInt(in[1:i])
		if !ok || n > math.MaxInt32 {
			return cmds
		}
		in = in[i+2:]
		if n <= 0 {
			continue
		}
		var args [][]byte
		for ; n > 0; n-- {
			i := bytes.IndexByte(in, '\r')
			if i < 0 || i+1 >= len(in) || in[0] != '$' {
				return cmds
			}
			l, ok := parseInt(in[1:i])
			if !ok || l < 0 || l > MaxBulkLen || int64(len(in)-i-2) < l+2 {
				return cmds
			}
			in = in[i+2:]
			args = append(args, in[:l])
			in = in[l+2:]
		}
		cmds = append(cmds, args)
	}
	return cmds
}

// loginsOf returns the logins Redis would attempt for a command as it
// reads AUTH and HELLO (acl.c authCommand, networking.c helloCommand),
// each as user then password.
func loginsOf(args [][]byte) [][2]string {
	switch kindOf(args[0], int64(len(args[0]))) {
	case authCmd:
		switch len(args) {
		case 2:
			return [][2]string{{"default", string(args[1])}}
		case 3:
			return [][2]string{{string(args[1]), string(args[2])}}
		}
	case helloCmd:
		var out [][2]string
		for j := 2; j < len(args); j++ {
			more := len(args) - 1 - j
			switch {
			case argIs(args[j], "auth") && more >= 2:
				out = append(out, [2]string{string(args[j+1]), string(args[j+2])})
				j += 2
			case argIs(args[j], "setname") && more >= 1:
				j++
			default:
				return out
			}
		}
		return out
	}
	return nil
}

// FuzzReadCommand checks the reader against refCommands: the commands
// that reach the upstream are the client's, in order, each as Redis
// would read it from the client, but for AUTH and HELLO, from which Redis
// can only ever log in with the issued credential. The reader may stop
// earlier than Redis (it refuses what Redis skips unread), never later.
func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{
		resp(cmd("SET", "k", "v"), cmd("GET", "k")),
		resp(cmd("AUTH", "u", "p"), cmd("PING")),
		resp(cmd("HELLO", "3", "AUTH", "u", "p", "SETNAME", "n")),
		resp(cmd("hello", "2", "SETNAME", "AUTH", "AUTH", "u", "p")),
		resp(cmd("AUTH\x00x", "p")),
		"*0\r\n*-1\r\n",
		"SET k v\r\nAUTH u p\r\nHELLO 3 AUTH u p\n",
		`SET "a\x41" 'b\'c' "q\n"` + "\r\n",
		"SET \"a b\r\n",
		"*2\r\n$3\r\nGET\r\n$1\r",
		"*1\r\n$536870913\r\n",
		"*2147483648\r\n",
		"*9223372036854775807\r\n$4\r\nPING\r\n",
		"*1\r\n$4\r\nPINGxx",
		"*1\n$4\r\nPING\r\n",
		"GET a\x00b\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		bufN := bufSize
		if len(in)%2 == 1 {
			bufN = 16
		}
		out, err := relayAll(in, bufN, testLogin)
		if err == nil {
			t.Fatal("the reader stopped without an error")
		}
		got := refCommands(out)
		if err == io.EOF && refLen(out) != len(out) {
			// Else the stream may end inside a command streamed when the
			// client's failed: Redis never runs it.
			t.Fatalf("the upstream stream does not parse whole: %q", out)
		}
		want := refCommands(in)
		if len(got) > len(want) {
			t.Fatalf("%d commands upstream, Redis reads %d from the client: %q -> %q", len(got), len(want), in, out)
		}
		if err == io.EOF && len(got) != len(want) {
			t.Fatalf("clean end after %d commands, Redis reads %d: %q -> %q", len(got), len(want), in, out)
		}
		for i, g := range got {
			w := want[i]
			kw, kg := kindOf(w[0], int64(len(w[0]))), kindOf(g[0], int64(len(g[0])))
			if kw != kg {
				t.Fatalf("command %d: %q went upstream as %q", i, w, g)
			}
			if kw == plain {
				if !equalArgs(g, w) {
					t.Fatalf("command %d: %q went upstream as %q", i, w, g)
				}
				continue
			}
			for _, l := range loginsOf(g) {
				if l != [2]string{"issued-user", "issued-pass"} {
					t.Fatalf("command %d: %q went upstream as %q, which logs in as %q", i, w, g, l)
				}
			}
		}
	})
}

// refLen returns how many bytes of a stream of well-formed arrays
// refCommands consumes.
func refLen(b []byte) int {
	n := 0
	for _, c := range refCommands(b) {
		n += len(resp(toStrings(c)))
	}
	return n
}

func toStrings(args [][]byte) []string {
	s := make([]string, len(args))
	for i, a := range args {
		s[i] = string(a)
	}
	return s
}

func equalArgs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// BenchmarkScanner relays a pipeline of GET and SET commands through the
// scanner, as the client sends them: the listener's work per command on
// the client's side.
func BenchmarkScanner(b *testing.B) {
	var in []byte
	const n = 1000
	for i := range n {
		if i%2 == 0 {
			in = append(in, resp(cmd("SET", "key:"+strconv.Itoa(i), strings.Repeat("v", 64)))...)
		} else {
			in = append(in, resp(cmd("GET", "key:"+strconv.Itoa(i)))...)
		}
	}
	sc := &scanner{login: testLogin}
	out := make([]byte, 0, len(in))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = sc.Feed(out[:0], in); err != nil {
			b.Fatal(err)
		}
	}
}

// The scanner and the reference reader send the same bytes upstream and
// stop with the same verdict for any stream, however it arrives split.
func FuzzScannerMatchesReference(f *testing.F) {
	for _, s := range []string{
		resp(cmd("SET", "k", "v"), cmd("GET", "k")),
		resp(cmd("AUTH", "u", "p"), cmd("PING")),
		resp(cmd("HELLO", "3", "AUTH", "u", "p", "SETNAME", "n")),
		resp(cmd("SET", "k", ""), cmd("", "x")),
		"*0\r\n*-1\r\nPING\r\n\r\n",
		"SET k v\r\nAUTH u p\r\nHELLO 3 AUTH u p\n",
		"*2\r\n$3\r\nGET\r\n$1\r",
		"*1\r\n$4\r\nPINGxx",
		"*1\r\n$4\r\nPING\rx",
		"*1\n$4\r\nPING\r\n",
		"*65\r\n$4\r\nAUTH\r\n",
		"*2\r\n$4\r\nAUTH\r\n$70000\r\n",
		"GET a\x00b\r\n",
		"x\r\n$",
	} {
		f.Add([]byte(s), uint64(0x0102030405060708))
	}
	f.Fuzz(func(t *testing.T, in []byte, cuts uint64) {
		want, werr := referenceAll(in, testLogin)
		// Split in where the bits of cuts say: piece sizes 1 to 16.
		sc := &scanner{login: testLogin}
		var got []byte
		var gerr error
		rest := in
		for c := cuts; len(rest) > 0 && gerr == nil; c = c>>4 | c<<60 {
			k := min(int(c&15)+1, len(rest))
			if len(rest) > 256 && c&1 == 0 {
				k = len(rest) // and sometimes the rest at once
			}
			got, gerr = sc.Feed(got, rest[:k])
			rest = rest[k:]
		}
		if gerr == nil {
			gerr = sc.End()
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("upstream got %q, the reference sends %q", got, want)
		}
		var gp, wp *ProtocolError
		switch {
		case errors.As(werr, &wp):
			if !errors.As(gerr, &gp) || gp.Reason != wp.Reason {
				t.Fatalf("stopped with %v, the reference with %v", gerr, werr)
			}
		case gerr != werr && !(errors.Is(gerr, io.ErrUnexpectedEOF) && errors.Is(werr, io.ErrUnexpectedEOF)):
			t.Fatalf("stopped with %v, the reference with %v", gerr, werr)
		}
	})
}
