package main

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// section is one mapping of the configuration: its YAML path, what its
// type's doc comment says, and one row per key.
type section struct {
	path string // "audit.checkpoint"; "" for the top level
	doc  string // Markdown
	rows []row
}

// row is one key.
type row struct {
	path string // the key's whole YAML path
	typ  string // Markdown
	def  string // Markdown; "" when the comment names no default
	desc string // Markdown, one line
}

// walk describes Config and everything it reaches, parent sections before
// their children.
func (p *program) walk() ([]*section, error) {
	obj := p.pkg.Scope().Lookup("Config")
	if obj == nil {
		return nil, fmt.Errorf("%s declares no Config type", mainPackage)
	}
	n, ok := obj.Type().(*types.Named)
	if !ok {
		return nil, fmt.Errorf("%s.Config is not a named type", mainPackage)
	}
	if err := p.findTables(); err != nil {
		return nil, err
	}
	var out []*section
	if _, err := p.structSection(n, "", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// structSection appends the section of a struct type at path, then the
// sections of the mappings below it.
func (p *program) structSection(n *types.Named, path string, out *[]*section) (*section, error) {
	st, ok := n.Underlying().(*types.Struct)
	if !ok {
		return nil, fmt.Errorf("%s: %s is not a struct", keyName(path), n)
	}
	d, err := p.decl(n)
	if err != nil {
		return nil, err
	}
	order, docs := fieldDocs(d)
	keys := yamlKeys(st)
	sec := &section{path: path}
	*out = append(*out, sec)
	w := p.words(n, keys, "")
	w.to = sectionName(path)
	sec.doc = p.markdown(d.doc, w)
	for i := range st.NumFields() {
		f := st.Field(i)
		key, visible := keys[f.Name()]
		if !visible {
			continue
		}
		if strings.Contains(reflect.StructTag(st.Tag(i)).Get("yaml"), ",inline") {
			return nil, fmt.Errorf("%s.%s: inline yaml fields are not described yet: teach internal/configref", n.Obj().Name(), f.Name())
		}
		doc := docs[f.Name()]
		if doc == "" {
			doc = borrowedDoc(f.Name(), order, docs)
		}
		w.own = f.Name()
		r, err := p.keyRow(f.Type(), join(path, key), doc, n, w, out)
		if err != nil {
			return nil, err
		}
		sec.rows = append(sec.rows, r)
	}
	return sec, nil
}

// keyRow describes one key whose value has type t, documented by doc (a
// field comment of owner's, whose fields are keys).
func (p *program) keyRow(t types.Type, path, doc string, owner *types.Named, w words, out *[]*section) (row, error) {
	typ, err := p.describe(t, path, out)
	if err != nil {
		return row{}, err
	}
	if doc == "" {
		// The type's comment stands in, its name replaced by the key:
		// "UnixConfig tunes …" becomes "`unix` tunes …".
		var name string
		doc, name = p.typeDoc(t)
		w.lead, w.to = name, "`"+path[strings.LastIndex(path, ".")+1:]+"`"
	}
	if doc == "" {
		return row{}, fmt.Errorf("%s: the field %s.%s has no doc comment, nor has its type: document it", keyName(path), owner.Obj().Name(), w.own)
	}
	desc := p.prose(doc, w)
	return row{path: path, typ: typ, def: defaultOf(desc), desc: desc}, nil
}

// describe names the YAML type of t at path, appending the sections of the
// mappings it holds.
func (p *program) describe(t types.Type, path string, out *[]*section) (string, error) {
	switch t := types.Unalias(t).(type) {
	case *types.Pointer:
		return p.describe(t.Elem(), path, out)
	case *types.Basic:
		return basicName(t, path)
	case *types.Slice:
		elem, err := p.describe(t.Elem(), path+"[]", out)
		if err != nil {
			return "", err
		}
		return "list of " + plural(elem), nil
	case *types.Map:
		if k, ok := t.Key().Underlying().(*types.Basic); !ok || k.Kind() != types.String {
			return "", fmt.Errorf("%s: a map whose keys are not strings", keyName(path))
		}
		elem, err := p.describe(t.Elem(), path+".NAME", out)
		if err != nil {
			return "", err
		}
		return "map of names to " + plural(elem), nil
	case *types.Named:
		return p.describeNamed(t, path, out)
	}
	return "", fmt.Errorf("%s: type %s cannot be written in YAML: teach internal/configref", keyName(path), t)
}

func (p *program) describeNamed(n *types.Named, path string, out *[]*section) (string, error) {
	if isDuration(n) {
		return "duration", nil
	}
	if decodesItself(n) {
		if d, err := p.decl(n); err == nil && isDurationDecl(d) {
			return "duration", nil
		}
		if n.Obj().Pkg().Path() == mainPackage {
			if _, ok := n.Underlying().(*types.Struct); ok {
				if err := p.selfDecodingSection(n, path, out); err != nil {
					return "", err
				}
				return link("mapping", path), nil
			}
		}
		return "", fmt.Errorf("%s: %s decodes itself (UnmarshalYAML or UnmarshalText) and is neither a duration nor one of cmd/credbroker's one-key sections: teach internal/configref what it looks like in YAML", keyName(path), n)
	}
	switch u := n.Underlying().(type) {
	case *types.Struct:
		if p.visited[path] {
			return link("mapping", path), nil
		}
		p.visited[path] = true
		if _, err := p.structSection(n, path, out); err != nil {
			return "", err
		}
		return link("mapping", path), nil
	case *types.Basic:
		return basicName(u, path)
	}
	return p.describe(n.Underlying(), path, out)
}

// selfDecodingSection describes a struct of cmd/credbroker that decodes
// itself, as CredentialConfig and ListenerConfig do: the keys its
// UnmarshalYAML names in `case "key":` clauses, each decoded into a field
// (v.Decode(&c.Field)), and one key of the table (a package-level map
// such as providerKinds) it looks keys up in, each table entry giving the
// Config type of its section.
func (p *program) selfDecodingSection(n *types.Named, path string, out *[]*section) error {
	m := p.method(n, "UnmarshalYAML")
	if m == nil {
		return fmt.Errorf("%s: %s has no UnmarshalYAML in its package", keyName(path), n)
	}
	d, err := p.decl(n)
	if err != nil {
		return err
	}
	st := n.Underlying().(*types.Struct)
	order, docs := fieldDocs(d)
	fieldKeys := map[string]string{} // Go field -> key
	var cases []string               // keys in the order of the switch
	var table *types.Var
	inspectMethod(m, func(x ast.Node) {
		switch x := x.(type) {
		case *ast.CaseClause:
			for _, e := range x.List {
				lit, ok := e.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				key, _ := strconv.Unquote(lit.Value)
				if f := decodedField(x.Body); f != "" {
					fieldKeys[f] = key
					cases = append(cases, key)
				}
			}
		case *ast.IndexExpr:
			if v := p.packageVar(x); v != nil && table == nil {
				table = v
			}
		}
	})
	if table == nil {
		return fmt.Errorf("%s: %s.UnmarshalYAML looks up no package-level table of sections: teach internal/configref", keyName(path), n.Obj().Name())
	}
	keys := map[string]string{}
	for f, k := range fieldKeys {
		keys[f] = k
	}
	entries, err := p.tableEntries(table)
	if err != nil {
		return fmt.Errorf("%s: %w", keyName(path), err)
	}
	w := p.words(n, keys, "")
	w.to = sectionName(path)
	sec := &section{path: path}
	*out = append(*out, sec)
	sec.doc = p.markdown(d.doc, w)
	for _, key := range cases {
		var field *types.Var
		for i := range st.NumFields() {
			if fieldKeys[st.Field(i).Name()] == key {
				field = st.Field(i)
			}
		}
		doc := docs[field.Name()]
		if doc == "" {
			doc = borrowedDoc(field.Name(), order, docs)
		}
		w.own = field.Name()
		r, err := p.keyRow(field.Type(), join(path, key), doc, n, w, out)
		if err != nil {
			return err
		}
		sec.rows = append(sec.rows, r)
	}
	for _, e := range entries {
		key := join(path, e.key)
		p.visited[key] = true
		var sub []*section
		if _, err := p.structSection(e.config, key, &sub); err != nil {
			return err
		}
		d, err := p.decl(e.config)
		if err != nil {
			return err
		}
		ew := p.words(e.config, yamlKeys(e.config.Underlying().(*types.Struct)), "")
		ew.to = "`" + e.key + "`"
		desc := p.prose(firstSentence(d.doc), ew)
		sec.rows = append(sec.rows, row{path: key, typ: link("mapping", key), desc: desc})
		*out = append(*out, sub...)
	}
	return nil
}

// findTables finds, for every struct of cmd/credbroker that decodes itself,
// the table of sections its UnmarshalYAML looks keys up in, so that
// comments naming a table (listenerKinds) show its keys instead.
func (p *program) findTables() error {
	p.tables = map[string]string{}
	s, err := p.syntax(mainPackage)
	if err != nil {
		return err
	}
	for _, ms := range s.methods {
		for _, m := range ms {
			if m.Name.Name != "UnmarshalYAML" {
				continue
			}
			inspectMethod(m, func(x ast.Node) {
				ix, ok := x.(*ast.IndexExpr)
				if !ok {
					return
				}
				if v := p.packageVar(ix); v != nil {
					if _, done := p.tables[v.Name()]; !done {
						entries, err := p.tableEntries(v)
						if err == nil {
							p.tables[v.Name()] = alternatives(entries)
						}
					}
				}
			})
		}
	}
	return nil
}

func inspectMethod(m *ast.FuncDecl, f func(ast.Node)) {
	ast.Inspect(m.Body, func(x ast.Node) bool {
		f(x)
		return true
	})
}

// packageVar returns the package-level variable of cmd/credbroker that an
// index expression indexes, or nil.
func (p *program) packageVar(ix *ast.IndexExpr) *types.Var {
	id, ok := ix.X.(*ast.Ident)
	if !ok {
		return nil
	}
	v, ok := p.info.Uses[id].(*types.Var)
	if !ok || v.Parent() != p.pkg.Scope() {
		return nil
	}
	if _, ok := v.Type().Underlying().(*types.Map); !ok {
		return nil
	}
	return v
}

// decodedField returns the field a case clause decodes into, from a call
// v.Decode(&c.Field) in it.
func decodedField(body []ast.Stmt) string {
	var field string
	for _, s := range body {
		ast.Inspect(s, func(x ast.Node) bool {
			call, ok := x.(*ast.CallExpr)
			if !ok || field != "" {
				return field == ""
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Decode" || len(call.Args) != 1 {
				return true
			}
			if u, ok := call.Args[0].(*ast.UnaryExpr); ok && u.Op == token.AND {
				if fs, ok := u.X.(*ast.SelectorExpr); ok {
					field = fs.Sel.Name
				}
			}
			return true
		})
	}
	return field
}

// entry is one key of a table of sections.
type entry struct {
	key    string
	config *types.Named
}

// tableEntries reads the composite literal of a package-level map from a
// key to a kind of section: each value is a generic call whose first type
// argument is the section's Config type (listenerKindOf(…), kindOf(…)),
// or a literal whose new(T) names it.
func (p *program) tableEntries(table *types.Var) ([]entry, error) {
	var lit *ast.CompositeLit
	for _, f := range p.files {
		ast.Inspect(f, func(x ast.Node) bool {
			vs, ok := x.(*ast.ValueSpec)
			if !ok {
				return lit == nil
			}
			for i, name := range vs.Names {
				if p.info.Defs[name] == table && i < len(vs.Values) {
					lit, _ = vs.Values[i].(*ast.CompositeLit)
				}
			}
			return false
		})
	}
	if lit == nil {
		return nil, fmt.Errorf("the table %s is not a map literal", table.Name())
	}
	var out []entry
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			return nil, fmt.Errorf("the table %s has an entry without a key", table.Name())
		}
		kl, ok := kv.Key.(*ast.BasicLit)
		if !ok || kl.Kind != token.STRING {
			return nil, fmt.Errorf("the table %s has a key that is not a string literal", table.Name())
		}
		key, _ := strconv.Unquote(kl.Value)
		t := p.entryType(kv.Value)
		if t == nil {
			return nil, fmt.Errorf("the table %s: cannot tell the Config type of %q (a generic call whose first type argument is it, or new(T) in the entry): teach internal/configref", table.Name(), key)
		}
		out = append(out, entry{key: key, config: t})
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	return out, nil
}

// entryType finds the Config type of one table entry.
func (p *program) entryType(e ast.Expr) *types.Named {
	if call, ok := e.(*ast.CallExpr); ok {
		fun := call.Fun
		if ix, ok := fun.(*ast.IndexExpr); ok {
			fun = ix.X
		}
		if id, ok := fun.(*ast.Ident); ok {
			if inst, ok := p.info.Instances[id]; ok && inst.TypeArgs.Len() > 0 {
				return namedOf(inst.TypeArgs.At(0))
			}
		}
	}
	var found *types.Named
	ast.Inspect(e, func(x ast.Node) bool {
		call, ok := x.(*ast.CallExpr)
		if !ok || found != nil {
			return found == nil
		}
		if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "new" && len(call.Args) == 1 {
			if _, builtin := p.info.Uses[id].(*types.Builtin); builtin {
				found = namedOf(p.info.TypeOf(call.Args[0]))
			}
		}
		return true
	})
	return found
}

func namedOf(t types.Type) *types.Named {
	t = types.Unalias(t)
	if ptr, ok := t.(*types.Pointer); ok {
		t = types.Unalias(ptr.Elem())
	}
	n, _ := t.(*types.Named)
	return n
}

// typeDoc is the doc comment of the named type t holds (through pointers,
// slices and maps), for a field that has none of its own.
func (p *program) typeDoc(t types.Type) (doc, name string) {
	for {
		switch u := types.Unalias(t).(type) {
		case *types.Pointer:
			t = u.Elem()
			continue
		case *types.Slice:
			t = u.Elem()
			continue
		case *types.Map:
			t = u.Elem()
			continue
		case *types.Named:
			d, err := p.decl(u)
			if err != nil {
				return "", ""
			}
			return d.doc, u.Obj().Name()
		}
		return "", ""
	}
}

// yamlKeys maps the Go fields of st that are keys of the file to their
// keys, as yaml.v3 names them: the yaml tag's name, else the lowercased
// field name; "-" and unexported fields are not keys.
func yamlKeys(st *types.Struct) map[string]string {
	keys := map[string]string{}
	for i := range st.NumFields() {
		f := st.Field(i)
		name, _, _ := strings.Cut(reflect.StructTag(st.Tag(i)).Get("yaml"), ",")
		if name == "-" || !f.Exported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name())
		}
		keys[f.Name()] = name
	}
	return keys
}

