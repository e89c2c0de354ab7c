package policies

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/credbroker/credbroker/attest"
)

// fieldKind says how a selector value is compared with an identity.
type fieldKind int

const (
	kindExact fieldKind = iota // string equality (integer claims compare numerically)
	kindGlob                   // glob, segment by segment (see pattern)
	kindInt                    // integer, such as a uid
	kindHash                   // SHA-256 hex digest, case-insensitive
)

// fieldSpec is one key a selector of some method accepts.
type fieldSpec struct {
	key     string
	kind    fieldKind
	subject bool   // compared with Identity.Subject instead of a claim
	claim   string // claim name when !subject
	prefix  string // required prefix of the value, such as "spiffe://"
}

// selectorSpecs lists, per attestation method, the keys its selector
// accepts. It is read-only.
var selectorSpecs = map[string][]fieldSpec{
	attest.MethodUnix: {
		{key: "uid", kind: kindInt, claim: "uid"},
		{key: "gid", kind: kindInt, claim: "gid"},
		{key: "exe", kind: kindGlob, claim: "exe", prefix: "/"},
		{key: "exe_sha256", kind: kindHash, claim: "exe_sha256"},
		{key: "pod_uid", kind: kindExact, claim: "pod_uid"},
		{key: "container_id", kind: kindExact, claim: "container_id"},
	},
	attest.MethodKubernetes: {
		{key: "namespace", kind: kindExact, claim: "namespace"},
		{key: "service_account", kind: kindExact, claim: "service_account"},
		{key: "pod_name", kind: kindGlob, claim: "pod_name"},
		{key: "pod_uid", kind: kindExact, claim: "pod_uid"},
	},
	attest.MethodSPIFFE: {
		{key: "id", kind: kindGlob, subject: true, prefix: "spiffe://"},
		{key: "trust_domain", kind: kindExact, claim: "trust_domain"},
	},
	attest.MethodGitHub: {
		{key: "repository", kind: kindGlob, claim: "repository"},
		{key: "repository_id", kind: kindExact, claim: "repository_id"},
		{key: "repository_owner", kind: kindExact, claim: "repository_owner"},
		{key: "repository_owner_id", kind: kindExact, claim: "repository_owner_id"},
		{key: "ref", kind: kindExact, claim: "ref"},
		{key: "environment", kind: kindExact, claim: "environment"},
		{key: "workflow_ref", kind: kindExact, claim: "workflow_ref"},
		{key: "job_workflow_ref", kind: kindExact, claim: "job_workflow_ref"},
		{key: "event_name", kind: kindExact, claim: "event_name"},
	},
	attest.MethodAWS: {
		{key: "role_arn", kind: kindGlob, subject: true, prefix: "arn:"},
		{key: "account", kind: kindExact, claim: "account"},
		{key: "role_name", kind: kindExact, claim: "role_name"},
	},
}

// methodAll is the workload entry key that ANDs its entries.
const methodAll = "all"

// pattern is a name or glob, validated at load. A glob matches one
// '/'-separated segment of the name per segment of the pattern: `*`, `?`
// and `[class]` follow path.Match within a segment and never match '/',
// and a segment that is exactly `**` matches whole segments — any number
// of them, and at least one at the end of the pattern, so "a/**" matches
// everything below a but not a itself. Common glob shapes ("prefix*",
// "*suffix", "prefix/**") are matched without splitting.
type pattern struct {
	text  string
	kind  patternKind
	fixed string   // patPrefix, patSuffix, patSubtree: the text without its stars
	segs  []string // patSegments: the segments, a trailing "**" as "*", "**"
}

type patternKind uint8

const (
	patLiteral  patternKind = iota // no metacharacters: equality
	patPrefix                      // "fixed*"
	patSuffix                      // "*fixed"
	patSubtree                     // "fixed/**"
	patSegments                    // anything else: segment by segment
)

// doubleStar is the glob segment that matches any number of segments.
const doubleStar = "**"

