package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// workloadMatch is audit.Filter.Workload — an SQLite GLOB, case-sensitive
// — translated for PostgreSQL: an exact subject, or a prefix range that an
// index on subject serves and a regular expression that decides.
type workloadMatch struct {
	exact  string // the glob has no wildcard: subject = exact
	prefix string // the literal text before the first wildcard, "" for none
	end    string // least string above every one starting with prefix, when hasEnd
	hasEnd bool
	regex  string // matches exactly the subjects the glob matches
	never  bool   // the glob matches nothing (an unterminated [ class)
}

// errBadGlob reports a glob with wildcards that PostgreSQL text cannot
// carry.
var errBadGlob = errors.New("audit/fleet: a workload glob with wildcards must be valid UTF-8 without NUL characters")

// translateGlob translates an SQLite GLOB pattern. The regular expression
// keeps to what PostgreSQL's regular expressions and Go's RE2 syntax (the
// one CockroachDB uses) read alike: (?s) so that . also matches a newline,
// ^ and $ around, .* and ., bracket classes, and every ASCII character other
// than a letter or digit escaped with a backslash; other characters stand
// for themselves.
func translateGlob(glob string) (workloadMatch, error) {
	i := strings.IndexAny(glob, "*?[")
	if i < 0 {
		return workloadMatch{exact: glob}, nil // any bytes: compared as stored (see escape)
	}
	if !utf8.ValidString(glob) || strings.ContainsRune(glob, 0) {
		return workloadMatch{}, errBadGlob
	}
	m := workloadMatch{prefix: glob[:i]}
	m.end, m.hasEnd = prefixEnd(m.prefix)
	re, ok := globRegex(glob)
	if !ok {
		return workloadMatch{never: true}, nil
	}
	m.regex = re
	return m, nil
}

// globRegex translates glob (valid UTF-8, no NUL) into an anchored regular
// expression matching the same strings as SQLite's GLOB (func.c,
// patternCompare): * any run of characters, ? one character, [...] one
// character of a class — [^...] inverted, a ] first in the class is a
// member, a-z a range of code points unless - is first or last, a range
// whose end is below its start adds nothing — and any other character
// itself. ok is false when a class is not closed, which makes SQLite match
// nothing.
func globRegex(glob string) (re string, ok bool) {
	var b strings.Builder
	b.WriteString("(?s)^")
	rs := []rune(glob)
	for i := 0; i < len(rs); i++ {
		switch c := rs[i]; c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			set, invert, next, closed := parseClass(rs, i+1)
			if !closed {
				return "", false
			}
			writeClass(&b, set, invert)
			i = next
		default:
			writeLiteral(&b, c)
		}
	}
	b.WriteString("$")
	return b.String(), true
}

// runeRange is the code points lo to hi, inclusive.
type runeRange struct{ lo, hi rune }

// parseClass reads a class starting after its [ at rs[i], as SQLite does,
// and returns its members, whether it is inverted, the index of its closing
// ], and whether it has one.
func parseClass(rs []rune, i int) (set []runeRange, invert bool, end int, closed bool) {
	if i < len(rs) && rs[i] == '^' {
		invert = true
		i++
	}
	if i < len(rs) && rs[i] == ']' {
		set = append(set, runeRange{']', ']'})
		i++
	}
	var prior rune // the last single member, 0 after a range or at the start
	for i < len(rs) {
		c := rs[i]
		if c == ']' {
			return set, invert, i, true
		}
		if c == '-' && prior > 0 && i+1 < len(rs) && rs[i+1] != ']' {
			hi := rs[i+1]
			if prior <= hi {
				set = append(set, runeRange{prior, hi})
			}
			prior = 0
			i += 2
			continue
		}
		set = append(set, runeRange{c, c})
		prior = c
		i++
	}
	return nil, false, 0, false
}

// writeClass writes a bracket class of set.
func writeClass(b *strings.Builder, set []runeRange, invert bool) {
	b.WriteByte('[')
	if invert {
		b.WriteByte('^')
	}
	for _, r := range normalize(set) {
		writeClassRune(b, r.lo)
		if r.hi != r.lo {
			b.WriteByte('-')
			writeClassRune(b, r.hi)
		}
	}
	b.WriteByte(']')
}

// normalize sorts set and merges overlapping and adjacent ranges.
func normalize(set []runeRange) []runeRange {
	slices.SortFunc(set, func(a, b runeRange) int { return int(a.lo) - int(b.lo) })
	var out []runeRange
	for _, r := range set {
		if n := len(out); n > 0 && r.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// writeLiteral writes a regular expression matching c itself.
func writeLiteral(b *strings.Builder, c rune) {
	writeClassRune(b, c)
}

// writeClassRune writes c so that it stands for itself, inside a class or
// out: ASCII characters other than letters and digits behind a backslash,
// everything else as it is.
func writeClassRune(b *strings.Builder, c rune) {
	if c < utf8.RuneSelf && c > ' ' && c != 0x7f && !isAlnum(byte(c)) {
		b.WriteByte('\\')
	}
	b.WriteRune(c)
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// prefixEnd returns the least valid UTF-8 string above every string that
// starts with prefix, in byte order (code point order): prefix with its
// last character replaced by the next code point, or false when there is
// none (an empty prefix, or one of U+10FFFF only).
func prefixEnd(prefix string) (string, bool) {
	rs := []rune(prefix)
	for i := len(rs) - 1; i >= 0; i-- {
		next := rs[i] + 1
		if next == 0xD800 { // surrogates are not characters
			next = 0xE000
		}
		if next <= utf8.MaxRune {
			rs[i] = next
			return string(rs[:i+1]), true
		}
	}
	return "", false
}

// String describes the match, for error messages and tests.
func (m workloadMatch) String() string {
	switch {
	case m.never:
		return "nothing"
	case m.regex == "":
		return fmt.Sprintf("subject = %q", m.exact)
	}
	return fmt.Sprintf("subject ~ %q", m.regex)
}
