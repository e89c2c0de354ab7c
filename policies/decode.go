package policies

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/credbroker/credbroker/attest"
)

// Limits that keep Compile's work proportional to its input.
const (
	// minNodes and nodesPerByte bound the YAML nodes visited in a file,
	// counting each use of an alias, so that alias bombs fail cleanly: a
	// file without aliases has fewer nodes than bytes and never reaches the
	// bound.
	minNodes     = 100_000
	nodesPerByte = 2
	// maxAllDepth bounds the nesting of `all:` entries.
	maxAllDepth = 8
	// maxNameLength bounds policy names.
	maxNameLength = 128
)

// methodKeys lists the keys a workload entry accepts, for messages.
var methodKeys = strings.Join(append(append([]string(nil), attest.Methods...), methodAll), ", ")

// decoder turns YAML documents into policies, collecting every problem.
type decoder struct {
	problems problemList
	warnings problemList // same file order as problems
	warned   map[Problem]bool
	policies []*policy
	names    map[string]string // policy name → "file:line" of its definition
	nodes    int               // visited in the current file
	maxNodes int               // bound for the current file
	overrun  bool

	conds map[string]compiledCondition // by expression text
	self  Self                         // what `uid: self` and `gid: self` stand for
}

type compiledCondition struct {
	cond   *condition
	issues []conditionIssue
}

func newDecoder(files []File, self Self) *decoder {
	d := &decoder{
		self:     self,
		problems: problemList{order: make(map[string]int, len(files))},
		warned:   map[Problem]bool{},
		names:    map[string]string{},
		conds:    map[string]compiledCondition{},
	}
	for i, f := range files {
		if _, ok := d.problems.order[f.Name]; !ok {
			d.problems.order[f.Name] = i
		}
	}
	d.warnings.order = d.problems.order
	return d
}

func (d *decoder) addf(line int, format string, args ...any) {
	d.problems.addf(line, format, args...)
}

// warnf records a warning once per position and message: an alias can
// bring the same selector back many times.
func (d *decoder) warnf(line int, format string, args ...any) {
	w := Problem{File: d.problems.file, Line: line, Message: fmt.Sprintf(format, args...)}
	if !d.warned[w] {
		d.warned[w] = true
		d.warnings.list = append(d.warnings.list, w)
	}
}

// resolve follows aliases and counts the node against maxNodes.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	d.nodes++
	if d.nodes > d.maxNodes && !d.overrun {
		d.overrun = true
		d.addf(n.Line, "document too large: more than %d YAML nodes (counting each use of an alias)", d.maxNodes)
	}
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// file decodes every YAML document of f.
func (d *decoder) file(f File) {
	d.problems.file = f.Name
	d.nodes, d.maxNodes, d.overrun = 0, minNodes+nodesPerByte*len(f.Data), false
	dec := yaml.NewDecoder(bytes.NewReader(f.Data))
	for !d.overrun {
		var doc yaml.Node
		err := decodeNode(dec, &doc)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			line, msg := yamlError(err)
			d.addf(line, "invalid YAML: %s", msg)
			return
		}
		d.document(&doc)
	}
}

// decodeNode decodes one document, turning a parser panic into an error.
func decodeNode(dec *yaml.Decoder, doc *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parser failure: %v", r)
		}
	}()
	return dec.Decode(doc)
}

// yamlError splits "yaml: line 3: message" into its line and message.
func yamlError(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil && line > 0 {
				return line, text
			}
		}
	}
	return 0, msg
}

type pair struct{ key, val *yaml.Node }

// mapping returns the key/value pairs of n, reporting non-string and
// duplicate keys. It reports and returns false when n is not a mapping.
func (d *decoder) mapping(n *yaml.Node, what string) ([]pair, bool) {
	if n.Kind != yaml.MappingNode {
		d.addf(n.Line, "%s must be a mapping, not %s", what, describe(n))
		return nil, false
	}
	pairs := make([]pair, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.resolve(n.Content[i]), d.resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.addf(k.Line, "keys in %s must be strings", what)
			continue
		}
		dup := false
		for _, p := range pairs {
			if p.key.Value == k.Value {
				d.addf(k.Line, "duplicate key %q in %s", k.Value, what)
				dup = true
				break
			}
		}
		if !dup {
			pairs = append(pairs, pair{k, v})
		}
	}
	return pairs, true
}

