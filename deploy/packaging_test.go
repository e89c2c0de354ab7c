package deploy

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// instruction is one Dockerfile instruction, its continuation lines joined.
type instruction struct {
	line  int    // where it starts, 1-based
	cmd   string // upper case: FROM, RUN, COPY, …
	flags []string
	// args is the rest of the instruction after its flags, as written.
	args string
	// exec is the JSON array of the exec form (ENTRYPOINT ["a", "b"]), nil
	// when args is not one.
	exec []string
}

// parseDockerfile splits a Dockerfile into instructions: comment lines
// (also inside a continued instruction) and blank lines dropped, lines
// ending in a backslash joined with the next. It knows the default escape
// character only, and fails on a parser directive that changes it.
func parseDockerfile(text string) ([]instruction, error) {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(trimmed, " ", "")), "#escape=") && len(out) == 0 && cur.Len() == 0 {
			return nil, fmt.Errorf("line %d: an escape directive, which this parser does not know", i+1)
		}
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(cont)
			continue
		}
		cur.WriteString(line)
		in, err := parseInstruction(start, cur.String())
		if err != nil {
			return nil, err
		}
		out = append(out, in)
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: the file ends inside a continued instruction", start)
	}
	return out, nil
}

// parseInstruction parses one joined instruction line.
func parseInstruction(line int, s string) (instruction, error) {
	s = strings.TrimSpace(s)
	cmd, rest, _ := strings.Cut(s, " ")
	in := instruction{line: line, cmd: strings.ToUpper(cmd)}
	rest = strings.TrimSpace(rest)
	for strings.HasPrefix(rest, "--") {
		flag, r, _ := strings.Cut(rest, " ")
		in.flags = append(in.flags, flag)
		rest = strings.TrimSpace(r)
	}
	in.args = rest
	if strings.HasPrefix(rest, "[") {
		if err := json.Unmarshal([]byte(rest), &in.exec); err != nil {
			return in, fmt.Errorf("line %d: %s %s: not a JSON array: %v", line, in.cmd, rest, err)
		}
	}
	return in, nil
}

// stage is one build stage: its FROM and the instructions up to the next.
type stage struct {
	from  instruction
	image string // the FROM's image reference
	name  string // the AS name, "" without one
	body  []instruction
}

