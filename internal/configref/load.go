package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// mainPackage is the package whose Config the reference describes.
const mainPackage = "github.com/credbroker/credbroker/cmd/credbroker"

// listed is one package as `go list -json` reports it.
type listed struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Export     string
	Standard   bool
}

// program is cmd/credbroker type-checked from source, with the syntax of
// every package whose types it describes parsed for their comments.
type program struct {
	fset    *token.FileSet
	pkg     *types.Package
	info    *types.Info
	files   []*ast.File // cmd/credbroker's
	listed  map[string]*listed
	parsed  map[string]*pkgSyntax // by import path, parsed on demand
	visited map[string]bool       // sections already written
	tables  map[string]string     // a table of sections -> its keys, as Markdown
}

// pkgSyntax indexes one package's type declarations.
type pkgSyntax struct {
	types   map[string]*typeDecl
	methods map[string][]*ast.FuncDecl // by receiver type name
}

// typeDecl is one type declaration and its doc comment.
type typeDecl struct {
	spec *ast.TypeSpec
	doc  string
}

// load lists cmd/credbroker's dependencies with their export data and
// type-checks cmd/credbroker from source against them.
func load(root string) (*program, error) {
	cmd := exec.Command("go", "list", "-deps", "-export", "-json=ImportPath,Dir,GoFiles,Export,Standard", "./cmd/credbroker")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list ./cmd/credbroker: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	p := &program{fset: token.NewFileSet(), listed: map[string]*listed{}, parsed: map[string]*pkgSyntax{}, visited: map[string]bool{}}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var l listed
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		p.listed[l.ImportPath] = &l
	}
	m := p.listed[mainPackage]
	if m == nil {
		return nil, fmt.Errorf("go list did not report %s", mainPackage)
	}
	for _, name := range m.GoFiles {
		f, err := parser.ParseFile(p.fset, filepath.Join(m.Dir, name), nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, f)
	}
	lookup := func(path string) (io.ReadCloser, error) {
		l := p.listed[path]
		if l == nil || l.Export == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(l.Export)
	}
	conf := types.Config{Importer: importer.ForCompiler(p.fset, "gc", lookup)}
	p.info = &types.Info{
		Types:     map[ast.Expr]types.TypeAndValue{},
		Defs:      map[*ast.Ident]types.Object{},
		Uses:      map[*ast.Ident]types.Object{},
		Instances: map[*ast.Ident]types.Instance{},
	}
	p.pkg, err = conf.Check(mainPackage, p.fset, p.files, p.info)
	if err != nil {
		return nil, fmt.Errorf("type-checking %s: %w", mainPackage, err)
	}
	return p, nil
}

// syntax returns the parsed declarations of the package at path.
func (p *program) syntax(path string) (*pkgSyntax, error) {
	if s, ok := p.parsed[path]; ok {
		return s, nil
	}
	l := p.listed[path]
	if l == nil {
		return nil, fmt.Errorf("package %s is not a dependency of %s", path, mainPackage)
	}
	s := &pkgSyntax{types: map[string]*typeDecl{}, methods: map[string][]*ast.FuncDecl{}}
	var files []*ast.File
	if path == mainPackage {
		files = p.files
	} else {
		for _, name := range l.GoFiles {
			f, err := parser.ParseFile(p.fset, filepath.Join(l.Dir, name), nil, parser.ParseComments)
			if err != nil {
				return nil, err
			}
			files = append(files, f)
		}
	}
	for _, f := range files {
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.GenDecl:
				if d.Tok != token.TYPE {
					continue
				}
				for _, spec := range d.Specs {
					ts := spec.(*ast.TypeSpec)
					doc := ts.Doc
					if doc == nil && len(d.Specs) == 1 {
						doc = d.Doc
					}
					s.types[ts.Name.Name] = &typeDecl{spec: ts, doc: doc.Text()}
				}
			case *ast.FuncDecl:
				if d.Recv == nil || len(d.Recv.List) != 1 {
					continue
				}
				t := d.Recv.List[0].Type
				if star, ok := t.(*ast.StarExpr); ok {
					t = star.X
				}
				if id, ok := t.(*ast.Ident); ok {
					s.methods[id.Name] = append(s.methods[id.Name], d)
				}
			}
		}
	}
	p.parsed[path] = s
	return s, nil
}

// decl returns the declaration of a named type.
func (p *program) decl(n *types.Named) (*typeDecl, error) {
	obj := n.Obj()
	if obj.Pkg() == nil {
		return nil, fmt.Errorf("type %s has no package", obj.Name())
	}
	s, err := p.syntax(obj.Pkg().Path())
	if err != nil {
		return nil, err
	}
	d := s.types[obj.Name()]
	if d == nil {
		return nil, fmt.Errorf("no declaration of %s.%s in its package's files", obj.Pkg().Path(), obj.Name())
	}
	return d, nil
}

// method returns the declaration of a method of a named type, or nil.
func (p *program) method(n *types.Named, name string) *ast.FuncDecl {
	s, err := p.syntax(n.Obj().Pkg().Path())
	if err != nil {
		return nil
	}
	for _, m := range s.methods[n.Obj().Name()] {
		if m.Name.Name == name {
			return m
		}
	}
	return nil
}

// fieldDocs maps the fields of a struct type declaration to their doc
// comments (or line comments), in declaration order.
func fieldDocs(d *typeDecl) (names []string, docs map[string]string) {
	docs = map[string]string{}
	st, ok := d.spec.Type.(*ast.StructType)
	if !ok {
		return nil, docs
	}
	for _, f := range st.Fields.List {
		text := f.Doc.Text()
		if text == "" {
			text = f.Comment.Text()
		}
		for _, n := range f.Names {
			names = append(names, n.Name)
			docs[n.Name] = text
		}
	}
	return names, docs
}