// describe names the YAML type of n for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "empty"
		case "!!bool":
			return "a boolean"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!str":
			return "a string"
		}
		return "a " + n.ShortTag() + " value"
	}
	return "an alias"
}

// text returns the literal text of a string-like scalar: a string, or a
// number written without quotes (kept exactly as written).
func (d *decoder) text(n *yaml.Node, what string) (string, bool) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!str", "!!int", "!!float":
			if n.Value == "" {
				d.addf(n.Line, "%s must not be empty", what)
				return "", false
			}
			return n.Value, true
		}
	}
	d.addf(n.Line, "%s must be a string, not %s", what, describe(n))
	return "", false
}

// list returns the entries of a non-empty sequence.
func (d *decoder) list(n *yaml.Node, what string) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		d.addf(n.Line, "%s must be a list, not %s", what, describe(n))
		return nil, false
	}
	if len(n.Content) == 0 {
		d.addf(n.Line, "%s must not be empty", what)
		return nil, false
	}
	return n.Content, true
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// document decodes one `policies: [...]` document.
func (d *decoder) document(doc *yaml.Node) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return
	}
	root := d.resolve(doc.Content[0])
	if isNull(root) {
		return // an empty document
	}
	pairs, ok := d.mapping(root, "policy document")
	if !ok {
		return
	}
	found := false
	for _, p := range pairs {
		if p.key.Value != "policies" {
			d.addf(p.key.Line, "unknown key %q in policy document", p.key.Value)
			continue
		}
		found = true
		if isNull(p.val) {
			continue // "policies:" with no entries
		}
		if p.val.Kind != yaml.SequenceNode {
			d.addf(p.val.Line, "policies must be a list, not %s", describe(p.val))
			continue
		}
		for _, n := range p.val.Content {
			if d.overrun {
				return
			}
			d.policy(d.resolve(n))
		}
	}
	if !found {
		d.addf(root.Line, "missing key \"policies\" in policy document")
	}
}

