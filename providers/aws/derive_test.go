package aws

import (
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/credbroker/credbroker/attest"
)

// AWS's documented patterns, checked independently of the provider's own
// character tests.
var (
	awsSessionName = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	awsTagValue    = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
)

var sessionNameCases = []struct {
	subject, want string
}{
	{"unix:uid:1000", "unix-uid-1000"},
	{"system:serviceaccount:payments:api", "system-serviceaccount-payments-api"},
	{"spiffe://prod.example.org/ns/payments/sa/api", "spiffe-prod.example.org-ns-payments-sa-api"},
	{"repo:acme/payments:ref:refs/heads/main", "repo-acme-payments-ref-refs-heads-main"},
	{"arn:aws:iam::123456789012:role/payments", "arn-aws-iam-123456789012-role-payments"},
	{"already_valid+=,.@-name", "already_valid+=,.@-name"},
	{"ops team", "ops-team"},
	{"café:ü", "caf-"},
	{"bad\xffutf8", "bad-utf8"},
	{"", "credbroker-"},
	{"x", "credbroker-x"},
	{":", "credbroker--"},
	{strings.Repeat("a", 64), strings.Repeat("a", 64)},
	// Longer than 64: 8 hex digits of the subject's SHA-256, "-", the last 55.
	{strings.Repeat("a", 65), "635361c4-" + strings.Repeat("a", 55)},
}

func TestSessionName(t *testing.T) {
	for _, tt := range sessionNameCases {
		t.Run(tt.subject, func(t *testing.T) {
			got := sessionName(tt.subject)
			if !awsSessionName.MatchString(got) {
				t.Fatalf("sessionName(%q) = %q, which AWS refuses", tt.subject, got)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("sessionName(%q) = %q, want %q", tt.subject, got, tt.want)
			}
		})
	}
	long := "spiffe://prod.example.org/" + strings.Repeat("x", 40) + "/ns/payments/sa/payment-processor"
	if got := sessionName(long); len(got) != 64 || !strings.HasSuffix(got, "-ns-payments-sa-payment-processor") {
		t.Errorf("a long subject keeps its most specific end in 64 characters: %q", got)
	}
	// Two long subjects sharing their last 55 characters still differ.
	a := sessionName("spiffe://one.example.org/" + strings.Repeat("y", 60))
	b := sessionName("spiffe://two.example.org/" + strings.Repeat("y", 60))
	if a == b {
		t.Errorf("long subjects with one tail share the name %q", a)
	}
}

func FuzzSessionName(f *testing.F) {
	for _, tt := range sessionNameCases {
		f.Add(tt.subject)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		got := sessionName(subject)
		if !awsSessionName.MatchString(got) {
			t.Fatalf("sessionName(%q) = %q, which AWS refuses", subject, got)
		}
		if got != sessionName(subject) {
			t.Fatalf("sessionName(%q) is not deterministic", subject)
		}
		if awsSessionName.MatchString(subject) && got != subject {
			t.Fatalf("a valid name %q was changed to %q", subject, got)
		}
	})
}

var tagValueCases = []struct{ in, want string }{
	{"payments", "payments"},
	{"system:serviceaccount:payments:api", "system:serviceaccount:payments:api"},
	{"spiffe://prod.example.org/ns/a", "spiffe://prod.example.org/ns/a"},
	{"repo:acme/payments:ref:refs/heads/main", "repo:acme/payments:ref:refs/heads/main"},
	{"alice@example.org", "alice@example.org"},
	{"café Zürich 東京 ٣", "café Zürich 東京 ٣"},
	{"a,b;c*d", "a_b_c_d"},
	{"tab\there\nnl", "tab_here_nl"},
	{"bad\xffutf8", "bad_utf8"},
	{"", ""},
	{strings.Repeat("é", 300), strings.Repeat("é", 256)},
}

