package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

var frameTests = []struct {
	name   string
	in     string
	err    error
	blocks int // header blocks framed
}{
	{"get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", nil, 1},
	{"http/1.0", "GET / HTTP/1.0\r\n\r\n", nil, 1},
	{"pipelined with bodies", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", nil, 3},
	{"body holding a header block", "POST / HTTP/1.1\r\nContent-Length: 38\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n", nil, 2},
	{"chunked uppercase", "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", nil, 1},
	{"long request line", "GET /" + strings.Repeat("a", 3000) + " HTTP/1.1\r\nHost: a\r\n\r\n", nil, 1},
	{"long header", "GET / HTTP/1.1\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n", nil, 1},
	{"CL and TE", "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", errLengthAndTE, 1},
	{"TE and CL", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", errLengthAndTE, 1},
	{"same CL twice", "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc", errDupLength, 1},
	{"CL list", "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc", errBadLength, 0},
	{"CL sign", "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", errBadLength, 0},
	{"CL huge", "POST / HTTP/1.1\r\nContent-Length: 9999999999999999999\r\n\r\n", errBadLength, 0},
	{"TE twice", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", errDupTE, 1},
	{"TE gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", errBadTE, 0},
	{"TE on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", errLengthAndTE, 1},
	{"TE only on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", errTE10, 1},
	{"obs-fold", "GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", errObsFold, 0},
	{"obs-fold tab", "GET / HTTP/1.1\r\nX-A: b\r\n\tc\r\n\r\n", errObsFold, 0},
	{"obs-fold in trailer", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n 2\r\n\r\n", errObsFold, 1},
	{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", errBareLF, 0},
	{"bare CR", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", errBareLF, 0},
	{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", errHeaderLine, 0},
	{"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", errHeaderLine, 0},
	{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", errRequestLine, 0},
	{"http/0.9", "GET /\r\n\r\n", errRequestLine, 0},
	{"leading empty line", "\r\nGET / HTTP/1.1\r\n\r\n", errRequestLine, 0},
	{"chunk size not hex", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", errChunk, 1},
	{"chunk size with space", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", errChunk, 1},
	{"chunk size too long", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", errChunk, 1},
	{"chunk without CRLF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", errChunk, 1},
	{"chunk line bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", errBareLF, 1},
	{"header block too long", "GET / HTTP/1.1\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 80) + "\r\n", errTooLong, 0},
}

// feed runs a framer over in, split into writes of size n (0: one write).
func feed(in []byte, n int) *framer {
	f := newFramer()
	if n <= 0 {
		f.write(in)
		return f
	}
	for len(in) > 0 {
		k := min(n, len(in))
		f.write(in[:k])
		in = in[k:]
	}
	return f
}

func TestFramer(t *testing.T) {
	for _, tc := range frameTests {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{0, 1, 2, 7, 4096} {
				f := feed([]byte(tc.in), n)
				if !errors.Is(f.err, tc.err) || f.blocks != tc.blocks {
					t.Errorf("writes of %d: error %v, %d blocks; want %v, %d", n, f.err, f.blocks, tc.err, tc.blocks)
				}
			}
		})
	}
}

// FuzzFramer checks that the framer never panics, that how the stream is
// split into reads changes nothing, and that when it accepts a stream
// ending at a request boundary, Go's own request parser frames the same
// requests: never more, never fewer when Go parses them all.
func FuzzFramer(f *testing.F) {
	for _, tc := range frameTests {
		f.Add([]byte(tc.in), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		whole := feed(in, 0)
		parts := feed(in, int(split)+1)
		if whole.err != parts.err || whole.blocks != parts.blocks || whole.state != parts.state {
			t.Fatalf("split changes the verdict: %v/%d/%d vs %v/%d/%d", whole.err, whole.blocks, whole.state, parts.err, parts.blocks, parts.state)
		}
		if whole.err != nil || whole.state != stHeader || !whole.first || whole.lineN != 0 || whole.sawCR {
			return
		}
		br := bufio.NewReader(bytes.NewReader(in))
		parsed := 0
		for {
			req, err := http.ReadRequest(br)
			if err == io.EOF {
				if parsed != whole.blocks {
					t.Fatalf("Go parsed %d requests, the framer %d", parsed, whole.blocks)
				}
				return
			}
			if err != nil {
				break
			}
			_, err = io.Copy(io.Discard, req.Body)
			if err != nil {
				break
			}
			parsed++
			if parsed > whole.blocks {
				t.Fatalf("Go parsed more requests (%d) than the framer (%d)", parsed, whole.blocks)
			}
		}
	})
}