// borrowedDoc is the comment of an earlier field that names this one, as
// in "CertFile and KeyFile hold …" over two fields.
func borrowedDoc(name string, order []string, docs map[string]string) string {
	word := regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `\b`)
	i := slices.Index(order, name)
	for j := i - 1; j >= 0; j-- {
		if d := docs[order[j]]; d != "" {
			if word.MatchString(d) {
				return d
			}
			return ""
		}
	}
	return ""
}

func isDuration(n *types.Named) bool {
	return n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "time" && n.Obj().Name() == "Duration"
}

// isDurationDecl reports whether a type is declared as time.Duration.
func isDurationDecl(d *typeDecl) bool {
	sel, ok := d.spec.Type.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == "time" && sel.Sel.Name == "Duration"
}

// decodesItself reports whether n (or *n) has UnmarshalYAML or
// UnmarshalText.
func decodesItself(n *types.Named) bool {
	ms := types.NewMethodSet(types.NewPointer(n))
	for _, name := range []string{"UnmarshalYAML", "UnmarshalText"} {
		if ms.Lookup(n.Obj().Pkg(), name) != nil {
			return true
		}
	}
	return false
}

func basicName(b *types.Basic, path string) (string, error) {
	switch info := b.Info(); {
	case b.Kind() == types.String:
		return "string", nil
	case info&types.IsBoolean != 0:
		return "boolean", nil
	case info&types.IsInteger != 0:
		return "integer", nil
	case info&types.IsFloat != 0:
		return "number", nil
	}
	return "", fmt.Errorf("%s: type %s cannot be written in YAML: teach internal/configref", keyName(path), b)
}

func plural(s string) string {
	if i := strings.Index(s, "]("); strings.HasPrefix(s, "[") && i > 0 {
		return "[" + plural(s[1:i]) + s[i:] // a link's text
	}
	if strings.HasPrefix(s, "list of") || strings.HasPrefix(s, "map of") {
		return s
	}
	return s + "s"
}

// link is text linking to the section of path.
func link(text, path string) string { return "[" + text + "](#" + anchor(path) + ")" }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// sectionName is how a section's text names its mapping.
func sectionName(path string) string {
	if path == "" {
		return "The configuration"
	}
	return "`" + path + "`"
}

// keyName is a path for messages.
func keyName(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

// alternatives lists the keys of a table, for "one of" sentences.
func alternatives(es []entry) string {
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = "`" + e.key + "`"
	}
	if len(keys) < 2 {
		return strings.Join(keys, "")
	}
	return strings.Join(keys[:len(keys)-1], ", ") + " or " + keys[len(keys)-1]
}