// stages splits instructions into build stages. Instructions before the
// first FROM (ARG) are not part of any.
func stages(ins []instruction) ([]stage, error) {
	var out []stage
	for _, in := range ins {
		if in.cmd != "FROM" {
			if len(out) > 0 {
				out[len(out)-1].body = append(out[len(out)-1].body, in)
			} else if in.cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		f := strings.Fields(in.args)
		st := stage{from: in}
		switch {
		case len(f) == 1:
			st.image = f[0]
		case len(f) == 3 && strings.EqualFold(f[1], "AS"):
			st.image, st.name = f[0], f[2]
		default:
			return nil, fmt.Errorf("line %d: FROM %s: want IMAGE [AS NAME]", in.line, in.args)
		}
		out = append(out, st)
	}
	return out, nil
}

// shellWords splits a command line into words as a POSIX shell would for
// words without expansions: single quotes, double quotes and backslashes
// quote; nothing is expanded.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				w.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// goBuild is a `go build` command line reduced to what must agree between
// the Makefile, the Dockerfile and the release script.
type goBuild struct {
	env  map[string]string // leading NAME=VALUE words
	args []string          // after "go build", without -o and its value
	out  string            // -o's value
}

// versionRef matches the ways the three files spell the version variable.
var versionRef = regexp.MustCompile(`\$\(VERSION\)|\$\{VERSION\}|\$VERSION\b`)

// parseGoBuild finds the `go build` of the command line cmd: leading
// environment assignments, then go (or $(GO), $GO), then build. The
// version variable, however the file spells it, becomes VERSION.
func parseGoBuild(cmd string) (goBuild, error) {
	words, err := shellWords(versionRef.ReplaceAllString(cmd, "VERSION"))
	if err != nil {
		return goBuild{}, err
	}
	b := goBuild{env: map[string]string{}}
	i := 0
	for ; i < len(words); i++ {
		name, value, ok := strings.Cut(words[i], "=")
		if !ok || !regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`).MatchString(name) {
			break
		}
		b.env[name] = value
	}
	if i+1 >= len(words) || !slices.Contains([]string{"go", "$(GO)", "$GO", "${GO}"}, words[i]) || words[i+1] != "build" {
		return goBuild{}, fmt.Errorf("%q: want [NAME=VALUE …] go build …", cmd)
	}
	for rest := words[i+2:]; len(rest) > 0; rest = rest[1:] {
		if rest[0] == "-o" && len(rest) > 1 {
			b.out = rest[1]
			rest = rest[1:]
			continue
		}
		b.args = append(b.args, rest[0])
	}
	return b, nil
}

// makefileBuild returns the go build command of the Makefile's build
// target, the reference the other builds are held to.
func makefileBuild(t *testing.T) goBuild {
	t.Helper()
	mk := readRepoFile(t, "Makefile")
	_, recipe, ok := strings.Cut(mk, "\nbuild:")
	if !ok {
		t.Fatal("Makefile: no build target")
	}
	for _, line := range strings.Split(recipe, "\n")[1:] {
		if !strings.HasPrefix(line, "\t") {
			break
		}
		if strings.Contains(line, " build ") {
			b, err := parseGoBuild(strings.TrimSpace(line))
			if err != nil {
				t.Fatalf("Makefile build: %v", err)
			}
			return b
		}
	}
	t.Fatal("Makefile's build target runs no go build")
	return goBuild{}
}

// sameBuild reports how b differs from the Makefile's reference ref: the
// flags must be equal, in order, and every variable the Makefile sets must
// have its value (others, such as GOOS and GOARCH, may be added).
func sameBuild(ref, b goBuild) []string {
	var diffs []string
	if !slices.Equal(ref.args, b.args) {
		diffs = append(diffs, fmt.Sprintf("arguments %q, the Makefile's %q", b.args, ref.args))
	}
	for k, v := range ref.env {
		if b.env[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s=%q, the Makefile's %q", k, b.env[k], v))
		}
	}
	return diffs
}

// configDefault returns the value of a string constant of cmd/credbroker's
// config.go, so that the test follows the broker's defaults.
func configDefault(t *testing.T, name string) string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "cmd/credbroker/config.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name != name || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					return v
				}
			}
		}
	}
	t.Fatalf("cmd/credbroker/config.go has no string constant %s", name)
	return ""
}

// goModVersion returns the go directive of go.mod.
func goModVersion(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(readRepoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return m[1]
}

// TestDockerfile checks the image's essentials without an engine: a
// multi-stage build whose builder runs the Makefile's static build with
// the Go release go.mod names, and a final stage that runs nothing at
// build time, holds the binary, runs as a numeric non-root user, starts
// the broker in exec form (no shell), and declares as volumes the
// directories of the broker's default socket and audit paths.
func TestDockerfile(t *testing.T) {
	ins, err := parseDockerfile(readRepoFile(t, "Dockerfile"))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	sts, err := stages(ins)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if len(sts) < 2 {
		t.Fatalf("Dockerfile has %d stage(s); want a builder and a final stage", len(sts))
	}
	final := sts[len(sts)-1]

	// Every base is pinned: by digest, or by a tag that names a version
	// (not latest, not a bare distribution name). scratch is empty.
	for _, st := range sts {
		img := st.image
		switch {
		case img == "scratch":
		case strings.Contains(img, "@sha256:"):
		default:
			_, tag, ok := strings.Cut(img[strings.LastIndex(img, "/")+1:], ":")
			if !ok || tag == "latest" || !regexp.MustCompile(`\d+\.\d+`).MatchString(tag) {
				t.Errorf("line %d: FROM %s: pin the base by digest or by a tag naming its version", st.from.line, img)
			}
		}
	}
	// Only a builder may run on another platform than the image's (it
	// cross-compiles); the final stage is the target's.
	for _, f := range final.from.flags {
		t.Errorf("line %d: FROM %s in the final stage: it must be the target platform's", final.from.line, f)
	}

	// The builder: golang at go.mod's release, running the Makefile's build.
	var builds []goBuild
	var builder *stage
	for i, st := range sts[:len(sts)-1] {
		for _, in := range st.body {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
				b, err := parseGoBuild(in.args)
				if err != nil {
					t.Errorf("line %d: %v", in.line, err)
					continue
				}
				builds = append(builds, b)
				builder = &sts[i]
			}
		}
	}
	if len(builds) != 1 {
		t.Fatalf("Dockerfile has %d go build commands; want one, in a builder stage", len(builds))
	}
	ref := makefileBuild(t)
	for _, d := range sameBuild(ref, builds[0]) {
		t.Errorf("Dockerfile's go build differs from the Makefile's: %s", d)
	}
	if builds[0].env["CGO_ENABLED"] != "0" || !slices.Contains(builds[0].args, "-trimpath") {
		t.Errorf("Dockerfile's go build is not static and trimmed: env %v, args %q", builds[0].env, builds[0].args)
	}
	goVersion := goModVersion(t)
	if name, tag, _ := strings.Cut(builder.image, ":"); name != "golang" && !strings.HasSuffix(name, "/golang") ||
		tag != goVersion && !strings.HasPrefix(tag, goVersion+"-") {
		t.Errorf("line %d: the builder is %s; want golang:%s[-VARIANT], the Go release go.mod names", builder.from.line, builder.image, goVersion)
	}
	if !hasArg(builder.body, "VERSION") {
		t.Errorf("the builder declares no ARG VERSION for its go build to stamp")
	}

	// The final stage.
	copied := map[string]bool{}
	var user, entrypoint, cmd *instruction
	var volumes []string
	for i, in := range final.body {
		switch in.cmd {
		case "RUN", "SHELL", "ONBUILD":
			t.Errorf("line %d: %s in the final stage: it must need no shell", in.line, in.cmd)
		case "ADD":
			t.Errorf("line %d: ADD in the final stage: COPY from the builder only", in.line)
		case "HEALTHCHECK":
			if in.exec == nil && !strings.EqualFold(in.args, "NONE") {
				t.Errorf("line %d: HEALTHCHECK in shell form: the image has no shell", in.line)
			}
		case "COPY":
			if f := strings.Fields(in.args); len(f) >= 2 {
				copied[f[len(f)-1]] = true
			}
		case "USER":
			user = &final.body[i]
		case "ENTRYPOINT":
			entrypoint = &final.body[i]
		case "CMD":
			cmd = &final.body[i]
		case "VOLUME":
			if in.exec != nil {
				volumes = append(volumes, in.exec...)
			} else {
				volumes = append(volumes, strings.Fields(in.args)...)
			}
		}
	}
	if user == nil {
		t.Error("the final stage sets no USER: it would run as root")
	} else if u, g, _ := strings.Cut(user.args, ":"); !isNonRootID(u) || g != "" && !isNonRootID(g) {
		t.Errorf("line %d: USER %s: want a numeric non-root uid (and gid), which a runtime can check without /etc/passwd", user.line, user.args)
	}
	if entrypoint == nil || entrypoint.exec == nil {
		t.Fatal("the final stage has no ENTRYPOINT in exec form (JSON array)")
	}
	if len(entrypoint.exec) < 2 || entrypoint.exec[1] != "run" || !copied[entrypoint.exec[0]] || !filepath.IsAbs(entrypoint.exec[0]) {
		t.Errorf("line %d: ENTRYPOINT %q: want [\"/path/to/credbroker\", \"run\", …], the path one the final stage copies the binary to", entrypoint.line, entrypoint.exec)
	}
	if cmd != nil && cmd.exec == nil {
		t.Errorf("line %d: CMD in shell form: the image has no shell", cmd.line)
	}
	if args := append(slices.Clone(entrypoint.exec), cmdArgs(cmd)...); !slices.Contains(args, "--config") {
		t.Errorf("ENTRYPOINT and CMD give no --config: %q", args)
	}
	if !copied["/etc/ssl/certs/ca-certificates.crt"] && !strings.Contains(final.image, "distroless") {
		t.Error("the final stage has no CA certificates: upstreams over TLS could not be verified")
	}
	for _, def := range []string{"defaultSocket", "defaultAuditPath"} {
		p := configDefault(t, def)
		if !slices.Contains(volumes, filepath.Dir(p)) {
			t.Errorf("the broker writes %s (%s) but the image declares no VOLUME %s (volumes: %q): a read-only root filesystem would refuse it", p, def, filepath.Dir(p), volumes)
		}
	}
}

// hasArg reports whether body declares the build argument name.
func hasArg(body []instruction, name string) bool {
	for _, in := range body {
		if in.cmd == "ARG" && (in.args == name || strings.HasPrefix(in.args, name+"=")) {
			return true
		}
	}
	return false
}

// cmdArgs returns CMD's exec-form arguments; nil without one.
func cmdArgs(cmd *instruction) []string {
	if cmd == nil {
		return nil
	}
	return cmd.exec
}

// isNonRootID reports whether s is a decimal id other than 0.
func isNonRootID(s string) bool {
	n, err := strconv.ParseUint(s, 10, 32)
	return err == nil && n != 0
}

// TestDockerfileInstructions holds parseDockerfile to the Dockerfile
// syntax the image uses: continuations, comments inside them, flags and
// the exec form.
func TestDockerfileInstructions(t *testing.T) {
	ins, err := parseDockerfile("# a comment\nFROM --platform=$BUILDPLATFORM golang:1 AS build\n\nRUN a \\\n# inside\n  b\nENTRYPOINT [\"/x\", \"run\"]\nCOPY --from=build --chown=1:1 /a/ /b/\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []instruction{
		{line: 2, cmd: "FROM", flags: []string{"--platform=$BUILDPLATFORM"}, args: "golang:1 AS build"},
		{line: 4, cmd: "RUN", args: "a   b"},
		{line: 7, cmd: "ENTRYPOINT", args: `["/x", "run"]`, exec: []string{"/x", "run"}},
		{line: 8, cmd: "COPY", flags: []string{"--from=build", "--chown=1:1"}, args: "/a/ /b/"},
	}
	if fmt.Sprintf("%+v", ins) != fmt.Sprintf("%+v", want) {
		t.Errorf("got  %+v\nwant %+v", ins, want)
	}
	for _, bad := range []string{"RUN a \\\n", "ENTRYPOINT [\"/x\"\n", "# escape=`\nFROM x\n"} {
		if _, err := parseDockerfile(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	b, err := parseGoBuild(`CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -X main.version=$(VERSION)" -o $(BIN) ./cmd/x`)
	if err != nil || b.env["CGO_ENABLED"] != "0" || b.out != "$(BIN)" || !slices.Equal(b.args, []string{"-trimpath", "-ldflags", "-s -X main.version=VERSION", "./cmd/x"}) {
		t.Errorf("parseGoBuild: %+v, %v", b, err)
	}
}

// dockerignore is the build context's exclusions: each line a pattern
// relative to the context's root, as Docker reads .dockerignore.
type dockerignore []*regexp.Regexp

// parseDockerignore translates .dockerignore's patterns to regular
// expressions: * and ? within a path element, ** across elements. It
// refuses exceptions (!), which the test's matcher does not implement.
func parseDockerignore(text string) (dockerignore, error) {
	var out dockerignore
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			return nil, fmt.Errorf("line %d: %s: exceptions are not supported by this test", i+1, line)
		}
		p := strings.TrimPrefix(filepath.Clean(line), "/")
		var re strings.Builder
		re.WriteString("^")
		for j := 0; j < len(p); j++ {
			switch {
			case strings.HasPrefix(p[j:], "**/"):
				re.WriteString("(.*/)?")
				j += 2
			case strings.HasPrefix(p[j:], "**"):
				re.WriteString(".*")
				j++
			case p[j] == '*':
				re.WriteString("[^/]*")
			case p[j] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[j : j+1]))
			}
		}
		re.WriteString("$")
		out = append(out, regexp.MustCompile(re.String()))
	}
	return out, nil
}

