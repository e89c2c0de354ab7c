package docs

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	yaml "go.yaml.in/yaml/v3"
)

// repoRoot is the repository's top directory, relative to this package's
// directory, where go test runs its tests.
const repoRoot = ".."

// markdownFiles lists the documentation: README.md and every Markdown file
// under docs/, as paths relative to the repository.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md"}
	err := filepath.WalkDir(filepath.Join(repoRoot, "docs"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			rel, _ := filepath.Rel(repoRoot, path)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// page is one Markdown file, parsed for what the tests check.
type page struct {
	name     string // relative to the repository
	blocks   []block
	examples []exampleFile // files of examples given in comments or marked blocks
	links    []link
	anchors  map[string]bool // the ids of its headings and <a id> tags
	problems []string        // marker mistakes
}

// block is one fenced code block.
type block struct {
	line   int // of the opening fence
	lang   string
	body   string
	marker string // "", "fragment" or "file"
}

// exampleFile is one file of an example: DIR/NAME in a file marker.
type exampleFile struct {
	line int
	path string // DIR/NAME
	body string
}

// link is one link's target.
type link struct {
	line   int
	target string
}

var (
	fenceOpen   = regexp.MustCompile("^(\\s*)(`{3,}|~{3,})\\s*([^`\\s]*)")
	heading     = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$`)
	markerLine  = regexp.MustCompile(`^\s*<!--\s*(fragment|file:\s*(\S+))\s*(-->)?\s*$`)
	linkTarget  = regexp.MustCompile(`\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	refDef      = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	codeSpan    = regexp.MustCompile("`+[^`]*`+")
	htmlAnchor  = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	htmlTag     = regexp.MustCompile(`<[^>]+>`)
	inlineLink  = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	hasScheme   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
	examplePath = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)+$`)
)

// parsePage reads a Markdown file's fenced blocks, example markers, links
// and headings.
func parsePage(name, text string) *page {
	p := &page{name: name, anchors: map[string]bool{}}
	lines := strings.Split(text, "\n")
	slugs := map[string]int{}
	marker, markerPath := "", "" // the marker on the last non-blank line
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := fenceOpen.FindStringSubmatch(line); m != nil {
			indent, fence, lang := m[1], m[2], m[3]
			start := i
			var body []string
			for i++; i < len(lines); i++ {
				l := lines[i]
				if t := strings.TrimSpace(l); strings.HasPrefix(t, fence[:3]) && strings.Trim(t, fence[:1]) == "" && len(t) >= len(fence) {
					break
				}
				body = append(body, strings.TrimPrefix(l, indent))
			}
			b := block{line: start + 1, lang: strings.ToLower(lang), body: strings.Join(body, "\n") + "\n", marker: marker}
			p.blocks = append(p.blocks, b)
			if marker == "file" {
				p.examples = append(p.examples, exampleFile{line: start + 1, path: markerPath, body: b.body})
			}
			marker, markerPath = "", ""
			continue
		}
		if m := markerLine.FindStringSubmatch(line); m != nil {
			if m[1] == "fragment" {
				marker, markerPath = "fragment", ""
				continue
			}
			if !examplePath.MatchString(m[2]) {
				p.problems = append(p.problems, fmt.Sprintf("%s:%d: %q: name an example's file as DIR/NAME (letters, digits, . _ -)", name, i+1, m[2]))
			}
			if m[3] != "" { // <!-- file: X -->: the next block is the file
				marker, markerPath = "file", m[2]
				continue
			}
			// <!-- file: X … -->: the comment holds the file.
			start := i
			var body []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "-->"; i++ {
				body = append(body, lines[i])
			}
			if i == len(lines) {
				p.problems = append(p.problems, fmt.Sprintf("%s:%d: the comment holding %s has no closing --> on a line of its own", name, start+1, m[2]))
			}
			p.examples = append(p.examples, exampleFile{line: start + 1, path: m[2], body: strings.Join(body, "\n") + "\n"})
			marker, markerPath = "", ""
			continue
		}
		if strings.TrimSpace(line) != "" {
			marker, markerPath = "", ""
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			slug := githubSlug(m[1])
			if n := slugs[slug]; n > 0 {
				p.anchors[fmt.Sprintf("%s-%d", slug, n)] = true
			} else {
				p.anchors[slug] = true
			}
			slugs[slug]++
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			p.anchors[m[1]] = true
		}
		prose := codeSpan.ReplaceAllString(line, "")
		for _, m := range linkTarget.FindAllStringSubmatch(prose, -1) {
			p.links = append(p.links, link{i + 1, m[1]})
		}
		if m := refDef.FindStringSubmatch(prose); m != nil {
			p.links = append(p.links, link{i + 1, m[1]})
		}
	}
	return p
}

// githubSlug is the id GitHub gives a heading: its text without markup,
// lowercased, with every character but letters, digits, '_', '-' and
// spaces removed and spaces turned into '-'.
func githubSlug(text string) string {
	text = inlineLink.ReplaceAllString(text, "$1")
	text = htmlTag.ReplaceAllString(text, "")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r) || r == '_' || r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

func readPages(t *testing.T) map[string]*page {
	t.Helper()
	pages := map[string]*page{}
	for _, name := range markdownFiles(t) {
		b, err := os.ReadFile(filepath.Join(repoRoot, name))
		if err != nil {
			t.Fatal(err)
		}
		pages[name] = parsePage(name, string(b))
	}
	return pages
}

// TestExamples loads every whole example of the documentation with the
// broker's own `credbroker check`, and checks that every other YAML block
// is marked as a fragment and parses.
func TestExamples(t *testing.T) {
	pages := readPages(t)
	type example struct {
		page  string
		dir   string
		files []exampleFile
	}
	var examples []*example
	for _, name := range slices.Sorted(maps.Keys(pages)) {
		p := pages[name]
		for _, prob := range p.problems {
			t.Error(prob)
		}
		for _, b := range p.blocks {
			if b.lang != "yaml" && b.lang != "yml" {
				continue
			}
			switch b.marker {
			case "":
				t.Errorf("%s:%d: a yaml block needs a marker on the line before it: <!-- file: DIR/NAME.yaml --> for a file of a whole example, loaded with credbroker check, or <!-- fragment --> for part of one (or another program's YAML)", name, b.line)
			case "fragment":
				var v any
				if err := yaml.Unmarshal([]byte(b.body), &v); err != nil {
					t.Errorf("%s:%d: the fragment is not YAML: %v", name, b.line, err)
				}
			}
		}
		byDir := map[string]*example{}
		for _, f := range p.examples {
			dir, _, _ := strings.Cut(f.path, "/")
			e := byDir[dir]
			if e == nil {
				e = &example{page: name, dir: dir}
				byDir[dir] = e
				examples = append(examples, e)
			}
			for _, g := range e.files {
				if g.path == f.path {
					t.Errorf("%s:%d: %s is given twice (first at line %d)", name, f.line, f.path, g.line)
				}
			}
			e.files = append(e.files, f)
		}
	}
	if len(examples) == 0 {
		t.Fatal("the documentation has no whole example")
	}
	bin := credbroker(t)
	for _, e := range examples {
		t.Run(strings.TrimSuffix(filepath.Base(e.page), ".md")+"/"+e.dir, func(t *testing.T) {
			root := t.TempDir()
			var where []string
			configs := 0
			for _, f := range e.files {
				path := filepath.Join(root, filepath.FromSlash(f.path))
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(f.body), 0o600); err != nil {
					t.Fatal(err)
				}
				where = append(where, fmt.Sprintf("  %s: %s:%d", f.path, e.page, f.line))
				if filepath.Dir(f.path) == e.dir && (strings.HasSuffix(f.path, ".yaml") || strings.HasSuffix(f.path, ".yml")) && !isPolicyFile(f.body) {
					configs++
				}
			}
			if configs == 0 {
				t.Fatalf("%s: the example %s has no broker configuration (a .yaml file in %s/ that is not a policy file)\n%s", e.page, e.dir, e.dir, strings.Join(where, "\n"))
			}
			cmd := exec.Command(bin, "check", "--config", filepath.Join(root, e.dir))
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("%s: credbroker check --config %s: %v\n%s\nthe example's files:\n%s", e.page, e.dir, err,
					strings.ReplaceAll(string(out), root+string(filepath.Separator), ""), strings.Join(where, "\n"))
			}
		})
	}
}

// isPolicyFile reports whether a YAML document's only key is policies, as
// the broker tells policy files from configuration.
func isPolicyFile(body string) bool {
	var m map[string]any
	if yaml.Unmarshal([]byte(body), &m) != nil {
		return false
	}
	_, ok := m["policies"]
	return ok && len(m) == 1
}

// credbroker builds the broker from this checkout, as make build does.
func credbroker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "credbroker")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/credbroker")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/credbroker: %v\n%s", err, out)
	}
	return bin
}

// TestLinks checks that every relative link of the documentation names a
// file or directory of the repository — never anything outside it — and,
// when it has an anchor into a Markdown file, one of that file's headings.
func TestLinks(t *testing.T) {
	pages := readPages(t)
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range slices.Sorted(maps.Keys(pages)) {
		p := pages[name]
		for _, l := range p.links {
			target := l.target
			if target == "" || hasScheme.MatchString(target) {
				continue // an external link
			}
			checked++
			at := fmt.Sprintf("%s:%d: %s", name, l.line, target)
			path, anchor, _ := strings.Cut(target, "#")
			if strings.HasPrefix(path, "/") {
				t.Errorf("%s: use a path relative to %s", at, name)
				continue
			}
			file := name
			if path != "" {
				file = filepath.ToSlash(filepath.Join(filepath.Dir(name), path))
				abs := filepath.Join(root, filepath.FromSlash(file))
				if rel, err := filepath.Rel(root, abs); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
					t.Errorf("%s: points outside the repository", at)
					continue
				}
				if _, err := os.Stat(abs); err != nil {
					t.Errorf("%s: no such file in the repository", at)
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(file, ".md") {
				continue
			}
			q := pages[file]
			if q == nil {
				b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
				if err != nil {
					t.Errorf("%s: %v", at, err)
					continue
				}
				q = parsePage(file, string(b))
			}
			if !q.anchors[anchor] {
				t.Errorf("%s: %s has no heading with the id %q", at, file, anchor)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link found: the link parser is broken")
	}
}

// outsideNames are documents outside the repository that the
// documentation must not name. They are joined at run time so that this
// file, which sits among the documentation, does not name them either.
var outsideNames = []string{".." + "/shared", "DESIGN" + ".md", "STYLE" + ".md"}

// TestNoOutsideReferences keeps the documentation standing alone: it names
// no document outside the repository.
func TestNoOutsideReferences(t *testing.T) {
	for _, name := range markdownFiles(t) {
		b, err := os.ReadFile(filepath.Join(repoRoot, name))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, s := range outsideNames {
				if strings.Contains(line, s) {
					t.Errorf("%s:%d: names %s, which is not part of the repository", name, i+1, s)
				}
			}
		}
	}
}

// TestReadme checks the README's opening: the title, then exactly two
// commands — the quickstart and the test suite.
func TestReadme(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) < 5 || !strings.HasPrefix(lines[0], "# ") || !strings.HasPrefix(lines[1], "```") || !strings.HasPrefix(lines[4], "```") {
		t.Fatalf("README.md must open with its title and a code block of two commands; it opens with:\n%s", strings.Join(lines[:min(5, len(lines))], "\n"))
	}
	if !strings.HasPrefix(lines[2], "make quickstart") || !strings.HasPrefix(lines[3], "make test") {
		t.Errorf("README.md's two commands must be make quickstart and make test, in that order; they are:\n%s\n%s", lines[2], lines[3])
	}
}

// TestParsePage checks the parser the other tests rely on.
func TestParsePage(t *testing.T) {
	text := strings.Join([]string{
		"# Title: with `code` and [a link](x.md)",
		"",
		"See [here](other.md#a-b), [there](#title-with-code-and-a-link) and [out](https://example.com).",
		"`[not](a-link.md)` in code.",
		"",
		"<!-- fragment -->",
		"```yaml",
		"a: 1",
		"```",
		"",
		"<!-- file: ex/credbroker.yaml -->",
		"",
		"```yaml",
		"policies: policies.yaml",
		"```",
		"",
		"<!-- file: ex/policies.yaml",
		"policies: []",
		"-->",
		"",
		"```yaml",
		"b: 2",
		"```",
		"",
		"  ```sh",
		"  [inside](nope.md)",
		"  ```",
		"## Title: with code and a link",
		"[ref]: docs/x.md",
		"<a id=\"custom\"></a>",
	}, "\n")
	p := parsePage("t.md", text)
	var markers []string
	for _, b := range p.blocks {
		markers = append(markers, b.lang+":"+b.marker)
	}
	if want := []string{"yaml:fragment", "yaml:file", "yaml:", "sh:"}; !slices.Equal(markers, want) {
		t.Errorf("blocks %q, want %q", markers, want)
	}
	var files []string
	for _, f := range p.examples {
		files = append(files, f.path+"="+strings.TrimSpace(f.body))
	}
	if want := []string{"ex/credbroker.yaml=policies: policies.yaml", "ex/policies.yaml=policies: []"}; !slices.Equal(files, want) {
		t.Errorf("example files %q, want %q", files, want)
	}
	var targets []string
	for _, l := range p.links {
		targets = append(targets, l.target)
	}
	if want := []string{"x.md", "other.md#a-b", "#title-with-code-and-a-link", "https://example.com", "docs/x.md"}; !slices.Equal(targets, want) {
		t.Errorf("links %q, want %q", targets, want)
	}
	for _, a := range []string{"title-with-code-and-a-link", "title-with-code-and-a-link-1", "custom"} {
		if !p.anchors[a] {
			t.Errorf("no anchor %q among %v", a, p.anchors)
		}
	}
}

