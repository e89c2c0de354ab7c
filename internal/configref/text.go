package main

import (
	"go/constant"
	"go/types"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// words is what a doc comment's identifiers are rewritten with.
type words struct {
	pkg   *types.Package    // whose constants and imports the comment may name
	names map[string]string // a Go field name -> its key
	extra map[string]string // other identifiers -> Markdown, always replaced
	own   string            // the Go field described: its name is replaced where it begins the text
	lead  string            // a type name, replaced by leadTo where it begins the text
	to    string
}

// words returns the rewriting context of owner's comments, whose fields
// are keys.
func (p *program) words(owner *types.Named, keys map[string]string, own string) words {
	w := words{pkg: owner.Obj().Pkg(), names: keys, own: own, lead: owner.Obj().Name()}
	if w.pkg.Path() == mainPackage {
		w.extra = p.tables
	}
	return w
}

// prose turns a field's doc comment into one line of Markdown for a table
// cell.
func (p *program) prose(doc string, w words) string {
	var parts []string
	for _, line := range strings.Split(strings.TrimSpace(doc), "\n") {
		switch {
		case strings.TrimSpace(line) == "":
		case line[0] == '\t' || line[0] == ' ':
			parts = append(parts, "`"+strings.TrimSpace(line)+"`")
		default:
			parts = append(parts, w.rewrite(line))
		}
	}
	s := strings.Join(parts, " ")
	s = w.leading(s)
	return strings.ReplaceAll(s, "|", `\|`)
}

// markdown turns a type's doc comment into Markdown paragraphs, with its
// indented lines (examples) as code blocks.
func (p *program) markdown(doc string, w words) string {
	var out []string
	var para, code []string
	flush := func() {
		if len(para) > 0 {
			out = append(out, strings.Join(para, " "))
			para = nil
		}
		if len(code) > 0 {
			out = append(out, "```\n"+strings.Join(dedent(code), "\n")+"\n```")
			code = nil
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(doc), "\n") {
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == '\t' || line[0] == ' ':
			if len(para) > 0 {
				flush()
			}
			code = append(code, line)
		default:
			if len(code) > 0 {
				flush()
			}
			para = append(para, w.rewrite(line))
		}
	}
	flush()
	if len(out) > 0 {
		out[0] = w.leading(out[0])
	}
	return strings.Join(out, "\n\n")
}

// dedent removes the indentation the lines share.
func dedent(lines []string) []string {
	prefix := ""
	for i, l := range lines {
		ws := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if i == 0 || strings.HasPrefix(prefix, ws) {
			prefix = ws
		}
		for !strings.HasPrefix(ws, prefix) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.TrimPrefix(l, prefix)
	}
	return out
}

// identifier matches a Go identifier, qualified or not (broker.DefaultDrainTimeout).
var identifier = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*`)

// rewrite replaces, outside code spans, the Go field names of the owner
// whose key is not just the name lowercased (TokenFile, CAFile, JWKSURL —
// not Path, GitHub or TLS, which prose uses as words) by their keys, and
// constants by their values.
func (w words) rewrite(line string) string {
	spans := strings.Split(line, "`")
	for i := 0; i < len(spans); i += 2 {
		s := spans[i]
		var b strings.Builder
		last := 0
		for _, m := range identifier.FindAllStringIndex(s, -1) {
			start, end := m[0], m[1]
			if start > 0 && (s[start-1] == '/' || s[start-1] == '-' || s[start-1] == '.' || s[start-1] == ':') {
				continue // part of a path, a URL or a flag
			}
			if end < len(s) && (s[end] == '/' || s[end] == '-' || s[end] == '(') {
				continue
			}
			if r, ok := w.replace(s[start:end]); ok {
				b.WriteString(s[last:start])
				b.WriteString(r)
				last = end
			}
		}
		b.WriteString(s[last:])
		spans[i] = b.String()
	}
	return strings.Join(spans, "`")
}

