package unix

import (
	"bytes"
	"errors"
)

var errStatFormat = errors.New("unix: malformed /proc/PID/stat")

// statStartTimeField is the 1-based field number of starttime in
// /proc/PID/stat (proc(5)): clock ticks since boot at which the process
// started.
const statStartTimeField = 22

// parseStartTime returns the starttime field of a /proc/PID/stat line.
//
// The second field, comm, is the executable name in parentheses and may itself
// contain spaces and parentheses, so fields are counted from the last ')':
// comm is at most 16 bytes and nothing after it contains ')'.
func parseStartTime(b []byte) (uint64, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 || bytes.IndexByte(b, '(') < 0 || bytes.IndexByte(b, '(') > end {
		return 0, errStatFormat
	}
	rest := b[end+1:]
	field := 2 // comm
	for len(rest) > 0 {
		if rest[0] != ' ' {
			return 0, errStatFormat
		}
		rest = rest[1:]
		i := bytes.IndexAny(rest, " \n")
		if i < 0 {
			i = len(rest)
		}
		tok := rest[:i]
		if len(tok) == 0 {
			return 0, errStatFormat
		}
		rest = rest[i:]
		field++
		if field == statStartTimeField {
			return parseUint(tok)
		}
		if len(rest) > 0 && rest[0] == '\n' {
			break
		}
	}
	return 0, errStatFormat
}

// parseUint parses a non-empty decimal uint64 without allocating.
func parseUint(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 20 {
		return 0, errStatFormat
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errStatFormat
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, errStatFormat
		}
		v = v*10 + d
	}
	return v, nil
}