// policy decodes and compiles one policy.
func (d *decoder) policy(n *yaml.Node) {
	before := len(d.problems.list)
	pairs, ok := d.mapping(n, "policy")
	if !ok {
		return
	}
	p := &policy{file: d.problems.file, line: n.Line}
	var (
		seen     = map[string]bool{}
		ttlNode  *yaml.Node
		nameNode *yaml.Node
		canon    = map[string]any{}

		workloadsLine int
	)
	for _, kv := range pairs {
		key, v := kv.key.Value, kv.val
		seen[key] = true
		switch key {
		case "name":
			nameNode = v
			if s, ok := d.text(v, "name"); ok {
				if validName(s) {
					p.name = s
				} else {
					d.addf(v.Line, "name %q must be at most %d letters, digits, '.', '_' or '-', starting with a letter or digit", clip(s), maxNameLength)
				}
			}
		case "effect":
			if v.Kind == yaml.ScalarNode && (v.Value == string(Allow) || v.Value == string(Deny)) && v.ShortTag() == "!!str" {
				p.effect = Effect(v.Value)
			} else {
				d.addf(v.Line, "effect must be %q or %q, not %s", Allow, Deny, quoteScalar(v))
			}
		case "workloads":
			workloadsLine = kv.key.Line
			entries, ok := d.list(v, "workloads")
			var canonWL []any
			for _, e := range entries {
				if d.overrun {
					return
				}
				if w, c, ok := d.workload(d.resolve(e), 0); ok {
					p.workloads = append(p.workloads, w)
					canonWL = append(canonWL, c)
				}
			}
			if ok {
				canon["workloads"] = canonWL
			}
		case "credentials":
			entries, _ := d.list(v, "credentials")
			var canonCreds []string
			for _, e := range entries {
				e = d.resolve(e)
				s, ok := d.text(e, "credential name")
				if !ok {
					continue
				}
				pat, err := newPattern(s)
				if err != nil {
					d.addf(e.Line, "bad credential glob %q: %v", s, err)
					continue
				}
				p.creds = append(p.creds, pat)
				canonCreds = append(canonCreds, s)
			}
			canon["credentials"] = canonCreds
		case "when":
			d.when(p, v)
			canon["when"] = p.when
		case "ttl":
			ttlNode = v
			s, ok := d.text(v, "ttl")
			if !ok {
				break
			}
			ttl, err := time.ParseDuration(s)
			switch {
			case err != nil:
				d.addf(v.Line, "ttl %q is not a duration such as 15m or 1h", s)
			case ttl <= 0:
				d.addf(v.Line, "ttl must be positive, not %s", s)
			default:
				p.ttl = ttl
				canon["ttl"] = ttl.String()
			}
		default:
			d.addf(kv.key.Line, "unknown key %q in policy", key)
		}
	}
	for _, req := range []string{"name", "effect", "workloads", "credentials"} {
		if !seen[req] {
			d.addf(n.Line, "missing required key %q in policy", req)
		}
	}
	if ttlNode != nil && p.effect == Deny {
		d.addf(ttlNode.Line, "ttl applies only to allow policies")
	}
	if p.name != "" {
		if first, dup := d.names[p.name]; dup {
			d.addf(nameNode.Line, "duplicate policy name %q (first defined at %s)", p.name, first)
		} else {
			d.names[p.name] = p.file + ":" + strconv.Itoa(nameNode.Line)
		}
	}
	if len(d.problems.list) > before {
		return
	}
	canon["name"] = p.name
	canon["effect"] = p.effect
	content, err := json.Marshal(canon)
	if err != nil { // unreachable: canon holds strings, lists and maps only
		d.addf(n.Line, "internal error: %v", err)
		return
	}
	sum := sha256.Sum256(content)
	p.version = shortHash(sum[:])
	if p.effect == Deny {
		d.tokenOnlyDeny(p, workloadsLine)
	}
	p.allowReason = "allowed by policy " + p.name
	p.denyReason = "denied by policy " + p.name
	d.policies = append(d.policies, p)
}

// validName reports whether s is a usable policy name.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// quoteScalar shows a scalar's text, or the kind of a non-scalar node.
func quoteScalar(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		return strconv.Quote(clip(n.Value))
	}
	return describe(n)
}

// workload decodes one workload entry. It returns the entry and its
// canonical form.
func (d *decoder) workload(n *yaml.Node, depth int) (workload, any, bool) {
	pairs, ok := d.mapping(n, "workload entry")
	if !ok {
		return workload{}, nil, false
	}
	var methods []pair
	unknown := false
	for _, kv := range pairs {
		if _, ok := selectorSpecs[kv.key.Value]; ok || kv.key.Value == methodAll {
			methods = append(methods, kv)
			continue
		}
		unknown = true
		d.addf(kv.key.Line, "unknown key %q in workload entry (want one of %s)", kv.key.Value, methodKeys)
	}
	switch {
	case len(methods) == 0 && !unknown:
		d.addf(n.Line, "workload entry has no method (want one of %s)", methodKeys)
		return workload{}, nil, false
	case len(methods) > 1:
		names := make([]string, len(methods))
		for i, m := range methods {
			names[i] = m.key.Value
		}
		d.addf(n.Line, "workload entry has %d methods (%s); use one per entry, or all: to require several", len(methods), strings.Join(names, ", "))
		return workload{}, nil, false
	case unknown:
		return workload{}, nil, false
	}
	method, v := methods[0].key.Value, methods[0].val
	w := workload{method: method, line: methods[0].key.Line}
	if method == methodAll {
		if depth >= maxAllDepth {
			d.addf(v.Line, "all: nested more than %d deep", maxAllDepth)
			return workload{}, nil, false
		}
		entries, ok := d.list(v, "all")
		var canon []any
		for _, e := range entries {
			if d.overrun {
				return workload{}, nil, false
			}
			sub, c, subOK := d.workload(d.resolve(e), depth+1)
			ok = ok && subOK
			w.all = append(w.all, sub)
			canon = append(canon, c)
		}
		return w, map[string]any{methodAll: canon}, ok
	}
	canon, ok := d.selector(&w, v)
	return w, map[string]any{method: canon}, ok
}

