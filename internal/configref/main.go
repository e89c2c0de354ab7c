// Command configref writes docs/config-reference.md, the reference of every
// key of credbroker's configuration file, from the configuration's Go types
// and their doc comments, so that the reference cannot drift from the code:
//
//	go run ./internal/configref            # or: make docs
//	go run ./internal/configref -o -       # to stdout
//
// It type-checks cmd/credbroker from source (its dependencies from the
// export data `go list -export` reports), starts at its Config type and
// follows every field with a yaml key: into the attestor sections, the
// audit section and, through the tables cmd/credbroker decodes them with
// (providerKinds and listenerKinds), into each provider's and listener's
// own Config type in its package. Each key gets its YAML path, its type, its
// default and its description, all taken from the field's doc comment (or,
// for a field without one, its type's): Go field names in the text become
// their YAML keys, and constants (DefaultDrainTimeout) their values. The
// default is the comment's "default …" clause; "required" when the comment
// says Required.
//
// A type that decodes itself (UnmarshalYAML, UnmarshalText) is described
// only by a rule of this command: a duration (a type declared as
// time.Duration), or one of cmd/credbroker's one-key sections (credentials,
// listeners). Any other such type, or a key whose field and type both lack
// a doc comment, stops the command with what to add.
//
// TestReferenceUpToDate fails when the committed file differs from what
// this command writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

// output is the reference's path relative to the module root.
const output = "docs/config-reference.md"

func main() {
	out := flag.String("o", "", "write the reference to this file (- for stdout); default "+output+" in the module")
	flag.Parse()
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "configref:", err)
		os.Exit(1)
	}
	b, err := Generate(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "configref:", err)
		os.Exit(1)
	}
	switch *out {
	case "-":
		_, err = os.Stdout.Write(b)
	case "":
		err = os.WriteFile(filepath.Join(root, output), b, 0o644)
	default:
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "configref:", err)
		os.Exit(1)
	}
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod in the working directory or above: run it inside the credbroker module")
		}
		dir = parent
	}
}

// Generate returns the Markdown reference of the configuration of the
// credbroker module at root.
func Generate(root string) ([]byte, error) {
	prog, err := load(root)
	if err != nil {
		return nil, err
	}
	sections, err := prog.walk()
	if err != nil {
		return nil, err
	}
	return render(sections), nil
}