// replace rewrites one identifier, if it is a field name that reads as an
// identifier, a constant, or one of w.extra.
func (w words) replace(id string) (string, bool) {
	if r, ok := w.extra[id]; ok {
		return r, true
	}
	if key, ok := w.names[id]; ok && strings.ToLower(id) != key {
		return "`" + key + "`", true
	}
	if w.pkg == nil {
		return "", false
	}
	scope, name := w.pkg.Scope(), id
	if q, n, ok := strings.Cut(id, "."); ok {
		if strings.Contains(n, ".") {
			return "", false
		}
		scope, name = nil, n
		for _, imp := range w.pkg.Imports() {
			if imp.Name() == q {
				scope = imp.Scope()
			}
		}
		if scope == nil {
			return "", false
		}
	}
	c, ok := scope.Lookup(name).(*types.Const)
	if !ok || !c.Exported() {
		return "", false
	}
	return "`" + constValue(c) + "`", true
}

// leading replaces the field's or the type's own name where it begins s
// ("TokenFile holds …", "AuditConfig configures …").
func (w words) leading(s string) string {
	if w.own != "" {
		if key, ok := w.names[w.own]; ok && startsWithWord(s, w.own) {
			return "`" + key + "`" + s[len(w.own):]
		}
	}
	if w.lead != "" && w.to != "" && startsWithWord(s, w.lead) {
		return w.to + s[len(w.lead):]
	}
	return s
}

func startsWithWord(s, word string) bool {
	if !strings.HasPrefix(s, word) {
		return false
	}
	rest := s[len(word):]
	return rest == "" || !(rest[0] == '_' || unicode.IsLetter(rune(rest[0])) || unicode.IsDigit(rune(rest[0])))
}

// constValue formats a constant as the configuration would write it.
func constValue(c *types.Const) string {
	v := c.Val()
	if n, ok := types.Unalias(c.Type()).(*types.Named); ok && isDuration(n) {
		if ns, ok := constant.Int64Val(v); ok {
			return formatDuration(time.Duration(ns))
		}
	}
	if v.Kind() == constant.String {
		return constant.StringVal(v)
	}
	return v.ExactString()
}

// formatDuration writes d as a person would: 1h, 10m, 90s, 500ms.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// defaultClause finds "…; default X." or "(default X)" or "Default: X";
// defaultsTo finds "… defaults to X".
var (
	defaultClause = regexp.MustCompile(`(?:^|[.;,(]\s*|\s—\s)[Dd]efault:?\s+(.+?)(?:;|\.\s|\.$|$)`)
	defaultsTo    = regexp.MustCompile(`\bdefaults to\s+(.+?)(?:;|\.\s|\.$|$)`)
	required      = regexp.MustCompile(`\bRequired\b`)
)

// plainDefault are defaults that a colon may follow with an explanation.
var plainDefault = map[string]bool{"none": true, "false": true, "true": true, "absent": true, "off": true, "empty": true}

// defaultOf extracts the default a description states: the value of its
// "default …" clause; "required" when it says Required; "" when it says
// neither.
func defaultOf(desc string) string {
	var d string
	if m := defaultClause.FindStringSubmatchIndex(desc); m != nil {
		d = desc[m[2]:m[3]]
		if m[0] < len(desc) && strings.HasPrefix(strings.TrimSpace(desc[m[0]:]), "(") {
			d, _, _ = strings.Cut(d, ")") // "(default X)"
		}
	} else if m := defaultsTo.FindStringSubmatch(desc); m != nil {
		d = m[1]
	} else if required.MatchString(desc) {
		return "required"
	}
	d = strings.TrimSpace(d)
	if word, _, ok := strings.Cut(d, ": "); ok && plainDefault[word] {
		d = word // "Default false: such callers are refused."
	}
	if d != "" && !strings.ContainsAny(d, " `") && d != "none" && d != "absent" {
		d = "`" + d + "`"
	}
	return d
}

// firstSentence returns a comment's first sentence.
func firstSentence(doc string) string {
	doc = strings.Join(strings.Fields(doc), " ")
	if i := strings.Index(doc, ". "); i >= 0 {
		return doc[:i+1]
	}
	return doc
}