func TestTagValue(t *testing.T) {
	for _, tt := range tagValueCases {
		got := tagValue(tt.in)
		if got != tt.want {
			t.Errorf("tagValue(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if !awsTagValue.MatchString(got) || utf8.RuneCountInString(got) > MaxTagValue {
			t.Errorf("tagValue(%q) = %q, which AWS refuses", tt.in, got)
		}
	}
}

func TestValidTagKey(t *testing.T) {
	for _, tt := range []struct {
		key, want string
	}{
		{"namespace", ""},
		{"team:payments/env=prod+1@x_y.z-w", ""},
		{"Ünïcode key", ""},
		{"", "is empty"},
		{"aws:principal", "AWS reserves"},
		{"AWS:Principal", "AWS reserves"},
		{"a,b", "may hold only"},
		{"a*b", "may hold only"},
		{strings.Repeat("k", 128), ""},
		{strings.Repeat("k", 129), "longer than 128"},
		{"bad\xff", "not UTF-8"},
	} {
		got := validTagKey(tt.key)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("validTagKey(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

var k8sIdentity = attest.Identity{
	Method:  attest.MethodKubernetes,
	Subject: "system:serviceaccount:payments:api",
	Claims: map[string]any{
		"namespace":       "payments",
		"service_account": "api",
		"pod_name":        "api-7d9f*x",
		"uid":             int64(1001),
		"ratio":           float64(0.5),
		"whole":           float64(42),
		"admin":           true,
		"groups":          []any{"a", "b"},
		"empty":           "",
	},
}

func TestSessionTags(t *testing.T) {
	for _, tt := range []struct {
		name    string
		claims  map[string]string
		want    string // key=value pairs, sorted by key
		wantErr string
	}{
		{"claims and pseudo-claims", map[string]string{"ns": "namespace", "sa": "service_account", "who": ClaimSubject, "how": ClaimMethod},
			"how=kubernetes ns=payments sa=api who=system:serviceaccount:payments:api", ""},
		{"values sanitised", map[string]string{"pod": "pod_name"}, "pod=api-7d9f_x", ""},
		{"numbers and booleans", map[string]string{"uid": "uid", "ratio": "ratio", "whole": "whole", "admin": "admin"},
			"admin=true ratio=0.5 uid=1001 whole=42", ""},
		{"an empty claim is an empty tag", map[string]string{"e": "empty"}, "e=", ""},
		{"a missing claim fails", map[string]string{"repo": "repository"}, "", `session tag "repo": identity claim unusable: the kubernetes identity has no claim "repository"`},
		{"a list fails", map[string]string{"g": "groups"}, "", `claim "groups" is not a single value`},
		{"none", nil, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{SessionTags: tt.claims}
			keys := sortedKeys(cfg.SessionTags)
			tags, err := sessionTags(keys, tt.claims, k8sIdentity)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrClaim) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range tags {
				got = append(got, tg.key+"="+tg.value)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("tags %q, want %q", strings.Join(got, " "), tt.want)
			}
		})
	}
}

func TestSourceIdentity(t *testing.T) {
	for _, tt := range []struct{ ref, want, wantErr string }{
		{ClaimSubject, "system-serviceaccount-payments-api", ""},
		{"service_account", "api", ""},
		{"uid", "1001", ""},
		{"empty", "", "is empty"},
		{"missing", "", "no claim"},
	} {
		got, err := sourceIdentity(tt.ref, k8sIdentity)
		if tt.wantErr != "" {
			if !errors.Is(err, ErrClaim) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("sourceIdentity(%q): error %v, want %q", tt.ref, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("sourceIdentity(%q) = %q, %v; want %q", tt.ref, got, err, tt.want)
		}
	}
}

// FuzzSessionTags feeds arbitrary claim values through tag and source
// identity derivation: whatever a token carries, what is sent is valid for
// AWS, and the only error is ErrClaim.
func FuzzSessionTags(f *testing.F) {
	for _, tt := range tagValueCases {
		f.Add(tt.in, int64(7), true)
	}
	f.Fuzz(func(t *testing.T, s string, n int64, b bool) {
		id := attest.Identity{Method: "kubernetes", Subject: s, Claims: map[string]any{"s": s, "n": n, "b": b, "f": float64(n) / 3}}
		claims := map[string]string{"s": "s", "n": "n", "b": "b", "f": "f", "sub": ClaimSubject}
		tags, err := sessionTags(sortedKeys(claims), claims, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range tags {
			if !awsTagValue.MatchString(tg.value) || utf8.RuneCountInString(tg.value) > MaxTagValue {
				t.Fatalf("tag %s=%q, which AWS refuses", tg.key, tg.value)
			}
		}
		src, err := sourceIdentity("s", id)
		if s == "" {
			if !errors.Is(err, ErrClaim) {
				t.Fatalf("empty claim: %v", err)
			}
			return
		}
		if err != nil || !awsSessionName.MatchString(src) || strings.HasPrefix(strings.ToLower(src), "aws:") {
			t.Fatalf("sourceIdentity(%q) = %q, %v", s, src, err)
		}
	})
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