func newPattern(text string) (pattern, error) {
	if _, err := path.Match(text, ""); err != nil {
		return pattern{}, err
	}
	p := pattern{text: text, kind: patSegments}
	segs := strings.Split(text, "/")
	for _, seg := range segs {
		if seg == doubleStar {
			continue
		}
		if err := checkSegment(seg); err != nil {
			return pattern{}, err
		}
	}
	switch n := strings.Count(text, "*"); {
	case !strings.ContainsAny(text, `*?[\`):
		p.kind = patLiteral
		return p, nil
	case strings.ContainsAny(text, `?[\`):
	case n == 1 && strings.HasSuffix(text, "*"):
		p.kind, p.fixed = patPrefix, text[:len(text)-1]
		return p, nil
	case n == 1 && strings.HasPrefix(text, "*"):
		p.kind, p.fixed = patSuffix, text[1:]
		return p, nil
	case n == 2 && strings.HasSuffix(text, "/"+doubleStar):
		p.kind, p.fixed = patSubtree, text[:len(text)-len(doubleStar)]
		return p, nil
	}
	// Consecutive "**" segments match what one does.
	p.segs = make([]string, 0, len(segs)+1)
	for _, seg := range segs {
		if seg == doubleStar && len(p.segs) > 0 && p.segs[len(p.segs)-1] == doubleStar {
			continue
		}
		p.segs = append(p.segs, seg)
	}
	if last := len(p.segs) - 1; p.segs[last] == doubleStar {
		p.segs = append(p.segs[:last], "*", doubleStar) // at least one segment
	}
	return p, nil
}

// checkSegment validates one segment of a valid path.Match pattern: no
// '*' follows a '*', and the pattern did not escape the '/' that ended the
// segment or put it in a class (the segment alone would be malformed).
func checkSegment(seg string) error {
	if _, err := path.Match(seg, ""); err != nil {
		return errSlashInClass
	}
	for i := 0; i < len(seg); i++ {
		switch seg[i] {
		case '\\':
			i++
		case '[':
			for i++; i < len(seg) && seg[i] != ']'; i++ {
				if seg[i] == '\\' {
					i++
				}
			}
		case '*':
			if i+1 < len(seg) && seg[i+1] == '*' {
				return fmt.Errorf("%q is not a whole segment: ** must stand between slashes (or at an end); * matches within one segment", clip(seg))
			}
		}
	}
	return nil
}

// errSlashInClass refuses a glob whose '/' is escaped or in a [class].
var errSlashInClass = errors.New(`'/' separates segments and cannot be escaped or stand in a [class]`)

// literal makes p compare for equality whatever its text.
func (p *pattern) literal() { p.kind, p.fixed, p.segs = patLiteral, "", nil }

// isGlob reports whether p has glob metacharacters.
func (p *pattern) isGlob() bool { return p.kind != patLiteral }

func (p *pattern) match(s string) bool {
	switch p.kind {
	case patLiteral:
		return p.text == s
	case patPrefix: // the star matches anything but '/'
		return strings.HasPrefix(s, p.fixed) && !strings.Contains(s[len(p.fixed):], "/")
	case patSuffix:
		return strings.HasSuffix(s, p.fixed) && !strings.Contains(s[:len(s)-len(p.fixed)], "/")
	case patSubtree: // fixed ends in '/': whatever follows is one segment or more
		return strings.HasPrefix(s, p.fixed)
	}
	return matchSegments(p.segs, s)
}

// matchSegments matches s, segment by segment, against segs, in which
// "**" stands for any number of segments. When a segment fails to match,
// the most recent "**" takes one more segment and matching resumes after
// it, which finds a match if there is one (as for '*' in a string
// wildcard) in at most len(segs) × segments-of-s steps.
func matchSegments(segs []string, s string) bool {
	var (
		pi, pos         int // next pattern segment; start of the next segment of s, len(s)+1 at the end
		starPi, starPos = -1, 0
	)
	for pos <= len(s) {
		if pi < len(segs) && segs[pi] == doubleStar {
			starPi, starPos = pi, pos
			pi++
			continue
		}
		if pi < len(segs) {
			seg, next := segmentAt(s, pos)
			if matchSegment(segs[pi], seg) {
				pi, pos = pi+1, next
				continue
			}
		}
		if starPi < 0 {
			return false
		}
		_, starPos = segmentAt(s, starPos)
		pi, pos = starPi+1, starPos
	}
	for pi < len(segs) && segs[pi] == doubleStar {
		pi++
	}
	return pi == len(segs)
}

// segmentAt returns the segment of s that starts at pos and the start of
// the segment after it, len(s)+1 after the last.
func segmentAt(s string, pos int) (seg string, next int) {
	if i := strings.IndexByte(s[pos:], '/'); i >= 0 {
		return s[pos : pos+i], pos + i + 1
	}
	return s[pos:], len(s) + 1
}

// matchSegment matches one segment, which holds no '/'.
func matchSegment(pat, seg string) bool {
	if pat == "*" {
		return true
	}
	ok, _ := path.Match(pat, seg) // validated by newPattern
	return ok
}

// field is one compiled key of a selector.
type field struct {
	spec  *fieldSpec
	pat   pattern // kindExact, kindGlob, kindHash: the value as written
	num   int64   // kindInt; kindExact when isNum
	isNum bool    // kindExact value is a decimal integer
	line  int     // of the value, for Compile's messages
}

// value returns the identity attribute the field compares with.
func (f *field) value(id *attest.Identity) (v any, s string, isString, ok bool) {
	if f.spec.subject {
		return nil, id.Subject, true, true
	}
	v, ok = id.Claims[f.spec.claim]
	if !ok {
		return nil, "", false, false
	}
	s, isString = v.(string)
	return v, s, isString, true
}

func (f *field) match(id *attest.Identity) bool {
	v, s, isString, ok := f.value(id)
	if !ok {
		return false
	}
	switch f.spec.kind {
	case kindInt:
		n, ok := claimInt(v)
		return ok && n == f.num
	case kindHash:
		return isString && strings.EqualFold(s, f.pat.text)
	case kindGlob:
		return isString && f.pat.match(s)
	default: // kindExact
		if isString {
			return s == f.pat.text
		}
		if f.isNum {
			n, ok := claimInt(v)
			return ok && n == f.num
		}
		return false
	}
}

// mismatch explains why match returned false.
func (f *field) mismatch(id *attest.Identity) string {
	v, s, isString, ok := f.value(id)
	name := f.spec.key
	if !ok {
		return fmt.Sprintf("%s: claim %q is absent", name, f.spec.claim)
	}
	var got string
	if isString {
		got = strconv.Quote(clip(s))
	} else {
		got = fmt.Sprintf("%v (%T)", clip(fmt.Sprint(v)), v)
	}
	switch f.spec.kind {
	case kindInt:
		if n, ok := claimInt(v); ok {
			got = strconv.FormatInt(n, 10)
		}
		return fmt.Sprintf("%s is %s, want %d", name, got, f.num)
	case kindGlob:
		if f.pat.isGlob() {
			return fmt.Sprintf("%s %s does not match %q", name, got, f.pat.text)
		}
	}
	return fmt.Sprintf("%s is %s, want %q", name, got, f.pat.text)
}

// clip shortens s for explanations.
func clip(s string) string {
	const limit = 96
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}

// claimInt converts an integer claim. Attestors store int64; JSON round
// trips (re-evaluating audit history) turn numbers into float64.
func claimInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	case float64:
		if n != math.Trunc(n) || n < math.MinInt64 || n >= math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

// workload is one entry of a policy's workloads: a selector of one method,
// or an `all` of entries.
type workload struct {
	method string // attestation method, or methodAll
	line   int
	fields []field    // selector keys, all of which must match
	all    []workload // methodAll: all must match
}

// target returns the identity a selector of w.method is compared with: the
// identity itself when it has that method, or for unix selectors the
// kernel-attested peer of a token-bearing caller.
func (w *workload) target(id *attest.Identity) *attest.Identity {
	if id.Method == w.method {
		return id
	}
	if w.method == attest.MethodUnix && id.Peer != nil && id.Peer.Method == attest.MethodUnix {
		return id.Peer
	}
	return nil
}

// tokenMethods reports whether w matches only identities attested from a
// token — by a method other than unix — and adds those methods to
// methods once each. An `all:` needs a token when any of its entries does.
func (w *workload) tokenMethods(methods *[]string) bool {
	if w.method == methodAll {
		token := false
		for i := range w.all {
			token = w.all[i].tokenMethods(methods) || token
		}
		return token
	}
	if w.method == attest.MethodUnix {
		return false
	}
	if !slices.Contains(*methods, w.method) {
		*methods = append(*methods, w.method)
	}
	return true
}

func (w *workload) match(id *attest.Identity) bool {
	if w.method == methodAll {
		for i := range w.all {
			if !w.all[i].match(id) {
				return false
			}
		}
		return true
	}
	t := w.target(id)
	if t == nil {
		return false
	}
	for i := range w.fields {
		if !w.fields[i].match(t) {
			return false
		}
	}
	return true
}

// mismatch explains why match returned false.
func (w *workload) mismatch(id *attest.Identity) string {
	if w.method == methodAll {
		for i := range w.all {
			if !w.all[i].match(id) {
				return "all: " + w.all[i].mismatch(id)
			}
		}
		return "all: matches"
	}
	t := w.target(id)
	if t == nil {
		if w.method == attest.MethodUnix {
			return fmt.Sprintf("unix: identity method is %s and it has no unix peer", methodName(id.Method))
		}
		return fmt.Sprintf("%s: identity method is %s", w.method, methodName(id.Method))
	}
	var why []string
	for i := range w.fields {
		if !w.fields[i].match(t) {
			why = append(why, w.fields[i].mismatch(t))
		}
	}
	return w.method + ": " + strings.Join(why, ", ")
}

func methodName(m string) string {
	if m == "" {
		return "unattested"
	}
	return strconv.Quote(m)
}