// selector decodes the keys of a method selector into w.fields.
func (d *decoder) selector(w *workload, n *yaml.Node) (map[string]string, bool) {
	what := w.method + " selector"
	pairs, ok := d.mapping(n, what)
	if !ok {
		return nil, false
	}
	if len(pairs) == 0 {
		d.addf(n.Line, "empty %s: name at least one of %s", what, specKeys(w.method))
		return nil, false
	}
	specs := selectorSpecs[w.method]
	canon := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		var spec *fieldSpec
		for i := range specs {
			if specs[i].key == kv.key.Value {
				spec = &specs[i]
			}
		}
		if spec == nil {
			d.addf(kv.key.Line, "unknown key %q in %s (want %s)", kv.key.Value, what, specKeys(w.method))
			ok = false
			continue
		}
		f, text, fieldOK := d.field(spec, kv.val)
		if !fieldOK {
			ok = false
			continue
		}
		w.fields = append(w.fields, f)
		canon[spec.key] = text
	}
	if ok && w.method == attest.MethodGitHub {
		ok = d.githubRepository(w)
	}
	if ok && w.method == attest.MethodUnix {
		d.unpinnedExe(w)
	}
	return canon, ok
}

// unpinnedExe warns about a unix selector with exe and no exe_sha256: the
// kernel reports the executable's path as the caller's mount namespace
// sees it, and an unprivileged user can make a mount namespace (through a
// user namespace) in which any binary is bind-mounted over an allowed path.
// The digest is read from the executable itself.
func (d *decoder) unpinnedExe(w *workload) {
	var exe *field
	for i := range w.fields {
		switch w.fields[i].spec.key {
		case "exe":
			exe = &w.fields[i]
		case "exe_sha256":
			return
		}
	}
	if exe != nil {
		d.warnf(exe.line, "unix selector matches exe %q without exe_sha256: the path is the one the caller's mount namespace shows, and an unprivileged user can bind-mount any binary over it in a user namespace; add exe_sha256 to the same selector", clip(exe.pat.text))
	}
}

// tokenOnlyDeny warns about a deny policy every workload entry of which
// needs a token-attested identity: a caller escapes it by presenting no
// token, and is then attested as its unix peer.
func (d *decoder) tokenOnlyDeny(p *policy, line int) {
	var methods []string
	for i := range p.workloads {
		if !p.workloads[i].tokenMethods(&methods) {
			return
		}
	}
	d.warnf(line, "deny policy %q selects only callers that present a token (%s): a caller escapes it by presenting none, and is then attested as its unix peer; add a unix entry (uid, exe_sha256, pod_uid or container_id) for the same workload", p.name, strings.Join(methods, ", "))
}

// githubRepository refuses a github selector that matches every repository
// and warns about one that pins no repository in a way that survives a
// rename: see "GitHub repositories" in the package documentation.
func (d *decoder) githubRepository(w *workload) bool {
	var repo *field
	owner, pinned := false, false
	for i := range w.fields {
		f := &w.fields[i]
		switch f.spec.key {
		case "repository":
			repo = f
			pinned = pinned || !f.pat.isGlob()
		case "repository_owner":
			owner = true
		case "repository_id", "repository_owner_id":
			owner, pinned = true, true
		}
	}
	switch {
	case pinned:
		return true
	case owner:
	case repo == nil:
		d.addf(w.line, "github selector matches every repository: %s", githubPinAdvice)
		return false
	case everyRepository(repo.pat.text):
		d.addf(repo.line, "github selector matches every repository (repository %q constrains neither owner nor name): %s", clip(repo.pat.text), githubPinAdvice)
		return false
	}
	d.warnf(w.line, "github selector does not pin a repository: %s (repository names can be re-registered by someone else after a rename or deletion)", githubPinAdvice)
	return true
}

// githubPinAdvice says how to pin a github selector to a repository.
const githubPinAdvice = "add repository_id or repository_owner_id, or an exact repository"

