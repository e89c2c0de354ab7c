package aws

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/credbroker/credbroker/attest"
)

// AWS's limits on what the provider derives from the caller.
const (
	// MaxSessionName is the longest role session name (and SourceIdentity).
	MaxSessionName = 64
	// MaxTagKey and MaxTagValue bound a session tag, in characters.
	MaxTagKey   = 128
	MaxTagValue = 256
	// MaxSessionTags is the most session tags one AssumeRole may pass.
	MaxSessionTags = 50
)

// Claim references that name the identity itself rather than one of its
// claims, usable in session_tags and source_identity.
const (
	ClaimSubject = "$subject"
	ClaimMethod  = "$method"
)

// ErrClaim is wrapped when the caller's identity lacks a claim that a
// session tag or the source identity is configured to carry, or the claim
// is not a single value; Credential returns it as
// `aws: credential "NAME": session tag "KEY": identity claim unusable: …`.
var ErrClaim = errors.New("identity claim unusable")

// isNameChar reports whether c may appear in a role session name or a
// SourceIdentity: AWS's [\w+=,.@-].
func isNameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_+=,.@-", r)
}

// sessionName turns a workload subject into a name AWS accepts as a role
// session name or SourceIdentity ([\w+=,.@-], 2 to 64 characters) and a
// reader still recognises in CloudTrail:
//
//   - each run of other characters (":", "/", spaces, non-ASCII, invalid
//     UTF-8) becomes one "-":  unix:uid:1000 → unix-uid-1000,
//     system:serviceaccount:payments:api → system-serviceaccount-payments-api;
//   - a longer result keeps its last 55 characters (the most specific part
//     of an ARN, SPIFFE ID or path) behind the first 8 hex digits of the
//     subject's SHA-256 and a "-", so two long subjects that share a tail
//     still get different names: 64 characters in all;
//   - a result shorter than 2 characters is prefixed with "credbroker-".
//
// The mapping is many-to-one for short subjects (unix:uid:1 and unix-uid-1
// share a name): the name is for reading CloudTrail, and the audit log and
// the lease carry the exact subject.
func sessionName(subject string) string {
	var b strings.Builder
	replaced := false
	for _, r := range subject {
		if isNameChar(r) {
			b.WriteRune(r)
			replaced = false
			continue
		}
		if !replaced {
			b.WriteByte('-')
			replaced = true
		}
	}
	name := b.String() // ASCII only from here on
	if len(name) > MaxSessionName {
		sum := sha256.Sum256([]byte(subject))
		name = hex.EncodeToString(sum[:4]) + "-" + name[len(name)-(MaxSessionName-9):]
	}
	if len(name) < 2 {
		name = "credbroker-" + name
	}
	return name
}

// isTagChar reports whether r may appear in a session tag key or value:
// AWS's [\p{L}\p{Z}\p{N}_.:/=+\-@].
func isTagChar(r rune) bool {
	return r != utf8.RuneError && (unicode.IsLetter(r) || unicode.Is(unicode.Z, r) || unicode.IsNumber(r) || strings.ContainsRune("_.:/=+-@", r))
}

// validTagKey reports what is wrong with a session tag key, or "".
func validTagKey(k string) string {
	switch {
	case k == "":
		return "is empty"
	case !utf8.ValidString(k):
		return "is not UTF-8"
	case utf8.RuneCountInString(k) > MaxTagKey:
		return fmt.Sprintf("is longer than %d characters", MaxTagKey)
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return `starts with "aws:", which AWS reserves`
	}
	for _, r := range k {
		if !isTagChar(r) {
			return "may hold only letters, digits, spaces and _.:/=+-@"
		}
	}
	return ""
}

// tagValue makes v a valid session tag value: each character AWS refuses
// (anything but letters, digits, spaces and _.:/=+-@, and invalid UTF-8)
// becomes "_", and the result is cut to MaxTagValue characters.
func tagValue(v string) string {
	var b strings.Builder
	n := 0
	for _, r := range v {
		if n == MaxTagValue {
			break
		}
		if isTagChar(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		n++
	}
	return b.String()
}

// claimValue returns the value of the claim ref names in id: ClaimSubject
// and ClaimMethod name the identity's subject and method; any other ref
// names a claim, which must be a string, a boolean or a number.
func claimValue(id attest.Identity, ref string) (string, error) {
	switch ref {
	case ClaimSubject:
		return id.Subject, nil
	case ClaimMethod:
		return id.Method, nil
	}
	v, ok := id.Claims[ref]
	if !ok {
		return "", fmt.Errorf("%w: the %s identity has no claim %q", ErrClaim, id.Method, ref)
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case int:
		return strconv.Itoa(v), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	default:
		return "", fmt.Errorf("%w: claim %q is not a single value", ErrClaim, ref)
	}
}

// tag is one session tag as sent.
type tag struct{ key, value string }

// sessionTags derives the session tags for id: for each configured key (in
// keys' order), the value of the claim it names, sanitised by tagValue. A
// missing claim fails the issue rather than dropping the tag, so that a
// role policy's tag condition never meets an absent tag.
func sessionTags(keys []string, claims map[string]string, id attest.Identity) ([]tag, error) {
	tags := make([]tag, 0, len(keys))
	for _, k := range keys {
		v, err := claimValue(id, claims[k])
		if err != nil {
			return nil, fmt.Errorf("session tag %q: %w", k, err)
		}
		tags = append(tags, tag{key: k, value: tagValue(v)})
	}
	return tags, nil
}

// sourceIdentity derives SourceIdentity from the claim ref names, shaped by
// sessionName's rules; an empty claim is refused.
func sourceIdentity(ref string, id attest.Identity) (string, error) {
	v, err := claimValue(id, ref)
	if err != nil {
		return "", fmt.Errorf("source_identity: %w", err)
	}
	if v == "" {
		return "", fmt.Errorf("source_identity: %w: claim %q is empty", ErrClaim, ref)
	}
	return sessionName(v), nil
}
