package report

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable reports whether s can be shown as it is: valid UTF-8 of
// graphic characters only (letters, marks, numbers, punctuation, symbols
// and spaces), so no control character, bidirectional override, zero-width
// character or invalid byte can make it look like something else.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) }) < 0
}

// quoted returns s as a Go string literal of graphic characters, its
// non-printing characters and invalid bytes escaped (\u202e, \x00, \xff).
// The report shows it marked as quoted, so that it cannot pass for a value
// that printed as it is.
func quoted(s string) string {
	return strconv.QuoteToGraphic(s)
}