// excludes reports whether the file at path (slash-separated, relative to
// the context's root) is left out: a pattern matches it or one of its
// directories.
func (d dockerignore) excludes(path string) bool {
	for p := path; p != "." && p != ""; p = filepath.Dir(p) {
		for _, re := range d {
			if re.MatchString(p) {
				return true
			}
		}
	}
	return false
}

// TestDockerignore checks that the build context keeps every file the
// binary is built from — go.mod, go.sum and each non-test Go file and
// embedded file of every package of the module that cmd/credbroker
// imports, for each platform released — and leaves out the repository's
// history and what builds leave behind.
func TestDockerignore(t *testing.T) {
	ign, err := parseDockerignore(readRepoFile(t, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	needed := map[string]bool{"go.mod": true, "go.sum": true}
	for _, arch := range []string{"amd64", "arm64"} {
		cmd := exec.Command("go", "list", "-deps", "-f",
			`{{with .Module}}{{if eq .Path "github.com/credbroker/credbroker"}}{{range $.GoFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{range $.EmbedFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`,
			"./cmd/credbroker")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		root, _ := filepath.Abs(repoRoot)
		for _, f := range strings.Fields(string(out)) {
			rel, err := filepath.Rel(root, f)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("%s is outside the repository", f)
			}
			needed[filepath.ToSlash(rel)] = true
		}
	}
	if len(needed) < 50 {
		t.Fatalf("only %d files found to build cmd/credbroker: go list's answer was not understood", len(needed))
	}
	for f := range needed {
		if ign.excludes(f) {
			t.Errorf(".dockerignore leaves out %s, which the binary is built from", f)
		}
	}
	for _, f := range []string{".git/HEAD", "bin/credbroker", "dist/SHA256SUMS", "broker/broker_test.go", "audit/testdata/x"} {
		if !ign.excludes(f) {
			t.Errorf(".dockerignore keeps %s in the build context", f)
		}
	}
}

// TestDockerignoreMatcher holds the test's matcher to Docker's reading of
// the patterns it uses.
func TestDockerignoreMatcher(t *testing.T) {
	ign, err := parseDockerignore("bin\n/dist/\n**/*_test.go\n**/testdata\n*.out\ndocs/*.md\n")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"bin": true, "bin/credbroker": true, "cmd/bin/x": false,
		"dist/a": true, "a_test.go": true, "x/y/a_test.go": true, "x/test.go": false,
		"testdata/a": true, "a/b/testdata/c": true, "c.out": true, "x/c.out": false,
		"docs/a.md": true, "docs/x/a.md": false,
	} {
		if got := ign.excludes(path); got != want {
			t.Errorf("excludes(%q) = %v, want %v", path, got, want)
		}
	}
	if _, err := parseDockerignore("!keep\n"); err == nil {
		t.Error("an exception was accepted")
	}
}