// everyRepository reports whether a repository glob leaves both owner and
// name free: every '/'-separated part is made of '*' alone, as in "*" and
// "*/*".
func everyRepository(glob string) bool {
	for part := range strings.SplitSeq(glob, "/") {
		if part == "" || strings.Trim(part, "*") != "" {
			return false
		}
	}
	return true
}

func specKeys(method string) string {
	specs := selectorSpecs[method]
	keys := make([]string, len(specs))
	for i, s := range specs {
		keys[i] = s.key
	}
	return strings.Join(keys, ", ")
}

// field decodes one selector value.
func (d *decoder) field(spec *fieldSpec, v *yaml.Node) (field, string, bool) {
	f := field{spec: spec, line: v.Line}
	if spec.kind == kindInt {
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" && v.Value == selfValue {
			// The canonical form, and so the version, is the resolved id:
			// the same file compiled for brokers under different uids
			// decides differently and gets different versions.
			f.num = d.self.id(spec.key)
			return f, strconv.FormatInt(f.num, 10), true
		}
		var n int64
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil || n < 0 || n > 1<<32-1 {
			d.addf(v.Line, "%s must be an integer from 0 to %d or %q, not %s", spec.key, uint32(1<<32-1), selfValue, quoteScalar(v))
			return f, "", false
		}
		f.num = n
		return f, strconv.FormatInt(n, 10), true
	}
	s, ok := d.text(v, spec.key)
	if !ok {
		return f, "", false
	}
	if spec.prefix != "" && !strings.HasPrefix(s, spec.prefix) {
		d.addf(v.Line, "%s %q must start with %q", spec.key, clip(s), spec.prefix)
		return f, "", false
	}
	switch spec.kind {
	case kindHash:
		if len(s) != sha256.Size*2 || strings.Trim(s, "0123456789abcdefABCDEF") != "" {
			d.addf(v.Line, "%s must be %d hexadecimal digits, not %q", spec.key, sha256.Size*2, clip(s))
			return f, "", false
		}
		s = strings.ToLower(s)
	case kindGlob:
		if _, err := newPattern(s); err != nil {
			d.addf(v.Line, "bad glob %q in %s: %v", clip(s), spec.key, err)
			return f, "", false
		}
	case kindExact:
		if strings.ContainsAny(s, "*?[") {
			d.addf(v.Line, "%s is matched exactly and cannot be a glob: %q", spec.key, clip(s))
			return f, "", false
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			f.num, f.isNum = n, true
		}
	}
	f.pat, _ = newPattern(s)
	if spec.kind != kindGlob {
		f.pat.literal()
	}
	return f, s, true
}

// when compiles a policy's condition.
func (d *decoder) when(p *policy, v *yaml.Node) {
	if v.Kind != yaml.ScalarNode || isNull(v) {
		d.addf(v.Line, "when must be a CEL expression string, not %s", describe(v))
		return
	}
	text := strings.TrimSpace(v.Value)
	if text == "" {
		d.addf(v.Line, "when must not be empty")
		return
	}
	if n := len([]rune(text)); n > MaxConditionLength {
		d.addf(v.Line, "when is %d characters long; the limit is %d", n, MaxConditionLength)
		return
	}
	p.when = text
	cc, ok := d.conds[text]
	if !ok {
		env, err := conditionEnv()
		if err != nil {
			d.addf(v.Line, "when: internal error: %v", err)
			return
		}
		cc.cond, cc.issues = compileCondition(env, text)
		d.conds[text] = cc
	}
	// Block scalars (| and >) start on the line after the indicator.
	first := v.Line
	if v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		first++
		// Leading blank lines were trimmed from text.
		first += strings.Count(v.Value[:len(v.Value)-len(strings.TrimLeft(v.Value, " \t\r\n"))], "\n")
	}
	for _, is := range cc.issues {
		msg := "when: " + is.message
		if is.column > 0 {
			msg += fmt.Sprintf(" (expression column %d)", is.column)
		}
		d.addf(first+is.line-1, "%s", msg)
	}
	p.cond = cc.cond
}

// selfValue in a uid or gid selector stands for the uid or gid of the
// broker (CompileOptions.Self), so that a policy can say "the user the
// broker runs as" without naming it.
const selfValue = "self"
