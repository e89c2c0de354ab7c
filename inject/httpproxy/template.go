package httpproxy

import (
	"encoding/base64"
	"errors"
	"fmt"
	"text/template"
	"text/template/parse"
)

// Template functions of header values.
const (
	funcBase64 = "base64" // {{base64 ARG}}
	funcBasic  = "basic"  // {{basic USER PASS}}
)

// errBadValue is the refusal of a rendered value a header cannot carry.
// It names no value.
var errBadValue = errors.New("the credential's value holds characters a header cannot carry (control characters such as CR or LF)")

// arg is one argument of a template function, or a whole action: a data
// field, or a literal.
type arg struct {
	field   string // the data field, if not a literal
	literal string
}

// segment is one piece of a header value: literal text, a field, or a
// function of arguments.
type segment struct {
	fn   string // "", funcBase64 or funcBasic
	args []arg  // one for "" and funcBase64, two for funcBasic
}

// headerTemplate is a compiled header value: rendered by concatenating
// its segments, without reflection.
type headerTemplate struct {
	segs   []segment
	fields []string // data fields used, in order of first use
}

// compileTemplate parses a header value template and compiles it. Only the
// restricted form HeaderConfig describes is accepted, so that the fields
// it uses are known exactly.
func compileTemplate(text string) (*headerTemplate, error) {
	// The functions are never called: the parser only needs their names.
	funcs := template.FuncMap{funcBase64: func(string) string { return "" }, funcBasic: func(string, string) string { return "" }}
	tmpl, err := template.New("header").Funcs(funcs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if tmpl.Tree == nil || tmpl.Tree.Root == nil {
		return &headerTemplate{}, nil
	}
	if len(tmpl.Templates()) > 1 {
		return nil, errors.New("template: {{define}} and {{block}} are not supported")
	}
	t := &headerTemplate{}
	for _, n := range tmpl.Tree.Root.Nodes {
		if err := t.add(n); err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
	}
	return t, nil
}

// add compiles one top-level node.
func (t *headerTemplate) add(n parse.Node) error {
	switch n := n.(type) {
	case *parse.TextNode:
		s := string(n.Text)
		if !validValue(s) {
			return fmt.Errorf("literal text %q holds control characters", s)
		}
		t.segs = append(t.segs, segment{args: []arg{{literal: s}}})
		return nil
	case *parse.CommentNode:
		return nil
	case *parse.ActionNode:
		return t.addAction(n)
	default:
		return fmt.Errorf("%q is not supported: use literal text, {{.field}}, {{base64 ARG}} or {{basic USER PASS}}", n.String())
	}
}

// addAction compiles {{.field}}, {{base64 ARG}} or {{basic USER PASS}}.
func (t *headerTemplate) addAction(n *parse.ActionNode) error {
	unsupported := fmt.Errorf("%s is not supported: use {{.field}}, {{base64 ARG}} or {{basic USER PASS}}", n.String())
	p := n.Pipe
	if p == nil || len(p.Decl) > 0 || p.IsAssign || len(p.Cmds) != 1 {
		return unsupported
	}
	cmd := p.Cmds[0].Args
	if len(cmd) == 1 {
		a, ok := t.arg(cmd[0])
		if !ok || a.field == "" {
			return unsupported
		}
		t.segs = append(t.segs, segment{args: []arg{a}})
		return nil
	}
	id, ok := cmd[0].(*parse.IdentifierNode)
	if !ok {
		return unsupported
	}
	want := map[string]int{funcBase64: 1, funcBasic: 2}[id.Ident]
	if want == 0 {
		return unsupported
	}
	if len(cmd)-1 != want {
		return fmt.Errorf("%s: %s takes %d argument(s)", n.String(), id.Ident, want)
	}
	seg := segment{fn: id.Ident}
	for _, c := range cmd[1:] {
		a, ok := t.arg(c)
		if !ok {
			return unsupported
		}
		seg.args = append(seg.args, a)
	}
	t.segs = append(t.segs, seg)
	return nil
}

// arg compiles a field reference (.name, one level) or a quoted string,
// noting the field as used.
func (t *headerTemplate) arg(n parse.Node) (arg, bool) {
	switch n := n.(type) {
	case *parse.FieldNode:
		if len(n.Ident) != 1 {
			return arg{}, false
		}
		f := n.Ident[0]
		seen := false
		for _, g := range t.fields {
			seen = seen || g == f
		}
		if !seen {
			t.fields = append(t.fields, f)
		}
		return arg{field: f}, true
	case *parse.StringNode:
		return arg{literal: n.Text}, true
	}
	return arg{}, false
}

// render builds the header value from a credential's data fields. A field
// missing from data, or a result a header cannot carry, is an error that
// names the field at most, never a value.
func (t *headerTemplate) render(data func(field string) ([]byte, bool)) (string, error) {
	var b []byte
	val := func(a arg) ([]byte, error) {
		if a.field == "" {
			return []byte(a.literal), nil
		}
		v, ok := data(a.field)
		if !ok {
			return nil, fmt.Errorf("the credential has no field %q", a.field)
		}
		return v, nil
	}
	for _, s := range t.segs {
		var vals [2][]byte
		for i, a := range s.args {
			v, err := val(a)
			if err != nil {
				return "", err
			}
			vals[i] = v
		}
		switch s.fn {
		case "":
			b = append(b, vals[0]...)
		case funcBase64:
			b = base64.StdEncoding.AppendEncode(b, vals[0])
		case funcBasic:
			pair := make([]byte, 0, len(vals[0])+1+len(vals[1]))
			pair = append(append(append(pair, vals[0]...), ':'), vals[1]...)
			b = base64.StdEncoding.AppendEncode(b, pair)
			clear(pair)
		}
	}
	if !validValue(string(b)) {
		clear(b)
		return "", errBadValue
	}
	return string(b), nil
}

// validValue reports whether s can be a header field value as sent: no
// control characters but horizontal tab, no DEL.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