// TestMakeImage runs `make image` with no container engine (it says how
// to build and fails), with an engine whose daemon is down (the same,
// naming it), and with a stand-in docker that records how it was called:
// a build of the repository with the version passed as a build argument
// and in the tag.
func TestMakeImage(t *testing.T) {
	// A PATH of the tools the Makefile and scripts/image.sh use, and a
	// directory for the stand-in engine in front of it.
	tools := t.TempDir()
	for _, name := range []string{"make", "bash", "git", "dirname", "cat"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := os.Symlink(p, filepath.Join(tools, name)); err != nil {
			t.Fatal(err)
		}
	}
	engineDir := t.TempDir()
	record := filepath.Join(t.TempDir(), "calls")
	run := func(engine string) (stdout, stderr string, code int) {
		os.Remove(filepath.Join(engineDir, "docker"))
		if engine != "" {
			if err := os.WriteFile(filepath.Join(engineDir, "docker"), []byte(engine), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command("make", "-s", "image", "VERSION=v9.9.9-test")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "PATH="+engineDir+":"+tools, "RECORD="+record)
		var so, se strings.Builder
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return so.String(), se.String(), code
	}

	_, stderr, code := run("")
	if code == 0 || !strings.Contains(stderr, "docker: not installed") || !strings.Contains(stderr, "podman: not installed") ||
		!strings.Contains(stderr, "docker build --build-arg VERSION=v9.9.9-test -t credbroker:v9.9.9-test .") {
		t.Errorf("without an engine: exit %d\n%s", code, stderr)
	}

	_, stderr, code = run("#!/bin/bash\n[ \"$1\" = info ] && { echo 'Cannot connect to the Docker daemon' >&2; exit 1; }\necho \"$@\" >>\"$RECORD\"\n")
	if code == 0 || !strings.Contains(stderr, "docker: installed, but `docker info` fails") {
		t.Errorf("with docker's daemon down: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(record); err == nil {
		t.Error("docker build ran although docker info failed")
	}

	stdout, stderr, code := run("#!/bin/bash\n[ \"$1\" = info ] && exit 0\n{ pwd; echo \"$@\"; } >>\"$RECORD\"\n")
	calls, _ := os.ReadFile(record)
	root, _ := filepath.Abs(repoRoot)
	if want := root + "\nbuild --build-arg VERSION=v9.9.9-test -t credbroker:v9.9.9-test .\n"; code != 0 || string(calls) != want {
		t.Errorf("with an engine: exit %d, calls %q, want %q\n%s%s", code, calls, want, stdout, stderr)
	}
}

// releaseBuild returns the go build command of scripts/release.sh.
func releaseBuild(t *testing.T) goBuild {
	t.Helper()
	script := strings.ReplaceAll(readRepoFile(t, "scripts/release.sh"), "\\\n", " ")
	var found []goBuild
	for _, line := range strings.Split(script, "\n") {
		if line = strings.TrimSpace(line); strings.Contains(line, " build ") && !strings.HasPrefix(line, "#") {
			b, err := parseGoBuild(line)
			if err != nil {
				t.Fatalf("scripts/release.sh: %v", err)
			}
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("scripts/release.sh has %d go build commands; want one", len(found))
	}
	return found[0]
}

// gitDescribe returns the version the Makefile stamps: git describe of
// the checkout as it is now.
func gitDescribe(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git describe: %v (this test needs the git checkout)", err)
	}
	return strings.TrimSpace(string(out))
}

// TestMakeRelease runs `make release` into a temporary directory and
// checks what it leaves there: a static ELF executable per platform, for
// the right machine, whose SHA-256 SHA256SUMS lists, and whose version is
// the checkout's git describe, as `make build` stamps it. The release
// script's go build is held to the Makefile's.
func TestMakeRelease(t *testing.T) {
	for _, d := range sameBuild(makefileBuild(t), releaseBuild(t)) {
		t.Errorf("scripts/release.sh's go build differs from the Makefile's: %s", d)
	}
	if b := releaseBuild(t); b.env["CGO_ENABLED"] != "0" {
		t.Errorf("scripts/release.sh builds with CGO_ENABLED=%q", b.env["CGO_ENABLED"])
	}

	dist := filepath.Join(t.TempDir(), "dist")
	// Others may commit or edit the tree while the release builds: the
	// version stamped is git describe as it was before or after.
	versions := []string{gitDescribe(t)}
	cmd := exec.Command("make", "-s", "release", "DIST="+dist)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	versions = append(versions, gitDescribe(t))

	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"SHA256SUMS", "credbroker-linux-amd64", "credbroker-linux-arm64"}; !slices.Equal(names, want) {
		t.Errorf("make release left %q; want %q", names, want)
	}

	sums := map[string]string{}
	f, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SHA256SUMS: %q is not a sha256sum line", sc.Text())
		}
		sums[name] = sum
	}
	if len(sums) != len(machines) {
		t.Errorf("SHA256SUMS lists %d files: %v", len(sums), sums)
	}

	for arch, machine := range machines {
		name := "credbroker-linux-" + arch
		path := filepath.Join(dist, name)
		b, err := os.Open(path)
		if err != nil {
			t.Error(err)
			continue
		}
		h := sha256.New()
		if _, err := io.Copy(h, b); err != nil {
			t.Fatal(err)
		}
		b.Close()
		if got := hex.EncodeToString(h.Sum(nil)); sums[name] != got {
			t.Errorf("%s: SHA-256 %s, SHA256SUMS says %q", name, got, sums[name])
		}
		e, err := elf.Open(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if e.Machine != machine || e.Class != elf.ELFCLASS64 || e.Type != elf.ET_EXEC {
			t.Errorf("%s: %v %v %v; want a 64-bit %v executable", name, e.Class, e.Machine, e.Type, machine)
		}
		for _, p := range e.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s has a %v segment: it is not statically linked", name, p.Type)
			}
		}
		if libs, _ := e.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs shared libraries %q", name, libs)
		}
		e.Close()
		if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable: %v", name, err)
		}
	}

	// The binary of this machine runs and names the version.
	host := filepath.Join(dist, "credbroker-linux-"+runtime.GOARCH)
	if _, ok := machines[runtime.GOARCH]; !ok || runtime.GOOS != "linux" {
		t.Fatalf("no release binary runs on %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	out, err := exec.Command(host, "version", "--json").Output()
	var info struct{ Version, Platform string }
	if err != nil || json.Unmarshal(out, &info) != nil {
		t.Fatalf("%s version --json: %v %q", host, err, out)
	}
	if !slices.Contains(versions, info.Version) || info.Platform != "linux/"+runtime.GOARCH {
		t.Errorf("%s version: %+v; want version %q (git describe) on linux/%s", host, info, versions, runtime.GOARCH)
	}
}

// imageDir is a directory of the final image as the Dockerfile makes it.
type imageDir struct {
	uid, gid int
	mode     os.FileMode
}

// imageVolumes returns, for each VOLUME of the final stage, the owner,
// group and mode the image gives it: the owner and group of the COPY
// --chown that brings it from the builder, the mode of the builder's
// chmod of its source. It also returns the final stage's USER.
func imageVolumes(t *testing.T) (dirs map[string]imageDir, uid, gid int) {
	t.Helper()
	ins, err := parseDockerfile(readRepoFile(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	sts, err := stages(ins)
	if err != nil {
		t.Fatal(err)
	}
	final := sts[len(sts)-1]
	modes := map[string]os.FileMode{}
	chmod := regexp.MustCompile(`chmod (0[0-7]{3}) (/\S+)`)
	for _, st := range sts[:len(sts)-1] {
		for _, in := range st.body {
			if in.cmd == "RUN" {
				for _, m := range chmod.FindAllStringSubmatch(in.args, -1) {
					mode, _ := strconv.ParseUint(m[1], 8, 32)
					modes[m[2]] = os.FileMode(mode)
				}
			}
		}
	}
	var volumes []string
	type copyIn struct {
		src, dst string
		uid, gid int
	}
	var copies []copyIn
	for _, in := range final.body {
		switch in.cmd {
		case "USER":
			u, g, _ := strings.Cut(in.args, ":")
			uid, _ = strconv.Atoi(u)
			gid, _ = strconv.Atoi(g)
		case "VOLUME":
			volumes = append(volumes, in.exec...)
		case "COPY":
			c := copyIn{uid: 0, gid: 0}
			for _, f := range in.flags {
				if own, ok := strings.CutPrefix(f, "--chown="); ok {
					u, g, _ := strings.Cut(own, ":")
					c.uid, _ = strconv.Atoi(u)
					c.gid, _ = strconv.Atoi(g)
				}
			}
			if f := strings.Fields(in.args); len(f) == 2 {
				c.src, c.dst = filepath.Clean(f[0]), filepath.Clean(f[1])
				copies = append(copies, c)
			}
		}
	}
	dirs = map[string]imageDir{}
	for _, v := range volumes {
		for _, c := range copies {
			rel, err := filepath.Rel(c.dst, v)
			if err != nil || strings.HasPrefix(rel, "..") || rel == "." {
				continue
			}
			mode, ok := modes[filepath.Join(c.src, rel)]
			if !ok {
				t.Fatalf("VOLUME %s comes from %s in the builder, which no chmod gives a mode", v, filepath.Join(c.src, rel))
			}
			dirs[v] = imageDir{uid: c.uid, gid: c.gid, mode: mode}
		}
		if _, ok := dirs[v]; !ok {
			t.Fatalf("VOLUME %s is not made by a COPY of the final stage: a runtime would make it root's, 0755", v)
		}
	}
	return dirs, uid, gid
}

// TestImageVolumes makes the image's two volume directories as the
// Dockerfile makes them (owner, group, mode) and runs the broker on them
// both ways the image is run: as the image's USER with no capability, and
// as root with only the two capabilities attestation needs (the way
// docs/security.md, deploy/kubernetes and deploy/ecs run it), with no new
// privileges either way. Each must pass the broker's checks of the
// socket's directory, create its audit log and keys, serve a decision and
// record it.
func TestImageVolumes(t *testing.T) {
	requireRootFor(t, "runs the broker as the image's user and as root confined to two capabilities")
	dirs, uid, gid := imageVolumes(t)
	if !isNonRootID(strconv.Itoa(uid)) {
		t.Fatalf("USER %d", uid)
	}
	bin := credbrokerBinary(t)
	for _, as := range []struct {
		name     string
		uid, gid int
		caps     string
	}{
		{"image user", uid, gid, "-all"},
		{"root with two capabilities", 0, gid, "-all,+sys_ptrace,+dac_read_search"},
	} {
		t.Run(as.name, func(t *testing.T) {
			base, err := os.MkdirTemp("", "credbroker-image-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(base) })
			os.Chmod(base, 0o755)
			exe := filepath.Join(base, "credbroker")
			if b, err := os.ReadFile(bin); err != nil || os.WriteFile(exe, b, 0o755) != nil {
				t.Fatal("cannot copy the binary")
			}
			paths := map[string]string{}
			for v, d := range dirs {
				p := filepath.Join(base, "root", v)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(p, d.mode); err != nil {
					t.Fatal(err)
				}
				os.Chmod(p, d.mode)
				os.Chown(p, d.uid, d.gid)
				paths[v] = p
			}
			socketDir, auditDir := paths[filepath.Dir(configDefault(t, "defaultSocket"))], paths[filepath.Dir(configDefault(t, "defaultAuditPath"))]
			if socketDir == "" || auditDir == "" {
				t.Fatalf("the volumes %v are not the directories of the default socket and audit paths", dirs)
			}
			cfg := filepath.Join(base, "credbroker.yaml")
			os.WriteFile(cfg, []byte("policies: policies.yaml\ncredentials:\n  - {name: probe, static: {env: HOME}}\n"), 0o644)
			os.WriteFile(filepath.Join(base, "policies.yaml"), []byte("policies:\n  - {name: self, effect: allow, workloads: [{unix: {uid: self}}], credentials: [probe]}\n"), 0o644)
			socket := filepath.Join(socketDir, "broker.sock")
			setpriv := []string{"--reuid=" + strconv.Itoa(as.uid), "--regid=" + strconv.Itoa(as.gid), "--clear-groups",
				"--bounding-set=" + as.caps, "--inh-caps=-all", "--no-new-privs"}
			run := exec.Command(lookPath(t, "setpriv", "util-linux"), append(setpriv, exe, "run", "--config", cfg,
				"--socket", socket, "--audit-db", filepath.Join(auditDir, "audit.db"), "--admin", "off")...)
			run.Env = []string{"HOME=/nonexistent"}
			s := launch(t, run)
			get := exec.Command("setpriv", append(setpriv, exe, "get", "probe", "--socket", socket)...)
			if out, err := get.CombinedOutput(); err != nil || !strings.Contains(string(out), `"value":"/nonexistent"`) {
				t.Errorf("credbroker get as uid %d: %v\n%s\n%s", as.uid, err, out, s.log)
			}
			fi, err := os.Stat(filepath.Join(auditDir, "audit.db.key"))
			if err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(as.uid) || fi.Mode().Perm() != 0o600 {
				t.Errorf("the audit key: %v %v", fi, err)
			}
		})
	}
}
