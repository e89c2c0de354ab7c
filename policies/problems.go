package policies

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a policy document, positioned at the file
// and line where it was found. Line is 0 when no line is known.
type Problem struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

// Error formats the problem as "file:line: message", the form editors and
// `credbroker check` understand; without a line it is "file: message".
func (p Problem) Error() string {
	if p.Line > 0 {
		return p.File + ":" + strconv.Itoa(p.Line) + ": " + p.Message
	}
	return p.File + ": " + p.Message
}

// Problems is every problem Compile found, in file order and then line order.
// Compile returns it as its error so that a caller sees all mistakes at once;
// use errors.As to get at the individual problems.
type Problems []Problem

// Error joins the problems, one per line.
func (ps Problems) Error() string {
	switch len(ps) {
	case 0:
		return "policies: no problems"
	case 1:
		return ps[0].Error()
	}
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap exposes each Problem to errors.Is and errors.As.
func (ps Problems) Unwrap() []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errs
}

// problemList collects problems for one Compile call.
type problemList struct {
	file  string
	order map[string]int // file name → position in the input, for sorting
	list  Problems
}

func (pl *problemList) addf(line int, format string, args ...any) {
	pl.list = append(pl.list, Problem{File: pl.file, Line: line, Message: fmt.Sprintf(format, args...)})
}

// sorted returns the problems in file order, then line order; problems on
// the same line keep the order they were found in.
func (pl *problemList) sorted() Problems {
	slices.SortStableFunc(pl.list, func(a, b Problem) int {
		if c := cmp.Compare(pl.order[a.File], pl.order[b.File]); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return pl.list
}