func TestGithubSlug(t *testing.T) {
	for in, want := range map[string]string{
		"Answers without jq (audit query)":       "answers-without-jq-audit-query",
		"`listeners[].aws_credentials`":          "listenersaws_credentials",
		"Privileges the broker needs":            "privileges-the-broker-needs",
		"What happens when Vault is down?":       "what-happens-when-vault-is-down",
		"credentials[].static.fields.NAME":       "credentialsstaticfieldsname",
		"Exit codes of `credbroker get`":         "exit-codes-of-credbroker-get",
		"Kubernetes — the sidecar, step by step": "kubernetes--the-sidecar-step-by-step",
	} {
		if got := githubSlug(in); got != want {
			t.Errorf("githubSlug(%q) = %q, want %q", in, got, want)
		}
	}
}

// metricName finds the name of a metric the broker defines: the Name of a
// prometheus.CounterOpts, GaugeOpts or HistogramOpts literal.
var metricName = regexp.MustCompile(`(?m)^\s*Name:\s*"(credbroker_[a-z0-9_]+)"`)

// TestMetricsDocumented checks that operations.md describes every metric
// the broker's code defines, found in the source rather than listed here.
func TestMetricsDocumented(t *testing.T) {
	ops, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	err = filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "bench") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "prometheus") {
			return nil
		}
		for _, m := range metricName.FindAllStringSubmatch(string(b), -1) {
			names = append(names, m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric definitions (%v): the search is broken", len(names), names)
	}
	for _, n := range names {
		if !strings.Contains(string(ops), "`"+n+"`") {
			t.Errorf("docs/operations.md does not describe the metric %s: add it to the table of metrics", n)
		}
	}
}
